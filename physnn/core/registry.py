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

import re
from importlib.metadata import PackageNotFoundError, entry_points, requires
from typing import Any, Callable

from physnn.core.checks import check_options
from physnn.core.safety import track
from physnn.core.system import PhysicalSystem

__all__ = ["register_system", "available_systems", "build_system", "system_factory", "install_hint", "load_plugin"]

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


#: import names whose distribution on PyPI is called otherwise (the rest: the import name, ``_`` -> ``-``)
_DISTRIBUTION_OF = {
    "serial": "pyserial",
    "pyvisa_py": "pyvisa-py",
    "pyvisa_sim": "pyvisa-sim",
    "sklearn": "scikit-learn",
}


def install_hint(exc: ImportError) -> str:
    """``"; install it with: pip install 'physnn[EXTRA]'"`` for a module one of physnn's extras provides (read
    from the installed package's metadata, so pyproject.toml stays the one list), else the plain ``pip install``
    of the missing distribution; ``""`` when the error names no module.

    Why: "No module named 'serial'" does not tell a lab user that ``physnn[serial]`` is the fix.
    """
    module = (getattr(exc, "name", None) or "").split(".")[0]
    if not module:
        return ""
    dist = _DISTRIBUTION_OF.get(module, module.replace("_", "-"))
    canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
    try:
        wanted = requires("physnn") or []
    except PackageNotFoundError:
        wanted = []
    for req in wanted:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*).*;.*extra\s*==\s*[\"']([^\"']+)[\"']", req)
        if m and canon(m.group(1)) == canon(dist) and m.group(2) != "test":
            return f"; install it with: pip install 'physnn[{m.group(2)}]'"
    return f"; install it with: pip install {dist}"


def load_plugin(kind: str, name: str, group: str, runtime: dict[str, Callable[..., Any]], available: list[str]) -> Any:
    """The callable registered as ``name``: a run-time registration, else the entry point of ``group``.

    The one lookup behind every name -> plug-in registry (systems here, data sets in
    :mod:`physnn.data.registry`): an unknown name lists the ``available`` ones, and a plug-in that cannot be
    imported says what to install (:func:`install_hint`).
    """
    if name in runtime:
        return runtime[name]
    eps = {ep.name: ep for ep in entry_points(group=group)}
    if name not in eps:
        raise ValueError(f"unknown {kind} {name!r}; available {kind}s: {', '.join(available) or '(none)'}")
    try:
        return eps[name].load()
    except ImportError as exc:
        raise ImportError(
            f"{kind} {name!r} could not be loaded ({eps[name].value}): {exc}{install_hint(exc)}", name=exc.name
        ) from exc


def system_factory(name: str) -> Callable[..., PhysicalSystem]:
    """The factory registered as ``name`` (imported, not called)."""
    return load_plugin("system", name, "physnn.systems", _RUNTIME, available_systems())


def build_system(name: str, /, **options: Any) -> PhysicalSystem:
    """Build a system by name, its options typed and checked against the factory's signature.

    Why typed here: options arrive from TOML or ``--system-option KEY=VALUE``,
    where ``noise=False`` (a string) used to reach the constructor and turn
    noise *on* (``bool("False")``), and ``n_outputs=12.7`` was truncated to 12
    -- the run file then recorded one value in its config and another in the
    system's description. :func:`physnn.core.checks.check_options` refuses unknown
    keys (listing the valid ones) and any value that does not match the
    factory's annotation (``bool``, ``int``, ``float``, ``Literal``, ``X | None``,
    lists), with one line naming the system, the key, the value and the type.
    The system is registered with :func:`physnn.core.safety.track`.
    A factory taking ``**kwargs`` passes those on unchecked (the systems that
    wrap a backend build it through this function, so it is checked there).
    """
    factory = system_factory(name)
    options = check_options(factory, options, f"system {name!r}")
    try:
        system = factory(**options)
    except ImportError as exc:  # an optional dependency the system needs (pyserial, pyvisa ...): say what to install
        hint = install_hint(exc)
        if not hint or "pip install" in str(exc):
            raise
        raise ImportError(
            f"system {name!r} needs the module {exc.name!r}, which is not installed{hint}", name=exc.name
        ) from exc
    if not isinstance(system, PhysicalSystem):
        raise TypeError(f"factory for system {name!r} returned {type(system).__name__}, not a PhysicalSystem")
    return track(system)  # closed (safe state) at interpreter exit if whoever built it never did
