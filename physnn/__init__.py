"""physnn: train physical neural networks with the hardware in the loop.

The package is built in layers; a module imports only from its own layer or lower ones:

* :mod:`physnn.core` -- the black-box API (:class:`PhysicalSystem`, checks, registry, safety) and the networks;
* :mod:`physnn.data` -- data sets;
* :mod:`physnn.train` -- the trainers (one contract), their accounting and device schedules;
* :mod:`physnn.runlog` -- the HDF5 run file (writer, reader, recovery);
* :mod:`physnn.run` -- one experiment from a config: the runner, recipes, continual mode, metric sinks;
* :mod:`physnn.analysis` -- reports of finished runs, characterisation of systems;
* :mod:`physnn.scale` -- remote benches and sweeps over Ray;
* :mod:`physnn.cli` -- the ``physnn`` command, the only code that prints.

The core knows no particular physics or instrument: simulators live in :mod:`physnn.simulators`, instrument
drivers in :mod:`physnn.devices`, and both import the core, never the other way round.

The most used names are importable from here; the heavier ones (the runner, the networks) are loaded on first
use, so ``import physnn`` stays cheap.
"""

from importlib import import_module
from typing import Any

from physnn.core.registry import available_systems, build_system, register_system
from physnn.core.system import PhysicalSystem, QueryStats, SystemSpec

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "PNN": "physnn.core.model",
    "Block": "physnn.core.model",
    "PhysicalLayer": "physnn.core.layer",
    "LocalNet": "physnn.core.local_model",
    "E2ENet": "physnn.core.e2e_model",
    "Accuracy": "physnn.core.evaluation",
    "Dataset": "physnn.data.datasets",
    "load_dataset": "physnn.data.datasets",
    "RunConfig": "physnn.run.config",
    "run_experiment": "physnn.run.experiment",
    "RunResult": "physnn.run.experiment",
}

__all__ = [
    "PhysicalSystem",
    "QueryStats",
    "SystemSpec",
    "available_systems",
    "build_system",
    "register_system",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'physnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
