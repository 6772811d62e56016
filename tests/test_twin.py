"""MeasuredTwin: accuracy on real acoustic measurements, file format, determinism, limits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn.simulators.twin import MeasuredTwin, TwinFileError, acoustic_twin, read_csv_matrix


def _toy_data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth nonlinear 3 -> 2 map with a little noise: fast to fit."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
    y = np.stack([np.sin(3 * x[:, 0]) + x[:, 1] * x[:, 2], (x[:, 0] - x[:, 2]) ** 2], axis=1)
    y = y + 0.01 * rng.standard_normal(y.shape)
    return x, y.astype(np.float32)


FAST = dict(hidden=(32, 32), epochs=40, patience=10, batch_size=64, lr=3e-3)


@pytest.fixture(scope="module")
def acoustic(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> MeasuredTwin:
    return acoustic_twin(data_dir=shared_data, cache=tmp_path_factory.mktemp("twin-cache"))


@pytest.fixture(scope="module")
def acoustic_rows(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    return read_csv_matrix(shared_data / "acoustic_x.csv.gz"), read_csv_matrix(shared_data / "acoustic_y.csv.gz")


def test_acoustic_twin_heldout_error_below_8_percent(acoustic: MeasuredTwin, acoustic_rows) -> None:
    """The issue's done-when: ||y_pred - y|| / ||y|| < 0.08 on rows 9300+ (never seen by the fit)."""
    x, y = acoustic_rows
    pred = acoustic(x[9300:]).numpy().astype(np.float64)
    err = np.linalg.norm(pred - y[9300:]) / np.linalg.norm(y[9300:])
    assert err < 0.08, err
    # The linear least-squares map on the same rows reaches ~0.092: the twin must beat it.
    assert err < 0.085
    fit = acoustic.describe()["fit"]
    assert 0 < fit["rel_l2_heldout"] < 0.08
    assert fit["n_train"] + fit["n_heldout"] == 9000
    assert fit["best_epoch"] <= fit["epochs_run"]


def test_acoustic_twin_spec_and_width_error(acoustic: MeasuredTwin, shared_data: Path) -> None:
    s = acoustic.spec
    assert (s.n_inputs, s.n_outputs, s.low, s.high, s.levels) == (20, 20, 0.0, 1.0, None)
    assert acoustic_twin(n_inputs=19, data_dir=shared_data).spec.n_inputs == 20  # narrower: the model pads
    with pytest.raises(ValueError, match="20 inputs.*n_inputs=21"):
        acoustic_twin(n_inputs=21, data_dir=shared_data, cache=False)
    with pytest.raises(ValueError, match=r"input\[0, 3\] = 1.5 .*above the drive limit high=1"):
        x = torch.full((2, 20), 0.5)
        x[0, 3] = 1.5
        acoustic(x)
    out = acoustic(torch.rand(5, 20, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (5, 20) and out.dtype == torch.float32
    assert (out >= 0).all()  # spectral magnitudes: the twin never predicts a negative one


def test_acoustic_twin_cache_reuses_the_fit(shared_data: Path, tmp_path: Path) -> None:
    first = acoustic_twin(data_dir=shared_data, cache=tmp_path, rows=600)
    files = list(tmp_path.glob("acoustic-twin-*.npz"))
    assert len(files) == 1
    second = acoustic_twin(data_dir=shared_data, cache=tmp_path, rows=600)
    assert second.fit_info["cache_file"] == str(files[0])
    x = torch.rand(7, 20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first(x), second(x))
    # the run seed seeds the measurement noise, not the fit: every seed gets the same twin (one device)
    n1 = acoustic_twin(data_dir=shared_data, cache=tmp_path, rows=600, seed=1, noise=True)
    n2 = acoustic_twin(data_dir=shared_data, cache=tmp_path, rows=600, seed=2, noise=True)
    assert len(list(tmp_path.glob("acoustic-twin-*.npz"))) == 1
    assert not torch.equal(n1(x), n2(x))
    assert torch.equal(n1.predict(x), first(x))
    # different fit data -> a different key, not the stale file
    acoustic_twin(data_dir=shared_data, cache=tmp_path, rows=500)
    assert len(list(tmp_path.glob("acoustic-twin-*.npz"))) == 2
    # a corrupt cache entry is refitted with a warning, not trusted
    files[0].write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="bad cached twin"):
        third = acoustic_twin(data_dir=shared_data, cache=tmp_path, rows=600)
    assert torch.equal(third(x), first(x))


def test_missing_data_folder_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "acoustic_x.csv").replace("\\", "\\\\")):
        acoustic_twin(data_dir=tmp_path, cache=False)


