"""``physnn serve``'s side: offer a bench on this PC to a Ray cluster (its CLI: :mod:`physnn.cli.serve`)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

from physnn.core import checks
from physnn.scale.cluster import (
    RemoteSystemError,
    check_address,
    check_reachable,
    connect,
    is_loopback,
    own_children,
    require_ray,
    resolve_address,
    start_local,
    stop_local,
    use_loopback,
)
from physnn.scale.remote import RemoteSystem

__all__ = ["serve"]

logger = logging.getLogger(__name__)


def _check_bind(host: str, allow_remote: bool) -> str:
    if not is_loopback(host) and not allow_remote:
        raise checks.ParameterError(
            f"--bind {host} exposes Ray (which has no access control by default) beyond this machine; use a "
            f"private network or VPN address and add --allow-remote, or keep the default 127.0.0.1, got {host!r}"
        )
    return host


def serve(
    system: str,
    options: dict[str, Any],
    resource: str,
    *,
    address: str | None = None,
    bind: str = "127.0.0.1",
    allow_remote: bool = False,
    num_cpus: int = 1,
    echo: Callable[[str], None] = logger.info,
    block: bool = True,
) -> dict[str, Any]:
    """Offer a bench to a Ray cluster: ``physnn serve``.

    Without ``address`` this starts a new cluster (head node) here; with one,
    it joins that cluster as a new node (through ``ray start``). Either way the
    node advertises ``resource = 1``, and the system is built once on it, by
    a host actor placed through that resource, to check it opens and to print
    its spec and node; it is then put in its safe state and closed. Training
    processes create their own host actors there (see :class:`RemoteSystem`).
    ``block`` keeps the node up until Ctrl-C. Every argument is checked, and
    a cluster to join is reached (bounded waits), before anything starts; an
    error stops whatever this call started (no Ray process is left behind).
    """
    import subprocess

    checks.string("system", system, empty=False)
    checks.string("resource", resource, empty=False)
    checks.integer("num_cpus", num_cpus, low=0)
    bind = _check_bind(checks.string("bind", bind, empty=False), allow_remote)
    check_address(address)
    if address is not None and is_loopback(bind):
        raise checks.ParameterError(
            f"--address {address}: joining a cluster needs the node's own network address (--bind, with "
            f"--allow-remote); on one machine, run `physnn serve` without --address instead, got bind={bind!r}"
        )
    if is_loopback(bind):
        use_loopback()
    # Ray's token authentication (Ray >= 2.5x; ignored by older versions): on unless the operator chose otherwise
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray = require_ray()
    child = None
    before = own_children()
    ok = False
    if address is None:
        start_local(num_cpus=num_cpus, resources={resource: 1}, bind=bind)
        cluster = ray.get_runtime_context().gcs_address
    else:
        check_reachable(resolve_address(address))  # before `ray start` is launched: nothing to clean up yet
        cmd = [
            os.path.join(os.path.dirname(sys.executable), "ray"),
            "start",
            f"--address={address}",
            f"--node-ip-address={bind}",
            f"--resources={json.dumps({resource: 1})}",
            f"--num-cpus={num_cpus}",
            "--block",
        ]
        child = subprocess.Popen(cmd)
        cluster = address
    try:
        if child is not None:
            connect(address)
            deadline = time.monotonic() + 60
            while not any(n.get("Alive") and resource in n.get("Resources", {}) for n in ray.nodes()):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RemoteSystemError(
                        f"the node offering {resource!r} did not join {address} within 60 s (`ray start` "
                        f"{'exited with ' + str(child.returncode) if child.poll() is not None else 'still starting'}"
                        f"; its output above says why)"
                    )
                time.sleep(0.5)
        probe = RemoteSystem(
            system,
            options={k: v for k, v in options.items() if k not in ("n_inputs", "seed")},
            resource=resource,
            n_inputs=options.get("n_inputs"),
            seed=options.get("seed", 0),
        )
        s, where = probe.spec, dict(probe.where)
        probe.close()
        served = {
            "system": system,
            "options": options,
            "resource": resource,
            "cluster": cluster,
            "node_id": where["node_id"],
            "hostname": where["hostname"],
            "node_ip": where["node_ip"],
            "spec": s.to_dict(),
        }
        echo(
            f"serving {system} as {resource!r} on {where['hostname']} ({where['node_ip']}, node "
            f"{where['node_id'][:12]}): {s.n_inputs} inputs {s.low:g}..{s.high:g} {s.units}, "
            f"{s.n_outputs} outputs ({s.output_units})"
        )
        echo(f"cluster address: {cluster}")
        if os.environ.get("RAY_AUTH_MODE") == "token":
            echo(
                "token authentication is on: trainers need RAY_AUTH_MODE=token and this machine's "
                "~/.ray/auth_token (copy it to each machine of the cluster)"
            )
        echo(
            f'train against it with system = "remote" and system_options = {{ name = "{system}", '
            f'resource = "{resource}", address = "{cluster}" }}'
        )
        if block:
            echo("Ctrl-C stops serving")
            # a service manager stops with SIGTERM: leave the same way as on Ctrl-C (safe state, node shut down)
            signal.signal(signal.SIGTERM, _raise_interrupt)
            try:
                while child is None or child.poll() is None:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                echo("stopping")
        ok = True
        return served
    finally:
        if block or child is not None or not ok:  # an error stops what this call started
            if child is None:
                stop_local(before)
            else:
                ray.shutdown()
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
