"""The end-to-end classifier and training loop shared by the baselines (backprop, PAT, zeroth-order).

MF-FF trains each block locally from a goodness; the baselines need one
network trained end to end with cross-entropy. It has the same blocks as
:class:`physnn.model.PNN` so that the comparison is between training methods,
not architectures::

    h_0 = x
    block i:  h_i --encoder--> drive --physics--> y --standardise--> [y, standardise(h_i)] --nn.Linear--> h_{i+1}
    logits = h_L                     (the last block's linear layer is the classifier)

There is no label embedding (the classifier head replaces it), so block 0
takes ``n_features`` inputs and pads the rest of the system's drive channels.
How gradients cross the physical layer is the *training method's* choice,
given as a ``physics(i, block, drive)`` callable:

* :func:`black_box` -- ``block.system(drive)``: a query, no gradient (inference, PAT's
  forward value, zeroth-order).
* :func:`in_silico` -- ``block.system.differentiable(drive)``: the simulator's declared
  differentiable model (the backprop baseline; the one exception to black-box use).
* PAT builds its own (forward through the system, backward through a twin).

Encoders and quantisation: the drive is ``Encoder(h)`` -- valid drive values,
exactly what the system accepts -- plus ``soft - soft.detach()`` where ``soft``
is the unquantised encoding. Its *value* is the quantised drive exactly (adding
an exact zero), its *gradient* is that of the continuous encoding: the
straight-through estimator for quantisation to the system's levels.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn

from ..encoding import Encoder
from ..model import _standardise, check_features, check_stack, hidden_widths, seeded_linear
from ..system import PhysicalSystem
from .base import Trainer

__all__ = ["E2EBlock", "E2ENet", "E2ETrainer", "Physics", "black_box", "in_silico", "ste_drive"]

#: ``physics(i, block, drive) -> measurements [B, n_outputs]``
Physics = Callable[[int, "E2EBlock", torch.Tensor], torch.Tensor]


def ste_drive(encoder: Encoder, h: torch.Tensor) -> torch.Tensor:
    """Valid drive values for ``h`` with a straight-through gradient (see the module docstring)."""
    spec = encoder.spec
    hard = encoder(h)  # detached, quantised, padded: what the system accepts
    soft = spec.low + encoder.unit(h) * (spec.high - spec.low)
    if soft.shape[1] < spec.n_inputs:
        soft = torch.cat([soft, soft.new_zeros(soft.shape[0], spec.n_inputs - soft.shape[1])], dim=1)
    return hard + (soft - soft.detach())


def black_box(i: int, block: "E2EBlock", drive: torch.Tensor) -> torch.Tensor:
    """Query the system (no gradient crosses it)."""
    return block.system(drive)


def in_silico(i: int, block: "E2EBlock", drive: torch.Tensor) -> torch.Tensor:
    """The simulator's explicit differentiable model (the declared exception to black-box use)."""
    fn = getattr(block.system, "differentiable", None)
    if not callable(fn):
        raise TypeError(
            f"system {block.system.spec.name!r} ({type(block.system).__name__}) has no differentiable(x) mode; "
            "in-silico backprop needs one (use PAT or zeroth-order for a black box)"
        )
    return fn(drive)


