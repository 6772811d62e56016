"""One writer per run file: an OS file lock on a sidecar file beside it (``.RUN.h5.lock``).

Why: two ``physnn train --resume RUN.h5`` started at once both read "nobody is writing" from the run
file's own attributes and then both opened it for writing (2 of 6 trials): a check followed by an open is
not one step. A lock taken *before* the check makes it one. It is a ``flock`` on a sidecar file rather
than on the HDF5 file itself because HDF5 takes its own locks on the file it opens (and a new run file
does not exist until it is complete, see :class:`~physnn.runlog.RunWriter`).

The operating system grants the lock to one open file at a time and drops it when the process ends,
however it ends (``kill -9`` included), so no stale lock is ever left to clear by hand. The sidecar
records who holds it (pid, host, since when) for the one-line error the second writer gets; the holder
removes it when it lets go. The lock is re-entrant within a process (the runner holds it across a whole
``--resume``, and the writer it opens takes it again), so it guards against other processes; within one
process the writer's own open-for-writing check applies.

Linux ``flock`` also holds across hosts on NFS (it is emulated with byte-range locks there); a file
system without locks is refused with a one-line error rather than written unguarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from physnn.runlog._common import RunFileError

__all__ = ["RunFileLocked", "acquire", "release", "hold", "holder", "lock_path"]

_GUARD = threading.Lock()
#: resolved lock path -> [fd, depth]: the locks this process holds
_HELD: dict[str, list[int]] = {}


class RunFileLocked(RunFileError):
    """The run file is open for writing by another process; the message names it (pid, host, since)."""


def lock_path(path: str | os.PathLike) -> Path:
    """The sidecar lock file of run file ``path``: ``.NAME.lock`` in the same folder."""
    p = Path(path).absolute()
    return p.with_name(f".{p.name}.lock")


def holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the lock of run file ``path`` as its sidecar says (``pid``, ``host``, ``since``), or None."""
    try:
        text = lock_path(path).read_text()
        info = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it has not said which yet)"
    return f"process {info.get('pid')} on host {info.get('host')!r} since {info.get('since')}"


def acquire(path: str | os.PathLike) -> None:
    """Take the write lock of run file ``path`` or raise :class:`RunFileLocked` naming its holder (no waiting)."""
    lp = lock_path(path)
    key = str(lp)
    with _GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            return
        lp.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                info = None
                for _ in range(20):  # the holder writes its name right after it takes the lock
                    info = holder(path)
                    if info:
                        break
                    time.sleep(0.005)
                raise RunFileLocked(
                    path,
                    f"is open for writing by {_describe(info)}; only one process may write a run file at a "
                    f"time: wait for that one to end or stop it (its lock goes with it, even after kill -9)",
                ) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise RunFileError(
                        path,
                        f"cannot be locked for writing on this file system ({exc.strerror}); write the run "
                        f"file on a local disk or one that supports file locks",
                    ) from None
                raise
            # the holder before us may have removed the sidecar as it let go: the lock must be on the file
            # that is there now, or a third process could lock a new sidecar beside ours
            try:
                same = os.stat(lp).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        record = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        ).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        _HELD[key] = [fd, 1]


def release(path: str | os.PathLike) -> None:
    """Let go of one :func:`acquire` of run file ``path``; the last one removes the sidecar and unlocks."""
    key = str(lock_path(path))
    with _GUARD:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(key)  # still locked: nobody else can be holding this sidecar
        os.close(held[0])


def _forget_in_child() -> None:
    """A forked child shares its parent's locks but does not own them: it forgets them (its copies of the
    descriptors are closed; the lock stays with the parent, whose descriptors are still open)."""
    global _GUARD
    _GUARD = threading.Lock()  # another thread may have held it at the fork
    for fd, _ in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


@contextlib.contextmanager
def hold(path: str | os.PathLike) -> Iterator[None]:
    """``with hold(path):`` -- the write lock of run file ``path`` for the block (see :func:`acquire`)."""
    acquire(path)
    try:
        yield
    finally:
        release(path)
