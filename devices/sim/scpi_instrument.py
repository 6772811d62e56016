"""What every simulated SCPI instrument shares: dispatch on the driver's command table, error queue, ESE.

Why dispatch on the driver's table: the simulated instruments exist so the
real drivers run unchanged against them. If the simulation re-typed the
command headers, a change to a driver's table (another model, a typo fixed)
would leave the simulation answering the old commands. Instead each simulated
instrument names, for every key of its driver's table
(:data:`physnn.devices.scpi.KEYSIGHT_33500B`,
:data:`~physnn.devices.scpi.INFINIIVISION_X`), what it does: a :class:`Param`
(a setting stored in an attribute, parsed and range-checked as the real
instrument does) or the name of a handler method. The header each key answers
to is derived from the table itself (:func:`physnn.devices.scpi.command_header`),
and a table key without a handler is an error when the instrument is built.

Replies follow the real formats: ``SYST:ERR?`` answers ``+0,"No error"`` or
the oldest queued ``<code>,"<message>"`` (SCPI codes: -104 data type, -113
undefined header, -222 data out of range, -224 illegal parameter value; the
queue holds 20, then ``-350,"Queue overflow"``); ``*ESE?`` answers ``+<n>``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Protocol, Union

import numpy as np

from ..scpi import command_header

__all__ = ["BenchLink", "SimInstrument", "Param", "word", "number", "ON_OFF", "NO_ERROR", "REFUSED", "Reply"]

NO_ERROR = '+0,"No error"'


class BenchLink(Protocol):
    """What a simulated instrument needs of the bench it sits on -- and no more, so that an instrument
    knows nothing of :class:`~physnn.devices.sim.bench.SCPIBench` (the bench assembles instruments, not the
    other way round): the trigger line, the shared noise generator and the acquisition delay."""

    noise_volts: float
    acq_delay: float
    rng: np.random.Generator

    def fire(self, volts: np.ndarray, sample_rate: float) -> None: ...


#: What a handler returns: text, bytes (a binary block), ``(text, available_at)`` or None (no reply).
Reply = Union[str, bytes, tuple, None]

#: Returned by a parser that refused its argument (and queued the instrument's error).
REFUSED = object()

#: ``parser(instrument, text) -> value or REFUSED``
Parser = Callable[["SimInstrument", str], Any]


def word(choices: Mapping[str, Any] | tuple[str, ...] | None = None) -> Parser:
    """A keyword argument (case-insensitive): any word, one of ``choices``, or mapped through a dict."""

    def parse(inst: "SimInstrument", text: str) -> Any:
        w = text.strip().upper()
        if choices is None:
            return w
        if isinstance(choices, Mapping):
            if w in choices:
                return choices[w]
        elif w in choices:
            return w
        inst.push_error(-224, "Illegal parameter value")
        return REFUSED

    return parse


#: ``ON``/``1``/``OFF``/``0`` as a bool.
ON_OFF = word({"ON": True, "1": True, "OFF": False, "0": False})


def number(
    allowed: Callable[["SimInstrument", float], bool] | None = None, convert: Callable[[float], Any] = float
) -> Parser:
    """A numeric argument: -104 if it does not parse, -222 if non-finite or not ``allowed(instrument, v)``."""

    def parse(inst: "SimInstrument", text: str) -> Any:
        try:
            v = float(text)
        except ValueError:
            inst.push_error(-104, "Data type error")
            return REFUSED
        if not math.isfinite(v) or (allowed is not None and not allowed(inst, v)):
            inst.push_error(-222, "Data out of range")
            return REFUSED
        return convert(v)

    return parse


@dataclass(frozen=True)
class Param:
    """A setting command: parse the argument and store it in ``attr`` (refused: old value kept, error queued)."""

    attr: str
    parse: Parser


def _text(args: bytes) -> str:
    return args.decode("ascii", errors="replace").strip()


class SimInstrument:
    """Identity, error queue, ESE register and table dispatch.

    Subclasses set :attr:`IDN`, :attr:`TABLE` (the driver's command table) and
    :attr:`HANDLERS` (table key -> :class:`Param` or handler method name;
    keys sharing a header, such as ``output_on``/``output_off``, share one),
    and implement :meth:`reset` (the power-on state). Handlers take
    ``(args: bytes, now: float)`` and return a :data:`Reply`.
    """

    IDN: ClassVar[str] = "SIM"
    TABLE: ClassVar[Mapping[str, str]] = {}
    HANDLERS: ClassVar[Mapping[str, Param | str]] = {}
    #: The IEEE 488.2 common commands and the error queue, the same on every instrument.
    COMMON: ClassVar[Mapping[str, str]] = {
        "idn": "_idn",
        "reset": "_reset_command",
        "clear_status": "_clear_status",
        "opc": "_opc",
        "ese_set": "_ese_set",
        "ese_query": "_ese_query",
        "error": "_error_query",
    }

    def __init__(self, bench: BenchLink, *, table: Mapping[str, str] | None = None):
        self.bench = bench
        self.errors: list[str] = []
        self.ese = 0
        self.dispatch = self.build_dispatch(self.TABLE if table is None else table)
        self.reset()

    def build_dispatch(self, table: Mapping[str, str]) -> dict[str, Callable[[bytes, float], Reply]]:
        """Header -> handler, derived from the driver's command table (every key must be handled)."""
        handlers = {**self.COMMON, **self.HANDLERS}
        missing = sorted(set(table) - set(handlers))
        if missing:
            raise ValueError(f"{type(self).__name__} has no simulation of command(s) {missing} of its driver's table")
        chosen: dict[str, Param | str] = {}
        for key, template in table.items():
            head = command_header(template)
            if chosen.setdefault(head, handlers[key]) != handlers[key]:
                raise ValueError(f"{type(self).__name__}: header {head!r} (key {key!r}) has two different handlers")
        return {head: self._bind(h) for head, h in chosen.items()}

    def _bind(self, handler: Param | str) -> Callable[[bytes, float], Reply]:
        if isinstance(handler, Param):
            return functools.partial(self._set_param, handler)
        return getattr(self, handler)

    def handle(self, header: str, args: bytes, now: float) -> Reply:
        """Execute one command (header already upper case, leading colon stripped)."""
        fn = self.dispatch.get(header)
        if fn is None:
            self.push_error(-113, "Undefined header")
            return None
        return fn(args, now)

    def reset(self) -> None:  # pragma: no cover - overridden
        self.errors.clear()

    def push_error(self, code: int, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(f'{code:+d},"{text}"')
        else:
            self.errors[-1] = '-350,"Queue overflow"'

    # ----------------------------------------------------------- handlers
    def _set_param(self, param: Param, args: bytes, now: float) -> Reply:
        value = param.parse(self, _text(args))
        if value is not REFUSED:
            setattr(self, param.attr, value)
        return None

    def _idn(self, args: bytes, now: float) -> Reply:
        return self.IDN

    def _reset_command(self, args: bytes, now: float) -> Reply:
        self.reset()
        return None

    def _clear_status(self, args: bytes, now: float) -> Reply:
        self.errors.clear()
        return None

    def _opc(self, args: bytes, now: float) -> Reply:
        return "1"

    def _ese_set(self, args: bytes, now: float) -> Reply:
        value = number(lambda inst, v: 0 <= v <= 255, int)(self, _text(args))
        if value is not REFUSED:
            self.ese = value
        return None

    def _ese_query(self, args: bytes, now: float) -> Reply:
        return f"+{self.ese}"

    def _error_query(self, args: bytes, now: float) -> Reply:
        return self.errors.pop(0) if self.errors else NO_ERROR
