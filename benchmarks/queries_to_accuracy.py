"""Queries to accuracy of the main job: the old default, the new default and the validation stop rule.

Issue 19 asked for every scheduled validation on the whole validation split (not a 32-sample subsample)
at total / training queries <= 1.15; issue 22 asked for a default that stops when learning stops. This
runs, per seed, the main job (``physnn train``: digits, optics x 2 with the recipe's 1024-pixel camera,
MF-FF, 20 epochs) in three settings:

* **old default** -- evaluations every 5 epochs on a 32-sample subsample of the validation split;
* **new default** -- every 10 epochs on the whole validation split;
* **stop rule** -- the new default plus ``stop_on = "val_significant"`` (a paired exact McNemar test
  against the best evaluation so far), evaluations every 5 epochs, patience 2.

Each row gives the test accuracy (the test split measured once, with n and its 95 % interval), the
training and total queries and their ratio, and the validation curve (accuracy, n) at each evaluation.
Writes ``benchmarks/results/queries_to_accuracy.md`` and ``queries_to_accuracy.png`` (validation accuracy
with its 95 % interval against training queries; the final test as a star).

Usage::

    python benchmarks/queries_to_accuracy.py [--seeds 0 1 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from physnn.core.evaluation import Accuracy
from physnn.run.config import RunConfig
from physnn.run.experiment import run_experiment
from physnn.run.recipes import with_recipe

SETTINGS = {
    "old default (every 5 epochs, 32 samples)": {"eval_every": 5, "eval_samples": 32},
    "new default (every 10 epochs, whole split)": {},
    "stop rule (val_significant, every 5, patience 2)": {"eval_every": 5, "stop_on": "val_significant", "patience": 2},
}


def _run(seed: int, extra: dict) -> dict:
    cfg = RunConfig.from_dict(with_recipe({"seed": seed, **extra}), source="benchmark")
    t0 = time.perf_counter()
    r = run_experiment(cfg, write_file=False, progress=False, echo=lambda line: None)
    curve = [
        (e["queries/learning"], e["val_accuracy"], int(e["eval_samples"]))
        for e in r.history
        if e.get("val_accuracy") == e.get("val_accuracy") and "val_accuracy" in e
    ]
    return {
        "seed": seed,
        "test": Accuracy(round(r.test_accuracy * r.test_n), r.test_n),
        "train_queries": r.train_queries,
        "total_queries": r.total_queries,
        "epochs": len(r.history),
        "curve": curve,
        "wall": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for seed in args.seeds:  # interleaved: each seed runs every setting before the next seed
        for name, extra in SETTINGS.items():
            results[name].append(_run(seed, extra))
            print(f"seed {seed}: {name}: test {results[name][-1]['test']}", flush=True)
    lines = [
        "# Queries to accuracy of the main job (issues 19 and 22)",
        "",
        f"Command: `python benchmarks/queries_to_accuracy.py --seeds {' '.join(map(str, args.seeds))}`. "
        "Main job = `physnn train` (digits, optics x 2, 1024-pixel camera, MF-FF, at most 20 epochs); test split "
        "measured once per run (n per seed below); queries are physical samples.",
        "",
        "| setting | seeds | test accuracy (mean +- std) | epochs | training queries | total queries | total / training |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in results.items():
        accs = [r["test"].value for r in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        tq = statistics.mean(r["train_queries"] for r in rows)
        tot = statistics.mean(r["total_queries"] for r in rows)
        lines.append(
            f"| {name} | {len(rows)} | {statistics.mean(accs):.3f} +- {sd:.3f} | "
            f"{'/'.join(str(r['epochs']) for r in rows)} | {tq:,.0f} | {tot:,.0f} | {tot / tq:.3f} |"
        )
    lines += [
        "",
        "Per seed (test accuracy with n and 95 % interval; validation curve: training queries -> accuracy (n)):",
        "",
    ]
    for name, rows in results.items():
        for r in rows:
            curve = ", ".join(f"{q:,.0f} -> {a:.3f} ({n})" for q, a, n in r["curve"])
            lines.append(f"- {name}, seed {r['seed']}: test {r['test']}; {r['epochs']} epochs; {curve}")
    lines += [
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}, 1 thread.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "queries_to_accuracy.md").write_text("\n".join(lines) + "\n")
    (out / "queries_to_accuracy.json").write_text(
        json.dumps(
            {k: [{**r, "test": [r["test"].correct, r["test"].n]} for r in v] for k, v in results.items()}, indent=1
        )
    )
    _figure(results, out / "queries_to_accuracy.png")
    print("\n".join(lines))


def _figure(results: dict[str, list[dict]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for (name, rows), colour in zip(results.items(), ["tab:grey", "tab:blue", "tab:orange"]):
        for i, r in enumerate(rows):
            q = [c[0] for c in r["curve"]]
            acc = [Accuracy(round(a * n), n) for _, a, n in r["curve"]]
            lo = [a.value - a.interval[0] for a in acc]
            hi = [a.interval[1] - a.value for a in acc]
            ax.errorbar(
                q,
                [a.value for a in acc],
                yerr=[lo, hi],
                color=colour,
                alpha=0.7,
                capsize=2,
                label=name if i == 0 else None,
            )
            ax.plot([r["train_queries"]], [r["test"].value], marker="*", color=colour, markersize=10)
    ax.set_xlabel("training queries (physical samples)")
    ax.set_ylabel("accuracy (validation, 95 % CI; star: test)")
    ax.set_title("Main job: validation accuracy against training queries", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == "__main__":
    main()
