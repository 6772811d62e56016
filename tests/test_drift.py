"""Tests of the drift wrapper: zero drift is invisible, drift grows, events jump, seeding, accounting."""

from __future__ import annotations

import json
import math

import pytest
import torch

from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.simulators.drift import Drifting
from physnn.simulators.identity import IdentitySystem
from physnn.simulators.microwave import MetasurfaceCavity


class LinearMap(PhysicalSystem):
    """y = x @ W with W a drift parameter (real or complex; |.| taken for complex)."""

    def __init__(self, n_in: int = 4, n_out: int = 3, *, complex_weights: bool = False, seed: int = 0):
        super().__init__(SystemSpec(n_in, n_out, 0.0, 1.0, None, name="linear"))
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(n_in, n_out, generator=gen, dtype=torch.float64)
        imag = torch.randn(n_in, n_out, generator=gen, dtype=torch.float64)
        self.weights = torch.complex(w, imag) if complex_weights else w

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        y = x.to(self.weights.dtype) @ self.weights
        return y.abs().float() if y.is_complex() else y.float()

    def drift_parameters(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights}


def small_cavity(**kw) -> MetasurfaceCavity:
    return MetasurfaceCavity(12, 6, cavity_m=(0.2, 0.15), n_scatterers=6, **kw)


def bits(n: int, width: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 2, (n, width), generator=torch.Generator().manual_seed(seed)).float()


# ------------------------------------------------------------------ zero drift
@pytest.mark.parametrize("noise", [False, True])
def test_zero_drift_is_identical_to_the_unwrapped_system(noise):
    plain = small_cavity(noise=noise, seed=3)
    wrapped = Drifting(small_cavity(noise=noise, seed=3), rate=0.0, seed=1)
    assert wrapped.target == "parameters" and wrapped.spec == plain.spec
    for i in range(4):
        x = bits(8, seed=i)
        assert torch.equal(wrapped(x), plain(x))
    assert wrapped.system.builds == 1  # nothing moved, nothing was rebuilt
    summary = wrapped.describe()["drift"]["parameters"]
    assert all(v["rms_change"] == 0.0 for v in summary.values())


def test_zero_drift_output_target_is_identical():
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
    wrapped = Drifting(IdentitySystem(4), rate=0.0)
    assert wrapped.target == "output"
    assert torch.equal(wrapped(x), x) and torch.equal(wrapped(x), x)


# ------------------------------------------------------------------ gradual drift
def test_random_walk_grows_like_sqrt_of_queries():
    system = LinearMap(50, 40, seed=1)
    w0 = system.weights.clone()
    rate = 1e-3
    wrapped = Drifting(system, rate=rate, seed=2)
    scale = float(w0.std(unbiased=False))
    assert wrapped.describe()["drift"]["parameters"]["weights"]["scale"] == pytest.approx(scale)
    x = torch.rand(10, 50, generator=torch.Generator().manual_seed(0))
    ratios = []
    for _ in range(101):  # 100 steps of 10 samples after the first batch
        wrapped(x)
        t = wrapped.stats.samples - 10  # the state of the last batch was set at its start
        rms = float((system.weights - w0).pow(2).mean().sqrt()) / scale
        if t > 0:
            ratios.append(rms / (rate * math.sqrt(t)))
    # 2000 independent elements: the empirical rms concentrates on rate * sqrt(t)
    assert all(0.9 < q < 1.1 for q in ratios), ratios[:5]


def test_microwave_drift_changes_outputs_gradually():
    probe = bits(1, seed=5)
    wrapped = Drifting(small_cavity(noise=False, seed=4), rate=3e-3, seed=7)
    first = wrapped(probe)
    changes = []
    for _ in range(40):
        changes.append(float((wrapped(probe.expand(25, -1))[0] - first).abs().mean()))
    assert changes[0] > 0  # it does drift...
    assert changes[0] < 0.1 * max(changes)  # ...slowly at first...
    early, late = sum(changes[:5]) / 5, sum(changes[-5:]) / 5
    assert late > 3 * early  # ...and more and more with queries
    assert wrapped.system.builds > 30  # each batch saw an updated cavity
    moved = wrapped.describe()["drift"]["parameters"]["scatterer_positions"]
    assert moved["rms_change_in_scales"] == pytest.approx(3e-3 * math.sqrt(wrapped.stats.samples - 25), rel=0.5)


