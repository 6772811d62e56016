"""Digital-only models: the controls that tell whether the physics adds anything.

* :class:`DigitalFF` -- Hinton's forward-forward on a purely digital stack
  (2022, "The forward-forward algorithm")::

      h -> h / (||h|| + eps) -> ReLU(W h + b)        goodness: mean(z**2)

  The length normalisation of each layer's input hides the previous layer's
  goodness from the next one, so every layer must find new evidence. It
  duck-types :class:`physnn.core.model.PNN` (``blocks`` with
  ``measure``/``forward``/``goodness``/``linear``; ``embed``, ``scores``,
  ``score``), so :class:`physnn.train.mfff.MFFF` trains it unchanged
  (:class:`physnn.train.ff_digital.FFDigital` is MF-FF with Hinton's defaults).
* :class:`DigitalNet` -- a multilayer perceptron on the raw features (no hidden
  layer: logistic regression), trained end to end by backprop
  (:class:`physnn.train.digital.DigitalBackprop`): the tuned digital control
  every accuracy is reported beside.

Neither has a physical system, so neither costs queries; the digital FLOPs
are the only cost.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from physnn.core import checks
from physnn.core.goodness import make_goodness
from physnn.core.model import PNN, check_features, seeded_linear
from physnn.core.system import PhysicalSystem

__all__ = ["DigitalFF", "DigitalFFBlock", "DigitalNet"]


class DigitalFFBlock(nn.Module):
    """Length-normalise the input, then ReLU(Linear)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        goodness: str = "mean_square",
        generator: torch.Generator | None = None,
    ):
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
        n_features: as for :class:`PNN`.
        n_classes: as for :class:`PNN` (inputs get ``n_classes`` label slots).
        hidden: layer widths (an int per layer, or a list).
        n_layers: number of layers when ``hidden`` is an int.
        goodness: ``"mean_square"`` (Hinton) or ``"cosine"``.
        label_scale: as for :class:`PNN`.
        seed: seeds the weights (and prototypes).
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        *,
        hidden: int | Sequence[int] = 100,
        n_layers: int = 2,
        goodness: str = "mean_square",
        label_scale: str | float = "batch_max",
        seed: int = 0,
    ):
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
        self.label_repeat = 1  # one input slot per label, as Hinton's FF
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


class DigitalNet(nn.Module):
    """``Linear -> ReLU -> ... -> Linear`` on the raw features; ``hidden=()`` is logistic regression.

    Args:
        n_features: data features.
        n_classes: data classes.
        hidden: widths of the hidden layers (empty: a linear softmax classifier).
        seed: seeds the weights (PyTorch's default uniform init, from this seed).
    """

    def __init__(self, n_features: int, n_classes: int, *, hidden: Sequence[int] = (256,), seed: int = 0):
        super().__init__()
        self.n_features = checks.integer("n_features", n_features, low=1)
        self.n_classes = checks.integer("n_classes", n_classes, low=2)
        widths = checks.int_sequence("hidden", list(hidden), low=1)
        self.hparams = dict(hidden=widths, seed=seed, digital=True)
        gen = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        width = n_features
        for w in widths:
            layers += [seeded_linear(width, w, gen), nn.ReLU()]
            width = w
        layers.append(seeded_linear(width, n_classes, gen))
        self.net = nn.Sequential(*layers)
        self.blocks = nn.ModuleList()  # no physical blocks: nothing to probe, nothing to query

    @property
    def systems(self) -> list[PhysicalSystem]:
        return []

    def check_features(self, x) -> torch.Tensor:
        return check_features(x, self.n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict(self, x, batch_size: int = 4096) -> torch.Tensor:
        x = self.check_features(x)
        return torch.cat([self(x[s : s + batch_size]).argmax(1) for s in range(0, x.shape[0], batch_size)])

    def score(self, x, y, batch_size: int = 4096) -> float:
        """Accuracy on ``(x, y)``."""
        return float((self.predict(x, batch_size) == torch.as_tensor(y)).float().mean())
