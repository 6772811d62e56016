"""What the bench costs: the issue-12 ratios, measured in one run on a simulator wrapped as a slow instrument.

Why a wrapped simulator: on a bench every call costs milliseconds to seconds
of instrument time, and what matters is how much of the wall time the device
is *not* working. :class:`SlowDevice` runs the optics simulator and then
sleeps, inside ``_measure``, until each call has cost ``per_call`` seconds --
so the sleep is counted as device time (``QueryStats.seconds``) exactly like
a real instrument's round trip, and it releases the GIL like one.

Rows (each a ratio of runs in this process; timed rows interleave their
variants and report the median of ``--reps`` repetitions):

1. total / training queries of the main job (``physnn train`` defaults:
   digits, optics x 2, 20 epochs) -- counted, not timed, so one run;
2. (wall - device) / device at 5 ms and 50 ms per call on the ``physnn
   train`` path (``run_experiment`` with a run file and probes), serial and
   pipelined; device = the summed device seconds of all systems (with two
   devices working at once this can exceed the wall time: a negative ratio);
3. pipelined / serial wall of MF-FF training, one device per block (the
   trainer alone), block-0 grouping off in both (the schedule's own effect)
   and everything on against today's serial batch-by-batch schedule;
4. device calls per training epoch / (batches x blocks), grouped block 0.

Run: ``.venv/bin/python benchmarks/slow_device.py [--reps 3] [--out benchmarks/results/slow_device.md]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import torch

from physnn.core.model import PNN
from physnn.core.system import PhysicalSystem
from physnn.run.config import RunConfig
from physnn.run.experiment import build_systems, load_data, run_experiment
from physnn.train.mfff import MFFF


class SlowDevice(PhysicalSystem):
    """A simulator that answers each call in ``per_call`` seconds (at least), counted as device time."""

    def __init__(self, inner: PhysicalSystem, per_call: float):
        super().__init__(dataclasses.replace(inner.spec, name=f"slow-{inner.spec.name}"))
        self.inner = inner
        self.per_call = float(per_call)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        y = self.inner._measure(x)
        left = self.per_call - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)
        return y

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "per_call_s": self.per_call, "inner": self.inner.describe()}


def slow_systems(config: RunConfig, per_call: float) -> list[PhysicalSystem]:
    return [SlowDevice(s, per_call) for s in build_systems(config, load_data(config))]


def quiet(_: str) -> None:
    pass


# ------------------------------------------------------------------ rows
def main_job_queries() -> tuple[int, int]:
    """(total, training) queries of ``physnn train`` with its defaults (run file and probes included)."""
    with tempfile.TemporaryDirectory() as d:
        r = run_experiment(RunConfig(output=d), progress=False, echo=quiet)
    return r.total_queries, r.train_queries


def train_path(per_call: float, schedule: str, epochs: int) -> tuple[float, float, float, float]:
    """``run_experiment`` with a run file on slow devices: (wall, device) of the whole run and of its epochs.

    ``schedule = "today"`` is the schedule before issue 12: serial, block 0 batch by batch.
    """
    with tempfile.TemporaryDirectory() as d:
        options = {"group_block0": False} if schedule == "today" else {}
        config = RunConfig(
            output=d,
            epochs=epochs,
            schedule="serial" if schedule == "today" else schedule,
            eval_every=1,
            method_options=options,
        )
        systems = slow_systems(config, per_call)
        t0 = time.perf_counter()
        r = run_experiment(config, systems=systems, progress=False, echo=quiet)
        wall = time.perf_counter() - t0
    last = r.history[-1]  # cumulative since the first epoch began (evaluations, probes and run file included)
    return wall, sum(s.stats.seconds for s in systems), last["wall_seconds"], last["device_seconds/total"]


def trainer_wall(per_call: float, schedule: str, group: bool, epochs: int) -> tuple[float, float, PNN]:
    """(wall, training calls per epoch / (batches x blocks), model) of MF-FF alone on slow devices."""
    config = RunConfig(epochs=epochs, val_fraction=0.0)
    data = load_data(config)
    systems = [SlowDevice(s, per_call) for s in build_systems(config, data)]
    torch.manual_seed(0)
    pnn = PNN(systems, data.n_features, data.n_classes, hidden=config.hidden, seed=0)
    trainer = MFFF(epochs=epochs, schedule=schedule, group_block0=group, seed=0)
    t0 = time.perf_counter()
    trainer.fit(pnn, data.x_train, data.y_train)
    wall = time.perf_counter() - t0
    batches = -(-data.x_train.shape[0] // trainer.batch_size)
    calls = sum(s.stats.calls for s in systems) / epochs
    return wall, calls / (batches * len(systems)), pnn


def interleaved(variants: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[Any]]:
    """Run every variant once per repetition, in turn (so load on the machine hits them alike)."""
    out: dict[str, list[Any]] = {k: [] for k in variants}
    for _ in range(reps):
        for k, fn in variants.items():
            out[k].append(fn())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each timed variant (median reported)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the timed runs")
    ap.add_argument("--out", default=None, help="also write the table (markdown) to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    rows: list[tuple[str, str, str, str]] = []

    total, train = main_job_queries()  # first: it also pays torch's one-off imports (the first optimiser)
    rows.append(
        ("total / training queries, main job", "2.56", f"{total / train:.3f} ({total:,} / {train:,})", "<= 1.1")
    )

    path = interleaved(
        {
            (ms, sched): (lambda ms=ms, sched=sched: train_path(ms / 1000, sched, args.epochs))
            for ms in (5, 50)
            for sched in ("today", "serial", "pipelined")
        },
        args.reps,
    )
    over = {k: statistics.median((w - d) / d for w, d, _, _ in v) for k, v in path.items()}
    steady = {k: statistics.median((fw - fd) / fd for _, _, fw, fd in v) for k, v in path.items()}
    walls = {k: statistics.median(w for w, _, _, _ in v) for k, v in path.items()}
    for sched, label in (
        ("today", "serial, block 0 batch by batch (today's schedule)"),
        ("serial", "serial, block 0 grouped (default)"),
        ("pipelined", "pipelined, block 0 grouped"),
    ):
        rows.append(
            (
                f"(wall - device)/device, 5 / 50 ms per call, `physnn train` path, {label}: whole run",
                "0.61 / 0.17" if sched == "today" else "--",
                f"{over[(5, sched)]:+.3f} / {over[(50, sched)]:+.3f}",
                "<= 0.15 / <= 0.03",
            )
        )
        rows.append(
            (
                "... the same, inside the epochs (start-up, final test and closing left out)",
                "--",
                f"{steady[(5, sched)]:+.3f} / {steady[(50, sched)]:+.3f}",
                "<= 0.15 / <= 0.03",
            )
        )
    rows.append(
        (
            "`physnn train` path wall, pipelined + grouped / today's schedule, 5 / 50 ms per call",
            "1.0",
            f"{walls[(5, 'pipelined')] / walls[(5, 'today')]:.3f} / "
            f"{walls[(50, 'pipelined')] / walls[(50, 'today')]:.3f}",
            "--",
        )
    )

    runs = interleaved(
        {
            "serial": lambda: trainer_wall(0.05, "serial", False, args.epochs),
            "pipelined": lambda: trainer_wall(0.05, "pipelined", False, args.epochs),
            "serial+grouped": lambda: trainer_wall(0.05, "serial", True, args.epochs),
            "pipelined+grouped": lambda: trainer_wall(0.05, "pipelined", True, args.epochs),
            "pipelined+grouped 5 ms": lambda: trainer_wall(0.005, "pipelined", True, args.epochs),
        },
        args.reps,
    )
    ref = runs["serial"][0][2]
    for k, v in runs.items():  # does each schedule train the serial batch-by-batch weights?
        same = all(torch.equal(a, b) for a, b in zip(ref.parameters(), v[0][2].parameters()))
        runs[k] = [(w, c, same) for w, c, _ in v]
    wall = {k: statistics.median(w for w, _, _ in v) for k, v in runs.items()}
    rows.append(
        (
            "pipelined / serial wall, one device per block, 50 ms/call (block-0 grouping off in both)",
            "1.0",
            f"{wall['pipelined'] / wall['serial']:.3f}",
            "<= 0.55",
        )
    )
    rows.append(
        (
            "pipelined+grouped / serial batch-by-batch wall, 50 ms/call",
            "1.0",
            f"{wall['pipelined+grouped'] / wall['serial']:.3f}",
            "--",
        )
    )
    rows.append(
        (
            "`physnn train` path, pipelined / the bare pipelined+grouped trainer, wall, 5 / 50 ms per call "
            "(the path also evaluates, probes, tests and writes its file)",
            "1.82 / 1.37",
            f"{walls[(5, 'pipelined')] / wall['pipelined+grouped 5 ms']:.3f} / "
            f"{walls[(50, 'pipelined')] / wall['pipelined+grouped']:.3f}",
            "<= 1.3 / <= 1.10",
        )
    )
    rows.append(
        (
            "calls per epoch / (batches x blocks), block 0 grouped",
            "1.0",
            f"{runs['serial+grouped'][0][1]:.3f}",
            "<= 0.55",
        )
    )
    identical = ", ".join(f"{k}: {'yes' if v[0][2] else 'no'}" for k, v in runs.items())

    elapsed = time.perf_counter() - t_start
    lines = ["| ratio | today (issue 12) | measured | goal |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += [
        "",
        f"Weights equal to the serial batch-by-batch run (optics with its shot/read noise): {identical}.",
        f"Timed rows: median of {args.reps} interleaved repetitions, {args.epochs} epochs each, main job "
        f"sizes (digits, optics x 2, hidden 100, batch 64); whole benchmark {elapsed:.0f} s.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}, 1 torch thread.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(
                "# Slow-device benchmark (issue 12)\n\n"
                f"Command: `.venv/bin/python benchmarks/slow_device.py {' '.join(argv or sys.argv[1:])}`\n\n"
                + text
                + "\n"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
