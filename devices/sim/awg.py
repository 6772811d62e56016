"""A simulated Keysight 33500B arbitrary waveform generator (channel 1), dispatching on the driver's table.

It answers the subset of ``protocols/scpi-bench.md`` that
:class:`physnn.devices.scpi.SCPIAWG` sends (:data:`~physnn.devices.scpi.KEYSIGHT_33500B`)
with the real replies (``*IDN?``, ``SYST:ERR?`` as ``+0,"No error"`` /
``-222,"Data out of range"``, ``*OPC?`` as ``1``). Settings outside the
instrument's own ranges (``max_vpp``, ``max_voltage`` = |offset| + Vpp/2,
``max_sample_rate``, ``memory``) are refused, leave the old value and queue an
error, as the real one does. ``*TRG`` plays the selected waveform once,
through the bench (:meth:`SCPIBench.fire`), if it is armed for a bus-triggered
single burst of an arbitrary waveform; otherwise ``-211,"Trigger ignored"``.

Output voltage: ``V = offset + code / 32767 * Vpp / 2`` while the output is
on, 0 V while it is off.
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import numpy as np

from ..awg_scope import FULL_SCALE
from ..errors import ProtocolError
from ..scpi import KEYSIGHT_33500B
from ..transport import parse_block
from .scpi_instrument import ON_OFF, REFUSED, BenchLink, Param, Reply, SimInstrument, _text, number, word

__all__ = ["SimAWG", "AWG_IDN"]

AWG_IDN = "Agilent Technologies,33522B,MY00000001,4.00-1.19-2.00-58-00"

#: OUTP1 ON and OUTP1 OFF share a header, so they share one setting.
_OUTPUT = Param("output", ON_OFF)


def _load(inst: SimInstrument, text: str) -> object:
    """``OUTP1:LOAD INF`` (high-Z) or 1..10000 ohms, kept as sent."""
    if text.upper() in ("INF", "INFINITY"):
        return "INF"
    return REFUSED if number(lambda _, v: 1 <= v <= 10e3)(inst, text) is REFUSED else text


class SimAWG(SimInstrument):
    """Keysight 33500B subset, channel 1.

    Args:
        bench: the bench that owns the trigger line and the clock.
        max_vpp, max_voltage, max_sample_rate, memory: the instrument's own ranges.
        table: the driver's command table (default :data:`KEYSIGHT_33500B`).
    """

    IDN: ClassVar[str] = AWG_IDN
    TABLE: ClassVar[Mapping[str, str]] = KEYSIGHT_33500B
    HANDLERS: ClassVar[Mapping[str, Param | str]] = {
        "byte_order": Param("little_endian", word({"SWAP": True, "NORM": False})),
        "clear_volatile": "_clear_volatile",
        "arb_dac_header": "_upload",
        "function_arb": Param("function", word(("ARB", "SIN", "SQU", "DC"))),
        "select_arb": "_select_arb",
        "sample_rate": Param("sample_rate", number(lambda self, v: 1e-6 <= v <= self.max_sample_rate)),
        "vpp": Param(
            "vpp", number(lambda self, v: 1e-3 <= v <= self.max_vpp and abs(self.offset) + v / 2 <= self.max_voltage)
        ),
        "offset": Param("offset", number(lambda self, v: abs(v) + self.vpp / 2 <= self.max_voltage)),
        "load": Param("load", _load),
        "burst_mode": Param("burst_mode", word(("TRIG", "GAT"))),
        "burst_cycles": Param("burst_cycles", number(lambda self, v: v >= 1, int)),
        "burst_on": Param("burst_on", ON_OFF),
        "trigger_source": Param("trigger_source", word(("IMM", "EXT", "BUS", "TIM"))),
        "output_on": _OUTPUT,
        "output_off": _OUTPUT,
        "output_query": "_output_query",
        "trigger": "_trigger",
    }

    def __init__(
        self,
        bench: BenchLink,
        *,
        max_vpp: float = 10.0,
        max_voltage: float = 5.0,
        max_sample_rate: float = 160e6,
        memory: int = 1_000_000,
        table: Mapping[str, str] | None = None,
    ):
        self.max_vpp = max_vpp
        self.max_voltage = max_voltage
        self.max_sample_rate = max_sample_rate
        self.memory = memory
        super().__init__(bench, table=table)

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

    # ----------------------------------------------------------- handlers
    def _clear_volatile(self, args: bytes, now: float) -> Reply:
        self.arbs.clear()
        self.selected = None
        if self.function == "ARB":
            self.function = "SIN"
        return None

    def _output_query(self, args: bytes, now: float) -> Reply:
        return "1" if self.output else "0"

    def _select_arb(self, args: bytes, now: float) -> Reply:
        name = _text(args)
        if name in self.arbs:
            self.selected = name
        else:
            self.push_error(-224, f"Illegal parameter value; no waveform {name}")
        return None

    def _trigger(self, args: bytes, now: float) -> Reply:
        ready = (
            self.burst_on
            and self.burst_mode == "TRIG"
            and self.trigger_source == "BUS"
            and self.function == "ARB"
            and self.selected is not None
        )
        if not ready:
            self.push_error(-211, "Trigger ignored")
            return None
        volts = self.volts()
        self.last_played = self.arbs[self.selected]
        self.bench.fire(volts, self.sample_rate)
        return None

    def _upload(self, args: bytes, now: float) -> Reply:
        """``SOUR1:DATA:ARB:DAC <name>,#<block of int16>``: a new volatile waveform (names are not reused)."""
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
