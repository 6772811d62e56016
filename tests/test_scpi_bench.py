"""The in-process SCPI bench: instruments, physics, faults, transactions per batch, end-to-end MF-FF."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from physnn.core.registry import build_system
from physnn.devices.errors import (
    ConnectionLost,
    InstrumentError,
    InstrumentReportedError,
    InstrumentTimeout,
    ProtocolError,
)
from physnn.devices.scpi import KEYSIGHT_33500B, SCPIAWG, SCPIScope
from physnn.devices.sim.scpi_bench import BenchTransport, Fault, SCPIBench, simulated_awg_scope
from physnn.simulators.optics import OpticalCavity

N = 8  # inputs and outputs of the small benches used here


def _x(b: int, seed: int = 1, n: int = N) -> torch.Tensor:
    """Drive values on the optics' 256 levels in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, n), generator=g).float() / 255


def _quiet(**kw):
    """A deterministic bench: no shot/read noise in the optics, no scope noise."""
    opts = dict(n_inputs=N, n_outputs=N, noise=False, noise_volts=0.0, timeout=0.05, backoff=0.005)
    opts.update(kw)
    return simulated_awg_scope(**opts)


@pytest.fixture(scope="module")
def reference():
    """Fault-free answers of a quiet bench, split into several waveforms (max_points=210)."""
    x = _x(10)
    sys = _quiet(max_points=210)
    y = sys(x)
    assert sys.max_per_waveform == 4 and sys.waveforms_for(10) == 3
    sys.close()
    return x, y


# ------------------------------------------------------------- instruments
def _drivers(**bench_kw):
    bench = SCPIBench(**bench_kw)
    return (
        bench,
        SCPIAWG(BenchTransport(bench, "awg", timeout=0.05)),
        SCPIScope(BenchTransport(bench, "scope", timeout=0.05)),
    )


def test_sim_awg_error_queue_for_bad_settings_and_blocks():
    bench, awg, _ = _drivers()
    assert "33522B" in awg.identify()
    awg.send("vpp", value=20.0)  # > 10 Vpp
    awg.transport.write("SOUR1:FROB 3")
    with pytest.raises(InstrumentReportedError) as info:
        awg.check_errors()
    assert info.value.errors == [(-222, "Data out of range"), (-113, "Undefined header")]
    assert bench.awg.vpp == 0.1  # refused: the power-on value stays
    bad = np.zeros(8, dtype="<i2")
    bad[3] = -32768
    awg.send("byte_order")
    awg.transport.write_binary("SOUR1:DATA:ARB:DAC physnn,", bad.tobytes())
    with pytest.raises(InstrumentReportedError, match="DAC code"):
        awg.check_errors()
    awg.upload("physnn", np.arange(8, dtype=np.int16), 1e6)
    awg.transport.write_binary("SOUR1:DATA:ARB:DAC physnn,", np.arange(8, dtype="<i2").tobytes())
    with pytest.raises(InstrumentReportedError, match="-221"):
        awg.check_errors()  # same name again without VOL:CLE
    assert bench.awg.arbs["physnn"].tolist() == list(range(8))


def test_simulated_instruments_dispatch_on_the_drivers_command_table():
    """The simulation answers the headers of the driver's own table: another model's table changes both."""
    table = dict(KEYSIGHT_33500B, output_on="OUTPut1:STATe ON", output_off="OUTPut1:STATe OFF")
    bench = SCPIBench(awg_options={"table": table})
    awg = SCPIAWG(BenchTransport(bench, "awg", timeout=0.05), commands=table)
    awg.output(True)
    assert bench.awg.output is True
    awg.transport.write("OUTP1 OFF")  # the 33500B header is not in this table any more
    with pytest.raises(InstrumentReportedError, match="-113"):
        awg.check_errors()
    assert bench.awg.output is True
    awg.safe_state()
    assert bench.awg.output is False
    with pytest.raises(ValueError, match=r"SimAWG has no simulation of command\(s\) \['frobnicate'\]"):
        SCPIBench(awg_options={"table": dict(KEYSIGHT_33500B, frobnicate="SOUR1:FROB {value}")})


