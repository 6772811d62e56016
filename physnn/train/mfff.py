"""Model-free forward-forward training (MF-FF, Momeni et al., Science 2023).

Read top to bottom, one batch is::

    pos = embed(x, y)          neg = embed(x, random wrong label)
    h = [pos; neg]
    for each block:
        feats = block.measure(h)            # ONE system query for 2B samples
        repeat inner_steps times:           # the measurements are reused
            g = goodness(linear(feats))
            loss = softplus(-theta (g_pos - g_neg));  step this block's optimiser
        h = linear(feats).detach()          # input of the next block

The physical system is only queried; no gradient ever reaches it, and each
block learns from its own local loss. A training epoch therefore costs exactly
``2 * L * N`` queried samples; evaluating accuracy costs ``C * L * N``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import checks
from ..goodness import ff_loss
from ..system import PhysicalSystem
from .base import EpochCallback, History, Trainer

__all__ = ["MFFF", "History", "EpochCallback", "count_samples"]


def count_samples(systems: list[PhysicalSystem]) -> tuple[int, float]:
    """Total samples queried and device seconds over the distinct systems."""
    seen: dict[int, PhysicalSystem] = {id(s): s for s in systems}
    return sum(s.stats.samples for s in seen.values()), sum(s.stats.seconds for s in seen.values())


class MFFF(Trainer):
    """The MF-FF trainer: scikit-learn style, every hyperparameter in the constructor.

    Trains a :class:`physnn.model.PNN` (or anything with its interface, e.g.
    :class:`physnn.train.ff_digital.DigitalFF`).

    Args:
        epochs: passes over the training set.
        batch_size: samples per batch (each batch queries 2x this per block).
        lr: Adam learning rate of every block's linear layer.
        inner_steps: optimiser steps per batch reusing the same measurements
            (trades digital compute for physical queries).
        theta: sharpness of the local loss softplus(-theta (g+ - g-)).
        weight_decay: Adam weight decay.
        seed: seeds shuffling and negative labels (the model has its own seed).
        eval_every: evaluate on the validation set every this many epochs
            (0: only at the end); each evaluation costs C*L queries per sample.
        progress: show a tqdm progress bar over batches.
        count_flops: record the digital FLOPs of training (``digital_flops`` per epoch).
    """

    name = "mfff"
    model_kind = "pnn"

    def __init__(
        self,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 0.01,
        inner_steps: int = 1,
        theta: float = 10.0,
        weight_decay: float = 0.0,
        seed: int = 0,
        eval_every: int = 1,
        progress: bool = False,
        count_flops: bool = True,
    ):
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                         eval_every=eval_every, progress=progress, count_flops=count_flops)
        self.inner_steps = checks.integer("inner_steps", inner_steps, low=1)
        self.theta = checks.positive("theta", theta)

    # -------------------------------------------------------------- contract
    def _check_model(self, model: nn.Module) -> None:
        for attr in ("blocks", "embed", "score", "n_classes"):
            if not hasattr(model, attr):
                raise TypeError(f"MFFF trains a PNN (blocks with a goodness and a label embedding), "
                                f"got {type(model).__name__}")

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        names = []
        for i in range(len(model.blocks)):
            names += [f"loss/block{i}", f"g_pos/block{i}", f"g_neg/block{i}"]
        return names

    def _make_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(b.linear.parameters(), lr=self.lr, weight_decay=self.weight_decay)
                for b in model.blocks]

    # ------------------------------------------------------------------ epoch
    def _train_epoch(self, pnn: nn.Module, x: torch.Tensor, y: torch.Tensor, bar: Any) -> dict[str, float]:
        n, C, L = x.shape[0], pnn.n_classes, len(pnn.blocks)
        acct = self.accountant
        assert acct is not None
        perm = torch.randperm(n, generator=self.generator)
        loss_sum = [0.0] * L
        gp_sum = [0.0] * L
        gn_sum = [0.0] * L
        g_all: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(L)]
        for start in range(0, n, self.batch_size):
            idx = perm[start : start + self.batch_size]
            xb, yb = x[idx], y[idx]
            B = xb.shape[0]
            # a uniformly random wrong label: offset 1..C-1 from the true one
            wrong = (yb + torch.randint(1, C, (B,), generator=self.generator)) % C
            h = torch.cat([pnn.embed(xb, yb), pnn.embed(xb, wrong)])
            for i, (block, opt) in enumerate(zip(pnn.blocks, self.optimizers)):
                feats = block.measure(h)
                with acct.flops(("mfff", i, tuple(feats.shape), self.inner_steps)):
                    for _ in range(self.inner_steps):
                        g = block.goodness(block(feats))
                        loss = ff_loss(g[:B], g[B:], self.theta)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    with torch.no_grad():
                        z = block(feats)
                        g = block.goodness(z)
                loss_sum[i] += float(ff_loss(g[:B], g[B:], self.theta)) * B
                gp_sum[i] += float(g[:B].sum())
                gn_sum[i] += float(g[B:].sum())
                g_all[i].append((g[:B].clone(), g[B:].clone()))
                h = z
            if bar is not None:
                bar.update(1)
        for i in range(L):
            self.history.last_goodness[i] = (torch.cat([p for p, _ in g_all[i]]), torch.cat([q for _, q in g_all[i]]))
        metrics: dict[str, float] = {}
        for i in range(L):
            metrics[f"loss/block{i}"] = loss_sum[i] / n
            metrics[f"g_pos/block{i}"] = gp_sum[i] / n
            metrics[f"g_neg/block{i}"] = gn_sum[i] / n
        metrics["loss"] = sum(s / n for s in loss_sum) / L  # mean of the per-block losses
        return metrics
