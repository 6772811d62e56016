"""The reading recipes of docs/run-format.md work on a real run file: the Python snippets are run as
written (with the file name replaced), the MATLAB one is checked with h5dump (every path, attribute and
compound field it reads exists, with the type its comment promises)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn.runlog import RunWriter

DOC = Path(__file__).resolve().parents[1] / "docs" / "run-format.md"
SYSTEMS = {
    "block0": {"spec": {"n_inputs": 4, "n_outputs": 3, "units": "V", "output_units": "V*s"}},
    "block1": {"spec": {"n_inputs": 3, "n_outputs": 2, "units": "V", "output_units": "V*s"}},
}
ACCURACY = [0.5, 0.75, 0.875]


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section("Reading without physnn"), flags=re.S)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("doc") / "x.h5"
    with RunWriter(path, config={"lr": 0.1}, seed=0, systems=SYSTEMS, durable=False) as w:
        for e, acc in enumerate(ACCURACY):
            w.log_samples("block0", torch.rand(8, 4), torch.rand(8, 3))
            w.log_epoch(e, {"loss": 1.0 / (e + 1), "loss/block0": 0.5, "test_accuracy": acc})
        w.log_epoch(1, {"test_accuracy": 0.8})  # the same epoch logged again: the later value wins
        w.event("retry", {"attempt": 1, "why": "x" * 300})  # a record of several text rows
    return path


def _run(code: str, path: Path) -> dict:
    assert '"runs/x.h5"' in code
    namespace: dict = {}
    exec(compile(code.replace('"runs/x.h5"', repr(str(path))), str(DOC), "exec"), namespace)
    return namespace


def test_the_doc_has_the_recipes():
    assert len(_blocks("python")) == 3 and len(_blocks("matlab")) == 1


def test_h5py_recipe(run_file, capsys):
    ns = _run(_blocks("python")[0], run_file)
    assert ns["epochs"].tolist() == [0, 1, 2, 1] and ns["acc"].tolist() == ACCURACY + [0.8]
    assert [e["kind"] for e in ns["events"]] == ["run_started", "retry", "run_closed"]
    assert ns["events"][1]["fields"]["why"] == "x" * 300
    assert "test accuracy (fraction) in 1" in capsys.readouterr().out


def test_pandas_recipe(run_file):
    ns = _run(_blocks("python")[1], run_file)
    df = ns["df"]
    assert df.index.tolist() == [0, 1, 2] and df["test_accuracy"].tolist() == [0.5, 0.8, 0.875]
    assert df["loss/block0"].tolist() == [0.5] * 3 and "train_queries" not in df  # never logged
    assert str(df["time"].dt.tz) == "UTC"


def test_xarray_recipe(run_file, capsys):
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    ns = _run(_blocks("python")[2], run_file)
    assert ns["acc"].dims == ("epoch",) and ns["acc"].attrs["long_name"] == "test accuracy (fraction)"
    assert ns["samples"]["y"].dims == ("step", "output")
    assert "('step', 'output') V*s" in capsys.readouterr().out
    assert np.issubdtype(ns["ds"]["time"].dtype, np.datetime64)
    ns["ds"].close()
    ns["samples"].close()


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump not installed (apt-get install hdf5-tools)")
def test_matlab_recipe_reads_what_the_file_has(run_file):
    code = _blocks("matlab")[0]
    assert "f = 'x.h5';" in code

    def header(obj: str) -> str:
        out = subprocess.run(["h5dump", "-H", "-d", obj, str(run_file)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{obj}: {out.stderr}"
        return out.stdout

    reads = re.findall(r"h5read\(f, '([^']+)'\)", code)
    assert reads == ["/metrics/test_accuracy", "/metrics/epoch", "/metrics/loss:block0", "/samples/block0/y", "/events"]
    assert "H5T_IEEE_F64LE" in header("/metrics/test_accuracy")  # "N x 1 double"
    assert "H5T_STD_I64LE" in header("/metrics/epoch")
    assert "H5T_IEEE_F64LE" in header("/metrics/loss:block0")
    assert "H5T_IEEE_F32LE" in header("/samples/block0/y")
    for obj, attr in re.findall(r"h5readatt\(f, '([^']+)', '([^']+)'\)", code):
        assert f'ATTRIBUTE "{attr}"' in header(obj), (obj, attr)
    events = header("/events")
    fields = set(re.findall(r'"(\w+)";', events))
    assert fields == {"time", "epoch", "kind", "part", "parts", "text"}  # as the comment in the recipe says
    used = set(re.findall(r"\bev\.(\w+)", code))
    assert used == {"part", "parts", "text"} and used <= fields, (used, fields)
    assert "H5T_STR_NULLTERM" in events  # char arrays that end at the first NUL, as the loop assumes
