"""Acoustic cavity: samples/s of the integrators, their error against a tight reference, and the calibration.

Three tables, measured in one process:

* speed: samples/s of one noisy query at batch 64 / 256 / 1024, best of ``--repeats`` runs, for the
  previous integrator as main ran it (symplectic Euler at 32 kHz, ``integrator="euler"``) and the leapfrog
  at 12 kHz (the default), 8 kHz and 16 kHz, interleaved run by run so that the ratio column is fair on a
  shared machine (same cavity, drive level and noise density for all);
* accuracy: the relative L2 distance of the noise-free output (20 spectral magnitudes) from the
  continuous model integrated by scipy's DOP853 (rtol 1e-10, float64) over the same settling time and
  window, for ``--reference-rows`` random drives of each cavity seed in ``--reference-seeds``;
* calibration: nonlinear fraction (1 - R^2 of the best affine map; fit on 2/3 of ``--drives`` random
  drives, scored on the rest; pooled over outputs, weighted by their variance, and mean over outputs) and
  the best single input's share of the variance, for cavity seeds 0-4 at the default drive level, beside
  the measured cavity (``acoustic_x.csv`` / ``acoustic_y.csv`` as shipped with physnn, rows 1..10000).

    python benchmarks/acoustics_speed.py [--threads 1] [--repeats 3] [--drives 900] [--reference-rows 3]
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import time

import numpy as np
import torch

from physnn.data.files import measured_file
from physnn.simulators.acoustics import AcousticCavity

BATCHES = (64, 256, 1024)
#: name -> constructor options (same cavity and drive level); "main" is the integrator main ran
SCHEMES = {
    "main: Euler 32 kHz": dict(integrator="euler", sample_rate=32000.0),
    "leapfrog 12 kHz": {},
    "leapfrog 8 kHz": dict(sample_rate=8000.0),
    "leapfrog 16 kHz": dict(sample_rate=16000.0),
}


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
    systems = {name: AcousticCavity(seed=0, **kw) for name, kw in SCHEMES.items()}
    x_all = torch.rand(max(BATCHES), 20, generator=torch.Generator().manual_seed(0))
    for sim in systems.values():
        sim(x_all[:8])  # warm-up (operators, tone table)
    names = list(systems)
    print(f"\nsamples/s of one noisy query, best of {repeats}, interleaved (cavity seed 0, default drive level)")
    print(f"{'batch':>6} " + " ".join(f"{n:>19}" for n in names) + "   ratio to main")
    for b in BATCHES:
        x = x_all[:b]
        best = {n: float("inf") for n in names}
        for _ in range(repeats):
            for n in names:  # interleaved: all see the same load
                start = time.perf_counter()
                systems[n](x)
                best[n] = min(best[n], time.perf_counter() - start)
        rates = [b / best[n] for n in names]
        ratios = " / ".join(f"{r / rates[0]:.2f}" for r in rates[1:])
        print(f"{b:>6} " + " ".join(f"{r:>19,.0f}" for r in rates) + f"   {ratios}")


def _speaker(sim: AcousticCavity, x: np.ndarray, t: float) -> float:
    """The loudspeaker's dU/dt (m^3/s^2) at time t for drive x: raised-cosine ramp, seeded phases."""
    w = 2 * math.pi * sim.tone_frequencies.numpy()
    ph = sim.tone_phases.numpy()
    if sim.ramp_s > 0 and t < sim.ramp_s:
        r = 0.5 * (1 - math.cos(math.pi * t / sim.ramp_s))
        dr = 0.5 * math.pi / sim.ramp_s * math.sin(math.pi * t / sim.ramp_s)
    else:
        r, dr = 1.0, 0.0
    return float(x @ (sim.volume_velocity * (r * w * np.cos(w * t + ph) + dr * np.sin(w * t + ph))))


