"""What a training run costs: physical queries, device time, digital FLOPs, wall time.

Why a separate module: the claims of the paper are comparative (MF-FF needs
fewer digital operations and less time than hardware-aware training at
comparable accuracy), so every trainer must count the same things the same
way. Each trainer holds an :class:`Accountant` and returns its numbers as plain
``dict[str, float]`` that go into the per-epoch metrics of a run file.

What is counted
---------------
* **Physical queries**: samples sent to the systems (``PhysicalSystem.stats``),
  split by *phase*: ``train`` (the method's own training queries), ``twin_fit``
  (queries spent fitting a digital twin, PAT), ``eval`` (accuracy curves during
  training), ``inference`` (the final test) or any other name a caller uses.
  A system used by several blocks is counted once.
* **Device seconds**: time spent inside the systems' ``_measure``, per phase.
* **Wall seconds**: elapsed time per phase.
* **Digital FLOPs a query replaces** (``flops_replaced/<phase>``): what a
  digital computer would spend to compute the same map the physics computed,
  summed over the samples queried -- "what the physics saves", as a number.
  A system states its price per sample with a ``digital_flops_per_sample()``
  method (the digital controls of :mod:`physnn.simulators.controls` do, with
  :func:`physnn.simulators.controls.speckle_flops` the price of one optical
  query); :func:`query_flops` reads it, and a system that states none is left
  out of these metrics (they are absent when no system states one). Like the
  queries, they are charged to the phase in which the samples were queried.
* **Digital FLOPs**: :class:`torch.utils.flop_counter.FlopCounterMode`, which
  counts matrix products (mm, addmm, bmm), convolutions and attention, forward
  and backward, at 2 FLOPs per multiply-add; complex products are counted like
  real ones. LU solves (``torch.linalg.solve``, used by the microwave
  simulator's differentiable model) are added here at ``2/3 n^3 + 2 n^2 k`` per
  system of size n with k right-hand sides. Elementwise operations and
  optimiser updates are not counted (the usual convention: they are O(params),
  not O(batch x params)). The physics inside a system's query is *not* digital
  compute of the model: ``PhysicalSystem.__call__`` pauses the counter while
  ``_measure`` runs. A simulator's ``differentiable`` model, used by in-silico
  training, *is* counted: running it is digital compute.

Why FLOPs are memoised per key
------------------------------
FlopCounterMode dispatches every tensor operation through Python and slows
training down about tenfold, which would make wall times meaningless. So
:meth:`Accountant.flops` takes a *key*: the first block run under a key is
counted exactly; later blocks with the same key add that count without
counting. The caller guarantees that a key determines the operations (put the
shapes in the key; no data-dependent branching inside the block). Tests check
the memoised totals against ``exact=True`` (count every block). A count
measured elsewhere, e.g. on a copy of the model with stand-in systems
(:func:`probe_flops`), can be registered with :meth:`Accountant.prime`.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Callable, Hashable, Iterable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from physnn.core.system import PhysicalSystem, SystemSpec

__all__ = ["Accountant", "count_flops", "probe_flops", "query_flops", "StandIn", "with_stand_ins", "FLOP_FORMULAS"]


# --------------------------------------------------------------- LU solves
def _batch(*shapes) -> int:
    """Number of matrices in the broadcast of the given batch shapes."""
    n = 1
    for d in torch.broadcast_shapes(*[torch.Size(s) for s in shapes]):
        n *= int(d)
    return n


def _solve_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``_linalg_solve_ex(A, B)``: LU factorisation (2/3 n^3) + two triangular solves (2 n^2 k) per matrix."""
    n = int(a_shape[-1])
    vector = len(b_shape) == 1 or (len(b_shape) == len(a_shape) - 1 and tuple(b_shape) == tuple(a_shape[:-1]))
    k = 1 if vector else int(b_shape[-1])
    b_batch = b_shape[:-1] if vector else b_shape[:-2]
    return _batch(a_shape[:-2], b_batch) * ((2 * n**3) // 3 + 2 * n * n * k)


def _lu_solve_flops(lu_shape, pivots_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``linalg_lu_solve(LU, pivots, B)``: two triangular solves (2 n^2 k) per matrix."""
    n = int(lu_shape[-1])
    return _batch(lu_shape[:-2], b_shape[:-2]) * 2 * n * n * int(b_shape[-1])


#: Extra formulas given to FlopCounterMode (aten op -> FLOPs from argument shapes).
FLOP_FORMULAS = {
    torch.ops.aten._linalg_solve_ex: _solve_flops,
    torch.ops.aten.linalg_lu_solve: _lu_solve_flops,
}


def _counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``fn(*args, **kwargs)`` and return ``(result, digital FLOPs)``, systems' physics excluded."""
    with _counter() as fc:
        result = fn(*args, **kwargs)
    return result, int(fc.get_total_flops())


def query_flops(system: PhysicalSystem) -> int | None:
    """Digital FLOPs one sample of ``system``'s map would cost on a digital computer, or None if it states none.

    A system states it with :meth:`PhysicalSystem.digital_flops_per_sample` (part of its public contract): the
    noise-free map it computes, priced as a digital computer would compute it. Nothing of the system is read
    but that one public method.
    """
    n = system.digital_flops_per_sample()
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(
            f"system {system.spec.name!r}: digital_flops_per_sample() must return an integer >= 0, got {n!r}"
        )
    return n


# --------------------------------------------------------------- stand-ins
class StandIn(PhysicalSystem):
    """A shape-compatible stand-in for a system: answers zeros, touches no hardware.

    For FLOP probes: the digital operations of a trainer depend on the shapes of
    the measurements, not on their values, so a probe run on stand-ins counts
    the same FLOPs as the real run without spending a single physical query.
    """

    def __init__(self, spec: SystemSpec):
        super().__init__(spec)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], self.spec.n_outputs)

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1, keepdim=True).expand(-1, self.spec.n_outputs) * 0.0


