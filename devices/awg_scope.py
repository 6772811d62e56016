r"""An arbitrary waveform generator + oscilloscope bench as a :class:`PhysicalSystem`.

How a batch is measured
-----------------------
A batch ``x: [B, n_in]`` becomes ONE arbitrary waveform on the AWG (channel 1),
laid out on the AWG sample grid (rate ``sample_rate``) as::

    [lead guard][sync marker][guard][slot 0][guard][slot 1][guard] ... [slot B-1][guard]

* a *slot* holds one sample: its ``n_in`` drive values as consecutive symbols
  of ``symbol_samples`` points each (``slot = n_in * symbol_samples`` points);
* *guards* (``guard_samples`` points at DAC code 0, i.e. the offset voltage)
  separate slots so that the response of one sample does not leak into the
  next, and give the bench time to settle;
* the *sync marker* is a Barker-13 sequence of full-scale chips
  (``sync_chip_samples`` points each). Its autocorrelation has a single sharp
  peak, so the response can be located in the scope record by
  cross-correlation whatever the trigger latency and cable delay.

Drive values are volts at the AWG output (the spec's ``units`` is ``"V"``).
They map linearly onto DAC codes ``-32767..32767`` over the AWG span
``[offset - Vpp/2, offset + Vpp/2]``:

.. math:: c = \mathrm{round}\Big(\frac{x-(V_\text{offset}-V_{pp}/2)}{V_{pp}}\,65534 - 32767\Big),
   \qquad V = V_\text{offset} + \frac{c}{32767}\,\frac{V_{pp}}{2}

The spec's drive limits ``low``/``high`` default to that span and may narrow
it (a device under test that tolerates less than the AWG's span).

The waveform is uploaded once as an IEEE 488.2 block
(``SOUR1:DATA:ARB:DAC physnn,#...``), the scope is armed (``:SING``) and the
AWG is triggered once (``*TRG``, single burst). The scope's whole record is
read once (``:WAV:PRE?`` + ``:WAV:DATA?``, signed 16-bit words,
``volts = (code - yreference) * yincrement + yorigin``). The response of sample
``i`` is the part of the record that lies in slot ``i``'s time window after
the sync marker. Features per sample, ``n_out`` of them:

* ``"integrals"``: the slot is split into ``n_out`` equal windows (edges
  ``floor(k * P / n_out)`` of its ``P`` points) and each window is integrated,
  in V*s (the spec's ``output_units``);
* ``"fft"``: ``|FFT|`` of the slot's points, bins ``1..n_out`` (DC left out),
  scaled by ``2/P`` so that a cosine of amplitude ``A`` volts with ``k``
  cycles per slot reads ``A`` in bin ``k`` (``output_units`` ``"V"``).

Cost: 12 instrument transactions per waveform (listed in
:meth:`AWGScopeSystem._acquire`), independent of ``B``. A batch longer than
the waveform memory (``max_waveform_points``) is split into
``ceil(B / max_per_waveform)`` waveforms.

Safety and recovery (the shared :class:`~physnn.devices.bench.BenchSystem`)
--------------------------------------------------------------------------
Limits (:class:`BenchLimits`: Vpp, offset, peak voltage, sample rate,
waveform length) are fixed at construction and every setting is checked
before any byte is sent. ``safe_state()`` (AWG output off) runs on
``close()``, on any exception during a batch and on Ctrl-C (then re-raised).
Configuration is an ordered table (:attr:`AWGScopeSystem.SETUP`: identity,
the AWG's settings table, the scope's settings table; see
:mod:`physnn.devices.scpi`). Timeouts and malformed replies: back off, clear,
re-align the reply stream (:meth:`SCPIInstrument.resync`) and retry the
waveform (``retries``). A truncated data block is first re-requested from the
scope (the acquisition is still there). A lost connection: reopen, check the
identity is unchanged, re-apply the whole configuration, retry. Completed
waveforms are never lost: if a later one fails for good, the exception
carries the finished rows as ``exc.partial`` (a float32 ``[k, n_out]`` tensor
for the first ``k`` samples, ``k`` possibly 0), also kept in
``system.last_partial``. Every fault and retry goes to ``report_event`` (the
run file's event log).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from physnn.core import checks
from physnn.core.system import SystemSpec

from .bench import BenchSystem
from .errors import ConnectionLost, InstrumentError, LimitError, ProtocolError
from .scpi import SCPIAWG, Preamble, SCPIScope
from .transport import Transport

__all__ = ["BenchLimits", "Framing", "AWGScopeSystem", "BARKER13", "window_edges", "FULL_SCALE"]

#: Largest DAC code magnitude used (symmetric, so 0 is the offset voltage).
FULL_SCALE = 32767

#: Barker-13: the longest binary code whose aperiodic autocorrelation side lobes are all <= 1.
BARKER13 = np.array([1, 1, 1, 1, 1, -1, -1, 1, 1, -1, 1, -1, 1], dtype=np.int64)

#: Name of the volatile arbitrary waveform the system owns on the AWG.
ARB_NAME = "physnn"

#: Feature extractions (and their output units): window integrals (V*s) or |FFT| bins (V).
FEATURES = ("integrals", "fft")


def window_edges(points: int, n: int) -> np.ndarray:
    """Edges ``floor(k * points / n)``, k = 0..n, of ``n`` near-equal windows."""
    return (np.arange(n + 1, dtype=np.int64) * points) // n


@dataclass(frozen=True)
class BenchLimits:
    """What the bench may be driven with; checked before any byte is sent.

    Attributes:
        max_vpp: largest peak-to-peak amplitude (V) the device under test tolerates.
        max_abs_offset: largest |DC offset| (V).
        max_abs_voltage: largest |offset| + Vpp/2 (V), the peak voltage at the DUT.
        min_sample_rate, max_sample_rate: AWG sample-rate range (samples/s).
        max_points: longest waveform (points) the AWG memory takes.
        min_points: shortest waveform the AWG accepts.
    """

    max_vpp: float = 2.0
    max_abs_offset: float = 1.0
    max_abs_voltage: float = 2.0
    min_sample_rate: float = 1.0
    max_sample_rate: float = 160e6
    max_points: int = 65536
    min_points: int = 8

    def __post_init__(self) -> None:
        for key in ("max_vpp", "max_abs_voltage", "min_sample_rate", "max_sample_rate"):
            checks.positive(f"BenchLimits.{key}", getattr(self, key))
        checks.nonnegative("BenchLimits.max_abs_offset", self.max_abs_offset)
        if self.min_sample_rate > self.max_sample_rate:
            raise ValueError(
                "BenchLimits needs min_sample_rate <= max_sample_rate, "
                f"got {self.min_sample_rate}, {self.max_sample_rate}"
            )
        for key in ("max_points", "min_points"):
            checks.integer(f"BenchLimits.{key}", getattr(self, key), low=1)
        if self.min_points > self.max_points:
            raise ValueError(f"BenchLimits.min_points={self.min_points} exceeds max_points={self.max_points}")

    def check(self, *, vpp: float, offset: float, sample_rate: float) -> None:
        """Raise :class:`LimitError` naming the first setting outside the limits."""
        for name, v in (("vpp", vpp), ("offset", offset), ("sample_rate", sample_rate)):
            try:
                checks.real(name, v)
            except checks.ParameterError as exc:
                raise LimitError(str(exc)) from None
        if not 0 < vpp <= self.max_vpp:
            raise LimitError(f"Vpp = {vpp:g} V is outside the bench limit 0 < Vpp <= max_vpp = {self.max_vpp:g} V")
        if abs(offset) > self.max_abs_offset:
            raise LimitError(f"offset = {offset:g} V exceeds the bench limit |offset| <= {self.max_abs_offset:g} V")
        peak = abs(offset) + vpp / 2
        if peak > self.max_abs_voltage + 1e-12:
            raise LimitError(
                f"peak voltage |offset| + Vpp/2 = {peak:g} V exceeds the bench limit max_abs_voltage = "
                f"{self.max_abs_voltage:g} V (offset {offset:g} V, Vpp {vpp:g} V)"
            )
        if not self.min_sample_rate <= sample_rate <= self.max_sample_rate:
            raise LimitError(
                f"sample rate {sample_rate:g} Sa/s is outside the bench limits "
                f"{self.min_sample_rate:g}..{self.max_sample_rate:g} Sa/s"
            )

    def check_waveform(self, codes: np.ndarray) -> None:
        """Length and code range of a waveform about to be uploaded."""
        n = int(codes.size)
        if n > self.max_points:
            raise LimitError(f"waveform of {n} points exceeds the AWG memory limit max_points = {self.max_points}")
        if n < self.min_points:
            raise LimitError(f"waveform of {n} points is shorter than min_points = {self.min_points}")
        lo, hi = int(codes.min()), int(codes.max())
        if lo < -FULL_SCALE or hi > FULL_SCALE:
            raise LimitError(f"DAC codes {lo}..{hi} exceed the range -{FULL_SCALE}..{FULL_SCALE}")


@dataclass(frozen=True)
class Framing:
    """Where things sit in the waveform, in AWG samples (see the module docstring)."""

    n_inputs: int
    symbol_samples: int = 4
    guard_samples: int = 8
    sync_chip_samples: int = 2

    def __post_init__(self) -> None:
        for key in ("n_inputs", "symbol_samples", "guard_samples", "sync_chip_samples"):
            checks.integer(key, getattr(self, key), low=1)

    @property
    def slot(self) -> int:
        return self.n_inputs * self.symbol_samples

    @property
    def lead(self) -> int:
        return self.guard_samples

    @property
    def sync(self) -> int:
        return len(BARKER13) * self.sync_chip_samples

    @property
    def header(self) -> int:
        """Points before slot 0: lead guard + sync + guard."""
        return self.lead + self.sync + self.guard_samples

    def length(self, n_samples: int) -> int:
        return self.header + n_samples * (self.slot + self.guard_samples)

    def max_samples(self, max_points: int) -> int:
        return max(0, (max_points - self.header) // (self.slot + self.guard_samples))

    def slot_start(self, i: np.ndarray | int) -> np.ndarray | int:
        """Index of slot ``i``'s first point, counted from the start of the sync marker."""
        return self.sync + self.guard_samples + np.asarray(i) * (self.slot + self.guard_samples)

    def sync_codes(self) -> np.ndarray:
        return np.repeat(BARKER13 * FULL_SCALE, self.sync_chip_samples)

    def waveform(self, codes: np.ndarray) -> np.ndarray:
        """Lay out DAC codes ``[B, n_in]`` (int) as one int16 waveform."""
        codes = np.asarray(codes)
        b = codes.shape[0]
        if codes.ndim != 2 or codes.shape[1] != self.n_inputs:
            raise ValueError(f"codes must be [B, {self.n_inputs}], got shape {codes.shape}")
        body = np.zeros((b, self.slot + self.guard_samples), dtype=np.int16)
        body[:, : self.slot] = np.repeat(codes.astype(np.int16), self.symbol_samples, axis=1)
        out = np.zeros(self.length(b), dtype=np.int16)
        out[self.lead : self.lead + self.sync] = self.sync_codes()
        out[self.header :] = body.reshape(-1)
        return out


