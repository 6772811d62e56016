"""Byte transports to instruments: VISA, serial, and a scripted fake for tests.

Why one small interface: drivers (SCPI AWG/scope, the serial DAQ) are written
once against :class:`Transport` and run unchanged over a VISA socket, a USB
serial port, an in-process simulated bench or a test script that checks every
byte. Each implementation supplies five primitives (write bytes, read exactly
``n`` bytes, read one terminated message, clear, open/close); everything else
(text commands, queries, IEEE 488.2 blocks, locking) lives here once.

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

IEEE 488.2 definite-length block: ``#`` + one digit ``n`` (1..9) + ``n``
decimal digits giving the byte count ``L`` + ``L`` data bytes. The
indefinite form ``#0`` is rejected: without a length a truncated transfer
cannot be detected.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

try:  # a dying pty/USB port raises termios.error (not an OSError) from tcdrain/tcflush
    import termios as _termios

    _TERMIOS_ERRORS: tuple[type[BaseException], ...] = (_termios.error,)
except ImportError:  # pragma: no cover - Windows
    _TERMIOS_ERRORS = ()

from physnn.core import checks

from .errors import ConnectionLost, InstrumentError, InstrumentTimeout, ProtocolError

__all__ = [
    "Transport",
    "VisaTransport",
    "SerialTransport",
    "ScriptedTransport",
    "encode_block",
    "parse_block",
]

#: What a port that went away raises from the OS or the serial stack (``serial.SerialException`` is an
#: ``OSError``); mapped to :class:`ConnectionLost` by every public :class:`Transport` method.
PORT_ERRORS: tuple[type[BaseException], ...] = (OSError, *_TERMIOS_ERRORS)

#: Largest block accepted by default (a scope's deepest memory in WORD format
#: is ~ 8 Mpts * 2 B); a header announcing more is taken as garbage.
DEFAULT_MAX_BLOCK = 256 * 1024 * 1024


def encode_block(data: bytes) -> bytes:
    """IEEE 488.2 definite-length block for ``data``: ``#<n><len><data>``."""
    data = bytes(data)
    length = str(len(data)).encode("ascii")
    if len(length) > 9:
        raise ValueError(f"block of {len(data)} bytes is too long for a definite-length header (max 999999999)")
    return b"#" + str(len(length)).encode("ascii") + length + data


def parse_block(buf: bytes, *, resource: str | None = None) -> tuple[bytes, int]:
    """Parse one definite-length block at the start of ``buf``.

    Returns ``(data, consumed)`` where ``consumed`` counts the header and data
    (not a trailing terminator). Raises :class:`ProtocolError` on bad framing
    or when ``buf`` holds fewer data bytes than the header announces.
    """
    buf = bytes(buf)
    length, header_len = _parse_block_header(buf, resource)
    end = header_len + length
    if len(buf) < end:
        raise ProtocolError(
            f"truncated block: header announces {length} data bytes, only {len(buf) - header_len} present",
            resource=resource,
        )
    return buf[header_len:end], end


def _parse_block_header(buf: bytes, resource: str | None) -> tuple[int, int]:
    if len(buf) < 2 or buf[:1] != b"#":
        raise ProtocolError(f"expected an IEEE 488.2 block starting with '#', got {buf[:16]!r}", resource=resource)
    nd = buf[1:2]
    if nd == b"0":
        raise ProtocolError(
            "indefinite-length block '#0' is not accepted (truncation would go unnoticed)", resource=resource
        )
    if not nd.isdigit():
        raise ProtocolError(f"bad block header: digit count {nd!r} is not 1..9 (got {buf[:16]!r})", resource=resource)
    n = int(nd)
    digits = buf[2 : 2 + n]
    if len(digits) < n or not digits.isdigit():
        raise ProtocolError(f"bad block header: length field {digits!r} is not {n} decimal digits", resource=resource)
    return int(digits), 2 + n


