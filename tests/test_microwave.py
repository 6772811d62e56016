"""Tests of the metasurface cavity: limits, seeding, physics invariants, solvers, noise."""

from __future__ import annotations

import json
import math

import pytest
import torch

from physnn.core.registry import build_system
from physnn.simulators.microwave import MetasurfaceCavity


def bits(n: int, width: int = 40, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n, width), generator=gen).float()


@pytest.fixture(scope="module")
def cavity() -> MetasurfaceCavity:
    return MetasurfaceCavity(noise=False, seed=0)


# ------------------------------------------------------------------ spec, limits
def test_default_spec_and_output_shape(cavity):
    spec = cavity.spec
    assert (spec.n_inputs, spec.n_outputs, spec.levels, spec.low, spec.high) == (40, 20, 2, 0.0, 1.0)
    y = cavity(bits(5))
    assert y.shape == (5, 20) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and (y > 0).all()
    assert cavity.frequencies_hz[0].item() == pytest.approx(5.0e9) and cavity.frequencies_hz[
        -1
    ].item() == pytest.approx(5.5e9)


def test_drive_limits_are_enforced(cavity):
    before = cavity.stats.samples
    x = bits(3)
    x[1, 7] = 0.5
    with pytest.raises(ValueError, match=r"input\[1, 7\] = 0.5 is not one of the 2 allowed levels"):
        cavity(x)
    x[1, 7] = 2.0
    with pytest.raises(ValueError, match=r"input\[1, 7\] = 2 bit is above the drive limit high=1"):
        cavity(x)
    x[1, 7] = -1.0
    with pytest.raises(ValueError, match="below the drive limit"):
        cavity(x)
    with pytest.raises(ValueError, match="has 39 columns"):
        cavity(bits(2, width=39))
    assert cavity.stats.samples == before  # rejected batches are not queries


def test_factory_builds_requested_width():
    system = build_system("microwave", n_inputs=24, seed=3, device="cpu", noise=False)
    assert isinstance(system, MetasurfaceCavity)
    assert system.spec.n_inputs == 24 and system.spec.n_outputs == 20
    assert system(bits(2, width=24)).shape == (2, 20)


def test_constructor_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"n_inputs must be at most the 140 wall sites .* got 500"):
        MetasurfaceCavity(500)
    with pytest.raises(ValueError, match="solver must be one of 'woodbury', 'schur', 'full', got 'lu'"):
        MetasurfaceCavity(solver="lu")
    with pytest.raises(ValueError, match=r"antenna R at \(0.5, 0.1\) m is outside the cavity"):
        MetasurfaceCavity(antenna_positions_m=((0.1, 0.1), (0.5, 0.1)))
    with pytest.raises(ValueError, match="noise_db must be a finite number <= 0, got 3.0"):
        MetasurfaceCavity(noise_db=3.0)
    with pytest.raises(ValueError, match=r"band_ghz must be \(low, high\) with low < high, got \(5.5, 5.0\)"):
        MetasurfaceCavity(band_ghz=(5.5, 5.0))
    with pytest.raises(ValueError, match=r"cavity_m\[1\] must be a positive finite number, got -0.3"):
        MetasurfaceCavity(cavity_m=(0.4, -0.3))
    with pytest.raises(ValueError, match="n_scatterers must be an integer >= 0, got 2.5"):
        MetasurfaceCavity(n_scatterers=2.5)
    with pytest.raises(ValueError, match="noise must be true or false, got 0"):
        MetasurfaceCavity(noise=0)
    with pytest.raises(ValueError, match=r"element_spread must be a finite number >= 0 and < 0.2, got 0.3"):
        MetasurfaceCavity(element_spread=0.3)
    spec = MetasurfaceCavity(8, 4).spec
    assert spec.units == "bit" and spec.output_units == "|S21| (dimensionless)"


