"""The black-box contract every physical system honours.

A :class:`PhysicalSystem` is anything that takes a batch of drive values
``x: [B, n_inputs]`` and returns measurements ``y: [B, n_outputs]``: a
simulator, a twin fitted to measured data, an AWG + oscilloscope over VISA, a
microcontroller over serial. Trainers only ever *call* systems; they never look
inside and never differentiate through them.

Why the base class validates instead of the subclasses: a real bench must never
receive an out-of-range drive level, so the check happens once, here, before
``_measure`` (and therefore before any byte goes to an instrument). Nothing is
silently clipped: a value outside the limits is a bug upstream (an encoder that
forgot the limits), and hiding it would make simulator runs disagree with the
bench.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils._python_dispatch import _disable_current_modes, is_in_torch_dispatch_mode

__all__ = ["SystemSpec", "QueryStats", "PhysicalSystem", "EventHook", "as_batch"]

#: A callback ``hook(kind, fields)`` that receives retries, faults and warnings
#: from a system (the run file records them in ``/events``).
EventHook = Callable[[str, dict], None]

_UNSET: Any = object()  # "argument not given" (None is a valid hook: no hook)


@dataclass(frozen=True)
class SystemSpec:
    """What a system accepts and returns.

    Attributes:
        n_inputs: drive channels per sample (SLM pixels, metasurface bits, DACs).
        n_outputs: measured features per sample (camera pixels, frequency bins).
        low, high: inclusive drive limits, in the system's own units (phase in
            units of pi, volts, normalised amplitude).
        levels: if set, only ``levels`` equally spaced values in ``[low, high]``
            are allowed (2 for a 1-bit metasurface, 256 for an 8-bit SLM).
        name: a short name used in messages and run files.
        units: the unit of the drive values, for messages and run files.
        output_units: the unit of the measured outputs (camera counts, Pa,
            spikes, V), for run files and figure axes.
        max_batch: the most samples one call to the device may carry (an AWG's
            memory, a camera's frame buffer); None: unlimited. A larger batch is
            sent as several calls of at most this many samples, and trainers
            group weight-independent queries into as few such calls as it allows.
    """

    n_inputs: int
    n_outputs: int
    low: float = 0.0
    high: float = 1.0
    levels: int | None = None
    name: str = "system"
    units: str = "a.u."
    output_units: str = "a.u."
    max_batch: int | None = None

    def __post_init__(self) -> None:
        for key in ("n_inputs", "n_outputs"):
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SystemSpec.{key} must be a positive integer, got {value!r}")
        for key in ("low", "high"):
            value = getattr(self, key)
            if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value):
                raise ValueError(f"SystemSpec.{key} must be a finite number, got {value!r}")
        if not self.low < self.high:
            raise ValueError(f"SystemSpec drive limits need low < high, got low={self.low}, high={self.high}")
        if self.levels is not None and (
            not isinstance(self.levels, (int, np.integer)) or isinstance(self.levels, bool) or self.levels < 2
        ):
            raise ValueError(f"SystemSpec.levels must be an integer >= 2 or None, got {self.levels!r}")
        if self.max_batch is not None and (
            not isinstance(self.max_batch, (int, np.integer)) or isinstance(self.max_batch, bool) or self.max_batch < 1
        ):
            raise ValueError(f"SystemSpec.max_batch must be an integer >= 1 or None, got {self.max_batch!r}")

    @property
    def step(self) -> float | None:
        """Spacing between allowed levels, or None for a continuous drive."""
        if self.levels is None:
            return None
        return (self.high - self.low) / (self.levels - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QueryStats:
    """Accounting of what was asked of a system.

    ``samples`` is the number that matters for comparing training methods: it
    is what a bench spends time and wear on. ``seconds`` is the time spent
    inside ``_measure`` (the device time), not the validation around it.
    ``counters`` holds device-specific counts (retries, timeouts, saturated
    samples) so that drivers need not subclass this.
    """

    calls: int = 0
    samples: int = 0
    seconds: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def reset(self) -> None:
        self.calls = 0
        self.samples = 0
        self.seconds = 0.0
        self.counters = {}

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "samples": self.samples, "seconds": self.seconds, **self.counters}


def as_batch(x: Any, name: str = "x") -> torch.Tensor:
    """Turn a tensor or array-like into a detached float32 tensor, no copy when possible."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            a = np.asarray(x.to_numpy() if hasattr(x, "to_numpy") else x)  # a pandas DataFrame: its values
            if not a.flags.writeable:  # torch warns on a read-only view (pandas copy-on-write): copy instead
                a = a.copy()
            t = torch.as_tensor(a)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a tensor or array of numbers, got {type(x).__name__}: {exc}") from None
    if t.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    if not (
        t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)
    ):
        raise ValueError(f"{name} must hold numbers, got dtype {t.dtype}")
    return t.to(torch.float32)


