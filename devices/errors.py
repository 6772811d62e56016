"""One error hierarchy for every instrument and transport.

Why one hierarchy: a lab script wants to catch "the instrument failed" without
knowing whether it was VISA, serial, a timeout or a CRC, and the recovery code
wants to tell those apart. Each error carries the resource it concerns.
"""

from __future__ import annotations

__all__ = [
    "InstrumentError",
    "InstrumentTimeout",
    "ConnectionLost",
    "ProtocolError",
    "InstrumentReportedError",
    "LimitError",
]


class InstrumentError(Exception):
    """Base of every instrument failure. ``resource`` names the port or address."""

    def __init__(self, message: str, *, resource: str | None = None):
        self.resource = resource
        super().__init__(f"[{resource}] {message}" if resource else message)


class InstrumentTimeout(InstrumentError):
    """No (complete) reply within the timeout."""


class ConnectionLost(InstrumentError):
    """The port or socket went away (cable pulled, instrument rebooted)."""


class ProtocolError(InstrumentError):
    """A reply that does not parse: bad framing, truncated block, CRC mismatch, stale sequence."""


class InstrumentReportedError(InstrumentError):
    """The instrument itself reported an error (``SYST:ERR?`` or an error frame).

    ``code`` is the instrument's numeric code, ``message`` its text.
    """

    def __init__(self, code: int, message: str, *, resource: str | None = None):
        self.code = int(code)
        self.instrument_message = message
        super().__init__(f"instrument error {code}: {message}", resource=resource)


class LimitError(InstrumentError, ValueError):
    """A setting or drive value outside the bench's configured limits.

    Raised before anything is written to the instrument. It is also a
    ``ValueError`` so that code validating inputs catches it the same way.
    """
