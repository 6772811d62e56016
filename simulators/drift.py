r"""Time-varying systems: slow drift and sudden perturbations around any simulator.

Why: a bench drifts (temperature, creep, people walking past), and a training
method that only works on a frozen simulator will disappoint in the lab.
:class:`Drifting` wraps any :class:`~physnn.system.PhysicalSystem` and makes it
time-varying, as a function of the queries made or of wall-clock time.

What drifts
-----------
**Internal parameters** (``target="parameters"``, the default when available).
A simulator opts in with one method::

    def drift_parameters(self) -> dict[str, torch.Tensor]:
        # live tensors (not copies) that may drift; the simulator must read
        # them on every query (or notice that they changed)
        return {"transmission_matrix": self._T}

and may add ``drift_scales() -> dict[str, float]``: for each name, the change
(in the parameter's own units) that substantially alters the response. Without
it, a parameter's scale is the standard deviation of its initial values (of the
real and imaginary parts for a complex tensor), or their absolute mean if they
are all equal, or 1. ``scales=`` overrides either. The wrapper owns these
tensors while it exists: before each batch it writes
:math:`\theta(t) = \theta_0 + \sigma\,s(t)` into them in place, with
:math:`\theta_0` their values when wrapped and :math:`\sigma` the scale.

**The output** (``target="output"``; the fallback for a system without
``drift_parameters``, so that any system, even hardware, can be made to drift).
A per-channel gain and offset: :math:`y' = (1 + s_g(t))\,y + \sigma_o\,s_o(t)`,
with :math:`\sigma_o` the mean :math:`|y|` of the first measured batch (or
``scales["offset"]``) and gain scale 1 (so ``s_g`` is a relative gain change).

The drift state s(t), dimensionless, one value per parameter element
--------------------------------------------------------------------
* ``mode="random_walk"``: :math:`s(t) = \text{rate}\cdot B(t)` with :math:`B`
  a standard Wiener process in clock units; after ``t`` units the rms change is
  ``rate * sqrt(t)`` scales.
* ``mode="periodic"``: :math:`s(t) = \text{amplitude}\cdot u\,[\sin(2\pi t/T + \varphi) - \sin\varphi]`
  with a seeded direction :math:`u \sim N(0,1)` and phase
  :math:`\varphi \sim U[0, 2\pi)` per element, period ``T = period``; zero at t = 0.
* ``events``: sudden perturbations, each a jump of ``size * N(0,1)`` per element
  added to s(t) from the given time on. ``events`` is a list of times (size
  ``event_size``) or of ``(time, size)`` pairs.

Clock: ``"queries"`` counts samples measured through the wrapper before the
current batch; ``"wall"`` counts seconds since the wrapper was made
(``time_fn``, default :func:`time.monotonic`, can be replaced for tests). The
state is evaluated once at the start of each batch: a batch is one measurement
sweep, so positives and negatives queried together see the same system. An
event at time ``t_e`` therefore first affects the batch that starts at or after
``t_e``. All random draws come from the wrapper's own generator (``seed``), on
the CPU in float64, so the realisation depends only on the seed and the
sequence of batch sizes (queries clock) and is identical on every device.
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any, Callable, Iterable

import torch

from physnn.system import PhysicalSystem

__all__ = ["Drifting", "drifting"]

_MODES = ("random_walk", "periodic")
_CLOCKS = ("queries", "wall")
_TARGETS = ("auto", "parameters", "output")


class Drifting(PhysicalSystem):
    """Wrap ``system`` so that it drifts; itself a PhysicalSystem with the same spec.

    Args:
        system: the system to make time-varying.
        mode: ``"random_walk"`` (uses ``rate``) or ``"periodic"`` (uses ``amplitude`` and ``period``).
        rate: random-walk rms change per sqrt(clock unit), in scales.
        amplitude: periodic amplitude (per-element rms), in scales.
        period: periodic period, in clock units.
        events: times of sudden perturbations, or ``(time, size)`` pairs.
        event_size: size (in scales, rms per element) of events given as bare times.
        clock: ``"queries"`` (samples measured) or ``"wall"`` (seconds).
        target: ``"auto"``, ``"parameters"`` or ``"output"`` (see the module docstring).
        scales: per-parameter scales overriding the defaults (names from
            ``drift_parameters()``, or ``"gain"``/``"offset"`` for the output target).
        seed: seeds every random draw of the drift.
        time_fn: the wall clock (seconds); only used with ``clock="wall"``.
    """

    def __init__(
        self,
        system: PhysicalSystem,
        *,
        mode: str = "random_walk",
        rate: float = 0.0,
        amplitude: float = 0.0,
        period: float | None = None,
        events: Iterable[float | tuple[float, float]] = (),
        event_size: float = 0.1,
        clock: str = "queries",
        target: str = "auto",
        scales: dict[str, float] | None = None,
        seed: int = 0,
        time_fn: Callable[[], float] | None = None,
    ):
        if not isinstance(system, PhysicalSystem):
            raise TypeError(f"system must be a PhysicalSystem, got {type(system).__name__}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        if clock not in _CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(_CLOCKS)}, got {clock!r}")
        if target not in _TARGETS:
            raise ValueError(f"target must be one of {', '.join(_TARGETS)}, got {target!r}")
        _non_negative("rate", rate)
        _non_negative("amplitude", amplitude)
        _non_negative("event_size", event_size)
        if mode == "random_walk" and (amplitude != 0 or period is not None):
            raise ValueError(
                f"amplitude={amplitude!r} and period={period!r} apply to mode='periodic'; "
                f"mode='random_walk' uses rate"
            )
        if mode == "periodic":
            if rate != 0:
                raise ValueError(f"rate={rate!r} applies to mode='random_walk'; mode='periodic' uses amplitude and period")
            if period is None or not (math.isfinite(period) and period > 0):
                raise ValueError(f"mode='periodic' needs a positive finite period (clock units), got {period!r}")
        has_params = callable(getattr(system, "drift_parameters", None))
        if target == "parameters" and not has_params:
            raise TypeError(
                f"{type(system).__name__} has no drift_parameters() method; use target='output' "
                f"(gain/offset drift) or implement drift_parameters() -> dict[str, torch.Tensor]"
            )
        self.system = system
        self.target = ("parameters" if has_params else "output") if target == "auto" else target
        super().__init__(system.spec, device=system.device, level_tolerance=system.level_tolerance)
        self.mode = mode
        self.rate = float(rate)
        self.amplitude = float(amplitude)
        self.period = None if period is None else float(period)
        self.clock = clock
        self.seed = int(seed)
        self._time_fn = time_fn or time.monotonic
        self._t0 = self._time_fn() if clock == "wall" else 0.0
        self._events = _parse_events(events, float(event_size))
        self._fired: list[dict[str, float]] = []
        self._user_scales = dict(scales or {})
        self._gen = torch.Generator().manual_seed(self.seed)
        self._t_last = 0.0

        if self.target == "parameters":
            params = system.drift_parameters()
            if not isinstance(params, dict) or not params:
                raise TypeError(f"{type(system).__name__}.drift_parameters() must return a non-empty dict of tensors")
            suggested = system.drift_scales() if callable(getattr(system, "drift_scales", None)) else {}
            self._params = {}
            for name in sorted(params):
                p = params[name]
                if not isinstance(p, torch.Tensor) or not (p.is_floating_point() or p.is_complex()):
                    raise TypeError(f"drift parameter {name!r} must be a float or complex tensor, got {p!r:.60}")
                self._params[name] = p
            self._scales = {n: self._scale(n, p, suggested) for n, p in self._params.items()}
        else:
            n_out = system.spec.n_outputs
            self._params = {
                "gain": torch.zeros(n_out, dtype=torch.float64),
                "offset": torch.zeros(n_out, dtype=torch.float64),
            }
            self._scales = {"gain": float(self._user_scales.get("gain", 1.0))}
            if "offset" in self._user_scales:
                self._scales["offset"] = float(self._user_scales["offset"])
        unknown = sorted(set(self._user_scales) - set(self._params))
        if unknown:
            raise ValueError(f"scales has unknown name(s) {unknown}; drifting parameters are {sorted(self._params)}")
        self._initial = {n: _real(p).detach().to(torch.float64).cpu().clone() for n, p in self._params.items()}
        shapes = {n: v.shape for n, v in self._initial.items()}
        self._walk = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
        self._jump = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
        self._direction = {n: torch.randn(s, generator=self._gen, dtype=torch.float64) for n, s in shapes.items()}
        self._phase = {n: 2 * math.pi * torch.rand(s, generator=self._gen, dtype=torch.float64) for n, s in shapes.items()}

    # ------------------------------------------------------------------ event hook (forwarded)
    @property
    def event_hook(self):  # type: ignore[override]
        return self.__dict__.get("_hook")

    @event_hook.setter
    def event_hook(self, hook) -> None:
        inner = self.__dict__.get("system")
        old = self.__dict__.get("_hook")
        self.__dict__["_hook"] = hook
        if inner is not None and (hook is not None or inner.event_hook is old):
            inner.event_hook = hook  # the wrapped system's faults reach the caller's hook too

    # ------------------------------------------------------------------ scales
    def _scale(self, name: str, p: torch.Tensor, suggested: dict[str, float]) -> float:
        if name in self._user_scales:
            value = self._user_scales[name]
        elif name in suggested:
            value = suggested[name]
        else:
            v = _real(p).detach().to(torch.float64)
            std = float(v.std(unbiased=False)) if v.numel() > 1 else 0.0
            mean = float(v.abs().mean()) if v.numel() else 0.0
            value = std if std > 0 else (mean if mean > 0 else 1.0)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"drift scale for {name!r} must be a positive finite number, got {value!r}")
        return float(value)

    # ------------------------------------------------------------------ clock and state
    @property
    def time(self) -> float:
        """The clock now: samples measured so far, or seconds since the wrapper was made."""
        if self.clock == "queries":
            return float(self.stats.samples)
        return float(self._time_fn() - self._t0)

    def _state(self, name: str, t: float) -> torch.Tensor:
        s = self.rate * self._walk[name] + self._jump[name]
        if self.mode == "periodic" and self.amplitude > 0:
            phi = self._phase[name]
            s = s + self.amplitude * self._direction[name] * (torch.sin(2 * math.pi * t / self.period + phi) - torch.sin(phi))
        return s

    def _advance(self) -> None:
        """Move the drift to the clock time now and write it into the parameters."""
        t = self.time
        if t < self._t_last:
            raise ValueError(f"drift clock went backwards: t={t} < last t={self._t_last}")
        dt = t - self._t_last
        if self.rate > 0 and dt > 0:
            for name in self._walk:
                self._walk[name] += math.sqrt(dt) * torch.randn(self._walk[name].shape, generator=self._gen, dtype=torch.float64)
        while self._events and self._events[0][0] <= t:
            t_e, size = self._events.pop(0)
            for name in self._jump:
                self._jump[name] += size * torch.randn(self._jump[name].shape, generator=self._gen, dtype=torch.float64)
            self._fired.append({"time": t_e, "size": size, "applied_at": t})
            self.report_event("drift_event", time=t_e, size=size, applied_at=t, clock=self.clock)
        self._t_last = t
        if self.target == "parameters":
            for name, p in self._params.items():
                value = self._initial[name] + self._scales[name] * self._state(name, t)
                with torch.no_grad():
                    _real(p).copy_(value.to(device=p.device))

    # ------------------------------------------------------------------ query
    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        self._advance()
        y = self.system(x)
        return self._output_drift(y) if self.target == "output" else y

    def _output_drift(self, y: torch.Tensor) -> torch.Tensor:
        if "offset" not in self._scales:
            level = float(y.abs().mean())
            self._scales["offset"] = level if level > 0 else 1.0
        t = self._t_last
        gain = self._scales["gain"] * self._state("gain", t)
        offset = self._scales["offset"] * self._state("offset", t)
        return (1 + gain.to(y)) * y + offset.to(y)

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped system's differentiable model at the current drift state (no clock advance)."""
        fn = getattr(self.system, "differentiable", None)
        if not callable(fn):
            raise AttributeError(f"{type(self.system).__name__} has no differentiable(x) mode")
        y = fn(x)
        if self.target == "output":
            if "offset" not in self._scales:
                raise RuntimeError("the output drift scale is set by the first measured batch; query the system once first")
            return self._output_drift(y)
        return y

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> "Drifting":
        self.system.open()
        return super().open()  # type: ignore[return-value]

    def safe_state(self) -> None:
        self.system.safe_state()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.system.close()

    # ------------------------------------------------------------------ metadata
    def drift_summary(self) -> dict[str, dict[str, float | None]]:
        """How far each drifting quantity has moved from its initial value so far."""
        out = {}
        for name, p in self._params.items():
            scale = self._scales.get(name)  # None: the output offset scale is set by the first batch
            if self.target == "parameters":
                change = _real(p).detach().to(torch.float64).cpu() - self._initial[name]
            else:
                change = self._state(name, self._t_last) * (scale or 0.0)
            rms = float(change.pow(2).mean().sqrt()) if change.numel() else 0.0
            out[name] = {
                "scale": scale,
                "rms_change": rms,
                "max_abs_change": float(change.abs().max()) if change.numel() else 0.0,
                "rms_change_in_scales": rms / scale if scale else 0.0,
            }
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            drift={
                "mode": self.mode,
                "rate": self.rate,
                "amplitude": self.amplitude,
                "period": self.period,
                "clock": self.clock,
                "target": self.target,
                "seed": self.seed,
                "time": self._t_last,
                "pending_events": [{"time": t, "size": s} for t, s in self._events],
                "fired_events": list(self._fired),
                "parameters": self.drift_summary(),
            },
            system=self.system.describe(),
        )
        return d

    def __repr__(self) -> str:
        return f"Drifting({self.system!r}, mode={self.mode!r}, clock={self.clock!r}, target={self.target!r})"


