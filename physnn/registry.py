"""Name -> factory registry of physical systems.

Why a registry: the CLI and TOML configs name systems by string, but the core
must not import ``physnn.simulators`` or ``physnn.devices`` (they depend on the
core, not the other way round). Systems are found through the
``physnn.systems`` entry-point group (declared in ``pyproject.toml``; third-party
packages can add their own) and through :func:`register_system` at run time.

A factory is a callable taking keyword arguments only. The ones every factory
accepts are ``n_inputs`` (the width the model wants, or None for the system's
default), ``seed`` and ``device``; the rest are the system's own options, passed
through from ``[system]`` in a config. A factory with a fixed width may ignore
``n_inputs``; the model then pads or reports the mismatch.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Any, Callable

from .system import PhysicalSystem

__all__ = ["register_system", "available_systems", "build_system", "system_factory"]

_RUNTIME: dict[str, Callable[..., PhysicalSystem]] = {}


def register_system(name: str, factory: Callable[..., PhysicalSystem]) -> None:
    """Make ``factory`` buildable as ``name`` from the CLI and configs."""
    if not name or not isinstance(name, str):
        raise ValueError(f"system name must be a non-empty string, got {name!r}")
    _RUNTIME[name] = factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="physnn.systems")}


def available_systems() -> list[str]:
    """Every buildable system name, sorted."""
    return sorted(set(_entry_points()) | set(_RUNTIME))


def system_factory(name: str) -> Callable[..., PhysicalSystem]:
    if name in _RUNTIME:
        return _RUNTIME[name]
    eps = _entry_points()
    if name not in eps:
        raise ValueError(f"unknown system {name!r}; available systems: {', '.join(available_systems()) or '(none)'}")
    try:
        return eps[name].load()
    except ImportError as exc:
        raise ImportError(f"system {name!r} could not be loaded ({eps[name].value}): {exc}") from exc


def build_system(name: str, **options: Any) -> PhysicalSystem:
    """Build a system by name. Unknown options are an error naming the valid ones."""
    factory = system_factory(name)
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        allowed = [k for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and k != "self"]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"system {name!r} has no option(s) {', '.join(map(repr, unknown))}; its options are: {', '.join(allowed)}"
            )
    system = factory(**options)
    if not isinstance(system, PhysicalSystem):
        raise TypeError(f"factory for system {name!r} returned {type(system).__name__}, not a PhysicalSystem")
    return system
