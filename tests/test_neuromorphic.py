"""Tests of the spiking neuromorphic chip simulator (simulators/neuromorphic.py).

The two reference implementations here are written independently of the
simulator: snnTorch's ``Leaky``/``Synaptic`` neurons for the float mode, and a
plain int64 NumPy loop for the hardware mode's integer datapath.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physnn.core.registry import build_system
from physnn.simulators.neuromorphic import INT16_MAX, INT16_MIN, NeuromorphicChip

SMALL = dict(n_inputs=12, n_outputs=6, n_hidden=24, steps=16)


def _x(b: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, n, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------ shape & limits
@pytest.mark.parametrize("mode", ["hardware", "float"])
@pytest.mark.parametrize("encoding", ["current", "rate", "latency", "delta"])
def test_shape_dtype_and_count_bounds(mode: str, encoding: str) -> None:
    chip = NeuromorphicChip(**SMALL, mode=mode, encoding=encoding)
    y = chip(_x(5, 12))
    assert y.shape == (5, 6) and y.dtype == torch.float32
    assert torch.equal(y, y.round()) and (y >= 0).all()
    cap = SMALL["steps"] * (chip.max_spikes if mode == "hardware" else 1)
    assert (y <= cap).all()
    assert chip.stats.calls == 1 and chip.stats.samples == 5


def test_default_sizes() -> None:
    chip = NeuromorphicChip()
    assert (chip.spec.n_inputs, chip.spec.n_outputs, chip.n_hidden, chip.steps) == (64, 32, 128, 32)
    assert (chip.spec.low, chip.spec.high) == (0.0, 1.0)


def test_drive_limits_are_enforced_with_the_value_and_limit() -> None:
    chip = NeuromorphicChip(**SMALL)
    x = _x(3, 12)
    x[1, 4] = 1.25
    with pytest.raises(ValueError, match=r"input\[1, 4\] = 1\.25 .*above the drive limit high=1"):
        chip(x)
    x[1, 4] = -0.5
    with pytest.raises(ValueError, match=r"input\[1, 4\] = -0\.5 .*below the drive limit low=0"):
        chip(x)
    with pytest.raises(ValueError, match="has 11 columns"):
        chip(_x(3, 11))
    assert chip.stats.calls == 0  # nothing reached the chip


def test_quantised_input_levels() -> None:
    chip = NeuromorphicChip(**SMALL, input_levels=5)
    assert chip.spec.levels == 5
    chip(torch.full((2, 12), 0.75))  # on a level
    with pytest.raises(ValueError, match="not one of the 5 allowed levels"):
        chip(torch.full((2, 12), 0.3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="analog"), "mode must be one of"),
        (dict(encoding="burst"), "encoding must be one of"),
        (dict(readout="voltage"), "readout must be one of"),
        (dict(max_spikes=32), r"max_spikes must be an integer in 1\.\.31, got 32"),
        (dict(threshold=40000), r"threshold must be an integer in 1\.\.32767, got 40000"),
        (dict(mismatch=-0.1), "mismatch must be a finite number"),
        (dict(serial=""), "serial must be a non-empty string"),
        (dict(input_gain=1e5, threshold=32767), "beyond 8-bit weights"),
        (dict(input_gain=1e-6), "quantises to all zeros"),
        (dict(dash_mem=2.5), r"dash_mem must be an integer in 0\.\.15, got 2\.5"),
        (dict(noise=True), "noise must be a finite number in 0..100, got True"),
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_options_name_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NeuromorphicChip(**SMALL, **kwargs)


def test_registry_builds_it_by_name() -> None:
    chip = build_system("neuromorphic", n_inputs=10, seed=3, device="cpu", encoding="rate")
    assert isinstance(chip, NeuromorphicChip)
    assert chip.spec.n_inputs == 10 and chip.seed == 3 and chip.encoding == "rate"
    d = chip.describe()
    assert d["serial"] == "chip-0" and d["weight_shifts"] == chip.shifts and d["encoding"] == "rate"


# --------------------------------------------------------------- determinism
@pytest.mark.parametrize("encoding", ["current", "rate"])
def test_same_seed_same_outputs_and_noise_varies_between_queries(encoding: str) -> None:
    x = _x(8, 12, seed=1)
    a = NeuromorphicChip(**SMALL, encoding=encoding, seed=7, noise=0.1)
    b = NeuromorphicChip(**SMALL, encoding=encoding, seed=7, noise=0.1)
    a1, a2 = a(x), a(x)
    assert torch.equal(a1, b(x)) and torch.equal(a2, b(x))
    assert not torch.equal(a1, a2)  # per-step noise (and the rate code) is redrawn per query
    c = NeuromorphicChip(**SMALL, encoding=encoding, seed=8, noise=0.1)
    assert not torch.equal(a1, c(x))


def test_noiseless_current_hardware_chip_is_repeatable() -> None:
    chip = NeuromorphicChip(**SMALL, noise=0.0)
    x = _x(6, 12)
    assert torch.equal(chip(x), chip(x))


# ---------------------------------------------------- float mode == snnTorch
def _snntorch_run(chip: NeuromorphicChip, events: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The same network written with snnTorch neurons and nn.Linear layers."""
    snn = pytest.importorskip("snntorch")
    from torch import nn

    w = chip.weights
    fc_in, fc_rec, fc_out = (
        nn.Linear(m.shape[1], m.shape[0], bias=False).to(dtype) for m in (w["in"], w["rec"], w["out"])
    )
    with torch.no_grad():
        fc_in.weight.copy_(w["in"])
        fc_rec.weight.copy_(w["rec"])
        fc_out.weight.copy_(w["out"])
    if chip.dash_syn == 0:
        lif_h = snn.Leaky(beta=chip.beta, threshold=1.0, reset_mechanism="subtract")
        lif_o = snn.Leaky(beta=chip.beta, threshold=1.0, reset_mechanism="subtract")
    else:
        lif_h = snn.Synaptic(alpha=chip.alpha, beta=chip.beta, threshold=1.0, reset_mechanism="subtract")
        lif_o = snn.Synaptic(alpha=chip.alpha, beta=chip.beta, threshold=1.0, reset_mechanism="subtract")
    T, B, _ = events.shape
    s_h = torch.zeros(B, chip.n_hidden, dtype=dtype)
    out: dict[str, list] = {"sh": [], "so": [], "vh": [], "vo": []}
    states_h: tuple = ()
    states_o: tuple = ()
    with torch.no_grad():
        for t in range(T):
            cur_h = fc_in(events[t].to(dtype)) + fc_rec(s_h)
            if chip.dash_syn == 0:
                s_h, v_h = lif_h(cur_h, *states_h)
                states_h = (v_h,)
            else:
                s_h, i_h, v_h = lif_h(cur_h, *states_h)
                states_h = (i_h, v_h)
            s_h = s_h.to(dtype)  # snnTorch's Heaviside returns float32
            cur_o = fc_out(s_h)
            if chip.dash_syn == 0:
                s_o, v_o = lif_o(cur_o, *states_o)
                states_o = (v_o,)
            else:
                s_o, i_o, v_o = lif_o(cur_o, *states_o)
                states_o = (i_o, v_o)
            for k, v in (("sh", s_h), ("so", s_o), ("vh", v_h), ("vo", v_o)):
                out[k].append(v.to(dtype))
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize(
    "dtype, encoding, dash_syn",
    [
        (torch.float64, "current", 0),
        (torch.float64, "rate", 0),
        (torch.float32, "current", 0),
        (torch.float32, "rate", 0),
        (torch.float64, "current", 2),  # synaptic register: snnTorch's Synaptic
    ],
)
def test_float_mode_matches_snntorch_spike_for_spike(dtype: torch.dtype, encoding: str, dash_syn: int) -> None:
    chip = NeuromorphicChip(
        n_inputs=20,
        n_outputs=10,
        n_hidden=40,
        steps=32,
        mode="float",
        encoding=encoding,
        dash_syn=dash_syn,
        input_gain=2.0,
        recurrent_gain=1.0,
        dtype=dtype,
        seed=4,
    )
    tr = chip.trace(_x(16, 20, seed=2))
    ref = _snntorch_run(chip, tr.inputs, dtype)
    # the test must be able to fail: both layers really spike, but not all the time
    for k in ("spikes_hidden", "spikes_out"):
        rate = float(getattr(tr, k).mean())
        assert 0.02 < rate < 0.9, (k, rate)
    assert torch.equal(tr.spikes_hidden, ref["sh"])
    assert torch.equal(tr.spikes_out, ref["so"])
    assert torch.equal(tr.v_hidden, ref["vh"])
    assert torch.equal(tr.v_out, ref["vo"])
    assert torch.equal(tr.output, ref["so"].sum(0))


