r"""Continual training: keep learning while the device changes under you.

Why: a bench warms up, ages, gets bumped and has parts swapped. A network
trained once and frozen loses accuracy as its physical layers drift; the
claim of model-free training (Momeni et al. 2023) is that it can simply keep
training on the device as it is now. This module is that loop, for any
trainer of the :class:`~physnn.train.base.Trainer` contract (MF-FF, PAT, ...),
with the controls a lab needs to leave it running unattended.

One *tick* is the arrival of one labelled batch from the stream (in a lab: a
period of the data source; the tick is the unit of time of everything below).
Per tick, in this order:

1. **budget**: ``query_budget`` queries are added to a token bucket (capped
   at ``budget_burst``); every query the loop makes (training and probes) is
   paid from it, and training waits while it is empty (``None``: no limit);
2. **replay**: the batch enters a bounded buffer of the ``replay_size`` most
   recent samples (oldest dropped first);
3. **probes** (every ``probe_every`` ticks): ``probes`` fixed drives per
   system, drawn once uniformly within the drive limits (on the allowed
   levels), are measured once. The drift statistic of a system is

   .. math:: r = \frac{\mathrm{rms}(y - \bar y_{ref})}{\hat\sigma\,\sqrt{1 + 1/R}}

   with :math:`\bar y_{ref}` the mean of ``probe_repeats`` = R back-to-back
   reference measurements and :math:`\hat\sigma` their pooled standard
   deviation (the noise floor; for a noise-free system a tiny floor of
   1e-9 of the output rms, so any change counts). Without drift r is 1 up to
   sampling error (about :math:`1/\sqrt{2\,\text{probes}\cdot n_{out}}`); a
   drift is *detected* when r > ``threshold``. A detection triggers the
   actions: the learning-rate policy (``"boost"``: the rate is multiplied by
   ``lr_boost`` and decays linearly back over ``boost_ticks`` ticks),
   ``retrain_steps`` extra steps on replayed samples only (paid from the
   budget as it allows), the ``refit(model, x, y)`` callback on the replay
   buffer (re-fit a readout or a PAT twin), and a new reference measurement
   (so the next detection is relative to the device as it is now);
4. **training**: if the budget allows, one call of the trainer's per-batch
   step on the new batch plus ``replay_batch`` samples drawn from the buffer;
   then any queued re-training steps, while the budget allows.

Every detection and action is reported as an event ``on_event(kind,
fields)`` (the signature of :meth:`physnn.runlog.RunWriter.event`, so a run
file records them) and kept in :attr:`ContinualHistory.events`:
``reference``, ``drift_detected``, ``lr_change``, ``retrain``,
``retrain_done``, ``refit``, ``budget_exhausted`` (once per empty spell).
``on_tick(tick, record)`` sees each tick's record (the benchmark evaluates
accuracy there; those queries are not the loop's and are not charged).

Queries are counted from the systems' own counters (``stats.samples``), so
the budget holds whatever the trainer does inside its step. Everything is
seeded: the probes, the replay draws and the trainer's own generator.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal

import torch
from torch import nn

from physnn.core import checks
from physnn.core.system import PhysicalSystem

__all__ = ["Continual", "ContinualHistory", "ProbeMonitor", "train_step"]

log = logging.getLogger(__name__)

EventCallback = Callable[[str, dict[str, Any]], Any]
RefitCallback = Callable[[nn.Module, torch.Tensor, torch.Tensor], "dict[str, Any] | None"]


def _distinct(systems: Iterable[PhysicalSystem]) -> list[PhysicalSystem]:
    return list({id(s): s for s in systems}.values())


def _queries(systems: list[PhysicalSystem]) -> int:
    return sum(s.stats.samples for s in systems)


def _quiet_query(system: PhysicalSystem, x: torch.Tensor) -> torch.Tensor:
    """Query without the sample-logging hook (probes are not training samples)."""
    hooks = getattr(system, "hooks", None)
    if callable(hooks):
        with hooks(query_hook=None, replace=True):
            return system(x)
    return system(x)


def random_drives(system: PhysicalSystem, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` drives uniform within the system's limits, on its allowed levels if it has them."""
    spec = system.spec
    u = torch.rand(n, spec.n_inputs, generator=generator)
    if spec.levels is not None:
        return spec.low + torch.floor(u * spec.levels).clamp_max(spec.levels - 1) * spec.step
    return spec.low + u * (spec.high - spec.low)


