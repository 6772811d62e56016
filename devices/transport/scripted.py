"""The scripted fake transport: every write checked against a script, replies played back, in memory."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ..errors import InstrumentTimeout, ProtocolError
from .base import Transport, _as_bytes

__all__ = ["ScriptedTransport"]


class ScriptedTransport(Transport):
    """A transport that checks every write against a script and plays replies.

    The script is a sequence of ``(expect, reply)`` steps, consumed in order:

    * ``expect`` is what the next write must be, exactly: ``str`` is encoded
      and the write termination appended (``"OUTP1 OFF"`` matches
      ``b"OUTP1 OFF\\n"``); ``bytes`` is compared verbatim.
    * ``reply`` is queued for reading after that write: ``str`` gets the read
      termination appended, ``bytes`` is verbatim, ``None`` queues nothing
      (a read then times out: a dropped reply), and an exception instance is
      raised from the write itself (e.g. ``ConnectionLost(...)``).

    A write different from the expected one raises :class:`ProtocolError`
    showing both. Every byte written is recorded in ``written`` (and each
    write in ``writes``), mismatches included, so a test can assert that
    nothing reached the instrument. ``verify()`` (and ``close()``) raise if a
    step is left unused. Reads on an empty input raise
    :class:`InstrumentTimeout` at once.
    """

    def __init__(
        self,
        script: Iterable[Sequence[Any]] = (),
        *,
        resource: str = "scripted",
        timeout: float = 1.0,
        verify_on_close: bool = True,
        **kwargs: Any,
    ):
        super().__init__(resource, **kwargs)
        self.steps: list[tuple[Any, Any]] = []
        self.extend(script)
        self.position = 0
        self.written = bytearray()
        self.writes: list[bytes] = []
        self.verify_on_close = verify_on_close
        self._input = bytearray()
        self._timeout = float(timeout)
        self.clears = 0
        self.reopens = 0
        self._opened_once = False
        self._arrived = False
        self.open()

    def extend(self, script: Iterable[Sequence[Any]]) -> None:
        """Append steps to the script."""
        for step in script:
            if len(step) != 2:
                raise ValueError(f"a script step is (expect, reply), got {step!r}")
            self.steps.append((step[0], step[1]))

    def feed(self, data: bytes) -> None:
        """Queue bytes for reading without a write (e.g. a late reply arriving)."""
        self._input.extend(_as_bytes(data))

    @property
    def remaining(self) -> list[tuple[Any, Any]]:
        return self.steps[self.position :]

    def _expected_bytes(self, expect: Any) -> bytes:
        if isinstance(expect, str):
            return _as_bytes(expect + self.write_termination, self.encoding)
        return _as_bytes(expect)

    def write_raw(self, data: bytes) -> None:
        """As :meth:`Transport.write_raw`; a write the script answers with an exception still arrived whole."""
        before = self.unfinished_write
        self._arrived = False
        try:
            super().write_raw(data)
        except BaseException:
            if self._arrived:
                self.unfinished_write = before
            raise

    def _write_bytes(self, data: bytes) -> None:
        self._arrived = True
        self.written.extend(data)
        self.writes.append(data)
        if self.position >= len(self.steps):
            raise ProtocolError(f"unexpected write {data!r}: the script is exhausted", resource=self.resource)
        expect, reply = self.steps[self.position]
        want = self._expected_bytes(expect)
        if data != want:
            raise ProtocolError(
                f"script step {self.position}: expected write {_show(want)}, got {_show(data)}", resource=self.resource
            )
        self.position += 1
        if isinstance(reply, BaseException):
            raise reply
        if reply is None:
            return
        if isinstance(reply, str):
            self._input.extend(_as_bytes(reply + self.read_termination, self.encoding))
        else:
            self._input.extend(_as_bytes(reply))

    def _read_exact(self, n: int) -> bytes:
        if len(self._input) < n:
            partial = bytes(self._input)
            self._input.clear()
            exc = InstrumentTimeout(f"short read: got {len(partial)} of {n} bytes (script)", resource=self.resource)
            exc.received = partial  # type: ignore[attr-defined]
            raise exc
        data = bytes(self._input[:n])
        del self._input[:n]
        return data

    def _read_message(self) -> bytes:
        term = _as_bytes(self.read_termination or "\n", self.encoding)
        idx = self._input.find(term)
        if idx < 0:
            partial = bytes(self._input)
            self._input.clear()
            exc = InstrumentTimeout(f"no reply (script); pending input {partial[:64]!r}", resource=self.resource)
            exc.received = partial  # type: ignore[attr-defined]
            raise exc
        data = bytes(self._input[: idx + len(term)])
        del self._input[: idx + len(term)]
        return data

    def _clear(self) -> None:
        self.clears += 1
        self._input.clear()

    def _open(self) -> None:
        if self._opened_once:
            self.reopens += 1
        self._opened_once = True

    def _close(self) -> None:
        self._input.clear()
        if self.verify_on_close:
            self.verify()

    def _get_timeout(self) -> float:
        return self._timeout

    def _set_timeout(self, seconds: float) -> None:
        self._timeout = seconds

    def verify(self) -> None:
        """Raise :class:`ProtocolError` if any scripted step was not used."""
        left = self.steps[self.position :]
        if left:
            shown = ", ".join(_show(self._expected_bytes(e)) for e, _ in left[:5])
            more = f" (+{len(left) - 5} more)" if len(left) > 5 else ""
            raise ProtocolError(
                f"{len(left)} scripted step(s) never written, next expected: {shown}{more}", resource=self.resource
            )


def _show(data: bytes, limit: int = 80) -> str:
    return repr(data[:limit]) + (f"...(+{len(data) - limit} bytes)" if len(data) > limit else "")
