"""What a physical system computes, measured through ``system(x)`` alone: ``physnn characterize``.

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

:func:`bench_sweeps` holds the bench-side checks of ``lab_scripts/characterize.py``
(one-input sweeps, noise per drive, repeatability, drift over time).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
    "bench_sweeps",
    "save_bench_plots",
    "save_hdf5",
    "save_figure",
    "format_table",
    "DEFAULT_DATASET",
]

log = logging.getLogger(__name__)

#: Data set whose encoded drives are characterised by default.
DEFAULT_DATASET = "digits"
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


# ------------------------------------------------------------------ output
def format_table(result: Characterization) -> str:
    """A two-column plain-text table of the scalar figures."""

    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    rows = [
        ("system", result.name),
        ("drive / output units", f"{result.units} / {result.output_units}"),
        ("inputs -> outputs", f"{result.n_inputs} -> {result.n_outputs}"),
        ("nonlinear fraction, random drives", fmt(result.nonlinear_fraction_random)),
        ("nonlinear fraction, encoder drives", fmt(result.nonlinear_fraction_encoded)),
        ("effective rank (participation ratio)", fmt(result.effective_rank)),
        ("rank for 99 % of the variance", fmt(result.rank99)),
        ("noise floor (relative rms)", fmt(result.noise_rel)),
        ("best single input R^2 (median)", fmt(result.single_input_share_median)),
        ("best single input R^2 (max)", fmt(result.single_input_share_max)),
        ("samples queried", fmt(result.samples_queried)),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def save_hdf5(result: Characterization, path: str | Path, described: dict[str, Any] | None = None) -> Path:
    """Scalars as attributes, arrays as data sets, the system's ``describe()`` as a JSON attribute."""
    import json

    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in result.summary().items():
            f.attrs[k] = np.nan if v is None else v
        f.attrs["settings"] = json.dumps(result.settings)
        if described is not None:
            f.attrs["system"] = json.dumps(described, default=str)
        f["per_output_nonlinear_random"] = result.per_output_nonlinear_random
        if result.per_output_nonlinear_encoded is not None:
            f["per_output_nonlinear_encoded"] = result.per_output_nonlinear_encoded
        f["eigenvalues"] = result.eigenvalues
        f["single_input_share"] = result.single_input_share
        f["noise_std"] = result.noise_std
    return path


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write (100 dpi) and close one figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_figure(result: Characterization, path: str | Path) -> Path:
    """Three panels: per-output nonlinear fraction, covariance spectrum, best-single-input share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    k = np.arange(result.n_outputs)
    ax = axes[0]
    ax.plot(
        k,
        result.per_output_nonlinear_random,
        "o",
        ms=3,
        label=f"random drives (pooled {result.nonlinear_fraction_random:.2f})",
    )
    if result.per_output_nonlinear_encoded is not None:
        ax.plot(
            k,
            result.per_output_nonlinear_encoded,
            "s",
            ms=3,
            label=f"encoder drives (pooled {result.nonlinear_fraction_encoded:.2f})",
        )
    ax.set_xlabel("output index")
    ax.set_ylabel("nonlinear fraction 1 - R² (noise removed)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("nonlinearity per output")
    ax.legend(fontsize=7)
    ax = axes[1]
    lam = result.eigenvalues
    if lam.size and lam[0] > 0:
        ax.semilogy(
            np.arange(1, lam.size + 1),
            np.clip(lam / lam.sum(), 1e-12, None),
            ".-",
            label=f"participation ratio {result.effective_rank:.1f}, 99 % at {result.rank99}",
        )
        ax.legend(fontsize=7)
    ax.set_xlabel("eigenvalue index")
    ax.set_ylabel("share of output variance")
    ax.set_title(f"output covariance spectrum [{result.output_units}²]")
    ax = axes[2]
    share = result.single_input_share[np.isfinite(result.single_input_share)]
    ax.hist(share, bins=20, range=(0, 1), label=f"median {result.single_input_share_median:.2f}")
    ax.set_xlabel("R² of the best single input")
    ax.set_ylabel("outputs")
    ax.set_title("how much one input explains each output")
    ax.legend(fontsize=7)
    fig.suptitle(
        f"{result.name}: {result.n_inputs} inputs [{result.units}] -> {result.n_outputs} outputs "
        f"[{result.output_units}], noise floor {result.noise_rel:.3g} (relative rms)"
    )
    return _save(fig, path)


# ------------------------------------------------------------ bench checks
REPEAT_DRIVES = 4  # distinct drives in the noise-per-drive measurement
REPEATABILITY_DRIVES = 16
DRIFT_AVERAGE = 4  # copies of the drift drive per call, averaged


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept, r2, max |residual| / measured swing); r2 and deviation NaN for a flat response."""
    slope, intercept = np.polyfit(x, y, 1)
    fit = slope * x + intercept
    ss_res = float(np.sum((y - fit) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    swing = float(y.max() - y.min())
    if ss_tot <= 1e-24 or swing <= 1e-12:
        return float(slope), float(intercept), math.nan, math.nan
    return float(slope), float(intercept), 1.0 - ss_res / ss_tot, float(np.max(np.abs(y - fit)) / swing)


def _slopes(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope of each column of ``y`` against ``t`` and its standard error."""
    tc = t - t.mean()
    sxx = float(np.sum(tc**2))
    if sxx <= 0 or len(t) < 3:
        return np.zeros(y.shape[1]), np.full(y.shape[1], np.inf)
    slope = tc @ (y - y.mean(axis=0)) / sxx
    resid = y - y.mean(axis=0) - np.outer(tc, slope)
    stderr = np.sqrt(np.sum(resid**2, axis=0) / (len(t) - 2) / sxx)
    return slope, stderr


def bench_sweeps(
    system: PhysicalSystem,
    *,
    points: int = 21,
    repeats: int = 16,
    drift_calls: int = 20,
    drift_interval: float = 0.0,
    channels: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Bench checks in the instrument's own terms: one-input sweeps, noise per drive, repeatability, drift.

    * repeatability: 16 random drives measured at the start and again at the
      end; RMS of the difference relative to the spread of the outputs.
    * linearity: each of the first ``channels`` inputs swept over its full
      range (the others at mid-range); per output, R^2 of a straight line and
      the largest deviation from it as a fraction of the output's swing (INL).
    * noise: 4 random drives each repeated ``repeats`` times in one batch; per
      output the standard deviation and the SNR (mean / std) in dB.
    * drift: a mid-range drive measured ``drift_calls`` times ``drift_interval``
      seconds apart; slope per output, counted as drift where it is significant
      (two-sided t-test at 1 %).
    """
    if points < 3 or repeats < 2 or drift_calls < 2 or channels < 1:
        raise ValueError(
            f"need points >= 3, repeats >= 2, drift_calls >= 2, channels >= 1; got points={points}, "
            f"repeats={repeats}, drift_calls={drift_calls}, channels={channels}"
        )
    spec = system.spec
    gen = torch.Generator().manual_seed(seed)
    n_in = spec.n_inputs

    def rand_drives(n: int) -> torch.Tensor:
        return snap(spec.low + torch.rand(n, n_in, generator=gen) * (spec.high - spec.low), spec)

    def query(x: torch.Tensor) -> np.ndarray:
        return system(x).to(torch.float64).cpu().numpy()

    samples0 = system.stats.samples
    t_start = time.monotonic()
    mid = snap(torch.full((1, n_in), (spec.low + spec.high) / 2), spec)

    rep_x = rand_drives(REPEATABILITY_DRIVES)
    rep_a = query(rep_x)

    chans = list(range(min(channels, n_in)))
    sweep = torch.unique(snap(torch.linspace(spec.low, spec.high, points), spec))
    rows = []
    for c in chans:
        block = mid.repeat(len(sweep), 1)
        block[:, c] = sweep
        rows.append(block)
    lin_y = query(torch.cat(rows)).reshape(len(chans), len(sweep), spec.n_outputs)
    sweep_np = sweep.double().numpy()
    fits = np.array([[_fit_line(sweep_np, lin_y[i, :, k]) for k in range(spec.n_outputs)] for i in range(len(chans))])
    r2, dev = fits[..., 2], fits[..., 3]

    noise_x = rand_drives(REPEAT_DRIVES).repeat_interleave(repeats, dim=0)
    noise_y = query(noise_x).reshape(REPEAT_DRIVES, repeats, spec.n_outputs)
    noise_mean = noise_y.mean(axis=1)
    noise_std = noise_y.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_db = 20 * np.log10(np.abs(noise_mean) / noise_std)
    snr_finite = snr_db[np.isfinite(snr_db)]

    drift_t, drift_y = [], []
    t0 = time.monotonic()
    for i in range(drift_calls):
        if i and drift_interval > 0:
            time.sleep(drift_interval)
        drift_t.append(time.monotonic() - t0)
        drift_y.append(query(mid.repeat(DRIFT_AVERAGE, 1)).mean(axis=0))
    drift_t_np, drift_y_np = np.array(drift_t), np.array(drift_y)
    drift_slope, drift_err = _slopes(drift_t_np, drift_y_np)
    from scipy.stats import t as student_t

    significant = np.abs(drift_slope) > student_t.ppf(0.995, max(drift_calls - 2, 1)) * drift_err

    rep_b = query(rep_x)
    spread = float(np.std(rep_a))
    rep_rms = float(np.sqrt(np.mean((rep_b - rep_a) ** 2)))

    def nanstat(f: Any, a: Any) -> float | None:
        a = np.asarray(a, dtype=float)
        a = a[np.isfinite(a)]
        return float(f(a)) if a.size else None

    summary = {
        "linearity_r2_median": nanstat(np.median, r2),
        "linearity_r2_min": nanstat(np.min, r2),
        "nonlinearity_max": nanstat(np.max, dev),
        "noise_std_median": float(np.median(noise_std)),
        "noise_std_max": float(np.max(noise_std)),
        "snr_db_median": float(np.median(snr_finite)) if snr_finite.size else None,
        "repeatability_rms": rep_rms,
        "repeatability_relative": rep_rms / spread if spread > 0 else None,
        "drift_per_s_max_abs": float(np.max(np.abs(drift_slope))),
        "drift_outputs_significant": int(significant.sum()),
        "drift_window_s": float(drift_t_np[-1] - drift_t_np[0]),
        "drift_range_max": float(np.max(drift_y_np.max(axis=0) - drift_y_np.min(axis=0))),
        "duration_s": time.monotonic() - t_start,
        "samples_queried": system.stats.samples - samples0,
    }
    return {
        "summary": summary,
        "settings": dict(
            points=points,
            repeats=repeats,
            drift_calls=drift_calls,
            drift_interval=drift_interval,
            channels=len(chans),
            seed=seed,
        ),
        "drive_units": spec.units,
        "output_units": spec.output_units,
        "name": spec.name,
        "sweep": sweep_np,
        "channels": chans,
        "linearity": lin_y,
        "r2": r2,
        "noise_mean": noise_mean,
        "noise_std": noise_std,
        "repeat_a": rep_a,
        "repeat_b": rep_b,
        "drift_t": drift_t_np,
        "drift_y": drift_y_np,
        "drift_slope": drift_slope,
        "drift_slope_stderr": drift_err,
    }


def save_bench_plots(result: dict[str, Any], out: Path, max_lines: int = 4) -> list[Path]:
    """Four PNG figures of :func:`bench_sweeps` (linearity, noise, repeatability, drift) with units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    name, du, ou = result["name"], result["drive_units"], result["output_units"]
    n_out = result["linearity"].shape[2]
    outs = list(range(min(max_lines, n_out)))
    paths = []

    fig, axes = plt.subplots(1, len(result["channels"]), figsize=(4 * len(result["channels"]), 3.6), squeeze=False)
    for ax, i in zip(axes[0], range(len(result["channels"]))):
        for k in outs:
            ax.plot(
                result["sweep"],
                result["linearity"][i, :, k],
                marker="o",
                ms=3,
                label=f"output {k} (R²={result['r2'][i, k]:.3f})",
            )
        ax.set_xlabel(f"drive of input {result['channels'][i]} [{du}]")
        ax.set_ylabel(f"measured output [{ou}]")
        ax.set_title(f"input {result['channels'][i]} swept, others at mid-range")
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: linearity")
    paths.append(_save(fig, out / "linearity.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in range(result["noise_mean"].shape[0]):
        ax.scatter(result["noise_mean"][r], result["noise_std"][r], s=10, label=f"drive {r}")
    ax.set_xlabel(f"mean output [{ou}]")
    ax.set_ylabel(f"standard deviation over {result['settings']['repeats']} repeats [{ou}]")
    ax.set_title(f"{name}: noise (median SNR {result['summary']['snr_db_median'] or float('inf'):.1f} dB)")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "noise.png"))

    fig, ax = plt.subplots(figsize=(5, 4.5))
    a, b = result["repeat_a"].ravel(), result["repeat_b"].ravel()
    ax.scatter(a, b, s=8, label="same drive, start vs end")
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlabel(f"first measurement [{ou}]")
    ax.set_ylabel(f"repeated measurement [{ou}]")
    ax.set_title(f"{name}: repeatability (RMS diff {result['summary']['repeatability_rms']:.3g} {ou})")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "repeatability.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in outs:
        y = result["drift_y"][:, k]
        ax.plot(result["drift_t"], y - y[0], marker=".", label=f"output {k} ({result['drift_slope'][k]:+.2g} {ou}/s)")
    ax.set_xlabel("time since first drift measurement [s]")
    ax.set_ylabel(f"change of mean output [{ou}]")
    ax.set_title(f"{name}: drift at a fixed mid-range drive")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "drift.png"))
    return paths


# --------------------------------------------------------------------- CLI
def characterize_named(
    system_name: str,
    *,
    system_options: dict[str, Any] | None = None,
    dataset: str | None = DEFAULT_DATASET,
    data_path: str | None = None,
    encoder: str = "minmax",
    encoder_bits: int | None = None,
    label_repeat: int = 1,
    n_fit: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
) -> tuple[Characterization, list[Path]]:
    """Build ``system_name`` as wide as ``encoder`` needs for ``dataset`` (label embedded, as MF-FF's block 0),
    characterize it at random drives and at the encoded data, and write ``characterize.h5`` and
    ``characterize.png`` into ``out``. ``dataset=None``: random drives only (system at its default width).
    ``system_options`` may set ``n_inputs`` itself (wider than needed: the encoder pads)."""
    from physnn.core.encoding import Encoder, drive_width, label_width
    from physnn.core.registry import build_system
    from physnn.data.datasets import load_dataset

    options = dict(system_options or {})
    options.setdefault("seed", seed)
    data = None
    if dataset is not None:
        data = load_dataset(dataset, path=data_path, seed=seed)
        bits = Encoder(SystemSpec(1, 1), encoder, bits=encoder_bits).bits
        width = drive_width(encoder, label_width(data.n_classes, label_repeat) + data.n_features, bits=bits)
        options.setdefault("n_inputs", width)
    system = build_system(system_name, **options)
    try:
        drives = None
        enc_fit, enc_test = n_fit, n_test
        if data is not None:
            pairs = data.x_train.shape[0] * data.n_classes
            if pairs < n_fit + n_test:  # a small data set (vowels): all its pairs, split 2:1
                enc_fit = (2 * pairs) // 3
                enc_test = pairs - enc_fit
                log.warning(
                    "%s has %d (sample, label) pairs: encoder drives fit on %d, test on %d",
                    dataset,
                    pairs,
                    enc_fit,
                    enc_test,
                )
            gen = torch.Generator().manual_seed(seed + 1)
            drives = encoder_drives(
                system.spec,
                data.x_train,
                data.y_train,
                data.n_classes,
                enc_fit + enc_test,
                gen,
                encoder=encoder,
                encoder_options={"bits": encoder_bits},
                label_repeat=label_repeat,
            )
        result = characterize(
            system, drives=drives, n_fit=n_fit, n_test=n_test, seed=seed, drives_split=(enc_fit, enc_test)
        )
        result.settings.update(
            system=system_name,
            system_options={k: str(v) for k, v in options.items()},
            dataset=dataset,
            encoder=encoder,
            encoder_bits=encoder_bits,
            label_repeat=label_repeat,
        )
        described = system.describe()
    finally:
        system.close()
    paths: list[Path] = []
    if out is not None:
        out = Path(out)
        paths.append(save_hdf5(result, out / "characterize.h5", described))
        paths.append(save_figure(result, out / "characterize.png"))
    return result, paths
