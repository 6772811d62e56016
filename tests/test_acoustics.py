"""AcousticCavity: shape and limits, determinism, energy, nonlinearity, temperature, noise floor, ADC."""

from __future__ import annotations

import math

import pytest
import torch

from physnn.simulators.acoustics import AcousticCavity, speed_of_sound


def _rand(b: int, k: int = 20, seed: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(b, k, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


@pytest.fixture(scope="module")
def quiet() -> AcousticCavity:
    return AcousticCavity(noise=False)


def test_shape_spec_and_drive_limits(quiet: AcousticCavity) -> None:
    s = quiet.spec
    assert (s.n_inputs, s.n_outputs, s.low, s.high, s.levels) == (20, 20, 0.0, 1.0, None)
    y = quiet(_rand(3))
    assert y.shape == (3, 20) and y.dtype == torch.float32 and (y >= 0).all()
    x = _rand(2)
    x[1, 7] = 1.01
    with pytest.raises(ValueError, match=r"input\[1, 7\] = 1.01 .*above the drive limit high=1"):
        quiet(x)
    x[1, 7] = -0.2
    with pytest.raises(ValueError, match=r"input\[1, 7\] = -0.2 .*below the drive limit low=0"):
        quiet(x)
    with pytest.raises(ValueError, match="has 19 columns"):
        quiet(_rand(2, 19))
    # the documented default layout: tones on even bins 20..58, outputs on the same lattice 10..68
    assert quiet.tone_bins == list(range(20, 60, 2))
    assert quiet.output_bins[0] == 10 and quiet.output_bins[-1] == 68 and all(b % 2 == 0 for b in quiet.output_bins)
    small = AcousticCavity(6, 9, n_modes=10, n_membranes=3, noise=False)
    assert small(_rand(4, 6)).shape == (4, 9)


def test_bad_settings_name_the_value() -> None:
    with pytest.raises(ValueError, match="coupling must be in \\[0, 1\\).*got 1.0"):
        AcousticCavity(coupling=1.0)
    with pytest.raises(ValueError, match="sample_rate=8000 Hz is too low for the highest resonance"):
        AcousticCavity(sample_rate=8000.0, bin_hz=20.0, tone_bins=list(range(20, 60, 2)))
    with pytest.raises(ValueError, match="sample_rate / bin_hz must be an integer"):
        AcousticCavity(bin_hz=30.0)
    with pytest.raises(ValueError, match="temperature 150 deg C is outside -50..100"):
        AcousticCavity(temperature=150.0)
    with pytest.raises(ValueError, match="tone_bins must be 20 distinct"):
        AcousticCavity(tone_bins=[20] * 20)


def test_deterministic_with_a_seed() -> None:
    x = _rand(4, seed=1)
    a, b, c = AcousticCavity(seed=5), AcousticCavity(seed=5), AcousticCavity(seed=6)
    ya = a(x)
    assert torch.equal(ya, b(x))  # same seed: same cavity and same noise draws
    assert not torch.allclose(ya, c(x), rtol=0.05)  # another seed: another cavity
    assert not torch.equal(a(x), ya)  # the noise stream moves on between queries
    q = AcousticCavity(seed=5, noise=False)
    assert torch.equal(q(x), q(x))
    # a row's answer does not depend on the rest of the batch (beyond float rounding)
    alone = q(x[2:3])
    assert torch.allclose(q(x)[2:3], alone, rtol=1e-4, atol=2e-6)  # ADC codes may flip by one LSB


def test_zero_drive_gives_the_noise_floor() -> None:
    silent = AcousticCavity(noise=False)(torch.zeros(2, 20))
    assert torch.equal(silent, torch.zeros(2, 20))
    noisy = AcousticCavity(seed=3)
    y = noisy(torch.zeros(64, 20))
    # Rayleigh mean sigma*sqrt(pi/N_w): 1280 draws -> ~1.5 % standard error
    assert y.mean().item() == pytest.approx(noisy.noise_floor_pa, rel=0.05)
    assert noisy.noise_floor_pa == pytest.approx(2e-3 * math.sqrt(math.pi / 1600))
    # a real drive stands far above the floor
    assert noisy(torch.full((1, 20), 0.5)).max() > 100 * noisy.noise_floor_pa


def test_energy_balance_and_bound() -> None:
    """Power in = power dissipated in the periodic steady state; kinetic energy under the documented bound."""
    sim = AcousticCavity(noise=False, dtype=torch.float64)
    x = torch.cat([_rand(2, seed=2, scale=0.4, dtype=torch.float64), torch.ones(1, 20, dtype=torch.float64)])
    tr = sim.simulate(x, states=True)
    gamma = sim._operators()["gamma"]
    p_in = (tr.v * tr.force).sum(-1).mean(0)
    p_out = (gamma * tr.v**2).sum(-1).mean(0)
    # exact in continuous time; the O(omega dt) discretisation leaves ~2 %
    assert torch.allclose(p_in, p_out, rtol=0.05), (p_in, p_out)
    kinetic = (0.5 * (tr.v**2).sum(-1)).mean(0)
    assert (kinetic <= sim.kinetic_energy_bound(x)).all()
    # the total energy is finite and stops growing: the last window's peak matches the one before
    e = tr.energy
    assert torch.isfinite(e).all() and (e >= 0).all()
    n = sim.n_window
    last, before = e[-n:].max(0).values, e[-2 * n : -n].max(0).values
    assert torch.allclose(last, before, rtol=0.1)
    # and full drive stays inside the ADC range (no clipping at the default gain)
    assert tr.pressure.abs().max() < sim.full_scale_pa / 2


def test_superposition_fails_because_of_the_membranes() -> None:
    a, b = _rand(8, seed=4, scale=0.5), _rand(8, seed=5, scale=0.5)

    def violation(sim: AcousticCavity) -> float:
        fa, fb, fab = sim.field(a), sim.field(b), sim.field(a + b)
        return float((fab - fa - fb).abs().norm() / fab.abs().norm())

    nonlinear = violation(AcousticCavity(noise=False))
    linear = violation(AcousticCavity(noise=False, nonlinear_pa=None))
    # Documented: the field at the output bins is far from additive (~40 %); with linear
    # membranes the same cavity is additive to float rounding.
    assert nonlinear > 0.2, nonlinear
    assert linear < 1e-4, linear


def test_temperature_moves_resonances_up() -> None:
    """A single mode f1 = c(T)/(2 Lx): warming from 0 to 40 deg C moves the resonance peak from 280 to 300 Hz."""
    kw = dict(n_modes=1, n_membranes=0, size_m=(0.6, 0.45, 0.35), q_factor=5.0, settle_s=0.05, noise=False)
    bins = list(range(11, 19))  # 220..360 Hz
    cold = AcousticCavity(8, 8, temperature=0.0, tone_bins=bins, output_bins=bins, **kw)
    warm = AcousticCavity(8, 8, temperature=40.0, tone_bins=bins, output_bins=bins, **kw)
    assert float(cold.mode_frequencies()[0]) == pytest.approx(331.3 / 1.2)
    assert float(warm.mode_frequencies()[0]) == pytest.approx((331.3 + 0.606 * 40) / 1.2)
    x = torch.full((1, 8), 0.5)
    peak_cold = bins[int(cold(x).argmax())] * 20
    peak_warm = bins[int(warm(x).argmax())] * 20
    assert (peak_cold, peak_warm) == (280, 300)


def test_drift_parameters_act_in_place() -> None:
    sim = AcousticCavity(noise=False)
    x = _rand(2, seed=7)
    before = sim(x)
    f_before = sim.mode_frequencies().clone()
    params = sim.drift_parameters()
    assert set(params) == {"temperature", "membrane_hz"}
    params["temperature"] += 5.0  # what a drift wrapper does
    assert sim.temperature == 25.0
    ratio = speed_of_sound(25.0) / speed_of_sound(20.0)
    assert torch.allclose(sim.mode_frequencies(), f_before * ratio, rtol=1e-12)
    after = sim(x)
    assert (after - before).norm() / before.norm() > 0.01
    sim.temperature = 20.0
    assert torch.equal(sim(x), before)
    with pytest.raises(ValueError, match="temperature -80 deg C is outside"):
        sim.temperature = -80.0
    assert sim.temperature == 20.0  # a rejected setting leaves the system as it was
    params["temperature"].fill_(500.0)  # a runaway drift is caught at the next query
    with pytest.raises(ValueError, match="temperature 500 deg C is outside"):
        sim(x)


def test_works_under_the_drift_wrapper() -> None:
    from physnn.simulators.drift import Drifting

    x = _rand(8, seed=8)
    still = Drifting(AcousticCavity(noise=False), rate=0.0, seed=0)
    assert torch.equal(still(x), AcousticCavity(noise=False)(x))
    inner = AcousticCavity(noise=False)
    moving = Drifting(inner, rate=0.05, seed=0)
    first = moving(x)
    for _ in range(3):
        last = moving(x)
    assert inner.temperature != 20.0  # the wrapper moved the air temperature in place
    assert (last - first).norm() / first.norm() > 1e-3


def test_adc_saturation_is_reported() -> None:
    events = []
    sim = AcousticCavity(noise=False, full_scale_pa=0.05)
    sim.event_hook = lambda kind, fields: events.append((kind, fields))
    y = sim(torch.ones(2, 20))
    assert torch.isfinite(y).all()
    assert events and events[0][0] == "adc_saturation" and events[0][1]["samples"] > 0
    assert sim.stats.counters["adc_saturated_samples"] == events[0][1]["samples"]
    # clipped: no output bin can exceed the full-scale amplitude of a square wave (4/pi * FS)
    assert y.max() <= 4 / math.pi * 0.05 + 1e-6


def test_differentiable_matches_finite_differences() -> None:
    kw = dict(n_modes=6, n_membranes=2, bin_hz=100.0, settle_s=0.02, ramp_s=0.005, tone_bins=[4, 5, 7],
              output_bins=[3, 4, 5, 6, 7, 9], noise=False, dtype=torch.float64)
    sim = AcousticCavity(3, 6, **kw)
    x = torch.tensor([[0.6, 0.8, 0.7]], dtype=torch.float64, requires_grad=True)
    w = torch.linspace(1.0, 2.0, 6, dtype=torch.float64)
    (sim.differentiable(x) * w).sum().backward()
    grad = x.grad[0]
    h = 1e-5
    for k in range(3):
        e = torch.zeros(1, 3, dtype=torch.float64)
        e[0, k] = h
        with torch.no_grad():
            fd = ((sim.differentiable(x + e) - sim.differentiable(x - e)) * w).sum() / (2 * h)
        assert float(grad[k]) == pytest.approx(float(fd), rel=1e-4)
    # and the measured (quantised, float32) output agrees with the differentiable model
    with torch.no_grad():
        ref = sim.differentiable(x).float()
    assert torch.allclose(AcousticCavity(3, 6, **{**kw, "dtype": torch.float32})(x.detach()), ref, rtol=2e-3, atol=1e-3)


def test_describe_is_complete(quiet: AcousticCavity) -> None:
    d = quiet.describe()
    assert d["temperature_c"] == 20.0 and d["speed_of_sound_m_s"] == pytest.approx(343.42)
    assert d["steps"] == 4800 and d["tone_hz"][0] == 400.0 and len(d["output_hz"]) == 20
    assert d["class"] == "physnn.simulators.acoustics.AcousticCavity"
