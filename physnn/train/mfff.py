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

Spending the bench (issue 12):

* **Grouped block-0 queries** (``group_block0``, on by default): block 0's
  drives depend on the data and the label embedding only, never on a weight.
  So the epoch's shuffling and negative labels are drawn first (in the same
  order from the same generator as batch by batch), and block 0's drives of
  the whole epoch go out in as few calls as the system's ``spec.max_batch``
  allows. The weights are bit-identical to the batch-by-batch schedule on a
  system whose rows do not interact (``tests/test_schedule.py``).
* **Block-0 cache** (``cache_block0``, opt-in): responses to block-0 drives
  already measured are reused -- for a *stable* device only (noise-free, or
  noise you accept to freeze). The runner empties it (:meth:`MFFF.invalidate_cache`)
  when the probes drift beyond their repeatability floor. The drive includes the
  label scale, so ``label_scale = "batch_max"`` rarely repeats a drive; a fixed
  scale or ``"sample_max"`` does.
* **Pipelined schedule** (``schedule = "pipelined"``): see :mod:`physnn.train.schedule`;
  the same weights as ``"serial"``, with each device measuring while the digital
  layers of other blocks update.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from physnn.core import checks
from physnn.core.goodness import ff_loss
from physnn.core.model import _standardise
from physnn.core.system import PhysicalSystem
from physnn.train.base import LR_SCHEDULES, EpochCallback, History, Trainer, scheduled_lr
from physnn.train.schedule import SCHEDULES, DeviceExecutors, run_wavefront

__all__ = ["MFFF", "History", "EpochCallback", "count_samples"]


def count_samples(systems: list[PhysicalSystem]) -> tuple[int, float]:
    """Total samples queried and device seconds over the distinct systems."""
    seen: dict[int, PhysicalSystem] = {id(s): s for s in systems}
    return sum(s.stats.samples for s in seen.values()), sum(s.stats.seconds for s in seen.values())