def test_any_system_can_drift_through_its_output():
    from physnn.simulators.optics import OpticalCavity

    optics = OpticalCavity(8, 6, noise=False, slm_bits=None, seed=1)
    plain = OpticalCavity(8, 6, noise=False, slm_bits=None, seed=1)
    wrapped = Drifting(optics, target="output", rate=0.02, seed=3)
    x = torch.rand(4, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(wrapped(x), plain(x))
    for _ in range(20):
        y = wrapped(x)
    assert (y - plain(x)).abs().max() > 1e-3


def test_output_drift_is_relative_gain_and_offset():
    x = torch.full((4, 3), 0.5)
    wrapped = Drifting(IdentitySystem(3), rate=0.01, seed=0)
    y0 = wrapped(x)
    assert torch.equal(y0, x)  # the first batch is measured at t = 0
    assert wrapped.describe()["drift"]["parameters"]["offset"]["scale"] == pytest.approx(0.5)
    for _ in range(50):
        y = wrapped(x)
    assert (y - x).abs().max() > 1e-3
    # every row of a batch sees the same gain and offset
    assert torch.equal(y, y[:1].expand_as(y))
    with pytest.raises(ValueError, match="no drift_parameters"):
        Drifting(IdentitySystem(3), target="parameters")


# ------------------------------------------------------------------ periodic, events
def test_periodic_drift_returns_after_one_period():
    system = LinearMap(seed=3)
    w0 = system.weights.clone()
    wrapped = Drifting(system, mode="periodic", amplitude=0.2, period=100, seed=4)
    x = torch.rand(25, 4, generator=torch.Generator().manual_seed(1))
    deviations = []
    for _ in range(6):  # batches start at t = 0, 25, 50, 75, 100, 125
        wrapped(x)
        deviations.append(float((system.weights - w0).abs().max()))
    assert deviations[0] == 0.0
    assert deviations[1] > 0.01 and deviations[2] > 0.01
    assert deviations[4] < 1e-12  # t = 100: one full period
    assert deviations[5] == pytest.approx(deviations[1], rel=1e-9)


def test_event_jumps_at_the_given_query():
    system = LinearMap(seed=5)
    seen = []
    wrapped = Drifting(system, events=[100], event_size=0.5, seed=6)
    wrapped.event_hook = lambda kind, fields: seen.append((kind, fields))
    x = torch.rand(10, 4, generator=torch.Generator().manual_seed(2))
    outputs = [wrapped(x) for _ in range(15)]  # batches start at t = 0, 10, ..., 140
    before, after = outputs[:10], outputs[10:]
    assert all(torch.equal(o, outputs[0]) for o in before)  # no drift before t = 100
    assert (after[0] - outputs[0]).abs().max() > 1e-2  # the batch starting at t = 100 jumped
    assert all(torch.equal(o, after[0]) for o in after)  # and stays put (rate = 0)
    assert [k for k, _ in seen] == ["drift_event"] and seen[0][1]["applied_at"] == 100.0
    d = wrapped.describe()["drift"]
    assert d["fired_events"] == [{"time": 100.0, "kind": "jump", "size": 0.5, "applied_at": 100.0}]
    assert d["pending_events"] == [] and seen[0][1]["event"] == "jump"
    assert wrapped.stats.counters["drift_event"] == 1


def test_wall_clock_drift_follows_time_not_queries():
    now = [0.0]
    system = LinearMap(seed=7)
    w0 = system.weights.clone()
    wrapped = Drifting(system, rate=0.1, clock="wall", time_fn=lambda: now[0], seed=8)
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(3))
    a = wrapped(x)
    b = wrapped(x)  # no time passed: no drift however many queries
    assert torch.equal(a, b) and torch.equal(system.weights, w0)
    now[0] = 60.0
    c = wrapped(x)
    assert (c - a).abs().max() > 1e-3
    assert wrapped.describe()["drift"]["time"] == 60.0


