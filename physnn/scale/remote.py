"""Physical systems hosted on another machine, through Ray (the optional extra ``physnn[ray]``).

In a real lab each instrument hangs off its own PC and the training runs
elsewhere. Instead of a home-made protocol, physnn uses Ray: the system lives
in a Ray *actor* placed on the instrument's node by a custom resource (the node
started by ``physnn serve --resource bench:NAME`` advertises ``bench:NAME = 1``),
and :class:`RemoteSystem` is an ordinary :class:`~physnn.core.system.PhysicalSystem`
proxy for it, so trainers, ``run_experiment`` and lab scripts use it unchanged::

    system = "remote"
    [system_options]
    name = "optics"                  # the system built on the bench node
    resource = "bench:optics-1"      # where: the node that advertises this resource
    options = { noise = true }       # that system's own options

Guarantees, and why:

* **Limits first.** Every batch is validated against the remote system's spec
  in the training process (:meth:`PhysicalSystem.validate_input`) before it is
  serialised, and again by the system inside the actor. A bad drive never
  leaves the training process.
* **At most once.** Actor calls are not retried (``max_task_retries=0``): a
  batch that may have reached the device is never silently sent twice. If the
  actor dies during a query, that query raises :class:`ActorLost`; the actor
  is restarted (``max_restarts``) and the next query re-opens the system. A
  driver whose queries are harmless to repeat may say ``idempotent = true`` to
  let Ray retry them.
* **One trainer per bench.** The actor holds the whole ``bench:NAME`` resource
  while it lives, so a second training process (a second sweep trial) waits
  until the first has closed its systems. All blocks of one process share one
  actor per bench (they are queried one after another anyway).
* **Safe state.** The actor belongs to the training process: when the
  systems are closed, or the training process dies, Ray stops the actor, which
  puts every system it hosts in its safe state (``close()``; also on interpreter
  exit). A node that loses power cannot do that: the instrument's own watchdog
  must (see ``docs/scaling.md``).
* **Errors keep their type.** An exception raised on the bench arrives as the
  same class (``ValueError``, ``InstrumentTimeout``...) with the remote
  traceback attached as a note and as ``remote_traceback``; a lost actor or
  cluster is a :class:`RemoteSystemError`.
* **Honest time.** ``stats.seconds`` is the time the trainer waited for each
  query (as for a local system); ``stats.device_seconds`` is the time spent in
  the system's ``_measure`` on the bench node, and ``stats.transport_seconds``
  the rest (serialisation, network, queueing behind other calls).

:meth:`RemoteSystem.submit` sends a query without waiting for it, so a
schedule can keep the next query in flight while the digital layers train
(the bench then stays as busy as a local one; see ``benchmarks/remote.py``).

Ray is imported only inside these functions: physnn without Ray works as before.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, QueryStats, SystemSpec
from physnn.scale.bench_host import Host, SlotMissing, acquire_host, release_host
from physnn.scale.cluster import ActorLost, RemoteSystemError, check_address, connect, require_ray, use_loopback

__all__ = [
    "RemoteSystem",
    "RemoteQuery",
    "RemoteQueryStats",
    "RemoteSystemError",
    "ActorLost",
    "remote_system",
    "require_ray",
    "use_loopback",
    "connect",
]

logger = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _spec_from(remote_spec: dict[str, Any]) -> SystemSpec:
    """The remote system's spec; fields this (older) physnn does not know are dropped with a warning."""
    known = {f.name for f in dataclasses.fields(SystemSpec)}
    extra = sorted(set(remote_spec) - known)
    if extra:
        logger.warning("the bench's physnn has spec field(s) %s that this one does not know; ignored", extra)
    return SystemSpec(**{k: v for k, v in remote_spec.items() if k in known})


@dataclass
class RemoteQueryStats(QueryStats):
    """:class:`QueryStats` plus where the time went: on the device, or in transport and queues."""

    device_seconds: float = 0.0
    transport_seconds: float = 0.0

    def reset(self) -> None:
        super().reset()
        self.device_seconds = 0.0
        self.transport_seconds = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "device_seconds": self.device_seconds, "transport_seconds": self.transport_seconds}


