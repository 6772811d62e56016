"""The run-file writer: :class:`RunWriter` makes the file, then appends to it under SWMR.

It composes one part per job (each module creates its own objects and appends to them):
``metric_table`` (``/metrics``, ``/late_metrics``), ``checkpoints`` (``/checkpoints``), ``samples``
(``/samples``, ``/probes``, ``/goodness``) and ``records`` (``/config``, ``/systems``, ``/events``,
``/summary``, ``/confusion``). The writer owns what spans them: the file and its SWMR session, the
lock, the epoch flush that commits an epoch's rows of every part at once, fsync, close and resume.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch

from physnn.core import checks
from physnn.runlog._common import (
    FORMAT_VERSION,
    LIBVER,
    RunFileError,
    _attr_str,
    _block_name,
    _check_metric_name,
    _h5file,
    _iso_now,
    _libver,
    _nonneg_int,
    _to_float,
    _writer_alive,
    default_metric_names,
)
from physnn.runlog.checkpoints import (
    CheckpointStore,
    check_checkpoint_seconds,
    checkpoint_due,
    create_checkpoint_store,
    pack_checkpoint,
)
from physnn.runlog.codec import _loose_json, _strict_json
from physnn.runlog.columns import _Rows
from physnn.runlog.lock import acquire as _acquire_lock
from physnn.runlog.lock import release as _release_lock
from physnn.runlog.metric_table import MetricTable, create_metric_table
from physnn.runlog.records import (
    RecordLogs,
    _describe_one,
    _describe_systems,
    create_descriptions,
    create_record_logs,
    create_root_attrs,
)
from physnn.runlog.recovery import _clear_superblock_flags, _load_for_repair, _superblock_flags
from physnn.runlog.samples import Measurements, create_measurements

logger = logging.getLogger(__name__)


# ================================================================= the writer
class RunWriter:
    """Writes one run file as the run goes: metrics, checkpoints, samples, probes, events.

    Args:
        path: the ``.h5`` file to create (parent folders are created).
        config: the full resolved configuration (JSON-able dict).
        seed: the run's seed.
        systems: ``{block: system.describe()}`` (a ``PhysicalSystem`` is also
            accepted); the blocks named here get ``/systems``, ``/samples``,
            ``/probes`` and ``/goodness`` entries and default loss columns.
            ``describe()["spec"]`` gives the drive ``units`` and the
            ``output_units`` written on the sample and probe datasets.
        metric_names: metric columns to pre-create (default:
            :func:`default_metric_names`). Names logged later that are not
            among them are kept too, in ``/late_metrics``.
        metric_units: ``{name: units}`` for metric columns whose units the
            writer does not know (the trainers' names are known).
        dataset: a description of the data (``Dataset.describe()``), stored as JSON.
        samples_per_call: at most this many rows of each :meth:`log_samples`
            call are kept (evenly spaced through the batch).
        max_samples: at most this many sample rows per block in the whole run.
        goodness_per_call: at most this many positive and as many negative
            goodness values per :meth:`log_goodness` call.
        overwrite: replace an existing file (default: refuse, never lose data).
        durable: ``fsync`` the file at close and, after an epoch or a
            checkpoint, when ``fsync_seconds`` have passed since the last
            ``fsync``, so that a power cut (not just a killed process) keeps
            them too. A killed process loses nothing flushed either way: the
            operating system holds the written data.
        fsync_seconds: at most one ``fsync`` per this many seconds (0: after
            every epoch and checkpoint). An ``fsync`` costs milliseconds, as
            much as a whole full-batch epoch of a small model.
        checkpoint_seconds: with it, :meth:`should_checkpoint` also says yes
            once this many seconds have passed since the last checkpoint (a
            wall-clock checkpoint interval for runs whose epochs are short).
        keep_every: besides the last checkpoint and the best one, keep the
            checkpoint of every epoch divisible by this (0: none). Nothing else
            is kept: the space of older checkpoints is reused (physnn/runlog/checkpoints.py).
        best_metric: the validation metric that picks the best checkpoint (its
            model is kept); ``None``: keep no best. Only a checkpoint of an
            epoch that logged it is a candidate. Never a test metric: choosing
            by the test split would be model selection on the test set.
        best_mode: ``"max"`` (an accuracy) or ``"min"`` (a loss).
        max_sample_bytes: the byte budget of ``/samples`` (all blocks together);
            rows beyond it are not kept (one ``samples_full`` event per block).
        planned_epochs: the epochs the run will log (the runner's ``epochs``):
            with it, the sample budget is spread evenly over them instead of
            being filled by the first queries.

    Use it as a context manager: leaving the block normally closes the run as
    ``completed``, Ctrl-C as ``interrupted``, any other exception as
    ``failed`` (the exception is recorded as an event). ``writer.event`` has
    the signature of ``PhysicalSystem.event_hook``; ``writer.log_samples``
    that of a ``query_hook`` (it only copies into memory: samples reach the
    file at the next epoch flush, off the query path).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        config: Mapping[str, Any],
        seed: int,
        systems: Mapping[str, Any] | None = None,
        metric_names: Sequence[str] | None = None,
        metric_units: Mapping[str, str] | None = None,
        dataset: Mapping[str, Any] | None = None,
        samples_per_call: int = 16,
        max_samples: int = 100_000,
        goodness_per_call: int = 2000,
        overwrite: bool = False,
        durable: bool = True,
        checkpoint_seconds: float | None = None,
        fsync_seconds: float = 1.0,
        keep_every: int = 0,
        best_metric: str | None = "val_accuracy",
        best_mode: str = "max",
        max_sample_bytes: int = 1 << 19,
        planned_epochs: int | None = None,
    ):
        path = Path(path)
        overwrite = checks.boolean("overwrite", overwrite)
        _refuse_existing(path, overwrite)
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        seed = checks.integer("seed", seed)
        samples_per_call = checks.integer("samples_per_call", samples_per_call, low=1)
        max_samples = checks.integer("max_samples", max_samples, low=0)
        goodness_per_call = checks.integer("goodness_per_call", goodness_per_call, low=1)
        durable = checks.boolean("durable", durable)
        checkpoint_seconds = check_checkpoint_seconds(checkpoint_seconds)
        fsync_seconds = checks.nonnegative("fsync_seconds", fsync_seconds)
        keep_every = checks.integer("keep_every", keep_every, low=0)
        if best_metric is not None:
            _check_metric_name(best_metric)
        best_mode = checks.choice("best_mode", best_mode, ("max", "min"))
        max_sample_bytes = checks.integer("max_sample_bytes", max_sample_bytes, low=0)
        self.planned_epochs = _check_planned(planned_epochs)
        units = {
            checks.string("metric_units key", k): checks.string(f"metric_units[{k!r}]", v)
            for k, v in (metric_units or {}).items()
        }
        config_json = json.dumps(_strict_json(config, "config"), indent=1)
        dataset_json = json.dumps(_loose_json(dataset), indent=1) if dataset is not None else None
        described = _describe_systems(systems)
        blocks = list(described)
        names = list(default_metric_names(blocks) if metric_names is None else metric_names)
        for n in names:
            _check_metric_name(n)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"metric_names lists {dup} more than once")

        self.path = path
        self.samples_per_call = samples_per_call
        self.max_samples = max_samples
        self.goodness_per_call = goodness_per_call
        self.durable = durable
        self.checkpoint_seconds = checkpoint_seconds
        self.fsync_seconds = fsync_seconds
        path.parent.mkdir(parents=True, exist_ok=True)
        _acquire_lock(path)  # one writer per run file (physnn/runlog/lock.py), let go at close()
        try:
            _refuse_existing(path, overwrite)  # again, now that no other writer can be creating it
            start_unix = time.time()
            tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
            try:
                with h5py.File(tmp, "w", libver=LIBVER) as f:
                    options = {
                        "samples_per_call": samples_per_call,
                        "max_samples": max_samples,
                        "goodness_per_call": goodness_per_call,
                        "max_sample_bytes": max_sample_bytes,
                        "keep_every": keep_every,
                        "best_metric": best_metric,
                        "best_mode": best_mode,
                    }
                    self._create_layout(
                        f, config_json, dataset_json, described, names, units, seed, start_unix, options
                    )
                os.replace(tmp, path)  # the file appears complete, or not at all
            finally:
                if tmp.exists():
                    tmp.unlink()
            self._open_swmr(segment=0)
        except BaseException:
            _release_lock(path)
            raise
        self.event("run_started", {"pid": os.getpid(), "host": socket.gethostname(), "path": str(path)})

    # ------------------------------------------------------------- creation
    @staticmethod
    def _create_layout(
        f: h5py.File,
        config_json: str,
        dataset_json: str | None,
        systems: dict[str, dict[str, Any]],
        names: list[str],
        units: Mapping[str, str],
        seed: int,
        start_unix: float,
        options: dict[str, Any],
    ) -> None:
        create_root_attrs(f, systems, seed, start_unix, options)
        create_descriptions(f, config_json, dataset_json, systems)
        create_metric_table(f, names, units)
        create_checkpoint_store(f)
        create_record_logs(f)
        create_measurements(f, systems)

    # ----------------------------------------------------------- open/SWMR
    def _open_swmr(self, segment: int) -> None:
        self._lock = threading.RLock()
        f = _h5file(self.path, "r+", libver=LIBVER)
        try:
            try:
                self._bind(f)
            except (KeyError, TypeError, ValueError, IndexError, OSError) as exc:
                raise RunFileError(
                    self.path,
                    f"does not have the layout of run-format version {FORMAT_VERSION} "
                    f"and cannot be appended to ({type(exc).__name__}: {exc})",
                ) from None
            f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        self._f = f
        self._segment = segment
        self._closed = False
        self._fd = os.open(self.path, os.O_RDONLY) if self.durable else None
        self._last_checkpoint_time = self._last_fsync = time.monotonic()

    def _bind(self, f: h5py.File) -> None:
        """Open handles on every dataset (SWMR keeps them valid) and read back the running state."""
        self._start_unix = float(f.attrs["start_time_unix"])
        self._blocks = json.loads(_attr_str(f.attrs["blocks"]))
        self._version = int(f.attrs["format_version"])
        options = json.loads(_attr_str(f.attrs.get("writer_options", "{}")))
        self.samples_per_call = int(options.get("samples_per_call", 16))
        self.max_samples = int(options.get("max_samples", 100_000))
        self.goodness_per_call = int(options.get("goodness_per_call", 2000))
        # format 2 files: no byte budget, no best, every checkpoint kept (as they were written)
        self.max_sample_bytes = options.get("max_sample_bytes")
        self.best_metric = options.get("best_metric")
        self._metrics = MetricTable(f)
        self._metric_names = self._metrics.names
        self._checkpoints = CheckpointStore(
            f, self._version, keep_every=int(options.get("keep_every", 0)), best_mode=options.get("best_mode", "max")
        )
        self._records = RecordLogs(f)
        self._measurements = Measurements(
            f, self.samples_per_call, self.max_samples, self.goodness_per_call, self.max_sample_bytes
        )
        self._last_epoch = self._metrics.last_epoch
        self._measurements.new_epoch(self._last_epoch, self.planned_epochs)
        #: (epoch, value) of the best_metric in the last logged row that had it
        self._scored: tuple[int, float] | None = None

    # ----------------------------------------------------------- properties
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def metric_names(self) -> list[str]:
        """Metric names with their own column (others go to ``/late_metrics``)."""
        return list(self._metric_names)

    @property
    def blocks(self) -> list[str]:
        return list(self._blocks)

    @property
    def segment(self) -> int:
        """0 for the first writer of the file, then 1, 2, ... for each resume."""
        return self._segment

    @property
    def last_epoch(self) -> int | None:
        return self._last_epoch

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"RunWriter({str(self.path)!r}, {state}, last_epoch={self._last_epoch})"

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise RuntimeError(f"{what}: run file {str(self.path)!r} is closed; reopen it with RunWriter.resume(path)")

    def _sync(self, force: bool = False) -> None:
        """Flush to the operating system (enough for a killed process); fsync when due (for a power cut)."""
        self._f.flush()
        if self._fd is not None:
            now = time.monotonic()
            if force or now - self._last_fsync >= self.fsync_seconds:
                os.fsync(self._fd)
                self._last_fsync = now

    def _epoch_flush(self, *staged: _Rows) -> None:
        """Write the buffered samples and probe measurements with ``staged`` records, commit them all.

        Data columns first, one file flush, then the key columns: a killed writer leaves either a whole
        epoch (metrics, samples, probes) or none of it.
        """
        pending = list(staged) + self._measurements.stage()
        self._f.flush()
        for r in pending:
            r.commit()

    # ---------------------------------------------------------------- epoch
    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Append one row of per-epoch metrics and flush: after this the epoch survives any crash.

        ``metrics`` maps names to numbers (``None``/missing: NaN). A key
        ``"epoch"`` is accepted when it equals ``epoch``. Logging an epoch
        again (e.g. after a resume) appends a new row; readers use the latest.
        The samples buffered by :meth:`log_samples` are written first, so a
        committed epoch has its samples on disk too.
        """
        epoch = _nonneg_int(epoch, "epoch")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
        values: dict[str, float] = {}
        for key, v in metrics.items():
            if key == "epoch":
                if _to_float(v, "metrics['epoch']") != epoch:
                    raise ValueError(f"metrics['epoch'] = {v!r} disagrees with epoch={epoch}")
                continue
            values[_check_metric_name(key)] = _to_float(v, f"metric {key!r}")
        with self._lock:
            self._check_open("log_epoch")
            late = self._metrics.stage(epoch, values, self._segment, time.time())
            self._epoch_flush(self._metrics.rows)
            self._last_epoch = epoch
            new = self._metrics.first_seen(late)
            score = values.get(self.best_metric) if self.best_metric else None
            if score is not None and math.isfinite(score):
                self._scored = (epoch, score)
            self._measurements.new_epoch(epoch, self.planned_epochs)
            self._sync()
        if new:
            self.event(
                "late_metric",
                {
                    "names": new,
                    "note": "stored in /late_metrics; list them in metric_names= to give them their own column",
                },
            )

    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Final numbers of the run (e.g. test accuracy after training); the last call wins."""
        if not isinstance(values, Mapping):
            raise TypeError(f"values must be a dict, got {type(values).__name__}")
        record = {str(k): _loose_json(v) for k, v in values.items()}
        with self._lock:
            self._check_open("log_summary")
            self._records.summary.append(record, time=time.time(), epoch=_or_minus1(self._last_epoch), kind="summary")
            self._sync()

    # ----------------------------------------------------------- checkpoint
    def should_checkpoint(self, epoch: int, *, every: int | None = None, final: bool = False) -> bool:
        """Whether the runner should call :meth:`checkpoint` after ``epoch``.

        Yes when ``final``, when ``every`` divides ``epoch``, or when
        ``checkpoint_seconds`` (constructor/resume) have passed since the last
        checkpoint (or since the writer opened). A checkpoint costs the same
        at epoch 10 and 10,000, so the wall-clock rule bounds the work a crash
        can lose without paying a checkpoint per millisecond-long epoch.
        """
        return checkpoint_due(
            epoch,
            every=every,
            final=final,
            checkpoint_seconds=self.checkpoint_seconds,
            last_time=self._last_checkpoint_time,
        )

    def checkpoint(
        self,
        epoch: int,
        model_state: Mapping[str, Any],
        optim_state: Any = None,
        rng_state: Any = None,
        *,
        extra: Any = None,
    ) -> None:
        """Store the digital state after ``epoch`` so that training can continue from it exactly.

        ``model_state`` is a state dict; ``optim_state`` any tree of dicts,
        lists, tuples, tensors, arrays and numbers (optimiser and trainer
        state); ``rng_state`` likewise (see :func:`capture_rng`); ``extra``
        anything else the trainer needs back. All come back bit for bit from
        :func:`last_checkpoint`. The per-epoch metrics need not go into
        ``extra``: :meth:`Run.history` reads them back from ``/metrics``, so a
        checkpoint costs the same whatever the length of the run.
        """
        epoch = _nonneg_int(epoch, "epoch")
        trees, table, chunks = pack_checkpoint(model_state, optim_state, rng_state, extra)
        with self._lock:
            self._check_open("checkpoint")
            scored = self._scored
            best = (self.best_metric, scored[1]) if scored is not None and scored[0] == epoch else None
            self._checkpoints.write(epoch, self._segment, trees, table, chunks, flush=self._epoch_flush, best=best)
            self._sync()
            self._last_checkpoint_time = time.monotonic()

    # ------------------------------------------------------- samples/probes
    def log_samples(self, block: str | int, x: Any, y: Any, step: int | None = None) -> None:
        """Keep a subsample of one system query: inputs ``x [B, n_in]`` and outputs ``y [B, n_out]``.

        At most ``samples_per_call`` rows are kept, evenly spaced through the
        batch, up to ``max_samples`` rows per block. The rows are copied into
        memory only; they reach the file at the next epoch flush
        (:meth:`log_epoch`, :meth:`checkpoint`, :meth:`flush`, :meth:`close`),
        so the query path never waits for the disk. A crash therefore loses
        the samples of the epoch in progress, nothing earlier.
        """
        with self._lock:
            self._check_open("log_samples")
            filled, buffer_full = self._measurements.add_samples(block, x, y, step)
            if filled:
                b = _block_name(block)
                limit = self._measurements.samples[b]["limit"]
                self.event(
                    "samples_full", {"block": b, "max_samples": limit, "max_sample_bytes": self.max_sample_bytes}
                )
            if buffer_full:
                self._epoch_flush()

    def set_probes(self, block: str | int, x: Any) -> None:
        """Store the fixed probe inputs ``x [P, n_in]`` of a block (once per run file).

        Calling it again with the same inputs (e.g. after a resume) is a no-op;
        different inputs are refused, since drift is only meaningful on fixed probes.
        """
        with self._lock:
            self._check_open("set_probes")
            if self._measurements.set_probes(block, x):
                self._f.flush()

    def log_probe(self, block: str | int, step: int, y: Any) -> None:
        """Append one re-measurement ``y [P, n_out]`` of the block's probes at training ``step``.

        It reaches the disk with the next epoch flush (:meth:`log_epoch`, :meth:`checkpoint`, :meth:`flush`).
        """
        step = _nonneg_int(step, "step")
        with self._lock:
            self._check_open("log_probe")
            self._measurements.add_probe(block, step, y)

    # ------------------------------------------------ goodness and confusion
    def log_goodness(self, block: str | int, g_pos: Any, g_neg: Any, epoch: int | None = None) -> None:
        """Goodness values of positive and negative data of one block (for their distributions).

        Up to ``goodness_per_call`` values of each kind are kept (evenly spaced).
        ``epoch`` defaults to the last logged epoch.
        """
        with self._lock:
            self._check_open("log_goodness")
            b = self._measurements.goodness_block(block)
            e = self._last_epoch if epoch is None else _nonneg_int(epoch, "epoch")
            if self._measurements.add_goodness(b, g_pos, g_neg, _or_minus1(e)):
                self._f.flush()

    def log_confusion(
        self, matrix: Any, labels: Sequence[Any] | None = None, *, epoch: int | None = None, split: str = "test"
    ) -> None:
        """A confusion matrix: ``matrix[i, j]`` = samples of true class i predicted as j."""
        m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
            raise ValueError(f"confusion matrix must be square [C, C], got shape {m.shape}")
        if not np.all(np.isfinite(m)) or (m < 0).any() or not np.all(m == np.round(m)):
            raise ValueError("confusion matrix must hold non-negative whole counts")
        labels = [str(i) for i in range(m.shape[0])] if labels is None else [str(lab) for lab in labels]
        if len(labels) != m.shape[0]:
            raise ValueError(f"{len(labels)} labels for a {m.shape[0]}x{m.shape[0]} confusion matrix")
        with self._lock:
            self._check_open("log_confusion")
            e = _or_minus1(self._last_epoch if epoch is None else _nonneg_int(epoch, "epoch"))
            self._records.confusion.append(
                {"epoch": e, "split": str(split), "labels": labels, "matrix": m.astype(np.int64).tolist()},
                time=time.time(),
                epoch=e,
                kind=str(split),
            )
            self._sync()

    # ---------------------------------------------------------------- systems
    def update_systems(self, systems: Mapping[str, Any]) -> None:
        """Record the systems' current ``describe()`` (their query counts, drift, settings) in ``/systems/updates``.

        ``systems`` maps block names (or indices) to ``PhysicalSystem``
        objects or describe() dicts. The run's start state stays in
        ``/systems/<block>/describe``; :func:`load` gives the latest record
        per block as ``run.systems``. A describe() that raises is recorded as a
        ``describe_failed`` event instead, so that closing a run never fails on it.
        """
        if not isinstance(systems, Mapping):
            raise TypeError(
                f"systems must be a dict of block -> PhysicalSystem or describe() dict, got {type(systems).__name__}"
            )
        with self._lock:
            self._check_open("update_systems")
            now = time.time()
            for block, desc in systems.items():
                b = _block_name(block)
                if b not in self._blocks:
                    raise ValueError(f"update_systems: block {b!r} is not in this run file; blocks: {self._blocks}")
                try:
                    desc = _describe_one(b, desc)
                except Exception as exc:  # noqa: BLE001 - a driver's describe() may fail on a dead instrument
                    self.event("describe_failed", {"block": b, "type": type(exc).__name__, "message": str(exc)})
                    continue
                self._records.system_updates.append(
                    {"block": b, "describe": desc}, time=now, epoch=_or_minus1(self._last_epoch), kind=b
                )
            self._f.flush()

    # ---------------------------------------------------------------- events
    def event(self, kind: str, fields: Mapping[str, Any] | None = None) -> None:
        """Record a warning, retry or fault; flushed at once. Usable as ``system.event_hook``.

        Never raises for odd field values (they are stored as text); after
        :meth:`close` the event cannot be stored and a warning says so.
        """
        kind = str(kind)
        record = {"kind": kind, "fields": _loose_json(dict(fields or {}))}
        with self._lock:
            if self._closed:
                warnings.warn(
                    f"run file {str(self.path)!r} is closed; event {kind!r} {record['fields']} not stored",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return
            self._records.events.append(record, time=time.time(), epoch=_or_minus1(self._last_epoch), kind=kind)
            self._f.flush()

    def flush(self) -> None:
        """Write everything (including buffered samples) to disk now."""
        with self._lock:
            self._check_open("flush")
            self._epoch_flush()
            self._sync(force=True)

    # ---------------------------------------------------------------- close
    def close(self, status: str = "completed", *, systems: Mapping[str, Any] | None = None) -> None:
        """End the run with ``status`` (completed, interrupted or failed). Idempotent.

        ``systems`` (block -> ``PhysicalSystem`` or describe() dict): their
        describe() at the end of the run, recorded first (:meth:`update_systems`).
        """
        status = checks.choice("status", status, ("completed", "interrupted", "failed"))
        with self._lock:
            if self._closed:
                return
            try:
                if systems is not None:
                    self.update_systems(systems)
                self._epoch_flush()
                self._records.events.append(
                    {"kind": "run_closed", "fields": {"status": status}},
                    time=time.time(),
                    epoch=_or_minus1(self._last_epoch),
                    kind="run_closed",
                )
                self._sync(force=True)
            finally:
                self._f.close()
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                self._closed = True
            try:
                _set_root_status(self.path, status, end_time=_iso_now())
            finally:
                _release_lock(self.path)  # the next writer may open it now

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.close("completed")
            return False
        try:
            if issubclass(exc_type, KeyboardInterrupt):
                # Ctrl-C, or SIGTERM/SIGHUP turned into physnn.core.safety.Terminated (a KeyboardInterrupt)
                self.event("interrupted", {"by": exc_type.__name__, "signal": getattr(exc, "signal_name", None)})
                self.close("interrupted")
            else:
                self.event(
                    "exception",
                    {
                        "type": exc_type.__name__,
                        "message": str(exc),
                        "traceback": "".join(traceback.format_exception(exc_type, exc, tb))[-4000:],
                    },
                )
                self.close("failed")
        except Exception as close_exc:  # never hide the original exception
            warnings.warn(
                f"could not close run file {str(self.path)!r} cleanly: {close_exc}", RuntimeWarning, stacklevel=2
            )
        return False

    # --------------------------------------------------------------- resume
    @classmethod
    def resume(
        cls,
        path: str | os.PathLike,
        *,
        durable: bool = True,
        force: bool = False,
        checkpoint_seconds: float | None = None,
        fsync_seconds: float = 1.0,
        planned_epochs: int | None = None,
    ) -> "RunWriter":
        """Reopen a run file to append to it (after a crash, Ctrl-C or a finished run).

        The status goes back to ``running`` and a ``resumed`` event records the
        previous status and the last checkpoint. Refused while the writer that
        left the file open is still alive on this host; a writer on another
        host cannot be checked, so then ``force=True`` is needed. Files of
        run-format version 1 are read, not appended to; version-2 files are
        appended to as version 2 (every checkpoint kept whole). ``planned_epochs``:
        the epochs the run will have in all (spreads what is left of the sample
        budget over the epochs to come). Another process
        holding the file's write lock (a writer, a resume) is refused at once
        with :class:`~physnn.runlog.lock.RunFileLocked` naming it.
        """
        path = Path(path)
        durable = checks.boolean("durable", durable)
        force = checks.boolean("force", force)
        checkpoint_seconds = check_checkpoint_seconds(checkpoint_seconds)
        fsync_seconds = checks.nonnegative("fsync_seconds", fsync_seconds)
        planned_epochs = _check_planned(planned_epochs)
        _acquire_lock(path)  # before the open-for-writing check: two resumes cannot both pass it
        try:
            self = cls._reopen(path, durable, force, checkpoint_seconds, fsync_seconds, planned_epochs)
        except BaseException:
            _release_lock(path)
            raise
        return self

    @classmethod
    def _reopen(
        cls,
        path: Path,
        durable: bool,
        force: bool,
        checkpoint_seconds: float | None,
        fsync_seconds: float,
        planned_epochs: int | None = None,
    ) -> "RunWriter":
        """:meth:`resume` once the file's write lock is held."""
        run = _load_for_repair(path, force)
        if run.format_version < 2:
            raise RunFileError(
                path,
                f"is in run-format version {run.format_version}, which this physnn reads but "
                f"does not append to; start a new run (its checkpoints still load with "
                f"physnn.runlog.last_checkpoint)",
            )
        previous = run.status
        if _superblock_flags(path):
            alive = _writer_alive(run.attrs)
            if alive is True:
                who = (
                    "a RunWriter in this process; close it first"
                    if int(run.attrs.get("writer_pid", -1)) == os.getpid()
                    else f"process {run.attrs.get('writer_pid')} on this host; stop it first"
                )
                raise RunFileError(path, f"is still open for writing by {who}")
            if alive is None and not force:
                raise RunFileError(
                    path,
                    f"was left open by a writer on host "
                    f"{_attr_str(run.attrs.get('writer_host'))!r}, which cannot be checked from "
                    f"here; if it is surely stopped, resume with force=True",
                )
            _clear_superblock_flags(path)
        segment = max(1, sum(1 for e in run.events if e["kind"] in ("run_started", "resumed")))
        with _h5file(path, "r+", libver=_libver(run.format_version)) as f:
            f.attrs.modify("status", np.bytes_(b"running"))
            f.attrs.modify("end_time", np.bytes_(b""))
            f.attrs.modify("writer_host", np.bytes_(socket.gethostname().encode()[:255]))
            f.attrs.modify("writer_pid", np.int64(os.getpid()))
        self = cls.__new__(cls)
        self.path = path
        self.durable = durable
        self.checkpoint_seconds = checkpoint_seconds
        self.fsync_seconds = fsync_seconds
        self.planned_epochs = planned_epochs
        self._open_swmr(segment=segment)  # reads the writer options back from the file
        self.event(
            "resumed",
            {
                "previous_status": previous,
                "last_checkpoint": run.checkpoints[-1] if run.checkpoints else None,
                "last_epoch": self._last_epoch,
                "pid": os.getpid(),
                "host": socket.gethostname(),
            },
        )
        logger.info("resumed %s (segment %d, previous status %s)", path, segment, previous)
        return self


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"run file {str(path)!r} already exists; continue it with RunWriter.resume(path), "
            f"or pass overwrite=True to replace it"
        )


def _check_planned(value: Any) -> int | None:
    return None if value is None else checks.integer("planned_epochs", value, low=1)


def _or_minus1(epoch: int | None) -> int:
    return -1 if epoch is None else epoch


def _set_root_status(path: Path, status: str, end_time: str = "", version: int = FORMAT_VERSION) -> None:
    """Update the fixed-size root attributes in place, in a short non-SWMR session."""
    last: Exception | None = None
    for attempt in range(5):
        try:
            with _h5file(path, "r+", libver=_libver(version)) as f:
                f.attrs.modify("status", np.bytes_(status.encode()))
                f.attrs.modify("end_time", np.bytes_(end_time.encode()))
            return
        except OSError as exc:  # e.g. another program holds an HDF5 lock
            last = exc
            time.sleep(0.05 * (attempt + 1))
    warnings.warn(
        f"could not set status={status!r} in {str(path)!r} ({last}); the run_closed event in /events records it",
        RuntimeWarning,
        stacklevel=2,
    )
