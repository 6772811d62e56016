"""From digital activations to a system's input domain, and label embedding.

Why encoders are explicit: a physical system accepts only drive values inside
its limits and, often, only a few levels (2 for a binary metasurface, 256 for
an 8-bit SLM). The system refuses anything else (see
:meth:`PhysicalSystem.validate_input`), so the model must map its activations
into that domain on purpose: normalise, map to ``[low, high]``, quantise, and
fit the width of the system.

Binary drives (a 1-bit metasurface) need more than rounding: a per-sample
min-max map followed by rounding at one half keeps only the features above
half the sample's range -- with the hot label slot at the batch maximum, about
3 of 19 vowel bits are on. The ``"thermometer"`` encoder keeps the information
by spending ``bits`` drive channels per feature (see :class:`Encoder`), so the
system must be ``bits`` times wider: :func:`drive_width` gives the width.
"""

from __future__ import annotations

import math

import torch

from physnn.core import checks
from physnn.core.system import SystemSpec

__all__ = ["embed_label", "Encoder", "ENCODERS", "drive_width", "label_width"]

ENCODERS = ("minmax", "l2", "abs-l2", "thermometer")


def label_width(n_classes: int, label_repeat: int = 1) -> int:
    """Input slots the label takes: ``n_classes * label_repeat``."""
    return checks.integer("n_classes", n_classes, low=1) * checks.integer("label_repeat", label_repeat, low=1)


def drive_width(encoder: str, n_features: int, *, bits: int = 1) -> int:
    """Drive channels an encoder needs for ``n_features`` activations (build the system this wide).

    ``"thermometer"`` spends ``bits`` channels per feature; every other
    encoder one. For block 0 of an MF-FF PNN, ``n_features`` is
    ``label_width(n_classes, label_repeat) + data features``.
    """
    checks.choice("encoder", encoder, ENCODERS)
    n = checks.integer("n_features", n_features, low=1)
    return n * checks.integer("bits", bits, low=1, high=16) if encoder == "thermometer" else n


def embed_label(
    x: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    scale: str | float = "batch_max",
    *,
    label_repeat: int = 1,
) -> torch.Tensor:
    """Write the one-hot label into ``n_classes * label_repeat`` reserved leading input slots.

    Returns ``[B, n_classes * label_repeat + F]``; class ``c`` owns slots
    ``c*label_repeat .. (c+1)*label_repeat - 1``. The "hot" slots are set to
    ``max|x|`` over the batch by default (as in PhyLL) so the label is as
    strong as the strongest feature; ``"sample_max"`` uses each sample's own
    max|x| (so a prediction does not depend on the batch it is in); a float
    sets it directly.

    Why ``label_repeat``: a physical system mixes all its inputs, so a label
    written into 10 of 794 SLM pixels moves the speckle by about 1 % of its
    power and the physics then sees nearly the same drive for every label;
    repeating each slot ``k`` times gives the label ``k`` times the drive
    channels (PhyLL wrote the label into 20 full SLM rows). Default 1: the
    original embedding.
    """
    label_repeat = checks.integer("label_repeat", label_repeat, low=1)
    if x.dim() != 2:
        raise ValueError(f"x must be [batch, features], got shape {tuple(x.shape)}")
    labels = torch.as_tensor(labels, device=x.device)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)][0].item()
        raise ValueError(f"label {bad} is outside 0..{n_classes - 1}")
    if scale == "batch_max":
        s = x.abs().max().clamp_min(1e-12).expand(x.shape[0], 1)
    elif scale == "sample_max":
        s = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        s = torch.full((x.shape[0], 1), float(scale), dtype=x.dtype, device=x.device)
    else:
        raise ValueError(f"label scale must be 'batch_max', 'sample_max' or a number, got {scale!r}")
    onehot = torch.nn.functional.one_hot(labels.long(), n_classes).to(x.dtype) * s
    if label_repeat > 1:
        onehot = onehot.repeat_interleave(label_repeat, dim=1)
    return torch.cat([onehot, x], dim=1)


