r"""A reverberant acoustic cavity with nonlinear (Duffing) membranes, heard by a microphone.

Stands in for the paper's acoustic PNN: a loudspeaker plays K tones whose
amplitudes are the drive values, sound bounces around a cavity, thin membranes
in the cavity respond nonlinearly and re-radiate, and a microphone spectrum at
M frequency bins is the measurement. Time units are seconds, frequencies Hz,
pressures Pa.

Cavity (modal expansion)
------------------------
The cavity is a box of seeded random size :math:`L_x \times L_y \times L_z`
(about 0.45-0.65 x 0.35-0.50 x 0.25-0.35 m) with rigid walls. Its modes
:math:`(l, m, n) \ne (0,0,0)` have shapes and frequencies

.. math::
   \varphi_n(\mathbf r) = \sqrt{\epsilon_l \epsilon_m \epsilon_n}\,
       \cos\frac{l\pi x}{L_x}\cos\frac{m\pi y}{L_y}\cos\frac{n\pi z}{L_z},\qquad
   f_n = \frac{c(T)}{2}\sqrt{(l/L_x)^2 + (m/L_y)^2 + (n/L_z)^2},

(:math:`\epsilon_0 = 1`, :math:`\epsilon_{>0} = 2`, so :math:`\langle\varphi_n^2\rangle_V = 1`);
the ``n_modes`` lowest are kept. The pressure is
:math:`p(\mathbf r, t) = \sum_n \varphi_n(\mathbf r)\, q_n(t)` with modal amplitudes
:math:`q_n` in Pa, and each mode obeys

.. math::
   \ddot q_n + \frac{\omega_n}{Q}\dot q_n + \omega_n^2 q_n
     = \frac{\gamma P_0}{V}\,\varphi_n(\mathbf r_s)\,\dot U_s(t) + \sum_j G_{nj} u_j ,

with :math:`\omega_n = 2\pi f_n`, quality factor :math:`Q` (default 30, wall
and air losses), adiabatic bulk modulus :math:`\gamma P_0 = 1.4 \times 101325`
Pa (independent of temperature), volume :math:`V`, and the loudspeaker at
:math:`\mathbf r_s` a volume-velocity source

.. math::
   U_s(t) = r(t)\, U_{max} \sum_{k=1}^{K} a_k \sin(2\pi f_k t + \theta_k),

:math:`a_k \in [0, 1]` the drive values, :math:`U_{max}` (m^3/s) the volume
velocity of one tone at full drive, :math:`\theta_k` fixed seeded phases (they
keep the crest factor low), :math:`r(t)` a raised-cosine ramp over ``ramp_s``
(switching on smoothly excites no broadband transient).

Temperature drift enters through the speed of sound,
:math:`c(T) = 331.3 + 0.606\,T` m/s (T in deg C): warming by 1 K raises every
cavity mode frequency by the factor :math:`1 + 0.606/c` (about +0.18 % at 20
deg C), so a resonance just below a tone moves onto it and the tone gets
louder, a resonance on a tone moves above it and the tone gets quieter. The
membranes are mechanical and do not follow c.

Membranes (Duffing scatterers)
------------------------------
``n_membranes`` clamped membranes at seeded positions :math:`\mathbf r_j`, each
a hardening Duffing oscillator in mass-normalised coordinates :math:`u_j`
(expressed in the units of the modal amplitudes, Pa):

.. math::
   \ddot u_j + \frac{\omega_j}{Q_m}\dot u_j + \omega_j^2 u_j + \beta_j u_j^3
     = \sum_n G_{nj} q_n,\qquad \beta_j = \omega_j^2 / u_{nl}^2,

i.e. :math:`m\ddot x + c\dot x + kx + k_3x^3 = \text{coupling}` divided by the
mass: at :math:`|u_j| = u_{nl}` (``nonlinear_pa``) the cubic restoring force
equals the linear one. Resonances :math:`f_j` are seeded in
``membrane_hz`` (default 300-1200 Hz), :math:`Q_m` = ``membrane_q``. The
coupling is symmetric (the membrane is pushed by the local pressure and pushes
the air back), :math:`G = \kappa\,\Omega\,C\,W` with
:math:`\Omega = \text{diag}(\omega_n)`, :math:`W = \text{diag}(\omega_j)` and
:math:`C_{nj} = \varphi_n(\mathbf r_j)/\lVert\Phi\rVert_2` (mode values at the
membranes, scaled to unit spectral norm). With :math:`\kappa` = ``coupling``
< 1 the stiffness matrix :math:`\begin{psmallmatrix}\Omega^2 & -G\\ -G^T & W^2\end{psmallmatrix}`
is positive definite (its Schur complement is :math:`W(I - \kappa^2 C^TC)W`),
so the total energy

.. math::
   H = \tfrac12\lVert\dot z\rVert^2 + \tfrac12 z^T K z + \sum_j \tfrac14\beta_j u_j^4
   \quad (z = [q; u],\ \text{units Pa}^2/\text{s}^2 \text{ per unit modal mass})

is a positive definite storage function; damping only removes it.

Energy bound (checked by the tests)
-----------------------------------
In a periodic steady state the mean injected power equals the mean dissipated
power, :math:`\langle \dot z\cdot f\rangle = \langle\sum_i\gamma_i\dot z_i^2\rangle`.
With :math:`\gamma_{min}` the smallest damping rate, Cauchy-Schwarz gives

.. math::
   \langle\tfrac12\lVert\dot z\rVert^2\rangle \le \frac{\langle\lVert f\rVert^2\rangle}{2\gamma_{min}^2},
   \qquad \langle\lVert f\rVert^2\rangle = \Big(\frac{\gamma P_0}{V}\Big)^2
   \sum_n\varphi_n(\mathbf r_s)^2\ \tfrac12\sum_k (U_{max}a_k\,2\pi f_k)^2 ,

whatever the nonlinearity: :meth:`AcousticCavity.kinetic_energy_bound` returns it.

Integration
-----------
One step per audio sample at ``sample_rate`` (default 12 kHz, :math:`dt = 83.3\,\mu s`),
vectorised over the batch; the schemes are in :mod:`physnn.simulators.acoustic_integrators`.
The default ``integrator="leapfrog"`` is second order (kick-drift-kick, damping exact over
each half step) with the stiffness matrix warped so that every coupled mode of the discrete
system resonates at its true frequency, and with a complex gain per tone that makes the
discrete steady state at the microphone equal the continuous one: a linear cavity is exact
at any step (to 1e-4 once settled, checked by the tests); only the membranes' nonlinear
forces carry the scheme's (second-order) error. Against the continuous model integrated by
scipy's DOP853 at rtol 1e-10 (15 random drives of cavity seeds 0-4,
``benchmarks/acoustics_speed.py``), relative L2 error of the 20 outputs, median / max: the
previous integrator (symplectic Euler at 32 kHz) 3.0 % / 8.3 %, the default 0.54 % / 3.4 %:
every one of the 15 drives is closer than with the previous integrator. At 8 kHz (faster, 1.3 % / 10.9 %) the
median is still better but a few drives of seeds 1 and 4, whose strongly driven membranes
make the output steep in the membranes' frequencies, are further off than before; 16 kHz
is closer still (0.3 % / 1.9 %). The constructor requires :math:`\omega\,dt \le 1` for the
membranes (room for their hardening: the leapfrog is stable while the stiffened frequency
stays below :math:`2/dt`) and :math:`\le 2.5` for the cavity modes (linear, kept exact by the
warp); ``integrator="euler"`` is the previous first-order symplectic Euler (4-7 % off the
exact steady state at 32 kHz; it needs :math:`\omega\,dt \le 0.5`), kept for comparisons.
A run lasts ``settle_s`` (default 100 ms, including the 10 ms ramp) plus one analysis
window of :math:`1/\Delta f` (default :math:`\Delta f` = ``bin_hz`` = 20 Hz, 50 ms, 600
samples): 1800 steps. At the default drive level every drive of cavity seeds 0-4 settles to
its periodic state within the settling time (the two halves of the window agree to 2e-4,
median of 64 random drives; against 300 ms of settling: 3e-5 to 1.3e-4 median, 2e-2 at
worst for seed 1), see "Drive level" below.

Rows are independent bit for bit: the batch is padded with silent rows to a multiple of
``ROW_TILE`` = 16 before the time stepping, because BLAS rounds a lone row or a ragged
tail of rows differently from whole row tiles (by ~1e-7 per step, which the old
chaotic default amplified to 18.6 % of a row's output inside a batch of 400 versus
alone, cavity seed 1). Checked by the tests for cavity seeds 0-4, one row alone
versus inside a batch of 400; the threads setting does not change the result either.

Why there is no steady-state (harmonic-balance) solver: solving for the periodic state
directly (membrane unknowns at the tone lattice's harmonics, cavity modes eliminated in the
frequency domain, alternating frequency-time cubic, an equivalent-linearisation
preconditioner and Anderson acceleration) converges for most drives of seeds 0, 2 and 3 at
the default drive level but not for 60-75 % of the drives of seeds 1 and 4 within 60
iterations (their most strongly driven membranes reach a linear amplitude of 1-1.4
``nonlinear_pa``, where the iteration is not a contraction and several periodic states may
exist), and one iteration costs about as much as 100 leapfrog steps.

Drive level (``volume_velocity``, m^3/s per tone at full drive) and its regimes
-------------------------------------------------------------------------------
The drive level is the physical knob that sets how nonlinear the cavity is: the
membranes' cubic force grows as the square of their amplitude relative to
``nonlinear_pa``. Measured noise-free on 900 random drives (fit on 600, scored on
300) for cavity seeds 0-4, nonlinear fraction = 1 - R^2 of the best affine map
(pooled over outputs, weighted by their variance / mean over outputs; the default's row
with the default integrator, the others with the previous one at 32 kHz, which gave 0.041
for the default):

=============  ====================================  ======================================
 m^3/s          nonlinear fraction, seeds 0-4         regime
=============  ====================================  ======================================
 6e-6           0.004 0.024 0.005 0.001 0.040         weakly nonlinear, periodic, smooth
 8e-6 default   0.015 0.104 0.014 0.004 0.073         mean 0.042 (0.23 mean over outputs)
 1e-5           0.037 0.188 0.033 0.008 0.098         seed 1 leaves the periodic regime
 2e-5 (old)     0.29 (seed 0)                         quasi-periodic / chaotic
=============  ====================================  ======================================

The measured cavity of ``acoustic_x/y.csv`` has a nonlinear fraction of 0.040
(0.25 mean over outputs) on its 10 000 drives, measurement noise included (a cubic
polynomial leaves 0.017, so its noise-free figure is about 0.02-0.04): the default
8e-6 m^3/s matches it on average over the seeds. At the default, a 1e-6 relative
change of the drive moves 4e-12 to 9e-12 of the output variance for seeds 0, 2, 3, 4
(a smooth map: the change is the derivative's, ~1e-6 relative) and 2e-8 for seed 1,
whose most strongly driven membranes bring a few drives near a fold (a steeper but
still smooth map there); at 1e-5 m^3/s seed 1 moves 8e-7 and its window halves
differ by 0.6 %: it leaves the periodic regime; at the old default 2e-5 m^3/s a
1e-6 change moved 11.7 % of the variance (seed 1): the strongly driven membranes go
quasi-periodic or chaotic, and the output of such a drive is whatever the window
catches of a trajectory that depends on float rounding. The constructor accepts any
level; above the default, state it as a chaotic-regime experiment.

Mixing and nonlinearity
-----------------------
The measured cavity mixes its inputs: the best single input explains 0.52 of the
output variance (per output, weighted by its variance; 0.42 unweighted). Each output
bin here hears its own tone (if any) plus the membranes' re-radiation, which depends
on every tone through the cubic stiffness (cross-modulation) and adds intermodulation
products on the bin. At the calibrated default this cavity mixes less than the
measured one: best single input 0.97 weighted (0.63 unweighted), nonlinear fraction
0.016 at seed 0; superposition fails by 23 % of the field; toggling one input from 0
to 1 changes the outputs by 5-124 % of their rms (5-10 % for the six whose tones fall
between output bins: only the membranes carry them to the microphone). The earlier
default (2e-5 m^3/s) gave 0.62 / 0.33 and 0.29 by being chaotic; a cavity as mixing as
the measured one and as smooth would need other physics (e.g. amplitude-dependent
membrane losses), not a louder speaker.

Measurement and noise
---------------------
The microphone at a seeded position :math:`\mathbf r_{mic}` hears
:math:`p_{mic}(t) = \sum_n \varphi_n(\mathbf r_{mic}) q_n(t)` (Pa), plus white
Gaussian noise of ``mic_noise_pa`` rms per sample (default: 15.8 uPa/sqrt(Hz) over the band,
:math:`2\,\text{mPa}\sqrt{f_s/32\,\text{kHz}}`, 1.22 mPa at 12 kHz: the earlier 2 mPa at 32 kHz,
about 40 dB SPL, so the spectral noise floor does not depend on the rate), drawn from the
system's own seeded generator. An
ADC of ``adc_bits`` bits (default 16) spanning :math:`\pm` ``full_scale_pa``
(default 10 Pa; full drive stays below half of it) clips (counted as ``adc_saturation`` events) and rounds. Tones
sit exactly on analysis bins (:math:`f_k` = bin x :math:`\Delta f`, default
tones at bins 20, 22, ..., 58: 400-1160 Hz), so the steady state is periodic in
the window and a rectangular window has no leakage. The output is the
single-sided amplitude spectrum :math:`2|\text{DFT}_k|/N_w` in Pa at ``M``
bins. The membranes' cubic intermodulation products
(:math:`f_a + f_b - f_c`, :math:`2f_a - f_b`, ...) of a comb of tones land on
the comb's own lattice, so by default the M bins are spread evenly over that
lattice from a quarter-band below the lowest tone to a quarter-band above the
highest (default bins 10, 14, 16, 20, 22, 26, ..., 68: 14 tone bins and 6 bins
where only intermodulation is heard; the tones of inputs 2, 5, 8, 11, 14 and 17
fall between output bins). With zero drive the
output is the noise floor, mean :math:`\sigma\sqrt{\pi/N_w}` (Rayleigh),
about 0.09 mPa by default.

Speed: six small tensor operations per step on ``[B, n_modes + n_membranes]`` (default
56 wide; the loudspeaker is one more column of the state, so one matrix product gives the
whole kick) for 1800 steps per call, on one thread: query in batches. Measured samples/s,
interleaved with the previous integrator, are in ``benchmarks/results/acoustics_speed.md``.
Nothing in a query touches process-wide torch state (thread counts are the
caller's business: changing them inside a query races under threads).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec
from physnn.simulators import acoustic_integrators as integrators

__all__ = ["AcousticCavity", "speed_of_sound", "Trajectory", "ROW_TILE"]

logger = logging.getLogger(__name__)

GAMMA_P0 = 1.4 * 101325.0  # adiabatic bulk modulus of air, Pa (rho c^2, independent of T)
_TEMP_RANGE = (-50.0, 100.0)  # where c = 331.3 + 0.606 T m/s is a good approximation
#: Rows are integrated in multiples of this many (padded with silent rows): batch-independent rounding.
ROW_TILE = 16


def speed_of_sound(temperature_c: float | torch.Tensor) -> float | torch.Tensor:
    """c(T) = 331.3 + 0.606 T m/s, T in deg C (dry air, linearised)."""
    return 331.3 + 0.606 * temperature_c


@dataclass
class Trajectory:
    """What :meth:`AcousticCavity.simulate` recorded over the analysis window.

    ``pressure``: mic pressure [B, N_w] (Pa, noise-free). With ``states=True``
    also ``z`` and ``v`` [N_w, B, D] (D = modes + membranes),
    the forcing ``force`` [N_w, B, D] and the energy ``energy`` [T_total, B] of every step.
    """

    pressure: torch.Tensor
    z: torch.Tensor | None = None
    v: torch.Tensor | None = None
    force: torch.Tensor | None = None
    energy: torch.Tensor | None = None


class AcousticCavity(PhysicalSystem):
    """K tone amplitudes -> cavity + Duffing membranes -> M spectral magnitudes (Pa).

    Args:
        n_inputs: number of tones K (default 20); drive limits 0..1 (fraction of full amplitude).
        n_outputs: number of output bins M (default 20).
        n_modes: cavity modes kept (the lowest ones).
        n_membranes: nonlinear membranes (0 makes the system linear).
        size_m: cavity size (Lx, Ly, Lz) in m; None draws it from the seed.
        temperature: air temperature, deg C (-50..100).
        q_factor: quality factor Q of the cavity modes.
        membrane_hz: (low, high) range the membrane resonances are drawn from, Hz.
        membrane_q: quality factor of the membranes.
        coupling: membrane-cavity coupling kappa in [0, 1) (1 = static instability).
        nonlinear_pa: membrane amplitude u_nl (Pa) where the cubic force equals the linear one;
            None makes the membranes linear.
        volume_velocity: loudspeaker volume velocity of one tone at full drive, m^3/s.
        sample_rate: simulation and ADC rate, Hz (one integration step per sample).
        bin_hz: analysis bin spacing (1 / window length), Hz; sample_rate / bin_hz must be an integer.
        settle_s: time before the analysis window (includes the ramp), s.
        ramp_s: raised-cosine switch-on time of the tones, s.
        tone_bins: bin index of each tone (default 20, 22, ...).
        output_bins: bin indices measured (default: M bins spread over the tone band and its edges).
        mic_noise_pa: microphone noise, Pa rms per sample; None: 2 mPa * sqrt(sample_rate / 32 kHz)
            (a fixed noise density, so the spectral noise floor is the same at any rate).
        adc_bits: ADC depth (signed, two's complement range).
        full_scale_pa: ADC full scale, +-Pa.
        noise: False turns the microphone noise off (the ADC stays).
        seed: seeds the geometry, membranes and tone phases, and separately the noise.
        device: where the time stepping runs.
        dtype: real dtype of the state (float32 default; float64 for reference runs).
        max_batch: samples integrated together; bigger batches are split (bounds memory).
        integrator: ``"leapfrog"`` (second order, exact linear tone response; the default) or
            ``"euler"`` (the previous first-order scheme, for comparisons; needs ~32 kHz).
    """

    def __init__(
        self,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        *,
        n_modes: int = 40,
        n_membranes: int = 16,
        size_m: Sequence[float] | None = None,
        temperature: float = 20.0,
        q_factor: float = 30.0,
        membrane_hz: Sequence[float] = (300.0, 1200.0),
        membrane_q: float = 10.0,
        coupling: float = 0.9,
        nonlinear_pa: float | None = 0.1,
        volume_velocity: float = 8e-6,
        sample_rate: float = 12000.0,
        bin_hz: float = 20.0,
        settle_s: float = 0.1,
        ramp_s: float = 0.01,
        tone_bins: Sequence[int] | None = None,
        output_bins: Sequence[int] | None = None,
        mic_noise_pa: float | None = None,
        adc_bits: int = 16,
        full_scale_pa: float = 10.0,
        noise: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_batch: int = 1024,
        integrator: str = "leapfrog",
    ):
        K = 20 if n_inputs is None else checks.integer("n_inputs", n_inputs, low=1)
        M = 20 if n_outputs is None else checks.integer("n_outputs", n_outputs, low=1)
        spec = SystemSpec(K, M, 0.0, 1.0, None, name="acoustics", units="full amplitude", output_units="Pa")
        super().__init__(spec, device=device)
        self._read_physics(n_modes, n_membranes, q_factor, membrane_q, coupling, nonlinear_pa, volume_velocity)
        self._read_measurement(sample_rate, bin_hz, settle_s, ramp_s, mic_noise_pa, adc_bits, full_scale_pa, noise)
        self.dtype = checks.choice("dtype", dtype, (torch.float32, torch.float64))
        self.integrator = checks.choice("integrator", integrator, integrators.INTEGRATORS)
        self.max_batch = checks.integer("max_batch", max_batch, low=1)
        self._place_bins(tone_bins, output_bins)
        self._build_geometry(seed, size_m, membrane_hz)
        # Drifting parameter (in place, see drift_parameters): a float64 tensor read at every query.
        self._temperature = torch.tensor(checks.real("temperature", temperature), dtype=torch.float64)
        self._check_temperature()
        self._noise_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self._ops_cache: tuple[Any, dict[str, torch.Tensor]] | None = None
        self._check_resolution()

    # ------------------------------------------------------------ construction
    def _read_physics(
        self,
        n_modes: int,
        n_membranes: int,
        q_factor: float,
        membrane_q: float,
        coupling: float,
        nonlinear_pa: float | None,
        volume_velocity: float,
    ) -> None:
        self.n_modes = checks.integer("n_modes", n_modes, low=1)
        self.n_membranes = checks.integer("n_membranes", n_membranes, low=0)
        self.q_factor = checks.positive("q_factor", q_factor)
        self.membrane_q = checks.positive("membrane_q", membrane_q)
        # 1 is the static-instability limit: the stiffness matrix stops being positive definite
        self.coupling = checks.real("coupling", coupling, low=0.0, high=1.0, high_open=True)
        self.nonlinear_pa = None if nonlinear_pa is None else checks.positive("nonlinear_pa", nonlinear_pa)
        self.volume_velocity = checks.positive("volume_velocity", volume_velocity)

    def _read_measurement(
        self,
        sample_rate: float,
        bin_hz: float,
        settle_s: float,
        ramp_s: float,
        mic_noise_pa: float | None,
        adc_bits: int,
        full_scale_pa: float,
        noise: bool,
    ) -> None:
        self.sample_rate = checks.positive("sample_rate", sample_rate)
        self.bin_hz = checks.positive("bin_hz", bin_hz)
        n_win = self.sample_rate / self.bin_hz
        if abs(n_win - round(n_win)) > 1e-9 * n_win:
            raise checks.ParameterError(
                f"sample_rate / bin_hz must be an integer (coherent sampling), got {sample_rate}/{bin_hz} = {n_win}"
            )
        self.n_window = int(round(n_win))
        settle = checks.nonnegative("settle_s", settle_s)
        self.ramp_s = checks.real("ramp_s", ramp_s, low=0.0, high=settle)  # the window must see full tones
        self.n_settle = int(round(settle * self.sample_rate))
        if mic_noise_pa is None:
            mic_noise_pa = 2e-3 * math.sqrt(self.sample_rate / 32000.0)
        self.mic_noise_pa = checks.nonnegative("mic_noise_pa", mic_noise_pa)
        self.adc_bits = checks.integer("adc_bits", adc_bits, low=2, high=24)
        self.full_scale_pa = checks.positive("full_scale_pa", full_scale_pa)
        self.noise = checks.boolean("noise", noise)

    def _place_bins(self, tone_bins: Sequence[int] | None, output_bins: Sequence[int] | None) -> None:
        K, M = self.spec.n_inputs, self.spec.n_outputs
        nyquist_bin = self.n_window // 2
        tones = list(range(20, 20 + 2 * K, 2)) if tone_bins is None else tone_bins
        self.tone_bins = checks.int_sequence("tone_bins", tones, low=1, length=K)
        if len(set(self.tone_bins)) != K or max(self.tone_bins) >= nyquist_bin:
            raise checks.ParameterError(
                f"tone_bins must be {K} distinct bin indices in 1..{nyquist_bin - 1} (below Nyquist), "
                f"got {self.tone_bins}"
            )
        outs = _default_output_bins(self.tone_bins, M, nyquist_bin) if output_bins is None else output_bins
        self.output_bins = checks.int_sequence("output_bins", outs, low=0, length=M)
        if max(self.output_bins) > nyquist_bin:
            raise checks.ParameterError(f"output_bins must lie in 0..{nyquist_bin} (Nyquist), got {self.output_bins}")

    def _build_geometry(self, seed: int, size_m: Sequence[float] | None, membrane_hz: Sequence[float]) -> None:
        self.seed = checks.integer("seed", seed)
        band = [checks.positive("membrane_hz", v) for v in membrane_hz]
        if len(band) != 2 or band[0] > band[1]:
            raise checks.ParameterError(
                f"membrane_hz must be (low, high) with 0 < low <= high, got {tuple(membrane_hz)}"
            )
        mem_lo, mem_hi = band
        gen = torch.Generator().manual_seed(self.seed)
        f64 = torch.float64
        if size_m is None:
            lo = torch.tensor([0.45, 0.35, 0.25], dtype=f64)
            hi = torch.tensor([0.65, 0.50, 0.35], dtype=f64)
            size = lo + (hi - lo) * torch.rand(3, generator=gen, dtype=f64)
        else:
            size = torch.tensor([checks.positive("size_m", v) for v in size_m], dtype=f64)
            if size.shape != (3,):
                raise checks.ParameterError(f"size_m must be three positive lengths (m), got {tuple(size_m)}")
        self.size_m = size
        self.volume = float(size.prod())
        self.mode_indices, self._kappa = _lowest_box_modes(size, self.n_modes)
        J = self.n_membranes
        speaker = torch.rand(3, generator=gen, dtype=f64) * size
        mic = torch.rand(3, generator=gen, dtype=f64) * size
        membranes = torch.rand(J, 3, generator=gen, dtype=f64) * size
        self._membrane_hz = mem_lo + (mem_hi - mem_lo) * torch.rand(J, generator=gen, dtype=f64)  # drifts in place
        self.tone_phases = 2 * math.pi * torch.rand(self.spec.n_inputs, generator=gen, dtype=f64)
        self.positions = {"speaker": speaker, "mic": mic, "membranes": membranes}
        self._phi_s = self.mode_shape(speaker[None])[0]  # [N]
        self._phi_mic = self.mode_shape(mic[None])[0]  # [N]
        phi_m = self.mode_shape(membranes).T if J else torch.zeros(self.n_modes, 0, dtype=f64)  # [N, J]
        norm = torch.linalg.matrix_norm(phi_m, ord=2) if J else torch.tensor(1.0, dtype=f64)
        self._C = phi_m / norm if float(norm) > 0 else phi_m

    # ---------------------------------------------------------------- geometry
    def mode_shape(self, r: torch.Tensor) -> torch.Tensor:
        """Mode shapes phi_n(r) at points r [P, 3] (m) -> [P, n_modes], mean square 1 over the volume."""
        lmn = self.mode_indices.to(torch.float64)
        eps = torch.where(lmn > 0, 2.0, 1.0).prod(-1).sqrt()
        arg = math.pi * r[:, None, :].to(torch.float64) * lmn[None] / self.size_m
        return eps * torch.cos(arg).prod(-1)

    @property
    def temperature(self) -> float:
        """Air temperature, deg C. Setting it retunes every cavity mode through c(T)."""
        return float(self._temperature)

    @temperature.setter
    def temperature(self, value: float) -> None:
        _check_temperature(float(value))
        self._temperature.fill_(float(value))

    def drift_parameters(self) -> dict[str, torch.Tensor]:
        """Tensors a drift wrapper may perturb in place (read afresh at every query).

        ``temperature``: 0-d, deg C (moves all cavity modes via c(T));
        ``membrane_hz``: [n_membranes], Hz (membrane tension / ageing).
        """
        return {"temperature": self._temperature, "membrane_hz": self._membrane_hz}

    def drift_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Where the physics and the solver hold, parameter units: a drift wrapper clips to them.

        ``temperature``: -50..100 deg C (where c = 331.3 + 0.606 T m/s holds); ``membrane_hz``:
        1 Hz up to the highest membrane resonance the integrator resolves (leapfrog: omega dt <= 1,
        1910 Hz at the default 12 kHz; Euler: omega dt <= 0.5), so no drift or step event can make a
        later query fail.
        """
        top = self._resolution_limits()[1] * self.sample_rate / (2 * math.pi)
        return {"temperature": _TEMP_RANGE, "membrane_hz": (1.0, top)}

    def drift_scales(self) -> dict[str, float]:
        """The change of each drift parameter that substantially alters the response (about 10 %).

        Measured on the default cavity (seed 0) with 64 random drives, noise-free: +1 K
        changes the output by 5.5 %, +3 K by 15 %, +5 K by 23 %; a 2 % rms detuning of
        the membranes by 4.1 %, 5 % by 9.9 % (at the calibrated drive level; the old,
        chaotic one was about twice as sensitive).
        """
        mean_hz = float(self._membrane_hz.mean()) if self.n_membranes else 1.0
        return {"temperature": 2.0, "membrane_hz": 0.05 * mean_hz}

    def mode_frequencies(self) -> torch.Tensor:
        """Cavity mode frequencies f_n = c(T) * kappa_n at the current temperature, Hz (float64)."""
        return speed_of_sound(self._temperature) * self._kappa

    @property
    def tone_frequencies(self) -> torch.Tensor:
        return torch.tensor(self.tone_bins, dtype=torch.float64) * self.bin_hz

    @property
    def output_frequencies(self) -> torch.Tensor:
        return torch.tensor(self.output_bins, dtype=torch.float64) * self.bin_hz

    @property
    def n_steps(self) -> int:
        """Time steps per query: settling plus one analysis window."""
        return self.n_settle + self.n_window

    @property
    def noise_floor_pa(self) -> float:
        """Mean output magnitude with zero drive: sigma * sqrt(pi / N_w) (Rayleigh mean)."""
        return self.mic_noise_pa * math.sqrt(math.pi / self.n_window)

    # ------------------------------------------------------------------ model
    def _check_temperature(self) -> None:
        _check_temperature(float(self._temperature))

    def _resolution_limits(self) -> tuple[float, float]:
        """Largest omega*dt allowed for (cavity modes, membranes) by the integrator (acoustic_integrators)."""
        return (0.5, 0.5) if self.integrator == "euler" else (2.5, 1.0)

    def _check_resolution(self) -> None:
        dt = 1.0 / self.sample_rate
        lim_modes, lim_mem = self._resolution_limits()
        tops = [(float(self.mode_frequencies().max()), lim_modes, "cavity mode")]
        if self.n_membranes:
            tops.append((float(self._membrane_hz.max()), lim_mem, "membrane resonance"))
        for top, limit, what in tops:
            if 2 * math.pi * top * dt > limit:
                raise checks.ParameterError(
                    f"sample_rate={self.sample_rate:g} Hz is too low for the highest {what} {top:.1f} Hz "
                    f"(omega*dt = {2 * math.pi * top * dt:.3f} > {limit:g} for the {self.integrator} "
                    "integrator); raise sample_rate or lower n_modes / membrane_hz"
                )

    def _physics(self, warp_dt: float | None = None) -> dict[str, torch.Tensor]:
        """Stiffness K, damping gamma, cubic beta, speaker b and mic vectors (float64, CPU) from the current
        (possibly drifted) parameters. ``warp_dt`` pre-warps the resonances for a symplectic Euler step."""
        self._check_temperature()
        if self.n_membranes and not (self._membrane_hz > 0).all():
            raise ValueError(f"membrane_hz must stay > 0 Hz, got {self._membrane_hz.tolist()}")
        self._check_resolution()
        f64 = torch.float64
        w_modes = 2 * math.pi * self.mode_frequencies()
        w_mem = 2 * math.pi * self._membrane_hz.to(f64)
        gamma = torch.cat([w_modes / self.q_factor, w_mem / self.membrane_q])
        w = torch.cat([w_modes, w_mem])
        if warp_dt is not None:
            w = (2.0 / warp_dt) * torch.sin(w * warp_dt / 2)  # the discrete oscillator resonates at the true w
        N, J = self.n_modes, self.n_membranes
        K = torch.diag(w**2)
        if J:
            G = self.coupling * w[:N, None] * self._C * w[None, N:]
            K[:N, N:] = -G
            K[N:, :N] = -G.T
        beta = torch.zeros(N + J, dtype=f64)
        if J and self.nonlinear_pa is not None:
            beta[N:] = w[N:] ** 2 / self.nonlinear_pa**2
        b = torch.zeros(N + J, dtype=f64)
        b[:N] = GAMMA_P0 / self.volume * self._phi_s
        mic = torch.zeros(N + J, dtype=f64)
        mic[:N] = self._phi_mic
        return dict(K=K, K_continuous=K, gamma=gamma, beta=beta, b=b, mic=mic)

    def _operators(self) -> dict[str, torch.Tensor]:
        """The integrator's operators and tone gains for the current (possibly drifted) physics, on the
        system's device and dtype; recomputed only when temperature or membranes moved."""
        key = (float(self._temperature), self._membrane_hz.numpy().tobytes(), self.sample_rate, self.integrator)
        if self._ops_cache is not None and self._ops_cache[0] == key:
            return self._ops_cache[1]
        h = 1.0 / self.sample_rate
        if self.integrator == "euler":
            ops = self._physics(warp_dt=h)
            gains = torch.ones(self.spec.n_inputs, dtype=torch.complex128)
        else:
            ops = self._physics()
            ops.update(integrators.leapfrog_operators(ops["K"], ops["gamma"], h))
            w = 2 * math.pi * self.tone_frequencies
            gains = integrators.leapfrog_tone_gains(ops["K_continuous"], ops["gamma"], ops["b"], ops["mic"], ops, w, h)
        ops = {k: v.to(device=self.device, dtype=self.dtype) for k, v in ops.items() if k != "K_continuous"}
        ops["tones"] = self._tones(gains)
        self._ops_cache = (key, ops)
        return ops

    def _tones(self, gains: torch.Tensor) -> torch.Tensor:
        """dU/dt per unit drive of each tone at every step: [K, T_total] (m^3/s^2), ramp included, each tone
        times its complex gain (the leapfrog's correction; 1 for the Euler scheme)."""
        n = self.n_settle + self.n_window
        f64 = torch.float64
        t = torch.arange(n, dtype=f64) / self.sample_rate
        w = 2 * math.pi * self.tone_frequencies[:, None]
        ph = self.tone_phases[:, None] + torch.angle(gains)[:, None]
        if self.ramp_s > 0:
            x = (t / self.ramp_s).clamp(max=1.0)
            r = 0.5 * (1 - torch.cos(math.pi * x))
            dr = torch.where(t < self.ramp_s, 0.5 * math.pi / self.ramp_s * torch.sin(math.pi * x), torch.zeros_like(t))
        else:
            r, dr = torch.ones_like(t), torch.zeros_like(t)
        # d/dt [r(t) sin(w t + ph)] = r w cos(...) + r' sin(...)
        du = self.volume_velocity * gains.abs()[:, None] * (r * w * torch.cos(w * t + ph) + dr * torch.sin(w * t + ph))
        return du.to(device=self.device, dtype=self.dtype)

    def _simulate_time(self, x: torch.Tensor, states: bool) -> Trajectory:
        """Symplectic Euler from rest (module docstring, Integration), one step per audio sample.

        The batch is padded with silent rows to a multiple of :data:`ROW_TILE`: BLAS computes a row of a
        matrix product with the same sequence of operations whatever the batch size only for whole row
        tiles (a lone row or a ragged tail takes another kernel and rounds differently), so a row's answer
        is then bit for bit the same alone or inside any batch.
        """
        n_rows = x.shape[0]
        if n_rows % ROW_TILE:
            x = torch.cat([x, x.new_zeros(ROW_TILE - n_rows % ROW_TILE, x.shape[1])])
        tr = self._integrate(x, states)
        if tr.pressure.shape[0] == n_rows:
            return tr
        cut = [None if t is None else t[:, :n_rows] for t in (tr.z, tr.v, tr.force, tr.energy)]
        return Trajectory(tr.pressure[:n_rows], *cut)

    def _integrate(self, x: torch.Tensor, states: bool) -> Trajectory:
        ops = self._operators()
        s = x @ ops["tones"]  # [B, T]: loudspeaker dU/dt for every sample and step
        steps = integrators.run(
            self.integrator, s, ops, self.n_membranes, 1.0 / self.sample_rate, self.n_settle, states=states
        )
        self._check_finite(steps.pressure)
        return Trajectory(steps.pressure.T, steps.z, steps.v, steps.force, steps.energy)

    def _check_finite(self, *states: torch.Tensor) -> None:
        if not all(bool(torch.isfinite(s).all()) for s in states):
            raise RuntimeError(
                "acoustic simulation diverged (non-finite state): the membranes hardened beyond what "
                f"sample_rate={self.sample_rate:g} Hz resolves; lower volume_velocity or raise sample_rate"
            )

    # ------------------------------------------------------------ measurement
    def simulate(self, x: torch.Tensor, *, states: bool = False) -> Trajectory:
        """Integrate the noise-free model for drives x [B, K] (on self.device).

        Autograd flows through when x requires grad (used by :meth:`differentiable`).
        ``states=True`` also records states, forces and energies (memory
        ~ N_w * B * D; for tests and analysis, not for training).
        """
        return self._simulate_time(x.to(device=self.device, dtype=self.dtype), states)

    def spectrum(self, pressure: torch.Tensor) -> torch.Tensor:
        """Complex single-sided amplitude spectrum 2*DFT/N_w of [B, N_w] pressures at the output bins (Pa)."""
        X = torch.fft.rfft(pressure, dim=1)[:, self.output_bins]
        return X * (2.0 / self.n_window)

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free complex mic spectrum at the output bins, [B, M] (Pa); graph-connected."""
        return self.spectrum(self.simulate(x).pressure)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        # No process-wide torch state is touched here (thread counts belong to the caller).
        p = torch.cat([self.simulate(chunk).pressure for chunk in x.split(self.max_batch)])
        if self.noise and self.mic_noise_pa > 0:
            p = p + self.mic_noise_pa * torch.randn(p.shape, generator=self._noise_gen, device=p.device, dtype=p.dtype)
        full = 2 ** (self.adc_bits - 1) - 1
        over = int((p.abs() > self.full_scale_pa).sum())
        if over:
            self.stats.count("adc_saturated_samples", over)
            peak = float(p.abs().max())
            logger.debug(
                "acoustics: %d samples beyond the ADC full scale %g Pa (peak %.3g Pa)", over, self.full_scale_pa, peak
            )
            self.report_event("adc_saturation", samples=over, full_scale_pa=self.full_scale_pa, peak_pa=peak)
        codes = torch.round(p.clamp(-self.full_scale_pa, self.full_scale_pa) * (full / self.full_scale_pa))
        p_adc = codes * (self.full_scale_pa / full)
        return self.spectrum(p_adc).abs().to(torch.float32)

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free, unquantised magnitudes with the autograd graph through all time steps.

        Only for the in-silico backprop baseline. Backpropagating through the
        4800 steps keeps ~4 [B, D] tensors per step (about 5 MB per sample
        in float32 at the default size), so use modest batches.
        """
        return self.field(x).abs()

    def kinetic_energy_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Upper bound on the steady-state mean kinetic energy for drives x [B, K] (module docstring), [B]."""
        x = torch.as_tensor(x, dtype=torch.float64)
        w = 2 * math.pi * self.tone_frequencies
        s2 = 0.5 * ((self.volume_velocity * w * x) ** 2).sum(1)
        f2 = (GAMMA_P0 / self.volume) ** 2 * (self._phi_s**2).sum() * s2
        return f2 / (2 * float(self._physics()["gamma"].min()) ** 2)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            seed=self.seed,
            size_m=[float(v) for v in self.size_m],
            temperature_c=self.temperature,
            speed_of_sound_m_s=float(speed_of_sound(self._temperature)),
            n_modes=self.n_modes,
            mode_hz_range=[float(self.mode_frequencies().min()), float(self.mode_frequencies().max())],
            q_factor=self.q_factor,
            n_membranes=self.n_membranes,
            membrane_hz=[float(v) for v in self._membrane_hz],
            membrane_q=self.membrane_q,
            coupling=self.coupling,
            nonlinear_pa=self.nonlinear_pa,
            volume_velocity_m3_s=self.volume_velocity,
            sample_rate_hz=self.sample_rate,
            bin_hz=self.bin_hz,
            steps=self.n_steps,
            tone_hz=[float(v) for v in self.tone_frequencies],
            output_hz=[float(v) for v in self.output_frequencies],
            mic_noise_pa=self.mic_noise_pa,
            noise_floor_pa=self.noise_floor_pa,
            adc_bits=self.adc_bits,
            full_scale_pa=self.full_scale_pa,
            noise=self.noise,
            dtype=str(self.dtype),
            integrator=self.integrator,
        )
        return d


def _lowest_box_modes(size: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (l, m, n) != 0 and kappa = f / c (1/m) of the n lowest modes of a rigid box.

    Grows the index ranges until no mode outside them can be lower: a mode
    with index l along an axis of length L has kappa >= l / (2 L).
    """
    limits = [max(1, int(math.ceil((6 * n / math.pi) ** (1 / 3))))] * 3
    while True:
        axes = [torch.arange(lim + 1, dtype=torch.float64) for lim in limits]
        idx = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)[1:]  # drop (0, 0, 0)
        kappa = 0.5 * torch.sqrt(((idx / size) ** 2).sum(-1))
        order = torch.argsort(kappa, stable=True)[:n]
        if order.numel() == n:
            cut = float(kappa[order[-1]])
            needed = [int(math.floor(2 * float(L) * cut)) for L in size]
            if all(nd <= lim for nd, lim in zip(needed, limits)):
                return idx[order].to(torch.int64), kappa[order]
            limits = [max(nd, lim) for nd, lim in zip(needed, limits)]
        else:
            limits = [2 * lim for lim in limits]


