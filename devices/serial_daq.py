"""A microcontroller DAQ bench (DACs in, ADCs out) as a :class:`PhysicalSystem`.

The board speaks the physnn serial DAQ protocol version 1
(``shared/protocols/serial-daq.md``, implemented in
:mod:`physnn.devices.serial_protocol`): one RUN_BATCH frame carries a whole
chunk of samples, so a batch costs ``ceil(B / rows_per_frame)`` round trips
whatever the per-sample settle time.

Units and calibration
---------------------
Drive values are volts at the DAC outputs; the spec's ``low``/``high`` are the
bench's safe voltage range (continuous). A volt value ``v`` becomes the DAC
code ``round((v - dac.offset_v) / dac.volts_per_code)``; the code limits sent
with SET_LIMITS are the codes whose nominal voltage lies inside
``[low, high]`` (``ceil`` of the low end, ``floor`` of the high end), so a
value at the edge of the range is rounded to the nearest code that is still
inside it. Measurements are ADC codes returned as volts,
``adc.offset_v + code * adc.volts_per_code``.

Safety
------
Values are checked against the safe range on the host before any byte is
encoded (:class:`LimitError`, a ``ValueError``; nothing is written), and the
board checks the code limits again before touching a DAC. SAFE is sent on
``close()``, after any exception during a batch, and on Ctrl-C (then the
``KeyboardInterrupt`` is re-raised).

Recovery
--------
Each request carries a fresh SEQ; a reply with another SEQ is stale (a late
answer to an earlier request) and is dropped while reading continues until the
timeout, so a late reply is never taken for the next answer. Per chunk, with at
most ``retries`` retries and exponential back-off:

* timeout, CRC error, malformed reply, device ``BAD_CRC``/``BUSY``: clear the
  input, send the request again (new SEQ);
* lost connection: reopen the port, IDENT (re-checked) and SET_LIMITS again,
  then resend the chunk;
* any other device error (``OUT_OF_LIMITS``, ``BATCH_TOO_LARGE``,
  ``HARDWARE_FAULT``...) or an identity mismatch: raised at once.

A retry re-runs only the failed chunk: rows already measured are kept, and if
the batch finally fails the exception carries them as ``exc.partial`` (volts,
``[completed_rows, n_outputs]``) and ``exc.completed_rows``. Every fault and
retry goes to :meth:`report_event` (the caller's run-file hook) and is counted
in ``stats.counters``.

Saturated ADC values (code 0 or full scale) are counted in
``stats.counters["adc_saturated_values"]`` and, per ``on_clip``, raised as
:class:`ADCSaturation` (carrying the full measurement) or flagged in
:attr:`last_saturated`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from physnn.system import PhysicalSystem, SystemSpec

from .errors import ConnectionLost, InstrumentError, InstrumentTimeout, LimitError, ProtocolError
from .serial_protocol import (
    CMD_IDENT,
    CMD_RUN_BATCH,
    CMD_SAFE,
    CMD_SET_LIMITS,
    CRCError,
    DeviceError,
    Frame,
    FrameReader,
    Ident,
    PROTOCOL_VERSION,
    command_name,
    decode_codes,
    encode_codes,
    encode_frame,
    encode_set_limits,
    parse_error,
    parse_ident,
    reply_cmd,
    rows_per_frame,
)
from .transport import SerialTransport, Transport

__all__ = ["Calibration", "SerialDAQSystem", "ADCSaturation", "ConfigurationMismatch", "read_reply", "probe_ident"]

T = TypeVar("T")

try:  # pyserial lets termios.error (not an OSError) escape from flush()/tcdrain and tcflush on a dead pty/USB port
    import termios as _termios

    _PORT_ERRORS: tuple[type[BaseException], ...] = (_termios.error,)
except ImportError:  # pragma: no cover - Windows
    _PORT_ERRORS = ()

#: Device errors worth a retry: the request was corrupted on the wire, or the
#: board was momentarily busy. Everything else is a real refusal.
RETRYABLE_DEVICE_ERRORS = ("BAD_CRC", "BUSY")


@dataclass(frozen=True)
class Calibration:
    """Linear code <-> volt map of a DAC or ADC: ``volts = offset_v + code * volts_per_code``."""

    volts_per_code: float
    offset_v: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.volts_per_code, (int, float)) and math.isfinite(self.volts_per_code)
                and self.volts_per_code > 0):
            raise ValueError(f"volts_per_code must be a positive finite number, got {self.volts_per_code!r}")
        if not (isinstance(self.offset_v, (int, float)) and math.isfinite(self.offset_v)):
            raise ValueError(f"offset_v must be a finite number of volts, got {self.offset_v!r}")

    @classmethod
    def full_scale(cls, bits: int, low_v: float, high_v: float) -> "Calibration":
        """The calibration of a converter spanning ``low_v`` (code 0) .. ``high_v`` (code 2**bits - 1)."""
        return cls((high_v - low_v) / (2**bits - 1), low_v)


class ConfigurationMismatch(InstrumentError):
    """The board's IDENT disagrees with the configuration (wrong board, firmware or protocol)."""


