"""``physnn sweep``: the command line of :mod:`physnn.scale.sweep`."""

from __future__ import annotations

import argparse
from typing import Any

from physnn.run.config import load_config
from physnn.scale.sweep import parse_grid, parse_seeds, run_sweep, summarise

__all__ = ["add_cli"]


def _cmd_sweep(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    benches = [b.strip() for b in args.benches.split(",") if b.strip()] if args.benches else []
    result = run_sweep(
        config,
        parse_grid(args.grid),
        parse_seeds(args.seeds) if args.seeds else [config.seed],
        args.out,
        benches=benches,
        address=args.address,
        num_cpus=args.num_cpus,
        max_retries=args.max_retries,
        echo=print,
    )
    print(summarise(result.folder))
    n = result.counts
    print(
        f"\n{len(result.trials)} trials in {result.wall_seconds:.1f} s: {n['completed']} completed, {n['skipped']} "
        f"skipped (completed by an earlier run), {n['failed']} failed; details in {result.folder / 'sweep.json'}"
    )
    return 0 if not result.failed else 1


def add_cli(subparsers: Any) -> None:
    """Register ``physnn sweep`` on the CLI's subparsers."""
    p = subparsers.add_parser("sweep", help="run a grid of configs x seeds (x benches) on a Ray cluster")
    p.add_argument("config", help="base TOML config")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values (repeatable; the trials are the product)",
    )
    p.add_argument("--seeds", default=None, help="seeds, e.g. 0-4 or 0,3,7 (default: the config's seed)")
    p.add_argument("--benches", default=None, help="bench resources to spread trials over, e.g. bench:a,bench:b")
    p.add_argument("--out", required=True, help="sweep folder (one run file per trial, sweep.json)")
    p.add_argument(
        "--address", default=None, help="Ray cluster (HOST:PORT, or auto); default: a private cluster on this machine"
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the private cluster (default: all)")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a trial whose worker or bench died")
    p.set_defaults(func=_cmd_sweep)
