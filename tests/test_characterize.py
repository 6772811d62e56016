"""physnn.analysis.characterize and lab_scripts/characterize.py: exact figures where the answer is known, each
simulator above its floors, files and CLI."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest

from physnn.core.system import PhysicalSystem, SystemSpec

SCRIPT = Path(__file__).resolve().parents[1] / "lab_scripts" / "characterize.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("linearity.png", "noise.png", "repeatability.png", "drift.png")


@pytest.fixture(scope="module")
def char():
    spec = importlib.util.spec_from_file_location("physnn_characterize_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(char, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "out"
    if "--fit-drives" not in args:
        args = (*args, "--fit-drives", "0")
    assert (
        char.main(
            [*args, "--points", "5", "--repeats", "4", "--drift-calls", "3", "--drift-interval", "0", "--out", str(out)]
        )
        == 0
    )
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    return json.loads((out / "summary.json").read_text())


def test_identity_system_is_exactly_linear_noiseless_and_stable(char, tmp_path):
    s = run(char, tmp_path, "--system", "identity", "--option", "n_inputs=6")
    m = s["metrics"]
    assert m["linearity_r2_median"] == pytest.approx(1.0, abs=1e-12)
    assert m["linearity_r2_min"] == pytest.approx(1.0, abs=1e-12)
    assert m["nonlinearity_max"] < 1e-9
    assert m["noise_std_max"] == 0.0 and m["snr_db_median"] is None  # infinite SNR has no finite median
    assert m["repeatability_rms"] == 0.0 and m["repeatability_relative"] == 0.0
    assert m["drift_range_max"] == 0.0 and m["drift_outputs_significant"] == 0
    # 16 repeatability drives twice + 4 channels x 5 points + 4 drives x 4 repeats + 3 drift calls x 4 copies
    assert m["samples_queried"] == 2 * 16 + 4 * 5 + 4 * 4 + 3 * 4
    assert s["drive_units"] == "a.u." and s["system"]["spec"]["n_inputs"] == 6


def test_drives_are_snapped_to_the_system_levels(char, tmp_path):
    s = run(char, tmp_path, "--system", "identity", "--option", "n_inputs=4", "--option", "levels=3")
    m = s["metrics"]
    assert m["samples_queried"] == 2 * 16 + 4 * 3 + 4 * 4 + 3 * 4  # 5 sweep points collapse to the 3 levels
    assert m["linearity_r2_min"] == pytest.approx(1.0, abs=1e-12)


def test_noisy_interfering_optics_shows_noise_and_nonlinearity(char, tmp_path):
    s = run(
        char,
        tmp_path,
        "--system",
        "optics",
        "--option",
        "n_inputs=6",
        "--option",
        "n_outputs=6",
        "--option",
        "phase_range=2.0",
    )
    m = s["metrics"]
    assert m["noise_std_median"] > 0 and m["snr_db_median"] is not None and m["snr_db_median"] > 0
    assert m["linearity_r2_min"] < 0.9  # interference: cosine response over a 2 pi sweep
    assert 0 < m["repeatability_relative"] < 0.5
    assert s["drive_units"] == "pi rad"


def test_simulated_serial_bench_in_volts_and_closed_after(char, tmp_path):
    s = run(char, tmp_path, "--simulate", "--n-inputs", "4", "--n-outputs", "5", "--timeout", "2")
    assert s["output_units"] == "V" and s["drive_units"] == "V"
    assert s["system"]["ident"]["serial"] == "SIM-0001"
    assert s["metrics"]["noise_std_median"] > 0
    assert not any(t.name == "physnn-fake-daq" and t.is_alive() for t in threading.enumerate())


def test_argument_errors(char, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        char.main(["--out", str(tmp_path)])
    assert info.value.code == 2
    assert "exactly one of --system NAME, --simulate or --port PORT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        char.main(["--system", "identity", "--option", "n_inputs", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="need points >= 3"):
        char.characterize_bench(object(), points=2)


class Drifting(PhysicalSystem):
    """y = x + rate * t (seconds since construction): a pure, known drift."""

    def __init__(self, rate: float):
        super().__init__(SystemSpec(3, 3, name="drifting"))
        self.rate = rate
        self.t0 = time.monotonic()

    def _measure(self, x):
        return x + self.rate * (time.monotonic() - self.t0)


def test_a_real_drift_is_measured_and_flagged(char):
    result = char.characterize_bench(Drifting(rate=0.5), points=3, repeats=2, drift_calls=6, drift_interval=0.03)
    assert result["drift_slope"] == pytest.approx([0.5] * 3, rel=0.1)
    assert result["summary"]["drift_outputs_significant"] == 3
    assert result["summary"]["drift_window_s"] >= 0.15


def test_lab_script_adds_the_core_figures(char, tmp_path):
    s = run(
        char, tmp_path, "--system", "identity", "--option", "n_inputs=5", "--fit-drives", "40", "--test-drives", "20"
    )
    assert s["figures"]["nonlinear_fraction_random"] == pytest.approx(0.0, abs=1e-9)
    assert s["figures"]["samples_queried"] == 2 * (40 + 20)
    assert (tmp_path / "out" / "characterize.png").read_bytes().startswith(PNG_MAGIC)


# ------------------------------------------------------------------ the core: physnn.analysis.characterize
import numpy as np  # noqa: E402
import torch  # noqa: E402

from physnn.analysis import characterize as core  # noqa: E402
from physnn.core.registry import build_system  # noqa: E402


class Square(PhysicalSystem):
    """y_k = (x_k - 1/2)^2 + sigma N(0, 1): no affine part at uniform drives, known noise."""

    def __init__(self, n: int = 4, sigma: float = 0.0, levels: int | None = None):
        super().__init__(SystemSpec(n, n, levels=levels, name="square", output_units="V"))
        self.sigma = sigma
        self.gen = torch.Generator().manual_seed(0)

    def _measure(self, x):
        return (x - 0.5) ** 2 + self.sigma * torch.randn(x.shape, generator=self.gen)


class NoisyIdentity(Square):
    def _measure(self, x):
        return x + self.sigma * torch.randn(x.shape, generator=self.gen)


def test_identity_is_linear_full_rank_noiseless_and_unmixed():
    r = core.characterize(build_system("identity", n_inputs=6), n_fit=200, n_test=100)
    assert r.nonlinear_fraction_random == pytest.approx(0.0, abs=1e-9)
    assert r.noise_rel == 0.0
    assert r.effective_rank == pytest.approx(6.0, rel=0.15)  # six independent uniform outputs
    assert r.rank99 == 6
    assert r.single_input_share_median == pytest.approx(1.0)  # each output is one input
    assert r.samples_queried == 2 * 300


def test_a_pure_square_is_fully_nonlinear_and_noise_is_removed():
    clean = core.characterize(Square(), n_fit=1000, n_test=500)
    assert clean.nonlinear_fraction_random > 0.95
    # noise removed: a noisy linear system still reads as linear, and the noise floor is measured
    sigma = 0.05
    noisy = core.characterize(NoisyIdentity(4, sigma=sigma), n_fit=1000, n_test=500)
    assert noisy.nonlinear_fraction_random < 0.03
    expected = sigma / np.sqrt(1 / 12 + sigma**2)
    assert noisy.noise_rel == pytest.approx(expected, rel=0.1)
    assert noisy.noise_std == pytest.approx(np.full(4, sigma), rel=0.1)


def test_encoder_drives_are_the_embedded_encoded_data():
    from physnn.core.encoding import Encoder, embed_label

    spec = SystemSpec(3 * 2 + 4, 1, levels=2)
    x = torch.rand(50, 4, generator=torch.Generator().manual_seed(0))
    d = core.encoder_drives(
        spec,
        x,
        torch.zeros(50),
        3,
        120,
        torch.Generator().manual_seed(1),
        encoder="thermometer",
        encoder_options={"bits": 1},
        label_repeat=2,
    )
    assert d.shape == (120, 10) and set(d.unique().tolist()) <= {0.0, 1.0}
    assert len(torch.unique(d, dim=0)) > 30  # of at most 3 labels x 2**4 feature patterns
    with pytest.raises(ValueError, match="only 150 .sample, label. pairs"):
        core.encoder_drives(spec, x, torch.zeros(50), 3, 151, torch.Generator())
    one = Encoder(spec, "thermometer", bits=1)(embed_label(x[:1], torch.tensor([2]), 3, label_repeat=2))
    assert one[0, 4:6].tolist() == [1.0, 1.0]  # class 2's two slots, hot


# the floors each simulator must keep (issue 10: nonlinear where the encoder drives it)
FLOORS = {
    "optics": dict(options={}, encoder="minmax", bits=None, nl_random=0.4, nl_encoded=0.25, rank=30, noise=0.1),
    "neuromorphic": dict(options={}, encoder="minmax", bits=None, nl_random=0.4, nl_encoded=0.25, rank=12, noise=0.15),
    "microwave": dict(options={}, encoder="thermometer", bits=1, nl_random=0.4, nl_encoded=0.25, rank=5, noise=0.15),
}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_each_simulator_is_nonlinear_where_the_encoder_drives_it(name, tmp_path):
    f = FLOORS[name]
    r, paths = core.characterize_named(
        name,
        system_options=f["options"],
        dataset="digits",
        encoder=f["encoder"],
        encoder_bits=f["bits"],
        n_fit=600,
        n_test=300,
        out=tmp_path,
    )
    assert r.nonlinear_fraction_random > f["nl_random"]
    assert r.nonlinear_fraction_encoded > f["nl_encoded"]
    assert r.effective_rank > f["rank"]
    assert r.noise_rel < f["noise"]
    assert r.single_input_share_median < 0.3  # every output mixes many inputs
    assert [p.name for p in paths] == ["characterize.h5", "characterize.png"]


def test_files_and_cli(tmp_path, capsys):
    import h5py

    from physnn.cli.characterize import main

    assert (
        main(
            [
                "--system",
                "identity",
                "--dataset",
                "none",
                "--system-option",
                "n_inputs=3",
                "--n-fit",
                "30",
                "--n-test",
                "15",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "nonlinear fraction, random drives" in out and "characterize.h5" in out
    with h5py.File(tmp_path / "characterize.h5") as h:
        assert h.attrs["nonlinear_fraction_random"] == pytest.approx(0.0, abs=1e-9)
        assert np.isnan(h.attrs["nonlinear_fraction_encoded"])
        assert h["eigenvalues"].shape == (3,)
        assert '"n_inputs": 3' in h.attrs["system"]
    assert (tmp_path / "characterize.png").read_bytes().startswith(PNG_MAGIC)


def test_add_cli_registers_the_subcommand():
    import argparse

    from physnn.cli import characterize as cli

    parser = argparse.ArgumentParser()
    cli.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["characterize", "--system", "optics", "--system-option", "n_outputs=64"])
    assert args.func is cli._cmd_characterize and args.system_option == ["n_outputs=64"]


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="n_fit must be an integer >= 2, got 1"):
        core.characterize(build_system("identity"), n_fit=1)
    with pytest.raises(ValueError, match=r"n_fit=17 drives cannot fit an affine map of 16 inputs \(17 parameters\)"):
        core.characterize(build_system("identity"), n_fit=17)
    with pytest.raises(ValueError, match=r"drives must be \[>= 30, 16\]"):
        core.characterize(build_system("identity"), drives=torch.zeros(5, 16), n_fit=20, n_test=10)


# ------------------------------------ physnn characterize builds what physnn train builds (issue 19, item 5)
def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from physnn.cli import main

    rc = main(["characterize", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize(
    "system, recipe",
    [("optics", {"n_outputs": 1024}), ("microwave", {"encoder": "thermometer"})],
)
def test_characterize_measures_the_system_train_builds_for_the_same_flags(system, recipe, tmp_path, capsys):
    import h5py

    from physnn.cli.train_config import config_from_flags
    from physnn.run.experiment import build_systems, load_data

    rc, out, err = _cli(
        capsys, "--system", system, "--seed", "3", "--n-fit", "150", "--n-test", "40", "--out", str(tmp_path)
    )
    assert rc == 0, err
    config = config_from_flags(None, {"system": system, "seed": 3})
    with build_systems(config.updated(blocks=1), load_data(config))[0] as trained:  # what physnn train runs
        expected = json.loads(json.dumps(trained.describe(), default=str))
    with h5py.File(tmp_path / "characterize.h5") as f:
        described = json.loads(f.attrs["system"])
        assert described.pop("stats")["samples"] == 2 * 2 * 190  # random and network drives, each queried twice
        expected.pop("stats")
        assert described == expected
        settings, cfg = json.loads(f.attrs["settings"]), json.loads(f.attrs["config"])
    for key, value in recipe.items():
        assert (expected["spec"] if key == "n_outputs" else cfg)[key] == value
    assert settings["block_seed"] == 3001 and cfg["dataset"] == "digits" and settings["method"] == "mfff"


def test_network_drives_are_the_encoded_training_samples_the_method_sends():
    from physnn.analysis.characterize import network_drives
    from physnn.core.encoding import Encoder
    from physnn.run.config import RunConfig
    from physnn.run.experiment import build_systems, load_data, split_validation

    for method, width in (("local_ce", 64), ("mfff", 74)):  # local_ce: no label in the drive; MF-FF: 10 slots
        config = RunConfig(system="identity", method=method, seed=1)
        data = load_data(config)
        with build_systems(config.updated(blocks=1), data)[0] as system:
            assert system.spec.n_inputs == width
            drives = network_drives(config, data, system.spec, 300, seed=2)
        assert drives.shape == (300, width)
        assert torch.equal(drives, network_drives(config, data, system.spec, 300, seed=2))  # seeded
    x_train, _, x_val, _ = split_validation(config, data)
    config = RunConfig(system="identity", method="local_ce", seed=1)
    with build_systems(config.updated(blocks=1), data)[0] as system:
        drives = network_drives(config, data, system.spec, 300, seed=2)
        encoded = Encoder(system.spec, "minmax")(x_train)
    # every drive is one training sample encoded as the network encodes it (none from the validation split)
    assert all(bool((encoded == d).all(dim=1).any()) for d in drives)
    assert len(torch.unique(drives, dim=0)) > 250  # drawn from 300 samples, not every label of 30


def test_characterize_never_overwrites_without_force_and_checks_before_measuring(tmp_path, capsys, monkeypatch):
    from physnn.analysis import characterize as analysis

    argv = ("--system", "identity", "--dataset", "none", "--n-fit", "20", "--n-test", "10", "--out", str(tmp_path))
    assert _cli(capsys, *argv)[0] == 0
    before = (tmp_path / "characterize.h5").read_bytes()
    monkeypatch.setattr(analysis, "build_system", lambda *a, **k: pytest.fail("built a system before refusing"))
    rc, _, err = _cli(capsys, *argv)
    assert rc == 2
    assert err.strip() == (
        f"physnn characterize: error: {tmp_path / 'characterize.h5'} exists; give another --out, or --force to "
        "overwrite it"
    )
    assert (tmp_path / "characterize.h5").read_bytes() == before
    monkeypatch.undo()
    assert _cli(capsys, *argv, "--seed", "5", "--force")[0] == 0
    assert (tmp_path / "characterize.h5").read_bytes() != before
    (tmp_path / "file").write_text("x")
    rc, _, err = _cli(capsys, *argv[:-1], str(tmp_path / "file"))
    assert rc == 2 and "is a file; give a folder" in err


def test_characterize_h5_has_units_everywhere_and_an_integer_seed(tmp_path):
    import h5py

    from physnn.analysis.characterize_output import FIGURE_UNITS

    core.characterize_named("neuromorphic", seed=7, n_fit=150, n_test=30, out=tmp_path)
    datasets = []
    with h5py.File(tmp_path / "characterize.h5") as f:
        f.visititems(
            lambda name, obj: datasets.append((name, dict(obj.attrs))) if isinstance(obj, h5py.Dataset) else None
        )
        seed = f.attrs["seed"]
        assert isinstance(seed, np.integer) and seed == 7
        assert set(f["figures"]) == set(FIGURE_UNITS)
        spikes = f.attrs["output_units"]
        assert f["noise_std"].attrs["units"] == spikes and f["eigenvalues"].attrs["units"] == f"({spikes})^2"
        assert f["figures/nonlinear_fraction_encoded"][()] == pytest.approx(f.attrs["nonlinear_fraction_encoded"])
    assert len(datasets) == len(FIGURE_UNITS) + 5
    for name, attrs in datasets:
        assert attrs.get("units") and attrs.get("long_name"), name


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--system", "identity", "--data-path", "x.csv"), "data_path 'x.csv' is not used by dataset 'digits'"),
        (("--system", "identity", "--dataset", "none", "--data-path", "x.csv"), "is not used without a data set"),
        (("--system", "identity", "--method", "digital"), "method 'digital' queries no physical system"),
        (("--system", "identity", "--system-option", "n_inputs=3"), "n_inputs"),
    ],
)
def test_characterize_refuses_what_it_would_ignore(argv, message, tmp_path, capsys):
    rc, _, err = _cli(capsys, *argv, "--out", str(tmp_path))
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "characterize.h5").exists()
