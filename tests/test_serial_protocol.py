"""Exact-byte tests of the serial DAQ protocol (shared/protocols/serial-daq.md)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physnn.devices.errors import InstrumentReportedError, ProtocolError
from physnn.devices.serial_protocol import (
    CMD_ERROR,
    CMD_IDENT,
    CMD_PING,
    CMD_RUN_BATCH,
    CMD_SAFE,
    CMD_SET_LIMITS,
    MAX_PAYLOAD,
    CRCError,
    DeviceError,
    Frame,
    FrameReader,
    Ident,
    command_name,
    crc16,
    decode_codes,
    decode_frame,
    decode_set_limits,
    encode_codes,
    encode_error,
    encode_frame,
    encode_ident,
    encode_set_limits,
    parse_error,
    parse_ident,
    reply_cmd,
    rows_per_frame,
)


def crc_bitwise(data: bytes) -> int:
    """Independent, bit-at-a-time CRC-16/CCITT-FALSE (the table version must agree)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


IDENT = Ident(
    protocol=1,
    model="m",
    serial="S1",
    firmware="f",
    n_in=4,
    n_out=3,
    dac_bits=12,
    adc_bits=10,
    max_batch=32,
    settle_us=50,
)


# --------------------------------------------------------------------- CRC
def test_crc_check_value_from_the_protocol_document():
    assert crc16(b"123456789") == 0x29B1
    assert crc_bitwise(b"123456789") == 0x29B1


def test_crc_known_values_and_continuation():
    assert crc16(b"") == 0xFFFF
    assert crc16(b"A") == 0xB915
    assert crc16(b"56789", crc16(b"1234")) == 0x29B1


@given(st.binary(max_size=300))
@settings(max_examples=100, deadline=None)
def test_crc_table_matches_bitwise(data):
    assert crc16(data) == crc_bitwise(data)


# ------------------------------------------------------------------ frames
@pytest.mark.parametrize(
    "cmd, seq, payload, hexbytes",
    [
        (CMD_PING, 7, b"", "a5 05 07 00 00 15 bd"),
        (CMD_IDENT, 1, b"", "a5 01 01 00 00 44 c5"),
        (CMD_SET_LIMITS, 2, bytes.fromhex("9a19 65e6"), "a5 02 02 04 00 9a 19 65 e6 2b c2"),
        (0x84, 0xFE, b"", "a5 84 fe 00 00 5a 6b"),
        (CMD_ERROR, 9, bytes.fromhex("0403 6869"), "a5 ff 09 04 00 04 03 68 69 b1 64"),
    ],
)
def test_encode_frame_exact_bytes(cmd, seq, payload, hexbytes):
    want = bytes.fromhex(hexbytes)
    assert encode_frame(cmd, seq, payload) == want
    # CRC is little-endian over CMD..PAYLOAD, independently computed
    assert struct.unpack("<H", want[-2:])[0] == crc_bitwise(want[1:-2])
    assert decode_frame(want) == Frame(cmd, seq, payload)


def test_run_batch_frame_exact_bytes():
    payload = encode_codes(np.array([[1, 2], [3, 0xABCD]]))
    assert payload == bytes.fromhex("0200 0100 0200 0300 cdab")
    assert encode_frame(CMD_RUN_BATCH, 3, payload) == bytes.fromhex(
        "a5 03 03 0a 00 02 00 01 00 02 00 03 00 cd ab 62 1b"
    )


def test_length_is_little_endian_and_limit_is_8192():
    frame = encode_frame(CMD_PING, 0, bytes(MAX_PAYLOAD))
    assert frame[3:5] == b"\x00\x20"  # 8192 = 0x2000 LE
    assert len(frame) == MAX_PAYLOAD + 7
    assert decode_frame(frame).payload == bytes(MAX_PAYLOAD)
    with pytest.raises(ValueError, match="8193 bytes exceeds the protocol limit of 8192"):
        encode_frame(CMD_PING, 0, bytes(MAX_PAYLOAD + 1))


@pytest.mark.parametrize("cmd, seq", [(256, 0), (-1, 0), (1, 256), (1, True)])
def test_encode_frame_rejects_bad_header_fields(cmd, seq):
    with pytest.raises(ValueError, match="0..255"):
        encode_frame(cmd, seq)


def test_decode_frame_errors_name_the_problem():
    good = encode_frame(CMD_PING, 5, b"abc")
    with pytest.raises(ProtocolError, match="expected SOF 0xA5"):
        decode_frame(b"\x5a" + good[1:])
    with pytest.raises(ProtocolError, match="truncated or padded"):
        decode_frame(good[:-1])
    with pytest.raises(ProtocolError, match="too short"):
        decode_frame(good[:4])
    corrupt = good[:6] + bytes([good[6] ^ 1]) + good[7:]
    with pytest.raises(CRCError, match="CRC mismatch in PING frame seq=5"):
        decode_frame(corrupt)
    bad_len = bytes([0xA5, 1, 0]) + struct.pack("<H", MAX_PAYLOAD + 1)
    with pytest.raises(ProtocolError, match="exceeds the protocol limit"):
        decode_frame(bad_len + bytes(MAX_PAYLOAD + 3))


