"""HDF5 run files: one file per training run, written as it happens, read back exactly.

A run on a bench lasts hours and cannot be repeated exactly (the hardware
drifts), so everything it learns goes to disk as it happens. The format is
written down in ``docs/run-format.md``; this module is its only writer and
the reference reader.

Why the file is written the way it is
-------------------------------------
* **SWMR from the first byte of data.** After a short set-up phase the file is
  switched to HDF5 single-writer/multiple-reader mode. In that mode HDF5 writes
  its metadata in dependency order, so the file on disk is consistent at every
  instant: a writer killed with ``kill -9`` leaves a file that opens and holds
  everything flushed (we flush after every epoch, checkpoint and event), and
  another process can read the file while the run writes it.
* **Every object is created before SWMR starts.** SWMR forbids new groups,
  datasets and attributes, and appending variable-length strings. So all
  datasets are pre-created and extendable: metric columns for the names known
  at construction (unknown names later go to a JSON log, never dropped), and
  records of free structure (events, checkpoint manifests, confusion matrices)
  are JSON text in append-only ``uint8`` byte streams indexed by
  ``(offset, length)`` rows. Checkpoint tensors are raw bytes in one byte
  stream, described by their manifest (dtype, shape, offset): any state dict
  round-trips bit for bit, and nothing is ever pickled.
* **Append-only, commit column last.** A record is a row across several
  columns; the key column is written and flushed last, and readers count only
  rows present in every column. A crash mid-record leaves at most an
  uncommitted partial row, which the next writer overwrites; committed data is
  never rewritten.
* **Crash recovery without external tools.** A writer that dies leaves the
  HDF5 "file is open for writing" flag set in the superblock; other programs
  then refuse the file until ``h5clear -s``. :func:`recover` (called by
  :meth:`RunWriter.resume`) clears it the same way, after checking the
  superblock checksum, and the reader opens such files in SWMR-read mode.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np
import torch

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STATUSES",
    "RunFileError",
    "NoCheckpointError",
    "RunWriter",
    "Run",
    "Checkpoint",
    "load",
    "last_checkpoint",
    "recover",
    "capture_rng",
    "restore_rng",
    "default_metric_names",
]

FORMAT_NAME = "physnn-run"
#: Version of the layout described in docs/run-format.md. Readers refuse newer versions.
FORMAT_VERSION = 1
#: Values of the root ``status`` attribute. ``aborted``: the writer died without closing the run.
STATUSES = ("running", "completed", "interrupted", "failed", "aborted")

_RESERVED_METRICS = frozenset({"epoch", "time", "segment"})
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
_BLOCK_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_ROW_CHUNK = 512
_TEXT_CHUNK = 16384
_DATA_CHUNK = 1 << 18
_STATUS_DTYPE = "S16"
_TIME_DTYPE = "S40"
_HOST_DTYPE = "S256"


class RunFileError(ValueError):
    """A run file that cannot be used: missing, not HDF5, truncated, corrupt, foreign or too new.

    The message names the file and the problem; ``path`` and ``problem`` hold them separately.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"run file {str(self.path)!r} {problem}")


class NoCheckpointError(RunFileError):
    """The run file is fine but holds no (such) checkpoint."""


class _LeftOpenError(RunFileError):
    """Left open by a non-SWMR writer: unreadable until its flags are cleared."""


# ============================================================== small helpers
def default_metric_names(blocks: Sequence[str]) -> list[str]:
    """The metric columns pre-created when ``metric_names`` is not given.

    They follow the MF-FF trainer's names (see docs/run-format.md, "Metric
    names"); any other name is still stored (in ``/metrics/_extra``).
    """
    names = ["loss"]
    for b in blocks:
        names += [f"loss/{b}", f"g_pos/{b}", f"g_neg/{b}"]
    names += ["train_accuracy", "test_accuracy", "train_queries", "eval_queries", "device_seconds",
              "digital_flops", "epoch_seconds", "wall_seconds"]
    return names


def _column_name(metric: str) -> str:
    """HDF5 dataset name of a metric column ('/' would make a group, so it becomes ':')."""
    return metric.replace("/", ":")


def _check_metric_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"metric name {name!r} is not allowed: use letters, digits, '_', '.', '-' and '/' between parts "
            f"(e.g. 'test_accuracy', 'loss/block0')"
        )
    if name in _RESERVED_METRICS:
        raise ValueError(f"metric name {name!r} is reserved (the run file writes {sorted(_RESERVED_METRICS)} itself)")
    return name


