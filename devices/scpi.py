"""SCPI drivers for an arbitrary waveform generator and an oscilloscope.

Why tables: every command string a driver sends lives in ONE dict of
``str.format`` templates per instrument family (:data:`KEYSIGHT_33500B`,
:data:`INFINIIVISION_X`, exactly as fixed by ``protocols/scpi-bench.md``).
Supporting another model is a new table (and its exact-byte tests), not new
driver code: pass ``commands=MY_TABLE`` to the driver. The simulated
instruments (:mod:`physnn.devices.sim`) dispatch on the same tables, so the
driver and its simulation cannot drift apart.

Configuration is a table too: :attr:`SCPIAWG.SETTINGS` and
:attr:`SCPIScope.SETTINGS` list, in the order the manuals ask for, each
command ``configure()`` sends and which of its keyword values fills the
command's field (:class:`Setting`). ``configure()`` walks the table; it
refuses a missing or unknown keyword before writing anything.

Numbers are formatted with :func:`scpi_number` (up to 10 significant digits,
a decimal point in every float: ``1000000.0``, ``0.5``, ``1.5e-05``, ``1.0e-09``) so the bytes on the wire
are reproducible and testable.

The drivers do no range checking of their own beyond what the table needs:
bench limits are the job of :class:`physnn.devices.awg_scope.BenchLimits`,
checked before a driver method is ever called.

A message cut half-way (Ctrl-C in the middle of a waveform upload) leaves the
instrument's parser inside a definite-length block, where it takes the next
command -- ``OUTP1 OFF`` included -- as block data.
:meth:`SCPIInstrument.end_cut_message` ends it before the safe state and
before every resync: a device clear where the bus has one (a VISA INSTR
resource), else bytes that can only end it in an error (:func:`message_flush`),
then ``*CLS``. The AWG's safe state is confirmed by reading ``OUTP1?`` back.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from .errors import InstrumentError, InstrumentReportedError, InstrumentTimeout, ProtocolError
from .transport import Transport, UnfinishedWrite

logger = logging.getLogger(__name__)

__all__ = [
    "Setting",
    "command_header",
    "KEYSIGHT_33500B",
    "INFINIIVISION_X",
    "SCPIInstrument",
    "SCPIAWG",
    "SCPIScope",
    "Preamble",
    "scpi_number",
    "parse_error_reply",
    "message_flush",
]

#: Keysight 33500B / 33600A, channel 1 (see protocols/scpi-bench.md).
KEYSIGHT_33500B: dict[str, str] = {
    "idn": "*IDN?",
    "reset": "*RST",
    "clear_status": "*CLS",
    "opc": "*OPC?",
    "error": "SYST:ERR?",
    "ese_set": "*ESE {value}",
    "ese_query": "*ESE?",
    "byte_order": "FORM:BORD SWAP",
    "clear_volatile": "SOUR1:DATA:VOL:CLE",
    "arb_dac_header": "SOUR1:DATA:ARB:DAC {name},",
    "function_arb": "SOUR1:FUNC ARB",
    "select_arb": "SOUR1:FUNC:ARB {name}",
    "sample_rate": "SOUR1:FUNC:ARB:SRAT {value}",
    "vpp": "SOUR1:VOLT {value}",
    "offset": "SOUR1:VOLT:OFFS {value}",
    "load": "OUTP1:LOAD {value}",
    "burst_mode": "SOUR1:BURS:MODE TRIG",
    "burst_cycles": "SOUR1:BURS:NCYC 1",
    "burst_on": "SOUR1:BURS:STAT ON",
    "trigger_source": "TRIG1:SOUR BUS",
    "output_on": "OUTP1 ON",
    "output_off": "OUTP1 OFF",
    "output_query": "OUTP1?",
    "trigger": "*TRG",
}

#: Keysight InfiniiVision 2000/3000/4000 X-series, channel 1.
INFINIIVISION_X: dict[str, str] = {
    "idn": "*IDN?",
    "reset": "*RST",
    "clear_status": "*CLS",
    "opc": "*OPC?",
    "error": ":SYST:ERR?",
    "ese_set": "*ESE {value}",
    "ese_query": "*ESE?",
    "time_range": ":TIM:RANG {value}",
    "time_reference": ":TIM:REF LEFT",
    "channel_range": ":CHAN1:RANG {value}",
    "channel_offset": ":CHAN1:OFFS {value}",
    "trigger_source": ":TRIG:EDGE:SOUR {source}",
    "trigger_level": ":TRIG:EDGE:LEV {value}",
    "single": ":SING",
    "operation_condition": ":OPER:COND?",
    "waveform_source": ":WAV:SOUR CHAN1",
    "waveform_format": ":WAV:FORM WORD",
    "waveform_byte_order": ":WAV:BYT LSBF",
    "waveform_unsigned": ":WAV:UNS 0",
    "waveform_points_mode": ":WAV:POIN:MODE RAW",
    "waveform_points": ":WAV:POIN {value}",
    "preamble": ":WAV:PRE?",
    "data": ":WAV:DATA?",
}


#: Filler for a cut message: not a character any SCPI token may contain, so whatever the parser was reading
#: (a header, a number, block data followed by this) ends in a parse error, never in a shorter valid command.
FLUSH_BYTE = b"\x01"


#: what an output-state query answers when the output is off (Keysight: 0; others: OFF)
_OFF = ("0", "+0", "OFF")


def message_flush(cut: UnfinishedWrite) -> bytes:
    """Bytes that end a message of which ``cut.sent_min..sent_max`` bytes reached the instrument, in an error.

    As many filler bytes as the rest of the message (so a block the parser is
    inside is completed, whatever number of its bytes arrived) and a newline.
    A cut number is never completed into a different valid one (``1.5e-05``
    cut to ``1.5``): the filler makes the command invalid first.
    """
    return FLUSH_BYTE * (len(cut.data) - cut.sent_min) + b"\n"


@dataclass(frozen=True)
class Setting:
    """One row of a driver's configuration table.

    Attributes:
        command: key in the command table.
        value: the ``configure()`` keyword that fills the command's one field
            (None: a fixed command such as ``"FORM:BORD SWAP"``).
        integer: send the value as an integer (a point count).
    """

    command: str
    value: str | None = None
    integer: bool = False


def command_header(template: str) -> str:
    """The header of a command template, as an instrument parses it: ``"SOUR1:VOLT {value}"`` -> ``"SOUR1:VOLT"``.

    Upper case, without the leading colon (``":WAV:PRE?"`` -> ``"WAV:PRE?"``).
    """
    head = template.split(" ", 1)[0].strip().upper()
    return head[1:] if head.startswith(":") else head


def _field(template: str) -> str | None:
    """The one ``{field}`` of a template (None for a fixed command)."""
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    if len(names) > 1:
        raise ValueError(f"command template {template!r} has several fields {names}; a setting fills one")
    return names[0] if names else None


#: ``:OPER:COND?`` bit 3 (value 8): the scope is running (armed or acquiring).
OPER_RUN_BIT = 8

_ERROR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


def scpi_number(value: float) -> str:
    """Format a number for a SCPI command: ints as is, floats with <= 10 significant digits and a point."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"cannot send a non-finite number to an instrument: {value!r}")
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    text = f"{float(value):.10g}"
    if text == "-0":
        text = "0"
    # Always a decimal point in a float's mantissa ("1.0", "1.0e-05"): some
    # parsers (and pyvisa-sim) read "1" or "1e-05" as an integer or not at all.
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + e + exponent


