"""Collaborators open run files with the HDF5 tools of their distribution (Debian's hdf5-tools: HDF5 1.10).

``h5dump`` must read a fresh run file, one whose writer was killed (after ``recover``/``h5clear -s``) and
a resumed one. Skipped, with the reason, where ``h5dump`` is not installed (``apt-get install hdf5-tools``).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn import runlog
from physnn.runlog import RunWriter

H5DUMP = shutil.which("h5dump")
pytestmark = pytest.mark.skipif(H5DUMP is None, reason="h5dump not installed (Debian: apt-get install hdf5-tools)")

HELPER = Path(__file__).parent / "helpers" / "runlog_writer.py"
_spec = importlib.util.spec_from_file_location("runlog_writer_helper", HELPER)
helper = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helper)


def h5dump(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([H5DUMP, *args], capture_output=True, text=True, timeout=60)


def h5dump_version() -> str:
    out = h5dump("--version")
    return out.stdout.strip() or out.stderr.strip()


def _values(text: str) -> list[float]:
    """The numbers of an ``h5dump -d`` DATA block."""
    data = text[text.index("DATA {") :]
    data = data[: data.index("}")]
    return [float(v) for v in re.findall(r"(?<=[:,\s])(-?[\d.]+(?:e[-+]?\d+)?)(?=,|\s|$)", data.split("\n", 1)[1])]


def _check_readable(path: Path, n_epochs: int) -> None:
    head = h5dump("-H", str(path))
    assert head.returncode == 0, f"{h5dump_version()}: {head.stderr}"
    for obj in ('GROUP "metrics"', 'DATASET "events"', "H5T_COMPOUND", 'ATTRIBUTE "units"', 'DATASET "loss"'):
        assert obj in head.stdout, obj
    loss = h5dump("-d", "/metrics/loss", str(path))
    assert loss.returncode == 0, loss.stderr
    assert _values(loss.stdout)[:n_epochs] == pytest.approx([1.0 / (e + 1) for e in range(n_epochs)], rel=1e-5)
    events = h5dump("-d", "/events", str(path))
    assert events.returncode == 0 and '"run_started"' in events.stdout


def test_h5dump_reads_a_fresh_run_file(tmp_path):
    path = tmp_path / "fresh.h5"
    systems = {"block0": {"spec": {"n_inputs": 4, "n_outputs": 3, "units": "V", "output_units": "V"}}}
    with RunWriter(path, config={"lr": 0.1}, seed=0, systems=systems, durable=False) as w:
        w.set_probes("block0", np.zeros((2, 4)))
        for e in range(4):
            w.log_samples("block0", torch.rand(8, 4), torch.rand(8, 3))
            w.log_epoch(e, {"loss": 1.0 / (e + 1)})
            w.log_probe("block0", e, np.zeros((2, 3)))
            w.checkpoint(e, {"w": torch.ones(3)})
        w.log_summary({"test_accuracy": 0.5})
    _check_readable(path, 4)
    assert h5dump("-d", "/summary", str(path)).stdout.count('"{"test_accuracy":0.5}"') == 1  # text, not numbers
    for ds in ("/samples/block0/x", "/probes/block0/y", "/checkpoints/data", "/config", "/systems/updates"):
        assert h5dump("-H", "-d", ds, str(path)).returncode == 0, ds


def test_h5dump_reads_a_killed_run_after_recover_and_the_resumed_run(tmp_path):
    path = tmp_path / "killed.h5"
    proc = helper.spawn(str(HELPER), str(path), "spin")
    helper.wait_for(proc, "EPOCH 5")
    helper.kill9(proc)
    assert h5dump("-H", str(path)).returncode != 0  # the open-for-writing flag: every HDF5 tool refuses...
    if shutil.which("h5clear"):
        copy = tmp_path / "copy.h5"
        shutil.copy(path, copy)
        assert subprocess.run(["h5clear", "-s", str(copy)], capture_output=True).returncode == 0
        _check_readable(copy, 6)  # ...until `h5clear -s`
    assert runlog.recover(path) is True  # ...or physnn.runlog.recover
    _check_readable(path, 6)

    n = len(runlog.load(path).metrics["epoch"])
    w = RunWriter.resume(path, durable=False)
    for e in range(n, n + 3):
        w.log_epoch(e, {"loss": 1.0 / (e + 1)})
    w.close()
    _check_readable(path, n + 3)
    assert runlog.load(path).status == "completed"
