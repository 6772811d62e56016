"""Hinton's forward-forward algorithm on a purely digital stack (no physical system).

The control that asks what the physics adds: the same MF-FF machinery
(:class:`physnn.train.mfff.MFFF`: label embedding, one positive and one
negative pass per batch, local softplus loss per layer, goodness-argmax
inference) trains a network whose layers are ordinary digital ones, as in
Hinton (2022, "The forward-forward algorithm")::

    h -> h / (||h|| + eps) -> ReLU(W h + b)        goodness: mean(z**2)

The length normalisation of each layer's input hides the previous layer's
goodness from the next one, so every layer must find new evidence. There is
no system, so no queries; the digital FLOPs are the only cost.

:class:`DigitalFF` duck-types :class:`physnn.model.PNN` (``blocks`` with
``measure``/``forward``/``goodness``/``linear``; ``embed``, ``scores``,
``score``), so :class:`MFFF` trains it unchanged; :class:`FFDigital` is
MFFF with Hinton-style defaults.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..goodness import make_goodness
from ..model import PNN, seeded_linear
from ..system import PhysicalSystem
from .mfff import MFFF

__all__ = ["DigitalFF", "DigitalFFBlock", "FFDigital"]


class DigitalFFBlock(nn.Module):
    """Length-normalise the input, then ReLU(Linear)."""

    def __init__(self, in_features: int, out_features: int, *, goodness: str = "mean_square",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.linear = seeded_linear(in_features, out_features, generator)
        self.goodness = make_goodness(goodness, out_features, generator=generator)

    def measure(self, h: torch.Tensor) -> torch.Tensor:
        """The block's input features (what a physical block would measure): the normalised input."""
        h = h.detach()
        return h / (h.norm(dim=1, keepdim=True) + 1e-4)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(feats))


class DigitalFF(PNN):
    """A forward-forward network of digital layers, trainable by :class:`MFFF`.

    Args:
        n_features, n_classes: as for :class:`PNN` (inputs get ``n_classes`` label slots).
        hidden: layer widths (an int per layer, or a list).
        n_layers: number of layers when ``hidden`` is an int.
        goodness: ``"mean_square"`` (Hinton) or ``"cosine"``.
        label_scale: as for :class:`PNN`.
        seed: seeds the weights (and prototypes).
    """

    def __init__(self, n_features: int, n_classes: int, *, hidden: int | Sequence[int] = 100, n_layers: int = 2,
                 goodness: str = "mean_square", label_scale: str | float = "batch_max", seed: int = 0):
        # PNN.__init__ builds physical blocks; a digital stack sets the same attributes itself.
        nn.Module.__init__(self)
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if not isinstance(n_features, int) or n_features < 1:
            raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
        widths = [int(hidden)] * int(n_layers) if isinstance(hidden, int) else [int(w) for w in hidden]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"need at least one layer of positive width, got hidden={hidden!r}, n_layers={n_layers!r}")
        self.n_features = n_features
        self.n_classes = n_classes
        self.label_scale = label_scale
        self.hparams = dict(hidden=widths, goodness=goodness, label_scale=label_scale, seed=seed, digital=True)
        gen = torch.Generator().manual_seed(seed)
        blocks, width = [], n_classes + n_features
        for w in widths:
            blocks.append(DigitalFFBlock(width, w, goodness=goodness, generator=gen))
            width = w
        self.blocks = nn.ModuleList(blocks)

    @property
    def systems(self) -> list[PhysicalSystem]:
        return []


class FFDigital(MFFF):
    """:class:`MFFF` with defaults suited to Hinton's digital FF (same arguments as MFFF).

    ``theta`` defaults to 100: the mean-square goodness of a layer fed
    length-normalised inputs is O(1/width), so the local loss needs a sharper
    slope than for the bounded cosine goodness (theta = 100 on the mean over
    100 units is theta = 1 on Hinton's sum of squares). On digits (8 epochs,
    2 x 100 units) theta = 1, 20, 100 gave 0.50, 0.84, 0.93 test accuracy.
    """

    def __init__(self, epochs: int = 30, batch_size: int = 64, lr: float = 0.01, inner_steps: int = 1,
                 theta: float = 100.0, weight_decay: float = 0.0, seed: int = 0, eval_every: int = 1,
                 progress: bool = False):
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, inner_steps=inner_steps, theta=theta,
                         weight_decay=weight_decay, seed=seed, eval_every=eval_every, progress=progress)
