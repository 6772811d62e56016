"""The physnn serial DAQ wire protocol, version 1: frames, payloads, errors.

Pure functions and one small streaming parser, no I/O. The host driver
(:mod:`physnn.devices.serial_daq`), the pty fake firmware
(:mod:`physnn.devices.sim.fake_firmware`) and the tests all use this module, so
the byte layout fixed by ``shared/protocols/serial-daq.md`` lives in one place.

Frame (both directions)::

    SOF 0xA5 | CMD u8 | SEQ u8 | LEN u16 LE (<= 8192) | PAYLOAD[LEN] | CRC u16 LE

CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final
xor) over CMD, SEQ, LEN and PAYLOAD; ``crc16(b"123456789") == 0x29B1``. A reply
carries ``CMD | 0x80``; an error reply carries ``0xFF`` with payload
``u8 code, u8 request_cmd, UTF-8 message``.

Why a streaming reader that skips bytes: a serial line can deliver garbage
(a board booting, a half frame after a timeout). The reader drops every byte
that is not a start-of-frame, and after a CRC failure it drops only the SOF
byte and rescans, so a good frame that follows a corrupt or truncated one is
still found.

Why :func:`flush_after` (ending a half-sent frame): a board without a frame
timeout that received only part of a frame keeps waiting for the rest, and
takes whatever comes next -- a SAFE request included -- as its payload. The
host knows what it sent, so it can compute bytes that end every frame such a
board could be assembling (with a wrong CRC, so nothing is executed) and leave
its parser hunting for the next SOF, whichever way the board resumes after a
bad CRC (at the next byte, as :class:`FrameReader` does, or after the bad
frame). Only bytes the protocol defines are used: non-SOF bytes, which a
hunting receiver skips.
"""

from __future__ import annotations

import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from physnn.core import checks

from .errors import InstrumentReportedError, ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "SOF",
    "MAX_PAYLOAD",
    "HEADER_SIZE",
    "OVERHEAD",
    "REPLY_BIT",
    "CMD_IDENT",
    "CMD_SET_LIMITS",
    "CMD_RUN_BATCH",
    "CMD_SAFE",
    "CMD_PING",
    "CMD_ERROR",
    "COMMAND_NAMES",
    "ERROR_NAMES",
    "ERROR_CODES",
    "Frame",
    "FrameReader",
    "DeviceError",
    "CRCError",
    "Ident",
    "crc16",
    "encode_frame",
    "decode_frame",
    "reply_cmd",
    "command_name",
    "encode_error",
    "parse_error",
    "encode_ident",
    "parse_ident",
    "encode_set_limits",
    "decode_set_limits",
    "encode_codes",
    "decode_codes",
    "rows_per_frame",
    "MAX_FRAME",
    "RESUME_AFTER_BAD_CRC",
    "flush_after",
    "unknown_state_flush",
]

PROTOCOL_VERSION = 1
SOF = 0xA5
MAX_PAYLOAD = 8192
HEADER_SIZE = 5  # SOF, CMD, SEQ, LEN (2)
OVERHEAD = HEADER_SIZE + 2  # + CRC
MAX_FRAME = OVERHEAD + MAX_PAYLOAD  # the longest frame: what a parser in an unknown state may still be waiting for
REPLY_BIT = 0x80

CMD_IDENT = 0x01
CMD_SET_LIMITS = 0x02
CMD_RUN_BATCH = 0x03
CMD_SAFE = 0x04
CMD_PING = 0x05
CMD_ERROR = 0xFF

COMMAND_NAMES: dict[int, str] = {
    CMD_IDENT: "IDENT",
    CMD_SET_LIMITS: "SET_LIMITS",
    CMD_RUN_BATCH: "RUN_BATCH",
    CMD_SAFE: "SAFE",
    CMD_PING: "PING",
    CMD_ERROR: "ERROR",
}

