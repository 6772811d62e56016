"""The runner: one training run from a :class:`RunConfig`, whatever the method.

This is what ``physnn train``, the lab scripts, the benchmarks and sweeps run.
It reads top to bottom as a few named steps::

    data    = load_data(config)
    systems = build_systems(config, data)          # or the instruments a lab script hands over
    model, trainer = build_model(...), build_trainer(...)
    with open_run_file(...) as writer:             # a new run file, or the one being resumed
        restore(...)                               # --resume: weights, trainer state, RNG, history
        train(...)                                 # probes, epochs, checkpoints
        finish(...)                                # the test split, measured once; the summary

It owns the run's resources: systems are closed (instruments put in their safe
state) before the run file, so a failure to reach the safe state is recorded,
and the run file is closed with an honest status -- completed, interrupted by
Ctrl-C or a signal, or failed with an exception (``RunWriter.__exit__``).
Nothing here knows a particular method: the trainer class says which model it
trains, how wide the first block is, which metrics it emits and what its state
is (:class:`physnn.train.base.Trainer`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from physnn.core import checks, safety
from physnn.core.encoding import drive_width
from physnn.core.evaluation import Accuracy
from physnn.core.registry import build_system
from physnn.core.system import PhysicalSystem
from physnn.data import registry as data_registry
from physnn.data.datasets import Dataset
from physnn.run import preflight, sinks
from physnn.run.config import ConfigError, RunConfig
from physnn.train import trainer_class
from physnn.train.base import Trainer, warm_optimizer_imports

__all__ = [
    "RunResult",
    "run_experiment",
    "build_model",
    "build_trainer",
    "build_systems",
    "load_data",
    "run_path",
    "block_seed",
    "confusion_matrix",
    "resume_config",
]

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    config: RunConfig
    path: Path | None
    train_accuracy: float
    test_accuracy: float
    train_queries: int
    total_queries: int
    wall_seconds: float
    history: list[dict]
    status: str = "completed"
    model: nn.Module | None = field(default=None, repr=False)
    test_n: int = 0  # test samples behind test_accuracy (its 95 % interval: physnn.core.evaluation.Accuracy)


# ==================================================================== building
def run_path(config: RunConfig) -> Path:
    """``output`` is a file (``*.h5``) or a folder that gets a unique, descriptive file name.

    The name holds the data set, system, method, seed, a time stamp and a
    random suffix, so runs started in the same second (a sweep) never collide.
    """
    out = Path(config.output)
    if out.suffix in (".h5", ".hdf5"):
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return out / f"{config.dataset}-{config.system}-{config.method}-s{config.seed}-{stamp}-{uuid.uuid4().hex[:6]}.h5"


def block_seed(seed: int, block: int) -> int:
    """Distinct, reproducible seeds per block (so two blocks are two different devices)."""
    return seed * 1000 + block + 1


def load_data(config: RunConfig, given: Any = None) -> Dataset:
    """The run's data: ``given`` arrays (``run_experiment(data=...)``), else the config's data set."""
    return data_registry.load_run_data(config, given)


def split_validation(config: RunConfig, data: Dataset) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
    """``(x_train, y_train, x_val, y_val)``: a stratified, seeded validation split held out of the training data.

    The validation split is what every scheduled evaluation, early stop and
    model choice looks at; the test split is measured once, at the end.
    ``val_fraction = 0`` keeps the whole training split and, as round-1 runs
    did, evaluates on the test split itself during training -- the curve is
    then named ``test_accuracy``, so nobody mistakes it for a held-out choice.
    """
    if not config.val_fraction:
        return data.x_train, data.y_train, data.x_test, data.y_test
    from physnn.data.datasets import _split

    xtr, ytr, xv, yv = _split(
        data.x_train.numpy(),
        data.y_train.numpy(),
        config.val_fraction,
        config.seed + 104_729,
        f"the training split of {data.name!r} (val_fraction)",
    )
    return (torch.as_tensor(xtr), torch.as_tensor(ytr), torch.as_tensor(xv), torch.as_tensor(yv))


def input_width(config: RunConfig, data: Dataset) -> int:
    """Drive channels of the first block (the method decides: MF-FF embeds the label in front of the features)."""
    return trainer_class(config.method).first_block_width(
        data.n_features,
        data.n_classes,
        label_repeat=config.label_repeat,
        encoder=config.encoder,
        encoder_bits=config.encoder_bits or None,
    )


def build_systems(config: RunConfig, data: Dataset) -> list[PhysicalSystem]:
    """One system per block, by name and options; block ``i`` gets seed :func:`block_seed` (none for digital controls)."""
    systems: list[PhysicalSystem] = []
    if not trainer_class(config.method).uses_systems:
        return systems
    clash = sorted(set(config.system_options) & {"n_inputs", "seed", "device"})
    if clash:
        raise ConfigError(
            f"system_options {', '.join(map(repr, clash))}: set by the run itself (the model's width, "
            "the seed per block, the device key); remove them from [system_options]"
        )
    width = input_width(config, data)
    try:
        for i in range(config.blocks):
            systems.append(
                build_system(
                    config.system,
                    n_inputs=width,
                    seed=block_seed(config.seed, i),
                    device=config.device,
                    **config.system_options,
                )
            )
            width = drive_width(config.encoder, config.hidden, bits=config.encoder_bits or 1)
    except BaseException:
        for s in systems:  # the ones already open must not stay driven
            s.close()
        raise
    return systems


def build_model(
    config: RunConfig, data: Dataset, systems: Sequence[PhysicalSystem], trainer: Trainer | None = None
) -> nn.Module:
    """The model the configured method trains (a :class:`PNN`, an end-to-end network ...)."""
    trainer = trainer if trainer is not None else build_trainer(config)
    return trainer.build_model(
        list(systems),
        data.n_features,
        data.n_classes,
        blocks=config.blocks,
        hidden=config.hidden,
        skip=config.skip,
        encoder=config.encoder,
        goodness=config.goodness,
        label_scale=config.label_scale,
        seed=config.seed,
        label_repeat=config.label_repeat,
        encoder_bits=config.encoder_bits or None,
    )


def build_trainer(config: RunConfig, progress: bool = False) -> Trainer:
    """The configured method's trainer: the run's keys plus ``[method_options]``, checked against its signature."""
    cls, kwargs = preflight.trainer_arguments(config)
    trainer = cls(**kwargs, progress=progress)
    # scheduled evaluations look at the validation split; with val_fraction = 0 at the test split, named so
    trainer.eval_name = "val_accuracy" if config.val_fraction else "test_accuracy"
    return trainer.set_budget(
        eval_samples=config.eval_samples,
        query_budget=config.query_budget,
        stop_on=config.stop_on,
        patience=config.patience,
        min_delta=config.min_delta,
    )


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    m = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    m.index_put_((y.long(), pred.long()), torch.ones_like(y, dtype=torch.int64), accumulate=True)
    return m


# ==================================================================== the run file
def _unlogged_query(system: PhysicalSystem, x: torch.Tensor) -> torch.Tensor:
    """Query without the sample-logging hook: probe measurements are not training samples."""
    with system.hooks(query_hook=None, replace=True):
        return system(x)


def _close_systems(systems: Sequence[PhysicalSystem], writer: Any) -> None:
    """Safe state for every distinct system; a failure is recorded in the run file (if any) and warned about."""
    errors = []
    if writer is not None and not writer.closed:  # the run file keeps each system's description as it ended
        try:
            writer.update_systems({f"block{i}": s.describe() for i, s in enumerate(systems)})
        except Exception as exc:  # noqa: BLE001 - recorded; closing the systems matters more
            writer.event("describe_failed", {"type": type(exc).__name__, "message": str(exc)})
    for s in dict.fromkeys(systems):
        try:
            with safety.deferred_signals():  # a second Ctrl-C/SIGTERM must not cut SAFE in half
                s.close()
        except Exception as exc:  # noqa: BLE001 - recorded, then the others are still closed
            errors.append(exc)
            if writer is not None and not writer.closed:
                writer.event("close_failed", {"system": s.spec.name, "type": type(exc).__name__, "message": str(exc)})
            warnings.warn(
                f"{s.spec.name} could not be closed / put in its safe state: {exc}; check the instrument by hand",
                RuntimeWarning,
                stacklevel=2,
            )
    if errors and writer is None:
        raise errors[0]


@contextlib.contextmanager
def _no_file() -> Iterator[None]:
    yield None


def open_run_file(
    config: RunConfig,
    data: Dataset,
    systems: Sequence[PhysicalSystem],
    metric_names: list[str],
    *,
    resume: str | Path | None,
    write_file: bool,
) -> contextlib.AbstractContextManager:
    """A context manager yielding the run's :class:`RunWriter` (new or resumed), or None without a file."""
    from physnn import runlog

    if resume is not None:
        return runlog.RunWriter.resume(
            resume, checkpoint_seconds=config.checkpoint_seconds or None, planned_epochs=config.epochs or None
        )
    if not write_file:
        return _no_file()
    path = run_path(config)
    if path.exists():
        raise ConfigError(
            f"output {str(path)!r} already exists; choose another file or a folder (a unique "
            "name is made inside a folder), or continue it with --resume"
        )
    return runlog.RunWriter(
        path,
        config=config.to_dict(),
        seed=config.seed,
        systems={f"block{i}": s.describe() for i, s in enumerate(systems)},
        dataset=data.describe(),
        metric_names=metric_names,
        checkpoint_seconds=config.checkpoint_seconds or None,
        keep_every=config.keep_checkpoints,
        # the best checkpoint by validation only: choosing by the test split would select on the test set
        best_metric="val_accuracy" if "val_accuracy" in metric_names else None,
        max_sample_bytes=config.sample_log_bytes,
        planned_epochs=config.epochs or None,
    )


