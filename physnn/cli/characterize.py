"""``physnn characterize``: the command line of :mod:`physnn.analysis.characterize`.

It takes ``physnn train``'s flags that decide what block 0 of a run is (``--config``, ``--system``,
``--system-option``, ``--dataset``, ``--data-path``, ``--label-column``, ``--method``, ``--encoder``,
``--encoder-bits``, ``--label-repeat``, ``--val-fraction``, ``--seed``, ``--device``) and turns them into a configuration with
the same function as ``physnn train`` (:func:`physnn.cli.train_config.config_from_flags`), so both see the
same system, recipe, encoder and data set.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

__all__ = ["add_cli", "main"]

#: (flag, config key, type, help) of the ``physnn train`` flags that shape block 0 of a run.
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--system", "system", str, "system name (see `physnn systems`; default: physnn train's, optics)"),
    (
        "--dataset",
        "dataset",
        str,
        "data set whose network drives are measured too (default: physnn train's, or the recipe's); "
        "'none': random drives only, the system at its default width",
    ),
    ("--data-path", "data_path", str, "file or folder of the data set (your CSV or .npz, an MNIST IDX folder)"),
    ("--label-column", "label_column", str, "the CSV column holding the labels (default 'label'; --dataset csv)"),
    ("--method", "method", str, "training method whose network sends the drives (default mfff)"),
    ("--encoder", "encoder", str, "minmax, l2, abs-l2 or thermometer (default: the recipe's, else minmax)"),
    ("--encoder-bits", "encoder_bits", int, "drive channels per value of the thermometer encoder"),
    ("--label-repeat", "label_repeat", int, "input slots per class label in MF-FF's label embedding"),
    ("--val-fraction", "val_fraction", float, "share of the training split held out (never sent as drives)"),
    ("--seed", "seed", int, "the run's seed: data split, block 0's system seed, drives"),
    ("--device", "device", str, "torch device for simulators (cpu, cuda)"),
]


def _cmd_characterize(args: argparse.Namespace) -> int:
    from physnn.analysis.characterize import characterize_config, format_table
    from physnn.cli.train_config import config_from_flags

    flags = {key: getattr(args, key) for _, key, _, _ in _FLAGS}
    random_only = flags["dataset"] is not None and flags["dataset"].lower() == "none"
    if random_only:
        flags["dataset"] = None
    config = config_from_flags(args.config, flags, args.system_option, args.method_option)
    print(
        f"physnn characterize: block 0 of {config.method} on "
        + ("random drives only" if random_only else config.dataset)
        + f" through {config.system}, seed {config.seed}",
        flush=True,
    )
    result, paths = characterize_config(
        config, n_fit=args.n_fit, n_test=args.n_test, out=args.out, force=args.force, with_data=not random_only
    )
    print(format_table(result))
    for p in paths:
        print(f"wrote {p}")
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``physnn characterize`` on the CLI's subparsers; returns the new parser."""
    p = subparsers.add_parser(
        "characterize",
        help="nonlinearity, effective rank, noise floor of the system physnn train would use (before training)",
        description=_characterize_doc(),
    )
    p.add_argument("--config", help="TOML file of physnn train (its keys that shape block 0 are used)")
    for flag, key, typ, help_ in _FLAGS:
        p.add_argument(flag, dest=key, type=typ, default=None, help=help_)
    p.add_argument(
        "--system-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the system's factory (repeatable), e.g. noise=false",
    )
    p.add_argument(
        "--method-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the training method (repeatable; checked as physnn train checks it)",
    )
    p.add_argument("--n-fit", type=int, default=2000, help="drives the affine map is fitted on")
    p.add_argument("--n-test", type=int, default=1000, help="held-out drives it is scored on")
    p.add_argument("--out", default="characterize", help="folder for characterize.h5 and characterize.png")
    p.add_argument("--force", action="store_true", help="overwrite characterize.h5/.png already in --out")
    p.set_defaults(func=_cmd_characterize)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m physnn.cli.characterize ...`` (the same as ``physnn characterize ...``)."""
    parser = argparse.ArgumentParser(prog="physnn")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["characterize", *(argv if argv is not None else __import__("sys").argv[1:])])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


def _characterize_doc() -> str:
    return (
        "What a physical system computes, measured through system(x) alone: nonlinear fraction at random drives "
        "and at the drives the network sends, effective rank, noise floor, best single input. The system, its "
        "recipe, encoder and data set are the ones physnn train builds for the same flags (block 0)."
    )