def test_command_names_and_reply_cmd():
    assert reply_cmd(CMD_RUN_BATCH) == 0x83
    assert command_name(0x83) == "RUN_BATCH reply"
    assert command_name(CMD_SAFE) == "SAFE"
    assert command_name(0xFF) == "ERROR"
    assert command_name(0x42) == "0x42"


# ----------------------------------------------------------- stream reader
def drain(reader: FrameReader) -> list:
    out = []
    while True:
        try:
            f = reader.next_frame()
        except CRCError as exc:
            out.append(("crc", exc.cmd, exc.seq))
            continue
        if f is None:
            return out
        out.append(f)


def test_reader_skips_garbage_and_counts_it():
    frames = [encode_frame(CMD_PING, 1, b"x"), encode_frame(0x85, 2, b"\xa5\xa5")]
    r = FrameReader()
    r.feed(b"\x00\x13boot\r\n" + frames[0] + b"\xff\xfe" + frames[1])
    assert drain(r) == [Frame(CMD_PING, 1, b"x"), Frame(0x85, 2, b"\xa5\xa5")]
    assert r.skipped == 8 + 2
    assert r.buffered == 0


def test_reader_byte_by_byte_with_needed():
    data = encode_frame(CMD_RUN_BATCH, 200, bytes(range(10)))
    r = FrameReader()
    needs = []
    pos = 0
    frame = None
    while frame is None:
        n = r.needed()
        needs.append(n)
        r.feed(data[pos : pos + n])
        pos += n
        frame = r.next_frame()
    # 1 byte to find SOF, the other 4 header bytes, then payload + CRC in one go
    assert needs == [1, 4, 12]
    assert pos == len(data)
    assert frame == Frame(CMD_RUN_BATCH, 200, bytes(range(10)))
    assert r.needed() == 1


def test_reader_needed_is_zero_for_a_complete_frame():
    r = FrameReader()
    r.feed(encode_frame(CMD_SAFE, 1))
    assert r.needed() == 0
    assert r.next_frame() == Frame(CMD_SAFE, 1)


def test_reader_recovers_after_corrupt_frame():
    bad = bytearray(encode_frame(CMD_PING, 3, b"hello"))
    bad[-1] ^= 0x55
    good = encode_frame(0x85, 4, b"ok")
    r = FrameReader()
    r.feed(bytes(bad) + good)
    assert drain(r) == [("crc", CMD_PING, 3), Frame(0x85, 4, b"ok")]
    assert r.crc_errors == 1


def test_reader_recovers_after_truncated_frame():
    """A cut frame followed by whole ones: once its announced length is covered the CRC
    fails, the scan restarts one byte after its SOF and finds the whole frames."""
    first = encode_frame(0x83, 1, bytes(range(1, 21)))  # 27 bytes, cut to 9
    goods = [encode_frame(0x83, s, b"\x01\x00\x07\x00") for s in (2, 3)]  # 11 bytes each
    r = FrameReader()
    r.feed(first[:9] + goods[0])
    assert drain(r) == [] and r.needed() == 7  # still waiting for the announced 27 bytes
    r.feed(goods[1])
    assert drain(r) == [("crc", 0x83, 1), Frame(0x83, 2, b"\x01\x00\x07\x00"), Frame(0x83, 3, b"\x01\x00\x07\x00")]


def test_reader_reset_drops_a_partial_frame():
    r = FrameReader()
    r.feed(encode_frame(CMD_PING, 1, b"abcdef")[:8])
    assert r.next_frame() is None and r.buffered == 8
    r.reset()
    r.feed(encode_frame(CMD_PING, 2))
    assert r.next_frame() == Frame(CMD_PING, 2)


def test_reader_skips_header_with_impossible_length():
    r = FrameReader()
    r.feed(bytes([0xA5, 1, 1, 0x01, 0x20]) + encode_frame(CMD_PING, 9))  # LEN = 8193
    assert drain(r) == [Frame(CMD_PING, 9)]
    assert r.length_errors == 1


@given(
    frames=st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40)), min_size=1, max_size=5
    ),
    garbage=st.lists(st.binary(max_size=6).filter(lambda b: 0xA5 not in b), min_size=6, max_size=6),
    chunk=st.integers(1, 17),
)
@settings(max_examples=80, deadline=None)
def test_reader_roundtrip_any_frames_any_chunking(frames, garbage, chunk):
    stream = b"".join(g + encode_frame(*f) for g, f in zip(garbage, frames))
    r = FrameReader()
    got = []
    for i in range(0, len(stream), chunk):
        r.feed(stream[i : i + chunk])
        got.extend(drain(r))
    assert got == [Frame(*f) for f in frames]


