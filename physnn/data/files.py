"""Where the measured data files are: shipped inside the package, or a folder the user names.

Why here: the vowels data set and the acoustic twin used to look for ``../shared/data`` beside the checkout, so
they worked only inside this repository. The measured files now ship as package data
(``physnn/data/measured/``, with their licence and attribution in its ``README.md``), and one function finds
them for every loader and simulator:

1. an explicit folder (a loader's path, the twin's ``data_dir`` option), else
2. the folder named by ``$PHYSNN_DATA``, else
3. the folder named by ``$PHYSNN_SHARED_DATA`` (the old name; still read, with a deprecation message), else
4. the copy shipped in the package.

A file ``name`` may also be stored gzip-compressed as ``name.gz`` (the acoustic measurements ship that way:
3.4 MB -> 1.2 MB); readers that go through :func:`measured_file` get whichever exists.
"""

from __future__ import annotations

import logging
import os
from importlib.resources import files
from pathlib import Path

__all__ = ["packaged_data_dir", "data_dir", "measured_file", "DATA_ENV", "OLD_DATA_ENV"]

log = logging.getLogger(__name__)

#: the variable naming a folder that replaces the shipped measured files
DATA_ENV = "PHYSNN_DATA"
#: its old name (round 2), still honoured
OLD_DATA_ENV = "PHYSNN_SHARED_DATA"
_warned: set[str] = set()


def packaged_data_dir() -> Path:
    """The measured data shipped inside the package (``physnn/data/measured``)."""
    # a wheel is always installed unpacked, so the resource is a real folder
    return Path(str(files("physnn.data") / "measured"))


def data_dir() -> Path:
    """The folder the measured files are read from: ``$PHYSNN_DATA``, the old ``$PHYSNN_SHARED_DATA``, or the
    package's own copy."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    old = os.environ.get(OLD_DATA_ENV)
    if old:
        if old not in _warned:
            _warned.add(old)
            log.warning(
                "%s is deprecated: set %s=%s instead (or unset both to use the data shipped with physnn)",
                OLD_DATA_ENV,
                DATA_ENV,
                old,
            )
        return Path(old)
    return packaged_data_dir()


def _origin(folder: Path) -> str:
    """How ``folder`` was chosen, for error messages that say what to change."""
    if os.environ.get(DATA_ENV) and folder == Path(os.environ[DATA_ENV]):
        return f" (from ${DATA_ENV}; unset it to use the data shipped with physnn)"
    if os.environ.get(OLD_DATA_ENV) and folder == Path(os.environ[OLD_DATA_ENV]):
        return f" (from ${OLD_DATA_ENV}; unset it to use the data shipped with physnn)"
    return ""


def measured_file(name: str, folder: str | os.PathLike | None = None) -> Path:
    """The path of the measured file ``name`` (or its gzip copy ``name.gz``) in ``folder`` or :func:`data_dir`.

    A missing file is a :class:`FileNotFoundError` naming the folder and how it was chosen.
    """
    where = Path(folder) if folder is not None else data_dir()
    for candidate in (where / name, where / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{where / name} not found (nor {name}.gz){_origin(where) if folder is None else ''}")
