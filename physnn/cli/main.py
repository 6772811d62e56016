"""``physnn`` command line: train, systems, characterize, report, compare, ls, serve, sweep.

``physnn train`` with no arguments is the main job: digits through the optical
simulator, 2 blocks, a run file under ``runs/``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import logging
import os
import re
import sys
from pathlib import Path
from typing import NoReturn, Sequence

from physnn.core import safety
from physnn.core.safety import Terminated, shutdown_on_signals
from physnn.run.config import ConfigError

__all__ = ["main"]

# CLI flag -> config key; None means "not given" so the config file's value stands.
_TRAIN_FLAGS: list[tuple[str, str, type, str]] = [
    (
        "--dataset",
        "dataset",
        str,
        "data set: digits, vowels, mnist5k, mnist-idx, csv, npz or a plug-in (physnn.datasets entry points)",
    ),
    ("--data-path", "data_path", str, "file or folder of the data set (your CSV or .npz, an MNIST IDX folder)"),
    ("--label-column", "label_column", str, "the CSV column holding the labels (default 'label'; --dataset csv)"),
    ("--system", "system", str, "physical system name (see `physnn systems`)"),
    (
        "--method",
        "method",
        str,
        "training method: mfff (default), pat, zeroth_order, backprop (in silico); controls: ff_digital, digital",
    ),
    ("--blocks", "blocks", int, "number of physical blocks"),
    ("--hidden", "hidden", int, "width of each block's digital layer"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--batch-size", "batch_size", int, "samples per batch"),
    ("--lr", "lr", float, "Adam learning rate"),
    ("--inner-steps", "inner_steps", int, "optimiser steps per batch of measurements"),
    ("--theta", "theta", float, "sharpness of the local loss"),
    ("--goodness", "goodness", str, "cosine (PhyLL) or mean_square (Hinton)"),
    ("--encoder", "encoder", str, "minmax, l2, abs-l2 or thermometer (binary drives)"),
    ("--encoder-bits", "encoder_bits", int, "drive channels per value of the thermometer encoder (0: its default, 1)"),
    ("--label-repeat", "label_repeat", int, "input slots per class label in MF-FF's label embedding (default 1)"),
    ("--val-fraction", "val_fraction", float, "share of the training split held out for validation (default 0.1)"),
    (
        "--metric-sinks",
        "metric_sinks",
        lambda text: [x for x in text.split(",") if x],
        "also send per-epoch metrics to tensorboard and/or mlflow (comma-separated; optional extras)",
    ),
    ("--eval-samples", "eval_samples", int, "validation samples per scheduled evaluation (0: all)"),
    ("--query-budget", "query_budget", int, "stop before the learning queries would exceed this (0: no budget)"),
    ("--stop-on", "stop_on", str, "early stop: none, loss, gap (no queries) or val"),
    ("--schedule", "schedule", str, "serial or pipelined (one worker per device)"),
    ("--seed", "seed", int, "seed of data split, systems, weights and negatives"),
    ("--device", "device", str, "torch device for simulators (cpu, cuda)"),
    ("--threads", "threads", int, "torch CPU threads (default 1, reproducible; 0 = torch's default)"),
    ("--output", "output", str, "run file (*.h5) or folder for it (default runs/)"),
]


def _cmd_train(args: argparse.Namespace) -> int:
    from physnn.run.experiment import run_experiment

    overrides = {key: getattr(args, key) for _, key, _, _ in _TRAIN_FLAGS}
    if args.resume:
        from physnn.run.experiment import resume_config

        # its own configuration, for the epochs it was last asked for (or --epochs: checked against those done)
        config = resume_config(args.resume, overrides["epochs"])
        # a resumed run keeps its configuration; only the epoch budget may grow (extending a finished run)
        others = sorted(k for k, v in overrides.items() if v is not None and k != "epochs")
        if others or args.config or args.system_option or args.method_option:
            given = ", ".join(others) or "--config/--system-option/--method-option"
            raise ConfigError(
                f"--resume continues a run with its own configuration; only --epochs may be given with it (got {given})"
            )
    else:
        from physnn.cli.train_config import config_from_flags

        # the config file's keys, then the flags; the system's recipe fills only what neither sets
        config = config_from_flags(args.config, overrides, args.system_option, args.method_option)
    print(
        f"physnn train ({config.method}): {config.dataset} through {config.system} x{config.blocks} blocks, "
        f"{config.epochs} epochs, seed {config.seed}",
        flush=True,
    )
    progress = not args.no_progress and sys.stderr.isatty()

    def echo(line: str) -> None:
        # with a progress bar, tqdm.write keeps the per-epoch lines above it instead of breaking it; without
        # one, plain print, flushed so that a pipe (a log, a parent process) sees each epoch as it is saved
        if progress:
            from tqdm.auto import tqdm

            tqdm.write(line)
        else:
            print(line, flush=True)

    if not args.resume:  # every key and combination is checked by the runner before anything is opened
        _check_output(config.output)
    # a run file is data: paths in its options may only point into the run's folder or the user's cache
    confine = (
        safety.confined_paths([Path(args.resume).resolve().parent, safety.user_cache_dir()], source=str(args.resume))
        if args.resume
        else contextlib.nullcontext()
    )
    with confine:
        result = run_experiment(config, progress=progress, resume=args.resume, echo=echo)
    if result.test_n:
        from physnn.core.evaluation import Accuracy

        test = str(Accuracy(round(result.test_accuracy * result.test_n), result.test_n))
    else:
        test = f"{result.test_accuracy:.4f}"
    train = "" if result.train_accuracy != result.train_accuracy else f" (training batches {result.train_accuracy:.4f})"
    print(f"test accuracy {test}{train}")
    print(
        f"physical queries: {result.train_queries} samples in training, {result.total_queries} in total "
        f"(incl. evaluation); wall time {result.wall_seconds:.1f} s"
    )
    if result.path is not None:
        print(f"run file: {result.path}")
    return 0


def _check_output(value: str) -> None:
    """``--output`` must be a new ``*.h5`` file or a folder: an existing file on the way is refused up front.

    A name with another suffix (``run.txt``) is refused too, rather than silently made a folder.
    """
    out = Path(value)
    if out.suffix and out.suffix not in (".h5", ".hdf5") and not out.is_dir():
        raise ConfigError(f"output {value!r} ends in {out.suffix!r}: give a run file name ending in .h5 or a folder")
    folder = out.parent if out.suffix in (".h5", ".hdf5") else out
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise ConfigError(
                    f"output {value!r}: {str(p)!r} is a file, not a folder; give a folder or a new *.h5 file name"
                )
            return


def _cmd_systems(args: argparse.Namespace) -> int:
    from physnn.core.registry import available_systems, build_system

    rows = []
    for name in available_systems():
        try:
            with build_system(name) as s:
                sp = s.spec
                levels = str(sp.levels) if sp.levels else "continuous"
                doc = (type(s).__doc__ or "").strip().splitlines()[0] if type(s).__doc__ else ""
                rows.append(
                    (name, f"{sp.n_inputs}", f"{sp.n_outputs}", f"{sp.low:g}..{sp.high:g} {sp.units}", levels, doc)
                )
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
    from physnn.analysis.report import main_report

    files = main_report(args.run, args.out, fmt=args.format)
    for f in files:
        print(f)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from physnn.analysis.report import compare

    print(compare(args.runs, out=args.out, fmt=args.format))
    return 0


def _cmd_ls(args: argparse.Namespace) -> int:
    from physnn.analysis.report import ls

    print(ls(args.folder))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="physnn", description="Train physical neural networks with MF-FF.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a PNN (no arguments: the main job, digits through optics)")
    t.add_argument("--config", help="TOML file with the same keys as these flags")
    for flag, key, typ, help_ in _TRAIN_FLAGS:
        t.add_argument(flag, dest=key, type=typ, default=None, help=help_)
    t.add_argument(
        "--system-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the system's factory (repeatable), e.g. noise=false",
    )
    t.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the training method (repeatable), e.g. twin_samples=1000 for pat",
    )
    t.add_argument(
        "--resume",
        metavar="RUN.h5",
        help="continue a run file from its last checkpoint (with --epochs N: extend it to N epochs)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)
    s = sub.add_parser("systems", help="list the available physical systems and their specs")
    s.set_defaults(func=_cmd_systems)
    r = sub.add_parser("report", help="plots and a Markdown summary of a run file")
    r.add_argument("run")
    r.add_argument("--out", default=None, help="output folder (default: next to the run file)")
    r.add_argument("--format", choices=("png", "pdf", "svg"), default="png", help="figure format (default png)")
    r.set_defaults(func=_cmd_report)
    c = sub.add_parser("compare", help="overlay several runs and print a table")
    c.add_argument("runs", nargs="+")
    c.add_argument("--out", default=None, help="figure file (.png/.pdf/.svg) or folder for the overlay plot")
    c.add_argument(
        "--format",
        choices=("png", "pdf", "svg"),
        default="png",
        help="figure format when --out is a folder (default png)",
    )
    c.set_defaults(func=_cmd_compare)
    l_ = sub.add_parser("ls", help="list the runs in a folder with their key numbers")
    l_.add_argument("folder", nargs="?", default="runs")
    l_.set_defaults(func=_cmd_ls)
    # subcommands that live beside their feature (each module imports its heavy parts only when run)
    from physnn.cli import characterize, serve, sweep

    characterize.add_cli(sub)
    serve.add_cli(sub)
    sweep.add_cli(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``physnn`` command; returns the exit code.

    Every user error ends in one line on stderr naming the value and what is
    allowed, exit code 2 (``PHYSNN_DEBUG=1``: the traceback instead). Ctrl-C
    exits 130; SIGTERM and SIGHUP are handled like Ctrl-C (systems to their
    safe state, run file ``interrupted``) and exit 128 + the signal number.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    mark = safety.instrument_mark()
    try:
        with shutdown_on_signals():
            return args.func(args)
    except KeyboardInterrupt as exc:
        why = f"terminated by {exc.signal_name}" if isinstance(exc, Terminated) else "interrupted"
        _say(f"\n{why}" + _left_behind(args.command, mark))
        return exc.exit_code if isinstance(exc, Terminated) else 130
    except Exception as exc:
        if os.environ.get("PHYSNN_DEBUG") or not _is_user_error(exc):
            raise
        _say(f"physnn {args.command}: error: {_one_line(exc)}")
        if argv is None and _disk_full(exc):
            _skip_hdf5_teardown(2, exc)
        return 2


#: What an interrupted command keeps, for the commands that keep something.
_KEPT_ON_INTERRUPT = {"train": "the run file holds every completed epoch"}


def _left_behind(command: str, mark: int) -> str:
    """``": <what is kept>; <instruments>"`` for the last line of an interrupted command, or "".

    Only what this command did: the run file for ``train``; instruments only where it opened some (a report,
    or characterising a simulator, opens none), called safe only where no failed safe state was reported.
    """
    notes = [_KEPT_ON_INTERRUPT[command]] if command in _KEPT_ON_INTERRUPT else []
    states = safety.instruments_since(mark, close=True)
    safe = sorted({name for name, state in states if state == "safe"})
    unsafe = sorted({name for name, state in states if state != "safe"})
    if safe:
        notes.append(f"put in its safe state: {', '.join(safe)}")
    if unsafe:
        notes.append(f"safe state NOT confirmed for {', '.join(unsafe)}: its outputs may still be driven, check it")
    return ": " + "; ".join(notes) if notes else ""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the usage block is what ``--help`` is for."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _say(line: str) -> None:
    """A last line on stderr; a terminal that went away with SIGHUP must not turn it into a traceback."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _skip_hdf5_teardown(code: int, exc: BaseException) -> None:
    """End the process without HDF5's own exit handler, after Python's.

    Why: after a write failed with ENOSPC, HDF5 2.0 crashes (SIGSEGV in
    ``H5_term_library``) tearing down the datasets of the file it could not
    flush, at C-level exit, after everything in Python is done. The run file
    is as closed as it can be by then (readers recover it), so the last Python
    exit handler ends the process with ``code`` instead. Only for ``physnn``
    run as a program (``main()`` reading ``sys.argv``), never in-process.
    ``exc`` is held until then: its frames hold the h5py objects whose
    deallocation would print a traceback per dataset after the one-line error.
    """

    def hard_exit(_keep: BaseException) -> None:
        safety.close_all()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    atexit.register(hard_exit, exc)  # registered last, so it runs first; it runs safety.close_all() itself


def _foreign_error(exc: BaseException, module: str, name: str) -> bool:
    """``exc`` is ``module.name`` (or a subclass), without importing ``module`` (the core never imports devices)."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _disk_full(exc: BaseException) -> bool:
    # h5py reports a failed write as a RuntimeError whose text carries the errno
    return getattr(exc, "errno", None) == errno.ENOSPC or "errno = 28," in str(exc)


def _is_user_error(exc: Exception) -> bool:
    """Errors a user can act on (a value, a file, an instrument, a full disk), as opposed to bugs in physnn."""
    return (
        isinstance(exc, (ValueError, OSError, ImportError))
        or _disk_full(exc)
        or _foreign_error(exc, "physnn.devices.errors", "InstrumentError")
        or _foreign_error(exc, "physnn.scale.cluster", "RemoteSystemError")
    )


def _one_line(exc: BaseException) -> str:
    if _disk_full(exc):
        m = re.search(r"filename = '([^']*)'", str(exc))
        where = m.group(1) if m else getattr(exc, "filename", None)
        return (
            f"No space left on device{f' writing {where}' if where else ''}; free some space or give an "
            f"--output on another disk (the run file keeps every epoch written before)"
        )
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, (ValueError, OSError, ImportError)):
        text = str(exc)
        if isinstance(exc, ImportError) and "pip install" not in text:  # say which extra brings the module
            from physnn.core.registry import install_hint

            text += install_hint(exc)
    else:  # an instrument or remote fault: its class says what kind
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