ERROR_NAMES: dict[int, str] = {
    1: "BAD_CRC",
    2: "BAD_LENGTH",
    3: "UNKNOWN_COMMAND",
    4: "OUT_OF_LIMITS",
    5: "BATCH_TOO_LARGE",
    6: "BUSY",
    7: "HARDWARE_FAULT",
}
ERROR_CODES: dict[str, int] = {name: code for code, name in ERROR_NAMES.items()}

#: IDENT fields and their JSON types, in the order of the protocol document.
IDENT_FIELDS: dict[str, type] = {
    "protocol": int,
    "model": str,
    "serial": str,
    "firmware": str,
    "n_in": int,
    "n_out": int,
    "dac_bits": int,
    "adc_bits": int,
    "max_batch": int,
    "settle_us": int,
}


# --------------------------------------------------------------------- CRC
def crc16(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data``; pass ``crc`` to continue a running CRC.

    ``binascii.crc_hqx`` is this CRC (poly 0x1021, not reflected, no final
    xor) with a caller-given initial value, computed in C: a pure-Python loop
    would cost ~10 ms per full 8 KB frame on each side of the link.
    """
    return binascii.crc_hqx(data, crc)


# ------------------------------------------------------------------ frames
class CRCError(ProtocolError):
    """A frame whose CRC does not match its bytes (a corrupt or truncated frame).

    ``cmd`` and ``seq`` are the frame's header bytes as received (possibly
    corrupt themselves): a device uses them to address its BAD_CRC reply.
    """

    def __init__(self, message: str, *, cmd: int = 0, seq: int = 0, resource: str | None = None):
        super().__init__(message, resource=resource)
        self.cmd = cmd
        self.seq = seq


def command_name(cmd: int) -> str:
    """``"RUN_BATCH"``, ``"RUN_BATCH reply"``, ``"ERROR"`` or ``"0x42"``."""
    if cmd in COMMAND_NAMES:
        return COMMAND_NAMES[cmd]
    if cmd & REPLY_BIT and (cmd & ~REPLY_BIT) in COMMAND_NAMES:
        return COMMAND_NAMES[cmd & ~REPLY_BIT] + " reply"
    return f"0x{cmd:02X}"


def reply_cmd(cmd: int) -> int:
    """The CMD byte of a successful reply to request ``cmd``."""
    return cmd | REPLY_BIT


@dataclass(frozen=True)
class Frame:
    """One decoded frame. ``payload`` is the raw payload bytes."""

    cmd: int
    seq: int
    payload: bytes = b""

    @property
    def is_error(self) -> bool:
        return self.cmd == CMD_ERROR

    def __repr__(self) -> str:
        return f"Frame({command_name(self.cmd)}, seq={self.seq}, {len(self.payload)} B)"


def _check_u8(name: str, value: int) -> None:
    checks.integer(name, value, low=0, high=0xFF)


def encode_frame(cmd: int, seq: int, payload: bytes = b"") -> bytes:
    """Bytes of one frame. Raises ValueError for a payload over 8192 bytes."""
    _check_u8("cmd", cmd)
    _check_u8("seq", seq)
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the protocol limit of {MAX_PAYLOAD} bytes")
    body = struct.pack("<BBH", cmd, seq, len(payload)) + payload
    return bytes([SOF]) + body + struct.pack("<H", crc16(body))


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one whole frame (no leading or trailing bytes).

    Raises :class:`ProtocolError` naming what is wrong (SOF, length, CRC).
    """
    data = bytes(data)
    if len(data) < OVERHEAD:
        raise ProtocolError(f"frame too short: {len(data)} bytes, a frame has at least {OVERHEAD}")
    if data[0] != SOF:
        raise ProtocolError(f"frame starts with 0x{data[0]:02X}, expected SOF 0x{SOF:02X}")
    cmd, seq, length = struct.unpack_from("<BBH", data, 1)
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame LEN={length} exceeds the protocol limit of {MAX_PAYLOAD} bytes")
    if len(data) != OVERHEAD + length:
        raise ProtocolError(
            f"frame has {len(data)} bytes but LEN={length} implies {OVERHEAD + length} (truncated or padded)"
        )
    (got,) = struct.unpack_from("<H", data, HEADER_SIZE + length)
    want = crc16(data[1 : HEADER_SIZE + length])
    if got != want:
        raise CRCError(
            f"CRC mismatch in {command_name(cmd)} frame seq={seq}: received 0x{got:04X}, computed 0x{want:04X}",
            cmd=cmd,
            seq=seq,
        )
    return Frame(cmd, seq, data[HEADER_SIZE : HEADER_SIZE + length])


