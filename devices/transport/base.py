"""The transport base: :class:`Transport`, the channel every driver is written against.

Guarantees every implementation gives:

* Errors are the ones of :mod:`physnn.devices.errors` only, in every phase of
  a transaction (write, read, timeout change, clear, open, close): a missing
  or short reply is :class:`InstrumentTimeout` (never fewer bytes than asked),
  a port that went away is :class:`ConnectionLost` (a raw ``OSError``,
  ``serial.SerialException`` or ``termios.error`` escaping an implementation
  is mapped to it here, once), bad framing is :class:`ProtocolError`. A short
  read attaches what did arrive as ``exc.received`` (bytes) so a caller can
  report it.
* A cleanup never replaces the error being handled:
  :meth:`Transport.preserved_timeout` restores a changed timeout on the way
  out, and if that fails too (a dead port) while an error is in flight, the
  original error is the one raised and the cleanup failure is reported.
* A :class:`threading.RLock` (``transport.lock``) serialises callers: a
  ``query`` holds it from the write to the end of the reply, so two threads
  can never interleave a command with someone else's answer.
* ``query_binary`` either returns the complete block or raises; a truncated
  or malformed block is a :class:`ProtocolError`, never a short array.
* A write that does not complete (Ctrl-C, a write timeout, a port that died
  half-way) is remembered as :attr:`Transport.unfinished_write`: its bytes and
  how many of them may have left (``sent_min..sent_max``, exact to one
  :attr:`Transport.write_chunk`). Why: an instrument whose parser holds half a
  message swallows the next command into it -- the safe-state command
  included -- so a driver must end that message before it can reach its safe
  state, and only the bytes written tell it how (see
  :mod:`physnn.devices.serial_daq` and :mod:`physnn.devices.scpi`).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Union

try:  # a dying pty/USB port raises termios.error (not an OSError) from tcdrain/tcflush
    import termios as _termios

    _TERMIOS_ERRORS: tuple[type[BaseException], ...] = (_termios.error,)
except ImportError:  # pragma: no cover - Windows
    _TERMIOS_ERRORS = ()


from physnn.core import checks

from ..errors import ConnectionLost, InstrumentError, InstrumentTimeout, ProtocolError
from .blocks import DEFAULT_MAX_BLOCK, encode_block

__all__ = ["Transport", "PORT_ERRORS", "UnfinishedWrite"]

#: What a port that went away raises from the OS or the serial stack (``serial.SerialException`` is an
#: ``OSError``); mapped to :class:`ConnectionLost` by every public :class:`Transport` method.
PORT_ERRORS: tuple[type[BaseException], ...] = (OSError, *_TERMIOS_ERRORS)


def _as_bytes(message: Union[str, bytes], encoding: str = "ascii") -> bytes:
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, str):
        return message.encode(encoding)
    raise TypeError(f"expected str or bytes, got {type(message).__name__}")


@dataclass(frozen=True)
class UnfinishedWrite:
    """A write that did not complete: ``data``, of which ``sent_min..sent_max`` bytes may have left the host.

    Bytes handed to the OS or the bus count as sent (they go out even if the
    process is interrupted); the uncertainty is the one chunk that was being
    written when the write was cut.
    """

    data: bytes
    sent_min: int
    sent_max: int

    def __repr__(self) -> str:
        return f"UnfinishedWrite({self.sent_min}..{self.sent_max} of {len(self.data)} bytes sent)"


class Transport:
    """A message/byte channel to one instrument.

    Subclasses implement ``_write_bytes``, ``_read_exact``, ``_read_message``,
    ``_clear``, ``_open``, ``_close`` and the ``_get_timeout``/``_set_timeout``
    pair. Text commands are ASCII; ``write_termination`` is appended to every
    command and ``read_termination`` stripped from every text reply.

    Args:
        resource: the address or port name, used in every error message.
        write_termination / read_termination: message terminators (``"\\n"``
            for SCPI instruments).
        encoding: text encoding of commands and replies.
        max_block: largest IEEE block accepted, in bytes.

    Class attributes a backend sets:

    * :attr:`write_chunk` -- bytes per ``_write_bytes`` call (None: one call per
      write, for buses where a call is a message, such as VISA). Smaller
      chunks narrow :attr:`unfinished_write`'s uncertainty.
    * :attr:`clear_resets_device` -- whether :meth:`clear` also resets the
      instrument's input parser (an IEEE 488.2 device clear), so a half
      message it holds is dropped.
    """

    write_chunk: ClassVar[int | None] = None
    clear_resets_device: ClassVar[bool] = False

    def __init__(
        self,
        resource: str,
        *,
        write_termination: str = "\n",
        read_termination: str = "\n",
        encoding: str = "ascii",
        max_block: int = DEFAULT_MAX_BLOCK,
    ):
        self.resource = str(resource)
        self.write_termination = write_termination
        self.read_termination = read_termination
        self.encoding = encoding
        self.max_block = checks.integer("max_block", max_block, low=1)
        self.lock = threading.RLock()
        self._is_open = False
        #: the last write that did not complete, until a driver takes it (:meth:`take_unfinished_write`)
        self.unfinished_write: UnfinishedWrite | None = None

    # ----------------------------------------------------------- primitives
    def _write_bytes(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _drain(self) -> None:
        """Wait until written bytes have left the host's buffers (default: nothing to wait for)."""

    def _read_exact(self, n: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read_message(self) -> bytes:  # pragma: no cover - abstract
        """Read one message up to and including the read termination (or END)."""
        raise NotImplementedError

    def _clear(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _open(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _get_timeout(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_timeout(self, seconds: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -------------------------------------------------------------- public
    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def timeout(self) -> float:
        """Read/write timeout in seconds."""
        return self._get_timeout()

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        seconds = checks.positive("timeout", seconds)
        with self.lock, self._port_errors("timeout change"):
            self._set_timeout(seconds)

    @contextlib.contextmanager
    def _port_errors(self, what: str) -> Iterator[None]:
        """Map a raw OS/serial/termios error from a primitive to :class:`ConnectionLost` (ours pass through)."""
        try:
            yield
        except InstrumentError:
            raise
        except PORT_ERRORS as exc:
            raise ConnectionLost(f"{what} failed: {exc}", resource=self.resource) from exc

    @contextlib.contextmanager
    def preserved_timeout(self, on_cleanup_error: Callable[[InstrumentError], None] | None = None) -> Iterator[float]:
        """Restore the timeout on the way out, whatever the body changed it to; yields the saved value.

        Why: a reader that shortens the timeout to meet its own deadline must
        put it back, but on a port that just died the restore fails too. That
        failure must never replace the error that ended the body (it would
        hide a ConnectionLost behind a cleanup error and bypass the
        reconnect): it is handed to ``on_cleanup_error`` and the original
        error propagates. With no error in flight, a failed restore is raised
        (as :class:`ConnectionLost`): the port is unusable.
        """
        saved = self._get_timeout()
        failed = True
        try:
            yield saved
            failed = False
        finally:
            if self._is_open and self._get_timeout() != saved:
                try:
                    self.timeout = saved
                except InstrumentError as exc:
                    if not failed:
                        raise
                    if on_cleanup_error is not None:
                        on_cleanup_error(exc)

    def _check_open(self) -> None:
        if not self._is_open:
            raise ConnectionLost("transport is closed", resource=self.resource)

    def write_raw(self, data: bytes) -> None:
        """Write ``data`` verbatim (no termination added), in :attr:`write_chunk` pieces.

        If the write does not complete -- whatever ends it, Ctrl-C included --
        :attr:`unfinished_write` records the data and how much of it may have
        left, and the exception propagates.
        """
        data = _as_bytes(data)
        with self.lock:
            self._check_open()
            sent, in_flight = 0, 0
            try:
                with self._port_errors(f"write of {len(data)} bytes"):
                    size = self.write_chunk or max(len(data), 1)
                    for start in range(0, len(data), size):
                        chunk = data[start : start + size]
                        in_flight = len(chunk)
                        self._write_bytes(chunk)
                        sent, in_flight = sent + len(chunk), 0
                    self._drain()
            except BaseException:
                if sent < len(data):
                    self.unfinished_write = UnfinishedWrite(data, sent, sent + in_flight)
                raise

    def take_unfinished_write(self) -> UnfinishedWrite | None:
        """The last write that did not complete (None if none), forgotten here: the caller now owns it."""
        with self.lock:
            record, self.unfinished_write = self.unfinished_write, None
            return record

    def write(self, command: str) -> None:
        """Write a text command followed by the write termination."""
        self.write_raw(_as_bytes(command + self.write_termination, self.encoding))

    def read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes or raise :class:`InstrumentTimeout` (with ``.received``)."""
        n = checks.integer("read_exact byte count", n, low=0)
        if n == 0:
            return b""
        with self.lock:
            self._check_open()
            with self._port_errors(f"read of {n} bytes"):
                data = self._read_exact(n)
        if len(data) != n:  # implementations raise; this guards a faulty one
            exc = InstrumentTimeout(f"short read: got {len(data)} of {n} bytes", resource=self.resource)
            exc.received = data  # type: ignore[attr-defined]
            raise exc
        return data

    def read(self) -> str:
        """Read one text reply, without its termination."""
        with self.lock:
            self._check_open()
            with self._port_errors("read"):
                raw = self._read_message()
        term = _as_bytes(self.read_termination, self.encoding)
        if term and raw.endswith(term):
            raw = raw[: -len(term)]
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError:
            raise ProtocolError(f"reply is not {self.encoding} text: {raw[:64]!r}", resource=self.resource) from None

    def query(self, command: str) -> str:
        """Write ``command`` and read its reply, holding the lock throughout."""
        with self.lock:
            self.write(command)
            return self.read()

    def write_binary(self, header: str, data: bytes) -> None:
        """Write ``header`` then ``data`` as one definite-length block, then the termination.

        ``header`` is written verbatim, so it carries its own separator, e.g.
        ``"SOUR1:DATA:ARB:DAC physnn,"``. The whole command is one write.
        """
        message = (
            _as_bytes(header, self.encoding) + encode_block(data) + _as_bytes(self.write_termination, self.encoding)
        )
        self.write_raw(message)

    write_block = write_binary

    def read_binary(self) -> bytes:
        """Read one definite-length block (and its termination) that is already on its way."""
        with self.lock:
            head = self._read_block_bytes(2, "block header")
            if head[:1] != b"#":
                raise ProtocolError(f"expected a block starting with '#', got {head!r}", resource=self.resource)
            if head[1:2] == b"0":
                raise ProtocolError("indefinite-length block '#0' is not accepted", resource=self.resource)
            if not head[1:2].isdigit():
                raise ProtocolError(f"bad block header {head!r}: digit count is not 1..9", resource=self.resource)
            digits = self._read_block_bytes(int(head[1:2]), "block length field")
            if not digits.isdigit():
                raise ProtocolError(f"bad block length field {digits!r}", resource=self.resource)
            length = int(digits)
            if length > self.max_block:
                raise ProtocolError(
                    f"block header announces {length} bytes, more than max_block={self.max_block}",
                    resource=self.resource,
                )
            data = self._read_block_bytes(length, f"block data ({length} bytes)")
            term = _as_bytes(self.read_termination, self.encoding)
            if term:
                tail = self._read_block_bytes(len(term), "termination after the block")
                if tail != term:
                    raise ProtocolError(
                        f"block of {length} bytes not followed by the termination {term!r} (got {tail!r}); "
                        "the length field or the data is corrupt",
                        resource=self.resource,
                    )
            return data

    def query_binary(self, command: str) -> bytes:
        """Write ``command`` and read a definite-length block reply.

        Raises :class:`ProtocolError` when the block is truncated (the data
        stops before the announced length) or malformed; never returns a
        short array.
        """
        with self.lock:
            self.write(command)
            return self.read_binary()

    def _read_block_bytes(self, n: int, what: str) -> bytes:
        try:
            return self.read_exact(n)
        except InstrumentTimeout as exc:
            got = len(getattr(exc, "received", b""))
            err = ProtocolError(
                f"truncated block: {what}: got {got} of {n} bytes before the timeout", resource=self.resource
            )
            err.received = getattr(exc, "received", b"")  # type: ignore[attr-defined]
            raise err from exc

    def clear(self) -> None:
        """Discard pending input (and, where the bus has it, send a device clear)."""
        with self.lock:
            self._check_open()
            with self._port_errors("clear"):
                self._clear()

    def open(self) -> "Transport":
        with self.lock:
            if not self._is_open:
                with self._port_errors("open"):
                    self._open()
                self._is_open = True
        return self

    def close(self) -> None:
        """Close the channel. Idempotent."""
        with self.lock:
            if self._is_open:
                self._is_open = False
                with self._port_errors("close"):
                    self._close()

    def reopen(self) -> None:
        """Close (ignoring errors from a dead port) and open again with the same settings."""
        with self.lock:
            if self._is_open:
                self._is_open = False
                try:
                    self._close()
                except Exception:  # noqa: BLE001 - the port is being replaced; its close may fail
                    pass
            with self._port_errors("reopen"):
                self._open()
            self._is_open = True

    def __enter__(self) -> "Transport":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"{type(self).__name__}({self.resource!r}, {state})"
