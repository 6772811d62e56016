"""Optical cavity simulator: limits, determinism and physical invariants."""

import pytest
import torch

from physnn.simulators.optics import OpticalCavity


def slm(b, n, seed=0, levels=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (b, n), generator=g).float() / (levels - 1)


def test_shape_limits_and_levels():
    s = OpticalCavity(8, 16, seed=0)
    assert s(slm(5, 8)).shape == (5, 16)
    with pytest.raises(ValueError, match=r"above the drive limit high=1 pi rad"):
        s(torch.full((1, 8), 1.5))
    with pytest.raises(ValueError, match="not one of the 256 allowed levels"):
        s(torch.full((1, 8), 0.001))
    with pytest.raises(ValueError, match="matrix must be one of 'gaussian', 'unitary', got 'fog'"):
        OpticalCavity(8, 8, matrix="fog")
    with pytest.raises(ValueError, match="photons must be a positive finite number, got -1"):
        OpticalCavity(8, 8, photons=-1)
    with pytest.raises(ValueError, match=r"transmission must be a finite number > 0 and <= 1, got 1.5"):
        OpticalCavity(8, 8, transmission=1.5)
    with pytest.raises(ValueError, match="noise must be true or false, got 'False'"):
        OpticalCavity(8, 8, noise="False")
    with pytest.raises(ValueError, match="adc_bits must be an integer in 1..24, got 12.5"):
        OpticalCavity(8, 8, adc_bits=12.5)


def test_units_are_declared():
    spec = OpticalCavity(4, 8).spec
    assert spec.units == "pi rad" and spec.output_units == "fraction of ADC full scale"


def test_determinism_per_seed():
    x = slm(4, 8)
    a, b, c = OpticalCavity(8, 16, seed=3), OpticalCavity(8, 16, seed=3), OpticalCavity(8, 16, seed=4)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))  # same noise stream too
    assert not torch.equal(OpticalCavity(8, 16, seed=3)(x), c(x))


def test_unitary_cavity_conserves_energy():
    s = OpticalCavity(6, 10, matrix="unitary", mixing=4.0, seed=1, dtype=torch.complex128)
    x = slm(7, 6)
    total = s.transmitted_fraction(x)  # sum_k |U E|^2 over all N = 10 modes
    assert torch.allclose(total, torch.ones(7, dtype=total.dtype), atol=1e-10)


def test_no_mode_mixing_means_no_interference():
    s = OpticalCavity(6, 6, matrix="unitary", mixing=0.0, seed=1, noise=False)
    out = s.intensity(slm(5, 6))
    assert torch.allclose(out, torch.ones_like(out), atol=1e-5)  # each pixel images one SLM pixel


def test_gaussian_medium_has_exponential_speckle():
    s = OpticalCavity(64, 2000, seed=2)
    i = s.intensity(slm(8, 64)).flatten()
    assert abs(float(i.std() / i.mean()) - 1.0) < 0.08  # fully developed speckle: std = mean


@pytest.mark.parametrize("n_in, n_out", [(64, 128), (128, 64), (16, 16), (8, 300)])
def test_gaussian_medium_is_passive(n_in, n_out):
    """No SLM pattern leaves the medium with more power than it brought (a scattering medium is passive)."""
    s = OpticalCavity(n_in, n_out, seed=1, slm_bits=None, dtype=torch.complex128)
    frac = s.transmitted_fraction(torch.rand(4000, n_in, generator=torch.Generator().manual_seed(0)))
    assert float(frac.max()) <= 1.0 + 1e-12
    # the bound is tight: the top right-singular vector, written as a phase pattern where it can be, gets through
    assert float(torch.linalg.matrix_norm(s._T, ord=2)) == pytest.approx(1.0, abs=1e-12)
    # and a random pattern is attenuated, as by a real thick medium (Marchenko-Pastur edge)
    edge = (1 + (n_in / n_out) ** 0.5) ** 2 * n_out / n_in
    assert float(frac.mean()) == pytest.approx(n_out / n_in / edge, rel=0.35)
    weaker = OpticalCavity(n_in, n_out, seed=1, slm_bits=None, transmission=0.5, dtype=torch.complex128)
    assert torch.allclose(
        weaker.transmitted_fraction(torch.zeros(3, n_in)), 0.25 * s.transmitted_fraction(torch.zeros(3, n_in))
    )


def test_shot_noise_is_poisson():
    s = OpticalCavity(16, 64, seed=0, photons=64000.0, read_noise=0.0, full_well=1e6, adc_bits=24)
    x = slm(1, 16).repeat(4000, 1)
    charge = s(x) * s.full_well  # back to electrons (ADC step 0.06 e-)
    mean, var = charge.mean(0), charge.var(0)
    ratio = (var / mean)[mean > 200]
    assert 0.85 < float(ratio.mean()) < 1.15


