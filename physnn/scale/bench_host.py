"""The bench side of a remote system: the Ray actor that hosts systems on the bench node, and this process's hosts.

:class:`BenchHost` runs on the node that offers the bench resource; the client
(:class:`~physnn.scale.remote.RemoteSystem`) asks for one per bench and training
process through :func:`acquire_host` and gives it back with :func:`release_host`
(the last block of a process stops the actor, which frees the bench).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from physnn.core.system import PhysicalSystem
from physnn.scale.cluster import require_ray

__all__ = ["BenchHost", "SlotMissing", "Host", "acquire_host", "release_host"]

logger = logging.getLogger(__name__)


class SlotMissing(RuntimeError):
    """Raised by the host when it does not hold a system: it was restarted; nothing reached the device."""


def _where() -> dict[str, Any]:
    """Which node, machine and process this code runs on (for run files)."""
    import ray

    ctx = ray.get_runtime_context()
    return {
        "node_id": ctx.get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }


class BenchHost:
    """The Ray actor on the bench node: builds, opens, queries and safely stops its systems.

    One host per bench and training process; it holds one system per *slot*
    (a block of the model). Ray runs its methods one at a time in the order
    they were sent, which is what a bench needs.

    A restart (Ray re-runs ``__init__`` after the process died) starts with no
    systems; a query for a missing slot raises :class:`SlotMissing` before
    touching anything, and the client re-adds the slot (re-opening the system).
    """

    def __init__(self, label: str) -> None:
        import ray

        # one intra-op thread: reductions are then bit-reproducible, so a remote simulator measures exactly
        # what the same simulator measures in the training process (and several hosts share a node fairly)
        torch.set_num_threads(1)
        self.label = label
        self.systems: dict[str, PhysicalSystem] = {}
        self.events: dict[str, list[tuple[str, dict]]] = {}
        self.safe_state_calls = 0
        with warnings.catch_warnings():  # Ray's property warns about an internal API it uses itself
            warnings.simplefilter("ignore", DeprecationWarning)
            self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.where = _where()
        atexit.register(self._close_all)
        logger.info("bench host %s up on %s (restarted: %s)", label, self.where, self.restarted)

    def add(self, slot: str, name: str | Callable[..., PhysicalSystem], options: dict[str, Any]) -> dict[str, Any]:
        """Build and open a system by registry name or factory (idempotent for an existing slot)."""
        if slot not in self.systems:
            from physnn.core.registry import build_system

            system = build_system(name, **options) if isinstance(name, str) else name(**options)
            if not isinstance(system, PhysicalSystem):
                raise TypeError(f"factory {name!r} returned {type(system).__name__}, not a PhysicalSystem")
            if system.closed:
                system.open()
            events: list[tuple[str, dict]] = []
            system.event_hook = lambda kind, fields, ev=events: ev.append((kind, fields))
            self.systems[slot] = system
            self.events[slot] = events
        return self.info(slot)

    def info(self, slot: str) -> dict[str, Any]:
        s = self._get(slot)
        return {
            "spec": s.spec.to_dict(),
            "describe": s.describe(),
            "where": self.where,
            "restarted": self.restarted,
            "safe_state_calls": self.safe_state_calls,
        }

    def _get(self, slot: str) -> PhysicalSystem:
        try:
            return self.systems[slot]
        except KeyError:
            raise SlotMissing(f"{self.label}: no system in slot {slot!r} (the host restarted)") from None

    def query(self, slot: str, x: np.ndarray) -> tuple[np.ndarray, float, list[tuple[str, dict]]]:
        """Validate (again) and measure one batch; return the measurement, the device seconds and any events."""
        s = self._get(slot)
        before = s.stats.seconds
        y = s(torch.from_numpy(x.copy()))  # PhysicalSystem.__call__: the drive limits are checked again, here
        events, self.events[slot][:] = list(self.events[slot]), []
        return y.numpy(), s.stats.seconds - before, events

    def call(self, slot: str, method: str, *args: Any) -> Any:
        """A whitelisted method of the hosted system (rng state, safe state, describe)."""
        if method not in ("get_rng_state", "set_rng_state", "safe_state", "describe"):
            raise ValueError(
                f"method must be one of get_rng_state, set_rng_state, safe_state, describe; got {method!r}"
            )
        s = self._get(slot)
        if method == "safe_state":
            self.safe_state_calls += 1
        return getattr(s, method)(*args)

    def close(self, slot: str) -> dict[str, Any]:
        """Put one system in its safe state and close it; return its final description."""
        s = self.systems.pop(slot, None)
        if s is None:
            return {}
        self.safe_state_calls += 1
        s.close()
        return {"describe": s.describe(), "where": self.where, "safe_state_calls": self.safe_state_calls}

    def _close_all(self) -> None:
        for slot in list(self.systems):
            try:
                self.close(slot)
            except Exception:  # noqa: BLE001 - every system must get its chance at the safe state
                logger.exception("%s: closing slot %s failed", self.label, slot)

    def shutdown(self) -> int:
        """Close everything; return the number of safe-state calls made over the host's life."""
        self._close_all()
        return self.safe_state_calls

    def where_am_i(self) -> dict[str, Any]:
        return dict(self.where, restarted=self.restarted)


