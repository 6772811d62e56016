"""Figures of how the physical systems changed: drift of fixed probes, continual training and its detections."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from physnn.analysis.plotting import new_figure, output_units, set_title
from physnn.runlog import Run

__all__ = ["plot_drift", "plot_continual"]

#: Relative changes below this are floating-point rounding, not drift: a noiseless system repeats to ~1e-16.
_ROUNDING = 1e-12


def _drift(y: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Relative RMS change (%) of each probe measurement from the pre-training reference, and the noise floor.

    The reference is the mean of the measurements taken before training (two
    at step 0 when the runner repeats them), so epoch 0 is not "0 by
    construction" followed by a jump to the noise level. With two repeats
    y0, y1 of noise sigma, RMS(y0 - y1) = sqrt(2) sigma, and a fresh
    measurement differs from their mean by sqrt(sigma^2 + sigma^2 / 2), so the
    floor is ``sqrt(3) / 2 * RMS(y0 - y1)``: drift below it is noise alone.
    Changes under :data:`_ROUNDING` are floating-point rounding of a
    noiseless system and are shown as exact zeros.
    """
    y = y.astype(np.float64)  # [N, P, n_out]
    before = steps == steps[0]
    n_ref = int(before.sum()) if before[:2].all() and steps.size >= 2 else 1
    ref = y[:n_ref].mean(axis=0)
    scale = float(np.sqrt(np.mean(ref**2))) or 1.0
    rel = np.sqrt(np.mean((y - ref) ** 2, axis=(1, 2))) / scale
    rel[rel < _ROUNDING] = 0.0
    floor = None
    if n_ref >= 2:
        f = np.sqrt(3.0) / 2 * float(np.sqrt(np.mean((y[1] - y[0]) ** 2))) / scale
        floor = 0.0 if f < _ROUNDING else 100 * f
    return 100 * rel, floor


def plot_drift(run: Run) -> Figure | str:
    probes = {b: p for b, p in run.probes.items() if p["y"].shape[0] >= 2}
    if not probes:
        return "fewer than two probe measurements were logged (RunWriter.set_probes + log_probe)"
    fig = new_figure(width=7.0, height=6.0)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    top = 0.0
    for i, (b, p) in enumerate(probes.items()):
        steps = np.asarray(p["step"])
        rel, floor = _drift(p["y"], steps)
        ax1.plot(steps, rel, marker="o", markersize=3, color=f"C{i}", label=b)
        top = max(top, float(rel.max()))
        if floor is not None:
            ax1.axhline(floor, color=f"C{i}", ls=":", lw=1)
            ax1.axhspan(
                0,
                floor,
                color=f"C{i}",
                alpha=0.1,
                lw=0,
                label=f"{b}: noise floor from the repeat before training" + (" (noiseless: 0)" if not floor else ""),
            )
            top = max(top, floor)
        units = output_units(run, b)
        mean = p["y"].astype(np.float64).mean(axis=(1, 2))
        ax2.plot(steps, mean, marker="o", markersize=3, color=f"C{i}", label=f"{b} ({p['x'].shape[0]} probes, {units})")
    # a noiseless, drift-free system gives exact zeros: show them on a % axis, not a 1e-17 one
    ax1.set_ylim(0, max(1.25 * top, 0.1))
    ax1.set(ylabel="RMS change from the pre-training\nmeasurement (% of RMS output)")
    set_title(ax1, "Drift of fixed probe measurements", run)
    units = sorted({output_units(run, b) for b in probes})
    ax2.set(
        xlabel="epoch (probes re-measured after each; 0 = before training)",
        ylabel="mean probe output\n(" + ", ".join(units) + ")",
    )
    ax2.ticklabel_format(axis="y", useOffset=False)
    lo, hi = ax2.get_ylim()
    if hi - lo < 1e-9 * max(abs(lo), abs(hi), 1e-30):  # constant outputs: a readable window around them
        mid = (lo + hi) / 2
        pad = 0.05 * abs(mid) or 1.0
        ax2.set_ylim(mid - pad, mid + pad)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_continual(run: Run) -> Figure | str | None:
    """Continual training (``continual_ticks``): accuracy and probe drift against queries, detections marked."""
    ticks = [e["fields"] for e in run.events if e["kind"] == "continual_tick"]
    detections = [e["fields"] for e in run.events if e["kind"] == "drift_detected"]
    if not ticks:
        return None  # not a continual run (config key continual_ticks): nothing to show, nothing skipped
    acc_key = next((k for k in ("val_accuracy", "test_accuracy") if k in ticks[0]), None)
    fig = new_figure(7.0, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    q = [t.get("queries_total", float("nan")) for t in ticks]
    if acc_key:
        label = "validation split" if acc_key == "val_accuracy" else "test split"
        top.plot(q, [100 * t[acc_key] for t in ticks], marker="o", markersize=3, label=label)
        top.set_ylabel("accuracy (%)")
        top.legend(loc="lower right", fontsize=8)
    ratios = [(d.get("queries", float("nan")), max(d.get("ratio") or [float("nan")])) for d in detections]
    if ratios:
        bottom.plot([r[0] for r in ratios], [r[1] for r in ratios], "rv", label="drift detected (largest system)")
        threshold = detections[0].get("threshold")
        if isinstance(threshold, (int, float)):
            bottom.axhline(threshold, color="0.4", ls=":", label=f"threshold ({threshold:g} noise floors)")
        bottom.legend(loc="upper left", fontsize=8)
    for d in detections:  # every detection marked on both panels
        for ax in (top, bottom):
            ax.axvline(d.get("queries", float("nan")), color="r", alpha=0.25, lw=1)
    bottom.set(xlabel="physical queries (samples, cumulative)", ylabel="probe change / noise floor (dimensionless)")
    set_title(top, f"Continual training: {len(detections)} drift detection(s)", run)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig
