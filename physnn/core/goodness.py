"""Goodness functions and the local forward-forward loss.

A block is trained to give positive data (correct label embedded) a higher
goodness than negative data (a wrong label). Two goodness functions:

* :class:`PrototypeCosine` (PhyLL, Momeni et al. 2023): cosine similarity of
  ``|h|`` with a fixed random unit prototype ``p`` drawn once per block. It is
  bounded in [0, 1] (``p`` and ``|h|`` are non-negative), so it does not
  reward blowing up the activations.
* :class:`MeanSquare` (Hinton 2022): ``mean(h**2)`` over features.

Local loss: ``softplus(-theta * (g_pos - g_neg))`` averaged over the batch,
i.e. the logistic loss of the goodness gap, with sharpness ``theta``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PrototypeCosine", "MeanSquare", "make_goodness", "ff_loss", "GOODNESS"]

GOODNESS = ("cosine", "mean_square")


class PrototypeCosine(nn.Module):
    """g(h) = cos(|h|, p) with a fixed random unit prototype p >= 0 (a buffer, not trained)."""

    def __init__(self, dim: int, *, generator: torch.Generator | None = None):
        super().__init__()
        p = torch.randn(dim, generator=generator).abs()
        self.register_buffer("prototype", p / p.norm())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = h.abs()
        return (a @ self.prototype) / a.norm(dim=1).clamp_min(1e-12)


class MeanSquare(nn.Module):
    """g(h) = mean over features of h**2 (Hinton's goodness)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.pow(2).mean(dim=1)


def make_goodness(name: str, dim: int, generator: torch.Generator | None = None) -> nn.Module:
    if name == "cosine":
        return PrototypeCosine(dim, generator=generator)
    if name == "mean_square":
        return MeanSquare()
    raise ValueError(f"unknown goodness {name!r}; available: {', '.join(GOODNESS)}")


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float) -> torch.Tensor:
    """softplus(-theta * (g_pos - g_neg)), averaged over the batch."""
    if g_pos.shape != g_neg.shape:
        raise ValueError(f"g_pos {tuple(g_pos.shape)} and g_neg {tuple(g_neg.shape)} must have the same shape")
    return torch.nn.functional.softplus(-theta * (g_pos - g_neg)).mean()
