"""A user's own data, first class (issue 21) and the data checks of issue 23: CSV, npz and arrays through the
registry and the runner; each data check has a case that would have caught it (one line naming file, line or
index, and value)."""

from __future__ import annotations

import gzip
import logging
import struct
import sys
import warnings

import numpy as np
import pytest
import torch

from physnn.data import (
    available_datasets,
    check_dataset,
    data_dir,
    from_arrays,
    load_csv,
    load_dataset,
    load_mnist_idx,
    load_npz,
    measured_file,
    packaged_data_dir,
    register_dataset,
    registry,
)
from physnn.data import files as data_files
from physnn.run.config import ConfigError, RunConfig
from physnn.run.experiment import run_experiment


def _csv(tmp_path, text, name="d.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


def _table(labels, n_features=3, label_name="label", seed=0):
    rng = np.random.default_rng(seed)
    head = ",".join([*(f"f{j}" for j in range(n_features)), label_name])
    rows = [
        ",".join([*(f"{v:.4f}" for v in rng.normal(size=n_features) + i % 3), str(lab)]) for i, lab in enumerate(labels)
    ]
    return "\n".join([head, *rows]) + "\n"


# ---------------------------------------------------------------- CSV
def test_csv_with_string_labels_maps_them_to_classes_and_records_the_mapping(tmp_path):
    labels = ["setosa", "virginica", "versicolor"] * 10
    d = load_csv(_csv(tmp_path, _table(labels)), seed=0)
    assert d.n_classes == 3 and d.n_features == 3
    assert d.class_names == ["setosa", "versicolor", "virginica"]  # sorted: class i is the i-th name
    assert d.info["label_map"] == {"setosa": 0, "versicolor": 1, "virginica": 2}
    assert d.info["features"] == ["f0", "f1", "f2"] and d.info["label_column"] == "label"
    assert d.x_train.shape[0] + d.x_test.shape[0] == 30
    assert torch.allclose(d.x_train.mean(0), torch.zeros(3), atol=1e-5)  # standardised on train only
    assert "fingerprint" in d.describe() and len(d.fingerprint()) == 64


def test_csv_integer_labels_any_column_and_gzip(tmp_path):
    labels = [1, 2, 3] * 8  # UCI style: classes 1..3 become 0..2, named by their codes
    text = _table(labels, label_name="cultivar")
    d = load_csv(_csv(tmp_path, text), label_column="cultivar", seed=1)
    assert d.class_names == ["1", "2", "3"] and d.info["label_map"] == {"1": 0, "2": 1, "3": 2}
    gz = tmp_path / "d.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    e = load_csv(gz, label_column="cultivar", seed=1)
    assert e.fingerprint() == d.fingerprint()  # the same arrays, whatever the path or compression


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    "text, pattern",
    [
        # issue 23: a duplicated feature column (a DictReader kept the last copy)
        ("a,b,a,label\n1,2,3,x\n", r"line 1: column 'a' appears 2 times \(columns 1, 3\)"),
        # issue 23: one row labelled 99 in a set of 0..2 (was: 100 classes)
        (
            _table([0, 1, 2] * 5 + [99]),
            r"line 17 column label = 99 occurs on 1 row\(s\) only \(the other classes have 5..5 rows\)",
        ),
        (_table(["a", "b"] * 4 + ["c"]), r"line 10 column label = 'c' occurs on 1 row"),  # a typo'd name
        (
            _table([1, 2] * 5 + ["2O"]),
            r"line 12 column label = '2O' is not an integer, but the other rows' labels are integers",
        ),
        (_table(["a"] * 6), r"line 2 column label = 'a' on every row; a classifier needs at least 2 classes"),
        ("f0,label\n1,a\n,b\n", r"line 3 column f0 = '' is not a number"),
        ("f0,label\n1,a\nabc,b\n", r"line 3 column f0 = 'abc' is not a number"),
        ("f0,label\n1,a\ninf,b\n", r"line 3 column f0 is not finite \('inf'\)"),
        ("f0,label\n1,a\n2,b,3\n", r"line 3 has 3 field\(s\), the header has 2"),
        ("f0,label\n1,\n2,b\n", r"line 2 column label \(the label\) is empty"),
        ("f0,f1\n1,2\n", r"no column 'label' \(label_column\) in the header; its columns: f0, f1"),
        ("label\na\nb\n", r"only the label column 'label'; there are no feature columns"),
        ("f0,label\n", r"no data rows after the header"),
        ("f0,,label\n1,2,a\n", r"line 1: column 2 has no name"),
    ],
)
def test_bad_csv_is_a_one_line_error_naming_file_line_and_value(tmp_path, text, pattern):
    f = _csv(tmp_path, text)
    with pytest.raises(ValueError, match=pattern) as info:
        load_csv(f)
    assert str(info.value).startswith(str(f)) and "\n" not in str(info.value)


