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
microwave cavity, the acoustic cavity's temperature and membranes, the
neuromorphic chip's threshold and leak factors) are moved by ``strength``
times their natural scale (``drift_scales()``; rms, seeded by
``seed + 1``); for systems without drift parameters (the measured twin)
a per-channel gain and offset error of ``strength``
(relative gain, and offset in units of the mean output) is applied to the
outputs instead. The nominal instance the network was trained on is left
untouched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from physnn.core import checks
from physnn.core.e2e_model import E2ENet, in_silico
from physnn.core.registry import build_system
from physnn.core.system import PhysicalSystem
from physnn.train.e2e import E2ETrainer

__all__ = ["Backprop", "perturbed_system"]


class Backprop(E2ETrainer):
    """Backprop through ``differentiable`` models, Adam, cross-entropy (see the module docstring).

    Args:
        insilico_eval: also report the in-silico model's validation accuracy
            (``insilico_accuracy``; no queries).
        Others as :class:`~physnn.train.e2e.E2ETrainer`.
    """

    name = "backprop"

    def __init__(
        self,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        seed: int = 0,
        eval_every: int = 1,
        progress: bool = False,
        count_flops: bool = True,
        insilico_eval: bool = True,
    ):
        super().__init__(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            seed=seed,
            eval_every=eval_every,
            progress=progress,
            count_flops=count_flops,
        )
        self.insilico_eval = checks.boolean("insilico_eval", insilico_eval)

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        return ["train_accuracy", "insilico_accuracy"]

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


def perturbed_system(
    name: str, *, strength: float, n_inputs: int | None = None, seed: int = 0, device: str = "cpu", **options: Any
) -> PhysicalSystem:
    """A new instance of system ``name`` (built with ``options``) that differs from its model by ``strength``.

    Built through the registry as ``drifting`` with one event of size
    ``strength`` at t = 0 (see the module docstring), so the core needs no
    simulator import; the base system gets ``seed`` (the same "design" as the
    nominal one), the perturbation ``seed + 1``. ``strength`` is in units of
    each drift parameter's decorrelation scale (or relative gain); 0 gives a
    device identical to a fresh nominal instance.
    """
    strength = checks.nonnegative("strength", strength)
    return build_system(
        "drifting",
        n_inputs=n_inputs,
        seed=seed,
        device=device,
        base=name,
        base_options=options,
        events=[(0.0, strength)],
    )
