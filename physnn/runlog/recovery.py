"""Crash recovery without external tools: the superblock's open-for-writing flags, clearing them
the way ``h5clear -s --increment`` does, and :func:`recover` for files left open by a dead writer."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import numpy as np

from physnn.runlog._common import (
    _HDF5_SIGNATURE,
    RunFileError,
    _attr_str,
    _h5file,
    _LeftOpenError,
    _libver,
    _writer_alive,
)
from physnn.runlog.columns import _JsonLog, _TextLog
from physnn.runlog.lock import hold
from physnn.runlog.reader import Run, load


# ---------------------------------------------------- superblock flag clearing
def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum HDF5 puts on its metadata."""
    m = 0xFFFFFFFF
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & m
    k = 0
    while length > 12:
        a = (a + int.from_bytes(data[k : k + 4], "little")) & m
        b = (b + int.from_bytes(data[k + 4 : k + 8], "little")) & m
        c = (c + int.from_bytes(data[k + 8 : k + 12], "little")) & m
        a = (a - c) & m
        a ^= _rot(c, 4)
        c = (c + b) & m  # noqa: E702
        b = (b - a) & m
        b ^= _rot(a, 6)
        a = (a + c) & m  # noqa: E702
        c = (c - b) & m
        c ^= _rot(b, 8)
        b = (b + a) & m  # noqa: E702
        a = (a - c) & m
        a ^= _rot(c, 16)
        c = (c + b) & m  # noqa: E702
        b = (b - a) & m
        b ^= _rot(a, 19)
        a = (a + c) & m  # noqa: E702
        c = (c - b) & m
        c ^= _rot(b, 4)
        b = (b + a) & m  # noqa: E702
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = data[k : k + length] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b
    c = (c - _rot(b, 14)) & m  # noqa: E702
    a ^= c
    a = (a - _rot(c, 11)) & m  # noqa: E702
    b ^= a
    b = (b - _rot(a, 25)) & m  # noqa: E702
    c ^= b
    c = (c - _rot(b, 16)) & m  # noqa: E702
    a ^= c
    a = (a - _rot(c, 4)) & m  # noqa: E702
    b ^= a
    b = (b - _rot(a, 14)) & m  # noqa: E702
    c ^= b
    c = (c - _rot(b, 24)) & m  # noqa: E702
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
        stored = struct.unpack("<I", bytes(block[n : n + 4]))[0]
        if _lookup3(bytes(block[:n])) != stored:
            raise RunFileError(
                path,
                "has a superblock whose checksum does not verify; not touching it "
                "(try `h5clear -s` from the HDF5 tools on a copy)",
            )
        if block[11] == 0:
            return False
        block[11] = 0
        # Also what ``h5clear --increment`` does: a writer killed under SWMR may have written data past
        # the end-of-allocation address recorded in the superblock; reopening for writing would then
        # fail with "addr overflow". Raise the EOA to the physical end of the file.
        fmt = {4: "<I", 8: "<Q"}.get(size_of_offsets)
        if fmt is not None:
            eoa_at = 12 + 2 * size_of_offsets
            eoa = struct.unpack(fmt, bytes(block[eoa_at : eoa_at + size_of_offsets]))[0]
            size = os.fstat(fh.fileno()).st_size
            if size > eoa:
                block[eoa_at : eoa_at + size_of_offsets] = struct.pack(fmt, size)
        block[n : n + 4] = struct.pack("<I", _lookup3(bytes(block[:n])))
        fh.seek(0)
        fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    return True


# ------------------------------------------------------- repairing a run file
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
    with hold(path):  # a writer or a resume in another process may not be inside the file meanwhile
        return _recover(path, force)


def _recover(path: Path, force: bool) -> bool:
    run = _load_for_repair(path, force)
    if not _superblock_flags(path):
        return False
    alive = _writer_alive(run.attrs)
    if alive is True:
        raise RunFileError(path, f"is being written by process {run.attrs.get('writer_pid')} on this host")
    if alive is None and not force:
        raise RunFileError(
            path,
            f"was left open by a writer on host {_attr_str(run.attrs.get('writer_host'))!r}; "
            f"if it is surely stopped, pass force=True",
        )
    _clear_superblock_flags(path)
    record = {
        "kind": "recovered",
        "fields": {"status": "aborted", "note": "the writer died without closing the run; every flushed epoch is kept"},
    }
    with _h5file(path, "r+", libver=_libver(run.format_version)) as f:
        f.attrs.modify("status", np.bytes_(b"aborted"))
        if run.format_version >= 2:
            last = run.metrics["epoch"][-1:]
            _TextLog(f["events"]).append(
                record, time=time.time(), epoch=int(last[0]) if last.size else -1, kind="recovered"
            )
        else:
            _JsonLog(f["events"], ("time",)).append(record, time.time())
    return True