#: Where a receiver resumes its scan after a frame with a bad CRC: at the byte after its SOF (``"rescan"``, what
#: :class:`FrameReader` does by default) or after the whole frame (``"skip_frame"``, a simple firmware).
RESUME_AFTER_BAD_CRC = ("rescan", "skip_frame")


class FrameReader:
    """Incremental frame parser that resynchronises on garbage.

    Feed it bytes as they arrive (:meth:`feed`) and take frames out with
    :meth:`next_frame`. :meth:`needed` says how many more bytes complete the
    frame being assembled, so a host can ``read_exact(reader.needed())`` and
    never read past the end of one frame.

    Bytes before a SOF are skipped (counted in :attr:`skipped`). A header with
    LEN > 8192 is not a frame: its SOF is skipped and scanning continues. A
    frame whose CRC does not match raises :class:`ProtocolError` from
    :meth:`next_frame` after dropping only its SOF byte, so calling again
    continues the scan from the next byte (:attr:`crc_errors` counts them).
    With ``after_bad_crc="skip_frame"`` the whole bad frame is dropped instead
    (a firmware that resumes after the frame it rejected).
    """

    def __init__(self, after_bad_crc: str = "rescan") -> None:
        self.after_bad_crc = checks.choice("after_bad_crc", after_bad_crc, RESUME_AFTER_BAD_CRC)
        self._buf = bytearray()
        self.skipped = 0
        self.crc_errors = 0
        self.length_errors = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def reset(self) -> None:
        """Forget any partial frame (after the input buffer was cleared)."""
        self._buf.clear()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _sync(self) -> None:
        """Drop bytes before the first SOF, and SOFs of impossible headers."""
        buf = self._buf
        while True:
            i = buf.find(SOF)
            if i < 0:
                self.skipped += len(buf)
                buf.clear()
                return
            if i:
                self.skipped += i
                del buf[:i]
            if len(buf) >= HEADER_SIZE and (buf[3] | (buf[4] << 8)) > MAX_PAYLOAD:
                self.length_errors += 1
                self.skipped += 1
                del buf[:1]
                continue
            return

    def needed(self) -> int:
        """Bytes still missing before :meth:`next_frame` can decide (0: it can now).

        While scanning for a SOF this is 1, so a host reading exactly this many
        bytes never consumes bytes that belong to the next frame.
        """
        self._sync()
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return HEADER_SIZE - len(buf) if buf else 1
        total = OVERHEAD + (buf[3] | (buf[4] << 8))
        return max(total - len(buf), 0)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None if more bytes are needed.

        Raises CRCError (a ProtocolError) on a CRC mismatch (the frame's SOF is dropped
        first, so the next call resumes the scan).
        """
        self._sync()
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return None
        length = buf[3] | (buf[4] << 8)
        total = OVERHEAD + length
        if len(buf) < total:
            return None
        cmd, seq = buf[1], buf[2]
        got = buf[total - 2] | (buf[total - 1] << 8)
        want = crc16(buf[1 : total - 2])
        if got != want:
            self.crc_errors += 1
            drop = 1 if self.after_bad_crc == "rescan" else total
            self.skipped += drop
            del buf[:drop]
            raise CRCError(
                f"CRC mismatch in {command_name(cmd)} frame seq={seq} (LEN={length}): "
                f"received 0x{got:04X}, computed 0x{want:04X}",
                cmd=cmd,
                seq=seq,
            )
        frame = Frame(cmd, seq, bytes(buf[HEADER_SIZE : total - 2]))
        del buf[:total]
        return frame


# ------------------------------------------------------------ error replies
class DeviceError(InstrumentReportedError):
    """An error frame from the device.

    Attributes: ``code`` (1..7), ``code_name`` (``"OUT_OF_LIMITS"``...),
    ``request_cmd`` (the command it refused), ``instrument_message``.
    """

    def __init__(self, code: int, request_cmd: int, message: str, *, resource: str | None = None):
        self.code_name = ERROR_NAMES.get(int(code), f"UNKNOWN_ERROR_{int(code)}")
        self.request_cmd = int(request_cmd)
        text = f"{self.code_name} in reply to {command_name(self.request_cmd)}"
        if message:
            text += f": {message}"
        super().__init__(code, text, resource=resource)
        self.instrument_message = message


def encode_error(code: int | str, request_cmd: int, message: str = "") -> bytes:
    """Payload of an error reply (``code`` as a number or a name like ``"BAD_CRC"``)."""
    if isinstance(code, str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error name {code!r}; known: {', '.join(ERROR_CODES)}")
        code = ERROR_CODES[code]
    _check_u8("error code", code)
    _check_u8("request_cmd", request_cmd)
    return bytes([code, request_cmd]) + message.encode("utf-8")


def parse_error(payload: bytes, *, resource: str | None = None) -> DeviceError:
    """The :class:`DeviceError` described by an error reply's payload (returned, not raised)."""
    payload = bytes(payload)
    if len(payload) < 2:
        raise ProtocolError(
            f"error reply payload has {len(payload)} bytes, needs at least 2 (code, request_cmd)", resource=resource
        )
    message = payload[2:].decode("utf-8", errors="replace")
    return DeviceError(payload[0], payload[1], message, resource=resource)


