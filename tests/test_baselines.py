"""Baselines: backprop in silico, PAT, zeroth-order, digital FF; black-box use, query counts, determinism."""

import sys

import pytest
import torch
import torch.nn.functional as F

from physnn.core.e2e_model import E2ENet, in_silico, ste_drive
from physnn.core.encoding import Encoder
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.simulators.optics import OpticalCavity
from physnn.train.backprop import Backprop, perturbed_system
from physnn.train.ff_digital import DigitalFF, FFDigital
from physnn.train.pat import PAT
from physnn.train.zeroth_order import ZerothOrder

# what a black-box trainer may touch on a system (besides calling it)
ALLOWED = {
    "__class__",
    "spec",
    "stats",
    "describe",
    "close",
    "open",
    "closed",
    "event_hook",
    "validate_input",
    "report_event",
    "digital_flops_per_sample",  # the public statement of what a query replaces
}


class Smooth(PhysicalSystem):
    """A smooth nonlinear system y = cos(x W)^2 with a differentiable mode; records attributes touched from outside."""

    def __init__(self, n_in, n_out, seed=0, levels=None):
        super().__init__(SystemSpec(n_in, n_out, 0.0, 1.0, levels, name="smooth"))
        g = torch.Generator().manual_seed(seed)
        self.internal = torch.nn.Parameter(2.0 * torch.randn(n_in, n_out, generator=g) / n_in**0.5)
        self.touched = set()
        self.rows = 0

    def _measure(self, x):
        self.rows += x.shape[0]
        return torch.cos(x @ self.internal) ** 2

    def differentiable(self, x):
        return torch.cos(x @ self.internal) ** 2


def _spy_getattr(self, name):
    mod = sys._getframe(1).f_globals.get("__name__", "")
    if not mod.startswith("physnn.core.system") and mod != __name__:
        object.__getattribute__(self, "touched").add(name)
    return object.__getattribute__(self, name)


Smooth.__getattribute__ = _spy_getattr


def blobs(n=120, f=6, c=3, seed=0):
    """A small 3-class task: noisy Gaussian clusters (fixed centres; ``seed`` draws the samples)."""
    centres = torch.randn(c, f, generator=torch.Generator().manual_seed(99)) * 1.5
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = centres[y] + 0.7 * torch.randn(n, f, generator=g)
    return x, y


def make(seed_sys=1, n_in=10, levels=None):
    return [Smooth(n_in, 16, seed_sys, levels), Smooth(n_in, 16, seed_sys + 1, levels)]


def fit(trainer, systems, x, y, xv=None, yv=None):
    model = E2ENet(systems, x.shape[1], 3, hidden=8, seed=0)
    trainer.fit(model, x, y, xv, yv)
    return model


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize(
    "trainer",
    [
        Backprop(epochs=15, batch_size=16, lr=0.02, seed=0, eval_every=0),
        PAT(
            epochs=15,
            batch_size=16,
            lr=0.02,
            seed=0,
            eval_every=0,
            twin_samples=300,
            twin_epochs=20,
            twin_hidden=(32,),
            refit_steps=10,
        ),
        ZerothOrder(epochs=15, batch_size=16, lr=0.02, seed=0, eval_every=0, perturbation=0.02, directions=2),
    ],
    ids=["backprop", "pat", "zeroth_order"],
)
def test_each_end_to_end_trainer_learns_a_small_task(trainer):
    x, y = blobs()
    xt, yt = blobs(seed=1)
    model = E2ENet(make(), 6, 3, hidden=8, seed=0)
    before = model.score(xt, yt)
    trainer.fit(model, x, y)
    after = model.score(xt, yt)
    assert after >= 0.9 and after > before + 0.2, (before, after)


def test_digital_ff_learns_a_small_task_and_spends_no_queries():
    x, y = blobs()
    xt, yt = blobs(seed=1)
    model = DigitalFF(6, 3, hidden=16, n_layers=2, seed=0)
    hist = FFDigital(epochs=20, batch_size=16, lr=0.01, seed=0, eval_every=0).fit(model, x, y, xt, yt)
    assert hist.epochs[-1]["val_accuracy"] >= 0.9  # fit's x_val/y_val: the validation data
    assert all(e["train_queries"] == 0 for e in hist.epochs)
    assert {n for n, _ in model.named_parameters()} == {
        f"blocks.{i}.linear.{w}" for i in (0, 1) for w in ("weight", "bias")
    }


# ------------------------------------------------------------------ black box
@pytest.mark.parametrize(
    "make_trainer",
    [
        lambda: PAT(epochs=2, batch_size=16, seed=0, twin_samples=50, twin_epochs=2, twin_hidden=(8,), refit_steps=2),
        lambda: ZerothOrder(epochs=2, batch_size=16, seed=0),
    ],
    ids=["pat", "zeroth_order"],
)
def test_pat_and_zeroth_order_only_call_the_system(make_trainer):
    x, y = blobs(n=40)
    systems = make()
    model = E2ENet(systems, 6, 3, hidden=8, seed=0)
    for s in systems:
        s.touched.clear()  # building the model reads the specs; training is what we check
    make_trainer().fit(model, x, y, x, y)
    for s in systems:
        assert s.touched <= ALLOWED, f"trainer touched internals: {s.touched - ALLOWED}"
        assert s.internal.grad is None
        assert "differentiable" not in s.touched


def test_backprop_uses_the_declared_differentiable_mode_and_no_training_queries():
    x, y = blobs(n=40)
    systems = make()
    model = E2ENet(systems, 6, 3, hidden=8, seed=0)
    hist = Backprop(epochs=2, batch_size=16, seed=0, eval_every=1).fit(model, x, y, x[:10], y[:10])
    assert "differentiable" in systems[0].touched
    assert [e["train_queries"] for e in hist.epochs] == [0.0, 0.0]
    assert [e["eval_queries"] for e in hist.epochs] == [20.0, 20.0]  # deployed: 10 samples x 2 blocks
    assert sum(s.rows for s in systems) == 40
    assert systems[0].internal.grad is not None  # the simulator's own parameter got a gradient: in silico


def test_backprop_refuses_a_system_without_differentiable_mode():
    class Opaque(PhysicalSystem):
        def __init__(self):
            super().__init__(SystemSpec(10, 16, name="opaque"))

        def _measure(self, x):
            return x.repeat(1, 2)[:, :16]

    x, y = blobs(n=20)
    model = E2ENet([Opaque(), Opaque()], 6, 3, hidden=8)
    with pytest.raises(TypeError, match="system 'opaque' .*has no differentiable"):
        Backprop(epochs=1).fit(model, x, y)


# ------------------------------------------------------------------ queries
def test_query_counts_per_epoch_match_the_documented_formulas():
    x, y = blobs(n=50)
    N, L = 50, 2
    # PAT: twin fit only for the system of block 1; one query per block per sample per epoch
    systems = make()
    model = E2ENet(systems, 6, 3, hidden=8, seed=0)
    pat = PAT(epochs=2, batch_size=16, seed=0, twin_samples=70, twin_epochs=1, twin_hidden=(8,), refit_steps=1)
    hist = pat.fit(model, x, y)
    assert hist.epochs[0]["queries/twin_fit"] == 70
    assert [e["train_queries"] for e in hist.epochs] == [70 + N * L, N * L]  # the twin fit is charged to epoch 0
    assert [s.rows for s in systems] == [2 * N, 70 + 2 * N]
    assert [e["queries/train"] for e in hist.epochs] == [N * L, 2 * N * L]
    # zeroth-order: B + 2*directions*B*(L-1) per batch
    systems = make()
    model = E2ENet(systems, 6, 3, hidden=8, seed=0)
    zo = ZerothOrder(epochs=1, batch_size=16, seed=0, directions=3)
    hist = zo.fit(model, x, y)
    assert [s.rows for s in systems] == [N, 2 * 3 * N]
    assert hist.epochs[0]["train_queries"] == N + 2 * 3 * N * (L - 1)


# ------------------------------------------------------------------ mechanisms
def test_ste_drive_has_the_exact_quantised_value_and_the_continuous_gradient():
    spec = SystemSpec(5, 3, 0.0, 2.0, levels=5, name="q")
    enc = Encoder(spec, "minmax")
    h = torch.tensor([[0.0, 0.3, 0.55, 1.0], [2.0, -1.0, 0.1, 0.4]], requires_grad=True)
    d = ste_drive(enc, h)
    assert torch.equal(d.detach(), enc(h))  # valid levels, padded with low
    w = torch.arange(5.0)
    (d * w).sum().backward()
    h2 = h.detach().clone().requires_grad_(True)
    soft = spec.low + enc.unit(h2) * (spec.high - spec.low)
    (soft * w[:4]).sum().backward()
    assert torch.allclose(h.grad, h2.grad)


def test_pat_forward_value_is_the_measurement_and_gradient_the_twins():
    x, y = blobs(n=30)
    systems = make()
    model = E2ENet(systems, 6, 3, hidden=8, seed=0)
    pat = PAT(epochs=1, batch_size=16, seed=0, twin_samples=200, twin_epochs=5, twin_hidden=(16,), refit_every=0)
    pat.fit(model, x, y)
    block = model.blocks[1]
    drive = torch.rand(4, 10, requires_grad=True)
    out = pat._physics(1, block, drive)
    meas = systems[1].differentiable(drive.detach())  # deterministic system: same as a query
    assert torch.equal(out.detach(), meas)
    out.sum().backward()
    d2 = drive.detach().clone().requires_grad_(True)
    pat.twins[1](d2).sum().backward()  # twins are keyed by the first block that uses the system
    assert torch.allclose(drive.grad, d2.grad)
    true = drive.detach().clone().requires_grad_(True)
    systems[1].differentiable(true).sum().backward()
    assert not torch.allclose(drive.grad, true.grad)  # a twin, not the system's own gradient


def test_zeroth_order_estimate_points_along_the_true_gradient_and_restores_weights():
    torch.manual_seed(0)
    x, y = blobs(n=32)
    systems = make()
    model = E2ENet(systems, 6, 3, hidden=8, seed=0)
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    # true gradient through the (noise-free, smooth) systems' own model
    loss = F.cross_entropy(model(x, in_silico), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    zo = ZerothOrder(seed=0, perturbation=1e-3, directions=400)
    model.zero_grad()
    zo.estimate_gradient(model, x, y)
    assert all(torch.equal(v, w0[k]) for k, v in model.state_dict().items())
    up = torch.cat([p.grad.flatten() for p in model.blocks[0].parameters()])
    true_up = torch.cat([g.flatten() for g in grads[:2]])
    cos = float(up @ true_up / (up.norm() * true_up.norm()))
    assert cos > 0.8, cos
    down = torch.cat([p.grad.flatten() for p in model.blocks[1].parameters()])
    true_down = torch.cat([g.flatten() for g in grads[2:]])
    # exact up to the O(c^2 |delta|^2) curvature bias of evaluating at w +- c delta
    assert torch.allclose(down, true_down, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("cls", [Backprop, PAT, ZerothOrder])
def test_same_seed_same_weights_different_seed_differs(cls):
    x, y = blobs(n=40)
    kw = dict(twin_samples=40, twin_epochs=1, twin_hidden=(8,), refit_steps=2) if cls is PAT else {}

    def run(seed):
        model = E2ENet(make(), 6, 3, hidden=8, seed=seed)
        cls(epochs=2, batch_size=16, seed=seed, **kw).fit(model, x, y)
        return model.state_dict()

    a, b, c = run(3), run(3), run(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.linear.weight"], c["blocks.0.linear.weight"])


@pytest.mark.parametrize(
    "cls, kwargs, pattern",
    [
        (Backprop, dict(lr=0), "lr must be a positive finite number, got 0"),
        (Backprop, dict(epochs=-2), "epochs must be an integer >= 0, got -2"),
        (PAT, dict(twin_samples=0), "twin_samples must be an integer >= 1, got 0"),
        (PAT, dict(twin_hidden=(0,)), r"twin_hidden must be a list of integers >= 1, got \(0,\)"),
        (ZerothOrder, dict(perturbation=-0.1), "perturbation must be a positive finite number, got -0.1"),
        (ZerothOrder, dict(directions=0), "directions must be an integer >= 1, got 0"),
    ],
)
def test_hyperparameter_errors_name_the_value(cls, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(**kwargs)


def test_fit_rejects_bad_data_and_models():
    x, y = blobs(n=20)
    model = E2ENet(make(), 6, 3, hidden=8)
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got min 1, max 3"):
        Backprop(epochs=1).fit(model, x, y + 1)
    with pytest.raises(ValueError, match=r"x must be \[batch, 6\], got shape \(20, 5\)"):
        Backprop(epochs=1).fit(model, x[:, :5], y)
    with pytest.raises(ValueError, match="block input has 12 features but system 'smooth' takes n_inputs=10"):
        E2ENet(make(), 12, 3)
    with pytest.raises(TypeError, match="trains an E2ENet"):
        Backprop(epochs=1).fit(DigitalFF(6, 3), x, y)


# ------------------------------------------------------------------ deployment on a perturbed device
def test_perturbed_system_is_a_fresh_instance_that_differs_by_strength():
    opts = dict(n_inputs=12, n_outputs=20, seed=5, noise=False, slm_bits=None)
    nominal = OpticalCavity(**opts)
    drive = torch.rand(8, 12)
    ref = nominal(drive)
    same = perturbed_system("optics", strength=0.0, **opts)
    assert torch.equal(same(drive), ref)
    dev = perturbed_system("optics", strength=0.3, **opts)
    out = dev(drive)
    rel = float((out - ref).norm() / ref.norm())
    assert 0.05 < rel < 1.0, rel
    assert torch.equal(nominal(drive), ref)  # the nominal instance is untouched
    with pytest.raises(ValueError, match="strength must be a finite number >= 0, got -1"):
        perturbed_system("optics", strength=-1, **opts)


def test_deployed_weights_run_on_another_device_and_check_its_shape():
    x, y = blobs(n=30)
    model = E2ENet(make(), 6, 3, hidden=8, seed=0)
    Backprop(epochs=3, batch_size=16, seed=0).fit(model, x, y)
    other = make()  # same seeds: an identical device
    deployed = model.with_systems(other)
    assert deployed.systems == other and model.systems != other
    assert torch.equal(deployed.blocks[0].linear.weight, model.blocks[0].linear.weight)
    with torch.no_grad():
        assert torch.equal(deployed(x), model(x))
        assert not torch.allclose(model.with_systems(make(seed_sys=7))(x), model(x))
    assert other[0].rows == 30 and model.systems[0].rows == 60  # each queried on its own device (model twice)
    with pytest.raises(ValueError, match=r"block 1: system 'smooth' is 10->8, the trained block expects 10->16"):
        model.with_systems([other[0], Smooth(10, 8)])
