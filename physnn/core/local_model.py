"""A stack of physical blocks, each with its own class head: the model of local cross-entropy training.

One block::

    h_in --encoder--> drive --system(.)--> y --standardise--> [y, skip(h_in)] --nn.Linear--> z --head--> logits_i

The linear layer and the head are the only trainable parts; ``z`` (detached)
is the next block's input. Unlike :class:`physnn.core.model.PNN` there is no label
embedding: the label never goes through the physics, so every drive channel
carries data, one pass per sample answers for every class (L queries per
sample at inference, not C*L), and training needs no negative data (L queries
per sample per epoch, half of MF-FF's 2L). The prediction sums the blocks'
log-probabilities: each block is a classifier on its own, and deeper blocks
refine the shallower ones' evidence.

The skip path and why it is not standardised per sample
-------------------------------------------------------
The measurements ``y`` are standardised per sample (zero mean, unit variance
across the camera pixels, microphones ...): they come in arbitrary units and
drift in gain. The skip path carries *digital* values, which neither drift
nor have arbitrary units, so it is kept whole (``skip_scaling="data"``, the
default): block 0's data features are centred on the mean of the *training*
split and divided by one common scale (fitted once, before the first epoch, by
:meth:`LocalNet.fit_scaling`) -- an affine map of the very features a logistic
regression control sees -- and a deeper block's skip is the previous block's
``z`` unchanged. Then block 0
contains a linear classifier on the data (``head_0(linear_0([y, x]))`` can
ignore ``y``), and block ``i`` can reproduce block ``i-1``'s logits, so with
identity systems the stack can do what a logistic regression does.

Round 2 standardised the skip per sample (``skip_scaling="sample"``, kept to
reproduce those runs). That throws away each sample's mean and spread across
its features -- the overall brightness of an image, a shift common to all
formants -- and with identity systems (where ``y`` is the same per-sample
standardised data) local_ce lost to logistic regression wherever the class
lives partly there: on a synthetic 10-class set whose class shifts every
feature (tests/test_local_ce_linear.py) 0.48 against 0.77, on MNIST-5k 0.881
against 0.907 (benchmarks/results/compare.md).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from physnn.core import checks
from physnn.core.e2e_model import E2EBlock, Physics, black_box, ste_drive
from physnn.core.model import _standardise, check_features, check_stack, hidden_widths, seeded_linear
from physnn.core.system import PhysicalSystem

__all__ = ["LocalNet", "LocalBlock", "SKIP_SCALINGS"]

#: How a block's skip path is scaled (see the module docstring).
SKIP_SCALINGS = ("data", "sample")


class LocalBlock(E2EBlock):
    """Encoder -> physics -> standardise -> skip -> ``nn.Linear``, with the skip kept whole (module docstring).

    ``scale_input``: True for block 0 (its skip is the data, centred and scaled with the buffers
    ``skip_mean`` / ``skip_std`` fitted on the training split); deeper blocks pass the previous ``z`` as is.
    """

    def __init__(
        self,
        system: PhysicalSystem,
        in_features: int,
        out_features: int,
        *,
        skip: bool = True,
        encoder: str = "minmax",
        generator: torch.Generator | None = None,
        skip_scaling: str = "data",
        scale_input: bool = False,
    ):
        super().__init__(system, in_features, out_features, skip=skip, encoder=encoder, generator=generator)
        self.skip_scaling = checks.choice("skip_scaling", skip_scaling, SKIP_SCALINGS)
        self.scale_input = bool(scale_input)
        # identity until fit_scaling: a LocalNet used untrained still answers; part of the state dict (resume)
        self.register_buffer("skip_mean", torch.zeros(in_features))
        self.register_buffer("skip_std", torch.ones(in_features))

    def skip_features(self, h: torch.Tensor) -> torch.Tensor:
        """What the skip path hands the linear layer for the block input ``h``."""
        if self.skip_scaling == "sample":
            return _standardise(h)
        if self.scale_input:
            return (h - self.skip_mean) / self.skip_std
        return h

    def measure(self, h: torch.Tensor, physics: Physics, i: int) -> torch.Tensor:
        """The digital layer's input: the standardised response to ``h`` and, with ``skip``, ``h`` itself."""
        y = physics(i, self, ste_drive(self.encoder, h)).to(h.device)
        feats = _standardise(y)
        if self.skip:
            feats = torch.cat([feats, self.skip_features(h.detach())], dim=1)
        return feats


