"""A fake DAQ firmware on a pseudo-terminal, backed by any physnn simulator.

Why a pty: the host driver then runs through the real serial stack (pyserial,
termios, ``flock``, ``tcflush``) exactly as on a bench, so CI exercises the
same code paths as a USB board, including a port that disappears and comes
back.

The fake speaks protocol version 1 (``shared/protocols/serial-daq.md``) from a
background thread: IDENT, SET_LIMITS, RUN_BATCH, SAFE, PING, with the error
replies BAD_CRC, BAD_LENGTH, UNKNOWN_COMMAND, OUT_OF_LIMITS (also for a
RUN_BATCH before any SET_LIMITS since power-up) and BATCH_TOO_LARGE. A whole
batch is refused before any "DAC" changes if one code is outside the limits.

Frame parser
------------
``frame_timeout`` (default 0.1 s, the protocol's recommendation) drops a
partial request when no byte of it arrives for that long. ``frame_timeout=None``
models a board in the field that has none: a half-received frame waits for its
missing bytes for ever, and whatever arrives next -- a SAFE request included --
is taken as its payload. ``after_bad_crc`` is where the parser resumes after a
frame with a bad CRC: ``"rescan"`` (the byte after its SOF) or ``"skip_frame"``
(after the whole frame); the protocol allows both, and the host must reach SAFE
with either.

Port name
---------
The host opens :attr:`FakeFirmware.port`, a symlink in a private temporary
folder pointing at the pty slave (like ``/dev/serial/by-id/...`` on Linux).
When a ``"disconnect"`` fault fires, the fake "re-enumerates": it opens a new
pty, points the symlink at it, then closes the old one (the host's reads fail
with EIO) and reboots (limits forgotten, DACs at the safe code). Reopening the
same name reaches the new pty.

Signal chain and scaling
------------------------
* DAC: code ``c`` in ``0..2**dac_bits - 1`` drives the backend input
  ``x = low + (high - low) * c / (2**dac_bits - 1)`` where ``low, high`` are
  the backend's drive limits; with a levelled backend (an 8-bit SLM), ``x`` is
  rounded to the nearest allowed level, as the real modulator would.
* The backend measures ``y = backend(x)``, one call per RUN_BATCH frame.
* ADC: ``y`` in ``output_range = (y_low, y_high)`` maps linearly to codes
  ``0..2**adc_bits - 1`` (rounded, clipped at both ends: clipping is the ADC
  saturating).

The factory :func:`simulated_serial_daq` wires a :class:`SerialDAQSystem` to
a fake whose DAC spans ``0..dac_full_scale_v`` volts and whose ADC spans
``0..adc_full_scale_v`` volts, so the host works in volts as on a bench.

Faults (:meth:`FakeFirmware.inject`)
------------------------------------
``"drop"`` (measure, send nothing), ``"late"`` (measure, hold the reply until
the host's next request arrives or ``delay`` seconds pass, then send it:
after the host's timeout), ``"corrupt_crc"`` (flip the reply's CRC),
``"truncate"`` (send only the first half of the reply), ``"disconnect"``
(close the port without replying, then serve a new one), ``"hangup"`` (wait
``delay`` seconds (default 0.05), send the first half of the reply, wait
``delay`` again, then disconnect: the cable pulled in the middle of a reply
that the host has been reading for a while), ``"busy"`` (reply
error BUSY without measuring), ``"garbage"`` (send junk bytes before a good
reply). Each fires on the ``after``-th following request of ``command``
(0 = the next one), ``count`` times in a row.
"""

from __future__ import annotations

import os
import select
import shutil
import tempfile
import threading
import time
import tty
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem

from ..errors import ProtocolError
from ..serial_daq import Calibration, SerialDAQSystem
from ..serial_protocol import (
    CMD_ERROR,
    CMD_IDENT,
    CMD_PING,
    CMD_RUN_BATCH,
    CMD_SAFE,
    CMD_SET_LIMITS,
    COMMAND_NAMES,
    PROTOCOL_VERSION,
    RESUME_AFTER_BAD_CRC,
    CRCError,
    FrameReader,
    Ident,
    decode_codes,
    decode_set_limits,
    encode_codes,
    encode_error,
    encode_frame,
    encode_ident,
    reply_cmd,
)
from .fault_specs import checked_faults

__all__ = ["Fault", "FakeFirmware", "SimulatedSerialDAQ", "simulated_serial_daq", "FAULT_KINDS"]

FAULT_KINDS = ("drop", "late", "corrupt_crc", "truncate", "disconnect", "hangup", "busy", "garbage")
#: A partial request with no new byte for this long is dropped (the firmware's frame timeout).
FRAME_IDLE_S = 0.1
_NAME_TO_CMD = {name: cmd for cmd, name in COMMAND_NAMES.items() if cmd != CMD_ERROR}


@dataclass
class Fault:
    """One injected fault: ``kind`` on the ``after``-th next ``command`` request, ``count`` times."""

    kind: str
    command: str = "RUN_BATCH"
    after: int = 0
    count: int = 1
    delay: float | None = None

    def __post_init__(self) -> None:
        checks.choice("fault kind", self.kind, FAULT_KINDS)
        checks.choice("fault command", self.command, tuple(_NAME_TO_CMD))
        checks.integer("fault after", self.after, low=0)
        checks.integer("fault count", self.count, low=1)
        if self.delay is not None:
            checks.nonnegative("fault delay", self.delay)


