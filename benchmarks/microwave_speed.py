"""Speed of the metasurface cavity simulator: samples/s by solver and batch size.

Compares the reference full P x P solve with the N x N Schur complement and the
rank <= N/2 Woodbury update (the default), at the default size (N = 40 elements,
F = 20 frequencies, P = 154 dipoles) unless told otherwise, and the cost of a
drift step (rebuilding after the clutter or the element detuning moved).

    python benchmarks/microwave_speed.py [--threads 2] [--repeats 5] [--device cpu]

Timings are the best of ``--repeats`` runs of one query (noise on, as in
training), so they are an upper bound for a quiet machine; on a shared machine
they vary from run to run, so quote them with the load at the time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from physnn.simulators.microwave import MetasurfaceCavity

BATCHES = (1, 16, 64, 256, 1024, 4096)
FULL_MAX_BATCH = 16  # the full solve is ~100x slower; larger batches only waste time


def best_time(fn, repeats: int, sync) -> float:
    fn()  # warm-up (also builds lazily cached tables)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-inputs", type=int, default=None, help="metasurface elements (default 40)")
    parser.add_argument("--n-outputs", type=int, default=None, help="frequencies (default 20)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    cavity = MetasurfaceCavity(args.n_inputs, args.n_outputs, device=device, seed=0)
    n, n_f = cavity.spec.n_inputs, cavity.spec.n_outputs
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"MetasurfaceCavity N={n} F={n_f} P={cavity.n_dipoles} dtype={cavity.dtype} device={device}")
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
        f"load average {load:.2f} (timings on a shared machine are noisy)"
    )
    gen = torch.Generator().manual_seed(0)
    x_all = torch.randint(0, 2, (max(BATCHES), n), generator=gen).float().to(device)

    solvers = ("full", "schur", "woodbury")
    print(f"\n{'batch':>6} " + " ".join(f"{s + ' samples/s':>20}" for s in solvers))
    for b in BATCHES:
        x = x_all[:b]
        row = []
        for solver in solvers:
            if solver == "full" and b > FULL_MAX_BATCH:
                row.append(f"{'-':>20}")
                continue
            cavity.solver = solver
            t = best_time(lambda: cavity(x), args.repeats, sync)  # noqa: B023 - called before x changes
            row.append(f"{b / t:>20,.0f}")
        print(f"{b:>6} " + " ".join(row))
    cavity.solver = "woodbury"

    positions = cavity.drift_parameters()["scatterer_positions"]
    detuning = cavity.drift_parameters()["element_detuning"]

    def move_clutter() -> None:
        positions[0, 0] += 1e-6
        cavity._ensure_built()

    def detune() -> None:
        detuning[0] += 1e-6
        cavity._ensure_built()

    print(
        f"\ndrift step (rebuild after the clutter moved):   {best_time(move_clutter, args.repeats, sync) * 1e3:8.2f} ms"
    )
    print(f"drift step (rebuild after the elements detuned): {best_time(detune, args.repeats, sync) * 1e3:8.2f} ms")
    start = time.perf_counter()
    MetasurfaceCavity(args.n_inputs, args.n_outputs, device=device, seed=1)
    sync()
    print(f"construction (static block, clutter, metasurface):   {(time.perf_counter() - start) * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