class E2EBlock(nn.Module):
    """Encoder -> physics -> standardise -> optional skip -> ``nn.Linear``."""

    def __init__(
        self,
        system: PhysicalSystem,
        in_features: int,
        out_features: int,
        *,
        skip: bool = True,
        encoder: str = "minmax",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not isinstance(system, PhysicalSystem):
            raise TypeError(f"system must be a PhysicalSystem, got {type(system).__name__}")
        if in_features > system.spec.n_inputs:
            raise ValueError(
                f"block input has {in_features} features but system {system.spec.name!r} takes "
                f"n_inputs={system.spec.n_inputs}; build the system wider or lower the hidden width"
            )
        self.system = system
        self.in_features = in_features
        self.skip = bool(skip)
        self.encoder = Encoder(system.spec, encoder)
        n_feat = system.spec.n_outputs + (in_features if skip else 0)
        self.linear = seeded_linear(n_feat, out_features, generator)

    def measure(self, h: torch.Tensor, physics: Physics, i: int) -> torch.Tensor:
        """The digital layer's input: the system's response to ``h`` (crossing it as ``physics`` says)."""
        y = physics(i, self, ste_drive(self.encoder, h)).to(h.device)
        feats = _standardise(y)
        if self.skip:
            feats = torch.cat([feats, _standardise(h)], dim=1)
        return feats

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(feats)


class E2ENet(nn.Module):
    """Physical blocks trained end to end; the last block's linear layer outputs the class logits.

    Args:
        systems: one system per block (as for :class:`physnn.model.PNN`).
        n_features: data features.
        n_classes: classes (the width of the last block's output).
        hidden: widths of the blocks before the last (an int or a list of
            ``len(systems) - 1``); default: the next block's system width.
        skip, encoder: as in :class:`physnn.model.PNN`.
        seed: seeds the digital weights.
    """

    def __init__(
        self,
        systems: Sequence[PhysicalSystem],
        n_features: int,
        n_classes: int,
        *,
        hidden: int | Sequence[int] | None = None,
        skip: bool = True,
        encoder: str = "minmax",
        seed: int = 0,
    ):
        super().__init__()
        systems = check_stack(systems, n_features, n_classes, "an E2ENet")
        widths = hidden_widths(systems, hidden, len(systems) - 1)  # the last block outputs the logits
        widths.append(n_classes)
        self.n_features = n_features
        self.n_classes = n_classes
        self.hparams = dict(hidden=widths[:-1], skip=skip, encoder=encoder, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        blocks, width = [], n_features
        for system, out in zip(systems, widths):
            blocks.append(E2EBlock(system, width, out, skip=skip, encoder=encoder, generator=gen))
            width = out
        self.blocks = nn.ModuleList(blocks)

    @property
    def systems(self) -> list[PhysicalSystem]:
        return [b.system for b in self.blocks]

    def check_features(self, x) -> torch.Tensor:
        return check_features(x, self.n_features)

    def forward(self, x: torch.Tensor, physics: Physics = black_box) -> torch.Tensor:
        h = x
        for i, block in enumerate(self.blocks):
            h = block(block.measure(h, physics, i))
        return h

    @torch.no_grad()
    def predict(self, x, batch_size: int = 256, physics: Physics = black_box) -> torch.Tensor:
        """Class predictions; one query per block per sample with the default black-box physics."""
        x = self.check_features(x)
        return torch.cat([self(x[s : s + batch_size], physics).argmax(1) for s in range(0, x.shape[0], batch_size)])

    def score(self, x, y, batch_size: int = 256, physics: Physics = black_box) -> float:
        """Accuracy on ``(x, y)`` (through the systems unless ``physics`` says otherwise)."""
        return float((self.predict(x, batch_size, physics) == torch.as_tensor(y)).float().mean())

    def with_systems(self, systems: Sequence[PhysicalSystem]) -> "E2ENet":
        """The same trained weights deployed on other systems of the same specs (e.g. a perturbed device)."""
        systems = list(systems)
        if len(systems) != len(self.blocks):
            raise ValueError(f"need {len(self.blocks)} systems, got {len(systems)}")
        for i, (b, s) in enumerate(zip(self.blocks, systems)):
            if (s.spec.n_inputs, s.spec.n_outputs) != (b.system.spec.n_inputs, b.system.spec.n_outputs):
                raise ValueError(
                    f"block {i}: system {s.spec.name!r} is {s.spec.n_inputs}->{s.spec.n_outputs}, the trained "
                    f"block expects {b.system.spec.n_inputs}->{b.system.spec.n_outputs}"
                )
        memo = {id(b.system): s for b, s in zip(self.blocks, systems)}
        return copy.deepcopy(self, memo)


# ====================================================================== training loop
class E2ETrainer(Trainer):
    """The base of the end-to-end baselines: cross-entropy on the logits, one Adam, a per-batch step.

    Subclasses implement :meth:`_step` (one optimiser step on a batch,
    returning the loss and the number of correct training predictions); the
    epoch loop, accounting, evaluation and state are :class:`~physnn.train.base.Trainer`'s.
    Each epoch's metrics add ``train_accuracy`` (of the training predictions
    made during the epoch) to the common ones.
    """

    name = "e2e"
    model_kind = "e2e"

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The one optimiser over every digital weight (None before the first fit)."""
        return self.optimizers[0] if self.optimizers else None

    def _check_model(self, model: nn.Module) -> None:
        if not isinstance(model, E2ENet):
            raise TypeError(f"{type(self).__name__} trains an E2ENet, got {type(model).__name__}")

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        return ["train_accuracy"]

    def _step(self, model: E2ENet, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        """One optimiser step on a batch; returns (loss, number of correct training predictions)."""
        raise NotImplementedError

    def _train_batch(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, float]:
        loss, correct = self._step(model, xb, yb)
        return {"loss": loss * xb.shape[0], "train_accuracy": float(correct)}

    def _evaluate(self, model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, metrics: dict[str, float]) -> None:
        assert self.accountant is not None
        with self.accountant.flops(("eval", tuple(x_val.shape))):
            metrics[self.eval_name] = model.score(x_val, y_val)