def test_float_mode_reset_is_delayed_and_undecayed() -> None:
    """Hand-checked single-neuron trace of the documented float-mode equations."""
    chip = NeuromorphicChip(n_inputs=1, n_outputs=1, n_hidden=1, steps=5, mode="float", dash_mem=3, dtype=torch.float64)
    # one input -> one hidden neuron -> one output neuron, weights set by hand
    chip._w["in"].fill_(0.6)
    chip._w["rec"].fill_(0.0)
    chip._w["out"].fill_(0.0)
    tr = chip.trace(torch.ones(1, 1))
    v = tr.v_hidden[:, 0, 0].tolist()
    s = tr.spikes_hidden[:, 0, 0].tolist()
    b = 0.875
    v0 = 0.6
    v1 = b * v0 + 0.6  # 1.125 > 1: spike at step 1
    v2 = b * v1 + 0.6 - 1.0  # reset applied a step late, not multiplied by beta
    v3 = b * v2 + 0.6
    v4 = b * v3 + 0.6 - (1.0 if v3 > 1 else 0.0)
    assert v == pytest.approx([v0, v1, v2, v3, v4], abs=1e-12)
    assert s == [0.0, 1.0, float(v2 > 1), float(v3 > 1), float(v4 > 1)]


# ------------------------------------------------- hardware mode: integer path
def _int_reference(chip: NeuromorphicChip, events: torch.Tensor) -> dict[str, np.ndarray]:
    """The documented hardware equations in plain int64 NumPy."""
    hw = {k: v.cpu().numpy().astype(np.int64) for k, v in chip.hw.items()}
    e = events.cpu().numpy().astype(np.int64)
    T, B, _ = e.shape
    sh = {k: chip.shifts[k] for k in ("in", "rec", "out")}
    km, ks = chip.dash_mem + 8, chip.dash_syn + 8
    R, cap = chip.refractory, chip.max_spikes

    def layer(v, i, ref, drive, thr, gm, gs):
        if chip.dash_syn > 0:
            i = np.clip(i - ((i * gs) >> ks) + drive, INT16_MIN, INT16_MAX)
            drive = i
        u = v - ((v * gm) >> km) + drive
        if R:
            u = np.where(ref > 0, v, u)
        v = np.clip(u, INT16_MIN, INT16_MAX)
        n = np.clip(v // thr, 0, cap)
        if R:
            n = np.where(ref > 0, 0, n)
            ref = np.where(n > 0, R, np.maximum(ref - 1, 0))
        return v, v - n * thr, i, ref, n

    H, O = chip.n_hidden, chip.spec.n_outputs  # noqa: E741 - the paper's names
    v_h, i_h, r_h, n_h = (np.zeros((B, H), np.int64) for _ in range(4))
    v_o, i_o, r_o = (np.zeros((B, O), np.int64) for _ in range(3))
    out: dict[str, list] = {"sh": [], "so": [], "vh": [], "vo": []}
    for t in range(T):
        drive = ((e[t] @ hw["w_in"].T) << sh["in"]) + ((n_h @ hw["w_rec"].T) << sh["rec"])
        check_h, v_h, i_h, r_h, n_h = layer(v_h, i_h, r_h, drive, hw["thr_h"], hw["gm_h"], hw["gs_h"])
        drive = (n_h @ hw["w_out"].T) << sh["out"]
        check_o, v_o, i_o, r_o, n_o = layer(v_o, i_o, r_o, drive, hw["thr_o"], hw["gm_o"], hw["gs_o"])
        for k, val in (("sh", n_h), ("so", n_o), ("vh", check_h), ("vo", check_o)):
            out[k].append(val)
    return {k: np.stack(v) for k, v in out.items()}


@pytest.mark.parametrize(
    "opts",
    [
        dict(encoding="current", dash_syn=2, refractory=2, max_spikes=3, threshold=300, input_gain=6.0),
        dict(encoding="rate", dash_syn=0, refractory=0, max_spikes=31, threshold=100, input_gain=8.0),
        dict(encoding="delta", dash_syn=1, refractory=1, max_spikes=5, threshold=1024, input_gain=3.0),
        dict(encoding="current", dash_syn=1, refractory=0, max_spikes=31, threshold=1024, input_gain=80.0),
    ],
)
def test_hardware_mode_equals_int64_reference(opts: dict) -> None:
    chip = NeuromorphicChip(**SMALL, noise=0.0, recurrent_gain=1.5, seed=5, serial="XY-17", **opts)
    tr = chip.trace(_x(10, 12, seed=3))
    ref = _int_reference(chip, tr.inputs)
    assert tr.spikes_hidden.sum() > 0 and tr.spikes_out.sum() > 0
    assert torch.equal(tr.spikes_hidden, torch.from_numpy(ref["sh"]).float())
    assert torch.equal(tr.spikes_out, torch.from_numpy(ref["so"]).float())
    assert torch.equal(tr.v_hidden, torch.from_numpy(ref["vh"]).float())
    assert torch.equal(tr.v_out, torch.from_numpy(ref["vo"]).float())
    if opts["max_spikes"] < 31:  # several spikes in one step happen, and the cap holds
        assert tr.spikes_hidden.max() == opts["max_spikes"]
    if opts["input_gain"] > 50:  # overdriven: the saturation path is compared too
        assert tr.unsaturated["v_hidden"][1] > INT16_MAX and tr.unsaturated["i_hidden"][0] < INT16_MIN


def test_hardware_state_never_leaves_int16_under_overdrive() -> None:
    chip = NeuromorphicChip(**SMALL, dash_syn=1, input_gain=60.0, recurrent_gain=20.0, output_gain=40.0, seed=2)
    tr = chip.trace(torch.ones(6, 12))
    # the drive really would overflow int16 without saturation, in both directions
    for name in ("i_hidden", "v_hidden", "i_out", "v_out"):
        lo, hi = tr.unsaturated[name]
        assert hi > INT16_MAX and lo < INT16_MIN, (name, lo, hi)
    for t in (tr.i_hidden, tr.v_hidden, tr.i_out, tr.v_out):
        assert t.min() >= INT16_MIN and t.max() <= INT16_MAX
        assert t.min() == INT16_MIN and t.max() == INT16_MAX  # it sits on the rails
        assert torch.equal(t, t.round())


def test_membrane_noise_has_the_documented_std() -> None:
    # dash_mem=0 leaks everything each step and x=0 gives no input: v[t] = noise[t]
    chip = NeuromorphicChip(n_inputs=4, n_outputs=4, n_hidden=500, steps=40, dash_mem=0, mismatch=0.0, noise=0.05)
    v = chip.trace(torch.zeros(10, 4)).v_hidden
    assert torch.equal(v, v.round())
    sd = 0.05 * 1024
    assert float(v.std()) == pytest.approx(sd, rel=0.02)
    assert abs(float(v.mean())) < 0.5


# ------------------------------------------------------------------ mismatch
def test_serial_sets_the_mismatch() -> None:
    kw = dict(**SMALL, noise=0.0, seed=1)
    a, a2, b = (NeuromorphicChip(serial=s, **kw) for s in ("A-001", "A-001", "A-002"))
    for k in a.hw:
        assert torch.equal(a.hw[k], a2.hw[k])
    assert not torch.equal(a.hw["thr_h"], b.hw["thr_h"])
    assert not torch.equal(a.hw["w_rec"], b.hw["w_rec"])
    x = _x(8, 12)
    assert torch.equal(a(x), a2(x)) and not torch.equal(a(x), b(x))
    # no mismatch: every serial is the nominal chip
    n1, n2 = (NeuromorphicChip(serial=s, mismatch=0.0, **kw) for s in ("A-001", "A-002"))
    for k in n1.hw:
        assert torch.equal(n1.hw[k], n2.hw[k])
    assert (n1.hw["thr_h"] == 1024).all() and (n1.hw["gm_h"] == 256).all()


def test_mismatch_has_the_documented_spread() -> None:
    chip = NeuromorphicChip(n_inputs=64, n_outputs=8, n_hidden=600, mismatch=0.1, serial="spread")
    nominal = NeuromorphicChip(n_inputs=64, n_outputs=8, n_hidden=600, mismatch=0.0)
    assert float(chip.hw["thr_h"].std() / 1024) == pytest.approx(0.1, rel=0.1)
    assert float(chip.hw["gm_h"].std() / 256) == pytest.approx(0.1, rel=0.1)
    q0, q = nominal.hw["w_rec"], chip.hw["w_rec"]
    big = q0.abs() >= 40  # relative spread measurable above rounding
    assert float(((q[big] - q0[big]) / q0[big]).std()) == pytest.approx(0.1, rel=0.1)


# ----------------------------------------------------------------- encodings
def test_rate_encoding_mean_rate_is_the_input() -> None:
    chip = NeuromorphicChip(n_inputs=5, steps=4000, encoding="rate")
    x = torch.tensor([[0.0, 0.1, 0.5, 0.9, 1.0]])
    e = chip.encode(x)
    assert set(e.unique().tolist()) <= {0.0, 1.0}
    rate = e.mean(dim=0)[0]
    tol = 4 * torch.sqrt(x[0] * (1 - x[0]) / 4000) + 1e-12
    assert ((rate - x[0]).abs() <= tol).all(), rate
    assert rate[0] == 0 and rate[4] == 1


def test_latency_encoding_one_spike_at_the_documented_step() -> None:
    T = 32
    chip = NeuromorphicChip(n_inputs=4, steps=T, encoding="latency")
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    e = chip.encode(x)[:, 0, :]
    assert e.sum(0).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert e[:, 1].nonzero().item() == round(0.75 * (T - 1))
    assert e[:, 2].nonzero().item() == round(0.5 * (T - 1))
    assert e[:, 3].nonzero().item() == 0


def test_delta_encoding_counts_and_spread() -> None:
    chip = NeuromorphicChip(n_inputs=5, steps=32, encoding="delta", delta_threshold=1 / 16)
    x = torch.tensor([[0.0, 0.0625, 0.3, 0.5, 1.0]])
    e = chip.encode(x)[:, 0, :]
    assert e.sum(0).tolist() == [0.0, 1.0, 4.0, 8.0, 16.0]  # floor(x / delta)
    assert e.max() == 1.0  # at most one event per step when delta >= 1/T
    assert e[:, 4].nonzero().flatten().tolist() == list(range(1, 32, 2))  # evenly spread


@pytest.mark.parametrize("mode, expected", [("hardware", [0.0, 2.0, 8.0, 15.0]), ("float", [0.0, 2 / 15, 0.5, 1.0])])
def test_current_encoding(mode: str, expected: list) -> None:
    chip = NeuromorphicChip(n_inputs=4, steps=3, mode=mode)
    e = chip.encode(torch.tensor([[0.0, 2 / 15, 0.5, 1.0]]))
    assert e.shape == (3, 1, 4)
    for t in range(3):
        assert e[t, 0].tolist() == pytest.approx(expected, abs=1e-7)


# ------------------------------------------------------------------ readouts
def test_readouts_are_consistent() -> None:
    x = _x(4, 12)
    counts = NeuromorphicChip(**SMALL, readout="counts", noise=0.0)(x)
    rates = NeuromorphicChip(**SMALL, readout="rates", noise=0.0)(x)
    assert torch.allclose(rates, counts / SMALL["steps"])
    mem_chip = NeuromorphicChip(**SMALL, readout="membrane", noise=0.0)
    mem = mem_chip(x)
    tr = mem_chip.trace(x)
    last = tr.v_out[-1] - tr.spikes_out[-1] * mem_chip.hw["thr_o"]
    assert torch.equal(mem, last / 1024)


# ------------------------------------------------------------ differentiable
def test_differentiable_matches_float_mode_and_has_gradients() -> None:
    chip = NeuromorphicChip(**SMALL, mode="float", input_gain=2.0)
    x = _x(5, 12).requires_grad_(True)
    y = chip.differentiable(x)
    assert torch.equal(y.detach(), chip(x.detach()))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(NotImplementedError, match="latency"):
        NeuromorphicChip(**SMALL, encoding="latency").differentiable(x)


def test_differentiable_does_not_shift_the_query_stream() -> None:
    x = _x(4, 12)
    a = NeuromorphicChip(**SMALL, encoding="rate")
    b = NeuromorphicChip(**SMALL, encoding="rate")
    a.differentiable(x)
    assert torch.equal(a(x), b(x))


def test_float_precision_switch_when_sums_could_exceed_2_to_24() -> None:
    small = NeuromorphicChip(**SMALL)
    wide = NeuromorphicChip(n_inputs=9000, n_outputs=4, n_hidden=8, steps=2)
    assert small.hw_dtype == torch.float32 and wide.hw_dtype == torch.float64
    assert math.isfinite(float(wide(_x(2, 9000)).sum()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_integer_path_equals_cpu() -> None:
    kw = dict(**SMALL, noise=0.0, dash_syn=1, refractory=1, input_gain=4.0)
    x = _x(16, 12)
    cpu = NeuromorphicChip(**kw)(x)
    gpu_chip = NeuromorphicChip(**kw, device="cuda")
    y = gpu_chip(x.cuda())
    assert y.device.type == "cuda"
    assert torch.equal(y.cpu(), cpu)  # integer arithmetic: exact on any device


@pytest.mark.parametrize(
    "readout, unit", [("counts", "spikes"), ("rates", "spikes per step"), ("membrane", "threshold units")]
)
def test_output_units_follow_the_readout(readout: str, unit: str) -> None:
    spec = NeuromorphicChip(**SMALL, readout=readout).spec
    assert spec.output_units == unit and spec.units == "normalised"


def test_balanced_rows_sum_to_zero_and_use_the_spike_nonlinearity() -> None:
    """Balanced E/I rows put neurons at threshold: the response is more nonlinear than the unbalanced chip's."""
    from physnn.analysis.characterize import characterize

    chip = NeuromorphicChip(**SMALL, seed=2)
    assert torch.allclose(chip.weights["in"].sum(1), torch.zeros(24, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(chip.weights["out"].sum(1), torch.zeros(6, dtype=torch.float64), atol=1e-12)
    old = NeuromorphicChip(**SMALL, seed=2, balanced=False)
    assert not torch.allclose(old.weights["in"].sum(1), torch.zeros(24, dtype=torch.float64), atol=1e-3)
    nl = characterize(chip, n_fit=300, n_test=150).nonlinear_fraction_random
    nl_old = characterize(old, n_fit=300, n_test=150).nonlinear_fraction_random
    assert nl > nl_old + 0.1


# ------------------------------------------------------------ drift (analog biases, not the output)
@pytest.mark.parametrize("mode", ["hardware", "float"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drift_keeps_non_negative_integer_spike_counts(mode: str, seed: int) -> None:
    """Drift acts on thresholds and leaks inside the datapath: counts stay whole and >= 0 (a gain/offset drift of
    the output gave 24 % negative and 97.5 % fractional counts at sigma 0.1)."""
    from physnn.simulators.drift import Drifting

    chip = NeuromorphicChip(**SMALL, mode=mode, seed=seed)
    wrapped = Drifting(chip, mode="ou", sigma=3.0, tau=40.0, events=[(32, 2.0)], seed=seed)
    assert wrapped.target == "parameters" and set(wrapped.describe()["drift"]["parameters"]) == {"leak", "threshold"}
    x = _x(16, 12, seed)
    first = wrapped(x)
    outs = [wrapped(x) for _ in range(6)]
    y = torch.stack(outs)
    assert torch.equal(y, y.round()) and (y >= 0).all()
    assert (y <= SMALL["steps"] * (chip.max_spikes if mode == "hardware" else 1)).all()
    assert not torch.equal(outs[-1], first)  # and it did drift
    low, high = chip.drift_bounds()["threshold"]
    f = chip.drift_parameters()["threshold"]
    assert float(f.min()) >= low and float(f.max()) <= high  # 3 scales rms would leave the range: clipped
    assert wrapped.stats.counters["drift_clipped"] >= 1


def test_drift_factors_of_one_are_the_undrifted_chip_and_move_the_physical_biases() -> None:
    x = _x(8, 12)
    chip, plain = NeuromorphicChip(**SMALL, noise=0.0), NeuromorphicChip(**SMALL, noise=0.0)
    params = chip.drift_parameters()
    params["threshold"].fill_(1.0)
    assert torch.equal(chip(x), plain(x))
    params["threshold"][: chip.n_hidden] = 1.5  # higher hidden thresholds: fewer hidden spikes
    fewer = chip.trace(x).spikes_hidden.sum()
    assert fewer < plain.trace(x).spikes_hidden.sum()
    thr_h = chip._hardware_biases()[0]
    assert torch.equal(thr_h, torch.clamp(torch.round(chip.hw["thr_h"] * 1.5), 1, INT16_MAX))
    params["threshold"].fill_(1.0)
    params["leak"].fill_(0.0)  # no leak: the membrane integrates, more spikes
    assert chip.trace(x).spikes_hidden.sum() > plain.trace(x).spikes_hidden.sum()
    params["leak"].fill_(5.0)  # a runaway factor (not through the wrapper) is refused at the next query
    with pytest.raises(ValueError, match=r"drift factor leak must stay in 0..2, got 5..5"):
        chip(x)
    # the differentiable model stays the nominal network whatever the drift
    params["leak"].fill_(0.5)
    f = NeuromorphicChip(**SMALL, mode="float", noise=0.0)
    ref = f.differentiable(x)
    f.drift_parameters()["threshold"].fill_(2.0)
    assert torch.equal(f.differentiable(x), ref) and not torch.equal(f(x), ref)