# ------------------------------------------------------------------ determinism
def test_same_seed_same_outputs_different_seed_differs():
    x = bits(4, width=16)
    a = MetasurfaceCavity(16, 8, seed=5)
    b = MetasurfaceCavity(16, 8, seed=5)
    c = MetasurfaceCavity(16, 8, seed=6)
    ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(ya, yb)
    assert torch.equal(a(x), b(x))  # the noise streams advance identically too
    assert not torch.allclose(ya, yc, rtol=1e-3, atol=0)
    assert not torch.equal(a.scatterer_positions, c.scatterer_positions)
    # noise really is redrawn on every query of the same instance
    assert not torch.equal(a(x), a(x))
    assert torch.equal(a.noise_free(x), b.noise_free(x))


# ------------------------------------------------------------------ physics invariants
@pytest.mark.parametrize("solver", ["woodbury", "schur", "full"])
def test_reciprocity_s21_equals_s12(cavity, solver):
    x = bits(3 if solver == "full" else 64, seed=1)
    s21 = cavity.transfer(x, solver=solver, dtype=torch.complex128)
    s12 = cavity.transfer(x, reverse=True, solver=solver, dtype=torch.complex128)
    scale = s21.abs().max()
    assert scale > 0.05
    assert (s21 - s12).abs().max() / scale < 1e-10


def test_reciprocity_by_physically_swapping_the_antennas(cavity):
    """A second cavity with transmitter and receiver positions exchanged measures S12 of the first."""
    (xt, yt), (xr, yr) = cavity.antenna_positions.tolist()
    swapped = MetasurfaceCavity(noise=False, antenna_positions_m=((xr, yr), (xt, yt)))
    assert torch.equal(swapped.scatterer_positions, cavity.scatterer_positions)
    x = bits(32, seed=13)
    s21 = cavity.transfer(x, dtype=torch.complex128)
    s12 = swapped.transfer(x, dtype=torch.complex128)
    assert (s21 - s12).abs().max() / s21.abs().max() < 1e-10
    # a genuinely different antenna placement does change the response (the check can fail)
    moved = MetasurfaceCavity(noise=False, antenna_positions_m=((xr, yr), (xt + 0.01, yt)))
    assert (moved.transfer(x, dtype=torch.complex128) - s21).abs().max() / s21.abs().max() > 1e-2


def test_passivity_over_many_configurations(cavity):
    x = torch.cat([bits(1000, seed=2), torch.zeros(1, 40), torch.ones(1, 40)])
    y = cavity.noise_free(x)
    assert y.max() <= 1.0
    # relaxed (continuous) configurations of the differentiable model are passive too
    relaxed = torch.rand(500, 40, generator=torch.Generator().manual_seed(3))
    assert cavity.differentiable(relaxed).max() <= 1.0


def test_passivity_is_tight_for_close_antennas():
    """Near-touching matched antennas transmit most of the power: the bound is nearly reached,
    so a wrong normalisation (e.g. a factor 2 too large) would break it."""
    close = MetasurfaceCavity(noise=False, antenna_positions_m=((0.20, 0.15), (0.203, 0.15)))
    y = close.noise_free(bits(1000, seed=4))
    assert 0.8 < y.max() <= 1.0


@pytest.mark.parametrize("solver", ["woodbury", "schur"])
def test_fast_solvers_equal_the_full_solve(cavity, solver):
    x = bits(6, seed=5)
    x[0] = 0
    x[1] = 1
    x[2] = 0
    x[2, :20] = 1  # exactly N/2 flips
    x[3] = 0
    x[3, 17] = 1  # a single flip from the all-0 reference
    full = cavity.transfer(x, solver="full", dtype=torch.complex128)
    fast = cavity.transfer(x, solver=solver, dtype=torch.complex128)
    assert (fast - full).abs().max() / full.abs().max() < 1e-10


def test_woodbury_groups_equal_schur_on_a_large_mixed_batch(cavity):
    """Large batches are split into groups by flip count; every group must be right."""
    gen = torch.Generator().manual_seed(15)
    density = torch.rand(300, 1, generator=gen)  # from nearly all-0 to nearly all-1 rows
    x = (torch.rand(300, 40, generator=gen) < density).float()
    x[:5] = 0
    x[5:10] = 1
    wood = cavity.transfer(x, solver="woodbury", dtype=torch.complex128)
    schur = cavity.transfer(x, solver="schur", dtype=torch.complex128)
    assert (wood - schur).abs().max() / schur.abs().max() < 1e-10