def _metrics_row(row: dict[str, Any]) -> dict[str, float]:
    """A run file's metric row as a trainer's history entry: bookkeeping columns and unlogged (NaN) cells dropped."""
    return {
        k: float(v)
        for k, v in row.items()
        if k not in ("time", "segment") and not (isinstance(v, float) and math.isnan(v))
    }


def _history_from_file(path: Path, upto_epoch: int, ckpt_extra: Any) -> list[dict[str, float]]:
    """The per-epoch metrics up to a checkpoint, read from ``/metrics`` (older files: from the checkpoint)."""
    from physnn import runlog

    if isinstance(ckpt_extra, dict) and "history" in ckpt_extra:
        return [dict(e) for e in ckpt_extra["history"]]
    return [_metrics_row(r) for r in runlog.load(path).history(upto_epoch)]


def restore(path: Path, model: nn.Module, trainer: Trainer, systems: Sequence[PhysicalSystem]) -> dict[str, Any]:
    """Load the last checkpoint of ``path`` into the model, trainer, RNGs and systems' noise generators."""
    from physnn import runlog

    ckpt = runlog.last_checkpoint(path)
    model.load_state_dict(ckpt.model_state)
    if not ckpt.optim_state:
        raise ConfigError(
            f"run file {str(path)!r} has no trainer state in its last checkpoint (written by an older "
            "physnn for a baseline method); it cannot be resumed exactly"
        )
    trainer.load_state_dict(model, ckpt.optim_state)
    runlog.restore_rng(ckpt.rng_state)
    extra = ckpt.extra if isinstance(ckpt.extra, dict) else {}
    for i, st in enumerate(extra.get("system_rng", [])):
        systems[i].set_rng_state(st)
    trainer.history.epochs = _history_from_file(path, trainer.epochs_done, ckpt.extra)
    return extra


