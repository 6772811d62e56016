"""Label embedding, encoders, goodness and loss against hand-computed values."""

import math

import pytest
import torch

from physnn.core.encoding import Encoder, drive_width, embed_label, label_width
from physnn.core.goodness import MeanSquare, PrototypeCosine, ff_loss, make_goodness
from physnn.core.system import SystemSpec


def test_embed_label_uses_batch_max_by_default():
    x = torch.tensor([[0.5, -2.0], [1.0, 0.0]])
    e = embed_label(x, torch.tensor([2, 0]), 3)
    assert torch.equal(e, torch.tensor([[0, 0, 2.0, 0.5, -2.0], [2.0, 0, 0, 1.0, 0.0]]))
    e = embed_label(x, torch.tensor([2, 0]), 3, scale="sample_max")
    assert e[0, 2] == 2.0 and e[1, 0] == 1.0
    e = embed_label(x, torch.tensor([1, 1]), 3, scale=0.25)
    assert torch.equal(e[:, :3], torch.tensor([[0, 0.25, 0], [0, 0.25, 0]]))


@pytest.mark.parametrize(
    "labels, pattern", [([0, 3], "label 3 is outside 0..2"), ([0], r"labels must have shape \(2,\)")]
)
def test_embed_label_errors(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        embed_label(torch.zeros(2, 2), torch.tensor(labels), 3)


def test_minmax_encoder_maps_to_limits_and_quantises():
    spec = SystemSpec(4, 1, low=-1.0, high=3.0, levels=5)  # levels -1, 0, 1, 2, 3
    enc = Encoder(spec, "minmax")
    h = torch.tensor([[0.0, 10.0, 5.0, 2.4]])
    # unit: 0, 1, .5, .24 -> drive -1, 3, 1, -0.04 -> nearest level -1, 3, 1, 0
    assert torch.equal(enc(h), torch.tensor([[-1.0, 3.0, 1.0, 0.0]]))


def test_binary_levels_threshold_at_midpoint_and_padding():
    spec = SystemSpec(5, 1, levels=2)
    out = Encoder(spec, "minmax")(torch.tensor([[0.0, 0.49, 0.51, 1.0]]))
    assert torch.equal(out, torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]]))  # last column padded at low


def test_abs_l2_encoder():
    spec = SystemSpec(2, 1)
    out = Encoder(spec, "abs-l2")(torch.tensor([[3.0, -4.0]]))
    assert torch.allclose(out, torch.tensor([[0.6, 0.8]]))


def test_encoder_refuses_too_wide_input():
    with pytest.raises(ValueError, match="block input has 3 features but system 'system' has only n_inputs=2"):
        Encoder(SystemSpec(2, 1), "minmax")(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unknown encoder 'foo'"):
        Encoder(SystemSpec(2, 1), "foo")


def test_label_repeat_writes_each_class_into_k_adjacent_slots():
    x = torch.tensor([[0.5, -2.0], [1.0, 0.0]])
    e = embed_label(x, torch.tensor([2, 0]), 3, label_repeat=2)
    assert torch.equal(e, torch.tensor([[0, 0, 0, 0, 2.0, 2.0, 0.5, -2.0], [2.0, 2.0, 0, 0, 0, 0, 1.0, 0.0]]))
    assert torch.equal(embed_label(x, torch.tensor([2, 0]), 3, label_repeat=1), embed_label(x, torch.tensor([2, 0]), 3))
    assert label_width(10, 20) == 200
    with pytest.raises(ValueError, match="label_repeat must be an integer >= 1, got 0"):
        embed_label(x, torch.tensor([2, 0]), 3, label_repeat=0)


def test_pnn_grows_block_zero_with_label_repeat():
    from physnn.core.model import PNN
    from physnn.simulators.identity import IdentitySystem

    pnn = PNN([IdentitySystem(3 * 4 + 5)], 5, 3, label_repeat=4)
    assert pnn.blocks[0].in_features == 17
    e = pnn.embed(torch.ones(2, 5), torch.tensor([0, 2]))
    assert e.shape == (2, 17) and e[1, 8:12].tolist() == [1.0] * 4 and e[1, :8].sum() == 0
    with pytest.raises(ValueError, match="takes n_inputs=16"):
        PNN([IdentitySystem(16)], 5, 3, label_repeat=4)


def test_thermometer_encoder_by_hand():
    spec = SystemSpec(12, 1, levels=2)
    assert Encoder(spec, "thermometer").bits == 1  # the default: no extra width
    enc = Encoder(spec, "thermometer", bits=2)  # thresholds at z = -0.4307, +0.4307
    assert enc.bits == 2 and enc.width(5) == 10 and drive_width("thermometer", 5, bits=2) == 10
    h = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])  # z = -1.41, -0.71, 0, 0.71, 1.41
    out = enc(h)
    assert torch.equal(out, torch.tensor([[0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0.0]]))  # 2 padded channels at low
    # scale and offset of the sample do not matter (per-sample standardisation)
    assert torch.equal(enc(h * 7 - 3), out)
    # one bit per feature: above or below the sample's mean
    one = Encoder(spec, "thermometer", bits=1)(h)
    assert torch.equal(one[:, :5], torch.tensor([[0, 0, 0, 1, 1.0]]))