_ACTOR_CLASS: Any = None


def _actor_class() -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = require_ray().remote(BenchHost)
    return _ACTOR_CLASS


@dataclass
class Host:
    actor: Any
    slots: set[str]
    label: str


_HOSTS: dict[tuple, Host] = {}
_HOSTS_LOCK = threading.Lock()


def acquire_host(resource: str | None, idempotent: bool, max_restarts: int, slot: str) -> tuple[tuple, Host]:
    """The host actor for ``resource`` in this process (created on first use, shared by the blocks), with ``slot`` held."""
    key: tuple = ("bench", resource, idempotent, max_restarts) if resource else ("own", uuid.uuid4().hex)
    with _HOSTS_LOCK:
        host = _HOSTS.get(key)
        if host is None:
            opts: dict[str, Any] = {
                "num_cpus": 0,  # the bench is the scarce thing, not a CPU; sweep trials keep the CPUs
                "max_restarts": max_restarts,
                "max_task_retries": -1 if idempotent else 0,
            }
            if resource:
                opts["resources"] = {resource: 1}
            label = resource or "remote"
            host = Host(_actor_class().options(**opts).remote(label), set(), label)
            _HOSTS[key] = host
            logger.debug("created host actor for %s", label)
        host.slots.add(slot)
        return key, host


def release_host(key: tuple, slot: str) -> None:
    ray = require_ray()
    with _HOSTS_LOCK:
        host = _HOSTS.get(key)
        if host is None:
            return
        host.slots.discard(slot)
        if host.slots:
            return
        del _HOSTS[key]
    if _started(ray, host.actor):  # a host still waiting for its bench has opened nothing: no shutdown to wait for
        try:
            ray.get(host.actor.shutdown.remote(), timeout=60)
        except Exception as exc:  # noqa: BLE001 - the actor is killed below either way
            logger.warning("host %s did not shut down cleanly: %s", host.label, exc)
    ray.kill(host.actor, no_restart=True)  # frees the bench resource for the next trainer


def _started(ray: Any, actor: Any) -> bool:
    """Whether the host actor was ever placed (so it may hold systems), as opposed to still waiting for its bench.

    Why: a host that was never placed (its bench held by another trainer) would make ``shutdown`` wait the
    full 60 s for a reply that cannot come. Asked of Ray's actor table (not by a call to the actor, which would
    queue behind a query still running there); when in doubt, the orderly shutdown is asked for.
    """
    try:
        from ray._private import state

        info = state.actors(actor_id=actor._actor_id.hex())
        return info.get("State") not in ("PENDING_CREATION", "DEPENDENCIES_UNREADY")
    except Exception:  # noqa: BLE001 - an internal API: when in doubt, ask for the orderly shutdown
        return True
