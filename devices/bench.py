"""The shared bench base: what every instrument driver does, written once.

Why a base: an AWG + scope over VISA and a microcontroller over serial differ
in what a transaction is (one waveform, one RUN_BATCH frame), not in how a
bench must be handled around it. Both need the same bounded retry with
exponential back-off, the same reconnect (reopen, re-check the identity,
re-apply every setting), the same safe state on close and after any error
(Ctrl-C included), the same clip policy, drive limits in volts checked before
any byte is sent, the same "finished rows are never lost" rule, and the same
events in the run file. :class:`BenchSystem` owns all of that, with one
vocabulary for the constructor arguments:

==============  ==============================================================
``low, high``   drive limits in volts (the spec's; nothing outside is sent)
``retries``     extra attempts per transaction after a recoverable fault
``backoff``     first back-off in seconds, doubled per retry ...
``max_backoff`` ... up to this many seconds
``on_clip``     ``"flag"`` (default: count, report, mark in :attr:`last_clipped`)
                or ``"raise"`` (:class:`ClipError`, carrying the measurement)
``open``        open the bench (identity + configuration) in the constructor
==============  ==============================================================

A driver supplies the pieces that differ:

* :attr:`transports` -- the channels it owns (opened, reopened, closed here);
* :attr:`SETUP` -- the ordered table of configuration steps (method names)
  that :meth:`configure` walks after every (re)open: identity first, then
  every setting; one attempt each, the retry loop around it decides;
* :meth:`_encode` -- drive values to instrument codes (raises
  :class:`LimitError` before anything is written);
* :attr:`rows_per_transaction` and :meth:`_transact` -- one transaction (one
  attempt) for a chunk of rows: ``(values [k, n_out] in output units, clip
  mask)``;
* :meth:`_resync` -- drop stale replies after a timeout or a malformed reply;
* :meth:`safe_state` -- one idempotent command that leaves the outputs safe,
  done only when the instrument acknowledged it; it sets
  :attr:`safe_confirmed` (False while driving or unconfirmed, True once
  acknowledged), which is what a script may tell its user.

Events (through :meth:`report_event`, into the run file): a fault kind
(``timeout``, ``protocol_error``, ``connection_lost``, or a driver's own such
as ``crc_error``) with ``what``, ``attempt``, ``of``, ``action``
(``retry``/``give_up``/``raise``) and ``error``; ``retry`` (with ``backoff_s``)
before each new attempt; ``reconnected`` after a reopen; ``gave_up`` when the
retries are spent; ``clipped``; ``safe_state_failed`` and ``close_failed``
when a cleanup fails (reported, never replacing the error being raised);
``frame_flushed`` (serial) and ``message_ended`` (SCPI) when a message the
instrument held part of -- a write cut by Ctrl-C -- was ended before the next
command.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, ClassVar, Sequence, TypeVar

import numpy as np
import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec

from .errors import (
    ConnectionLost,
    InstrumentError,
    InstrumentReportedError,
    InstrumentTimeout,
    LimitError,
    ProtocolError,
)
from .transport import Transport

__all__ = ["BenchSystem", "ClipError", "CLIP_POLICIES", "with_context"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What a driver may do when its readout reaches full scale.
CLIP_POLICIES = ("flag", "raise")


class ClipError(InstrumentError):
    """Readout at full scale with ``on_clip="raise"``.

    Nothing is lost: ``measured`` (also ``partial``) holds the whole batch in
    the output units, ``mask`` the clipped entries (per sample or per value).
    """

    def __init__(self, message: str, measured: torch.Tensor, mask: torch.Tensor, *, resource: str | None = None):
        super().__init__(message, resource=resource)
        self.measured = measured
        self.mask = mask
        self.partial = measured
        self.completed_rows = int(measured.shape[0])


def with_context(err: InstrumentError, prefix: str) -> InstrumentError:
    """The same kind of error with ``prefix`` before its message (the original as ``__cause__``).

    Errors whose constructor takes more than a message (an instrument's own
    report, a clip) are returned unchanged.
    """
    if isinstance(err, (InstrumentReportedError, ClipError)):
        return err
    text = str(err)
    if err.resource and text.startswith(f"[{err.resource}] "):
        text = text[len(err.resource) + 3 :]
    try:
        new = type(err)(prefix + text, resource=err.resource)
    except TypeError:  # a constructor that needs more than a message
        return err
    new.__cause__ = err
    return new


class BenchSystem(PhysicalSystem):
    """A :class:`PhysicalSystem` on instruments: retries, reconnect, safe state, clip policy, limits.

    Args:
        spec: drive limits (volts) and shapes; the drive ``units`` must be ``"V"``.
        retries: extra attempts per transaction after a recoverable fault.
        backoff: first back-off (s), doubled per retry up to ``max_backoff``.
        max_backoff: longest back-off (s).
        on_clip: ``"flag"`` or ``"raise"`` (see the module docstring).
        device: where results are returned.

    Subclasses call this constructor, set up their transports, then call
    :meth:`open` if asked to.
    """

    #: Ordered configuration steps (method names) walked by :meth:`configure` after every (re)open.
    SETUP: ClassVar[tuple[str, ...]] = ()
    #: ``stats.counters`` key counting clipped entries.
    CLIP_COUNTER: ClassVar[str] = "clipped_values"
    #: Exception class raised for ``on_clip="raise"``.
    CLIP_ERROR: ClassVar[type[ClipError]] = ClipError

    def __init__(
        self,
        spec: SystemSpec,
        *,
        retries: int = 3,
        backoff: float = 0.02,
        max_backoff: float = 1.0,
        on_clip: str = "flag",
        device: str | torch.device = "cpu",
    ):
        super().__init__(spec, device=device)
        self.retries = checks.integer("retries", retries, low=0)
        self.backoff = checks.nonnegative("backoff", backoff)
        self.max_backoff = checks.nonnegative("max_backoff", max_backoff)
        self.on_clip = checks.choice("on_clip", on_clip, CLIP_POLICIES)
        self.last_clipped: torch.Tensor | None = None
        self.last_partial: torch.Tensor | None = None
        self._configured = False  # identity checked and every setting applied since the last (re)open
        self._link_lost = False  # a ConnectionLost was seen: reopen before the next attempt
        self._lock = threading.RLock()  # one batch, open or safe state at a time on the bench
        self._closed = True  # until open() succeeds
        #: True only while the instrument has acknowledged its safe state and nothing was driven since;
        #: False while driving or after a safe state that was not acknowledged; None before either.
        self.safe_confirmed: bool | None = None

    # ------------------------------------------------------ driver interface
    @property
    def transports(self) -> Sequence[Transport]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def resource(self) -> str:
        """The resource names of the bench, for messages."""
        return ", ".join(t.resource for t in self.transports)

    @property
    def rows_per_transaction(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode(self, x: torch.Tensor) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transact(self, codes: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _transaction_name(self, start: int, stop: int, batch: int) -> str:
        return f"rows {start}..{stop - 1} of {batch}"

    def _resync(self) -> None:
        """Drop pending input after a timeout or a malformed reply (default: clear every transport)."""
        for t in self.transports:
            t.clear()

    def _fault_kind(self, exc: InstrumentError) -> tuple[str | None, bool]:
        """``(event kind, retryable)`` for an error met during a transaction; kind None: raise at once, unreported."""
        if isinstance(exc, ConnectionLost):
            return "connection_lost", True
        if isinstance(exc, InstrumentTimeout):
            return "timeout", True
        if isinstance(exc, ProtocolError):
            return "protocol_error", True
        if isinstance(exc, InstrumentReportedError):
            return "instrument_error", False
        return None, False

    def _clip_message(self, mask: np.ndarray, y: torch.Tensor, n: int, rows: int) -> str:
        return f"{n} readout value(s) in {rows} row(s) at full scale; use on_clip='flag' to continue"

    # ------------------------------------------------------------ retrying
    def backoff_delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1, 2, ...): ``backoff * 2**(retry-1)``, capped."""
        return min(self.backoff * 2 ** (retry - 1), self.max_backoff)

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` with bounded retries: the one retry loop of every driver.

        Before every attempt the link is reopened if it was lost, and the
        bench reconfigured if it is not configured (so a reboot of the
        instrument is recovered the same way as a pulled cable). Before a
        retry: a ``retry`` event, the back-off, then :meth:`_resync` (a dead
        link found there is reopened instead). Recoverable faults are
        retried ``retries`` times; the last one is raised with ``what`` and
        the attempt count prefixed to its message.
        """
        tries = self.retries + 1
        last: InstrumentError | None = None
        for n in range(1, tries + 1):
            try:
                if last is not None:
                    delay = self.backoff_delay(n - 1)
                    self.report_event("retry", what=what, attempt=n, of=tries, backoff_s=delay)
                    time.sleep(delay)
                    if not self._link_lost:
                        try:
                            self._resync()
                        except ConnectionLost:
                            self._link_lost = True
                if self._link_lost:
                    self._reconnect()
                if not self._configured:
                    self.configure()
                return attempt()
            except InstrumentError as exc:
                kind, retryable = self._fault_kind(exc)
                if kind is None:
                    raise
                if isinstance(exc, ConnectionLost):
                    self._link_lost = True
                final = not retryable or n == tries
                action = "raise" if not retryable else ("give_up" if final else "retry")
                self.report_event(kind, what=what, attempt=n, of=tries, action=action, error=str(exc))
                if not retryable:
                    raise
                last = exc
        assert last is not None
        self.report_event("gave_up", what=what, attempts=tries, error=str(last))
        raise with_context(last, f"{what} failed after {tries} attempt(s): ")

    def _reconnect(self) -> None:
        """Reopen every transport; the next attempt re-checks the identity and re-applies the settings."""
        self._configured = False
        for t in self.transports:
            t.reopen()
        self._link_lost = False
        self.report_event("reconnected", resource=self.resource)

    def configure(self) -> None:
        """Walk :attr:`SETUP` in order (identity, then every setting). One attempt; ``_retrying`` retries it."""
        self._configured = False
        for step in self.SETUP:
            getattr(self, step)()
        self._configured = True

    # ------------------------------------------------------------ measuring
    def validate_input(self, x: Any) -> torch.Tensor:
        """The base checks, raised as :class:`LimitError` (a ValueError); nothing is written on failure."""
        try:
            return super().validate_input(x)
        except LimitError:
            raise
        except ValueError as exc:
            raise LimitError(str(exc), resource=self.resource) from None

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        """Encode, split into transactions (each retried), check clipping; partial rows kept on failure."""
        codes = self._encode(x)  # LimitError here: nothing has been written
        self.safe_confirmed = False  # from the first byte on, the outputs may be driven
        batch = codes.shape[0]
        done: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        self.last_partial = None
        try:
            with self._lock:
                rows = self.rows_per_transaction
                for start in range(0, batch, rows):
                    stop = min(start + rows, batch)
                    values, mask = self._retrying(
                        self._transaction_name(start, stop, batch),
                        lambda c=codes[start:stop], s=start: self._transact(c, s),
                    )
                    done.append(values)
                    masks.append(mask)
                y = torch.as_tensor(np.concatenate(done), dtype=torch.float32)
                self._check_clipping(np.concatenate(masks), y)
            return y.to(self.device)
        except BaseException as exc:  # KeyboardInterrupt included: outputs safe, then re-raise
            if not isinstance(exc, ClipError):
                partial = self._partial(done)
                self.last_partial = partial
                try:
                    exc.partial = partial  # type: ignore[attr-defined]
                    exc.completed_rows = int(partial.shape[0])  # type: ignore[attr-defined]
                except AttributeError:  # pragma: no cover - exceptions without a __dict__
                    pass
            self._safe_after_failure(exc)
            raise

    def _partial(self, done: list[np.ndarray]) -> torch.Tensor:
        """The finished rows as a float32 ``[rows_done, n_outputs]`` tensor (0 rows when none finished)."""
        if not done:
            return torch.zeros((0, self.spec.n_outputs), dtype=torch.float32)
        return torch.as_tensor(np.concatenate(done), dtype=torch.float32)

    def _check_clipping(self, mask: np.ndarray, y: torch.Tensor) -> None:
        """Count, report and (``on_clip="raise"``) raise for readout values at full scale."""
        self.last_clipped = torch.as_tensor(mask)
        n = int(mask.sum())
        if not n:
            return
        self.stats.count(self.CLIP_COUNTER, n)
        rows = int(mask.reshape(mask.shape[0], -1).any(axis=1).sum())
        first = [int(i) for i in np.argwhere(mask)[0]]
        self.report_event("clipped", values=n, rows=rows, first=first, action=self.on_clip)
        if self.on_clip == "raise":
            raise self.CLIP_ERROR(
                self._clip_message(mask, y, n, rows), y, torch.as_tensor(mask), resource=self.resource
            )

    # ------------------------------------------------------------ lifecycle
    def _open_transports(self) -> None:
        for t in self.transports:
            t.open()

    def _on_open_failure(self, exc: BaseException) -> None:
        """Called when :meth:`open` fails (default: try the safe state; the original error is raised)."""
        self._safe_after_failure(exc)

    def open(self) -> "BenchSystem":
        """Open the transports, check the identity and apply every setting (retried like a transaction)."""
        with self._lock:
            if not self._closed and self._configured:
                return self
            try:
                self._open_transports()
                self._configured = False
                self._retrying("open", lambda: None)
            except BaseException as exc:
                self._on_open_failure(exc)
                raise
            self._closed = False
        return self

    def _safe_after_failure(self, exc: BaseException) -> None:
        """Safe state after an error; a failure here is reported and never replaces ``exc``."""
        try:
            self.safe_state()
        except Exception as safe_exc:  # noqa: BLE001 - reported; the original error is the one raised
            self.report_event(
                "safe_state_failed", after=type(exc).__name__, error=f"{type(safe_exc).__name__}: {safe_exc}"
            )

    def _close_transports(self) -> None:
        for t in self.transports:
            try:
                t.close()
            except Exception as exc:  # noqa: BLE001 - a close failure must not hide the safe-state outcome
                self.report_event("close_failed", resource=t.resource, error=str(exc))

    def close(self) -> None:
        """Safe state, then close every transport. Idempotent. Raises if the safe state could not be confirmed."""
        with self._lock:
            if self._closed:
                self._close_transports()
                return
            try:
                self.safe_state()
            except Exception as exc:
                self.safe_confirmed = False
                self.report_event("safe_state_failed", after="close", error=f"{type(exc).__name__}: {exc}")
                if isinstance(exc, InstrumentError):  # the run file's close_failed says it plainly
                    err = with_context(exc, "safe state NOT acknowledged, the outputs may still be driven: ")
                    if err is not exc:
                        raise err from exc
                raise
            finally:
                self._closed = True
                self._configured = False
                self._close_transports()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            resource=self.resource,
            setup=list(self.SETUP),
            on_clip=self.on_clip,
            retries=self.retries,
            backoff_s=self.backoff,
            max_backoff_s=self.max_backoff,
        )
        return d