# ------------------------------------------------------------ error replies
def test_error_payload_exact_bytes_and_parse():
    payload = encode_error("OUT_OF_LIMITS", CMD_RUN_BATCH, "code 70000")
    assert payload == b"\x04\x03code 70000"
    assert encode_error(4, 3, "code 70000") == payload
    err = parse_error(payload, resource="/dev/ttyACM0")
    assert isinstance(err, DeviceError) and isinstance(err, InstrumentReportedError)
    assert (err.code, err.code_name, err.request_cmd) == (4, "OUT_OF_LIMITS", CMD_RUN_BATCH)
    assert err.instrument_message == "code 70000"
    assert str(err) == "[/dev/ttyACM0] instrument error 4: OUT_OF_LIMITS in reply to RUN_BATCH: code 70000"


@pytest.mark.parametrize(
    "code, name",
    [
        (1, "BAD_CRC"),
        (2, "BAD_LENGTH"),
        (3, "UNKNOWN_COMMAND"),
        (4, "OUT_OF_LIMITS"),
        (5, "BATCH_TOO_LARGE"),
        (6, "BUSY"),
        (7, "HARDWARE_FAULT"),
        (42, "UNKNOWN_ERROR_42"),
    ],
)
def test_error_code_names(code, name):
    assert parse_error(bytes([code, 1])).code_name == name


def test_error_reply_too_short_and_bad_name():
    with pytest.raises(ProtocolError, match="at least 2"):
        parse_error(b"\x01")
    with pytest.raises(ValueError, match="unknown error name 'NOPE'"):
        encode_error("NOPE", 1)


# -------------------------------------------------------------------- IDENT
def test_ident_roundtrip_and_field_order():
    payload = encode_ident(IDENT)
    assert payload.startswith(b'{"protocol":1,"model":"m","serial":"S1","firmware":"f","n_in":4')
    assert parse_ident(payload) == IDENT


def test_ident_accepts_extra_fields():
    obj = dict(IDENT.to_dict(), board_temp_c=31)
    assert parse_ident(json.dumps(obj).encode()) == IDENT


@pytest.mark.parametrize(
    "change, message",
    [
        ({"n_in": None}, "lacks field"),
        ({"n_out": "3"}, "'n_out' must be an integer"),
        ({"max_batch": True}, "'max_batch' must be an integer"),
        ({"serial": 5}, "'serial' must be a string"),
        ({"max_batch": 0}, "'max_batch' must be >= 1"),
        ({"dac_bits": 17}, "'dac_bits' must be in 1..16"),
        ({"settle_us": -1}, "'settle_us' must be >= 0"),
    ],
)
def test_ident_validation(change, message):
    obj = IDENT.to_dict()
    for k, v in change.items():
        if v is None:
            del obj[k]
        else:
            obj[k] = v
    with pytest.raises(ProtocolError, match=message):
        parse_ident(json.dumps(obj).encode())


def test_ident_not_json():
    with pytest.raises(ProtocolError, match="not UTF-8 JSON"):
        parse_ident(b"\xff\xfe")
    with pytest.raises(ProtocolError, match="JSON object"):
        parse_ident(b"[1, 2]")


# ----------------------------------------------------------------- payloads
def test_set_limits_payload():
    assert encode_set_limits(6554, 58981) == bytes.fromhex("9a19 65e6")
    assert decode_set_limits(bytes.fromhex("9a19 65e6")) == (6554, 58981)
    with pytest.raises(ValueError, match="min_code <= max_code"):
        encode_set_limits(10, 9)
    with pytest.raises(ValueError, match="max_code must be an integer in 0..65535"):
        encode_set_limits(0, 65536)
    with pytest.raises(ProtocolError, match="4 bytes"):
        decode_set_limits(b"\x00\x00\x01")


def test_codes_roundtrip_and_errors():
    codes = np.array([[0, 65535, 7], [1, 2, 3]], dtype=np.int64)
    payload = encode_codes(codes)
    assert len(payload) == 2 + 12
    back = decode_codes(payload, 3, expected_rows=2)
    assert back.dtype == np.uint16 and np.array_equal(back, codes)
    with pytest.raises(ProtocolError, match="n=2 rows x 3 codes need 14"):
        decode_codes(payload[:-1], 3)
    with pytest.raises(ProtocolError, match="n=2 rows, the request had 3"):
        decode_codes(payload, 3, expected_rows=3)
    with pytest.raises(ValueError, match="0..65535"):
        encode_codes(np.array([[65536]]))
    with pytest.raises(ValueError, match="integers"):
        encode_codes(np.array([[1.5]]))
    with pytest.raises(ValueError, match="over the 8192-byte limit"):
        encode_codes(np.zeros((2048, 2), dtype=np.uint16))


def test_rows_per_frame():
    assert rows_per_frame(4, 3, 64) == 64
    assert rows_per_frame(1000, 10, 64) == 4  # (8192 - 2) // 2000
    assert rows_per_frame(10, 1000, 64) == 4  # the reply limits too
    assert rows_per_frame(4095, 1, 8) == 1
    with pytest.raises(ValueError, match="at most 4095 channels"):
        rows_per_frame(4096, 1, 8)
    n = rows_per_frame(100, 100, 1000)
    encode_codes(np.zeros((n, 100), dtype=np.uint16))  # fits
    with pytest.raises(ValueError):
        encode_codes(np.zeros((n + 1, 100), dtype=np.uint16))