def test_complex_parameters_drift_in_both_parts():
    system = LinearMap(complex_weights=True, seed=9)
    w0 = system.weights.clone()
    wrapped = Drifting(system, rate=0.05, seed=1)
    x = torch.rand(4, 4, generator=torch.Generator().manual_seed(4))
    wrapped(x)
    wrapped(x)
    change = system.weights - w0
    assert change.real.abs().max() > 0 and change.imag.abs().max() > 0


# ------------------------------------------------------------------ seeding, accounting, lifecycle
def test_drift_is_deterministic_given_the_seed():
    x = bits(16, seed=9)

    def run(seed: int) -> list[torch.Tensor]:
        wrapped = Drifting(small_cavity(noise=True, seed=1), rate=5e-3, events=[(32, 0.3)], seed=seed)
        return [wrapped(x) for _ in range(4)]

    a, b, c = run(11), run(11), run(12)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not torch.equal(a[-1], c[-1])


def test_query_accounting_passes_through():
    inner = small_cavity(noise=False, seed=2)
    wrapped = Drifting(inner, rate=1e-3)
    wrapped(bits(5))
    wrapped(bits(7, seed=1))
    assert (wrapped.stats.calls, wrapped.stats.samples) == (2, 12)
    assert (inner.stats.calls, inner.stats.samples) == (2, 12)
    with pytest.raises(ValueError, match="not one of the 2 allowed levels"):
        wrapped(torch.full((1, 12), 0.5))
    assert wrapped.stats.samples == 12 and inner.stats.samples == 12
    d = wrapped.describe()
    json.dumps(d)
    assert d["system"]["stats"]["samples"] == 12
    wrapped.close()
    assert inner.closed and wrapped.closed
    with pytest.raises(RuntimeError, match="closed"):
        wrapped(bits(1))