# ==================================================================== one run
class _Run:
    """The state of one run between its named steps (kept small: the steps read as the docstring above)."""

    def __init__(
        self,
        config: RunConfig,
        data: Dataset,
        systems: list[PhysicalSystem],
        model: nn.Module,
        trainer: Trainer,
        writer: Any,
        echo: Callable[[str], None],
    ):
        self.config, self.data, self.systems, self.model = config, data, systems, model
        self.trainer, self.writer, self.echo = trainer, writer, echo
        self.probes: list[torch.Tensor] = []
        #: TensorBoard/MLflow sinks (config key metric_sinks), fed every epoch after the run file
        self.sinks: list[Any] = []
        #: block 0's probe reference and repeatability floor, for the trainer's block-0 cache (if it has one)
        self._probe_ref: tuple[torch.Tensor, float] | None = None
        #: a resumed run whose training was done when it stopped: only what follows training is left
        self.training_done = False

    # ------------------------------------------------------------ probes
    def set_probes(self, fresh: bool) -> None:
        """Fixed drive patterns per block, re-measured after every epoch to follow drift."""
        if self.writer is None or not self.config.probes:
            return
        gen = torch.Generator().manual_seed(self.config.seed + 7919)
        for i, (s, block) in enumerate(zip(self.systems, self.model.blocks)):
            probe = block.encoder(torch.rand(self.config.probes, s.spec.n_inputs, generator=gen))
            self.writer.set_probes(f"block{i}", probe)
            self.probes.append(probe)
            if fresh:  # measured twice before training: the repeatability floor
                pair = [_unlogged_query(s, probe) for _ in range(2)]
                for y in pair:
                    self.writer.log_probe(f"block{i}", 0, y)
                if i == 0:
                    self._probe_ref = (pair[1], float((pair[0] - pair[1]).abs().max()))

    # ------------------------------------------------------------ epochs
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        config, writer = self.config, self.writer
        if writer is not None and self.trainer.stop_reason is not None:
            writer.event(
                "early_stop",
                {
                    "epoch": epoch + 1,
                    "reason": self.trainer.stop_reason,
                    "learning_queries": metrics.get("queries/learning", 0.0),
                },
            )
        if writer is not None:
            for i, (s, probe) in enumerate(zip(self.systems, self.probes)):
                y = _unlogged_query(s, probe)
                writer.log_probe(f"block{i}", epoch + 1, y)
                if i == 0:
                    self.check_drift(epoch, y)
            writer.log_epoch(epoch + 1, metrics)
            sinks.log_to_sinks(self.sinks, epoch + 1, metrics)
            last = epoch + 1 == config.epochs or self.trainer.should_stop
            if writer.should_checkpoint(epoch + 1, every=config.checkpoint_every, final=last):
                self.checkpoint(epoch + 1)
        # printed once the epoch is on disk, so "epoch N" on the console means it is saved
        name = self.trainer.eval_name
        what = "validation" if name == "val_accuracy" else "test"
        acc = ""
        if name in metrics:
            n = int(metrics.get("eval_samples", 0))
            acc = f", {what} accuracy " + (
                str(Accuracy(round(metrics[name] * n), n)) if n else f"{metrics[name]:.4f}"
            )  # with its n and 95 % interval: one sample of 143 moves it by 0.7 points
        per_block = [metrics[f"loss/block{i}"] for i in range(len(self.model.blocks)) if f"loss/block{i}" in metrics]
        blocks = f" (blocks {' '.join(f'{v:.4f}' for v in per_block)})" if per_block else ""
        self.echo(
            f"epoch {epoch + 1:3d}/{config.epochs}: loss {metrics['loss']:.4f}{blocks}{acc}, "
            f"{int(metrics.get('train_queries', 0))} queries"
        )

    def check_drift(self, epoch: int, y: torch.Tensor) -> None:
        """Empty the trainer's block-0 cache when block 0's probes moved beyond 3x their repeatability floor.

        Without a floor (a resumed run) any change counts: a cached response must
        never outlive a device that changed.
        """
        if not getattr(self.trainer, "cache_block0", False):
            return
        if self._probe_ref is None:
            self._probe_ref = (y, 0.0)
            return
        ref, floor = self._probe_ref
        drift = float((y - ref).abs().max())
        if drift > 3.0 * floor + 1e-6 * float(ref.abs().max()):
            dropped = self.trainer.invalidate_cache()
            self._probe_ref = (y, floor)
            if self.writer is not None:
                self.writer.event(
                    "block0_cache_invalidated", {"epoch": epoch + 1, "drift": drift, "floor": floor, "dropped": dropped}
                )

    def checkpoint(self, epoch: int) -> None:
        from physnn import runlog

        self.writer.checkpoint(
            epoch,
            self.model.state_dict(),
            self.trainer.state_dict(),
            runlog.capture_rng(),
            extra={"system_rng": [s.get_rng_state() for s in self.systems]},
        )

    def train(self) -> None:
        if self.training_done:
            return
        x, y, x_val, y_val = split_validation(self.config, self.data)
        self.trainer.fit(self.model, x, y, x_val, y_val, on_epoch_end=self.on_epoch_end)

    def continual(self) -> None:
        """After training: ``continual_ticks`` ticks of continual training on a seeded stream of training batches.

        The device may drift meanwhile (a ``drifting`` system); probe drift is
        detected against the noise floor and acted on (physnn/run/continual.py);
        every detection and action is an event of the run file, and every
        ``probe_every`` ticks a ``continual_tick`` event records the queries so far.
        """
        config = self.config
        if not config.continual_ticks:
            return
        from physnn.run.continual import Continual

        options = checks.check_options(Continual, config.continual_options, "continual", reserved=("seed",))
        loop = Continual(self.trainer, seed=config.seed, **options)
        x, y, _, _ = split_validation(config, self.data)
        gen = torch.Generator().manual_seed(config.seed + 31337)
        bs = config.batch_size

        def stream():
            for _ in range(config.continual_ticks):
                idx = torch.randint(0, x.shape[0], (bs,), generator=gen)
                yield x[idx], y[idx]

        writer = self.writer
        event = writer.event if writer is not None else None
        # a fixed seeded subsample of the validation split, scored every probe_every ticks (its queries are
        # counted in the run's totals, not charged to the loop's budget)
        _, _, xv, yv = split_validation(config, self.data)
        if config.eval_samples and xv.shape[0] > config.eval_samples:
            pick = torch.randperm(xv.shape[0], generator=torch.Generator().manual_seed(config.seed + 5))
            xv, yv = xv[pick[: config.eval_samples]], yv[pick[: config.eval_samples]]

        def on_tick(tick: int, record: dict[str, float]) -> None:
            if writer is not None and (tick + 1) % max(1, loop.probe_every or 10) == 0:
                fields = {k: v for k, v in record.items() if isinstance(v, (int, float))}
                fields[self.trainer.eval_name] = self.model.score(xv, yv)
                writer.event("continual_tick", {"tick": tick + 1, **fields})

        history = loop.run(self.model, stream(), on_event=event, on_tick=on_tick)
        detections = len(history.events_of("drift_detected"))
        self.echo(f"continual: {config.continual_ticks} ticks, {detections} drift detection(s)")

    # ------------------------------------------------------------ end
    def finish(self) -> tuple[float, float, int, int]:
        """Final accuracies and totals, recorded in the run file's summary."""
        d, model, acct, trainer = self.data, self.model, self.trainer.accountant, self.trainer
        # the test set is measured once: the trainer's evaluation of the last epoch on the whole split is reused
        done = trainer.final_predictions
        reuse = (
            done is not None
            and trainer.eval_name == "test_accuracy"
            and done[0] == trainer.epochs_done
            and done[1].shape[0] == d.y_test.shape[0]
        )
        phase = acct.phase("final") if acct is not None else contextlib.nullcontext()
        with phase:
            # no on-device pass over the training set unless asked: NaN, or the last epoch's training-batch
            # accuracy where the method reports one (it costs no query)
            last = trainer.history.epochs[-1] if trainer.history.epochs else {}
            train_acc = (
                model.score(d.x_train, d.y_train)
                if self.config.measure_train_accuracy
                else float(last.get("train_accuracy", math.nan))
            )
            pred = done[1] if reuse else model.predict(d.x_test)
        test = Accuracy.of(pred, d.y_test)
        test_acc = test.value
        train_q = int(sum(e.get("train_queries", 0.0) for e in self.trainer.history.epochs))
        total = int(acct.metrics()["queries/total"]) if acct is not None else 0
        if self.writer is not None:
            lo, hi = test.interval
            self.writer.log_summary(
                {
                    "train_accuracy": train_acc,
                    "test_accuracy": test_acc,
                    "test_correct": test.correct,
                    "test_n": test.n,
                    "test_ci95_low": lo,
                    "test_ci95_high": hi,
                    "train_queries": train_q,
                    "total_queries": total,
                    "method": self.config.method,
                }
            )
            self.writer.log_confusion(confusion_matrix(pred, d.y_test, d.n_classes).numpy(), d.class_names)
            for i, (gp, gn) in self.trainer.history.last_goodness.items():
                self.writer.log_goodness(i, gp.numpy(), gn.numpy())
        return train_acc, test_acc, train_q, total


