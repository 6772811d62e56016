"""Fault specs of the simulated benches, checked before anything is built or queried.

Why one checker: both simulated benches take ``faults`` from a config's
``[system_options]`` (a list of kind names or tables of fields), and a spec
that is not a fault -- ``faults = [3]``, a table without its ``command``, an
unknown field, a command the instrument never receives -- used to end in a
``TypeError`` traceback, or in a fault that silently never fires. Here every
spec becomes the bench's own fault object or a one-line
:class:`~physnn.core.checks.ParameterError` naming the spec (``faults[1]``),
the field, the value and what is allowed, before any pty, thread or
instrument exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Callable, TypeVar

from physnn.core.checks import ParameterError

__all__ = ["checked_faults"]

F = TypeVar("F")


def _fields(fault_type: type) -> tuple[list[str], list[str]]:
    """(every init field, the required ones) of a fault dataclass."""
    init = [f for f in dataclasses.fields(fault_type) if f.init]
    required = [f.name for f in init if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    return [f.name for f in init], required


def checked_faults(
    value: Any,
    fault_type: Callable[..., F],
    *,
    key: str = "faults",
    hints: Mapping[str, str] | None = None,
) -> list[F]:
    """Every spec of ``value`` (None, or a list of ``fault_type`` objects, kind names or tables of fields) built.

    ``hints`` says, per field, what a value looks like (for the message about a
    missing required field). A bad spec raises a one-line ParameterError
    naming ``key[i]``; the fault type's own checks (kind, counts...) keep
    their wording, prefixed with ``key[i]``.
    """
    if value is None:
        return []
    names, required = _fields(fault_type)  # type: ignore[arg-type]
    table = "a fault kind name or a table of fault fields (" + ", ".join(names) + ")"
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ParameterError(f"{key} must be a list of faults, each {table}, got {shown}")
    out: list[F] = []
    for i, spec in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(spec, fault_type):  # type: ignore[arg-type]
            out.append(spec)
            continue
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, Mapping):
            raise ParameterError(f"{where} must be {table}, got {spec!r}")
        unknown = sorted(str(k) for k in spec if k not in names)
        if unknown:
            raise ParameterError(f"{where} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(names)}")
        missing = [k for k in required if k not in spec]
        if missing:
            what = "; ".join(f"{k}: {(hints or {}).get(k, 'required')}" for k in missing)
            raise ParameterError(f"{where} ({dict(spec)!r}) lacks {', '.join(missing)} ({what})")
        try:
            out.append(fault_type(**spec))
        except ParameterError as exc:
            raise ParameterError(f"{where}: {exc}") from None
    return out
