"""Byte transports to instruments: one base, one module per backend.

Why one small interface: drivers (SCPI AWG/scope, the serial DAQ) are written
once against :class:`Transport` and run unchanged over a VISA socket, a USB
serial port, an in-process simulated bench or a test script that checks every
byte. Each implementation supplies five primitives (write bytes, read exactly
``n`` bytes, read one terminated message, clear, open/close); everything else
(text commands, queries, IEEE 488.2 blocks, locking) lives in the base once.

* :mod:`.base` -- :class:`Transport` (the guarantees every backend gives) and the port-error map;
* :mod:`.blocks` -- IEEE 488.2 definite-length blocks (:func:`encode_block`, :func:`parse_block`);
* :mod:`.visa` -- :class:`VisaTransport` (pyvisa, imported lazily);
* :mod:`.serial_port` -- :class:`SerialTransport` (pyserial, imported lazily);
* :mod:`.scripted` -- :class:`ScriptedTransport`, the in-memory fake that checks every write against a script.

The simulated SCPI bench's in-process transport lives beside the bench it talks to
(:class:`physnn.devices.sim.bench.BenchTransport`).
"""

from .base import PORT_ERRORS, Transport, UnfinishedWrite
from .blocks import DEFAULT_MAX_BLOCK, encode_block, parse_block
from .scripted import ScriptedTransport
from .serial_port import SerialTransport
from .visa import VisaTransport

__all__ = [
    "Transport",
    "VisaTransport",
    "SerialTransport",
    "ScriptedTransport",
    "encode_block",
    "parse_block",
    "PORT_ERRORS",
    "DEFAULT_MAX_BLOCK",
    "UnfinishedWrite",
]
