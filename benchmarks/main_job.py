"""The main job (``physnn train`` defaults: digits through the optical simulator), timed.

Prints a short table: test accuracy and wall time of the default MF-FF run per
seed, the same stack with the optics replaced by identity (does the physics
add anything?), and two raw-pixel references on the same split (logistic
regression, a 256-unit MLP).

    python benchmarks/main_job.py [--seeds 0 1 2] [--threads 2]
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
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-controls", action="store_true", help="skip identity / raw-pixel references")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from physnn.config import RunConfig
    from physnn.data import load_digits
    from physnn.experiment import run_experiment

    rows = []
    for seed in args.seeds:
        cfg = RunConfig(seed=seed)
        t = time.perf_counter()
        r = run_experiment(cfg, write_file=False, progress=False, echo=lambda s: None)
        rows.append(("MF-FF, optics x2 (main job)", seed, r.test_accuracy, time.perf_counter() - t, r.train_queries))
        if args.no_controls:
            continue
        t = time.perf_counter()
        r = run_experiment(cfg.updated(system="identity"), write_file=False, progress=False, echo=lambda s: None)
        rows.append(("MF-FF, identity x2 (control)", seed, r.test_accuracy, time.perf_counter() - t, r.train_queries))
        d = load_digits(seed=seed)
        for name, clf in (("logistic regression, raw pixels", LogisticRegression(max_iter=2000)),
                          ("MLP 256, raw pixels", MLPClassifier((256,), max_iter=500, random_state=seed))):
            t = time.perf_counter()
            clf.fit(d.x_train.numpy(), d.y_train.numpy())
            acc = float(clf.score(d.x_test.numpy(), d.y_test.numpy()))
            rows.append((name, seed, acc, time.perf_counter() - t, 0))

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'method':34s} {'seed':>4s} {'test acc':>8s} {'wall s':>7s} {'queries':>9s}")
    for name, seed, acc, wall, q in rows:
        print(f"{name:34s} {seed:4d} {acc:8.4f} {wall:7.1f} {q:9d}")
    by = {}
    for name, _, acc, wall, _ in rows:
        by.setdefault(name, []).append((acc, wall))
    if len(args.seeds) > 1:
        print("\nmean ± std over seeds")
        for name, v in by.items():
            accs = [a for a, _ in v]
            print(f"{name:34s} {statistics.mean(accs):.4f} ± {statistics.stdev(accs):.4f}  "
                  f"wall {statistics.mean(w for _, w in v):.1f} s")


if __name__ == "__main__":
    main()