def test_sim_trigger_fires_only_when_scope_is_armed():
    bench, awg, scope = _drivers(acq_delay=0.02)
    awg.configure(vpp=1.0, offset=0.0, load="INF", sample_rate=1e6)
    scope.configure(
        time_range=1e-4, channel_range=2.0, channel_offset=0.0, trigger_source="EXT", trigger_level=1.0, points=100
    )
    awg.upload("physnn", np.full(50, 1000, dtype=np.int16), 1e6)
    awg.output(True)
    awg.trigger()  # scope not armed: lost
    assert bench.lost_triggers == 1 and bench.scope.record is None
    assert scope.preamble().points == 0
    scope.arm()
    with pytest.raises(InstrumentTimeout):
        scope.wait_acquisition(0.03)  # armed, never triggered: *OPC? never answers
    scope.transport.clear()
    scope.resync()
    scope.arm()
    awg.trigger()
    assert scope.ask("operation_condition") == "+8"  # acquiring for acq_delay
    scope.wait_acquisition(0.5)  # answered once the acquisition is complete
    assert scope.ask("operation_condition") == "+0"
    pre, codes = scope.read_waveform()
    assert pre.points == 100 and codes.size == 100 and pre.xincrement == pytest.approx(1e-6)
    assert bench.triggers == 2 and bench.lost_triggers == 1
    awg.check_errors()
    scope.check_errors()


def test_sim_preamble_and_block_framing_are_the_real_formats():
    sys = _quiet()
    sys(_x(3))
    t = sys.scope.transport
    pre = t.query(":WAV:PRE?")
    assert re.fullmatch(r"\+1,\+0,\+\d+,\+1,(?:[+-]\d\.\d{8}E[+-]\d\d,){2}\+0,(?:[+-]\d\.\d{8}E[+-]\d\d,){2}\+0", pre)
    t.write(":WAV:DATA?")
    head = t.read_exact(2)
    digits = t.read_exact(int(head[1:2]))
    assert head[:1] == b"#" and int(digits) == 2 * sys.record_points
    t.read_exact(int(digits))
    assert t.read_exact(1) == b"\n"
    sys.close()


# ----------------------------------------------------------------- physics
def test_integrals_are_an_exact_scale_of_the_simulator_outputs():
    x = _x(20)
    sys = _quiet()
    direct = OpticalCavity(N, N, noise=False)
    y = sys(x).double()
    w = sys.framing.slot // N  # points per window; gain 1 V per unit
    np.testing.assert_allclose(y * sys.sample_rate / w, direct(x).double(), atol=2 * 2.0 / 4096)
    assert sys.backend.spec.levels == sys.spec.levels == 256
    sys.close()


def test_spec_units_are_volts_in_and_the_features_units_out():
    """The simulated bench is driven in volts at the AWG output (issue 15: it used to copy the optics' 'pi rad')."""
    sys = _quiet()
    assert (sys.spec.units, sys.spec.output_units, sys.spec.low, sys.spec.high) == ("V", "V*s", 0.0, 1.0)
    sys.close()
    sys = _quiet(features="fft")
    assert (sys.spec.units, sys.spec.output_units) == ("V", "V")
    sys.close()
    with pytest.warns(DeprecationWarning, match="'max_retries' is now 'retries'"):
        sys = _quiet(max_retries=1)  # the name before the shared vocabulary: old run files still rebuild
    assert sys.retries == 1
    sys.close()


def test_fft_features_read_the_tone_amplitudes():
    x = _x(20)
    sys = _quiet(features="fft")
    direct = OpticalCavity(N, N, noise=False)
    y = sys(x).double()
    np.testing.assert_allclose(y / (4.0 / N), direct(x).double(), atol=0.02)
    sys.close()


def test_same_seed_same_answers_with_noise_on():
    x = _x(6)
    a = simulated_awg_scope(n_inputs=N, n_outputs=N, seed=3)
    b = build_system("awg-scope-sim", n_inputs=N, n_outputs=N, seed=3)
    assert torch.equal(a(x), b(x))
    a.close()
    b.close()


