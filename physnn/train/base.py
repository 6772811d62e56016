"""The one trainer contract: every training method is a :class:`Trainer` with a per-batch step.

Why one base class: a run on a bench is long, gets interrupted and is resumed,
logged and compared against other methods. If each method owned its own epoch
loop, each would count queries, evaluate, checkpoint and name its metrics its
own way -- and the comparison between methods, the point of the project, would
compare bookkeeping. So the base owns everything that is not the method:

* the epoch loop, the progress bar and the evaluation schedule;
* the accounting (:class:`~physnn.train.accounting.Accountant`): physical queries,
  device seconds, wall time and digital FLOPs by phase (``train``,
  ``twin_fit``, ``eval``), the same for every method;
* ``state_dict``/``load_state_dict``: optimisers, the method's RNG, the epoch
  counter, the accounting totals and whatever the method adds (a twin, a
  readout), so every method resumes exactly;
* :meth:`Trainer.metric_names`: every metric a method emits is declared
  before the run starts, so the run file has a column for each;
* scikit-learn's parameter protocol (``get_params(deep=True)``,
  ``set_params``), so ``sklearn.base.clone`` works.

A method subclasses it and implements :meth:`Trainer._train_batch` (one step
on one batch; it returns the batch's metrics as sums) or, when a whole epoch
is its unit, :meth:`Trainer._train_epoch`; optional hooks are
:meth:`_make_optimizers`, :meth:`_setup`, :meth:`_after_epoch`,
:meth:`_evaluate`, :meth:`_extra_state` / :meth:`_load_extra_state`.

Stopping early: ``on_epoch_end(epoch, metrics)`` may return ``True`` (or set
``trainer.should_stop = True``) to end training after that epoch; the
trainer's ``epochs`` budget is unchanged, so a later ``fit`` continues.

Spending the bench (:meth:`Trainer.set_budget`): on a bench every query costs
instrument time and wear, so evaluation must not outspend training and a run
must be able to stop without asking the device anything more:

* ``eval_samples``: the scheduled evaluations between the first and the last
  epoch use a fixed, seeded subsample of the validation data (drawn from its
  own generator, so the training stream -- and the weights -- do not depend
  on it). When the evaluated split is the test split itself
  (``eval_name == "test_accuracy"``), the last epoch is evaluated on all of
  it, once, and its predictions are kept (:attr:`Trainer.final_predictions`)
  so the runner does not measure the test set a second time; a held-out
  validation split keeps the subsample to the end (the test split is
  measured once by the runner).
* ``query_budget``: training stops after the epoch after which the next one
  would take the learning queries over the budget (estimated from the last
  epoch, or :meth:`_expected_epoch_queries` before the first).
* ``stop_on`` = ``"loss"`` / ``"gap"`` / ``"val"`` / ``"val_significant"`` with ``patience`` and
  ``min_delta``: stop when the training loss, the goodness gap
  (``g_pos - g_neg``, mean over blocks) or the validation accuracy has not
  improved by more than ``min_delta`` for ``patience`` epochs (evaluations
  for the validation rules). The first two cost no query at all.
  ``"val_significant"`` counts only improvements beyond chance: a paired exact
  McNemar test against the best evaluation so far on the same validation
  samples (see :meth:`Trainer._plateaued`).

A stop by rule or budget is decided before that epoch's evaluation, so the
stopping epoch is evaluated like a last epoch; it sets
:attr:`Trainer.stop_reason` and the metric ``stopped`` = 1.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from physnn.core import checks
from physnn.core.evaluation import Accuracy
from physnn.core.model import check_labels
from physnn.train.accounting import Accountant

__all__ = ["Trainer", "History", "EpochCallback", "PHASE_METRICS", "STOP_RULES", "warm_optimizer_imports"]

log = logging.getLogger(__name__)

#: ``on_epoch_end(epoch, metrics) -> stop?``; the run file hooks in here.
EpochCallback = Callable[[int, dict[str, float]], Any]

#: Cumulative accounting metrics emitted per declared phase (``queries/train`` ...).
PHASE_METRICS = ("queries", "device_seconds", "wall_seconds", "flops")

#: Stop rules of :meth:`Trainer.set_budget`: none, training-loss plateau, goodness-gap plateau, validation plateau.
STOP_RULES = ("none", "loss", "gap", "val", "val_significant")

#: Offset of the evaluation subsample's seed from the trainer's seed (its own stream, not the training one).
_EVAL_SEED_OFFSET = 104_729


#: Learning-rate schedules a method may offer (``lr_schedule``).
LR_SCHEDULES = ("constant", "cosine")


def scheduled_lr(lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (0-based) of ``epochs``: constant, or cosine-decayed towards 0.

    Cosine decay (Loshchilov & Hutter 2017) lets a short run take large early
    steps and settle at the end -- on MNIST-5k through optics it added about 2
    points to MF-FF at the same queries (issue 10's probe).
    """
    if schedule == "constant" or epochs <= 1:
        return lr
    return 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))


