"""Serial ports (pyserial, imported lazily so the package works without the serial extra)."""

from __future__ import annotations

import time
from typing import Any

from physnn.core import checks

from ..errors import ConnectionLost, InstrumentTimeout
from .base import _TERMIOS_ERRORS, PORT_ERRORS, Transport, _as_bytes

__all__ = ["SerialTransport"]


class SerialTransport(Transport):
    """A serial port through pyserial.

    Writes go out in :attr:`write_chunk`-byte pieces, so after an interrupted
    write the bytes that reached the port are known to within one piece
    (:attr:`unfinished_write`); :meth:`clear` discards pending input only.

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

    write_chunk = 256

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
        except serial.SerialTimeoutException as exc:
            raise InstrumentTimeout(
                f"write of {len(data)} bytes timed out after {self._timeout:g} s", resource=self.resource
            ) from exc
        except (serial.SerialException, OSError, TypeError, AttributeError, *_TERMIOS_ERRORS) as exc:
            raise ConnectionLost(f"write failed: {exc}", resource=self.resource) from exc
        if n is not None and n != len(data):
            raise InstrumentTimeout(f"short write: {n} of {len(data)} bytes", resource=self.resource)

    def _drain(self) -> None:
        import serial

        try:
            self._ser.flush()
        except (serial.SerialException, OSError, TypeError, AttributeError, *_TERMIOS_ERRORS) as exc:
            raise ConnectionLost(f"write failed while draining: {exc}", resource=self.resource) from exc

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

        try:  # output already handed to the OS is left to go out: cutting it would cut a frame in half
            self._ser.reset_input_buffer()
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
