"""``summary.md``: the Markdown page of a run report (key numbers, systems, data, figures, events, config)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from physnn.analysis.plotting import accuracy_intervals
from physnn.analysis.text import fmt_accuracy, fmt_count, fmt_duration, fmt_pct, markdown_table
from physnn.runlog import Run

__all__ = ["summary_markdown"]


def summary_markdown(run: Run, made: list[tuple[str, str]], skipped: dict[str, str]) -> str:
    """The page: ``made`` lists (file, title) of the figures written, ``skipped`` the reason for each not made."""
    k = run.key_numbers()
    a = run.attrs
    commit = a.get("git_commit") or "unknown"
    best = "-"
    if k["best_epoch"] is not None:
        best = f"{_at_epoch(run, 'test_accuracy', k['best_epoch'])} (epoch {k['best_epoch']})"
    s = run.summary
    final_test = fmt_accuracy(k["test_accuracy"], s.get("test_n"), s.get("test_ci95_low"), s.get("test_ci95_high"))
    rows = [
        ("file", f"`{run.path}`"),
        ("status", k["status"]),
        ("started / ended", f"{a.get('start_time', '-')} / {a.get('end_time') or '-'}"),
        ("host, seed", f"{a.get('host', '-')}, seed {a.get('seed', '-')}"),
        ("physnn", f"{a.get('physnn_version', '?')} (git {commit[:12]}), run-format {a.get('format_version')}"),
        ("epochs logged", f"{k['epochs']} (checkpoints: {k['checkpoints']})"),
        ("final test accuracy", final_test),
        ("best test accuracy", best),
        *_validation_rows(run),
        ("final train accuracy", fmt_pct(k["train_accuracy"])),
        ("physical queries", f"{fmt_count(k['queries'])} samples"),
        ("device time", fmt_duration(k["device_seconds"])),
        # the writers' own time, and first start to last record with the gaps between a stop and its resume
        ("wall time", fmt_duration(k["wall_seconds"])),
        ("elapsed", f"{fmt_duration(k['elapsed_seconds'])} ({k['segments']} writer segment(s), gaps included)"),
    ]
    lines = [f"# Run report: {run.name}", "", markdown_table(["", ""], rows), ""]
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
            markdown_table(["block", "class", "inputs", "outputs", "drive limits", "levels"], srows),
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
        lines += ["## Events", "", markdown_table(["kind", "count"], erows), ""]
        faults = [e for e in run.events if e["kind"] not in ("run_started", "run_closed", "resumed", "late_metric")]
        if faults:
            lines += ["Last events other than start/close:", ""]
            for e in faults[-10:]:
                lines.append(f"- `{e['kind']}`: `{json.dumps(e['fields'])[:200]}`")
            lines.append("")
    lines += ["## Configuration", "", "```json", json.dumps(run.config, indent=1), "```", ""]
    return "\n".join(lines)


def _at_epoch(run: Run, key: str, epoch: int) -> str:
    """The held-out accuracy ``key`` logged at ``epoch``, with its n and interval when the file has them."""
    m = run.metrics
    i = int(np.flatnonzero(m["epoch"] == epoch)[-1])
    ci = accuracy_intervals(run, key)
    if ci is None:
        return fmt_accuracy(float(m[key][i]))
    return fmt_accuracy(float(m[key][i]), float(ci[0][i]), float(ci[1][i]), float(ci[2][i]))


def _validation_rows(run: Run) -> list[tuple[str, str]]:
    """The last and the best validation accuracy, each with its n and 95 % interval (when the file has n)."""
    m = run.metrics
    v = m.get("val_accuracy")
    if v is None or not np.isfinite(v).any():
        return []
    last = int(np.flatnonzero(np.isfinite(v))[-1])
    best = int(np.nanargmax(v))
    return [
        (
            "last validation accuracy",
            f"{_at_epoch(run, 'val_accuracy', int(m['epoch'][last]))} (epoch {m['epoch'][last]})",
        ),
        (
            "best validation accuracy",
            f"{_at_epoch(run, 'val_accuracy', int(m['epoch'][best]))} (epoch {m['epoch'][best]})",
        ),
    ]