def test_complex64_matches_complex128(cavity):
    x = bits(256, seed=6)
    lo = cavity.transfer(x).abs()
    hi = cavity.transfer(x, dtype=torch.complex128).abs()
    assert lo.dtype == torch.float32
    assert (lo.double() - hi).abs().max() / hi.abs().max() < 1e-5


def test_response_is_nonlinear_in_the_configuration(cavity):
    """Flipping two elements is not the sum of the two single flips (multiple scattering).

    Checked on the complex S21 itself: in a single-scattering (Born) model it would be
    exactly additive, so this measures the element-element interaction."""
    gen = torch.Generator().manual_seed(7)
    ratios = []
    for _ in range(10):
        c = torch.randint(0, 2, (40,), generator=gen).float()
        i, j = torch.randperm(40, generator=gen)[:2].tolist()
        ci, cj, cij = c.clone(), c.clone(), c.clone()
        ci[i] = 1 - ci[i]
        cj[j] = 1 - cj[j]
        cij[i], cij[j] = ci[i], cj[j]
        s = cavity.transfer(torch.stack([c, ci, cj, cij]), dtype=torch.complex128)
        interaction = (s[3] - s[1] - s[2] + s[0]).abs()
        single = (s[1] - s[0]).abs() + (s[2] - s[0]).abs()
        ratios.append((interaction.norm() / single.norm()).item())
    assert min(ratios) > 1e-3 and sum(ratios) / len(ratios) > 0.05
    # |S21| is nonlinear as well
    y = cavity.noise_free(torch.stack([c, ci, cj, cij]).float())
    assert (y[3] - y[1] - y[2] + y[0]).abs().max() > 1e-3


def test_response_depends_on_the_configuration(cavity):
    y = cavity.noise_free(bits(200, seed=8))
    rel = (y.std(0) / y.mean(0)).mean().item()
    assert rel > 0.1  # the metasurface really shapes the transmission


# ------------------------------------------------------------------ noise
def test_noise_floor_has_documented_statistics():
    """E|S21 + n|^2 = |S21|^2 + sigma^2 exactly (n circular Gaussian, E|n|^2 = sigma^2);
    where |S21| >> sigma the magnitude fluctuates with std sigma / sqrt(2)."""
    noise_db = -30.0
    sigma = 10 ** (noise_db / 20)
    cav = MetasurfaceCavity(16, 10, noise_db=noise_db, seed=9)
    x = bits(1, width=16, seed=9).expand(4000, -1)
    y = cav(x).double()
    s = cav.transfer(x[:1]).abs().double()[0]
    excess = (y**2).mean(0) - s**2  # estimates sigma^2 per frequency
    se = torch.sqrt((2 * s**2 * sigma**2 + sigma**4) / y.shape[0])  # standard error of that estimate
    assert ((excess - sigma**2).abs() / se).max() < 4.5
    pooled_se = se.pow(2).sum().sqrt() / len(se)
    assert abs(excess.mean().item() - sigma**2) / pooled_se < 4.0
    assert excess.mean().item() == pytest.approx(sigma**2, rel=0.2)  # a wrong sigma by ~2 dB fails
    big = s > 10 * sigma
    assert big.sum() >= 3
    assert (y.std(0)[big] / (sigma / math.sqrt(2))).sub(1).abs().max() < 0.1
    # independent across frequencies
    dev = y - y.mean(0)
    corr = torch.corrcoef(dev.T)
    assert (corr - torch.eye(10, dtype=corr.dtype)).abs().max() < 0.1
    # and off means off
    quiet = MetasurfaceCavity(16, 10, noise=False, seed=9)
    assert torch.equal(quiet(x[:3]), quiet(x[:3]))


