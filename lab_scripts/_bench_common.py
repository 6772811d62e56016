"""What the lab training scripts share: training flags, the run, the console, the exit codes.

Why one module: ``train_awg_scope.py`` and ``train_serial.py`` differ only in
how they build their bench. Training, the HDF5 run file and what happens on
Ctrl-C or an instrument fault must be the same for both, so it is written once
here, on top of :func:`physnn.run.experiment.run_experiment` (the code behind
``physnn train``): it trains MF-FF with the run's hyperparameters, writes the
run file (config, the benches' ``describe()``, per-epoch metrics, checkpoints,
probes, sampled queries, every bench event) and closes the benches (safe
state) however the run ends.

Exit codes of :func:`train_main`: 0 completed; 130 Ctrl-C (the run file is
closed with status ``interrupted`` and keeps every completed epoch); 143
SIGTERM and 129 SIGHUP (handled exactly like Ctrl-C, see
:mod:`physnn.core.safety`); 2 an
instrument error (limits, identity, a fault that outlived its retries; status
``failed``) or a bad setting, with a one-line message (``PHYSNN_DEBUG=1``
shows the traceback instead).

After a Ctrl-C or a signal the console says the bench is safe only when every
bench acknowledged its safe state (``BenchSystem.safe_confirmed``); otherwise
it says plainly that the outputs may still be driven, and the run file holds
the ``close_failed`` event. Further Ctrl-Cs (and signals) during that shutdown
are logged and ignored, so an impatient second Ctrl-C cannot cut the
safe-state exchange in half.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

__all__ = ["Benches", "EventSampler", "add_training_arguments", "echo", "make_config", "train_main"]

#: dests of the training flags; every other parsed option belongs to the bench
TRAINING_KEYS = ("dataset", "data_path", "blocks", "hidden", "epochs", "batch_size", "lr", "seed", "output", "resume")


@dataclass
class Benches:
    """The systems a script built for one run, and how the run file names them.

    ``systems`` has one entry per block; the same object may serve every block
    (one real bench, time-multiplexed). ``name`` and ``options`` become the
    config's ``system`` and ``system_options``: for a simulated bench, the
    registry name and the exact factory keywords (so ``physnn train`` with the
    run file's config builds the same benches); for a real bench, a plain
    name and the script's bench flags, as a record.
    """

    systems: list
    hidden: int
    name: str
    options: dict[str, Any] = field(default_factory=dict)


def add_training_arguments(parser: argparse.ArgumentParser, *, hidden_default: int | None, hidden_help: str) -> None:
    """The training flags; they map one to one onto :class:`physnn.run.config.RunConfig` keys."""
    t = parser.add_argument_group("training")
    t.add_argument("--dataset", default="vowels", help="vowels (default), digits, mnist5k")
    t.add_argument("--data-path", help="data file or folder (default: the copy shipped with physnn)")
    t.add_argument("--blocks", type=int, default=2, help="PNN blocks (default 2)")
    t.add_argument("--hidden", type=int, default=hidden_default, help=hidden_help)
    t.add_argument("--epochs", type=int, default=None, help="training epochs (default 10; with --resume: extend to N)")
    t.add_argument("--batch-size", type=int, default=32, help="samples per batch (default 32)")
    t.add_argument("--lr", type=float, default=0.02, help="Adam learning rate (default 0.02)")
    t.add_argument("--seed", type=int, default=0, help="seed of data split, benches, weights, negatives (default 0)")
    t.add_argument(
        "--output",
        "--out",
        dest="output",
        default="runs",
        help="run file (*.h5), or a folder that gets a time-stamped one (default runs/)",
    )
    t.add_argument(
        "--resume",
        metavar="RUN.h5",
        default=None,
        help="continue this run file from its last checkpoint on the bench built from this command's "
        "bench flags (give the same ones as the first run); --epochs N extends it",
    )


def bench_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options that are not training flags: how a real bench was set up."""
    return {k: v for k, v in vars(args).items() if k not in TRAINING_KEYS}


def make_config(args: argparse.Namespace, *, hidden: int, system: str, options: dict[str, Any] | None = None):
    """A validated RunConfig from the training flags (a bad value is a ConfigError naming it)."""
    from physnn.run.config import RunConfig

    return RunConfig(
        dataset=args.dataset,
        data_path=args.data_path or "",
        blocks=args.blocks,
        hidden=hidden,
        epochs=10 if args.epochs is None else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        output=str(args.output),
        system=system,
        system_options=dict(options or {}),
    )


def _is_sampled(n: int) -> bool:
    """1, 2, 3, then 10, 100, 1000...: enough to notice a fault pattern without flooding the console."""
    if n <= 3:
        return True
    while n % 10 == 0:
        n //= 10
    return n == 1


class EventSampler:
    """Console view of bench events (faults, retries, clipping): a sample of each kind on stderr.

    Every event is in the run file anyway (``run_experiment`` chains its own
    hook in front of this one); the console shows the 1st-3rd, 10th, 100th...
    of each kind, so a fault that repeats is seen without drowning the epoch lines.
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.counts: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __call__(self, kind: str, fields: dict) -> None:
        n = self.counts[kind] = self.counts.get(kind, 0) + 1
        if _is_sampled(n):
            print(f"  bench event #{n} {kind}: {fields}", file=self.stream or sys.stderr)


def echo(line: str) -> None:
    """Where the per-epoch lines go (flushed: a lab log is often a pipe to ``tee``)."""
    print(line, flush=True)


def _run_file_state(path: Path | None) -> str:
    """``"run file X: status S, N epoch(s)"`` read back from the file, for the last console lines."""
    if path is None or not path.exists():
        return "no run file was written"
    from physnn import runlog

    try:
        run = runlog.load(path)
    except runlog.RunFileError as exc:
        return f"run file {path} cannot be read back: {exc}"
    return f"run file {path}: status {run.status}, {run.metrics['epoch'].size} epoch(s) logged"


class _BenchStack(contextlib.ExitStack):
    """An ExitStack that remembers the benches whose ``close`` was registered (to report on them after a Ctrl-C)."""

    def __init__(self) -> None:
        super().__init__()
        self.benches: list = []

    def callback(self, callback: Callable, /, *args: Any, **kwds: Any) -> Callable:
        owner = getattr(callback, "__self__", None)
        if owner is not None and owner not in self.benches:
            self.benches.append(owner)
        return super().callback(callback, *args, **kwds)


def _safety_report(benches: list) -> str:
    """What to tell the user about the benches after an interrupt: safe only if each acknowledged it."""
    if not benches:
        return "no bench was opened"
    unsafe = [b for b in benches if getattr(b, "safe_confirmed", True) is not True]
    if not unsafe:
        return "the bench was put in its safe state (acknowledged)"
    names = ", ".join(dict.fromkeys(getattr(getattr(b, "spec", None), "name", type(b).__name__) for b in unsafe))
    return (
        f"WARNING: {names} did NOT acknowledge its safe state: its outputs may still be driven; "
        "switch the bench off or check it by hand"
    )


def train_main(
    args: argparse.Namespace, open_benches: Callable[[argparse.Namespace, int, contextlib.ExitStack], Benches]
) -> int:
    """Load the data, build the benches with ``open_benches(args, width, stack)``, train, report.

    ``width`` is the first block's input (classes + features). ``open_benches``
    registers every bench it opens with ``stack`` (closed on any error before
    the run starts; the run closes them itself once it has them).
    """
    from physnn.core.safety import DEFAULT_SIGNALS, Terminated, shutdown_on_signals, track
    from physnn.data.datasets import load_dataset
    from physnn.devices.errors import InstrumentError
    from physnn.run.config import ConfigError
    from physnn.run.experiment import run_experiment, run_path

    path: Path | None = None
    stack = _BenchStack()
    # Ctrl-C too: the first one ends the run like SIGTERM, later ones are ignored until the benches are closed
    signals = (signal.SIGINT, *DEFAULT_SIGNALS)
    try:
        # Every training flag is checked, and the run file's name fixed, before any instrument is opened.
        make_config(args, hidden=args.hidden or 1, system="unnamed")
        data = load_dataset(args.dataset, path=args.data_path, seed=args.seed)
        # SIGTERM/SIGHUP (a kill, a dropped SSH session) end the run like Ctrl-C: bench safe, run file interrupted
        with shutdown_on_signals(signals), stack:
            benches = open_benches(args, data.n_classes + data.n_features, stack)
            for s in benches.systems:
                track(s)  # closed at exit, whatever path the process leaves by
            if args.resume:  # the run's own configuration; only the epoch budget may grow
                from physnn import runlog
                from physnn.run.config import RunConfig

                path = Path(args.resume)
                config = RunConfig.from_dict(runlog.load(path).config, source=str(path))
                if args.epochs is not None:
                    config = config.updated(epochs=args.epochs)
            else:
                config = make_config(args, hidden=benches.hidden, system=benches.name, options=benches.options)
                path = run_path(config)
                if path.exists():  # never overwrite a run (a second start in the same second, a reused *.h5 name)
                    raise FileExistsError(f"run file {path} already exists; give another --output")
                config = config.updated(output=str(path))  # the name is known even if the run ends in an error
            sampler = EventSampler()
            for s in dict.fromkeys(benches.systems):
                s.event_hook = sampler
            result = run_experiment(
                config, systems=benches.systems, echo=echo, progress=False, resume=path if args.resume else None
            )
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT)
        why = "interrupted" if signum == signal.SIGINT else f"terminated by {signal.Signals(signum).name}"
        print(f"\n{why}: {_safety_report(stack.benches)}; {_run_file_state(path)}", file=sys.stderr)
        return 128 + signum
    except (InstrumentError, ConfigError, ValueError, OSError, RuntimeError) as exc:  # OSError/RuntimeError: disk full
        if os.environ.get("PHYSNN_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if path is not None and path.exists():
            print(_run_file_state(path), file=sys.stderr)
        return 2
    print(f"run file: {result.path}")
    print(
        f"{result.status}: test accuracy {result.test_accuracy:.4f} (train {result.train_accuracy:.4f}) after "
        f"{len(result.history)} epoch(s), {result.total_queries} physical queries, {sampler.total} bench event(s); "
        f"look at it with: physnn report {result.path}"
    )
    return 0