def test_differentiable_follows_the_drifted_system():
    inner = small_cavity(noise=False, seed=5)
    wrapped = Drifting(inner, events=[0], event_size=0.5)
    x = bits(3, seed=3)
    y = wrapped(x)
    assert torch.allclose(wrapped.differentiable(x), y, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(small_cavity(noise=False, seed=5).noise_free(x), y, rtol=1e-3)


def test_bad_arguments_are_named():
    sys_ = LinearMap()
    with pytest.raises(ValueError, match="mode must be one of"):
        Drifting(sys_, mode="sine")
    with pytest.raises(ValueError, match="period must be a positive finite number"):
        Drifting(sys_, mode="periodic", amplitude=0.1)
    with pytest.raises(ValueError, match="rate=0.1 applies to mode='random_walk'"):
        Drifting(sys_, mode="periodic", rate=0.1, period=10)
    with pytest.raises(ValueError, match="amplitude=0.1 and period=None apply to mode='periodic'"):
        Drifting(sys_, amplitude=0.1)
    with pytest.raises(ValueError, match="rate must be a finite number >= 0, got -1"):
        Drifting(sys_, rate=-1)
    with pytest.raises(ValueError, match=r"scales has unknown name\(s\) \['temperature'\]"):
        Drifting(sys_, scales={"temperature": 1.0})
    with pytest.raises(ValueError, match=r"events\[0\] time must be a finite number >= 0, got -5"):
        Drifting(sys_, events=[-5])


def test_describe_before_any_query_is_strict_json():
    wrapped = Drifting(IdentitySystem(3), rate=0.01)
    text = json.dumps(wrapped.describe(), allow_nan=False)
    assert '"offset": {"scale": null' in text


def test_drifting_is_buildable_by_name_and_checks_its_options():
    from physnn.core.registry import build_system

    steady = build_system("drifting", n_inputs=8, base="optics", base_options={"noise": False}, rate=0.0)
    moving = build_system("drifting", n_inputs=8, base="optics", base_options={"noise": False}, rate=0.05)
    x = torch.zeros(4, 8)
    a0, b0 = steady(x), moving(x)
    for _ in range(30):
        steady(x)
        moving(x)
    assert torch.equal(steady(x), a0)
    assert not torch.equal(moving(x), b0)
    with pytest.raises(ValueError, match="system 'drifting' has no option\\(s\\) 'bogus'"):
        build_system("drifting", bogus=1)


# ------------------------------------------------------------------ stationary (Ornstein-Uhlenbeck) drift
def _state_in_scales(wrapped: Drifting, system: LinearMap, w0: torch.Tensor) -> torch.Tensor:
    return (system.weights - w0) / wrapped.describe()["drift"]["parameters"]["weights"]["scale"]


def test_ou_variance_stays_bounded_over_a_million_queries():
    system = LinearMap(50, 40, seed=11)  # 2000 independent coordinates
    w0 = system.weights.clone()
    sigma, tau = 0.5, 1e4
    wrapped = Drifting(system, mode="ou", sigma=sigma, tau=tau, seed=3)
    x = torch.rand(1, 50, generator=torch.Generator().manual_seed(0)).expand(2000, -1)
    variances, states = [], []
    for _ in range(601):  # 1.2e6 queries = 120 correlation times
        wrapped(x)
        s = _state_in_scales(wrapped, system, w0)
        variances.append(float(s.pow(2).mean()))
        states.append(s.flatten().clone())
    assert wrapped.stats.samples == 1_202_000
    assert max(variances) < 1.15 * sigma**2  # bounded at all times (2000 coordinates: ~3 % sampling error)
    stationary = variances[50:]  # after 10 tau
    assert sum(stationary) / len(stationary) == pytest.approx(sigma**2, rel=0.05)
    assert variances[1] == pytest.approx(sigma**2 * (1 - math.exp(-2 * 2000 / tau)), rel=0.15)  # starts at 0
    # correlation time: corr(s_t, s_{t+tau}) = exp(-1); 5 lags of 2000 queries = tau
    lag = [float(torch.dot(a, b) / (a.norm() * b.norm())) for a, b in zip(states[50:-5:25], states[55::25])]
    assert sum(lag) / len(lag) == pytest.approx(math.exp(-1), abs=0.05)


def test_ou_law_does_not_depend_on_batching():
    # ten batches 10 tau apart: each state is a fresh stationary draw, variance sigma^2, uncorrelated
    system = LinearMap(50, 40, seed=12)
    w0 = system.weights.clone()
    wrapped = Drifting(system, mode="ou", sigma=2.0, tau=100.0, seed=4)
    x = torch.rand(1, 50, generator=torch.Generator().manual_seed(1)).expand(1000, -1)
    wrapped(x)  # t = 0: at the set point
    assert torch.equal(system.weights, w0)
    prev = None
    for _ in range(10):
        wrapped(x)
        s = _state_in_scales(wrapped, system, w0).flatten()
        if prev is not None:
            assert float(s.pow(2).mean()) == pytest.approx(4.0, rel=0.1)
            assert abs(float(torch.dot(s, prev) / (s.norm() * prev.norm()))) < 0.08
        prev = s.clone()


def test_ou_zero_sigma_is_bit_identical_and_an_event_moves_the_set_point():
    from physnn.simulators.optics import OpticalCavity

    plain = OpticalCavity(8, 6, seed=2)
    still = Drifting(OpticalCavity(8, 6, seed=2), mode="ou", sigma=0.0, tau=10.0)
    x = torch.randint(0, 256, (5, 8), generator=torch.Generator().manual_seed(0)).float() / 255
    for _ in range(4):
        assert torch.equal(still(x), plain(x))
    # a jump with no drift: the system moves to the new set point and stays there
    system = LinearMap(seed=13)
    w0 = system.weights.clone()
    wrapped = Drifting(system, mode="ou", sigma=0.0, tau=10.0, events=[(20, 1.0)], seed=5)
    xs = torch.rand(10, 4, generator=torch.Generator().manual_seed(2))
    outs = [wrapped(xs) for _ in range(6)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])
    assert torch.equal(outs[2], outs[5]) and not torch.equal(system.weights, w0)


