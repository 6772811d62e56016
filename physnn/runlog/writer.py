"""The run-file writer: :class:`RunWriter` creates the on-disk layout, then appends under SWMR."""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
import os
import socket
import sys
import threading
import time
import traceback
import warnings
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch

from physnn.core import checks
from physnn.runlog._common import (
    _DATA_CHUNK,
    _HOST_DTYPE,
    _STATUS_DTYPE,
    _TIME_DTYPE,
    FORMAT_NAME,
    FORMAT_VERSION,
    LIBVER,
    TIME_UNITS,
    RunFileError,
    _attr_str,
    _block_name,
    _check_metric_name,
    _column_name,
    _git_commit,
    _h5file,
    _iso_now,
    _libver,
    _nonneg_int,
    _to_float,
    _writer_alive,
    default_metric_names,
    metric_units,
)
from physnn.runlog.codec import _loose_json, _Packer, _strict_json
from physnn.runlog.columns import (
    _append_bytes,
    _create_col,
    _create_scale,
    _create_text_log,
    _describe,
    _read_text_log,
    _Rows,
    _TextLog,
)
from physnn.runlog.recovery import _clear_superblock_flags, _load_for_repair, _superblock_flags

logger = logging.getLogger(__name__)

#: Buffered sample rows per block beyond which log_samples writes before the epoch flush (memory bound).
_SAMPLE_BUFFER_ROWS = 1 << 16


