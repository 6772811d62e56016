"""The run-file writer: :class:`RunWriter` creates the on-disk layout, then appends under SWMR."""

from __future__ import annotations

import datetime as _dt
import json
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

from ._common import (_DATA_CHUNK, _HOST_DTYPE, _STATUS_DTYPE, _TIME_DTYPE, FORMAT_NAME, FORMAT_VERSION,
                      RunFileError, _attr_str, _block_name, _check_metric_name, _column_name, _git_commit,
                      _h5file, _iso_now, _nonneg_int, _to_float, _writer_alive, default_metric_names)
from .codec import _loose_json, _Packer, _strict_json
from .columns import _append_bytes, _create_col, _create_json_log, _JsonLog, _read_json_log, _Rows
from .recovery import _clear_superblock_flags, _load_for_repair, _superblock_flags


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
        metric_names: metric columns to pre-create (default:
            :func:`default_metric_names`). Names logged later that are not
            among them are kept too, in ``/metrics/_extra``.
        dataset: a description of the data (``Dataset.describe()``), stored as JSON.
        samples_per_call: at most this many rows of each :meth:`log_samples`
            call are kept (evenly spaced through the batch).
        max_samples: at most this many sample rows per block in the whole run.
        goodness_per_call: at most this many positive and as many negative
            goodness values per :meth:`log_goodness` call.
        overwrite: replace an existing file (default: refuse, never lose data).
        durable: ``fsync`` after every epoch and checkpoint, so that a power
            cut (not just a killed process) keeps them too.

    Use it as a context manager: leaving the block normally closes the run as
    ``completed``, Ctrl-C as ``interrupted``, any other exception as
    ``failed`` (the exception is recorded as an event). ``writer.event`` has
    the signature of ``PhysicalSystem.event_hook``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        config: Mapping[str, Any],
        seed: int,
        systems: Mapping[str, Any] | None = None,
        metric_names: Sequence[str] | None = None,
        dataset: Mapping[str, Any] | None = None,
        samples_per_call: int = 16,
        max_samples: int = 100_000,
        goodness_per_call: int = 2000,
        overwrite: bool = False,
        durable: bool = True,
    ):
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"run file {str(path)!r} already exists; continue it with RunWriter.resume(path), "
                                  f"or pass overwrite=True to replace it")
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        for name, v, lo in (("samples_per_call", samples_per_call, 1), ("max_samples", max_samples, 0),
                            ("goodness_per_call", goodness_per_call, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        config_json = json.dumps(_strict_json(config, "config"), indent=1)
        dataset_json = json.dumps(_loose_json(dataset), indent=1) if dataset is not None else None
        described: dict[str, dict[str, Any]] = {}
        for block, desc in (systems or {}).items():
            block = _block_name(block)
            if hasattr(desc, "describe") and callable(desc.describe):
                desc = desc.describe()
            if not isinstance(desc, Mapping):
                raise TypeError(f"systems[{block!r}] must be a describe() dict or a PhysicalSystem, "
                                f"got {type(desc).__name__}")
            described[block] = _loose_json(desc)
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
        path.parent.mkdir(parents=True, exist_ok=True)
        start_unix = time.time()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
        try:
            with h5py.File(tmp, "w", libver="latest") as f:
                options = {"samples_per_call": samples_per_call, "max_samples": max_samples,
                           "goodness_per_call": goodness_per_call}
                self._create_layout(f, config_json, dataset_json, described, names, int(seed), start_unix, options)
            os.replace(tmp, path)  # the file appears complete, or not at all
        finally:
            if tmp.exists():
                tmp.unlink()
        self._open_swmr(segment=0)
        self.event("run_started", {"pid": os.getpid(), "host": socket.gethostname(), "path": str(path)})

    # ------------------------------------------------------------- creation
    @staticmethod
    def _create_layout(f: h5py.File, config_json: str, dataset_json: str | None,
                       systems: dict[str, dict[str, Any]], names: list[str], seed: int, start_unix: float,
                       options: dict[str, int]) -> None:
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
        a["versions"] = json.dumps({"python": sys.version.split()[0], "torch": torch.__version__,
                                    "numpy": np.__version__, "h5py": h5py.version.version,
                                    "hdf5": h5py.version.hdf5_version})
        # fixed-size so that close()/resume() can update them in place
        a.create("status", np.bytes_(b"running"), dtype=_STATUS_DTYPE)
        a.create("end_time", np.bytes_(b""), dtype=_TIME_DTYPE)
        a.create("writer_host", np.bytes_(socket.gethostname().encode()[:255]), dtype=_HOST_DTYPE)
        a.create("writer_pid", np.int64(os.getpid()))

        f.create_dataset("config", data=config_json, dtype=h5py.string_dtype())
        if dataset_json is not None:
            f.create_dataset("dataset", data=dataset_json, dtype=h5py.string_dtype())

        sg = f.create_group("systems")
        for block, desc in systems.items():
            g = sg.create_group(block)
            g.create_dataset("describe", data=json.dumps(desc, indent=1), dtype=h5py.string_dtype())
            if "class" in desc:
                g.attrs["class"] = str(desc["class"])
            spec = desc.get("spec", {}) if isinstance(desc.get("spec"), Mapping) else {}
            for key in ("n_inputs", "n_outputs", "low", "high", "levels", "units", "name"):
                if key in spec and spec[key] is not None:
                    g.attrs[key] = spec[key]

        mg = f.create_group("metrics")
        mg.attrs["columns"] = json.dumps(names)
        _create_col(mg, "epoch", "i8")
        _create_col(mg, "time", "f8")
        _create_col(mg, "segment", "i4")
        _create_col(mg, "logged", "u1", max(len(names), 1))  # 1 where the row's value was given (even NaN)
        for name in names:
            col = _column_name(name)
            if col in mg:
                raise ValueError(f"metric names {name!r} and another collide in the file (as {col!r})")
            ds = _create_col(mg, col, "f8", fillvalue=np.nan)
            ds.attrs["name"] = name
        _create_json_log(mg.create_group("_extra"))

        cg = f.create_group("checkpoints")
        _create_json_log(cg, ("epoch", "i8"), ("time", "f8"))
        _create_col(cg, "data", "u1", chunk=_DATA_CHUNK)

        _create_json_log(f.create_group("events"), ("time", "f8"))
        _create_json_log(f.create_group("confusion"), ("epoch", "i8"))
        _create_json_log(f.create_group("summary"), ("time", "f8"))

        samples, probes, goodness = f.create_group("samples"), f.create_group("probes"), f.create_group("goodness")
        for block, desc in systems.items():
            spec = desc.get("spec", {}) if isinstance(desc.get("spec"), Mapping) else {}
            n_in, n_out = spec.get("n_inputs"), spec.get("n_outputs")
            gg = goodness.create_group(block)
            _create_col(gg, "value", "f4", chunk=4096)
            _create_col(gg, "positive", "i1", chunk=4096)
            _create_col(gg, "epoch", "i8", chunk=4096)
            if isinstance(n_in, int) and isinstance(n_out, int) and n_in > 0 and n_out > 0:
                rows = int(min(1024, max(16, (1 << 16) // (4 * max(n_in, n_out)))))
                s = samples.create_group(block)
                s.attrs["chunk_rows"] = rows
                for name, width in (("x", n_in), ("y", n_out)):
                    _create_col(s, name, "f4", width, chunk=rows, compression="gzip", compression_opts=4,
                                shuffle=True)
                _create_col(s, "step", "i8", chunk=rows)
                p = probes.create_group(block)
                _create_col(p, "x", "f4", n_in, chunk=64)
                _create_col(p, "y", "f4", n_out, chunk=256)
                _create_col(p, "time", "f8")
                _create_col(p, "step", "i8")

    # ----------------------------------------------------------- open/SWMR
    def _open_swmr(self, segment: int) -> None:
        self._lock = threading.RLock()
        f = _h5file(self.path, "r+", libver="latest")
        try:
            self._bind(f)
            f.swmr_mode = True
        except BaseException:
            f.close()
            raise
        self._f = f
        self._segment = segment
        self._closed = False
        self._fd = os.open(self.path, os.O_RDONLY) if self.durable else None

    def _bind(self, f: h5py.File) -> None:
        """Open handles on every dataset (SWMR keeps them valid) and read back the running state."""
        self._start_unix = float(f.attrs["start_time_unix"])
        self._blocks = json.loads(_attr_str(f.attrs["blocks"]))
        m = f["metrics"]
        self._metric_names = json.loads(_attr_str(m.attrs["columns"]))
        self._metric_cols = [m[_column_name(n)] for n in self._metric_names]
        self._metrics = _Rows(self._metric_cols + [m["logged"], m["time"], m["segment"], m["epoch"]])
        self._extra = _JsonLog(m["_extra"])
        extra_records, _ = _read_json_log(m["_extra"])
        self._extra_seen = {k for r in extra_records for k in r.get("values", {})}
        ck = f["checkpoints"]
        self._ckpt = _JsonLog(ck, ("epoch", "time"))
        self._ckpt_data = ck["data"]
        self._events = _JsonLog(f["events"], ("time",))
        self._confusion = _JsonLog(f["confusion"], ("epoch",))
        self._summary = _JsonLog(f["summary"], ("time",))
        self._goodness = {b: _Rows([g["value"], g["positive"], g["epoch"]]) for b, g in f["goodness"].items()}
        self._samples: dict[str, dict[str, Any]] = {}
        for b, g in f["samples"].items():
            rows = _Rows([g["x"], g["y"], g["step"]])
            n = rows.committed()
            self._samples[b] = {"rows": rows, "dims": (g["x"].shape[1], g["y"].shape[1]),
                                "chunk": int(g.attrs["chunk_rows"]), "buf": [], "buffered": 0,
                                "next_step": int(g["step"][n - 1]) + 1 if n else 0, "full_reported": False}
        self._probes: dict[str, dict[str, Any]] = {}
        for b, g in f["probes"].items():
            n_probe = g["x"].shape[0]
            self._probes[b] = {"g": g, "n": n_probe,
                               "rows": _Rows([g["y"], g["time"], g["step"]], [max(n_probe, 1), 1, 1])}
        n = self._metrics.committed()
        self._last_epoch = int(m["epoch"][n - 1]) if n else None

    # ----------------------------------------------------------- properties
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def metric_names(self) -> list[str]:
        """Metric names with their own column (others go to ``/metrics/_extra``)."""
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

    def _sync(self) -> None:
        self._f.flush()
        if self._fd is not None:
            os.fsync(self._fd)

    # ---------------------------------------------------------------- epoch
    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Append one row of per-epoch metrics and flush: after this the epoch survives any crash.

        ``metrics`` maps names to numbers (``None``/missing: NaN). A key
        ``"epoch"`` is accepted when it equals ``epoch``. Logging an epoch
        again (e.g. after a resume) appends a new row; readers use the latest.
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
            logged[0, :len(self._metric_names)] = [n in values for n in self._metric_names]
            known = set(self._metric_names)
            extras = {k: v for k, v in values.items() if k not in known}
            n = self._metrics.committed()
            if extras:
                self._extra.append({"row": n, "epoch": epoch,
                                    "values": {k: (v if math.isfinite(v) else repr(v)) for k, v in extras.items()}})
            self._metrics.append(row + [logged, np.asarray([now]), np.asarray([self._segment], dtype=np.int32),
                                        np.asarray([epoch], dtype=np.int64)], 1)
            self._last_epoch = epoch
            new = sorted(set(extras) - self._extra_seen)
            self._extra_seen.update(new)
            self._sync()
        if new:
            self.event("late_metric", {"names": new, "note": "stored in /metrics/_extra; list them in "
                                                             "metric_names= to give them their own column"})

    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Final numbers of the run (e.g. test accuracy after training); the last call wins."""
        if not isinstance(values, Mapping):
            raise TypeError(f"values must be a dict, got {type(values).__name__}")
        record = {str(k): _loose_json(v) for k, v in values.items()}
        with self._lock:
            self._check_open("log_summary")
            self._summary.append(record, time.time())
            self._sync()

    # ----------------------------------------------------------- checkpoint
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
        anything else the trainer needs back (e.g. its history). All come
        back bit for bit from :func:`last_checkpoint`.
        """
        epoch = _nonneg_int(epoch, "epoch")
        if not isinstance(model_state, Mapping):
            raise TypeError(f"model_state must be a state dict (mapping), got {type(model_state).__name__}")
        packer = _Packer()
        trees = {"model": packer.pack(model_state, "model_state"), "optim": packer.pack(optim_state, "optim_state"),
                 "rng": packer.pack(rng_state, "rng_state"), "extra": packer.pack(extra, "extra")}
        raw = b"".join(packer.chunks)
        with self._lock:
            self._check_open("checkpoint")
            now = time.time()
            offset = _append_bytes(self._ckpt_data, raw)
            record = {"epoch": epoch, "time": now, "segment": self._segment, "data_offset": offset,
                      "data_length": len(raw), "crc32": zlib.crc32(raw), "byteorder": sys.byteorder,
                      "arrays": packer.table, **trees}
            self._ckpt.append(record, epoch, now)
            self._sync()

    # ------------------------------------------------------- samples/probes
    def _sample_state(self, block: Any, what: str) -> tuple[str, dict[str, Any]]:
        b = _block_name(block)
        if b not in self._samples:
            known = sorted(self._samples)
            raise ValueError(f"{what}: block {b!r} has no sample/probe datasets in this run file; they are created "
                             f"for the blocks given as systems= with spec n_inputs/n_outputs: {known}")
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
        batch, up to ``max_samples`` rows per block. Rows go to disk in whole
        compressed chunks (and at :meth:`flush`/:meth:`close`): rewriting a
        partly filled compressed chunk would leak file space under SWMR. A
        crash therefore loses at most the last ``chunk_rows - 1`` sample rows.
        """
        with self._lock:
            self._check_open("log_samples")
            b, st = self._sample_state(block, "log_samples")
            n_in, n_out = st["dims"]
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
            idx = np.unique(np.linspace(0, xa.shape[0] - 1, k).round().astype(np.int64))
            st["buf"].append((xa[idx], ya[idx], np.full(len(idx), s, dtype=np.int64)))
            st["buffered"] += len(idx)
            self._write_samples(b, final=False)

    def _write_samples(self, b: str, final: bool) -> None:
        st = self._samples[b]
        if not st["buffered"]:
            return
        n = st["rows"].committed()
        chunk = st["chunk"]
        to_boundary = chunk - n % chunk
        if final:
            k = st["buffered"]
        elif st["buffered"] >= to_boundary:
            k = to_boundary + (st["buffered"] - to_boundary) // chunk * chunk  # whole chunks only
        else:
            return
        xs = np.concatenate([t[0] for t in st["buf"]])
        ys = np.concatenate([t[1] for t in st["buf"]])
        ss = np.concatenate([t[2] for t in st["buf"]])
        st["rows"].append([xs[:k], ys[:k], ss[:k]], k)
        st["buf"] = [(xs[k:], ys[k:], ss[k:])] if k < len(xs) else []
        st["buffered"] = len(xs) - k

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
                raise ValueError(f"set_probes({b!r}): this run already has {pr['n']} different probe inputs; "
                                 f"probes are fixed for the whole run")
            ds = pr["g"]["x"]
            ds.resize((xa.shape[0], xa.shape[1]))
            ds[:] = xa
            ds.flush()
            pr["n"] = xa.shape[0]
            pr["rows"].div[0] = xa.shape[0]
            self._f.flush()

    def log_probe(self, block: str | int, step: int, y: Any) -> None:
        """Append one re-measurement ``y [P, n_out]`` of the block's probes at training ``step``."""
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
            pr["rows"].append([ya, np.asarray([time.time()]), np.asarray([step], dtype=np.int64)], 1)
            self._f.flush()

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
            e = -1 if e is None else e
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

    def log_confusion(self, matrix: Any, labels: Sequence[Any] | None = None, *, epoch: int | None = None,
                      split: str = "test") -> None:
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
            e = self._last_epoch if epoch is None else _nonneg_int(epoch, "epoch")
            e = -1 if e is None else e
            self._confusion.append({"epoch": e, "split": str(split), "labels": labels,
                                    "matrix": m.astype(np.int64).tolist()}, e)
            self._sync()

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
                warnings.warn(f"run file {str(self.path)!r} is closed; event {kind!r} {record['fields']} not stored",
                              RuntimeWarning, stacklevel=2)
                return
            self._events.append(record, time.time())
            self._f.flush()

    def flush(self) -> None:
        """Write everything (including buffered samples) to disk now."""
        with self._lock:
            self._check_open("flush")
            for b in self._samples:
                self._write_samples(b, final=True)
            self._sync()

    # ---------------------------------------------------------------- close
    def close(self, status: str = "completed") -> None:
        """End the run with ``status`` (completed, interrupted or failed). Idempotent."""
        if status not in ("completed", "interrupted", "failed"):
            raise ValueError(f"status must be 'completed', 'interrupted' or 'failed', got {status!r}")
        with self._lock:
            if self._closed:
                return
            try:
                for b in self._samples:
                    self._write_samples(b, final=True)
                self._events.append({"kind": "run_closed", "fields": {"status": status}}, time.time())
                self._sync()
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
                self.event("interrupted", {"by": "KeyboardInterrupt"})
                self.close("interrupted")
            else:
                self.event("exception", {"type": exc_type.__name__, "message": str(exc),
                                         "traceback": "".join(traceback.format_exception(exc_type, exc, tb))[-4000:]})
                self.close("failed")
        except Exception as close_exc:  # never hide the original exception
            warnings.warn(f"could not close run file {str(self.path)!r} cleanly: {close_exc}", RuntimeWarning)
        return False

    # --------------------------------------------------------------- resume
    @classmethod
    def resume(cls, path: str | os.PathLike, *, durable: bool = True, force: bool = False) -> "RunWriter":
        """Reopen a run file to append to it (after a crash, Ctrl-C or a finished run).

        The status goes back to ``running`` and a ``resumed`` event records the
        previous status and the last checkpoint. Refused while the writer that
        left the file open is still alive on this host; a writer on another
        host cannot be checked, so then ``force=True`` is needed.
        """
        path = Path(path)
        run = _load_for_repair(path, force)
        previous = run.status
        if _superblock_flags(path):
            alive = _writer_alive(run.attrs)
            if alive is True:
                who = ("a RunWriter in this process; close it first" if int(run.attrs.get("writer_pid", -1)) ==
                       os.getpid() else f"process {run.attrs.get('writer_pid')} on this host; stop it first")
                raise RunFileError(path, f"is still open for writing by {who}")
            if alive is None and not force:
                raise RunFileError(path, f"was left open by a writer on host "
                                         f"{_attr_str(run.attrs.get('writer_host'))!r}, which cannot be checked from "
                                         f"here; if it is surely stopped, resume with force=True")
            _clear_superblock_flags(path)
        segment = max(1, sum(1 for e in run.events if e["kind"] in ("run_started", "resumed")))
        with _h5file(path, "r+", libver="latest") as f:
            f.attrs.modify("status", np.bytes_(b"running"))
            f.attrs.modify("end_time", np.bytes_(b""))
            f.attrs.modify("writer_host", np.bytes_(socket.gethostname().encode()[:255]))
            f.attrs.modify("writer_pid", np.int64(os.getpid()))
        self = cls.__new__(cls)
        self.path = path
        self.durable = durable
        options = json.loads(run.attrs.get("writer_options", "{}"))
        self.samples_per_call = int(options.get("samples_per_call", 16))
        self.max_samples = int(options.get("max_samples", 100_000))
        self.goodness_per_call = int(options.get("goodness_per_call", 2000))
        self._open_swmr(segment=segment)
        self.event("resumed", {"previous_status": previous, "last_checkpoint": run.checkpoints[-1]
                               if run.checkpoints else None, "last_epoch": self._last_epoch, "pid": os.getpid(),
                               "host": socket.gethostname()})
        return self


def _set_root_status(path: Path, status: str, end_time: str = "") -> None:
    """Update the fixed-size root attributes in place, in a short non-SWMR session."""
    last: Exception | None = None
    for attempt in range(5):
        try:
            with _h5file(path, "r+", libver="latest") as f:
                f.attrs.modify("status", np.bytes_(status.encode()))
                f.attrs.modify("end_time", np.bytes_(end_time.encode()))
            return
        except OSError as exc:  # e.g. another program holds an HDF5 lock
            last = exc
            time.sleep(0.05 * (attempt + 1))
    warnings.warn(f"could not set status={status!r} in {str(path)!r} ({last}); the run_closed event in /events "
                  f"records it", RuntimeWarning)
