"""IEEE 488.2 definite-length blocks: ``#`` + one digit ``n`` (1..9) + ``n`` decimal digits giving the byte
count ``L`` + ``L`` data bytes.

The indefinite form ``#0`` is rejected: without a length a truncated transfer
cannot be detected. Pure functions, no I/O: the transports, the drivers and the
simulated instruments parse blocks with the same code.
"""

from __future__ import annotations

from ..errors import ProtocolError

__all__ = ["DEFAULT_MAX_BLOCK", "encode_block", "parse_block"]


#: Largest block accepted by default (a scope's deepest memory in WORD format
#: is ~ 8 Mpts * 2 B); a header announcing more is taken as garbage.
DEFAULT_MAX_BLOCK = 256 * 1024 * 1024


def encode_block(data: bytes) -> bytes:
    """IEEE 488.2 definite-length block for ``data``: ``#<n><len><data>``."""
    data = bytes(data)
    length = str(len(data)).encode("ascii")
    if len(length) > 9:
        raise ValueError(f"block of {len(data)} bytes is too long for a definite-length header (max 999999999)")
    return b"#" + str(len(length)).encode("ascii") + length + data


def parse_block(buf: bytes, *, resource: str | None = None) -> tuple[bytes, int]:
    """Parse one definite-length block at the start of ``buf``.

    Returns ``(data, consumed)`` where ``consumed`` counts the header and data
    (not a trailing terminator). Raises :class:`ProtocolError` on bad framing
    or when ``buf`` holds fewer data bytes than the header announces.
    """
    buf = bytes(buf)
    length, header_len = _parse_block_header(buf, resource)
    end = header_len + length
    if len(buf) < end:
        raise ProtocolError(
            f"truncated block: header announces {length} data bytes, only {len(buf) - header_len} present",
            resource=resource,
        )
    return buf[header_len:end], end


def _parse_block_header(buf: bytes, resource: str | None) -> tuple[int, int]:
    if len(buf) < 2 or buf[:1] != b"#":
        raise ProtocolError(f"expected an IEEE 488.2 block starting with '#', got {buf[:16]!r}", resource=resource)
    nd = buf[1:2]
    if nd == b"0":
        raise ProtocolError(
            "indefinite-length block '#0' is not accepted (truncation would go unnoticed)", resource=resource
        )
    if not nd.isdigit():
        raise ProtocolError(f"bad block header: digit count {nd!r} is not 1..9 (got {buf[:16]!r})", resource=resource)
    n = int(nd)
    digits = buf[2 : 2 + n]
    if len(digits) < n or not digits.isdigit():
        raise ProtocolError(f"bad block header: length field {digits!r} is not {n} decimal digits", resource=resource)
    return int(digits), 2 + n