# ------------------------------------------------------------------ physics stays valid
def test_optical_medium_stays_passive_however_far_it_drifts():
    from physnn.simulators.optics import OpticalCavity

    inner = OpticalCavity(16, 24, noise=False, slm_bits=None, seed=3)
    t0 = inner._T.to(torch.complex128).clone()
    gram0 = t0.conj().T @ t0
    wrapped = Drifting(inner, mode="random_walk", rate=0.05, events=[(100, 3.0)], seed=6)
    assert wrapped.describe()["drift"]["parameters"]["transmission_matrix"]["chart"] == "rotation"
    x = torch.rand(64, 16, generator=torch.Generator().manual_seed(3))
    power0 = inner.intensity(x).sum(1)
    for _ in range(10):  # several scales of drift: rms change of T ~ its own size
        wrapped(x)
    t = inner._T.to(torch.complex128)
    assert float((t - t0).abs().pow(2).mean() / t0.abs().pow(2).mean()) > 0.5  # the speckle changed...
    sv0, sv = torch.linalg.svdvals(t0), torch.linalg.svdvals(t)
    assert torch.allclose(sv, sv0, atol=1e-5)  # ...but not the singular values: exactly as passive as before
    power = inner.intensity(x).sum(1)
    assert float(power.max()) / 24 <= float(sv0.max()) ** 2 + 1e-5  # no pattern gets more than sigma_max^2 through
    # and how much light each SLM pattern transmits changed (an output-side rotation alone left it at r = 1.0000)
    r = float(torch.corrcoef(torch.stack([power, power0.to(power.dtype)]))[0, 1])
    assert r < 0.9, r
    assert not torch.allclose(t.conj().T @ t, gram0, atol=1e-3)
    # a lossless cavity stays lossless: |T E| <= |E| for every field
    cavity = OpticalCavity(16, 24, matrix="unitary", noise=False, slm_bits=None, seed=4)
    Drifting(cavity, events=[(0, 2.0)], seed=7)(x)
    sv = torch.linalg.svdvals(cavity._T.to(torch.complex128))
    assert float(sv.max()) <= 1 + 1e-5


def test_additive_chart_on_the_optical_medium_is_still_available_and_brightens():
    from physnn.simulators.optics import OpticalCavity

    inner = OpticalCavity(16, 24, noise=False, slm_bits=None, seed=3)
    x = torch.rand(64, 16, generator=torch.Generator().manual_seed(3))
    p0 = float(inner.intensity(x).mean())
    Drifting(inner, events=[(0, 2.0)], charts={"transmission_matrix": "additive"}, seed=6)(x)
    assert float(inner.intensity(x).mean()) > 2 * p0  # why the rotation chart is the default


def test_acoustic_temperature_wanders_around_its_set_point_and_stays_valid():
    from physnn.simulators.acoustics import AcousticCavity

    now = [0.0]
    inner = AcousticCavity(noise=False)
    # 60 K rms around 20 deg C for 30 correlation times: far more than a lab sees; the range still holds
    wrapped = Drifting(
        inner,
        mode="ou",
        sigma=20.0,
        tau=3600.0,
        clock="wall",
        time_fn=lambda: now[0],
        scales={"temperature": 3.0, "membrane_hz": 1.0},
        seed=8,
        events=[{"time": 3600 * 30, "kind": "step", "shift": {"temperature": 200.0}}],
    )
    top = 1.0 * 12000 / (2 * math.pi)  # the highest membrane resonance the leapfrog resolves (omega dt <= 1)
    assert wrapped.describe()["drift"]["bounds"] == {"membrane_hz": [1.0, top], "temperature": [-50.0, 100.0]}
    x = torch.rand(1, 20, generator=torch.Generator().manual_seed(4))
    temps = []
    for _ in range(18):
        now[0] += 7200.0
        wrapped(x)  # never raises "outside -50..100 deg C"
        temps.append(inner.temperature)
    assert all(-50.0 <= t <= 100.0 for t in temps) and len(set(temps[:14])) >= 8
    assert temps[-1] == 100.0 and wrapped.stats.counters["drift_clipped"] >= 1  # the step pinned it at the top