class FakeFirmware:
    """The protocol's device side on a pty, served by a background thread.

    Args:
        backend: the physical system behind the DACs and ADCs.
        dac_bits, adc_bits: converter widths reported in IDENT.
        max_batch: rows per RUN_BATCH the "board" accepts.
        settle_us: settle time per row (slept, so keep it 0 in tests).
        output_range: backend output values mapped to ADC codes 0 and full scale.
        safe_code: the DAC code SAFE sets (and the power-up state).
        serial, model, firmware: IDENT strings.
        frame_timeout: seconds of silence after which a partial request is dropped;
            None: never (a board without a frame timeout).
        after_bad_crc: ``"rescan"`` or ``"skip_frame"`` (see the module docstring).
        start: start serving now.

    Attributes for tests: ``log`` (one ``(command, seq)`` per request,
    ``"BAD_FRAME"`` for a corrupt one), ``safe_count``, ``dac_codes`` (the
    codes now on the DACs), ``limits`` (None until SET_LIMITS), ``rows_run``,
    ``reboots``.
    """

    def __init__(
        self,
        backend: PhysicalSystem,
        *,
        dac_bits: int = 16,
        adc_bits: int = 16,
        max_batch: int = 64,
        settle_us: int = 0,
        output_range: tuple[float, float] = (0.0, 1.0),
        safe_code: int = 0,
        serial: str = "SIM-0001",
        model: str = "physnn-fake-daq",
        firmware: str = "fake-1.0",
        frame_timeout: float | None = FRAME_IDLE_S,
        after_bad_crc: str = "rescan",
        start: bool = True,
    ):
        if not isinstance(backend, PhysicalSystem):
            raise TypeError(f"backend must be a PhysicalSystem, got {type(backend).__name__}")
        for key, bits in (("dac_bits", dac_bits), ("adc_bits", adc_bits)):
            checks.integer(key, bits, low=1, high=16)
        checks.integer("max_batch", max_batch, low=1)
        checks.integer("settle_us", settle_us, low=0)
        y_low, y_high = (checks.real("output_range", v) for v in output_range)
        if not y_low < y_high:
            raise ValueError(f"output_range needs low < high, got {output_range!r}")
        checks.integer("safe_code", safe_code, low=0, high=2**dac_bits - 1)
        self.frame_timeout = None if frame_timeout is None else checks.positive("frame_timeout", frame_timeout)
        self.after_bad_crc = checks.choice("after_bad_crc", after_bad_crc, RESUME_AFTER_BAD_CRC)
        self.backend = backend
        self.ident = Ident(
            protocol=PROTOCOL_VERSION,
            model=model,
            serial=serial,
            firmware=firmware,
            n_in=backend.spec.n_inputs,
            n_out=backend.spec.n_outputs,
            dac_bits=dac_bits,
            adc_bits=adc_bits,
            max_batch=max_batch,
            settle_us=int(settle_us),
        )
        self.output_range = (y_low, y_high)
        self.safe_code = int(safe_code)
        self.log: list[tuple[str, int]] = []
        self.safe_count = 0
        self.rows_run = 0
        self.reboots = 0
        self.limits: tuple[int, int] | None = None
        self.dac_codes = np.full(backend.spec.n_inputs, self.safe_code, dtype=np.uint16)
        self._faults: list[Fault] = []
        self._seen: dict[str, int] = {}
        self._held: bytes | None = None  # a "late" reply waiting for the next request
        self._held_until: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._dir = tempfile.mkdtemp(prefix="physnn-fakedaq-")
        self.port = os.path.join(self._dir, "ttyDAQ0")
        self._master = -1
        self._slave = -1
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._new_pty()
        if start:
            self.start()

    # ------------------------------------------------------------------ pty
    def _new_pty(self) -> None:
        """Open a pty, put it in raw mode and point :attr:`port` at it; close the old one."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        tmp = self.port + ".new"
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.port)
        old = (self._master, self._slave)
        self._master, self._slave = master, slave
        for fd in old:
            if fd >= 0:
                os.close(fd)

    @property
    def slave_name(self) -> str:
        return os.ttyname(self._slave)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "FakeFirmware":
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="physnn-fake-daq", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, close the pty and remove the port link. Idempotent."""
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = self._wake_r = self._wake_w = -1
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def inject(
        self,
        kind: str | Fault,
        *,
        command: str = "RUN_BATCH",
        after: int = 0,
        count: int = 1,
        delay: float | None = None,
    ) -> None:
        """Arm a fault (see the module docstring)."""
        fault = kind if isinstance(kind, Fault) else Fault(kind, command, after, count, delay)
        with self._lock:
            fault.after += self._seen.get(fault.command, 0)
            self._faults.append(fault)

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.count for f in self._faults)

    def __enter__(self) -> "FakeFirmware":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --------------------------------------------------------------- server
    def _serve(self) -> None:
        reader = FrameReader(self.after_bad_crc)
        last_rx = time.monotonic()
        idle = self.frame_timeout
        try:
            while not self._stop.is_set():
                # a partial frame idle for frame_timeout is abandoned (a false SOF or a cut request), as the
                # protocol recommends, so it cannot swallow the host's next request; without one it waits for ever
                timeout = idle if (reader.buffered and idle is not None) else 0.2
                if self._held_until is not None:
                    timeout = max(0.0, min(timeout, self._held_until - time.monotonic()))
                ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
                if self._stop.is_set():
                    return
                if self._held_until is not None and time.monotonic() >= self._held_until:
                    self._release_held()
                if self._master not in ready:
                    if reader.buffered and idle is not None and time.monotonic() - last_rx >= idle:
                        self.log.append(("ABANDONED_PARTIAL", reader.buffered))
                        reader.reset()
                    continue
                try:
                    data = os.read(self._master, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # no slave open at this instant; the host is reopening
                    time.sleep(0.01)
                    continue
                last_rx = time.monotonic()
                reader.feed(data)
                while True:
                    try:
                        frame = reader.next_frame()
                    except CRCError as exc:
                        # corrupted on the wire: its CMD/SEQ bytes are the best guess of whom to answer
                        self.log.append(("BAD_FRAME", exc.seq))
                        self._send(self._error(exc.seq, "BAD_CRC", exc.cmd, "request CRC mismatch"))
                        continue
                    if frame is None:
                        break
                    if self._held_until is not None:  # busy until the late reply goes out
                        time.sleep(max(0.0, self._held_until - time.monotonic()))
                    self._release_held()
                    if self._handle(frame.cmd, frame.seq, frame.payload) == "disconnected":
                        reader.reset()
                        break
        except BaseException as exc:  # noqa: BLE001 - surfaced to tests through .error
            self.error = exc

    def _release_held(self) -> bool:
        if self._held is None:
            return False
        held, self._held, self._held_until = self._held, None, None
        self._send(held)
        return True

    def _send(self, data: bytes, deadline_s: float = 2.0) -> None:
        """Write all of ``data`` to the master; give up (like a full TX buffer) after ``deadline_s``."""
        view = memoryview(data)
        end = time.monotonic() + deadline_s
        while view and not self._stop.is_set():
            try:
                n = os.write(self._master, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > end:
                    return
                select.select([], [self._master], [], 0.05)
            except OSError:
                return

    def _take_fault(self, name: str) -> Fault | None:
        with self._lock:
            index = self._seen.get(name, 0)
            self._seen[name] = index + 1
            for f in self._faults:
                if f.command == name and f.after <= index < f.after + f.count:
                    if index == f.after + f.count - 1:
                        self._faults.remove(f)
                    return f
        return None

    def _handle(self, cmd: int, seq: int, payload: bytes) -> str | None:
        name = COMMAND_NAMES.get(cmd, f"0x{cmd:02X}")
        self.log.append((name, seq))
        fault = self._take_fault(name) if cmd in COMMAND_NAMES and cmd != CMD_ERROR else None
        if fault is not None and fault.kind == "busy":
            self._send(encode_frame(CMD_ERROR, seq, encode_error("BUSY", cmd, "injected: busy")))
            return None
        if fault is not None and fault.kind == "disconnect":
            self._disconnect()
            return "disconnected"
        reply = self._execute(cmd, seq, payload)
        if fault is None:
            self._send(reply)
        elif fault.kind == "drop":
            pass
        elif fault.kind == "late":
            self._held = reply
            self._held_until = None if fault.delay is None else time.monotonic() + fault.delay
        elif fault.kind == "corrupt_crc":
            self._send(reply[:-1] + bytes([reply[-1] ^ 0xFF]))
        elif fault.kind == "truncate":
            self._send(reply[: max(1, len(reply) // 2)])
        elif fault.kind == "garbage":
            self._send(b"\x00\xff\x13boot\r\n" + reply)
        elif fault.kind == "hangup":
            pause = 0.05 if fault.delay is None else fault.delay
            time.sleep(pause)
            self._send(reply[: max(1, len(reply) // 2)])
            time.sleep(pause)
            self._disconnect()
            return "disconnected"
        return None

    def _disconnect(self) -> None:
        """Re-enumerate: serve a new pty under the same name, drop the old one, reboot."""
        self._held = None
        self._held_until = None
        self._new_pty()
        self.reboots += 1
        self.limits = None
        self.dac_codes[:] = self.safe_code

    def _error(self, seq: int, code: str, cmd: int, message: str) -> bytes:
        return encode_frame(CMD_ERROR, seq, encode_error(code, cmd, message))

    def _execute(self, cmd: int, seq: int, payload: bytes) -> bytes:
        ident = self.ident
        if cmd == CMD_IDENT:
            if payload:
                return self._error(seq, "BAD_LENGTH", cmd, f"IDENT takes no payload, got {len(payload)} bytes")
            return encode_frame(reply_cmd(cmd), seq, encode_ident(ident))
        if cmd == CMD_PING:
            return encode_frame(reply_cmd(cmd), seq, payload)
        if cmd == CMD_SAFE:
            if payload:
                return self._error(seq, "BAD_LENGTH", cmd, f"SAFE takes no payload, got {len(payload)} bytes")
            self.dac_codes[:] = self.safe_code
            self.safe_count += 1
            return encode_frame(reply_cmd(cmd), seq)
        if cmd == CMD_SET_LIMITS:
            try:
                lo, hi = decode_set_limits(payload)
            except ProtocolError as exc:
                return self._error(seq, "BAD_LENGTH", cmd, str(exc))
            full = 2**ident.dac_bits - 1
            if lo > hi or hi > full:
                return self._error(
                    seq, "OUT_OF_LIMITS", cmd, f"limits {lo}..{hi} invalid for a {ident.dac_bits}-bit DAC"
                )
            self.limits = (lo, hi)
            return encode_frame(reply_cmd(cmd), seq)
        if cmd == CMD_RUN_BATCH:
            if len(payload) < 2:
                return self._error(seq, "BAD_LENGTH", cmd, "RUN_BATCH payload shorter than u16 n")
            n = payload[0] | (payload[1] << 8)
            if n == 0:
                return self._error(seq, "BAD_LENGTH", cmd, "RUN_BATCH with n=0")
            if n > ident.max_batch:
                return self._error(seq, "BATCH_TOO_LARGE", cmd, f"n={n} > max_batch={ident.max_batch}")
            try:
                codes = decode_codes(payload, ident.n_in, expected_rows=n)
            except ProtocolError as exc:
                return self._error(seq, "BAD_LENGTH", cmd, str(exc))
            if self.limits is None:
                return self._error(seq, "OUT_OF_LIMITS", cmd, "no SET_LIMITS since power-up")
            lo, hi = self.limits
            bad = (codes < lo) | (codes > hi)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                return self._error(
                    seq, "OUT_OF_LIMITS", cmd, f"code {int(codes[r, c])} at row {r}, channel {c} outside {lo}..{hi}"
                )
            out = self.measure_codes(codes)
            return encode_frame(reply_cmd(cmd), seq, encode_codes(out))
        return self._error(seq, "UNKNOWN_COMMAND", cmd, f"command 0x{cmd:02X} is not in protocol {PROTOCOL_VERSION}")

    # -------------------------------------------------------------- physics
    def codes_to_drive(self, codes: np.ndarray) -> torch.Tensor:
        """DAC codes -> backend drive values (snapped to the backend's levels, if any)."""
        spec = self.backend.spec
        full = 2**self.ident.dac_bits - 1
        x = spec.low + (spec.high - spec.low) * codes.astype(np.float64) / full
        if spec.levels is not None:
            x = spec.low + np.rint((x - spec.low) / spec.step) * spec.step
        x = np.clip(x, spec.low, spec.high)
        return torch.from_numpy(x.astype(np.float32))

    def outputs_to_codes(self, y: torch.Tensor) -> np.ndarray:
        """Backend outputs -> ADC codes (clipped at 0 and full scale)."""
        lo, hi = self.output_range
        full = 2**self.ident.adc_bits - 1
        v = (y.detach().to("cpu", torch.float64).numpy() - lo) / (hi - lo) * full
        return np.clip(np.rint(v), 0, full).astype(np.uint16)

    def measure_codes(self, codes: np.ndarray) -> np.ndarray:
        """One RUN_BATCH: set the DACs row by row, settle, read the ADCs (one backend call)."""
        if self.ident.settle_us:
            time.sleep(self.ident.settle_us * 1e-6 * codes.shape[0])
        y = self.backend(self.codes_to_drive(codes))
        self.dac_codes[:] = codes[-1]
        self.rows_run += codes.shape[0]
        return self.outputs_to_codes(y)


class SimulatedSerialDAQ(SerialDAQSystem):
    """A :class:`SerialDAQSystem` that owns its fake firmware and stops it on close."""

    firmware: FakeFirmware

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.firmware.stop()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["simulated_backend"] = self.firmware.backend.describe()
        d["simulated_output_range"] = list(self.firmware.output_range)
        return d


def simulated_serial_daq(
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    backend: str | PhysicalSystem = "optics",
    seed: int = 0,
    device: str = "cpu",
    faults: Iterable[Any] | None = None,
    *,
    dac_bits: int = 16,
    adc_bits: int = 16,
    max_batch: int = 64,
    settle_us: int = 0,
    dac_full_scale_v: float = 5.0,
    adc_full_scale_v: float = 3.3,
    low: float = 0.0,
    high: float | None = None,
    output_range: tuple[float, float] = (-0.05, 1.05),
    on_clip: str = "flag",
    timeout: float = 1.0,
    retries: int = 3,
    backoff: float = 0.02,
    max_rows: int | None = None,
    serial: str = "SIM-0001",
    frame_timeout: float | None = FRAME_IDLE_S,
    after_bad_crc: str = "rescan",
    **backend_options: Any,
) -> SimulatedSerialDAQ:
    """A SerialDAQSystem talking over a pty to a fake firmware around ``backend``.

    ``backend`` is a system name (built with ``physnn.core.registry.build_system``
    from ``n_inputs``, ``n_outputs``, ``seed``, ``device`` and
    ``backend_options``) or a PhysicalSystem. The safe range ``low..high`` V
    (default the whole DAC span ``0..dac_full_scale_v``) becomes the spec.
    ``output_range`` is the backend output read as ADC code 0 and full scale;
    the default leaves a 5 % margin (a pedestal) around the 0..1 of the
    simulators, so a dark camera pixel is not mistaken for a saturated ADC.
    ``faults`` are armed before the first request (``Fault``, kind names or
    dicts; see :class:`Fault`), each checked first (a one-line error names a bad
    one). ``frame_timeout=None`` simulates a board without a frame timeout.
    Close the system to stop the firmware thread.
    """
    from physnn.core.registry import build_system

    armed = checked_faults(faults, Fault, key="faults")  # before any backend, pty or thread exists
    if isinstance(backend, PhysicalSystem):
        system = backend
    else:
        opts: dict[str, Any] = dict(backend_options)
        if n_outputs is not None:
            opts["n_outputs"] = n_outputs
        system = build_system(backend, n_inputs=n_inputs, seed=seed, device=device, **opts)
    fw = FakeFirmware(
        system,
        dac_bits=dac_bits,
        adc_bits=adc_bits,
        max_batch=max_batch,
        settle_us=settle_us,
        output_range=output_range,
        serial=serial,
        frame_timeout=frame_timeout,
        after_bad_crc=after_bad_crc,
        start=False,
    )
    daq = None
    try:
        for f in armed:
            fw.inject(f)
        fw.start()
        daq = SimulatedSerialDAQ(
            fw.port,
            n_inputs=system.spec.n_inputs,
            n_outputs=system.spec.n_outputs,
            low=low,
            high=dac_full_scale_v if high is None else high,
            dac=Calibration.full_scale(dac_bits, 0.0, dac_full_scale_v),
            adc=Calibration.full_scale(adc_bits, 0.0, adc_full_scale_v),
            dac_bits=dac_bits,
            adc_bits=adc_bits,
            serial=serial,
            on_clip=on_clip,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_rows=max_rows,
            name="serial-daq-sim",
            device=device,
            open=False,
        )
        daq.firmware = fw
        daq.open()
    except BaseException:
        if daq is not None:
            try:
                daq.transport.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        fw.stop()
        raise
    return daq


def _preflight(options: dict[str, Any]) -> None:
    """What :func:`simulated_serial_daq` can check of its options without a pty: the runner's pre-flight pass
    calls this before any data is loaded or system built (``physnn.run.preflight``)."""
    checked_faults(options.get("faults"), Fault, key="faults")
    if options.get("frame_timeout") is not None:
        checks.positive("frame_timeout", options["frame_timeout"])
    if "after_bad_crc" in options:
        checks.choice("after_bad_crc", options["after_bad_crc"], RESUME_AFTER_BAD_CRC)


simulated_serial_daq.preflight = _preflight  # type: ignore[attr-defined]
