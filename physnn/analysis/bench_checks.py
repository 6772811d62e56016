"""Bench checks in an instrument's own terms (``lab_scripts/characterize.py``): one-input sweeps, noise per
drive, repeatability, drift over time.

Why beside :mod:`~physnn.analysis.system_measures`: those figures say what a
system computes for a PNN; these say whether a bench behaves like its data sheet
(straight response per channel, noise and SNR, whether the same drive gives the
same answer at the end of a session), which is what a physicist checks first
on new hardware.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from physnn.analysis.system_measures import snap
from physnn.core.system import PhysicalSystem

__all__ = ["bench_sweeps", "REPEAT_DRIVES", "REPEATABILITY_DRIVES", "DRIFT_AVERAGE"]


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