def test_temperature_step_is_in_degrees():
    from physnn.simulators.acoustics import AcousticCavity

    inner = AcousticCavity(noise=False)
    wrapped = Drifting(inner, events=[{"time": 1, "kind": "step", "shift": {"temperature": 5.0}}])
    x = torch.rand(1, 20, generator=torch.Generator().manual_seed(5))
    a = wrapped(x)
    assert inner.temperature == 20.0
    b = wrapped(x)
    assert inner.temperature == 25.0 and (a - b).abs().max() > 1e-4
    assert wrapped.describe()["drift"]["fired_events"][0]["shift"] == {"temperature": 5.0}


def test_stuck_metasurface_element_ignores_its_drive_from_the_event_on():
    wrapped = Drifting(
        small_cavity(noise=False, seed=6), events=[{"time": 2, "kind": "stuck", "channels": [3], "value": 1.0}]
    )
    x = bits(1, seed=7).expand(2, -1).clone()
    x[:, 3] = torch.tensor([0.0, 1.0])  # element 3 off, then on
    before = wrapped(x)  # t = 0: element 3 follows its drive
    assert not torch.equal(before[0], before[1])
    after = wrapped(x)  # t = 2: element 3 stuck on, whatever the drive says
    assert torch.equal(after[0], after[1])
    # the event rewrote the (undrifted) parameters, so the cavity was rebuilt: equal up to float rounding
    assert torch.allclose(after[0], before[1], rtol=1e-5, atol=1e-7)
    assert wrapped.describe()["drift"]["stuck_channels"] == {"3": 1.0}
    with pytest.raises(ValueError, match="not one of the 2 allowed levels"):
        Drifting(small_cavity(noise=False), events=[{"time": 0, "kind": "stuck", "channels": [0], "value": 0.5}])


def test_chip_swap_replaces_the_mismatch_and_closes_the_old_chip():
    from physnn.core.registry import build_system
    from physnn.simulators.neuromorphic import NeuromorphicChip

    kw = dict(n_hidden=32, steps=8, noise=0.0)
    old, new = NeuromorphicChip(16, 8, serial="chip-0", **kw), NeuromorphicChip(16, 8, serial="chip-1", **kw)
    seen = []
    wrapped = Drifting(old, events=[{"time": 4, "kind": "swap", "system": new}])
    wrapped.event_hook = lambda kind, fields: seen.append(kind)
    x = torch.rand(4, 16, generator=torch.Generator().manual_seed(6))
    a, b = wrapped(x), wrapped(x)
    assert torch.equal(a, NeuromorphicChip(16, 8, serial="chip-0", **kw)(x))
    assert torch.equal(b, NeuromorphicChip(16, 8, serial="chip-1", **kw)(x)) and not torch.equal(a, b)
    assert old.closed and wrapped.system is new and seen == ["drift_event"]
    json.dumps(wrapped.describe(), allow_nan=False)
    # by name, from a config
    chip = build_system(
        "drifting",
        n_inputs=16,
        base="neuromorphic",
        base_options={"n_outputs": 8, **kw},
        events=[{"time": 4, "kind": "swap", "options": {"serial": "chip-1"}}],
    )
    assert torch.equal(chip(x), a) and torch.equal(chip(x), b)
    chip.close()