def _block_name(block: Any) -> str:
    """Block names are strings like 'block0'; an integer i means 'block{i}'."""
    if isinstance(block, (int, np.integer)) and not isinstance(block, bool):
        if block < 0:
            raise ValueError(f"block index must be >= 0, got {block}")
        return f"block{int(block)}"
    if not isinstance(block, str) or not _BLOCK_RE.match(block):
        raise ValueError(f"block name {block!r} is not allowed: use letters, digits, '_', '.', '-' (e.g. 'block0')")
    return block


def _to_float(value: Any, what: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{what} must be a single number, got a tensor of shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, (bool, int, float, np.integer, np.floating, np.bool_)):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.reshape(()))
    raise ValueError(f"{what} must be a number, got {type(value).__name__} {value!r:.80}")


def _nonneg_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return int(value)


def _iso_now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _git_commit() -> str:
    """The commit of the physnn source tree when it is a git checkout, else ''."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else ""


def _h5file(path: Path, mode: str, **kw: Any) -> h5py.File:
    """Open without HDF5's advisory file lock (see docs: readers must never block the writer)."""
    try:
        return h5py.File(path, mode, locking=False, **kw)
    except (TypeError, ValueError):  # h5py/HDF5 without the locking option
        return h5py.File(path, mode, **kw)


