"""The main job (``physnn train`` defaults: digits through the optical simulator), timed, beside its controls.

Prints a short table: test accuracy (the test split, measured once at the end; n and the 95 % interval of
one run) and wall time of the default MF-FF run per seed -- exactly what ``physnn train`` runs, recipe
included -- the same stack with the optics replaced by identity (does the physics add anything?), and
two raw-pixel controls on the same split, tuned on the same validation split the PNN uses (logistic
regression over C, a 256-unit MLP over its L2 penalty), then measured once on the test split.

    python benchmarks/main_job.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--no-controls", action="store_true", help="skip identity / raw-pixel references")
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from physnn.core.evaluation import Accuracy
    from physnn.run.config import RunConfig
    from physnn.run.experiment import load_data, run_experiment, split_validation
    from physnn.run.recipes import with_recipe

    rows = []
    for seed in args.seeds:
        cfg = RunConfig.from_dict(with_recipe({"seed": seed}))  # what `physnn train --seed S` runs
        t = time.perf_counter()
        r = run_experiment(cfg, write_file=False, progress=False, echo=lambda s: None)
        rows.append(
            (
                "MF-FF, optics x2 (main job)",
                seed,
                r.test_accuracy,
                r.test_n,
                time.perf_counter() - t,
                r.train_queries,
                r.total_queries,
            )
        )
        if args.no_controls:
            continue
        t = time.perf_counter()
        ident = cfg.updated(system="identity", system_options={})
        r = run_experiment(ident, write_file=False, progress=False, echo=lambda s: None)
        rows.append(
            (
                "MF-FF, identity x2 (control)",
                seed,
                r.test_accuracy,
                r.test_n,
                time.perf_counter() - t,
                r.train_queries,
                r.total_queries,
            )
        )
        data = load_data(cfg)
        x, y, xv, yv = (t_.numpy() for t_ in split_validation(cfg, data))
        for name, grid in (
            (
                "logistic regression, raw pixels (C tuned)",
                [LogisticRegression(C=c, max_iter=3000) for c in (0.01, 0.1, 1.0, 10.0)],
            ),
            (
                "MLP 256, raw pixels (alpha tuned)",
                [MLPClassifier((256,), alpha=a, max_iter=500, random_state=seed) for a in (1e-4, 1e-3, 1e-2, 1e-1)],
            ),
        ):
            t = time.perf_counter()
            best = max(grid, key=lambda clf: clf.fit(x, y).score(xv, yv))  # chosen on validation, never on test
            pred = torch.as_tensor(best.predict(data.x_test.numpy()))
            acc = Accuracy.of(pred, data.y_test)
            rows.append((name, seed, acc.value, acc.n, time.perf_counter() - t, 0, 0))

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"{'method':42s} {'seed':>4s} {'test acc':>8s} {'n':>4s} {'wall s':>7s} {'train q':>9s} {'total q':>9s}")
    for name, seed, acc, n, wall, q, tq in rows:
        print(f"{name:42s} {seed:4d} {acc:8.4f} {n:4d} {wall:7.1f} {q:9d} {tq:9d}")
    by: dict[str, list[tuple[float, float]]] = {}
    for name, _, acc, _, wall, _, _ in rows:
        by.setdefault(name, []).append((acc, wall))
    if len(args.seeds) > 1:
        print(f"\nmean ± std over {len(args.seeds)} seeds")
        for name, v in by.items():
            accs = [a for a, _ in v]
            print(
                f"{name:42s} {statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}  "
                f"wall {statistics.mean(w for _, w in v):.1f} s"
            )


if __name__ == "__main__":
    main()
