"""From digital activations to a system's input domain, and label embedding.

Why encoders are explicit: a physical system accepts only drive values inside
its limits and, often, only a few levels (2 for a binary metasurface, 256 for
an 8-bit SLM). The system refuses anything else (see
:meth:`PhysicalSystem.validate_input`), so the model must map its activations
into that domain on purpose: normalise, map to ``[low, high]``, quantise, and
fit the width of the system.
"""

from __future__ import annotations

import torch

from .system import SystemSpec

__all__ = ["embed_label", "Encoder", "ENCODERS"]

ENCODERS = ("minmax", "l2", "abs-l2")


def embed_label(
    x: torch.Tensor, labels: torch.Tensor, n_classes: int, scale: str | float = "batch_max"
) -> torch.Tensor:
    """Write the one-hot label into ``n_classes`` reserved leading input slots.

    Returns ``[B, n_classes + F]``. The "hot" slot is set to ``max|x|`` over
    the batch by default (as in PhyLL) so the label is as strong as the
    strongest feature; ``"sample_max"`` uses each sample's own max|x| (so a
    prediction does not depend on the batch it is in); a float sets it directly.
    """
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

    Then, if the spec has ``levels``, values are rounded to the nearest
    allowed level. If ``d < n_inputs`` the extra drive channels are held at
    ``pad_value`` (default ``low``); ``d > n_inputs`` is an error: the model
    must be given a width the system can take.
    """

    def __init__(self, spec: SystemSpec, mode: str = "minmax", pad_value: float | None = None):
        if mode not in ENCODERS:
            raise ValueError(f"unknown encoder {mode!r}; available encoders: {', '.join(ENCODERS)}")
        self.spec = spec
        self.mode = mode
        self.pad_value = spec.low if pad_value is None else float(pad_value)
        if not spec.low <= self.pad_value <= spec.high:
            raise ValueError(f"pad_value {self.pad_value} is outside the drive limits [{spec.low}, {spec.high}]")

    def unit(self, h: torch.Tensor) -> torch.Tensor:
        """Per-sample normalisation to [0, 1]."""
        if self.mode == "minmax":
            lo = h.amin(dim=1, keepdim=True)
            hi = h.amax(dim=1, keepdim=True)
            return (h - lo) / (hi - lo).clamp_min(1e-12)
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
        if d > spec.n_inputs:
            raise ValueError(
                f"block input has {d} features but system {spec.name!r} has only n_inputs={spec.n_inputs}; "
                f"build the system with n_inputs >= {d} or lower the previous block's hidden width"
            )
        drive = spec.low + self.unit(h.detach()) * (spec.high - spec.low)
        if spec.levels is not None:
            k = torch.round((drive - spec.low) / spec.step)
            drive = spec.low + k * spec.step
        drive = drive.clamp(spec.low, spec.high)  # float round-off only: values are already in range
        if d < spec.n_inputs:
            pad = torch.full((h.shape[0], spec.n_inputs - d), self.pad_value, dtype=drive.dtype, device=drive.device)
            drive = torch.cat([drive, pad], dim=1)
        return drive

    def describe(self) -> dict:
        return {"mode": self.mode, "pad_value": self.pad_value}
