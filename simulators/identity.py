"""The identity "system": y = x.

Not physics: the control in every comparison. Running the same MF-FF stack
with the physical layer replaced by identity tells whether the physics adds
anything beyond the digital layers (see the benchmarks).
"""

from __future__ import annotations

import torch

from physnn.system import PhysicalSystem, SystemSpec


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
        n = 16 if n_inputs is None else int(n_inputs)
        super().__init__(SystemSpec(n, n, low, high, levels, name="identity"), device=device)
        self.seed = seed

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        return x