# ---------------------------------------------------------------- JSON codecs
def _strict_json(obj: Any, where: str) -> Any:
    """Plain JSON (configs): str keys, lists, numbers, strings; names the bad entry otherwise."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        if not math.isfinite(obj):
            raise ValueError(f"{where} = {obj} is not a finite number; JSON cannot hold it")
        return float(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__}; JSON keys must be strings")
            out[k] = _strict_json(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where} is a {type(obj).__name__}; a run file stores configurations as JSON "
                    f"(dicts, lists, numbers, strings, None) — convert it first")


def _loose_json(obj: Any, depth: int = 0) -> Any:
    """Best-effort JSON for event fields and describe() output: never raises (events come from drivers)."""
    if depth > 20:
        return repr(obj)[:200]
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, (np.generic,)):
        return _loose_json(obj.item(), depth + 1)
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        arr = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        if arr.size <= 64 and arr.dtype != object:
            return _loose_json(arr.tolist(), depth + 1)
        return {"shape": list(arr.shape), "dtype": str(arr.dtype), "note": "array too large for an event; not stored"}
    if isinstance(obj, Mapping):
        return {str(k): _loose_json(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_loose_json(v, depth + 1) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    return repr(obj)[:1000]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


# ------------------------------------------------------ checkpoint tree codec
_TAGS = frozenset({"__tensor__", "__ndarray__", "__npscalar__", "__tuple__", "__dict__", "__odict__", "__float__"})


class _Packer:
    """Turns a tree of dicts/lists/tuples/tensors/arrays/scalars into JSON + one byte buffer.

    Tensors and arrays become ``{"__tensor__": i}`` references into a table of
    (dtype, shape, offset, nbytes); their raw bytes are concatenated. Python
    floats round-trip exactly through JSON (shortest repr); non-finite floats,
    tuples, dicts with non-string keys and OrderedDicts (with a state dict's
    ``_metadata``) are tagged so that they come back as the same types.
    """

    def __init__(self) -> None:
        self.table: list[dict[str, Any]] = []
        self.chunks: list[bytes] = []
        self.size = 0

    def _add(self, raw: bytes, entry: dict[str, Any]) -> int:
        entry.update(offset=self.size, nbytes=len(raw))
        self.table.append(entry)
        self.chunks.append(raw)
        self.size += len(raw)
        return len(self.table) - 1

    def _tensor(self, t: torch.Tensor, where: str) -> int:
        if t.layout != torch.strided or t.is_quantized:
            raise TypeError(f"{where} is a {t.layout} tensor; only dense (strided) tensors can be stored")
        t = t.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return self._add(raw, {"kind": "torch", "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)})

    def _ndarray(self, a: np.ndarray, where: str) -> int:
        if a.dtype.hasobject or a.dtype.fields is not None:
            raise TypeError(f"{where} is a numpy array of dtype {a.dtype}; object and structured arrays cannot be "
                            f"stored without pickle")
        return self._add(np.ascontiguousarray(a).tobytes(), {"kind": "numpy", "dtype": a.dtype.str,
                                                             "shape": list(a.shape)})

    def pack(self, obj: Any, where: str) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, torch.Tensor):
            return {"__tensor__": self._tensor(obj, where)}
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": self._ndarray(obj, where)}
        if isinstance(obj, np.generic):
            return {"__npscalar__": self._ndarray(np.asarray(obj), where)}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.pack(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.pack(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, OrderedDict):
            items = [[self.pack(k, f"{where}<key {k!r}>"), self.pack(v, f"{where}[{k!r}]")] for k, v in obj.items()]
            meta = getattr(obj, "_metadata", None)
            out: dict[str, Any] = {"__odict__": items}
            if meta is not None:
                out["_metadata"] = self.pack(dict(meta), f"{where}._metadata")
            return out
        if isinstance(obj, Mapping):
            keys = list(obj.keys())
            if all(isinstance(k, str) for k in keys) and not any(k in _TAGS for k in keys):
                return {k: self.pack(v, f"{where}[{k!r}]") for k, v in obj.items()}
            return {"__dict__": [[self.pack(k, f"{where}<key {k!r}>"), self.pack(v, f"{where}[{k!r}]")]
                                 for k, v in obj.items()]}
        raise TypeError(
            f"{where} is a {type(obj).__qualname__}; a checkpoint stores tensors, numpy arrays, numbers, strings, "
            f"None and lists/tuples/dicts of them (never pickle) — convert it first"
        )


def _unpack(obj: Any, table: list[dict[str, Any]], data: bytes) -> Any:
    if isinstance(obj, list):
        return [_unpack(v, table, data) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__odict__" in obj:
        od = OrderedDict((_unpack(k, table, data), _unpack(v, table, data)) for k, v in obj["__odict__"])
        if "_metadata" in obj:
            od._metadata = _unpack(obj["_metadata"], table, data)  # type: ignore[attr-defined]
        return od
    if len(obj) == 1:
        (tag, val), = obj.items()
        if tag == "__tensor__":
            return _restore_tensor(table[val], data)
        if tag == "__ndarray__":
            return _restore_ndarray(table[val], data)
        if tag == "__npscalar__":
            return _restore_ndarray(table[val], data)[()]
        if tag == "__tuple__":
            return tuple(_unpack(v, table, data) for v in val)
        if tag == "__dict__":
            return {_unpack(k, table, data): _unpack(v, table, data) for k, v in val}
        if tag == "__float__":
            return float(val)
    return {k: _unpack(v, table, data) for k, v in obj.items()}


def _restore_tensor(entry: Mapping[str, Any], data: bytes) -> torch.Tensor:
    dtype = getattr(torch, entry["dtype"], None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {entry['dtype']!r}")
    raw = data[entry["offset"]: entry["offset"] + entry["nbytes"]]
    shape = tuple(entry["shape"])
    if not raw:
        return torch.empty(shape, dtype=dtype)
    # .clone(): torch's allocator aligns to 64 bytes, a bytearray does not. Vectorised kernels
    # (Adam's updates, MKL) can round differently on unaligned memory, which would make a resumed
    # run differ from an uninterrupted one in the last bits.
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape).clone()


def _restore_ndarray(entry: Mapping[str, Any], data: bytes) -> np.ndarray:
    raw = data[entry["offset"]: entry["offset"] + entry["nbytes"]]
    return np.frombuffer(raw, dtype=np.dtype(entry["dtype"])).reshape(entry["shape"]).copy()


# ------------------------------------------------------------------ RNG state
def capture_rng(
    *,
    torch_generators: Mapping[str, torch.Generator] | None = None,
    numpy_generators: Mapping[str, np.random.Generator] | None = None,
    cuda: bool | None = None,
) -> dict[str, Any]:
    """Snapshot of the random number generators a training run draws from.

    Always: Python's ``random``, NumPy's legacy global state and torch's CPU
    generator; plus the named ``torch.Generator``/``numpy.random.Generator``
    objects given, and the CUDA generators when CUDA is initialised (or
    ``cuda=True``). Store it with :meth:`RunWriter.checkpoint` and give it back
    to :func:`restore_rng` to continue the exact same random streams.
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy_global": np.random.get_state(),
        "torch_global": torch.get_rng_state(),
    }
    if cuda is None:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    if cuda:
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    if torch_generators:
        state["torch"] = {name: g.get_state() for name, g in torch_generators.items()}
    if numpy_generators:
        state["numpy"] = {name: g.bit_generator.state for name, g in numpy_generators.items()}
    return state


