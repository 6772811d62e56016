"""The one set of parameter validators used by configs, trainers, simulators and drivers.

Why one module: a lab user meets these messages when a config or a constructor
argument is wrong, often at the start of a night's bench run. They must all
read the same way -- the key, the value given and what is allowed -- and one
copy of each check means one place to get booleans-that-are-ints, NaN and
infinities right. Every validator returns the value, converted to its plain
Python type, so callers write ``self.lr = checks.positive("lr", lr)``.

Messages have the form ``"{key} must be {what}, got {value!r}"``; the error is
a :class:`ParameterError`, a ``ValueError``, so callers that catch
``ValueError`` keep working.

:func:`check_options` types a whole table of options (a config's
``[system_options]`` or ``[method_options]``) against the signature of the
callable that will receive them: unknown keys are refused with the list of
valid ones, and each value is checked against its annotation (``bool``,
``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``, sequences), so
``noise="False"`` or ``n_outputs=12.7`` never reach a constructor.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Sequence as _SequenceABC
from typing import Any, Callable, Iterable, Mapping, TypeVar

import numpy as np

__all__ = [
    "ParameterError",
    "integer",
    "real",
    "positive",
    "nonnegative",
    "fraction",
    "boolean",
    "choice",
    "string",
    "int_sequence",
    "check_options",
    "option_names",
]

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter value outside what is allowed; the message names the key, the value and the limit."""


def _fail(key: str, what: str, value: Any) -> ParameterError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ParameterError(f"{key} must be {what}, got {shown}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _num(v: float) -> str:
    """A bound as written: integers in full (a seed limit is 9223372036854775807, not 9.22337e+18)."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range_text(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None and not low_open and not high_open:
        return f"in {_num(low)}..{_num(high)}"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_num(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_num(high)}")
    return " and ".join(parts)


def integer(key: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool, not a float) in ``low..high`` (either bound optional)."""
    rng = _range_text(low, high)
    what = f"an integer {rng}".rstrip()
    if not _is_int(value):
        raise _fail(key, what, value)
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise _fail(key, what, value)
    return v


def real(
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number (ints accepted, bools refused) within the given bounds."""
    rng = _range_text(low, high, low_open, high_open)
    what = f"a finite number {rng}".rstrip()
    if not _is_real(value) or not math.isfinite(float(value)):
        raise _fail(key, what, value)
    v = float(value)
    if low is not None and (v <= low if low_open else v < low):
        raise _fail(key, what, value)
    if high is not None and (v >= high if high_open else v > high):
        raise _fail(key, what, value)
    return v


def positive(key: str, value: Any) -> float:
    """A finite number > 0."""
    if not _is_real(value) or not math.isfinite(float(value)) or not float(value) > 0:
        raise _fail(key, "a positive finite number", value)
    return float(value)


def nonnegative(key: str, value: Any) -> float:
    """A finite number >= 0."""
    return real(key, value, low=0.0)


def fraction(key: str, value: Any, *, inclusive: bool = False) -> float:
    """A number strictly between 0 and 1 (or in [0, 1] with ``inclusive``)."""
    if inclusive:
        return real(key, value, low=0.0, high=1.0)
    return real(key, value, low=0.0, high=1.0, low_open=True, high_open=True)


def boolean(key: str, value: Any) -> bool:
    """``True`` or ``False`` only: the strings "False"/"no" and the integers 0/1 are refused, not guessed."""
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(key, "true or false", value)
    return bool(value)


def choice(key: str, value: Any, choices: Iterable[T]) -> T:
    """One of ``choices`` (compared with ==, bools never match ints)."""
    options = list(choices)
    for c in options:
        if type(c) is type(value) and c == value:
            return c
        if isinstance(c, str) and isinstance(value, str) and c == value:
            return c
    raise _fail(key, f"one of {', '.join(map(repr, options))}", value)


def string(key: str, value: Any, *, empty: bool = True) -> str:
    """A string (non-empty unless ``empty``)."""
    if not isinstance(value, str) or (not empty and not value):
        raise _fail(key, "a string" if empty else "a non-empty string", value)
    return value


def int_sequence(key: str, value: Any, *, low: int | None = None, length: int | None = None) -> list[int]:
    """A list/tuple of integers, each >= ``low`` (and exactly ``length`` long if given)."""
    what = "a list of integers" + (f" >= {low}" if low is not None else "")
    if length is not None:
        what += f" of length {length}"
    if isinstance(value, (str, bytes)) or not isinstance(value, _SequenceABC):
        raise _fail(key, what, value)
    out = []
    for v in value:
        if not _is_int(v) or (low is not None and v < low):
            raise _fail(key, what, value)
        out.append(int(v))
    if length is not None and len(out) != length:
        raise _fail(key, what, value)
    return out


# ------------------------------------------------------------- option tables
def option_names(fn: Callable[..., Any]) -> list[str] | None:
    """Keyword names ``fn`` accepts, or None when it takes ``**kwargs`` (anything goes)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [k for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and k != "self"]


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to no typing
        return {}


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is acceptable for annotation ``hint`` (conservative: unknown hints accept)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_real(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, _SequenceABC, typing.Sequence) or hint in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        inner = args[0]
        return all(_matches(v, inner) for v in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return isinstance(value, Mapping)
    if isinstance(hint, type):
        return isinstance(value, hint) or (hint is float and _is_real(value))
    return True


def _hint_text(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_text(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "none"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple, _SequenceABC, typing.Sequence):
        return f"a list of {_hint_text(args[0])}s" if args else "a list"
    return getattr(hint, "__name__", str(hint))


def check_options(
    fn: Callable[..., Any], options: Mapping[str, Any], what: str, *, reserved: Iterable[str] = ()
) -> dict[str, Any]:
    """Check a table of keyword options against ``fn``'s signature and annotations.

    Unknown keys raise a :class:`ParameterError` listing the valid ones;
    a value that does not match its annotation raises one naming the key, the
    value and the expected type. ``reserved`` names keys the caller sets
    itself (``n_inputs``, ``seed``, ``epochs``...), which an option table may
    not set. Returns the options as a plain dict; floats annotated as such are
    converted to ``float``.
    """
    if not isinstance(options, Mapping):
        raise ParameterError(f"{what} options must be a table of KEY = VALUE, got {type(options).__name__}")
    reserved = set(reserved)
    clash = sorted(set(options) & reserved)
    if clash:
        raise ParameterError(f"{what}: option(s) {', '.join(map(repr, clash))} are set by the run itself, not here")
    allowed = option_names(fn)
    if allowed is not None:
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            valid = [k for k in allowed if k not in reserved]
            raise ParameterError(
                f"{what} has no option(s) {', '.join(map(repr, unknown))}; its options are: {', '.join(valid)}"
            )
    hints = _hints(fn)
    out: dict[str, Any] = {}
    for key, value in options.items():
        hint = hints.get(key, Any)
        if not _matches(value, hint):
            raise _fail(f"{what} option {key}", _hint_text(hint), value)
        if hint is float and _is_real(value):
            value = float(value)
        out[key] = value
    return out
