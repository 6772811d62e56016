"""SerialDAQSystem: exact bytes on a scripted transport, then the real serial stack on the pty fake."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from physnn.devices.errors import ConnectionLost, InstrumentTimeout, LimitError, ProtocolError
from physnn.devices.serial_daq import (
    ADCSaturation,
    Calibration,
    ConfigurationMismatch,
    SerialDAQSystem,
    probe_ident,
)
from physnn.devices.serial_protocol import (
    CMD_ERROR,
    CMD_IDENT,
    CMD_PING,
    CMD_RUN_BATCH,
    CMD_SAFE,
    CMD_SET_LIMITS,
    DeviceError,
    FrameReader,
    Ident,
    encode_codes,
    encode_error,
    encode_frame,
    encode_ident,
    encode_set_limits,
    parse_error,
    parse_ident,
    reply_cmd,
    unknown_state_flush,
)
from physnn.devices.sim.fake_firmware import FakeFirmware, simulated_serial_daq
from physnn.devices.transport import ScriptedTransport, SerialTransport

# ------------------------------------------------------------------ scripted
# A 2-in / 2-out board: 16-bit DAC spanning 0..5 V, 12-bit ADC at 1 mV per code.
IDENT = Ident(
    protocol=1,
    model="bench",
    serial="S1",
    firmware="1.0",
    n_in=2,
    n_out=2,
    dac_bits=16,
    adc_bits=12,
    max_batch=16,
    settle_us=100,
)
LIMITS = (6554, 58981)  # codes of 0.5 V (ceil) and 4.5 V (floor) at 5/65535 V per code


def req(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    return encode_frame(cmd, seq, payload)


def rep(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    return encode_frame(reply_cmd(cmd), seq, payload)


def run_req(seq: int, codes) -> bytes:
    return req(CMD_RUN_BATCH, seq, encode_codes(np.array(codes)))


def run_rep(seq: int, codes) -> bytes:
    return rep(CMD_RUN_BATCH, seq, encode_codes(np.array(codes)))


def open_steps(ident: Ident = IDENT, seq: int = 1) -> list:
    return [
        (req(CMD_IDENT, seq), rep(CMD_IDENT, seq, encode_ident(ident))),
        (req(CMD_SET_LIMITS, seq + 1, struct.pack("<HH", *LIMITS)), rep(CMD_SET_LIMITS, seq + 1)),
    ]


def safe_step(seq: int) -> tuple:
    return (req(CMD_SAFE, seq), rep(CMD_SAFE, seq))


def scripted(steps, **kw) -> tuple[SerialDAQSystem, ScriptedTransport]:
    t = ScriptedTransport(steps, timeout=0.05)
    opts = dict(
        n_inputs=2,
        n_outputs=2,
        low=0.5,
        high=4.5,
        dac=Calibration.full_scale(16, 0.0, 5.0),
        adc=Calibration(0.001),
        dac_bits=16,
        adc_bits=12,
        serial="S1",
        timeout=0.05,
        retries=2,
        backoff=0.0,
    )
    opts.update(kw)
    return SerialDAQSystem(t, **opts), t


X = torch.tensor([[0.5, 4.5], [2.0, 1.0]])
X_CODES = [[6554, 58981], [26214, 13107]]  # 4.5 V rounds to 58982, one code above the limit: kept at 58981
Y_CODES = [[100, 4094], [1, 2000]]
Y_VOLTS = torch.tensor([[0.1, 4.094], [0.001, 2.0]])


def test_open_sends_ident_then_set_limits_exact_bytes():
    daq, t = scripted(open_steps())
    t.verify()
    assert t.written == req(CMD_IDENT, 1) + req(CMD_SET_LIMITS, 2, bytes.fromhex("9a19 65e6"))
    assert daq.ident == IDENT
    assert daq.code_limits == LIMITS
    assert daq.spec.units == daq.spec.output_units == "V" and (daq.spec.low, daq.spec.high) == (0.5, 4.5)


def test_batch_round_trip_exact_bytes_and_close_sends_safe():
    daq, t = scripted(open_steps() + [(run_req(3, X_CODES), run_rep(3, Y_CODES)), safe_step(4)])
    assert np.array_equal(daq.volts_to_codes(X), np.array(X_CODES))
    y = daq(X)
    assert torch.allclose(y, Y_VOLTS, atol=1e-7, rtol=0)
    assert daq.stats.samples == 2 and daq.stats.counters["run_batch_frames"] == 1
    daq.close()
    assert daq.closed and not t.is_open  # close() verified the script: SAFE was the last write
    assert t.writes[-1] == req(CMD_SAFE, 4)
    daq.close()  # idempotent, writes nothing more
    assert t.writes[-1] == req(CMD_SAFE, 4)


@pytest.mark.parametrize(
    "value, message",
    [
        (4.6, r"input\[1, 0\] = 4.6 V is above the drive limit high=4.5 V"),
        (0.49, r"input\[1, 0\] = 0.49 V is below the drive limit low=0.5 V"),
        (float("nan"), r"input\[1, 0\] = nan is not finite"),
    ],
)
def test_limit_violation_raises_before_anything_is_written(value, message):
    daq, t = scripted(open_steps())
    before = bytes(t.written)
    x = X.clone()
    x[1, 0] = value
    with pytest.raises(LimitError, match=message) as info:
        daq(x)
    assert isinstance(info.value, ValueError)
    assert bytes(t.written) == before  # not one byte reached the board
    assert daq.stats.samples == 0


def test_volts_to_codes_checks_limits_itself():
    daq, t = scripted(open_steps())
    with pytest.raises(LimitError, match=r"input\[0, 1\] = 4.51 V is outside the safe range 0.5..4.5 V"):
        daq.volts_to_codes(torch.tensor([[1.0, 4.51]]))


def test_stale_reply_is_dropped_and_the_right_one_used():
    stale = run_rep(2, [[7, 7], [7, 7]])  # an old answer that arrives late
    daq, t = scripted(open_steps() + [(run_req(3, X_CODES), stale + run_rep(3, Y_CODES))])
    seen = []
    daq.event_hook = lambda kind, fields: seen.append((kind, fields))
    y = daq(X)
    assert torch.allclose(y, Y_VOLTS, atol=1e-7, rtol=0)
    assert daq.stats.counters["stale_reply"] == 1
    assert seen[0] == (
        "stale_reply",
        {"system": "serial-daq", "command": "RUN_BATCH reply", "seq": 2, "expected_seq": 3},
    )


def test_crc_error_in_reply_is_rerequested_with_a_new_seq():
    bad = bytearray(run_rep(3, Y_CODES))
    bad[-2] ^= 0x01
    daq, t = scripted(open_steps() + [(run_req(3, X_CODES), bytes(bad)), (run_req(4, X_CODES), run_rep(4, Y_CODES))])
    y = daq(X)
    t.verify()
    assert torch.allclose(y, Y_VOLTS, atol=1e-7, rtol=0)
    assert daq.stats.counters["crc_error"] == 1
    assert t.clears >= 2  # once on open, once before the re-request


#: after a request that got no reply the board may be waiting for bytes of a frame: one longest frame of zeros
FLUSH = (unknown_state_flush(), None)


def test_timeouts_exhausted_raise_clearly_and_leave_the_board_safe():
    steps = open_steps() + [s for q in (3, 4, 5) for s in ((run_req(q, X_CODES), None), FLUSH)] + [safe_step(6)]
    daq, t = scripted(steps)
    events, kinds = [], []

    def hook(kind, fields):
        kinds.append(kind)
        if "action" in fields:  # the fault events (retry and gave_up events have no action)
            events.append((kind, fields["attempt"], fields["action"]))

    daq.event_hook = hook
    with pytest.raises(
        InstrumentTimeout, match=r"RUN_BATCH rows 0..1 of 2 failed after 3 attempt\(s\): no RUN_BATCH reply \(seq=5\)"
    ) as info:
        daq(X)
    t.verify()  # the three attempts, each unanswered one followed by a flush, then SAFE
    assert events == [("timeout", 1, "retry"), ("timeout", 2, "retry"), ("timeout", 3, "give_up")]
    assert kinds == [  # the shared bench vocabulary
        *["timeout", "retry", "frame_flushed"] * 2,
        *["timeout", "gave_up", "frame_flushed"],
    ]
    assert info.value.completed_rows == 0 and info.value.partial.shape == (0, 2)


def test_completed_chunks_are_kept_when_a_later_chunk_fails():
    ident = Ident(**{**IDENT.to_dict(), "max_batch": 1})
    steps = open_steps(ident) + [(run_req(3, X_CODES[:1]), run_rep(3, Y_CODES[:1]))]
    steps += [s for q in (4, 5, 6) for s in ((run_req(q, X_CODES[1:]), None), FLUSH)] + [safe_step(7)]
    daq, t = scripted(steps)
    with pytest.raises(InstrumentTimeout) as info:
        daq(X)
    t.verify()
    assert info.value.completed_rows == 1
    assert torch.allclose(info.value.partial, Y_VOLTS[:1], atol=1e-7, rtol=0)


def test_device_refusal_is_not_retried_and_safe_follows():
    err = encode_frame(CMD_ERROR, 3, encode_error("OUT_OF_LIMITS", CMD_RUN_BATCH, "code 58981 > 50000"))
    daq, t = scripted(open_steps() + [(run_req(3, X_CODES), err), safe_step(4)])
    with pytest.raises(DeviceError, match="OUT_OF_LIMITS in reply to RUN_BATCH: code 58981 > 50000") as info:
        daq(X)
    t.verify()
    assert info.value.code == 4 and daq.stats.counters["device_error"] == 1


def test_device_busy_is_retried():
    busy = encode_frame(CMD_ERROR, 3, encode_error("BUSY", CMD_RUN_BATCH))
    daq, t = scripted(open_steps() + [(run_req(3, X_CODES), busy), (run_req(4, X_CODES), run_rep(4, Y_CODES))])
    assert torch.allclose(daq(X), Y_VOLTS, atol=1e-7, rtol=0)
    assert daq.stats.counters["device_busy"] == 1


def test_chunking_to_max_batch_one_frame_per_chunk_in_order():
    ident = Ident(**{**IDENT.to_dict(), "max_batch": 2})
    x = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0], [1.0, 2.0]])
    codes = [[13107, 13107], [26214, 26214], [39321, 39321], [52428, 52428], [13107, 26214]]
    outs = [[i, 10 * i] for i in range(1, 6)]
    steps = open_steps(ident) + [
        (run_req(3, codes[0:2]), run_rep(3, outs[0:2])),
        (run_req(4, codes[2:4]), run_rep(4, outs[2:4])),
        (run_req(5, codes[4:5]), run_rep(5, outs[4:5])),
    ]
    daq, t = scripted(steps)
    y = daq(x)
    t.verify()
    assert daq.rows_per_frame == 2 and daq.stats.counters["run_batch_frames"] == 3
    assert torch.allclose(y, torch.tensor(outs, dtype=torch.float32) * 0.001, atol=1e-7, rtol=0)


def test_keyboard_interrupt_sends_safe_then_reraises():
    daq, t = scripted(open_steps() + [(run_req(3, X_CODES), KeyboardInterrupt()), safe_step(4)])
    with pytest.raises(KeyboardInterrupt):
        daq(X)
    t.verify()
    assert t.writes[-1] == req(CMD_SAFE, 4)


def test_connection_lost_reopens_reconfigures_and_retries():
    steps = open_steps() + [(run_req(3, X_CODES), ConnectionLost("cable pulled"))]
    steps += open_steps(seq=4) + [(run_req(6, X_CODES), run_rep(6, Y_CODES))]
    daq, t = scripted(steps)
    y = daq(X)
    t.verify()
    assert t.reopens == 1
    assert torch.allclose(y, Y_VOLTS, atol=1e-7, rtol=0)
    assert daq.stats.counters["connection_lost"] == 1 and daq.stats.counters["reconnected"] == 1


def test_saturation_flagged():
    codes = [[0, 5], [4095, 7]]
    daq, t = scripted(open_steps() + [(run_req(3, X_CODES), run_rep(3, codes))])
    y = daq(X)
    assert daq.stats.counters["adc_saturated_values"] == 2
    assert daq.last_saturated.tolist() == [[True, False], [True, False]]
    assert y[1, 0].item() == pytest.approx(4.095)


def test_saturation_raised_with_the_measurement_attached():
    codes = [[1, 5], [4095, 7]]
    daq, t = scripted(open_steps() + [(run_req(3, X_CODES), run_rep(3, codes)), safe_step(4)], on_clip="raise")
    with pytest.raises(
        ADCSaturation, match=r"1 ADC value\(s\) in 1 row\(s\) at 0 or full scale 4095 \(first: row 1, channel 0"
    ) as info:
        daq(X)
    t.verify()
    assert torch.allclose(info.value.measured, torch.tensor([[0.001, 0.005], [4.095, 0.007]]), atol=1e-7, rtol=0)


def test_adc_code_above_full_scale_is_a_protocol_error():
    daq, t = scripted(
        open_steps() + [(run_req(s, X_CODES), run_rep(s, [[1, 4096], [1, 1]])) for s in (3, 4, 5)] + [safe_step(6)]
    )
    with pytest.raises(ProtocolError, match="ADC code 4096 at row 0, channel 1 exceeds the 12-bit full scale 4095"):
        daq(X)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_in": 3}, r"n_in=3 \(configured 2\)"),
        ({"serial": "OTHER"}, r"serial 'OTHER' \(configured 'S1'\)"),
        ({"protocol": 2}, r"protocol 2 \(this driver speaks 1\)"),
        ({"adc_bits": 16, "n_out": 4}, r"n_out=4 \(configured 2\); adc_bits=16 \(configured 12\)"),
    ],
)
def test_identity_mismatch_is_a_clear_error(change, message):
    ident = Ident(**{**IDENT.to_dict(), **change})
    t = ScriptedTransport([(req(CMD_IDENT, 1), rep(CMD_IDENT, 1, encode_ident(ident)))], timeout=0.05)
    with pytest.raises(ConfigurationMismatch, match=message):
        SerialDAQSystem(
            t,
            n_inputs=2,
            n_outputs=2,
            low=0.5,
            high=4.5,
            dac=Calibration.full_scale(16, 0, 5),
            adc=Calibration(0.001),
            dac_bits=16,
            adc_bits=12,
            serial="S1",
            timeout=0.05,
            backoff=0.0,
        )
    assert t.writes == [req(CMD_IDENT, 1)]  # no SET_LIMITS, no RUN_BATCH to a wrong board
    assert not t.is_open  # the port is released


def test_constructor_validation_names_the_bad_value():
    t = ScriptedTransport([])
    with pytest.raises(LimitError, match=r"safe range 0..6 V maps to DAC codes 0..78642 .* 0..65535"):
        SerialDAQSystem(
            t,
            n_inputs=2,
            n_outputs=2,
            low=0.0,
            high=6.0,
            dac=Calibration.full_scale(16, 0, 5),
            adc=Calibration(0.001),
            open=False,
        )
    with pytest.raises(ValueError, match="on_clip must be one of 'flag', 'raise', got 'clip'"):
        SerialDAQSystem(
            t,
            n_inputs=2,
            n_outputs=2,
            low=0.0,
            high=1.0,
            dac=Calibration(1e-3),
            adc=Calibration(1e-3),
            on_clip="clip",
            open=False,
        )
    with pytest.raises(ValueError, match="volts_per_code must be a positive finite number, got -1"):
        Calibration(-1)
    assert t.written == b""


def test_describe_records_identity_and_limits():
    daq, t = scripted(open_steps())
    d = daq.describe()
    assert d["ident"]["serial"] == "S1" and d["code_limits"] == list(LIMITS)
    assert d["dac_calibration"] == {"volts_per_code": 5 / 65535, "offset_v": 0.0}


# ----------------------------------------------------------------- pty fake
@pytest.fixture
def bench():
    # timeout 0.5 s: far above a pty round trip (~1 ms) even on a loaded machine, so only injected faults time out
    daq = simulated_serial_daq(
        n_inputs=4, n_outputs=3, noise=False, max_batch=8, timeout=0.5, backoff=0.01, retries=2, seed=3
    )
    yield daq
    if not daq.closed:
        daq.close()
    assert not daq.firmware.running


def reference(daq, x: torch.Tensor) -> torch.Tensor:
    """What a fault-free bench returns: the same codes through the same noise-free backend."""
    fw = daq.firmware
    y = fw.backend(fw.codes_to_drive(daq.volts_to_codes(x)))
    return daq.codes_to_volts(fw.outputs_to_codes(y))


def batch(n: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 4, generator=torch.Generator().manual_seed(seed)) * 5.0


def test_pty_round_trip_and_chunking(bench):
    fw = bench.firmware
    assert bench.transport.resource == fw.port and isinstance(bench.transport, SerialTransport)
    x = batch(20)
    y = bench(x)
    assert torch.equal(y, reference(bench, x))
    runs = [seq for name, seq in fw.log if name == "RUN_BATCH"]
    assert len(runs) == 3  # ceil(20 / 8) frames, answers concatenated in order
    assert bench.stats.counters["run_batch_frames"] == 3 and fw.rows_run == 20
    assert [n for n, _ in fw.log[:2]] == ["IDENT", "SET_LIMITS"]
    assert fw.limits == bench.code_limits == (0, 65535)
    bench.close()
    assert fw.log[-1][0] == "SAFE" and fw.safe_count == 1


def test_pty_limit_violation_writes_nothing(bench):
    fw = bench.firmware
    n = len(fw.log)
    with pytest.raises(LimitError, match="above the drive limit high=5 V"):
        bench(torch.full((3, 4), 5.01))
    assert len(fw.log) == n and fw.rows_run == 0


# kind -> (counter the driver must report, rows the board measures again)
FAULTS = {
    "drop": ("timeout", 8),
    "late": ("stale_reply", 8),
    "corrupt_crc": ("crc_error", 8),
    "truncate": ("timeout", 8),
    "disconnect": ("connection_lost", 0),
    "busy": ("device_busy", 0),
    "garbage": ("skipped_bytes", 0),
}


@pytest.mark.parametrize("kind", list(FAULTS))
def test_pty_fault_in_the_middle_of_a_batch_recovers_exactly(bench, kind):
    """The 2nd of 3 chunks meets the fault: same data as a fault-free run, only that chunk re-run, SAFE at close."""
    fw = bench.firmware
    x = batch(20, seed=1)
    fw.inject(kind, after=1)
    y = bench(x)
    counter, rerun = FAULTS[kind]
    assert torch.equal(y, reference(bench, x))
    assert bench.stats.counters[counter] >= 1
    assert fw.rows_run == 20 + rerun
    assert fw.pending_faults == 0 and fw.error is None
    if kind == "disconnect":
        assert fw.reboots == 1 and bench.stats.counters["reconnected"] == 1
        assert [n for n, _ in fw.log].count("SET_LIMITS") == 2  # re-sent after the reopen
    bench.close()
    assert fw.log[-1][0] == "SAFE" and fw.safe_count == 1


def test_pty_late_reply_after_the_timeout_is_never_taken_for_the_next_answer(bench):
    """The reply to chunk 1 arrives after the host gave up on it; the following chunks must
    still get their own answers (a host that ignored SEQ would shift every answer by one)."""
    fw = bench.firmware
    x = batch(24, seed=2)
    fw.inject("late", after=0, delay=0.75)  # host timeout 0.5 s: arrives during the retry's wait
    y = bench(x)
    assert torch.equal(y, reference(bench, x))
    assert bench.stats.counters["timeout"] == 1


def test_pty_unrecoverable_fault_raises_keeps_measured_rows_and_leaves_board_safe(bench):
    fw = bench.firmware
    x = batch(20, seed=4)
    fw.inject("drop", after=1, count=3)  # more than retries=2 allows
    with pytest.raises(InstrumentTimeout, match=r"RUN_BATCH rows 8..15 of 20 failed after 3 attempt") as info:
        bench(x)
    assert info.value.completed_rows == 8
    assert torch.equal(info.value.partial, reference(bench, x[:8]))
    assert fw.safe_count == 1 and fw.log[-1][0] == "SAFE"
    assert torch.equal(bench(x), reference(bench, x))  # the bench is usable again


def test_pty_keyboard_interrupt_leaves_board_safe(bench, monkeypatch):
    fw = bench.firmware
    real = bench.transport.read_exact
    calls = {"n": 0}

    def interrupted(n):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(n)

    monkeypatch.setattr(bench.transport, "read_exact", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench(batch(5))
    assert fw.safe_count == 1 and fw.log[-1][0] == "SAFE"
    monkeypatch.undo()
    x = batch(5, seed=9)
    assert torch.equal(bench(x), reference(bench, x))


def test_pty_hangup_in_the_middle_of_a_reply_reconnects_and_recovers_exactly(bench):
    """Issue 15 item 2: the board hangs up while the host is reading a reply it has been waiting for
    (so the port timeout was shortened). Restoring the timeout on the dead port used to raise a raw
    serial.SerialException that replaced the ConnectionLost, bypassing the reconnect."""
    fw = bench.firmware
    x = batch(20, seed=6)
    fw.inject("hangup", after=1, delay=0.05)
    y = bench(x)
    assert torch.equal(y, reference(bench, x))
    assert bench.stats.counters["connection_lost"] == 1 and fw.reboots == 1
    assert fw.pending_faults == 0 and fw.error is None
    bench.close()
    assert fw.log[-1][0] == "SAFE"


def test_port_errors_in_every_phase_of_a_transaction_are_connection_lost(bench):
    """A dead port raises OSError/termios.error from write, read, timeout change, clear and close:
    each reaches the caller as ConnectionLost (the project's error), never as the raw error."""
    import termios

    import serial

    t = bench.transport
    ser = t._ser
    for phase, error in (
        ("write", serial.SerialException("write: EIO")),
        ("flush", termios.error(5, "EIO")),
        ("read", OSError(5, "EIO")),
        ("reset_input_buffer", termios.error(5, "EIO")),
    ):
        real = getattr(ser, phase)

        def boom(*a, _e=error, **k):
            raise _e

        setattr(ser, phase, boom)
        try:
            with pytest.raises(ConnectionLost):
                if phase in ("write", "flush"):
                    t.write_raw(b"x")
                elif phase == "read":
                    t.read_exact(1)
                else:
                    t.clear()
        finally:
            setattr(ser, phase, real)
    real = type(ser)._reconfigure_port
    try:
        type(ser)._reconfigure_port = lambda self, *a: (_ for _ in ()).throw(serial.SerialException("EIO"))
        with pytest.raises(ConnectionLost, match="timeout"):
            t.timeout = 0.25
    finally:
        type(ser)._reconfigure_port = real
    t.timeout = 0.5


def test_a_cleanup_error_never_replaces_the_original_error():
    """read_reply restores the port timeout in its ``finally``; if that fails too (dead port), the
    original ConnectionLost/timeout is what the caller sees, with the cleanup failure reported."""
    from physnn.devices.serial_daq import read_reply

    class DyingTransport(ScriptedTransport):
        def _read_exact(self, n):
            self.timeout_broken = True
            raise ConnectionLost("read failed: EIO", resource=self.resource)

        def _set_timeout(self, seconds):
            if getattr(self, "timeout_broken", False):
                raise ConnectionLost("cannot restore the timeout: EIO", resource=self.resource)
            super()._set_timeout(seconds)

    t = DyingTransport([], timeout=0.5)
    t.timeout = 0.6  # read_reply will shorten it to its own timeout, then try to restore 0.6
    events = []
    with pytest.raises(ConnectionLost, match="read failed: EIO"):
        read_reply(t, CMD_IDENT, 1, 0.3, on_event=lambda kind, **f: events.append(kind))
    assert events == ["cleanup_failed"]


def test_pty_port_gone_for_good_is_a_clear_error(bench):
    fw = bench.firmware
    bench(batch(4))
    fw.stop()
    events = []
    bench.event_hook = lambda kind, fields: events.append(kind)
    with pytest.raises(ConnectionLost, match="failed after 3 attempt"):
        bench(batch(4))
    assert "safe_state_failed" in events
    with pytest.raises(ConnectionLost):
        bench.close()  # SAFE cannot be confirmed: said loudly
    assert bench.closed and not bench.transport.is_open


def test_fake_firmware_refuses_bad_requests_before_touching_a_dac():
    from physnn.simulators.identity import IdentitySystem

    with (
        FakeFirmware(IdentitySystem(3), dac_bits=12, adc_bits=12, max_batch=4, safe_code=7) as fw,
        SerialTransport(fw.port, timeout=0.5) as t,
    ):

        def ask(cmd, seq, payload=b""):
            t.write_raw(encode_frame(cmd, seq, payload))
            r = FrameReader()
            while (f := r.next_frame()) is None:
                r.feed(t.read_exact(r.needed()))
            return f

        ok_codes = encode_codes(np.array([[100, 150, 200]]))
        f = ask(CMD_RUN_BATCH, 1, ok_codes)
        assert parse_error(f.payload).code_name == "OUT_OF_LIMITS" and f.seq == 1  # no limits since power-up
        assert ask(CMD_SET_LIMITS, 2, encode_set_limits(100, 200)).cmd == reply_cmd(CMD_SET_LIMITS)
        f = ask(CMD_RUN_BATCH, 3, encode_codes(np.array([[100, 150, 200], [100, 201, 100]])))
        err = parse_error(f.payload)
        assert err.code_name == "OUT_OF_LIMITS" and "code 201 at row 1, channel 1" in err.instrument_message
        assert fw.rows_run == 0 and fw.dac_codes.tolist() == [7, 7, 7]
        f = ask(CMD_RUN_BATCH, 4, encode_codes(np.full((5, 3), 150)))
        assert parse_error(f.payload).code_name == "BATCH_TOO_LARGE"
        f = ask(CMD_RUN_BATCH, 5, ok_codes)
        assert f.cmd == reply_cmd(CMD_RUN_BATCH) and f.seq == 5
        assert fw.dac_codes.tolist() == [100, 150, 200]
        # identity backend: code c -> x = c / 4095 -> ADC code round(x * 4095) = c
        assert f.payload == ok_codes
        bad = bytearray(encode_frame(CMD_PING, 6, b"abc"))
        bad[-1] ^= 0xFF
        t.write_raw(bytes(bad))
        r = FrameReader()
        while (f := r.next_frame()) is None:
            r.feed(t.read_exact(r.needed()))
        assert f.seq == 6 and parse_error(f.payload).code_name == "BAD_CRC"
        assert ask(CMD_PING, 7, b"\x00\xa5xyz").payload == b"\x00\xa5xyz"
        assert parse_error(ask(0x42, 8).payload).code_name == "UNKNOWN_COMMAND"
        assert parse_error(ask(CMD_SET_LIMITS, 9, b"\x01\x02\x03").payload).code_name == "BAD_LENGTH"
        assert ask(CMD_SAFE, 10).cmd == reply_cmd(CMD_SAFE)
        assert fw.dac_codes.tolist() == [7, 7, 7] and fw.safe_count == 1
        assert parse_ident(ask(CMD_IDENT, 11).payload).max_batch == 4
        assert probe_ident(t, timeout=0.5, seq=12).n_in == 3
    assert not fw.running


def test_fake_maps_codes_to_the_backend_levels_and_outputs_to_adc_codes():
    from physnn.simulators.optics import OpticalCavity

    fw = FakeFirmware(
        OpticalCavity(2, 2, phase_range=2.0, slm_bits=2, noise=False), dac_bits=8, adc_bits=8, start=False
    )
    try:
        # 8-bit DAC over phase 0..2 with 4 levels {0, 2/3, 4/3, 2}: 42 -> 0.329 -> 0; 43 -> 0.337 -> 2/3; 128 -> 1.004 -> 4/3
        drive = fw.codes_to_drive(np.array([[0, 42], [170, 255]]))
        assert torch.allclose(drive, torch.tensor([[0.0, 0.0], [4 / 3, 2.0]]))
        drive = fw.codes_to_drive(np.array([[43, 128]]))
        assert torch.allclose(drive, torch.tensor([[2 / 3, 4 / 3]]))
        assert fw.outputs_to_codes(torch.tensor([[-0.1, 0.5], [1.0, 1.7]])).tolist() == [[0, 128], [255, 255]]
    finally:
        fw.stop()


def test_factory_faults_are_armed_before_the_first_request(monkeypatch):
    daq = simulated_serial_daq(
        n_inputs=2,
        n_outputs=2,
        noise=False,
        timeout=0.5,
        backoff=0.01,
        faults=[{"kind": "drop", "command": "IDENT"}, "corrupt_crc"],
    )
    try:
        assert daq.stats.counters["timeout"] == 1  # the first IDENT went unanswered; open retried it
        x = torch.full((3, 2), 1.0)
        assert torch.equal(daq(x), reference(daq, x))
        assert daq.stats.counters["crc_error"] == 1
        assert [n for n, _ in daq.firmware.log[:3]] == ["IDENT", "IDENT", "SET_LIMITS"]
    finally:
        daq.close()
    import os
    import tempfile

    # the pty folders this process creates (a glob of /tmp would see other processes' benches)
    created = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: created.append(real_mkdtemp(*a, **k)) or created[-1])
    with pytest.raises(ValueError, match="fault kind must be one of 'drop', 'late', .*, got 'explode'"):
        simulated_serial_daq(n_inputs=2, n_outputs=2, faults=["explode"])
    assert created == []  # refused before any pty or thread exists
    with pytest.raises(InstrumentTimeout, match="open failed after 2 attempt"):  # a board that never answers
        simulated_serial_daq(
            n_inputs=2, n_outputs=2, timeout=0.2, retries=1, faults=[{"kind": "drop", "command": "IDENT", "count": 5}]
        )
    assert len(created) == 1 and not os.path.exists(created[0])  # the failed bench cleaned up after itself


