"""Figures of what training cost: queries, device time and digital compute, and accuracy against queries.

Physical queries are the scarce resource of a PNN, so the fair axis on which
methods are compared is the number of queries spent to learn, not the epoch.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from matplotlib.figure import Figure

from physnn.analysis.plotting import accuracy_intervals, accuracy_key, epoch_axis, n_text, new_figure, set_title
from physnn.runlog import Run

__all__ = ["plot_cost", "plot_accuracy_vs_queries"]


def plot_cost(run: Run) -> Figure | str:
    m = run.metrics
    q_keys = [k for k in ("train_queries", "eval_queries") if k in m]
    panels: list[tuple[str, Callable[[Any], None]]] = []
    ep = m["epoch"]

    def cum(key: str) -> np.ndarray:
        return np.cumsum(np.nan_to_num(m[key]))

    if q_keys:

        def queries(ax: Any) -> None:
            total = np.zeros(ep.size)
            for k, label in (("train_queries", "training"), ("eval_queries", "evaluation")):
                if k in m:
                    ax.plot(ep, cum(k), marker="o", markersize=3, label=label)
                    total += cum(k)
            if len(q_keys) > 1:
                ax.plot(ep, total, "k--", lw=1.2, label="total")
            ax.set(ylabel="physical queries\n(samples, cumulative)", title="Queries to the physical systems")
            ax.legend(fontsize=8)

        panels.append(("queries", queries))
    if "device_seconds" in m:

        def device(ax: Any) -> None:
            ax.plot(ep, cum("device_seconds"), marker="o", markersize=3, label="inside the physical systems")
            if "wall_seconds" in m:
                # continuous across resumes (each process counts from 0; the gap between them is left out)
                ax.plot(ep, run.cumulative("wall_seconds"), "k--", lw=1.2, label="wall clock (whole training)")
            ax.set(ylabel="time (s, cumulative)", title="Device time")
            ax.legend(fontsize=8)

        panels.append(("device", device))
    if "digital_flops" in m:

        def flops(ax: Any) -> None:
            ax.plot(ep, cum("digital_flops"), marker="o", markersize=3)
            ax.set(ylabel="digital compute\n(FLOPs, cumulative)", title="Digital compute")

        panels.append(("flops", flops))
    if not panels:
        return "no cost metrics were logged ('train_queries', 'eval_queries', 'device_seconds', 'digital_flops')"
    fig = new_figure(width=7.0, height=2.6 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (_, draw) in zip(axes, panels):
        draw(ax)
        ax.grid(alpha=0.3)
    epoch_axis(axes[-1])
    set_title(fig, "Cost of training", run)
    return fig


def _learning_queries(run: Run) -> np.ndarray | None:
    """Cumulative physical queries spent to learn, per epoch: ``queries/learning``, else the sum of ``train_queries``."""
    m = run.metrics
    if "queries/learning" in m and np.isfinite(m["queries/learning"]).any():
        return np.asarray(m["queries/learning"], dtype=np.float64)
    if "train_queries" in m:
        return np.cumsum(np.nan_to_num(np.asarray(m["train_queries"], dtype=np.float64)))
    return None


def plot_accuracy_vs_queries(run: Run) -> Figure | str:
    """Accuracy against the physical queries spent: the cost axis on which methods are fairly compared."""
    q = _learning_queries(run)
    key = accuracy_key(run)
    final = run.summary.get("test_accuracy")
    has_final = isinstance(final, (int, float)) and math.isfinite(final)
    if q is None or not q.size or (key is None and not has_final):
        return (
            "no accuracy against queries: needs 'queries/learning' or 'train_queries' and 'val_accuracy', "
            "'test_accuracy' or a final test accuracy"
        )
    m = run.metrics
    fig = new_figure()
    ax = fig.add_subplot()
    if key is not None:
        ok = np.isfinite(m[key]) & np.isfinite(q)
        label = "validation split (per epoch)" if key == "val_accuracy" else "test split (per epoch)"
        ci = accuracy_intervals(run, key)
        if ci is not None:
            label = label[:-1] + f", {n_text(ci[0][ok])}, band: 95 % CI)"
        (line,) = ax.plot(q[ok], 100 * m[key][ok], "-", marker="o", markersize=3, label=label)
        if ci is not None:
            ax.fill_between(q[ok], 100 * ci[1][ok], 100 * ci[2][ok], color=line.get_color(), alpha=0.2, lw=0)
    if "train_accuracy" in m and np.isfinite(m["train_accuracy"]).any():
        # accuracy on the batches just trained on: optimistic, but logged every epoch, so it shows the rise
        ok = np.isfinite(m["train_accuracy"]) & np.isfinite(q)
        ax.plot(
            q[ok],
            100 * m["train_accuracy"][ok],
            "--",
            color="0.45",
            marker="o",
            markersize=2,
            label="training batches (per epoch)",
        )
    x = 0.0
    if has_final:
        lo, hi = run.summary.get("test_ci95_low"), run.summary.get("test_ci95_high")
        yerr = None
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            yerr = [[100 * (final - lo)], [100 * (hi - final)]]
        spent = run.summary.get("train_queries")
        x = float(spent) if isinstance(spent, (int, float)) and math.isfinite(spent) else float(np.nanmax(q))
        ax.errorbar(
            [x],
            [100 * final],
            yerr=yerr,
            fmt="*",
            color="k",
            markersize=10,
            capsize=4,
            label=f"test split after training: {100 * final:.1f} %" + (" (95 % CI)" if yerr else ""),
        )
    if run.dataset and isinstance(run.dataset.get("n_classes"), int) and run.dataset["n_classes"] > 1:
        ax.axhline(100 / run.dataset["n_classes"], color="0.6", lw=1, ls=":", label="chance level")
    ax.set(xlabel="physical queries spent to learn (samples, cumulative)", ylabel="accuracy (%)", ylim=(0, 100))
    right = max([float(np.nanmax(q))] + ([x] if has_final else []))
    ax.set_xlim(0, 1.04 * right if right > 0 else 1.0)  # room for the end marker and its error bar
    set_title(ax, "Accuracy against physical queries", run)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig
