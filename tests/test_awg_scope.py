"""AWG/scope drivers and AWGScopeSystem: exact bytes (ScriptedTransport), limits, pyvisa-sim, hardware."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn.devices.awg_scope import BARKER13, AWGScopeSystem, BenchLimits, Framing, window_edges
from physnn.devices.errors import (
    ConnectionLost,
    InstrumentError,
    InstrumentReportedError,
    InstrumentTimeout,
    LimitError,
    ProtocolError,
)
from physnn.devices.scpi import KEYSIGHT_33500B, SCPIAWG, Preamble, SCPIScope, scpi_number
from physnn.devices.transport import ScriptedTransport, VisaTransport, encode_block

SIM_DIR = Path(__file__).resolve().parents[1] / "devices" / "sim"
AWG_IDN = "Agilent Technologies,33522B,MY1,1.0"
SCOPE_IDN = "KEYSIGHT TECHNOLOGIES,DSOX3024T,MY2,1.0"
NO_ERR = '+0,"No error"'
#: the AWG's safe state: output off, then read back (OUTP1? must answer 0)
SAFE = [("OUTP1 OFF", None), ("OUTP1?", "0")]


# ------------------------------------------------------------ formatting
def test_scpi_number_exact():
    assert [scpi_number(v) for v in (1.0, 0.5, 1e6, 1.5e-5, 1e-9, -0.0, 65514, -2.25)] == [
        "1.0",
        "0.5",
        "1000000.0",
        "1.5e-05",
        "1.0e-09",
        "0.0",
        "65514",
        "-2.25",
    ]
    with pytest.raises(ValueError, match="non-finite"):
        scpi_number(float("nan"))
    with pytest.raises(TypeError):
        scpi_number(True)


# ------------------------------------------------------------- AWG bytes
def test_awg_configure_exact_bytes():
    t = ScriptedTransport(
        [
            (c, None)
            for c in (
                "OUTP1 OFF",
                "*CLS",
                "FORM:BORD SWAP",
                "OUTP1:LOAD INF",
                "SOUR1:FUNC ARB",
                "SOUR1:VOLT 1.5",
                "SOUR1:VOLT:OFFS -0.25",
                "SOUR1:FUNC:ARB:SRAT 2500000.0",
                "SOUR1:BURS:MODE TRIG",
                "SOUR1:BURS:NCYC 1",
                "TRIG1:SOUR BUS",
                "SOUR1:BURS:STAT ON",
            )
        ]
    )
    SCPIAWG(t).configure(vpp=1.5, offset=-0.25, load="INF", sample_rate=2.5e6)
    t.close()


def test_configure_walks_the_settings_table_and_refuses_bad_keywords_before_writing():
    t = ScriptedTransport([])
    awg = SCPIAWG(t)
    assert [row.command for row in SCPIAWG.SETTINGS][:3] == ["output_off", "clear_status", "byte_order"]
    with pytest.raises(TypeError, match="missing sample_rate; unknown vpp_typo"):
        awg.configure(vpp_typo=1.0, vpp=1.0, offset=0.0, load="INF")
    with pytest.raises(ValueError, match="non-finite"):
        awg.configure(vpp=1.0, offset=float("nan"), load="INF", sample_rate=1e6)
    assert bytes(t.written) == b""  # nothing half-configured


def test_awg_upload_trigger_output_exact_bytes():
    codes = np.array([0, 1, -1, 32767, -32767, 256, -256, 2], dtype=np.int16)
    block = b"#216" + struct.pack("<8h", 0, 1, -1, 32767, -32767, 256, -256, 2)
    t = ScriptedTransport(
        [
            ("SOUR1:DATA:VOL:CLE", None),
            (b"SOUR1:DATA:ARB:DAC physnn," + block + b"\n", None),
            ("SOUR1:FUNC:ARB physnn", None),
            ("SOUR1:FUNC ARB", None),
            ("SOUR1:FUNC:ARB:SRAT 1000000.0", None),
            ("OUTP1 ON", None),
            ("*TRG", None),
            *SAFE,
            *SAFE,
            ("*RST", None),
            ("*OPC?", "1"),
        ]
    )
    awg = SCPIAWG(t)
    awg.upload("physnn", codes, 1e6)
    awg.output(True)
    awg.trigger()
    awg.safe_state()
    awg.safe_state()  # idempotent: the same command again, harmless
    awg.send("reset")
    awg.opc()
    t.close()


def test_awg_upload_rejects_bad_codes_before_writing():
    t = ScriptedTransport([])
    awg = SCPIAWG(t)
    with pytest.raises(ValueError, match="-32768"):
        awg.upload("physnn", np.array([-32768] * 8, dtype=np.int16), 1e6)
    with pytest.raises(TypeError, match="int16"):
        awg.upload("physnn", np.zeros(8, dtype=np.int32), 1e6)
    assert bytes(t.written) == b""


def test_check_errors_drains_and_reports_all():
    t = ScriptedTransport(
        [
            ("SYST:ERR?", '-222,"Data out of range"'),
            ("SYST:ERR?", '-113,"Undefined header"'),
            ("SYST:ERR?", NO_ERR),
            ("SYST:ERR?", NO_ERR),
        ]
    )
    awg = SCPIAWG(t)
    with pytest.raises(InstrumentReportedError) as info:
        awg.check_errors()
    assert info.value.code == -222
    assert info.value.errors == [(-222, "Data out of range"), (-113, "Undefined header")]
    assert "Undefined header" in str(info.value)
    assert awg.check_errors() == []
    t.close()


def test_check_errors_bounded_and_parse_failure():
    t = ScriptedTransport([("SYST:ERR?", '-100,"Command error"')] * 3 + [("SYST:ERR?", "garbage")])
    awg = SCPIAWG(t)
    with pytest.raises(ProtocolError, match="not empty after 3 reads"):
        awg.check_errors(max_errors=3)
    with pytest.raises(ProtocolError, match="cannot parse"):
        awg.check_errors()
    t.close()


RESYNC = [("*ESE 39", None), ("*ESE?", "+39"), ("*ESE 92", None), ("*ESE?", "+92"), ("*ESE 0", None)]


def test_resync_drops_late_replies_before_the_marker():
    t = ScriptedTransport(RESYNC)
    t.feed(b"+0,+0,+100,+1,1e-6,0,0,1e-3,0,0\n")  # a late :WAV:PRE? answer
    t.feed(b"1\n")  # a late *OPC? answer
    assert SCPIScope(t).resync() == 2
    t.close()


def test_resync_survives_a_stale_reply_equal_to_the_marker():
    t = ScriptedTransport(RESYNC)
    t.feed(b"+39\n")  # stale, and by bad luck equal to the first marker
    assert SCPIAWG(t).resync() == 1  # round 2 drops the real first echo instead
    with pytest.raises(InstrumentTimeout):
        t.read()  # nothing left over: aligned
    t.close()


def test_resync_fails_clearly_without_marker():
    t = ScriptedTransport([("*ESE 39", None), ("*ESE?", "+7")])
    with pytest.raises(ProtocolError, match="marker 39 not echoed within 1 replies"):
        SCPIAWG(t).resync(attempts=1)


def test_other_model_is_a_new_table():
    table = dict(KEYSIGHT_33500B, output_off="OUTPut1:STATe OFF", output_query="OUTPut1:STATe?")
    t = ScriptedTransport([("OUTPut1:STATe OFF", None), ("OUTPut1:STATe?", "OFF")])
    SCPIAWG(t, commands=table).safe_state()
    t.close()


# ----------------------------------------------------------- scope bytes
def test_scope_configure_arm_wait_exact_bytes():
    t = ScriptedTransport(
        [
            (c, None)
            for c in (
                ":TIM:RANG 0.001",
                ":TIM:REF LEFT",
                ":CHAN1:RANG 2.0",
                ":CHAN1:OFFS 0.5",
                ":TRIG:EDGE:SOUR EXT",
                ":TRIG:EDGE:LEV 1.0",
                ":WAV:SOUR CHAN1",
                ":WAV:FORM WORD",
                ":WAV:BYT LSBF",
                ":WAV:UNS 0",
                ":WAV:POIN:MODE RAW",
                ":WAV:POIN 1000",
            )
        ]
        + [
            (":SING", None),
            (":OPER:COND?", "+8"),
            ("*OPC?", "1"),
            (":SING", None),
            (":OPER:COND?", "+0"),
            ("*OPC?", None),
        ]
    )
    s = SCPIScope(t)
    s.configure(
        time_range=1e-3, channel_range=2.0, channel_offset=0.5, trigger_source="EXT", trigger_level=1.0, points=1000
    )
    s.arm()
    s.wait_acquisition(0.5)
    with pytest.raises(ProtocolError, match="not armed"):
        s.arm()
    with pytest.raises(InstrumentTimeout, match="acquisition not complete within 0.01 s"):
        s.wait_acquisition(0.01)
    assert t.timeout == 1.0  # restored after the long wait
    t.close()


def test_preamble_parse_and_volts():
    p = Preamble.parse("+1,+0,+4,+1,+1.00000000E-06,-0.00000000E+00,+0,+2.00000000E-03,+5.00000000E-01,+0")
    assert p.points == 4 and p.xincrement == 1e-6 and p.yorigin == 0.5
    np.testing.assert_allclose(p.volts(np.array([0, 100, -100], dtype=np.int16)), [0.5, 0.7, 0.3])
    with pytest.raises(ProtocolError, match="9 fields"):
        Preamble.parse("1,0,4,1,1e-6,0,0,1e-3,0")
    with pytest.raises(ProtocolError, match="zero scale"):
        Preamble.parse("1,0,4,1,1e-6,0,0,0,0,0")


def test_read_waveform_checks_points_and_format():
    data = struct.pack("<4h", 1, -2, 3, -4)
    pre = "+1,+0,+4,+1,+1.0E-06,+0.0E+00,+0,+1.0E-03,+0.0E+00,+0"
    t = ScriptedTransport(
        [
            (":WAV:PRE?", pre),
            (":WAV:DATA?", encode_block(data) + b"\n"),
            (":WAV:PRE?", pre.replace("+4,", "+5,", 1)),
            (":WAV:DATA?", encode_block(data) + b"\n"),
            (":WAV:PRE?", "+0" + pre[2:]),
        ]
    )
    s = SCPIScope(t)
    p, codes = s.read_waveform()
    assert codes.tolist() == [1, -2, 3, -4] and p.points == 4
    with pytest.raises(ProtocolError, match="holds 4 points, the preamble announced 5"):
        s.read_waveform()
    with pytest.raises(ProtocolError, match="WORD"):
        s.read_waveform()
    t.close()


# ----------------------------------------------------------------- limits
def test_bench_limits_name_value_and_limit():
    lim = BenchLimits(max_vpp=2.0, max_abs_offset=1.0, max_abs_voltage=1.5, max_sample_rate=1e7)
    with pytest.raises(LimitError, match=r"Vpp = 2.5 V .* max_vpp = 2 V"):
        lim.check(vpp=2.5, offset=0.0, sample_rate=1e6)
    with pytest.raises(LimitError, match=r"offset = -1.2 V .* 1 V"):
        lim.check(vpp=0.5, offset=-1.2, sample_rate=1e6)
    with pytest.raises(LimitError, match=r"peak voltage .* = 1.8 V exceeds .* max_abs_voltage = 1.5 V"):
        lim.check(vpp=1.6, offset=1.0, sample_rate=1e6)
    with pytest.raises(LimitError, match=r"sample rate 2e\+07 Sa/s"):
        lim.check(vpp=1.0, offset=0.0, sample_rate=2e7)
    with pytest.raises(LimitError, match="max_points = 65536"):
        lim.check_waveform(np.zeros(70000, dtype=np.int16))
    assert isinstance(LimitError("x"), ValueError)
    with pytest.raises(ValueError, match="min_sample_rate"):
        BenchLimits(min_sample_rate=10, max_sample_rate=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        lim.max_vpp = 10  # frozen


def test_framing_layout_exact():
    f = Framing(2, symbol_samples=2, guard_samples=1, sync_chip_samples=1)
    w = f.waveform(np.array([[10, -20], [30, 40]]))
    expected = [0] + list(BARKER13 * 32767) + [0] + [10, 10, -20, -20, 0] + [30, 30, 40, 40, 0]
    assert w.dtype == np.int16 and w.tolist() == expected
    assert f.length(2) == len(expected) and f.max_samples(len(expected)) == 2
    assert f.slot_start(1) == 13 + 1 + 5
    assert window_edges(10, 3).tolist() == [0, 3, 6, 10]


# ------------------------------------------------ the system, byte for byte
AWG_CONFIG = [
    "OUTP1 OFF",
    "*CLS",
    "FORM:BORD SWAP",
    "OUTP1:LOAD INF",
    "SOUR1:FUNC ARB",
    "SOUR1:VOLT 1.0",
    "SOUR1:VOLT:OFFS 0.5",
    "SOUR1:FUNC:ARB:SRAT 1000000.0",
    "SOUR1:BURS:MODE TRIG",
    "SOUR1:BURS:NCYC 1",
    "TRIG1:SOUR BUS",
    "SOUR1:BURS:STAT ON",
]
SCOPE_CONFIG = [
    ":TIM:RANG 2.3e-05",
    ":TIM:REF LEFT",
    ":CHAN1:RANG 2.0",
    ":CHAN1:OFFS 0.0",
    ":TRIG:EDGE:SOUR EXT",
    ":TRIG:EDGE:LEV 1.0",
    ":WAV:SOUR CHAN1",
    ":WAV:FORM WORD",
    ":WAV:BYT LSBF",
    ":WAV:UNS 0",
    ":WAV:POIN:MODE RAW",
    ":WAV:POIN 23",
]
# n_inputs=2, 1 point per symbol, guard 1, chip 1: lead 1 + sync 13 + guard 1 + slot 2 + guard 1 = 18 points
TINY = dict(
    n_inputs=2,
    n_outputs=2,
    symbol_samples=1,
    guard_samples=1,
    sync_chip_samples=1,
    max_waveform_points=18,
    max_delay_samples=4,
    vpp=1.0,
    offset=0.5,
    sample_rate=1e6,
)
PRE = "+1,+0,+23,+1,+1.00000000E-06,+0.00000000E+00,+0,+1.00000000E-03,+0.00000000E+00,+0"


def _trace(delay: int = 2, slot=(500, 250)) -> bytes:
    codes = np.zeros(23, dtype=np.int16)
    s = 1 + delay
    codes[s : s + 13] = BARKER13 * 200
    codes[s + 14 : s + 16] = slot
    return encode_block(codes.astype("<i2").tobytes()) + b"\n"


def _config_scripts():
    awg = ScriptedTransport(
        [("*IDN?", AWG_IDN)] + [(c, None) for c in AWG_CONFIG] + [("SYST:ERR?", NO_ERR)], resource="AWG"
    )
    scope = ScriptedTransport(
        [("*IDN?", SCOPE_IDN), ("*CLS", None)] + [(c, None) for c in SCOPE_CONFIG] + [(":SYST:ERR?", NO_ERR)],
        resource="SCOPE",
    )
    return awg, scope


def _batch_steps(x_codes, *, first=True, trace=None):
    wave = [0] + list(BARKER13 * 32767) + [0] + list(x_codes) + [0]
    block = encode_block(struct.pack(f"<{len(wave)}h", *wave))
    awg = [
        ("SOUR1:DATA:VOL:CLE", None),
        (b"SOUR1:DATA:ARB:DAC physnn," + block + b"\n", None),
        ("SOUR1:FUNC:ARB physnn", None),
        ("SOUR1:FUNC ARB", None),
        ("SOUR1:FUNC:ARB:SRAT 1000000.0", None),
    ]
    if first:
        awg.append(("OUTP1 ON", None))
    awg += [("*TRG", None), ("SYST:ERR?", NO_ERR)]
    scope = [
        (":SING", None),
        (":OPER:COND?", "+8"),
        ("*OPC?", "1"),
        (":WAV:PRE?", PRE),
        (":WAV:DATA?", trace if trace is not None else _trace()),
    ]
    return awg, scope


def _system(awg_t, scope_t, **kw):
    opts = dict(TINY, limits=BenchLimits(max_points=18), acquisition_timeout=0.5, channel_range=2.0)
    opts.update(kw)
    return AWGScopeSystem(SCPIAWG(awg_t), SCPIScope(scope_t), **opts)


def test_system_one_batch_exact_bytes_and_features():
    awg_t, scope_t = _config_scripts()
    sys = _system(awg_t, scope_t)
    assert sys.max_per_waveform == 1 and sys.record_points == 23
    assert sys.awg_idn == AWG_IDN and sys.scope_idn == SCOPE_IDN
    a, s = _batch_steps([-32767, 32767])
    awg_t.extend(a)
    scope_t.extend(s)
    y = sys(torch.tensor([[0.0, 1.0]]))
    # window integrals: code * yincrement * xincrement
    np.testing.assert_allclose(y.numpy(), [[0.5e-6, 0.25e-6]], rtol=1e-6)
    assert y.dtype == torch.float32 and sys.stats.samples == 1
    awg_t.extend(SAFE)
    sys.close()  # verifies both scripts were used to the last step
    assert sys.closed


def test_system_second_batch_does_not_repeat_output_on_and_maps_mid_codes():
    awg_t, scope_t = _config_scripts()
    sys = _system(awg_t, scope_t)
    for first, (x, codes) in enumerate([((0.25, 0.75), [-16384, 16384]), ((0.5, 0.0), [0, -32767])]):
        a, s = _batch_steps(codes, first=(first == 0))
        awg_t.extend(a)
        scope_t.extend(s)
        sys(torch.tensor([x]))
    awg_t.extend(SAFE)
    sys.close()


def test_limit_violation_at_construction_writes_nothing():
    awg_t, scope_t = ScriptedTransport([]), ScriptedTransport([])
    for bad in (dict(vpp=5.0), dict(offset=1.8), dict(sample_rate=1e9), dict(max_waveform_points=10**6)):
        with pytest.raises(LimitError):
            _system(awg_t, scope_t, **bad)
    assert bytes(awg_t.written) == b"" and bytes(scope_t.written) == b""


def test_waveform_too_long_for_one_sample_is_a_limit_error():
    awg_t, scope_t = ScriptedTransport([]), ScriptedTransport([])
    with pytest.raises(LimitError, match="needs a waveform of 18 points"):
        _system(awg_t, scope_t, max_waveform_points=17)
    assert bytes(awg_t.written) == b""


def test_out_of_range_drive_writes_nothing():
    awg_t, scope_t = _config_scripts()
    sys = _system(awg_t, scope_t)
    n_awg, n_scope = len(awg_t.written), len(scope_t.written)
    for bad in ([[0.0, 1.01]], [[-0.1, 0.0]], [[float("nan"), 0.0]]):
        with pytest.raises(ValueError):
            sys(torch.tensor(bad))
    assert len(awg_t.written) == n_awg and len(scope_t.written) == n_scope
    awg_t.extend(SAFE)
    sys.close()


def test_wrong_instrument_is_refused_and_output_forced_off():
    awg_t = ScriptedTransport([("*IDN?", "RIGOL,DG1022,1,1"), *SAFE])
    scope_t = ScriptedTransport([("*IDN?", SCOPE_IDN)])
    with pytest.raises(InstrumentError, match="does not contain '33522B'"):
        _system(awg_t, scope_t, expect_awg_idn="33522B")
    awg_t.verify()
    scope_t.verify()


def test_keyboard_interrupt_mid_batch_turns_output_off_and_reraises():
    awg_t, scope_t = _config_scripts()
    sys = _system(awg_t, scope_t)
    a, s = _batch_steps([-32767, 32767])
    trg = a.index(("*TRG", None))
    a = a[:trg] + [("*TRG", KeyboardInterrupt()), *SAFE]
    awg_t.extend(a)
    scope_t.extend(s[:2])
    with pytest.raises(KeyboardInterrupt):
        sys(torch.tensor([[0.0, 1.0]]))
    awg_t.verify()
    scope_t.verify()
    awg_t.extend(SAFE)
    sys.close()


def test_instrument_error_after_upload_is_raised_with_output_off():
    awg_t, scope_t = _config_scripts()
    sys = _system(awg_t, scope_t)
    a, s = _batch_steps([-32767, 32767])
    a[-1] = ("SYST:ERR?", '-222,"Data out of range"')
    awg_t.extend(a + [("SYST:ERR?", NO_ERR), *SAFE])
    scope_t.extend(s)
    with pytest.raises(InstrumentReportedError, match="-222"):
        sys(torch.tensor([[0.0, 1.0]]))
    awg_t.verify()
    awg_t.extend(SAFE)
    sys.close()


def test_clipped_response_raises_or_flags():
    for mode in ("raise", "flag"):
        awg_t, scope_t = _config_scripts()
        sys = _system(awg_t, scope_t, on_clip=mode)
        a, s = _batch_steps([-32767, 32767], trace=_trace(slot=(32767, 10)))
        awg_t.extend(a + (SAFE if mode == "raise" else []))
        scope_t.extend(s)
        if mode == "raise":
            with pytest.raises(InstrumentError, match="1 of 1 samples reached the scope's full scale") as info:
                sys(torch.tensor([[0.0, 1.0]]))
            assert info.value.partial.shape == (1, 2)
        else:
            y = sys(torch.tensor([[0.0, 1.0]]))
            assert sys.last_clipped.tolist() == [True] and y.shape == (1, 2)
        assert sys.stats.counters["clipped_samples"] == 1
        awg_t.extend(SAFE)
        sys.close()


def test_truncated_block_is_re_requested_once():
    awg_t, scope_t = _config_scripts()
    events = []
    sys = _system(awg_t, scope_t)
    sys.event_hook = lambda kind, fields: events.append(kind)
    a, s = _batch_steps([-32767, 32767])
    full = _trace()
    s[-1] = (":WAV:DATA?", full[:20])
    s += RESYNC + [(":WAV:PRE?", PRE), (":WAV:DATA?", full)]
    awg_t.extend(a)
    scope_t.extend(s)
    y = sys(torch.tensor([[0.0, 1.0]]))
    np.testing.assert_allclose(y.numpy(), [[0.5e-6, 0.25e-6]], rtol=1e-6)
    assert events == ["truncated_block"]
    awg_t.extend(SAFE)
    sys.close()


def test_lost_sync_is_a_protocol_error_then_gives_up_with_output_off():
    awg_t, scope_t = _config_scripts()
    sys = _system(awg_t, scope_t, retries=0)
    flat = encode_block(np.zeros(23, dtype="<i2").tobytes()) + b"\n"
    a, s = _batch_steps([-32767, 32767], trace=flat)
    awg_t.extend(a + SAFE)
    scope_t.extend(s)
    with pytest.raises(ProtocolError, match="sync marker not found"):
        sys(torch.tensor([[0.0, 1.0]]))
    assert sys.stats.counters["gave_up"] == 1
    awg_t.extend(SAFE)
    sys.close()


def test_safe_state_reconnects_once_if_the_link_dropped():
    awg_t, scope_t = _config_scripts()
    sys = _system(awg_t, scope_t)
    awg_t.extend([("OUTP1 OFF", ConnectionLost("link down")), *SAFE])
    sys.safe_state()
    assert awg_t.reopens == 1
    awg_t.extend(SAFE)
    sys.close()


# --------------------------------------------------------------- pyvisa-sim
def _sim_transports(timeout=0.5):
    awg = VisaTransport("TCPIP0::192.168.0.10::inst0::INSTR", backend=f"{SIM_DIR / 'awg.yaml'}@sim", timeout=timeout)
    scope = VisaTransport(
        "TCPIP0::192.168.0.11::inst0::INSTR", backend=f"{SIM_DIR / 'scope.yaml'}@sim", timeout=timeout
    )
    return awg, scope


def test_pyvisa_sim_identity_and_error_queue():
    awg_t, scope_t = _sim_transports()
    awg, scope = SCPIAWG(awg_t), SCPIScope(scope_t)
    assert "33522B" in awg.identify() and "DSOX3024T" in scope.identify()
    awg.configure(vpp=1.0, offset=0.5, load="INF", sample_rate=1e6)
    assert awg.check_errors() == []
    assert float(awg_t.query("SOUR1:VOLT?")) == 1.0
    awg.send("vpp", value=25.0)  # above the instrument's own 10 Vpp
    with pytest.raises(InstrumentReportedError) as info:
        awg.check_errors()
    assert info.value.code == -222
    assert float(awg_t.query("SOUR1:VOLT?")) == 1.0  # refused, unchanged
    assert awg.resync() == 0
    awg_t.close()
    scope_t.close()


def test_pyvisa_sim_system_construction_and_close():
    awg_t, scope_t = _sim_transports()
    sys = AWGScopeSystem(
        SCPIAWG(awg_t),
        SCPIScope(scope_t),
        n_inputs=4,
        n_outputs=4,
        limits=BenchLimits(),
        vpp=1.0,
        offset=0.5,
        sample_rate=1e6,
        max_waveform_points=4096,
        expect_awg_idn="33522B",
        expect_scope_idn="DSOX3024T",
    )
    assert float(scope_t.query(":WAV:POIN?")) == sys.record_points
    assert float(scope_t.query(":CHAN1:RANG?")) == 2.0
    awg_t.write("OUTP1 ON")
    assert awg_t.query("OUTP1?") == "ON"
    sys.safe_state()
    assert awg_t.query("OUTP1?") == "OFF"
    sys.close()
    assert not awg_t.is_open and not scope_t.is_open


def test_pyvisa_sim_instrument_refuses_setting_inside_bench_limits():
    awg_t, scope_t = _sim_transports()
    limits = BenchLimits(max_sample_rate=1e9)
    with pytest.raises(InstrumentReportedError, match="-222"):
        AWGScopeSystem(
            SCPIAWG(awg_t),
            SCPIScope(scope_t),
            n_inputs=4,
            n_outputs=4,
            limits=limits,
            vpp=1.0,
            offset=0.5,
            sample_rate=5e8,
            max_waveform_points=4096,
        )
    assert awg_t.query("OUTP1?") == "OFF"
    awg_t.close()
    scope_t.close()


# ----------------------------------------------------------------- hardware
@pytest.mark.hardware
def test_hardware_awg_identity_errors_and_safe_state(visa_address):
    with VisaTransport(visa_address, timeout=5.0) as t:
        awg = SCPIAWG(t)
        assert awg.identify()
        awg.safe_state()
        awg.check_errors()


@pytest.mark.hardware
def test_hardware_one_small_batch(visa_address, request):
    scope_address = request.config.getoption("--scope-address")
    if not scope_address:
        pytest.skip("hardware test: give --scope-address too to run a batch on a real bench")
    awg_t, scope_t = VisaTransport(visa_address, timeout=5.0), VisaTransport(scope_address, timeout=5.0)
    limits = BenchLimits(max_vpp=0.2, max_abs_offset=0.1, max_abs_voltage=0.2, max_points=65536)
    sys = AWGScopeSystem(
        SCPIAWG(awg_t),
        SCPIScope(scope_t),
        n_inputs=4,
        n_outputs=4,
        limits=limits,
        vpp=0.2,
        offset=0.0,
        sample_rate=1e6,
        max_waveform_points=4096,
        on_clip="flag",
        channel_range=0.4,
    )
    try:
        y = sys(torch.rand(3, 4))
        assert y.shape == (3, 4) and torch.isfinite(y).all()
    finally:
        sys.close()


# ------------------------------------------------------- one vocabulary
def test_both_drivers_share_the_bench_vocabulary():
    """Issue 9: the same constructor names, defaults and base for the same ideas in both drivers."""
    import inspect

    from physnn.devices.bench import BenchSystem
    from physnn.devices.serial_daq import SerialDAQSystem

    shared = ("low", "high", "retries", "backoff", "max_backoff", "on_clip", "open")
    sigs = [inspect.signature(cls).parameters for cls in (AWGScopeSystem, SerialDAQSystem)]
    for key in shared:
        assert all(key in s for s in sigs), key
    for key in ("on_clip", "max_backoff", "open"):
        assert sigs[0][key].default == sigs[1][key].default, key
    assert sigs[0]["on_clip"].default == "flag"
    for old in ("max_retries", "retry_backoff", "connect", "drive_range", "units"):
        assert all(old not in s for s in sigs), old
    assert issubclass(AWGScopeSystem, BenchSystem) and issubclass(SerialDAQSystem, BenchSystem)
    assert AWGScopeSystem._retrying is SerialDAQSystem._retrying  # one retry loop