def restore_rng(
    state: Mapping[str, Any],
    *,
    torch_generators: Mapping[str, torch.Generator] | None = None,
    numpy_generators: Mapping[str, np.random.Generator] | None = None,
) -> None:
    """Put every generator back where :func:`capture_rng` found it."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy_global"])
    torch.set_rng_state(state["torch_global"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    for kind, gens in (("torch", torch_generators), ("numpy", numpy_generators)):
        saved = state.get(kind, {})
        for name, g in (gens or {}).items():
            if name not in saved:
                raise KeyError(f"the RNG snapshot has no {kind} generator {name!r}; it has {sorted(saved)}")
            if kind == "torch":
                g.set_state(saved[name])
            else:
                g.bit_generator.state = saved[name]


# ---------------------------------------------------- superblock flag clearing
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on its metadata."""
    m = 0xFFFFFFFF
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & m
    k = 0
    while length > 12:
        a = (a + int.from_bytes(data[k:k + 4], "little")) & m
        b = (b + int.from_bytes(data[k + 4:k + 8], "little")) & m
        c = (c + int.from_bytes(data[k + 8:k + 12], "little")) & m
        a = (a - c) & m; a ^= _rot(c, 4); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= _rot(a, 6); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= _rot(b, 8); b = (b + a) & m  # noqa: E702
        a = (a - c) & m; a ^= _rot(c, 16); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= _rot(a, 19); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= _rot(b, 4); b = (b + a) & m  # noqa: E702
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = data[k:k + length] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - _rot(b, 14)) & m  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & m  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & m  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & m  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & m  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & m  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & m  # noqa: E702
    return c