def test_csv_needs_a_path_and_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="dataset 'csv' needs data_path"):
        load_dataset("csv")
    with pytest.raises(FileNotFoundError, match=r"CSV file not found: .*nope.csv"):
        load_csv(tmp_path / "nope.csv")


# ---------------------------------------------------------------- npz
def test_npz_with_and_without_a_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), np.array(["cat", "dog"] * 20)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    d = load_npz(tmp_path / "a.npz", seed=0)
    assert d.class_names == ["cat", "dog"] and d.info["split"] == "stratified" and d.n_features == 5
    np.savez(tmp_path / "b.npz", x=x, y=y, x_test=x[:6], y_test=y[:6])
    e = load_dataset("npz", path=str(tmp_path / "b.npz"))
    assert e.info["split"] == "given" and e.x_test.shape == (6, 5) and e.x_train.shape == (40, 5)
    images = rng.normal(size=(20, 4, 4))  # more dimensions are flattened per sample
    np.savez(tmp_path / "c.npz", x=images, y=np.arange(20) % 2)
    assert load_npz(tmp_path / "c.npz").n_features == 16


@pytest.mark.fault("bad input")
@pytest.mark.parametrize(
    "arrays, pattern",
    [
        # issue 23: a test label that no training row has (was: a traceback after training)
        (
            dict(x=np.zeros((6, 2)), y=[0, 1] * 3, x_test=np.zeros((2, 2)), y_test=[1, 7]),
            r"y_test\[1\] = 7 is a label no training row has \(training labels: 0, 1\)",
        ),
        (dict(x=np.zeros((6, 2)), y=np.array([0, 1] * 3, dtype=object)), r"array 'y' holds Python objects"),
        (dict(x=np.zeros((6, 2)), labels=[0, 1] * 3), r"unknown array\(s\) 'labels'"),
        (dict(x=np.zeros((6, 2)), y=[0, 1] * 3, x_test=np.zeros((2, 2))), r"x_test and y_test come together"),
        (dict(x=np.zeros((6, 2)), y=[0, 1, 0.5, 1, 0, 1]), r"y\[2\] = 0.5 is not a class label"),
        (dict(x=np.zeros((6, 2)), y=[0, 1, 0]), r"y must be \[6\] \(one label per sample\), got shape \(3,\)"),
        (dict(x=np.array([[0.0, np.nan]] * 4), y=[0, 1] * 2), r"x\[0, 1\] = nan is not a finite number"),
    ],
)
def test_bad_npz_is_a_one_line_error_naming_file_array_and_value(tmp_path, arrays, pattern):
    f = tmp_path / "bad.npz"
    np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(ValueError, match=pattern) as info:
        load_npz(f)
    assert str(info.value).startswith(str(f)) and "\n" not in str(info.value)


def test_a_file_that_is_not_an_npz_names_itself(tmp_path):
    f = _csv(tmp_path, "not a zip", "x.npz")
    with pytest.raises(ValueError, match=r"x.npz: not an .npz file numpy can read"):
        load_npz(f)


