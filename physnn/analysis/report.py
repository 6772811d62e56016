"""Plots and summaries from run files: ``physnn report``, ``physnn compare``, ``physnn ls``.

Every function reads run files through :func:`physnn.runlog.load`, so it works
on finished runs, on runs still being written and on runs whose writer was
killed. Plots are drawn with matplotlib's object API on the Agg canvas: no
pyplot, no global backend switch, nothing that disturbs a notebook session.

Each plot is made only when its data is in the file; :func:`main_report`
says in ``summary.md`` (and in the ``skipped`` attribute of its result) which
plots were skipped and why.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from physnn.core import checks
from physnn.runlog import Run, RunFileError, load

__all__ = ["ReportFiles", "main_report", "compare", "ls", "PLOTS", "FORMATS"]

#: Figure file formats: PNG for screens, PDF and SVG for papers (vector, scale without blur).
FORMATS = ("png", "pdf", "svg")
_DPI = 150  # raster resolution of PNG figures (vector formats ignore it)
#: Relative changes below this are floating-point rounding, not drift: a noiseless system repeats to ~1e-16.
_ROUNDING = 1e-12


class ReportFiles(list):
    """The files :func:`main_report` wrote (a list of paths); ``skipped`` maps plot file -> reason."""

    def __init__(self, files: Sequence[Path] = (), skipped: dict[str, str] | None = None):
        super().__init__(files)
        self.skipped: dict[str, str] = dict(skipped or {})


# ------------------------------------------------------------------ formatting
def _pct(v: float) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def _count(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{int(round(v)):,}" if abs(v) < 1e7 else f"{v / 1e6:.1f} M"


def _duration(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A fixed-width text table; columns in ``right`` are right-aligned (numbers)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in esc])


# --------------------------------------------------------------------- figures
def _figure(width: float = 7.0, height: float = 4.4) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    """Save in the format the suffix names (png/pdf/svg); PNG at :data:`_DPI`."""
    fig.savefig(path, dpi=_DPI, format=path.suffix.lstrip(".").lower() or "png")
    return path


def _wrap(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points.

    Run names are long (``digits-optics-mfff-s0-20261201-160943-55fdaa``) and a
    title that runs past the canvas is cut by the saved image; an average glyph of
    DejaVu Sans is ~0.6 em wide, so ``width_in * 72 / (0.6 * fontsize)`` characters fit.
    """
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)) - 2)
    return "\n".join(
        textwrap.fill(part, chars, break_long_words=True, break_on_hyphens=False) for part in text.split("\n")
    )


def _title(target: Any, what: str, run: Run | None = None, *, fig: Figure | None = None) -> None:
    """Title an axes (or a figure's suptitle) with ``what`` and the run's method and name, wrapped to fit."""
    text = what if run is None else f"{what}\n{_label(run)}"
    if isinstance(target, Figure):
        target.suptitle(_wrap(text, target.get_figwidth()))
        return
    width = (fig or target.figure).get_figwidth() * target.get_position().width
    target.set_title(_wrap(text, max(width, 3.0)))


def _output_units(run: Run, block: str) -> str:
    """The unit a block's physical system reports its outputs in, from the run file's spec (or "output units")."""
    spec = run.systems.get(block, {}).get("spec", {}) if isinstance(run.systems.get(block), dict) else {}
    units = spec.get("output_units") if isinstance(spec, dict) else None
    return str(units) if units else "system output units"


def _epoch_axis(ax: Any) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim()
    if hi - lo < 2:  # one or two epochs: keep whole-epoch ticks instead of 2.84 ... 3.16
        mid = round((lo + hi) / 2)
        ax.set_xlim(mid - 1, mid + 1)


#: How each method is named on figures and in tables.
METHOD_LABELS = {
    "mfff": "MF-FF",
    "pat": "physics-aware training",
    "zeroth_order": "zeroth-order (SPSA)",
    "backprop": "in-silico backprop",
    "ff_digital": "digital FF (control)",
    "digital": "digital backprop (control)",
}


def _method(run: Run) -> str:
    return str(run.config.get("method", "mfff"))


