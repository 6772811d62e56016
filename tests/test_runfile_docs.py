"""The reading recipes of docs/run-format.md work on a real run file: one written by ``physnn train`` and
extended by ``physnn train --resume ... --epochs N``. The Python snippets are run as written (with the file
name replaced); the MATLAB one is checked with h5dump (every path, attribute and compound field it reads
exists, with the type its comment promises), and so are the ``h5dump`` commands."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from physnn import runlog

DOC = Path(__file__).resolve().parents[1] / "docs" / "run-format.md"
H5DUMP = shutil.which("h5dump")
#: a small but real run: digits through a 64-pixel optics camera, validated every epoch
CONFIG = """
dataset = "digits"
system = "optics"
blocks = 2
hidden = 16
batch_size = 256
epochs = 2
eval_every = 1
probes = 2
seed = 3

[system_options]
n_outputs = 64
"""


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section("Reading without physnn"), flags=re.S)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    """``physnn train`` for 2 epochs, then ``physnn train --resume x.h5 --epochs 3``: two writer segments."""
    from physnn.cli import main

    folder = tmp_path_factory.mktemp("doc")
    (folder / "run.toml").write_text(CONFIG)
    path = folder / "x.h5"
    assert main(["train", "--config", str(folder / "run.toml"), "--output", str(path), "--no-progress"]) in (0, None)
    assert main(["train", "--resume", str(path), "--epochs", "3", "--no-progress"]) in (0, None)
    return path


@pytest.fixture(scope="module")
def run(run_file) -> runlog.Run:
    run = runlog.load(run_file)
    assert run.status == "completed" and run.metrics["epoch"].tolist() == [1, 2, 3]
    assert run.epoch_segments.tolist() == [0, 0, 1]  # written by two processes
    assert np.isfinite(run.metrics["val_accuracy"]).all() and "test_accuracy" not in run.metrics
    return run


def _run(code: str, path: Path) -> dict:
    assert '"runs/x.h5"' in code
    namespace: dict = {}
    exec(compile(code.replace('"runs/x.h5"', repr(str(path))), str(DOC), "exec"), namespace)
    return namespace


def test_the_doc_has_the_recipes():
    assert len(_blocks("python")) == 3 and len(_blocks("matlab")) == 1


def test_h5py_recipe(run_file, run, capsys):
    ns = _run(_blocks("python")[0], run_file)
    assert ns["epochs"].tolist() == [1, 2, 3]
    np.testing.assert_array_equal(ns["val"], run.metrics["val_accuracy"])
    assert ns["summary"]["test_accuracy"] == run.summary["test_accuracy"] and ns["summary"]["test_n"] == 359
    kinds = [e["kind"] for e in ns["events"]]
    assert kinds[0] == "run_started" and "resumed" in kinds and kinds[-1] == "run_closed"
    out = capsys.readouterr().out
    assert "validation accuracy (fraction) in 1" in out and f"test accuracy {run.summary['test_accuracy']}" in out


def test_pandas_recipe(run_file, run):
    df = _run(_blocks("python")[1], run_file)["df"]
    assert df.index.tolist() == [1, 2, 3] and df["segment"].tolist() == [0, 0, 1]
    np.testing.assert_array_equal(df["val_accuracy"].to_numpy(), run.metrics["val_accuracy"])
    assert str(df["time"].dt.tz) == "UTC"
    assert set(df.columns) - {"segment"} == set(run.metrics) - {"epoch"}  # the columns physnn reads


def test_xarray_recipe(run_file, run, capsys):
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    ns = _run(_blocks("python")[2], run_file)
    val = ns["val"]
    assert val.dims == ("epoch",) and val.attrs["long_name"] == "validation accuracy (fraction)"
    np.testing.assert_array_equal(val.to_numpy(), run.metrics["val_accuracy"])
    assert ns["samples"]["y"].dims == ("step", "output")
    assert "('step', 'output')" in capsys.readouterr().out
    assert np.issubdtype(ns["ds"]["time"].dtype, np.datetime64)
    ns["ds"].close()
    ns["samples"].close()


def _h5dump(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([H5DUMP, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{args}: {out.stderr}"
    return out


@pytest.mark.skipif(H5DUMP is None, reason="h5dump not installed (apt-get install hdf5-tools)")
def test_matlab_recipe_reads_what_the_file_has(run_file):
    code = _blocks("matlab")[0]
    assert "f = 'x.h5';" in code

    def header(obj: str) -> str:
        return _h5dump("-H", "-d", obj, str(run_file)).stdout

    reads = re.findall(r"h5read\(f, '([^']+)'\)", code)
    assert reads == ["/metrics/val_accuracy", "/metrics/epoch", "/metrics/loss:block0", "/samples/block0/y"]
    assert re.findall(r"'(/\w+)'", code.split("for log = ", 1)[1].split("\n", 1)[0]) == ["/summary", "/events"]
    assert "H5T_IEEE_F64LE" in header("/metrics/val_accuracy")  # "N x 1 double"
    assert "H5T_STD_I64LE" in header("/metrics/epoch")
    assert "H5T_IEEE_F64LE" in header("/metrics/loss:block0")
    assert "H5T_IEEE_F32LE" in header("/samples/block0/y")
    for obj, attr in re.findall(r"h5readatt\(f, '([^']+)', '([^']+)'\)", code):
        assert f'ATTRIBUTE "{attr}"' in header(obj), (obj, attr)
    for log in ("/summary", "/events"):
        text = header(log)
        fields = set(re.findall(r'"(\w+)";', text))
        assert fields == {"time", "epoch", "kind", "part", "parts", "text"}  # as the comment in the recipe says
        used = set(re.findall(r"\bev\.(\w+)", code))
        assert used == {"part", "parts", "text"} and used <= fields, (used, fields)
        assert "H5T_STR_NULLTERM" in text  # char arrays that end at the first NUL, as the loop assumes


@pytest.mark.skipif(H5DUMP is None, reason="h5dump not installed (apt-get install hdf5-tools)")
def test_the_h5dump_commands_show_the_accuracies(run_file, run):
    section = _section("Reading without physnn")
    assert "`h5dump -d /metrics/val_accuracy\nruns/x.h5`" in section and "`h5dump -d /summary runs/x.h5`" in section
    data = _h5dump("-d", "/metrics/val_accuracy", str(run_file)).stdout
    body = data[data.index("DATA {") :].split("\n", 1)[1]
    values = [float(v) for v in re.findall(r"(?<=[:,\s])(-?[\d.]+(?:e[-+]?\d+)?)(?=,|\s|$)", body[: body.index("}")])]
    assert values == pytest.approx(run.metrics["val_accuracy"].tolist())
    summary = _h5dump("-d", "/summary", str(run_file)).stdout
    assert f'"test_accuracy":{run.summary["test_accuracy"]!r}' in summary  # JSON text: the float as Python prints it
    assert _h5dump("-H", str(run_file)).stdout.count('DATASET "val_accuracy"') == 1
