"""Figures of how training went: learning curves, loss, goodness, confusion matrix.

Each ``plot_*`` function takes a loaded :class:`~physnn.runlog.Run` and returns
a :class:`~matplotlib.figure.Figure`, or a one-line reason when the run holds
no data for it; :mod:`physnn.analysis.report` decides where the figure is saved.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from physnn.analysis.plotting import accuracy_intervals, blocks_of, epoch_axis, n_text, new_figure, set_title
from physnn.runlog import Run

__all__ = ["plot_learning_curves", "plot_loss", "plot_goodness", "plot_goodness_means", "plot_confusion"]


def plot_learning_curves(run: Run) -> Figure | str:
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
    fig = new_figure()
    ax = fig.add_subplot()
    for key, label, style in curves:
        ok = np.isfinite(m[key])
        ci = accuracy_intervals(run, key) if key != "train_accuracy" else None
        if ci is None:
            ax.plot(m["epoch"][ok], 100 * m[key][ok], style, marker="o", markersize=3, label=label)
            continue
        # a held-out accuracy with its n: the 95 % interval as error bars (a band once they would crowd)
        n, lo, hi = ci
        x, y = m["epoch"][ok], 100 * m[key][ok]
        label = f"{label} ({n_text(n[ok])}, 95 % CI)"
        if ok.sum() <= 40:
            yerr = np.vstack([y - 100 * lo[ok], 100 * hi[ok] - y])
            ax.errorbar(x, y, yerr=yerr, fmt=style, marker="o", markersize=3, capsize=3, elinewidth=1, label=label)
        else:
            (line,) = ax.plot(x, y, style, marker="o", markersize=3, label=label)
            ax.fill_between(x, 100 * lo[ok], 100 * hi[ok], color=line.get_color(), alpha=0.2, lw=0)
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
    set_title(ax, "Learning curves", run)
    if m["epoch"].size:  # every epoch trained, not only those validated (eval_every > 1 logs a few)
        ax.set_xlim(float(m["epoch"].min()) - 0.3, float(m["epoch"].max()) + 0.3)
    epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_loss(run: Run) -> Figure | str:
    blocks = blocks_of(run, "loss")
    if not blocks and "loss" not in run.metrics:
        return "no loss was logged (metrics 'loss/<block>')"
    m = run.metrics
    fig = new_figure()
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
    set_title(ax, what, run)
    epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(title="block" if blocks else None)
    return fig


def _goodness_label(run: Run) -> str:
    """Goodness is computed on the digital layer's activity, so it has no physical unit: say which function."""
    kind = str(run.config.get("goodness", "cosine")) if isinstance(run.config, dict) else "cosine"
    what = {"cosine": "cosine to the prototype", "mean_square": "mean square of the activity"}.get(kind, kind)
    return f"goodness ({what}, dimensionless)"


def plot_goodness(run: Run) -> Figure | str:
    if not run.goodness:
        return "no goodness values were logged (RunWriter.log_goodness)"
    blocks = list(run.goodness)
    fig = new_figure(width=min(4.2 * len(blocks), 12.6) + 0.6, height=3.8)
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
        set_title(ax, f"{b}, {when}")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.35)  # room for the legend above the peaks
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    set_title(fig, "Goodness distributions (dashed: means)", run)
    return fig


def plot_goodness_means(run: Run) -> Figure | str:
    blocks = [b for b in blocks_of(run, "g_pos") if f"g_neg/{b}" in run.metrics]
    if not blocks:
        return "no mean goodness per epoch was logged (metrics 'g_pos/<block>' and 'g_neg/<block>')"
    m = run.metrics
    fig = new_figure()
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    for i, b in enumerate(blocks):
        c = colors[i % 10]
        ax.plot(m["epoch"], m[f"g_pos/{b}"], "-", color=c, marker="o", markersize=3, label=f"{b} positive")
        ax.plot(m["epoch"], m[f"g_neg/{b}"], ":", color=c, marker="x", markersize=4, label=f"{b} negative")
    ax.set(ylabel="mean " + _goodness_label(run))
    set_title(ax, "Mean goodness of positive (solid) and negative (dotted) data", run)
    epoch_axis(ax)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=max(1, len(blocks) // 3))
    return fig


def plot_confusion(run: Run) -> Figure | str:
    if not run.confusion:
        return "no confusion matrix was logged (RunWriter.log_confusion)"
    c = run.confusion[-1]
    mat = np.asarray(c["matrix"], dtype=np.int64)
    labels = c["labels"]
    n = mat.shape[0]
    totals = mat.sum(axis=1, keepdims=True)
    frac = np.divide(mat, totals, out=np.zeros(mat.shape, dtype=float), where=totals > 0)
    size = min(max(4.5, 0.5 * n + 2.5), 11)
    fig = new_figure(width=size + 1.2, height=size)
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
    set_title(ax, f"Confusion matrix ({c.get('split', 'test')} set{when}): accuracy {100 * acc:.1f} %")
    fig.colorbar(im, ax=ax, label="fraction of the true class (numbers: samples)", shrink=0.85)
    return fig
