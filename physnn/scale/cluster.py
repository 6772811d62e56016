"""Joining Ray, and keeping it on loopback: the helpers every part of :mod:`physnn.scale` shares.

Why one module: the client (:mod:`~physnn.scale.remote`), the bench side
(:mod:`~physnn.scale.bench_host`), serving (:mod:`~physnn.scale.serving`) and sweeps
(:mod:`~physnn.scale.sweep`) all need Ray imported lazily (physnn works without the
extra), the same loopback rule and the same errors.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from typing import Any

__all__ = ["RemoteSystemError", "ActorLost", "require_ray", "use_loopback", "connect", "is_loopback", "host_of"]

#: Environment variable Ray reads (at import) to decide whether it may advertise a non-loopback address.
_RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RemoteSystemError(RuntimeError):
    """The remote machinery failed (cluster unreachable, actor not placeable, actor lost)."""


class ActorLost(RemoteSystemError):
    """The actor hosting a system died while a query was in flight; the query was not re-sent."""


def require_ray() -> Any:
    """Import Ray, or fail with the command that installs it."""
    try:
        import ray
    except ImportError:
        raise ImportError("remote systems and sweeps need Ray: pip install 'physnn[ray]'") from None
    return ray


def is_loopback(host: str | None) -> bool:
    if host is None:
        return True
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(address: str) -> str:
    """The host part of ``HOST:PORT`` (also ``ray://HOST:PORT`` and ``[v6]:PORT``)."""
    a = address.split("://", 1)[-1]
    if a.startswith("["):
        return a[1:].split("]", 1)[0]
    return a.rsplit(":", 1)[0] if ":" in a else a


def use_loopback() -> None:
    """Keep Ray on 127.0.0.1: its nodes, and the addresses it advertises, stay on loopback.

    Why: Ray replaces ``127.0.0.1`` by the machine's network address when it
    connects or starts a node (so multi-machine clusters work), which would
    open its ports to the network. This flag (read by Ray when it is imported,
    and by the one function that does that replacement) stops it. Call it
    before ``import ray``; calling it after is also handled.
    """
    os.environ[_RAY_CLUSTER_ENV] = "0"
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def connect(address: str | None = None) -> Any:
    """Connect this process to a Ray cluster once (``None``: the one on this machine); return ``ray``.

    Inside a Ray worker (a sweep trial) the connection already exists and is
    reused. A loopback address keeps this process on loopback too.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address is not None and is_loopback(host_of(address)):
        use_loopback()
    try:
        ray.init(address=address or "auto", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    except ConnectionError as exc:
        raise RemoteSystemError(
            f"no Ray cluster at address={address or 'auto'!r}: {exc}; start one with `physnn serve` on the bench "
            f"PC (or `ray start --head`), then give its address"
        ) from None
    return ray