# ------------------------------------------------------------------ differentiable model
def test_differentiable_matches_and_has_gradients(cavity):
    x = bits(4, seed=10)
    relaxed = x.clone().requires_grad_(True)
    y = cavity.differentiable(relaxed)
    assert y.requires_grad
    assert torch.allclose(y.detach(), cavity.noise_free(x), rtol=1e-4, atol=1e-6)
    y.sum().backward()
    assert torch.isfinite(relaxed.grad).all() and relaxed.grad.abs().max() > 0
    # the gradient agrees with a finite difference of the relaxed model (complex128 for precision)
    precise = MetasurfaceCavity(noise=False, dtype=torch.complex128)
    c = torch.full((1, 40), 0.3, dtype=torch.float64, requires_grad=True)
    precise.differentiable(c)[0, 5].backward()
    eps = 1e-5
    up, down = c.detach().clone(), c.detach().clone()
    up[0, 11] += eps
    down[0, 11] -= eps
    fd = (precise.differentiable(up)[0, 5] - precise.differentiable(down)[0, 5]) / (2 * eps)
    assert c.grad[0, 11].item() == pytest.approx(fd.item(), rel=1e-3, abs=1e-6)
    with pytest.raises(ValueError, match=r"relaxed configuration in \[0, 1\], got values in \[0, 1.5\]"):
        cavity.differentiable(torch.tensor([[0.0] * 39 + [1.5]]))


# ------------------------------------------------------------------ drift hooks, metadata
def test_drift_parameters_are_live_and_trigger_a_rebuild():
    cav = MetasurfaceCavity(16, 8, noise=False, seed=11)
    x = bits(3, width=16, seed=11)
    before = cav.noise_free(x)
    params = cav.drift_parameters()
    assert set(params) == {"scatterer_positions", "element_detuning"}
    assert params["scatterer_positions"] is cav.scatterer_positions
    builds = cav.builds
    original = params["scatterer_positions"].clone()
    params["scatterer_positions"][0] += torch.tensor([0.01, -0.005], dtype=torch.float64)
    moved = cav.noise_free(x)
    assert cav.builds == builds + 1
    assert (moved - before).abs().max() > 1e-3
    # the fast solver still equals the from-scratch full solve after the move
    full = cav.transfer(x, solver="full", dtype=torch.complex128)
    fast = cav.transfer(x, dtype=torch.complex128)
    assert (fast - full).abs().max() / full.abs().max() < 1e-10
    params["element_detuning"] += 0.002
    assert (cav.noise_free(x) - moved).abs().max() > 1e-4
    params["scatterer_positions"].copy_(original)
    params["element_detuning"].zero_()
    assert torch.allclose(cav.noise_free(x), before, rtol=0, atol=1e-6)
    assert set(cav.drift_scales()) == set(params)


def test_describe_is_json_and_complete(cavity):
    d = cavity.describe()
    json.dumps(d)
    for key in (
        "band_ghz",
        "cavity_m",
        "element_resonances_ghz",
        "noise_db",
        "scatterer_positions_m",
        "seed",
        "solver",
    ):
        assert key in d
    assert d["n_dipoles"] == 2 + d["n_wall_dipoles"] + d["n_scatterers"] + 40 == 154


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = bits(32, seed=12)
    cpu = MetasurfaceCavity(noise=False, seed=1).noise_free(x)
    gpu = MetasurfaceCavity(noise=False, seed=1, device="cuda")
    y = gpu(x.cuda())
    assert y.device.type == "cuda"
    assert torch.allclose(y.cpu(), cpu, rtol=1e-4, atol=1e-6)


def test_large_systems_solve_correctly_with_threads():
    """N = 136 elements and P = 154 dipoles: orders above 128 go through the per-matrix path
    that avoids the batched-LU failure of MKL with several threads (pytorch/pytorch#142815)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cav = MetasurfaceCavity(136, 4, noise=False, seed=1)
        assert cav.n_dipoles == 154
        x = bits(3, width=136, seed=14)
        full = cav.transfer(x, solver="full", dtype=torch.complex128)
        for solver in ("schur", "woodbury"):
            fast = cav.transfer(x, solver=solver, dtype=torch.complex128)
            assert (fast - full).abs().max() / full.abs().max() < 1e-9
    finally:
        torch.set_num_threads(threads)


def test_large_differentiable_model_has_gradients_with_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cav = MetasurfaceCavity(136, 2, noise=False, seed=1)
        c = torch.full((2, 136), 0.5, requires_grad=True)
        cav.differentiable(c).sum().backward()
        assert torch.isfinite(c.grad).all() and c.grad.abs().max() > 0
    finally:
        torch.set_num_threads(threads)