def test_saturation_and_adc_quantisation():
    s = OpticalCavity(8, 32, seed=0, photons=3.2e7, full_well=1000.0, adc_bits=4)
    y = s(slm(10, 8))
    assert float(y.max()) == 1.0
    assert torch.allclose(y * 15, torch.round(y * 15))  # only 16 codes


def test_interference_makes_the_response_nonlinear():
    s = OpticalCavity(8, 32, seed=0, noise=False)
    a, b = slm(1, 8, 1, levels=2) * 0.5, slm(1, 8, 2, levels=2) * 0.5
    zero = torch.zeros(1, 8)
    lin = s.intensity(a) + s.intensity(b) - s.intensity(zero)
    assert (s.intensity(a + b) - lin).abs().mean() > 0.1


def test_complex64_agrees_with_complex128():
    x = slm(6, 12)
    lo = OpticalCavity(12, 20, seed=5).intensity(x)
    hi = OpticalCavity(12, 20, seed=5, dtype=torch.complex128).intensity(x)
    assert torch.allclose(lo.double(), hi, rtol=1e-4, atol=1e-5)


def test_differentiable_mode_has_a_graph_but_call_does_not():
    s = OpticalCavity(4, 8, seed=0, slm_bits=None)
    x = torch.full((2, 4), 0.3, requires_grad=True)
    s.differentiable(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not s(x).requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = slm(4, 8)
    cpu = OpticalCavity(8, 16, seed=0, noise=False)(x)
    gpu = OpticalCavity(8, 16, seed=0, noise=False, device="cuda")(x.cuda())
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-3)


@pytest.mark.parametrize("n_out", [16, 128, 1024])
def test_photons_are_a_light_budget_shared_by_the_camera_pixels(n_out):
    """The expected photo-electrons of all pixels sum to photons x the transmitted fraction (<= photons x t^2),
    whatever the camera size: a bigger camera divides the light, it does not get more of it."""
    s = OpticalCavity(32, n_out, seed=1, photons=1e5, transmission=0.8, slm_bits=None, dtype=torch.complex128)
    x = torch.rand(64, 32, generator=torch.Generator().manual_seed(0))
    total = s.signal(x).sum(1)
    assert torch.allclose(total, 1e5 * s.transmitted_fraction(x), rtol=1e-12)
    assert float(total.max()) <= 1e5 * 0.8**2 * (1 + 1e-12)
    assert s.describe()["photons_per_query_e"] == 1e5


def test_a_bigger_camera_gets_the_same_light_not_more():
    """Per-pixel photons made the 1024-pixel camera detect 14.4x the photo-electrons of the 128-pixel one; with a
    budget, only the share of a random medium's light that a larger camera catches differs (Marchenko-Pastur)."""
    x = slm(200, 74, seed=3)
    small, big = OpticalCavity(74, 128, seed=0, noise=False), OpticalCavity(74, 1024, seed=0, noise=False)
    ratio = float(big.signal(x).sum() / small.signal(x).sum())
    edge = lambda n_out: (1 + (74 / n_out) ** 0.5) ** 2  # noqa: E731 - sigma_max^2 over the mean singular value^2
    assert ratio == pytest.approx(edge(128) / edge(1024), rel=0.15)  # about 1.9, not 14.4
    assert ratio < 2.5
    # the default exposure: 768 000 e- per query for every camera of 128 pixels or more; a smaller one is exposed
    # shorter (6000 e- at unit intensity, a fifth of the full well) rather than saturated
    assert small.photons == big.photons == 768000.0 and not big.photons_given
    assert OpticalCavity(8, 24).photons == 24 * 6000.0 and OpticalCavity(8, 24, full_well=5e4).photons == 24 * 1e4
    assert big.describe()["photons_setting"] == "default exposure"


def test_noisy_measurement_conserves_the_light_budget_on_average():
    s = OpticalCavity(16, 64, seed=4, photons=2e5, read_noise=0.0, full_well=1e6, adc_bits=24)
    x = slm(1, 16).repeat(2000, 1)
    detected = (s(x) * s.full_well).sum(1)  # electrons over the whole camera, per query
    expected = float(s.signal(x[:1]).sum())
    assert float(detected.mean()) == pytest.approx(expected, rel=0.01)
    assert float(detected.var()) == pytest.approx(expected, rel=0.15)  # Poisson: variance = mean, summed over pixels
