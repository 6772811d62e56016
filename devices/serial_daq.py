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
``adc.offset_v + code * adc.volts_per_code`` (``output_units = "V"``).

Safety and recovery (the shared :class:`~physnn.devices.bench.BenchSystem`)
--------------------------------------------------------------------------
Values are checked against the safe range on the host before any byte is
encoded (:class:`LimitError`, a ``ValueError``; nothing is written), and the
board checks the code limits again before touching a DAC. SAFE is sent on
``close()``, after any exception during a batch, and on Ctrl-C (then the
``KeyboardInterrupt`` is re-raised), and counts as done only when its reply
arrives (:attr:`~physnn.devices.bench.BenchSystem.safe_confirmed`).

SAFE in any frame state
-----------------------
A board without a frame timeout that got only part of a frame (a write cut by
Ctrl-C, a write timeout, a dying port) waits for the rest and would swallow
the next request -- SAFE included -- into it. Before every request the driver
therefore ends such a frame first: the transport knows which bytes of the cut
write may have left (:attr:`~physnn.devices.transport.Transport.unfinished_write`),
and :func:`~physnn.devices.serial_protocol.flush_after` turns that into a run
of non-SOF bytes that completes every frame the board could be assembling
with a wrong CRC (nothing is executed; the board answers ``BAD_CRC``, dropped
as a stale reply). After a request that got no reply at all (the board may
have lost a byte and still be waiting), one longest frame of zero bytes is
sent before the next request (:func:`~physnn.devices.serial_protocol.unknown_state_flush`).
Both are only bytes the protocol defines (a hunting receiver skips non-SOF
bytes); a flush cut in turn is sent again whole, which only adds bytes the
board skips.

Each request carries a fresh SEQ; a reply with another SEQ is stale (a late
answer to an earlier request) and is dropped while reading continues until the
timeout, so a late reply is never taken for the next answer. Per RUN_BATCH
chunk, with at most ``retries`` retries and exponential back-off:

* timeout, CRC error, malformed reply, device ``BAD_CRC``/``BUSY``: clear the
  input, send the request again (new SEQ);
* lost connection (in any phase: write, read, timeout change, clear): reopen
  the port, IDENT (re-checked) and SET_LIMITS again, then resend the chunk;
* any other device error (``OUT_OF_LIMITS``, ``BATCH_TOO_LARGE``,
  ``HARDWARE_FAULT``...) or an identity mismatch: raised at once.

A retry re-runs only the failed chunk: rows already measured are kept, and if
the batch finally fails the exception carries them as ``exc.partial`` (volts,
float32 ``[completed_rows, n_outputs]``) and ``exc.completed_rows``.

Saturated ADC values (code 0 or full scale) are counted in
``stats.counters["adc_saturated_values"]``, reported as a ``clipped`` event
and, per ``on_clip``, raised as :class:`ADCSaturation` (carrying the full
measurement) or flagged in :attr:`last_clipped`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from physnn.core import checks
from physnn.core.system import SystemSpec

from .bench import BenchSystem, ClipError
from .errors import ConnectionLost, InstrumentError, InstrumentTimeout, LimitError, ProtocolError
from .serial_protocol import (
    CMD_IDENT,
    CMD_RUN_BATCH,
    CMD_SAFE,
    CMD_SET_LIMITS,
    PROTOCOL_VERSION,
    CRCError,
    DeviceError,
    Frame,
    FrameReader,
    Ident,
    command_name,
    decode_codes,
    encode_codes,
    encode_frame,
    encode_set_limits,
    flush_after,
    parse_error,
    parse_ident,
    reply_cmd,
    rows_per_frame,
    unknown_state_flush,
)
from .transport import SerialTransport, Transport, UnfinishedWrite

__all__ = ["Calibration", "SerialDAQSystem", "ADCSaturation", "ConfigurationMismatch", "read_reply", "probe_ident"]

