r"""A multimode optical cavity / scattering medium imaged on a camera.

Physics
-------
A phase-only spatial light modulator (SLM) with ``n_inputs`` pixels shapes a
monochromatic, coherent beam of total power ``P``. Pixel ``j`` at drive value
``x_j`` (in units of :math:`\pi` rad, limits 0..``phase_range``, 8-bit by default) imprints

.. math:: E_j = \sqrt{P/N_{in}}\; e^{i\pi x_j}.

The cavity or scattering medium is linear in the field and is described by a
transmission matrix :math:`T \in \mathbb{C}^{N_{out}\times N_{in}}`:

* ``"gaussian"``: a thick random medium, fully developed speckle. Circular
  complex Gaussian entries :math:`G_{kj}` (i.i.d.), scaled so that the largest
  singular value of :math:`T = t\,G/\sigma_{max}(G)` is ``transmission`` =
  :math:`t \le 1` (default 1). The medium is *passive*: no input wavefront
  leaves with more power than it brought, :math:`\|TE\|^2 \le t^2\|E\|^2`,
  and the best-transmitted wavefront (the top singular vector) passes with
  :math:`t^2` of its power; a typical SLM pattern transmits much less (about
  0.34 of its power at 64 -> 128 and t = 1, from the Marchenko-Pastur edge
  :math:`\sigma_{max}^2 \approx (1 + \sqrt{N_{in}/N_{out}})^2 N_{out}/N_{in}`
  in units of the mean). Speckle statistics are those of the unscaled matrix
  (exponential intensity, contrast 1).
* ``"unitary"``: a lossless multimode cavity. Modes are mixed by
  :math:`U = \exp(i\,m H)` with :math:`H` a random Hermitian (GUE) matrix of size
  :math:`N=\max(N_{in},N_{out})` normalised to unit spectral scale, and ``m`` the
  mode-mixing strength (0: no mixing, each pixel images one mode; a few: fully
  mixed speckle). The SLM drives the first :math:`N_{in}` modes, the camera sees
  the first :math:`N_{out}`. Energy is conserved: with
  :math:`N_{out} = N \ge N_{in}`, :math:`\sum_k |(UE)_k|^2 = \sum_j |E_j|^2`.

The camera (``n_outputs`` pixels, default 128: the camera size is a plain
option) integrates the intensity. With the SLM field of unit total power, the
pixel intensity is reported relative to an even spread of the input power over
the camera, :math:`I_k = N_{out}\,|(T E)_k|^2` (so :math:`\sum_k I_k/N_{out}`
is the transmitted fraction, <= 1).

Light budget: ``photons`` is the light of one query (laser power x exposure x
quantum efficiency), in photo-electrons: what the whole camera would collect if
all the SLM's light reached it. The expected signal of pixel k is
:math:`S_k = \text{photons}\cdot|(TE)_k|^2 = \text{photons}\cdot I_k/N_{out}` (e-), so the camera
collects :math:`\sum_k S_k = \text{photons}\cdot\|TE\|^2 \le \text{photons}\cdot t^2` whatever its
size: a larger camera divides the same light among more pixels (a bigger camera is more
features, not more light). It still catches more of a random pattern's light than a small one,
because a random medium scatters into every output mode: about 0.32 of the SLM power at
64 -> 128 and 0.62 at 74 -> 1024 (the Marchenko-Pastur edge, see ``"gaussian"``).
The default (``photons=None``) is the exposure a lab would set: the source gives at most
:data:`MAX_PHOTONS` = 768 000 e- per query, and a camera with fewer than 128 pixels is exposed
shorter, so that a pixel at :math:`I_k = 1` collects a fifth of the full well (6000 e- by
default, about 2000 e- for a typical pixel at 64 -> 128) instead of saturating:
:math:`\min(768\,000,\ N_{out}\,\text{full\_well}/5)`. So every camera of 128 pixels or more gets the
same light, and the 128-pixel default is unchanged from the earlier per-pixel setting.

Noise (each draw from the system's own seeded generator)
--------------------------------------------------------
* shot noise: the collected charge is Poisson(:math:`S_k`) (e-);
* read noise: additive Gaussian, standard deviation ``read_noise`` (e- rms);
* full-well saturation: charge is clipped at ``full_well`` (e-);
* ADC: ``adc_bits`` bits spanning 0..``full_well``, rounded to the nearest code.

The output is the ADC code divided by :math:`2^{bits}-1` (``output_units``:
fraction of ADC full scale), so 1.0 means a saturated pixel. The response is a nonlinear (cosine) function of the drive
values through interference, which is the nonlinearity the PNN uses.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec

__all__ = ["OpticalCavity", "MAX_PHOTONS"]

#: The light source's photo-electrons per query at the default exposure (``photons=None``).
MAX_PHOTONS = 768_000.0


class OpticalCavity(PhysicalSystem):
    """Phase SLM -> transmission matrix -> camera, batched and seeded.

    Args:
        n_inputs: SLM pixels (default 64).
        n_outputs: camera pixels read out (default 128; e.g. 1024 for MNIST-sized inputs).
        matrix: ``"gaussian"`` (passive random medium) or ``"unitary"`` (lossless cavity).
        transmission: largest singular value of the ``"gaussian"`` transmission matrix,
            in (0, 1] (1: the best-transmitted wavefront passes without loss).
        mixing: mode-mixing strength for ``"unitary"`` (dimensionless).
        phase_range: drive limit ``high`` in units of pi. Default 1.0 (0..pi): with a full
            2 pi stroke the lowest and highest drive give the same field, so an encoder that
            uses the whole range would make its extremes (e.g. a label slot) indistinguishable.
        slm_bits: SLM bit depth (levels = 2**slm_bits); None for an analog drive.
        photons: light budget of one query, in photo-electrons: what the whole camera would
            collect if all the SLM's light reached it (shared by the pixels, whatever their number).
            None (default): min(768 000, n_outputs * full_well / 5), see the module docstring; a
            64 -> 128 gaussian medium (transmitting about a third) then gets about 2000 e- per pixel.
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
        transmission: float = 1.0,
        phase_range: float = 1.0,
        slm_bits: int | None = 8,
        photons: float | None = None,
        read_noise: float = 5.0,
        full_well: float = 30000.0,
        adc_bits: int = 12,
        noise: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.complex64,
    ):
        n_in = 64 if n_inputs is None else checks.integer("n_inputs", n_inputs, low=1)
        n_out = 128 if n_outputs is None else checks.integer("n_outputs", n_outputs, low=1)
        self.matrix_kind = checks.choice("matrix", matrix, ("gaussian", "unitary"))
        self.mixing = checks.nonnegative("mixing", mixing)
        self.transmission = checks.real("transmission", transmission, low=0.0, high=1.0, low_open=True)
        phase_range = checks.positive("phase_range", phase_range)
        if slm_bits is not None:
            slm_bits = checks.integer("slm_bits", slm_bits, low=1, high=16)
        self.read_noise = checks.nonnegative("read_noise", read_noise)
        self.full_well = checks.positive("full_well", full_well)
        self.photons_given = photons is not None
        self.photons = (
            min(MAX_PHOTONS, n_out * self.full_well / 5) if photons is None else checks.positive("photons", photons)
        )
        self.adc_bits = checks.integer("adc_bits", adc_bits, low=1, high=24)
        self.noise = checks.boolean("noise", noise)
        self.seed = checks.integer("seed", seed, low=0)
        if dtype not in (torch.complex64, torch.complex128):
            raise checks.ParameterError(f"dtype must be torch.complex64 or torch.complex128, got {dtype!r}")
        self.dtype = dtype
        levels = None if slm_bits is None else 2**slm_bits
        spec = SystemSpec(
            n_in,
            n_out,
            0.0,
            phase_range,
            levels,
            name="optics",
            units="pi rad",
            output_units="fraction of ADC full scale",
        )
        super().__init__(spec, device=device)
        self._T = self._make_matrix()
        self._element_rms = float(self._T.abs().pow(2).mean().sqrt())
        self._noise_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)

    # ----------------------------------------------------------------- physics
    def _make_matrix(self) -> torch.Tensor:
        n_in, n_out = self.spec.n_inputs, self.spec.n_outputs
        gen = torch.Generator().manual_seed(self.seed)
        if self.matrix_kind == "gaussian":
            re = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
            im = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64)
            T = torch.complex(re, im)
            T = T * (self.transmission / torch.linalg.matrix_norm(T, ord=2))  # passive: sigma_max = t <= 1
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
        """Noise-free camera intensity N_out |T E|^2 at unit input power (1 = input power spread evenly)."""
        out = self.field(x) @ self._T.T
        return (out.real**2 + out.imag**2) * self.spec.n_outputs

    def transmitted_fraction(self, x: torch.Tensor) -> torch.Tensor:
        """Output power over input power, ||T E||^2 / ||E||^2, per sample (<= transmission^2: passive)."""
        return self.intensity(x).sum(dim=1) / self.spec.n_outputs

    def signal(self, x: torch.Tensor) -> torch.Tensor:
        """Expected photo-electrons per pixel, photons * |T E|^2 (e-): they sum to photons * transmitted fraction."""
        return (self.photons / self.spec.n_outputs) * self.intensity(x)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        signal = self.signal(x)
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
        warms). The wrapper's default chart for it is a rotation on both sides,
        :math:`T \to e^{iH_{out}} T e^{iH_{in}}`: the singular values stay, so the
        gaussian medium stays passive and the ``"unitary"`` cavity lossless
        (energy conservation holds under drift), while both the speckle and the
        light each SLM pattern transmits change. The additive chart
        (``charts={"transmission_matrix": "additive"}``) breaks both.
        """
        return {"transmission_matrix": self._T}

    def drift_scales(self) -> dict[str, float]:
        """Natural size of a unit drift: the rms of one (real or imaginary part of a) matrix element."""
        return {"transmission_matrix": self._element_rms / math.sqrt(2)}

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free, unquantised model with its autograd graph.

        Only for the in-silico backprop baseline, which declares that it reads
        the simulator's internals; every other trainer uses ``__call__``.
        """
        return torch.clamp(self.signal(x), max=self.full_well) / self.full_well

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            matrix=self.matrix_kind,
            mixing=self.mixing,
            transmission=self.transmission,
            photons_per_query_e=self.photons,
            photons_setting="given" if self.photons_given else "default exposure",
            read_noise_e=self.read_noise,
            full_well_e=self.full_well,
            adc_bits=self.adc_bits,
            noise=self.noise,
            seed=self.seed,
            dtype=str(self.dtype),
        )
        return d
