"""Plots and summaries from run files: ``physnn report``, ``physnn compare``, ``physnn ls``.

Every function reads run files through :func:`physnn.runlog.load`, so it works
on finished runs, on runs still being written and on runs whose writer was
killed. This module only decides which figures a report holds and where files
go; the figures are drawn by :mod:`~physnn.analysis.training_figures`,
:mod:`~physnn.analysis.cost_figures`, :mod:`~physnn.analysis.drift_figures`
and :mod:`~physnn.analysis.comparison`, the text by
:mod:`~physnn.analysis.summary` and :mod:`~physnn.analysis.listing`.

Each plot is made only when its data is in the file; :func:`main_report`
says in ``summary.md`` (and in the ``skipped`` attribute of its result) which
plots were skipped and why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from matplotlib.figure import Figure

from physnn.analysis.comparison import compare_figure, compare_table, run_labels
from physnn.analysis.comparison import curve_labels as _curve_labels  # noqa: F401  (kept for callers of the old name)
from physnn.analysis.cost_figures import plot_accuracy_vs_queries, plot_cost
from physnn.analysis.drift_figures import plot_continual, plot_drift
from physnn.analysis.listing import ls
from physnn.analysis.plotting import FORMATS, METHOD_LABELS
from physnn.analysis.plotting import save as _save
from physnn.analysis.plotting import wrap as _wrap  # noqa: F401  (kept for callers of the old name)
from physnn.analysis.summary import summary_markdown
from physnn.analysis.training_figures import (
    plot_confusion,
    plot_goodness,
    plot_goodness_means,
    plot_learning_curves,
    plot_loss,
)
from physnn.core import checks
from physnn.runlog import load

__all__ = ["ReportFiles", "main_report", "compare", "ls", "PLOTS", "FORMATS", "METHOD_LABELS"]


class ReportFiles(list):
    """The files :func:`main_report` wrote (a list of paths); ``skipped`` maps plot file -> reason."""

    def __init__(self, files: Sequence[Path] = (), skipped: dict[str, str] | None = None):
        super().__init__(files)
        self.skipped: dict[str, str] = dict(skipped or {})


#: (file name, title, function) of every plot main_report can make. A function returns the figure, a reason
#: why the run has no data for it, or None when the figure does not apply to this kind of run (no note).
PLOTS: list[tuple[str, str, Callable[..., Figure | str | None]]] = [
    ("learning_curves.png", "Learning curves", plot_learning_curves),
    ("loss.png", "Loss per block", plot_loss),
    ("goodness.png", "Goodness distributions", plot_goodness),
    ("goodness_means.png", "Mean goodness per epoch", plot_goodness_means),
    ("confusion.png", "Confusion matrix", plot_confusion),
    ("cost.png", "Queries, device time and compute", plot_cost),
    ("drift.png", "Drift probes", plot_drift),
    ("accuracy_vs_queries.png", "Accuracy against physical queries", plot_accuracy_vs_queries),
    ("continual.png", "Continual training and drift detections", plot_continual),
]


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
    for name, title, plot in PLOTS:
        filename = str(Path(name).with_suffix("." + fmt))
        result = plot(run)
        if isinstance(result, Figure):
            written.append(_save(result, out / filename))
            made.append((filename, title))
        elif result is not None:
            skipped[filename] = result
    summary = out / "summary.md"
    summary.write_text(summary_markdown(run, made, skipped), encoding="utf-8")
    written.append(summary)
    return ReportFiles(written, skipped)


def compare(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, fmt: str = "png") -> str:
    """A table of the key numbers of several runs; with ``out``, also a figure overlaying their accuracy curves.

    ``out`` is the figure file (its suffix .png/.pdf/.svg sets the format) or a
    folder, which gets ``compare.<fmt>`` inside it.
    """
    fmt = checks.choice("format", fmt, FORMATS)
    if not paths:
        raise ValueError("compare needs at least one run file")
    runs = [load(p) for p in paths]
    labels = run_labels([r.path for r in runs])
    table = compare_table(runs, labels)
    if out is not None:
        target = Path(out)
        if target.suffix.lower().lstrip(".") not in FORMATS:
            target.mkdir(parents=True, exist_ok=True)
            target = target / f"compare.{fmt}"
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
        _save(compare_figure(runs, labels), target)
        table += f"\n\nplot: {target}"
    return table
