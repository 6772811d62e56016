"""Joining Ray, and keeping it on loopback: the helpers every part of :mod:`physnn.scale` shares.

Why one module: the client (:mod:`~physnn.scale.remote`), the bench side
(:mod:`~physnn.scale.bench_host`), serving (:mod:`~physnn.scale.serving`) and sweeps
(:mod:`~physnn.scale.sweep`) all need Ray imported lazily (physnn works without the
extra), the same loopback rule and the same errors.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import socket
import sys
import threading
from typing import Any, Iterator

from physnn.core import checks

__all__ = [
    "RemoteSystemError",
    "ActorLost",
    "CONNECT_TIMEOUT_S",
    "require_ray",
    "use_loopback",
    "connect",
    "is_loopback",
    "host_of",
    "split_address",
    "check_address",
    "resolve_address",
    "check_reachable",
    "start_local",
    "stop_local",
    "own_children",
]

logger = logging.getLogger(__name__)

#: Environment variable Ray reads (at import) to decide whether it may advertise a non-loopback address.
_RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: The longest joining a Ray cluster may wait at each step (TCP answer, handshake, ``ray.init``), in seconds.
CONNECT_TIMEOUT_S = 15.0


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


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (also ``ray://HOST:PORT`` and ``[v6]:PORT``); a one-line error otherwise.

    Checked without Ray and without the network, so a config's address is refused before anything starts.
    """
    text = str(address).strip()
    bare = text.split("://", 1)[-1]
    host = host_of(text)
    rest = bare[len(host) + 2 :] if bare.startswith("[") else bare[len(host) :]
    port_text = rest[1:] if rest.startswith(":") else ""
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise checks.ParameterError(
            f"address must be HOST:PORT with a port 1..65535 (the cluster address `physnn serve` prints, e.g. "
            f"10.8.0.1:6379) or 'auto', got {address!r}"
        )
    return host, int(port_text)


def check_address(address: str | None) -> str | None:
    """``address`` as given if it is None, ``'auto'`` or a well-formed ``HOST:PORT`` (see :func:`split_address`)."""
    if address is None:
        return None
    checks.string("address", address, empty=False)
    if address.strip() != "auto":
        split_address(address)
    return address


def resolve_address(address: str | None) -> str:
    """The ``HOST:PORT`` that ``address`` names; ``None``/``'auto'``: ``RAY_ADDRESS``, else the cluster on this machine."""
    if address is not None and address.strip() != "auto":
        return address.strip()
    from ray._private import services

    try:
        found = services.get_ray_address_from_environment("auto", None)
    except ConnectionError:
        found = None
    if not found or found == "auto":
        raise RemoteSystemError(
            "no Ray cluster runs on this machine (address='auto'): start one with `physnn serve --system NAME` "
            "(or `ray start --head`), or give the cluster's HOST:PORT as address"
        )
    return found


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in at most ``timeout_s`` with what is wrong when no Ray cluster answers at ``address``.

    Why: ``ray.init`` retries an address where nothing listens for many minutes without a word, and reports a
    missing or wrong token as "failed to connect" after 20 s. These checks tell the cases apart: a name that
    does not resolve, a refused or unanswered TCP connection, a port that is not a Ray cluster, and token
    authentication (no token here, token mode off, or a token the cluster rejects).
    """
    host, port = split_address(address)
    where = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        raise RemoteSystemError(
            f"Ray cluster address {address}: the host name {host!r} does not resolve ({exc.strerror}); check the "
            f"address"
        ) from None
    except ConnectionRefusedError:
        raise RemoteSystemError(
            f"nothing listens at {where} (connection refused): no Ray cluster runs there; start it with `physnn "
            f"serve` on that machine, or check the port (`physnn serve` prints the cluster address)"
        ) from None
    except TimeoutError:
        raise RemoteSystemError(
            f"no answer from {where} within {timeout_s:g} s: the machine is off or unreachable (VPN down?), a "
            f"firewall drops the port, or the address is wrong"
        ) from None
    except OSError as exc:
        raise RemoteSystemError(
            f"cannot reach {where}: {exc.strerror or exc}; check the network (VPN up?) and the address"
        ) from None
    if "://" not in address:  # a Ray Client address (ray://) speaks another protocol: the TCP answer is all we ask
        _check_handshake(where, timeout_s)


def _auth_mode() -> str:
    return os.environ.get("RAY_AUTH_MODE", "").strip().lower()


def _mode_text() -> str:
    mode = os.environ.get("RAY_AUTH_MODE")
    return "RAY_AUTH_MODE is unset" if mode is None else f"RAY_AUTH_MODE={mode}"


def _has_token() -> bool:
    from ray._raylet import AuthenticationTokenLoader

    return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))


_TOKEN_HOW = (
    "copy ~/.ray/auth_token from the machine that started the cluster to this one (or set RAY_AUTH_TOKEN or "
    "RAY_AUTH_TOKEN_PATH)"
)


def _auth_error(where: str) -> RemoteSystemError:
    """What is wrong with this process's token, for a cluster at ``where`` that refused it."""
    if _auth_mode() != "token":
        have = "this machine has a token" if _has_token() else "this machine has no token either"
        return RemoteSystemError(
            f"the Ray cluster at {where} requires token authentication and this process sends no token "
            f"({_mode_text()}; {have}): set RAY_AUTH_MODE=token" + ("" if _has_token() else f" and {_TOKEN_HOW}")
        )
    return RemoteSystemError(
        f"the Ray cluster at {where} rejected this machine's token (a different cluster's token?): {_TOKEN_HOW}"
    )