# ------------------------------------------------------------------- IDENT
@dataclass(frozen=True)
class Ident:
    """The device's identity, parsed from the IDENT reply."""

    protocol: int
    model: str
    serial: str
    firmware: str
    n_in: int
    n_out: int
    dac_bits: int
    adc_bits: int
    max_batch: int
    settle_us: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENT_FIELDS}


def encode_ident(ident: Ident) -> bytes:
    """IDENT reply payload: compact UTF-8 JSON with the fields in protocol order."""
    return json.dumps(ident.to_dict(), separators=(",", ":")).encode("utf-8")


def parse_ident(payload: bytes) -> Ident:
    """Parse and validate an IDENT reply; ProtocolError names the bad field.

    Checks presence and JSON type of every field and their ranges (widths and
    ``max_batch`` >= 1, bit widths 1..16, ``settle_us`` >= 0). Unknown extra
    fields are allowed (a newer firmware may add some). The protocol version is
    only type-checked here; the driver compares it with :data:`PROTOCOL_VERSION`.
    """
    try:
        obj = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"IDENT reply is not UTF-8 JSON ({exc}): {bytes(payload)[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"IDENT reply must be a JSON object, got {type(obj).__name__}: {obj!r}")
    missing = [k for k in IDENT_FIELDS if k not in obj]
    if missing:
        raise ProtocolError(f"IDENT reply lacks field(s) {', '.join(missing)}: {obj!r}")
    for key, typ in IDENT_FIELDS.items():
        value = obj[key]
        if typ is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ProtocolError(f"IDENT field {key!r} must be an integer, got {value!r}")
        if typ is str and not isinstance(value, str):
            raise ProtocolError(f"IDENT field {key!r} must be a string, got {value!r}")
    for key in ("n_in", "n_out", "max_batch"):
        if obj[key] < 1:
            raise ProtocolError(f"IDENT field {key!r} must be >= 1, got {obj[key]}")
    for key in ("dac_bits", "adc_bits"):
        if not 1 <= obj[key] <= 16:
            raise ProtocolError(f"IDENT field {key!r} must be in 1..16 (codes are u16), got {obj[key]}")
    if obj["settle_us"] < 0:
        raise ProtocolError(f"IDENT field 'settle_us' must be >= 0, got {obj['settle_us']}")
    return Ident(**{k: obj[k] for k in IDENT_FIELDS})


