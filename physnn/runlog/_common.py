"""Shared low-level pieces of the run-file package: format constants, errors, argument checks,
small HDF5/attribute helpers and the writer-liveness check used by the reader, the writer and recovery."""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
import torch

from physnn.core import checks

FORMAT_NAME = "physnn-run"
#: Version of the layout described in docs/run-format.md. Readers refuse newer versions.
#: 1: JSON in uint8 byte streams, written with libver="latest" (read, never appended to).
#: 2: bounded libver, fletcher32 on every raw dataset, units/long_name, dimension scales, text logs.
#: 3: checkpoints retained (last, best, every N-th) in a reused arena, arrays stored once; a sample byte budget.
FORMAT_VERSION = 3
#: HDF5 file-format bounds of version-2 and -3 files: the lowest that keeps SWMR (superblock v3) and the
#: same as the highest, so that HDF5 1.10 tools (Debian's hdf5-tools, MATLAB R2021+) read every object.
LIBVER = ("v110", "v110")
#: Values of the root ``status`` attribute. ``aborted``: the writer died without closing the run.
STATUSES = ("running", "completed", "interrupted", "failed", "aborted")

_RESERVED_METRICS = frozenset({"epoch", "time", "segment"})
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
_BLOCK_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_ROW_CHUNK = 512
_TEXT_CHUNK = 16384
_DATA_CHUNK = 1 << 16
#: Unix time as CF units, so that xarray decodes time columns to datetimes.
TIME_UNITS = "seconds since 1970-01-01 00:00:00"
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
    names"); any other name is still stored (in ``/late_metrics``).
    """
    names = ["loss"]
    for b in blocks:
        names += [f"loss/{b}", f"g_pos/{b}", f"g_neg/{b}"]
    names += [
        "train_accuracy",
        "test_accuracy",
        "train_queries",
        "eval_queries",
        "device_seconds",
        "digital_flops",
        "epoch_seconds",
        "wall_seconds",
    ]
    return names


def _libver(version: int) -> Any:
    """libver to reopen a file of run-format ``version`` with: v1 files were written with "latest"."""
    return LIBVER if version >= 2 else "latest"


#: Units of the metric names the trainers log (a prefix before '/' counts: 'loss/block0' -> 'loss').
_METRIC_UNITS = {
    "loss": ("1", "training loss"),
    "g_pos": ("a.u.", "mean goodness of positive data"),
    "g_neg": ("a.u.", "mean goodness of negative data"),
    "train_accuracy": ("1", "training accuracy (fraction)"),
    "test_accuracy": ("1", "test accuracy (fraction)"),
    "val_accuracy": ("1", "validation accuracy (fraction)"),
    "train_queries": ("1", "physical samples queried for training during the epoch"),
    "eval_queries": ("1", "physical samples queried for evaluation during the epoch"),
    "device_seconds": ("s", "seconds spent inside the physical systems during the epoch"),
    "digital_flops": ("FLOP", "digital floating-point operations during the epoch"),
    "epoch_seconds": ("s", "wall time of the epoch"),
    "wall_seconds": ("s", "wall time since training started"),
}


def metric_units(name: str) -> tuple[str, str]:
    """(units, long_name) of a metric column: known trainer names get theirs, others '1' and their name."""
    head, _, tail = name.partition("/")
    units, long_name = _METRIC_UNITS.get(name, _METRIC_UNITS.get(head, ("1", name)))
    if name not in _METRIC_UNITS and head in _METRIC_UNITS and tail:
        long_name = f"{long_name} ({tail})"
    return units, long_name


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
    return checks.integer(what, value, low=0)


def _iso_now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _git_commit() -> str:
    """The commit of the physnn source tree when it is a git checkout, else ''."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
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


# ------------------------------------------- shared by the reader, the writer and recovery
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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
