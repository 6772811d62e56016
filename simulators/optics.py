r"""A multimode optical cavity / scattering medium imaged on a camera.

Physics
-------
A phase-only spatial light modulator (SLM) with ``n_inputs`` pixels shapes a
monochromatic, coherent beam of total power ``P``. Pixel ``j`` at drive value
``x_j`` (in units of :math:`\pi` rad, limits 0..``phase_range``, 8-bit by default) imprints

.. math:: E_j = \sqrt{P/N_{in}}\; e^{i\pi x_j}.

The cavity or scattering medium is linear in the field and is described by a
transmission matrix :math:`T \in \mathbb{C}^{N_{out}\times N_{in}}`:

* ``"gaussian"``: i.i.d. circular complex Gaussian entries with
  :math:`E|T_{kj}|^2 = 1/N_{in}` (a thick random medium, fully developed
  speckle); the mean pixel intensity equals the mean input intensity.
* ``"unitary"``: a lossless multimode cavity. Modes are mixed by
  :math:`U = \exp(i\,m H)` with :math:`H` a random Hermitian (GUE) matrix of size
  :math:`N=\max(N_{in},N_{out})` normalised to unit spectral scale, and ``m`` the
  mode-mixing strength (0: no mixing, each pixel images one mode; a few: fully
  mixed speckle). The SLM drives the first :math:`N_{in}` modes, the camera sees
  the first :math:`N_{out}`. Energy is conserved: with
  :math:`N_{out} = N \ge N_{in}`, :math:`\sum_k |(UE)_k|^2 = \sum_j |E_j|^2`.

The camera integrates intensity :math:`I_k = |(T E)_k|^2`. With ``photons`` the
mean number of photo-electrons per camera pixel at unit mean intensity, the
expected signal is :math:`S_k = \text{photons}\cdot I_k` (e-).

Noise (each draw from the system's own seeded generator)
--------------------------------------------------------
* shot noise: the collected charge is Poisson(:math:`S_k`) (e-);
* read noise: additive Gaussian, standard deviation ``read_noise`` (e- rms);
* full-well saturation: charge is clipped at ``full_well`` (e-);
* ADC: ``adc_bits`` bits spanning 0..``full_well``, rounded to the nearest code.

The output is the ADC code divided by :math:`2^{bits}-1`, so 1.0 means a
saturated pixel. The response is a nonlinear (cosine) function of the drive
values through interference, which is the nonlinearity the PNN uses.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from physnn.system import PhysicalSystem, SystemSpec

__all__ = ["OpticalCavity"]


class OpticalCavity(PhysicalSystem):
    """Phase SLM -> transmission matrix -> camera, batched and seeded.

    Args:
        n_inputs: SLM pixels (default 64).
        n_outputs: camera pixels read out (default 128).
        matrix: ``"gaussian"`` (random medium) or ``"unitary"`` (lossless cavity).
        mixing: mode-mixing strength for ``"unitary"`` (dimensionless).
        phase_range: drive limit ``high`` in units of pi. Default 1.0 (0..pi): with a full
            2 pi stroke the lowest and highest drive give the same field, so an encoder that
            uses the whole range would make its extremes (e.g. a label slot) indistinguishable.
        slm_bits: SLM bit depth (levels = 2**slm_bits); None for an analog drive.
        photons: mean photo-electrons per pixel at unit mean intensity.
        read_noise: camera read noise (e- rms).
        full_well: saturation charge (e-).
        adc_bits: ADC depth.
        noise: False turns off shot/read noise (quantisation and saturation stay).
        seed: seeds the transmission matrix and, separately, the noise stream.
        device: where the fields are computed (``"cuda"`` when asked).
        dtype: complex dtype of the fields (complex64 default).
    """

    def __init__(
        self,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        *,
        matrix: str = "gaussian",
        mixing: float = 3.0,
        phase_range: float = 1.0,
        slm_bits: int | None = 8,
        photons: float = 2000.0,
        read_noise: float = 5.0,
        full_well: float = 30000.0,
        adc_bits: int = 12,
        noise: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.complex64,
    ):
        n_in = 64 if n_inputs is None else int(n_inputs)
        n_out = 128 if n_outputs is None else int(n_outputs)
        if matrix not in ("gaussian", "unitary"):
            raise ValueError(f"matrix must be 'gaussian' or 'unitary', got {matrix!r}")
        _positive("phase_range", phase_range)
        _positive("photons", photons)
        _positive("full_well", full_well)
        if read_noise < 0 or not math.isfinite(read_noise):
            raise ValueError(f"read_noise must be >= 0 e-, got {read_noise}")
        if not (isinstance(adc_bits, int) and 1 <= adc_bits <= 24):
            raise ValueError(f"adc_bits must be an integer in 1..24, got {adc_bits!r}")
        if slm_bits is not None and not (isinstance(slm_bits, int) and 1 <= slm_bits <= 16):
            raise ValueError(f"slm_bits must be an integer in 1..16 or None, got {slm_bits!r}")
        if mixing < 0 or not math.isfinite(mixing):
            raise ValueError(f"mixing must be >= 0, got {mixing}")
        levels = None if slm_bits is None else 2**slm_bits
        spec = SystemSpec(n_in, n_out, 0.0, float(phase_range), levels, name="optics", units="pi rad")
        super().__init__(spec, device=device)
        self.matrix_kind = matrix
        self.mixing = float(mixing)
        self.photons = float(photons)
        self.read_noise = float(read_noise)
        self.full_well = float(full_well)
        self.adc_bits = adc_bits
        self.noise = bool(noise)
        self.seed = int(seed)
        self.dtype = dtype
        self._T = self._make_matrix()
        self._noise_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)

    # ----------------------------------------------------------------- physics
    def _make_matrix(self) -> torch.Tensor:
        n_in, n_out = self.spec.n_inputs, self.spec.n_outputs
        gen = torch.Generator().manual_seed(self.seed)
        if self.matrix_kind == "gaussian":
            re = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
            im = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
            T = torch.complex(re, im) / math.sqrt(2 * n_in)
        else:
            n = max(n_in, n_out)
            a = torch.complex(
                torch.randn(n, n, generator=gen, dtype=torch.float64),
                torch.randn(n, n, generator=gen, dtype=torch.float64),
            )
            H = (a + a.conj().T) / 2
            H = H / torch.linalg.eigvalsh(H).abs().max()
            U = torch.linalg.matrix_exp(1j * self.mixing * H)
            T = U[:n_out, :n_in]
        return T.to(device=self.device, dtype=self.dtype)

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """SLM field E = sqrt(1/N_in) exp(i pi x), shape [B, n_in] (unit total power)."""
        phase = math.pi * x.to(torch.float32)
        amp = 1.0 / math.sqrt(self.spec.n_inputs)
        return torch.polar(torch.full_like(phase, amp), phase).to(self.dtype)

    def intensity(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free camera intensity |T E|^2 at unit input power times N_in (mean 1 per pixel)."""
        out = self.field(x) @ self._T.T
        return (out.real**2 + out.imag**2) * self.spec.n_inputs

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        signal = self.photons * self.intensity(x)
        if self.noise:
            charge = torch.poisson(signal, generator=self._noise_gen)
            charge = charge + self.read_noise * torch.randn(
                charge.shape, generator=self._noise_gen, device=charge.device
            )
        else:
            charge = signal
        full = 2**self.adc_bits - 1
        codes = torch.round(charge.clamp(0.0, self.full_well) / self.full_well * full)
        return codes / full

    def drift_parameters(self) -> dict[str, torch.Tensor]:
        """Live tensors a drift wrapper (:mod:`physnn.simulators.drift`) may change in place.

        The transmission matrix drifts as a whole (the medium moves, the cavity
        warms). For ``matrix="unitary"`` a drifted matrix is no longer exactly
        unitary; the energy-conservation invariant holds only without drift.
        """
        return {"transmission_matrix": self._T}

    def drift_scales(self) -> dict[str, float]:
        """Natural size of a unit drift: the rms of one matrix element."""
        return {"transmission_matrix": 1.0 / math.sqrt(2 * self.spec.n_inputs)}

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free, unquantised model with its autograd graph.

        Only for the in-silico backprop baseline, which declares that it reads
        the simulator's internals; every other trainer uses ``__call__``.
        """
        signal = self.photons * self.intensity(x)
        return torch.clamp(signal, max=self.full_well) / self.full_well

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            matrix=self.matrix_kind,
            mixing=self.mixing,
            photons=self.photons,
            read_noise_e=self.read_noise,
            full_well_e=self.full_well,
            adc_bits=self.adc_bits,
            noise=self.noise,
            seed=self.seed,
            dtype=str(self.dtype),
        )
        return d


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