def test_thermometer_keeps_more_of_a_binary_drive_than_rounding_minmax():
    """The microwave case: a label slot at the batch max squeezes min-max codes, so rounding turns most bits off."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 12, generator=g)
    h = embed_label(x, torch.randint(0, 7, (256,), generator=g), 7)
    spec = SystemSpec(19 * 3, 1, levels=2)
    rounded = Encoder(spec, "minmax")(h)[:, 7:19]
    thermo = Encoder(spec, "thermometer", bits=3)(h)[:, 21:57]
    assert float(rounded.mean()) < 0.25 < 0.4 < float(thermo.mean()) < 0.6
    assert len(torch.unique(thermo, dim=0)) > len(torch.unique(rounded, dim=0))


def test_drive_width_and_encoder_bits_errors():
    assert drive_width("minmax", 7) == 7 and drive_width("thermometer", 7, bits=3) == 21
    with pytest.raises(ValueError, match="bits must be 1 for encoder 'minmax'"):
        Encoder(SystemSpec(4, 1), "minmax", bits=2)
    with pytest.raises(ValueError, match="bits must be an integer in 1..16, got 0"):
        Encoder(SystemSpec(4, 1), "thermometer", bits=0)
    with pytest.raises(ValueError, match=r"encoder must be one of .*, got 'gray'"):
        drive_width("gray", 3)
    with pytest.raises(
        ValueError, match=r"3 features \(2 channels per feature\) but system 'system' has only n_inputs=5"
    ):
        Encoder(SystemSpec(5, 1), "thermometer", bits=2)(torch.zeros(1, 3))


def test_prototype_cosine_by_hand():
    g = PrototypeCosine(2)
    g.prototype.copy_(torch.tensor([0.6, 0.8]))
    h = torch.tensor([[3.0, -4.0], [1.0, 0.0]])
    # |h| = (3,4): cos = (1.8+3.2)/5 = 1;  (1,0): cos = 0.6
    assert torch.allclose(g(h), torch.tensor([1.0, 0.6]))
    assert g.prototype.min() >= 0 and math.isclose(float(PrototypeCosine(7).prototype.norm()), 1.0, rel_tol=1e-6)


def test_mean_square_by_hand():
    assert torch.allclose(MeanSquare()(torch.tensor([[1.0, -3.0]])), torch.tensor([5.0]))


def test_ff_loss_by_hand():
    gp, gn = torch.tensor([0.9, 0.5]), torch.tensor([0.4, 0.5])
    expected = (math.log1p(math.exp(-10 * 0.5)) + math.log(2)) / 2
    assert math.isclose(float(ff_loss(gp, gn, 10.0)), expected, rel_tol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        ff_loss(gp, gn[:1], 1.0)
    with pytest.raises(ValueError, match="unknown goodness 'bad'"):
        make_goodness("bad", 3)


def test_pnn_default_hidden_width_fits_a_thermometer_encoded_next_block():
    from physnn.core.model import PNN
    from physnn.simulators.identity import IdentitySystem

    pnn = PNN(
        [IdentitySystem(2 * (3 + 4), levels=2), IdentitySystem(20, levels=2)],
        4,
        3,
        encoder="thermometer",
        encoder_bits=2,
    )
    assert [b.in_features for b in pnn.blocks] == [7, 10]  # 10 features x 2 bits = the 20 channels of block 1
    drive = pnn.blocks[1].encoder(torch.randn(5, 10))
    assert drive.shape == (5, 20) and set(drive.unique().tolist()) <= {0.0, 1.0}
