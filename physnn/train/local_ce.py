"""Local cross-entropy: each physical block learns to classify on its own, forward only.

One batch, read top to bottom::

    h = x
    for each block i:
        feats = block.measure(h)             # ONE system query for B samples
        repeat inner_steps times:            # the measurements are reused
            loss_i = cross_entropy(head_i(linear_i(feats)), y)
            step block i's optimiser (its linear layer and head only)
        h = linear_i(feats).detach()         # the next block's input

Like MF-FF it is model-free and local: the physical system is only queried,
no gradient ever crosses it or another block. Unlike MF-FF it needs neither a
label embedding nor negative data, so an epoch costs ``L * N`` queried
samples (MF-FF: ``2 L N``) and inference one pass (``L`` queries per sample;
MF-FF's goodness argmax: ``C L``). The label still shapes every block's
features through the block's own head (a "local classifier" in the sense of
Mostafa et al. 2018 and Nøkland & Eidnes 2019, here with a physical layer in
each block). Prediction: the blocks' log-probabilities summed
(:class:`physnn.core.local_model.LocalNet`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from physnn.core import checks
from physnn.core.e2e_model import black_box
from physnn.core.local_model import SKIP_SCALINGS, LocalNet
from physnn.train.base import LR_SCHEDULES, Trainer, scheduled_lr

__all__ = ["LocalCE"]


class LocalCE(Trainer):
    """Local cross-entropy training of a :class:`~physnn.core.local_model.LocalNet` (see the module docstring).

    Args:
        inner_steps: optimiser steps per batch reusing the same measurements.
        lr_schedule: ``"constant"`` or ``"cosine"`` (each block's learning rate decays to 0 over ``epochs``).
        label_smoothing: cross-entropy label smoothing (a regulariser; 0 = none).
        skip_scaling: how the network's skip paths are scaled (:class:`~physnn.core.local_model.LocalNet`;
            ``"data"``, the default, keeps the data whole so the stack contains a linear classifier;
            ``"sample"`` reproduces round-2 runs).
        Others as :class:`~physnn.train.base.Trainer`.
    """

    name = "local_ce"
    model_kind = "local"

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
        *,
        inner_steps: int = 1,
        lr_schedule: str = "cosine",
        label_smoothing: float = 0.0,
        skip_scaling: str = "data",
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
        self.inner_steps = checks.integer("inner_steps", inner_steps, low=1)
        self.lr_schedule = checks.choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        self.label_smoothing = checks.real("label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
        self.skip_scaling = checks.choice("skip_scaling", skip_scaling, SKIP_SCALINGS)

    def build_model(self, systems: Sequence[Any], n_features: int, n_classes: int, **options: Any) -> nn.Module:
        keep = {k: v for k, v in options.items() if k in ("hidden", "skip", "encoder", "seed")}
        return LocalNet(systems, n_features, n_classes, skip_scaling=self.skip_scaling, **keep)

    def _check_model(self, model: nn.Module) -> None:
        if not isinstance(model, LocalNet):
            raise TypeError(f"{type(self).__name__} trains a LocalNet, got {type(model).__name__}")

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        names = [f"loss/block{i}" for i in range(len(model.blocks))]
        names += [f"train_accuracy/block{i}" for i in range(len(model.blocks))]
        return [*names, "train_accuracy", "lr"]

    def _setup(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Fit block 0's skip standardisation on the training features (digital, no query)."""
        model.fit_scaling(x)

    def _make_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam([*b.linear.parameters(), *h.parameters()], lr=self.lr, weight_decay=self.weight_decay)
            for b, h in zip(model.blocks, model.heads)
        ]

    def _train_epoch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, bar: Any) -> dict[str, float]:
        lr = self._set_lr(scheduled_lr(self.lr, self.lr_schedule, self.epochs_done, self.epochs))
        out = super()._train_epoch(model, x, y, bar)
        L = len(model.blocks)
        out["loss"] = sum(out[f"loss/block{i}"] for i in range(L)) / L
        out["lr"] = lr
        return out

    def _train_batch(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, float]:
        acct = self.accountant
        assert acct is not None
        B = xb.shape[0]
        sums: dict[str, float] = {}
        h = xb
        total = None
        for i, (block, head, opt) in enumerate(zip(model.blocks, model.heads, self.optimizers)):
            feats = block.measure(h, black_box, i)  # the only contact with the system: a query
            with acct.flops(("local_ce", i, tuple(feats.shape), self.inner_steps)):
                for _ in range(self.inner_steps):
                    loss = F.cross_entropy(head(block(feats)), yb, label_smoothing=self.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    z = block(feats)
                    logits = head(z)
            lp = torch.log_softmax(logits, dim=1)
            total = lp if total is None else total + lp
            sums[f"loss/block{i}"] = float(F.cross_entropy(logits, yb)) * B
            sums[f"train_accuracy/block{i}"] = float((logits.argmax(1) == yb).sum())
            h = z
        assert total is not None
        sums["train_accuracy"] = float((total.argmax(1) == yb).sum())
        return sums
