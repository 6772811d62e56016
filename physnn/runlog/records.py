"""The run's free-form records: the root attributes, ``/config``, ``/dataset`` and ``/systems`` (written once),
and the text logs appended as the run goes (``/events``, ``/summary``, ``/confusion``, ``/systems/updates``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
import zlib
from typing import Any, Mapping

import h5py
import numpy as np
import torch

from physnn.runlog._common import (
    _HOST_DTYPE,
    _STATUS_DTYPE,
    _TIME_DTYPE,
    FORMAT_NAME,
    FORMAT_VERSION,
    _block_name,
    _git_commit,
)
from physnn.runlog.codec import _loose_json
from physnn.runlog.columns import _create_text_log, _describe, _TextLog


def _spec_of(desc: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = desc.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _json_scalar(g: h5py.Group, name: str, text: str, long_name: str) -> None:
    """A scalar JSON string. Variable-length strings take no filter, so its CRC-32 goes in an attribute
    (attributes sit in checksummed object headers) and the reader checks it."""
    ds = g.create_dataset(name, data=text, dtype=h5py.string_dtype())
    _describe(ds, "", long_name)
    ds.attrs["crc32"] = np.int64(zlib.crc32(text.encode("utf-8")))


def _describe_one(block: str, desc: Any) -> dict[str, Any]:
    if hasattr(desc, "describe") and callable(desc.describe):
        desc = desc.describe()
    if not isinstance(desc, Mapping):
        raise TypeError(f"systems[{block!r}] must be a describe() dict or a PhysicalSystem, got {type(desc).__name__}")
    return _loose_json(desc)


def _describe_systems(systems: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if systems is not None and not isinstance(systems, Mapping):
        raise TypeError(
            f"systems must be a dict of block -> describe() dict or PhysicalSystem, got {type(systems).__name__}"
        )
    return {_block_name(block): _describe_one(_block_name(block), desc) for block, desc in (systems or {}).items()}


def create_root_attrs(
    f: h5py.File, systems: dict[str, dict[str, Any]], seed: int, start_unix: float, options: dict[str, Any]
) -> None:
    """The root attributes: what ran where, with which versions; status and writer fields fixed-size."""
    import physnn

    a = f.attrs
    a["format"] = FORMAT_NAME
    a["format_version"] = np.int64(FORMAT_VERSION)
    a["physnn_version"] = physnn.__version__
    a["git_commit"] = _git_commit()
    a["start_time"] = _dt.datetime.fromtimestamp(start_unix).astimezone().isoformat(timespec="seconds")
    a["start_time_unix"] = np.float64(start_unix)
    a["host"] = socket.gethostname()
    a["pid"] = np.int64(os.getpid())
    a["seed"] = np.int64(seed)
    a["blocks"] = json.dumps(list(systems))
    a["writer_options"] = json.dumps(options)
    a["versions"] = json.dumps(
        {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "h5py": h5py.version.version,
            "hdf5": h5py.version.hdf5_version,
        }
    )
    # fixed-size so that close()/resume() can update them in place
    a.create("status", np.bytes_(b"running"), dtype=_STATUS_DTYPE)
    a.create("end_time", np.bytes_(b""), dtype=_TIME_DTYPE)
    a.create("writer_host", np.bytes_(socket.gethostname().encode()[:255]), dtype=_HOST_DTYPE)
    a.create("writer_pid", np.int64(os.getpid()))


def create_descriptions(
    f: h5py.File, config_json: str, dataset_json: str | None, systems: dict[str, dict[str, Any]]
) -> None:
    """``/config``, ``/dataset`` and ``/systems/<block>`` (with the ``/systems/updates`` text log)."""
    _json_scalar(f, "config", config_json, "resolved run configuration (JSON)")
    if dataset_json is not None:
        _json_scalar(f, "dataset", dataset_json, "data set description (JSON)")

    sg = f.create_group("systems")
    for block, desc in systems.items():
        g = sg.create_group(block)
        _json_scalar(
            g,
            "describe",
            json.dumps(desc, indent=1),
            f"describe() of the {block} system when the run started (JSON)",
        )
        if "class" in desc:
            g.attrs["class"] = str(desc["class"])
        spec = _spec_of(desc)
        for key in ("n_inputs", "n_outputs", "low", "high", "levels", "units", "output_units", "name"):
            if key in spec and spec[key] is not None:
                g.attrs[key] = spec[key]
    _create_text_log(
        sg,
        "updates",
        "describe() of a system, refreshed during or at the end of the run "
        "(kind = block; the last record per block wins)",
    )


def create_record_logs(f: h5py.File) -> None:
    """``/events``, ``/confusion`` and ``/summary``."""
    _create_text_log(f, "events", "events: {kind, fields} (run life cycle, retries, faults, warnings)")
    _create_text_log(f, "confusion", "confusion matrices: {epoch, split, labels, matrix}")
    _create_text_log(f, "summary", "final numbers of the run (log_summary; the last record wins)")


class RecordLogs:
    """Handles on an open run file's text logs of records."""

    def __init__(self, f: h5py.File):
        self.events = _TextLog(f["events"])
        self.confusion = _TextLog(f["confusion"])
        self.summary = _TextLog(f["summary"])
        self.system_updates = _TextLog(f["systems/updates"])
