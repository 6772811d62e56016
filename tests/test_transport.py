"""Transports: block framing, the scripted fake, serial over loop:// and a pty, VISA over pyvisa-sim."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from physnn.devices.errors import ConnectionLost, InstrumentTimeout, ProtocolError
from physnn.devices.transport import (
    ScriptedTransport,
    SerialTransport,
    Transport,
    VisaTransport,
    encode_block,
    parse_block,
)

SIM_DIR = Path(__file__).resolve().parents[1] / "devices" / "sim"


# ------------------------------------------------------------------ blocks
def test_encode_block_exact_bytes():
    assert encode_block(b"hello") == b"#15hello"
    assert encode_block(b"") == b"#10"
    assert encode_block(b"x" * 1000) == b"#41000" + b"x" * 1000


def test_parse_block_round_trip_and_consumed():
    data = bytes(range(256)) * 3
    blk = encode_block(data) + b"\nrest"
    got, used = parse_block(blk)
    assert got == data and used == len(blk) - len(b"\nrest")


@pytest.mark.parametrize(
    "bad, text",
    [
        (b"15hello", "starting with '#'"),
        (b"#0hello\n", "indefinite"),
        (b"#x5hello", "digit count"),
        (b"#2a5hello", "decimal digits"),
        (b"#15hel", "truncated block"),
    ],
)
def test_parse_block_rejects_malformed(bad, text):
    with pytest.raises(ProtocolError, match=text):
        parse_block(bad)


# --------------------------------------------------------------- scripted
def test_scripted_query_and_exact_write_bytes():
    t = ScriptedTransport([("*IDN?", "ACME,1,2,3"), (b"RAW\r", None)])
    assert t.query("*IDN?") == "ACME,1,2,3"
    t.write_raw(b"RAW\r")
    assert bytes(t.written) == b"*IDN?\nRAW\r"
    assert t.writes == [b"*IDN?\n", b"RAW\r"]
    t.close()


def test_scripted_mismatch_shows_both_and_is_recorded():
    t = ScriptedTransport([("OUTP1 OFF", None)])
    with pytest.raises(ProtocolError) as info:
        t.write("OUTP1 ON")
    msg = str(info.value)
    assert "b'OUTP1 OFF\\n'" in msg and "b'OUTP1 ON\\n'" in msg
    assert bytes(t.written) == b"OUTP1 ON\n"
    with pytest.raises(ProtocolError, match="never written"):
        t.verify()


def test_scripted_unused_step_fails_on_close():
    t = ScriptedTransport([("*IDN?", "x"), ("*RST", None)])
    t.query("*IDN?")
    with pytest.raises(ProtocolError, match=r"1 scripted step\(s\) never written.*\*RST"):
        t.close()


def test_scripted_exhausted_script_rejects_any_write():
    t = ScriptedTransport([])
    with pytest.raises(ProtocolError, match="exhausted"):
        t.write("*RST")
    assert bytes(t.written) == b"*RST\n"


def test_scripted_dropped_reply_times_out_and_exception_reply_raises():
    t = ScriptedTransport([("*OPC?", None), ("*TRG", ConnectionLost("gone", resource="x"))])
    with pytest.raises(InstrumentTimeout):
        t.query("*OPC?")
    with pytest.raises(ConnectionLost, match="gone"):
        t.write("*TRG")
    t.close()


def test_query_binary_returns_whole_block():
    payload = bytes(range(200))
    t = ScriptedTransport([(":WAV:DATA?", encode_block(payload) + b"\n")])
    assert t.query_binary(":WAV:DATA?") == payload
    t.close()


def test_query_binary_truncated_block_raises_never_short():
    payload = bytes(range(100))
    t = ScriptedTransport([(":WAV:DATA?", encode_block(payload)[:60])])
    with pytest.raises(ProtocolError, match="truncated block.*got 55 of 100 bytes") as info:
        t.query_binary(":WAV:DATA?")
    assert len(info.value.received) == 55  # what did arrive (bytes); `partial` is a system's finished rows


def test_query_binary_missing_terminator_or_bad_header():
    t = ScriptedTransport(
        [("D?", encode_block(b"abcd") + b"X"), ("D?", b"#0abcd\n"), ("D?", b"#3xy")], verify_on_close=False
    )
    with pytest.raises(ProtocolError, match="not followed by the termination"):
        t.query_binary("D?")
    with pytest.raises(ProtocolError, match="indefinite"):
        t.query_binary("D?")
    with pytest.raises(ProtocolError):
        t.query_binary("D?")


def test_query_binary_refuses_giant_header():
    t = ScriptedTransport([("D?", b"#9999999999")], max_block=1000)
    with pytest.raises(ProtocolError, match="max_block=1000"):
        t.query_binary("D?")


def test_write_binary_is_one_write_with_header_block_and_termination():
    data = b"\x01\x00\xff\x7f"
    t = ScriptedTransport([(b"SOUR1:DATA:ARB:DAC physnn,#14" + data + b"\n", None)])
    t.write_binary("SOUR1:DATA:ARB:DAC physnn,", data)
    assert len(t.writes) == 1
    t.close()


def test_timeout_validation():
    t = ScriptedTransport([])
    for bad in (0, -1, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="timeout"):
            t.timeout = bad
    t.timeout = 0.25
    assert t.timeout == 0.25


def test_closed_transport_refuses_io():
    t = ScriptedTransport([])
    t.close()
    with pytest.raises(ConnectionLost, match="closed"):
        t.write("*RST")
    assert bytes(t.written) == b""


class _SlowEcho(Transport):
    """Echoes each written line back after a short delay, to provoke interleaving."""

    def __init__(self):
        super().__init__("echo")
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.open()

    def _open(self):
        pass

    def _close(self):
        pass

    def _clear(self):
        self._buf.clear()

    def _get_timeout(self):
        return 1.0

    def _set_timeout(self, s):
        pass

    def _write_bytes(self, data):
        time.sleep(0.002)
        with self._cond:
            self._buf.extend(data)
            self._cond.notify_all()

    def _read_exact(self, n):  # pragma: no cover - not used
        raise NotImplementedError

    def _read_message(self):
        time.sleep(0.002)
        with self._cond:
            self._cond.wait_for(lambda: b"\n" in self._buf, timeout=1.0)
            i = self._buf.index(b"\n")
            out = bytes(self._buf[: i + 1])
            del self._buf[: i + 1]
            return out


def test_lock_serialises_concurrent_queries():
    t = _SlowEcho()
    wrong = []

    def worker(k):
        for j in range(10):
            q = f"Q{k}-{j}"
            if t.query(q) != q:
                wrong.append(q)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []


# ------------------------------------------------------------------ serial
def test_serial_loop_read_exact_and_short_read():
    t = SerialTransport("loop://", timeout=0.05)
    t.write_raw(b"\xa5\x01\x02")
    assert t.read_exact(3) == b"\xa5\x01\x02"
    t.write_raw(b"\x07")
    with pytest.raises(InstrumentTimeout, match="got 1 of 4 bytes") as info:
        t.read_exact(4)
    assert info.value.received == b"\x07"
    t.close()


def test_serial_clear_discards_pending_input_and_reopen_works():
    t = SerialTransport("loop://", timeout=0.05)
    t.write_raw(b"stale")
    time.sleep(0.01)
    t.clear()
    with pytest.raises(InstrumentTimeout):
        t.read_exact(1)
    t.reopen()
    t.write_raw(b"ok")
    assert t.read_exact(2) == b"ok"
    t.close()
    t.close()  # idempotent


def test_serial_text_query_with_termination():
    t = SerialTransport("loop://", timeout=0.05, write_termination="\n", read_termination="\n")
    assert t.query("PING") == "PING"
    t.close()


@pytest.mark.skipif(os.name != "posix", reason="pty needs POSIX")
def test_serial_pty_by_name_is_exclusive_and_reads_exactly():
    master, slave = os.openpty()
    name = os.ttyname(slave)
    try:
        t = SerialTransport(name, timeout=0.1)
        with pytest.raises(ConnectionLost, match="cannot open"):
            SerialTransport(name, timeout=0.1)
        os.write(master, b"abcdef")
        assert t.read_exact(4) == b"abcd"
        t.write_raw(b"xyz")
        assert os.read(master, 16) == b"xyz"
        with pytest.raises(InstrumentTimeout) as info:
            t.read_exact(5)
        assert info.value.received == b"ef"
        t.close()
    finally:
        os.close(master)
        os.close(slave)


def test_serial_rejects_bad_port():
    with pytest.raises(ValueError, match="port"):
        SerialTransport(123)
    with pytest.raises(ConnectionLost, match="cannot open"):
        SerialTransport("/dev/does-not-exist-physnn", timeout=0.05)


def test_serial_accepts_open_serial_object():
    import serial

    ser = serial.serial_for_url("loop://", timeout=0.05)
    t = SerialTransport(ser, timeout=0.05)
    t.write_raw(b"q")
    assert t.read_exact(1) == b"q"
    t.close()
    assert not ser.is_open


# -------------------------------------------------------------------- visa
def test_visa_sim_identity_and_timeout():
    with VisaTransport("TCPIP0::192.168.0.10::inst0::INSTR", backend=f"{SIM_DIR / 'awg.yaml'}@sim", timeout=0.2) as t:
        assert t.query("*IDN?") == "Agilent Technologies,33522B,MY00000001,4.00-1.19-2.00-58-00"
        with pytest.raises(InstrumentTimeout, match="no reply within 0.2 s"):
            t.read()
    assert not t.is_open


def test_visa_refused_connection_is_connection_lost():
    # @py backend, nothing listens on the loopback VXI-11 port: refused at once, no network needed.
    with pytest.raises(ConnectionLost, match="open"):
        VisaTransport("TCPIP0::127.0.0.1::inst0::INSTR", timeout=0.2)