def _spec_of(desc: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = desc.get("spec")
    return spec if isinstance(spec, Mapping) else {}


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
    ):
        path = Path(path)
        overwrite = checks.boolean("overwrite", overwrite)
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"run file {str(path)!r} already exists; continue it with RunWriter.resume(path), "
                f"or pass overwrite=True to replace it"
            )
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        seed = checks.integer("seed", seed)
        samples_per_call = checks.integer("samples_per_call", samples_per_call, low=1)
        max_samples = checks.integer("max_samples", max_samples, low=0)
        goodness_per_call = checks.integer("goodness_per_call", goodness_per_call, low=1)
        durable = checks.boolean("durable", durable)
        checkpoint_seconds = _check_checkpoint_seconds(checkpoint_seconds)
        fsync_seconds = checks.nonnegative("fsync_seconds", fsync_seconds)
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
        start_unix = time.time()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
        try:
            with h5py.File(tmp, "w", libver=LIBVER) as f:
                options = {
                    "samples_per_call": samples_per_call,
                    "max_samples": max_samples,
                    "goodness_per_call": goodness_per_call,
                }
                self._create_layout(f, config_json, dataset_json, described, names, units, seed, start_unix, options)
            os.replace(tmp, path)  # the file appears complete, or not at all
        finally:
            if tmp.exists():
                tmp.unlink()
        self._open_swmr(segment=0)
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
        options: dict[str, int],
    ) -> None:
        import physnn

        a = f.attrs
        a["format"] = FORMAT_NAME
        a["format_version"] = np.int64(FORMAT_VERSION)
        a["physnn_version"] = physnn.__version__
        a["git_commit"] = _git_commit()
        a["start_time"] = _dt.datetime.fromtimestamp(start_unix).astimezone().isoformat(timespec="seconds")
        a["start_time_unix"] = np.float64(start_unix)
        a["host"] = socket.gethostname()
        a["pid"] = np.int64(os.getpid())
        a["seed"] = np.int64(seed)
        a["blocks"] = json.dumps(list(systems))
        a["writer_options"] = json.dumps(options)
        a["versions"] = json.dumps(
            {
                "python": sys.version.split()[0],
                "torch": torch.__version__,
                "numpy": np.__version__,
                "h5py": h5py.version.version,
                "hdf5": h5py.version.hdf5_version,
            }
        )
        # fixed-size so that close()/resume() can update them in place
        a.create("status", np.bytes_(b"running"), dtype=_STATUS_DTYPE)
        a.create("end_time", np.bytes_(b""), dtype=_TIME_DTYPE)
        a.create("writer_host", np.bytes_(socket.gethostname().encode()[:255]), dtype=_HOST_DTYPE)
        a.create("writer_pid", np.int64(os.getpid()))

        _json_scalar(f, "config", config_json, "resolved run configuration (JSON)")
        if dataset_json is not None:
            _json_scalar(f, "dataset", dataset_json, "data set description (JSON)")

        sg = f.create_group("systems")
        for block, desc in systems.items():
            g = sg.create_group(block)
            _json_scalar(
                g,
                "describe",
                json.dumps(desc, indent=1),
                f"describe() of the {block} system when the run started (JSON)",
            )
            if "class" in desc:
                g.attrs["class"] = str(desc["class"])
            spec = _spec_of(desc)
            for key in ("n_inputs", "n_outputs", "low", "high", "levels", "units", "output_units", "name"):
                if key in spec and spec[key] is not None:
                    g.attrs[key] = spec[key]
        _create_text_log(
            sg,
            "updates",
            "describe() of a system, refreshed during or at the end of the run "
            "(kind = block; the last record per block wins)",
        )

        mg = f.create_group("metrics")
        mg.attrs["columns"] = json.dumps(names)
        epoch = _create_col(
            mg,
            "epoch",
            "i8",
            checksum=True,
            units="1",
            long_name="epoch (one row per log_epoch call; the key column, written last)",
        )
        epoch.make_scale("epoch")
        metric = _create_scale(
            mg,
            "metric",
            np.array([n.encode() for n in names] or [b""], dtype="S64"),
            "",
            "metric name of each column of 'logged'",
        )
        cols = [
            _create_col(
                mg, "time", "f8", checksum=True, units=TIME_UNITS, long_name="time of the log_epoch call (UTC)"
            ),
            _create_col(
                mg,
                "segment",
                "i4",
                checksum=True,
                units="1",
                long_name="writer segment: 0, then 1, 2, ... after each resume",
            ),
        ]
        logged = _create_col(
            mg,
            "logged",
            "u1",
            max(len(names), 1),
            checksum=True,
            units="1",
            long_name="1 where the row logged the metric (even as NaN)",
        )
        for name in names:
            col = _column_name(name)
            if col in mg:
                raise ValueError(f"metric names {name!r} and another collide in the file (as {col!r})")
            unit, long_name = metric_units(name)
            ds = _create_col(
                mg, col, "f8", checksum=True, fillvalue=np.nan, units=units.get(name, unit), long_name=long_name
            )
            ds.attrs["name"] = name
            cols.append(ds)
        for ds in cols + [logged]:
            ds.dims[0].attach_scale(epoch)
        logged.dims[1].attach_scale(metric)
        # a root-level text log: inside /metrics, netCDF readers would put it on the epoch axis
        _create_text_log(f, "late_metrics", "metrics without a column of their own: {row, epoch, segment, values}")

        cg = f.create_group("checkpoints")
        _create_text_log(cg, "manifest", "checkpoint manifests (JSON; see docs/run-format.md)")
        _create_col(
            cg,
            "data",
            "u1",
            chunk=_DATA_CHUNK,
            checksum=True,
            units="",
            long_name="raw array bytes of all checkpoints, one after another",
        )

        _create_text_log(f, "events", "events: {kind, fields} (run life cycle, retries, faults, warnings)")
        _create_text_log(f, "confusion", "confusion matrices: {epoch, split, labels, matrix}")
        _create_text_log(f, "summary", "final numbers of the run (log_summary; the last record wins)")

        samples, probes, goodness = f.create_group("samples"), f.create_group("probes"), f.create_group("goodness")
        for block, desc in systems.items():
            spec = _spec_of(desc)
            n_in, n_out = spec.get("n_inputs"), spec.get("n_outputs")
            drive, out = str(spec.get("units") or "a.u."), str(spec.get("output_units") or "a.u.")
            gg = goodness.create_group(block)
            ge = _create_col(
                gg,
                "epoch",
                "i8",
                chunk=4096,
                checksum=True,
                units="1",
                long_name="epoch of each value (-1: before any epoch; the key column)",
            )
            ge.make_scale("epoch")
            for name, dtype, long_name in (
                ("value", "f4", "goodness"),
                ("positive", "i1", "1: positive data, 0: negative data"),
            ):
                _create_col(
                    gg,
                    name,
                    dtype,
                    chunk=4096,
                    checksum=True,
                    units="a.u." if name == "value" else "1",
                    long_name=long_name,
                ).dims[0].attach_scale(ge)
            if isinstance(n_in, int) and isinstance(n_out, int) and n_in > 0 and n_out > 0:
                rows = int(min(1024, max(16, (1 << 14) // (4 * max(n_in, n_out)))))
                s = samples.create_group(block)
                s.attrs["chunk_rows"] = rows
                step = _create_col(
                    s,
                    "step",
                    "i8",
                    chunk=rows,
                    checksum=True,
                    units="1",
                    long_name="training step (or call counter) of the query; the key column",
                )
                step.make_scale("step")
                inp = _create_scale(s, "input", np.arange(n_in, dtype=np.int32), "1", "system input channel")
                outp = _create_scale(s, "output", np.arange(n_out, dtype=np.int32), "1", "system output channel")
                for name, width, unit, scale, what in (
                    ("x", n_in, drive, inp, "drive sent to the system"),
                    ("y", n_out, out, outp, "output measured by the system"),
                ):
                    ds = _create_col(s, name, "f4", width, chunk=rows, checksum=True, units=unit, long_name=what)
                    ds.dims[0].attach_scale(step)
                    ds.dims[1].attach_scale(scale)
                p = probes.create_group(block)
                pstep = _create_col(
                    p,
                    "step",
                    "i8",
                    checksum=True,
                    units="1",
                    long_name="training step of the re-measurement; the key column",
                )
                pstep.make_scale("step")
                # netCDF readers (xarray) need a scale on every axis: probe and row grow with the data
                probe = _create_col(p, "probe", "i4", chunk=64, checksum=True, units="1", long_name="probe index")
                probe.make_scale("probe")
                row = _create_col(
                    p, "row", "i8", chunk=256, checksum=True, units="1", long_name="row of y: measurement * P + probe"
                )
                row.make_scale("row")
                pin = _create_scale(p, "input", np.arange(n_in, dtype=np.int32), "1", "system input channel")
                pout = _create_scale(p, "output", np.arange(n_out, dtype=np.int32), "1", "system output channel")
                px = _create_col(
                    p,
                    "x",
                    "f4",
                    n_in,
                    chunk=64,
                    checksum=True,
                    units=drive,
                    long_name="fixed probe drives [probe, input]",
                )
                py = _create_col(
                    p,
                    "y",
                    "f4",
                    n_out,
                    chunk=256,
                    checksum=True,
                    units=out,
                    long_name="probe outputs [measurement * P + probe, output]",
                )
                for ds, scales in ((px, (probe, pin)), (py, (row, pout))):
                    for axis, scale in enumerate(scales):
                        ds.dims[axis].attach_scale(scale)
                _create_col(
                    p, "time", "f8", checksum=True, units=TIME_UNITS, long_name="time of the re-measurement (UTC)"
                ).dims[0].attach_scale(pstep)

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
        m = f["metrics"]
        self._metric_names = json.loads(_attr_str(m.attrs["columns"]))
        self._metric_cols = [m[_column_name(n)] for n in self._metric_names]
        for ds in self._metric_cols + [m["logged"], m["time"], m["segment"], m["epoch"]]:
            if ds.chunks is None or ds.maxshape[0] is not None:
                raise TypeError(f"dataset {ds.name!r} is not an extendable chunked column")
        self._metrics = _Rows(self._metric_cols + [m["logged"], m["time"], m["segment"], m["epoch"]])
        self._extra = _TextLog(f["late_metrics"])
        self._extra_seen = {k for _, _, r in _read_text_log(f["late_metrics"]) for k in r.get("values", {})}
        ck = f["checkpoints"]
        self._ckpt = _TextLog(ck["manifest"])
        self._ckpt_data = ck["data"]
        self._events = _TextLog(f["events"])
        self._confusion = _TextLog(f["confusion"])
        self._summary = _TextLog(f["summary"])
        self._system_updates = _TextLog(f["systems/updates"])
        self._goodness = {b: _Rows([g["value"], g["positive"], g["epoch"]]) for b, g in f["goodness"].items()}
        self._samples: dict[str, dict[str, Any]] = {}
        for b, g in f["samples"].items():
            rows = _Rows([g["x"], g["y"], g["step"]])
            n = rows.committed()
            self._samples[b] = {
                "rows": rows,
                "dims": (g["x"].shape[1], g["y"].shape[1]),
                "buf": [],
                "buffered": 0,
                "next_step": int(g["step"][n - 1]) + 1 if n else 0,
                "full_reported": False,
            }
        self._probes: dict[str, dict[str, Any]] = {}
        for b, g in f["probes"].items():
            n_probe = g["x"].shape[0]
            self._probes[b] = {
                "g": g,
                "n": n_probe,
                "buf": [],
                "rows": _Rows([g["y"], g["row"], g["time"], g["step"]], [max(n_probe, 1), max(n_probe, 1), 1, 1]),
            }
        n = self._metrics.committed()
        self._last_epoch = int(m["epoch"][n - 1]) if n else None

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
            now = time.time()
            row = [np.asarray([values.get(n, math.nan)], dtype=np.float64) for n in self._metric_names]
            logged = np.zeros((1, max(len(self._metric_names), 1)), dtype=np.uint8)
            logged[0, : len(self._metric_names)] = [n in values for n in self._metric_names]
            known = set(self._metric_names)
            extras = {k: v for k, v in values.items() if k not in known}
            n = self._metrics.committed()
            if extras:
                self._extra.append(
                    {
                        "row": n,
                        "epoch": epoch,
                        "segment": self._segment,
                        "values": {k: (v if math.isfinite(v) else repr(v)) for k, v in extras.items()},
                    },
                    time=now,
                    epoch=epoch,
                    kind="values",
                )
            self._metrics.stage(
                row
                + [
                    logged,
                    np.asarray([now]),
                    np.asarray([self._segment], dtype=np.int32),
                    np.asarray([epoch], dtype=np.int64),
                ],
                1,
            )
            self._epoch_flush(self._metrics)
            self._last_epoch = epoch
            new = sorted(set(extras) - self._extra_seen)
            self._extra_seen.update(new)
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
            self._summary.append(record, time=time.time(), epoch=_or_minus1(self._last_epoch), kind="summary")
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
        epoch = _nonneg_int(epoch, "epoch")
        final = checks.boolean("final", final)
        if every is not None:
            every = checks.integer("every", every, low=1)
        if final or (every is not None and epoch % every == 0):
            return True
        if self.checkpoint_seconds is None:
            return False
        return time.monotonic() - self._last_checkpoint_time >= self.checkpoint_seconds

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
        if not isinstance(model_state, Mapping):
            raise TypeError(f"model_state must be a state dict (mapping), got {type(model_state).__name__}")
        packer = _Packer()
        trees = {
            "model": packer.pack(model_state, "model_state"),
            "optim": packer.pack(optim_state, "optim_state"),
            "rng": packer.pack(rng_state, "rng_state"),
            "extra": packer.pack(extra, "extra"),
        }
        raw = b"".join(packer.chunks)
        with self._lock:
            self._check_open("checkpoint")
            now = time.time()
            offset = _append_bytes(self._ckpt_data, raw)
            self._epoch_flush()  # the bytes reach the file before the manifest that points to them
            record = {
                "epoch": epoch,
                "time": now,
                "segment": self._segment,
                "data_offset": offset,
                "data_length": len(raw),
                "crc32": zlib.crc32(raw),
                "byteorder": sys.byteorder,
                "arrays": packer.table,
                **trees,
            }
            self._ckpt.append(record, time=now, epoch=epoch, kind="checkpoint")
            self._sync()
            self._last_checkpoint_time = time.monotonic()

    # ------------------------------------------------------- samples/probes
    def _sample_state(self, block: Any, what: str) -> tuple[str, dict[str, Any]]:
        b = _block_name(block)
        if b not in self._samples:
            known = sorted(self._samples)
            raise ValueError(
                f"{what}: block {b!r} has no sample/probe datasets in this run file; they are created "
                f"for the blocks given as systems= with spec n_inputs/n_outputs: {known}"
            )
        return b, self._samples[b]

    @staticmethod
    def _as_2d(a: Any, width: int, what: str) -> np.ndarray:
        arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        if arr.ndim != 2 or arr.shape[1] != width:
            raise ValueError(f"{what} must have shape [batch, {width}], got {tuple(arr.shape)}")
        return arr.astype(np.float32, copy=False)

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
            b, st = self._sample_state(block, "log_samples")
            n_in, n_out = st["dims"]
            if (
                isinstance(x, torch.Tensor)
                and isinstance(y, torch.Tensor)
                and x.ndim == 2
                and y.ndim == 2
                and x.shape[0] == y.shape[0]
            ):
                # pick the rows first: only those are copied off the device and converted
                pick = _spaced_tensor(x.shape[0], self.samples_per_call)
                x, y = x.detach()[pick.to(x.device)], y.detach()[pick.to(y.device)]
            xa = self._as_2d(x, n_in, f"log_samples({b!r}) x")
            ya = self._as_2d(y, n_out, f"log_samples({b!r}) y")
            if xa.shape[0] != ya.shape[0]:
                raise ValueError(f"log_samples({b!r}): x has {xa.shape[0]} rows but y has {ya.shape[0]}")
            s = st["next_step"] if step is None else _nonneg_int(step, "step")
            st["next_step"] = s + 1
            k = min(self.samples_per_call, xa.shape[0])
            room = self.max_samples - st["rows"].committed() - st["buffered"]
            if room < k:
                k = max(room, 0)
                if not st["full_reported"]:
                    st["full_reported"] = True
                    self.event("samples_full", {"block": b, "max_samples": self.max_samples})
            if k == 0:
                return
            if k == xa.shape[0]:  # already picked: one copy (the caller may reuse its buffers)
                kept = (np.array(xa, dtype=np.float32), np.array(ya, dtype=np.float32))
            else:
                idx = _spaced(xa.shape[0], k)
                kept = (xa[idx], ya[idx])
            st["buf"].append((*kept, np.full(len(kept[0]), s, dtype=np.int64)))
            st["buffered"] += len(kept[0])
            if st["buffered"] >= _SAMPLE_BUFFER_ROWS:  # a very long epoch: bound the memory
                self._epoch_flush()

    def _epoch_flush(self, *staged: _Rows) -> None:
        """Write the buffered samples and probe measurements with ``staged`` records, commit them all.

        Data columns first, one file flush, then the key columns: a killed writer leaves either a whole
        epoch (metrics, samples, probes) or none of it.
        """
        pending = list(staged)
        for st in self._samples.values():
            if st["buffered"]:
                st["rows"].stage([np.concatenate([t[i] for t in st["buf"]]) for i in range(3)], st["buffered"])
                pending.append(st["rows"])
                st["buf"], st["buffered"] = [], 0
        for pr in self._probes.values():
            if pr["buf"]:
                k, n = len(pr["buf"]), pr["n"]
                first = pr["rows"].committed()
                rows = np.arange(first * n, (first + k) * n, dtype=np.int64)
                pr["rows"].stage(
                    [
                        np.concatenate([t[0] for t in pr["buf"]]),
                        rows,
                        np.asarray([t[1] for t in pr["buf"]]),
                        np.asarray([t[2] for t in pr["buf"]], dtype=np.int64),
                    ],
                    k,
                )
                pending.append(pr["rows"])
                pr["buf"] = []
        self._f.flush()
        for r in pending:
            r.commit()

    def set_probes(self, block: str | int, x: Any) -> None:
        """Store the fixed probe inputs ``x [P, n_in]`` of a block (once per run file).

        Calling it again with the same inputs (e.g. after a resume) is a no-op;
        different inputs are refused, since drift is only meaningful on fixed probes.
        """
        with self._lock:
            self._check_open("set_probes")
            b, st = self._sample_state(block, "set_probes")
            xa = self._as_2d(x, st["dims"][0], f"set_probes({b!r}) x")
            if xa.shape[0] == 0:
                raise ValueError(f"set_probes({b!r}): x has no rows")
            pr = self._probes[b]
            if pr["n"]:
                if pr["n"] == xa.shape[0] and np.array_equal(pr["g"]["x"][:], xa):
                    return
                raise ValueError(
                    f"set_probes({b!r}): this run already has {pr['n']} different probe inputs; "
                    f"probes are fixed for the whole run"
                )
            for ds, values in ((pr["g"]["probe"], np.arange(xa.shape[0], dtype=np.int32)), (pr["g"]["x"], xa)):
                ds.resize((xa.shape[0],) + ds.shape[1:])
                ds[:] = values
                ds.flush()
            pr["n"] = xa.shape[0]
            pr["rows"].div[0] = pr["rows"].div[1] = xa.shape[0]
            pr["rows"].recount()
            self._f.flush()

    def log_probe(self, block: str | int, step: int, y: Any) -> None:
        """Append one re-measurement ``y [P, n_out]`` of the block's probes at training ``step``.

        It reaches the disk with the next epoch flush (:meth:`log_epoch`, :meth:`checkpoint`, :meth:`flush`).
        """
        step = _nonneg_int(step, "step")
        with self._lock:
            self._check_open("log_probe")
            b, st = self._sample_state(block, "log_probe")
            pr = self._probes[b]
            if not pr["n"]:
                raise ValueError(f"log_probe({b!r}): call set_probes({b!r}, x) first")
            ya = self._as_2d(y, st["dims"][1], f"log_probe({b!r}) y")
            if ya.shape[0] != pr["n"]:
                raise ValueError(f"log_probe({b!r}): y has {ya.shape[0]} rows, the block has {pr['n']} probes")
            pr["buf"].append((ya.copy(), time.time(), step))

    # ------------------------------------------------ goodness and confusion
    def log_goodness(self, block: str | int, g_pos: Any, g_neg: Any, epoch: int | None = None) -> None:
        """Goodness values of positive and negative data of one block (for their distributions).

        Up to ``goodness_per_call`` values of each kind are kept (evenly spaced).
        ``epoch`` defaults to the last logged epoch.
        """
        with self._lock:
            self._check_open("log_goodness")
            b = _block_name(block)
            if b not in self._goodness:
                raise ValueError(f"log_goodness: block {b!r} is not in this run file; blocks: {sorted(self._goodness)}")
            e = self._last_epoch if epoch is None else _nonneg_int(epoch, "epoch")
            e = _or_minus1(e)
            parts = []
            for values, positive in ((g_pos, 1), (g_neg, 0)):
                arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
                arr = arr.astype(np.float32).reshape(-1)
                if arr.size > self.goodness_per_call:
                    arr = arr[np.linspace(0, arr.size - 1, self.goodness_per_call).round().astype(np.int64)]
                parts.append((arr, np.full(arr.size, positive, dtype=np.int8)))
            v = np.concatenate([p[0] for p in parts])
            if v.size == 0:
                return
            pos = np.concatenate([p[1] for p in parts])
            self._goodness[b].append([v, pos, np.full(v.size, e, dtype=np.int64)], v.size)
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
            self._confusion.append(
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
                self._system_updates.append(
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
            self._events.append(record, time=time.time(), epoch=_or_minus1(self._last_epoch), kind=kind)
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
                self._events.append(
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
            _set_root_status(self.path, status, end_time=_iso_now())

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
    ) -> "RunWriter":
        """Reopen a run file to append to it (after a crash, Ctrl-C or a finished run).

        The status goes back to ``running`` and a ``resumed`` event records the
        previous status and the last checkpoint. Refused while the writer that
        left the file open is still alive on this host; a writer on another
        host cannot be checked, so then ``force=True`` is needed. Files of
        run-format version 1 are read, not appended to.
        """
        path = Path(path)
        durable = checks.boolean("durable", durable)
        force = checks.boolean("force", force)
        checkpoint_seconds = _check_checkpoint_seconds(checkpoint_seconds)
        fsync_seconds = checks.nonnegative("fsync_seconds", fsync_seconds)
        run = _load_for_repair(path, force)
        if run.format_version < FORMAT_VERSION:
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
        with _h5file(path, "r+", libver=LIBVER) as f:
            f.attrs.modify("status", np.bytes_(b"running"))
            f.attrs.modify("end_time", np.bytes_(b""))
            f.attrs.modify("writer_host", np.bytes_(socket.gethostname().encode()[:255]))
            f.attrs.modify("writer_pid", np.int64(os.getpid()))
        self = cls.__new__(cls)
        self.path = path
        self.durable = durable
        self.checkpoint_seconds = checkpoint_seconds
        self.fsync_seconds = fsync_seconds
        options = json.loads(run.attrs.get("writer_options", "{}"))
        self.samples_per_call = int(options.get("samples_per_call", 16))
        self.max_samples = int(options.get("max_samples", 100_000))
        self.goodness_per_call = int(options.get("goodness_per_call", 2000))
        self._open_swmr(segment=segment)
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


def _json_scalar(g: h5py.Group, name: str, text: str, long_name: str) -> None:
    """A scalar JSON string. Variable-length strings take no filter, so its CRC-32 goes in an attribute
    (attributes sit in checksummed object headers) and the reader checks it."""
    ds = g.create_dataset(name, data=text, dtype=h5py.string_dtype())
    _describe(ds, "", long_name)
    ds.attrs["crc32"] = np.int64(zlib.crc32(text.encode("utf-8")))


@functools.lru_cache(maxsize=64)
def _spaced_cached(n: int, k: int) -> np.ndarray:
    idx = np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))
    idx.setflags(write=False)
    return idx


def _spaced(n: int, k: int) -> np.ndarray:
    """``k`` row indices evenly spaced through ``n`` rows (cached: the query path calls it every time)."""
    return _spaced_cached(int(n), int(k))


@functools.lru_cache(maxsize=64)
def _spaced_tensor(n: int, k: int) -> torch.Tensor:
    return torch.from_numpy(_spaced(n, k).copy())


def _or_minus1(epoch: int | None) -> int:
    return -1 if epoch is None else epoch


def _check_checkpoint_seconds(value: Any) -> float | None:
    return None if value is None else checks.positive("checkpoint_seconds", value)


def _describe_one(block: str, desc: Any) -> dict[str, Any]:
    if hasattr(desc, "describe") and callable(desc.describe):
        desc = desc.describe()
    if not isinstance(desc, Mapping):
        raise TypeError(f"systems[{block!r}] must be a describe() dict or a PhysicalSystem, got {type(desc).__name__}")
    return _loose_json(desc)


def _describe_systems(systems: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if systems is not None and not isinstance(systems, Mapping):
        raise TypeError(
            f"systems must be a dict of block -> describe() dict or PhysicalSystem, got {type(systems).__name__}"
        )
    return {_block_name(block): _describe_one(_block_name(block), desc) for block, desc in (systems or {}).items()}


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