class AWGScopeSystem(BenchSystem):
    """AWG -> device under test -> oscilloscope, one waveform per batch.

    Args:
        awg, scope: the drivers (each over an open :class:`Transport`).
        n_inputs: drive values per sample (symbols per slot).
        n_outputs: features extracted per sample.
        limits: the bench limits; every setting below is checked against them
            before anything is written.
        vpp, offset: AWG amplitude (V peak-to-peak) and offset (V).
        sample_rate: AWG sample rate (Sa/s).
        low, high: drive limits in volts at the AWG output (default: the whole
            span ``offset -/+ Vpp/2``); must lie inside that span.
        levels: allowed drive levels in ``[low, high]`` (None: continuous, 16-bit DAC).
        features: ``"integrals"`` (V*s) or ``"fft"`` (V).
        symbol_samples, guard_samples, sync_chip_samples: framing (AWG points).
        max_waveform_points: longest waveform used (default ``limits.max_points``).
        load: AWG output load setting (``"INF"`` for high-Z, or ohms).
        trigger_source, trigger_level: scope trigger (``"EXT"`` from the AWG's
            trigger out, or ``"CHAN2"``), level in V.
        channel_range, channel_offset: scope channel 1 full-scale range and centre (V).
        max_delay_samples: longest latency (in AWG samples) between the
            trigger and the response's sync marker; the sync search and the
            record length allow for it.
        on_clip: ``"flag"`` (default) or ``"raise"`` when a sample's response
            touches the scope's full scale (``clip_codes``). Either way the
            count goes to ``stats.counters["clipped_samples"]`` and the
            per-sample mask of the last batch is ``last_clipped``.
        retries: attempts after the first for one waveform.
        backoff: first back-off (s), doubled at each retry up to ``max_backoff``.
        acquisition_timeout: longest wait for the acquisition (s); default
            the scope transport timeout plus twice the record duration.
        expect_awg_idn, expect_scope_idn: substrings the ``*IDN?`` answers must
            contain (e.g. ``"33522B"``), to refuse driving the wrong instrument.
        min_correlation: smallest normalised correlation accepted for the sync marker.
        name, device: spec name and result device.
        open: identify the instruments and apply the configuration now.
    """

    SETUP: ClassVar[tuple[str, ...]] = ("_check_identity", "_configure_awg", "_configure_scope")
    CLIP_COUNTER: ClassVar[str] = "clipped_samples"

    def __init__(
        self,
        awg: SCPIAWG,
        scope: SCPIScope,
        *,
        n_inputs: int,
        n_outputs: int,
        limits: BenchLimits,
        vpp: float,
        offset: float,
        sample_rate: float,
        low: float | None = None,
        high: float | None = None,
        levels: int | None = None,
        features: str = "integrals",
        symbol_samples: int = 4,
        guard_samples: int = 8,
        sync_chip_samples: int = 2,
        max_waveform_points: int | None = None,
        load: str | float = "INF",
        trigger_source: str = "EXT",
        trigger_level: float = 1.0,
        channel_range: float = 2.0,
        channel_offset: float = 0.0,
        max_delay_samples: int = 32,
        on_clip: str = "flag",
        clip_codes: tuple[int, int] = (-32767, 32767),
        retries: int = 3,
        backoff: float = 0.02,
        max_backoff: float = 1.0,
        acquisition_timeout: float | None = None,
        expect_awg_idn: str | None = None,
        expect_scope_idn: str | None = None,
        min_correlation: float = 0.6,
        name: str = "awg-scope",
        device: str | torch.device = "cpu",
        open: bool = True,
    ):
        if not isinstance(limits, BenchLimits):
            raise TypeError(f"limits must be a BenchLimits, got {type(limits).__name__}")
        # Every check below happens before any byte reaches an instrument.
        limits.check(vpp=vpp, offset=offset, sample_rate=sample_rate)
        self.features = checks.choice("features", features, FEATURES)
        self.max_delay_samples = checks.integer("max_delay_samples", max_delay_samples, low=0)
        self.channel_range = checks.positive("channel_range", channel_range)
        self.channel_offset = checks.real("channel_offset", channel_offset)
        self.trigger_level = checks.real("trigger_level", trigger_level)
        self.min_correlation = checks.real("min_correlation", min_correlation, low=0.0, high=1.0)
        clip = checks.int_sequence("clip_codes", clip_codes, length=2)
        self.clip_codes = (clip[0], clip[1])
        span_low, span_high = float(offset) - float(vpp) / 2, float(offset) + float(vpp) / 2
        low = span_low if low is None else checks.real("low", low)
        high = span_high if high is None else checks.real("high", high)
        eps = 1e-9 * max(1.0, abs(span_low), abs(span_high))
        if not span_low - eps <= low < high <= span_high + eps:
            raise LimitError(
                f"drive limits low={low:g} V, high={high:g} V must satisfy "
                f"{span_low:g} <= low < high <= {span_high:g} V "
                f"(the AWG span offset -/+ Vpp/2 for offset {offset:g} V, Vpp {vpp:g} V)"
            )
        output_units = "V*s" if self.features == "integrals" else "V"
        spec = SystemSpec(
            checks.integer("n_inputs", n_inputs, low=1),
            checks.integer("n_outputs", n_outputs, low=1),
            low,
            high,
            levels,
            name=name,
            units="V",
            output_units=output_units,
        )
        framing = Framing(spec.n_inputs, symbol_samples, guard_samples, sync_chip_samples)
        max_pts = (
            limits.max_points
            if max_waveform_points is None
            else checks.integer("max_waveform_points", max_waveform_points, low=1)
        )
        if max_pts > limits.max_points:
            raise LimitError(
                f"max_waveform_points = {max_pts} exceeds the AWG memory limit max_points = {limits.max_points}"
            )
        per_wave = framing.max_samples(max_pts)
        if per_wave < 1:
            raise LimitError(
                f"one sample needs a waveform of {framing.length(1)} points (n_inputs={spec.n_inputs}, "
                f"symbol_samples={symbol_samples}, guard_samples={guard_samples}), more than "
                f"max_waveform_points = {max_pts}"
            )
        if framing.length(1) < limits.min_points:
            raise LimitError(
                f"a one-sample waveform of {framing.length(1)} points is below min_points = {limits.min_points}"
            )
        if self.features == "integrals" and framing.slot < spec.n_outputs:
            raise ValueError(
                f"'integrals' needs at least one point per window: slot of {framing.slot} points "
                f"(n_inputs*symbol_samples) < n_outputs = {spec.n_outputs}; raise symbol_samples"
            )
        if self.features == "fft" and framing.slot // 2 < spec.n_outputs:
            raise ValueError(
                f"'fft' needs slot//2 >= n_outputs bins: slot of {framing.slot} points gives {framing.slot // 2} "
                f"< n_outputs = {spec.n_outputs}; raise symbol_samples"
            )
        super().__init__(
            spec, retries=retries, backoff=backoff, max_backoff=max_backoff, on_clip=on_clip, device=device
        )
        self.awg = awg
        self.scope = scope
        for inst in (awg, scope):
            inst.on_event = self.report_event
        self.limits = limits
        self.framing = framing
        self.vpp = float(vpp)
        self.offset = float(offset)
        self.sample_rate = float(sample_rate)
        self.max_waveform_points = max_pts
        self.max_per_waveform = per_wave
        self.load = load
        self.trigger_source = trigger_source
        self.expect_awg_idn = expect_awg_idn
        self.expect_scope_idn = expect_scope_idn
        # The scope record covers the longest waveform plus the latency allowance.
        self.record_points = framing.length(per_wave) + self.max_delay_samples + guard_samples
        self.record_seconds = self.record_points / self.sample_rate
        self.acquisition_timeout = (
            checks.positive("acquisition_timeout", acquisition_timeout)
            if acquisition_timeout is not None
            else scope.transport.timeout + 2.0 * self.record_seconds
        )
        self.awg_idn: str | None = None
        self.scope_idn: str | None = None
        self._output_on = False
        if open:
            self.open()

    @property
    def transports(self) -> Sequence[Transport]:
        return (self.awg.transport, self.scope.transport)

    # ------------------------------------------------------- configuration
    def _check_identity(self) -> None:
        """``*IDN?`` of both; refuse the wrong instrument, or a different one after a reconnect."""
        awg_idn = self.awg.identify()
        scope_idn = self.scope.identify()
        for label, idn, want in (("AWG", awg_idn, self.expect_awg_idn), ("scope", scope_idn, self.expect_scope_idn)):
            if want is not None and want not in idn:
                raise InstrumentError(
                    f"{label} identifies as {idn!r}, which does not contain {want!r}; refusing to drive it"
                )
        if self.awg_idn is not None and (awg_idn != self.awg_idn or scope_idn != self.scope_idn):
            raise InstrumentError(
                f"after reconnecting, the instruments identify as {awg_idn!r} / {scope_idn!r}, "
                f"not {self.awg_idn!r} / {self.scope_idn!r} as before; refusing to continue"
            )
        self.awg_idn, self.scope_idn = awg_idn, scope_idn

    def _configure_awg(self) -> None:
        """The AWG's settings table (output off first), then its error queue."""
        self._output_on = False
        self.awg.configure(vpp=self.vpp, offset=self.offset, load=self.load, sample_rate=self.sample_rate)
        self.awg.check_errors()

    def _configure_scope(self) -> None:
        """The scope's settings table (record covering the longest waveform), then its error queue."""
        self.scope.send("clear_status")
        self.scope.configure(
            time_range=self.record_seconds,
            channel_range=self.channel_range,
            channel_offset=self.channel_offset,
            trigger_source=self.trigger_source,
            trigger_level=self.trigger_level,
            points=self.record_points,
        )
        self.scope.check_errors()

    # ------------------------------------------------------------ lifecycle
    def safe_state(self) -> None:
        """AWG output off, confirmed by reading it back (:meth:`SCPIAWG.safe_state`; a message cut half-way is
        ended first). Idempotent; reopens a dropped AWG connection once to get the command through."""
        with self._lock:
            self.safe_confirmed = False
            try:
                self.awg.safe_state()
            except ConnectionLost:
                self.awg.transport.reopen()
                self._configured = False  # the instrument may have rebooted: reconfigure before driving again
                self.awg.safe_state()
            self._output_on = False
            self.safe_confirmed = True

    def _resync(self) -> None:
        """Clear both instruments and re-align their replies (late answers are dropped, never parsed)."""
        for inst in (self.awg, self.scope):
            inst.transport.clear()
            dropped = inst.resync()
            if dropped:
                self.report_event("stale_reply", instrument=inst.name, dropped=dropped)

    # ------------------------------------------------------------- measuring
    def drive_codes(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Drive volts ``[B, n_in]`` (already validated) -> int16 DAC codes over the AWG span."""
        span_low = self.offset - self.vpp / 2
        xn = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        codes = np.rint((xn - span_low) / self.vpp * (2 * FULL_SCALE) - FULL_SCALE)
        return np.clip(codes, -FULL_SCALE, FULL_SCALE).astype(np.int16)

    def code_volts(self, codes: np.ndarray) -> np.ndarray:
        """DAC codes -> AWG output volts."""
        return self.offset + np.asarray(codes, dtype=np.float64) / FULL_SCALE * (self.vpp / 2)

    def waveforms_for(self, batch: int) -> int:
        """Waveforms (and so trigger/capture cycles) needed for ``batch`` samples."""
        return -(-batch // self.max_per_waveform)

    @property
    def rows_per_transaction(self) -> int:
        return self.max_per_waveform

    def _encode(self, x: torch.Tensor) -> np.ndarray:
        return self.drive_codes(x)

    def _transaction_name(self, start: int, stop: int, batch: int) -> str:
        return f"waveform of samples {start}..{stop - 1} of {batch}"

    def _transact(self, codes: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
        """One waveform (one attempt): features ``[n, n_out]`` and the per-sample clip mask ``[n]``."""
        wave = self.framing.waveform(codes)
        self.limits.check_waveform(wave)
        pre, trace = self._acquire(wave)
        return self._extract(pre, trace, codes.shape[0])

    def _clip_message(self, mask: np.ndarray, y: torch.Tensor, n: int, rows: int) -> str:
        return (
            f"{n} of {mask.shape[0]} samples reached the scope's full scale "
            f"(first: sample {int(np.flatnonzero(mask)[0])}); "
            f"the channel range {self.channel_range:g} V (offset {self.channel_offset:g} V) is too small "
            "for the response, or use on_clip='flag'"
        )

    def _acquire(self, wave: np.ndarray) -> tuple[Preamble, np.ndarray]:
        """Upload, arm, trigger, wait, read: 12 transactions whatever the batch size.

        AWG: VOL:CLE, DATA:ARB:DAC (block), FUNC:ARB, FUNC ARB, SRAT (5);
        scope: :SING, :OPER:COND? (2); AWG: *TRG (1); scope: *OPC?,
        :WAV:PRE?, :WAV:DATA? (3); AWG: SYST:ERR? (1). The very first batch
        after (re)configuration adds ``OUTP1 ON``.
        """
        self.awg.upload(ARB_NAME, wave, self.sample_rate)
        if not self._output_on:
            self.awg.output(True)
            self._output_on = True
        self.scope.arm()
        self.awg.trigger()
        self.scope.wait_acquisition(self.acquisition_timeout)
        try:
            pre, trace = self.scope.read_waveform()
        except ProtocolError as exc:
            # The acquisition is still in the scope: re-request it once before redoing the waveform.
            self.report_event("truncated_block", error=str(exc))
            self.scope.transport.clear()
            dropped = self.scope.resync()
            if dropped:
                self.report_event("stale_reply", instrument=self.scope.name, dropped=dropped)
            pre, trace = self.scope.read_waveform()
        self.awg.check_errors()
        return pre, trace

    # ---------------------------------------------------------- extraction
    def _sync_template(self, ratio: float) -> np.ndarray:
        """The sync marker sampled on the scope grid (``ratio`` = AWG samples per scope point)."""
        m = max(1, int(round(self.framing.sync / ratio)))
        chip = np.minimum((np.arange(m) * ratio) // self.framing.sync_chip_samples, len(BARKER13) - 1).astype(int)
        return BARKER13[chip].astype(np.float64)

    def find_sync(self, volts: np.ndarray, ratio: float) -> int:
        """Record index where the sync marker starts (normalised cross-correlation peak)."""
        tpl = self._sync_template(ratio)
        tpl = tpl - tpl.mean()
        m = tpl.size
        span = int(math.ceil((self.framing.lead + self.max_delay_samples) / ratio)) + m + 1
        seg = volts[: min(volts.size, span)]
        if seg.size < m:
            raise ProtocolError(f"scope record of {volts.size} points is shorter than the sync marker ({m} points)")
        num = np.correlate(seg, tpl, mode="valid")
        c1 = np.concatenate(([0.0], np.cumsum(seg)))
        c2 = np.concatenate(([0.0], np.cumsum(seg * seg)))
        s1 = c1[m:] - c1[:-m]
        s2 = c2[m:] - c2[:-m]
        var = np.maximum(s2 - s1 * s1 / m, 0.0)
        den = np.sqrt(var) * np.linalg.norm(tpl)
        corr = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
        k = int(np.argmax(corr))
        if corr[k] < self.min_correlation:
            raise ProtocolError(
                f"sync marker not found in the scope record (best normalised correlation {corr[k]:.3f} "
                f"< {self.min_correlation}); is the response connected to channel 1 and triggered?"
            )
        return k

    def _extract(self, pre: Preamble, codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        volts = pre.volts(codes)
        ratio = pre.xincrement * self.sample_rate  # AWG samples per scope point
        if not ratio > 0:
            raise ProtocolError(f"scope preamble x increment {pre.xincrement!r} s is not positive")
        j0 = self.find_sync(volts, ratio)
        starts = j0 + np.rint(self.framing.slot_start(np.arange(n)) / ratio).astype(np.int64)
        p = int(round(self.framing.slot / ratio))
        if p < 1:
            raise ProtocolError(f"scope samples too coarse: a slot spans {self.framing.slot / ratio:.3f} points")
        if starts[-1] + p > volts.size:
            raise ProtocolError(
                f"scope record of {volts.size} points ends before sample {n - 1}'s slot "
                f"(points {starts[-1]}..{starts[-1] + p}); record too short for the waveform"
            )
        idx = starts[:, None] + np.arange(p)[None, :]
        seg = volts[idx]
        raw = codes[idx]
        clip = ((raw <= self.clip_codes[0]) | (raw >= self.clip_codes[1])).any(axis=1)
        n_out = self.spec.n_outputs
        if self.features == "integrals":
            edges = window_edges(p, n_out)
            if np.any(np.diff(edges) < 1):
                raise ProtocolError(f"slot of {p} scope points cannot hold {n_out} integration windows")
            feats = np.add.reduceat(seg, edges[:-1], axis=1) * pre.xincrement
        else:
            if p // 2 < n_out:
                raise ProtocolError(f"slot of {p} scope points gives {p // 2} FFT bins < n_outputs = {n_out}")
            feats = np.abs(np.fft.rfft(seg, axis=1))[:, 1 : n_out + 1] * (2.0 / p)
        if not np.all(np.isfinite(feats)):
            self.stats.count("non_finite_features", int((~np.isfinite(feats)).sum()))
            raise ProtocolError("non-finite features computed from the scope record (bad preamble?)")
        return feats, clip

    # -------------------------------------------------------------- metadata
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            awg_idn=self.awg_idn,
            scope_idn=self.scope_idn,
            awg_resource=self.awg.transport.resource,
            scope_resource=self.scope.transport.resource,
            limits=asdict(self.limits),
            framing=asdict(self.framing),
            vpp_V=self.vpp,
            offset_V=self.offset,
            sample_rate_Sa_s=self.sample_rate,
            features=self.features,
            max_per_waveform=self.max_per_waveform,
            record_points=self.record_points,
            channel_range_V=self.channel_range,
            channel_offset_V=self.channel_offset,
        )
        return d
