"""Leave nothing driven: termination signals, a last-resort close at exit, confined paths.

Why this module: Ctrl-C already ends a run well -- Python raises
``KeyboardInterrupt`` in the main thread, the runner closes every system
(instruments to their safe state) and closes the run file with status
``interrupted``. A ``kill`` (SIGTERM) or a dropped SSH session (SIGHUP) used
to end the process at once instead, with the DACs left at the last drive and
no SAFE frame sent. :func:`shutdown_on_signals` turns those signals into
:class:`Terminated`, a ``KeyboardInterrupt`` subclass, so they take exactly the
path Ctrl-C takes: same safe state, same run-file status, no second code path
to get wrong. A second signal while that shutdown runs is logged and ignored
(a supervisor that sends SIGTERM twice must not abort the safe-state sequence
half way); SIGKILL cannot be caught, which is what the run file's crash
recovery is for.

:func:`track` keeps a weak registry of open systems; at interpreter exit
(``atexit``) any still open is closed -- a last resort for scripts that exit
through a path that skipped their own cleanup (``sys.exit`` in a callback, an
exception escaping outside the runner).

:func:`confined_paths` / :func:`check_write_path`: a run file is data, not
code, and ``--resume`` rebuilds systems from the options recorded in it. A
crafted file could name any folder as a cache and have ``--resume`` write
there. While the options of a run file are in use, a system that writes a
file asks :func:`check_write_path` first, which refuses any path outside the
run's folder and the user's cache folder.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import weakref
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from physnn.core.checks import ParameterError

__all__ = [
    "Terminated",
    "shutdown_on_signals",
    "deferred_signals",
    "track",
    "close_all",
    "open_systems",
    "drives_hardware",
    "instrument_mark",
    "instruments_since",
    "user_cache_dir",
    "confined_paths",
    "check_write_path",
]

log = logging.getLogger(__name__)

#: The signals that mean "stop now, but cleanly": kill's default, and the terminal (SSH session) going away.
DEFAULT_SIGNALS: tuple[int, ...] = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None
)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by a termination signal (SIGTERM, SIGHUP).

    A ``KeyboardInterrupt`` so that every ``except KeyboardInterrupt`` that
    puts a bench in its safe state and marks the run ``interrupted`` handles a
    ``kill`` the same way as a Ctrl-C. ``signum`` tells which signal; the
    conventional exit code is :attr:`exit_code` (128 + signal number).
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"terminated by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def shutdown_on_signals(signals: Sequence[int] = DEFAULT_SIGNALS) -> Iterator[None]:
    """Within the block, each of ``signals`` raises :class:`Terminated` in the main thread.

    The previous handlers are restored on exit. Only the first signal raises;
    later ones (while the ``except``/``finally`` clauses put benches in their
    safe state) are logged and ignored. Inside :func:`deferred_signals` the
    first signal waits until that block ends. Outside the main thread, where
    Python cannot install signal handlers, this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _STATE["fired"] is None and _STATE["pending"] is None

    def handler(signum: int, frame: Any) -> None:
        first = _STATE["fired"] or _STATE["pending"]
        if first is not None:
            log.warning(
                "%s received while shutting down after %s; finishing the shutdown first", _name(signum), _name(first)
            )
            return
        if _STATE["defer"]:
            _STATE["pending"] = signum
            log.warning("%s received while closing systems; it takes effect once they are closed", _name(signum))
            return
        _STATE["fired"] = signum
        raise Terminated(signum)

    previous: dict[int, Any] = {}
    try:
        for s in signals:
            previous[s] = signal.signal(s, handler)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if outermost:
            _STATE["fired"] = _STATE["pending"] = None


#: shared by the handler and :func:`deferred_signals` (signal handlers run in the main thread only)
_STATE: dict[str, Any] = {"fired": None, "pending": None, "defer": 0}


class deferred_signals:  # noqa: N801 - used like a function: ``with deferred_signals():``
    """Hold a termination signal back while a block that must finish runs (closing systems, the run file).

    Why: the signal handler raises wherever the main thread happens to be; a
    ``Terminated`` raised inside ``close()`` would cut a SAFE exchange in half.
    Within this block a signal is noted; when the outermost block ends it is
    raised as :class:`Terminated` -- unless an exception is already leaving the
    block, which then ends the run anyway. Blocks nest.
    """

    def __enter__(self) -> "deferred_signals":
        _STATE["defer"] += 1
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _STATE["defer"] -= 1
        if _STATE["defer"] == 0 and _STATE["pending"] is not None:
            signum = _STATE["pending"]
            _STATE["pending"] = None
            _STATE["fired"] = signum
            if exc_type is None:
                raise Terminated(signum)


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ------------------------------------------------------------ open systems
_OPEN: "weakref.WeakSet[Any]" = weakref.WeakSet()
_LOCK = threading.Lock()


#: (name, weak reference, query stats) of every tracked system that drives something (:func:`drives_hardware`),
#: in the order tracked: what a command's last line may say about instruments (:func:`instruments_since`)
_INSTRUMENTS: list[tuple[str, "weakref.ref[Any]", Any]] = []


