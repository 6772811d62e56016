"""The reference reader: :func:`load` gives a :class:`Run`, :func:`last_checkpoint` a
:class:`Checkpoint`; every way a file can be bad becomes a :class:`RunFileError` naming the problem."""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from physnn.core import checks
from physnn.runlog._common import (
    _HDF5_SIGNATURE,
    FORMAT_NAME,
    FORMAT_VERSION,
    NoCheckpointError,
    RunFileError,
    _attr_str,
    _column_name,
    _h5file,
    _LeftOpenError,
    _writer_alive,
)
from physnn.runlog.checkpoints import PARTS, retained_arrays
from physnn.runlog.codec import _unpack
from physnn.runlog.columns import _parse_text_rows, _read_json_log


# ================================================================= the reader
@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint; unpacks as ``epoch, model_state, optim_state, rng_state, config``.

    ``roles``: why the file keeps it (``last``, ``best``, ``kept``; format 3). ``complete`` is False for a
    checkpoint kept as the best by validation only: it has its model, and ``optim_state``, ``rng_state``
    and ``extra`` are None (deploy it; resume from the last one).
    """

    epoch: int
    model_state: dict[str, Any]
    optim_state: Any
    rng_state: Any
    config: dict[str, Any]
    extra: Any = None
    time: float = math.nan
    roles: tuple[str, ...] = ()
    complete: bool = True

    def __iter__(self) -> Iterator[Any]:
        return iter((self.epoch, self.model_state, self.optim_state, self.rng_state, self.config))


class _ReadError(Exception):
    def __init__(self, what: str, exc: BaseException):
        self.what = what
        self.exc = exc
        super().__init__(f"{what}: {exc}")


class _ChecksumError(Exception):
    """A dataset whose chunks fail HDF5's fletcher32 checksum (bit rot, a bad disk, a damaged copy)."""

    def __init__(self, name: str, exc: BaseException | str, check: str = "fletcher32 checksum"):
        self.name = name
        self.check = check
        super().__init__(f"dataset {name!r} fails its {check} ({exc})")


def _arr(ds: h5py.Dataset, sel: Any = ()) -> np.ndarray:
    """``ds[sel]``, with a failed checksum (or any other filter failure) reported with the dataset's name."""
    try:
        return ds[sel]
    except OSError as exc:
        if "filter" in str(exc).lower() or "checksum" in str(exc).lower():
            raise _ChecksumError(ds.name, exc) from None
        raise


def _text_records(ds: h5py.Dataset) -> list[tuple[float, int, str, Any]]:
    """``[(time, epoch, kind, record)]`` of the committed records of a version-2 text log."""
    records, _ = _parse_text_rows(_arr(ds, slice(None)))
    return [(t, e, k, json.loads(raw.decode("ascii"))) for t, e, k, raw in records]


def _check_structure(f: h5py.File, path: Path) -> None:
    """Refuse what physnn never writes and would act on blindly: data stored outside the file.

    An HDF5 dataset can keep its bytes in external raw files named by the file; reading them would read
    (and resuming would try to extend) files anywhere on the reader's disk.
    """
    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.external:
            found.append(f"/{name} -> {[e[0] for e in obj.external][:3]}")

    with _Reading("the file's objects"):
        f.visititems(visit)
    if found:
        raise RunFileError(
            path,
            f"has datasets stored in external files ({'; '.join(found[:3])}); physnn writes "
            f"every byte inside the run file and does not read data from elsewhere",
        )


class _Reading:
    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if (
            exc is not None
            and isinstance(
                exc, (OSError, KeyError, ValueError, TypeError, IndexError, json.JSONDecodeError, UnicodeDecodeError)
            )
            and not isinstance(exc, RunFileError)
        ):
            raise _ReadError(self.what, exc) from exc
        return False


