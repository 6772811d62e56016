"""A simulated Keysight InfiniiVision X-series oscilloscope (channel 1), dispatching on the driver's table.

It answers what :class:`physnn.devices.scpi.SCPIScope` sends
(:data:`~physnn.devices.scpi.INFINIIVISION_X`): ``:SING`` arms,
``:OPER:COND?`` reports the RUN bit (8) while armed or acquiring, ``*OPC?``
answers ``1`` only once the acquisition is complete (``acq_delay`` seconds
after the trigger; never if no trigger came), ``:WAV:PRE?`` gives the 10
preamble fields and ``:WAV:DATA?`` a definite-length block of signed 16-bit
words (LSB first after ``:WAV:BYT LSBF``). A trigger only starts an
acquisition while armed (the bench counts the lost ones).

Acquisition (:meth:`SimScope.capture`): the response (on the AWG grid) is
sampled every ``xincrement = :TIM:RANG / :WAV:POIN`` seconds (zero-order hold)
after a latency of ``delay`` AWG samples, plus Gaussian noise of
``noise_volts`` V rms, quantised to ``adc_bits`` over the channel range and
stored as 16-bit codes ``round((V - offset) / (range / 65536))`` clipped to
+-32767 (a clipped point reads exactly +-32767).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import numpy as np

from ..awg_scope import FULL_SCALE
from ..scpi import INFINIIVISION_X, OPER_RUN_BIT
from .scpi_instrument import ON_OFF, BenchLink, Param, Reply, SimInstrument, number, word

__all__ = ["SimScope", "SCOPE_IDN"]

SCOPE_IDN = "KEYSIGHT TECHNOLOGIES,DSOX3024T,MY00000002,07.50.2021102830"


class SimScope(SimInstrument):
    """Keysight InfiniiVision X-series subset, channel 1.

    Args:
        bench: the bench that owns the trigger line, the noise generator and the clock.
        max_points: deepest record (``:WAV:POIN``).
        adc_bits: vertical resolution of the digitiser.
        table: the driver's command table (default :data:`INFINIIVISION_X`).
    """

    IDN: ClassVar[str] = SCOPE_IDN
    TABLE: ClassVar[Mapping[str, str]] = INFINIIVISION_X
    HANDLERS: ClassVar[Mapping[str, Param | str]] = {
        "time_range": Param("time_range", number(lambda self, v: 1e-9 <= v <= 500.0)),
        "time_reference": Param("reference", word(("LEFT", "CENT", "CENTER", "RIGH", "RIGHT"))),
        "channel_range": Param("channel_range", number(lambda self, v: 8e-3 <= v <= 40.0)),
        "channel_offset": Param("channel_offset", number(lambda self, v: abs(v) <= 20.0)),
        "trigger_source": Param("trigger_source", word(("EXT", "CHAN1", "CHAN2"))),
        "trigger_level": Param("trigger_level", number()),
        "single": "_single",
        "operation_condition": "_operation_condition",
        "waveform_source": Param("source", word(("CHAN1", "CHAN2"))),
        "waveform_format": Param("format", word(("WORD", "BYTE", "ASC", "ASCII"))),
        "waveform_byte_order": Param("lsb_first", word({"LSBF": True, "MSBF": False})),
        "waveform_unsigned": Param("unsigned", ON_OFF),
        "waveform_points_mode": Param("points_mode", word(("NORM", "NORMAL", "MAX", "MAXIMUM", "RAW"))),
        "waveform_points": Param("points", number(lambda self, v: 100 <= v <= self.max_points, int)),
        "preamble": "_preamble",
        "data": "_data",
    }

    def __init__(
        self,
        bench: BenchLink,
        *,
        max_points: int = 4_000_000,
        adc_bits: int = 12,
        table: Mapping[str, str] | None = None,
    ):
        self.max_points = max_points
        self.adc_bits = adc_bits
        super().__init__(bench, table=table)

    def reset(self) -> None:
        """Power-on state: disarmed, no record, BYTE transfers."""
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

    def _ready_points(self, now: float) -> int:
        if self.record is None or self.done_at is None or now < self.done_at:
            return 0
        return int(self.record.size)

    # ----------------------------------------------------------- handlers
    def _opc(self, args: bytes, now: float) -> Reply:
        if self.armed:
            return None  # waits for a trigger that has not come: no answer
        if self.done_at is not None and now < self.done_at:
            return ("1", self.done_at)
        return "1"

    def _single(self, args: bytes, now: float) -> Reply:
        self.armed = True
        self.done_at = None
        self.record = None
        return None

    def _operation_condition(self, args: bytes, now: float) -> Reply:
        return f"+{OPER_RUN_BIT}" if self.acquiring(now) else "+0"

    def _preamble(self, args: bytes, now: float) -> Reply:
        n = self._ready_points(now)
        fmt = {"BYTE": 0, "WORD": 1}.get(self.format, 4)
        return (
            f"+{fmt},+0,+{n},+1,{self.record_xinc:+.8E},{0.0:+.8E},+0,"
            f"{self.yincrement:+.8E},{self.channel_offset:+.8E},+0"
        )

    def _data(self, args: bytes, now: float) -> Reply:
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

    # ------------------------------------------------------------ physics
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