def _binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2): the one-sided exact McNemar p-value of k wins in n disagreements."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2.0**n if n else 1.0


@dataclass
class History:
    """Per-epoch metrics (a list of dicts) plus every goodness value of the last epoch, per block."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    last_goodness: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def metric(self, name: str) -> list[float]:
        return [e.get(name, float("nan")) for e in self.epochs]


#: What torch imports on a run's first optimiser and first training step (the optimiser wrappers; the
#: FLOP counter's first use imports ``torch.profiler``).
_FIRST_STEP_IMPORTS = ("torch._dynamo", "torch.profiler", "torch.profiler._cupti_monitor")


def warm_optimizer_imports() -> threading.Thread | None:
    """Import ``torch._dynamo`` (and ``torch.profiler``) on a background thread; returns the thread
    (``None``: already imported).

    Why: torch wraps ``Optimizer.add_param_group`` (and ``step``) in ``torch._disable_dynamo``, which
    imports ``torch._dynamo`` on its first call -- about 1.7 s on a quiet machine, paid when the first
    optimiser is built. The runner starts this just before its first query, so the import runs while the
    device answers (an instrument's wait releases the GIL); building an optimiser later waits on Python's
    import lock until it is done, so nothing is skipped or imported twice. The thread is not a daemon: a
    run that ends early waits for the import to finish instead of interrupting it at shutdown.
    """
    names = [m for m in _FIRST_STEP_IMPORTS if m not in sys.modules]
    if not names:
        return None

    def work() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # the first step's own import reports it, on the main thread
                log.debug("background import of %s failed", name, exc_info=True)

    thread = threading.Thread(target=work, name="physnn-warm-imports")
    thread.start()
    return thread


class Trainer:
    """Base of every training method (see the module docstring).

    Args:
        epochs: passes over the training set (the total, across resumes).
        batch_size: samples per batch.
        lr: learning rate of the method's optimiser(s).
        weight_decay: optimiser weight decay.
        seed: seeds shuffling and every random draw of the method.
        eval_every: evaluate on the validation data every this many epochs
            (0: only after the last epoch).
        progress: a tqdm bar over batches (it turns itself off when stderr is not a terminal).
        count_flops: count digital FLOPs (memoised per step shape, see :mod:`physnn.train.accounting`).
    """

    #: The method's name (``--method``).
    name: ClassVar[str] = "trainer"
    #: The kind of model the method trains: ``"pnn"`` (label embedded, goodness) or ``"e2e"`` (logits).
    model_kind: ClassVar[str] = "pnn"
    #: False for the digital controls: the runner builds no system for them.
    uses_systems: ClassVar[bool] = True
    #: Accounting phases the method uses (each gets ``queries/<phase>`` ... columns).
    phases: ClassVar[tuple[str, ...]] = ("train", "eval")

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
    ):
        self.epochs = checks.integer("epochs", epochs, low=0)
        self.batch_size = checks.integer("batch_size", batch_size, low=1)
        self.lr = checks.positive("lr", lr)
        self.weight_decay = checks.nonnegative("weight_decay", weight_decay)
        self.seed = checks.integer("seed", seed, low=0)
        self.eval_every = checks.integer("eval_every", eval_every, low=0)
        self.progress = checks.boolean("progress", progress)
        self.count_flops = checks.boolean("count_flops", count_flops)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.accountant: Accountant | None = None
        self.epochs_done = 0
        self.history = History()
        self.should_stop = False
        self._ready = False
        # the bench budget (set_budget): defaults keep the historical behaviour (full evaluations, no stop rule)
        self.eval_samples = 0
        self.query_budget = 0
        self.stop_on = "none"
        self.patience = 5
        self.min_delta = 0.0
        #: Why the last ``fit`` stopped before ``epochs`` (``"query_budget"``, ``"plateau:loss"`` ...), else None.
        self.stop_reason: str | None = None
        #: ``(epochs_done, predictions)`` of the last evaluation on the *whole* validation set (the runner reuses it).
        self.final_predictions: tuple[int, torch.Tensor] | None = None
        #: The name of the scheduled evaluation's accuracy: ``val_accuracy`` (a validation split held out of
        #: the training data, the default of the runner) or ``test_accuracy`` (when a caller evaluates on the
        #: test split itself, as a run with ``val_fraction = 0`` does).
        self.eval_name = "val_accuracy"
        self._eval_predictions: torch.Tensor | None = None
        self._stop_best: float | None = None
        self._stop_wait = 0
        #: the best evaluation's per-sample correctness (``stop_on = "val_significant"``: the paired test)
        self._stop_correct: torch.Tensor | None = None

    def set_budget(
        self,
        *,
        eval_samples: int = 0,
        query_budget: int = 0,
        stop_on: str = "none",
        patience: int = 5,
        min_delta: float = 0.0,
    ) -> "Trainer":
        """How much of the bench the run may spend (see the module docstring); returns ``self``.

        Args:
            eval_samples: validation samples of the scheduled evaluations before
                the last epoch (a fixed seeded subsample; 0: all of them).
            query_budget: learning queries the run may spend (0: no budget).
            stop_on: one of :data:`STOP_RULES`.
            patience: epochs (evaluations for ``"val"``) without improvement before stopping.
            min_delta: the smallest change that counts as an improvement.
        """
        self.eval_samples = checks.integer("eval_samples", eval_samples, low=0)
        self.query_budget = checks.integer("query_budget", query_budget, low=0)
        self.stop_on = checks.choice("stop_on", stop_on, STOP_RULES)
        self.patience = checks.integer("patience", patience, low=1)
        self.min_delta = checks.nonnegative("min_delta", min_delta)
        return self

    # ------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [k for k, p in sig.parameters.items() if k != "self" and p.kind is not p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's arguments (scikit-learn's protocol; ``deep`` has no nested estimators here)."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> "Trainer":
        """Set constructor arguments, re-checked by building a fresh instance (scikit-learn's protocol)."""
        valid = self._param_names()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise checks.ParameterError(
                f"{type(self).__name__} has no parameter(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}"
            )
        merged = {**self.get_params(), **params}
        fresh = type(self)(**merged)  # validates every value the way the constructor does
        for k in params:
            setattr(self, k, getattr(fresh, k))
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # --------------------------------------------------------------- model
    @classmethod
    def first_block_width(
        cls,
        n_features: int,
        n_classes: int,
        *,
        label_repeat: int = 1,
        encoder: str = "minmax",
        encoder_bits: int | None = None,
    ) -> int:
        """Drive channels the first block needs: MF-FF-style methods embed the label in front of the features
        (``label_repeat`` slots per class); a thermometer encoder spends ``encoder_bits`` channels per value."""
        from physnn.core.encoding import drive_width, label_width

        n = n_features + (label_width(n_classes, label_repeat) if cls.model_kind == "pnn" else 0)
        return drive_width(encoder, n, bits=encoder_bits or 1)

    def build_model(self, systems: Sequence[Any], n_features: int, n_classes: int, **options: Any) -> nn.Module:
        """The model this method trains, on ``systems`` (one per block).

        ``options`` are the model keys of a config (``blocks``, ``hidden``,
        ``skip``, ``encoder``, ``goodness``, ``label_scale``, ``seed``); each
        model kind takes the ones it uses.
        """
        if self.model_kind == "pnn":
            from physnn.core.model import PNN

            pnn = {k: v for k, v in options.items() if k != "blocks"}
            return PNN(systems, n_features, n_classes, **pnn)
        from physnn.core.e2e_model import E2ENet

        e2e = {k: v for k, v in options.items() if k in ("hidden", "skip", "encoder", "seed")}  # no label embedding
        return E2ENet(systems, n_features, n_classes, **e2e)

    def _check_model(self, model: nn.Module) -> None:
        """Refuse a model this method cannot train (a clear TypeError)."""

    # -------------------------------------------------------------- metrics
    def metric_names(self, model: nn.Module) -> list[str]:
        """Every metric :meth:`fit` can emit for ``model``, in a stable order (the run file's columns)."""
        names = [
            "loss",
            *self._method_metric_names(model),
            self.eval_name,
            *self._interval_names(),
            "eval_samples",
            "stopped",
            "train_queries",
            "eval_queries",
            "device_seconds",
            "digital_flops",
            "epoch_seconds",
            "wall_seconds",
        ]
        for p in self.phases:
            names += [f"{kind}/{p}" for kind in PHASE_METRICS]
        names += [
            "queries/learning",
            "queries/total",
            "device_seconds/total",
            "wall_seconds/total",
            "flops/learning",
            "flops/total",
            "queries/other",
            "device_seconds/other",
            "flops/other",
        ]
        seen: dict[str, None] = {}
        for n in names:
            seen.setdefault(n)
        return list(seen)

    def _method_metric_names(self, model: nn.Module) -> list[str]:
        """The method's own per-epoch metrics (per-block losses, twin errors ...)."""
        return []

    def _cumulative(self, acct: Accountant, names: set[str]) -> dict[str, float]:
        """The accountant's cumulative totals, restricted to declared names (missing phases read 0)."""
        got = acct.metrics()
        return {n: float(got.get(n, 0.0)) for n in names}

    # ----------------------------------------------------------------- state
    def _make_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        """One Adam over every trainable parameter (MF-FF overrides: one per block)."""
        return [torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)]

    def prepare(self, model: nn.Module, optimizers: bool = True) -> None:
        """Start accounting for ``model``'s systems and build the optimisers (idempotent).

        The runner calls it before anything is queried, so probes and every
        other query of the run are counted in ``queries/total``. It passes
        ``optimizers=False`` there: building the first torch optimiser imports
        ``torch._dynamo`` (about 1.7 s), which :func:`warm_optimizer_imports`
        does in the background while the device answers the probes; :meth:`fit`
        builds the optimisers before its first step.
        """
        if self.accountant is None:
            self.accountant = Accountant(getattr(model, "systems", []), count_flops=self.count_flops)
        if optimizers and not self.optimizers:
            self.optimizers = self._make_optimizers(model)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: epoch counter, RNG, optimisers, accounting, method state."""
        return {
            "epochs_done": self.epochs_done,
            "generator": self.generator.get_state(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "accountant": self.accountant.state_dict() if self.accountant is not None else {},
            "method": self._extra_state(),
            "stopping": {"best": self._stop_best, "wait": self._stop_wait, "best_correct": self._stop_correct},
        }

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` for ``model`` (already holding its checkpointed weights)."""
        self._check_model(model)
        self.prepare(model)
        self.epochs_done = int(state["epochs_done"])
        self.generator.set_state(state["generator"])
        saved = state.get("optimizers", [])
        if len(saved) != len(self.optimizers):
            raise ValueError(
                f"checkpoint holds {len(saved)} optimiser state(s), {type(self).__name__} has "
                f"{len(self.optimizers)} for this model"
            )
        for opt, s in zip(self.optimizers, saved):
            opt.load_state_dict(s)
        if state.get("accountant") and self.accountant is not None:
            self.accountant.load_state_dict(state["accountant"])
        self._load_extra_state(model, state.get("method") or {})
        stopping = state.get("stopping") or {}
        best = stopping.get("best")
        self._stop_best = None if best is None else float(best)
        self._stop_wait = int(stopping.get("wait", 0))
        self._stop_correct = stopping.get("best_correct")
        self._ready = True  # the method's one-off set-up (e.g. PAT's twin fit) is in the restored state

    def _extra_state(self) -> dict[str, Any]:
        """The method's own state beyond optimisers and RNG (a twin, a readout); tensors, numbers, lists, dicts."""
        return {}

    def _load_extra_state(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Restore :meth:`_extra_state`."""

    # ----------------------------------------------------------------- hooks
    def _setup(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Once, before the first epoch of a fresh run (PAT fits its twins here); not after a resume."""

    def _train_epoch(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, bar: Any) -> dict[str, float]:
        """One pass over ``(x, y)`` in shuffled batches; returns the epoch's training metrics.

        The default calls :meth:`_train_batch` per batch and averages the sums
        it returns over the samples.
        """
        n = x.shape[0]
        perm = torch.randperm(n, generator=self.generator)
        sums: dict[str, float] = {}
        for start in range(0, n, self.batch_size):
            idx = perm[start : start + self.batch_size]
            for k, v in self._train_batch(model, x[idx], y[idx]).items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
        return {k: v / n for k, v in sums.items()}

    def _train_batch(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, float]:
        """One step on one batch; returns metric *sums* over the batch (e.g. ``loss`` x batch size)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _train_batch or _train_epoch")

    def _after_epoch(self, model: nn.Module, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch's training, before evaluation (PAT refits its twins here); may add metrics."""

    def _evaluate(self, model: nn.Module, x_val: torch.Tensor, y_val: torch.Tensor, metrics: dict[str, float]) -> None:
        """Validation accuracy through the systems (the run's evaluation schedule decides when).

        The predictions are kept for :attr:`final_predictions` (a method that
        overrides this without setting ``self._eval_predictions`` just gets its
        test set measured again by the runner).
        """
        pred = model.predict(x_val)
        self._eval_predictions = pred
        metrics[self.eval_name] = float((pred == y_val).float().mean())

    def _interval_names(self) -> list[str]:
        """The evaluation's n and 95 % interval columns: ``val_n``, ``val_ci_low``, ``val_ci_high`` (``test_*``
        when the evaluated split is the test split): an accuracy on 143 samples is +-3 points, and a curve
        read without its n invites over-reading one sample's flip."""
        prefix = self.eval_name.removesuffix("_accuracy")
        return [f"{prefix}_n", f"{prefix}_ci_low", f"{prefix}_ci_high"]

    def _add_interval(self, metrics: dict[str, float], n: int) -> None:
        """n and the Wilson interval of this evaluation's accuracy (from the accuracy and n, so a method's own
        :meth:`_evaluate` needs to report nothing more)."""
        if self.eval_name not in metrics or not n:
            return
        acc = Accuracy(round(metrics[self.eval_name] * n), n)
        lo, hi = acc.interval
        n_name, lo_name, hi_name = self._interval_names()
        metrics[n_name], metrics[lo_name], metrics[hi_name] = float(n), lo, hi

    def _expected_epoch_queries(self, model: nn.Module, n: int) -> float | None:
        """Learning queries of the next epoch on ``n`` samples (for ``query_budget``); None: unknown.

        The default is the last epoch's count (none before the first epoch);
        a method whose cost is known in advance (MF-FF: 2 L N) overrides it.
        """
        if self.history.epochs:
            return float(self.history.epochs[-1].get("train_queries", 0.0))
        return None

    def expected_first_epoch_queries(self, n: int, *, blocks: int) -> float | None:
        """Learning queries of the first epoch on ``n`` samples through ``blocks`` blocks, known before any model
        exists (the runner's pre-flight check of ``query_budget``); None when the method learns it from an epoch.

        Only the number of blocks is known then, so :meth:`_expected_epoch_queries` sees a stand-in model
        holding ``blocks`` empty blocks; a method whose estimate needs more of the model gets None.
        """
        if self.history.epochs:
            return None
        stand_in = nn.Module()
        stand_in.blocks = [None] * checks.integer("blocks", blocks, low=1)  # type: ignore[assignment]
        try:
            return self._expected_epoch_queries(stand_in, checks.integer("n", n, low=0))
        except (AttributeError, TypeError, IndexError):
            return None

    def _stop_value(self, metrics: dict[str, float]) -> float | None:
        """The value the stop rule watches, larger is better; None when this epoch has none."""
        if self.stop_on == "loss":
            return -metrics["loss"] if "loss" in metrics else None
        if self.stop_on == "val":
            return metrics.get(self.eval_name)
        gaps = [
            metrics[k] - metrics["g_neg/" + k.split("/", 1)[1]]
            for k in metrics
            if k.startswith("g_pos/") and "g_neg/" + k.split("/", 1)[1] in metrics
        ]
        return sum(gaps) / len(gaps) if gaps else None

    def _plateaued(self, metrics: dict[str, float], correct: torch.Tensor | None = None) -> bool:
        """Update the stop rule with this epoch; True when it has not improved for ``patience`` epochs.

        ``stop_on = "val_significant"`` counts an evaluation as an improvement only when it beats the best one
        so far beyond chance on the *same* validation samples: a one-sided exact McNemar test on the samples
        the two models disagree on (``b`` now right and then wrong, ``c`` the reverse) at the 5 % level. On
        143 samples a 0.7-point rise is one sample, well inside the 95 % interval; a rule that resets its
        patience on such a flip trains on for noise. Without per-sample predictions (a method with its own
        evaluation) it falls back to requiring the accuracy to clear the best one's 95 % Wilson interval.
        """
        if self.stop_on == "val_significant":
            return self._plateaued_significant(metrics, correct)
        value = self._stop_value(metrics)
        if value is None:
            return False
        if self._stop_best is None or value > self._stop_best + self.min_delta:
            self._stop_best, self._stop_wait = float(value), 0
            return False
        self._stop_wait += 1
        return self._stop_wait >= self.patience

    def _plateaued_significant(self, metrics: dict[str, float], correct: torch.Tensor | None) -> bool:
        value = metrics.get(self.eval_name)
        if value is None:
            return False
        best, best_correct = self._stop_best, self._stop_correct
        if best is None:
            better = True
        elif correct is not None and best_correct is not None and best_correct.shape == correct.shape:
            b = int((correct & ~best_correct).sum())
            c = int((~correct & best_correct).sum())
            better = b > c and _binomial_tail(b, b + c) < 0.05
        else:
            n = int(metrics.get("eval_samples", 0))
            better = n > 0 and value > Accuracy(round(best * n), n).interval[1]
        if better:
            self._stop_best, self._stop_wait = float(value), 0
            self._stop_correct = correct.clone() if correct is not None else None
            return False
        self._stop_wait += 1
        return self._stop_wait >= self.patience

    def _budget_stop(self, model: nn.Module, n: int, learning: float) -> bool:
        """True when the next epoch would take the learning queries over ``query_budget``."""
        if not self.query_budget:
            return False
        nxt = self._expected_epoch_queries(model, n)
        return nxt is not None and learning + nxt > self.query_budget

    def _eval_subsample(self, n_val: int) -> torch.Tensor | None:
        """The fixed indices of the scheduled evaluations (None: the whole validation set)."""
        if not self.eval_samples or self.eval_samples >= n_val:
            return None
        gen = torch.Generator().manual_seed(self.seed + _EVAL_SEED_OFFSET)
        return torch.randperm(n_val, generator=gen)[: self.eval_samples].sort().values

    def _should_evaluate(self, epoch: int) -> bool:
        last = epoch + 1 == self.epochs
        return last or bool(self.eval_every and (epoch + 1) % self.eval_every == 0)

    def _set_lr(self, lr: float) -> float:
        """Set every optimiser's learning rate (a schedule's step); returns it."""
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def _postfix(self, metrics: dict[str, float]) -> dict[str, str]:
        out = {"loss": f"{metrics['loss']:.4f}"} if "loss" in metrics else {}
        if self.eval_name in metrics:
            out["val_acc" if self.eval_name == "val_accuracy" else "test_acc"] = f"{metrics[self.eval_name]:.3f}"
        return out

    # ------------------------------------------------------------------ step
    def step(self, model: nn.Module, x: Any, y: Any) -> dict[str, float]:
        """Train on one batch ``(x, y)`` outside the epoch loop (continual training, streams).

        The method's one-off set-up runs first if it has not (PAT's twin fit);
        the work is charged to the ``train`` phase; the batch is split into
        ``batch_size`` steps as an epoch would. Returns the batch's training
        metrics (the method's own names). The epoch counter does not move.
        """
        self._check_model(model)
        x = model.check_features(x)
        y = check_labels(y, x.shape[0], model.n_classes)
        self.prepare(model)
        assert self.accountant is not None
        if not self._ready:
            self._setup(model, x, y)
            self._ready = True
        model.train()
        try:
            with self.accountant.phase("train"):
                return dict(self._train_epoch(model, x, y, None))
        finally:
            model.eval()

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        model: nn.Module,
        x: Any,
        y: Any,
        x_val: Any = None,
        y_val: Any = None,
        *,
        on_epoch_end: EpochCallback | None = None,
    ) -> History:
        """Train ``model`` on ``(x, y)`` until ``epochs`` epochs are done in total.

        Calling ``fit`` again (after :meth:`load_state_dict`, or with a larger
        ``epochs``) continues the run. ``on_epoch_end(epoch, metrics)`` is
        called after each epoch; returning ``True`` stops training there.
        """
        self._check_model(model)
        x = model.check_features(x)
        y = check_labels(y, x.shape[0], model.n_classes)
        has_val = x_val is not None and y_val is not None
        if has_val:
            x_val = model.check_features(x_val)
            y_val = check_labels(y_val, x_val.shape[0], model.n_classes, "y_val")
        self.prepare(model)
        acct = self.accountant
        assert acct is not None
        declared = set(self.metric_names(model))
        if self.stop_on == "gap" and not any(k.startswith("g_pos/") for k in declared):
            raise checks.ParameterError(
                f"stop_on = 'gap' needs a method that reports the goodness (g_pos/g_neg); "
                f"{type(self).__name__} does not: use 'loss' or 'val'"
            )
        sub = self._eval_subsample(x_val.shape[0]) if has_val else None
        self.stop_reason = None
        t_start = time.perf_counter()
        pre_setup: dict[str, float] | None = None
        if not self._ready:
            pre_setup = acct.metrics()  # the set-up (PAT's twin fit) is charged to the first epoch
            self._setup(model, x, y)
            self._ready = True
        model.train()
        self.should_stop = False
        bar = None
        if self.progress and self.epochs_done < self.epochs:
            from tqdm.auto import tqdm

            n_batches = (x.shape[0] + self.batch_size - 1) // self.batch_size
            # disable=None: the bar turns itself off when stderr is not a terminal (CI, nohup, pipes)
            bar = tqdm(
                total=(self.epochs - self.epochs_done) * n_batches, unit="batch", dynamic_ncols=True, disable=None
            )
        try:
            if self.epochs_done < self.epochs and self._budget_stop(
                model, x.shape[0], acct.metrics().get("queries/learning", 0.0)
            ):
                self.stop_reason, self.should_stop = "query_budget", True
                log.info(
                    "%s: query_budget %d leaves no room for an epoch; nothing trained",
                    type(self).__name__,
                    self.query_budget,
                )
            while self.epochs_done < self.epochs and not self.should_stop:
                epoch = self.epochs_done
                before, pre_setup = (pre_setup if pre_setup is not None else acct.metrics()), None
                t0 = time.perf_counter()
                with acct.phase("train"):
                    trained = self._train_epoch(model, x, y, bar)
                metrics: dict[str, float] = {"epoch": float(epoch + 1), **trained}
                self._after_epoch(model, epoch, metrics)
                # stop rules that cost no query are decided before the evaluation: the stopping epoch is then
                # evaluated on the whole validation set, like a last epoch
                reason = None
                if self.stop_on in ("loss", "gap") and self._plateaued(metrics):
                    reason = f"plateau:{self.stop_on}"
                elif epoch + 1 < self.epochs and self._budget_stop(
                    model, x.shape[0], acct.metrics().get("queries/learning", 0.0)
                ):
                    reason = "query_budget"
                last = epoch + 1 == self.epochs or reason is not None
                if has_val and (last or self._should_evaluate(epoch)):
                    # the last epoch on the whole split only where the runner reuses it as the final test (the
                    # split *is* the test split); a held-out validation split keeps its subsample to the end
                    full = sub is None or (last and self.eval_name != "val_accuracy")
                    xv, yv = (x_val, y_val) if full else (x_val[sub], y_val[sub])
                    self._eval_predictions = None
                    model.eval()
                    with acct.phase("eval"):
                        self._evaluate(model, xv, yv, metrics)
                    model.train()
                    metrics["eval_samples"] = float(xv.shape[0])
                    self._add_interval(metrics, xv.shape[0])
                    if full and self._eval_predictions is not None:
                        self.final_predictions = (epoch + 1, self._eval_predictions)
                    if (
                        reason is None
                        and self.stop_on in ("val", "val_significant")
                        and epoch + 1 < self.epochs
                        and self._plateaued(
                            metrics, (self._eval_predictions == yv) if self._eval_predictions is not None else None
                        )
                    ):
                        reason = f"plateau:{self.stop_on}"
                if reason is not None:
                    self.stop_reason, self.should_stop = reason, True
                    metrics["stopped"] = 1.0
                after = acct.metrics()

                def delta(k: str, after: dict[str, float] = after, before: dict[str, float] = before) -> float:
                    return after.get(k, 0.0) - before.get(k, 0.0)

                metrics["train_queries"] = delta("queries/learning")
                metrics["eval_queries"] = delta("queries/eval")
                metrics["device_seconds"] = delta("device_seconds/total")
                if self.count_flops:
                    metrics["digital_flops"] = delta("flops/learning")
                metrics["epoch_seconds"] = time.perf_counter() - t0
                metrics["wall_seconds"] = time.perf_counter() - t_start
                metrics.update(
                    self._cumulative(
                        acct, declared & {k for k in declared if "/" in k and k.split("/")[0] in PHASE_METRICS}
                    )
                )
                undeclared = sorted(set(metrics) - declared - {"epoch"})
                if undeclared:  # a bug in the method, caught here rather than as a run-file surprise
                    raise RuntimeError(
                        f"{type(self).__name__} emitted undeclared metric(s) {undeclared}; "
                        f"add them to _method_metric_names"
                    )
                self.epochs_done += 1
                self.history.epochs.append(metrics)
                if bar is not None:
                    bar.set_postfix(**self._postfix(metrics))
                if on_epoch_end is not None and on_epoch_end(epoch, metrics) is True:
                    self.should_stop = True
                if self.should_stop:
                    log.info(
                        "%s: stopped after epoch %d (%s)",
                        type(self).__name__,
                        epoch + 1,
                        self.stop_reason or "on request",
                    )
        finally:
            if bar is not None:
                bar.close()
            model.eval()
        return self.history