#: Device errors worth a retry: the request was corrupted on the wire, or the
#: board was momentarily busy. Everything else is a real refusal.
RETRYABLE_DEVICE_ERRORS = ("BAD_CRC", "BUSY")


@dataclass(frozen=True)
class Calibration:
    """Linear code <-> volt map of a DAC or ADC: ``volts = offset_v + code * volts_per_code``."""

    volts_per_code: float
    offset_v: float = 0.0

    def __post_init__(self) -> None:
        checks.positive("volts_per_code", self.volts_per_code)
        checks.real("offset_v", self.offset_v)

    @classmethod
    def full_scale(cls, bits: int, low_v: float, high_v: float) -> "Calibration":
        """The calibration of a converter spanning ``low_v`` (code 0) .. ``high_v`` (code 2**bits - 1)."""
        return cls((high_v - low_v) / (2**bits - 1), low_v)


class ConfigurationMismatch(InstrumentError):
    """The board's IDENT disagrees with the configuration (wrong board, firmware or protocol)."""


class ADCSaturation(ClipError):
    """ADC values at 0 or full scale with ``on_clip="raise"``.

    ``measured`` holds the whole batch in volts (nothing is lost), ``mask``
    the saturated entries.
    """


class SerialDAQSystem(BenchSystem):
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
        on_clip: ``"flag"`` (count and mark in :attr:`last_clipped`) or
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

    SETUP: ClassVar[tuple[str, ...]] = ("_check_identity", "_send_limits")
    CLIP_COUNTER: ClassVar[str] = "adc_saturated_values"
    CLIP_ERROR: ClassVar[type[ClipError]] = ADCSaturation

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
        spec = SystemSpec(
            checks.integer("n_inputs", n_inputs, low=1),
            checks.integer("n_outputs", n_outputs, low=1),
            checks.real("low", low),
            checks.real("high", high),
            None,
            name=name,
            units="V",
            output_units="V",
        )
        super().__init__(
            spec, retries=retries, backoff=backoff, max_backoff=max_backoff, on_clip=on_clip, device=device
        )
        self.dac_bits = checks.integer("dac_bits", dac_bits, low=1, high=16)  # codes are u16
        self.adc_bits = checks.integer("adc_bits", adc_bits, low=1, high=16)
        if not isinstance(dac, Calibration) or not isinstance(adc, Calibration):
            raise TypeError("dac and adc must be Calibration(volts_per_code, offset_v) instances")
        self.dac = dac
        self.adc = adc
        self.expected_serial = serial
        self.timeout = checks.positive("timeout", timeout)
        self.max_rows = None if max_rows is None else checks.integer("max_rows", max_rows, low=1)
        self.code_limits = self._code_limits()
        self.ident: Ident | None = None
        self._seq = 0
        self._cut: UnfinishedWrite | None = None  # a request the board may hold part of (its parser mid-frame)
        self._parser_unknown = False  # a request got no reply: the board may be waiting for bytes
        if isinstance(transport, str):
            transport = SerialTransport(transport, baudrate=baudrate, timeout=self.timeout)
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must be a Transport or a port name, got {type(transport).__name__}")
        self.transport = transport
        if open:
            self.open()

    @property
    def transports(self) -> Sequence[Transport]:
        return (self.transport,)

    @property
    def resource(self) -> str:
        return self.transport.resource

    @property
    def last_saturated(self) -> torch.Tensor | None:
        """The ``[B, n_out]`` mask of ADC values at 0 or full scale in the last batch (= :attr:`last_clipped`)."""
        return self.last_clipped

    # ------------------------------------------------------------ conversions
    def _code_limits(self) -> tuple[int, int]:
        """DAC codes whose nominal voltage lies inside [low, high]; checked against the DAC width."""
        s, cal = self.spec, self.dac
        lo = int(np.ceil((s.low - cal.offset_v) / cal.volts_per_code - 1e-9))
        hi = int(np.floor((s.high - cal.offset_v) / cal.volts_per_code + 1e-9))
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

    def _adc_volts(self, codes: np.ndarray) -> np.ndarray:
        return self.adc.offset_v + codes.astype(np.float64) * self.adc.volts_per_code

    def codes_to_volts(self, codes: np.ndarray) -> torch.Tensor:
        """ADC codes -> volts (float32 tensor)."""
        return torch.from_numpy(self._adc_volts(codes).astype(np.float32))

    # -------------------------------------------------------------- protocol
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _request(self, cmd: int, payload: bytes = b"") -> Frame:
        """One request and its reply (one attempt): stale replies are skipped, errors raised.

        A frame the board may hold part of is ended first (see the module docstring).
        """
        frame = encode_frame(cmd, self._next_seq(), payload)  # encoded before the flush: a bad one sends nothing
        self._end_partial_frame()
        try:
            self.transport.write_raw(frame)
            return read_reply(self.transport, cmd, frame[2], self.timeout, on_event=self.report_event)
        except InstrumentTimeout:
            self._parser_unknown = True  # no (whole) reply: the board may still be waiting for bytes of a frame
            raise

    def _end_partial_frame(self) -> None:
        """If a write was cut or a request went unanswered, send what returns the board's parser to hunting."""
        cut = self.transport.take_unfinished_write()
        if self._cut is None:  # (a cut flush needs no record: sending the whole flush again covers it)
            self._cut = cut
        if self._cut is None and not self._parser_unknown:
            return
        flush = b""
        if self._cut is not None:
            flush = flush_after(self._cut.data, self._cut.sent_min, self._cut.sent_max)
        if self._parser_unknown:
            flush += unknown_state_flush()
        if flush:
            self.transport.write_raw(flush)
        self.report_event(
            "frame_flushed",
            bytes=len(flush),
            cut=None if self._cut is None else f"{self._cut.sent_min}..{self._cut.sent_max} of {len(self._cut.data)}",
            after_timeout=self._parser_unknown,
        )
        self._cut = None
        self._parser_unknown = False

    def _check_identity(self) -> None:
        """IDENT, checked against the configuration (protocol, channels, bit widths, serial)."""
        ident = parse_ident(self._request(CMD_IDENT).payload)
        wrong = []
        if ident.protocol != PROTOCOL_VERSION:
            wrong.append(f"protocol {ident.protocol} (this driver speaks {PROTOCOL_VERSION})")
        for key, want in (
            ("n_in", self.spec.n_inputs),
            ("n_out", self.spec.n_outputs),
            ("dac_bits", self.dac_bits),
            ("adc_bits", self.adc_bits),
        ):
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
        self.ident = ident

    def _send_limits(self) -> None:
        """SET_LIMITS: the DAC codes the board may drive from now on."""
        frame = self._request(CMD_SET_LIMITS, encode_set_limits(*self.code_limits))
        if frame.payload:
            raise ProtocolError(
                f"SET_LIMITS reply has a {len(frame.payload)}-byte payload, expected none", resource=self.resource
            )

    def _fault_kind(self, exc: InstrumentError) -> tuple[str | None, bool]:
        if isinstance(exc, DeviceError):
            if exc.code_name in RETRYABLE_DEVICE_ERRORS:
                return "device_" + exc.code_name.lower(), True
            return "device_error", False
        if isinstance(exc, CRCError):
            return "crc_error", True
        return super()._fault_kind(exc)

    # --------------------------------------------------------------- measure
    @property
    def rows_per_frame(self) -> int:
        """Rows per RUN_BATCH frame: the board's max_batch, the payload limit and ``max_rows``."""
        if self.ident is None:
            raise RuntimeError(f"{self.spec.name}: not opened yet (no IDENT)")
        rows = rows_per_frame(self.spec.n_inputs, self.spec.n_outputs, self.ident.max_batch)
        return min(rows, self.max_rows) if self.max_rows else rows

    @property
    def rows_per_transaction(self) -> int:
        return self.rows_per_frame

    def _encode(self, x: torch.Tensor) -> np.ndarray:
        return self.volts_to_codes(x)

    def _transaction_name(self, start: int, stop: int, batch: int) -> str:
        return f"RUN_BATCH rows {start}..{stop - 1} of {batch}"

    def _transact(self, codes: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """One RUN_BATCH frame: ADC volts ``[k, n_out]`` and the saturation mask (codes 0 or full scale)."""
        with self.transport.lock:
            frame = self._request(CMD_RUN_BATCH, encode_codes(codes))
        self.stats.count("run_batch_frames")
        out = decode_codes(frame.payload, self.spec.n_outputs, expected_rows=codes.shape[0])
        full = 2**self.adc_bits - 1
        if out.size and int(out.max()) > full:
            r, c = np.argwhere(out > full)[0]
            raise ProtocolError(
                f"ADC code {int(out[r, c])} at row {r}, channel {c} exceeds the {self.adc_bits}-bit full scale {full}",
                resource=self.resource,
            )
        return self._adc_volts(out), (out == 0) | (out == full)

    def _clip_message(self, mask: np.ndarray, y: torch.Tensor, n: int, rows: int) -> str:
        full = 2**self.adc_bits - 1
        r, c = np.argwhere(mask)[0]
        code = int(round((float(y[r, c]) - self.adc.offset_v) / self.adc.volts_per_code))
        return (
            f"{n} ADC value(s) in {rows} row(s) at 0 or full scale {full} (first: row {r}, channel {c}, "
            f"code {code}); lower the drive or the gain, or use on_clip='flag'"
        )

    # ------------------------------------------------------------- lifecycle
    def _resync(self) -> None:
        self.transport.clear()

    def _open_transports(self) -> None:
        """Open the port if needed, set the reply timeout and drop whatever a previous session left."""
        if not self.transport.is_open:
            self.transport.open()
        try:
            self.transport.timeout = self.timeout
            self.transport.clear()
        except ConnectionLost:  # a port that died since it was opened: the retry loop reopens it
            self._link_lost = True

    def _on_open_failure(self, exc: BaseException) -> None:
        """Never driven (no RUN_BATCH since the open): release the port so the user can fix the setup and retry."""
        with contextlib.suppress(Exception):  # the open error is the one to report
            self.transport.close()

    def safe_state(self) -> None:
        """Send SAFE (every DAC to its safe code) and wait for its reply. Idempotent; retried like any request.

        Whatever state the board's frame parser is in, a cut frame is ended
        first (see the module docstring); :attr:`safe_confirmed` becomes True
        only when the SAFE reply arrives.
        """
        self.safe_confirmed = False
        if not self.transport.is_open:
            self._link_lost = True
        with self._lock, self.transport.lock:
            frame = self._retrying("SAFE", lambda: self._request(CMD_SAFE))
        self.stats.count("safe_sent")
        if frame.payload:
            raise ProtocolError(
                f"SAFE reply has a {len(frame.payload)}-byte payload, expected none", resource=self.resource
            )
        self.safe_confirmed = True

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            ident=self.ident.to_dict() if self.ident else None,
            dac_calibration=asdict(self.dac),
            adc_calibration=asdict(self.adc),
            dac_bits=self.dac_bits,
            adc_bits=self.adc_bits,
            code_limits=list(self.code_limits),
            timeout_s=self.timeout,
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
                    raise InstrumentTimeout(
                        f"no {command_name(cmd)} reply (seq={seq}) within {timeout:g} s", resource=resource
                    )
                if remaining < transport.timeout - 1e-3:
                    transport.timeout = remaining
                try:
                    reader.feed(transport.read_exact(reader.needed()))
                except InstrumentTimeout as exc:
                    got = reader.buffered
                    what = (
                        f"only {got} bytes of a {command_name(cmd)} frame" if got else f"no {command_name(cmd)} reply"
                    )
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
                    f"reply to {command_name(cmd)} (seq={seq}) has CMD 0x{frame.cmd:02X}, "
                    f"expected 0x{reply_cmd(cmd):02X}",
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
