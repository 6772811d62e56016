#!/usr/bin/env python
"""Characterise any physical system: linearity, noise, repeatability, drift.

Before training on a bench, know what it does: how (non)linear its response
is, how noisy one measurement is, whether the same drive gives the same answer
a minute later, and how fast it drifts. This script asks the system only
through its public ``system(x)`` call, so it works for a simulator, a twin, the
AWG + scope bench or the serial DAQ::

    python lab_scripts/characterize.py --system optics --option n_inputs=16 --out char/optics
    python lab_scripts/characterize.py --simulate --out char/serial-sim          # pty fake DAQ
    python lab_scripts/characterize.py --port /dev/ttyACM0 --high 2.5 \\
        --dac-volts-per-code 0.000806 --adc-volts-per-code 0.000806 --out char/bench

Measurements (each a few batched queries; drive values snapped to the
system's levels where it has them):

* repeatability: ``M`` random drives measured at the start and again at the
  end; RMS of the difference relative to the spread of the outputs.
* linearity: each of the first ``--channels`` inputs swept over its full range
  (the others at mid-range); per output, R^2 of a straight-line fit and the
  largest deviation from it as a fraction of the output's swing (like an INL).
* noise: ``R`` random drives each repeated ``--repeats`` times in one batch;
  per output the standard deviation, and the SNR (mean / std) in dB.
* drift: a mid-range drive measured ``--drift-calls`` times ``--drift-interval``
  seconds apart; slope of a straight-line fit per output (units per second),
  counted as drift where it is significant (two-sided t-test at 1 %).

Writes ``linearity.png``, ``noise.png``, ``repeatability.png``, ``drift.png``
and ``summary.json`` (metrics, the system's ``describe()``, query counts).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for train_serial's bench options

REPEAT_DRIVES = 4  # distinct drives in the noise measurement
REPEATABILITY_DRIVES = 16
DRIFT_AVERAGE = 4  # copies of the drift drive per call, averaged


def _snap(values: torch.Tensor, spec) -> torch.Tensor:
    """Values clamped to [low, high] and rounded to the allowed levels, if any."""
    v = values.clamp(spec.low, spec.high)
    if spec.levels is not None:
        v = spec.low + torch.round((v - spec.low) / spec.step) * spec.step
        v = v.clamp(spec.low, spec.high)
    return v


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(slope, intercept, r2, max |residual| / measured swing); r2 and deviation NaN for a flat response."""
    slope, intercept = np.polyfit(x, y, 1)
    fit = slope * x + intercept
    ss_res = float(np.sum((y - fit) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    swing = float(y.max() - y.min())
    if ss_tot <= 1e-24 or swing <= 1e-12:
        return float(slope), float(intercept), math.nan, math.nan
    return float(slope), float(intercept), 1.0 - ss_res / ss_tot, float(np.max(np.abs(y - fit)) / swing)


def _slopes(t: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope of each column of ``y`` against ``t`` and its standard error."""
    tc = t - t.mean()
    sxx = float(np.sum(tc**2))
    if sxx <= 0 or len(t) < 3:
        return np.zeros(y.shape[1]), np.full(y.shape[1], np.inf)
    slope = tc @ (y - y.mean(axis=0)) / sxx
    resid = y - y.mean(axis=0) - np.outer(tc, slope)
    stderr = np.sqrt(np.sum(resid**2, axis=0) / (len(t) - 2) / sxx)
    return slope, stderr


def characterize(
    system,
    *,
    points: int = 21,
    repeats: int = 16,
    drift_calls: int = 20,
    drift_interval: float = 0.0,
    channels: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure ``system`` and return arrays and summary metrics (see the module docstring)."""
    if points < 3 or repeats < 2 or drift_calls < 2 or channels < 1:
        raise ValueError(f"need points >= 3, repeats >= 2, drift_calls >= 2, channels >= 1; got points={points}, "
                         f"repeats={repeats}, drift_calls={drift_calls}, channels={channels}")
    spec = system.spec
    gen = torch.Generator().manual_seed(seed)
    n_in = spec.n_inputs

    def rand_drives(n: int) -> torch.Tensor:
        return _snap(spec.low + torch.rand(n, n_in, generator=gen) * (spec.high - spec.low), spec)

    def query(x: torch.Tensor) -> np.ndarray:
        return system(x).to(torch.float64).cpu().numpy()

    samples0 = system.stats.samples
    t_start = time.monotonic()
    mid = _snap(torch.full((1, n_in), (spec.low + spec.high) / 2), spec)

    # repeatability, first half
    rep_x = rand_drives(REPEATABILITY_DRIVES)
    rep_a = query(rep_x)

    # linearity: one batch with every sweep
    chans = list(range(min(channels, n_in)))
    sweep = torch.unique(_snap(torch.linspace(spec.low, spec.high, points), spec))
    rows = []
    for c in chans:
        block = mid.repeat(len(sweep), 1)
        block[:, c] = sweep
        rows.append(block)
    lin_y = query(torch.cat(rows)).reshape(len(chans), len(sweep), spec.n_outputs)
    sweep_np = sweep.double().numpy()
    fits = np.array([[_fit_line(sweep_np, lin_y[i, :, k]) for k in range(spec.n_outputs)] for i in range(len(chans))])
    r2, dev = fits[..., 2], fits[..., 3]

    # noise: R drives x repeats, one batch
    noise_x = rand_drives(REPEAT_DRIVES).repeat_interleave(repeats, dim=0)
    noise_y = query(noise_x).reshape(REPEAT_DRIVES, repeats, spec.n_outputs)
    noise_mean = noise_y.mean(axis=1)
    noise_std = noise_y.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_db = 20 * np.log10(np.abs(noise_mean) / noise_std)
    snr_finite = snr_db[np.isfinite(snr_db)]

    # drift
    drift_t, drift_y = [], []
    t0 = time.monotonic()
    for i in range(drift_calls):
        if i and drift_interval > 0:
            time.sleep(drift_interval)
        drift_t.append(time.monotonic() - t0)
        drift_y.append(query(mid.repeat(DRIFT_AVERAGE, 1)).mean(axis=0))
    drift_t_np, drift_y_np = np.array(drift_t), np.array(drift_y)
    drift_slope, drift_err = _slopes(drift_t_np, drift_y_np)
    # a slope counts as drift only if it stands out of the noise: two-sided t-test at 1 %
    from scipy.stats import t as student_t

    significant = np.abs(drift_slope) > student_t.ppf(0.995, max(drift_calls - 2, 1)) * drift_err

    # repeatability, second half
    rep_b = query(rep_x)
    spread = float(np.std(rep_a))
    rep_rms = float(np.sqrt(np.mean((rep_b - rep_a) ** 2)))

    def nanstat(f, a) -> float | None:
        a = np.asarray(a, dtype=float)
        a = a[np.isfinite(a)]
        return float(f(a)) if a.size else None

    summary = {
        "linearity_r2_median": nanstat(np.median, r2),
        "linearity_r2_min": nanstat(np.min, r2),
        "nonlinearity_max": nanstat(np.max, dev),
        "noise_std_median": float(np.median(noise_std)),
        "noise_std_max": float(np.max(noise_std)),
        "snr_db_median": float(np.median(snr_finite)) if snr_finite.size else None,
        "repeatability_rms": rep_rms,
        "repeatability_relative": rep_rms / spread if spread > 0 else None,
        "drift_per_s_max_abs": float(np.max(np.abs(drift_slope))),
        "drift_outputs_significant": int(significant.sum()),
        "drift_window_s": float(drift_t_np[-1] - drift_t_np[0]),
        "drift_range_max": float(np.max(drift_y_np.max(axis=0) - drift_y_np.min(axis=0))),
        "duration_s": time.monotonic() - t_start,
        "samples_queried": system.stats.samples - samples0,
    }
    return {
        "summary": summary,
        "settings": dict(points=points, repeats=repeats, drift_calls=drift_calls, drift_interval=drift_interval,
                         channels=len(chans), seed=seed),
        "drive_units": spec.units,
        "output_units": getattr(system, "output_units", "a.u."),
        "name": spec.name,
        "sweep": sweep_np,
        "channels": chans,
        "linearity": lin_y,
        "r2": r2,
        "noise_mean": noise_mean,
        "noise_std": noise_std,
        "repeat_a": rep_a,
        "repeat_b": rep_b,
        "drift_t": drift_t_np,
        "drift_y": drift_y_np,
        "drift_slope": drift_slope,
        "drift_slope_stderr": drift_err,
    }



def _save(fig, path: Path) -> Path:
    """Lay out, write (100 dpi) and close one figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

def save_plots(result: dict[str, Any], out: Path, max_lines: int = 4) -> list[Path]:
    """Four PNG figures with titles, labelled axes (with units) and legends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    name, du, ou = result["name"], result["drive_units"], result["output_units"]
    n_out = result["linearity"].shape[2]
    outs = list(range(min(max_lines, n_out)))
    paths = []

    fig, axes = plt.subplots(1, len(result["channels"]), figsize=(4 * len(result["channels"]), 3.6), squeeze=False)
    for ax, i in zip(axes[0], range(len(result["channels"]))):
        for k in outs:
            ax.plot(result["sweep"], result["linearity"][i, :, k], marker="o", ms=3,
                    label=f"output {k} (R²={result['r2'][i, k]:.3f})")
        ax.set_xlabel(f"drive of input {result['channels'][i]} [{du}]")
        ax.set_ylabel(f"measured output [{ou}]")
        ax.set_title(f"input {result['channels'][i]} swept, others at mid-range")
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: linearity")
    paths.append(_save(fig, out / "linearity.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in range(result["noise_mean"].shape[0]):
        ax.scatter(result["noise_mean"][r], result["noise_std"][r], s=10, label=f"drive {r}")
    ax.set_xlabel(f"mean output [{ou}]")
    ax.set_ylabel(f"standard deviation over {result['settings']['repeats']} repeats [{ou}]")
    ax.set_title(f"{name}: noise (median SNR {result['summary']['snr_db_median'] or float('inf'):.1f} dB)")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "noise.png"))

    fig, ax = plt.subplots(figsize=(5, 4.5))
    a, b = result["repeat_a"].ravel(), result["repeat_b"].ravel()
    ax.scatter(a, b, s=8, label="same drive, start vs end")
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlabel(f"first measurement [{ou}]")
    ax.set_ylabel(f"repeated measurement [{ou}]")
    ax.set_title(f"{name}: repeatability (RMS diff {result['summary']['repeatability_rms']:.3g} {ou})")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "repeatability.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in outs:
        y = result["drift_y"][:, k]
        ax.plot(result["drift_t"], y - y[0], marker=".", label=f"output {k} ({result['drift_slope'][k]:+.2g} {ou}/s)")
    ax.set_xlabel("time since first drift measurement [s]")
    ax.set_ylabel(f"change of mean output [{ou}]")
    ax.set_title(f"{name}: drift at a fixed mid-range drive")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "drift.png"))
    return paths


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option needs KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    low = value.strip().lower()
    if low in ("true", "false"):
        return key.strip(), low == "true"
    if low in ("none", "null"):
        return key.strip(), None
    try:
        return key.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key.strip(), value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from train_serial import add_bench_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", help="a system name from the registry (physnn systems), e.g. optics")
    p.add_argument("--option", action="append", default=[], type=_parse_option, metavar="KEY=VALUE",
                   help="option for --system (repeatable), e.g. n_inputs=16 noise=false")
    add_bench_arguments(p)
    p.add_argument("--points", type=int, default=21, help="drive values per linearity sweep")
    p.add_argument("--repeats", type=int, default=16, help="repeats per drive in the noise measurement")
    p.add_argument("--drift-calls", type=int, default=20, help="measurements in the drift series")
    p.add_argument("--drift-interval", type=float, default=0.5,
                   help="seconds between drift measurements (default 0.5: a 10 s window with 20 calls)")
    p.add_argument("--channels", type=int, default=4, help="inputs swept in the linearity measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="folder for the PNG plots and summary.json")
    args = p.parse_args(argv)
    if sum(bool(v) for v in (args.system, args.simulate, args.port)) != 1:
        p.error("give exactly one of --system NAME, --simulate or --port PORT")
    return args


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.system:
        from physnn.registry import build_system

        options = dict(args.option)
        options.setdefault("seed", args.seed)
        system = build_system(args.system, **options)
    else:
        from train_serial import build_bench

        system = build_bench(args, n_inputs=args.n_inputs or 8, seed=args.seed)
    try:
        result = characterize(system, points=args.points, repeats=args.repeats, drift_calls=args.drift_calls,
                              drift_interval=args.drift_interval, channels=args.channels, seed=args.seed)
        described = system.describe()
    finally:
        system.close()
    paths = save_plots(result, args.out)
    summary = {"system": described, "settings": result["settings"], "drive_units": result["drive_units"],
               "output_units": result["output_units"], "metrics": result["summary"],
               "drift_slope_per_s": result["drift_slope"].tolist(),
               "drift_slope_stderr_per_s": result["drift_slope_stderr"].tolist(),
               "linearity_r2": result["r2"].tolist()}
    (args.out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2, default=str))
    for key, value in result["summary"].items():
        print(f"{key:>26}: {value if value is None or isinstance(value, int) else f'{value:.4g}'}")
    print("wrote " + ", ".join(str(p) for p in paths + [args.out / "summary.json"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
