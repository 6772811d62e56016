r"""The simulated SCPI bench: a simulated AWG and scope around a device under test, over in-process transports.

Why: CI has no instruments, yet the real drivers (:class:`SCPIAWG`,
:class:`SCPIScope`) and :class:`AWGScopeSystem` must run unchanged, byte for
byte, including their fault recovery. :class:`BenchTransport` is a
:class:`~physnn.devices.transport.Transport` whose far end is one of the
simulated instruments instead of a socket. One module per part:

* :mod:`.awg` -- :class:`SimAWG` (Keysight 33500B subset);
* :mod:`.scope` -- :class:`SimScope` (InfiniiVision subset);
* :mod:`.dut` -- :class:`BenchDUT`, the physics in between (a physnn simulator);
* :mod:`.scpi_instrument` -- what they share: dispatch on the driver's own
  command table, error queue, ESE register;
* this module -- :class:`SCPIBench` (the trigger line, the clock, the faults),
  :class:`BenchTransport` and the factory :func:`simulated_awg_scope`.

The trigger only fires an acquisition when the scope is armed; a trigger on
an unarmed scope is lost (``bench.lost_triggers``). The scope record is the
response delayed by a random latency of ``0..max_latency`` AWG samples
(seeded), with Gaussian noise ``noise_volts`` (V rms) and quantisation (see
:mod:`.scope`).

Faults on request (:class:`Fault`): ``"no_reply"`` (the command is executed,
its reply is lost), ``"late_reply"`` (the reply arrives ``late_factor`` times
the current timeout later, after the driver has given up), ``"truncated_block"``
(half a block, the rest never comes), ``"connection_lost"`` (the write fails,
the instrument reboots to its power-on state: output off, waveforms gone,
scope disarmed; a ``reopen()`` reconnects). Replies keep their order, and a
device clear drops only what has already arrived, so a late reply still in
flight survives ``clear()`` exactly as on a raw socket.

Each instrument reads its input as a byte stream, as a real one does: a
message ends at a newline that is not inside an IEEE 488.2 definite-length
block, so a write cut in the middle of a block leaves the instrument waiting
for the rest, and the next command is swallowed into the block data.
``device_clear=True`` (the default, a VISA INSTR resource: VXI-11, HiSLIP,
USBTMC, GPIB) makes ``clear()`` an IEEE 488.2 device clear that also drops
the instrument's partial input; ``device_clear=False`` models a raw socket,
where nothing but more bytes can end it.

Fault specs are checked when the bench is built (:func:`~.fault_specs.checked_faults`):
a spec that is not a fault, lacks its ``command``, or names a command the
instrument never receives is a one-line error.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from physnn.core import checks
from physnn.core.registry import build_system

from ..awg_scope import AWGScopeSystem, BenchLimits, Framing
from ..errors import ConnectionLost, InstrumentTimeout
from ..scpi import INFINIIVISION_X, KEYSIGHT_33500B, SCPIAWG, SCPIScope
from ..transport import Transport
from .awg import AWG_IDN, SimAWG
from .dut import BenchDUT
from .fault_specs import checked_faults
from .scope import SCOPE_IDN, SimScope
from .scpi_instrument import SimInstrument

__all__ = [
    "Fault",
    "FAULT_KINDS",
    "SCPIBench",
    "BenchTransport",
    "simulated_awg_scope",
    "AWG_IDN",
    "SCOPE_IDN",
    "take_messages",
]

FAULT_KINDS = ("no_reply", "late_reply", "truncated_block", "connection_lost")
#: what a missing required fault field looks like, for the one-line error
_FAULT_HINTS = {"command": "the text of the command it fires on, e.g. '*TRG' or ':WAV:DATA?'"}


@dataclass
class Fault:
    """One injected fault.

    Attributes:
        kind: ``"no_reply"``, ``"late_reply"``, ``"truncated_block"`` or ``"connection_lost"``.
        command: the fault fires on a command starting with this text (``":WAV:DATA?"``, ``"*TRG"``).
        instrument: ``"awg"``, ``"scope"`` or ``"any"``.
        skip: matching commands to let through before the first firing.
        times: how many times it fires.
        late_factor: for ``late_reply``, the delay in units of the transport timeout.
    """

    kind: str
    command: str
    instrument: str = "any"
    skip: int = 0
    times: int = 1
    late_factor: float = 1.5
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        checks.choice("fault kind", self.kind, FAULT_KINDS)
        checks.choice("fault instrument", self.instrument, ("awg", "scope", "any"))
        self.command = checks.string("fault command", self.command, empty=False)
        fixed = _command_prefixes(self.instrument)
        wanted = self.command.strip().lstrip(":").upper()
        if not any(f.startswith(wanted) or (wanted.startswith(f) and f.endswith(" ")) for f in fixed):
            shown = ", ".join(sorted({f.split(" ")[0] for f in fixed}))
            who = "the awg or the scope" if self.instrument == "any" else f"the {self.instrument}"
            raise checks.ParameterError(
                f"fault command must start like a command {who} receives ({shown}), got {self.command!r}"
            )
        checks.integer("fault skip", self.skip, low=0)
        checks.integer("fault times", self.times, low=1)
        checks.positive("fault late_factor", self.late_factor)

    def matches(self, instrument: str, command: str) -> bool:
        if self.fired >= self.times or self.instrument not in ("any", instrument):
            return False
        if not command.upper().startswith(self.command.upper()):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        self.fired += 1
        return True


def _command_prefixes(instrument: str) -> list[str]:
    """The fixed text of every command an instrument receives (before its first field), upper case, no colon."""
    tables = {"awg": [KEYSIGHT_33500B], "scope": [INFINIIVISION_X], "any": [KEYSIGHT_33500B, INFINIIVISION_X]}
    return [t.split("{")[0].lstrip(":").upper() for table in tables[instrument] for t in table.values()]


def take_messages(buf: bytearray) -> list[bytes]:
    """Complete messages at the start of an instrument's input ``buf`` (removed from it, newline stripped).

    A message ends at a newline outside an IEEE 488.2 definite-length block
    (``#<n><length><data>``: the data may hold newlines). An incomplete
    message -- a block whose data has not all arrived -- stays in ``buf``.
    """
    out: list[bytes] = []
    i = 0
    start = 0
    n = len(buf)
    while i < n:
        c = buf[i]
        if c == 0x0A:  # newline: end of a message
            out.append(bytes(buf[start:i]))
            i += 1
            start = i
            continue
        if c == 0x23:  # '#': a definite-length block if a digit 1..9 and that many digits follow
            if i + 1 >= n:
                break  # cannot tell yet
            nd = buf[i + 1]
            if 0x31 <= nd <= 0x39:
                digits = nd - 0x30
                if i + 2 + digits > n:
                    break
                field = bytes(buf[i + 2 : i + 2 + digits])
                if field.isdigit():
                    end = i + 2 + digits + int(field)
                    if end > n:
                        break  # the block's data is still arriving: the message is incomplete
                    i = end
                    continue
        i += 1
    del buf[:start]
    return out


class SCPIBench:
    """Wires the simulated AWG, DUT and scope together; owns the faults and the clock.

    Args:
        dut: the device under test (None: the response is 0 V, for driver tests).
        seed: seeds the latency and the scope noise.
        noise_volts: scope noise (V rms).
        max_latency: largest trigger-to-response latency (AWG samples).
        acq_delay: seconds from trigger to a complete acquisition.
        faults: :class:`Fault` objects or dicts of their fields.
        awg_options, scope_options: passed to :class:`SimAWG` / :class:`SimScope`.
    """

    def __init__(
        self,
        dut: BenchDUT | None = None,
        *,
        seed: int = 0,
        noise_volts: float = 1e-3,
        max_latency: int = 8,
        acq_delay: float = 2e-4,
        faults: Iterable[Fault | dict] | None = None,
        awg_options: dict | None = None,
        scope_options: dict | None = None,
    ):
        self.dut = dut
        self.seed = checks.integer("seed", seed, low=0)
        self.rng = np.random.default_rng(self.seed)
        self.noise_volts = checks.nonnegative("noise_volts", noise_volts)
        self.max_latency = checks.integer("max_latency", max_latency, low=0)
        self.acq_delay = checks.nonnegative("acq_delay", acq_delay)
        self.faults: list[Fault] = checked_faults(faults, Fault, key="faults", hints=_FAULT_HINTS)
        self.awg = SimAWG(self, **(awg_options or {}))
        self.scope = SimScope(self, **(scope_options or {}))
        self.link_up = {"awg": True, "scope": True}
        self.transactions = {"awg": 0, "scope": 0}
        self.lost_triggers = 0
        self.triggers = 0
        self.log: deque[tuple[str, str]] = deque(maxlen=1000)  # the last commands, for debugging
        self.lock = threading.RLock()

    def instrument(self, name: str) -> SimInstrument:
        return {"awg": self.awg, "scope": self.scope}[name]

    def add_fault(self, fault: Fault | dict) -> Fault:
        (f,) = checked_faults([fault], Fault, key="fault", hints=_FAULT_HINTS)
        self.faults.append(f)
        return f

    def take_fault(self, instrument: str, command: str) -> Fault | None:
        for f in self.faults:
            if f.matches(instrument, command):
                return f
        return None

    def drop_link(self, instrument: str) -> None:
        """The connection to ``instrument`` goes away and the instrument reboots."""
        self.link_up[instrument] = False
        self.instrument(instrument).reset()

    def fire(self, volts: np.ndarray, sample_rate: float) -> None:
        """The AWG's trigger out: starts an acquisition if the scope is armed."""
        self.triggers += 1
        scope = self.scope
        if not scope.armed:
            self.lost_triggers += 1
            return
        response = self.dut.respond(volts) if self.dut is not None else np.zeros(volts.size)
        delay = int(self.rng.integers(0, self.max_latency + 1)) if self.max_latency else 0
        scope.capture(response, sample_rate, delay, time.monotonic())

    def execute(self, instrument: str, message: bytes) -> tuple[bytes, float] | None:
        """Run one command; return ``(reply bytes without terminator, available_at)`` or None."""
        now = time.monotonic()
        space = message.find(b" ")
        head = (message if space < 0 else message[:space]).decode("ascii", errors="replace").strip().upper()
        args = b"" if space < 0 else message[space + 1 :]
        if head.startswith(":"):
            head = head[1:]
        self.log.append((instrument, head))
        reply: Any = self.instrument(instrument).handle(head, args, now)
        if reply is None:
            return None
        at = now
        if isinstance(reply, tuple):
            reply, at = reply
        if isinstance(reply, str):
            reply = reply.encode("ascii")
        return reply, at


class BenchTransport(Transport):
    """A :class:`Transport` whose far end is one instrument of a :class:`SCPIBench`.

    Written bytes go to the instrument's input stream; every complete message
    in it is executed (:func:`take_messages`). Replies are queued with the
    time they become readable; reads wait for them up to the timeout, then
    raise :class:`InstrumentTimeout` with what had arrived. ``device_clear``:
    whether :meth:`clear` also drops the instrument's partial input (an IEEE
    488.2 device clear, as on a VISA INSTR resource) or not (a raw socket).
    """

    def __init__(
        self,
        bench: SCPIBench,
        instrument: str,
        *,
        timeout: float = 0.5,
        resource: str | None = None,
        device_clear: bool = True,
    ):
        checks.choice("instrument", instrument, ("awg", "scope"))
        device_clear = checks.boolean("device_clear", device_clear)
        super().__init__(resource or f"SIM::{instrument.upper()}::{'INSTR' if device_clear else 'SOCKET'}")
        self.bench = bench
        self.instrument = instrument
        self.clear_resets_device = device_clear  # type: ignore[misc]
        self._timeout = float(timeout)
        self._queue: list[list[Any]] = []  # [available_at, bytearray]
        self.input = bytearray()  # what the instrument received of a message it has not executed yet
        self.writes = 0
        self.open()

    # -- clock helpers
    def _arrived(self, now: float) -> int:
        return sum(len(c[1]) for c in self._queue if c[0] <= now)

    def _take(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n and self._queue:
            chunk = self._queue[0][1]
            need = n - len(out)
            out.extend(chunk[:need])
            del chunk[:need]
            if not chunk:
                self._queue.pop(0)
        return bytes(out)

    def _enqueue(self, data: bytes, at: float) -> None:
        if self._queue:
            at = max(at, self._queue[-1][0])  # replies never overtake each other
        self._queue.append([at, bytearray(data)])

    def _link_check(self) -> None:
        if not self.bench.link_up[self.instrument]:
            raise ConnectionLost("connection to the simulated instrument is down", resource=self.resource)

    # -- primitives
    def _write_bytes(self, data: bytes) -> None:
        with self.bench.lock:
            self._link_check()
            self.writes += 1
            self.input.extend(data)
            for message in take_messages(self.input):
                self._execute(message)

    def _execute(self, message: bytes) -> None:
        """One complete message arrived at the instrument: faults, then the instrument, then its reply."""
        if not message.strip():  # an empty message (a bare newline) is nothing to execute
            return
        with self.bench.lock:
            self.bench.transactions[self.instrument] += 1
            command = message[:64].decode("ascii", errors="replace")
            fault = self.bench.take_fault(self.instrument, command.lstrip())
            if fault is not None and fault.kind == "connection_lost":
                self.input.clear()
                self.bench.drop_link(self.instrument)
                raise ConnectionLost(
                    f"connection lost while sending {command[:32]!r} (simulated)", resource=self.resource
                )
            result = self.bench.execute(self.instrument, message)
            if result is None:
                return
            reply, at = result
            reply = reply + b"\n"
            if fault is None:
                self._enqueue(reply, at)
            elif fault.kind == "no_reply":
                return
            elif fault.kind == "late_reply":
                self._enqueue(reply, max(at, time.monotonic()) + fault.late_factor * self._timeout)
            elif fault.kind == "truncated_block":
                self._enqueue(reply[: max(1, len(reply) // 2)], at)

    def _wait(self, satisfied) -> bool:
        deadline = time.monotonic() + self._timeout
        while True:
            now = time.monotonic()
            with self.bench.lock:
                self._link_check()
                if satisfied(now):
                    return True
                future = [c[0] for c in self._queue if c[0] > now]
            if now >= deadline:
                return False
            nxt = min([deadline] + future)
            time.sleep(max(0.0, min(nxt - now, 0.01)) or 1e-5)

    def _read_exact(self, n: int) -> bytes:
        if self._wait(lambda now: self._arrived(now) >= n):
            return self._take(n)
        partial = self._take(self._arrived(time.monotonic()))
        exc = InstrumentTimeout(
            f"short read: got {len(partial)} of {n} bytes within {self._timeout:g} s", resource=self.resource
        )
        exc.received = partial  # type: ignore[attr-defined]
        raise exc

    def _available_line(self, now: float) -> int:
        seen = 0
        for at, chunk in self._queue:
            if at > now:
                return -1
            i = chunk.find(b"\n")
            if i >= 0:
                return seen + i + 1
            seen += len(chunk)
        return -1

    def _read_message(self) -> bytes:
        if self._wait(lambda now: self._available_line(now) >= 0):
            return self._take(self._available_line(time.monotonic()))
        partial = self._take(self._arrived(time.monotonic()))
        exc = InstrumentTimeout(f"no reply within {self._timeout:g} s", resource=self.resource)
        exc.received = partial  # type: ignore[attr-defined]
        raise exc

    def _clear(self) -> None:
        with self.bench.lock:
            self._link_check()
            now = time.monotonic()
            self._queue = [c for c in self._queue if c[0] > now]
            if self.clear_resets_device:  # a device clear: the instrument drops a half-received message
                self.input.clear()

    def _open(self) -> None:
        with self.bench.lock:
            if not self.bench.link_up[self.instrument]:  # it rebooted when the link dropped
                self.input.clear()
            self.bench.link_up[self.instrument] = True
            self._queue = []

    def _close(self) -> None:
        self._queue = []

    def _get_timeout(self) -> float:
        return self._timeout

    def _set_timeout(self, seconds: float) -> None:
        self._timeout = seconds


# ------------------------------------------------------------------- factory


def _symbol_samples(n_in: int, n_out: int, features: str) -> int:
    need = 2 * n_out + 2 if features == "fft" else 2 * n_out
    s0 = max(4, -(-need // n_in))
    for s in range(s0, s0 + 17):
        if (n_in * s) % n_out == 0:
            return s
    return s0


def simulated_awg_scope(
    n_inputs: int | None = None,
    n_outputs: int | None = None,
    backend: str = "optics",
    seed: int = 0,
    device: str = "cpu",
    faults: Iterable[Fault | dict] | None = None,
    *,
    features: str = "integrals",
    noise_volts: float = 1e-3,
    timeout: float = 0.5,
    max_points: int = 65536,
    symbol_samples: int | None = None,
    on_clip: str = "flag",
    retries: int = 3,
    backoff: float = 0.01,
    max_backoff: float = 1.0,
    device_clear: bool = True,
    **backend_options: Any,
) -> AWGScopeSystem:
    """An :class:`AWGScopeSystem` on an in-process SCPI bench around a simulator.

    The backend is built with :func:`physnn.core.registry.build_system` (``n_inputs``,
    ``n_outputs`` when given, ``seed``, ``device`` and ``backend_options``). The
    system is driven in volts, 0..1 V at the AWG output (Vpp 1 V, offset
    0.5 V), which the device under test maps linearly onto the backend's drive
    range; the spec copies the backend's number of levels, so every allowed
    volt level lands exactly on one of the backend's levels. Outputs are V*s
    (``features="integrals"``) or V (``"fft"``). The bench objects are
    reachable as ``system.bench`` and ``system.backend``. ``device_clear=False``
    simulates instruments reached over a raw socket (no device clear).
    ``faults`` are checked before anything is built.

    ``max_retries`` and ``retry_backoff`` (the names before the drivers shared
    one vocabulary) are still accepted, with a ``DeprecationWarning``, so that
    run files written before keep rebuilding.
    """
    for old, new in (("max_retries", "retries"), ("retry_backoff", "backoff")):
        if old in backend_options:
            warnings.warn(f"simulated_awg_scope: {old!r} is now {new!r}", DeprecationWarning, stacklevel=2)
            value = backend_options.pop(old)
            if new == "retries":
                retries = value
            else:
                backoff = value
    faults = checked_faults(faults, Fault, key="faults", hints=_FAULT_HINTS)  # before any system is built
    checks.boolean("device_clear", device_clear)
    opts = dict(backend_options)
    if n_outputs is not None:
        opts["n_outputs"] = n_outputs
    inner = build_system(backend, n_inputs=n_inputs, seed=seed, device=device, **opts)
    s = inner.spec
    n_in, n_out = s.n_inputs, s.n_outputs
    sym = symbol_samples or _symbol_samples(n_in, n_out, features)
    framing = Framing(n_in, sym, 8, 2)
    vpp, offset = 1.0, 0.5
    if features == "integrals":
        dut = BenchDUT(inner, framing, v_low=offset - vpp / 2, v_high=offset + vpp / 2, encoding="windows", gain=1.0)
        channel_range, channel_offset = 2.0, 0.5
    else:
        dut = BenchDUT(
            inner, framing, v_low=offset - vpp / 2, v_high=offset + vpp / 2, encoding="tones", gain=4.0 / n_out
        )
        channel_range, channel_offset = 4.0, 0.0
    bench = SCPIBench(dut, seed=seed, noise_volts=noise_volts, faults=faults)
    awg = SCPIAWG(BenchTransport(bench, "awg", timeout=timeout, device_clear=device_clear), name="awg")
    scope = SCPIScope(BenchTransport(bench, "scope", timeout=timeout, device_clear=device_clear), name="scope")
    limits = BenchLimits(max_vpp=2.0, max_abs_offset=1.0, max_abs_voltage=2.0, max_points=max_points)
    system = AWGScopeSystem(
        awg,
        scope,
        n_inputs=n_in,
        n_outputs=n_out,
        limits=limits,
        vpp=vpp,
        offset=offset,
        sample_rate=1e6,
        levels=s.levels,
        features=features,
        symbol_samples=sym,
        guard_samples=framing.guard_samples,
        sync_chip_samples=framing.sync_chip_samples,
        channel_range=channel_range,
        channel_offset=channel_offset,
        max_delay_samples=max(16, bench.max_latency),
        on_clip=on_clip,
        retries=retries,
        backoff=backoff,
        max_backoff=max_backoff,
        acquisition_timeout=max(timeout, 0.05),
        expect_awg_idn="33522B",
        expect_scope_idn="DSOX3024T",
        name=f"awg-scope[{backend}]",
        device=device,
    )
    system.bench = bench  # type: ignore[attr-defined]
    system.backend = inner  # type: ignore[attr-defined]
    return system


def _preflight(options: dict[str, Any]) -> None:
    """What :func:`simulated_awg_scope` can check of its options before anything is built (the runner's
    pre-flight pass, ``physnn.run.preflight``): the fault specs and ``device_clear``."""
    checked_faults(options.get("faults"), Fault, key="faults", hints=_FAULT_HINTS)
    if "device_clear" in options:
        checks.boolean("device_clear", options["device_clear"])


simulated_awg_scope.preflight = _preflight  # type: ignore[attr-defined]