class PhysicalSystem:
    """Base of every system: validation, accounting, lifecycle.

    Subclasses implement :meth:`_measure` (a validated ``[B, n_inputs]``
    float32 tensor on ``self.device`` in, ``[B, n_outputs]`` out) and extend
    :meth:`describe`. Hardware subclasses override :meth:`open`,
    :meth:`close` and :meth:`safe_state`.

    Args:
        spec: what the system accepts and returns.
        device: where a simulator computes (``"cpu"``, ``"cuda"``); inputs are
            moved there and outputs moved back to the caller's device.
        level_tolerance: how far (as a fraction of one level step) a value may
            sit from an allowed level and still count as on it; absorbs float
            round-off of encoders, not real mistakes.
    """

    def __init__(self, spec: SystemSpec, *, device: str | torch.device = "cpu", level_tolerance: float = 1e-3):
        if not isinstance(spec, SystemSpec):
            raise TypeError(f"spec must be a SystemSpec, got {type(spec).__name__}")
        self.spec = spec
        self.device = torch.device(device)
        self.level_tolerance = float(level_tolerance)
        self.stats = QueryStats()
        self.event_hook: EventHook | None = None
        #: ``hook(x, y)`` called after every successful query (the run file keeps a subsample).
        self.query_hook: Callable[[torch.Tensor, torch.Tensor], None] | None = None
        self._closed = False

    # ------------------------------------------------------------------ query
    def __call__(self, x: Any) -> torch.Tensor:
        if self._closed:
            raise RuntimeError(f"{self.spec.name}: the system is closed; call open() before querying it")
        batch = self.validate_input(x)
        caller_device = batch.device
        start = time.perf_counter()
        # The physics is not digital compute of the model: pause any tensor-dispatch mode (the
        # torch.utils.flop_counter used by physnn.train.accounting) while the system measures.
        pause = _disable_current_modes() if is_in_torch_dispatch_mode(False) else contextlib.nullcontext()
        # _measure gets its own copy: a system that writes into its input (an in-place rescale to DAC
        # codes) must not corrupt the caller's tensor, the probes re-measured every epoch, or the
        # drives the run file logs. One copy of a [B, n_in] batch is negligible beside a measurement.
        # a device with a batch limit gets a larger batch as several calls (the limit is never exceeded)
        chunks = batch.to(self.device, copy=True).split(self.spec.max_batch or batch.shape[0])
        with torch.no_grad(), pause:
            parts = [self._measure(c) for c in chunks]
        elapsed = time.perf_counter() - start
        if len(parts) == 1:
            y = self._check_output(parts[0], batch.shape[0])
        else:
            y = torch.cat([self._check_output(p, c.shape[0]) for p, c in zip(parts, chunks)])
        self.stats.calls += len(parts)
        self.stats.samples += batch.shape[0]
        self.stats.seconds += elapsed
        y = y.detach().to(device=caller_device)
        if self.query_hook is not None:
            self.query_hook(batch, y)
        return y

    def _measure(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement _measure(x)")

    # ------------------------------------------------------------- validation
    def validate_input(self, x: Any) -> torch.Tensor:
        """Check a batch against the spec and return it as float32.

        Raises ``ValueError`` naming the row, column, value and limit of the
        first offending entry. Called before anything reaches the system.
        """
        spec = self.spec
        t = as_batch(x, f"{spec.name} input")
        if t.dim() != 2:
            raise ValueError(f"{spec.name} input must be 2-D [batch, {spec.n_inputs}], got shape {tuple(t.shape)}")
        if t.shape[1] != spec.n_inputs:
            raise ValueError(
                f"{spec.name} input has {t.shape[1]} columns, the system has n_inputs={spec.n_inputs} "
                f"(shape {tuple(t.shape)})"
            )
        if t.shape[0] == 0:
            raise ValueError(f"{spec.name} input is an empty batch (shape {tuple(t.shape)})")
        # fast path, one pass and one sync: min and max propagate NaN, so finite extremes inside the limits
        # mean every entry is finite and inside them; anything else takes the checks below, which name it
        lo, hi = (float(v) for v in torch.aminmax(t))
        if spec.levels is None and spec.low <= lo and hi <= spec.high and math.isfinite(lo) and math.isfinite(hi):
            return t
        bad = ~torch.isfinite(t)
        if bad.any():
            r, c = _first(bad)
            raise ValueError(f"{spec.name} input[{r}, {c}] = {t[r, c].item()} is not finite (NaN/inf)")
        low_bad = t < spec.low
        if low_bad.any():
            r, c = _first(low_bad)
            raise ValueError(
                f"{spec.name} input[{r}, {c}] = {t[r, c].item():.6g} {spec.units} is below the drive limit "
                f"low={spec.low:g} {spec.units}"
            )
        high_bad = t > spec.high
        if high_bad.any():
            r, c = _first(high_bad)
            raise ValueError(
                f"{spec.name} input[{r}, {c}] = {t[r, c].item():.6g} {spec.units} is above the drive limit "
                f"high={spec.high:g} {spec.units}"
            )
        if spec.levels is not None:
            k = (t - spec.low) / spec.step
            off = (k - torch.round(k)).abs() > self.level_tolerance
            if off.any():
                r, c = _first(off)
                raise ValueError(
                    f"{spec.name} input[{r}, {c}] = {t[r, c].item():.6g} is not one of the {spec.levels} allowed "
                    f"levels low + k*{spec.step:.6g} (k = 0..{spec.levels - 1}); quantise it first"
                )
        return t

    def _check_output(self, y: Any, batch: int) -> torch.Tensor:
        name = self.spec.name
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{name}._measure returned {type(y).__name__}, expected a torch.Tensor")
        if tuple(y.shape) != (batch, self.spec.n_outputs):
            raise RuntimeError(f"{name} returned shape {tuple(y.shape)}, expected ({batch}, {self.spec.n_outputs})")
        y32 = y.detach().to(torch.float32)
        if bool(torch.isfinite(y32).all()):  # fast path: a non-finite y stays non-finite in float32
            return y32
        bad = ~torch.isfinite(y)
        if bad.any():
            r, c = _first(bad)
            self.stats.count("non_finite_outputs", int(bad.sum()))
            raise RuntimeError(f"{name} measured a non-finite value at output[{r}, {c}] = {y[r, c].item()}")
        # checked again after the cast to the float32 that callers get: a float64 1e300 would become inf
        y32 = y.detach().to(torch.float32)
        bad = ~torch.isfinite(y32)
        if bad.any():
            r, c = _first(bad)
            self.stats.count("non_finite_outputs", int(bad.sum()))
            raise RuntimeError(
                f"{name} measured output[{r}, {c}] = {y[r, c].item():.6g}, outside the float32 range "
                f"(|y| <= {torch.finfo(torch.float32).max:.4g}) that measurements are returned in"
            )
        return y32

    # --------------------------------------------------------------- metadata
    def digital_flops_per_sample(self) -> int | None:
        """Digital FLOPs a digital computer would spend on one sample of this system's noise-free map, or
        None (the default) when the system does not state it.

        Part of the public contract, like :attr:`spec`: the accounting reads it to say what a physical query
        replaces (the controls of :mod:`physnn.simulators.controls` state theirs). A real bench usually
        states none.
        """
        return None

    def describe(self) -> dict[str, Any]:
        """JSON-able metadata for run files: the class, the spec, the stats.

        Subclasses add their own settings (seed, noise levels, instrument
        identity) by extending the dict returned here.
        """
        return {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "spec": self.spec.to_dict(),
            "device": str(self.device),
            "stats": self.stats.as_dict(),
        }

    def _generators(self, prefix: str = "", seen: set[int] | None = None) -> dict[str, torch.Generator]:
        """Every ``torch.Generator`` the system (or a system it wraps) draws noise from."""
        seen = set() if seen is None else seen
        seen.add(id(self))
        found: dict[str, torch.Generator] = {}
        for name, value in vars(self).items():
            if isinstance(value, torch.Generator):
                found[prefix + name] = value
            elif isinstance(value, PhysicalSystem) and id(value) not in seen:
                found.update(value._generators(f"{prefix}{name}.", seen))
        return found

    def get_rng_state(self) -> dict[str, torch.Tensor]:
        """The state of the system's noise generators, so a resumed run draws the same noise.

        Only meaningful for simulators; a real bench's noise cannot be replayed.
        """
        return {name: g.get_state() for name, g in self._generators().items()}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        gens = self._generators()
        unknown = sorted(set(state) - set(gens))
        if unknown:
            raise ValueError(f"{self.spec.name}: no random generator(s) {unknown}; this system has {sorted(gens)}")
        for name, st in state.items():
            gens[name].set_state(st)

    @contextlib.contextmanager
    def hooks(self, *, event_hook: Any = _UNSET, query_hook: Any = _UNSET, replace: bool = False):
        """Attach hooks for the duration of a ``with`` block; the previous ones are back afterwards.

        By default a new hook runs *after* the one already set (a run file
        records events while a lab script's own hook still sees them);
        ``replace=True`` installs exactly the given hook (``None``: none)
        for the block, e.g. to query probes without logging them as samples.
        """
        saved = (self.event_hook, self.query_hook)
        if event_hook is not _UNSET:
            self.event_hook = event_hook if replace else _chain(saved[0], event_hook)
        if query_hook is not _UNSET:
            self.query_hook = query_hook if replace else _chain(saved[1], query_hook)
        try:
            yield self
        finally:
            self.event_hook, self.query_hook = saved

    def report_event(self, kind: str, **fields: Any) -> None:
        """Send a fault, retry or warning to the caller's hook (if any) and count it."""
        self.stats.count(kind)
        if self.event_hook is not None:
            self.event_hook(kind, {"system": self.spec.name, **fields})

    # -------------------------------------------------------------- lifecycle
    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> "PhysicalSystem":
        self._closed = False
        return self

    def safe_state(self) -> None:
        """Put outputs in a safe state. Idempotent. A no-op for simulators."""

    def close(self) -> None:
        if not self._closed:
            try:
                self.safe_state()
            finally:
                self._closed = True

    def __enter__(self) -> "PhysicalSystem":
        if self._closed:
            self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.spec
        lv = f", levels={s.levels}" if s.levels else ""
        return (
            f"{type(self).__name__}(n_inputs={s.n_inputs}, n_outputs={s.n_outputs}, low={s.low:g}, high={s.high:g}{lv})"
        )


def _chain(first: Callable[..., None] | None, second: Callable[..., None] | None) -> Callable[..., None] | None:
    """A hook calling ``first`` then ``second`` (either may be None)."""
    if first is None or second is None:
        return second if first is None else first

    def both(*args: Any) -> None:
        first(*args)
        second(*args)

    return both


def _first(mask: torch.Tensor) -> tuple[int, int]:
    idx = mask.nonzero()[0]
    return int(idx[0]), int(idx[1])