class Encoder:
    """Maps ``[B, d]`` activations to valid drive values ``[B, n_inputs]``.

    Modes (per sample, so a sample's encoding never depends on its batch):

    * ``"minmax"`` — ``(h - min h) / (max h - min h)`` mapped linearly onto
      ``[low, high]``: uses the full drive range, keeps signs ordered.
    * ``"abs-l2"`` — ``|h| / ||h||_2`` (in [0, 1]) mapped onto ``[low, high]``:
      PhyLL's normalisation, insensitive to sign and overall scale.
    * ``"l2"`` — ``|h| / max|h|`` after L2 normalisation, i.e. abs + scale
      to the full range.
    * ``"thermometer"`` — for binary (or few-level) drives: each feature is
      standardised within its sample, ``z = (h - mean h) / std h``, and written
      as ``bits`` channels, channel ``i`` at ``high`` if ``z > t_i`` else at
      ``low``, with thresholds at the standard-normal quantiles
      ``t_i = Phi^-1(i / (bits + 1))``, i = 1..bits (bits = 2: z > -0.43,
      z > +0.43; bits = 1: z > 0). A feature's channels are adjacent (feature j owns channels
      ``j*bits .. j*bits + bits - 1``). For roughly normal activations about
      half the channels are on and every feature keeps ``bits + 1`` levels,
      where rounding a min-max map keeps one level and switches most features
      off. Needs ``d * bits`` drive channels (:func:`drive_width`).

    Then, if the spec has ``levels``, values are rounded to the nearest
    allowed level. If the encoded width is below ``n_inputs`` the extra drive
    channels are held at ``pad_value`` (default ``low``); above it is an error:
    the model must be given a width the system can take.

    Args:
        spec: the system's spec (limits, levels, width).
        mode: one of :data:`ENCODERS`.
        pad_value: drive of unused channels (default ``spec.low``).
        bits: channels per feature of ``"thermometer"`` (1..16; default 1: one
            bit per feature, on where the feature is above its sample's mean, so
            the system needs no extra width). The microwave PNN paper used 2 bits
            per feature (``bits=2``). Measured on vowels through the microwave
            cavity (``physnn characterize --system microwave --dataset vowels``,
            MF-FF 20 epochs, seeds 0-2): min-max + rounding keeps 2.8 of 19 bits
            on, 17 distinct drives in 64 samples, nonlinear fraction at its
            drives 0.15, accuracy 0.946 +- 0.077; ``bits=1``: 7.9 of 19 on, 34
            distinct, 0.26, 0.946 +- 0.031; ``bits=2`` (hidden 70 to fit the 140
            wall sites): 17.2 of 38 on, 48 distinct, 0.14, 0.925 +- 0.012.
            Must stay 1 for the other modes.
    """

    def __init__(
        self, spec: SystemSpec, mode: str = "minmax", pad_value: float | None = None, *, bits: int | None = None
    ):
        if mode not in ENCODERS:
            raise ValueError(f"unknown encoder {mode!r}; available encoders: {', '.join(ENCODERS)}")
        self.spec = spec
        self.mode = mode
        if bits is None:
            bits = 1
        self.bits = checks.integer("bits", bits, low=1, high=16)
        if mode != "thermometer" and self.bits != 1:
            raise checks.ParameterError(
                f"bits must be 1 for encoder {mode!r} (only 'thermometer' has bits), got {bits!r}"
            )
        self.pad_value = spec.low if pad_value is None else float(pad_value)
        if not spec.low <= self.pad_value <= spec.high:
            raise ValueError(f"pad_value {self.pad_value} is outside the drive limits [{spec.low}, {spec.high}]")
        # standard-normal quantiles i / (bits + 1): equal-probability bins for normal activations
        self._thresholds = torch.tensor(
            [
                math.sqrt(2.0) * torch.special.erfinv(torch.tensor(2.0 * i / (self.bits + 1) - 1.0)).item()
                for i in range(1, self.bits + 1)
            ]
        )

    def width(self, d: int) -> int:
        """Drive channels needed for ``d`` features."""
        return drive_width(self.mode, d, bits=self.bits)

    def unit(self, h: torch.Tensor) -> torch.Tensor:
        """Per-sample map to [0, 1] (``[B, d]``, or ``[B, d * bits]`` of 0/1 for ``"thermometer"``)."""
        if self.mode == "minmax":
            lo = h.amin(dim=1, keepdim=True)
            hi = h.amax(dim=1, keepdim=True)
            return (h - lo) / (hi - lo).clamp_min(1e-12)
        if self.mode == "thermometer":
            z = (h - h.mean(dim=1, keepdim=True)) / h.std(dim=1, unbiased=False, keepdim=True).clamp_min(1e-12)
            t = self._thresholds.to(device=h.device, dtype=h.dtype)
            return (z.unsqueeze(2) > t).to(h.dtype).flatten(1)
        a = h.abs()
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.mode == "l2":
            a = a / a.amax(dim=1, keepdim=True).clamp_min(1e-12)
        return a.clamp(0.0, 1.0)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if h.dim() != 2:
            raise ValueError(f"encoder input must be [batch, features], got shape {tuple(h.shape)}")
        d = h.shape[1]
        need = self.width(d)
        if need > spec.n_inputs:
            per = f" ({self.bits} channels per feature)" if self.mode == "thermometer" else ""
            raise ValueError(
                f"block input has {d} features{per} but system {spec.name!r} has only n_inputs={spec.n_inputs}; "
                f"build the system with n_inputs >= {need} or lower the previous block's hidden width"
            )
        drive = spec.low + self.unit(h.detach()) * (spec.high - spec.low)
        if spec.levels is not None:
            k = torch.round((drive - spec.low) / spec.step)
            drive = spec.low + k * spec.step
        drive = drive.clamp(spec.low, spec.high)  # float round-off only: values are already in range
        if need < spec.n_inputs:
            pad = torch.full((h.shape[0], spec.n_inputs - need), self.pad_value, dtype=drive.dtype, device=drive.device)
            drive = torch.cat([drive, pad], dim=1)
        return drive

    def describe(self) -> dict:
        d = {"mode": self.mode, "pad_value": self.pad_value}
        if self.mode == "thermometer":
            d["bits"] = self.bits
        return d