def test_from_csv_rows(tmp_path: Path) -> None:
    x, y = _toy_data(300)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    np.savetxt(tmp_path / "y.csv", y, delimiter=",")
    twin = MeasuredTwin.from_csv(tmp_path / "x.csv", tmp_path / "y.csv", rows=slice(0, 200), low=0.0, high=1.0, **FAST)
    assert twin.fit_info["n_train"] + twin.fit_info["n_heldout"] == 200
    assert twin.fit_info["data"]["rows"] == "0:200:None"
    assert (twin.spec.n_inputs, twin.spec.n_outputs) == (3, 2)
    with pytest.raises(ValueError, match="x.csv has 300 rows but .*y.csv has 299"):
        np.savetxt(tmp_path / "y.csv", y[:-1], delimiter=",")
        MeasuredTwin.from_csv(tmp_path / "x.csv", tmp_path / "y.csv")
    (tmp_path / "bad.csv").write_text("1,2,3\n4,x,6\n")
    with pytest.raises(ValueError, match="bad.csv is not a comma-separated table"):
        MeasuredTwin.from_csv(tmp_path / "bad.csv", tmp_path / "y.csv")


def test_fit_is_deterministic_and_seed_matters() -> None:
    x, y = _toy_data()
    a = MeasuredTwin.fit(x, y, seed=3, **FAST)
    b = MeasuredTwin.fit(x, y, seed=3, **FAST)
    c = MeasuredTwin.fit(x, y, seed=4, **FAST)
    for wa, wb in zip(a._w, b._w):
        assert torch.equal(wa, wb)
    assert not torch.equal(a._w[0], c._w[0])
    assert a.fit_info["rel_l2_heldout"] == b.fit_info["rel_l2_heldout"]
    # it actually learned the map (a constant predictor gives ~0.5 here)
    assert a.fit_info["rel_l2_heldout"] < 0.2


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    x, y = _toy_data()
    twin = MeasuredTwin.fit(x, y, seed=0, low=0.0, high=1.0, **FAST)
    path = twin.save(tmp_path / "sub" / "toy.npz")
    loaded = MeasuredTwin.load(path)
    q = torch.rand(50, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(twin(q), loaded(q))
    assert loaded.describe()["fit"] == json.loads(json.dumps(twin.describe()["fit"]))
    assert loaded.spec == twin.spec
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temporary behind
    # the file holds no pickled objects: numpy can read it with pickles forbidden
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["W0", "W1", "W2", "b0", "b1", "b2", "meta"]


def test_corrupt_or_foreign_files_give_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(TwinFileError, match="not found: .*nope.npz"):
        MeasuredTwin.load(missing)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00\x01 this is not a zip file")
    with pytest.raises(TwinFileError, match="junk.npz is not a readable twin file"):
        MeasuredTwin.load(junk)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.zeros(3))
    with pytest.raises(TwinFileError, match="foreign.npz is an .npz file but not a physnn twin"):
        MeasuredTwin.load(foreign)
    # a real twin file truncated mid-way
    x, y = _toy_data(200)
    good = MeasuredTwin.fit(x, y, **FAST).save(tmp_path / "good.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TwinFileError, match="cut.npz"):
        MeasuredTwin.load(cut)
    # a twin file whose weights do not match its record
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays["meta"].tobytes())
    meta["hidden"] = [32]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(TwinFileError, match="bad.npz: inconsistent twin file"):
        MeasuredTwin.load(bad)


def test_limits_and_noise() -> None:
    x, y = _toy_data()
    with pytest.raises(ValueError, match=r"x\[\d+, \d+\] = .* outside the drive limits \[0.2, 1\]"):
        MeasuredTwin.fit(x, y, low=0.2, high=1.0, **FAST)
    quiet = MeasuredTwin.fit(x, y, seed=1, **FAST)
    noisy = MeasuredTwin.fit(x, y, seed=1, noise=True, **FAST)
    q = torch.tensor([[0.5, 0.5, 0.9]]).repeat(4000, 1)  # outputs well away from 0 (no clipping)
    assert torch.equal(quiet(q[:3]), quiet(q[:3]))  # deterministic when noise is off
    diff = noisy(q) - quiet(q)
    res = torch.tensor(noisy.describe()["residual_std"])
    assert (res > 0).all()
    # the added noise has the fit's residual std (4000 draws: within 10 %)
    assert torch.allclose(diff.std(0), res, rtol=0.1)
    again = MeasuredTwin.fit(x, y, seed=1, noise=True, **FAST)
    assert torch.equal(again(q[:10]), MeasuredTwin.fit(x, y, seed=1, noise=True, **FAST)(q[:10]))
    with pytest.raises(ValueError, match="val_fraction must be in"):
        MeasuredTwin.fit(x, y, val_fraction=1.5)
    with pytest.raises(ValueError, match="x has 400 rows but y has 399"):
        MeasuredTwin.fit(x, y[:-1])


