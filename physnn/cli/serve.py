"""``physnn serve``: offer a bench on this PC to a Ray cluster (:func:`physnn.scale.serving.serve`)."""

from __future__ import annotations

import argparse
from typing import Any

from physnn.run.config import parse_option

__all__ = ["add_cli"]


def _cmd_serve(args: argparse.Namespace) -> int:
    from physnn.scale.serving import serve

    options = dict(parse_option(o) for o in args.system_option)
    serve(
        args.system,
        options,
        args.resource or f"bench:{args.system}",
        address=args.address,
        bind=args.bind,
        allow_remote=args.allow_remote,
        num_cpus=args.num_cpus,
        echo=print,
    )
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``physnn serve`` on the CLI's subparsers."""
    p = subparsers.add_parser("serve", help="offer a bench (a system on this PC) to a Ray cluster")
    p.add_argument("--system", required=True, help="registry name of the system to serve")
    p.add_argument(
        "--system-option",
        "--option",  # the round-2 name, kept as an alias
        dest="system_option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the system (repeatable), as in [system_options] and `physnn train --system-option`",
    )
    p.add_argument("--resource", default=None, help="the resource that names this bench (default bench:SYSTEM)")
    p.add_argument("--address", default=None, help="join this Ray cluster (HOST:PORT); default: start a new one here")
    p.add_argument("--bind", default="127.0.0.1", help="this node's address for Ray (default 127.0.0.1)")
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --bind (only on a private network/VPN: Ray has no access control)",
    )
    p.add_argument("--num-cpus", type=int, default=1, help="CPUs this node offers to sweep trials (default 1)")
    p.set_defaults(func=_cmd_serve)