def _superblock_flags(path: Path) -> int:
    """The superblock's file-consistency flags (0: closed cleanly). Our files have a v2/v3 superblock at 0."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:8] != _HDF5_SIGNATURE or head[8] < 2:
        return 0
    return head[11]


def _clear_superblock_flags(path: Path) -> bool:
    """What ``h5clear -s --increment`` does: zero the consistency flags, raise the end-of-allocation
    address to the end of the file, re-checksum. True when something was cleared."""
    with open(path, "r+b") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:8] != _HDF5_SIGNATURE:
            raise RunFileError(path, "has no HDF5 superblock at offset 0; cannot clear its open-for-writing flag")
        if head[8] < 2:
            return False
        size_of_offsets = head[9]
        n = 12 + 4 * size_of_offsets
        fh.seek(0)
        block = bytearray(fh.read(n + 4))
        if len(block) != n + 4:
            raise RunFileError(path, "is truncated inside its superblock")
        stored = struct.unpack("<I", bytes(block[n:n + 4]))[0]
        if _lookup3(bytes(block[:n])) != stored:
            raise RunFileError(path, "has a superblock whose checksum does not verify; not touching it "
                                     "(try `h5clear -s` from the HDF5 tools on a copy)")
        if block[11] == 0:
            return False
        block[11] = 0
        # Also what ``h5clear --increment`` does: a writer killed under SWMR may have written data past
        # the end-of-allocation address recorded in the superblock; reopening for writing would then
        # fail with "addr overflow". Raise the EOA to the physical end of the file.
        fmt = {4: "<I", 8: "<Q"}.get(size_of_offsets)
        if fmt is not None:
            eoa_at = 12 + 2 * size_of_offsets
            eoa = struct.unpack(fmt, bytes(block[eoa_at:eoa_at + size_of_offsets]))[0]
            size = os.fstat(fh.fileno()).st_size
            if size > eoa:
                block[eoa_at:eoa_at + size_of_offsets] = struct.pack(fmt, size)
        block[n:n + 4] = struct.pack("<I", _lookup3(bytes(block[:n])))
        fh.seek(0)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _attr_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    if isinstance(value, np.bytes_):
        return bytes(value).decode("utf-8", "replace").rstrip("\x00")
    return str(value)


def _writer_alive(attrs: Mapping[str, Any]) -> bool | None:
    """True/False when the last writer ran on this host, None when it ran elsewhere (cannot tell)."""
    host = _attr_str(attrs.get("writer_host", ""))
    if host != socket.gethostname():
        return None
    return _pid_alive(int(attrs.get("writer_pid", -1)))


# ============================================================ on-disk columns
def _create_col(g: h5py.Group, name: str, dtype: Any, width: int | None = None, chunk: int = _ROW_CHUNK,
                **kw: Any) -> h5py.Dataset:
    shape = (0,) if width is None else (0, width)
    maxshape = (None,) if width is None else (None, width)
    chunks = (chunk,) if width is None else (chunk, width)
    return g.create_dataset(name, shape=shape, maxshape=maxshape, chunks=chunks, dtype=dtype, **kw)


def _create_json_log(g: h5py.Group, *extra_cols: tuple[str, str]) -> None:
    for name, dtype in extra_cols:
        _create_col(g, name, dtype)
    _create_col(g, "index", "i8", 2)
    _create_col(g, "json", "u1", chunk=_TEXT_CHUNK)


class _Rows:
    """Columns holding one record type; a row is committed once it is in every column.

    ``div`` says how many dataset rows one record takes in a column (probes
    store P rows of outputs per record). Columns are written and flushed in
    order, the last one (the key) last.
    """

    def __init__(self, cols: Sequence[h5py.Dataset], div: Sequence[int] | None = None):
        self.cols = list(cols)
        self.div = list(div) if div is not None else [1] * len(self.cols)

    def committed(self) -> int:
        return min(c.shape[0] // d for c, d in zip(self.cols, self.div))

    def append(self, values: Sequence[np.ndarray], k: int) -> int:
        n = self.committed()
        for c, d, v in zip(self.cols, self.div, values):
            end = (n + k) * d
            if c.shape[0] < end:
                c.resize((end,) + c.shape[1:])
            c[n * d:end] = v
            c.flush()
        return n


def _append_bytes(ds: h5py.Dataset, raw: bytes) -> int:
    """Append at the physical end of a byte stream (never over anything written before)."""
    offset = ds.shape[0]
    if raw:
        ds.resize((offset + len(raw),))
        ds[offset:] = np.frombuffer(raw, dtype=np.uint8)
    ds.flush()
    return offset


class _JsonLog:
    def __init__(self, g: h5py.Group, extra: Sequence[str] = ()):
        self.g = g
        self.rows = _Rows([g[name] for name in extra] + [g["index"]])

    def append(self, record: Any, *extra_values: Any) -> int:
        raw = _dumps(record) + b"\n"
        offset = _append_bytes(self.g["json"], raw)
        values = [np.asarray([v]) for v in extra_values] + [np.asarray([[offset, len(raw)]], dtype=np.int64)]
        return self.rows.append(values, 1)

    def __len__(self) -> int:
        return self.rows.committed()


def _read_json_log(g: h5py.Group, extra: Sequence[str] = ()) -> tuple[list[Any], dict[str, np.ndarray]]:
    cols = {name: g[name] for name in extra}
    n = min([g["index"].shape[0]] + [c.shape[0] for c in cols.values()])
    index = g["index"][:n]
    records: list[Any] = []
    if n:
        end = int((index[:, 0] + index[:, 1]).max())
        buf = g["json"][:end].tobytes()
        for off, length in index:
            records.append(json.loads(buf[off:off + length].decode("utf-8")))
    return records, {name: c[:n] for name, c in cols.items()}


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


def _load_for_repair(path: Path, force: bool) -> "Run":
    """load(), except that with ``force`` a file left open by a non-SWMR session is unflagged first.

    Our own writer leaves such a file only when killed during the milliseconds
    of its non-SWMR sessions (creation is atomic; closing and resuming update
    two attributes), so the owner may decide to clear it.
    """
    try:
        return load(path)
    except _LeftOpenError:
        if not force:
            raise
    _clear_superblock_flags(path)
    return load(path)


def recover(path: str | os.PathLike, *, force: bool = False) -> bool:
    """Make a run file left open by a dead writer (kill -9, power cut) usable by every HDF5 program.

    Clears the superblock's open-for-writing flag (like ``h5clear -s``), sets
    the status to ``aborted`` and records a ``recovered`` event. Returns
    False when the file was closed properly (nothing to do). Refuses while
    the writer is alive on this host; a writer on another host needs ``force``.
    """
    path = Path(path)
    run = _load_for_repair(path, force)
    if not _superblock_flags(path):
        return False
    alive = _writer_alive(run.attrs)
    if alive is True:
        raise RunFileError(path, f"is being written by process {run.attrs.get('writer_pid')} on this host")
    if alive is None and not force:
        raise RunFileError(path, f"was left open by a writer on host {_attr_str(run.attrs.get('writer_host'))!r}; "
                                 f"if it is surely stopped, pass force=True")
    _clear_superblock_flags(path)
    with _h5file(path, "r+", libver="latest") as f:
        f.attrs.modify("status", np.bytes_(b"aborted"))
        _JsonLog(f["events"], ("time",)).append(
            {"kind": "recovered", "fields": {"status": "aborted", "note": "the writer died without closing the run; "
                                             "every flushed epoch is kept"}}, time.time())
    return True


# ================================================================= the reader
@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint; unpacks as ``epoch, model_state, optim_state, rng_state, config``."""

    epoch: int
    model_state: dict[str, Any]
    optim_state: Any
    rng_state: Any
    config: dict[str, Any]
    extra: Any = None
    time: float = math.nan

    def __iter__(self) -> Iterator[Any]:
        return iter((self.epoch, self.model_state, self.optim_state, self.rng_state, self.config))