def test_an_unwritable_cache_does_not_stop_a_run(tmp_path: Path, shared_data: Path) -> None:
    blocker = tmp_path / "a-file-not-a-folder"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning, match="could not cache the fitted twin"):
        twin = acoustic_twin(cache=blocker / "sub", data_dir=shared_data)
    assert twin(torch.full((2, 20), 0.5)).shape == (2, 20)


@pytest.mark.fault("run file")
def test_a_cache_path_from_a_run_file_is_confined_to_the_run_and_user_cache_folders(
    shared_data: Path, tmp_path: Path
) -> None:
    """A crafted run file named a cache folder of its choosing and --resume wrote an .npz there."""
    from physnn.core.checks import ParameterError
    from physnn.core.safety import confined_paths

    run_dir, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    run_dir.mkdir()
    elsewhere.mkdir()
    (run_dir / "escape").symlink_to(elsewhere)  # a symlink out of the run's folder is outside too
    with confined_paths([run_dir, tmp_path / "user-cache"], source="runs/crafted.h5"):
        for target in (elsewhere, run_dir / ".." / "elsewhere", run_dir / "escape" / "twins"):
            with pytest.raises(
                ParameterError,
                match=r"acoustic-twin option cache = .* read from runs/crafted.h5 "
                r"lies outside the folders a run file may write to",
            ):
                acoustic_twin(data_dir=shared_data, cache=target, rows=300)
        assert list(elsewhere.iterdir()) == []
        inside = acoustic_twin(data_dir=shared_data, cache=run_dir / "cache", rows=300)  # the run's own folder
    assert Path(inside.fit_info["cache_file"]).parent == (run_dir / "cache").resolve()
    # outside a run file's options a path the user typed is the user's choice
    outside = acoustic_twin(data_dir=shared_data, cache=elsewhere, rows=300)
    assert Path(outside.fit_info["cache_file"]).parent == elsewhere


@pytest.mark.fault("run file")
def test_resume_of_a_crafted_run_file_writes_nothing_outside_the_run_and_cache_folders(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack of issue 15: a run file whose config names a cache folder of its choosing, then --resume."""
    import zlib

    import h5py

    from physnn.cli import main

    monkeypatch.setenv("PHYSNN_CACHE", str(tmp_path / "user-cache"))
    run, elsewhere = tmp_path / "runs" / "a.h5", tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = [
        "train",
        "--no-progress",
        "--system",
        "acoustic-twin",
        "--system-option",
        "rows=300",
        "--system-option",
        f"data_dir='{shared_data}'",
        "--dataset",
        "vowels",
        "--data-path",
        str(shared_data / "vowels.csv"),
        "--hidden",
        "20",
        "--blocks",
        "1",
        "--epochs",
        "1",
        "--output",
        str(run),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    with h5py.File(run, "r+") as f:  # a crafter recomputes the checksum: it guards against bit rot, not intent
        config = json.loads(f["config"][()])
        config["system_options"]["cache"] = str(elsewhere)
        config["epochs"] = 2
        text = json.dumps(config)
        del f["config"]
        f.create_dataset("config", data=text, dtype=h5py.string_dtype())
        f["config"].attrs["crc32"] = np.int64(zlib.crc32(text.encode("utf-8")))
    capsys.readouterr()
    rc = main(["train", "--no-progress", "--resume", str(run)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err, err
    assert err.endswith(
        f"acoustic-twin option cache = '{elsewhere}' read from {run} lies outside the folders a "
        f"run file may write to ({run.parent}, {tmp_path / 'user-cache'}); paths from a run file "
        f"are confined to the run's folder and the user's cache folder"
    ), err
    assert len(err.splitlines()) == 1 and list(elsewhere.iterdir()) == []
