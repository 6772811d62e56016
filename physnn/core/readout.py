"""One-pass readout for a forward-forward network: L queries per sample instead of C * L.

Goodness-argmax inference (:meth:`physnn.core.model.PNN.scores`) runs the network
once per candidate label, so classifying one sample costs ``C * L`` physical
queries. The readout runs it once, with a **neutral label** -- every label
slot set to ``1/C`` of the label scale, so no class is favoured and the slots
carry the same total as a one-hot label -- and classifies the *normalised
block activities* with a linear layer:

    z_l = activity of block l (its linear layer's output) for the neutral input
    f   = [z_1/||z_1||, ..., z_L/||z_L||]         (Hinton's length normalisation)
    logits = W standardise(f) + b                  (standardisation fitted on the training features)

The readout is trained locally, on detached features, with cross-entropy
(Adam, full-feature minibatches): the network itself is not changed. The
features of the training set are measured once (``N * L`` queries, charged to
the readout fit) and reused for every epoch of the readout's training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from physnn.core.model import PNN, check_labels

__all__ = ["Readout", "fit_readout", "neutral_embedding"]


def neutral_embedding(pnn: PNN, x: torch.Tensor) -> torch.Tensor:
    """``x`` with every label slot at 1/C of the label scale (the scale a one-hot label would get)."""
    C = pnn.n_classes
    e = pnn.embed(x, torch.zeros(x.shape[0], dtype=torch.int64))
    scale = e[:, :C].sum(dim=1, keepdim=True)  # the hot slot's value, whatever the label-scale mode
    e[:, :C] = scale / C
    return e


class Readout(nn.Module):
    """A linear classifier on the normalised block activities of a neutral-label input.

    Holds the network as a plain attribute (not a sub-module): its
    ``state_dict`` is the readout's own weights and feature normalisation.
    """

    def __init__(self, pnn: PNN, *, generator: torch.Generator | None = None):
        super().__init__()
        n_feat = sum(b.linear.out_features for b in pnn.blocks)
        self.__dict__["pnn"] = pnn
        self.linear = nn.Linear(n_feat, pnn.n_classes)
        bound = 1.0 / math.sqrt(n_feat)
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound, generator=generator)
            self.linear.bias.uniform_(-bound, bound, generator=generator)
        self.register_buffer("mean", torch.zeros(n_feat))
        self.register_buffer("std", torch.ones(n_feat))

    @torch.no_grad()
    def features(self, x, batch_size: int = 256) -> torch.Tensor:
        """Normalised block activities ``[N, sum of block widths]``: one query per block per sample."""
        pnn = self.pnn
        x = pnn.check_features(x)
        parts = []
        for s in range(0, x.shape[0], batch_size):
            h = neutral_embedding(pnn, x[s : s + batch_size])
            acts = []
            for block in pnn.blocks:
                z = block(block.measure(h))
                acts.append(z / z.norm(dim=1, keepdim=True).clamp_min(1e-12))
                h = z
            parts.append(torch.cat(acts, dim=1))
        return torch.cat(parts)

    def logits_from_features(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear((f - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, x, batch_size: int = 256) -> torch.Tensor:
        return self.logits_from_features(self.features(x, batch_size)).argmax(dim=1)

    def score(self, x, y, batch_size: int = 256) -> float:
        return float((self.predict(x, batch_size) == torch.as_tensor(y)).float().mean())


def fit_readout(
    pnn: PNN,
    x,
    y,
    *,
    epochs: int = 100,
    lr: float = 0.01,
    batch_size: int = 256,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> Readout:
    """Train a :class:`Readout` on ``(x, y)`` for a trained ``pnn`` (see the module docstring)."""
    for key, v, lo in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{key} must be an integer >= {lo}, got {v!r}")
    if not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    x = pnn.check_features(x)
    y = check_labels(y, x.shape[0], pnn.n_classes)
    gen = torch.Generator().manual_seed(seed)
    readout = Readout(pnn, generator=gen)
    was_training = pnn.training
    pnn.eval()
    try:
        f = readout.features(x)
    finally:
        pnn.train(was_training)
    with torch.no_grad():
        readout.mean.copy_(f.mean(0))
        readout.std.copy_(f.std(0, unbiased=False).clamp_min(1e-6))
    opt = torch.optim.Adam(readout.linear.parameters(), lr=lr, weight_decay=weight_decay)
    n = f.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            loss = F.cross_entropy(readout.logits_from_features(f[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    readout.eval()
    return readout
