"""What a run file costs: its size for the README's runs, and the wall time it adds (issue 20).

A lab keeps hundreds of run files for years, so a run file must stay small, and writing it must not
slow the run down. This measures, on ``physnn train``'s own path (``run_experiment``):

* **size**: the main job (``physnn train`` defaults: digits through optics, 20 epochs), the same run
  extended to 25 epochs with ``--resume`` (goal: <= 1.25x), and the README's PAT example (vowels,
  optics, 50 epochs, ``twin_samples = 1000``); the README's sweep (2 learning rates x 5 seeds of that
  config) is ``--sweep-runs`` of them measured and scaled to its 10 runs;
* **cost**: wall time with a run file / without one (``write_file=False``: no file, no probes, no
  samples, no checkpoints), interleaved in this one process, median of ``--repeats``, for full-batch
  vowels through optics (``--full-epochs``, 200 by default; goal <= 1.1) and for the main job (goal
  <= 1.05). Everything the runner does only because it writes a file (probe re-measurements on the
  device, sample logging, checkpoints) is charged to the file.

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


def _run(config, write_file: bool, folder: Path, tag: str, resume: Path | None = None) -> tuple[float, Path]:
    from physnn.run.experiment import run_experiment

    path = resume if resume is not None else folder / f"{tag}-{time.monotonic_ns()}.h5"
    t = time.perf_counter()
    run_experiment(
        config.updated(output=str(path)),
        write_file=write_file,
        progress=False,
        echo=lambda s: None,
        resume=resume,
    )
    return time.perf_counter() - t, path


def _interleaved(variants: dict, repeats: int, folder: Path) -> dict[str, list[float]]:
    """Wall times of each variant, run in turn ``repeats`` times (a load change hits every variant alike)."""
    walls: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (config, write) in variants.items():
            wall, path = _run(config, write, folder, "wall")
            walls[name].append(wall)
            if path.exists():
                path.unlink()
    return walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each timed variant")
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
    walls: dict[str, dict[str, list[float]]] = {}
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
        out(f"| wall time, median of {args.repeats} interleaved | wall (s) | / no run file | goal |")
        out("|---|---:|---:|---:|")
        for key, name, goal in (
            ("full", f"full-batch vowels ({full} samples), optics, {args.full_epochs} epochs", 1.1),
            ("main", "main job (digits, optics, 20 epochs)", 1.05),
        ):
            ref = statistics.median(walls[key]["no run file"])
            for variant, values in walls[key].items():
                med = statistics.median(values)
                ratio = "1" if variant == "no run file" else f"**{med / ref:.3f}**"
                out(f"| {name}: {variant} | {med:.2f} | {ratio} | {'' if variant == 'no run file' else f'<= {goal}'} |")
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