def track(system: Any) -> Any:
    """Remember ``system`` (anything with ``close()`` and ``closed``) so it is closed at exit if still open.

    Weakly held: tracking keeps nothing alive. Returns ``system``.
    """
    with _LOCK:
        _OPEN.add(system)
        if drives_hardware(system):
            name = getattr(getattr(system, "spec", None), "name", type(system).__name__)
            _INSTRUMENTS.append((str(name), weakref.ref(system), getattr(system, "stats", None)))
    return system


def drives_hardware(system: Any) -> bool:
    """Whether closing ``system`` sends something: its class has its own safe state (an instrument, a simulated
    bench, a remote bench). A simulator's safe state is a no-op; a wrapper (``drifting``) counts as what it wraps.
    """
    from physnn.core.system import PhysicalSystem

    inner = getattr(system, "system", None)
    if isinstance(inner, PhysicalSystem) and inner is not system:
        return drives_hardware(inner)
    return getattr(type(system), "safe_state", None) is not PhysicalSystem.safe_state


def instrument_mark() -> int:
    """A mark for :func:`instruments_since`: how many instruments were tracked so far in this process."""
    with _LOCK:
        return len(_INSTRUMENTS)


def instruments_since(mark: int = 0, *, close: bool = False) -> list[tuple[str, str]]:
    """``(name, state)`` of every instrument tracked after ``mark``: ``"safe"`` (closed, no failed safe state
    reported), ``"unconfirmed"`` (a ``safe_state_failed`` was reported: its outputs may still be driven) or
    ``"open"``. ``close=True`` first closes those still open (safe state), as an interrupted command should.

    Why: the last line of an interrupted command says what it left behind; it must name instruments only
    where there were some, and call them safe only where nothing said otherwise. An instrument already
    released by its owner counts as closed (every physnn command closes what it opens).
    """
    with _LOCK:
        records = list(_INSTRUMENTS[mark:])
    out = []
    for name, ref, stats in records:
        system = ref()
        if close and system is not None and not getattr(system, "closed", True):
            try:
                system.close()
            except Exception as exc:  # noqa: BLE001 - reported below as unconfirmed
                log.error("%s could not be put in its safe state: %s; check it by hand", name, exc)
                out.append((name, "unconfirmed"))
                continue
        failed = bool(getattr(stats, "counters", {}).get("safe_state_failed"))
        if system is not None and not getattr(system, "closed", True):
            out.append((name, "open"))
        else:
            out.append((name, "unconfirmed" if failed else "safe"))
    return out


def open_systems() -> list[Any]:
    """Tracked systems that are not closed yet."""
    with _LOCK:
        return [s for s in list(_OPEN) if not getattr(s, "closed", False)]


def close_all() -> int:
    """Close every tracked system still open (safe state first); returns how many were closed.

    Errors are logged, never raised: this runs at exit, where the point is to
    reach every system, not to stop at the first that fails.
    """
    n, driven = 0, []
    for s in open_systems():
        name = getattr(getattr(s, "spec", None), "name", type(s).__name__)
        try:
            s.close()
            n += 1
        except Exception as exc:  # noqa: BLE001 - keep closing the others
            log.error("%s could not be closed / put in its safe state at exit: %s; check it by hand", name, exc)
            continue
        # a simulator's safe state is a no-op: only an instrument left open is worth a warning
        if drives_hardware(s):
            driven.append(name)
    if driven:
        log.warning("closed %d system(s) left open at exit (safe state sent): %s", len(driven), ", ".join(driven))
    return n


atexit.register(close_all)


# ------------------------------------------------------------ confined paths
_ROOTS: list[Path] | None = None
_ROOTS_SOURCE = ""


def user_cache_dir() -> Path:
    """The user's physnn cache folder: ``$PHYSNN_CACHE``, else ``$XDG_CACHE_HOME/physnn``, else ``~/.cache/physnn``."""
    env = os.environ.get("PHYSNN_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "physnn"


@contextlib.contextmanager
def confined_paths(roots: Iterable[str | os.PathLike], source: str) -> Iterator[None]:
    """While active, :func:`check_write_path` refuses paths outside ``roots``.

    Use it around everything that builds systems from options read out of a
    file (``source`` names it in messages): ``--resume RUN.h5`` confines to the
    run's folder and :func:`user_cache_dir`.
    """
    global _ROOTS, _ROOTS_SOURCE
    saved = (_ROOTS, _ROOTS_SOURCE)
    _ROOTS = [Path(r).resolve() for r in roots]
    _ROOTS_SOURCE = source
    try:
        yield
    finally:
        _ROOTS, _ROOTS_SOURCE = saved


def check_write_path(key: str, path: str | os.PathLike) -> Path:
    """``path`` (resolved, symlinks followed) if writing there is allowed, else a one-line ParameterError.

    Outside :func:`confined_paths` everything is allowed: a path a user typed
    is the user's choice. Inside, the path must lie in one of the roots.
    """
    p = Path(path)
    if _ROOTS is None:
        return p
    resolved = p.resolve()
    if any(resolved == r or r in resolved.parents for r in _ROOTS):
        return resolved
    raise ParameterError(
        f"{key} = {str(path)!r} read from {_ROOTS_SOURCE} lies outside the folders a run file may write to "
        f"({', '.join(str(r) for r in _ROOTS)}); paths from a run file are confined to the run's folder and "
        f"the user's cache folder"
    )
