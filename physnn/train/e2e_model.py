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
import math
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..accounting import Accountant
from ..encoding import Encoder
from ..model import _standardise, seeded_linear, check_features, check_labels, check_stack, hidden_widths
from ..system import PhysicalSystem
from .mfff import History

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

    def __init__(self, system: PhysicalSystem, in_features: int, out_features: int, *, skip: bool = True,
                 encoder: str = "minmax", generator: torch.Generator | None = None):
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

    def features(self, h: torch.Tensor, physics: Physics, i: int) -> torch.Tensor:
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

    def __init__(self, systems: Sequence[PhysicalSystem], n_features: int, n_classes: int, *,
                 hidden: int | Sequence[int] | None = None, skip: bool = True, encoder: str = "minmax",
                 seed: int = 0):
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
            h = block(block.features(h, physics, i))
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
class E2ETrainer:
    """The epoch loop the end-to-end baselines share; subclasses define one training step.

    Same verb shape as :class:`physnn.train.mfff.MFFF`: every hyperparameter in
    the constructor, ``fit(model, x, y, x_val, y_val, on_epoch_end=cb) ->
    History`` with one metrics dict per epoch. Each epoch's dict holds the
    MF-FF keys (``loss``, ``train_queries``, ``eval_queries``,
    ``device_seconds``, ``epoch_seconds``, ``wall_seconds``, ``test_accuracy``
    when validation data are given) and the cumulative totals of the run's
    :class:`~physnn.accounting.Accountant` (``queries/train``,
    ``queries/twin_fit``, ``flops/train``, ...).

    Args:
        epochs: passes over the training set.
        batch_size: samples per optimiser step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: seeds shuffling and every random draw of the method.
        eval_every: evaluate on the validation set every this many epochs (0: only at the end).
        count_flops: count digital FLOPs (memoised per step shape, see :mod:`physnn.accounting`).
    """

    name = "e2e"

    def __init__(self, epochs: int = 30, batch_size: int = 64, lr: float = 0.01, weight_decay: float = 0.0,
                 seed: int = 0, eval_every: int = 1, count_flops: bool = True):
        for key, v, lo in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("eval_every", eval_every, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{key} must be an integer >= {lo}, got {v!r}")
        _positive("lr", lr)
        if not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool) or not weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.eval_every = eval_every
        self.count_flops = bool(count_flops)
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self.accountant: Accountant | None = None
        self.epochs_done = 0
        self.history = History()

    # -------------------------------------------------------------- hooks
    def _setup(self, model: E2ENet, x: torch.Tensor, y: torch.Tensor) -> None:
        """Once, before the first epoch (PAT fits its twins here)."""

    def _step(self, model: E2ENet, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        """One optimiser step on a batch; returns (loss, number of correct training predictions)."""
        raise NotImplementedError

    def _after_epoch(self, model: E2ENet, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch's training (PAT refits its twins here); may add metrics."""

    def _evaluate(self, model: E2ENet, x_val: torch.Tensor, y_val: torch.Tensor, metrics: dict[str, float]) -> None:
        assert self.accountant is not None
        with self.accountant.flops(("eval", tuple(x_val.shape))):
            metrics["test_accuracy"] = model.score(x_val, y_val)

    # ---------------------------------------------------------------- fit
    def fit(self, model: E2ENet, x, y, x_val=None, y_val=None, *,
            on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> History:
        if not isinstance(model, E2ENet):
            raise TypeError(f"{type(self).__name__} trains an E2ENet, got {type(model).__name__}")
        x = model.check_features(x)
        y = _labels(y, x.shape[0], model.n_classes, "y")
        has_val = x_val is not None and y_val is not None
        if has_val:
            x_val = model.check_features(x_val)
            y_val = _labels(y_val, x_val.shape[0], model.n_classes, "y_val")
        if self.accountant is None:
            self.accountant = Accountant(model.systems, count_flops=self.count_flops)
        acct = self.accountant
        t_start = time.perf_counter()
        pre_setup: dict[str, float] | None = None
        if self.optimizer is None:
            pre_setup = acct.metrics()  # the setup (PAT's twin fit) is charged to the first epoch
            self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            self._setup(model, x, y)
        model.train()
        try:
            while self.epochs_done < self.epochs:
                epoch = self.epochs_done
                before, pre_setup = (pre_setup if pre_setup is not None else acct.metrics()), None
                t0 = time.perf_counter()
                perm = torch.randperm(x.shape[0], generator=self.generator)
                loss_sum, correct = 0.0, 0
                with acct.phase("train"):
                    for start in range(0, x.shape[0], self.batch_size):
                        idx = perm[start : start + self.batch_size]
                        loss, ok = self._step(model, x[idx], y[idx])
                        loss_sum += loss * idx.numel()
                        correct += ok
                metrics: dict[str, float] = {"epoch": float(epoch + 1), "loss": loss_sum / x.shape[0],
                                             "train_accuracy": correct / x.shape[0]}
                self._after_epoch(model, epoch, metrics)
                last = epoch + 1 == self.epochs
                if has_val and (last or (self.eval_every and (epoch + 1) % self.eval_every == 0)):
                    model.eval()
                    with acct.phase("eval"):
                        self._evaluate(model, x_val, y_val, metrics)
                    model.train()
                after = acct.metrics()
                delta = lambda k: after.get(k, 0.0) - before.get(k, 0.0)  # noqa: E731
                metrics["train_queries"] = delta("queries/train") + delta("queries/twin_fit")
                metrics["eval_queries"] = delta("queries/eval")
                metrics["device_seconds"] = delta("device_seconds/total")
                metrics["epoch_seconds"] = time.perf_counter() - t0
                metrics["wall_seconds"] = time.perf_counter() - t_start
                metrics.update(after)
                self.epochs_done += 1
                self.history.epochs.append(metrics)
                if on_epoch_end is not None:
                    on_epoch_end(epoch, metrics)
        finally:
            model.eval()
        return self.history

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "seed", "eval_every")}


def _labels(y, n: int, n_classes: int, name: str) -> torch.Tensor:
    return check_labels(y, n, n_classes, name)


def _positive(name: str, v: Any) -> None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {v!r}")
