"""What a physical system computes, measured through ``system(x)`` alone: the figures of ``physnn characterize``.

Why: a PNN gains over a linear classifier only where its physics is nonlinear
*at the drives the encoder actually sends*, sees the inputs in more than a few
directions, and rises above its own noise. A user runs this on a new bench (or
a simulator) before training; it asks the system only through its public call
and ``system.spec``, so it works for simulators, twins and real instruments.

Figures (each from noise-averaged pairs: every drive is queried twice, the two
copies next to each other in one batch so that drift between them is minimal):

``nonlinear_fraction``
    1 - R^2 of the best affine map drive -> output, fitted (least squares with
    a tiny ridge) on ``n_fit`` drives and evaluated on ``n_test`` held-out
    drives, with the noise removed: the target is the mean of the two copies
    (noise variance sigma^2 / 2 per output, sigma^2 estimated from the copies'
    difference, var(y1 - y2) / 2), and

    .. math:: f_{NL} = \\frac{\\sum_k (\\mathrm{MSE}_k - \\sigma_k^2/2)}{\\sum_k (\\mathrm{Var}_k - \\sigma_k^2/2)}

    clipped to [0, 1] (outputs pooled, weighted by their signal variance, so a
    dead output counts for nothing). Measured at uniformly random valid drives
    and, if given, at the drives an encoder sends for a data set.
``effective_rank``
    participation ratio :math:`(\\sum\\lambda)^2/\\sum\\lambda^2` of the
    eigenvalues of the output covariance (noise-averaged outputs at random
    drives, noise variance subtracted from the diagonal first): the number of
    output directions that carry comparable signal. ``rank99`` is the number of
    eigenvalues holding 99 % of the signal variance (an upper view; it counts
    weak directions the participation ratio discounts).
``noise_rel``
    relative rms noise floor: sqrt(mean_k sigma_k^2) / sqrt(mean_k Var_k) at
    random drives (0 for a noiseless system).
``single_input_share``
    per output, the largest R^2 of a straight line from any one input to that
    output (squared correlation, at random drives): near 1 means an output is a
    gain on one input (no mixing), near 1/n_inputs means full mixing.
    Reported as its median and maximum over outputs.

The bench-side checks of ``lab_scripts/characterize.py`` (one-input sweeps, noise per
drive, repeatability, drift over time) are in :mod:`physnn.analysis.bench_checks`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec

__all__ = [
    "Characterization",
    "characterize",
    "nonlinear_fraction",
    "effective_rank",
    "single_input_share",
    "random_drives",
    "snap",
    "encoder_drives",
]

log = logging.getLogger(__name__)

_RIDGE = 1e-6  # relative ridge of the affine fits: keeps the solve well posed when inputs are collinear


# ------------------------------------------------------------------ drives
def snap(values: torch.Tensor, spec: SystemSpec) -> torch.Tensor:
    """Values clamped to [low, high] and rounded to the allowed levels, if any."""
    v = values.clamp(spec.low, spec.high)
    if spec.levels is not None:
        v = spec.low + torch.round((v - spec.low) / spec.step) * spec.step
        v = v.clamp(spec.low, spec.high)
    return v


def random_drives(spec: SystemSpec, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` uniformly random valid drives ``[n, n_inputs]`` (uniform over the levels when there are levels)."""
    if spec.levels is not None:
        k = torch.randint(0, spec.levels, (n, spec.n_inputs), generator=generator).float()
        return snap(spec.low + k * spec.step, spec)
    return snap(spec.low + torch.rand(n, spec.n_inputs, generator=generator) * (spec.high - spec.low), spec)