# ---------------------------------------------------------------- arrays in Python
def test_a_dataframe_with_string_labels_gives_no_torch_warning():
    pd = pytest.importorskip("pandas")
    from sklearn.datasets import load_wine

    w = load_wine(as_frame=True)
    names = np.array(["barolo", "grignolino", "barbera"])[w.target.to_numpy()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning would fail here
        d = from_arrays(w.data, pd.Series(names), seed=0)
    assert d.class_names == ["barbera", "barolo", "grignolino"] and d.info["features"][0] == "alcohol"
    bad = w.data.copy()
    bad["colour"] = "red"
    with pytest.raises(ValueError, match=r"x: column 'colour' holds \w+, not numbers"):
        from_arrays(bad, names)
    dup = pd.concat([w.data[["alcohol"]], w.data[["alcohol", "hue"]]], axis=1)
    with pytest.raises(ValueError, match=r"x: column 'alcohol' appears 2 times"):
        from_arrays(dup, names)


def test_the_python_route_refuses_string_labels_and_takes_dataframes_quietly():
    pd = pytest.importorskip("pandas")
    from physnn.core.model import PNN
    from physnn.simulators.identity import IdentitySystem
    from physnn.train.mfff import MFFF

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(30, 4)), columns=list("abcd"))
    y = pd.Series(np.arange(30) % 3)
    pnn = PNN([IdentitySystem(n_inputs=7, seed=1)], n_features=4, n_classes=3, hidden=6, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MFFF(epochs=1, seed=0).fit(pnn, x, y)
    for labels in (np.array(["a", "b", "c"])[y], list("abc" * 10)):
        with pytest.raises(ValueError, match=r"y holds names \(strings\); labels here are class indices 0..2"):
            MFFF(epochs=1, seed=0).fit(pnn, x, labels)
    with pytest.raises(ValueError, match="fractional"):
        MFFF(epochs=1, seed=0).fit(pnn, x, y + 0.5)
    assert 0.0 <= pnn.score(x, y) <= 1.0
    with pytest.raises(ValueError, match=r"y holds names \(strings\)"):
        pnn.score(x, list("abc" * 10))


# ---------------------------------------------------------------- MNIST IDX (issue 23)
def _idx(path, array, code=0x08):
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(">u1").tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def _mnist(folder, ytr, yte):
    _idx(folder / "train-images-idx3-ubyte", np.zeros((len(ytr), 2, 2), np.uint8))
    _idx(folder / "train-labels-idx1-ubyte", np.asarray(ytr, np.uint8))
    _idx(folder / "t10k-images-idx3-ubyte", np.zeros((len(yte), 2, 2), np.uint8))
    _idx(folder / "t10k-labels-idx1-ubyte", np.asarray(yte, np.uint8))


@pytest.mark.fault("bad input")
def test_idx_test_labels_unseen_in_training_are_refused_before_training(tmp_path):
    _mnist(tmp_path, [0, 1, 2, 0, 1, 2], [0, 1, 11])  # was: a traceback after training, in the confusion matrix
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: record 2 = 11 is a label no training row has"):
        load_mnist_idx(tmp_path)


@pytest.mark.fault("bad input")
def test_idx_errors_name_the_file(tmp_path):
    _mnist(tmp_path, [0, 1, 2, 0], [0, 1])
    _idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2], np.uint8))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: 3 labels for the 4 images of .*train-images"):
        load_mnist_idx(tmp_path)
    gz = tmp_path / "t.idx.gz"
    _idx(gz, np.zeros((4, 3), np.uint8))
    gz.write_bytes(gz.read_bytes()[:-6])  # a truncated download
    from physnn.data import read_idx

    with pytest.raises(ValueError, match=r"t.idx.gz: cannot read IDX file"):
        read_idx(gz)


def test_idx_classes_are_the_training_labels(tmp_path):
    _mnist(tmp_path, [0, 1, 2, 3] * 2, [3, 0])
    d = load_mnist_idx(tmp_path)
    assert d.n_classes == 4 and d.class_names == ["0", "1", "2", "3"] and d.y_test.tolist() == [3, 0]


# ---------------------------------------------------------------- registry and entry points
def test_names_and_options_are_checked_without_loading(tmp_path):
    assert available_datasets()[:7] == ["digits", "vowels", "mnist5k", "mnist-idx", "csv", "npz", "arrays"]
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; available datasets: digits, vowels"):
        check_dataset("cifar")
    with pytest.raises(ValueError, match=r"data_path '.*x.csv' is not used by dataset 'digits'"):
        check_dataset("digits", path=str(tmp_path / "x.csv"))
    with pytest.raises(ValueError, match=r"label_column = 'kind' is not an option of dataset 'vowels'"):
        check_dataset("vowels", label_column="kind")
    with pytest.raises(ValueError, match=r"dataset 'arrays' is data handed over in Python"):
        load_dataset("arrays")
    with pytest.raises(ConfigError, match=r"config key label_column must be a non-empty string"):
        RunConfig(label_column="")