def test_scope_clipping_raises_with_output_off_or_is_flagged():
    # identity backend: the response window of input k sits at x_k volts; +-0.3 V holds the sync only
    x = torch.full((4, N), 0.9)
    x[0] = 0.1
    for mode in ("raise", "flag"):
        sys = simulated_awg_scope(n_inputs=N, backend="identity", noise_volts=0.0, timeout=0.05, on_clip=mode)
        sys.channel_range, sys.channel_offset = 0.6, 0.0
        sys.scope.send("channel_range", value=0.6)
        sys.scope.send("channel_offset", value=0.0)
        if mode == "raise":
            with pytest.raises(InstrumentError, match="3 of 4 samples reached the scope's full scale"):
                sys(x)
            assert sys.bench.awg.output is False
        else:
            y = sys(x)
            assert sys.last_clipped.tolist() == [False, True, True, True]
            w = sys.framing.slot // N
            np.testing.assert_allclose(y[0].numpy() * sys.sample_rate / w, 0.1, atol=1e-3)
        assert sys.stats.counters["clipped_samples"] == 3
        sys.close()


# ------------------------------------------------------------ transactions
def test_transactions_per_batch_constant_in_batch_size():
    sys = _quiet(max_points=210)
    sys(_x(1))  # first batch also turns the output on
    per_wave = []
    for b in (1, 2, 4):  # all fit one waveform
        before = sum(sys.bench.transactions.values())
        sys(_x(b))
        per_wave.append(sum(sys.bench.transactions.values()) - before)
    assert per_wave == [12, 12, 12]
    for b in (5, 9, 12, 13):
        before = sum(sys.bench.transactions.values())
        sys(_x(b))
        assert sum(sys.bench.transactions.values()) - before == 12 * sys.waveforms_for(b) == 12 * -(-b // 4)
    assert sys.bench.triggers == 1 + 3 + 2 + 3 + 3 + 4 and sys.bench.lost_triggers == 0
    sys.close()


# ------------------------------------------------------------------ faults
FAULTS = [
    dict(kind="no_reply", command=":WAV:PRE?", instrument="scope", skip=1),
    dict(kind="no_reply", command="*OPC?", instrument="scope", skip=1),
    dict(kind="no_reply", command="SYST:ERR?", instrument="awg", skip=2),
    dict(kind="late_reply", command="*OPC?", instrument="scope", skip=1),
    dict(kind="late_reply", command=":WAV:PRE?", instrument="scope", skip=1),
    dict(kind="late_reply", command=":OPER:COND?", instrument="scope", skip=1),
    dict(kind="truncated_block", command=":WAV:DATA?", instrument="scope", skip=1),
    dict(kind="truncated_block", command=":WAV:DATA?", instrument="scope", skip=1, times=2),
    dict(kind="connection_lost", command="*TRG", instrument="awg", skip=1),
    dict(kind="connection_lost", command=":WAV:DATA?", instrument="scope", skip=1),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f"{f['kind']}@{f['command']}x{f.get('times', 1)}")
def test_fault_in_the_middle_of_a_batch_recovers_exact_data(fault, reference):
    x, y_ref = reference
    events = []
    sys = _quiet(max_points=210, faults=[fault])
    sys.event_hook = lambda kind, fields: events.append(kind)
    y = sys(x)  # 3 waveforms; the fault hits the second
    assert sys.bench.faults[0].fired == fault.get("times", 1)
    assert torch.equal(y, y_ref)
    assert "retry" in events or "truncated_block" in events
    if fault["kind"] in ("late_reply", "no_reply"):
        # recovered by the resync alone: no stale reply was ever parsed as an answer
        assert "protocol_error" not in events, events
    if fault["kind"] == "connection_lost":
        assert sys.stats.counters["reconnected"] == 1
        assert sys.bench.awg.output is True  # configuration and output re-applied after the reboot
    sys.close()
    assert sys.bench.awg.output is False


def test_late_reply_is_never_taken_for_the_next_answer(reference):
    x, y_ref = reference
    # The late *OPC? answer ("1") arrives while the driver recovers; a stale "1" taken as the
    # answer to :OPER:COND? would read as "not armed", to :WAV:PRE? as a malformed preamble.
    sys = _quiet(
        max_points=210, backoff=0.0, faults=[Fault("late_reply", "*OPC?", "scope", skip=1, times=2, late_factor=1.2)]
    )
    y = sys(x)
    assert torch.equal(y, y_ref)
    assert sys.stats.counters["timeout"] == 2
    assert sys.stats.counters.get("protocol_error", 0) == 0  # the late "1" was dropped, never parsed
    sys.close()


def test_permanent_fault_raises_keeps_finished_rows_and_turns_output_off(reference):
    x, y_ref = reference
    sys = _quiet(max_points=210, retries=1, faults=[Fault("no_reply", "*OPC?", "scope", skip=1, times=99)])
    with pytest.raises(InstrumentTimeout, match="acquisition not complete") as info:
        sys(x)
    assert torch.equal(info.value.partial, y_ref[:4])  # the first waveform's 4 samples are not lost
    assert torch.equal(sys.last_partial, y_ref[:4])
    assert sys.bench.awg.output is False
    assert sys.stats.counters["gave_up"] == 1 and sys.stats.counters["retry"] == 1
    sys.close()


def test_failure_before_any_waveform_finished_carries_an_empty_float_tensor():
    """Issue 15 item 7: with no finished waveform, ``exc.partial`` used to be the transport's raw bytes
    of the truncated block. It is always a float32 ``[rows_done, n_outputs]`` tensor, here 0 rows."""
    sys = _quiet(retries=1, faults=[Fault("truncated_block", ":WAV:DATA?", "scope", times=99)])
    with pytest.raises(ProtocolError, match="truncated block") as info:
        sys(_x(3))
    for partial in (info.value.partial, sys.last_partial):
        assert isinstance(partial, torch.Tensor) and partial.dtype == torch.float32
        assert tuple(partial.shape) == (0, N)
    assert info.value.completed_rows == 0
    assert isinstance(info.value.__cause__.received, bytes)  # the bytes that did arrive stay on the cause
    assert sys.bench.awg.output is False
    sys.close()


def test_connection_that_stays_down_gives_a_clear_error_with_output_off():
    sys = _quiet(
        retries=2,
        faults=[
            Fault("connection_lost", ":SING", "scope", times=99),
            Fault("connection_lost", "*IDN?", "scope", skip=1, times=99),
        ],
    )
    with pytest.raises(ConnectionLost):
        sys(_x(2))
    assert sys.bench.awg.output is False
    assert sys.stats.counters["gave_up"] == 1
    sys.close()


def test_ctrl_c_during_recovery_turns_output_off_and_reraises():
    sys = _quiet(faults=[Fault("no_reply", "*OPC?", "scope")])

    def hook(kind, fields):
        if kind == "retry":
            raise KeyboardInterrupt

    sys.event_hook = hook
    with pytest.raises(KeyboardInterrupt):
        sys(_x(2))
    assert sys.bench.awg.output is False
    sys.close()


# --------------------------------------------------------------- end to end
@pytest.mark.slow
def test_mfff_trains_vowels_through_the_scpi_bench_like_the_direct_simulator(shared_data):
    from physnn.core.model import PNN
    from physnn.data.datasets import load_vowels
    from physnn.train.mfff import MFFF

    d = load_vowels(shared_data / "vowels.csv", seed=0)
    n_in = d.n_features + d.n_classes

    def run(systems):
        pnn = PNN(systems, d.n_features, d.n_classes, hidden=n_in, seed=0)
        MFFF(epochs=15, batch_size=32, lr=0.02, seed=0, eval_every=0).fit(pnn, d.x_train, d.y_train)
        return pnn.score(d.x_test, d.y_test)

    direct = [OpticalCavity(n_in, 16, seed=s) for s in (1, 2)]
    acc_direct = run(direct)
    bench = [simulated_awg_scope(n_inputs=n_in, n_outputs=16, seed=s) for s in (1, 2)]
    try:
        acc_bench = run(bench)
        assert all(b.stats.counters.get("retry", 0) == 0 for b in bench)
    finally:
        for b in bench:
            b.close()
    assert acc_direct > 0.6, acc_direct  # it learned something
    assert abs(acc_bench - acc_direct) <= 0.02 + 1e-9, (acc_bench, acc_direct)
    assert all(b.bench.awg.output is False for b in bench)


# The lab script itself (train_awg_scope.py: run file, Ctrl-C, faults) is tested in tests/test_lab_scripts.py.