def test_registry_builds_the_simulated_bench():
    from physnn.core.registry import build_system

    daq = build_system("serial-daq-sim", n_inputs=3, n_outputs=2, seed=1, noise=False, max_batch=4, timeout=0.5)
    try:
        assert isinstance(daq, SerialDAQSystem) and daq.ident.max_batch == 4
        y = daq(torch.full((6, 3), 2.5))
        assert y.shape == (6, 2) and daq.stats.counters["run_batch_frames"] == 2
    finally:
        daq.close()
    assert not daq.firmware.running


def test_simulated_bench_is_deterministic_given_a_seed():
    ys = []
    for _ in range(2):
        daq = simulated_serial_daq(n_inputs=4, n_outputs=3, seed=5, max_batch=4, timeout=0.5)  # noisy backend
        try:
            ys.append(daq(batch(10, seed=3)))
        finally:
            daq.close()
    assert torch.equal(ys[0], ys[1])


# ------------------------------------------------- reference firmware, host build
FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "lab_scripts" / "firmware"


@pytest.fixture(scope="module")
def host_firmware(tmp_path_factory):
    """physnn_daq.ino compiled for the PC (host_sim/), serving a pty; skips without g++."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: cannot build the reference firmware for the host")
    exe = tmp_path_factory.mktemp("fw") / "physnn_daq_host"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Werror",
            "-I",
            str(FIRMWARE_DIR / "host_sim"),
            "-x",
            "c++",
            str(FIRMWARE_DIR / "host_sim" / "main.cpp"),
            "-o",
            str(exe),
        ],
        check=True,
        timeout=180,
    )
    proc = subprocess.Popen(
        [str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    port = proc.stdout.readline().strip()
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_reference_firmware_speaks_the_protocol(host_firmware):
    """The .ino itself (host build, linear analog model) against the driver: exact codes,
    chunking, refusal before any DAC write, BAD_CRC, PING, SAFE."""
    proc, port = host_firmware
    daq = SerialDAQSystem(
        port,
        n_inputs=2,
        n_outputs=4,
        low=0.0,
        high=3.0,
        dac=Calibration.full_scale(12, 0, 3.3),
        adc=Calibration.full_scale(12, 0, 3.3),
        dac_bits=12,
        adc_bits=12,
        serial="DUE-0001",
        timeout=2.0,
    )
    try:
        assert daq.ident.max_batch == 64 and daq.code_limits == (0, 3722)
        x = torch.rand(70, 2, generator=torch.Generator().manual_seed(0)) * 3.0
        y = daq(x)
        c = daq.volts_to_codes(x).astype(np.int64)
        adc = np.stack([(c[:, 0] * (k + 1) + c[:, 1] * (4 - k)) // 5 for k in range(4)], axis=1)
        assert torch.equal(y, daq.codes_to_volts(adc))
        assert daq.stats.counters["run_batch_frames"] == 2  # 64 + 6 rows
        t = daq.transport

        def ask(raw: bytes):
            t.write_raw(raw)
            r = FrameReader()
            while (f := r.next_frame()) is None:
                r.feed(t.read_exact(r.needed()))
            return f

        f = ask(encode_frame(CMD_RUN_BATCH, 200, encode_codes(np.array([[100, 200], [100, 4000]]))))
        err = parse_error(f.payload)
        assert (f.seq, err.code_name) == (200, "OUT_OF_LIMITS")
        assert err.instrument_message == "code 4000 at row 1, channel 1 outside 0..3722"
        bad = bytearray(encode_frame(CMD_PING, 201, b"xyz"))
        bad[-2] ^= 0x10
        f = ask(bytes(bad))
        assert (f.seq, parse_error(f.payload).code_name) == (201, "BAD_CRC")
        assert ask(encode_frame(CMD_PING, 202, b"\xa5\x00abc")).payload == b"\xa5\x00abc"
        assert parse_error(ask(encode_frame(0x42, 203)).payload).code_name == "UNKNOWN_COMMAND"
        f = ask(encode_frame(CMD_RUN_BATCH, 204, encode_codes(np.zeros((65, 2), dtype=np.uint16))))
        assert parse_error(f.payload).code_name == "BATCH_TOO_LARGE"
    finally:
        daq.close()
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    # power-up SAFE (2) + 70 rows x 2 DACs + SAFE on close (2): the refused batches wrote nothing
    assert proc.stderr.read().strip() == f"dac_writes={2 + 70 * 2 + 2}"


# ---------------------------------------------------------- MF-FF end to end
@pytest.mark.slow
def test_mfff_trains_vowels_through_the_serial_bench_like_the_simulator(shared_data):
    """MF-FF on vowels through SerialDAQSystem on the pty fake vs the same optics called directly.

    The backends are noise-free so that the two runs differ only by what the bench adds
    (16-bit DAC/ADC quantisation, chunking, framing); with shot noise, chunked and unchunked
    calls draw different noise and the 49-sample test set moves in steps of 2 points.
    """
    from physnn.core.model import PNN
    from physnn.data.datasets import load_vowels
    from physnn.simulators.optics import OpticalCavity
    from physnn.train.mfff import MFFF

    d = load_vowels(shared_data / "vowels.csv", seed=0)
    width = d.n_classes + d.n_features

    def optics():
        return [OpticalCavity(width, 48, seed=1, noise=False), OpticalCavity(20, 48, seed=2, noise=False)]

    def train(systems):
        pnn = PNN(systems, d.n_features, d.n_classes, hidden=20, seed=0)
        MFFF(epochs=10, batch_size=32, lr=0.02, seed=0, eval_every=0).fit(pnn, d.x_train, d.y_train)
        return pnn.score(d.x_test, d.y_test)

    direct = train(optics())
    benches = [simulated_serial_daq(backend=b, adc_full_scale_v=1.0, timeout=2.0) for b in optics()]
    try:
        serial = train(benches)
        frames = sum(b.stats.counters["run_batch_frames"] for b in benches)
        calls = sum(b.stats.calls for b in benches)
    finally:
        for b in benches:
            b.close()
    assert direct > 0.6, direct  # it learns (chance is 1/7)
    assert abs(serial - direct) <= 0.02, (serial, direct)
    assert frames < 2 * calls  # batched: about one frame per call, not one per sample


# ------------------------------------------------------------------ hardware
@pytest.mark.hardware
def test_hardware_ident_ping_safe(serial_port):
    """Talks to a real board without driving anything: IDENT, PING, SAFE."""
    with SerialTransport(serial_port, timeout=2.0) as t:
        ident = probe_ident(t, timeout=2.0, seq=1)
        assert ident.protocol == 1 and ident.n_in >= 1 and ident.n_out >= 1
        t.write_raw(encode_frame(CMD_PING, 2, b"physnn"))
        r = FrameReader()
        while (f := r.next_frame()) is None:
            r.feed(t.read_exact(r.needed()))
        assert (f.cmd, f.seq, f.payload) == (reply_cmd(CMD_PING), 2, b"physnn")
        t.write_raw(encode_frame(CMD_SAFE, 3))
        r = FrameReader()
        while (f := r.next_frame()) is None:
            r.feed(t.read_exact(r.needed()))
        assert (f.cmd, f.seq) == (reply_cmd(CMD_SAFE), 3)
