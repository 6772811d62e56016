"""Plain-text and Markdown formatting of run figures: the tables of ``physnn ls``/``compare`` and ``summary.md``.

Numbers are shown the way a reader compares them across runs: accuracies as
percentages, query counts with thousands separators, durations in the unit that
keeps them short; a missing or non-finite value is ``-``, never ``nan``.
"""

from __future__ import annotations

import math
from typing import Sequence

__all__ = ["fmt_pct", "fmt_accuracy", "fmt_count", "fmt_duration", "text_table", "markdown_table"]


def fmt_pct(v: float | None) -> str:
    """An accuracy (fraction) as a percentage with one decimal."""
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def fmt_count(v: float | None) -> str:
    """A count; millions as ``12.3 M``."""
    if v is None or not math.isfinite(v):
        return "-"
    return f"{int(round(v)):,}" if abs(v) < 1e7 else f"{v / 1e6:.1f} M"


def fmt_duration(s: float | None) -> str:
    """Seconds as s, min or h, whichever keeps the number short."""
    if s is None or not math.isfinite(s):
        return "-"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A fixed-width text table; columns in ``right`` are right-aligned (numbers)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; pipes inside cells are escaped."""
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in esc])


def fmt_accuracy(
    value: float | None, n: float | None = None, low: float | None = None, high: float | None = None
) -> str:
    """An accuracy with its n and 95 % interval when known: ``96.5 % (138/143, 95 % CI 92.1-98.5 %)``.

    Why: an accuracy on 143 samples is +-3 points; printed without its n, one sample's flip reads as progress.
    """
    text = fmt_pct(value)
    if text == "-" or n is None or not math.isfinite(n) or n <= 0:
        return text
    k = int(round(n))
    text += f" ({int(round(value * k))}/{k}"
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f", 95 % CI {100 * low:.1f}-{100 * high:.1f} %"
    return text + ")"
