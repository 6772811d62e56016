r"""Digital control systems: what a physical layer is compared against, built like one.

Not physics. "The physics adds 4 points over identity" compares a wide nonlinear feature map with a narrow
linear one; these controls change one thing at a time, with the same trainable layers, encoder and training
budget as the physical run (they are :class:`~physnn.core.system.PhysicalSystem`\ s, named like any system):

* ``random-linear`` (:class:`RandomLinear`) -- a fixed random *linear* map of the system's output width,

  .. math:: y = W\,(2u - 1), \qquad W_{kj} \sim \mathcal N(0, 1/N_{in}),

  with :math:`u = (x - \text{low})/(\text{high} - \text{low}) \in [0, 1]` the drive as a fraction of its range.
  Same width as the physical system, no nonlinearity: what the physics adds over it is its nonlinearity.
* ``random-features`` (:class:`RandomFeatures`) -- a fixed random *nonlinear* map of the same width, computed
  digitally, exactly and without noise. ``kind``:

  - ``"relu"``: :math:`y = \mathrm{ReLU}(W(2u - 1) + b)`, :math:`W_{kj} \sim \mathcal N(0, 1/N_{in})`,
    :math:`b_k \sim \mathcal N(0, 1/3)` (the variance of :math:`(W(2u-1))_k` for uniform :math:`u`, so about
    half the units are active);
  - ``"speckle"``: a digital copy of the optical simulator's class (:mod:`physnn.simulators.optics`, gaussian
    medium) -- :math:`E_j = e^{i\pi\phi u_j}/\sqrt{N_{in}}` with :math:`\phi` = ``phase_range``,
    :math:`y_k = N_{out}\,|(T E)_k|^2`, :math:`T = G/\sigma_{max}(G)` with :math:`G` circular complex
    Gaussian: the same equations with a different random medium, no shot/read noise, no SLM or ADC
    quantisation.

  What the physics does beyond it is what a digital computer would not get for the FLOPs it spends.

Every control states the digital FLOPs one sample costs (:meth:`digital_flops_per_sample`, read by
:func:`physnn.train.accounting.query_flops`): the price of computing the map on a digital computer, so a
claim reads "the optics matches a random-feature map that costs Y FLOPs per sample". Counting: a real
multiply-add is 2 FLOPs; a complex multiply-add 8 (4 multiplies, 4 adds); ``exp(i a)`` 2 (one cosine, one sine,
counted as 1 FLOP each, the usual convention); ``|z|^2`` 3; a bias add, a ReLU and the drive's affine map to
``2u - 1`` 1 each per element. :func:`speckle_flops` is also what one query of an ``n_inputs`` -> ``n_outputs``
optical system replaces.

Outputs are in arbitrary units (``a.u.``); the networks standardise measurements per sample, so the overall
scale is immaterial. Every control is deterministic (no noise) and seeded: the same seed gives the same map.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec

__all__ = [
    "RandomLinear",
    "RandomFeatures",
    "CONTROLS",
    "FEATURE_KINDS",
    "matching",
    "linear_flops",
    "relu_flops",
    "speckle_flops",
]

FEATURE_KINDS = ("relu", "speckle")

#: control name -> (registered system, options): what :func:`matching` builds
CONTROLS: dict[str, tuple[str, dict[str, Any]]] = {
    "linear": ("random-linear", {}),
    "features": ("random-features", {"kind": "relu"}),
    "speckle": ("random-features", {"kind": "speckle"}),
}


def matching(spec: SystemSpec, control: str) -> tuple[str, dict[str, Any]]:
    """``(system name, options)`` of the control ``control`` (a key of :data:`CONTROLS`) with the output width
    and drive domain (limits, levels) of a system of ``spec``; ``n_inputs`` and ``seed`` come from the run.

    For ``"speckle"`` the drive range is taken as a phase in units of pi, as the optical simulator's is.
    """
    if control not in CONTROLS:
        raise checks.ParameterError(f"control must be one of {', '.join(map(repr, CONTROLS))}, got {control!r}")
    name, options = CONTROLS[control]
    opts = dict(options, n_outputs=spec.n_outputs, low=spec.low, high=spec.high, levels=spec.levels)
    if control == "speckle":
        opts["phase_range"] = spec.high - spec.low
    return name, opts


def linear_flops(n_inputs: int, n_outputs: int) -> int:
    """FLOPs of ``W (2u - 1)`` for one sample: the affine drive map (2 per input) and the matrix-vector product."""
    return 2 * n_inputs + 2 * n_inputs * n_outputs


def relu_flops(n_inputs: int, n_outputs: int) -> int:
    """FLOPs of ``ReLU(W (2u - 1) + b)`` for one sample (the linear map, a bias add and a ReLU per output)."""
    return linear_flops(n_inputs, n_outputs) + 2 * n_outputs


def speckle_flops(n_inputs: int, n_outputs: int) -> int:
    """FLOPs of ``N_out |T exp(i pi phi u) / sqrt(N_in)|^2`` for one sample: the phase (1 per input), the field
    (cos + sin and the amplitude: 4 per input), a complex matrix-vector product (8 per element) and the
    intensity with its scale (4 per output). The same count is what one query of an optical system of that
    size replaces."""
    return 5 * n_inputs + 8 * n_inputs * n_outputs + 4 * n_outputs


class _Control(PhysicalSystem):
    """Shared arguments and checks of the digital controls."""

    #: ``describe()["control"]``: what the control isolates
    isolates = ""

    def __init__(
        self,
        n_inputs: int | None,
        n_outputs: int | None,
        *,
        name: str,
        low: float,
        high: float,
        levels: int | None,
        seed: int,
        device: str | torch.device,
    ):
        n_in = 16 if n_inputs is None else checks.integer("n_inputs", n_inputs, low=1)
        n_out = n_in if n_outputs is None else checks.integer("n_outputs", n_outputs, low=1)
        low, high = checks.real("low", low), checks.real("high", high)
        if not low < high:
            raise checks.ParameterError(f"low must be below high, got low={low}, high={high}")
        if levels is not None:
            levels = checks.integer("levels", levels, low=2)
        super().__init__(SystemSpec(n_in, n_out, low, high, levels, name=name), device=device)
        self.seed = checks.integer("seed", seed, low=0)
        self._gen = torch.Generator().manual_seed(self.seed)

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        """The drive as ``2u - 1`` in [-1, 1] (``u``: fraction of the drive range)."""
        return 2.0 * (x - self.spec.low) / (self.spec.high - self.spec.low) - 1.0

    def digital_flops_per_sample(self) -> int:
        """FLOPs a digital computer spends on one sample of this map (see the module docstring)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(seed=self.seed, control=self.isolates, digital_flops_per_sample=self.digital_flops_per_sample())
        return d


class RandomLinear(_Control):
    """A fixed random linear map of the drive, ``y = W (2u - 1)`` (see the module docstring).

    Args:
        n_inputs: drive channels (default 16).
        n_outputs: output width (default: ``n_inputs``); give the physical system's width for a fair control.
        low, high, levels: the drive domain (default a continuous [0, 1]).
        seed: seeds ``W``.
        device: where the product is computed.
    """

    isolates = "nonlinearity (a linear map of the physical system's width)"

    def __init__(
        self,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        *,
        low: float = 0.0,
        high: float = 1.0,
        levels: int | None = None,
        seed: int = 0,
        device: str = "cpu",
    ):
        super().__init__(
            n_inputs, n_outputs, name="random-linear", low=low, high=high, levels=levels, seed=seed, device=device
        )
        n_in, n_out = self.spec.n_inputs, self.spec.n_outputs
        self._W = (torch.randn(n_out, n_in, generator=self._gen) / math.sqrt(n_in)).to(self.device)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return self._unit(x) @ self._W.T

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The same map with its autograd graph (for the in-silico backprop baseline)."""
        return self._unit(x) @ self._W.T

    def digital_flops_per_sample(self) -> int:
        return linear_flops(self.spec.n_inputs, self.spec.n_outputs)


class RandomFeatures(_Control):
    """A fixed random nonlinear feature map computed digitally (``kind`` = ``"relu"`` or ``"speckle"``).

    Args:
        n_inputs: drive channels (default 16).
        n_outputs: output width (default: ``n_inputs``); give the physical system's width for a fair control.
        kind: ``"relu"`` (random ReLU features) or ``"speckle"`` (the optical simulator's equations, noise-free).
        phase_range: for ``"speckle"``, the phase at the top of the drive range in units of pi (the optical
            simulator's default 1.0).
        low, high, levels: the drive domain (default a continuous [0, 1]).
        seed: seeds the random map.
        device: where the map is computed.
    """

    isolates = "the physics beyond a digital random-feature map of the same width"

    def __init__(
        self,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        *,
        kind: Literal["relu", "speckle"] = "relu",
        phase_range: float = 1.0,
        low: float = 0.0,
        high: float = 1.0,
        levels: int | None = None,
        seed: int = 0,
        device: str = "cpu",
    ):
        self.kind = checks.choice("kind", kind, FEATURE_KINDS)
        self.phase_range = checks.positive("phase_range", phase_range)
        super().__init__(
            n_inputs, n_outputs, name="random-features", low=low, high=high, levels=levels, seed=seed, device=device
        )
        n_in, n_out = self.spec.n_inputs, self.spec.n_outputs
        if self.kind == "relu":
            self._W = (torch.randn(n_out, n_in, generator=self._gen) / math.sqrt(n_in)).to(self.device)
            self._b = (torch.randn(n_out, generator=self._gen) / math.sqrt(3.0)).to(self.device)
        else:
            g = torch.complex(
                torch.randn(n_out, n_in, generator=self._gen, dtype=torch.float64),
                torch.randn(n_out, n_in, generator=self._gen, dtype=torch.float64),
            )
            self._T = (g / torch.linalg.matrix_norm(g, ord=2)).to(device=self.device, dtype=torch.complex64)

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return torch.relu(self._unit(x) @ self._W.T + self._b)
        u = (x - self.spec.low) / (self.spec.high - self.spec.low)
        phase = math.pi * self.phase_range * u
        field = torch.polar(torch.full_like(phase, 1.0 / math.sqrt(self.spec.n_inputs)), phase)
        out = field.to(torch.complex64) @ self._T.T
        return (out.real**2 + out.imag**2) * self.spec.n_outputs

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return self._map(x)

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The same map with its autograd graph (for the in-silico backprop baseline)."""
        return self._map(x)

    def digital_flops_per_sample(self) -> int:
        n_in, n_out = self.spec.n_inputs, self.spec.n_outputs
        return relu_flops(n_in, n_out) if self.kind == "relu" else speckle_flops(n_in, n_out)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(kind=self.kind)
        if self.kind == "speckle":
            d.update(phase_range=self.phase_range)
        return d