def _check_handshake(where: str, timeout_s: float) -> None:
    """One GCS handshake with ``where`` (the cluster's front door), at most ``timeout_s`` long."""
    if _auth_mode() == "token" and not _has_token():  # Ray would abort the process here, not raise
        raise RemoteSystemError(
            f"RAY_AUTH_MODE=token but this machine has no Ray token to show the cluster at {where}: {_TOKEN_HOW}"
        )
    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # a Ray without these internals: ray.init's own (bounded) wait decides
        return
    outcome: list[BaseException | None] = []

    def shake() -> None:
        try:
            GcsClient(address=where, cluster_id=None)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            outcome.append(exc)

    thread = threading.Thread(target=shake, name=f"ray-handshake-{where}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise RemoteSystemError(
            f"{where} answers but not as a Ray cluster (no handshake within {timeout_s:g} s): is it the cluster "
            f"address `physnn serve` prints (default port 6379), not another service's port?"
        )
    exc = outcome[0]
    if exc is None:
        return
    if isinstance(exc, AuthenticationError):
        raise _auth_error(where)
    raise RemoteSystemError(
        f"{where} answers but not as a Ray cluster ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        f"; is it the cluster address `physnn serve` prints?"
    )


@contextlib.contextmanager
def _bounded_gcs_wait(timeout_s: float) -> Iterator[None]:
    """Bound ``ray.init``'s own retries when it joins a cluster (Ray reads this variable at that moment)."""
    key = "RAY_gcs_server_port_wait_time_s"
    old = os.environ.get(key)
    os.environ[key] = str(max(1, math.ceil(timeout_s)))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _check_same_cluster(current: str, address: str) -> None:
    """Ray joins one cluster per process: asking for another one must not silently use the current one."""
    (h1, p1), (h2, p2) = split_address(current), split_address(address)
    try:
        same_host = socket.gethostbyname(h1) == socket.gethostbyname(h2)
    except OSError:
        same_host = h1 == h2
    if p1 != p2 or not (same_host or (is_loopback(h1) and is_loopback(h2))):
        raise RemoteSystemError(
            f"address {address!r}: this process is already connected to the Ray cluster at {current}, and a process "
            f"joins one cluster; give address = {current!r} or leave address out"
        )


def connect(address: str | None = None, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """Connect this process to a Ray cluster once (``None``: the one on this machine); return ``ray``.

    Inside a Ray worker (a sweep trial) the connection already exists and is
    reused. A loopback address keeps this process on loopback too. Every wait
    is bounded: the cluster is checked first (:func:`check_reachable`), so an
    address where nothing listens, an unreachable machine or a token problem is
    a one-line :class:`RemoteSystemError` naming the address and the cause.
    """
    ray = require_ray()
    check_address(address)
    if ray.is_initialized():
        if address is not None and address.strip() != "auto" and "://" not in address:
            _check_same_cluster(ray.get_runtime_context().gcs_address, address)
        return ray
    checks.positive("timeout_s", timeout_s)
    target = resolve_address(address)
    if is_loopback(host_of(target)):
        use_loopback()
    check_reachable(target, timeout_s)
    from ray.exceptions import AuthenticationError

    with _bounded_gcs_wait(timeout_s):
        try:
            ray.init(address=target, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        except AuthenticationError:
            raise _auth_error(target) from None
        except ConnectionError as exc:
            raise RemoteSystemError(
                f"could not join the Ray cluster at {target} within {timeout_s:g} s ({exc}); is `physnn serve` (or "
                f"`ray start --head`) still running there?"
            ) from None
    return ray


def own_children() -> set[int]:
    """Process ids of this process's descendants (empty where psutil is unavailable: Ray ships it)."""
    try:
        import psutil
    except ImportError:
        return set()
    try:
        return {c.pid for c in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _new_children(before: set[int]) -> list[Any]:
    """Handles on this process's descendants that were not there when ``before`` was taken.

    Taken *before* a shutdown: a worker whose parent (the raylet) is stopped is re-parented and would no
    longer show up as a descendant, yet it may outlive the shutdown under load.
    """
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
    except psutil.Error:
        return []


def _stop(procs: list[Any], grace_s: float = 5.0) -> None:
    """Terminate the processes still running among ``procs``; kill those that outlive ``grace_s``."""
    if not procs:
        return
    import psutil

    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.terminate()
                alive.append(proc)
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if alive:
        logger.info("stopped %d Ray process(es) that outlived their cluster", len(alive))


def start_local(*, num_cpus: int | None, resources: dict[str, float] | None = None, bind: str = "127.0.0.1") -> Any:
    """Start a private Ray cluster (a head node) owned by this process; return ``ray``.

    Why here: when ``ray.init`` fails half-way (a bad resource value is refused only after the GCS server has
    started), Ray leaves the processes it already started running, with no handle to stop them. This stops
    them, so no error leaves a Ray process behind. ``num_cpus`` ``None``: every core.
    """
    if num_cpus is not None:
        checks.integer("num_cpus", num_cpus, low=0)
    if is_loopback(bind):
        use_loopback()
    ray = require_ray()
    before = own_children()
    try:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            resources=resources,
            include_dashboard=False,
            _node_ip_address=bind,
            logging_level=logging.WARNING,
        )
    except BaseException:  # Ray keeps no handle on what it started: stop it here
        stop_local(before)
        raise
    return ray


def stop_local(before: set[int]) -> None:
    """Shut down the cluster this process started, and stop its processes that outlive the shutdown.

    ``before``: this process's children before the cluster started (:func:`own_children`), which are left alone.
    """
    ray = require_ray()
    procs = _new_children(before)
    try:
        ray.shutdown()
    finally:
        _stop(procs)