def run_experiment(
    config: RunConfig,
    *,
    write_file: bool = True,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    resume: str | Path | None = None,
    systems: Sequence[PhysicalSystem] | None = None,
    data: Any = None,
) -> RunResult:
    """Train and evaluate one configuration, logging everything to an HDF5 run file.

    ``systems`` (one per block; the same object may serve several blocks)
    replaces building ``config.system`` by name: lab scripts build their
    instruments themselves and hand them over. Either way the systems are
    closed (instruments put in their safe state) when the run ends, however
    it ends. ``config.system`` then only names the system in the run file.
    ``resume`` continues the run file's last checkpoint up to
    ``config.epochs`` (more epochs than the run had extend it), whatever
    point the run was stopped at: a run killed after its last epoch but before
    the final test measurement gets only what is left (the continual phase,
    again from the last checkpoint, then the test split), and its status ends
    ``completed``. The run file is held by this process alone meanwhile
    (:mod:`physnn.runlog.lock`). Before anything is loaded, opened or
    queried, the whole configuration is checked (:mod:`physnn.run.preflight`).
    ``data``: arrays in Python instead of ``config.dataset`` (see
    :func:`physnn.data.tables.as_dataset`); the run file says ``dataset = "arrays"``.
    """
    t0 = time.perf_counter()
    handed = None if systems is None else list(systems)
    config = config if data is None else config.updated(dataset="arrays")
    with contextlib.ExitStack() as held:
        try:
            preflight.check_config(config, build_systems=handed is None)
            data_registry.check_run_data(config, data)  # the data set's name and options, before it is read
            plan = None
            if resume is not None:
                from physnn.runlog import lock

                held.enter_context(lock.hold(resume))  # one writer per run file, from before it is read
                plan = _ResumePlan.read(Path(resume), config)
        except BaseException:
            if handed is not None:  # the instruments handed over are closed however the run ends
                _close_systems(handed, None)
            raise
        if plan is not None and plan.finished(config):
            if handed is not None:
                _close_systems(handed, None)
            return plan.nothing_left(config, echo, t0)
        return _run(config, write_file, progress, echo, plan, handed, t0, data)