def reference_field(sim: AcousticCavity, x: np.ndarray) -> np.ndarray:
    """|spectrum| at the output bins of the continuous model (no discretisation), by DOP853 at rtol 1e-10."""
    from scipy.integrate import solve_ivp

    ops = sim._physics()  # the continuous operators (no warp)
    K, g, beta, b, mic = (ops[k].numpy() for k in ("K", "gamma", "beta", "b", "mic"))
    D = K.shape[0]

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        z, v = y[:D], y[D:]
        return np.concatenate([v, -K @ z - g * v - beta * z**3 + b * _speaker(sim, x, t)])

    t_eval = (sim.n_settle + np.arange(sim.n_window)) / sim.sample_rate
    sol = solve_ivp(
        rhs, (0.0, t_eval[-1]), np.zeros(2 * D), "DOP853", t_eval=t_eval, rtol=1e-10, atol=1e-13, max_step=1 / 8000
    )
    if not sol.success:
        raise RuntimeError(f"reference integration failed: {sol.message}")
    p = torch.from_numpy(mic @ sol.y[:D])[None]
    return sim.spectrum(p).abs()[0].numpy()


def accuracy_table(seeds: list[int], rows: int) -> None:
    print(f"\nrelative L2 error of the noise-free output against DOP853 (rtol 1e-10), {rows} random drives per seed")
    errors: dict[str, list[float]] = {n: [] for n in SCHEMES}
    for seed in seeds:
        x = torch.rand(rows, 20, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        base = AcousticCavity(seed=seed, noise=False, dtype=torch.float64)
        start = time.perf_counter()
        ref = np.stack([reference_field(base, xi) for xi in x.numpy()])
        took = time.perf_counter() - start
        line = f"seed {seed} ({took:.0f} s for the reference):\n"
        for name, kw in SCHEMES.items():
            y = AcousticCavity(seed=seed, noise=False, dtype=torch.float64, **kw).field(x).abs().numpy()
            e = np.linalg.norm(y - ref, axis=1) / np.linalg.norm(ref, axis=1)
            errors[name] += e.tolist()
            line += f"    {name:<20}" + " ".join(f"{v:.4f}" for v in e) + "\n"
        print(line, end="", flush=True)
    print(f"{'scheme':<20} {'median':>8} {'mean':>8} {'max':>8}   ({len(errors['main: Euler 32 kHz'])} drives)")
    for name, e in errors.items():
        a = np.array(e)
        print(f"{name:<20} {np.median(a):>8.4f} {a.mean():>8.4f} {a.max():>8.4f}")


def calibration_table(n_drives: int) -> None:
    x = torch.rand(n_drives, 20, generator=torch.Generator().manual_seed(1))
    xn = x.double().numpy()
    rows = []
    for seed in range(5):
        y = AcousticCavity(noise=False, seed=seed)(x).double().numpy()
        rows.append((f"cavity seed {seed}", *mixing(xn, y), *nonlinear_fraction(xn, y)))
    mean = np.array([r[1:] for r in rows]).mean(0)
    rows.append(("mean of seeds 0-4", *mean))
    try:
        xs, ys = (measured_file(f"acoustic_{v}.csv") for v in "xy")
        load = [np.loadtxt(gzip.open(p, "rt") if p.suffix == ".gz" else p, delimiter=",") for p in (xs, ys)]
        xr, yr = (a[1:10001] for a in load)  # row 0 is the all-zero drive
        rows.append(("measured cavity", *mixing(xr, yr), *nonlinear_fraction(xr, yr)))
    except FileNotFoundError as exc:
        print(f"(measured cavity data not found: {exc})")
    print(f"\ncalibration, noise-free, {n_drives} random drives (fit on 2/3, scored on 1/3); measured: 10000 drives")
    print(f"{'system':<22} {'best single input':>22} {'nonlinear fraction':>22}")
    print(f"{'':<22} {'weighted':>11}{'mean':>11} {'pooled':>11}{'mean':>11}")
    for name, mw, mm, nw, nm in rows:
        print(f"{name:<22} {mw:>11.3f}{mm:>11.3f} {nw:>11.3f}{nm:>11.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for the whole run (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--drives", type=int, default=900, help="random drives per seed for the calibration")
    parser.add_argument("--reference-rows", type=int, default=3, help="drives per seed against DOP853 (0: skip)")
    parser.add_argument("--reference-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-calibration", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # once, for the whole script (never inside a query)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"AcousticCavity, torch {torch.__version__}, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    if not args.skip_speed:
        speed_table(args.repeats)
    if args.reference_rows > 0:
        accuracy_table(args.reference_seeds, args.reference_rows)
    if not args.skip_calibration:
        calibration_table(args.drives)


if __name__ == "__main__":
    main()