def _label(run: Run) -> str:
    """``<method> — <run name>``: every figure says which method made it."""
    method = _method(run)
    return f"{METHOD_LABELS.get(method, method)}, {run.name}"


def _blocks_of(run: Run, prefix: str) -> list[str]:
    return [k.split("/", 1)[1] for k in run.metrics if k.startswith(prefix + "/")]


def _plot_learning_curves(run: Run, path: Path) -> Path | str:
    m = run.metrics
    curves = [
        (k, label, style)
        for k, label, style in (
            ("train_accuracy", "training batches", "--"),
            ("val_accuracy", "validation split", "-"),
            ("test_accuracy", "test split (per epoch)", "-"),
        )
        if k in m and np.isfinite(m[k]).any()
    ]
    final = run.summary.get("test_accuracy")
    if not curves and not isinstance(final, (int, float)):
        return "no accuracy was logged (metrics 'train_accuracy' / 'val_accuracy' / 'test_accuracy')"
    fig = _figure()
    ax = fig.add_subplot()
    for key, label, style in curves:
        ok = np.isfinite(m[key])
        ax.plot(m["epoch"][ok], 100 * m[key][ok], style, marker="o", markersize=3, label=label)
    sel = "val_accuracy" if "val_accuracy" in m else "test_accuracy"
    if sel in m and np.isfinite(m[sel]).any():
        i = int(np.nanargmax(m[sel]))
        best = 100 * m[sel][i]
        ax.annotate(
            f"best {best:.1f} % (epoch {m['epoch'][i]})",
            (m["epoch"][i], best),
            xytext=(0, -28),
            textcoords="offset points",
            ha="center",
            fontsize=9,
            arrowprops={"arrowstyle": "->", "color": "0.3"},
        )
    if isinstance(final, (int, float)) and m["epoch"].size:
        # the test split, measured once after training: the number the run reports, with its 95 % interval
        lo, hi = run.summary.get("test_ci95_low"), run.summary.get("test_ci95_high")
        yerr = None
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            yerr = [[100 * (final - lo)], [100 * (hi - final)]]
        n = run.summary.get("test_n")
        ax.errorbar(
            [m["epoch"][-1]],
            [100 * final],
            yerr=yerr,
            fmt="*",
            color="k",
            markersize=10,
            capsize=4,
            label=f"test split, once at the end: {100 * final:.1f} %" + (f" (n={n})" if n else ""),
        )
    if run.dataset and isinstance(run.dataset.get("n_classes"), int) and run.dataset["n_classes"] > 1:
        ax.axhline(100 / run.dataset["n_classes"], color="0.6", lw=1, ls=":", label="chance level")
    ax.set(ylabel="accuracy (%)", ylim=(0, 100))
    _title(ax, "Learning curves", run)
    if m["epoch"].size:  # every epoch trained, not only those validated (eval_every > 1 logs a few)
        ax.set_xlim(float(m["epoch"].min()) - 0.3, float(m["epoch"].max()) + 0.3)
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _plot_loss(run: Run, path: Path) -> Path | str:
    blocks = _blocks_of(run, "loss")
    if not blocks and "loss" not in run.metrics:
        return "no loss was logged (metrics 'loss/<block>')"
    m = run.metrics
    fig = _figure()
    ax = fig.add_subplot()
    values = []
    for b in blocks:
        y = m[f"loss/{b}"]
        ok = np.isfinite(y)
        ax.plot(m["epoch"][ok], y[ok], marker="o", markersize=3, label=b)
        values.append(y[ok])
    if "loss" in m and (len(blocks) != 1):
        ok = np.isfinite(m["loss"])
        ax.plot(m["epoch"][ok], m["loss"][ok], "k--", lw=1.2, label="mean over blocks" if blocks else "loss")
        values.append(m["loss"][ok])
    v = np.concatenate(values) if values else np.array([])
    if v.size and (v > 0).all() and v.max() / v.min() > 30:
        ax.set_yscale("log")
    local = bool(blocks)  # forward-forward methods log a local loss per block; end-to-end ones one loss
    what = "Local loss of each block" if local else "Training loss (cross-entropy)"
    ax.set(ylabel=("local loss" if local else "cross-entropy") + " per sample (dimensionless)")
    _title(ax, what, run)
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(title="block" if blocks else None)
    return _save(fig, path)


