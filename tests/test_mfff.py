"""MF-FF: black-box use of systems, query accounting, determinism, end-to-end learning."""

import pytest
import torch

from physnn.core.model import PNN
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.data.datasets import load_digits
from physnn.simulators.optics import OpticalCavity
from physnn.train.mfff import MFFF

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


class SpySystem(PhysicalSystem):
    """A system with a trainable-looking internal parameter that records every attribute a caller touches."""

    def __init__(self, n_in, n_out, seed=0):
        super().__init__(SystemSpec(n_in, n_out, name="spy"))
        g = torch.Generator().manual_seed(seed)
        self.internal = torch.nn.Parameter(torch.randn(n_in, n_out, generator=g))
        self.touched = set()
        self.inputs_required_grad = []

    def _measure(self, x):
        self.inputs_required_grad.append(x.requires_grad)
        return torch.tanh(x @ self.internal) ** 2


def _spy_getattr(self, name):
    import sys

    frame = sys._getframe(1)
    mod = frame.f_globals.get("__name__", "")
    if not mod.startswith("physnn.core.system") and mod != __name__:
        object.__getattribute__(self, "touched").add(name)
    return object.__getattribute__(self, name)


SpySystem.__getattribute__ = _spy_getattr


def tiny_data(n=60, f=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, f, generator=g)
    y = torch.arange(n) % c
    x[torch.arange(n), y] += 1.0  # separable-ish
    return x, y


def test_no_gradient_reaches_the_system_and_only_the_public_api_is_used():
    x, y = tiny_data()
    s1, s2 = SpySystem(9, 8, 1), SpySystem(5, 8, 2)
    pnn = PNN([s1, s2], 6, 3, hidden=5, seed=0)
    MFFF(epochs=2, batch_size=16, inner_steps=2, seed=0).fit(pnn, x, y, x, y)
    for s in (s1, s2):
        assert s.internal.grad is None
        assert not any(s.inputs_required_grad)
        assert s.touched <= ALLOWED, f"trainer touched internals: {s.touched - ALLOWED}"
    # and the only trainable parameters are the digital layers
    names = {n for n, _ in pnn.named_parameters()}
    assert names == {"blocks.0.linear.weight", "blocks.0.linear.bias", "blocks.1.linear.weight", "blocks.1.linear.bias"}


def test_an_epoch_queries_exactly_2LN_samples_and_inference_CLN():
    x, y = tiny_data(n=50)
    systems = [SpySystem(9, 8, 1), SpySystem(5, 8, 2)]
    pnn = PNN(systems, 6, 3, hidden=5, seed=0)
    trainer = MFFF(epochs=1, batch_size=16, inner_steps=3, seed=0, eval_every=0)
    trainer.fit(pnn, x, y)
    L, N, C = 2, 50, 3
    assert sum(s.stats.samples for s in systems) == 2 * L * N
    # block 0's drives do not depend on a weight: the epoch's go out in one call; block 1: one per batch (ceil(50/16))
    assert [s.stats.calls for s in systems] == [1, 4]
    before = sum(s.stats.samples for s in systems)
    pnn.predict(x[:20])
    assert sum(s.stats.samples for s in systems) - before == C * L * 20
    assert trainer.history.epochs[0]["train_queries"] == 2 * L * N


def test_same_seed_same_weights_and_accuracy_different_seed_differs():
    d = load_digits(seed=0)
    xs, ys = d.x_train[:200], d.y_train[:200]

    def run(seed):
        systems = [OpticalCavity(74, 32, seed=1), OpticalCavity(20, 32, seed=2)]
        pnn = PNN(systems, 64, 10, hidden=20, seed=seed)
        MFFF(epochs=2, batch_size=50, seed=seed, eval_every=0).fit(pnn, xs, ys)
        return pnn.state_dict(), pnn.score(d.x_test[:100], d.y_test[:100])

    (w1, a1), (w2, a2), (w3, _) = run(3), run(3), run(4)
    assert a1 == a2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert not torch.equal(w1["blocks.0.linear.weight"], w3["blocks.0.linear.weight"])


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(epochs=-1), "epochs must be an integer >= 0"),
        (dict(lr=0), "lr must be a positive finite number, got 0"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(theta=-1.0), "theta must be a positive"),
    ],
)
def test_trainer_hyperparameter_errors(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        MFFF(**kwargs)


def test_fit_rejects_bad_data():
    x, y = tiny_data()
    pnn = PNN([SpySystem(9, 8)], 6, 3, hidden=4)
    with pytest.raises(ValueError, match=r"x must be \[batch, 6\], got shape \(60, 5\)"):
        MFFF(epochs=1).fit(pnn, x[:, :5], y)
    with pytest.raises(ValueError, match=r"labels must lie in 0..2"):
        MFFF(epochs=1).fit(pnn, x, y + 1)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match=r"x\[3, 2\] = nan is not finite"):
        MFFF(epochs=1).fit(pnn, bad, y)
    with pytest.raises(ValueError, match="block input has 9 features .*but system 'spy' takes n_inputs=4"):
        PNN([SpySystem(4, 8)], 6, 3)


@pytest.mark.slow
def test_end_to_end_digits_through_optics_reaches_90_percent():
    d = load_digits(seed=0)
    systems = [OpticalCavity(74, 128, seed=1), OpticalCavity(100, 128, seed=2)]
    pnn = PNN(systems, 64, 10, hidden=100, seed=0)
    MFFF(epochs=4, batch_size=64, lr=0.01, seed=0, eval_every=0).fit(pnn, d.x_train, d.y_train)
    acc = pnn.score(d.x_test, d.y_test)
    assert acc >= 0.90, acc


def test_digital_flops_per_epoch_match_a_hand_count():
    x, y = tiny_data(n=32)
    systems = [SpySystem(9, 8, 1), SpySystem(5, 8, 2)]
    pnn = PNN(systems, 6, 3, hidden=5, skip=True, seed=0)  # block0: 8+9 -> 5, block1: 8+5 -> 5
    hist = MFFF(epochs=1, batch_size=16, inner_steps=2, seed=0, eval_every=0).fit(pnn, x, y)
    rows = 2 * 16  # positives and negatives
    per_batch = 0
    for fan_in in (17, 13):
        mm = 2 * rows * fan_in * 5  # one forward matrix product
        # per inner step: forward + weight gradient (inputs are measurements: no input gradient); then one forward
        per_batch += 2 * (mm + mm) + mm
    assert hist.epochs[0]["digital_flops"] == 2 * per_batch  # two batches of 16
