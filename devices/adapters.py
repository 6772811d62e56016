"""Adapters: an existing PyMeasure instrument or a set of QCoDeS parameters as a :class:`PhysicalSystem`.

Why: a lab that already drives its bench with PyMeasure or QCoDeS should not
write a physnn driver to train on it. An adapter maps one sample to "set every
drive channel, wait ``settle`` seconds, read every measured channel", so the
instrument library keeps owning the connection and the protocol, and physnn
adds what a bench run needs around it:

* **limits** -- the drive limits ``[low, high]`` (in ``units``) are checked by
  :class:`PhysicalSystem` for the whole batch before the first value is set, so
  a batch with one bad value sets nothing at all;
* **safe state** -- ``safe`` names values (drive channels or any other settable
  property/parameter, e.g. an output-enable) that :meth:`safe_state` sets; it
  runs on :meth:`close` (the runner closes systems however a run ends) and
  after any error while measuring, before the error propagates. Safe values of
  drive channels must lie inside the drive limits (checked when the adapter is
  made, not discovered when the bench is already in trouble);
* **accounting and run files** -- queries are counted and :meth:`describe`
  records the channels, units and safe values.

The adapters never close or shut down the instrument itself: the caller made it
and owns its connection. The instrument libraries are imported only when an
adapter is made (optional extras ``physnn[pymeasure]``, ``physnn[qcodes]``).
A query costs ``B * (n_inputs set + n_outputs read)`` instrument transactions:
these adapters are for slow benches where that is the truth anyway.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec

__all__ = ["PyMeasureSystem", "QCoDeSSystem"]

log = logging.getLogger(__name__)


class _SetGetSystem(PhysicalSystem):
    """One sample = set each drive channel in order, wait ``settle`` s, read each measured channel in order."""

    def __init__(
        self,
        spec: SystemSpec,
        setters: Sequence[Callable[[float], None]],
        getters: Sequence[Callable[[], Any]],
        safe: Sequence[tuple[str, Callable[[float], None], float]],
        settle: float,
        info: dict[str, Any],
    ):
        super().__init__(spec)
        self._setters, self._getters, self._safe = list(setters), list(getters), list(safe)
        self.settle = checks.nonnegative("settle", settle)
        self._info = info

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().cpu().double().tolist()
        out = torch.empty(len(rows), self.spec.n_outputs, dtype=torch.float64)
        try:
            for r, row in enumerate(rows):
                for setter, value in zip(self._setters, row):
                    setter(float(value))
                if self.settle:
                    time.sleep(self.settle)
                for c, getter in enumerate(self._getters):
                    out[r, c] = float(getter())
        except BaseException as exc:  # Ctrl-C included: the outputs must not stay driven
            log.warning(
                "%s: %s while measuring; putting the instrument in its safe state", self.spec.name, type(exc).__name__
            )
            try:
                self.safe_state()
            except Exception as safe_exc:  # noqa: BLE001 - reported; the original error is the one raised
                self.report_event("safe_state_failed", error=f"{type(safe_exc).__name__}: {safe_exc}")
            raise
        return out

    def safe_state(self) -> None:
        """Set every ``safe`` value, in the order given; idempotent."""
        for name, setter, value in self._safe:
            log.debug("%s: safe state %s = %g", self.spec.name, name, value)
            setter(value)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._info, "safe": {n: v for n, _, v in self._safe}, "settle": self.settle}


def _channel_names(key: str, names: Any) -> list[str]:
    if not isinstance(names, (list, tuple)) or not names:
        raise checks.ParameterError(f"{key} must be a non-empty list of names, got {names!r}")
    return [checks.string(f"{key}[{i}]", n, empty=False) for i, n in enumerate(names)]


def _safe_values(safe: Any, drive: Sequence[str], low: float, high: float, units: str) -> dict[str, float]:
    """``safe`` as name -> finite float; safe values of drive channels must lie inside the drive limits."""
    if not isinstance(safe, dict):
        raise checks.ParameterError(f"safe must be a table of NAME = VALUE, got {safe!r}")
    out = {}
    for name, value in safe.items():
        checks.string("safe key", name, empty=False)
        lo, hi = (low, high) if name in drive else (None, None)
        out[name] = checks.real(f"safe[{name!r}] ({units})", value, low=lo, high=hi)
    return out


class PyMeasureSystem(_SetGetSystem):
    """A PyMeasure instrument's properties as a system: ``drive`` properties are set, ``measure`` ones read.

    Args:
        instrument: a connected ``pymeasure.instruments.Instrument`` (the caller owns it and closes it).
        drive: names of settable properties (``instrument.<name> = value``), one per drive channel.
        measure: names of readable properties, one per output.
        low, high: drive limits in ``units``, checked for the whole batch before anything is set.
        units, output_units: the drive's and the measured values' units (run files, figure axes).
        safe: property -> value set by :meth:`safe_state` (on close and after an error while measuring).
        settle: seconds to wait between setting the drives and reading.
        name: the system's name in messages and run files (default: the instrument's name).

    Every name is checked to be a property of the instrument's class when the
    adapter is made (without touching the instrument), so a typo is a one-line
    error, not an ``AttributeError`` halfway through the first batch.
    """

    def __init__(
        self,
        instrument: Any,
        drive: list[str],
        measure: list[str],
        low: float,
        high: float,
        units: str = "V",
        output_units: str = "V",
        safe: dict[str, float] | None = None,
        *,
        settle: float = 0.0,
        name: str | None = None,
    ):
        try:
            import pymeasure  # noqa: F401 - the extra must be installed, even for a duck-typed instrument
        except ImportError:
            raise ImportError("PyMeasureSystem needs PyMeasure: pip install 'physnn[pymeasure]'") from None
        drive, measure = _channel_names("drive", drive), _channel_names("measure", measure)
        low, high = checks.real("low", low), checks.real("high", high)
        safe = _safe_values({} if safe is None else safe, drive, low, high, units)
        cls = type(instrument)
        for key, names in (("drive", drive), ("measure", measure), ("safe", list(safe))):
            for n in names:
                if not isinstance(getattr(cls, n, None), property):
                    raise checks.ParameterError(f"{key} {n!r} is not a property of {cls.__name__}")
        spec = SystemSpec(
            n_inputs=len(drive),
            n_outputs=len(measure),
            low=low,
            high=high,
            name=checks.string("name", name or getattr(instrument, "name", "pymeasure"), empty=False),
            units=units,
            output_units=output_units,
        )

        def setter(prop: str) -> Callable[[float], None]:
            return lambda v: setattr(instrument, prop, v)

        super().__init__(
            spec,
            [setter(n) for n in drive],
            [lambda n=n: getattr(instrument, n) for n in measure],
            [(n, setter(n), v) for n, v in safe.items()],
            settle,
            {
                "adapter": "pymeasure",
                "instrument": f"{cls.__module__}.{cls.__qualname__}",
                "drive": drive,
                "measure": measure,
            },
        )
        self.instrument = instrument


class QCoDeSSystem(_SetGetSystem):
    """QCoDeS parameters as a system: ``set_params`` are set (one per drive channel), ``get_params`` read.

    Args:
        set_params, get_params: ``qcodes`` ``Parameter`` objects (the caller's instruments own them).
        low, high: drive limits in ``units``, checked for the whole batch before anything is set.
        units, output_units: default to the parameters' common ``unit`` (an error if they differ and none is given).
        safe: parameter name (``name`` or ``full_name``, e.g. ``"dac_ch1"``) -> value set by :meth:`safe_state`;
            any settable parameter among ``set_params``.
        settle: seconds to wait between setting and reading.

    QCoDeS' own validators (``vals=``) still run inside ``Parameter.set``; the
    physnn limits are the ones a whole batch is checked against beforehand.
    """

    def __init__(
        self,
        set_params: list[Any],
        get_params: list[Any],
        low: float,
        high: float,
        units: str | None = None,
        output_units: str | None = None,
        safe: dict[str, float] | None = None,
        *,
        settle: float = 0.0,
        name: str = "qcodes",
    ):
        try:
            from qcodes.parameters import ParameterBase
        except ImportError:
            raise ImportError("QCoDeSSystem needs QCoDeS: pip install 'physnn[qcodes]'") from None
        for key, params in (("set_params", set_params), ("get_params", get_params)):
            if not isinstance(params, (list, tuple)) or not params:
                raise checks.ParameterError(f"{key} must be a non-empty list of QCoDeS parameters, got {params!r}")
            for i, p in enumerate(params):
                if not isinstance(p, ParameterBase):
                    raise checks.ParameterError(f"{key}[{i}] must be a QCoDeS parameter, got {type(p).__name__}")
        for i, p in enumerate(set_params):
            if not p.settable:
                raise checks.ParameterError(f"set_params[{i}] {p.full_name!r} is not settable")
        for i, p in enumerate(get_params):
            if not p.gettable:
                raise checks.ParameterError(f"get_params[{i}] {p.full_name!r} is not gettable")
        units = units if units is not None else _common_unit("units", set_params)
        output_units = output_units if output_units is not None else _common_unit("output_units", get_params)
        low, high = checks.real("low", low), checks.real("high", high)
        by_name: dict[str, Any] = {}
        for p in set_params:
            by_name.setdefault(p.full_name, p)
            by_name.setdefault(p.name, p)
        drive_names = [n for p in set_params for n in (p.name, p.full_name)]
        safe = _safe_values({} if safe is None else safe, drive_names, low, high, units)
        for n in safe:
            if n not in by_name:
                raise checks.ParameterError(
                    f"safe key {n!r} is not one of set_params ({', '.join(p.full_name for p in set_params)})"
                )
        spec = SystemSpec(
            n_inputs=len(set_params),
            n_outputs=len(get_params),
            low=low,
            high=high,
            name=checks.string("name", name, empty=False),
            units=units,
            output_units=output_units,
        )
        super().__init__(
            spec,
            [p.set for p in set_params],
            [p.get for p in get_params],
            [(n, by_name[n].set, v) for n, v in safe.items()],
            settle,
            {
                "adapter": "qcodes",
                "drive": [p.full_name for p in set_params],
                "measure": [p.full_name for p in get_params],
            },
        )


def _common_unit(key: str, params: Sequence[Any]) -> str:
    units = sorted({str(getattr(p, "unit", "") or "a.u.") for p in params})
    if len(units) != 1:
        raise checks.ParameterError(f"{key}: the parameters have different units {units}; give {key}= explicitly")
    return units[0]