# ==================================================================== drift detection
class ProbeMonitor:
    """Fixed probe drives per system, a repeated reference measurement, and the drift statistic.

    Args:
        systems: the systems to watch (duplicates are watched once).
        probes: probe drives per system.
        repeats: reference measurements (>= 2: the noise floor needs two).
        threshold: detection threshold on the statistic r (see the module docstring).
        seed: seeds the probe drives.
    """

    def __init__(
        self,
        systems: Iterable[PhysicalSystem],
        *,
        probes: int = 16,
        repeats: int = 3,
        threshold: float = 3.0,
        seed: int = 0,
    ):
        self.systems = _distinct(systems)
        if not self.systems:
            raise ValueError("ProbeMonitor needs at least one system")
        self.n_probes = checks.integer("probes", probes, low=1)
        self.repeats = checks.integer("probe_repeats", repeats, low=2)
        self.threshold = checks.real("threshold", threshold, low=1.0, low_open=True)
        gen = torch.Generator().manual_seed(checks.integer("seed", seed, low=0))
        self.drives = [random_drives(s, self.n_probes, gen) for s in self.systems]
        self.ref: list[torch.Tensor] = []
        self.floor: list[float] = []

    def reference(self) -> list[float]:
        """Measure every probe ``repeats`` times; keep their mean and the noise floor; return the floors."""
        self.ref, self.floor = [], []
        for s, d in zip(self.systems, self.drives):
            ys = torch.stack([_quiet_query(s, d).to(torch.float64) for _ in range(self.repeats)])
            mean = ys.mean(0)
            var = float(ys.var(0, unbiased=True).mean())
            tiny = 1e-9 * max(float(mean.pow(2).mean().sqrt()), 1e-12)
            self.ref.append(mean)
            self.floor.append(max(math.sqrt(var), tiny))
        return list(self.floor)

    def check(self) -> list[float]:
        """Measure every probe once; the drift statistic r of each system (reference first if none)."""
        if not self.ref:
            self.reference()
        out = []
        for s, d, ref, sigma in zip(self.systems, self.drives, self.ref, self.floor):
            y = _quiet_query(s, d).to(torch.float64)
            rms = float((y - ref).pow(2).mean().sqrt())
            out.append(rms / (sigma * math.sqrt(1 + 1 / self.repeats)))
        return out