def test_bad_events_are_named():
    sys_ = LinearMap()
    with pytest.raises(ValueError, match="mode='ou' needs tau"):
        Drifting(sys_, mode="ou", sigma=1.0)
    with pytest.raises(ValueError, match="tau must be a positive finite number, got -3"):
        Drifting(sys_, mode="ou", sigma=1.0, tau=-3)
    with pytest.raises(ValueError, match="sigma=1 and tau=None apply to mode='ou'"):
        Drifting(sys_, sigma=1.0)
    with pytest.raises(
        ValueError, match=r"events\[0\] kind must be one of 'jump', 'step', 'stuck', 'swap', got 'melt'"
    ):
        Drifting(sys_, events=[{"time": 1, "kind": "melt"}])
    with pytest.raises(ValueError, match=r"events\[0\] shift parameter must be one of 'weights', got 'temperature'"):
        Drifting(sys_, events=[{"time": 1, "kind": "step", "shift": {"temperature": 1.0}}])
    with pytest.raises(ValueError, match=r"events\[0\] channels must be a non-empty list in 0..3, got \[4\]"):
        Drifting(sys_, events=[{"time": 1, "kind": "stuck", "channels": [4]}])
    with pytest.raises(
        ValueError, match=r"events\[0\] \(a 'jump'\) has unknown key\(s\) \['sise'\]; allowed: kind, time, size"
    ):
        Drifting(sys_, events=[{"time": 1, "sise": 0.3}])
    with pytest.raises(ValueError, match="same spec"):
        Drifting(sys_, events=[{"time": 1, "kind": "swap", "system": LinearMap(5, 3)}])
    with pytest.raises(ValueError, match="charts\\['weights'\\] = 'rotation' needs a complex 2-D parameter"):
        Drifting(sys_, charts={"weights": "rotation"})
    with pytest.raises(ValueError, match="bounds\\['weights'\\] = \\(5.0, 6.0\\) exclude the parameter's initial"):
        Drifting(sys_, bounds={"weights": (5.0, 6.0)})


def test_output_target_differentiable_model_before_any_query():
    from physnn.simulators.neuromorphic import NeuromorphicChip

    kw = dict(n_hidden=16, steps=4, noise=0.0)
    wrapped = Drifting(NeuromorphicChip(6, 4, **kw), target="output", events=[(1, 0.5)], seed=2)
    x = torch.rand(3, 6, generator=torch.Generator().manual_seed(8))
    # in-silico training starts before the device is ever measured: nothing has drifted, the model is the chip's
    assert torch.equal(wrapped.differentiable(x), NeuromorphicChip(6, 4, **kw).differentiable(x))
    wrapped(x)
    wrapped(x)  # t = 3: the gain/offset event has fired
    assert not torch.equal(wrapped.differentiable(x), NeuromorphicChip(6, 4, **kw).differentiable(x))


