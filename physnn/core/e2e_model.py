"""The end-to-end classifier shared by the baselines (backprop, PAT, zeroth-order); their training loop is
:class:`physnn.train.e2e.E2ETrainer`.

MF-FF trains each block locally from a goodness; the baselines need one
network trained end to end with cross-entropy. It has the same blocks as
:class:`physnn.core.model.PNN` so that the comparison is between training methods,
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

from physnn.core.encoding import Encoder
from physnn.core.model import _standardise, check_features, check_stack, hidden_widths, seeded_linear
from physnn.core.system import PhysicalSystem

__all__ = ["E2EBlock", "E2ENet", "Physics", "black_box", "in_silico", "ste_drive"]

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
        systems: one system per block (as for :class:`physnn.core.model.PNN`).
        n_features: data features.
        n_classes: classes (the width of the last block's output).
        hidden: widths of the blocks before the last (an int or a list of
            ``len(systems) - 1``); default: the next block's system width.
        skip: as in :class:`physnn.core.model.PNN`.
        encoder: as in :class:`physnn.core.model.PNN`.
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
