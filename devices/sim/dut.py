r"""The device under test of the simulated SCPI bench: AWG volts -> a physnn simulator -> response volts.

The device under test is clocked with the AWG, so it knows the framing of
:class:`~physnn.devices.awg_scope.Framing`. From the AWG output voltage
``V`` (0 V while the output is off) it takes each symbol's mean, maps
``[v_low, v_high]`` linearly onto the backend's drive range
``[low, high]`` (clamped; rounded to the backend's levels if it has them)
and calls the backend :class:`~physnn.core.system.PhysicalSystem` ONCE for the
whole waveform. The backend's outputs ``y`` become the response voltage, on
the AWG grid:

* the Barker-13 sync marker, ``+-sync_volts``, at the same place as in the drive;
* ``encoding="windows"``: slot ``i`` is cut into ``n_out`` windows (edges
  ``floor(k * slot / n_out)``); window ``k`` sits at ``gain * (y_ik - y0)`` V;
* ``encoding="tones"``: slot ``i`` carries
  :math:`\sum_k g (y_{ik} - y_0) \cos(2\pi (k+1) n / \text{slot})`;
* 0 V elsewhere (guards).

So the features :class:`AWGScopeSystem` extracts are affine, increasing
functions of the backend's outputs (for ``y >= y0``): ``"integrals"`` reads
``gain * (y - y0) * w_k / sample_rate`` (V*s, ``w_k`` the window's points)
and ``"fft"`` reads ``gain * (y - y0)`` (V), plus the scope's noise and
quantisation.
"""

from __future__ import annotations

import numpy as np
import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem

from ..awg_scope import BARKER13, Framing, window_edges

__all__ = ["BenchDUT", "ENCODINGS"]

#: How the backend's outputs are laid onto the response: flat windows or cosine tones per slot.
ENCODINGS = ("windows", "tones")


class BenchDUT:
    """The device under test: AWG volts -> backend system -> response volts (see the module docstring)."""

    def __init__(
        self,
        backend: PhysicalSystem,
        framing: Framing,
        *,
        v_low: float,
        v_high: float,
        encoding: str = "windows",
        gain: float = 1.0,
        y0: float = 0.0,
        sync_volts: float = 0.25,
    ):
        checks.choice("encoding", encoding, ENCODINGS)
        if framing.n_inputs != backend.spec.n_inputs:
            raise ValueError(f"framing has n_inputs={framing.n_inputs}, the backend takes {backend.spec.n_inputs}")
        if not v_low < v_high:
            raise ValueError(f"need v_low < v_high, got {v_low}, {v_high}")
        self.backend = backend
        self.framing = framing
        self.v_low, self.v_high = float(v_low), float(v_high)
        self.encoding = encoding
        self.gain = float(gain)
        self.y0 = float(y0)
        self.sync_volts = float(sync_volts)
        self.calls = 0

    def drive_values(self, volts: np.ndarray) -> np.ndarray | None:
        """Per-sample backend drive values ``[B, n_in]`` from the AWG voltage (None: not a framed waveform)."""
        f = self.framing
        per = f.slot + f.guard_samples
        n = (volts.size - f.header) // per if volts.size > f.header else 0
        if n < 1 or f.length(n) != volts.size:
            return None
        body = volts[f.header :].reshape(n, per)[:, : f.slot]
        sym = body.reshape(n, f.n_inputs, f.symbol_samples).mean(axis=2)
        s = self.backend.spec
        x = s.low + (sym - self.v_low) / (self.v_high - self.v_low) * (s.high - s.low)
        x = np.clip(x, s.low, s.high)
        if s.levels is not None:
            x = s.low + np.rint((x - s.low) / s.step) * s.step
            x = np.clip(x, s.low, s.high)
        return x

    def respond(self, volts: np.ndarray) -> np.ndarray:
        """Response voltage on the AWG grid, same length as ``volts``."""
        f = self.framing
        out = np.zeros(volts.size, dtype=np.float64)
        x = self.drive_values(volts)
        if x is None:
            return out  # not our framing: the DUT output stays at 0 V (no sync: the driver will notice)
        self.calls += 1
        y = self.backend(torch.as_tensor(x, dtype=torch.float32)).double().cpu().numpy()
        n, n_out = y.shape
        amp = self.gain * (y - self.y0)
        out[f.lead : f.lead + f.sync] = np.repeat(BARKER13, f.sync_chip_samples) * self.sync_volts
        if self.encoding == "windows":
            edges = window_edges(f.slot, n_out)
            widths = np.diff(edges)
            slot = np.repeat(amp, widths, axis=1)  # [n, slot]
        else:
            k = np.arange(1, n_out + 1)[:, None]
            basis = np.cos(2 * np.pi * k * np.arange(f.slot)[None, :] / f.slot)  # [n_out, slot]
            slot = amp @ basis
        per = f.slot + f.guard_samples
        body = np.zeros((n, per))
        body[:, : f.slot] = slot
        out[f.header :] = body.reshape(-1)
        return out
