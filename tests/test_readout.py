"""One-pass readout: neutral label, L queries per sample, trained on detached features, learns."""

import pytest
import torch

from physnn.core.model import PNN
from physnn.core.readout import Readout, fit_readout, neutral_embedding
from physnn.simulators.optics import OpticalCavity
from physnn.train.mfff import MFFF


def blobs(n=150, f=6, c=3, seed=0):
    centres = torch.randn(c, f, generator=torch.Generator().manual_seed(99)) * 1.5
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    return centres[y] + 0.7 * torch.randn(n, f, generator=g), y


def trained_pnn(label_scale="batch_max"):
    x, y = blobs()
    systems = [OpticalCavity(9, 24, seed=1), OpticalCavity(12, 24, seed=2)]
    pnn = PNN(systems, 6, 3, hidden=12, seed=0, label_scale=label_scale)
    MFFF(epochs=6, batch_size=25, seed=0, eval_every=0).fit(pnn, x, y)
    return pnn, systems


@pytest.mark.parametrize("scale", ["batch_max", "sample_max", 2.5])
def test_neutral_embedding_spreads_the_label_scale_evenly(scale):
    pnn = PNN([OpticalCavity(9, 8)], 6, 3, hidden=4, label_scale=scale)
    x = torch.tensor([[0.5, -3.0, 1.0, 0.0, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    e = neutral_embedding(pnn, x)
    hot = pnn.embed(x, torch.tensor([1, 2]))[:, :3].sum(1)  # what a one-hot label puts in its slot
    assert torch.equal(e[:, 3:], x)
    assert torch.allclose(e[:, :3], (hot / 3).unsqueeze(1).expand(2, 3))


def test_readout_costs_L_queries_per_sample_and_leaves_the_network_unchanged():
    pnn, systems = trained_pnn()
    x, y = blobs(seed=1)
    w = {k: v.clone() for k, v in pnn.state_dict().items()}
    before = sum(s.stats.samples for s in systems)
    readout = fit_readout(pnn, x, y, epochs=30, seed=0)
    assert sum(s.stats.samples for s in systems) - before == 2 * 150  # features measured once: N * L
    assert all(torch.equal(v, w[k]) for k, v in pnn.state_dict().items())
    assert set(readout.state_dict()) == {"linear.weight", "linear.bias", "mean", "std"}
    before = sum(s.stats.samples for s in systems)
    readout.predict(x[:20])
    assert sum(s.stats.samples for s in systems) - before == 2 * 20  # L per sample
    before = sum(s.stats.samples for s in systems)
    pnn.predict(x[:20])
    assert sum(s.stats.samples for s in systems) - before == 3 * 2 * 20  # goodness argmax: C * L per sample


def test_readout_learns_and_matches_goodness_inference_on_a_small_task():
    pnn, _ = trained_pnn()
    x, y = blobs(seed=1)
    xt, yt = blobs(seed=2)
    readout = fit_readout(pnn, x, y, epochs=60, seed=0)
    acc_readout = readout.score(xt, yt)
    acc_goodness = pnn.score(xt, yt)
    assert acc_readout >= 0.9, acc_readout
    assert acc_readout >= acc_goodness - 0.05, (acc_readout, acc_goodness)


def test_readout_is_deterministic_given_the_seed_and_the_measurements():
    systems = [OpticalCavity(9, 24, seed=1, noise=False), OpticalCavity(12, 24, seed=2, noise=False)]
    pnn = PNN(systems, 6, 3, hidden=12, seed=0)
    x, y = blobs(n=30)
    a, b, c = (fit_readout(pnn, x, y, epochs=5, seed=s) for s in (0, 0, 1))
    assert isinstance(a, Readout)
    assert torch.equal(a.linear.weight, b.linear.weight)
    assert not torch.equal(a.linear.weight, c.linear.weight)


def test_readout_argument_errors_name_the_value():
    pnn = PNN([OpticalCavity(9, 8)], 6, 3, hidden=4)
    x, y = blobs(n=12)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        fit_readout(pnn, x, y, epochs=0)
    with pytest.raises(ValueError, match="lr must be a positive number, got -1"):
        fit_readout(pnn, x, y, lr=-1)
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got min 0, max 3"):
        fit_readout(pnn, x, y.clone().fill_(3).index_fill_(0, torch.tensor([0]), 0))
    with pytest.raises(ValueError, match=r"x must be \[batch, 6\], got shape \(12, 5\)"):
        fit_readout(pnn, x[:, :5], y)