def _goodness_label(run: Run) -> str:
    """Goodness is computed on the digital layer's activity, so it has no physical unit: say which function."""
    kind = str(run.config.get("goodness", "cosine")) if isinstance(run.config, dict) else "cosine"
    what = {"cosine": "cosine to the prototype", "mean_square": "mean square of the activity"}.get(kind, kind)
    return f"goodness ({what}, dimensionless)"


def _plot_goodness(run: Run, path: Path) -> Path | str:
    if not run.goodness:
        return "no goodness values were logged (RunWriter.log_goodness)"
    blocks = list(run.goodness)
    fig = _figure(width=min(4.2 * len(blocks), 12.6) + 0.6, height=3.8)
    axes = fig.subplots(1, len(blocks), squeeze=False)[0]
    for ax, b in zip(axes, blocks):
        g = run.goodness[b]
        last = int(g["epoch"].max())
        sel = g["epoch"] == last
        pos, neg = g["value"][sel & g["positive"]], g["value"][sel & ~g["positive"]]
        both = np.concatenate([pos, neg])
        both = both[np.isfinite(both)]
        n_bins = int(np.clip(2 * np.sqrt(max(pos.size, neg.size, 1)), 8, 40))  # ~2 sqrt(n): readable for 30 or 3000
        bins = np.histogram_bin_edges(both, bins=n_bins) if both.size else 10
        for values, label, color in (
            (pos, "positive (true label)", "tab:green"),
            (neg, "negative (wrong label)", "tab:red"),
        ):
            values = values[np.isfinite(values)]
            if values.size:
                ax.hist(values, bins=bins, alpha=0.55, color=color, label=f"{label}, n={values.size}")
                ax.axvline(values.mean(), color=color, ls="--", lw=1.2)
        when = f"epoch {last}" if last >= 0 else "before the first epoch"
        ax.set(xlabel=_goodness_label(run), ylabel="samples")
        _title(ax, f"{b}, {when}")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend above the peaks
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    _title(fig, "Goodness distributions (dashed: means)", run)
    return _save(fig, path)