def drifting(
    n_inputs: int | None = None,
    *,
    base: str = "optics",
    base_options: dict[str, Any] | None = None,
    seed: int = 0,
    device: str = "cpu",
    **drift: Any,
) -> Drifting:
    """Registry factory (``system = "drifting"``): build ``base`` by name and make it drift.

    Config example::

        system = "drifting"
        [system_options]
        base = "microwave"
        mode = "random_walk"
        rate = 0.002
        base_options = { noise_db = -40 }

    The base system gets ``seed``; the drift realisation gets ``seed + 1``.
    """
    from physnn.registry import build_system

    if base == "drifting":
        raise ValueError("base must be a physical system, not 'drifting' itself")
    inner = build_system(base, n_inputs=n_inputs, seed=seed, device=device, **(base_options or {}))
    params = inspect.signature(Drifting).parameters
    allowed = [k for k in params if k not in ("self", "system", "seed", "time_fn")]
    unknown = sorted(set(drift) - set(allowed))
    if unknown:
        inner.close()
        raise ValueError(
            f"system 'drifting' has no option(s) {', '.join(map(repr, unknown))}; its options are: "
            f"base, base_options, {', '.join(allowed)}"
        )
    return Drifting(inner, seed=seed + 1, **drift)


def _real(p: torch.Tensor) -> torch.Tensor:
    """A real view of a tensor (real and imaginary parts as a trailing axis for complex ones)."""
    return torch.view_as_real(p) if p.is_complex() else p


def _non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _parse_events(events: Iterable[Any], default_size: float) -> list[tuple[float, float]]:
    parsed = []
    for item in events:
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise ValueError(f"an event must be a time or a (time, size) pair, got {item!r}")
            t, size = float(item[0]), float(item[1])
        else:
            t, size = float(item), default_size
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"event time must be a finite number >= 0, got {t!r}")
        if not math.isfinite(size) or size < 0:
            raise ValueError(f"event size must be a finite number >= 0, got {size!r}")
        parsed.append((t, size))
    return sorted(parsed)
