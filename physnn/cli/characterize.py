"""``physnn characterize``: the command line of :mod:`physnn.analysis.characterize`."""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from physnn.analysis.characterize import DEFAULT_DATASET, characterize_named, format_table
from physnn.run.config import parse_option

__all__ = ["add_cli", "main"]


def _cmd_characterize(args: argparse.Namespace) -> int:
    options = dict(parse_option(o, "--system-option") for o in args.system_option)
    result, paths = characterize_named(
        args.system,
        system_options=options,
        dataset=None if args.dataset == "none" else args.dataset,
        data_path=args.data_path,
        encoder=args.encoder,
        encoder_bits=args.encoder_bits,
        label_repeat=args.label_repeat,
        n_fit=args.n_fit,
        n_test=args.n_test,
        seed=args.seed,
        out=args.out,
    )
    print(format_table(result))
    for p in paths:
        print(f"wrote {p}")
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``physnn characterize`` on the CLI's subparsers; returns the new parser."""
    p = subparsers.add_parser(
        "characterize",
        help="nonlinearity, effective rank, noise floor of a system (before training on it)",
        description=_characterize_doc(),
    )
    p.add_argument("--system", required=True, help="system name (see `physnn systems`)")
    p.add_argument(
        "--system-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the system's factory (repeatable), e.g. noise=false",
    )
    p.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=f"data set whose encoded drives are measured too (default {DEFAULT_DATASET}; 'none': skip)",
    )
    p.add_argument("--data-path", default=None, help="file or folder of the data set (vowels CSV, MNIST IDX)")
    p.add_argument("--encoder", default="minmax", help="encoder of those drives (minmax, l2, abs-l2, thermometer)")
    p.add_argument("--encoder-bits", type=int, default=None, help="channels per feature of the thermometer encoder")
    p.add_argument("--label-repeat", type=int, default=1, help="input slots per class label")
    p.add_argument("--n-fit", type=int, default=2000, help="drives the affine map is fitted on")
    p.add_argument("--n-test", type=int, default=1000, help="held-out drives it is scored on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="characterize", help="folder for characterize.h5 and characterize.png")
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
    from physnn.analysis import characterize

    return (characterize.__doc__ or "").split("\n\n")[0]
