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

* the bench checks of :func:`physnn.analysis.characterize.bench_sweeps`: one-input
  sweeps (linearity), noise per drive, repeatability, drift over time;
* the figures of :func:`physnn.analysis.characterize.characterize` at ``--fit-drives``
  + ``--test-drives`` random valid drives (each queried twice): nonlinear
  fraction, effective rank, relative noise floor, best-single-input share
  (``--fit-drives 0`` skips them, e.g. on a very slow bench).

Writes ``linearity.png``, ``noise.png``, ``repeatability.png``, ``drift.png``,
``characterize.png`` and ``summary.json`` (metrics, the system's ``describe()``,
query counts). The measuring code lives in :mod:`physnn.analysis.characterize`; this
script adds the bench options (serial port, simulated bench) and the files.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from pathlib import Path
from typing import Any

from physnn.analysis.characterize import bench_sweeps, characterize, save_bench_plots, save_figure

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for train_serial's bench options

#: The bench checks, under the name this script has always exported.
characterize_bench = bench_sweeps


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

    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--system", help="a system name from the registry (physnn systems), e.g. optics, with its recipe's options"
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        type=_parse_option,
        metavar="KEY=VALUE",
        help="option for --system (repeatable), e.g. n_inputs=16 noise=false",
    )
    add_bench_arguments(p)
    p.add_argument("--points", type=int, default=21, help="drive values per linearity sweep")
    p.add_argument("--repeats", type=int, default=16, help="repeats per drive in the noise measurement")
    p.add_argument("--drift-calls", type=int, default=20, help="measurements in the drift series")
    p.add_argument(
        "--drift-interval",
        type=float,
        default=0.5,
        help="seconds between drift measurements (default 0.5: a 10 s window with 20 calls)",
    )
    p.add_argument("--channels", type=int, default=4, help="inputs swept in the linearity measurement")
    p.add_argument(
        "--fit-drives",
        type=int,
        default=300,
        help="random drives the affine map is fitted on for the nonlinear fraction (0: skip)",
    )
    p.add_argument("--test-drives", type=int, default=150, help="held-out random drives it is scored on")
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
        from physnn.core.registry import build_system
        from physnn.run.recipes import with_recipe

        # the system's recipe under the given options: the camera, cavity ... physnn train would use
        options = {**with_recipe({"system": args.system}).get("system_options", {}), **dict(args.option)}
        options.setdefault("seed", args.seed)
        system = build_system(args.system, **options)
    else:
        from train_serial import build_bench

        system = build_bench(args, n_inputs=args.n_inputs or 8, seed=args.seed)
    try:
        result = bench_sweeps(
            system,
            points=args.points,
            repeats=args.repeats,
            drift_calls=args.drift_calls,
            drift_interval=args.drift_interval,
            channels=args.channels,
            seed=args.seed,
        )
        figures = None
        if args.fit_drives > 0:
            figures = characterize(system, n_fit=args.fit_drives, n_test=args.test_drives, seed=args.seed)
        described = system.describe()
    finally:
        system.close()
    paths = save_bench_plots(result, args.out)
    summary = {
        "system": described,
        "settings": result["settings"],
        "drive_units": result["drive_units"],
        "output_units": result["output_units"],
        "metrics": result["summary"],
        "drift_slope_per_s": result["drift_slope"].tolist(),
        "drift_slope_stderr_per_s": result["drift_slope_stderr"].tolist(),
        "linearity_r2": result["r2"].tolist(),
    }
    if figures is not None:
        paths.append(save_figure(figures, args.out / "characterize.png"))
        summary["figures"] = figures.summary()
    (args.out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2, default=str))
    for key, value in {**result["summary"], **(summary.get("figures") or {})}.items():
        shown = value if value is None or isinstance(value, (int, str)) else f"{value:.4g}"
        print(f"{key:>32}: {shown}")
    print("wrote " + ", ".join(str(p) for p in paths + [args.out / "summary.json"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
