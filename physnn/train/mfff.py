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

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..accounting import Accountant
from ..goodness import ff_loss
from ..model import PNN, check_labels
from ..system import PhysicalSystem

__all__ = ["MFFF", "History", "count_samples"]

EpochCallback = Callable[[int, dict[str, float]], None]


def count_samples(systems: list[PhysicalSystem]) -> tuple[int, float]:
    """Total samples queried and device seconds over the distinct systems."""
    seen: dict[int, PhysicalSystem] = {id(s): s for s in systems}
    return sum(s.stats.samples for s in seen.values()), sum(s.stats.seconds for s in seen.values())


@dataclass
class History:
    """Per-epoch metrics (a list of dicts) plus every goodness value of the last epoch, per block."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    last_goodness: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def metric(self, name: str) -> list[float]:
        return [e.get(name, float("nan")) for e in self.epochs]


class MFFF:
    """The MF-FF trainer: scikit-learn style, every hyperparameter in the constructor.

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
        for name, v, lo in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("inner_steps", inner_steps, 1),
                            ("eval_every", eval_every, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        for name, v in (("lr", lr), ("theta", theta)):
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = float(lr)
        self.inner_steps = inner_steps
        self.theta = float(theta)
        self.weight_decay = float(weight_decay)
        self.seed = seed
        self.eval_every = eval_every
        self.progress = progress
        self.generator = torch.Generator().manual_seed(seed)
        # digital FLOPs of the local updates (memoised per block and batch shape, so counting is cheap)
        self.accountant = Accountant(count_flops=count_flops)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.epochs_done = 0
        self.history = History()

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("epochs", "batch_size", "lr", "inner_steps", "theta",
                                               "weight_decay", "seed", "eval_every")}

    # -------------------------------------------------------------- state
    def _ensure_optimizers(self, pnn: PNN) -> None:
        if len(self.optimizers) != len(pnn.blocks):
            self.optimizers = [
                torch.optim.Adam(b.linear.parameters(), lr=self.lr, weight_decay=self.weight_decay)
                for b in pnn.blocks
            ]

    def state_dict(self) -> dict[str, Any]:
        """Optimiser states, the RNG state and the epoch counter, for checkpoints."""
        return {
            "epochs_done": self.epochs_done,
            "generator": self.generator.get_state(),
            "optimizers": [o.state_dict() for o in self.optimizers],
        }

    def load_state_dict(self, pnn: PNN, state: dict[str, Any]) -> None:
        self._ensure_optimizers(pnn)
        self.epochs_done = int(state["epochs_done"])
        self.generator.set_state(state["generator"])
        for opt, s in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(s)

    # ---------------------------------------------------------------- fit
    def fit(
        self,
        pnn: PNN,
        x,
        y,
        x_val=None,
        y_val=None,
        *,
        on_epoch_end: EpochCallback | None = None,
    ) -> History:
        """Train ``pnn`` on ``(x, y)`` until ``epochs`` epochs are done in total.

        Calling ``fit`` again after :meth:`load_state_dict` continues a run
        from its checkpoint. ``on_epoch_end(epoch, metrics)`` is called after
        each epoch (the run file hooks in here).
        """
        x = pnn.check_features(x)
        y = check_labels(y, x.shape[0], pnn.n_classes)
        has_val = x_val is not None and y_val is not None
        self._ensure_optimizers(pnn)
        pnn.train()
        n = x.shape[0]
        n_batches = (n + self.batch_size - 1) // self.batch_size
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=(self.epochs - self.epochs_done) * n_batches, unit="batch", dynamic_ncols=True)
        t_start = time.perf_counter()
        try:
            while self.epochs_done < self.epochs:
                epoch = self.epochs_done
                q0, s0 = count_samples(pnn.systems)
                f0 = self._flops_so_far()
                t0 = time.perf_counter()
                losses, gpos, gneg = self._epoch(pnn, x, y, bar)
                q1, s1 = count_samples(pnn.systems)
                metrics: dict[str, float] = {"epoch": float(epoch + 1), "train_queries": float(q1 - q0),
                                             "device_seconds": float(s1 - s0)}
                if self.accountant.count_flops:
                    metrics["digital_flops"] = float(self._flops_so_far() - f0)
                for i, (l, gp, gn) in enumerate(zip(losses, gpos, gneg)):
                    metrics[f"loss/block{i}"] = l
                    metrics[f"g_pos/block{i}"] = gp
                    metrics[f"g_neg/block{i}"] = gn
                metrics["loss"] = sum(losses) / len(losses)
                last = epoch + 1 == self.epochs
                if has_val and (last or (self.eval_every and (epoch + 1) % self.eval_every == 0)):
                    qv0, _ = count_samples(pnn.systems)
                    pnn.eval()
                    metrics["test_accuracy"] = pnn.score(x_val, y_val)
                    pnn.train()
                    metrics["eval_queries"] = float(count_samples(pnn.systems)[0] - qv0)
                metrics["epoch_seconds"] = time.perf_counter() - t0
                metrics["wall_seconds"] = time.perf_counter() - t_start
                self.epochs_done += 1
                self.history.epochs.append(metrics)
                if bar is not None:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}",
                                    **({"test_acc": f"{metrics['test_accuracy']:.3f}"} if "test_accuracy" in metrics else {}))
                if on_epoch_end is not None:
                    on_epoch_end(epoch, metrics)
        finally:
            if bar is not None:
                bar.close()
            pnn.eval()
        return self.history

    def _flops_so_far(self) -> float:
        return self.accountant.metrics().get("flops/total", 0.0)

    def _epoch(self, pnn: PNN, x: torch.Tensor, y: torch.Tensor, bar) -> tuple[list[float], list[float], list[float]]:
        n, C, L = x.shape[0], pnn.n_classes, len(pnn.blocks)
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
                with self.accountant.flops(("mfff", i, tuple(feats.shape), self.inner_steps)):
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
        return [s / n for s in loss_sum], [s / n for s in gp_sum], [s / n for s in gn_sum]
