"""VISA message-based resources (pyvisa, imported lazily so the package works without the visa extra)."""

from __future__ import annotations

from typing import Any

from physnn.core import checks

from ..errors import ConnectionLost, InstrumentError, InstrumentTimeout
from .base import Transport

__all__ = ["VisaTransport"]


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
        # a device clear resets the instrument's parser on INSTR resources (VXI-11, HiSLIP, USBTMC, GPIB), not on a
        # raw socket or a serial line; set to False if the backend turns out not to support it
        name = self.resource.upper()
        self.clear_resets_device = name.endswith("::INSTR") and not name.startswith("ASRL")  # type: ignore[misc]
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
            self.clear_resets_device = False  # type: ignore[misc]  # no device clear here: a cut message needs bytes
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