def test_a_runtime_registered_dataset_is_a_config_name(monkeypatch):
    monkeypatch.setattr(registry, "_RUNTIME", {})
    calls = []

    def toy(*, seed: int = 0, test_fraction: float = 0.2):
        calls.append((seed, test_fraction))
        return from_arrays(np.eye(6), [0, 1] * 3, seed=seed, test_fraction=0.5)

    register_dataset("toy", toy)
    assert "toy" in available_datasets() and RunConfig(dataset="toy").dataset == "toy"
    assert load_dataset("toy", seed=3).n_classes == 2 and calls == [(3, 0.2)]


def test_a_plugin_package_adds_a_dataset_through_the_entry_point_group(tmp_path, monkeypatch):
    # a real distribution on sys.path, found by importlib.metadata as an installed package would be
    (tmp_path / "mylab_data.py").write_text(
        "import numpy as np\n"
        "from physnn.data import from_arrays\n"
        "def load(path=None, *, seed=0, test_fraction=0.2):\n"
        "    return from_arrays(np.arange(24.0).reshape(12, 2), [0, 1, 2] * 4, seed=seed, name='spectra',"
        " source=path or '')\n"
    )
    info = tmp_path / "mylab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[physnn.datasets]\nspectra = mylab_data:load\nbroken = no_such_mod:load\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "spectra" in available_datasets()
    config = RunConfig(dataset="spectra", data_path="spec.bin")
    d = load_dataset(config.dataset, path=config.data_path, seed=1)
    assert d.name == "spectra" and d.n_classes == 3 and d.info["path"] == "spec.bin"
    with pytest.raises(ImportError, match=r"dataset 'broken' could not be loaded \(no_such_mod:load\).*pip install"):
        load_dataset("broken")


# ---------------------------------------------------------------- where the measured files are
def test_the_measured_data_ship_in_the_package_and_stay_small():
    folder = packaged_data_dir()
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert names == ["LICENSE-PhyLL.txt", "README.md", "acoustic_x.csv.gz", "acoustic_y.csv.gz", "vowels.csv"]
    assert "MIT License" in (folder / "LICENSE-PhyLL.txt").read_text()
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_500_000  # 3.4 MB of text, shipped gzipped
    assert measured_file("acoustic_x.csv", folder).name == "acoustic_x.csv.gz"
    x = np.loadtxt(measured_file("acoustic_x.csv", folder), delimiter=",", max_rows=3)
    assert x.shape == (3, 20) and not x[0].any()  # row 0 is the all-zero placeholder


def test_physnn_data_replaces_the_package_copy_and_the_old_variable_still_works(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("PHYSNN_DATA", raising=False)
    monkeypatch.delenv("PHYSNN_SHARED_DATA", raising=False)
    assert data_dir() == packaged_data_dir()
    (tmp_path / "vowels.csv").write_text((packaged_data_dir() / "vowels.csv").read_text())
    monkeypatch.setenv("PHYSNN_DATA", str(tmp_path))
    assert measured_file("vowels.csv") == tmp_path / "vowels.csv"
    with pytest.raises(
        FileNotFoundError, match=r"acoustic_x.csv not found \(nor acoustic_x.csv.gz\) \(from \$PHYSNN_DATA"
    ):
        measured_file("acoustic_x.csv")
    monkeypatch.delenv("PHYSNN_DATA")
    monkeypatch.setenv("PHYSNN_SHARED_DATA", str(tmp_path))
    monkeypatch.setattr(data_files, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="physnn.data.files"):
        assert data_dir() == tmp_path
    assert "PHYSNN_SHARED_DATA is deprecated: set PHYSNN_DATA" in caplog.text


# ---------------------------------------------------------------- through the runner
def _quick(tmp_path, **kw):
    base = dict(system="identity", blocks=1, hidden=8, epochs=1, batch_size=16, probes=0, eval_every=1)
    return RunConfig(output=str(tmp_path / "runs"), **{**base, **kw})


def test_run_experiment_takes_arrays_and_resume_refuses_other_data(tmp_path):
    from physnn import runlog

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)) + np.repeat(np.arange(3), 20)[:, None]
    y = np.array(["low", "mid", "high"])[np.repeat(np.arange(3), 20)]
    config = _quick(tmp_path)
    result = run_experiment(config, data=(x, y), progress=False, echo=lambda _: None)
    run = runlog.load(result.path)
    assert run.config["dataset"] == "arrays" and result.path.name.startswith("arrays-identity-mfff")
    assert run.dataset["label_map"] == {"high": 0, "low": 1, "mid": 2}
    assert run.dataset["fingerprint"] == from_arrays(x, y, seed=0).fingerprint()
    with pytest.raises(
        ValueError, match=r"--resume .*: the data set .arrays. differs from the one this run trained on"
    ):
        run_experiment(config.updated(epochs=2), data=(x + 1.0, y), resume=result.path, progress=False, echo=print)
    again = run_experiment(
        config.updated(epochs=2), data=(x, y), resume=result.path, progress=False, echo=lambda _: None
    )
    assert len(again.history) == 2
    with pytest.raises(ValueError, match=r"data_path .a.csv. and data=\.\.\. both give the data"):
        run_experiment(config.updated(data_path="a.csv"), data=(x, y), progress=False)


