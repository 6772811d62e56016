"""MF-FF through every simulator: accuracy, queries, simulator speed, and controls that isolate the physics.

For each (data set, system) pair: MF-FF test accuracy (mean ± std over seeds, and
pooled over seeds with its 95 % interval), training queries per run, the
simulator's own throughput (samples/s on a batch of valid random drives), and
the same MF-FF stack (recipe, layers, epochs, seeds) with the system replaced by
a control (physnn/simulators/controls.py): identity (no physics, the data's
width), a random linear map of the system's output width and drive levels
(isolates the nonlinearity) and random ReLU features of that width (a digital
nonlinear map; its price in FLOPs per sample, both blocks, is printed).

    python benchmarks/systems.py                      # all pairs, the default seeds
    python benchmarks/systems.py --pairs vowels/acoustic-twin --seeds 10
    python benchmarks/systems.py --quick              # 1 seed, fewer epochs (smoke run)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from physnn.core.evaluation import Accuracy, difference_interval
from physnn.core.registry import build_system
from physnn.run.config import RunConfig
from physnn.run.experiment import build_systems, load_data, run_experiment
from physnn.run.recipes import RECIPES, with_recipe
from physnn.simulators.controls import matching
from physnn.train.accounting import query_flops

# The run per pair, on top of the system's recipe (physnn/run/recipes.py). Vowels/twin: the published recipe
# (2 blocks, full batch, 200 epochs).
PAIRS: dict[str, dict] = {
    "vowels/acoustic-twin": dict(
        dataset="vowels", system="acoustic-twin", hidden=20, epochs=200, batch_size=256, eval_every=0
    ),
    "vowels/microwave": dict(dataset="vowels", system="microwave", hidden=40, epochs=100, batch_size=64, eval_every=0),
    "vowels/acoustics": dict(dataset="vowels", system="acoustics", hidden=20, epochs=30, batch_size=64, eval_every=0),
    "digits/optics": dict(dataset="digits", system="optics", epochs=20, eval_every=0),
    "digits/neuromorphic": dict(dataset="digits", system="neuromorphic", epochs=30, eval_every=0),
}
DEFAULT_SEEDS = {
    "vowels/acoustic-twin": 3,
    "vowels/microwave": 3,
    "vowels/acoustics": 2,
    "digits/optics": 3,
    "digits/neuromorphic": 3,
}


def throughput(name: str, n_inputs: int, batch: int = 512, repeats: int = 3, **options) -> float:
    """Samples/s of one system query on valid random drive values (encoder applied)."""
    from physnn.core.encoding import Encoder

    with build_system(name, n_inputs=n_inputs, seed=1, **options) as s:
        x = Encoder(s.spec, "minmax")(torch.rand(batch, s.spec.n_inputs, generator=torch.Generator().manual_seed(0)))
        s(x[:8])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            s(x)
            best = min(best, time.perf_counter() - t)
    return batch / best


def recipe_text(cfg: RunConfig) -> str:
    """What the system's recipe (physnn/run/recipes.py) set, as ``physnn train --system`` applies it."""
    r = RECIPES.get(cfg.system, {})
    parts = [f"{k}={v}" for k, v in r.items() if k != "system_options"]
    parts += [f"{k}={v}" for k, v in r.get("system_options", {}).items()]
    return ", ".join(parts) or "-"