# ==================================================================== one step of any trainer
def train_step(trainer: Any, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> dict[str, float]:
    """One training call of ``trainer`` on one batch, charged to its ``train`` phase.

    Uses the trainer's public ``step(model, x, y)`` when it has one; otherwise
    the :class:`~physnn.train.base.Trainer` contract's per-epoch hook on the
    single batch (one optimiser step per ``trainer.batch_size`` samples), after
    the method's one-off set-up (PAT's twin fit) if it has not run yet.
    """
    step = getattr(trainer, "step", None)
    if callable(step):
        return dict(step(model, xb, yb))
    trainer.prepare(model)
    acct = trainer.accountant
    if not getattr(trainer, "_ready", True):
        trainer._setup(model, xb, yb)
        trainer._ready = True
    model.train()
    try:
        with acct.phase("train"):
            return dict(trainer._train_epoch(model, xb, yb, None))
    finally:
        model.eval()


# ==================================================================== the loop
@dataclass
class ContinualHistory:
    """Per-tick records and every event of a continual run."""

    ticks: list[dict[str, float]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def metric(self, name: str) -> list[float]:
        return [t.get(name, float("nan")) for t in self.ticks]

    def events_of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]


class Continual:
    """Continual training around a trainer (see the module docstring).

    Args:
        trainer: a trainer of the Trainer contract whose model is being trained
            (usually already fitted once with ``trainer.fit``).
        replay_size: samples kept in the replay buffer (the most recent).
        replay_batch: replayed samples added to each new batch's step.
        retrain_steps: replay-only steps queued by each drift detection.
        lr_policy: ``"constant"`` or ``"boost"`` (after a detection).
        lr_boost: learning-rate factor right after a detection (``"boost"``).
        boost_ticks: ticks over which the boost decays linearly back to ``trainer.lr``.
        query_budget: queries per tick the loop may spend (training and probes); None: no limit.
        budget_burst: most unspent budget that can accumulate (default 10 ticks' worth).
        probe_every: ticks between probe measurements (0: no drift detection).
        probes: probe drives per system.
        probe_repeats: reference measurements per probe (the noise floor).
        threshold: detection threshold on the drift statistic (in noise-floor units, > 1).
        train_every: train on every this many ticks' batches (1: every batch).
        seed: seeds the probes and the replay draws.
    """

    def __init__(
        self,
        trainer: Any,
        *,
        replay_size: int = 1024,
        replay_batch: int = 32,
        retrain_steps: int = 20,
        lr_policy: Literal["constant", "boost"] = "boost",
        lr_boost: float = 3.0,
        boost_ticks: int = 50,
        query_budget: float | None = None,
        budget_burst: float | None = None,
        probe_every: int = 10,
        probes: int = 16,
        probe_repeats: int = 3,
        threshold: float = 3.0,
        train_every: int = 1,
        seed: int = 0,
    ):
        for attr in ("prepare", "optimizers", "lr"):
            if not hasattr(trainer, attr):
                raise TypeError(
                    f"trainer must follow the Trainer contract (physnn.train.base); "
                    f"{type(trainer).__name__} has no {attr!r}"
                )
        self.trainer = trainer
        opts = self.check_values(
            replay_size=replay_size,
            replay_batch=replay_batch,
            retrain_steps=retrain_steps,
            lr_policy=lr_policy,
            lr_boost=lr_boost,
            boost_ticks=boost_ticks,
            query_budget=query_budget,
            budget_burst=budget_burst,
            probe_every=probe_every,
            probes=probes,
            probe_repeats=probe_repeats,
            threshold=threshold,
            train_every=train_every,
            seed=seed,
        )
        self.replay_size: int = opts["replay_size"]
        self.replay_batch: int = opts["replay_batch"]
        self.retrain_steps: int = opts["retrain_steps"]
        self.lr_policy: str = opts["lr_policy"]
        self.lr_boost: float = opts["lr_boost"]
        self.boost_ticks: int = opts["boost_ticks"]
        self.query_budget: float | None = opts["query_budget"]
        self.budget_burst: float | None = opts["budget_burst"]
        self.probe_every: int = opts["probe_every"]
        self.probes: int = opts["probes"]
        self.probe_repeats: int = opts["probe_repeats"]
        self.threshold: float = opts["threshold"]
        self.train_every: int = opts["train_every"]
        self.seed: int = opts["seed"]
        self.generator = torch.Generator().manual_seed(self.seed + 1)
        self.history = ContinualHistory()
        self.monitor: ProbeMonitor | None = None
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._tokens = 0.0
        self._boost_left = 0
        self._pending = 0
        self._tick = 0

    # ------------------------------------------------------------------ checks
    @classmethod
    def check_options(cls, options: Any, what: str = "continual") -> dict[str, Any]:
        """Check a table of keyword options (a config's ``[continual_options]``) without building anything.

        Why separate from the constructor: a run checks its continual options
        before its first query (:mod:`physnn.run.preflight`), not after every
        epoch has trained, and whether or not ``continual_ticks`` uses them, so
        a misspelt key is never silently accepted. Unknown keys and values of
        the wrong type or range raise a :class:`~physnn.core.checks.ParameterError`
        naming the key, the value and what is allowed; returns the options typed.
        """
        typed = checks.check_options(cls, options, what, reserved=("trainer", "seed"))
        defaults = {
            k: p.default
            for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        checked = cls.check_values(**{**defaults, "seed": 0, **typed})
        return {k: checked[k] for k in typed}

    @staticmethod
    def check_values(
        *,
        replay_size: Any,
        replay_batch: Any,
        retrain_steps: Any,
        lr_policy: Any,
        lr_boost: Any,
        boost_ticks: Any,
        query_budget: Any,
        budget_burst: Any,
        probe_every: Any,
        probes: Any,
        probe_repeats: Any,
        threshold: Any,
        train_every: Any,
        seed: Any,
    ) -> dict[str, Any]:
        """Every option's type and range, and the one combination among them (a burst needs a budget)."""
        budget = None if query_budget is None else checks.positive("query_budget", query_budget)
        if budget_burst is not None and budget is None:
            raise checks.ParameterError(f"budget_burst = {budget_burst!r} needs a query_budget (queries per tick)")
        return {
            "replay_size": checks.integer("replay_size", replay_size, low=1),
            "replay_batch": checks.integer("replay_batch", replay_batch, low=0),
            "retrain_steps": checks.integer("retrain_steps", retrain_steps, low=0),
            "lr_policy": checks.choice("lr_policy", lr_policy, ("constant", "boost")),
            "lr_boost": checks.real("lr_boost", lr_boost, low=1.0),
            "boost_ticks": checks.integer("boost_ticks", boost_ticks, low=1),
            "query_budget": budget,
            "budget_burst": (
                None
                if budget is None
                else 10 * budget
                if budget_burst is None
                else checks.real("budget_burst", budget_burst, low=budget)
            ),
            "probe_every": checks.integer("probe_every", probe_every, low=0),
            "probes": checks.integer("probes", probes, low=1),
            "probe_repeats": checks.integer("probe_repeats", probe_repeats, low=2),
            "threshold": checks.real("threshold", threshold, low=1.0, low_open=True),
            "train_every": checks.integer("train_every", train_every, low=1),
            "seed": checks.integer("seed", seed, low=0),
        }

    # ------------------------------------------------------------------ pieces
    def _event(self, kind: str, on_event: EventCallback | None, **fields: Any) -> None:
        record = {"kind": kind, "tick": self._tick, **fields}
        self.history.events.append(record)
        log.info("continual %s at tick %d: %s", kind, self._tick, fields)
        if on_event is not None:
            on_event(kind, {k: v for k, v in record.items() if k != "kind"})

    def _remember(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        x = xb.detach() if self._x is None else torch.cat([self._x, xb.detach()])
        y = yb.detach() if self._y is None else torch.cat([self._y, yb.detach()])
        self._x, self._y = x[-self.replay_size :], y[-self.replay_size :]

    def _replay(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._x is not None and self._y is not None
        idx = torch.randint(0, self._x.shape[0], (n,), generator=self.generator)
        return self._x[idx], self._y[idx]

    def _lr(self) -> float:
        base = float(self.trainer.lr)
        if self.lr_policy == "constant" or self._boost_left <= 0:
            return base
        return base * (1 + (self.lr_boost - 1) * self._boost_left / self.boost_ticks)

    def _set_lr(self, lr: float) -> None:
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def _can_spend(self) -> bool:
        return self.query_budget is None or self._tokens > 0

    # ------------------------------------------------------------------ run
    def run(
        self,
        model: nn.Module,
        stream: Iterable[tuple[Any, Any]],
        *,
        on_event: EventCallback | None = None,
        on_tick: Callable[[int, dict[str, float]], Any] | None = None,
        refit: RefitCallback | None = None,
        max_ticks: int | None = None,
    ) -> ContinualHistory:
        """Consume ``stream`` (labelled batches) and keep training ``model``; returns the history.

        ``on_tick(tick, record)`` returning True stops the run after that tick.
        Calling ``run`` again continues (the buffer, budget, reference and
        learning-rate state are kept).
        """
        systems = _distinct(getattr(model, "systems", []))
        if not systems:
            raise TypeError(f"model must expose .systems (its physical systems), got {type(model).__name__}")
        self.trainer.prepare(model)
        if self.probe_every and self.monitor is None:
            self.monitor = ProbeMonitor(
                systems, probes=self.probes, repeats=self.probe_repeats, threshold=self.threshold, seed=self.seed
            )
            q0 = _queries(systems)
            floors = self.monitor.reference()
            if self.query_budget is not None:
                self._tokens -= _queries(systems) - q0
            self._event("reference", on_event, noise_floor=floors)
        if max_ticks is not None:
            max_ticks = checks.integer("max_ticks", max_ticks, low=0)
        done = 0
        exhausted = False
        for xb, yb in stream:
            if max_ticks is not None and done >= max_ticks:
                break
            xb = model.check_features(xb)
            yb = torch.as_tensor(yb, dtype=torch.int64)
            q_start = _queries(systems)
            if self.query_budget is not None:
                self._tokens = min(self._tokens + self.query_budget, float(self.budget_burst))
            self._remember(xb, yb)
            record: dict[str, float] = {"tick": float(self._tick)}
            # ---- drift detection
            if self.probe_every and self.monitor is not None and self._tick % self.probe_every == 0:
                q0 = _queries(systems)
                ratios = self.monitor.check()
                record["drift_ratio"] = max(ratios)
                hit = [i for i, r in enumerate(ratios) if r > self.threshold]
                if hit:
                    self._event(
                        "drift_detected",
                        on_event,
                        systems=hit,
                        ratio=[ratios[i] for i in hit],
                        threshold=self.threshold,
                        queries=float(_queries(systems)),
                    )
                    self._act(model, on_event, refit)
                    self._event("reference", on_event, noise_floor=self.monitor.reference())
                if self.query_budget is not None:
                    self._tokens -= _queries(systems) - q0
            # ---- training
            trained = 0
            lr = self._lr()
            self._set_lr(lr)
            if self._tick % self.train_every == 0 and self._can_spend():
                if self.replay_batch and self._x is not None:
                    xr, yr = self._replay(self.replay_batch)
                    xs, ys = torch.cat([xb, xr]), torch.cat([yb, yr])
                else:
                    xs, ys = xb, yb
                q0 = _queries(systems)
                metrics = train_step(self.trainer, model, xs, ys)
                if "loss" in metrics:
                    record["loss"] = float(metrics["loss"])
                trained += 1
                if self.query_budget is not None:
                    self._tokens -= _queries(systems) - q0
            while self._pending > 0 and self._can_spend():
                xr, yr = self._replay(min(self.trainer.batch_size, self._x.shape[0]))  # type: ignore[union-attr]
                q0 = _queries(systems)
                train_step(self.trainer, model, xr, yr)
                self._pending -= 1
                trained += 1
                if self.query_budget is not None:
                    self._tokens -= _queries(systems) - q0
                if self._pending == 0:
                    self._event("retrain_done", on_event, queries=float(_queries(systems)))
            if not self._can_spend() and not exhausted:
                self._event("budget_exhausted", on_event, tokens=self._tokens)
            exhausted = not self._can_spend()
            if self._boost_left > 0:
                self._boost_left -= 1
                if self._boost_left == 0:
                    self._event("lr_change", on_event, lr=self._lr())
            record.update(
                lr=lr,
                steps=float(trained),
                queries=float(_queries(systems) - q_start),
                queries_total=float(_queries(systems)),
                pending_retrain=float(self._pending),
            )
            if self.query_budget is not None:
                record["budget_tokens"] = self._tokens
            self.history.ticks.append(record)
            self._tick += 1
            done += 1
            if on_tick is not None and on_tick(self._tick - 1, record) is True:
                break
        return self.history

    def _act(self, model: nn.Module, on_event: EventCallback | None, refit: RefitCallback | None) -> None:
        """The actions a detection triggers (see the module docstring)."""
        if self.lr_policy == "boost":
            self._boost_left = self.boost_ticks
            self._event("lr_change", on_event, lr=self._lr())
        if self.retrain_steps:
            self._pending += self.retrain_steps
            self._event("retrain", on_event, steps=self.retrain_steps)
        if refit is not None and self._x is not None:
            info = refit(model, self._x, self._y) or {}
            self._event("refit", on_event, samples=int(self._x.shape[0]), **info)
