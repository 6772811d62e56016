"""What ``physnn compare`` shows: a table of several runs' key numbers and a figure overlaying their curves.

A comparison is about methods and settings, so curves are labelled by method
and by the settings that tell runs of one method apart, not by time stamps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from physnn.analysis.plotting import METHOD_LABELS, accuracy_key, epoch_axis, method_of, new_figure, set_title
from physnn.analysis.text import fmt_count, fmt_duration, fmt_pct, text_table
from physnn.runlog import Run

__all__ = ["run_labels", "curve_labels", "compare_table", "compare_figure"]


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Run names for a table: the file stem, with its folder where two stems are the same."""
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


def curve_labels(runs: Sequence[Run], names: Sequence[str], most: int = 3) -> list[str]:
    """How each compared run is named in the legend: its method, plus the settings that tell it apart.

    A legend of time stamps says nothing; the method is what a comparison is
    about. Runs of the same method get the (at most ``most``) settings that
    differ between them, seed, data set and system first (``seed=1``,
    ``noise=False``; an option one run does not set reads ``(default)``); the
    run's name is the last resort.
    """
    methods = [METHOD_LABELS.get(method_of(r), method_of(r)) for r in runs]
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


def compare_table(runs: Sequence[Run], labels: Sequence[str]) -> str:
    """One row of key numbers per run (``labels``: how each run is named in the first column)."""
    rows = []
    for label, r in zip(labels, runs):
        k = r.key_numbers()
        best = f"{fmt_pct(k['best_test_accuracy'])} @{k['best_epoch']}" if k["best_epoch"] is not None else "-"
        cfg = r.config if isinstance(r.config, dict) else {}
        setup = f"{cfg.get('method', 'mfff')}: {cfg.get('dataset', '?')}/{cfg.get('system', '?')}"
        rows.append(
            [
                label,
                setup,
                k["status"],
                str(k["epochs"]),
                fmt_pct(k["train_accuracy"]),
                fmt_pct(k["test_accuracy"]),
                best,
                fmt_count(k["queries"]),
                fmt_duration(k["device_seconds"]),
                fmt_duration(k["wall_seconds"]),
            ]
        )
    return text_table(
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


def compare_figure(runs: Sequence[Run], labels: Sequence[str]) -> Figure:
    """The runs' per-epoch held-out (solid) and training-batch (dashed) accuracies on one axes."""
    fig = new_figure(width=8.0, height=4.8)
    ax = fig.add_subplot()
    plotted = False
    for i, (label, r) in enumerate(zip(curve_labels(runs, labels), runs)):
        m = r.metrics
        held_out = accuracy_key(r)
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
    set_title(ax, "Accuracy of the compared runs (solid: held-out split, dashed: training batches)")
    epochs = np.concatenate([r.metrics["epoch"] for r in runs])
    if epochs.size:  # every epoch trained, not only those validated
        ax.set_xlim(float(epochs.min()) - 0.3, float(epochs.max()) + 0.3)
    epoch_axis(ax)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8, loc="lower right")
    return fig