def with_stand_ins(obj: Any, systems: Iterable[PhysicalSystem]) -> Any:
    """A deep copy of ``obj`` (a model, a trainer) in which every system is replaced by a :class:`StandIn`.

    The systems themselves are never copied (``copy.deepcopy`` with a memo that
    maps each system to its stand-in), so their state and statistics are untouched.
    """
    memo: dict[int, Any] = {}
    for s in systems:
        memo[id(s)] = StandIn(s.spec)
    return copy.deepcopy(obj, memo)


def probe_flops(fn: Callable[[], Any]) -> int:
    """Digital FLOPs of ``fn()``, counted exactly (for a run on stand-ins, see :func:`with_stand_ins`)."""
    return count_flops(fn)[1]


# --------------------------------------------------------------- accountant
class Accountant:
    """Counts queries, device seconds, wall time and FLOPs of a run, by phase.

    Args:
        systems: the systems whose queries are charged to this run (more can be
            added with :meth:`add_systems`). Counting starts when a system is added.
        count_flops: False turns FLOP counting off (the ``flops/*`` metrics are then absent).
        exact: count every :meth:`flops` block instead of memoising per key
            (slow; for tests and audits).

    Usage::

        acct = Accountant(systems)
        with acct.phase("train"):
            for batch in ...:
                with acct.flops(("step", batch.shape)):
                    ...
        acct.metrics()   # {"queries/train": ..., "flops/train": ..., ...}
    """

    def __init__(self, systems: Iterable[PhysicalSystem] = (), *, count_flops: bool = True, exact: bool = False):
        self.count_flops = bool(count_flops)
        self.exact = bool(exact)
        self._systems: dict[int, PhysicalSystem] = {}
        self._base: dict[int, tuple[int, float]] = {}
        self._queries: dict[str, int] = {}
        self._device: dict[str, float] = {}
        self._wall: dict[str, float] = {}
        self._flops: dict[str, int] = {}
        self._replaced: dict[str, int] = {}  # digital FLOPs the queried samples replace, per phase
        self._memo: dict[str, int] = {}  # repr(key) -> FLOPs, so checkpoints can carry it
        self.memo_hits = 0
        self.memo_misses = 0
        self._phase: str | None = None
        self._flop_depth = 0
        #: (queries, device seconds, replaced FLOPs) carried over from a checkpoint (:meth:`load_state_dict`)
        self._offset: tuple[int, float, int] = (0, 0.0, 0)
        self._per_sample: dict[int, int | None] = {}
        self.add_systems(systems)

    # ---------------------------------------------------------- systems
    def add_systems(self, systems: Iterable[PhysicalSystem]) -> None:
        if self._phase is not None:
            raise RuntimeError("add systems between phases, not inside one")
        for s in systems:
            if not isinstance(s, PhysicalSystem):
                raise TypeError(f"systems must be PhysicalSystem objects, got {type(s).__name__}")
            if id(s) not in self._systems:
                self._systems[id(s)] = s
                self._base[id(s)] = (s.stats.samples, s.stats.seconds)
                self._per_sample[id(s)] = query_flops(s)

    @property
    def states_replaced_flops(self) -> bool:
        """True when some system states what its queries replace (the ``flops_replaced/*`` metrics exist)."""
        return any(v is not None for v in self._per_sample.values()) or bool(self._offset[2])

    def _used(self) -> tuple[int, float, int]:
        q = sum(s.stats.samples - self._base[k][0] for k, s in self._systems.items())
        d = sum(s.stats.seconds - self._base[k][1] for k, s in self._systems.items())
        r = sum((s.stats.samples - self._base[k][0]) * (self._per_sample[k] or 0) for k, s in self._systems.items())
        return q + self._offset[0], d + self._offset[1], r + self._offset[2]

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The cumulative totals, so a resumed run keeps counting from where it stopped (not from zero).

        The FLOP memo is included: a resumed run then never runs a step under the
        counter that the uninterrupted run ran without it (the counter's
        dispatch can change the last bit of a result, and resume is bit-exact).
        """
        q, d, r = self._used()
        return {
            "queries": dict(self._queries),
            "device": dict(self._device),
            "wall": dict(self._wall),
            "flops": dict(self._flops),
            "replaced": dict(self._replaced),
            "used": [int(q), float(d), int(r)],
            "memo": dict(self._memo),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: totals restored, the systems' present counters become the new base."""
        if self._phase is not None:
            raise RuntimeError("load_state_dict between phases, not inside one")
        self._queries = {str(k): int(v) for k, v in state["queries"].items()}
        self._device = {str(k): float(v) for k, v in state["device"].items()}
        self._wall = {str(k): float(v) for k, v in state["wall"].items()}
        self._flops = {str(k): int(v) for k, v in state["flops"].items()}
        self._replaced = {str(k): int(v) for k, v in state.get("replaced", {}).items()}  # absent before round 3
        for k, s in self._systems.items():
            self._base[k] = (s.stats.samples, s.stats.seconds)
        used = state["used"]
        self._offset = (int(used[0]), float(used[1]), int(used[2]) if len(used) > 2 else 0)
        self._memo.update({str(k): int(v) for k, v in state.get("memo", {}).items()})

    # ---------------------------------------------------------- phases
    @property
    def current_phase(self) -> str | None:
        return self._phase

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge the queries, device seconds, wall time and FLOPs of the block to ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"phase name must be a non-empty string, got {name!r}")
        if self._phase is not None:
            raise RuntimeError(f"phase {name!r} started inside phase {self._phase!r}; phases do not nest")
        q0, d0, r0 = self._used()
        t0 = time.perf_counter()
        self._phase = name
        try:
            yield
        finally:
            self._phase = None
            q1, d1, r1 = self._used()
            self._queries[name] = self._queries.get(name, 0) + (q1 - q0)
            self._device[name] = self._device.get(name, 0.0) + (d1 - d0)
            self._replaced[name] = self._replaced.get(name, 0) + (r1 - r0)
            self._wall[name] = self._wall.get(name, 0.0) + (time.perf_counter() - t0)

    # ---------------------------------------------------------- FLOPs
    @contextlib.contextmanager
    def flops(self, key: Hashable) -> Iterator[None]:
        """Count the digital FLOPs of the block, memoised per ``key`` (see the module docstring).

        Nested blocks are counted by the outermost one only.
        """
        if not self.count_flops or self._flop_depth > 0:
            self._flop_depth += 1
            try:
                yield
            finally:
                self._flop_depth -= 1
            return
        phase = self._phase or "other"
        self._flop_depth += 1
        try:
            memo_key = repr(key)
            if not self.exact and memo_key in self._memo:
                self.memo_hits += 1
                yield
                n = self._memo[memo_key]
            else:
                self.memo_misses += 1
                with _counter() as fc:
                    yield
                n = int(fc.get_total_flops())
                self._memo.setdefault(memo_key, n)
        finally:
            self._flop_depth -= 1
        self._flops[phase] = self._flops.get(phase, 0) + n

    def prime(self, key: Hashable, flops: int) -> None:
        """Register the FLOPs of a key counted elsewhere (e.g. by :func:`probe_flops` on stand-ins)."""
        if not isinstance(flops, int) or flops < 0:
            raise ValueError(f"flops must be an integer >= 0, got {flops!r}")
        self._memo[repr(key)] = flops

    def known(self, key: Hashable) -> bool:
        return repr(key) in self._memo

    # ---------------------------------------------------------- results
    def metrics(self) -> dict[str, float]:
        """Cumulative totals since the systems were added, as plain floats.

        Keys: ``queries/<phase>``, ``device_seconds/<phase>``, ``wall_seconds/<phase>``,
        ``flops/<phase>`` for every phase seen, queries made outside any phase as
        ``queries/other``, and ``queries/learning`` = train + twin_fit (what the
        method spends to learn), ``flops/learning`` likewise, plus ``*/total``; and, when a system states
        its price per sample (:func:`query_flops`), ``flops_replaced/<phase>``, ``flops_replaced/learning``
        and ``flops_replaced/total``: the digital FLOPs the queried samples replace.
        """
        out: dict[str, float] = {}
        q_total, d_total, r_total = self._used()
        q_other = q_total - sum(self._queries.values())
        d_other = d_total - sum(self._device.values())
        phases = sorted(set(self._queries) | set(self._flops) | ({"other"} if q_other else set()))
        for p in phases:
            out[f"queries/{p}"] = float(self._queries.get(p, 0) + (q_other if p == "other" else 0))
            out[f"device_seconds/{p}"] = float(self._device.get(p, 0.0) + (d_other if p == "other" else 0.0))
            if p in self._wall:
                out[f"wall_seconds/{p}"] = float(self._wall[p])
            if self.count_flops:
                out[f"flops/{p}"] = float(self._flops.get(p, 0))
        out["queries/learning"] = float(self._queries.get("train", 0) + self._queries.get("twin_fit", 0))
        out["queries/total"] = float(q_total)
        out["device_seconds/total"] = float(d_total)
        out["wall_seconds/total"] = float(sum(self._wall.values()))
        if self.count_flops:
            out["flops/learning"] = float(self._flops.get("train", 0) + self._flops.get("twin_fit", 0))
            out["flops/total"] = float(sum(self._flops.values()))
        if self.states_replaced_flops:
            r_other = r_total - sum(self._replaced.values())
            for p in phases:
                out[f"flops_replaced/{p}"] = float(self._replaced.get(p, 0) + (r_other if p == "other" else 0))
            out["flops_replaced/learning"] = float(self._replaced.get("train", 0) + self._replaced.get("twin_fit", 0))
            out["flops_replaced/total"] = float(r_total)
        return out
