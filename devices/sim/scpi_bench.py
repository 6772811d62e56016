"""The simulated SCPI bench under its historical name (the ``awg-scope-sim`` entry point).

The bench is split into one module per instrument: :mod:`.awg` (SimAWG),
:mod:`.scope` (SimScope), :mod:`.dut` (BenchDUT, the simulator in between),
:mod:`.scpi_instrument` (dispatch on the driver's command table) and
:mod:`.bench` (SCPIBench, BenchTransport, Fault and the factory). This module
re-exports them so that ``physnn.devices.sim.scpi_bench:simulated_awg_scope``
(pyproject.toml) and existing imports keep working.
"""

from __future__ import annotations

from .awg import AWG_IDN, SimAWG
from .bench import FAULT_KINDS, BenchTransport, Fault, SCPIBench, simulated_awg_scope
from .dut import BenchDUT
from .scope import SCOPE_IDN, SimScope
from .scpi_instrument import NO_ERROR, SimInstrument

__all__ = [
    "Fault",
    "FAULT_KINDS",
    "BenchDUT",
    "SimInstrument",
    "SimAWG",
    "SimScope",
    "SCPIBench",
    "BenchTransport",
    "simulated_awg_scope",
    "AWG_IDN",
    "SCOPE_IDN",
    "NO_ERROR",
]