def parse_error_reply(reply: str) -> tuple[int, str]:
    """Parse a ``SYST:ERR?`` answer such as ``-222,"Data out of range"``."""
    m = _ERROR_RE.match(reply)
    if not m:
        raise ProtocolError(f'cannot parse error-queue reply {reply!r} (expected <code>,"<message>")')
    return int(m.group(1)), m.group(2)


class SCPIInstrument:
    """Common SCPI plumbing: a command table, identity, error queue, resync.

    Args:
        transport: the open channel to the instrument.
        commands: the command table; defaults to the class's ``TABLE``.
        name: used in messages.
    """

    TABLE: Mapping[str, str] = {}
    #: The ordered configuration table walked by :meth:`configure`.
    SETTINGS: tuple[Setting, ...] = ()

    def __init__(self, transport: Transport, *, commands: Mapping[str, str] | None = None, name: str | None = None):
        self.transport = transport
        self.commands: dict[str, str] = dict(self.TABLE if commands is None else commands)
        self.name = name or type(self).__name__
        self.idn: str | None = None
        #: ``on_event(kind, **fields)``: where the driver reports what it survived (the system's ``report_event``).
        self.on_event: Callable[..., None] | None = None
        self._markers = itertools.count()

    def _cleanup_failed(self, exc: InstrumentError) -> None:
        """A cleanup (restoring the timeout) failed while another error was already on its way out."""
        if self.on_event is not None:
            self.on_event("cleanup_failed", instrument=self.name, action="restore_timeout", error=str(exc))
        else:
            logger.warning("%s: restoring the timeout failed after an error: %s", self.name, exc)

    # ------------------------------------------------------------ commands
    def command(self, key: str, **values: Any) -> str:
        """The command string for ``key`` with numbers formatted by :func:`scpi_number`."""
        try:
            template = self.commands[key]
        except KeyError:
            raise KeyError(f"{self.name}: the command table has no entry {key!r}") from None
        formatted = {
            k: scpi_number(v) if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else v
            for k, v in values.items()
        }
        return template.format(**formatted)

    def configure(self, **values: Any) -> None:
        """Send every row of :attr:`SETTINGS` in order, filling fields from ``values``.

        A missing or unknown keyword is refused before anything is written.
        """
        wanted = [row.value for row in self.SETTINGS if row.value is not None]
        missing = [k for k in wanted if k not in values]
        unknown = sorted(set(values) - set(wanted))
        if missing or unknown:
            raise TypeError(
                f"{self.name}.configure() needs {', '.join(wanted)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        commands = []
        for row in self.SETTINGS:
            field = _field(self.commands[row.command]) if row.value is not None else None
            if row.value is None:
                commands.append(self.command(row.command))
            else:
                v = values[row.value]
                commands.append(self.command(row.command, **{field or "value": int(v) if row.integer else v}))
        for c in commands:
            self.transport.write(c)

    def send(self, key: str, **values: Any) -> None:
        self.transport.write(self.command(key, **values))

    def ask(self, key: str, **values: Any) -> str:
        return self.transport.query(self.command(key, **values)).strip()

    # ------------------------------------------------------------ identity
    def identify(self) -> str:
        """Query ``*IDN?`` and remember the answer in ``self.idn``."""
        idn = self.ask("idn")
        if not idn:
            raise ProtocolError(f"{self.name}: empty *IDN? reply", resource=self.transport.resource)
        self.idn = idn
        return idn

    def check_errors(self, max_errors: int = 32) -> list[tuple[int, str]]:
        """Drain the error queue; raise :class:`InstrumentReportedError` listing every error.

        Returns ``[]`` when the queue was empty. A queue that never reaches
        ``0,"No error"`` within ``max_errors`` reads is a :class:`ProtocolError`.
        """
        errors: list[tuple[int, str]] = []
        for _ in range(max_errors):
            code, message = parse_error_reply(self.ask("error"))
            if code == 0:
                break
            errors.append((code, message))
        else:
            raise ProtocolError(
                f"{self.name}: error queue not empty after {max_errors} reads: {errors}",
                resource=self.transport.resource,
            )
        if errors:
            text = "; ".join(f'{c},"{m}"' for c, m in errors)
            exc = InstrumentReportedError(
                errors[0][0], f"{self.name} reported {len(errors)} error(s): {text}", resource=self.transport.resource
            )
            exc.errors = errors  # type: ignore[attr-defined]
            raise exc
        return errors

    def end_cut_message(self) -> bool:
        """End a message the instrument holds part of (a write that was cut); True if there was one.

        A device clear if the transport has one that resets the instrument's
        parser; else :func:`message_flush` then ``*CLS`` (the flush's own
        parse errors are not the instrument's). If this fails in turn, the cut
        stays recorded for the next try.
        """
        t = self.transport
        cut = t.take_unfinished_write()
        if cut is None:
            return False
        try:
            if t.clear_resets_device:
                t.clear()
            if not t.clear_resets_device:  # (also when the clear just found that it cannot reset the device)
                t.write_raw(message_flush(cut))
                self.send("clear_status")
        except BaseException:
            if t.unfinished_write is None or t.unfinished_write.data.startswith(FLUSH_BYTE):
                t.unfinished_write = cut  # a cut flush is covered by sending the whole flush again
            raise
        if self.on_event is not None:
            how = "device_clear" if t.clear_resets_device else "flush"
            self.on_event("message_ended", instrument=self.name, cut=repr(cut), how=how)
        return True

    def next_marker(self) -> int:
        """Marker values for :meth:`resync`: 2..255 in a scrambled order (never 0 or 1, the
        commonest stale answers, and never the same twice in a row)."""
        k = next(self._markers)
        return 2 + (37 + 53 * k) % 254

    def resync(self, attempts: int = 8, rounds: int = 2) -> int:
        """Re-align replies with queries after a timeout; return the stale replies dropped.

        Sets the standard event status enable register to a fresh marker value
        (``*ESE m``) and reads ``*ESE?`` answers until one equals ``m``:
        anything before it is a late reply to an earlier query and is
        discarded, so it can never be taken as the answer to the next query.
        This is done ``rounds`` times with different markers, so a stale reply
        that happens to equal the first marker only shifts the match to the
        next round. The register is restored to 0 afterwards.
        """
        t = self.transport
        dropped = 0
        with t.lock:
            self.end_cut_message()
            for _ in range(rounds):
                marker = self.next_marker()
                t.write(self.command("ese_set", value=marker))
                t.write(self.command("ese_query"))
                for _ in range(attempts):
                    reply = t.read().strip()
                    try:
                        value = int(float(reply))
                    except ValueError:
                        value = None
                    if value == marker:
                        break
                    dropped += 1
                else:
                    raise ProtocolError(
                        f"{self.name}: resync failed, marker {marker} not echoed within {attempts} replies",
                        resource=t.resource,
                    )
            t.write(self.command("ese_set", value=0))
        return dropped

    def opc(self) -> None:
        reply = self.ask("opc")
        if reply not in ("1", "+1"):
            raise ProtocolError(f"{self.name}: *OPC? answered {reply!r}, expected 1", resource=self.transport.resource)


class SCPIAWG(SCPIInstrument):
    """Arbitrary waveform generator, channel 1, bus-triggered single bursts."""

    TABLE = KEYSIGHT_33500B
    #: Output off first, then every setting that does not change per batch (order as in the manual);
    #: ``configure(vpp=, offset=, load=, sample_rate=)``.
    SETTINGS = (
        Setting("output_off"),
        Setting("clear_status"),
        Setting("byte_order"),
        Setting("load", "load"),
        Setting("function_arb"),
        Setting("vpp", "vpp"),
        Setting("offset", "offset"),
        Setting("sample_rate", "sample_rate"),
        Setting("burst_mode"),
        Setting("burst_cycles"),
        Setting("trigger_source"),
        Setting("burst_on"),
    )

    def upload(self, name: str, codes: np.ndarray, sample_rate: float) -> None:
        """Replace the volatile waveform ``name`` with ``codes`` (int16, -32767..32767) and select it."""
        codes = np.asarray(codes)
        if codes.dtype != np.int16 or codes.ndim != 1:
            raise TypeError(f"waveform codes must be a 1-D int16 array, got {codes.dtype} with shape {codes.shape}")
        if codes.size and int(codes.min()) < -32767:
            raise ValueError(f"DAC code {int(codes.min())} is below -32767")
        self.send("clear_volatile")
        self.transport.write_binary(self.command("arb_dac_header", name=name), codes.astype("<i2").tobytes())
        self.send("select_arb", name=name)
        self.send("function_arb")
        self.send("sample_rate", value=sample_rate)

    def output(self, on: bool) -> None:
        self.send("output_on" if on else "output_off")

    def trigger(self) -> None:
        self.send("trigger")

    def safe_state(self) -> None:
        """Output off, confirmed: ``OUTP1 OFF``, then ``OUTP1?`` must answer 0 (or OFF) (idempotent).

        A message the AWG holds part of is ended first. A reply other than 0
        may be a stale answer to an earlier query: the replies are re-aligned
        (:meth:`resync`) and ``OUTP1?`` asked once more; anything but 0 then
        is a :class:`ProtocolError` (the output may still be on).
        """
        with self.transport.lock:
            self.end_cut_message()
            self.send("output_off")
            state = self.ask("output_query")
            if state.upper() not in _OFF:
                self.resync()
                state = self.ask("output_query")
            if state.upper() not in _OFF:
                raise ProtocolError(
                    f"{self.name}: OUTP1? answered {state!r} after OUTP1 OFF: the output may still be on",
                    resource=self.transport.resource,
                )


@dataclass(frozen=True)
class Preamble:
    """The 10 fields of ``:WAV:PRE?``; ``volts = (code - yreference) * yincrement + yorigin``."""

    format: int
    type: int
    points: int
    count: int
    xincrement: float
    xorigin: float
    xreference: float
    yincrement: float
    yorigin: float
    yreference: float

    @classmethod
    def parse(cls, text: str, *, resource: str | None = None) -> "Preamble":
        fields = [f.strip() for f in text.strip().split(",")]
        if len(fields) != 10:
            raise ProtocolError(f"waveform preamble has {len(fields)} fields, expected 10: {text!r}", resource=resource)
        try:
            ints = [int(float(f)) for f in fields[:4]]
            floats = [float(f) for f in fields[4:]]
        except ValueError:
            raise ProtocolError(f"waveform preamble does not parse: {text!r}", resource=resource) from None
        if not all(math.isfinite(v) for v in floats) or floats[3] == 0:
            raise ProtocolError(f"waveform preamble has a non-finite or zero scale: {text!r}", resource=resource)
        return cls(*ints, *floats)  # type: ignore[arg-type]

    def volts(self, codes: np.ndarray) -> np.ndarray:
        return (codes.astype(np.float64) - self.yreference) * self.yincrement + self.yorigin


class SCPIScope(SCPIInstrument):
    """Oscilloscope channel 1: single acquisitions read as signed 16-bit words."""

    TABLE = INFINIIVISION_X

    #: ``:WAV:PRE?`` format code of WORD data.
    WORD_FORMAT = 1
    #: Timebase, channel, trigger, then the waveform transfer format (signed 16-bit words, LSB first);
    #: ``configure(time_range=, channel_range=, channel_offset=, trigger_source=, trigger_level=, points=)``.
    SETTINGS = (
        Setting("time_range", "time_range"),
        Setting("time_reference"),
        Setting("channel_range", "channel_range"),
        Setting("channel_offset", "channel_offset"),
        Setting("trigger_source", "trigger_source"),
        Setting("trigger_level", "trigger_level"),
        Setting("waveform_source"),
        Setting("waveform_format"),
        Setting("waveform_byte_order"),
        Setting("waveform_unsigned"),
        Setting("waveform_points_mode"),
        Setting("waveform_points", "points", integer=True),
    )

    def arm(self) -> None:
        """``:SING`` then one ``:OPER:COND?`` round trip confirming the RUN bit (armed)."""
        self.send("single")
        cond = self.ask("operation_condition")
        try:
            value = int(float(cond))
        except ValueError:
            raise ProtocolError(
                f"{self.name}: :OPER:COND? answered {cond!r}", resource=self.transport.resource
            ) from None
        if not value & OPER_RUN_BIT:
            raise ProtocolError(
                f"{self.name}: not armed after :SING (:OPER:COND? = {value}, RUN bit {OPER_RUN_BIT} clear)",
                resource=self.transport.resource,
            )

    def wait_acquisition(self, timeout: float) -> None:
        """Block on ``*OPC?`` until the single acquisition is complete (``timeout`` seconds)."""
        t = self.transport
        with t.lock, t.preserved_timeout(on_cleanup_error=self._cleanup_failed):
            t.timeout = timeout
            try:
                self.opc()
            except InstrumentTimeout as exc:
                raise InstrumentTimeout(
                    f"{self.name}: acquisition not complete within {timeout:g} s (no trigger?)", resource=t.resource
                ) from exc

    def preamble(self) -> Preamble:
        return Preamble.parse(self.ask("preamble"), resource=self.transport.resource)

    def read_waveform(self) -> tuple[Preamble, np.ndarray]:
        """Preamble and the int16 codes of the last acquisition (a complete block or an error)."""
        pre = self.preamble()
        if pre.format != self.WORD_FORMAT:
            raise ProtocolError(
                f"{self.name}: waveform format {pre.format}, expected WORD ({self.WORD_FORMAT})",
                resource=self.transport.resource,
            )
        raw = self.transport.query_binary(self.command("data"))
        if len(raw) % 2:
            raise ProtocolError(
                f"{self.name}: WORD data block has an odd length {len(raw)}", resource=self.transport.resource
            )
        codes = np.frombuffer(raw, dtype="<i2")
        if codes.size != pre.points:
            raise ProtocolError(
                f"{self.name}: data block holds {codes.size} points, the preamble announced {pre.points}",
                resource=self.transport.resource,
            )
        return pre, codes