def run_pair(label: str, recipe: dict, seeds: list[int], quick: bool) -> dict:
    cfg = RunConfig.from_dict(with_recipe(recipe))
    if quick:
        cfg = cfg.updated(epochs=max(2, cfg.epochs // 10))
    accs, queries, walls = [], [], []
    controls: dict[str, list[Accuracy]] = {"identity": [], "linear": [], "features": []}
    relu_flops = 0.0
    for seed in seeds:
        c = cfg.updated(seed=seed)
        t = time.perf_counter()
        r = run_experiment(c, write_file=False, progress=False, echo=lambda m: None)
        walls.append(time.perf_counter() - t)
        accs.append(Accuracy(round(r.test_accuracy * r.test_n), r.test_n))
        queries.append(r.train_queries)
        systems = build_systems(c, load_data(c))
        spec = systems[0].spec
        for s in systems:
            s.close()
        for control in controls:
            if control == "identity":
                cc = c.updated(system="identity", system_options={})
            else:
                system, options = matching(spec, control)
                cc = c.updated(system=system, system_options=options)
            rc = run_experiment(cc, write_file=False, progress=False, echo=lambda m: None)
            controls[control].append(Accuracy(round(rc.test_accuracy * rc.test_n), rc.test_n))
            if control == "features":
                built = build_systems(cc, load_data(cc))
                relu_flops = float(sum(query_flops(s) or 0 for s in built))
                for s in built:
                    s.close()
    from physnn.data.datasets import load_dataset

    d = load_dataset(cfg.dataset, test_fraction=cfg.test_fraction, seed=0)
    width = d.n_classes + d.n_features if cfg.system != "acoustic-twin" else None
    sps = throughput(cfg.system, width, **cfg.system_options)
    return dict(
        label=label,
        accs=accs,
        controls=controls,
        relu_flops=relu_flops,
        width=spec.n_outputs,
        queries=statistics.mean(queries),
        wall=statistics.mean(walls),
        sps=sps,
        epochs=cfg.epochs,
        recipe=recipe_text(cfg),
        n_test=r.test_n,
    )


def fmt(v: list[Accuracy]) -> str:
    """Mean ± std over seeds."""
    vals = [a.value for a in v]
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def pooled(v: list[Accuracy]) -> Accuracy:
    return Accuracy(sum(a.correct for a in v), sum(a.n for a in v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), help=f"any of {', '.join(PAIRS)}")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per pair (default: per pair)")
    ap.add_argument("--quick", action="store_true", help="1 seed, a tenth of the epochs")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    unknown = [p for p in args.pairs if p not in PAIRS]
    if unknown:
        sys.exit(f"unknown pair(s) {unknown}; choose from {list(PAIRS)}")
    rows = []
    for label in args.pairs:
        n = 1 if args.quick else (args.seeds or DEFAULT_SEEDS[label])
        try:
            rows.append(run_pair(label, PAIRS[label], list(range(n)), args.quick))
        except Exception as exc:  # a missing simulator or data file is reported, not fatal
            rows.append(dict(label=label, error=f"{type(exc).__name__}: {exc}"))
        r = rows[-1]
        print(f"  done {label}: {fmt(r['accs']) if 'accs' in r else r['error']}", file=sys.stderr)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s); command: python benchmarks/{os.path.basename(__file__)} {' '.join(sys.argv[1:])}"
    )
    head = (
        f"{'data/system':22s} {'seeds':>5s} {'epochs':>6s} {'width':>5s} {'MF-FF test acc':>15s} {'identity':>13s} "
        f"{'random linear':>13s} {'random ReLU':>13s} {'ReLU FLOPs/s.':>13s} {'n test':>6s} {'train queries':>13s} "
        f"{'sim samples/s':>13s} {'wall s/run':>10s}  recipe"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['label']:22s} unavailable: {r['error']}")
            continue
        c = r["controls"]
        print(
            f"{r['label']:22s} {len(r['accs']):5d} {r['epochs']:6d} {r['width']:5d} {fmt(r['accs']):>15s} "
            f"{fmt(c['identity']):>13s} {fmt(c['linear']):>13s} {fmt(c['features']):>13s} {r['relu_flops']:13.3g} "
            f"{r['n_test']:6d} {r['queries']:13.0f} {r['sps']:13.0f} {r['wall']:10.1f}  {r['recipe']}"
        )
    print("\npooled over seeds: correct/n (95 % CI); the physics minus each control in points (95 % CI, Newcombe)")
    for r in rows:
        if "error" in r:
            continue
        p = pooled(r["accs"])
        parts = []
        for name, accs in r["controls"].items():
            q = pooled(accs)
            lo, hi = difference_interval(p, q)
            verdict = "no difference shown" if lo <= 0 <= hi else ("better" if lo > 0 else "worse")
            parts.append(
                f"{name} {q.value:.3f}: {100 * (p.value - q.value):+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}) {verdict}"
            )
        print(f"{r['label']:22s} MF-FF {p}; " + "; ".join(parts))


if __name__ == "__main__":
    main()