class _ReadError(Exception):
    def __init__(self, what: str, exc: BaseException):
        self.what = what
        self.exc = exc
        super().__init__(f"{what}: {exc}")


class _Reading:
    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is not None and isinstance(exc, (OSError, KeyError, ValueError, TypeError, IndexError,
                                                json.JSONDecodeError, UnicodeDecodeError)) \
                and not isinstance(exc, RunFileError):
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
        raise RunFileError(path, "is not an HDF5 file (no HDF5 signature); run files are written by "
                                 "physnn.runlog.RunWriter")
    try:
        return _h5file(path, "r"), False
    except OSError as exc:
        first = str(exc)
    if "already open for write" in first or "consistency flags" in first:
        try:
            return _h5file(path, "r", swmr=True), True
        except OSError as exc:
            raise _LeftOpenError(path, "was left open for writing by a program that does not use SWMR (or was killed "
                                     "while the file was being set up or closed); if no program is writing it, run "
                                     f"physnn.runlog.recover(path, force=True) or `h5clear -s` ({exc})") from None
    if "truncated" in first or "eof" in first.lower():
        stored = re.search(r"stored_eof = (\d+)", first)
        expected = f", its metadata says {int(stored.group(1))}" if stored else ""
        raise RunFileError(path, f"is truncated: {path.stat().st_size} bytes on disk{expected} "
                                 f"(an incomplete copy or download?)") from None
    raise RunFileError(path, f"is a damaged HDF5 file that cannot be opened ({first})") from None


def _check_format(f: h5py.File, path: Path) -> int:
    with _Reading("the root group"):
        fmt = f.attrs.get("format")
        top = sorted(f.keys())[:8] if fmt is None else []
        raw = f.attrs.get("format_version")
    if fmt is None:
        raise RunFileError(path, f"is an HDF5 file but not a physnn run file (its root has no 'format' attribute; "
                                 f"top-level objects: {top})")
    fmt = _attr_str(fmt)
    if fmt != FORMAT_NAME:
        raise RunFileError(path, f"has format {fmt!r}, not {FORMAT_NAME!r}")
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise RunFileError(path, f"has an invalid format_version {raw!r}") from None
    if version > FORMAT_VERSION:
        import physnn

        raise RunFileError(path, f"was written in run-format version {version}; this physnn "
                                 f"({physnn.__version__}) reads versions up to {FORMAT_VERSION} — upgrade physnn")
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


