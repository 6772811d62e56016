"""The physical neural network: a stack of blocks, each physics -> digital.

One block::

    h_in --encoder--> drive --system(.)--> y --normalise--> [y, h_in (skip)] --nn.Linear--> h_out

Only the ``nn.Linear`` is trainable. The system is held as a plain attribute,
not a sub-module: it has no parameters the optimiser could see and autograd
never enters it (``PhysicalSystem.__call__`` returns detached tensors).

Inference (:meth:`PNN.scores`): for each candidate label, embed it, run all
blocks and sum the goodness; the predicted class is the argmax. That costs
``C * L`` queries per sample; all candidates go to each system in one call.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from physnn.core.encoding import Encoder, embed_label, label_width
from physnn.core.goodness import make_goodness
from physnn.core.system import PhysicalSystem, as_batch

__all__ = ["Block", "PNN", "seeded_linear", "check_features", "check_labels", "check_stack", "hidden_widths"]


def check_labels(y, n: int, n_classes: int, name: str = "y") -> torch.Tensor:
    """Labels as int64 ``[n]`` in ``0..n_classes-1``, or a ValueError naming what is wrong.

    Names (strings) and fractional numbers are refused with what to do, never passed to torch (whose
    error says nothing of labels) or truncated; a pandas Series or a read-only array is copied, not viewed.
    """
    if isinstance(y, torch.Tensor):
        if y.is_floating_point() and y.numel() and not bool((y == y.round()).all()):
            raise ValueError(f"{name} holds fractional values; labels are class indices 0..{n_classes - 1}")
    else:
        a = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
        if a.dtype.kind not in "biuf":
            what = "names (strings)" if a.dtype.kind in "USO" else f"values of type {a.dtype}"
            raise ValueError(
                f"{name} holds {what}; labels here are class indices 0..{n_classes - 1}: map them first, e.g. "
                "physnn.data.from_arrays(x, y) (its class_names say which index is which label), or train through "
                "run_experiment(config, data=(x, y)), which maps them for you"
            )
        if a.dtype.kind == "f" and a.size and not np.all(a == np.round(a)):
            raise ValueError(f"{name} holds fractional values; labels are class indices 0..{n_classes - 1}")
        y = np.array(a, dtype=np.int64)  # a writable copy: torch warns on a read-only view (pandas)
    y = torch.as_tensor(y, dtype=torch.int64)
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}, got min {int(y.min())}, max {int(y.max())}")
    return y


def seeded_linear(in_features: int, out_features: int, generator: torch.Generator | None) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) init drawn from ``generator``,
    so the weights depend on the model's seed, not on the global RNG."""
    linear = nn.Linear(in_features, out_features)
    bound = 1.0 / math.sqrt(in_features)
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound, generator=generator)
        linear.bias.uniform_(-bound, bound, generator=generator)
    return linear


