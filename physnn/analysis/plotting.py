"""The canvas and the labels every report figure shares.

Figures are drawn with matplotlib's object API on the Agg canvas: no pyplot, no
global backend switch, nothing that disturbs a notebook session. Every figure
names the method and the run that made it (:func:`set_title`), wrapped so a long
run name is never cut off at the edge of the saved image.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from physnn.runlog import Run

__all__ = [
    "FORMATS",
    "DPI",
    "METHOD_LABELS",
    "new_figure",
    "save",
    "wrap",
    "set_title",
    "output_units",
    "epoch_axis",
    "method_of",
    "run_label",
    "blocks_of",
    "accuracy_key",
    "accuracy_intervals",
    "n_text",
]

#: Figure file formats: PNG for screens, PDF and SVG for papers (vector, scale without blur).
FORMATS = ("png", "pdf", "svg")
DPI = 150  # raster resolution of PNG figures (vector formats ignore it)


def new_figure(width: float = 7.0, height: float = 4.4) -> Figure:
    """An empty figure on its own Agg canvas (no pyplot state), laid out so labels fit."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Save in the format the suffix names (png/pdf/svg); PNG at :data:`DPI`."""
    fig.savefig(path, dpi=DPI, format=path.suffix.lstrip(".").lower() or "png")
    return path


def wrap(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points.

    Run names are long (``digits-optics-mfff-s0-20261201-160943-55fdaa``) and a
    title that runs past the canvas is cut by the saved image; an average glyph of
    DejaVu Sans is ~0.6 em wide, so ``width_in * 72 / (0.6 * fontsize)`` characters fit.
    """
    chars = max(20, int(width_in * 72 / (0.6 * fontsize)) - 2)
    return "\n".join(
        textwrap.fill(part, chars, break_long_words=True, break_on_hyphens=False) for part in text.split("\n")
    )


def set_title(target: Any, what: str, run: Run | None = None, *, fig: Figure | None = None) -> None:
    """Title an axes (or a figure's suptitle) with ``what`` and the run's method and name, wrapped to fit."""
    text = what if run is None else f"{what}\n{run_label(run)}"
    if isinstance(target, Figure):
        target.suptitle(wrap(text, target.get_figwidth()))
        return
    width = (fig or target.figure).get_figwidth() * target.get_position().width
    target.set_title(wrap(text, max(width, 3.0)))


def output_units(run: Run, block: str) -> str:
    """The unit a block's physical system reports its outputs in, from the run file's spec (or "output units")."""
    spec = run.systems.get(block, {}).get("spec", {}) if isinstance(run.systems.get(block), dict) else {}
    units = spec.get("output_units") if isinstance(spec, dict) else None
    return str(units) if units else "system output units"


def epoch_axis(ax: Any) -> None:
    """An x axis of whole epochs."""
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


def method_of(run: Run) -> str:
    """The training method a run used (``mfff`` for files written before methods were recorded)."""
    return str(run.config.get("method", "mfff"))


def run_label(run: Run) -> str:
    """``<method> — <run name>``: every figure says which method made it."""
    method = method_of(run)
    return f"{METHOD_LABELS.get(method, method)}, {run.name}"


def blocks_of(run: Run, prefix: str) -> list[str]:
    """The blocks that have a ``<prefix>/<block>`` metric, in the order logged."""
    return [k.split("/", 1)[1] for k in run.metrics if k.startswith(prefix + "/")]


def accuracy_key(run: Run) -> str | None:
    """The per-epoch held-out accuracy: ``val_accuracy``, or ``test_accuracy`` for runs written before validation."""
    for key in ("val_accuracy", "test_accuracy"):
        if key in run.metrics and np.isfinite(run.metrics[key]).any():
            return key
    return None


def accuracy_intervals(run: Run, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(n, low, high)`` per epoch of a held-out accuracy column (``val_accuracy`` or ``test_accuracy``), or
    None when the run file does not say how many samples it was measured on.

    Read from the trainer's ``<split>_n`` / ``<split>_ci_low`` / ``<split>_ci_high`` columns; a file that has
    the n but not the bounds (or, written before them, only ``eval_samples``) gets the 95 % Wilson interval
    computed from the accuracy and n. Epochs without a measurement are NaN.
    """
    from physnn.core.evaluation import wilson_interval

    m = run.metrics
    if key not in m:
        return None
    prefix = key.removesuffix("_accuracy")
    n_key = next((k for k in (f"{prefix}_n", "eval_samples") if k in m and np.isfinite(m[k]).any()), None)
    if n_key is None:
        return None
    acc = np.asarray(m[key], dtype=np.float64)
    n = np.where(np.isfinite(acc), np.asarray(m[n_key], dtype=np.float64), np.nan)
    lo_key, hi_key = f"{prefix}_ci_low", f"{prefix}_ci_high"
    if n_key != "eval_samples" and lo_key in m and hi_key in m:
        lo, hi = np.asarray(m[lo_key], dtype=np.float64), np.asarray(m[hi_key], dtype=np.float64)
    else:
        bounds = [
            wilson_interval(round(a * k), int(k)) if np.isfinite(a) and np.isfinite(k) and k > 0 else (np.nan,) * 2
            for a, k in zip(acc, n)
        ]
        lo, hi = (np.array(b, dtype=np.float64) for b in zip(*bounds)) if bounds else (np.array([]),) * 2
    return n, lo, hi


def n_text(n: np.ndarray) -> str:
    """``n=143`` (or ``n=32-143`` when evaluations used different sample counts) for a legend."""
    finite = n[np.isfinite(n) & (n > 0)]
    if not finite.size:
        return ""
    lo, hi = int(finite.min()), int(finite.max())
    return f"n={lo}" if lo == hi else f"n={lo}-{hi}"