# ------------------------------------------------------------------ every drift option checked before the first query
@pytest.mark.parametrize(
    "options, message",
    [
        (
            dict(events=5),
            r"events must be a list of events \(times, \[time, size\] pairs or tables with a time\), got 5",
        ),
        (dict(events=[[1, 2, 3]]), r"events\[0\] must be a time, a \[time, size\] pair or a table with a time"),
        (dict(events=[{"size": 0.1}]), r"events\[0\] needs a time \(clock units, >= 0\)"),
        (dict(events=[{"time": "soon"}]), r"events\[0\] time must be a finite number >= 0, got 'soon'"),
        (dict(events=[{"time": 1, "kind": "step"}]), r"events\[0\] \(a 'step'\) needs shift = \{parameter = change\}"),
        (
            dict(events=[0, {"time": 1, "kind": "stuck", "channels": 3}]),
            r"events\[1\] channels must be a non-empty list",
        ),
        (dict(events=[{"time": 1, "kind": "swap"}]), r"events\[0\] \(a 'swap'\) needs options = \{\.\.\.\}"),
        (dict(events=[{"time": 1, "kind": "swap", "options": 3}]), r"events\[0\] options must be a table"),
        (
            dict(events=[{"time": 1, "parameters": "transmission_matrix"}]),
            r"events\[0\] parameters must be a non-empty list",
        ),
        (dict(events=[{"time": 1, "kind": "swap", "options": {"colour": 1}}]), r"has no option\(s\) 'colour'"),
        (dict(mode="ou", sigma=1.0), r"mode='ou' needs tau, .*got None"),
        (dict(mode="ou", sigma=1.0, tau=0), r"tau must be a positive finite number, got 0"),
        (dict(mode="periodic", amplitude=1.0, period=-2), r"period must be a positive finite number .*got -2"),
        (dict(rate=-1), r"rate must be a finite number >= 0, got -1"),
        (dict(clock="sun"), r"clock must be one of 'queries', 'wall', got 'sun'"),
        (dict(scales=3), r"option scales must be dict or none, got 3"),
        (dict(scales={"transmission_matrix": 0}), r"scales\['transmission_matrix'\] must be a positive finite number"),
        (dict(charts={"transmission_matrix": "spiral"}), r"charts\['transmission_matrix'\] must be one of"),
        (dict(bounds={"transmission_matrix": (0, 1)}), r"bounds\['transmission_matrix'\] apply to the additive chart"),
        (dict(base_options=[1]), r"option base_options must be dict or none, got \[1\]"),
    ],
)
def test_every_drift_option_is_checked_with_a_one_line_error(options, message):
    """A config's [system_options] for system = "drifting": a bad value is a ValueError naming key, value, what is
    allowed, raised while the system is built (before any query), and the base system built on the way is closed."""
    from physnn.core.checks import ParameterError
    from physnn.core.registry import build_system

    with pytest.raises(ParameterError, match=message) as info:
        build_system("drifting", n_inputs=8, base="optics", **options)
    assert "\n" not in str(info.value)


def test_events_5_through_physnn_train_is_one_line_exit_2(tmp_path, capsys):
    from physnn.cli import main

    cfg = tmp_path / "drift.toml"
    cfg.write_text('system = "drifting"\nepochs = 1\n[system_options]\nbase = "optics"\nevents = 5\n')
    assert main(["train", "--config", str(cfg), "--output", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("physnn train: error: ") and "events must be a list of events" in err[-1]
    assert "got 5" in err[-1]


def test_two_sided_rotation_moves_the_matrix_by_its_scale():
    """One unit of drift state is a relative change of T of about 1 (rms per element, small s): scales keep meaning."""
    from physnn.simulators.optics import OpticalCavity

    inner = OpticalCavity(32, 48, noise=False, slm_bits=None, seed=2, dtype=torch.complex128)
    t0 = inner._T.clone()
    Drifting(inner, events=[(0, 0.05)], seed=3)(torch.zeros(1, 32))
    rel = float((inner._T - t0).norm() / t0.norm())
    assert rel == pytest.approx(0.05, rel=0.25)


def test_membrane_step_beyond_the_resolved_band_is_clipped_not_fatal():
    """A +3 kHz step of the membrane resonances used to make every later query raise; now it is clipped."""
    from physnn.simulators.acoustics import AcousticCavity

    inner = AcousticCavity(4, 4, n_modes=6, n_membranes=2, settle_s=0.02, ramp_s=0.005, noise=False)
    wrapped = Drifting(inner, events=[{"time": 1, "kind": "step", "shift": {"membrane_hz": 3000.0}}])
    x = torch.rand(1, 4, generator=torch.Generator().manual_seed(0))
    wrapped(x)
    y = wrapped(x)  # the step fired: every membrane pinned at the top of its valid band
    assert torch.isfinite(y).all()
    top = inner.drift_bounds()["membrane_hz"][1]
    assert torch.allclose(inner.drift_parameters()["membrane_hz"], torch.full((2,), top, dtype=torch.float64))
    assert wrapped.stats.counters["drift_clipped"] >= 1