def _plot_goodness_means(run: Run, path: Path) -> Path | str:
    blocks = [b for b in _blocks_of(run, "g_pos") if f"g_neg/{b}" in run.metrics]
    if not blocks:
        return "no mean goodness per epoch was logged (metrics 'g_pos/<block>' and 'g_neg/<block>')"
    m = run.metrics
    fig = _figure()
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    for i, b in enumerate(blocks):
        c = colors[i % 10]
        ax.plot(m["epoch"], m[f"g_pos/{b}"], "-", color=c, marker="o", markersize=3, label=f"{b} positive")
        ax.plot(m["epoch"], m[f"g_neg/{b}"], ":", color=c, marker="x", markersize=4, label=f"{b} negative")
    ax.set(ylabel="mean " + _goodness_label(run))
    _title(ax, "Mean goodness of positive (solid) and negative (dotted) data", run)
    _epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=max(1, len(blocks) // 3))
    return _save(fig, path)


def _plot_confusion(run: Run, path: Path) -> Path | str:
    if not run.confusion:
        return "no confusion matrix was logged (RunWriter.log_confusion)"
    c = run.confusion[-1]
    mat = np.asarray(c["matrix"], dtype=np.int64)
    labels = c["labels"]
    n = mat.shape[0]
    totals = mat.sum(axis=1, keepdims=True)
    frac = np.divide(mat, totals, out=np.zeros(mat.shape, dtype=float), where=totals > 0)
    size = min(max(4.5, 0.5 * n + 2.5), 11)
    fig = _figure(width=size + 1.2, height=size)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(mat[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8 if n > 10 else 10,
                    color="white" if frac[i, j] > 0.6 else "black",
                )
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=labels, rotation=45 if max(map(len, labels)) > 2 else 0)
    ax.set_yticks(ticks, labels=labels)
    acc = np.trace(mat) / max(mat.sum(), 1)
    when = f", epoch {c['epoch']}" if c.get("epoch", -1) >= 0 else ""
    ax.set(xlabel="predicted class", ylabel="true class")
    _title(ax, f"Confusion matrix ({c.get('split', 'test')} set{when}): accuracy {100 * acc:.1f} %")
    fig.colorbar(im, ax=ax, label="fraction of the true class (numbers: samples)", shrink=0.85)
    return _save(fig, path)


def _plot_cost(run: Run, path: Path) -> Path | str:
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
                ax.plot(ep, m["wall_seconds"], "k--", lw=1.2, label="wall clock (whole training)")
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
    fig = _figure(width=7.0, height=2.6 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (_, draw) in zip(axes, panels):
        draw(ax)
        ax.grid(alpha=0.3)
    _epoch_axis(axes[-1])
    _title(fig, "Cost of training", run)
    return _save(fig, path)


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


def _plot_drift(run: Run, path: Path) -> Path | str:
    probes = {b: p for b, p in run.probes.items() if p["y"].shape[0] >= 2}
    if not probes:
        return "fewer than two probe measurements were logged (RunWriter.set_probes + log_probe)"
    fig = _figure(width=7.0, height=6.0)
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
        units = _output_units(run, b)
        mean = p["y"].astype(np.float64).mean(axis=(1, 2))
        ax2.plot(steps, mean, marker="o", markersize=3, color=f"C{i}", label=f"{b} ({p['x'].shape[0]} probes, {units})")
    # a noiseless, drift-free system gives exact zeros: show them on a % axis, not a 1e-17 one
    ax1.set_ylim(0, max(1.25 * top, 0.1))
    ax1.set(ylabel="RMS change from the pre-training\nmeasurement (% of RMS output)")
    _title(ax1, "Drift of fixed probe measurements", run)
    units = sorted({_output_units(run, b) for b in probes})
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
    return _save(fig, path)


def _learning_queries(run: Run) -> np.ndarray | None:
    """Cumulative physical queries spent to learn, per epoch: ``queries/learning``, else the sum of ``train_queries``."""
    m = run.metrics
    if "queries/learning" in m and np.isfinite(m["queries/learning"]).any():
        return np.asarray(m["queries/learning"], dtype=np.float64)
    if "train_queries" in m:
        return np.cumsum(np.nan_to_num(np.asarray(m["train_queries"], dtype=np.float64)))
    return None


def _accuracy_key(run: Run) -> str | None:
    """The per-epoch held-out accuracy: ``val_accuracy``, or ``test_accuracy`` for runs written before validation."""
    for key in ("val_accuracy", "test_accuracy"):
        if key in run.metrics and np.isfinite(run.metrics[key]).any():
            return key
    return None


def _plot_accuracy_vs_queries(run: Run, path: Path) -> Path | str:
    """Accuracy against the physical queries spent: the cost axis on which methods are fairly compared."""
    q = _learning_queries(run)
    key = _accuracy_key(run)
    final = run.summary.get("test_accuracy")
    has_final = isinstance(final, (int, float)) and math.isfinite(final)
    if q is None or not q.size or (key is None and not has_final):
        return (
            "no accuracy against queries: needs 'queries/learning' or 'train_queries' and 'val_accuracy', "
            "'test_accuracy' or a final test accuracy"
        )
    m = run.metrics
    fig = _figure()
    ax = fig.add_subplot()
    if key is not None:
        ok = np.isfinite(m[key]) & np.isfinite(q)
        label = "validation split (per epoch)" if key == "val_accuracy" else "test split (per epoch)"
        ax.plot(q[ok], 100 * m[key][ok], "-", marker="o", markersize=3, label=label)
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
    _title(ax, "Accuracy against physical queries", run)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


#: (file name, title, function) of every plot main_report can make.
def _plot_continual(run: Run, path: Path) -> Path | str | None:
    """Continual training (``continual_ticks``): accuracy and probe drift against queries, detections marked."""
    ticks = [e["fields"] for e in run.events if e["kind"] == "continual_tick"]
    detections = [e["fields"] for e in run.events if e["kind"] == "drift_detected"]
    if not ticks:
        return None  # not a continual run (config key continual_ticks): nothing to show, nothing skipped
    acc_key = next((k for k in ("val_accuracy", "test_accuracy") if k in ticks[0]), None)
    fig = _figure(7.0, 6.0)
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
    _title(top, f"Continual training: {len(detections)} drift detection(s)", run)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return _save(fig, path)


PLOTS: list[tuple[str, str, Callable[[Run, Path], Path | str | None]]] = [
    ("learning_curves.png", "Learning curves", _plot_learning_curves),
    ("loss.png", "Loss per block", _plot_loss),
    ("goodness.png", "Goodness distributions", _plot_goodness),
    ("goodness_means.png", "Mean goodness per epoch", _plot_goodness_means),
    ("confusion.png", "Confusion matrix", _plot_confusion),
    ("cost.png", "Queries, device time and compute", _plot_cost),
    ("drift.png", "Drift probes", _plot_drift),
    ("accuracy_vs_queries.png", "Accuracy against physical queries", _plot_accuracy_vs_queries),
    ("continual.png", "Continual training and drift detections", _plot_continual),
]


# ---------------------------------------------------------------------- report
def main_report(path: str | os.PathLike, out_dir: str | os.PathLike | None = None, fmt: str = "png") -> ReportFiles:
    """Write the plots whose data the run holds (as ``fmt``: png, pdf or svg), and ``summary.md``; return the files.

    ``out_dir`` defaults to ``<run file without .h5>_report/`` next to the
    run file. The result's ``skipped`` maps each plot not made to the reason.
    """
    fmt = checks.choice("format", fmt, FORMATS)
    run = load(path)
    out = Path(out_dir) if out_dir is not None else run.path.with_name(run.path.stem + "_report")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: dict[str, str] = {}
    made: list[tuple[str, str]] = []
    for name, title, fn in PLOTS:
        filename = str(Path(name).with_suffix("." + fmt))
        result = fn(run, out / filename)
        if isinstance(result, Path):
            written.append(result)
            made.append((filename, title))
        elif result is not None:  # None: the figure does not apply to this kind of run (not worth a note)
            skipped[filename] = result
    summary = out / "summary.md"
    summary.write_text(_summary_markdown(run, made, skipped), encoding="utf-8")
    written.append(summary)
    return ReportFiles(written, skipped)


def _summary_markdown(run: Run, made: list[tuple[str, str]], skipped: dict[str, str]) -> str:
    k = run.key_numbers()
    a = run.attrs
    commit = a.get("git_commit") or "unknown"
    best = f"{_pct(k['best_test_accuracy'])} (epoch {k['best_epoch']})" if k["best_epoch"] is not None else "-"
    rows = [
        ("file", f"`{run.path}`"),
        ("status", k["status"]),
        ("started / ended", f"{a.get('start_time', '-')} / {a.get('end_time') or '-'}"),
        ("host, seed", f"{a.get('host', '-')}, seed {a.get('seed', '-')}"),
        ("physnn", f"{a.get('physnn_version', '?')} (git {commit[:12]}), run-format {a.get('format_version')}"),
        ("epochs logged", f"{k['epochs']} (checkpoints: {k['checkpoints']})"),
        ("final test accuracy", _pct(k["test_accuracy"])),
        ("best test accuracy", best),
        ("final train accuracy", _pct(k["train_accuracy"])),
        ("physical queries", f"{_count(k['queries'])} samples"),
        ("device time", _duration(k["device_seconds"])),
        ("wall time", _duration(k["wall_seconds"])),
    ]
    lines = [f"# Run report: {run.name}", "", _md_table(["", ""], rows), ""]
    if run.systems:
        srows = []
        for b, d in run.systems.items():
            s = d.get("spec", {}) if isinstance(d.get("spec"), dict) else {}
            limits = f"{s.get('low', '-')} .. {s.get('high', '-')} {s.get('units', '')}".strip()
            levels = s.get("levels") or "continuous"
            srows.append(
                [
                    b,
                    str(d.get("class", "-")),
                    str(s.get("n_inputs", "-")),
                    str(s.get("n_outputs", "-")),
                    limits,
                    str(levels),
                ]
            )
        lines += [
            "## Physical systems",
            "",
            _md_table(["block", "class", "inputs", "outputs", "drive limits", "levels"], srows),
            "",
        ]
    if run.dataset:
        lines += ["## Data", "", "```json", json.dumps(run.dataset, indent=1)[:3000], "```", ""]
    lines += ["## Plots", ""]
    for filename, title in made:
        lines += [f"### {title}", "", f"![{title}]({filename})", ""]
    if skipped:
        lines += ["## Plots not made", ""]
        lines += [f"- `{f}`: {reason}" for f, reason in skipped.items()]
        lines.append("")
    if run.events:
        counts = Counter(e["kind"] for e in run.events)
        erows = [[kind, str(n)] for kind, n in counts.most_common()]
        lines += ["## Events", "", _md_table(["kind", "count"], erows), ""]
        faults = [e for e in run.events if e["kind"] not in ("run_started", "run_closed", "resumed", "late_metric")]
        if faults:
            lines += ["Last events other than start/close:", ""]
            for e in faults[-10:]:
                lines.append(f"- `{e['kind']}`: `{json.dumps(e['fields'])[:200]}`")
            lines.append("")
    lines += ["## Configuration", "", "```json", json.dumps(run.config, indent=1), "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------ compare and ls
def _run_labels(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{p.parent.name}/{p.stem}" if p.stem in dup else p.stem for p in paths]


#: Config keys that never tell compared runs apart (where a file went, which thread count ran it).
_NOT_A_DIFFERENCE = frozenset({"output", "data_path", "resume", "threads", "device", "log_samples", "eval_samples"})
#: Settings named first when they differ: what a reader of a comparison asks about first.
_FIRST = ("seed", "dataset", "system")


def _settings(run: Run) -> dict[str, str]:
    """A run's settings as ``name -> value`` text, option dicts flattened to their option names."""
    cfg = run.config if isinstance(run.config, dict) else {}
    flat: dict[str, str] = {"seed": str(run.attrs.get("seed", cfg.get("seed", "?")))}
    for key, value in cfg.items():
        if key in _NOT_A_DIFFERENCE or key == "method":
            continue
        if isinstance(value, dict):
            flat.update({str(k): str(v) for k, v in value.items()})
        else:
            flat.setdefault(key, str(value))
    return flat


def _curve_labels(runs: Sequence[Run], names: Sequence[str], most: int = 3) -> list[str]:
    """How each compared run is named in the legend: its method, plus the settings that tell it apart.

    A legend of time stamps says nothing; the method is what a comparison is
    about. Runs of the same method get the (at most ``most``) settings that
    differ between them, seed, data set and system first (``seed=1``,
    ``noise=False``; an option one run does not set reads ``(default)``); the
    run's name is the last resort.
    """
    methods = [METHOD_LABELS.get(_method(r), _method(r)) for r in runs]
    settings = [_settings(r) for r in runs]
    labels = list(methods)
    for method in set(methods):
        group = [i for i, m in enumerate(methods) if m == method]
        if len(group) < 2:
            continue
        keys = sorted(
            set().union(*(settings[i] for i in group)),
            key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), k),
        )
        differ = [k for k in keys if len({settings[i].get(k, "(default)") for i in group}) > 1][:most]
        for i in group:
            if differ:
                labels[i] += ", " + ", ".join(f"{k}={settings[i].get(k, '(default)')}" for k in differ)
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({n})" if labels.count(lab) > 1 else lab for lab, n in zip(labels, names)]
    return labels


def compare(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, fmt: str = "png") -> str:
    """A table of the key numbers of several runs; with ``out``, also a figure overlaying their accuracy curves.

    ``out`` is the figure file (its suffix .png/.pdf/.svg sets the format) or a
    folder, which gets ``compare.<fmt>`` inside it.
    """
    fmt = checks.choice("format", fmt, FORMATS)
    if not paths:
        raise ValueError("compare needs at least one run file")
    runs = [load(p) for p in paths]
    labels = _run_labels([r.path for r in runs])
    rows = []
    for label, r in zip(labels, runs):
        k = r.key_numbers()
        best = f"{_pct(k['best_test_accuracy'])} @{k['best_epoch']}" if k["best_epoch"] is not None else "-"
        cfg = r.config if isinstance(r.config, dict) else {}
        setup = f"{cfg.get('method', 'mfff')}: {cfg.get('dataset', '?')}/{cfg.get('system', '?')}"
        rows.append(
            [
                label,
                setup,
                k["status"],
                str(k["epochs"]),
                _pct(k["train_accuracy"]),
                _pct(k["test_accuracy"]),
                best,
                _count(k["queries"]),
                _duration(k["device_seconds"]),
                _duration(k["wall_seconds"]),
            ]
        )
    table = _table(
        [
            "run",
            "method: data/system",
            "status",
            "epochs",
            "train acc",
            "test acc",
            "best test",
            "queries",
            "device time",
            "wall time",
        ],
        rows,
        right=(3, 4, 5, 6, 7, 8, 9),
    )
    if out is not None:
        target = Path(out)
        if target.suffix.lower().lstrip(".") not in FORMATS:
            target.mkdir(parents=True, exist_ok=True)
            target = target / f"compare.{fmt}"
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
        fig = _figure(width=8.0, height=4.8)
        ax = fig.add_subplot()
        plotted = False
        for i, (label, r) in enumerate(zip(_curve_labels(runs, labels), runs)):
            m = r.metrics
            held_out = _accuracy_key(r)
            for key, style in ((held_out, "-"), ("train_accuracy", "--")):
                if key is not None and key in m and np.isfinite(m[key]).any():
                    ok = np.isfinite(m[key])
                    suffix = {"val_accuracy": "validation", "test_accuracy": "test"}.get(key, "training batches")
                    ax.plot(
                        m["epoch"][ok],
                        100 * m[key][ok],
                        style,
                        color=f"C{i % 10}",
                        marker="o",
                        markersize=3,
                        label=f"{label} ({suffix})",
                    )
                    plotted = True
        if not plotted:
            ax.text(0.5, 0.5, "no per-epoch accuracy in these runs", ha="center", va="center", transform=ax.transAxes)
        ax.set(ylabel="accuracy (%)", ylim=(0, 100))
        _title(ax, "Accuracy of the compared runs (solid: held-out split, dashed: training batches)")
        epochs = np.concatenate([r.metrics["epoch"] for r in runs])
        if epochs.size:  # every epoch trained, not only those validated
            ax.set_xlim(float(epochs.min()) - 0.3, float(epochs.max()) + 0.3)
        _epoch_axis(ax)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=8, loc="lower right")
        _save(fig, target)
        table += f"\n\nplot: {target}"
    return table


def ls(folder: str | os.PathLike = "runs") -> str:
    """A table of the run files (``*.h5``, ``*.hdf5``) in ``folder``, oldest first, with their key numbers.

    Files that are not readable runs are listed too, with the reason.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".h5", ".hdf5") and p.is_file())
    if not files:
        return f"no run files (*.h5, *.hdf5) in {folder}"
    rows: list[tuple[float, list[str]]] = []
    for p in files:
        try:
            r = load(p)
        except RunFileError as exc:
            rows.append((math.inf, [p.name, "-", "unreadable", "-", "-", "-", "-", exc.problem.split(";")[0][:80]]))
            continue
        k = r.key_numbers()
        note = "" if k["epochs"] else "no epoch logged yet"
        cells = [
            p.name,
            _method(r),
            k["status"],
            str(k["start_time"]),
            str(k["epochs"]),
            _pct(k["test_accuracy"]),
            _count(k["queries"]),
            note,
        ]
        rows.append((float(r.attrs.get("start_time_unix", 0.0)), cells))
    rows.sort(key=lambda t: t[0])
    return _table(
        ["file", "method", "status", "started", "epochs", "test acc", "queries", "note"],
        [r for _, r in rows],
        right=(4, 5, 6),
    )
