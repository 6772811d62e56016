"""End-to-end backpropagation through a simulator's differentiable model ("in silico").

The ideal upper bound of the comparison, and the usual lab practice it is
compared against: train the whole network on a digital model of the physics,
then deploy the trained digital weights on the device. It is the **one
declared exception** to black-box use: training calls
``system.differentiable(drive)`` (the noise-free model with its autograd
graph, see e.g. :meth:`physnn.simulators.optics.OpticalCavity.differentiable`),
never ``system(x)``, so it spends no physical queries -- and its digital FLOPs
include running the physics model, which a computer has to do.

Evaluation (``test_accuracy``) is on the deployed network: the trained weights
with the physics *queried* through the systems, as on a bench. When the
device differs from its model (fabrication, calibration, drift), deployed
accuracy drops; :func:`perturbed_system` builds such a device and
:meth:`E2ENet.with_systems` deploys the weights on it. ``insilico_accuracy``
(metrics) is the accuracy of the model itself.

Perturbed devices
-----------------
:func:`perturbed_system` builds a fresh instance of a registered system (same
name, options and seed as the nominal one, so the same "design") and wraps it
in :class:`physnn.simulators.drift.Drifting` with a single sudden event at
time 0 of size ``strength``: from its first query on, the device's internal
drift parameters (for simulators that expose ``drift_parameters()``: the
optical transmission matrix, clutter positions and element detuning of the
microwave cavity, the acoustic cavity's parameters) are moved by ``strength``
times their natural scale (``drift_scales()``; rms, seeded by
``perturb_seed``); for systems without drift parameters (the measured twin,
the neuromorphic chip) a per-channel gain and offset error of ``strength``
(relative gain, and offset in units of the mean output) is applied to the
outputs instead. The nominal instance the network was trained on is left
untouched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..registry import build_system
from ..system import PhysicalSystem
from .e2e_model import E2ENet, E2ETrainer, in_silico

__all__ = ["Backprop", "perturbed_system"]


class Backprop(E2ETrainer):
    """Backprop through ``differentiable`` models, Adam, cross-entropy (see the module docstring).

    Args:
        insilico_eval: also report the in-silico model's validation accuracy
            (``insilico_accuracy``; no queries).
        Others as :class:`~physnn.train.e2e_model.E2ETrainer`.
    """

    name = "backprop"

    def __init__(self, epochs: int = 30, batch_size: int = 64, lr: float = 0.01, weight_decay: float = 0.0,
                 seed: int = 0, eval_every: int = 1, count_flops: bool = True, insilico_eval: bool = True):
        super().__init__(epochs, batch_size, lr, weight_decay, seed, eval_every, count_flops)
        self.insilico_eval = bool(insilico_eval)

    def _setup(self, model: E2ENet, x: torch.Tensor, y: torch.Tensor) -> None:
        for i, b in enumerate(model.blocks):
            if not callable(getattr(b.system, "differentiable", None)):
                raise TypeError(
                    f"block {i}: system {b.system.spec.name!r} ({type(b.system).__name__}) has no "
                    "differentiable(x) mode; in-silico backprop needs one (use PAT or zeroth-order)"
                )

    def _step(self, model: E2ENet, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        assert self.accountant is not None and self.optimizer is not None
        with self.accountant.flops(("backprop.step", tuple(xb.shape))):
            logits = model(xb, in_silico)
            loss = F.cross_entropy(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return float(loss.detach()), int((logits.detach().argmax(1) == yb).sum())

    def _evaluate(self, model: E2ENet, x_val: torch.Tensor, y_val: torch.Tensor, metrics: dict[str, float]) -> None:
        super()._evaluate(model, x_val, y_val, metrics)
        if self.insilico_eval:
            assert self.accountant is not None
            with self.accountant.flops(("eval.insilico", tuple(x_val.shape))):
                metrics["insilico_accuracy"] = model.score(x_val, y_val, physics=in_silico)


def perturbed_system(name: str, *, strength: float, perturb_seed: int = 0, **options: Any) -> PhysicalSystem:
    """A new instance of system ``name`` (built with ``options``) that differs from its model by ``strength``.

    See the module docstring for the mechanism. ``strength`` is in units of
    each drift parameter's decorrelation scale (or relative gain); 0 gives a
    device identical to a fresh nominal instance.
    """
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not strength >= 0:
        raise ValueError(f"strength must be a number >= 0, got {strength!r}")
    try:  # the core does not depend on the simulators; the wrapper is loaded only when asked for
        from physnn.simulators.drift import Drifting
    except ImportError as exc:  # pragma: no cover - the simulators ship with physnn
        raise ImportError(f"perturbed_system needs physnn.simulators.drift: {exc}") from exc
    system = build_system(name, **options)
    return Drifting(system, events=[(0.0, float(strength))], seed=perturb_seed)