class ADCSaturation(InstrumentError):
    """ADC values at 0 or full scale with ``on_clip="raise"``.

    ``measured`` holds the whole batch in volts (nothing is lost), ``mask``
    the saturated entries.
    """

    def __init__(self, message: str, measured: torch.Tensor, mask: torch.Tensor, *, resource: str | None = None):
        super().__init__(message, resource=resource)
        self.measured = measured
        self.mask = mask


class SerialDAQSystem(PhysicalSystem):
    """DAC drive (volts) -> analog system -> ADC readout (volts) over serial.

    Args:
        transport: an open :class:`~physnn.devices.transport.Transport`
            (normally a ``SerialTransport``) or a port name / pyserial URL,
            opened as ``SerialTransport(port, baudrate=baudrate, timeout=timeout)``.
            The system owns it and closes it on ``close()``.
        n_inputs, n_outputs: DAC and ADC channels; must equal IDENT's
            ``n_in``/``n_out``.
        low, high: the safe drive range in volts (inclusive).
        dac, adc: calibrations (volts per code, offset).
        dac_bits, adc_bits: converter widths; must equal IDENT's.
        serial: the board's expected serial number (None accepts any; the one
            found is recorded in :meth:`describe`).
        on_clip: ``"flag"`` (count and mark in :attr:`last_saturated`) or
            ``"raise"`` (:class:`ADCSaturation`) for ADC values at 0 or full scale.
        timeout: seconds to wait for one reply (stale replies included).
        retries: extra attempts per request after a recoverable fault.
        backoff: first back-off in seconds, doubled per retry up to ``max_backoff``.
        max_rows: optional cap on rows per RUN_BATCH frame (below the board's
            ``max_batch`` and the payload limit).
        baudrate: used only when ``transport`` is a port name.
        name: spec name used in messages.
        open: open the bench (IDENT + SET_LIMITS) now.
    """

    #: unit of the measurements (the spec's ``units`` is the drive's)
    output_units = "V"

    def __init__(
        self,
        transport: Transport | str,
        *,
        n_inputs: int,
        n_outputs: int,
        low: float,
        high: float,
        dac: Calibration,
        adc: Calibration,
        dac_bits: int = 16,
        adc_bits: int = 16,
        serial: str | None = None,
        on_clip: str = "flag",
        timeout: float = 1.0,
        retries: int = 3,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
        max_rows: int | None = None,
        baudrate: int = 115200,
        name: str = "serial-daq",
        device: str | torch.device = "cpu",
        open: bool = True,
    ):
        spec = SystemSpec(int(n_inputs), int(n_outputs), float(low), float(high), None, name=name, units="V")
        super().__init__(spec, device=device)
        for key, bits in (("dac_bits", dac_bits), ("adc_bits", adc_bits)):
            if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
                raise ValueError(f"{key} must be an integer in 1..16 (codes are u16), got {bits!r}")
        if not isinstance(dac, Calibration) or not isinstance(adc, Calibration):
            raise TypeError("dac and adc must be Calibration(volts_per_code, offset_v) instances")
        if on_clip not in ("flag", "raise"):
            raise ValueError(f"on_clip must be 'flag' or 'raise', got {on_clip!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        for key, val in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val >= 0) or (key == "timeout" and val <= 0):
                raise ValueError(f"{key} must be a finite number of seconds ({'> 0' if key == 'timeout' else '>= 0'}), got {val!r}")
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
            raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
        self.dac = dac
        self.adc = adc
        self.dac_bits = dac_bits
        self.adc_bits = adc_bits
        self.expected_serial = serial
        self.on_clip = on_clip
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_rows = max_rows
        self.code_limits = self._code_limits()
        self.ident: Ident | None = None
        self.last_saturated: torch.Tensor | None = None
        self._seq = 0
        self._configured = False
        self._link_lost = False
        if isinstance(transport, str):
            transport = SerialTransport(transport, baudrate=baudrate, timeout=self.timeout)
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must be a Transport or a port name, got {type(transport).__name__}")
        self.transport = transport
        self._closed = True
        if open:
            try:
                self.open()
            except BaseException:
                # never driven (no RUN_BATCH yet): release the port so the user can fix the setup and retry
                try:
                    transport.close()
                except Exception:  # noqa: BLE001 - the open error is the one to report
                    pass
                raise

    # ------------------------------------------------------------ conversions
    @property
    def resource(self) -> str:
        return self.transport.resource

    def _code_limits(self) -> tuple[int, int]:
        """DAC codes whose nominal voltage lies inside [low, high]; checked against the DAC width."""
        s, cal = self.spec, self.dac
        lo = math.ceil((s.low - cal.offset_v) / cal.volts_per_code - 1e-9)
        hi = math.floor((s.high - cal.offset_v) / cal.volts_per_code + 1e-9)
        full = 2**self.dac_bits - 1
        if lo < 0 or hi > full:
            raise LimitError(
                f"the safe range {s.low:g}..{s.high:g} V maps to DAC codes {lo}..{hi} with the calibration "
                f"{cal.volts_per_code:.6g} V/code + {cal.offset_v:g} V, outside the {self.dac_bits}-bit DAC's 0..{full}"
            )
        if lo > hi:
            raise LimitError(
                f"the safe range {s.low:g}..{s.high:g} V contains no DAC code "
                f"(calibration {cal.volts_per_code:.6g} V/code + {cal.offset_v:g} V)"
            )
        return lo, hi

    def validate_input(self, x: Any) -> torch.Tensor:
        """The base checks, raised as :class:`LimitError` (a ValueError); nothing is written on failure."""
        try:
            return super().validate_input(x)
        except LimitError:
            raise
        except ValueError as exc:
            raise LimitError(str(exc), resource=self.resource) from None

    def volts_to_codes(self, x: torch.Tensor) -> np.ndarray:
        """``[B, n_in]`` volts -> uint16 DAC codes, checked against the code limits.

        Raises LimitError naming row, column, volts and limit for a value
        outside the safe range (before anything is encoded or written).
        """
        v = x.detach().to("cpu", torch.float64).numpy()
        s = self.spec
        bad = ~np.isfinite(v) | (v < s.low) | (v > s.high)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise LimitError(
                f"{s.name} input[{r}, {c}] = {v[r, c]:.6g} V is outside the safe range {s.low:g}..{s.high:g} V",
                resource=self.resource,
            )
        lo, hi = self.code_limits
        codes = np.rint((v - self.dac.offset_v) / self.dac.volts_per_code)
        return np.clip(codes, lo, hi).astype(np.uint16)

    def codes_to_volts(self, codes: np.ndarray) -> torch.Tensor:
        """ADC codes -> volts (float32 tensor)."""
        v = self.adc.offset_v + codes.astype(np.float64) * self.adc.volts_per_code
        return torch.from_numpy(v.astype(np.float32))

    # -------------------------------------------------------------- protocol
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _request(self, cmd: int, payload: bytes = b"") -> Frame:
        """One request and its reply (one attempt): stale replies are skipped, errors raised."""
        seq = self._next_seq()
        frame = encode_frame(cmd, seq, payload)
        self._port_call(self.transport.write_raw, frame)
        return self._read_reply(cmd, seq)

    def _port_call(self, fn: Callable[..., T], *args: Any) -> T:
        return _port_call(fn, *args, resource=self.resource)

    def _read_reply(self, cmd: int, seq: int) -> Frame:
        return read_reply(self.transport, cmd, seq, self.timeout, on_event=self.report_event)

    def _handshake(self) -> None:
        """IDENT (checked against the configuration), then SET_LIMITS. One attempt each."""
        ident = parse_ident(self._request(CMD_IDENT).payload)
        wrong = []
        if ident.protocol != PROTOCOL_VERSION:
            wrong.append(f"protocol {ident.protocol} (this driver speaks {PROTOCOL_VERSION})")
        for key, want in (("n_in", self.spec.n_inputs), ("n_out", self.spec.n_outputs),
                          ("dac_bits", self.dac_bits), ("adc_bits", self.adc_bits)):
            if getattr(ident, key) != want:
                wrong.append(f"{key}={getattr(ident, key)} (configured {want})")
        if self.expected_serial is not None and ident.serial != self.expected_serial:
            wrong.append(f"serial {ident.serial!r} (configured {self.expected_serial!r})")
        if wrong:
            raise ConfigurationMismatch(
                f"board {ident.model!r} firmware {ident.firmware!r} does not match the configuration: "
                + "; ".join(wrong),
                resource=self.resource,
            )
        frame = self._request(CMD_SET_LIMITS, encode_set_limits(*self.code_limits))
        if frame.payload:
            raise ProtocolError(f"SET_LIMITS reply has a {len(frame.payload)}-byte payload, expected none",
                                resource=self.resource)
        self.ident = ident
        self._configured = True

    def _ensure_ready(self) -> None:
        if self._link_lost:
            self._configured = False
            self._port_call(self.transport.reopen)
            self._link_lost = False
            self.report_event("reopened", resource=self.resource)
        if not self._configured:
            self._handshake()

    def _with_retries(self, what: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` (after making sure the link is configured), retrying recoverable faults."""
        tries = self.retries + 1
        for n in range(1, tries + 1):
            try:
                self._ensure_ready()
                return attempt()
            except DeviceError as exc:
                if exc.code_name not in RETRYABLE_DEVICE_ERRORS:
                    self.report_event("device_error", what=what, code=exc.code_name, error=str(exc))
                    raise
                kind, err = "device_" + exc.code_name.lower(), exc
            except CRCError as exc:
                kind, err = "crc_error", exc
            except ConnectionLost as exc:
                kind, err = "connection_lost", exc
                self._link_lost = True
            except InstrumentTimeout as exc:
                kind, err = "timeout", exc
            except ProtocolError as exc:
                kind, err = "protocol_error", exc
            last = n == tries
            self.report_event(kind, what=what, attempt=n, of=tries, action="give_up" if last else "retry",
                              error=str(err))
            if last:
                raise _with_context(err, f"{what} failed after {tries} attempt(s): ")
            time.sleep(min(self.backoff * 2 ** (n - 1), self.max_backoff))
            if not self._link_lost:
                try:
                    self._port_call(self.transport.clear)
                except ConnectionLost:
                    self._link_lost = True
        raise AssertionError("unreachable")  # pragma: no cover

    # --------------------------------------------------------------- measure
    @property
    def rows_per_frame(self) -> int:
        """Rows per RUN_BATCH frame: the board's max_batch, the payload limit and ``max_rows``."""
        if self.ident is None:
            raise RuntimeError(f"{self.spec.name}: not opened yet (no IDENT)")
        rows = rows_per_frame(self.spec.n_inputs, self.spec.n_outputs, self.ident.max_batch)
        return min(rows, self.max_rows) if self.max_rows else rows

    def _run_chunk(self, payload: bytes, n: int) -> np.ndarray:
        frame = self._request(CMD_RUN_BATCH, payload)
        self.stats.count("run_batch_frames")
        codes = decode_codes(frame.payload, self.spec.n_outputs, expected_rows=n)
        full = 2**self.adc_bits - 1
        if codes.size and int(codes.max()) > full:
            r, c = np.argwhere(codes > full)[0]
            raise ProtocolError(
                f"ADC code {int(codes[r, c])} at row {r}, channel {c} exceeds the {self.adc_bits}-bit full scale {full}",
                resource=self.resource,
            )
        return codes

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        codes = self.volts_to_codes(x)  # LimitError here: nothing has been written
        batch = codes.shape[0]
        out = np.zeros((batch, self.spec.n_outputs), dtype=np.uint16)
        done = 0
        try:
            with self.transport.lock:
                rows = self.rows_per_frame
                for start in range(0, batch, rows):
                    stop = min(start + rows, batch)
                    payload = encode_codes(codes[start:stop])
                    out[start:stop] = self._with_retries(
                        f"RUN_BATCH rows {start}..{stop - 1} of {batch}",
                        lambda p=payload, k=stop - start: self._run_chunk(p, k),
                    )
                    done = stop
            volts = self.codes_to_volts(out)
            self._check_saturation(out, volts)
            return volts.to(self.device)
        except BaseException as exc:  # KeyboardInterrupt included: outputs safe, then re-raise
            if not isinstance(exc, ADCSaturation):
                exc.partial = self.codes_to_volts(out[:done])  # type: ignore[attr-defined]
                exc.completed_rows = done  # type: ignore[attr-defined]
            self._safe_after_failure(exc)
            raise

    def _check_saturation(self, codes: np.ndarray, volts: torch.Tensor) -> None:
        full = 2**self.adc_bits - 1
        mask = (codes == 0) | (codes == full)
        self.last_saturated = torch.from_numpy(mask)
        n = int(mask.sum())
        if not n:
            return
        self.stats.count("adc_saturated_values", n)
        rows = int(mask.any(axis=1).sum())
        self.report_event("adc_saturated", values=n, rows=rows, action=self.on_clip)
        if self.on_clip == "raise":
            r, c = np.argwhere(mask)[0]
            raise ADCSaturation(
                f"{n} ADC value(s) in {rows} row(s) at 0 or full scale {full} (first: row {r}, channel {c}, "
                f"code {int(codes[r, c])}); lower the drive or the gain, or use on_clip='flag'",
                volts,
                torch.from_numpy(mask),
                resource=self.resource,
            )

    # ------------------------------------------------------------- lifecycle
    def _safe_after_failure(self, exc: BaseException) -> None:
        try:
            self.safe_state()
        except Exception as safe_exc:  # noqa: BLE001 - report, never mask the original error
            self.report_event("safe_failed", error=str(safe_exc), after=type(exc).__name__)

    def safe_state(self) -> None:
        """Send SAFE (every DAC to its safe code). Idempotent; retried like any request."""
        if not self.transport.is_open and not self._link_lost:
            self._link_lost = True
        with self.transport.lock:
            frame = self._with_retries("SAFE", lambda: self._request(CMD_SAFE))
        self.stats.count("safe_sent")
        if frame.payload:
            raise ProtocolError(f"SAFE reply has a {len(frame.payload)}-byte payload, expected none",
                                resource=self.resource)

    def open(self) -> "SerialDAQSystem":
        """Open the port if needed, IDENT (checked) and SET_LIMITS."""
        if not self._closed:
            return self
        if not self.transport.is_open:
            self.transport.open()
        self.transport.timeout = self.timeout
        self._configured = False
        with self.transport.lock:
            try:
                self._port_call(self.transport.clear)
            except ConnectionLost:
                self._link_lost = True
            self._with_retries("open", lambda: None)
        self._closed = False
        return self

    def close(self) -> None:
        """SAFE, then close the port. Idempotent. Raises if SAFE could not be confirmed."""
        if self._closed:
            if self.transport.is_open:
                self.transport.close()
            return
        try:
            self.safe_state()
        except Exception as exc:
            self.report_event("safe_failed", error=str(exc), after="close")
            raise
        finally:
            self._closed = True
            self.transport.close()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            resource=self.resource,
            ident=self.ident.to_dict() if self.ident else None,
            dac_calibration=asdict(self.dac),
            adc_calibration=asdict(self.adc),
            dac_bits=self.dac_bits,
            adc_bits=self.adc_bits,
            code_limits=list(self.code_limits),
            on_clip=self.on_clip,
            timeout_s=self.timeout,
            retries=self.retries,
            backoff_s=self.backoff,
            max_rows=self.max_rows,
        )
        return d


def read_reply(
    transport: Transport,
    cmd: int,
    seq: int,
    timeout: float,
    *,
    on_event: Callable[..., None] | None = None,
) -> Frame:
    """Read frames until the reply to request (``cmd``, ``seq``) arrives or ``timeout`` s pass.

    Reads exactly as many bytes as the frame being assembled needs, so bytes of
    a following frame stay in the port. Frames with another SEQ are stale:
    reported as ``stale_reply`` and skipped. Raises InstrumentTimeout (noting a
    truncated frame), CRCError, DeviceError for an error reply, ProtocolError
    for a reply with the wrong CMD; ConnectionLost from the port.
    """
    resource = transport.resource
    deadline = time.monotonic() + timeout
    reader = FrameReader()
    event = on_event or (lambda kind, **fields: None)

    def cleanup_failed(exc: InstrumentError) -> None:
        event("cleanup_failed", action="restore_timeout", command=command_name(cmd), seq=seq, error=str(exc))

    with transport.preserved_timeout(on_cleanup_error=cleanup_failed):
        while True:
            frame = reader.next_frame()  # CRCError propagates; the caller clears and retries
            if frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise InstrumentTimeout(f"no {command_name(cmd)} reply (seq={seq}) within {timeout:g} s",
                                            resource=resource)
                if remaining < transport.timeout - 1e-3:
                    transport.timeout = remaining
                try:
                    reader.feed(transport.read_exact(reader.needed()))
                except InstrumentTimeout as exc:
                    got = reader.buffered
                    what = f"only {got} bytes of a {command_name(cmd)} frame" if got else f"no {command_name(cmd)} reply"
                    raise InstrumentTimeout(
                        f"{what} (seq={seq}) within {timeout:g} s" + (" (truncated)" if got else ""),
                        resource=resource,
                    ) from exc
                continue
            if reader.skipped:
                event("skipped_bytes", count=reader.skipped, command=command_name(cmd), seq=seq)
                reader.skipped = 0
            if frame.seq != seq:
                event("stale_reply", command=command_name(frame.cmd), seq=frame.seq, expected_seq=seq)
                continue
            if frame.is_error:
                raise parse_error(frame.payload, resource=resource)
            if frame.cmd != reply_cmd(cmd):
                raise ProtocolError(
                    f"reply to {command_name(cmd)} (seq={seq}) has CMD 0x{frame.cmd:02X}, expected 0x{reply_cmd(cmd):02X}",
                    resource=resource,
                )
            return frame


def probe_ident(transport: Transport, *, timeout: float = 1.0, seq: int = 0) -> Ident:
    """Ask a board for its IDENT without configuring or driving anything.

    For lab scripts (to show what is connected, or to fill in a configuration)
    and hardware smoke tests. Clears pending input first.
    """
    transport.clear()
    transport.write_raw(encode_frame(CMD_IDENT, seq))
    return parse_ident(read_reply(transport, CMD_IDENT, seq, timeout).payload)


def _port_call(fn: Callable[..., T], *args: Any, resource: str | None = None) -> T:
    """Call a transport method, mapping stray termios errors to ConnectionLost."""
    try:
        return fn(*args)
    except _PORT_ERRORS as exc:
        raise ConnectionLost(f"{getattr(fn, '__name__', 'port call')} failed: {exc}", resource=resource) from exc


def _with_context(err: InstrumentError, prefix: str) -> InstrumentError:
    """The same kind of error with a prefix explaining the retries (DeviceError kept as is)."""
    if isinstance(err, DeviceError):
        return err
    text = str(err)
    if err.resource and text.startswith(f"[{err.resource}] "):
        text = text[len(err.resource) + 3 :]
    new = type(err)(prefix + text, resource=err.resource)
    new.__cause__ = err
    return new