class RemoteQuery:
    """A query in flight (see :meth:`RemoteSystem.submit`); :meth:`result` waits for its measurement."""

    def __init__(self, system: "RemoteSystem", batch: torch.Tensor, ref: Any, sent: float):
        self.system = system
        self.batch = batch
        self.ref = ref
        self.sent = sent
        self._y: torch.Tensor | None = None

    def done(self) -> bool:
        """True once the measurement has arrived (never blocks)."""
        ray = require_ray()
        return self._y is not None or bool(ray.wait([self.ref], timeout=0)[0])

    def result(self) -> torch.Tensor:
        """The measurement ``[B, n_outputs]`` on the caller's device; counted in ``stats`` like a local query."""
        if self._y is None:
            self._y = self.system._receive(self)
        return self._y


class RemoteSystem(PhysicalSystem):
    """A proxy for a system built and queried in a Ray actor on the node that has ``resource``.

    Args:
        name: the registry name of the system to build on the bench node (or,
            from Python, a factory callable; Ray pickles it to the bench).
        options: that system's options (the same keys as in a local config);
            ``n_inputs``, ``seed`` and ``device`` below are passed with them.
        resource: the custom Ray resource of the bench node (``"bench:NAME"``);
            ``None`` places the system anywhere in the cluster.
        address: the Ray cluster (``HOST:PORT``); ``None`` joins the one this
            process is already in or the one started on this machine.
        idempotent: the queries are harmless to repeat, so Ray may retry them.
        max_restarts: how often Ray restarts a crashed host (it re-opens the system).
        timeout_s: the longest a single query may take, queueing included.
        n_inputs, seed: as for any system; they go to the remote factory.
        device: where measurements are returned in this process (the bench's
            own compute device, if it has one, is an entry of ``options``).
    """

    def __init__(
        self,
        name: str | Callable[..., PhysicalSystem],
        *,
        options: dict[str, Any] | None = None,
        resource: str | None = None,
        address: str | None = None,
        idempotent: bool = False,
        max_restarts: int = 1,
        timeout_s: float = 600.0,
        n_inputs: int | None = None,
        seed: int = 0,
        device: str = "cpu",
    ):
        if callable(name):  # a factory object (pickled to the bench), for systems not in the registry
            self.factory: str | Callable[..., PhysicalSystem] = name
            self.name = getattr(name, "__name__", type(name).__name__)
        else:
            self.factory = self.name = checks.string("name", name, empty=False)
        if self.name == "remote":
            raise checks.ParameterError("name must be the system to host, not 'remote' itself, got 'remote'")
        self.options = dict(options or {})
        for key in ("n_inputs", "seed"):
            if key in self.options:
                raise checks.ParameterError(f"options must not set {key!r} (the run sets it), got {self.options!r}")
        self.remote_options = {"n_inputs": n_inputs, "seed": seed, **self.options}
        self._check_options_locally()
        self.resource = None if resource is None else checks.string("resource", resource, empty=False)
        self.address = check_address(address)
        self.idempotent = checks.boolean("idempotent", idempotent)
        self.max_restarts = checks.integer("max_restarts", max_restarts, low=0)
        self.timeout_s = checks.positive("timeout_s", timeout_s)
        self.slot = uuid.uuid4().hex[:12]
        self.where: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self._key: tuple | None = None
        self._host: Host | None = None
        self._lock = threading.Lock()
        self._lost = False
        spec = self._start()
        super().__init__(spec, device=device)
        self.stats = RemoteQueryStats()

    def _check_options_locally(self) -> None:
        """Catch a misspelt option here when the system is also installed on this side (else the bench does)."""
        from physnn.core.registry import system_factory

        if not isinstance(self.factory, str):
            return
        try:
            factory = system_factory(self.name)
        except (ValueError, ImportError):
            return
        checks.check_options(factory, self.remote_options, f"system {self.name!r}")

    # ------------------------------------------------------------ lifecycle
    def _start(self) -> SystemSpec:
        ray = connect(self.address)
        # checked before an actor is asked for: an actor that no node can host would only time out on shutdown
        if self.resource and not self._resource_exists(ray):
            raise RemoteSystemError(
                f"resource={self.resource!r}: no node of the Ray cluster offers it; serve the bench with "
                f"`physnn serve --system {self.name} --resource {self.resource}` (nodes offer: "
                f"{', '.join(sorted(self._bench_resources(ray))) or 'no bench resources'})"
            )
        self._key, self._host = acquire_host(self.resource, self.idempotent, self.max_restarts, self.slot)
        try:
            info = self._get(self._host.actor.add.remote(self.slot, self.factory, self.remote_options), "open")
            self.where = dict(info["where"], resource=self.resource, restarted=info["restarted"])
            logger.info("%s runs on node %s (%s)", self.name, self.where["node_id"], self.where["hostname"])
            return _spec_from(info["spec"])
        except BaseException:
            self._abandon()  # never keep a bench that this object will not use
            raise

    @staticmethod
    def _bench_resources(ray: Any) -> set[str]:
        return {k for n in ray.nodes() if n.get("Alive") for k in n.get("Resources", {}) if ":" in k}

    def _resource_exists(self, ray: Any) -> bool:
        return any(n.get("Alive") and self.resource in n.get("Resources", {}) for n in ray.nodes())

    def _abandon(self) -> None:
        if self._key is not None:
            release_host(self._key, self.slot)
        self._key, self._host = None, None

    def open(self) -> "RemoteSystem":
        if self._closed:
            spec = self._start()
            if spec != self.spec:
                raise RemoteSystemError(f"{self.name} re-opened with a different spec: {spec} != {self.spec}")
        self._closed = False
        return self

    def safe_state(self) -> None:
        if self._host is not None:
            self._get(self._host.actor.call.remote(self.slot, "safe_state"), "safe_state")

    def close(self) -> None:
        """Safe state and close on the bench, then release the host (the last block stops the actor)."""
        if self._closed:
            return
        self._closed = True
        host, key = self._host, self._key
        if host is None or key is None:
            return
        try:
            self.final = self._get(host.actor.close.remote(self.slot), "close")
        finally:
            release_host(key, self.slot)
            self._key, self._host = None, None

    # --------------------------------------------------------------- query
    def __call__(self, x: Any) -> torch.Tensor:
        return self.submit(x).result()

    def submit(self, x: Any) -> RemoteQuery:
        """Validate ``x`` here, send it, and return at once; ``.result()`` waits for the measurement.

        Queries run on the bench in the order they were submitted.
        """
        if self._closed:
            raise RuntimeError(f"{self.spec.name}: the system is closed; call open() before querying it")
        batch = self.validate_input(x)  # the drive limits: nothing leaves this process before this check
        return RemoteQuery(self, batch, self._send(batch), time.perf_counter())

    def _send(self, batch: torch.Tensor) -> Any:
        assert self._host is not None
        if self._lost:
            self._await_host()
        x = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        return self._host.actor.query.remote(self.slot, x)

    def _await_host(self) -> None:
        """After a lost actor, wait until Ray has restarted it before sending the next batch.

        The ping touches no system, so repeating it is harmless; sending the
        batch into a restarting actor would leave its fate unknown.
        """
        ray = require_ray()
        from ray import exceptions as rex

        assert self._host is not None
        deadline = time.monotonic() + min(self.timeout_s, 120.0)
        while True:
            try:
                ray.get(self._host.actor.where_am_i.remote(), timeout=10)
                self._lost = False
                return
            except (rex.ActorUnavailableError, rex.GetTimeoutError):
                if time.monotonic() > deadline:
                    raise ActorLost(f"{self.name}: the host did not come back within {self.timeout_s:g} s") from None
                time.sleep(0.2)
            except rex.RayActorError:
                raise ActorLost(
                    f"{self.name}: the host on {self.where.get('hostname')} is gone and not restarted "
                    f"(max_restarts={self.max_restarts})"
                ) from None

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        """The contract's hook, reached only through :meth:`__call__` (after validation)."""
        return self._receive(RemoteQuery(self, x, self._send(x), time.perf_counter()))

    def _receive(self, q: RemoteQuery) -> torch.Tensor:
        y_np, device_s, events = self._wait(q)
        elapsed = time.perf_counter() - q.sent
        y = self._check_output(torch.from_numpy(np.array(y_np)), q.batch.shape[0])
        with self._lock:
            self.stats.calls += 1
            self.stats.samples += q.batch.shape[0]
            self.stats.seconds += elapsed
            self.stats.device_seconds += device_s
            self.stats.transport_seconds += max(0.0, elapsed - device_s)
        for kind, fields in events:  # retries, faults and warnings raised on the bench
            fields = {k: v for k, v in fields.items() if k != "system"}
            self.report_event(kind, node=self.where.get("hostname"), **fields)
        y = y.detach().to(device=q.batch.device, dtype=torch.float32)
        if self.query_hook is not None:
            self.query_hook(q.batch, y)
        return y

    def _wait(self, q: RemoteQuery) -> tuple[np.ndarray, float, list]:
        """The reply of a query; a restarted host gets its system back (nothing had reached the device)."""
        for _ in range(3):
            try:
                return self._get(q.ref, "query")
            except SlotMissing:
                self.report_event("remote_reopened", node=self.where.get("hostname"))
                assert self._host is not None
                info = self._get(self._host.actor.add.remote(self.slot, self.factory, self.remote_options), "re-open")
                self.where = dict(info["where"], resource=self.resource, restarted=info["restarted"])
                q.ref = self._send(q.batch)
        raise RemoteSystemError(f"{self.name}: the host on {self.where.get('hostname')} keeps losing the system")

    def _get(self, ref: Any, what: str) -> Any:
        """``ray.get`` with the project's errors: the remote exception's own type, or :class:`RemoteSystemError`."""
        ray = require_ray()
        from ray import exceptions as rex

        where = f"{self.name} on {self.where.get('hostname', '?')} (node {str(self.where.get('node_id', '?'))[:12]})"
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except rex.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, SlotMissing):
                raise cause from None
            if not isinstance(cause, BaseException):
                raise RemoteSystemError(f"{what} failed on {where}: {exc}") from None
            tb = _ANSI.sub("", str(exc))  # Ray's text of the remote traceback
            cause.remote_traceback = tb  # type: ignore[attr-defined]
            if hasattr(cause, "add_note"):
                cause.add_note(f"raised in the bench actor, {where}; remote traceback:\n{tb}")
            raise cause from None
        except rex.GetTimeoutError:
            raise RemoteSystemError(self._timeout_text(what, where)) from None
        except (rex.ActorDiedError, rex.ActorUnavailableError, rex.RayActorError) as exc:
            restart = (
                "Ray restarts it and the next query re-opens the system"
                if self.max_restarts
                else "it is not restarted (max_restarts=0)"
            )
            self._lost = True
            raise ActorLost(
                f"the actor hosting {where} was lost during {what}; the batch may have reached the device and "
                f"is not re-sent (at-most-once); {restart}. Ray: {str(exc).splitlines()[0]}"
            ) from None
        except rex.RayError as exc:
            raise RemoteSystemError(f"{what} on {where} failed in Ray: {exc}") from None

    def _timeout_text(self, what: str, where: str) -> str:
        """The likely cause of a reply that did not come within ``timeout_s``, by what was waited for."""
        waited = f"{what} on {where} got no reply within timeout_s={self.timeout_s:g} s"
        if what in ("open", "re-open"):
            return (
                f"{waited}: another training process holds the bench {self.resource or '(any node)'} (one trainer "
                f"per bench; it is freed when that process closes its systems), or the bench node is too busy to "
                f"start the host; wait for it or raise timeout_s"
            )
        if what == "query":
            return (
                f"{waited}: the device or its node is slow or hung, or the network to it is down; the batch may "
                f"still reach the device and is not re-sent"
            )
        return f"{waited}: the bench node is overloaded or the network to it is down"

    # ---------------------------------------------------- state and metadata
    def get_rng_state(self) -> dict[str, torch.Tensor]:
        assert self._host is not None, "the system is closed"
        return self._get(self._host.actor.call.remote(self.slot, "get_rng_state"), "get_rng_state")

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        assert self._host is not None, "the system is closed"
        self._get(self._host.actor.call.remote(self.slot, "set_rng_state", state), "set_rng_state")

    def remote_describe(self) -> dict[str, Any]:
        """The hosted system's own :meth:`describe` (its class, settings and stats on the bench)."""
        if self._host is None:
            return dict(self.final.get("describe", {}))
        return self._get(self._host.actor.call.remote(self.slot, "describe"), "describe")

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["remote"] = {
            "name": self.name if isinstance(self.factory, str) else repr(self.factory),
            "options": self.options,
            "resource": self.resource,
            "address": self.address,
            "idempotent": self.idempotent,
            "where": self.where,
            "system": self.remote_describe(),
        }
        return d

    def __repr__(self) -> str:
        return f"RemoteSystem({self.name!r}, resource={self.resource!r}, node={self.where.get('hostname')!r})"


