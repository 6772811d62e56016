"""What a run file costs: its size for the README's runs, and the wall time it adds (issue 20).

A lab keeps hundreds of run files for years, so a run file must stay small, and writing it must not
slow the run down. This measures, on ``physnn train``'s own path (``run_experiment``):

* **size**: the main job (``physnn train`` defaults: digits through optics, 20 epochs), the same run
  extended to 25 epochs with ``--resume`` (goal: <= 1.25x), and the README's PAT example (vowels,
  optics, 50 epochs, ``twin_samples = 1000``); the README's sweep (2 learning rates x 5 seeds of that
  config) is ``--sweep-runs`` of them measured and scaled to its 10 runs;
* **cost**: wall time with a run file / without one (``write_file=False``: no file, no probes, no
  samples, no checkpoints), interleaved in this one process (ABC, CBA, ...), median and minimum of
  ``--repeats``, for full-batch vowels through optics (``--full-epochs``, 200 by default; goal <= 1.1)
  and for the main job (goal <= 1.05). Everything the runner does only because it writes a file (probe
  re-measurements on the device, sample logging, checkpoints) is charged to the file. On a shared
  machine other jobs' load comes in bursts, so the CPU time of this process (what the run costs the
  machine, insensitive to other processes) is given beside the wall time.

    python benchmarks/runfile_cost.py [--repeats 3] [--full-epochs 200] [--pat-epochs 50] [--out FILE.md]

It prints a short table and writes it to ``benchmarks/results/runfile_cost.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "runfile_cost.md"
MiB = 2**20


def _run(
    config, write_file: bool, folder: Path, tag: str, resume: Path | None = None
) -> tuple[tuple[float, float], Path]:
    """(wall seconds, CPU seconds of this process) of one run, and its file."""
    from physnn.run.experiment import run_experiment

    path = resume if resume is not None else folder / f"{tag}-{time.monotonic_ns()}.h5"
    t, c = time.perf_counter(), time.process_time()
    run_experiment(
        config.updated(output=str(path)),
        write_file=write_file,
        progress=False,
        echo=lambda s: None,
        resume=resume,
    )
    return (time.perf_counter() - t, time.process_time() - c), path


def _interleaved(variants: dict, repeats: int, folder: Path) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each variant, run in turn ``repeats`` times (a load change hits every variant)."""
    walls: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for r in range(repeats):
        order = list(variants.items())
        for name, (config, write) in order if r % 2 == 0 else order[::-1]:  # ABC, CBA, ...: a trend cancels
            wall, path = _run(config, write, folder, "wall")
            walls[name].append(wall)
            if path.exists():
                path.unlink()
    return walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats of each timed variant")
    ap.add_argument("--full-epochs", type=int, default=200, help="epochs of the timed full-batch runs")
    ap.add_argument("--pat-epochs", type=int, default=50, help="epochs of the README's PAT example (0: skip it)")
    ap.add_argument("--sweep-runs", type=int, default=1, help="PAT runs (lr 0.003/0.01, seeds 0..) measured")
    ap.add_argument("--parts", nargs="+", choices=("sizes", "cost"), default=["sizes", "cost"], help="what to measure")
    ap.add_argument("--out", default=str(RESULTS), help="where the Markdown result goes ('' : print only)")
    args = ap.parse_args()

    from physnn.data.datasets import load_dataset
    from physnn.run.config import RunConfig
    from physnn.run.recipes import with_recipe

    def config(**keys) -> RunConfig:  # as `physnn train` makes it: the keys given, then the system's recipe
        return RunConfig.from_dict(with_recipe(keys))

    full = int(load_dataset("vowels", seed=0).x_train.shape[0])
    main_job = config()
    full_batch = config(dataset="vowels", system="optics", batch_size=full, seed=0, epochs=args.full_epochs)
    pat = config(
        dataset="vowels",
        system="optics",
        method="pat",
        blocks=2,
        hidden=40,
        epochs=max(args.pat_epochs, 1),
        seed=3,
        system_options={"noise": False},
        method_options={"twin_samples": 1000},
    )
    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    t_start = time.perf_counter()
    sizes: dict[str, float] = {}
    pat_sizes: list[int] = []
    walls: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "sizes" in args.parts:
            _, path = _run(main_job, True, folder, "main")
            sizes[20] = path.stat().st_size
            _run(main_job.updated(epochs=25), True, folder, "main", resume=path)
            sizes[25] = path.stat().st_size
            path.unlink()
            for i in range(args.sweep_runs if args.pat_epochs else 0):
                _, path = _run(pat.updated(lr=(0.003, 0.01)[i % 2], seed=i // 2), True, folder, "pat")
                pat_sizes.append(path.stat().st_size)
                path.unlink()
        if "cost" in args.parts:
            _run(full_batch.updated(epochs=2), True, folder, "warmup")
            walls["full"] = _interleaved(
                {
                    "no run file": (full_batch, False),
                    "run file": (full_batch, True),
                    "run file, a checkpoint every 10 epochs": (full_batch.updated(checkpoint_every=10), True),
                },
                args.repeats,
                folder,
            )
            walls["main"] = _interleaved(
                {"no run file": (main_job, False), "run file": (main_job, True)}, args.repeats, folder
            )
    minutes = (time.perf_counter() - t_start) / 60

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}; load average {load:.1f} at the end; {minutes:.1f} min in all"
    )
    if sizes:
        out()
        out("| run file of | size (MiB) | goal |")
        out("|---|---:|---:|")
        out(f"| main job, 20 epochs | {sizes[20] / MiB:.2f} | <= 5 |")
        out(f"| main job, resumed to 25 epochs | {sizes[25] / MiB:.2f} ({sizes[25] / sizes[20]:.3f}x) | <= 1.25x |")
    if pat_sizes:
        mean = statistics.mean(pat_sizes)
        out(f"| README PAT example, {args.pat_epochs} epochs | {mean / MiB:.2f} | <= 20 |")
        out(f"| README sweep (10 such runs; {len(pat_sizes)} measured) | {10 * mean / MiB:.0f} | <= 200 |")
    if walls:
        out()
        out(
            f"| {args.repeats} interleaved runs each | wall (s): median, min-max | / no run file: median, min "
            "| CPU (s): median | / no run file | goal |"
        )
        out("|---|---:|---:|---:|---:|---:|")
        for key, name, goal in (
            ("full", f"full-batch vowels ({full} samples), optics, {args.full_epochs} epochs", 1.1),
            ("main", "main job (digits, optics, 20 epochs)", 1.05),
        ):
            ref = walls[key]["no run file"]
            ref_wall = statistics.median(w for w, _ in ref)
            ref_min = min(w for w, _ in ref)
            ref_cpu = statistics.median(c for _, c in ref)
            for variant, values in walls[key].items():
                wall, low, high = (f(w for w, _ in values) for f in (statistics.median, min, max))
                cpu = statistics.median(c for _, c in values)
                if variant == "no run file":
                    ratios, cpu_ratio, goal_text = "1", "1", ""
                else:
                    ratios = f"**{wall / ref_wall:.3f}**, {low / ref_min:.3f}"
                    cpu_ratio, goal_text = f"**{cpu / ref_cpu:.3f}**", f"<= {goal}"
                out(
                    f"| {name}: {variant} | {wall:.2f}, {low:.2f}-{high:.2f} | {ratios} | {cpu:.2f} | {cpu_ratio} "
                    f"| {goal_text} |"
                )
    if args.out:
        cmd = "python benchmarks/runfile_cost.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k != "out"
        )
        Path(args.out).write_text(
            "# Run-file size and cost (issue 20)\n\n"
            f"Command: `{cmd}`, {time.strftime('%Y-%m-%d')}, on the shared 2-core development VM.\n\n"
            + "\n".join(lines)
            + "\n"
        )


if __name__ == "__main__":
    main()
