r"""A spiking neuromorphic chip (Xylo-like) queried as a black box.

What is simulated
-----------------
Each sample ``x`` (``n_inputs`` drive values, limits 0..1, dimensionless) is
turned into input events over ``steps`` = T discrete time steps (one step is
one chip clock tick; time is counted in steps, not seconds) and fed to a fixed
random network of leaky integrate-and-fire (LIF) neurons::

    input events --W_in--> hidden LIF population (recurrent, W_rec) --W_out--> output LIF neurons

The output is, per output neuron, the spike count over the T steps
(``readout="counts"``), the count divided by T (``"rates"``, spikes per step)
or the final membrane potential in units of the threshold (``"membrane"``).
The weights are drawn once from ``seed`` (the "programmed" network,
``W ~ N(0, gain^2 / fan_in)``, no self-connections in ``W_rec``) and never
change: the trainer only queries the chip. With ``balanced=True`` (default)
each row of ``W_in`` and ``W_out`` has its mean subtracted, so every neuron
receives as much inhibition as excitation from a uniform input. Why: inputs and
spike counts are non-negative, so with unbalanced rows a neuron's mean drive
is ``w . E[x]``, larger than its fluctuations, and it sits far above threshold
(a linear unit) or far below it (silent); balanced, its operating point sits
at the threshold and the spike nonlinearity is used. Measured with
``physnn characterize --system neuromorphic`` (74 inputs, seed 0, digits
drives, dash_mem 3): nonlinear fraction at random drives 0.20 -> 0.54, at the
encoder's digit drives 0.19 -> 0.25, effective rank 11 -> 22; with the default
dash_mem 2, 0.28 / 0.30 / 0.34 at the digit drives for seeds 0 / 1 / 2
(``balanced=False, dash_mem=3`` gives the earlier chip).

Input encodings (``encoding=``), e[t, j] = events on input channel j at step t
------------------------------------------------------------------------------
* ``"current"``: a constant input every step, e[t, j] = x_j. In the hardware
  mode a channel carries at most ``input_events`` events per step, so
  e[t, j] = round(x_j * input_events) and W_in is scaled by 1/input_events
  (the same nominal current, quantised to ``input_events`` + 1 levels).
* ``"rate"``: Bernoulli spikes, e[t, j] ~ Bernoulli(x_j) i.i.d. over t from
  the chip's seeded encoding stream: the mean rate is x_j spikes per step.
* ``"latency"``: one spike at step round((1 - x_j) (T - 1)) if x_j > 0, none
  if x_j = 0: larger inputs fire earlier.
* ``"delta"``: a send-on-delta modulator watching the input ramp linearly
  from 0 (before step 0) to x_j (at step T - 1): r[t] = x_j (t + 1) / T, and
  one event whenever r has risen by ``delta_threshold`` since the last event,
  e[t, j] = floor(r[t] / delta) - floor(r[t-1] / delta). The total count is
  floor(x_j / delta) (a deterministic count code spread over the window).

Float mode (``mode="float"``): the ideal model
-----------------------------------------------
No quantisation, mismatch or noise; threshold 1 (membrane in threshold units).
Exactly snnTorch's ``Leaky`` (``dash_syn=0``) or ``Synaptic`` (``dash_syn>0``)
with ``reset_mechanism="subtract"`` and its default ``reset_delay=True``::

    I[t]   = W_in e[t] + W_rec s[t-1]                (hidden; output: W_out s_hid[t])
    i[t]   = alpha i[t-1] + I[t]                     (only if dash_syn > 0, else i[t] = I[t])
    v[t]   = beta v[t-1] + i[t] - theta s[t-1]
    s[t]   = 1 if v[t] - theta > 0 else 0            (strictly above threshold)

with v[-1] = i[-1] = s[-1] = 0, beta = 1 - 2**-dash_mem, alpha = 1 - 2**-dash_syn,
theta = 1. Note the reset: the threshold of a spike emitted at step t is
subtracted at step t+1, *after* the decay (it is not multiplied by beta), and
one step emits at most one spike. ``v`` is the membrane at the spike check.

Hardware mode (``mode="hardware"``, default): Xylo-like integer datapath
--------------------------------------------------------------------------
All state is integer (units: LSB); the nominal threshold is ``threshold`` LSB
and the float weights map to it (1 threshold unit = ``threshold`` LSB).

* Weights: signed 8 bit, ``W_q = clip(round(W theta_LSB / 2**s), -128, 127)``
  with one left bit shift ``s`` per matrix (``W_in``, ``W_rec``, ``W_out``),
  the smallest ``s >= 0`` that fits the largest weight in 8 bits. A synaptic
  input is ``(W_q e) << s``.
* Bit-shift decays with arithmetic (floor) shifts, as a two's-complement
  datapath does: ``v <- v - (v >> dash_mem)`` and ``i <- i - (i >> dash_syn)``.
  Positive values below 2**dash stop decaying (a dead band of a few LSB);
  negative values decay to 0.
* Saturating int16 state: every write of ``i`` and ``v`` is clipped to
  [-32768, 32767]. Sums are formed in a wide register first.
* Order within a step: ``i = sat(decay(i) + (W_in e[t] << s_in) + (W_rec n[t-1] << s_rec))``;
  ``v = sat(decay(v) + i + noise)``; ``n = min(floor(v / theta), max_spikes)``
  spikes if ``v >= theta`` (several per step); ``v = v - n theta`` at once
  (subtractive reset in the same step, unlike the float mode). Output neurons
  follow with ``W_out n_hid[t]`` in the same step. With ``dash_syn = 0`` there
  is no synaptic register: the synaptic input goes straight into ``v``.
* Refractory period (``refractory`` steps, default 0): after a spike the
  neuron's membrane is held (inputs and noise discarded) and it cannot fire.

Frozen per-chip mismatch (hardware mode; drawn from the chip ``serial`` string)
-------------------------------------------------------------------------------
Relative Gaussian spread ``mismatch`` (default 0.1 = 10 %):

* thresholds: ``theta_i = clip(round(theta (1 + m N)), 1, 32767)``;
* decays: a per-neuron leak gain ``g = round(256 (1 + m N))`` so the decay is
  ``v - ((v g) >> (dash + 8))`` (``g = 256`` is exactly ``v - (v >> dash)``);
  ``g`` is clipped so the leak never exceeds the whole value;
* weights: the realised efficacy ``clip(round(W_q (1 + m N)), -128, 127)``.

The same serial always gives the same chip; another serial gives another chip
programmed with the same network (``seed``).

Drift (``drift_parameters``; what :mod:`physnn.simulators.drift` moves)
------------------------------------------------------------------------
The programmed weights are digital and do not drift; the neurons' analog biases do
(temperature, supply). Two dimensionless per-neuron factors, hidden neurons first
then output neurons, 1 = as built:

* ``threshold``: the threshold relative to this chip's (mismatched) one; hardware
  ``theta_i = clip(round(theta_i^0 f_i), 1, 32767)`` LSB, float mode ``theta_i = f_i``;
* ``leak``: the membrane leak relative to this chip's; hardware
  ``g_i = clip(round(g_i^0 f_i), 0, g_max)``, float mode ``beta_i = 1 - 2**-dash_mem f_i``.

They act inside the datapath, before the spike check, so a drifted chip still
counts whole, non-negative spikes (the outputs stay in the readout's domain), and
``drift_bounds()`` keeps them where the datapath is valid (threshold 0.25..4,
leak 0..2: a leak above 2 would overshoot zero). All factors 1 reproduce the
undrifted chip bit for bit. :meth:`NeuromorphicChip.differentiable` stays the
nominal network: a digital model does not know the drift.

Noise (hardware mode; seeded from ``seed``)
-------------------------------------------
Each step adds ``round(noise * theta * N(0, 1))`` LSB to every membrane
(``noise`` is the per-step standard deviation in threshold units, default 0.02).
Rate encoding draws from its own seeded stream, so switching the membrane
noise off does not change the input spikes.

Exactness: the integer arithmetic runs on integer-valued float tensors (fast
BLAS matmuls). The constructor checks that every matmul partial sum stays
below 2**24 (exact in float32) and otherwise computes in float64; leak
products ``v g`` stay below 2**24 too. Any larger sum after the left shifts
lies far outside int16 and is only ever saturated, which correctly rounded
float addition preserves. The result therefore equals an integer
implementation bit for bit (the tests compare with an int64 reference).
Speed: one Python loop over T, everything else batched (a few thousand
samples/s on one CPU core at the default size; see the project notes).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec

__all__ = ["NeuromorphicChip", "SpikeTrace", "INT16_MIN", "INT16_MAX"]

INT16_MIN = -32768
INT16_MAX = 32767
_ENCODINGS = ("current", "rate", "latency", "delta")
_READOUTS = ("counts", "rates", "membrane")
_MODES = ("hardware", "float")
#: Unit of a query's output for each readout.
_OUTPUT_UNITS = {"counts": "spikes", "rates": "spikes per step", "membrane": "threshold units"}
_GAIN_BITS = 8  # fixed-point bits of the per-neuron leak gain (mismatch of the decays)
# Default input gain per encoding, so that a typical digit-like input (a third of
# the channels on) drives the hidden population to a moderate firing rate.
_DEFAULT_INPUT_GAIN = {"current": 1.0, "rate": 1.0, "latency": 8.0, "delta": 2.0}


@dataclass
class SpikeTrace:
    """Everything that happened inside the chip during one query (``trace()``).

    Time is the first axis: ``[T, B, neurons]``. Hardware-mode values are in
    LSB (integer-valued); float-mode values in threshold units.

    Attributes:
        inputs: input events e[t] fed to the chip.
        spikes_hidden, spikes_out: spikes per step (counts per step in hardware mode).
        v_hidden, v_out: membrane at the spike check (after integration, noise
            and saturation, before this step's reset in hardware mode).
        i_hidden, i_out: synaptic registers (None when ``dash_syn == 0``).
        unsaturated: for each state register, the (min, max) of the values
            computed before saturation; equal to the stored range when nothing
            saturated. Empty in float mode.
        output: the readout returned by a query.
    """

    inputs: torch.Tensor
    spikes_hidden: torch.Tensor
    spikes_out: torch.Tensor
    v_hidden: torch.Tensor
    v_out: torch.Tensor
    i_hidden: torch.Tensor | None
    i_out: torch.Tensor | None
    output: torch.Tensor
    unsaturated: dict[str, tuple[float, float]] = field(default_factory=dict)


class NeuromorphicChip(PhysicalSystem):
    """Inputs -> spike encoding -> fixed random LIF network -> output spike counts.

    Args:
        n_inputs: input channels (default 64).
        n_outputs: output LIF neurons read out (default 32).
        n_hidden: recurrent hidden LIF neurons (default 128).
        steps: time steps T per query (default 32).
        mode: ``"hardware"`` (integer, mismatch, noise) or ``"float"`` (ideal LIF).
        encoding: ``"current"``, ``"rate"``, ``"latency"`` or ``"delta"``.
        readout: ``"counts"``, ``"rates"`` or ``"membrane"``.
        input_levels: if set, inputs must sit on this many equally spaced
            levels in 0..1 (a DAC with that many codes); None for continuous.
        input_events: hardware current encoding: events per step at x = 1.
        delta_threshold: delta encoding step (in input units).
        dash_mem: membrane decay shift, beta = 1 - 2**-dash_mem (default 2: 0.75, a membrane time
            constant of about 3.5 steps; 3 (0.875) was the default before: a slower leak integrates
            more steps, averaging the thresholding out -- nonlinear fraction at the digit drives 0.25
            with 3, 0.28 with 2; MF-FF digits 0.950 -> 0.962, 2 seeds).
        dash_syn: synaptic decay shift, alpha = 1 - 2**-dash_syn; 0 = no
            synaptic register (the input current goes straight to the membrane).
        threshold: hardware threshold in LSB (default 1024, so an int16
            membrane holds up to 31 thresholds).
        max_spikes: hardware cap on spikes per neuron per step (1..31).
        refractory: hardware refractory period in steps (0 = none).
        input_gain, recurrent_gain, output_gain: weight scales (std * sqrt(fan_in));
            ``input_gain=None`` picks a default for the encoding.
        balanced: subtract each row's mean from ``W_in`` and ``W_out`` (balanced
            excitation and inhibition; see the module docstring). Default True.
        mismatch: relative spread of the frozen per-chip mismatch (hardware).
        noise: per-step membrane noise std in threshold units (hardware).
        serial: the chip's serial string; seeds the mismatch.
        seed: seeds the programmed weights and the noise/encoding streams.
        device: where the simulation runs.
        dtype: float mode only: float32 (default) or float64 (reference runs).
    """

    def __init__(
        self,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        *,
        n_hidden: int = 128,
        steps: int = 32,
        mode: str = "hardware",
        encoding: str = "current",
        readout: str = "counts",
        input_levels: int | None = None,
        input_events: int = 15,
        delta_threshold: float = 1.0 / 16.0,
        dash_mem: int = 2,
        dash_syn: int = 0,
        threshold: int = 1024,
        max_spikes: int = 31,
        refractory: int = 0,
        input_gain: float | None = None,
        recurrent_gain: float = 0.5,
        output_gain: float = 3.0,
        balanced: bool = True,
        mismatch: float = 0.1,
        noise: float = 0.02,
        serial: str = "chip-0",
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        n_in = 64 if n_inputs is None else checks.integer("n_inputs", n_inputs, low=1, high=65536)
        n_out = 32 if n_outputs is None else checks.integer("n_outputs", n_outputs, low=1, high=65536)
        checks.choice("mode", mode, _MODES)
        checks.choice("encoding", encoding, _ENCODINGS)
        checks.choice("readout", readout, _READOUTS)
        self._set_network_options(
            n_hidden, steps, input_gain, recurrent_gain, output_gain, dash_mem, dash_syn, encoding
        )
        self.balanced = checks.boolean("balanced", balanced)
        self._set_hardware_options(input_events, delta_threshold, threshold, max_spikes, refractory, mismatch, noise)
        checks.string("serial", serial, empty=False)
        if dtype not in (torch.float32, torch.float64):
            raise checks.ParameterError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if input_levels is not None:
            input_levels = checks.integer("input_levels", input_levels, low=2, high=1 << 24)
        spec = SystemSpec(
            n_in,
            n_out,
            0.0,
            1.0,
            input_levels,
            name="neuromorphic",
            units="normalised",
            output_units=_OUTPUT_UNITS[readout],
        )
        super().__init__(spec, device=device)
        self.mode = mode
        self.encoding = encoding
        self.readout = readout
        self.serial = serial
        self.seed = checks.integer("seed", seed, low=0)
        self.dtype = dtype
        self.beta = 1.0 - 2.0**-self.dash_mem
        self.alpha = 1.0 - 2.0**-self.dash_syn  # 0 when dash_syn == 0: no synaptic register

        self._build_network()
        if mode == "hardware":
            self._build_hardware()
        # the analog biases a drift wrapper moves in place (float64, CPU; read at every query)
        n_neurons = self.n_hidden + n_out
        self._drift = {
            "threshold": torch.ones(n_neurons, dtype=torch.float64),
            "leak": torch.ones(n_neurons, dtype=torch.float64),
        }
        # independent streams, so that e.g. turning the noise off leaves the rate code unchanged;
        # differentiable() has its own, so the baseline never shifts the chip's queries
        self._noise_gen = torch.Generator(device=self.device).manual_seed(_stream_seed(self.seed, "noise"))
        self._enc_gen = torch.Generator(device=self.device).manual_seed(_stream_seed(self.seed, "encoding"))
        self._diff_gen = torch.Generator(device=self.device).manual_seed(_stream_seed(self.seed, "surrogate"))

    # ------------------------------------------------------------- building
    def _set_network_options(
        self,
        n_hidden: Any,
        steps: Any,
        input_gain: Any,
        recurrent_gain: Any,
        output_gain: Any,
        dash_mem: Any,
        dash_syn: Any,
        encoding: str,
    ) -> None:
        """The programmed network's size, time window, weight scales and decays (checked)."""
        self.n_hidden = checks.integer("n_hidden", n_hidden, low=1, high=65536)
        self.steps = checks.integer("steps", steps, low=1, high=100000)
        gain = _DEFAULT_INPUT_GAIN[encoding] if input_gain is None else input_gain
        self.input_gain = checks.real("input_gain", gain, low=0.0, high=1e6)
        self.recurrent_gain = checks.real("recurrent_gain", recurrent_gain, low=0.0, high=1e6)
        self.output_gain = checks.real("output_gain", output_gain, low=0.0, high=1e6)
        self.dash_mem = checks.integer("dash_mem", dash_mem, low=0, high=15)
        self.dash_syn = checks.integer("dash_syn", dash_syn, low=0, high=15)

    def _set_hardware_options(
        self,
        input_events: Any,
        delta_threshold: Any,
        threshold: Any,
        max_spikes: Any,
        refractory: Any,
        mismatch: Any,
        noise: Any,
    ) -> None:
        """Encoding resolution and the integer datapath's limits, mismatch and noise (checked)."""
        self.input_events = checks.integer("input_events", input_events, low=1, high=255)
        self.delta_threshold = checks.real("delta_threshold", delta_threshold, low=1e-6, high=1.0)
        self.threshold = checks.integer("threshold", threshold, low=1, high=INT16_MAX)
        self.max_spikes = checks.integer("max_spikes", max_spikes, low=1, high=31)
        self.refractory = checks.integer("refractory", refractory, low=0, high=100000)
        self.mismatch = checks.real("mismatch", mismatch, low=0.0, high=1.0)
        self.noise = checks.real("noise", noise, low=0.0, high=100.0)

    def _build_network(self) -> None:
        """The programmed network: float weights in threshold units, from ``seed``."""
        n_in, n_hid, n_out = self.spec.n_inputs, self.n_hidden, self.spec.n_outputs
        gen = torch.Generator().manual_seed(_stream_seed(self.seed, "network"))
        w_in = torch.randn(n_hid, n_in, generator=gen, dtype=torch.float64) * (self.input_gain / math.sqrt(n_in))
        w_rec = torch.randn(n_hid, n_hid, generator=gen, dtype=torch.float64) * (self.recurrent_gain / math.sqrt(n_hid))
        w_rec.fill_diagonal_(0.0)
        w_out = torch.randn(n_out, n_hid, generator=gen, dtype=torch.float64) * (self.output_gain / math.sqrt(n_hid))
        # every neuron gets as much inhibition as excitation (rows sum to zero; a fan-in of 1 is left alone)
        if self.balanced and n_in > 1:
            w_in = w_in - w_in.mean(dim=1, keepdim=True)
        if self.balanced and n_hid > 1:
            w_out = w_out - w_out.mean(dim=1, keepdim=True)
        self.weights = {"in": w_in, "rec": w_rec, "out": w_out}  # float64, CPU: the nominal values
        self._w = {k: v.to(device=self.device, dtype=self.dtype) for k, v in self.weights.items()}

    def _build_hardware(self) -> None:
        """Quantise the programmed network to 8-bit + shift and apply this chip's mismatch."""
        # The mismatch stream depends only on the serial (stable across Python runs).
        gen = torch.Generator().manual_seed(_stream_seed(self.serial, "mismatch"))
        m = self.mismatch
        theta = self.threshold

        def spread(shape: tuple[int, ...]) -> torch.Tensor:
            """Relative factors 1 + m N(0, 1); drawn even when m = 0 so the stream layout is fixed."""
            return 1.0 + m * torch.randn(shape, generator=gen, dtype=torch.float64)

        # In current encoding an input channel carries up to input_events events per step.
        in_scale = 1.0 / self.input_events if self.encoding == "current" else 1.0
        self.shifts: dict[str, int] = {}
        self.quantisation_error: dict[str, float] = {}
        wq: dict[str, torch.Tensor] = {}
        for name, scale in (("in", in_scale), ("rec", 1.0), ("out", 1.0)):
            w = self.weights[name] * (scale * theta)  # in LSB
            peak = float(w.abs().max())
            shift = 0 if peak <= 127 else math.ceil(math.log2(peak / 127.0))
            if shift > 15:
                raise ValueError(
                    f"W_{name} peaks at {peak / theta:.3g} thresholds, beyond 8-bit weights with a shift <= 15; "
                    f"lower the gain or the threshold ({theta} LSB)"
                )
            q = torch.clamp(torch.round(w / 2.0**shift), -128, 127)
            if peak > 0 and not bool(q.any()):
                raise ValueError(
                    f"W_{name} quantises to all zeros (largest weight {peak:.3g} LSB < 0.5 LSB); "
                    f"raise the threshold ({theta} LSB) or the gain"
                )
            # realised efficacy on this chip (mismatch), stored as an 8-bit value
            wq[name] = torch.clamp(torch.round(q * spread(q.shape)), -128, 127)
            self.shifts[name] = shift
            err = (q * 2.0**shift - w).norm() / w.norm().clamp_min(1e-300)
            self.quantisation_error[name] = float(err)
        n_hid, n_out = self.n_hidden, self.spec.n_outputs

        def thresholds(n: int) -> torch.Tensor:
            return torch.clamp(torch.round(theta * spread((n,))), 1, INT16_MAX)

        def gains(n: int, dash: int) -> torch.Tensor:
            g = torch.round(2**_GAIN_BITS * spread((n,)))
            # the leak (v g) >> (dash + 8) must not exceed |v|, and v g must stay below 2**24 (exact)
            return torch.clamp(g, 0, min(2 ** (dash + _GAIN_BITS), 511))

        thr_h, thr_o = thresholds(n_hid), thresholds(n_out)
        gm_h, gm_o = gains(n_hid, self.dash_mem), gains(n_out, self.dash_mem)
        gs_h, gs_o = gains(n_hid, self.dash_syn), gains(n_out, self.dash_syn)
        # exactness: every partial sum of a matmul must be an integer below 2**24 in float32
        e_max = self._max_events_per_step()
        bound_h = 128.0 * (e_max * self.spec.n_inputs + self.max_spikes * n_hid)
        bound_o = 128.0 * self.max_spikes * n_hid
        self.hw_dtype = torch.float32 if max(bound_h, bound_o) < 2**24 else torch.float64
        dev, dt = self.device, self.hw_dtype
        self.hw = {
            "w_in": wq["in"].to(dev, dt),
            "w_rec": wq["rec"].to(dev, dt),
            "w_out": wq["out"].to(dev, dt),
            "thr_h": thr_h.to(dev, dt),
            "thr_o": thr_o.to(dev, dt),
            "gm_h": gm_h.to(dev, dt),
            "gm_o": gm_o.to(dev, dt),
            "gs_h": gs_h.to(dev, dt),
            "gs_o": gs_o.to(dev, dt),
        }

    def _max_events_per_step(self) -> int:
        if self.encoding == "current":
            return self.input_events
        if self.encoding == "delta":
            return math.ceil(1.0 / (self.steps * self.delta_threshold)) + 1
        return 1

    # ------------------------------------------------------------- encoding
    def encode(self, x: Any) -> torch.Tensor:
        """Input events ``[T, B, n_inputs]`` for a batch (see the module docstring).

        The batch is validated against the drive limits first. Rate encoding
        draws from the chip's encoding stream (advancing it, as a query does).
        """
        return self._encode(self.validate_input(x))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        T = self.steps
        x = x.to(device=self.device, dtype=torch.float64 if self.dtype == torch.float64 else torch.float32)
        B, n = x.shape
        if self.encoding == "current":
            e = torch.round(x * self.input_events) if self.mode == "hardware" else x
            return e.unsqueeze(0).expand(T, B, n)
        if self.encoding == "rate":
            u = torch.rand((T, B, n), generator=self._enc_gen, device=self.device, dtype=torch.float32)
            return (u < x.to(torch.float32)).to(x.dtype)
        t = torch.arange(T, device=self.device, dtype=torch.float64).view(T, 1, 1)
        if self.encoding == "latency":
            when = torch.round((1.0 - x.double()) * (T - 1)).unsqueeze(0)
            return ((t == when) & (x > 0).unsqueeze(0)).to(x.dtype)
        # delta: cumulative events of a send-on-delta modulator on a linear ramp 0 -> x
        q = x.double().unsqueeze(0) / self.delta_threshold
        level = torch.floor(q * (t + 1) / T + 1e-9)
        prev = torch.cat([torch.zeros_like(level[:1]), level[:-1]], dim=0)
        return (level - prev).to(x.dtype)

    # -------------------------------------------------------------- queries
    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, record=False).output

    def trace(self, x: Any) -> SpikeTrace:
        """Run one batch and return every internal spike train and state.

        A diagnostic for tests and for looking inside the simulator: the input
        is validated as for a query and the streams advance as for a query,
        but it is not counted in ``stats`` (a real chip has no such window).
        """
        batch = self.validate_input(x).to(self.device)
        with torch.no_grad():
            return self._run(batch, record=True)

    def _run(self, x: torch.Tensor, record: bool) -> SpikeTrace:
        events = self._encode(x)
        if self.mode == "float":
            return self._run_float(events, record=record, surrogate=False, biases=self._float_biases())
        return self._run_hardware(events, record=record)

    # -------------------------------------------------------------- drift
    def drift_parameters(self) -> dict[str, torch.Tensor]:
        """Per-neuron threshold and leak factors (dimensionless, 1 = as built; module docstring, Drift)."""
        return dict(self._drift)

    def drift_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Where the datapath is valid: threshold factor 0.25..4, leak factor 0..2 (2: the leak removes all of v)."""
        return {"threshold": (0.25, 4.0), "leak": (0.0, 2.0)}

    def drift_scales(self) -> dict[str, float]:
        """The change of each factor that substantially alters the response.

        Measured on the default chip (noise off, 256 random drives, relative L2 change of
        the counts): a 0.1 rms threshold change moves them by 28 %, a 0.2 rms leak change by
        20 % (another serial: 50 %; the default membrane noise alone: 11 % between repeats,
        and any change of a few LSB already flips marginal spikes by about that much).
        """
        return {"threshold": 0.1, "leak": 0.2}

    def _factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden, output) drift factors of ``name``, checked: a value outside the bounds is a caller's bug."""
        f = self._drift[name]
        low, high = self.drift_bounds()[name]
        if not bool(torch.isfinite(f).all()) or float(f.min()) < low or float(f.max()) > high:
            raise checks.ParameterError(
                f"neuromorphic drift factor {name} must stay in {low:g}..{high:g}, got "
                f"{float(f.min()):.4g}..{float(f.max()):.4g}"
            )
        return f[: self.n_hidden], f[self.n_hidden :]

    def _float_biases(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float mode: per-neuron thresholds and membrane decays (hidden, output) at the current drift."""
        th, to = (t.to(device=self.device, dtype=self.dtype) for t in self._factors("threshold"))
        lh, lo = (t.to(device=self.device, dtype=self.dtype) for t in self._factors("leak"))
        step = 2.0**-self.dash_mem
        return th, to, 1.0 - step * lh, 1.0 - step * lo

    # ----------------------------------------------------------- float mode
    def _run_float(self, events: torch.Tensor, *, record: bool, surrogate: bool, biases: Any = None) -> SpikeTrace:
        """Float-mode LIF; ``biases`` = (theta_h, theta_o, beta_h, beta_o) per neuron (None: the nominal 1, beta)."""
        T, B, _ = events.shape
        w_in, w_rec, w_out = self._w["in"], self._w["rec"], self._w["out"]
        dt = w_in.dtype
        events = events.to(dt)
        n_hid, n_out = self.n_hidden, self.spec.n_outputs
        alpha = self.alpha
        theta_h, theta_o, beta_h, beta_o = (1.0, 1.0, self.beta, self.beta) if biases is None else biases
        fire = _SpikeSurrogate.apply if surrogate else _heaviside
        if self.encoding == "current":
            proj0 = F.linear(events[0], w_in)
        v_h = events.new_zeros(B, n_hid)
        s_h = events.new_zeros(B, n_hid)
        i_h = events.new_zeros(B, n_hid)
        v_o = events.new_zeros(B, n_out)
        s_o = events.new_zeros(B, n_out)
        i_o = events.new_zeros(B, n_out)
        count = events.new_zeros(B, n_out)
        rec: dict[str, list[torch.Tensor]] = {k: [] for k in ("sh", "so", "vh", "vo", "ih", "io")}
        for t in range(T):
            proj = proj0 if self.encoding == "current" else F.linear(events[t], w_in)
            cur_h = proj + F.linear(s_h, w_rec)
            if alpha:
                i_h = alpha * i_h + cur_h
                cur_h = i_h
            # the reset of step t-1's spike, not decayed (snnTorch Leaky, reset_delay=True)
            v_h = beta_h * v_h + cur_h - s_h.detach() * theta_h
            s_h = fire(v_h - theta_h)
            cur_o = F.linear(s_h, w_out)
            if alpha:
                i_o = alpha * i_o + cur_o
                cur_o = i_o
            v_o = beta_o * v_o + cur_o - s_o.detach() * theta_o
            s_o = fire(v_o - theta_o)
            count = count + s_o
            if record:
                for k, val in (("sh", s_h), ("so", s_o), ("vh", v_h), ("vo", v_o), ("ih", i_h), ("io", i_o)):
                    rec[k].append(val)
        if self.readout == "counts":
            out = count
        elif self.readout == "rates":
            out = count / T
        else:  # membrane after the last step with its pending reset applied
            out = v_o - s_o.detach() * theta_o
        return self._trace(events, rec, out, record, {})

    # -------------------------------------------------------- hardware mode
    def _run_hardware(self, events: torch.Tensor, *, record: bool) -> SpikeTrace:
        T, B, _ = events.shape
        hw = self.hw
        dt = self.hw_dtype
        events = events.to(dt)
        n_hid, n_out = self.n_hidden, self.spec.n_outputs
        sc_in, sc_rec, sc_out = (2.0 ** self.shifts[k] for k in ("in", "rec", "out"))
        w_in, w_rec, w_out = hw["w_in"], hw["w_rec"], hw["w_out"]
        thr_h, thr_o, gm_h, gm_o = self._hardware_biases()
        # leak = floor(v g / 2**(dash+8)); g / 2**k is exact, so v * (g / 2**k) is too
        gm_h, gm_o = (g / 2.0 ** (self.dash_mem + _GAIN_BITS) for g in (gm_h, gm_o))
        gs_h, gs_o = (hw[k] / 2.0 ** (self.dash_syn + _GAIN_BITS) for k in ("gs_h", "gs_o"))
        syn = self.dash_syn > 0
        R = self.refractory
        lo, hi = float(INT16_MIN), float(INT16_MAX)
        if self.encoding == "current":
            proj0 = F.linear(events[0], w_in) * sc_in
        else:
            proj_all = F.linear(events.reshape(T * B, -1), w_in).reshape(T, B, n_hid) * sc_in
        if self.noise > 0:
            # all steps at once (one pass each), rounded to whole LSB
            sd = self.noise * self.threshold
            noise_h = events.new_empty((T, B, n_hid)).normal_(0.0, sd, generator=self._noise_gen).round_()
            noise_o = events.new_empty((T, B, n_out)).normal_(0.0, sd, generator=self._noise_gen).round_()
        zeros = events.new_zeros
        v_h, n_h, i_h, ref_h = zeros(B, n_hid), zeros(B, n_hid), zeros(B, n_hid), zeros(B, n_hid)
        v_o, n_o, i_o, ref_o = zeros(B, n_out), zeros(B, n_out), zeros(B, n_out), zeros(B, n_out)
        count = zeros(B, n_out)
        rec: dict[str, list[torch.Tensor]] = {k: [] for k in ("sh", "so", "vh", "vo", "ih", "io")}
        extremes: dict[str, list[float]] = {}

        def track(name: str, raw: torch.Tensor) -> None:
            lo_hi = extremes.setdefault(name, [math.inf, -math.inf])
            lo_hi[0] = min(lo_hi[0], float(raw.min()))
            lo_hi[1] = max(lo_hi[1], float(raw.max()))

        def lif_step(v, i, ref, a, gs, gm, thr, noise, layer: str):
            """One bit-shift LIF update of a layer: synaptic register, membrane (saturating),
            several spikes per step, refractory hold, subtractive reset. Returns the new
            (v, i, ref, spikes) and the membrane before the reset (what a trace records)."""
            if syn:
                raw = i - torch.floor(i * gs) + a
                if record:
                    track(f"i_{layer}", raw)
                i = raw.clamp(lo, hi)
                a = i
            raw = v - torch.floor(v * gm) + a
            if noise is not None:
                raw = raw + noise
            if R:
                raw = torch.where(ref > 0, v, raw)
            if record:
                track(f"v_{layer}", raw)
            v = raw.clamp(lo, hi)
            n = torch.floor(v / thr).clamp(0, self.max_spikes)
            if R:
                n = torch.where(ref > 0, 0.0, n)
                ref = torch.where(n > 0, float(R), (ref - 1).clamp(min=0))
            return v - n * thr, i, ref, n, v

        for t in range(T):
            a_h = (proj0 if self.encoding == "current" else proj_all[t]) + F.linear(n_h, w_rec) * sc_rec
            v_h, i_h, ref_h, n_h, v_pre = lif_step(
                v_h, i_h, ref_h, a_h, gs_h, gm_h, thr_h, noise_h[t] if self.noise > 0 else None, "hidden"
            )
            if record:
                rec["vh"].append(v_pre)
            a_o = F.linear(n_h, w_out) * sc_out
            v_o, i_o, ref_o, n_o, v_pre = lif_step(
                v_o, i_o, ref_o, a_o, gs_o, gm_o, thr_o, noise_o[t] if self.noise > 0 else None, "out"
            )
            if record:
                rec["vo"].append(v_pre)
            count = count + n_o
            if record:
                for k, val in (("sh", n_h), ("so", n_o), ("ih", i_h), ("io", i_o)):
                    rec[k].append(val)
        if self.readout == "counts":
            out = count
        elif self.readout == "rates":
            out = count / T
        else:  # the membrane register after the last step, in units of the nominal threshold
            out = v_o / self.threshold
        return self._trace(events, rec, out.to(torch.float32), record, {k: (v[0], v[1]) for k, v in extremes.items()})

    def _hardware_biases(self) -> tuple[torch.Tensor, ...]:
        """Integer thresholds and leak gains (hidden, output) at the current drift (as built when all factors are 1)."""
        hw, dt = self.hw, self.hw_dtype
        th, to = (f.to(device=self.device, dtype=dt) for f in self._factors("threshold"))
        lh, lo = (f.to(device=self.device, dtype=dt) for f in self._factors("leak"))
        g_max = float(min(2 ** (self.dash_mem + _GAIN_BITS), 511))
        return (
            torch.clamp(torch.round(hw["thr_h"] * th), 1, INT16_MAX),
            torch.clamp(torch.round(hw["thr_o"] * to), 1, INT16_MAX),
            torch.clamp(torch.round(hw["gm_h"] * lh), 0, g_max),
            torch.clamp(torch.round(hw["gm_o"] * lo), 0, g_max),
        )

    def _trace(self, events, rec, out, record, extremes) -> SpikeTrace:
        empty = out.new_zeros(0)
        if not record:
            return SpikeTrace(events, empty, empty, empty, empty, None, None, out)
        stack = {k: torch.stack(v) for k, v in rec.items()}
        syn = self.dash_syn > 0
        return SpikeTrace(
            inputs=events,
            spikes_hidden=stack["sh"],
            spikes_out=stack["so"],
            v_hidden=stack["vh"],
            v_out=stack["vo"],
            i_hidden=stack["ih"] if syn else None,
            i_out=stack["io"] if syn else None,
            output=out,
            unsaturated=extremes,
        )

    # --------------------------------------------------------- differentiable
    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free float-mode network with a surrogate gradient.

        Only for the in-silico backprop baseline. Whatever the chip's mode,
        this is the *nominal* network as a digital model knows it: float
        weights, no quantisation, mismatch or noise, one spike per step (the
        in-silico / on-chip gap is part of what that baseline measures). The
        forward pass is exactly the float mode; the spike's gradient is the
        fast-sigmoid surrogate 1 / (1 + 5 |v - theta|)**2. Supports the
        ``current`` encoding (differentiable in x) and ``rate`` (a
        straight-through estimator: Bernoulli spikes forward, d e / d x = 1
        backward); latency and delta codes have no useful gradient and raise.
        """
        if self.encoding not in ("current", "rate"):
            raise NotImplementedError(
                f"differentiable() supports encoding 'current' or 'rate', not {self.encoding!r} "
                "(spike times and delta events are piecewise constant in x)"
            )
        x = x.to(device=self.device, dtype=self.dtype)
        if x.dim() != 2 or x.shape[1] != self.spec.n_inputs:
            raise ValueError(f"x must be [batch, {self.spec.n_inputs}], got shape {tuple(x.shape)}")
        T = self.steps
        if self.encoding == "current":
            events = x.unsqueeze(0).expand(T, *x.shape)
        else:
            u = torch.rand((T, *x.shape), generator=self._diff_gen, device=self.device, dtype=torch.float32)
            hard = (u < x.detach().to(torch.float32)).to(x.dtype)
            events = hard + x.unsqueeze(0) - x.detach().unsqueeze(0)
        return self._run_float(events, record=False, surrogate=True).output.to(torch.float32)

    # -------------------------------------------------------------- metadata
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            mode=self.mode,
            encoding=self.encoding,
            readout=self.readout,
            n_hidden=self.n_hidden,
            steps=self.steps,
            dash_mem=self.dash_mem,
            dash_syn=self.dash_syn,
            beta=self.beta,
            alpha=self.alpha,
            input_gain=self.input_gain,
            recurrent_gain=self.recurrent_gain,
            output_gain=self.output_gain,
            balanced=self.balanced,
            input_events=self.input_events,
            delta_threshold=self.delta_threshold,
            seed=self.seed,
            dtype=str(self.dtype),
        )
        if self.mode == "hardware":
            d.update(
                threshold_lsb=self.threshold,
                max_spikes=self.max_spikes,
                refractory_steps=self.refractory,
                weight_shifts=dict(self.shifts),
                weight_quantisation_rel_error=dict(self.quantisation_error),
                mismatch=self.mismatch,
                noise_threshold_units=self.noise,
                serial=self.serial,
                compute_dtype=str(self.hw_dtype),
            )
        return d


# ------------------------------------------------------------------ helpers
def _stream_seed(key: Any, tag: str) -> int:
    """A 63-bit seed for the random stream ``tag`` of ``key`` (stable across runs and platforms)."""
    digest = hashlib.sha256(f"physnn.neuromorphic:{tag}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _heaviside(u: torch.Tensor) -> torch.Tensor:
    return (u > 0).to(u.dtype)


class _SpikeSurrogate(torch.autograd.Function):
    """Heaviside forward, fast-sigmoid derivative 1 / (1 + 5|u|)^2 backward."""

    @staticmethod
    def forward(ctx: Any, u: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(u)
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (u,) = ctx.saved_tensors
        return grad / (1.0 + 5.0 * u.abs()) ** 2