def _read_metrics(g: h5py.Group) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    names = json.loads(_attr_str(g.attrs["columns"]))
    cols = {n: g[_column_name(n)] for n in names}
    n = min([g["epoch"].shape[0], g["time"].shape[0], g["segment"].shape[0], g["logged"].shape[0]]
            + [c.shape[0] for c in cols.values()])
    epochs, times, segs, logged = g["epoch"][:n], g["time"][:n], g["segment"][:n], g["logged"][:n].astype(bool)
    data = {name: c[:n] for name, c in cols.items()}
    extra_records, _ = _read_json_log(g["_extra"])
    extras: dict[int, dict[str, float]] = {}
    order = list(names)
    for r in extra_records:
        if r.get("row", n) < n:
            vals = {k: float(v) for k, v in r["values"].items()}
            extras.setdefault(int(r["row"]), {}).update(vals)
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
    metrics: dict[str, np.ndarray] = {"epoch": np.asarray(keys, dtype=np.int64),
                                      "time": np.asarray([merged[e]["time"] for e in keys], dtype=np.float64)}
    for name in order:
        if any(name in merged[e] for e in keys):  # columns never logged are left out
            metrics[name] = np.asarray([merged[e].get(name, math.nan) for e in keys], dtype=np.float64)
    rows = [{"epoch": e, **{k: v for k, v in merged[e].items() if k != "time"}} for e in keys]
    return metrics, rows


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
        config, dataset, systems: the JSON records, as dicts.
        metrics: per-epoch 1-D arrays (``epoch``, ``time`` and one per metric,
            NaN where not logged), one entry per epoch; rows superseded by a
            resume are dropped. ``epoch_rows``: the same as a list of dicts.
        events: ``[{"time", "kind", "fields"}]`` in order.
        checkpoints: the epochs that have a checkpoint.
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
    _samples: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)

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

        return pd.DataFrame({"time": pd.to_datetime([e["time"] for e in self.events], unit="s"),
                             "kind": [e["kind"] for e in self.events],
                             "fields": [e["fields"] for e in self.events]})

    def checkpoint(self, epoch: int | None = None) -> Checkpoint:
        """The checkpoint of ``epoch`` (default: the last one), tensors bit for bit as written."""
        return _with_file(self.path, lambda f, live: _read_checkpoint(f, self.path, epoch, self.config))

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
        out: dict[str, Any] = {"status": self.status, "start_time": self.attrs.get("start_time", ""),
                               "epochs": int(m["epoch"].size), "checkpoints": len(self.checkpoints),
                               "events": len(self.events)}
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
        # the whole run: start to close (or to the last record of a run still going / aborted)
        last = max([e["time"] for e in self.events] + [float(t) for t in m["time"][-1:]], default=math.nan)
        out["wall_seconds"] = last - float(self.attrs.get("start_time_unix", math.nan))
        return out


def _with_file(path: Path, fn: Any, retries: int = 3) -> Any:
    """Open, read with ``fn(f, live)``, close; retry a read that races a live writer, then report the damage."""
    for attempt in range(retries):
        f, live = _open_read(path)
        try:
            _check_format(f, path)
            return fn(f, live)
        except _ReadError as exc:
            if not live or attempt == retries - 1:
                raise RunFileError(path, f"is damaged: cannot read {exc.what} ({exc.exc})") from None
        finally:
            f.close()
        time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _read_samples(f: h5py.File, live: bool = False) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    with _Reading("/samples"):
        for b, g in f["samples"].items():
            n = min(g["x"].shape[0], g["y"].shape[0], g["step"].shape[0])
            out[b] = {"x": g["x"][:n], "y": g["y"][:n], "step": g["step"][:n]}
    return out


def _read_checkpoint(f: h5py.File, path: Path, epoch: int | None, config: dict[str, Any]) -> Checkpoint:
    with _Reading("/checkpoints"):
        records, cols = _read_json_log(f["checkpoints"], ("epoch", "time"))
    if not records:
        raise NoCheckpointError(path, "holds no checkpoint (the run stopped before its first one)")
    if epoch is None:
        i = len(records) - 1
    else:
        hits = [i for i, r in enumerate(records) if r["epoch"] == epoch]
        if not hits:
            raise NoCheckpointError(path, f"has no checkpoint of epoch {epoch}; it has {[r['epoch'] for r in records]}")
        i = hits[-1]
    r = records[i]
    if r.get("byteorder", sys.byteorder) != sys.byteorder:
        raise RunFileError(path, f"checkpoint of epoch {r['epoch']} was written on a {r['byteorder']}-endian machine")
    with _Reading(f"/checkpoints/data of epoch {r['epoch']}"):
        start, length = int(r["data_offset"]), int(r["data_length"])
        ds = f["checkpoints/data"]
        if start + length > ds.shape[0]:
            raise ValueError(f"needs bytes {start}..{start + length} but the data stream has {ds.shape[0]}")
        data = ds[start:start + length].tobytes() if length else b""
    if zlib.crc32(data) != int(r["crc32"]):
        others = [rr["epoch"] for rr in records if rr is not r]
        raise RunFileError(path, f"checkpoint of epoch {r['epoch']} is corrupt (CRC32 mismatch); other checkpoints: "
                                 f"{others}")
    with _Reading(f"checkpoint of epoch {r['epoch']}"):
        table = r["arrays"]
        return Checkpoint(epoch=int(r["epoch"]), model_state=_unpack(r["model"], table, data),
                          optim_state=_unpack(r["optim"], table, data), rng_state=_unpack(r["rng"], table, data),
                          config=config, extra=_unpack(r.get("extra"), table, data), time=float(r["time"]))


