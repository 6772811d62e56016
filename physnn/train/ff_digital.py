"""Hinton's forward-forward algorithm on a purely digital stack: the trainer (the model is
:class:`physnn.core.digital.DigitalFF`).

:class:`FFDigital` is :class:`~physnn.train.mfff.MFFF` with Hinton-style
defaults; it builds a :class:`~physnn.core.digital.DigitalFF` (no physical system).
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from physnn.core.digital import DigitalFF
from physnn.train.mfff import MFFF

__all__ = ["FFDigital", "DigitalFF"]


class FFDigital(MFFF):
    """:class:`MFFF` with defaults suited to Hinton's digital FF (same arguments as MFFF).

    ``theta`` defaults to 100: the mean-square goodness of a layer fed
    length-normalised inputs is O(1/width), so the local loss needs a sharper
    slope than for the bounded cosine goodness (theta = 100 on the mean over
    100 units is theta = 1 on Hinton's sum of squares). On digits (8 epochs,
    2 x 100 units) theta = 1, 20, 100 gave 0.50, 0.84, 0.93 test accuracy.
    """

    name = "ff_digital"
    uses_systems = False

    def __init__(
        self,
        epochs: int = 30,
        batch_size: int = 64,
        lr: float = 0.01,
        inner_steps: int = 1,
        theta: float = 100.0,
        weight_decay: float = 0.0,
        seed: int = 0,
        eval_every: int = 1,
        progress: bool = False,
        count_flops: bool = True,
    ):
        super().__init__(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            inner_steps=inner_steps,
            theta=theta,
            weight_decay=weight_decay,
            seed=seed,
            eval_every=eval_every,
            progress=progress,
            count_flops=count_flops,
        )

    def build_model(self, systems: Sequence[Any], n_features: int, n_classes: int, **options: Any) -> nn.Module:
        """A :class:`DigitalFF` as deep and wide as the PNN it is the control of (``hidden`` per layer)."""
        hidden = options.get("hidden", 100)
        layers = options.get("blocks", 2)
        return DigitalFF(
            n_features,
            n_classes,
            hidden=hidden,
            n_layers=layers,
            label_scale=options.get("label_scale", "batch_max"),
            seed=options.get("seed", 0),
        )
