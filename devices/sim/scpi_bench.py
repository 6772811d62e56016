r"""An in-process SCPI bench: a simulated AWG, device under test and oscilloscope.

Why: CI has no instruments, yet the real drivers (:class:`SCPIAWG`,
:class:`SCPIScope`) and :class:`AWGScopeSystem` must run unchanged, byte for
byte, including their fault recovery. :class:`BenchTransport` is a
:class:`~physnn.devices.transport.Transport` whose far end is one of the
simulated instruments below instead of a socket.

The instruments
---------------
* :class:`SimAWG` parses the Keysight 33500B subset of
  ``protocols/scpi-bench.md`` (same replies: ``*IDN?``, ``SYST:ERR?`` as
  ``+0,"No error"`` / ``-222,"Data out of range"``, ``*OPC?`` as ``1``). Settings
  outside the instrument's own ranges (``max_vpp``, ``max_voltage``,
  ``max_sample_rate``, ``memory``) are refused, leave the old value and queue
  an error, as the real one does. ``*TRG`` plays the selected waveform once.
* :class:`SimScope` parses the InfiniiVision subset: ``:SING`` arms,
  ``:OPER:COND?`` reports the RUN bit (8) while armed or acquiring, ``*OPC?``
  answers ``1`` only once the acquisition is complete (``acq_delay`` seconds
  after the trigger; never if no trigger came), ``:WAV:PRE?`` gives the 10
  preamble fields and ``:WAV:DATA?`` a definite-length block of signed
  16-bit words (LSB first after ``:WAV:BYT LSBF``).
* The trigger only fires an acquisition when the scope is armed; a trigger
  on an unarmed scope is lost (``bench.lost_triggers``).

The physics in between (:class:`BenchDUT`)
------------------------------------------
The device under test is clocked with the AWG, so it knows the framing of
:class:`~physnn.devices.awg_scope.Framing`. From the AWG output voltage
``V`` (0 V while the output is off) it takes each symbol's mean, maps
``[v_low, v_high]`` linearly onto the backend's drive range
``[low, high]`` (clamped; rounded to the backend's levels if it has them)
and calls the backend :class:`~physnn.system.PhysicalSystem` ONCE for the
whole waveform. The backend's outputs ``y`` become the response voltage, on
the AWG grid:

* the Barker-13 sync marker, ``+-sync_volts``, at the same place as in the drive;
* ``encoding="windows"``: slot ``i`` is cut into ``n_out`` windows (edges
  ``floor(k * slot / n_out)``); window ``k`` sits at ``gain * (y_ik - y0)`` V;
* ``encoding="tones"``: slot ``i`` carries
  :math:`\sum_k g (y_{ik} - y_0) \cos(2\pi (k+1) n / \text{slot})`;
* 0 V elsewhere (guards).

So the features :class:`AWGScopeSystem` extracts are affine, increasing
functions of the backend's outputs (for ``y >= y0``): ``"integrals"`` reads
``gain * (y - y0) * w_k / sample_rate`` (V*s, ``w_k`` the window's points)
and ``"fft"`` reads ``gain * (y - y0)`` (V), plus the scope's noise and
quantisation below.

The scope record is the response delayed by a random latency of
``0..max_latency`` AWG samples (seeded), sampled every ``xincrement =
:TIM:RANG / :WAV:POIN`` seconds (zero-order hold of the AWG grid), plus
Gaussian noise ``noise_volts`` (V rms), quantised to ``adc_bits`` over the
channel range, as 16-bit codes ``round((V - offset) / (range / 65536))``
clipped to +-32767 (a clipped point reads exactly +-32767).

Faults on request (:class:`Fault`): ``"no_reply"`` (the command is executed,
its reply is lost), ``"late_reply"`` (the reply arrives ``late_factor`` times
the current timeout later, after the driver has given up), ``"truncated_block"``
(half a block, the rest never comes), ``"connection_lost"`` (the write fails,
the instrument reboots to its power-on state: output off, waveforms gone,
scope disarmed; a ``reopen()`` reconnects). Replies keep their order, and a
device clear drops only what has already arrived, so a late reply still in
flight survives ``clear()`` exactly as on a raw socket.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from physnn.registry import build_system
from physnn.system import PhysicalSystem

from ..awg_scope import AWGScopeSystem, BenchLimits, Framing, BARKER13, FULL_SCALE, window_edges
from ..errors import ConnectionLost, InstrumentTimeout, ProtocolError
from ..scpi import SCPIAWG, SCPIScope
from ..transport import Transport, parse_block

__all__ = [
    "Fault",
    "BenchDUT",
    "SimAWG",
    "SimScope",
    "SCPIBench",
    "BenchTransport",
    "simulated_awg_scope",
    "AWG_IDN",
    "SCOPE_IDN",
]

AWG_IDN = "Agilent Technologies,33522B,MY00000001,4.00-1.19-2.00-58-00"
SCOPE_IDN = "KEYSIGHT TECHNOLOGIES,DSOX3024T,MY00000002,07.50.2021102830"
NO_ERROR = '+0,"No error"'
FAULT_KINDS = ("no_reply", "late_reply", "truncated_block", "connection_lost")


@dataclass
class Fault:
    """One injected fault.

    Attributes:
        kind: ``"no_reply"``, ``"late_reply"``, ``"truncated_block"`` or ``"connection_lost"``.
        command: the fault fires on a command starting with this text (``":WAV:DATA?"``, ``"*TRG"``).
        instrument: ``"awg"``, ``"scope"`` or ``"any"``.
        skip: matching commands to let through before the first firing.
        times: how many times it fires.
        late_factor: for ``late_reply``, the delay in units of the transport timeout.
    """

    kind: str
    command: str
    instrument: str = "any"
    skip: int = 0
    times: int = 1
    late_factor: float = 1.5
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.instrument not in ("awg", "scope", "any"):
            raise ValueError(f"fault instrument must be 'awg', 'scope' or 'any', got {self.instrument!r}")

    def matches(self, instrument: str, command: str) -> bool:
        if self.fired >= self.times or self.instrument not in ("any", instrument):
            return False
        if not command.upper().startswith(self.command.upper()):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        self.fired += 1
        return True


# ------------------------------------------------------------------- physics
class BenchDUT:
    """The device under test: AWG volts -> backend system -> response volts (see the module docstring)."""

    def __init__(
        self,
        backend: PhysicalSystem,
        framing: Framing,
        *,
        v_low: float,
        v_high: float,
        encoding: str = "windows",
        gain: float = 1.0,
        y0: float = 0.0,
        sync_volts: float = 0.25,
    ):
        if encoding not in ("windows", "tones"):
            raise ValueError(f"encoding must be 'windows' or 'tones', got {encoding!r}")
        if framing.n_inputs != backend.spec.n_inputs:
            raise ValueError(f"framing has n_inputs={framing.n_inputs}, the backend takes {backend.spec.n_inputs}")
        if not v_low < v_high:
            raise ValueError(f"need v_low < v_high, got {v_low}, {v_high}")
        self.backend = backend
        self.framing = framing
        self.v_low, self.v_high = float(v_low), float(v_high)
        self.encoding = encoding
        self.gain = float(gain)
        self.y0 = float(y0)
        self.sync_volts = float(sync_volts)
        self.calls = 0

    def drive_values(self, volts: np.ndarray) -> np.ndarray | None:
        """Per-sample backend drive values ``[B, n_in]`` from the AWG voltage, or None if it is not a framed waveform."""
        f = self.framing
        per = f.slot + f.guard_samples
        n = (volts.size - f.header) // per if volts.size > f.header else 0
        if n < 1 or f.length(n) != volts.size:
            return None
        body = volts[f.header :].reshape(n, per)[:, : f.slot]
        sym = body.reshape(n, f.n_inputs, f.symbol_samples).mean(axis=2)
        s = self.backend.spec
        x = s.low + (sym - self.v_low) / (self.v_high - self.v_low) * (s.high - s.low)
        x = np.clip(x, s.low, s.high)
        if s.levels is not None:
            x = s.low + np.rint((x - s.low) / s.step) * s.step
            x = np.clip(x, s.low, s.high)
        return x

    def respond(self, volts: np.ndarray) -> np.ndarray:
        """Response voltage on the AWG grid, same length as ``volts``."""
        f = self.framing
        out = np.zeros(volts.size, dtype=np.float64)
        x = self.drive_values(volts)
        if x is None:
            return out  # not our framing: the DUT output stays at 0 V (no sync: the driver will notice)
        self.calls += 1
        y = self.backend(torch.as_tensor(x, dtype=torch.float32)).double().cpu().numpy()
        n, n_out = y.shape
        amp = self.gain * (y - self.y0)
        out[f.lead : f.lead + f.sync] = np.repeat(BARKER13, f.sync_chip_samples) * self.sync_volts
        if self.encoding == "windows":
            edges = window_edges(f.slot, n_out)
            widths = np.diff(edges)
            slot = np.repeat(amp, widths, axis=1)  # [n, slot]
        else:
            k = np.arange(1, n_out + 1)[:, None]
            basis = np.cos(2 * np.pi * k * np.arange(f.slot)[None, :] / f.slot)  # [n_out, slot]
            slot = amp @ basis
        per = f.slot + f.guard_samples
        body = np.zeros((n, per))
        body[:, : f.slot] = slot
        out[f.header :] = body.reshape(-1)
        return out


# --------------------------------------------------------------- instruments
class _SimInstrument:
    """Shared SCPI state: identity, error queue, ESE register."""

    IDN = "SIM"
    ERROR_HEADER = "SYST:ERR?"

    def __init__(self, bench: "SCPIBench"):
        self.bench = bench
        self.errors: list[str] = []
        self.ese = 0
        self.reset()

    def reset(self) -> None:  # pragma: no cover - overridden
        self.errors.clear()

    def push_error(self, code: int, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(f'{code:+d},"{text}"')
        else:
            self.errors[-1] = '-350,"Queue overflow"'

    def handle_common(self, header: str, args: str) -> tuple[bool, str | None]:
        if header == "*IDN?":
            return True, self.IDN
        if header == "*RST":
            self.reset()
            return True, None
        if header == "*CLS":
            self.errors.clear()
            return True, None
        if header == "*ESE":
            try:
                value = int(float(args))
            except ValueError:
                self.push_error(-104, "Data type error")
                return True, None
            if not 0 <= value <= 255:
                self.push_error(-222, "Data out of range")
            else:
                self.ese = value
            return True, None
        if header == "*ESE?":
            return True, f"+{self.ese}"
        if header == self.ERROR_HEADER:
            return True, self.errors.pop(0) if self.errors else NO_ERROR
        return False, None


def _float_arg(inst: _SimInstrument, args: str) -> float | None:
    try:
        v = float(args)
    except ValueError:
        inst.push_error(-104, "Data type error")
        return None
    if not math.isfinite(v):
        inst.push_error(-222, "Data out of range")
        return None
    return v


class SimAWG(_SimInstrument):
    """Keysight 33500B subset, channel 1."""

    IDN = AWG_IDN
    ERROR_HEADER = "SYST:ERR?"

    def __init__(self, bench: "SCPIBench", *, max_vpp: float = 10.0, max_voltage: float = 5.0,
                 max_sample_rate: float = 160e6, memory: int = 1_000_000):
        self.max_vpp = max_vpp
        self.max_voltage = max_voltage
        self.max_sample_rate = max_sample_rate
        self.memory = memory
        super().__init__(bench)

    def reset(self) -> None:
        """Power-on state: output off, no user waveforms."""
        self.errors.clear()
        self.output = False
        self.vpp = 0.1
        self.offset = 0.0
        self.sample_rate = 40e3
        self.load = "50"
        self.function = "SIN"
        self.arbs: dict[str, np.ndarray] = {}
        self.selected: str | None = None
        self.little_endian = False
        self.burst_mode = "TRIG"
        self.burst_cycles = 1
        self.burst_on = False
        self.trigger_source = "IMM"
        self.last_played: np.ndarray | None = None

    def volts(self) -> np.ndarray:
        """What the output presents for the selected waveform (0 V while off)."""
        codes = self.arbs[self.selected] if self.selected else np.zeros(1, dtype=np.int16)
        if not self.output:
            return np.zeros(codes.size)
        return self.offset + codes.astype(np.float64) / FULL_SCALE * (self.vpp / 2)

    def handle(self, header: str, args: bytes) -> str | None:
        text = args.decode("ascii", errors="replace").strip() if header != "SOUR1:DATA:ARB:DAC" else ""
        done, reply = self.handle_common(header, text)
        if done:
            return reply
        if header == "*OPC?":
            return "1"
        if header == "FORM:BORD":
            if text.upper() in ("SWAP", "NORM"):
                self.little_endian = text.upper() == "SWAP"
            else:
                self.push_error(-224, "Illegal parameter value")
            return None
        if header == "SOUR1:DATA:VOL:CLE":
            self.arbs.clear()
            self.selected = None
            if self.function == "ARB":
                self.function = "SIN"
            return None
        if header == "SOUR1:DATA:ARB:DAC":
            return self._upload(args)
        if header == "SOUR1:FUNC":
            if text.upper() in ("ARB", "SIN", "SQU", "DC"):
                self.function = text.upper()
            else:
                self.push_error(-224, "Illegal parameter value")
            return None
        if header == "SOUR1:FUNC:ARB":
            if text in self.arbs:
                self.selected = text
            else:
                self.push_error(-224, f"Illegal parameter value; no waveform {text}")
            return None
        if header == "SOUR1:FUNC:ARB:SRAT":
            v = _float_arg(self, text)
            if v is not None:
                if 1e-6 <= v <= self.max_sample_rate:
                    self.sample_rate = v
                else:
                    self.push_error(-222, "Data out of range")
            return None
        if header == "SOUR1:VOLT":
            v = _float_arg(self, text)
            if v is not None:
                if 1e-3 <= v <= self.max_vpp and abs(self.offset) + v / 2 <= self.max_voltage:
                    self.vpp = v
                else:
                    self.push_error(-222, "Data out of range")
            return None
        if header == "SOUR1:VOLT:OFFS":
            v = _float_arg(self, text)
            if v is not None:
                if abs(v) + self.vpp / 2 <= self.max_voltage:
                    self.offset = v
                else:
                    self.push_error(-222, "Data out of range")
            return None
        if header == "OUTP1:LOAD":
            if text.upper() in ("INF", "INFINITY"):
                self.load = "INF"
            else:
                v = _float_arg(self, text)
                if v is not None:
                    if 1 <= v <= 10e3:
                        self.load = text
                    else:
                        self.push_error(-222, "Data out of range")
            return None
        if header == "SOUR1:BURS:MODE":
            self.burst_mode = text.upper()
            return None
        if header == "SOUR1:BURS:NCYC":
            v = _float_arg(self, text)
            if v is not None:
                self.burst_cycles = int(v)
            return None
        if header == "SOUR1:BURS:STAT":
            self.burst_on = text.upper() in ("ON", "1")
            return None
        if header == "TRIG1:SOUR":
            self.trigger_source = text.upper()
            return None
        if header == "OUTP1":
            if text.upper() in ("ON", "1", "OFF", "0"):
                self.output = text.upper() in ("ON", "1")
            else:
                self.push_error(-224, "Illegal parameter value")
            return None
        if header == "*TRG":
            ready = (self.burst_on and self.burst_mode == "TRIG" and self.trigger_source == "BUS"
                     and self.function == "ARB" and self.selected is not None)
            if not ready:
                self.push_error(-211, "Trigger ignored")
                return None
            volts = self.volts()
            self.last_played = self.arbs[self.selected]
            self.bench.fire(volts, self.sample_rate)
            return None
        self.push_error(-113, "Undefined header")
        return None

    def _upload(self, args: bytes) -> None:
        comma = args.find(b",")
        if comma < 1:
            self.push_error(-109, "Missing parameter")
            return None
        name = args[:comma].decode("ascii", errors="replace").strip()
        try:
            data, used = parse_block(args[comma + 1 :])
        except ProtocolError:
            self.push_error(-161, "Invalid block data")
            return None
        if used != len(args) - comma - 1 or len(data) % 2:
            self.push_error(-161, "Invalid block data")
            return None
        codes = np.frombuffer(data, dtype="<i2" if self.little_endian else ">i2").astype(np.int16)
        if codes.size < 8 or codes.size > self.memory:
            self.push_error(-222, "Data out of range; arb length")
            return None
        if int(codes.min()) < -FULL_SCALE:
            self.push_error(-222, "Data out of range; DAC code")
            return None
        if name in self.arbs:
            self.push_error(-221, "Settings conflict; waveform name already in use")
            return None
        self.arbs[name] = codes.copy()
        return None


class SimScope(_SimInstrument):
    """Keysight InfiniiVision X-series subset, channel 1."""

    IDN = SCOPE_IDN
    ERROR_HEADER = "SYST:ERR?"  # sent as ":SYST:ERR?"; the leading colon is stripped

    def __init__(self, bench: "SCPIBench", *, max_points: int = 4_000_000, adc_bits: int = 12):
        self.max_points = max_points
        self.adc_bits = adc_bits
        super().__init__(bench)

    def reset(self) -> None:
        self.errors.clear()
        self.time_range = 1e-3
        self.reference = "CENT"
        self.channel_range = 8.0
        self.channel_offset = 0.0
        self.trigger_source = "CHAN1"
        self.trigger_level = 0.0
        self.source = "CHAN1"
        self.format = "BYTE"
        self.lsb_first = False
        self.unsigned = True
        self.points_mode = "NORM"
        self.points = 1000
        self.armed = False
        self.done_at: float | None = None
        self.record: np.ndarray | None = None
        self.record_xinc = 0.0

    @property
    def yincrement(self) -> float:
        return self.channel_range / 65536.0

    def acquiring(self, now: float) -> bool:
        return self.armed or (self.done_at is not None and now < self.done_at)

    def handle(self, header: str, args: bytes, now: float) -> tuple[str | None, float] | bytes | None:
        text = args.decode("ascii", errors="replace").strip()
        done, reply = self.handle_common(header, text)
        if done:
            return reply
        if header == "*OPC?":
            if self.armed:
                return None  # waits for a trigger that has not come: no answer
            if self.done_at is not None and now < self.done_at:
                return ("1", self.done_at)
            return "1"
        if header == "TIM:RANG":
            v = _float_arg(self, text)
            if v is not None:
                if 1e-9 <= v <= 500.0:
                    self.time_range = v
                else:
                    self.push_error(-222, "Data out of range")
            return None
        if header == "TIM:REF":
            self.reference = text.upper()
            return None
        if header == "CHAN1:RANG":
            v = _float_arg(self, text)
            if v is not None:
                if 8e-3 <= v <= 40.0:
                    self.channel_range = v
                else:
                    self.push_error(-222, "Data out of range")
            return None
        if header == "CHAN1:OFFS":
            v = _float_arg(self, text)
            if v is not None:
                if abs(v) <= 20.0:
                    self.channel_offset = v
                else:
                    self.push_error(-222, "Data out of range")
            return None
        if header == "TRIG:EDGE:SOUR":
            if text.upper() in ("EXT", "CHAN1", "CHAN2"):
                self.trigger_source = text.upper()
            else:
                self.push_error(-224, "Illegal parameter value")
            return None
        if header == "TRIG:EDGE:LEV":
            v = _float_arg(self, text)
            if v is not None:
                self.trigger_level = v
            return None
        if header == "SING":
            self.armed = True
            self.done_at = None
            self.record = None
            return None
        if header == "OPER:COND?":
            return "+8" if self.acquiring(now) else "+0"
        if header == "WAV:SOUR":
            self.source = text.upper()
            return None
        if header == "WAV:FORM":
            if text.upper() in ("WORD", "BYTE", "ASC", "ASCII"):
                self.format = text.upper()
            else:
                self.push_error(-224, "Illegal parameter value")
            return None
        if header == "WAV:BYT":
            self.lsb_first = text.upper() == "LSBF"
            return None
        if header == "WAV:UNS":
            self.unsigned = text.upper() in ("1", "ON")
            return None
        if header == "WAV:POIN:MODE":
            self.points_mode = text.upper()
            return None
        if header == "WAV:POIN":
            v = _float_arg(self, text)
            if v is not None:
                if 100 <= v <= self.max_points:
                    self.points = int(v)
                else:
                    self.push_error(-222, "Data out of range")
            return None
        if header == "WAV:PRE?":
            n = self._ready_points(now)
            fmt = {"BYTE": 0, "WORD": 1}.get(self.format, 4)
            return (
                f"+{fmt},+0,+{n},+1,{self.record_xinc:+.8E},{0.0:+.8E},+0,"
                f"{self.yincrement:+.8E},{self.channel_offset:+.8E},+0"
            )
        if header == "WAV:DATA?":
            if self._ready_points(now) == 0:
                self.push_error(-230, "Data corrupt or stale")
                return b"#10"
            codes = self.record
            assert codes is not None
            if self.format != "WORD":
                self.push_error(-221, "Settings conflict; only WORD is simulated")
                return b"#10"
            if self.unsigned:
                data = (codes.astype(np.int32) + 32768).astype("<u2" if self.lsb_first else ">u2").tobytes()
            else:
                data = codes.astype("<i2" if self.lsb_first else ">i2").tobytes()
            length = str(len(data)).encode()
            return b"#" + str(len(length)).encode() + length + data
        self.push_error(-113, "Undefined header")
        return None

    def _ready_points(self, now: float) -> int:
        if self.record is None or self.done_at is None or now < self.done_at:
            return 0
        return int(self.record.size)

    def capture(self, response: np.ndarray, sample_rate: float, delay: int, now: float) -> None:
        """Record ``response`` (AWG grid) delayed by ``delay`` AWG samples, with noise and quantisation."""
        bench = self.bench
        n = self.points
        xinc = self.time_range / n
        t_idx = np.floor(np.arange(n) * xinc * sample_rate + 1e-9).astype(np.int64) - delay
        v = np.zeros(n)
        ok = (t_idx >= 0) & (t_idx < response.size)
        v[ok] = response[t_idx[ok]]
        if bench.noise_volts > 0:
            v = v + bench.rng.normal(0.0, bench.noise_volts, n)
        step = 2 ** (16 - self.adc_bits)
        q = np.rint((v - self.channel_offset) / (self.yincrement * step)) * step
        self.record = np.clip(q, -FULL_SCALE, FULL_SCALE).astype(np.int16)
        self.record_xinc = xinc
        self.armed = False
        self.done_at = now + bench.acq_delay


# --------------------------------------------------------------------- bench
class SCPIBench:
    """Wires the simulated AWG, DUT and scope together; owns the faults and the clock.

    Args:
        dut: the device under test (None: the response is 0 V, for driver tests).
        seed: seeds the latency and the scope noise.
        noise_volts: scope noise (V rms).
        max_latency: largest trigger-to-response latency (AWG samples).
        acq_delay: seconds from trigger to a complete acquisition.
        faults: :class:`Fault` objects or dicts of their fields.
        awg_options, scope_options: passed to :class:`SimAWG` / :class:`SimScope`.
    """

    def __init__(
        self,
        dut: BenchDUT | None = None,
        *,
        seed: int = 0,
        noise_volts: float = 1e-3,
        max_latency: int = 8,
        acq_delay: float = 2e-4,
        faults: Iterable[Fault | dict] | None = None,
        awg_options: dict | None = None,
        scope_options: dict | None = None,
    ):
        self.dut = dut
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.noise_volts = float(noise_volts)
        self.max_latency = int(max_latency)
        self.acq_delay = float(acq_delay)
        self.faults: list[Fault] = [f if isinstance(f, Fault) else Fault(**f) for f in (faults or [])]
        self.awg = SimAWG(self, **(awg_options or {}))
        self.scope = SimScope(self, **(scope_options or {}))
        self.link_up = {"awg": True, "scope": True}
        self.transactions = {"awg": 0, "scope": 0}
        self.lost_triggers = 0
        self.triggers = 0
        self.log: deque[tuple[str, str]] = deque(maxlen=1000)  # the last commands, for debugging
        self.lock = threading.RLock()

    def instrument(self, name: str) -> _SimInstrument:
        return {"awg": self.awg, "scope": self.scope}[name]

    def add_fault(self, fault: Fault | dict) -> Fault:
        f = fault if isinstance(fault, Fault) else Fault(**fault)
        self.faults.append(f)
        return f

    def take_fault(self, instrument: str, command: str) -> Fault | None:
        for f in self.faults:
            if f.matches(instrument, command):
                return f
        return None

    def drop_link(self, instrument: str) -> None:
        """The connection to ``instrument`` goes away and the instrument reboots."""
        self.link_up[instrument] = False
        self.instrument(instrument).reset()

    def fire(self, volts: np.ndarray, sample_rate: float) -> None:
        """The AWG's trigger out: starts an acquisition if the scope is armed."""
        self.triggers += 1
        scope = self.scope
        if not scope.armed:
            self.lost_triggers += 1
            return
        response = self.dut.respond(volts) if self.dut is not None else np.zeros(volts.size)
        delay = int(self.rng.integers(0, self.max_latency + 1)) if self.max_latency else 0
        scope.capture(response, sample_rate, delay, time.monotonic())

    def execute(self, instrument: str, message: bytes) -> tuple[bytes, float] | None:
        """Run one command; return ``(reply bytes without terminator, available_at)`` or None."""
        now = time.monotonic()
        space = message.find(b" ")
        head = (message if space < 0 else message[:space]).decode("ascii", errors="replace").strip().upper()
        args = b"" if space < 0 else message[space + 1 :]
        if head.startswith(":"):
            head = head[1:]
        self.log.append((instrument, head))
        if instrument == "scope":
            reply: Any = self.scope.handle(head, args, now)
        else:
            reply = self.awg.handle(head, args)
        if reply is None:
            return None
        at = now
        if isinstance(reply, tuple):
            reply, at = reply
        if isinstance(reply, str):
            reply = reply.encode("ascii")
        return reply, at


