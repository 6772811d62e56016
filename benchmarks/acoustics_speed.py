"""Acoustic cavity: samples/s by batch size, and how much its outputs mix and bend the inputs.

Two tables, both on the previous defaults (8 membranes, coupling 0.5) and the
current ones (16 membranes, coupling 0.9), measured in one process:

* speed: samples/s of one noisy query at batch 64 / 256 / 1024, best of
  ``--repeats`` runs, the two configurations interleaved run by run so that
  the ratio column is fair on a shared machine;
* mixing and nonlinearity, noise-free, on ``--drives`` random valid drives
  (first two thirds fit, last third held out), beside the same figures for the
  measured cavity (``acoustic_x.csv`` / ``acoustic_y.csv``, rows 1..3000):
  "best single input" is the share of each output's variance explained by its
  best single input (R^2 of a line), weighted by the output variance and
  unweighted; "nonlinear fraction" is 1 - R^2 of the best affine map from the
  drive to the output, pooled over outputs (weighted) and averaged per output.

    python benchmarks/acoustics_speed.py [--threads 1] [--repeats 3] [--drives 3000] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from physnn.data import files as data_files
from physnn.simulators.acoustics import AcousticCavity

BATCHES = (64, 256, 1024)
# name -> constructor options; "previous" is the cavity before the membranes were strengthened
CONFIGS = {"previous": dict(n_membranes=8, coupling=0.5), "current": {}}
LEGEND = "previous: 8 membranes, coupling 0.5; current: the defaults (16 membranes, coupling 0.9)"


def mixing(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Best single input's R^2 per output: (variance-weighted, unweighted mean)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    r2 = (xc.T @ yc) ** 2 / ((xc**2).sum(0)[:, None] * (yc**2).sum(0)[None] + 1e-300)
    best, var = r2.max(0), y.var(0)
    return float((best * var).sum() / var.sum()), float(best.mean())


def nonlinear_fraction(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """1 - R^2 of the best affine map, fit on the first 2/3 and scored on the rest: (pooled, per-output mean)."""
    n = 2 * len(x) // 3
    a = np.hstack([x, np.ones((len(x), 1))])
    w, *_ = np.linalg.lstsq(a[:n], y[:n], rcond=None)
    resid = y[n:] - a[n:] @ w
    sse, sst = (resid**2).sum(0), ((y[n:] - y[n:].mean(0)) ** 2).sum(0)
    return float(sse.sum() / sst.sum()), float((sse / sst).mean())


def speed_table(repeats: int) -> None:
    systems = {name: AcousticCavity(seed=0, **kw) for name, kw in CONFIGS.items()}
    gen = torch.Generator().manual_seed(0)
    x_all = torch.rand(max(BATCHES), 20, generator=gen)
    for sim in systems.values():
        sim(x_all[:8])  # warm-up (builds the tone table)
    names = list(systems)
    print(f"\n{LEGEND}\nsamples/s of one noisy query, best of {repeats}, interleaved")
    print(f"{'batch':>6} " + " ".join(f"{n + ' /s':>14}" for n in names) + f" {'current / previous':>20}")
    for b in BATCHES:
        x = x_all[:b]
        best = {n: float("inf") for n in names}
        for _ in range(repeats):
            for n in names:  # interleaved: both see the same load
                start = time.perf_counter()
                systems[n](x)
                best[n] = min(best[n], time.perf_counter() - start)
        rates = [b / best[n] for n in names]
        print(f"{b:>6} " + " ".join(f"{r:>14,.0f}" for r in rates) + f" {rates[1] / rates[0]:>20.2f}")


def figures_table(n_drives: int, data: Path | None) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n_drives, 20, generator=gen)
    rows = []
    for name, kw in CONFIGS.items():
        y = AcousticCavity(noise=False, seed=0, **kw)(x).double().numpy()
        rows.append((name, *mixing(x.double().numpy(), y), *nonlinear_fraction(x.double().numpy(), y)))
    try:  # the measured pairs shipped with physnn (or --data: a folder of acoustic_{x,y}.csv[.gz])
        xs, ys = (data_files.measured_file(f"acoustic_{v}.csv", data) for v in "xy")
    except FileNotFoundError:
        xs = ys = None
    if xs is not None:
        xr = np.loadtxt(xs, delimiter=",")[1 : n_drives + 1]  # row 0 is the all-zero drive
        yr = np.loadtxt(ys, delimiter=",")[1 : n_drives + 1]
        rows.append(("measured cavity (csv)", *mixing(xr, yr), *nonlinear_fraction(xr, yr)))
    else:
        print(f"(measured cavity data not found under {data or data_files.data_dir()}: its row is left out)")
    print(f"\nnoise-free, {n_drives} random drives (fit on 2/3, scored on 1/3)")
    print(f"{'system':<24} {'best single input':>22} {'nonlinear fraction':>22}")
    print(f"{'':<24} {'weighted':>11}{'mean':>11} {'pooled':>11}{'mean':>11}")
    for name, mw, mm, nw, nm in rows:
        print(f"{name:<24} {mw:>11.3f}{mm:>11.3f} {nw:>11.3f}{nm:>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the whole run (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--drives", type=int, default=3000, help="random drives for the mixing figures")
    parser.add_argument("--data", type=Path, default=None, help="folder of the measured pairs (default: shipped)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-figures", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # once, for the whole script (never inside a query)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"AcousticCavity, torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    if not args.skip_speed:
        speed_table(args.repeats)
    if not args.skip_figures:
        figures_table(args.drives, args.data)


if __name__ == "__main__":
    main()
