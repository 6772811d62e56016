"""``physnn`` command line: train, systems, report, compare, ls.

``physnn train`` with no arguments is the main job: digits through the optical
simulator, 2 blocks, a run file under ``runs/``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

from .config import ConfigError, RunConfig, load_config

__all__ = ["main"]

# CLI flag -> config key; None means "not given" so the config file's value stands.
_TRAIN_FLAGS: list[tuple[str, str, type, str]] = [
    ("--dataset", "dataset", str, "data set: digits, vowels, mnist5k, mnist-idx"),
    ("--data-path", "data_path", str, "file or folder of the data set (vowels CSV, MNIST IDX folder)"),
    ("--system", "system", str, "physical system name (see `physnn systems`)"),
    ("--method", "method", str, "training method: mfff (default), pat, zeroth_order, backprop (in silico); "
     "controls: ff_digital, digital"),
    ("--blocks", "blocks", int, "number of physical blocks"),
    ("--hidden", "hidden", int, "width of each block's digital layer"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--batch-size", "batch_size", int, "samples per batch"),
    ("--lr", "lr", float, "Adam learning rate"),
    ("--inner-steps", "inner_steps", int, "optimiser steps per batch of measurements"),
    ("--theta", "theta", float, "sharpness of the local loss"),
    ("--goodness", "goodness", str, "cosine (PhyLL) or mean_square (Hinton)"),
    ("--encoder", "encoder", str, "minmax, l2 or abs-l2"),
    ("--seed", "seed", int, "seed of data split, systems, weights and negatives"),
    ("--device", "device", str, "torch device for simulators (cpu, cuda)"),
    ("--threads", "threads", int, "torch CPU threads (default 1, reproducible; 0 = torch's default)"),
    ("--output", "output", str, "run file (*.h5) or folder for it (default runs/)"),
]


def _parse_option(text: str, flag: str = "--system-option") -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as TOML (numbers, booleans, quoted strings) or a bare string."""
    if "=" not in text:
        raise ConfigError(f"{flag} needs KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    from .config import tomllib

    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def _cmd_train(args: argparse.Namespace) -> int:
    from .experiment import run_experiment

    overrides = {key: getattr(args, key) for _, key, _, _ in _TRAIN_FLAGS}
    if args.resume:
        from . import runlog

        config = RunConfig.from_dict(runlog.load(args.resume).config, source=args.resume)
        # a resumed run keeps its configuration; only the epoch budget may grow (extending a finished run)
        others = sorted(k for k, v in overrides.items() if v is not None and k != "epochs")
        if others or args.config or args.system_option or args.method_option:
            given = ", ".join(others) or "--config/--system-option/--method-option"
            raise ConfigError(f"--resume continues a run with its own configuration; only --epochs may be given "
                              f"with it (got {given})")
        if overrides["epochs"] is not None:
            config = config.updated(epochs=overrides["epochs"])
    else:
        config = load_config(args.config) if args.config else RunConfig()
        config = config.updated(**overrides)
        if args.system_option:
            opts = dict(config.system_options)
            opts.update(_parse_option(o) for o in args.system_option)
            config = config.updated(system_options=opts)
        if args.method_option:
            opts = dict(config.method_options)
            opts.update(_parse_option(o, "--method-option") for o in args.method_option)
            config = config.updated(method_options=opts)
    print(f"physnn train ({config.method}): {config.dataset} through {config.system} x{config.blocks} blocks, "
          f"{config.epochs} epochs, seed {config.seed}", flush=True)
    progress = not args.no_progress and sys.stderr.isatty()

    def echo(line: str) -> None:
        # with a progress bar, tqdm.write keeps the per-epoch lines above it instead of breaking it; without
        # one, plain print, flushed so that a pipe (a log, a parent process) sees each epoch as it is saved
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(line)
        else:
            print(line, flush=True)

    result = run_experiment(config, progress=progress, resume=args.resume, echo=echo)
    print(f"train accuracy {result.train_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}")
    print(f"physical queries: {result.train_queries} samples in training, {result.total_queries} in total "
          f"(incl. evaluation); wall time {result.wall_seconds:.1f} s")
    if result.path is not None:
        print(f"run file: {result.path}")
    return 0


def _cmd_systems(args: argparse.Namespace) -> int:
    from .registry import available_systems, build_system

    rows = []
    for name in available_systems():
        try:
            with build_system(name) as s:
                sp = s.spec
                levels = str(sp.levels) if sp.levels else "continuous"
                doc = (type(s).__doc__ or "").strip().splitlines()[0] if type(s).__doc__ else ""
                rows.append((name, f"{sp.n_inputs}", f"{sp.n_outputs}", f"{sp.low:g}..{sp.high:g} {sp.units}", levels, doc))
        except Exception as exc:  # a listing must not die on one broken plug-in
            rows.append((name, "-", "-", "-", "-", f"unavailable: {exc}"))
    header = ("name", "n_in", "n_out", "drive limits", "levels", "description")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    print(fmt.format(*header))
    for r in rows:
        print(fmt.format(*r))
    print("\n(default sizes shown; n_inputs follows the model's width for systems that allow it)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import main_report

    files = main_report(args.run, args.out)
    for f in files:
        print(f)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare

    print(compare(args.runs, out=args.out))
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from .report import ls

    print(ls(args.folder))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="physnn", description="Train physical neural networks with MF-FF.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a PNN (no arguments: the main job, digits through optics)")
    t.add_argument("--config", help="TOML file with the same keys as these flags")
    for flag, key, typ, help_ in _TRAIN_FLAGS:
        t.add_argument(flag, dest=key, type=typ, default=None, help=help_)
    t.add_argument("--system-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the system's factory (repeatable), e.g. noise=false")
    t.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the training method (repeatable), e.g. twin_samples=1000 for pat")
    t.add_argument("--resume", metavar="RUN.h5",
                   help="continue a run file from its last checkpoint (with --epochs N: extend it to N epochs)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)
    s = sub.add_parser("systems", help="list the available physical systems and their specs")
    s.set_defaults(func=_cmd_systems)
    r = sub.add_parser("report", help="plots and a Markdown summary of a run file")
    r.add_argument("run")
    r.add_argument("--out", default=None, help="output folder (default: next to the run file)")
    r.set_defaults(func=_cmd_report)
    c = sub.add_parser("compare", help="overlay several runs and print a table")
    c.add_argument("runs", nargs="+")
    c.add_argument("--out", default=None, help="PNG file for the overlay plot")
    c.set_defaults(func=_cmd_compare)
    l_ = sub.add_parser("ls", help="list the runs in a folder with their key numbers")
    l_.add_argument("folder", nargs="?", default="runs")
    l_.set_defaults(func=_cmd_ls)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: the run file holds every completed epoch; instruments were put in their safe state",
              file=sys.stderr)
        return 130
    except (ConfigError, ValueError, FileNotFoundError, ImportError) as exc:
        if os.environ.get("PHYSNN_DEBUG"):
            raise
        print(f"physnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