def encoder_drives(
    spec: SystemSpec,
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    n: int,
    generator: torch.Generator,
    *,
    encoder: str = "minmax",
    encoder_options: dict[str, Any] | None = None,
    label_repeat: int = 1,
) -> torch.Tensor:
    """The drives block 0 of an MF-FF PNN sends: ``n`` distinct (sample, label) pairs, label embedded, encoded.

    Labels are drawn uniformly (MF-FF sends the true label and wrong ones
    alike); the pairs are distinct so that fit and held-out sets never share a
    drive. The label is scaled to the batch maximum, as in training.
    """
    from physnn.core.encoding import Encoder, embed_label

    del y  # the label sent is any label: positives and negatives both reach the system
    pairs = x.shape[0] * n_classes
    if n > pairs:
        raise ValueError(f"n={n} drives asked but the data set has only {pairs} (sample, label) pairs")
    pick = torch.randperm(pairs, generator=generator)[:n]
    xs, labels = x[pick // n_classes], pick % n_classes
    h = embed_label(xs.float(), labels, n_classes, label_repeat=label_repeat)
    return Encoder(spec, encoder, **(encoder_options or {}))(h)


# ------------------------------------------------------------------ metrics
def _pairs(system: PhysicalSystem, drives: torch.Tensor, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Each drive queried twice (adjacent copies); returns (mean of the copies, noise variance per output)."""
    means, diffs = [], []
    for start in range(0, drives.shape[0], batch):
        d = drives[start : start + batch]
        out = system(d.repeat_interleave(2, dim=0)).to(torch.float64).cpu().numpy()
        a, b = out[0::2], out[1::2]
        means.append((a + b) / 2)
        diffs.append(a - b)
    diff = np.concatenate(diffs)
    return np.concatenate(means), np.mean(diff**2, axis=0) / 2  # var(y1 - y2) = 2 sigma^2


def _affine_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares affine map (with a tiny relative ridge) from x [n, d] to y [n, k]; returns [d + 1, k]."""
    a = np.hstack([x, np.ones((x.shape[0], 1))])
    g = a.T @ a
    g[np.diag_indices_from(g)] += _RIDGE * (np.trace(g) / g.shape[0] + 1e-30)
    return np.linalg.solve(g, a.T @ y)


def nonlinear_fraction(
    x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, noise_var: np.ndarray
) -> tuple[float, np.ndarray]:
    """Pooled noise-corrected 1 - R^2 of the affine fit on held-out data, and the per-output values.

    ``y_*`` are means of two copies, so their noise variance is ``noise_var / 2``.
    Outputs without signal above the noise get NaN in the per-output array.
    """
    w = _affine_fit(x_fit, y_fit)
    pred = np.hstack([x_test, np.ones((x_test.shape[0], 1))]) @ w
    mse = np.mean((y_test - pred) ** 2, axis=0)
    var = np.var(y_test, axis=0)
    noise = noise_var / 2
    signal = var - noise
    with np.errstate(divide="ignore", invalid="ignore"):
        per_output = np.where(signal > 1e-12 * (var.max() + 1e-300), (mse - noise) / signal, np.nan)
    total = float(np.sum(np.clip(signal, 0, None)))
    if total <= 0:
        return math.nan, np.clip(per_output, 0, 1)
    frac = float(np.sum(mse - noise) / total)
    return min(max(frac, 0.0), 1.0), np.clip(per_output, 0, 1)


def effective_rank(y: np.ndarray, noise_var: np.ndarray | None = None) -> tuple[float, int, np.ndarray]:
    """(participation ratio, count for 99 % of the variance, eigenvalues) of the output covariance."""
    cov = np.cov(y, rowvar=False).reshape(y.shape[1], y.shape[1])
    if noise_var is not None:
        cov = cov - np.diag(noise_var)
    lam = np.clip(np.linalg.eigvalsh(cov)[::-1], 0, None)
    total = float(lam.sum())
    if total <= 0:
        return 0.0, 0, lam
    pr = total**2 / float(np.sum(lam**2))
    rank99 = int(np.searchsorted(np.cumsum(lam) / total, 0.99) + 1)
    return pr, min(rank99, len(lam)), lam


def single_input_share(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per output, the largest squared correlation with any single input (NaN for a constant output)."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    sx = np.sqrt(np.sum(xc**2, axis=0))
    sy = np.sqrt(np.sum(yc**2, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (xc.T @ yc) / np.outer(sx, sy)  # [n_in, n_out]
    r = np.where(np.isfinite(r), r, 0.0)
    share = np.max(r**2, axis=0)
    return np.where(sy > 0, share, np.nan)


@dataclass
class Characterization:
    """The figures of one system (see the module docstring); arrays per output or per eigenvalue."""

    name: str
    units: str
    output_units: str
    n_inputs: int
    n_outputs: int
    nonlinear_fraction_random: float
    nonlinear_fraction_encoded: float | None
    effective_rank: float
    rank99: int
    noise_rel: float
    single_input_share_median: float
    single_input_share_max: float
    samples_queried: int
    settings: dict[str, Any] = field(default_factory=dict)
    per_output_nonlinear_random: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_output_nonlinear_encoded: np.ndarray | None = None
    eigenvalues: np.ndarray = field(default_factory=lambda: np.zeros(0))
    single_input_share: np.ndarray = field(default_factory=lambda: np.zeros(0))
    noise_std: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def summary(self) -> dict[str, Any]:
        """The scalar figures as a plain dict."""
        return {k: v for k, v in asdict(self).items() if not isinstance(v, (np.ndarray, dict))}


def _check_fit_size(name: str, n_fit: int, n_inputs: int) -> None:
    """Refuse a fit with no more drives than the affine map's ``n_inputs + 1`` parameters (its held-out error,
    hence the nonlinear fraction, would be meaningless: 1 for a linear system); warn where the fit's own
    variance inflates the held-out error by more than 10 % (about ``1 + p / (n_fit - p - 1)`` for p parameters).
    """
    p = n_inputs + 1
    if n_fit <= p:
        raise ValueError(
            f"{name}={n_fit} drives cannot fit an affine map of {n_inputs} inputs ({p} parameters); "
            f"give at least {10 * p} (the default 2000 suits up to ~200 inputs)"
        )
    if n_fit < 11 * p:
        log.warning(
            "%s=%d drives for an affine map of %d parameters: the nonlinear fraction is overestimated by up to "
            "about %.0f %% of its value; give at least %d",
            name,
            n_fit,
            p,
            100 * p / (n_fit - p - 1) if n_fit > p + 1 else float("inf"),
            11 * p,
        )


def characterize(
    system: PhysicalSystem,
    *,
    drives: torch.Tensor | None = None,
    n_fit: int = 2000,
    n_test: int = 1000,
    batch: int = 500,
    seed: int = 0,
    drives_split: tuple[int, int] | None = None,
) -> Characterization:
    """Measure ``system``'s figures at random valid drives and, if given, at ``drives`` (e.g. from
    :func:`encoder_drives`; the first ``n_fit`` fit, the next ``n_test`` are held out, or the
    ``drives_split = (fit, test)`` counts for a small data set).

    Queries: ``2 (n_fit + n_test)`` per drive set.
    """
    n_fit = checks.integer("n_fit", n_fit, low=2)
    n_test = checks.integer("n_test", n_test, low=2)
    batch = checks.integer("batch", batch, low=1)
    spec = system.spec
    _check_fit_size("n_fit", n_fit, spec.n_inputs)
    gen = torch.Generator().manual_seed(checks.integer("seed", seed, low=0))
    samples0 = system.stats.samples
    n = n_fit + n_test
    x = random_drives(spec, n, gen)
    y, noise_var = _pairs(system, x, batch)
    xn = x.double().numpy()
    nl, nl_out = nonlinear_fraction(xn[:n_fit], y[:n_fit], xn[n_fit:], y[n_fit:], noise_var)
    pr, rank99, lam = effective_rank(y, noise_var)
    share = single_input_share(xn, y)
    total_var = float(np.mean(np.var(y, axis=0) + noise_var / 2))
    noise_rel = math.sqrt(float(np.mean(noise_var)) / total_var) if total_var > 0 else math.nan
    nl_enc, nl_enc_out = None, None
    if drives is not None:
        e_fit, e_test = (n_fit, n_test) if drives_split is None else drives_split
        e_fit = checks.integer("drives_split[0]", e_fit, low=2)
        e_test = checks.integer("drives_split[1]", e_test, low=2)
        _check_fit_size("drives_split[0]", e_fit, spec.n_inputs)
        drives = torch.as_tensor(drives, dtype=torch.float32)
        if drives.dim() != 2 or drives.shape[1] != spec.n_inputs or drives.shape[0] < e_fit + e_test:
            raise ValueError(
                f"drives must be [>= {e_fit + e_test}, {spec.n_inputs}] (fit + test rows), "
                f"got shape {tuple(drives.shape)}"
            )
        d = drives[: e_fit + e_test]
        ye, noise_e = _pairs(system, d, batch)
        dn = d.double().numpy()
        nl_enc, nl_enc_out = nonlinear_fraction(dn[:e_fit], ye[:e_fit], dn[e_fit:], ye[e_fit:], noise_e)
    finite = share[np.isfinite(share)]
    result = Characterization(
        name=spec.name,
        units=spec.units,
        output_units=spec.output_units,
        n_inputs=spec.n_inputs,
        n_outputs=spec.n_outputs,
        nonlinear_fraction_random=nl,
        nonlinear_fraction_encoded=nl_enc,
        effective_rank=pr,
        rank99=rank99,
        noise_rel=noise_rel,
        single_input_share_median=float(np.median(finite)) if finite.size else math.nan,
        single_input_share_max=float(np.max(finite)) if finite.size else math.nan,
        samples_queried=system.stats.samples - samples0,
        settings=dict(n_fit=n_fit, n_test=n_test, seed=seed, ridge=_RIDGE, drives_split=drives_split),
        per_output_nonlinear_random=nl_out,
        per_output_nonlinear_encoded=nl_enc_out,
        eigenvalues=lam,
        single_input_share=share,
        noise_std=np.sqrt(noise_var),
    )
    log.info("characterized %s: %s", spec.name, result.summary())
    return result
