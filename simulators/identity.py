"""The identity "system": y = x.

Not physics: the control in every comparison. Running the same MF-FF stack
with the physical layer replaced by identity tells whether the physics adds
anything beyond the digital layers (see the benchmarks).
"""

from __future__ import annotations

import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec


class IdentitySystem(PhysicalSystem):
    """Returns its (validated) input unchanged: ``n_outputs == n_inputs``."""

    def __init__(
        self,
        n_inputs: int | None = None,
        *,
        low: float = 0.0,
        high: float = 1.0,
        levels: int | None = None,
        seed: int = 0,
        device: str = "cpu",
    ):
        n = 16 if n_inputs is None else checks.integer("n_inputs", n_inputs, low=1)
        low, high = checks.real("low", low), checks.real("high", high)
        if levels is not None:
            levels = checks.integer("levels", levels, low=2)
        # the output is the drive itself, so it carries the drive's unit
        super().__init__(
            SystemSpec(n, n, low, high, levels, name="identity", units="a.u.", output_units="a.u."), device=device
        )
        self.seed = checks.integer("seed", seed, low=0)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        return x