def _read_run(f: h5py.File, path: Path, live: bool) -> Run:
    with _Reading("the root attributes"):
        attrs = _plain_attrs(f.attrs)
    with _Reading("/config"):
        config = json.loads(f["config"][()].decode("utf-8") if isinstance(f["config"][()], bytes)
                            else f["config"][()])
    dataset = None
    if "dataset" in f:
        with _Reading("/dataset"):
            raw = f["dataset"][()]
            dataset = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    systems = {}
    with _Reading("/systems"):
        for b, g in f["systems"].items():
            raw = g["describe"][()]
            systems[b] = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    with _Reading("/metrics"):
        metrics, rows = _read_metrics(f["metrics"])
    with _Reading("/events"):
        recs, cols = _read_json_log(f["events"], ("time",))
        events = [{"time": float(t), "kind": r["kind"], "fields": r["fields"]} for r, t in zip(recs, cols["time"])]
    with _Reading("/checkpoints"):
        n = min(f["checkpoints/epoch"].shape[0], f["checkpoints/index"].shape[0], f["checkpoints/time"].shape[0])
        checkpoints = [int(e) for e in f["checkpoints/epoch"][:n]]
    probes = {}
    with _Reading("/probes"):
        for b, g in f["probes"].items():
            p = g["x"].shape[0]
            if not p:
                continue
            n = min(g["y"].shape[0] // p, g["time"].shape[0], g["step"].shape[0])
            probes[b] = {"x": g["x"][:], "y": g["y"][: n * p].reshape(n, p, g["y"].shape[1]), "step": g["step"][:n],
                         "time": g["time"][:n]}
    goodness = {}
    with _Reading("/goodness"):
        for b, g in f["goodness"].items():
            n = min(g["value"].shape[0], g["positive"].shape[0], g["epoch"].shape[0])
            if n:
                goodness[b] = {"epoch": g["epoch"][:n], "positive": g["positive"][:n].astype(bool),
                               "value": g["value"][:n]}
    with _Reading("/confusion"):
        recs, _ = _read_json_log(f["confusion"], ("epoch",))
        confusion = [{**r, "matrix": np.asarray(r["matrix"], dtype=np.int64)} for r in recs]
    with _Reading("/summary"):
        recs, _ = _read_json_log(f["summary"], ("time",))
        summary = recs[-1] if recs else {}
    return Run(path=path, attrs=attrs, status=_derive_status(attrs, events, live), config=config, dataset=dataset,
               systems=systems, metrics=metrics, epoch_rows=rows, events=events, checkpoints=checkpoints,
               probes=probes, goodness=goodness, confusion=confusion, summary=summary, live=live)


def load(path: str | os.PathLike) -> Run:
    """Read a run file (also while it is being written, or after its writer was killed).

    Raises :class:`RunFileError` naming the file and the problem for a
    missing, non-HDF5, truncated, corrupt or foreign file, or one written in
    a newer format version.
    """
    p = Path(path)
    return _with_file(p, lambda f, live: _read_run(f, p, live))


def last_checkpoint(path: str | os.PathLike, epoch: int | None = None) -> Checkpoint:
    """The last checkpoint of a run (or that of ``epoch``), for resuming.

    Unpacks as ``epoch, model_state, optim_state, rng_state, config``;
    ``.extra`` holds what was passed as ``extra=``. Tensors are equal bit for
    bit to what was written and come back on the CPU.
    """
    run = load(path)
    return run.checkpoint(epoch)