def remote_system(
    *,
    name: str | None = None,
    options: dict[str, Any] | None = None,
    resource: str | None = None,
    address: str | None = None,
    idempotent: bool = False,
    max_restarts: int = 1,
    timeout_s: float = 600.0,
    n_inputs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> RemoteSystem:
    """Registry factory of ``system = "remote"`` (see :class:`RemoteSystem` for the options)."""
    _require_name(name)
    return RemoteSystem(
        name,  # type: ignore[arg-type] - checked above
        options=options,
        resource=resource,
        address=address,
        idempotent=idempotent,
        max_restarts=max_restarts,
        timeout_s=timeout_s,
        n_inputs=n_inputs,
        seed=seed,
        device=device,
    )


def _require_name(name: Any) -> str:
    if name is None:
        raise checks.ParameterError(
            'system = "remote" needs [system_options] name, the registry name of the system to build on the '
            'bench node (e.g. name = "optics"); it has none'
        )
    return name


def _preflight(options: dict[str, Any]) -> None:
    """Check ``system = "remote"``'s options without Ray or the network (the runner's pre-flight pass).

    Why: a missing ``name`` or a malformed ``address`` used to surface only once a cluster was joined (a
    traceback, or a wait of many minutes); everything that can be told from the options alone is told here.
    """
    name = _require_name(options.get("name"))
    checks.string("name", name, empty=False)
    if name == "remote":
        raise checks.ParameterError("name must be the system to host, not 'remote' itself, got 'remote'")
    inner = options.get("options") or {}
    if not isinstance(inner, dict):
        raise checks.ParameterError(f"options must be a table of the hosted system's options, got {inner!r}")
    for key in ("n_inputs", "seed"):
        if key in inner:
            raise checks.ParameterError(f"options must not set {key!r} (the run sets it), got {inner!r}")
    from physnn.core.registry import system_factory

    try:
        factory = system_factory(name)
    except (ValueError, ImportError):
        factory = None  # not installed here: the bench checks it
    if factory is not None:
        checks.check_options(factory, inner, f"system {name!r}", reserved=("n_inputs", "seed", "device"))
    if options.get("resource") is not None:
        checks.string("resource", options["resource"], empty=False)
    check_address(options.get("address"))
    checks.integer("max_restarts", options.get("max_restarts", 1), low=0)
    checks.positive("timeout_s", options.get("timeout_s", 600.0))


remote_system.preflight = _preflight  # type: ignore[attr-defined] - read by physnn.run.preflight