# ---------------------------------------------------------------- payloads
def encode_set_limits(min_code: int, max_code: int) -> bytes:
    """SET_LIMITS payload ``u16 min_code, u16 max_code``."""
    for name, v in (("min_code", min_code), ("max_code", max_code)):
        checks.integer(name, v, low=0, high=0xFFFF)
    if min_code > max_code:
        raise ValueError(f"SET_LIMITS needs min_code <= max_code, got {min_code} > {max_code}")
    return struct.pack("<HH", int(min_code), int(max_code))


def decode_set_limits(payload: bytes) -> tuple[int, int]:
    if len(payload) != 4:
        raise ProtocolError(f"SET_LIMITS payload must be 4 bytes, got {len(payload)}")
    return struct.unpack("<HH", bytes(payload))


def encode_codes(codes: np.ndarray) -> bytes:
    """RUN_BATCH payload (request or reply): ``u16 n`` then ``codes`` row-major as u16 LE.

    ``codes`` is an integer array ``[n, width]`` with values in 0..65535.
    """
    a = np.asarray(codes)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"codes must be a non-empty 2-D array [n, width], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {a.dtype}")
    if a.min() < 0 or a.max() > 0xFFFF:
        raise ValueError(f"codes must lie in 0..65535, got min {a.min()} max {a.max()}")
    if a.shape[0] > 0xFFFF:
        raise ValueError(f"a RUN_BATCH frame holds at most 65535 rows, got {a.shape[0]}")
    payload = struct.pack("<H", a.shape[0]) + a.astype("<u2", copy=False).tobytes(order="C")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"{a.shape[0]} rows x {a.shape[1]} codes need a {len(payload)}-byte payload, over the "
            f"{MAX_PAYLOAD}-byte limit; split the batch (see rows_per_frame)"
        )
    return payload