def check_features(x, n_features: int) -> torch.Tensor:
    """Data as float32 ``[batch, n_features]``, finite, or a ValueError naming the first bad entry."""
    x = as_batch(x, "x")
    if x.dim() != 2 or x.shape[1] != n_features:
        raise ValueError(f"x must be [batch, {n_features}], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        r, c = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(f"x[{r}, {c}] = {x[r, c].item()} is not finite")
    return x


def check_stack(systems: Sequence[PhysicalSystem], n_features: int, n_classes: int, what: str) -> list[PhysicalSystem]:
    """Common argument checks of a stack of physical blocks (PNN and the end-to-end baselines)."""
    systems = list(systems)
    if not systems:
        raise ValueError(f"{what} needs at least one system (one per block)")
    if not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    if not isinstance(n_features, int) or n_features < 1:
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
    return systems


def hidden_widths(systems: Sequence[PhysicalSystem], hidden: int | Sequence[int] | None, count: int) -> list[int]:
    """``count`` block output widths: as given, or by default the next block's system width."""
    if hidden is None:
        return [systems[i + 1].spec.n_inputs for i in range(count)]
    if isinstance(hidden, int):
        return [hidden] * count
    widths = [int(w) for w in hidden]
    if len(widths) != count:
        raise ValueError(f"hidden has {len(widths)} widths; {len(systems)} blocks need {count}")
    return widths


def _standardise(t: torch.Tensor) -> torch.Tensor:
    """Per-sample zero mean, unit variance (a parameter-free layer norm).

    Why: measured outputs come in arbitrary units (ADC fractions, volts,
    spike counts) and drift in gain; the digital layer should see the shape
    of the response, not its scale.
    """
    mu = t.mean(dim=1, keepdim=True)
    sd = t.std(dim=1, keepdim=True, unbiased=False).clamp_min(1e-6)
    return (t - mu) / sd


class Block(nn.Module):
    """Encoder -> physical system -> optional skip -> ``nn.Linear`` -> goodness."""

    def __init__(
        self,
        system: PhysicalSystem,
        in_features: int,
        out_features: int,
        *,
        skip: bool = True,
        encoder: str = "minmax",
        goodness: str = "cosine",
        generator: torch.Generator | None = None,
        encoder_bits: int | None = None,
    ):
        super().__init__()
        if not isinstance(system, PhysicalSystem):
            raise TypeError(f"system must be a PhysicalSystem, got {type(system).__name__}")
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.system = system
        self.in_features = in_features
        self.out_features = out_features
        self.skip = bool(skip)
        self.encoder = Encoder(system.spec, encoder, bits=encoder_bits)
        if self.encoder.width(in_features) > system.spec.n_inputs:
            raise ValueError(
                f"block input has {in_features} features ({self.encoder.width(in_features)} drive channels) but "
                f"system {system.spec.name!r} takes n_inputs={system.spec.n_inputs}; build the system wider or "
                f"lower the hidden width"
            )
        n_feat = system.spec.n_outputs + (in_features if skip else 0)
        self.linear = seeded_linear(n_feat, out_features, generator)
        self.goodness = make_goodness(goodness, out_features, generator=generator)

    def measure(self, h: torch.Tensor) -> torch.Tensor:
        """Query the system once for the whole batch; return the digital layer's input."""
        y = self.system(self.encoder(h))
        feats = _standardise(y.to(h.device))
        if self.skip:
            feats = torch.cat([feats, _standardise(h.detach())], dim=1)
        return feats

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.linear(feats)


class PNN(nn.Module):
    """A deep physical neural network trained with forward-forward goodness.

    Args:
        systems: one :class:`PhysicalSystem` per block (the same object may
            be reused for several blocks, as with one physical device
            time-multiplexed).
        n_features: data features (before label embedding).
        n_classes: number of labels; block 0 gets ``n_classes * label_repeat + n_features`` inputs.
        hidden: output width of each block's linear layer (an int for all or a
            list). Default: the next block's system width, 100 for the last.
        skip: concatenate the block input to the measurements.
        encoder: how activations become drive values (see :class:`Encoder`).
        goodness: ``"cosine"`` (PhyLL) or ``"mean_square"`` (Hinton).
        label_scale: value of the hot label slot (see :func:`embed_label`).
        label_repeat: input slots per class label (see :func:`embed_label`; default 1).
        encoder_bits: channels per feature of the ``"thermometer"`` encoder (default 1; see :class:`Encoder`).
        seed: seeds the digital weights and goodness prototypes.
    """

    def __init__(
        self,
        systems: Sequence[PhysicalSystem],
        n_features: int,
        n_classes: int,
        *,
        hidden: int | Sequence[int] | None = None,
        skip: bool = True,
        encoder: str = "minmax",
        goodness: str = "cosine",
        label_scale: str | float = "batch_max",
        seed: int = 0,
        label_repeat: int = 1,
        encoder_bits: int | None = None,
    ):
        super().__init__()
        systems = check_stack(systems, n_features, n_classes, "a PNN")
        n_blocks = len(systems)
        if hidden is None:
            # the next system takes drive_width(hidden) channels: 'thermometer' spends encoder_bits per feature
            per = encoder_bits if encoder == "thermometer" and encoder_bits else 1
            widths = [max(1, w // per) for w in hidden_widths(systems, None, n_blocks - 1)] + [100]
        else:
            widths = hidden_widths(systems, hidden, n_blocks)
        self.n_features = n_features
        self.n_classes = n_classes
        self.label_scale = label_scale
        self.label_repeat = label_width(1, label_repeat)
        self.hparams = dict(
            hidden=widths,
            skip=skip,
            encoder=encoder,
            goodness=goodness,
            label_scale=label_scale,
            seed=seed,
            label_repeat=self.label_repeat,
            encoder_bits=encoder_bits,
        )
        gen = torch.Generator().manual_seed(seed)
        blocks = []
        width = label_width(n_classes, self.label_repeat) + n_features
        for system, out in zip(systems, widths):
            blocks.append(
                Block(
                    system,
                    width,
                    out,
                    skip=skip,
                    encoder=encoder,
                    goodness=goodness,
                    generator=gen,
                    encoder_bits=encoder_bits,
                )
            )
            width = out
        self.blocks = nn.ModuleList(blocks)

    @property
    def systems(self) -> list[PhysicalSystem]:
        return [b.system for b in self.blocks]

    def embed(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return embed_label(x, labels, self.n_classes, self.label_scale, label_repeat=self.label_repeat)

    def check_features(self, x) -> torch.Tensor:
        return check_features(x, self.n_features)

    @torch.no_grad()
    def goodness_per_block(self, h: torch.Tensor) -> torch.Tensor:
        """Goodness of each block for already-embedded inputs: ``[B, L]`` (one query per block)."""
        out = []
        for block in self.blocks:
            z = block(block.measure(h))
            out.append(block.goodness(z))
            h = z
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def scores(self, x, batch_size: int = 256) -> torch.Tensor:
        """Summed goodness ``[B, C]`` for every candidate label (C * L queries per sample)."""
        x = self.check_features(x)
        C = self.n_classes
        parts = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            rep = xb.repeat_interleave(C, dim=0)
            cand = torch.arange(C).repeat(xb.shape[0])
            g = self.goodness_per_block(self.embed(rep, cand)).sum(dim=1)
            parts.append(g.view(xb.shape[0], C))
        return torch.cat(parts)

    def predict(self, x, batch_size: int = 256) -> torch.Tensor:
        return self.scores(x, batch_size).argmax(dim=1)

    def score(self, x, y, batch_size: int = 256) -> float:
        """Accuracy on ``(x, y)`` (labels checked as in training: names are an error, not a torch one)."""
        x = self.check_features(x)
        y = check_labels(y, x.shape[0], self.n_classes)
        return float((self.predict(x, batch_size) == y).float().mean())