def _has_hdf5_signature(path: Path) -> bool:
    """The HDF5 signature sits at 0, 512, 1024, 2048, ... (after an optional user block)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            offset = 0
            while offset + 8 <= size and offset <= 1 << 24:
                fh.seek(offset)
                if fh.read(8) == _HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError as exc:
        raise RunFileError(path, f"cannot be read: {exc}") from None
    return False


def _open_read(path: Path) -> tuple[h5py.File, bool]:
    """Open a run file read-only, mapping every failure to a RunFileError. Returns (file, live)."""
    if not path.exists():
        raise RunFileError(path, "does not exist")
    if path.is_dir():
        raise RunFileError(path, "is a directory, not a run file")
    if path.stat().st_size == 0:
        raise RunFileError(path, "is empty (0 bytes)")
    if not _has_hdf5_signature(path):
        raise RunFileError(
            path, "is not an HDF5 file (no HDF5 signature); run files are written by physnn.runlog.RunWriter"
        )
    try:
        return _h5file(path, "r"), False
    except OSError as exc:
        first = str(exc)
    if "already open for write" in first or "consistency flags" in first:
        try:
            return _h5file(path, "r", swmr=True), True
        except OSError as exc:
            raise _LeftOpenError(
                path,
                "was left open for writing by a program that does not use SWMR (or was killed "
                "while the file was being set up or closed); if no program is writing it, run "
                f"physnn.runlog.recover(path, force=True) or `h5clear -s` ({exc})",
            ) from None
    if "truncated" in first or "eof" in first.lower():
        stored = re.search(r"stored_eof = (\d+)", first)
        expected = f", its metadata says {int(stored.group(1))}" if stored else ""
        raise RunFileError(
            path, f"is truncated: {path.stat().st_size} bytes on disk{expected} (an incomplete copy or download?)"
        ) from None
    raise RunFileError(path, f"is a damaged HDF5 file that cannot be opened ({first})") from None


def _check_format(f: h5py.File, path: Path) -> int:
    with _Reading("the root group"):
        fmt = f.attrs.get("format")
        top = sorted(f.keys())[:8] if fmt is None else []
        raw = f.attrs.get("format_version")
    if fmt is None:
        raise RunFileError(
            path,
            f"is an HDF5 file but not a physnn run file (its root has no 'format' attribute; top-level objects: {top})",
        )
    fmt = _attr_str(fmt)
    if fmt != FORMAT_NAME:
        raise RunFileError(path, f"has format {fmt!r}, not {FORMAT_NAME!r}")
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise RunFileError(path, f"has an invalid format_version {raw!r}") from None
    if version > FORMAT_VERSION:
        import physnn

        raise RunFileError(
            path,
            f"was written in run-format version {version}; this physnn "
            f"({physnn.__version__}) reads versions up to {FORMAT_VERSION} — upgrade physnn",
        )
    if version < 1:
        raise RunFileError(path, f"has an invalid format_version {version}")
    return version


def _plain_attrs(attrs: h5py.AttributeManager) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if isinstance(v, (bytes, np.bytes_)):
            v = _attr_str(v)
        elif isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def _read_metrics(g: h5py.Group, version: int) -> tuple[dict[str, np.ndarray], list[dict[str, float]], np.ndarray]:
    names = json.loads(_attr_str(g.attrs["columns"]))
    cols = {n: g[_column_name(n)] for n in names}
    n = min(
        [g["epoch"].shape[0], g["time"].shape[0], g["segment"].shape[0], g["logged"].shape[0]]
        + [c.shape[0] for c in cols.values()]
    )
    epochs, times, segs = _arr(g["epoch"], slice(0, n)), _arr(g["time"], slice(0, n)), _arr(g["segment"], slice(0, n))
    logged = _arr(g["logged"], slice(0, n)).astype(bool)
    data = {name: _arr(c, slice(0, n)) for name, c in cols.items()}
    if version >= 2:
        extra_records = [r for *_, r in _text_records(g.file["late_metrics"])]
    else:
        extra_records, _ = _read_json_log(g["_extra"])
    extras: dict[int, dict[str, float]] = {}
    order = list(names)
    for r in extra_records:
        row = r.get("row", n)
        # a record whose metric row never committed (the writer died in between) belongs to no row
        if row < n and r.get("segment", int(segs[row])) == int(segs[row]):
            vals = {k: float(v) for k, v in r["values"].items()}
            extras.setdefault(int(row), {}).update(vals)
            order += [k for k in vals if k not in order]
    latest_segment: dict[int, int] = {}
    for e, s in zip(epochs.tolist(), segs.tolist()):
        latest_segment[e] = max(latest_segment.get(e, s), s)
    merged: dict[int, dict[str, float]] = {}
    for i, (e, s) in enumerate(zip(epochs.tolist(), segs.tolist())):
        if s != latest_segment[e]:
            continue  # superseded by a resumed segment
        row = merged.setdefault(e, {})
        row["time"] = float(times[i])
        for j, name in enumerate(names):
            if logged[i, j]:
                row[name] = float(data[name][i])
        row.update(extras.get(i, {}))
    keys = sorted(merged)
    metrics: dict[str, np.ndarray] = {
        "epoch": np.asarray(keys, dtype=np.int64),
        "time": np.asarray([merged[e]["time"] for e in keys], dtype=np.float64),
    }
    for name in order:
        if any(name in merged[e] for e in keys):  # columns never logged are left out
            metrics[name] = np.asarray([merged[e].get(name, math.nan) for e in keys], dtype=np.float64)
    rows = [{"epoch": e, **{k: v for k, v in merged[e].items() if k != "time"}} for e in keys]
    return metrics, rows, np.asarray([latest_segment[e] for e in keys], dtype=np.int64)


def _derive_status(attrs: Mapping[str, Any], events: list[dict[str, Any]], live: bool) -> str:
    """The status recorded at close; else running while the writer lives, aborted once it is gone."""
    life = [e for e in events if e["kind"] in ("run_started", "resumed", "run_closed", "recovered")]
    if life and life[-1]["kind"] == "run_closed":
        return str(life[-1]["fields"].get("status", attrs.get("status", "completed")))
    if life and life[-1]["kind"] == "recovered":
        return "aborted"
    status = str(attrs.get("status", "running"))
    if status != "running":
        return status
    alive = _writer_alive(attrs)
    if alive is None:  # the writer ran on another host: trust the open-for-writing flag
        return "running" if live else "aborted"
    return "running" if alive else "aborted"


@dataclass
class Run:
    """A run file read back as plain Python/NumPy structures (see :func:`load`).

    Attributes:
        path: the file.
        attrs: root attributes (format, versions, start time, host, seed, status...).
        status: the effective status: the one recorded at close, ``running``
            while the writer is alive, ``aborted`` when it died without closing.
        config, dataset: the JSON records, as dicts.
        systems: each block's latest ``describe()`` (refreshed at close by
            ``RunWriter.close(systems=...)``/``update_systems``);
            ``systems_start``: the ones recorded when the run was created.
        metrics: per-epoch 1-D arrays (``epoch``, ``time`` and one per metric,
            NaN where not logged), one entry per epoch; rows superseded by a
            resume are dropped. ``epoch_rows``: the same as a list of dicts.
        events: ``[{"time", "kind", "fields"}]`` in order.
        checkpoints: the epochs a checkpoint was written for, in order (format 3 keeps only some of them).
        checkpoint_roles: ``[{"epoch", "roles", "parts"}]`` of the checkpoints the file keeps, oldest first:
            ``last`` (complete: what ``--resume`` needs), ``best`` (by validation; the model only unless it
            is also the last or kept), ``kept`` (``keep_checkpoints``). Formats 1 and 2 keep every one.
        probes: ``{block: {"x": [P,n_in], "y": [N,P,n_out], "step": [N], "time": [N]}}``.
        goodness: ``{block: {"epoch", "positive", "value"}}`` (long format).
        confusion: ``[{"epoch", "split", "labels", "matrix"}]``.
        summary: the last :meth:`RunWriter.log_summary` values (``{}`` if none).
        samples: ``{block: {"x", "y", "step"}}``, read on first access.
    """

    path: Path
    attrs: dict[str, Any]
    status: str
    config: dict[str, Any]
    dataset: dict[str, Any] | None
    systems: dict[str, dict[str, Any]]
    metrics: dict[str, np.ndarray]
    epoch_rows: list[dict[str, float]]
    events: list[dict[str, Any]]
    checkpoints: list[int]
    probes: dict[str, dict[str, np.ndarray]]
    goodness: dict[str, dict[str, np.ndarray]]
    confusion: list[dict[str, Any]]
    summary: dict[str, Any]
    live: bool = False
    systems_start: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoint_roles: list[dict[str, Any]] = field(default_factory=list)
    #: the writer segment (0, then 1, 2, ... after each resume) of each row of ``metrics``
    epoch_segments: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _samples: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def kept_checkpoints(self) -> list[int]:
        """The epochs whose checkpoint can still be read (:meth:`checkpoint`)."""
        return [c["epoch"] for c in self.checkpoint_roles]

    @property
    def format_version(self) -> int:
        return int(self.attrs["format_version"])

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def samples(self) -> dict[str, dict[str, np.ndarray]]:
        if self._samples is None:
            self._samples = _with_file(self.path, _read_samples)
        return self._samples

    def history(self, upto_epoch: int | None = None) -> list[dict[str, float]]:
        """The per-epoch metric rows (``{"epoch": e, name: value, ...}``) up to and including ``upto_epoch``.

        What a trainer needs back to resume from the checkpoint of ``upto_epoch`` (rows of a crashed
        segment beyond it are not included): read from ``/metrics``, so checkpoints need not carry the
        history and their cost does not grow with the run. Values that were not logged are absent.
        """
        if upto_epoch is None:
            return [dict(r) for r in self.epoch_rows]
        upto_epoch = checks.integer("upto_epoch", upto_epoch)
        return [dict(r) for r in self.epoch_rows if r["epoch"] <= upto_epoch]

    def metrics_frame(self):  # -> pandas.DataFrame
        """The metrics as a pandas DataFrame indexed by epoch (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas is in the test extras
            raise ImportError("metrics_frame() needs pandas: pip install 'physnn[analysis]'") from exc
        df = pd.DataFrame({k: v for k, v in self.metrics.items() if k != "epoch"}, index=self.metrics["epoch"])
        df.index.name = "epoch"
        return df

    def events_frame(self):  # -> pandas.DataFrame
        """The events as a pandas DataFrame (time as datetime, kind, fields dict)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover
            raise ImportError("events_frame() needs pandas: pip install 'physnn[analysis]'") from exc

        return pd.DataFrame(
            {
                "time": pd.to_datetime([e["time"] for e in self.events], unit="s"),
                "kind": [e["kind"] for e in self.events],
                "fields": [e["fields"] for e in self.events],
            }
        )

    def checkpoint(self, epoch: int | None = None, *, role: str | None = None) -> Checkpoint:
        """The checkpoint of ``epoch``, or the one kept as ``role`` (``"last"``, ``"best"``); default: the last.

        Tensors come back bit for bit as written.
        """
        if role is not None:
            role = checks.choice("role", role, ("last", "best", "kept"))
        return _with_file(
            self.path, lambda f, live, version: _read_checkpoint(f, self.path, epoch, self.config, version, role)
        )

    def cumulative(self, name: str) -> np.ndarray:
        """A per-segment running total (e.g. the trainer's ``wall_seconds``, which restarts in each process)
        made continuous across resumes: each resumed segment continues from the value at the epoch it resumed
        from. NaN where the metric was not logged."""
        values = np.asarray(self.metrics.get(name, np.full(self.metrics["epoch"].size, math.nan)), dtype=np.float64)
        out = values.copy()
        offset, carried, seg = 0.0, 0.0, None
        for i, s in enumerate(self.epoch_segments.tolist()):
            if s != seg:  # a new segment: it counts from 0 again, after the last row before it
                offset, seg = carried, s
            if math.isfinite(values[i]):
                out[i] = values[i] + offset
                carried = out[i]
        return out

    def segment_times(self) -> list[tuple[float, float]]:
        """(start, end) Unix times of each writer segment: from its ``run_started``/``resumed`` event to its
        last record (the ``run_closed`` event, or the last event or metric row of a segment that died)."""
        starts = [e["time"] for e in self.events if e["kind"] in ("run_started", "resumed")]
        if not starts:
            starts = [float(self.attrs.get("start_time_unix", math.nan))]
        times = sorted([e["time"] for e in self.events] + [float(t) for t in self.metrics["time"]])
        out = []
        for i, start in enumerate(starts):
            stop = starts[i + 1] if i + 1 < len(starts) else math.inf
            inside = [t for t in times if start <= t < stop]
            out.append((start, max(inside, default=start)))
        return out

    def final(self, name: str) -> tuple[int | None, float]:
        """(epoch, value) of the last finite value of a metric; (None, nan) if never logged."""
        arr = self.metrics.get(name)
        if arr is None:
            return None, math.nan
        ok = np.flatnonzero(np.isfinite(arr))
        if not ok.size:
            return None, math.nan
        return int(self.metrics["epoch"][ok[-1]]), float(arr[ok[-1]])

    def key_numbers(self) -> dict[str, Any]:
        """The numbers ``ls``/``compare``/reports show: accuracies, epochs, queries, device time."""
        m = self.metrics
        out: dict[str, Any] = {
            "status": self.status,
            "start_time": self.attrs.get("start_time", ""),
            "epochs": int(m["epoch"].size),
            "segments": max(1, len(self.segment_times())),
            "checkpoints": len(self.checkpoints),
            "events": len(self.events),
        }
        for key in ("train_accuracy", "test_accuracy"):
            v = self.summary.get(key)
            out[key] = float(v) if isinstance(v, (int, float)) else self.final(key)[1]
        t = m.get("test_accuracy")
        if t is not None and np.isfinite(t).any():
            i = int(np.nanargmax(t))
            out["best_test_accuracy"], out["best_epoch"] = float(t[i]), int(m["epoch"][i])
        else:
            out["best_test_accuracy"], out["best_epoch"] = math.nan, None
        if isinstance(self.summary.get("total_queries"), (int, float)):
            out["queries"] = float(self.summary["total_queries"])
        elif "train_queries" in m or "eval_queries" in m:
            out["queries"] = float(sum(np.nansum(m[k]) for k in ("train_queries", "eval_queries") if k in m))
        else:
            out["queries"] = math.nan
        out["device_seconds"] = float(np.nansum(m["device_seconds"])) if "device_seconds" in m else math.nan
        # active: the writers' own time (each segment from its start to its last record), without the gaps
        # between a run that stopped and its resume; elapsed: first start to last record, gaps included
        segments = self.segment_times()
        out["wall_seconds"] = float(sum(end - start for start, end in segments))
        out["elapsed_seconds"] = segments[-1][1] - float(self.attrs.get("start_time_unix", segments[0][0]))
        out["size_bytes"] = self.path.stat().st_size if self.path.exists() else 0
        return out


def _with_file(path: Path, fn: Any, retries: int = 4) -> Any:
    """Open, read with ``fn(f, live)``, close; retry a read that races a live writer, then report the damage.

    A live (SWMR) reader can catch a chunk while the writer rewrites it in place, which fails the
    chunk's checksum once; the retry reads it again. A checksum that fails on a closed file is damage.
    """
    for attempt in range(retries):
        f, live = _open_read(path)
        try:
            version = _check_format(f, path)
            _check_structure(f, path)
            return fn(f, live, version)
        except _ReadError as exc:
            if not live or attempt == retries - 1:
                raise RunFileError(path, f"is damaged: cannot read {exc.what} ({exc.exc})") from None
        except _ChecksumError as exc:
            if not live or attempt == retries - 1:
                raise RunFileError(
                    path,
                    f"is corrupt: dataset {exc.name!r} fails its {exc.check}; bit rot, a bad "
                    f"disk or a damaged copy: its values cannot be trusted",
                ) from None
        finally:
            f.close()
        time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _read_samples(f: h5py.File, live: bool = False, version: int = 2) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    with _Reading("/samples"):
        for b, g in f["samples"].items():
            n = min(g["x"].shape[0], g["y"].shape[0], g["step"].shape[0])
            out[b] = {k: _arr(g[k], slice(0, n)) for k in ("x", "y", "step")}
    return out


def _manifests(f: h5py.File, version: int) -> list[dict[str, Any]]:
    if version >= 2:
        return [r for *_, r in _text_records(f["checkpoints/manifest"])]
    records, _ = _read_json_log(f["checkpoints"], ("epoch", "time"))
    return records


def _kept(records: list[dict[str, Any]], version: int) -> list[dict[str, Any]]:
    """The checkpoints a file keeps, oldest first: ``{"epoch", "roles", "parts", "record"}``.

    Format 3: those named by the last manifest's ``retained`` list (the space of the others is reused).
    Formats 1 and 2 kept every checkpoint; the last one is the ``last``.
    """
    if version >= 3:
        if not records:
            return []
        by_id = {int(r["id"]): r for r in records}
        entries = sorted(records[-1]["retained"], key=lambda e: int(e["id"]))
        return [
            {
                "epoch": int(e["epoch"]),
                "roles": list(e["roles"]),
                "parts": list(e["parts"]),
                "record": by_id[int(e["id"])],
            }
            for e in entries
        ]
    return [
        {
            "epoch": int(r["epoch"]),
            "roles": ["last"] if i == len(records) - 1 else [],
            "parts": list(PARTS),
            "record": r,
        }
        for i, r in enumerate(records)
    ]


def _pick(kept: list[dict[str, Any]], path: Path, epoch: int | None, role: str | None) -> dict[str, Any]:
    have = [k["epoch"] for k in kept]
    if role is not None:
        hits = [k for k in kept if role in k["roles"]]
        if not hits:
            roles = {k["epoch"]: k["roles"] for k in kept}
            raise NoCheckpointError(path, f"keeps no {role!r} checkpoint; it keeps (epoch: roles) {roles}")
    elif epoch is None:
        hits = [k for k in kept if "last" in k["roles"]] or kept[-1:]
    else:
        hits = [k for k in kept if k["epoch"] == epoch]
        if not hits:
            raise NoCheckpointError(path, f"has no checkpoint of epoch {epoch}; it has {have}")
    complete = [k for k in hits if len(k["parts"]) == len(PARTS)]
    return (complete or hits)[-1]


def _checkpoint_bytes(f: h5py.File, path: Path, chosen: dict[str, Any], others: list[int]) -> tuple[list, bytes]:
    """(table, data) of the arrays a kept checkpoint still has, each checked against its CRC-32 (format 3)."""
    r, ds = chosen["record"], f["checkpoints/data"]
    table, buf = list(r["arrays"]), bytearray()
    for i in retained_arrays(r, chosen["parts"]):
        a = r["arrays"][i]
        start, n = int(a["offset"]), int(a["nbytes"])
        with _Reading(f"/checkpoints/data of epoch {r['epoch']}"):
            if start + n > ds.shape[0]:
                raise ValueError(f"needs bytes {start}..{start + n} but the data stream has {ds.shape[0]}")
            raw = _arr(ds, slice(start, start + n)).tobytes() if n else b""
        if zlib.crc32(raw) != int(a["crc32"]):
            raise RunFileError(
                path,
                f"checkpoint of epoch {r['epoch']} is corrupt (CRC32 mismatch in array {i}, bytes "
                f"{start}..{start + n}); other checkpoints: {others}",
            )
        table[i] = {**a, "offset": len(buf)}
        buf += raw
    return table, bytes(buf)


def _read_checkpoint(
    f: h5py.File, path: Path, epoch: int | None, config: dict[str, Any], version: int, role: str | None = None
) -> Checkpoint:
    with _Reading("/checkpoints"):
        kept = _kept(_manifests(f, version), version)
    if not kept:
        raise NoCheckpointError(path, "holds no checkpoint (the run stopped before its first one)")
    chosen = _pick(kept, path, epoch, role)
    r = chosen["record"]
    others = [k["epoch"] for k in kept if k is not chosen]
    if r.get("byteorder", sys.byteorder) != sys.byteorder:
        raise RunFileError(path, f"checkpoint of epoch {r['epoch']} was written on a {r['byteorder']}-endian machine")
    if version >= 3:
        table, data = _checkpoint_bytes(f, path, chosen, others)
    else:
        with _Reading(f"/checkpoints/data of epoch {r['epoch']}"):
            start, length = int(r["data_offset"]), int(r["data_length"])
            ds = f["checkpoints/data"]
            if start + length > ds.shape[0]:
                raise ValueError(f"needs bytes {start}..{start + length} but the data stream has {ds.shape[0]}")
            data = _arr(ds, slice(start, start + length)).tobytes() if length else b""
        if zlib.crc32(data) != int(r["crc32"]):
            raise RunFileError(
                path, f"checkpoint of epoch {r['epoch']} is corrupt (CRC32 mismatch); other checkpoints: {others}"
            )
        table = r["arrays"]
    parts = set(chosen["parts"])
    with _Reading(f"checkpoint of epoch {r['epoch']}"):

        def part(name: str) -> Any:
            return _unpack(r.get(name), table, data) if name in parts else None

        return Checkpoint(
            epoch=int(r["epoch"]),
            model_state=part("model"),
            optim_state=part("optim"),
            rng_state=part("rng"),
            config=config,
            extra=part("extra"),
            time=float(r["time"]),
            roles=tuple(chosen["roles"]),
            complete=len(parts) == len(PARTS),
        )


def _json_scalar(ds: h5py.Dataset) -> Any:
    raw = ds[()]
    raw = raw if isinstance(raw, bytes) else raw.encode("utf-8")
    if "crc32" in ds.attrs and zlib.crc32(raw) != int(ds.attrs["crc32"]):
        raise _ChecksumError(ds.name, "stored text differs from its crc32 attribute", "CRC-32 check")
    return json.loads(raw.decode("utf-8"))


def _read_run(f: h5py.File, path: Path, live: bool, version: int) -> Run:
    with _Reading("the root attributes"):
        attrs = _plain_attrs(f.attrs)
    with _Reading("/config"):
        config = _json_scalar(f["config"])
    dataset = None
    if "dataset" in f:
        with _Reading("/dataset"):
            dataset = _json_scalar(f["dataset"])
    systems_start = {}
    with _Reading("/systems"):
        for b, g in f["systems"].items():
            if isinstance(g, h5py.Group):
                systems_start[b] = _json_scalar(g["describe"])
        systems = dict(systems_start)
    if version >= 2:
        with _Reading("/systems/updates"):
            for *_, record in _text_records(f["systems/updates"]):
                systems[record["block"]] = record["describe"]  # in order: the last record of a block wins
    with _Reading("/metrics"):
        metrics, rows_, segments = _read_metrics(f["metrics"], version)
    with _Reading("/events"):
        if version >= 2:
            events = [
                {"time": t, "kind": r["kind"], "fields": r["fields"]} for t, _, _, r in _text_records(f["events"])
            ]
        else:
            recs, cols = _read_json_log(f["events"], ("time",))
            events = [{"time": float(t), "kind": r["kind"], "fields": r["fields"]} for r, t in zip(recs, cols["time"])]
    with _Reading("/checkpoints"):
        manifests = _manifests(f, version)
        roles = [{"epoch": k["epoch"], "roles": k["roles"], "parts": k["parts"]} for k in _kept(manifests, version)]
        if version >= 2:
            checkpoints = [int(r["epoch"]) for r in manifests]
        else:
            n = min(f["checkpoints/epoch"].shape[0], f["checkpoints/index"].shape[0], f["checkpoints/time"].shape[0])
            checkpoints = [int(e) for e in f["checkpoints/epoch"][:n]]
    probes = {}
    with _Reading("/probes"):
        for b, g in f["probes"].items():
            p = g["x"].shape[0]
            if not p:
                continue
            n = min(
                g["y"].shape[0] // p,
                g["time"].shape[0],
                g["step"].shape[0],
                g["row"].shape[0] // p if "row" in g else g["step"].shape[0],
            )
            probes[b] = {
                "x": _arr(g["x"], slice(None)),
                "y": _arr(g["y"], slice(0, n * p)).reshape(n, p, g["y"].shape[1]),
                "step": _arr(g["step"], slice(0, n)),
                "time": _arr(g["time"], slice(0, n)),
            }
    goodness = {}
    with _Reading("/goodness"):
        for b, g in f["goodness"].items():
            n = min(g["value"].shape[0], g["positive"].shape[0], g["epoch"].shape[0])
            if n:
                goodness[b] = {
                    "epoch": _arr(g["epoch"], slice(0, n)),
                    "positive": _arr(g["positive"], slice(0, n)).astype(bool),
                    "value": _arr(g["value"], slice(0, n)),
                }
    with _Reading("/confusion"):
        if version >= 2:
            recs = [r for *_, r in _text_records(f["confusion"])]
        else:
            recs, _ = _read_json_log(f["confusion"], ("epoch",))
        confusion = [{**r, "matrix": np.asarray(r["matrix"], dtype=np.int64)} for r in recs]
    with _Reading("/summary"):
        if version >= 2:
            recs = [r for *_, r in _text_records(f["summary"])]
        else:
            recs, _ = _read_json_log(f["summary"], ("time",))
        summary = recs[-1] if recs else {}
    return Run(
        path=path,
        attrs=attrs,
        status=_derive_status(attrs, events, live),
        config=config,
        dataset=dataset,
        systems=systems,
        metrics=metrics,
        epoch_rows=rows_,
        events=events,
        checkpoints=checkpoints,
        probes=probes,
        goodness=goodness,
        confusion=confusion,
        summary=summary,
        live=live,
        systems_start=systems_start,
        checkpoint_roles=roles,
        epoch_segments=segments,
    )


def load(path: str | os.PathLike) -> Run:
    """Read a run file (also while it is being written, or after its writer was killed).

    Raises :class:`RunFileError` naming the file and the problem for a
    missing, non-HDF5, truncated, corrupt or foreign file, or one written in
    a newer format version.
    """
    p = Path(path)
    return _with_file(p, lambda f, live, version: _read_run(f, p, live, version))


def last_checkpoint(path: str | os.PathLike, epoch: int | None = None) -> Checkpoint:
    """The last checkpoint of a run (or that of ``epoch``), for resuming.

    Unpacks as ``epoch, model_state, optim_state, rng_state, config``;
    ``.extra`` holds what was passed as ``extra=``. Tensors are equal bit for
    bit to what was written and come back on the CPU.
    """
    run = load(path)
    return run.checkpoint(epoch)


def best_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The checkpoint kept as the best by validation (format 3): what to deploy.

    Its ``model_state`` is complete; ``optim_state``, ``rng_state`` and ``extra`` are None unless it is also
    the last (or a kept) checkpoint. Raises :class:`NoCheckpointError` when the run kept none (no validation
    metric was logged at a checkpoint, or the file is older than format 3).
    """
    return load(path).checkpoint(role="best")
