"""The main job (``physnn train`` defaults: digits through the optical simulator), timed, beside its controls.

Prints a short table: test accuracy (the test split, measured once at the end, with n and the 95 % interval
of one run) and wall time of the default MF-FF run per seed -- exactly what ``physnn train`` runs, recipe
included -- and of the same MF-FF stack (same recipe, layers, epochs, seed) with the optics replaced by a
control system, one change at a time (physnn/simulators/controls.py):

* identity -- no physics, and the data's width (74 drive channels instead of a 1024-pixel camera);
* a random linear map of the camera's width and the SLM's levels -- what the physics adds over it is its
  nonlinearity;
* random ReLU features of the same width, and the optics' own equations computed digitally without noise
  ("speckle") -- what the physics adds over these is what a digital computer would not get for the FLOPs
  the map costs (the *map FLOPs/sample* column: the price of the control's map, both blocks; for the optics,
  what its queries replace).

Then two raw-pixel controls on the same split, tuned on the same validation split the PNN uses (logistic
regression over C, a 256-unit MLP over its L2 penalty), then measured once on the test split. The summary
pools the seeds (correct answers over test samples, 95 % interval) and states the physics' gain over each
control.

    python benchmarks/main_job.py [--seeds 0 1 2] [--no-controls] [--no-sklearn]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch

from physnn.core.evaluation import Accuracy, difference_interval

MAIN = "MF-FF, optics x2 (main job)"
SYSTEM_CONTROLS = (
    ("MF-FF, identity x2 (control)", None),
    ("MF-FF, random linear 1024 (control)", "linear"),
    ("MF-FF, random ReLU 1024 (control)", "features"),
    ("MF-FF, digital speckle 1024 (control)", "speckle"),
)


def map_flops(systems) -> float:
    """Digital FLOPs of one sample through every block's map: a control's price; for the optics, what a query
    replaces (the speckle count of its shape); 0 for identity."""
    from physnn.simulators.controls import speckle_flops
    from physnn.train.accounting import query_flops

    total = 0
    for s in systems:
        n = query_flops(s)
        if n is None:
            n = speckle_flops(s.spec.n_inputs, s.spec.n_outputs) if s.spec.name == "optics" else 0
        total += n
    return float(total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--no-controls", action="store_true", help="skip every control")
    ap.add_argument("--no-sklearn", action="store_true", help="skip the raw-pixel (scikit-learn) controls")
    args = ap.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from physnn.run.config import RunConfig
    from physnn.run.experiment import build_systems, load_data, run_experiment, split_validation
    from physnn.run.recipes import with_recipe
    from physnn.simulators.controls import matching

    rows = []  # (name, seed, Accuracy, wall s, train q, total q, map FLOPs/sample)

    def run(name: str, cfg: RunConfig, seed: int) -> None:
        t = time.perf_counter()
        r = run_experiment(cfg, write_file=False, progress=False, echo=lambda s: None)
        acc = Accuracy(round(r.test_accuracy * r.test_n), r.test_n)
        rows.append((name, seed, acc, time.perf_counter() - t, r.train_queries, r.total_queries, flops(cfg)))

    def flops(cfg: RunConfig) -> float:
        systems = build_systems(cfg, load_data(cfg))
        try:
            return map_flops(systems)
        finally:
            for s in systems:
                s.close()

    for seed in args.seeds:
        cfg = RunConfig.from_dict(with_recipe({"seed": seed}))  # what `physnn train --seed S` runs
        run(MAIN, cfg, seed)
        if args.no_controls:
            continue
        data = load_data(cfg)
        systems = build_systems(cfg, data)
        spec = systems[0].spec
        for s in systems:
            s.close()
        for name, control in SYSTEM_CONTROLS:
            if control is None:
                run(name, cfg.updated(system="identity", system_options={}), seed)
            else:
                system, options = matching(spec, control)
                run(name, cfg.updated(system=system, system_options=options), seed)
        if args.no_sklearn:
            continue
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
            acc = Accuracy.of(torch.as_tensor(best.predict(data.x_test.numpy())), data.y_test)
            rows.append((name, seed, acc, time.perf_counter() - t, 0, 0, math.nan))

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(
        f"{'method':40s} {'seed':>4s} {'test accuracy (n, 95 % CI)':>36s} {'wall s':>7s} {'train q':>8s} "
        f"{'total q':>8s} {'map FLOPs/sample':>16s}"
    )
    for name, seed, acc, wall, q, tq, fl in rows:
        print(f"{name:40s} {seed:4d} {str(acc):>36s} {wall:7.1f} {q:8d} {tq:8d} {fl:16.3g}")
    by: dict[str, list[tuple]] = {}
    for row in rows:
        by.setdefault(row[0], []).append(row)
    print(f"\npooled over {len(args.seeds)} seed(s): correct/n, 95 % CI; mean ± std over seeds")
    pooled = {}
    for name, v in by.items():
        acc = Accuracy(sum(r[2].correct for r in v), sum(r[2].n for r in v))
        pooled[name] = acc
        accs = [r[2].value for r in v]
        spread = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
        print(
            f"{name:40s} {str(acc):>36s}  mean {statistics.mean(accs):.4f}{spread}  "
            f"wall {statistics.mean(r[3] for r in v):.1f} s"
        )
    main_acc = pooled.get(MAIN)
    if main_acc is not None and len(pooled) > 1:
        print("\nthe physics against each control (pooled; 95 % interval of the difference, Newcombe)")
        for name, acc in pooled.items():
            if name == MAIN:
                continue
            lo, hi = difference_interval(main_acc, acc)
            verdict = "no difference shown" if lo <= 0 <= hi else ("better" if lo > 0 else "worse")
            print(
                f"  {100 * (main_acc.value - acc.value):+5.1f} points ({100 * lo:+.1f} to {100 * hi:+.1f}) "
                f"over {name}: {verdict}"
            )


if __name__ == "__main__":
    main()