def _run(
    config: RunConfig,
    write_file: bool,
    progress: bool,
    echo: Callable[[str], None],
    plan: "_ResumePlan | None",
    systems: list[PhysicalSystem] | None,
    t0: float,
    given: Any = None,
) -> RunResult:
    """The steps of :func:`run_experiment` once the configuration is checked (and a resumed file locked)."""
    resume = None if plan is None else plan.path
    if config.threads:
        # One intra-op thread by default: the tensors of a PNN are small, so threads buy little, and a
        # fixed thread count keeps CPU reductions (and so the run) bit-reproducible whatever the load.
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # anything that still uses the global RNG is seeded too
    try:
        data = load_data(config, given)
        if resume is not None:  # --resume continues on the data it trained on (the run file's fingerprint)
            from physnn import runlog

            data_registry.same_data(data, runlog.load(resume).dataset, str(resume))
        if plan is None:  # the budget against one epoch's queries: needs the data, not the systems
            preflight.check_budget(config, build_trainer(config), split_validation(config, data)[0].shape[0])
    except BaseException:
        if systems is not None:
            _close_systems(systems, None)
        raise
    if systems is None:
        systems = build_systems(config, data)
    else:
        systems = list(systems)
        if len(systems) != config.blocks and trainer_class(config.method).uses_systems:
            _close_systems(systems, None)
            raise ConfigError(f"got {len(systems)} systems for blocks={config.blocks}; give one per block")
    try:
        trainer = build_trainer(config, progress)
        model = build_model(config, data, systems, trainer)
        run_file = open_run_file(
            config, data, systems, trainer.metric_names(model), resume=resume, write_file=write_file
        )
    except BaseException:
        _close_systems(systems, None)
        raise
    # exit order: the systems (safe state) first, then the run file records how the run ended
    with run_file as writer, contextlib.ExitStack() as stack:
        stack.callback(_close_systems, systems, writer)
        if writer is not None:
            for s in dict.fromkeys(systems):
                stack.enter_context(s.hooks(event_hook=writer.event))
            if config.log_samples:
                lock = threading.Lock()  # a pipelined schedule queries the systems from worker threads

                def log_samples(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
                    with lock:
                        writer.log_samples(name, x, y)

                for i, s in enumerate(systems):
                    stack.enter_context(s.hooks(query_hook=lambda x, y, name=f"block{i}": log_samples(x, y, name)))
        # accounting starts before the first query (probes included); the optimisers are built by fit, and the
        # one-off torch._dynamo import they need runs in the background while the device answers the probes
        trainer.prepare(model, optimizers=False)
        run = _Run(config, data, systems, model, trainer, writer, echo)
        if writer is not None and config.metric_sinks:  # beside the run file, named by its stem
            run.sinks = sinks.make_sinks(
                config.metric_sinks, Path(writer.path).parent, Path(writer.path).stem, config.to_dict()
            )
            stack.push(lambda et, *_: sinks.close_sinks(run.sinks, sinks.run_status(et)))
        if plan is not None:
            plan.restore(run)
        warm_optimizer_imports()
        run.set_probes(fresh=plan is None or not plan.epochs_done)
        run.train()
        run.continual()
        train_acc, test_acc, train_q, total = run.finish()
    return RunResult(
        config,
        getattr(writer, "path", None),
        train_acc,
        test_acc,
        train_q,
        total,
        time.perf_counter() - t0,
        trainer.history.epochs,
        "completed",
        model,
        int(data.y_test.shape[0]),
    )


def _target_epochs(run: Any) -> int:
    """The epochs a run was last asked for: its config's, or the last ``epochs_target`` event's (an extension)."""
    targets = [e["fields"].get("epochs") for e in run.events if e["kind"] == "epochs_target"]
    return int(targets[-1]) if targets and targets[-1] is not None else int(run.config.get("epochs", 0))


def resume_config(path: str | Path, epochs: int | None = None) -> RunConfig:
    """The configuration to resume run file ``path`` with: as it was written, for the epochs it was last asked
    for (an earlier ``--epochs`` extension included), or ``epochs`` when given (checked against the epochs done
    when the run resumes)."""
    from physnn import runlog

    run = runlog.load(path)
    config = RunConfig.from_dict(run.config, source=str(path))
    return config.updated(epochs=_target_epochs(run) if epochs is None else epochs)


@dataclass
class _ResumePlan:
    """What is left of a run file being resumed, read once it is locked: where it stopped and what it recorded."""

    path: Path
    epochs_done: int  # the last checkpoint's epoch (0: none)
    target: int  # the epochs the run was last asked for
    stopped: bool  # the last checkpointed epoch ended training (a stop rule or the query budget)
    measured: bool  # the final test measurement is in its summary
    status: str

    @classmethod
    def read(cls, path: Path, config: RunConfig) -> "_ResumePlan":
        from physnn import runlog

        run = runlog.load(path)
        done = max(run.checkpoints, default=0)
        preflight.check_resume(config, path, done)
        last = next((r for r in run.epoch_rows if r.get("epoch") == done), {})
        test = run.summary.get("test_accuracy")
        return cls(
            path,
            done,
            _target_epochs(run),
            last.get("stopped") == 1.0,
            isinstance(test, (int, float)) and not math.isnan(test),
            run.status,
        )

    def training_done(self, config: RunConfig) -> bool:
        """Every epoch asked for is checkpointed, or the run stopped itself there and was not asked for more."""
        return self.epochs_done >= config.epochs or (self.stopped and config.epochs <= self.target)

    def finished(self, config: RunConfig) -> bool:
        return self.measured and self.training_done(config)

    def nothing_left(self, config: RunConfig, echo: Callable[[str], None], t0: float) -> RunResult:
        """A finished run: nothing is measured; a run killed after its summary was written is marked completed."""
        from physnn import runlog

        if self.status != "completed":
            with runlog.RunWriter.resume(self.path) as writer:  # closes as completed
                writer.event("finished_on_resume", {"previous_status": self.status, "measured": False})
            echo(
                f"{self.path}: its final test measurement was recorded before it stopped (status {self.status}); "
                "marked completed, nothing measured again"
            )
        else:
            echo(
                f"{self.path}: already trained for {self.epochs_done} epochs (epochs = {config.epochs}); nothing "
                f"to do. Give --epochs N with N > {self.epochs_done} to extend it."
            )
        return _stored_result(config, self.path, time.perf_counter() - t0)

    def restore(self, run: _Run) -> None:
        """Load the last checkpoint into ``run`` and record what this segment of the run file will do."""
        config, writer = run.config, run.writer
        if self.epochs_done:
            restore(self.path, run.model, run.trainer, run.systems)
        run.training_done = self.training_done(config)
        if writer is not None and config.epochs != self.target:
            writer.event("epochs_target", {"epochs": config.epochs, "previous": self.target})
        if not self.epochs_done:
            run.echo(f"resuming {self.path}: no checkpoint yet; training from the start again (same seed)")
        elif run.training_done:
            left = "the continual phase (again from the last checkpoint), then " if config.continual_ticks else ""
            run.echo(
                f"resuming {self.path} after epoch {self.epochs_done}: training is done; left: {left}the test split"
            )
        else:
            run.echo(f"resuming {self.path} after epoch {self.epochs_done}")


def _stored_result(config: RunConfig, path: Path, wall: float) -> RunResult:
    """The result of a finished run as its file records it (nothing is measured)."""
    from physnn import runlog

    run = runlog.load(path)
    s = run.summary

    def num(key: str) -> float:
        v = s.get(key)
        return float(v) if isinstance(v, (int, float)) else math.nan

    history = [_metrics_row(r) for r in run.epoch_rows]
    return RunResult(
        config,
        path,
        num("train_accuracy"),
        num("test_accuracy"),
        int(s.get("train_queries", 0) or 0),
        int(s.get("total_queries", 0) or 0),
        wall,
        history,
        run.status,
        None,
        int(s.get("test_n", 0) or 0),
    )
