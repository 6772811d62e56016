#!/usr/bin/env python
"""Transactions per batch and overhead per sample of the simulated instrument benches.

For each batch size, one call of the system is timed (median of ``--repeats``)
and the instrument transactions it cost are counted:

* SCPI bench (``AWGScopeSystem`` on the in-process AWG + scope): every command
  or query written to either instrument. The target is a constant: 12 per
  waveform, and one waveform per batch until the batch outgrows the AWG
  memory (``max_per_waveform`` samples), then ``ceil(B / max_per_waveform)``.
* serial DAQ (``SerialDAQSystem`` on the pty fake firmware), when
  ``physnn.devices.sim.fake_firmware`` is importable: RUN_BATCH frames per
  call, ``ceil(B / max_batch)`` by the protocol (one request + one reply each).

The overhead per sample is ``(t_bench - t_direct) / B`` against the same
simulator (optics, same width and seed) called directly: the cost of framing,
transport, parsing and feature extraction, not of the physics. Timings are
wall-clock on whatever machine runs this; on a shared machine they are noisy.

    python benchmarks/instruments.py [--n 16] [--sizes 1 16 64 256 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import torch

from physnn.core.system import PhysicalSystem
from physnn.simulators.optics import OpticalCavity


def drive(system: PhysicalSystem, batch: int, seed: int = 0) -> torch.Tensor:
    """Random drive values inside the system's spec (on its levels if it has them)."""
    s = system.spec
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, s.n_inputs, generator=g)
    if s.levels is not None:
        return s.low + torch.round(u * (s.levels - 1)) * s.step
    return s.low + u * (s.high - s.low)


def time_call(system: PhysicalSystem, x: torch.Tensor, repeats: int, count: Callable[[], int]) -> tuple[float, int]:
    """Median seconds per call and transactions per call (checked equal across repeats)."""
    system(x)  # warm-up (and the first batch's one-off OUTP1 ON)
    times, counts = [], []
    for _ in range(repeats):
        c0 = count()
        t0 = time.perf_counter()
        system(x)
        times.append(time.perf_counter() - t0)
        counts.append(count() - c0)
    if len(set(counts)) != 1:
        raise RuntimeError(f"{system.spec.name}: transactions per call varied between repeats: {counts}")
    return statistics.median(times), counts[0]


def table(title: str, rows: list[tuple], header: tuple) -> None:
    print(f"\n{title}")
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(str(v).rjust(w) for v, w in zip(r, widths)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=16, help="inputs and outputs per sample (default 16)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64, 256, 1024], help="batch sizes")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier timings)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from physnn.devices.sim.scpi_bench import simulated_awg_scope

    direct = OpticalCavity(args.n, args.n, seed=0)
    bench = simulated_awg_scope(n_inputs=args.n, n_outputs=args.n, seed=0)
    rows = []
    try:
        for b in args.sizes:
            x = drive(direct, b)
            t_d, _ = time_call(direct, x, args.repeats, lambda: 0)
            t_b, n_tx = time_call(bench, x, args.repeats, lambda: sum(bench.bench.transactions.values()))
            rows.append(
                (
                    b,
                    bench.waveforms_for(b),
                    n_tx,
                    f"{t_d * 1e3:.2f}",
                    f"{t_b * 1e3:.2f}",
                    f"{(t_b - t_d) / b * 1e6:.1f}",
                )
            )
    finally:
        bench.close()
    table(
        f"SCPI bench (AWG + scope, n={args.n}, {bench.max_per_waveform} samples per waveform, "
        f"{bench.record_points} scope points per capture)",
        rows,
        ("batch", "waveforms", "transactions", "direct ms", "bench ms", "overhead us/sample"),
    )

    try:
        from physnn.devices.sim.fake_firmware import simulated_serial_daq
    except ImportError as exc:
        print(f"\nserial DAQ: skipped ({exc})")
        return 0
    daq = simulated_serial_daq(n_inputs=args.n, n_outputs=args.n, backend="optics", seed=0)
    rows = []
    try:
        max_batch = getattr(getattr(daq, "ident", None), "max_batch", None)
        for b in args.sizes:
            x = drive(daq, b)
            t_d, _ = time_call(direct, drive(direct, b), args.repeats, lambda: 0)
            t_s, frames = time_call(daq, x, args.repeats, lambda: daq.stats.counters.get("run_batch_frames", 0))
            rows.append((b, frames, f"{t_d * 1e3:.2f}", f"{t_s * 1e3:.2f}", f"{(t_s - t_d) / b * 1e6:.1f}"))
    finally:
        daq.close()
    table(
        f"serial DAQ (pty fake firmware, n={args.n}, max_batch={max_batch})",
        rows,
        ("batch", "RUN_BATCH frames", "direct ms", "daq ms", "overhead us/sample"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