class MFFF(Trainer):
    """The MF-FF trainer: scikit-learn style, every hyperparameter in the constructor.

    Trains a :class:`physnn.core.model.PNN` (or anything with its interface, e.g.
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
        schedule: ``"serial"`` or ``"pipelined"`` (one worker per device; identical weights).
        lr_schedule: ``"constant"`` (the paper's) or ``"cosine"`` (decayed to 0 over ``epochs``).
        group_block0: send an epoch's block-0 drives in as few calls as ``max_batch`` allows.
        cache_block0: reuse block-0 responses to drives already measured (stable devices only).
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
        schedule: str = "serial",
        group_block0: bool = True,
        cache_block0: bool = False,
        lr_schedule: str = "constant",
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
        self.theta = checks.positive("theta", theta)
        self.schedule = checks.choice("schedule", schedule, SCHEDULES)
        self.group_block0 = checks.boolean("group_block0", group_block0)
        self.cache_block0 = checks.boolean("cache_block0", cache_block0)
        self.lr_schedule = checks.choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        self._cache: dict[bytes, torch.Tensor] = {}
        #: Block-0 samples answered from the cache (cumulative, this process).
        self.cache_hits = 0

    def invalidate_cache(self) -> int:
        """Forget every cached block-0 response (the device drifted); returns how many were dropped."""
        n = len(self._cache)
        self._cache.clear()
        return n

    def _expected_epoch_queries(self, model: nn.Module, n: int) -> float | None:
        return float(2 * len(model.blocks) * n)  # an upper bound with the cache

    # -------------------------------------------------------------- contract
    def _check_model(self, model: nn.Module) -> None:
        for attr in ("blocks", "embed", "score", "n_classes"):
            if not hasattr(model, attr):
                raise TypeError(
                    f"MFFF trains a PNN (blocks with a goodness and a label embedding), got {type(model).__name__}"
                )

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        names = []
        for i in range(len(model.blocks)):
            names += [f"loss/block{i}", f"g_pos/block{i}", f"g_neg/block{i}"]
        return names

    def _make_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(b.linear.parameters(), lr=self.lr, weight_decay=self.weight_decay) for b in model.blocks
        ]

    # ------------------------------------------------------------------ epoch
    def _draw_batches(self, pnn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
        """The epoch's block-0 inputs ``[pos; neg]`` and batch sizes, drawn in the batch-by-batch order.

        The permutation first, then one set of wrong labels per batch: exactly
        the draws (and order) of the historical batch-by-batch loop, so every
        schedule sees the same batches.
        """
        n, C = x.shape[0], pnn.n_classes
        perm = torch.randperm(n, generator=self.generator)
        out = []
        for start in range(0, n, self.batch_size):
            idx = perm[start : start + self.batch_size]
            xb, yb = x[idx], y[idx]
            B = xb.shape[0]
            # a uniformly random wrong label: offset 1..C-1 from the true one
            wrong = (yb + torch.randint(1, C, (B,), generator=self.generator)) % C
            out.append((torch.cat([pnn.embed(xb, yb), pnn.embed(xb, wrong)]), B))
        return out

    @staticmethod
    def _features(block: nn.Module, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The digital layer's input from a measurement ``y`` of ``block.encoder(h)`` (as ``Block.measure``)."""
        feats = _standardise(y.to(h.device))
        if block.skip:
            feats = torch.cat([feats, _standardise(h.detach())], dim=1)
        return feats

    def _measure_block0(self, block: nn.Module, hs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Block 0's features for the batches ``hs`` in as few calls as ``max_batch`` allows (cache first)."""
        if getattr(block, "system", None) is None:  # a digital block: nothing to query, nothing to group
            return [block.measure(h) for h in hs]
        drives = [block.encoder(h) for h in hs]  # per batch: an encoder may normalise per batch
        allx = torch.cat(drives)
        if self.cache_block0:
            keys = [r.numpy().tobytes() for r in allx.cpu()]
            first: dict[bytes, int] = {}  # drive -> its first row, for the drives not yet cached
            for j, k in enumerate(keys):
                if k not in self._cache and k not in first:
                    first[k] = j
            if first:
                got = block.system(allx[list(first.values())])
                for k, row in zip(first, got):
                    self._cache[k] = row.clone()
            self.cache_hits += len(keys) - len(first)
            ys = torch.stack([self._cache[k] for k in keys])
        else:
            ys = block.system(allx)  # the system splits a batch over max_batch itself
        out, at = [], 0
        for h in hs:
            out.append(self._features(block, h, ys[at : at + h.shape[0]]))
            at += h.shape[0]
        return out

    def _block0_groups(self, sizes: list[int], max_batch: int | None) -> list[list[int]]:
        """Batches per block-0 call: one per batch without grouping, else as many whole batches as fit."""
        if not self.group_block0:
            return [[b] for b in range(len(sizes))]
        groups: list[list[int]] = [[]]
        rows = 0
        for b, s in enumerate(sizes):
            if groups[-1] and max_batch is not None and rows + s > max_batch:
                groups.append([])
                rows = 0
            groups[-1].append(b)
            rows += s
        return groups

    def _train_epoch(self, pnn: nn.Module, x: torch.Tensor, y: torch.Tensor, bar: Any) -> dict[str, float]:
        if self.lr_schedule != "constant":
            self._set_lr(scheduled_lr(self.lr, self.lr_schedule, self.epochs_done, self.epochs))
        n, L = x.shape[0], len(pnn.blocks)
        acct = self.accountant
        assert acct is not None
        batches = self._draw_batches(pnn, x, y)
        hs = [h for h, _ in batches]
        sizes = [B for _, B in batches]
        loss_sum = [0.0] * L
        gp_sum = [0.0] * L
        gn_sum = [0.0] * L
        g_all: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in range(L)]
        block0 = pnn.blocks[0]
        system0 = getattr(block0, "system", None)  # a digital control (DigitalFF) has no system
        groups = self._block0_groups([h.shape[0] for h in hs], system0.spec.max_batch if system0 is not None else None)

        def update(i: int, b: int, feats: torch.Tensor) -> torch.Tensor:
            """Block ``i``'s optimiser steps on batch ``b``; returns the next block's input."""
            block, opt, B = pnn.blocks[i], self.optimizers[i], sizes[b]
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
            return z

        def measure(i: int, b: int, h: torch.Tensor) -> torch.Tensor:
            return pnn.blocks[i].measure(h)

        def done(b: int) -> None:
            if bar is not None:
                bar.update(1)

        if self.schedule == "serial":
            for group in groups:
                feats0 = self._measure_block0(block0, [hs[b] for b in group])
                for b, feats in zip(group, feats0):
                    h = update(0, b, feats)
                    for i in range(1, L):
                        h = update(i, b, measure(i, b, h))
                    done(b)
        else:
            with DeviceExecutors([id(getattr(blk, "system", blk)) for blk in pnn.blocks]) as ex:
                first: list[Any] = [None] * len(hs)
                for group in groups:
                    fut = ex.submit(0, self._measure_block0, block0, [hs[b] for b in group])
                    for k, b in enumerate(group):
                        first[b] = _Item(fut, k)
                run_wavefront(len(hs), L, ex, first, measure, update, done)
        for i in range(L):
            self.history.last_goodness[i] = (torch.cat([p for p, _ in g_all[i]]), torch.cat([q for _, q in g_all[i]]))
        metrics: dict[str, float] = {}
        for i in range(L):
            metrics[f"loss/block{i}"] = loss_sum[i] / n
            metrics[f"g_pos/block{i}"] = gp_sum[i] / n
            metrics[f"g_neg/block{i}"] = gn_sum[i] / n
        metrics["loss"] = sum(s / n for s in loss_sum) / L  # mean of the per-block losses
        return metrics


class _Item:
    """One batch's share of a grouped block-0 call (a future-like ``result()``)."""

    __slots__ = ("future", "index")

    def __init__(self, future: Any, index: int):
        self.future, self.index = future, index

    def result(self) -> torch.Tensor:
        return self.future.result()[self.index]