def decode_codes(payload: bytes, width: int, expected_rows: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_codes`: a ``[n, width]`` uint16 array.

    Raises ProtocolError when the length does not match ``n`` (a truncated or
    padded payload is never returned as a short array) or when ``n`` differs
    from ``expected_rows``.
    """
    payload = bytes(payload)
    if len(payload) < 2:
        raise ProtocolError(f"RUN_BATCH payload has {len(payload)} bytes, needs at least 2 (u16 n)")
    (n,) = struct.unpack_from("<H", payload)
    want = 2 + 2 * n * width
    if len(payload) != want:
        raise ProtocolError(f"RUN_BATCH payload has {len(payload)} bytes; n={n} rows x {width} codes need {want}")
    if expected_rows is not None and n != expected_rows:
        raise ProtocolError(f"RUN_BATCH reply has n={n} rows, the request had {expected_rows}")
    return np.frombuffer(payload, dtype="<u2", offset=2).reshape(n, width).astype(np.uint16)


def rows_per_frame(n_in: int, n_out: int, max_batch: int) -> int:
    """Most rows one RUN_BATCH may carry: ``max_batch`` and both payloads <= 8192 bytes."""
    width = max(int(n_in), int(n_out))
    fit = (MAX_PAYLOAD - 2) // (2 * width)
    if fit < 1:
        raise ValueError(
            f"a row of {width} u16 codes does not fit in one {MAX_PAYLOAD}-byte payload "
            f"(at most {(MAX_PAYLOAD - 2) // 2} channels)"
        )
    return max(1, min(int(max_batch), fit))


# --------------------------------------------------------- ending a half frame
def _parse_with_fill(stream: bytes, fill: int, after_bad_crc: str) -> tuple[int, list[tuple[int, int]]]:
    """A receiver that starts hunting at ``stream[0]``, fed ``stream`` then endless ``fill`` bytes.

    Returns how many ``fill`` bytes it takes until the receiver is hunting again
    with nothing buffered, and the ``(start, end)`` of every frame with a good CRC
    it accepted on the way. ``fill`` is never SOF, so only bytes of ``stream``
    can start a frame.
    """
    n = len(stream)
    pad = bytes([fill])

    def seg(a: int, b: int) -> bytes:
        return stream[a:b] + pad * max(0, b - max(a, n))

    i, end_needed, accepted = 0, n, []
    while True:
        p = stream.find(SOF, i)
        if p < 0:
            break
        header = seg(p, p + HEADER_SIZE)
        end_needed = max(end_needed, p + HEADER_SIZE)
        length = header[3] | (header[4] << 8)
        if length > MAX_PAYLOAD:  # not a frame: its SOF is skipped
            i = p + 1
            continue
        end = p + OVERHEAD + length
        end_needed = max(end_needed, end)
        crc = seg(end - 2, end)
        if crc16(seg(p + 1, end - 2)) == crc[0] | (crc[1] << 8):
            accepted.append((p, end))
            i = end
        else:
            i = p + 1 if after_bad_crc == "rescan" else end
    return end_needed - n, accepted


def flush_after(data: bytes, sent_min: int, sent_max: int) -> bytes:
    """Bytes that end any frame a receiver may be assembling after ``data[:k]``, for every ``sent_min <= k <= sent_max``.

    ``data`` is what the host began to write to a receiver that was hunting for
    a SOF (one or more frames); a write cut after ``k`` of its bytes leaves the
    receiver mid-frame. The result is a run of one non-SOF byte value, as
    short as possible, after which a receiver is hunting again whichever ``k``
    it got and whether it resumes after a bad CRC at the next byte or after the
    frame. The byte value is chosen so that no frame it completes has a good
    CRC (nothing the host did not send whole is executed); empty when nothing
    is cut. Every frame it ends is answered by the device with ``BAD_CRC``,
    which a host drops as a stale reply.
    """
    data = bytes(data)
    if not 0 <= sent_min <= sent_max <= len(data):
        raise ValueError(f"need 0 <= sent_min <= sent_max <= {len(data)}, got {sent_min}..{sent_max}")
    cuts = [k for k in range(sent_min, sent_max + 1) if 0 < k < len(data)]
    if not cuts:
        return b""
    best: tuple[int, int] | None = None
    for fill in (0x00, 0xFF, 0x55, 0x01, 0x7E, 0x33):
        needed, clean = 0, True
        for k in cuts:
            for mode in RESUME_AFTER_BAD_CRC:
                more, accepted = _parse_with_fill(data[:k], fill, mode)
                needed = max(needed, more)
                # a frame the host wrote that arrived whole before the cut is meant to run; any other is not
                clean = clean and all(b <= k and _is_whole_frame(data, a, b) for a, b in accepted)
        if clean:
            return bytes([fill]) * needed
        if best is None:
            best = (fill, needed)
    # every value completes some frame with a matching CRC (a 2**-16 coincidence, several times over):
    # end the frames anyway; the SAFE that follows is what leaves the board safe
    return bytes([best[0]]) * best[1]


def _is_whole_frame(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` is one of the frames the host wrote, whole (frames laid end to end from 0)."""
    i = 0
    while i < start:
        if i + HEADER_SIZE > len(data) or data[i] != SOF:
            return False
        i += OVERHEAD + (data[i + 3] | (data[i + 4] << 8))
    return i == start


def unknown_state_flush() -> bytes:
    """What ends a frame the host knows nothing about (a request that got no reply, a board left by another
    process): one longest frame of zero bytes. A frame it completes has a good CRC only by a 2**-16
    coincidence; the SAFE that follows, and its reply, are what prove the board safe."""
    return bytes(MAX_FRAME)
