"""physnn: train physical neural networks with the hardware in the loop.

The core (this package) knows no particular physics or instrument: it defines
the :class:`~physnn.system.PhysicalSystem` contract, the model-free
forward-forward (MF-FF) method, data loaders, run logs and the CLI. Simulators
live in :mod:`physnn.simulators`, instrument drivers in :mod:`physnn.devices`.
"""

from .registry import available_systems, build_system, register_system
from .system import PhysicalSystem, QueryStats, SystemSpec

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)

__all__ = [
    "PhysicalSystem",
    "QueryStats",
    "SystemSpec",
    "available_systems",
    "build_system",
    "register_system",
    "__version__",
]
