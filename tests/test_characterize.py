"""lab_scripts/characterize.py on simulators: exact metrics where the answer is known, plots written."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest

from physnn.system import PhysicalSystem, SystemSpec

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
    assert char.main([*args, "--points", "5", "--repeats", "4", "--drift-calls", "3", "--drift-interval", "0",
                      "--out", str(out)]) == 0
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
    s = run(char, tmp_path, "--system", "optics", "--option", "n_inputs=6", "--option", "n_outputs=6",
            "--option", "phase_range=2.0")
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
        char.characterize(object(), points=2)


class Drifting(PhysicalSystem):
    """y = x + rate * t (seconds since construction): a pure, known drift."""

    def __init__(self, rate: float):
        super().__init__(SystemSpec(3, 3, name="drifting"))
        self.rate = rate
        self.t0 = time.monotonic()

    def _measure(self, x):
        return x + self.rate * (time.monotonic() - self.t0)


def test_a_real_drift_is_measured_and_flagged(char):
    result = char.characterize(Drifting(rate=0.5), points=3, repeats=2, drift_calls=6, drift_interval=0.03)
    assert result["drift_slope"] == pytest.approx([0.5] * 3, rel=0.1)
    assert result["summary"]["drift_outputs_significant"] == 3
    assert result["summary"]["drift_window_s"] >= 0.15
