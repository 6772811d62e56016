"""What the HDF5 run file costs a full-batch run: file size against epochs, wall time against no run file.

Issue 12 measured a run file that grew as epochs^1.6 (each checkpoint re-packed the
whole history) and made full-batch vowels runs 1.85-2.5x slower than without it
(a flush of every column on every query, an fsync per epoch and per checkpoint).
This prints, for ``physnn train``'s own path (``run_experiment``) on full-batch vowels
through the optics simulator:

* the run-file size after 100/200/400 epochs and the exponent of a log-log fit
  (goal 1.0: a constant cost per epoch);
* the wall time with a run file / without one, interleaved in this process
  (median of ``--repeats``), for a checkpoint every epoch and every 10 epochs,
  and without the probe re-measurements (physical queries the runner makes only
  when it writes a run file) and sample logging (goal <= 1.1);
* the cost of the ``log_samples`` query hook per call, against the simulator's own
  time per call on the same full batch.

    python benchmarks/runfile_cost.py [--epochs 100 200 400] [--wall-epochs 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _run(config, write_file: bool, folder: Path, tag: str) -> tuple[float, Path]:
    from physnn.run.experiment import run_experiment

    path = folder / f"{tag}-{time.monotonic_ns()}.h5"
    t = time.perf_counter()
    run_experiment(config.updated(output=str(path)), write_file=write_file, progress=False, echo=lambda s: None)
    return time.perf_counter() - t, path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, nargs="+", default=[100, 200, 400], help="epochs of the size runs")
    ap.add_argument("--wall-epochs", type=int, default=200, help="epochs of the timed runs")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each timed variant")
    ap.add_argument("--data-path", default="", help="vowels.csv (default: ../shared/data/vowels.csv)")
    args = ap.parse_args()

    from physnn.core.registry import build_system
    from physnn.data.datasets import load_dataset
    from physnn.run.config import RunConfig
    from physnn.runlog import RunWriter

    data = load_dataset("vowels", path=args.data_path or None, seed=0)
    full = int(data.x_train.shape[0])
    base = RunConfig(dataset="vowels", data_path=args.data_path, system="optics", batch_size=full, seed=0)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # ---- size against epochs
        sizes = []
        for epochs in args.epochs:
            _, path = _run(base.updated(epochs=epochs), True, folder, f"size{epochs}")
            sizes.append(path.stat().st_size)
            path.unlink()
        slope = float(np.polyfit(np.log(args.epochs), np.log(sizes), 1)[0])
        per_epoch = (sizes[-1] - sizes[0]) / (args.epochs[-1] - args.epochs[0])

        # ---- wall time, interleaved
        every10 = base.updated(checkpoint_every=10)
        variants = {
            "no run file": (base, False),
            "run file, checkpoint every epoch": (base, True),
            "run file, checkpoint every 10 epochs": (every10, True),
            "... and no probes re-measured, no samples logged": (every10.updated(probes=0, log_samples=False), True),
        }
        walls: dict[str, list[float]] = {name: [] for name in variants}
        _run(base.updated(epochs=2), True, folder, "warmup")
        for _ in range(args.repeats):
            for name, (config, write) in variants.items():
                wall, path = _run(config.updated(epochs=args.wall_epochs), write, folder, "wall")
                walls[name].append(wall)
                if path.exists():
                    path.unlink()

        # ---- the query hook against the simulator's own time per call
        system = build_system("optics", n_inputs=data.n_features + data.n_classes, seed=0)
        spec = system.spec
        levels = torch.randint(0, spec.levels, (full, spec.n_inputs), generator=torch.Generator().manual_seed(0))
        x = spec.low + levels * ((spec.high - spec.low) / (spec.levels - 1))  # on the allowed drive levels
        writer = RunWriter(folder / "hook.h5", config={}, seed=0, systems={"block0": system.describe()})
        hook, sim = [], []
        for i in range(300):
            t = time.perf_counter()
            y = system(x)
            t1 = time.perf_counter()
            writer.log_samples("block0", x, y)
            t2 = time.perf_counter()
            sim.append(t1 - t)
            hook.append(t2 - t1)
            if i % 3 == 2:  # an epoch flush every 3 calls (full batch: 2 blocks + evaluation)
                writer.log_epoch(i // 3, {"loss": 0.0})
        writer.close()

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}; full-batch vowels ({full} training "
        f"samples), optics x2, hidden {base.hidden}, probes {base.probes}, samples logged"
    )
    print()
    print("| epochs | run-file size (MiB) |")
    print("|---:|---:|")
    for epochs, size in zip(args.epochs, sizes):
        print(f"| {epochs} | {size / 2**20:.2f} |")
    print(
        f"\nsize exponent (log-log fit over {args.epochs}): **{slope:.3f}** (goal 1.0); "
        f"{per_epoch / 2**10:.1f} KiB per epoch (one checkpoint per epoch)\n"
    )
    ref = statistics.median(walls["no run file"])
    print(f"| {args.wall_epochs} epochs, median of {args.repeats} interleaved | wall s | / no run file |")
    print("|---|---:|---:|")
    for name, values in walls.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {med / ref:.3f} |")
    h, s = statistics.median(hook), statistics.median(sim)
    print(
        f"\nlog_samples hook: {h * 1e6:.0f} us per call (median of {len(hook)}), the optics simulator "
        f"{s * 1e6:.0f} us per call on the same batch of {full}: hook / simulator = {h / s:.3f}"
    )
    if not math.isfinite(slope):
        raise SystemExit("size fit failed")


if __name__ == "__main__":
    main()