def test_physnn_train_on_a_csv_with_a_label_column(tmp_path, monkeypatch, capsys):
    from sklearn.datasets import load_wine

    from physnn import runlog
    from physnn.cli import main

    w = load_wine(as_frame=True)
    frame = w.frame.rename(columns={"target": "cultivar"})
    frame.to_csv(tmp_path / "wine.csv", index=False)
    monkeypatch.chdir(tmp_path)
    argv = [
        "train",
        "--dataset",
        "csv",
        "--data-path",
        "wine.csv",
        "--label-column",
        "cultivar",
        "--system",
        "identity",
    ]
    rc = main([*argv, "--blocks", "1", "--hidden", "16", "--epochs", "2", "--no-progress", "--output", "w.h5"])
    assert rc == 0, capsys.readouterr().err
    run = runlog.load(tmp_path / "w.h5")
    assert run.dataset["n_classes"] == 3 and run.dataset["label_column"] == "cultivar"
    assert run.summary["test_accuracy"] > 0.5  # 3 balanced classes: chance is ~0.4
    # the CSV edited between the run and its resume: refused in one line, before any query
    frame.loc[5, "alcohol"] += 1.0
    frame.to_csv(tmp_path / "wine.csv", index=False)
    capsys.readouterr()
    assert main(["train", "--resume", "w.h5", "--epochs", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the data set 'csv' differs from the one this run trained on" in err and "\n" not in err
    assert runlog.load(tmp_path / "w.h5").checkpoints[-1] == 2  # nothing trained on the other data


@pytest.mark.fault("bad input")
def test_a_wrong_system_name_is_reported_before_the_data_is_read(tmp_path, capsys):
    from physnn.cli import main

    rc = main(["train", "--dataset", "csv", "--data-path", str(tmp_path / "missing.csv"), "--system", "nosuch"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown system 'nosuch'" in err and "missing.csv" not in err


@pytest.mark.fault("bad input")
def test_a_missing_extra_names_the_pip_install(monkeypatch, tmp_path, capsys):
    from physnn.cli import main

    monkeypatch.setitem(sys.modules, "serial", None)  # pyserial not installed
    rc = main(["train", "--system", "serial-daq-sim", "--epochs", "1", "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "system 'serial-daq-sim' needs the module 'serial', which is not installed" in err[0]
    assert "pip install 'physnn[serial]'" in err[0]


def test_serve_takes_system_option_and_keeps_option_as_an_alias():
    from physnn.cli.main import build_parser

    p = build_parser()
    a = p.parse_args(["serve", "--system", "identity", "--system-option", "n_inputs=4", "--option", "levels=3"])
    assert a.system_option == ["n_inputs=4", "levels=3"]


def test_the_readme_example_of_arrays_in_python_runs(tmp_path):
    import re
    import subprocess
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "data=(x, y)" in b)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [p.name.split("-")[0] for p in (tmp_path / "runs").glob("*.h5")] == ["arrays"]