class LocalNet(nn.Module):
    """Physical blocks with per-block class heads (see the module docstring).

    Args:
        systems: one system per block (the same object may serve several blocks).
        n_features: data features (block 0's drive width; wider systems are padded).
        n_classes: classes.
        hidden: output width of each block's linear layer (an int or one per block).
        skip: as in :class:`physnn.core.model.PNN`.
        encoder: as in :class:`physnn.core.model.PNN`.
        skip_scaling: ``"data"`` (default: block 0's skip centred and scaled on the training split,
            deeper skips unscaled) or ``"sample"`` (round 2: every skip standardised per sample).
        seed: seeds the digital weights.
    """

    def __init__(
        self,
        systems: Sequence[PhysicalSystem],
        n_features: int,
        n_classes: int,
        *,
        hidden: int | Sequence[int] | None = 100,
        skip: bool = True,
        encoder: str = "minmax",
        skip_scaling: str = "data",
        seed: int = 0,
    ):
        super().__init__()
        systems = check_stack(systems, n_features, n_classes, "a LocalNet")
        widths = hidden_widths(systems, hidden if hidden is not None else 100, len(systems))
        skip_scaling = checks.choice("skip_scaling", skip_scaling, SKIP_SCALINGS)
        self.n_features = n_features
        self.n_classes = n_classes
        self.hparams = dict(hidden=widths, skip=skip, encoder=encoder, skip_scaling=skip_scaling, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        blocks, heads, width = [], [], n_features
        for i, (system, out) in enumerate(zip(systems, widths)):
            blocks.append(
                LocalBlock(
                    system,
                    width,
                    out,
                    skip=skip,
                    encoder=encoder,
                    generator=gen,
                    skip_scaling=skip_scaling,
                    scale_input=i == 0,
                )
            )
            heads.append(seeded_linear(out, n_classes, gen))
            width = out
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)

    @property
    def systems(self) -> list[PhysicalSystem]:
        return [b.system for b in self.blocks]

    def check_features(self, x) -> torch.Tensor:
        return check_features(x, self.n_features)

    @torch.no_grad()
    def fit_scaling(self, x: torch.Tensor) -> None:
        """Fit block 0's skip scaling on the training features ``x`` (no query; once, before training).

        Each feature is centred on its training mean; all share one scale, the rms of the centred training
        data (so the skip has unit rms). One scale, not one per feature: a pixel that is lit in a handful of
        training images would otherwise be multiplied by a hundred, and the linear layer would overfit it.
        """
        x = self.check_features(x)
        block = self.blocks[0]
        mean = x.mean(dim=0)
        rms = (x - mean).pow(2).mean().sqrt()
        block.skip_mean.copy_(mean)
        block.skip_std.fill_(float(rms) if float(rms) > 1e-12 else 1.0)

    @torch.no_grad()
    def block_log_probs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's log-probabilities ``[B, C]`` (one query per block per sample)."""
        h, out = x, []
        for i, (block, head) in enumerate(zip(self.blocks, self.heads)):
            z = block(block.measure(h, black_box, i))
            out.append(torch.log_softmax(head(z), dim=1))
            h = z
        return out

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Summed per-block log-probabilities ``[B, C]`` (one query per block per sample)."""
        return torch.stack(self.block_log_probs(x)).sum(dim=0)

    @torch.no_grad()
    def predict(self, x, batch_size: int = 512) -> torch.Tensor:
        x = self.check_features(x)
        return torch.cat([self.log_probs(x[s : s + batch_size]).argmax(1) for s in range(0, x.shape[0], batch_size)])

    def score(self, x, y, batch_size: int = 512) -> float:
        """Accuracy on ``(x, y)``."""
        return float((self.predict(x, batch_size) == torch.as_tensor(y)).float().mean())