def _default_output_bins(tone_bins: list[int], m: int, nyquist_bin: int) -> list[int]:
    """M bins spread evenly over the tones' lattice, extended by a quarter of the band on each side.

    Cubic intermodulation products of tones on a lattice b0 + g*i (with 2*b0 a
    multiple of g, true for the default comb) land on the same lattice, inside
    the band (on and near the tones) and beyond its edges, where they are the
    only signal. Off-lattice bins would only ever see noise.
    """
    lo_t, hi_t = min(tone_bins), max(tone_bins)
    g = 0
    for b in tone_bins:
        g = math.gcd(g, b - lo_t)
    g = max(g, 1)
    ext = max(1, len(tone_bins) // 4)
    cands = [b for b in range(lo_t - g * ext, hi_t + g * ext + 1, g) if 1 <= b < nyquist_bin]
    if m > len(cands):  # more outputs than lattice bins: take consecutive bins around the band instead
        start = max(1, (lo_t + hi_t) // 2 - m // 2)
        cands = list(range(start, min(start + m, nyquist_bin)))
        if len(cands) < m:
            raise ValueError(f"cannot place {m} output bins below Nyquist (bin {nyquist_bin}); give output_bins")
        return cands
    picks = torch.linspace(0, len(cands) - 1, m).round().to(torch.int64).tolist()
    return [cands[i] for i in picks]


def _check_temperature(t: float) -> None:
    if not (_TEMP_RANGE[0] <= t <= _TEMP_RANGE[1]):
        raise checks.ParameterError(
            f"temperature {t:g} deg C is outside {_TEMP_RANGE[0]:g}..{_TEMP_RANGE[1]:g} deg C, where "
            "c = 331.3 + 0.606 T m/s holds"
        )
