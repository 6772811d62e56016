r"""Time-varying systems: stationary drift and sudden events around any simulator.

Why: a bench drifts (temperature, creep, people walking past), gets bumped and
has parts swapped, and a training method that only works on a frozen simulator
will disappoint in the lab. :class:`Drifting` wraps any
:class:`~physnn.core.system.PhysicalSystem` and makes it time-varying, as a function
of the queries made or of wall-clock time, *without leaving the physics the
simulator is valid for*: a passive medium stays passive, a lab's temperature
wanders around its set point and stays in the simulator's valid range.

What drifts
-----------
**Internal parameters** (``target="parameters"``, the default when available).
A simulator opts in with one method::

    def drift_parameters(self) -> dict[str, torch.Tensor]:
        # live tensors (not copies) that may drift; the simulator must read
        # them on every query (or notice that they changed)
        return {"transmission_matrix": self._T}

and may add ``drift_scales() -> dict[str, float]``: for each name, the change
(in the parameter's own units) that substantially alters the response, and
``drift_bounds() -> dict[str, tuple[float | None, float | None]]``: the range
(parameter units) in which its physics holds. Without ``drift_scales``, a
parameter's scale is the standard deviation of its initial values (of the real
and imaginary parts for a complex tensor), or their absolute mean if they are
all equal, or 1. ``scales=`` and ``bounds=`` override either. The wrapper owns
these tensors while it exists and writes their drifted values into them in
place before each batch, through one of two *charts* (``charts=``):

* ``"additive"`` (default): :math:`\theta(t) = \mathrm{clip}(\theta_0 + \Delta + \sigma_\theta\,s(t),\ \text{bounds})`
  with :math:`\theta_0` the values when wrapped, :math:`\Delta` the sum of the
  deterministic steps so far (parameter units) and :math:`\sigma_\theta` the
  scale. Bounds default to the simulator's ``drift_bounds()`` (e.g. the acoustic
  cavity's air temperature -50..100 deg C, where :math:`c = 331.3 + 0.606\,T` holds, and its
  membrane resonances inside the band its solver resolves; the neuromorphic chip's threshold and
  leak factors). Each clipped batch is counted (``stats.counters["drift_clipped"]``), and a
  ``step`` event cannot push a parameter out of its range either: it is clipped the same way.
* ``"rotation"`` (default for a complex 2-D ``transmission_matrix``, i.e. the
  optical medium): :math:`T(t) = e^{iH_{out}(t)}\,T_0\,e^{iH_{in}(t)}` with the Hermitian generators
  :math:`H_{out} = (A + A^\dagger)/(2\sqrt{2N_{out}})` and
  :math:`H_{in} = (C + C^\dagger)/(2\sqrt{2N_{in}})`, :math:`A` (:math:`N_{out}\times N_{out}`) and
  :math:`C` (:math:`N_{in}\times N_{in}`) the complex drift state. Unitaries on both sides keep the
  singular values of :math:`T`: the medium stays exactly as passive (no input field leaves with more
  power than :math:`\sigma_{max}^2`, a lossless cavity stays lossless), while the speckle changes
  (output side) and so does how much light each input pattern transmits (input side: :math:`T^\dagger T`
  is rotated, so :math:`\|TE\|^2` changes pattern by pattern). The :math:`1/\sqrt{2N}` makes one unit of
  state a relative change :math:`\|\Delta T\|_F/\|T_0\|_F \approx |s|` (rms per element) for small
  s, so scales mean the same as in the additive chart.

**The output** (``target="output"``; the fallback for a system without
``drift_parameters``, e.g. a measured twin or hardware).
A per-channel gain and offset: :math:`y' = (1 + s_g(t))\,y + \sigma_o\,s_o(t)`,
with :math:`\sigma_o` the mean :math:`|y|` of the first measured batch (or
``scales["offset"]``) and gain scale 1 (so ``s_g`` is a relative gain change).
This models an analog readout chain (amplifier gain and offset); it does not keep
the output's physical domain (a count can become negative or fractional), so every
simulator here drifts through its parameters instead.

The drift state s(t), dimensionless (in scales), one value per coordinate
-------------------------------------------------------------------------
* ``mode="ou"`` (stationary; the physical default for long runs): each
  coordinate is an Ornstein-Uhlenbeck process that reverts to the set point
  with correlation time ``tau`` (clock units: queries, or seconds with
  ``clock="wall"``) and stationary standard deviation ``sigma`` (scales).
  Between two batches dt apart it is advanced with the exact discretisation

  .. math:: s_{t+dt} = s_t\,e^{-dt/\tau} + \sigma\sqrt{1 - e^{-2dt/\tau}}\;N(0,1),

  so the result does not depend on how the queries are batched, the variance
  :math:`\sigma^2(1 - e^{-2t/\tau})` never exceeds :math:`\sigma^2`, and
  :math:`\langle s_t s_{t+\Delta}\rangle = \sigma^2 e^{-\Delta/\tau}` once
  stationary. s starts at the set point (0): the device is as calibrated at t = 0.
* ``mode="random_walk"``: :math:`s(t) = \text{rate}\cdot B(t)` with :math:`B`
  a standard Wiener process in clock units; after ``t`` units the rms change is
  ``rate * sqrt(t)`` scales. Unbounded: for short runs and stress tests.
* ``mode="periodic"``: :math:`s(t) = \text{amplitude}\cdot u\,[\sin(2\pi t/T + \varphi) - \sin\varphi]`
  with a seeded direction :math:`u \sim N(0,1)` and phase
  :math:`\varphi \sim U[0, 2\pi)` per element, period ``T = period``; zero at t = 0.

Sudden events (``events``), each permanent from its time on
-----------------------------------------------------------
* a time, or a ``(time, size)`` pair, or ``{"time": t, "size": s}``
  (``kind="jump"``, optionally ``"parameters": [names]``): the set point of
  every (or each named) coordinate jumps by ``size * N(0,1)`` scales; the OU
  drift then wanders around the new set point. On the optical medium this is a
  *bump*: the medium partly re-scrambled (size 1: about as different as a
  fresh medium for small N; always passive).
* ``{"time": t, "kind": "step", "shift": {"temperature": 5.0}}``: a
  deterministic step of named additive parameters, in their own units (a
  *temperature step* of the acoustic cavity: the air conditioning fails).
* ``{"time": t, "kind": "stuck", "channels": [3, 7], "value": 0.0}``: those
  input channels stop following the drive and stay at ``value`` (drive units;
  default the lower drive limit): *a metasurface element stuck* (its PIN diode
  or bias line failed), a dead SLM pixel, a stuck DAC channel.
* ``{"time": t, "kind": "swap", "system": other}``: the system is replaced by
  ``other`` (same spec): *a chip swap*, e.g. a
  :class:`~physnn.simulators.neuromorphic.NeuromorphicChip` with the same
  programmed network (``seed``) and another ``serial`` (another mismatch draw).
  The old system is closed; the drift state carries over to the new one (the
  environment is the same bench). The registry factory builds ``other`` from
  ``"options"`` (merged into ``base_options``), so configs can ask for it.

Clock: ``"queries"`` counts samples measured through the wrapper before the
current batch; ``"wall"`` counts seconds since the wrapper was made
(``time_fn``, default :func:`time.monotonic`, can be replaced for tests). The
state is evaluated once at the start of each batch: a batch is one measurement
sweep, so positives and negatives queried together see the same system. An
event at time ``t_e`` therefore first affects the batch that starts at or after
``t_e``. All random draws come from the wrapper's own generator (``seed``), on
the CPU in float64, so the realisation depends only on the seed and the
sequence of batch sizes (queries clock) and is identical on every device; its
law (not its realisation) is independent of the batch sizes.
Zero drift (rate, amplitude and sigma 0, no events) leaves every output bit
for bit identical to the unwrapped system's.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping

import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem

__all__ = ["Drifting", "drifting", "EVENT_KINDS"]

_MODES = ("random_walk", "periodic", "ou")
_CLOCKS = ("queries", "wall")
_TARGETS = ("auto", "parameters", "output")
_CHARTS = ("additive", "rotation")
EVENT_KINDS = ("jump", "step", "stuck", "swap")


class Drifting(PhysicalSystem):
    """Wrap ``system`` so that it drifts; itself a PhysicalSystem with the same spec.

    Args:
        system: the system to make time-varying.
        mode: ``"ou"`` (mean-reverting; uses ``sigma`` and ``tau``), ``"random_walk"``
            (uses ``rate``) or ``"periodic"`` (uses ``amplitude`` and ``period``).
        rate: random-walk rms change per sqrt(clock unit), in scales.
        amplitude: periodic amplitude (per-element rms), in scales.
        period: periodic period, in clock units.
        sigma: OU stationary standard deviation, in scales.
        tau: OU correlation time, in clock units (queries, or seconds with ``clock="wall"``).
        events: sudden events (see the module docstring): times, ``(time, size)`` pairs or dicts.
        event_size: size (in scales, rms per element) of jumps given without a size.
        clock: ``"queries"`` (samples measured) or ``"wall"`` (seconds).
        target: ``"auto"``, ``"parameters"`` or ``"output"`` (see the module docstring).
        scales: per-parameter scales overriding the defaults (names from
            ``drift_parameters()``, or ``"gain"``/``"offset"`` for the output target).
        bounds: per-parameter ``(low, high)`` validity range (parameter units, None for open),
            overriding ``drift_bounds()``; additive chart only.
        charts: per-parameter ``"additive"`` or ``"rotation"`` overriding the defaults.
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
        sigma: float = 0.0,
        tau: float | None = None,
        events: Any = (),
        event_size: float = 0.1,
        clock: str = "queries",
        target: str = "auto",
        scales: dict[str, float] | None = None,
        bounds: dict[str, Any] | None = None,
        charts: dict[str, str] | None = None,
        seed: int = 0,
        time_fn: Callable[[], float] | None = None,
    ):
        if not isinstance(system, PhysicalSystem):
            raise TypeError(f"system must be a PhysicalSystem, got {type(system).__name__}")
        mode = checks.choice("mode", mode, _MODES)
        clock = checks.choice("clock", clock, _CLOCKS)
        target = checks.choice("target", target, _TARGETS)
        rate = checks.nonnegative("rate", rate)
        amplitude = checks.nonnegative("amplitude", amplitude)
        sigma = checks.nonnegative("sigma", sigma)
        event_size = checks.nonnegative("event_size", event_size)
        if mode != "periodic" and (amplitude != 0 or period is not None):
            raise checks.ParameterError(
                f"amplitude={amplitude:g} and period={period!r} apply to mode='periodic'; "
                f"mode={mode!r} uses {'rate' if mode == 'random_walk' else 'sigma and tau'}"
            )
        if mode != "random_walk" and rate != 0:
            raise checks.ParameterError(
                f"rate={rate:g} applies to mode='random_walk'; mode={mode!r} uses "
                f"{'amplitude and period' if mode == 'periodic' else 'sigma and tau'}"
            )
        if mode != "ou" and (sigma != 0 or tau is not None):
            raise checks.ParameterError(f"sigma={sigma:g} and tau={tau!r} apply to mode='ou'; mode={mode!r}")
        if mode == "periodic" and not (_is_number(period) and 0 < period < math.inf):
            raise checks.ParameterError(
                f"period must be a positive finite number (clock units) with mode='periodic', got {period!r}"
            )
        if mode == "ou":
            if tau is None:
                raise checks.ParameterError(
                    "mode='ou' needs tau, the correlation time in clock units (queries or seconds), got None"
                )
            tau = checks.positive("tau", tau)
        has_params = callable(getattr(system, "drift_parameters", None))
        if target == "parameters" and not has_params:
            raise checks.ParameterError(
                f"{type(system).__name__} has no drift_parameters() method; use target='output' "
                f"(gain/offset drift) or implement drift_parameters() -> dict[str, torch.Tensor]"
            )
        self.system = system
        self.target = ("parameters" if has_params else "output") if target == "auto" else target
        super().__init__(system.spec, device=system.device, level_tolerance=system.level_tolerance)
        self.mode = mode
        self.rate = rate
        self.amplitude = amplitude
        self.period = None if period is None else float(period)
        self.sigma = sigma
        self.tau = None if tau is None else float(tau)
        self.clock = clock
        self.seed = checks.integer("seed", seed)
        self._time_fn = time_fn or time.monotonic
        self._t0 = self._time_fn() if clock == "wall" else 0.0
        self._fired: list[dict[str, Any]] = []
        for what, table in (("scales", scales), ("bounds", bounds), ("charts", charts)):
            if table is not None and not isinstance(table, Mapping):
                raise checks.ParameterError(f"{what} must be a table of parameter name = value, got {table!r:.80}")
        self._user_scales = dict(scales or {})
        self._gen = torch.Generator().manual_seed(self.seed)
        self._t_last = 0.0
        self._stuck: dict[int, float] = {}

        if self.target == "parameters":
            self._params = self._read_parameters(system)
            suggested = system.drift_scales() if callable(getattr(system, "drift_scales", None)) else {}
            self._scales = {n: self._scale(n, p, suggested) for n, p in self._params.items()}
        else:
            n_out = system.spec.n_outputs
            self._params = {
                "gain": torch.zeros(n_out, dtype=torch.float64),
                "offset": torch.zeros(n_out, dtype=torch.float64),
            }
            self._scales = {"gain": float(self._user_scales.get("gain", 1.0))}
            if "offset" in self._user_scales:
                self._scales["offset"] = checks.positive("scales['offset']", self._user_scales["offset"])
        names = sorted(self._params)
        for what, table in (("scales", self._user_scales), ("bounds", bounds or {}), ("charts", charts or {})):
            unknown = sorted(set(table) - set(names))
            if unknown:
                raise checks.ParameterError(f"{what} has unknown name(s) {unknown}; drifting parameters are {names}")
        self._charts = self._resolve_charts(dict(charts or {}))
        self._bounds = self._resolve_bounds(dict(bounds or {}))
        self._initial = {n: _real(p).detach().to(torch.float64).cpu().clone() for n, p in self._params.items()}
        shapes = {n: self._state_shape(n) for n in self._params}
        self._walk = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
        self._jump = {n: torch.zeros(s, dtype=torch.float64) for n, s in shapes.items()}
        self._shift = {n: torch.zeros(self._initial[n].shape, dtype=torch.float64) for n in self._params}
        self._direction = {n: torch.randn(s, generator=self._gen, dtype=torch.float64) for n, s in shapes.items()}
        self._phase = {
            n: 2 * math.pi * torch.rand(s, generator=self._gen, dtype=torch.float64) for n, s in shapes.items()
        }
        self._events = self._parse_events(events, event_size)

    # ------------------------------------------------------------------ set-up helpers
    @staticmethod
    def _read_parameters(system: PhysicalSystem) -> dict[str, torch.Tensor]:
        params = system.drift_parameters()  # type: ignore[attr-defined]
        if not isinstance(params, dict) or not params:
            raise TypeError(f"{type(system).__name__}.drift_parameters() must return a non-empty dict of tensors")
        out = {}
        for name in sorted(params):
            p = params[name]
            if not isinstance(p, torch.Tensor) or not (p.is_floating_point() or p.is_complex()):
                raise TypeError(f"drift parameter {name!r} must be a float or complex tensor, got {p!r:.60}")
            out[name] = p
        return out

    def _resolve_charts(self, given: dict[str, str]) -> dict[str, str]:
        charts = {}
        for name, p in self._params.items():
            default = (
                "rotation"
                if (self.target == "parameters" and name == "transmission_matrix" and p.is_complex() and p.dim() == 2)
                else "additive"
            )
            chart = checks.choice(f"charts[{name!r}]", given.get(name, default), _CHARTS)
            if chart == "rotation" and not (self.target == "parameters" and p.is_complex() and p.dim() == 2):
                raise checks.ParameterError(
                    f"charts[{name!r}] = 'rotation' needs a complex 2-D parameter (a transmission "
                    f"matrix), got {'a complex' if p.is_complex() else 'a real'} {p.dim()}-D tensor"
                )
            charts[name] = chart
        return charts

    def _resolve_bounds(self, given: dict[str, Any]) -> dict[str, tuple[float | None, float | None]]:
        declared = {}
        if self.target == "parameters":
            fn = getattr(self.system, "drift_bounds", None)
            declared = dict(fn()) if callable(fn) else {}
        out: dict[str, tuple[float | None, float | None]] = {}
        for name in self._params:
            b = given.get(name, declared.get(name))
            if b is None:
                continue
            if self._charts[name] != "additive":
                raise checks.ParameterError(
                    f"bounds[{name!r}] apply to the additive chart only (its chart is {self._charts[name]!r})"
                )
            if not isinstance(b, (tuple, list)) or len(b) != 2:
                raise checks.ParameterError(f"bounds[{name!r}] must be a (low, high) pair (None for open), got {b!r}")
            low = None if b[0] is None else checks.real(f"bounds[{name!r}] low", b[0])
            high = None if b[1] is None else checks.real(f"bounds[{name!r}] high", b[1])
            if low is not None and high is not None and not low < high:
                raise checks.ParameterError(f"bounds[{name!r}] must have low < high, got {tuple(b)!r}")
            v = _real(self._params[name]).detach().to(torch.float64)
            if (low is not None and bool((v < low).any())) or (high is not None and bool((v > high).any())):
                raise checks.ParameterError(f"bounds[{name!r}] = {tuple(b)!r} exclude the parameter's initial values")
            out[name] = (low, high)
        return out

    def _state_shape(self, name: str) -> tuple[int, ...]:
        if self._charts[name] == "rotation":
            n_out, n_in = self._params[name].shape
            return (n_out * n_out + n_in * n_in, 2)  # the real view of the generator states A and C, flattened
        return tuple(self._initial[name].shape)

    def _parse_events(self, events: Any, default_size: float) -> list[dict[str, Any]]:
        """Every event checked now, before the first query: a bad one is a one-line error naming what is allowed."""
        if not isinstance(events, (list, tuple)):
            raise checks.ParameterError(
                f"events must be a list of events (times, [time, size] pairs or tables with a time), got {events!r:.80}"
            )
        return sorted((self._parse_event(i, item, default_size) for i, item in enumerate(events)), key=_time_of)

    def _parse_event(self, i: int, item: Any, default_size: float) -> dict[str, Any]:
        key = f"events[{i}]"
        if isinstance(item, Mapping):
            ev = dict(item)
            kind = checks.choice(f"{key} kind", ev.pop("kind", "jump"), EVENT_KINDS)
        elif isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise checks.ParameterError(
                    f"{key} must be a time, a [time, size] pair or a table with a time, got {item!r:.80}"
                )
            ev, kind = {"time": item[0], "size": item[1]}, "jump"
        else:
            ev, kind = {"time": item}, "jump"
        if "time" not in ev:
            raise checks.ParameterError(f"{key} needs a time (clock units, >= 0), got {item!r:.80}")
        out: dict[str, Any] = {"time": checks.nonnegative(f"{key} time", ev.pop("time")), "kind": kind}
        names = sorted(self._params)
        if kind == "jump":
            out["size"] = checks.nonnegative(f"{key} size", ev.pop("size", default_size))
            chosen = ev.pop("parameters", None)
            if chosen is not None:
                if not isinstance(chosen, (list, tuple)) or not chosen:
                    raise checks.ParameterError(
                        f"{key} parameters must be a non-empty list of names from {names}, got {chosen!r:.80}"
                    )
                out["parameters"] = [checks.choice(f"{key} parameter", n, names) for n in chosen]
        elif kind == "step":
            shift = ev.pop("shift", None)
            if not isinstance(shift, Mapping) or not shift:
                raise checks.ParameterError(
                    f"{key} (a 'step') needs shift = {{parameter = change}} with a parameter from {names}, "
                    f"got {shift!r:.80}"
                )
            for n, v in shift.items():
                checks.choice(f"{key} shift parameter", n, names)
                if self._charts[n] != "additive":
                    raise checks.ParameterError(
                        f"{key} shift[{n!r}]: a 'step' shifts additive parameters only; {n!r} drifts by {self._charts[n]}"
                    )
                checks.real(f"{key} shift[{n!r}]", v)
            out["shift"] = {n: float(v) for n, v in shift.items()}
        elif kind == "stuck":
            n_in = self.spec.n_inputs
            channels = ev.pop("channels", None)
            if not isinstance(channels, (list, tuple)) or not channels:
                raise checks.ParameterError(
                    f"{key} channels must be a non-empty list in 0..{n_in - 1}, got {channels!r:.80}"
                )
            out["channels"] = checks.int_sequence(f"{key} channels", channels, low=0)
            if max(out["channels"]) >= n_in:
                raise checks.ParameterError(
                    f"{key} channels must be a non-empty list in 0..{n_in - 1}, got {out['channels']!r:.80}"
                )
            value = checks.real(f"{key} value", ev.pop("value", self.spec.low), low=self.spec.low, high=self.spec.high)
            self.system.validate_input(torch.full((1, n_in), value))  # on a level, within the drive limits
            out["value"] = value
        else:  # swap
            other = ev.pop("system", None)
            if not isinstance(other, PhysicalSystem):
                raise checks.ParameterError(
                    f"{key} (a 'swap') needs options = {{...}} for the replacement (or system = a PhysicalSystem), "
                    f"got {other!r:.80}"
                )
            if other.spec != self.spec:
                raise checks.ParameterError(
                    f"{key}: the swapped-in system must have the same spec: {other.spec} != {self.spec}"
                )
            if self.target == "parameters":
                got = self._read_parameters(other)
                shapes = {n: tuple(p.shape) for n, p in self._params.items()}
                if {n: tuple(p.shape) for n, p in got.items()} != shapes:
                    raise checks.ParameterError(
                        f"{key}: the swapped-in system must have the same drift parameters (names and shapes)"
                    )
            out["system"] = other
        if ev:
            allowed = {"jump": "time, size, parameters", "step": "time, shift", "stuck": "time, channels, value"}
            raise checks.ParameterError(
                f"{key} (a {kind!r}) has unknown key(s) {sorted(ev)}; allowed: kind, "
                f"{allowed.get(kind, 'time, options')}"
            )
        return out

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
        if not (_is_number(value) and math.isfinite(value) and value > 0):
            raise checks.ParameterError(f"scales[{name!r}] must be a positive finite number, got {value!r}")
        return float(value)

    # ------------------------------------------------------------------ clock and state
    @property
    def time(self) -> float:
        """The clock now: samples measured so far, or seconds since the wrapper was made."""
        if self.clock == "queries":
            return float(self.stats.samples)
        return float(self._time_fn() - self._t0)

    def _state(self, name: str, t: float) -> torch.Tensor:
        if self.mode == "ou":
            return self._walk[name] + self._jump[name]
        s = self.rate * self._walk[name] + self._jump[name]
        if self.mode == "periodic" and self.amplitude > 0:
            phi = self._phase[name]
            wave = torch.sin(2 * math.pi * t / self.period + phi) - torch.sin(phi)
            s = s + self.amplitude * self._direction[name] * wave
        return s

    def _noise(self, shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=self._gen, dtype=torch.float64)

    def _advance(self) -> None:
        """Move the drift to the clock time now, fire due events and write the parameters."""
        t = self.time
        if t < self._t_last:
            raise ValueError(f"drift clock went backwards: t={t} < last t={self._t_last}")
        dt = t - self._t_last
        # rewrite the parameters only when something moved: a static device (an event at t = 0 and no drift,
        # as a perturbed device) must not pay e.g. a 1024x1024 matrix exponential on every query
        changed = not getattr(self, "_written_once", False)
        if dt > 0 and self.mode == "random_walk" and self.rate > 0:
            changed = True
            for w in self._walk.values():
                w += math.sqrt(dt) * self._noise(w.shape)
        elif dt > 0 and self.mode == "ou" and self.sigma > 0:
            changed = True
            assert self.tau is not None
            a = math.exp(-dt / self.tau)
            b = self.sigma * math.sqrt(-math.expm1(-2 * dt / self.tau))  # exact, also for dt << tau
            for w in self._walk.values():
                w.mul_(a).add_(b * self._noise(w.shape))
        elif dt > 0 and self.mode not in ("random_walk", "ou"):
            changed = True  # periodic (and any time-dependent mode) moves with the clock itself
        while self._events and self._events[0]["time"] <= t:
            changed = True
            self._fire(self._events.pop(0), t)
        self._t_last = t
        if self.target == "parameters" and changed:
            for name, p in self._params.items():
                self._write(name, p, t)
            self._written_once = True

    def _fire(self, ev: dict[str, Any], t: float) -> None:
        kind = ev["kind"]
        record: dict[str, Any] = {"time": ev["time"], "kind": kind}
        if kind == "jump":
            for name in ev.get("parameters", sorted(self._jump)):
                self._jump[name] += ev["size"] * self._noise(self._jump[name].shape)
            record["size"] = ev["size"]
            if "parameters" in ev:
                record["parameters"] = list(ev["parameters"])
        elif kind == "step":
            for name, v in ev["shift"].items():
                self._shift[name] += v
            record["shift"] = dict(ev["shift"])
        elif kind == "stuck":
            for c in ev["channels"]:
                self._stuck[c] = ev["value"]
            record.update(channels=list(ev["channels"]), value=ev["value"])
        else:
            self._swap(ev["system"])
            record["system"] = repr(ev["system"])
        record["applied_at"] = t
        self._fired.append(record)
        fields = {k: v for k, v in record.items() if k != "kind"}
        self.report_event("drift_event", event=kind, **fields, clock=self.clock)

    def _swap(self, other: PhysicalSystem) -> None:
        old = self.system
        hook = self.event_hook
        self.__dict__["system"] = other
        if hook is not None:
            other.event_hook = hook
        if self.target == "parameters":
            self._params = self._read_parameters(other)
            self._initial = {n: _real(p).detach().to(torch.float64).cpu().clone() for n, p in self._params.items()}
        old.close()

    def _write(self, name: str, p: torch.Tensor, t: float) -> None:
        s = self._state(name, t)
        with torch.no_grad():
            if self._charts[name] == "rotation":
                n_out, n_in = p.shape
                a = torch.complex(s[..., 0], s[..., 1])
                rot_out = _unitary(a[: n_out * n_out].reshape(n_out, n_out))
                rot_in = _unitary(a[n_out * n_out :].reshape(n_in, n_in))
                value = rot_out @ torch.view_as_complex(self._initial[name].contiguous()) @ rot_in
                p.copy_(value.to(device=p.device, dtype=p.dtype))
                return
            value = self._initial[name] + self._shift[name] + self._scales[name] * s
            if name in self._bounds:
                low, high = self._bounds[name]
                clipped = value.clamp(min=low, max=high)
                if not torch.equal(clipped, value):
                    self.stats.count("drift_clipped")
                value = clipped
            _real(p).copy_(value.to(device=p.device))

    # ------------------------------------------------------------------ query
    def _apply_stuck(self, x: torch.Tensor) -> torch.Tensor:
        if not self._stuck:
            return x
        x = x.clone()
        for c, v in self._stuck.items():
            x[:, c] = v
        return x

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        self._advance()
        y = self.system(self._apply_stuck(x))
        return self._output_drift(y) if self.target == "output" else y

    def _output_drift(self, y: torch.Tensor, *, measured: bool = True) -> torch.Tensor:
        t = self._t_last
        state = self._state("offset", t)
        if "offset" not in self._scales:
            if not measured:  # a model's output does not set the scale; nothing has drifted yet (checked)
                return (1 + self._scales["gain"] * self._state("gain", t).to(y)) * y
            level = float(y.abs().mean())
            self._scales["offset"] = level if level > 0 else 1.0
        gain = self._scales["gain"] * self._state("gain", t)
        offset = self._scales["offset"] * state
        return (1 + gain.to(y)) * y + offset.to(y)

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped system's differentiable model at the current drift state (no clock advance)."""
        fn = getattr(self.system, "differentiable", None)
        if not callable(fn):
            raise AttributeError(f"{type(self.system).__name__} has no differentiable(x) mode")
        if self._stuck:
            keep = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
            fixed = torch.zeros_like(keep)
            for c, v in self._stuck.items():
                keep[c], fixed[c] = 0.0, v
            x = x * keep + fixed  # stuck channels carry no gradient
        y = fn(x)
        if self.target == "output":
            if "offset" not in self._scales and bool(self._state("offset", self._t_last).any()):
                raise RuntimeError(
                    "the output drift scale is set by the first measured batch; query the system once first"
                )
            return self._output_drift(y, measured=False)
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
            for ev in self._events:  # spare parts never swapped in
                if ev["kind"] == "swap":
                    ev["system"].close()

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
                "chart": self._charts[name],
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
                "sigma": self.sigma,
                "tau": self.tau,
                "clock": self.clock,
                "target": self.target,
                "seed": self.seed,
                "time": self._t_last,
                "bounds": {n: list(b) for n, b in self._bounds.items()},
                "stuck_channels": {str(c): v for c, v in sorted(self._stuck.items())},
                "pending_events": [_event_json(e) for e in self._events],
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

    Config example (an OU drift of one scale rms with a correlation time of
    20 000 queries, and the air conditioning failing after 50 000 queries)::

        system = "drifting"
        [system_options]
        base = "acoustics"
        mode = "ou"
        sigma = 1.0
        tau = 20000
        events = [{ time = 50000, kind = "step", shift = { temperature = 5.0 } }]

    A ``swap`` event gives ``options`` instead of a system: the replacement is
    built as ``base`` with ``base_options`` updated by them (e.g.
    ``{ time = 1e5, kind = "swap", options = { serial = "chip-7" } }``).
    The base system gets ``seed``; the drift realisation gets ``seed + 1``.
    """
    from physnn.core.registry import build_system

    if base == "drifting":
        raise ValueError("base must be a physical system, not 'drifting' itself")
    drift = checks.check_options(Drifting, drift, "system 'drifting'", reserved=("system", "seed", "time_fn"))
    if base_options is not None and not isinstance(base_options, Mapping):
        raise checks.ParameterError(
            f"base_options must be a table of the base system's options, got {base_options!r:.80}"
        )
    events_given = drift.pop("events", ())
    if not isinstance(events_given, (list, tuple)):
        raise checks.ParameterError(
            f"events must be a list of events (times, [time, size] pairs or tables with a time), got {events_given!r:.80}"
        )
    for i, ev in enumerate(events_given):
        if isinstance(ev, Mapping) and ev.get("kind") == "swap" and not isinstance(ev.get("options", {}), Mapping):
            raise checks.ParameterError(
                f"events[{i}] options must be a table of the base system's options, got {ev['options']!r:.80}"
            )
    inner = build_system(base, n_inputs=n_inputs, seed=seed, device=device, **(base_options or {}))
    events = []
    built: list[PhysicalSystem] = [inner]
    try:
        for ev in events_given:
            if isinstance(ev, Mapping) and ev.get("kind") == "swap" and "options" in ev:
                ev = dict(ev)
                options = {**(base_options or {}), **ev.pop("options")}
                ev["system"] = build_system(base, n_inputs=n_inputs, seed=seed, device=device, **options)
                built.append(ev["system"])
            events.append(ev)
        return Drifting(inner, seed=seed + 1, events=events, **drift)
    except Exception:
        for s in built:
            s.close()
        raise


def _unitary(a: torch.Tensor) -> torch.Tensor:
    """exp(iH) with H = (A + A^H) / (2 sqrt(2 n)): one unit of state is an rms relative change of ~1/sqrt(2) per side."""
    n = a.shape[0]
    return torch.linalg.matrix_exp(1j * (a + a.conj().T) / (2 * math.sqrt(2 * n)))


def _time_of(ev: dict[str, Any]) -> float:
    return ev["time"]


def _event_json(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: (repr(v) if isinstance(v, PhysicalSystem) else v) for k, v in ev.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _real(p: torch.Tensor) -> torch.Tensor:
    """A real view of a tensor (real and imaginary parts as a trailing axis for complex ones)."""
    return torch.view_as_real(p) if p.is_complex() else p