def _as_bytes(message: Union[str, bytes], encoding: str = "ascii") -> bytes:
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    if isinstance(message, str):
        return message.encode(encoding)
    raise TypeError(f"expected str or bytes, got {type(message).__name__}")


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
    """

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

    # ----------------------------------------------------------- primitives
    def _write_bytes(self, data: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

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
        """Write ``data`` verbatim (no termination added)."""
        with self.lock:
            self._check_open()
            with self._port_errors(f"write of {len(data)} bytes"):
                self._write_bytes(_as_bytes(data))

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


# --------------------------------------------------------------------- VISA
class VisaTransport(Transport):
    """A VISA message-based resource through pyvisa.

    Args:
        resource: VISA address, e.g. ``"TCPIP0::192.168.1.5::inst0::INSTR"``.
        backend: pyvisa backend: ``"@py"`` (pyvisa-py, default), ``"@ivi"``
            (a vendor VISA), or ``"<file>.yaml@sim"`` for pyvisa-sim.
        timeout: seconds.
        exclusive: request an exclusive VISA lock so that no other program can
            talk to the instrument mid-batch. Backends without locking
            (pyvisa-py, pyvisa-sim) open unlocked; ``self.locked`` says which.
        chunk_size: bytes per low-level read for blocks.
    """

    def __init__(
        self,
        resource: str,
        *,
        backend: str = "@py",
        timeout: float = 5.0,
        exclusive: bool = True,
        chunk_size: int = 1 << 20,
        open: bool = True,
        **kwargs: Any,
    ):
        super().__init__(resource, **kwargs)
        self.backend = backend
        self.exclusive = bool(exclusive)
        self.chunk_size = checks.integer("chunk_size", chunk_size, low=1)
        self.locked = False
        self._timeout = 0.0
        self._rm: Any = None
        self._res: Any = None
        self.timeout = timeout
        if open:
            self.open()

    # pyvisa is imported lazily so that the package works without the visa extra
    def _open(self) -> None:
        import pyvisa

        try:
            if self._rm is None:
                self._rm = pyvisa.ResourceManager(self.backend)
            res = None
            self.locked = False
            if self.exclusive:
                try:
                    res = self._rm.open_resource(self.resource, access_mode=pyvisa.constants.AccessModes.exclusive_lock)
                    self.locked = True
                except (NotImplementedError, ValueError):
                    res = None  # the backend has no locking (pyvisa-py on some interfaces)
                except pyvisa.errors.VisaIOError as exc:
                    if exc.error_code not in _NO_LOCKING:
                        raise  # e.g. locked by another program: refuse, never share a bench
                    res = None
            if res is None:
                res = self._rm.open_resource(self.resource)
        except Exception as exc:  # noqa: BLE001 - mapped to the one hierarchy
            raise self._map(exc, "open") from exc
        res.read_termination = self.read_termination or None
        res.write_termination = ""
        res.timeout = self._timeout * 1000.0
        self._res = res

    def _close(self) -> None:
        res, self._res = self._res, None
        if res is not None:
            try:
                res.close()
            except Exception as exc:  # noqa: BLE001
                raise self._map(exc, "close") from exc

    def _get_timeout(self) -> float:
        return self._timeout

    def _set_timeout(self, seconds: float) -> None:
        self._timeout = seconds
        if self._res is not None:
            try:
                self._res.timeout = seconds * 1000.0
            except Exception as exc:  # noqa: BLE001 - mapped to the one hierarchy
                raise self._map(exc, f"timeout change to {seconds:g} s") from exc

    def _write_bytes(self, data: bytes) -> None:
        try:
            self._res.write_raw(data)
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, f"write of {len(data)} bytes") from exc

    def _read_exact(self, n: int) -> bytes:
        try:
            data = self._res.read_bytes(n, chunk_size=min(n, self.chunk_size), break_on_termchar=False)
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, f"read of {n} bytes") from exc
        return bytes(data)

    def _read_message(self) -> bytes:
        try:
            return bytes(self._res.read_raw())
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, "read") from exc

    def _clear(self) -> None:
        import pyvisa

        try:
            self._res.clear()
        except (NotImplementedError, pyvisa.errors.VisaIOError) as exc:
            if isinstance(exc, pyvisa.errors.VisaIOError) and exc.error_code not in (
                pyvisa.constants.StatusCode.error_nonsupported_operation,
                pyvisa.constants.StatusCode.error_nonsupported_attribute,
            ):
                raise self._map(exc, "clear") from exc
        except Exception as exc:  # noqa: BLE001
            raise self._map(exc, "clear") from exc

    def _map(self, exc: BaseException, what: str) -> InstrumentError:
        import pyvisa

        if isinstance(exc, InstrumentError):
            return exc
        code = getattr(exc, "error_code", None)
        sc = pyvisa.constants.StatusCode
        if code == sc.error_timeout:
            return InstrumentTimeout(f"{what}: no reply within {self._timeout:g} s", resource=self.resource)
        if code == sc.error_resource_locked:
            return ConnectionLost(
                f"{what}: the instrument is locked by another program or session", resource=self.resource
            )
        if isinstance(exc, (pyvisa.errors.InvalidSession, ConnectionError, OSError)) or code in (
            sc.error_connection_lost,
            sc.error_io,
            sc.error_resource_not_found,
            sc.error_resource_busy,
            sc.error_closing_failed,
            sc.error_invalid_object,
        ):
            return ConnectionLost(f"{what}: {exc}", resource=self.resource)
        if isinstance(exc, pyvisa.errors.VisaIOError):
            return ConnectionLost(f"{what}: VISA error {code}: {exc}", resource=self.resource)
        if isinstance(exc, (ValueError, pyvisa.errors.Error)):
            return ConnectionLost(f"{what}: {exc}", resource=self.resource)
        return ConnectionLost(f"{what}: {type(exc).__name__}: {exc}", resource=self.resource)


def _no_locking_codes() -> tuple:
    try:
        from pyvisa.constants import StatusCode
    except ImportError:  # pragma: no cover - visa extra not installed
        return ()
    return (
        StatusCode.error_nonsupported_operation,
        StatusCode.error_nonsupported_attribute,
        StatusCode.error_invalid_access_mode,
    )


#: VISA status codes meaning "this backend cannot lock", after which the resource is opened unlocked.
_NO_LOCKING = _no_locking_codes()


# ------------------------------------------------------------------- serial
class SerialTransport(Transport):
    """A serial port through pyserial.

    Args:
        port: a device name (``"/dev/ttyACM0"``, ``"COM3"``), a pyserial URL
            (``"loop://"``, ``"socket://host:port"``) or an already
            constructed ``serial.Serial`` (used as is; ``reopen`` reopens it).
        baudrate: bits per second.
        timeout: seconds, applied to reads (total per call) and writes.
        exclusive: lock the port (POSIX ``flock``) when opening by device
            name, so another program cannot write to the bench mid-batch.
        write_termination / read_termination: default to none, for binary
            protocols; set ``"\\n"`` for a text protocol.
    """

    def __init__(
        self,
        port: Any,
        *,
        baudrate: int = 115200,
        timeout: float = 1.0,
        exclusive: bool = True,
        write_termination: str = "",
        read_termination: str = "",
        open: bool = True,
        **kwargs: Any,
    ):
        import serial

        if isinstance(port, serial.SerialBase):
            name = port.port or repr(port)
            self._ser: Any = port
            self._given = True
        elif isinstance(port, str) and port:
            name = port
            self._ser = None
            self._given = False
        else:
            raise ValueError(f"port must be a port name, a pyserial URL or a serial.Serial, got {port!r}")
        super().__init__(name, write_termination=write_termination, read_termination=read_termination, **kwargs)
        self.port = port
        self.baudrate = checks.integer("baudrate", baudrate, low=1)
        self.exclusive = bool(exclusive)
        self._timeout = 0.0
        self.timeout = timeout
        if open:
            self.open()

    def _open(self) -> None:
        import serial

        try:
            if self._given:
                if not self._ser.is_open:
                    self._ser.open()
            else:
                kwargs: dict[str, Any] = dict(
                    baudrate=self.baudrate, timeout=self._timeout, write_timeout=self._timeout
                )
                if "://" not in self.port:
                    kwargs["exclusive"] = self.exclusive
                self._ser = serial.serial_for_url(self.port, **kwargs)
            self._ser.timeout = self._timeout
            self._ser.write_timeout = self._timeout
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ConnectionLost(f"cannot open serial port: {exc}", resource=self.resource) from exc

    def _close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception as exc:  # noqa: BLE001
                raise ConnectionLost(f"close failed: {exc}", resource=self.resource) from exc

    def _get_timeout(self) -> float:
        return self._timeout

    def _set_timeout(self, seconds: float) -> None:
        self._timeout = seconds
        if self._ser is not None:
            try:  # pyserial reconfigures the port: tcgetattr/tcsetattr fail on a port that went away
                self._ser.timeout = seconds
                self._ser.write_timeout = seconds
            except (*PORT_ERRORS, ValueError) as exc:
                raise ConnectionLost(f"timeout change to {seconds:g} s failed: {exc}", resource=self.resource) from exc

    def _write_bytes(self, data: bytes) -> None:
        import serial

        try:
            n = self._ser.write(data)
            self._ser.flush()
        except serial.SerialTimeoutException as exc:
            raise InstrumentTimeout(
                f"write of {len(data)} bytes timed out after {self._timeout:g} s", resource=self.resource
            ) from exc
        except (serial.SerialException, OSError, TypeError, AttributeError, *_TERMIOS_ERRORS) as exc:
            raise ConnectionLost(f"write failed: {exc}", resource=self.resource) from exc
        if n is not None and n != len(data):
            raise InstrumentTimeout(f"short write: {n} of {len(data)} bytes", resource=self.resource)

    def _read_exact(self, n: int) -> bytes:
        import serial

        buf = bytearray()
        deadline = time.monotonic() + self._timeout
        try:
            while len(buf) < n:
                chunk = self._ser.read(n - len(buf))
                if chunk:
                    buf.extend(chunk)
                elif time.monotonic() >= deadline:
                    break
                if time.monotonic() >= deadline and len(buf) < n:
                    break
        except (serial.SerialException, OSError, TypeError, AttributeError, *_TERMIOS_ERRORS) as exc:
            raise ConnectionLost(f"read failed after {len(buf)} of {n} bytes: {exc}", resource=self.resource) from exc
        if len(buf) < n:
            exc2 = InstrumentTimeout(
                f"short read: got {len(buf)} of {n} bytes within {self._timeout:g} s", resource=self.resource
            )
            exc2.received = bytes(buf)  # type: ignore[attr-defined]
            raise exc2
        return bytes(buf)

    def _read_message(self) -> bytes:
        import serial

        term = _as_bytes(self.read_termination or "\n", self.encoding)
        try:
            data = self._ser.read_until(term)
        except (serial.SerialException, OSError, TypeError, AttributeError, *_TERMIOS_ERRORS) as exc:
            raise ConnectionLost(f"read failed: {exc}", resource=self.resource) from exc
        if not data.endswith(term):
            exc2 = InstrumentTimeout(
                f"no complete reply (ending {term!r}) within {self._timeout:g} s; got {data[:64]!r}",
                resource=self.resource,
            )
            exc2.received = bytes(data)  # type: ignore[attr-defined]
            raise exc2
        return bytes(data)

    def _clear(self) -> None:
        import serial

        try:
            self._ser.reset_input_buffer()
            self._ser.reset_output_buffer()
        except (serial.SerialException, OSError, AttributeError, *_TERMIOS_ERRORS) as exc:
            raise ConnectionLost(f"clear failed: {exc}", resource=self.resource) from exc

    @property
    def in_waiting(self) -> int:
        """Bytes already received and not yet read."""
        with self.lock:
            self._check_open()
            try:
                return int(self._ser.in_waiting)
            except Exception as exc:  # noqa: BLE001
                raise ConnectionLost(f"in_waiting failed: {exc}", resource=self.resource) from exc


# ----------------------------------------------------------------- scripted
class ScriptedTransport(Transport):
    """A transport that checks every write against a script and plays replies.

    The script is a sequence of ``(expect, reply)`` steps, consumed in order:

    * ``expect`` is what the next write must be, exactly: ``str`` is encoded
      and the write termination appended (``"OUTP1 OFF"`` matches
      ``b"OUTP1 OFF\\n"``); ``bytes`` is compared verbatim.
    * ``reply`` is queued for reading after that write: ``str`` gets the read
      termination appended, ``bytes`` is verbatim, ``None`` queues nothing
      (a read then times out: a dropped reply), and an exception instance is
      raised from the write itself (e.g. ``ConnectionLost(...)``).

    A write different from the expected one raises :class:`ProtocolError`
    showing both. Every byte written is recorded in ``written`` (and each
    write in ``writes``), mismatches included, so a test can assert that
    nothing reached the instrument. ``verify()`` (and ``close()``) raise if a
    step is left unused. Reads on an empty input raise
    :class:`InstrumentTimeout` at once.
    """

    def __init__(
        self,
        script: Iterable[Sequence[Any]] = (),
        *,
        resource: str = "scripted",
        timeout: float = 1.0,
        verify_on_close: bool = True,
        **kwargs: Any,
    ):
        super().__init__(resource, **kwargs)
        self.steps: list[tuple[Any, Any]] = []
        self.extend(script)
        self.position = 0
        self.written = bytearray()
        self.writes: list[bytes] = []
        self.verify_on_close = verify_on_close
        self._input = bytearray()
        self._timeout = float(timeout)
        self.clears = 0
        self.reopens = 0
        self._opened_once = False
        self.open()

    def extend(self, script: Iterable[Sequence[Any]]) -> None:
        """Append steps to the script."""
        for step in script:
            if len(step) != 2:
                raise ValueError(f"a script step is (expect, reply), got {step!r}")
            self.steps.append((step[0], step[1]))

    def feed(self, data: bytes) -> None:
        """Queue bytes for reading without a write (e.g. a late reply arriving)."""
        self._input.extend(_as_bytes(data))

    @property
    def remaining(self) -> list[tuple[Any, Any]]:
        return self.steps[self.position :]

    def _expected_bytes(self, expect: Any) -> bytes:
        if isinstance(expect, str):
            return _as_bytes(expect + self.write_termination, self.encoding)
        return _as_bytes(expect)

    def _write_bytes(self, data: bytes) -> None:
        self.written.extend(data)
        self.writes.append(data)
        if self.position >= len(self.steps):
            raise ProtocolError(f"unexpected write {data!r}: the script is exhausted", resource=self.resource)
        expect, reply = self.steps[self.position]
        want = self._expected_bytes(expect)
        if data != want:
            raise ProtocolError(
                f"script step {self.position}: expected write {_show(want)}, got {_show(data)}", resource=self.resource
            )
        self.position += 1
        if isinstance(reply, BaseException):
            raise reply
        if reply is None:
            return
        if isinstance(reply, str):
            self._input.extend(_as_bytes(reply + self.read_termination, self.encoding))
        else:
            self._input.extend(_as_bytes(reply))

    def _read_exact(self, n: int) -> bytes:
        if len(self._input) < n:
            partial = bytes(self._input)
            self._input.clear()
            exc = InstrumentTimeout(f"short read: got {len(partial)} of {n} bytes (script)", resource=self.resource)
            exc.received = partial  # type: ignore[attr-defined]
            raise exc
        data = bytes(self._input[:n])
        del self._input[:n]
        return data

    def _read_message(self) -> bytes:
        term = _as_bytes(self.read_termination or "\n", self.encoding)
        idx = self._input.find(term)
        if idx < 0:
            partial = bytes(self._input)
            self._input.clear()
            exc = InstrumentTimeout(f"no reply (script); pending input {partial[:64]!r}", resource=self.resource)
            exc.received = partial  # type: ignore[attr-defined]
            raise exc
        data = bytes(self._input[: idx + len(term)])
        del self._input[: idx + len(term)]
        return data

    def _clear(self) -> None:
        self.clears += 1
        self._input.clear()

    def _open(self) -> None:
        if self._opened_once:
            self.reopens += 1
        self._opened_once = True

    def _close(self) -> None:
        self._input.clear()
        if self.verify_on_close:
            self.verify()

    def _get_timeout(self) -> float:
        return self._timeout

    def _set_timeout(self, seconds: float) -> None:
        self._timeout = seconds

    def verify(self) -> None:
        """Raise :class:`ProtocolError` if any scripted step was not used."""
        left = self.steps[self.position :]
        if left:
            shown = ", ".join(_show(self._expected_bytes(e)) for e, _ in left[:5])
            more = f" (+{len(left) - 5} more)" if len(left) > 5 else ""
            raise ProtocolError(
                f"{len(left)} scripted step(s) never written, next expected: {shown}{more}", resource=self.resource
            )


def _show(data: bytes, limit: int = 80) -> str:
    return repr(data[:limit]) + (f"...(+{len(data) - limit} bytes)" if len(data) > limit else "")