class BenchTransport(Transport):
    """A :class:`Transport` whose far end is one instrument of a :class:`SCPIBench`.

    Each write is one complete message (the drivers send a command, including
    a binary block, in one write). Replies are queued with the time they
    become readable; reads wait for them up to the timeout, then raise
    :class:`InstrumentTimeout` with what had arrived.
    """

    def __init__(self, bench: SCPIBench, instrument: str, *, timeout: float = 0.5, resource: str | None = None):
        if instrument not in ("awg", "scope"):
            raise ValueError(f"instrument must be 'awg' or 'scope', got {instrument!r}")
        super().__init__(resource or f"SIM::{instrument.upper()}::INSTR")
        self.bench = bench
        self.instrument = instrument
        self._timeout = float(timeout)
        self._queue: list[list[Any]] = []  # [available_at, bytearray]
        self.writes = 0
        self.open()

    # -- clock helpers
    def _arrived(self, now: float) -> int:
        return sum(len(c[1]) for c in self._queue if c[0] <= now)

    def _take(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n and self._queue:
            chunk = self._queue[0][1]
            need = n - len(out)
            out.extend(chunk[:need])
            del chunk[:need]
            if not chunk:
                self._queue.pop(0)
        return bytes(out)

    def _enqueue(self, data: bytes, at: float) -> None:
        if self._queue:
            at = max(at, self._queue[-1][0])  # replies never overtake each other
        self._queue.append([at, bytearray(data)])

    def _link_check(self) -> None:
        if not self.bench.link_up[self.instrument]:
            raise ConnectionLost("connection to the simulated instrument is down", resource=self.resource)

    # -- primitives
    def _write_bytes(self, data: bytes) -> None:
        with self.bench.lock:
            self._link_check()
            self.writes += 1
            self.bench.transactions[self.instrument] += 1
            message = data[:-1] if data.endswith(b"\n") else data
            command = message[:64].decode("ascii", errors="replace")
            fault = self.bench.take_fault(self.instrument, command.lstrip())
            if fault is not None and fault.kind == "connection_lost":
                self.bench.drop_link(self.instrument)
                raise ConnectionLost(f"connection lost while sending {command[:32]!r} (simulated)", resource=self.resource)
            result = self.bench.execute(self.instrument, message)
            if result is None:
                return
            reply, at = result
            reply = reply + b"\n"
            if fault is None:
                self._enqueue(reply, at)
            elif fault.kind == "no_reply":
                return
            elif fault.kind == "late_reply":
                self._enqueue(reply, max(at, time.monotonic()) + fault.late_factor * self._timeout)
            elif fault.kind == "truncated_block":
                self._enqueue(reply[: max(1, len(reply) // 2)], at)

    def _wait(self, satisfied) -> bool:
        deadline = time.monotonic() + self._timeout
        while True:
            now = time.monotonic()
            with self.bench.lock:
                self._link_check()
                if satisfied(now):
                    return True
                future = [c[0] for c in self._queue if c[0] > now]
            if now >= deadline:
                return False
            nxt = min([deadline] + future)
            time.sleep(max(0.0, min(nxt - now, 0.01)) or 1e-5)

    def _read_exact(self, n: int) -> bytes:
        if self._wait(lambda now: self._arrived(now) >= n):
            return self._take(n)
        partial = self._take(self._arrived(time.monotonic()))
        exc = InstrumentTimeout(f"short read: got {len(partial)} of {n} bytes within {self._timeout:g} s",
                                resource=self.resource)
        exc.received = partial  # type: ignore[attr-defined]
        raise exc

    def _available_line(self, now: float) -> int:
        seen = 0
        for at, chunk in self._queue:
            if at > now:
                return -1
            i = chunk.find(b"\n")
            if i >= 0:
                return seen + i + 1
            seen += len(chunk)
        return -1

    def _read_message(self) -> bytes:
        if self._wait(lambda now: self._available_line(now) >= 0):
            return self._take(self._available_line(time.monotonic()))
        partial = self._take(self._arrived(time.monotonic()))
        exc = InstrumentTimeout(f"no reply within {self._timeout:g} s", resource=self.resource)
        exc.received = partial  # type: ignore[attr-defined]
        raise exc

    def _clear(self) -> None:
        with self.bench.lock:
            self._link_check()
            now = time.monotonic()
            self._queue = [c for c in self._queue if c[0] > now]

    def _open(self) -> None:
        with self.bench.lock:
            self.bench.link_up[self.instrument] = True
            self._queue = []

    def _close(self) -> None:
        self._queue = []

    def _get_timeout(self) -> float:
        return self._timeout

    def _set_timeout(self, seconds: float) -> None:
        self._timeout = seconds


# ------------------------------------------------------------------- factory
def _symbol_samples(n_in: int, n_out: int, features: str) -> int:
    need = 2 * n_out + 2 if features == "fft" else 2 * n_out
    s0 = max(4, -(-need // n_in))
    for s in range(s0, s0 + 17):
        if (n_in * s) % n_out == 0:
            return s
    return s0


def simulated_awg_scope(
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    backend: str = "optics",
    seed: int = 0,
    device: str = "cpu",
    faults: Iterable[Fault | dict] | None = None,
    *,
    features: str = "integrals",
    noise_volts: float = 1e-3,
    timeout: float = 0.5,
    max_points: int = 65536,
    symbol_samples: int | None = None,
    on_clip: str = "flag",
    retries: int = 3,
    backoff: float = 0.01,
    max_backoff: float = 1.0,
    **backend_options: Any,
) -> AWGScopeSystem:
    """An :class:`AWGScopeSystem` on an in-process SCPI bench around a simulator.

    The backend is built with :func:`physnn.registry.build_system` (``n_inputs``,
    ``n_outputs`` when given, ``seed``, ``device`` and ``backend_options``). The
    AWG drives 0..1 V (Vpp 1 V, offset 0.5 V) mapped onto the backend's drive
    range, and the system's spec copies the backend's drive limits and levels,
    so the backend receives exactly the values the caller sent. The bench
    objects are reachable as ``system.bench`` and ``system.backend``.
    """
    opts = dict(backend_options)
    if n_outputs is not None:
        opts["n_outputs"] = n_outputs
    inner = build_system(backend, n_inputs=n_inputs, seed=seed, device=device, **opts)
    s = inner.spec
    n_in, n_out = s.n_inputs, s.n_outputs
    sym = symbol_samples or _symbol_samples(n_in, n_out, features)
    framing = Framing(n_in, sym, 8, 2)
    vpp, offset = 1.0, 0.5
    if features == "integrals":
        dut = BenchDUT(inner, framing, v_low=offset - vpp / 2, v_high=offset + vpp / 2, encoding="windows", gain=1.0)
        channel_range, channel_offset = 2.0, 0.5
    else:
        dut = BenchDUT(inner, framing, v_low=offset - vpp / 2, v_high=offset + vpp / 2, encoding="tones",
                       gain=4.0 / n_out)
        channel_range, channel_offset = 4.0, 0.0
    bench = SCPIBench(dut, seed=seed, noise_volts=noise_volts, faults=faults)
    awg = SCPIAWG(BenchTransport(bench, "awg", timeout=timeout), name="awg")
    scope = SCPIScope(BenchTransport(bench, "scope", timeout=timeout), name="scope")
    limits = BenchLimits(max_vpp=2.0, max_abs_offset=1.0, max_abs_voltage=2.0, max_points=max_points)
    system = AWGScopeSystem(
        awg,
        scope,
        n_inputs=n_in,
        n_outputs=n_out,
        limits=limits,
        vpp=vpp,
        offset=offset,
        sample_rate=1e6,
        levels=s.levels,
        features=features,
        symbol_samples=sym,
        guard_samples=framing.guard_samples,
        sync_chip_samples=framing.sync_chip_samples,
        channel_range=channel_range,
        channel_offset=channel_offset,
        max_delay_samples=max(16, bench.max_latency),
        on_clip=on_clip,
        retries=retries,
        backoff=backoff,
        max_backoff=max_backoff,
        acquisition_timeout=max(timeout, 0.05),
        expect_awg_idn="33522B",
        expect_scope_idn="DSOX3024T",
        name=f"awg-scope[{backend}]",
        device=device,
    )
    system.bench = bench  # type: ignore[attr-defined]
    system.backend = inner  # type: ignore[attr-defined]
    return system
