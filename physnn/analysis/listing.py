"""``physnn ls``: the run files of a folder with their key numbers, one line each."""

from __future__ import annotations

import math
import os
from pathlib import Path

from physnn.analysis.plotting import method_of
from physnn.analysis.text import fmt_count, fmt_duration, fmt_pct, text_table
from physnn.runlog import RunFileError, load

__all__ = ["ls"]


def ls(folder: str | os.PathLike = "runs") -> str:
    """A table of the run files (``*.h5``, ``*.hdf5``) in ``folder``, oldest first, with their key numbers.

    ``time`` is the time the run's writers ran (a resumed run: its segments, without the gap between them),
    ``elapsed`` first start to last record. Files that are not readable runs are listed too, with the reason.
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
            problem = exc.problem.split(";")[0][:80]
            rows.append((math.inf, [p.name, "-", "unreadable", "-", "-", "-", "-", "-", "-", _size(p), problem]))
            continue
        k = r.key_numbers()
        note = "" if k["epochs"] else "no epoch logged yet"
        cells = [
            p.name,
            method_of(r),
            k["status"],
            str(k["start_time"]),
            str(k["epochs"]),
            fmt_pct(k["test_accuracy"]),
            fmt_count(k["queries"]),
            fmt_duration(k["wall_seconds"]),  # the writers' own time, without gaps between a stop and its resume
            fmt_duration(k["elapsed_seconds"]),  # first start to last record, gaps included
            _size(p),
            note,
        ]
        rows.append((float(r.attrs.get("start_time_unix", 0.0)), cells))
    rows.sort(key=lambda t: t[0])
    return text_table(
        ["file", "method", "status", "started", "epochs", "test acc", "queries", "time", "elapsed", "size", "note"],
        [r for _, r in rows],
        right=(4, 5, 6, 7, 8, 9),
    )


def _size(path: Path) -> str:
    """A file's size in MiB (a lab keeps hundreds of run files: what each takes matters)."""
    try:
        return f"{path.stat().st_size / 2**20:.1f} MiB"
    except OSError:
        return "-"
