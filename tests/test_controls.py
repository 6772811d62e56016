"""The digital control systems (random-linear, random-features): black-box contract, their maps' invariants,
their stated FLOPs, and the accounting of what a physical query replaces (issue 19, item 2)."""

from __future__ import annotations

import math

import pytest
import torch

from physnn.core.registry import build_system
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.simulators.controls import RandomFeatures, RandomLinear, linear_flops, relu_flops, speckle_flops
from physnn.simulators.identity import IdentitySystem
from physnn.train.accounting import Accountant, count_flops, query_flops

CONTROLS = [
    ("random-linear", {}),
    ("random-features", {"kind": "relu"}),
    ("random-features", {"kind": "speckle"}),
]


def drives(n: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name, options", CONTROLS)
def test_controls_are_black_boxes_built_by_name(name, options):
    s = build_system(name, n_inputs=6, n_outputs=40, seed=3, **options)
    assert isinstance(s, PhysicalSystem) and (s.spec.n_inputs, s.spec.n_outputs) == (6, 40)
    x = drives(5, 6).requires_grad_(True)
    before = x.detach().clone()
    y = s(x)
    assert y.shape == (5, 40) and y.dtype == torch.float32 and not y.requires_grad
    assert torch.equal(x.detach(), before)  # the caller's drive is not touched
    assert (s.stats.calls, s.stats.samples) == (1, 5)
    # deterministic: the same seed is the same map, another seed another one; rows are independent of the batch
    assert torch.equal(build_system(name, n_inputs=6, n_outputs=40, seed=3, **options)(x), y)
    assert not torch.allclose(build_system(name, n_inputs=6, n_outputs=40, seed=4, **options)(x), y)
    assert torch.allclose(s(x[2:3]), y[2:3], atol=1e-6)
    # drive limits are checked like any system's, before the map runs
    with pytest.raises(ValueError, match=r"input\[0, 1\] = 1.5 .*above the drive limit high=1"):
        s(torch.tensor([[0.0, 1.5, 0.0, 0.0, 0.0, 0.0]]))
    d = s.describe()
    assert d["seed"] == 3 and d["digital_flops_per_sample"] == query_flops(s) > 0 and d["control"]


def test_default_width_is_the_drive_width_and_bad_options_are_one_line():
    assert RandomLinear(12).spec.n_outputs == 12
    with pytest.raises(ValueError, match="kind.*'tanh'"):
        build_system("random-features", n_inputs=4, kind="tanh")
    with pytest.raises(ValueError, match="n_outputs.*0"):
        RandomLinear(4, 0)
    with pytest.raises(ValueError, match="low must be below high"):
        RandomFeatures(4, low=1.0, high=0.0)


def test_random_linear_is_linear_in_the_drive():
    s = RandomLinear(8, 64, seed=1)
    a, b = drives(10, 8, 1), drives(10, 8, 2)
    # y = W (2u - 1) is affine in the drive: the midpoint maps to the mean
    assert torch.allclose(s((a + b) / 2), (s(a) + s(b)) / 2, atol=1e-5)
    # the centre of the drive range maps to 0
    assert torch.allclose(s(torch.full((1, 8), 0.5)), torch.zeros(1, 64), atol=1e-6)


def test_relu_features_are_nonnegative_about_half_active_and_not_linear():
    s = RandomFeatures(16, 512, kind="relu", seed=2)
    a, b = drives(200, 16, 1), drives(200, 16, 2)
    ya, yb, ym = s(a), s(b), s((a + b) / 2)
    assert (ya >= 0).all()
    assert 0.3 < float((ya > 0).float().mean()) < 0.7
    assert float((ym - (ya + yb) / 2).abs().mean()) > 0.01


def test_speckle_features_follow_the_optical_equations():
    n_in, n_out = 16, 256
    s = RandomFeatures(n_in, n_out, kind="speckle", seed=5)
    x = drives(300, n_in, 3)
    y = s(x)
    # passive medium (sigma_max = 1): no drive transmits more than its power, sum_k I_k / N_out <= 1
    assert float((y.sum(1) / n_out).max()) <= 1.0 + 1e-5
    # fully developed speckle: intensity over a random medium is exponential, contrast std/mean about 1
    contrast = float(y.std() / y.mean())
    assert 0.85 < contrast < 1.15
    # a global phase does not change an intensity: adding the same drive to every pixel is invisible
    shifted = (x * 0.5 + 0.25).clamp(0, 1)
    assert torch.allclose(s(shifted), s(x * 0.5), rtol=1e-3, atol=1e-5)
    # with a 2 pi stroke the two ends of the drive range are the same phase
    s2 = RandomFeatures(n_in, n_out, kind="speckle", phase_range=2.0, seed=5)
    assert torch.allclose(s2(torch.zeros(1, n_in)), s2(torch.ones(1, n_in)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name, options", CONTROLS)
def test_stated_flops_match_torch_counting_of_the_products(name, options):
    """The matrix products of the stated count are what torch's FLOP counter counts on the same map; the rest
    is the per-element work the counter leaves out (see simulators/controls.py)."""
    n_in, n_out, B = 6, 40, 4
    s = build_system(name, n_inputs=n_in, n_outputs=n_out, **options)
    _, counted = count_flops(lambda: s.differentiable(drives(B, n_in)))
    per_sample = query_flops(s)
    if options.get("kind") == "speckle":
        # torch counts a complex product like a real one (2 per multiply-add); a complex multiply-add is 8 real
        assert counted == B * 2 * n_in * n_out
        assert per_sample == speckle_flops(n_in, n_out) == 8 * n_in * n_out + 5 * n_in + 4 * n_out
    else:
        assert counted == B * 2 * n_in * n_out
        expect = linear_flops(n_in, n_out) if name == "random-linear" else relu_flops(n_in, n_out)
        assert per_sample == expect and expect - 2 * n_in * n_out in (2 * n_in, 2 * n_in + 2 * n_out)


def test_accountant_charges_the_flops_a_query_replaces_to_its_phase():
    control = RandomFeatures(6, 40, kind="speckle")
    ident = IdentitySystem(6)
    acct = Accountant([control, ident])
    with acct.phase("train"):
        control(drives(10, 6))
        ident(drives(7, 6))  # states no price: counted as queries, not as replaced FLOPs
    with acct.phase("eval"):
        control(drives(3, 6))
    control(drives(2, 6))  # outside any phase
    m = acct.metrics()
    per = speckle_flops(6, 40)
    assert m["flops_replaced/train"] == 10 * per and m["flops_replaced/eval"] == 3 * per
    assert m["flops_replaced/other"] == 2 * per and m["flops_replaced/learning"] == 10 * per
    assert m["flops_replaced/total"] == 15 * per and m["queries/train"] == 17
    # a checkpoint carries the totals; the resumed accountant keeps counting from them
    state = acct.state_dict()
    again = Accountant([control, ident])
    again.load_state_dict(state)
    with again.phase("train"):
        control(drives(1, 6))
    assert again.metrics()["flops_replaced/train"] == 11 * per
    assert again.metrics()["flops_replaced/total"] == 16 * per
    # systems that state nothing: no such metric at all (not a misleading 0)
    ident2 = IdentitySystem(6)
    only_identity = Accountant([ident2])
    with only_identity.phase("train"):
        ident2(drives(3, 6))
    assert not any(k.startswith("flops_replaced") for k in only_identity.metrics())
    # a round-2 checkpoint (no replaced totals) still loads
    old = dict(state, used=state["used"][:2])
    old.pop("replaced")
    Accountant([control]).load_state_dict(old)


def test_query_flops_refuses_a_nonsense_price():
    class Bad(PhysicalSystem):
        def __init__(self):
            super().__init__(SystemSpec(2, 2, name="bad"))

        def _measure(self, x):
            return x

        def digital_flops_per_sample(self):
            return -1.5

    with pytest.raises(ValueError, match="bad.*digital_flops_per_sample.*-1.5"):
        query_flops(Bad())
    assert query_flops(IdentitySystem(3)) is None
    assert math.isclose(speckle_flops(64, 1024) / (8 * 64 * 1024), 1.0, rel_tol=0.01)


def test_matching_builds_a_control_of_the_systems_width_and_drive_domain():
    from physnn.simulators.controls import matching

    spec = SystemSpec(64, 1024, 0.0, 1.0, 256, name="optics")
    name, options = matching(spec, "speckle")
    s = build_system(name, n_inputs=64, seed=1, **options)
    assert (s.spec.n_outputs, s.spec.low, s.spec.high, s.spec.levels) == (1024, 0.0, 1.0, 256)
    assert s.describe()["kind"] == "speckle" and s.describe()["phase_range"] == 1.0
    for control in ("linear", "features"):
        name, options = matching(spec, control)
        assert build_system(name, n_inputs=64, **options).spec.n_outputs == 1024
    with pytest.raises(ValueError, match="control must be one of.*'cosine'"):
        matching(spec, "cosine")


def test_difference_interval_is_newcombes_and_says_tie_for_one_sample():
    from physnn.core.evaluation import Accuracy, difference_interval

    # Newcombe (1998), Statistics in Medicine 17:873, table II example (56/70 vs 48/80): 0.0524 to 0.3339
    lo, hi = difference_interval(Accuracy(56, 70), Accuracy(48, 80))
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    # one vowel of 147 is no evidence of a difference, though 147/147 lies outside 146/147's own interval
    lo, hi = difference_interval(Accuracy(146, 147), Accuracy(147, 147))
    assert lo < 0 < hi
