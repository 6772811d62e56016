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
Semi-implicit (symplectic) Euler with implicit damping, vectorised over the
batch, one step per audio sample at ``sample_rate`` (default 32 kHz,
:math:`dt = 31.25\,\mu s`):
:math:`v \leftarrow (v + dt\,(f(t) - Kz - \beta z^3))/(1 + dt\,\gamma)`,
:math:`z \leftarrow z + dt\,v`. It keeps the energy of the undamped part
bounded and is stable for :math:`\omega\,dt < 2`; the constructor requires
:math:`\omega\,dt \le 0.5` for every linear resonance (accuracy), leaving room
for the hardening of the membranes. Linear frequencies are pre-warped
(:math:`\tilde\omega = (2/dt)\sin(\omega dt/2)`) so that each uncoupled
discrete oscillator resonates exactly at :math:`\omega`. A run lasts
``settle_s`` (default 100 ms, including the 10 ms ramp: about 4 decay times
:math:`Q/\pi f` of the lowest tone) plus one analysis window of
:math:`1/\Delta f` (default :math:`\Delta f` = ``bin_hz`` = 20 Hz, 50 ms,
1600 samples): 4800 steps. For most drives the response is then periodic to
~0.5 %; near full drive some patterns never settle (the driven membranes go
quasi-periodic or chaotic), and their spectrum is simply what the window
sees, as on a bench. Rows of a batch are independent up to float rounding
(~1e-6 relative).

Measurement and noise
---------------------
The microphone at a seeded position :math:`\mathbf r_{mic}` hears
:math:`p_{mic}(t) = \sum_n \varphi_n(\mathbf r_{mic}) q_n(t)` (Pa), plus white
Gaussian noise of ``mic_noise_pa`` rms per sample (default 2 mPa, about 40 dB
SPL over the 16 kHz band), drawn from the system's own seeded generator. An
ADC of ``adc_bits`` bits (default 16) spanning :math:`\pm` ``full_scale_pa``
(default 10 Pa; full drive peaks near 1 Pa) clips (counted as ``adc_saturation`` events) and rounds. Tones
sit exactly on analysis bins (:math:`f_k` = bin x :math:`\Delta f`, default
tones at bins 20, 22, ..., 58: 400-1160 Hz), so the steady state is periodic in
the window and a rectangular window has no leakage. The output is the
single-sided amplitude spectrum :math:`2|\text{DFT}_k|/N_w` in Pa at ``M``
bins. The membranes' cubic intermodulation products
(:math:`f_a + f_b - f_c`, :math:`2f_a - f_b`, ...) of a comb of tones land on
the comb's own lattice, so by default the M bins are spread evenly over that
lattice from a quarter-band below the lowest tone to a quarter-band above the
highest (default bins 10, 14, 16, 20, ..., 68: 13 tone bins and 7 bins where
only intermodulation, 1-10 % of the tone level, is heard). With zero drive the
output is the noise floor, mean :math:`\sigma\sqrt{\pi/N_w}` (Rayleigh),
about 0.09 mPa by default.

Speed: 6-7 small tensor ops per step on ``[B, n_modes + n_membranes]``
(default 48 wide) for 4800 steps per call, on one thread: the cost is nearly
flat up to B ~ 100, so query in batches (a quiet 2-core CPU: ~700 samples/s at
B = 64, ~1500/s at B = 256).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from physnn.system import PhysicalSystem, SystemSpec

__all__ = ["AcousticCavity", "speed_of_sound", "Trajectory"]

GAMMA_P0 = 1.4 * 101325.0  # adiabatic bulk modulus of air, Pa (rho c^2, independent of T)
_TEMP_RANGE = (-50.0, 100.0)  # where c = 331.3 + 0.606 T is a good approximation


def speed_of_sound(temperature_c: float | torch.Tensor) -> float | torch.Tensor:
    """c(T) = 331.3 + 0.606 T m/s, T in deg C (dry air, linearised)."""
    return 331.3 + 0.606 * temperature_c


@dataclass
class Trajectory:
    """What :meth:`AcousticCavity.simulate` recorded over the analysis window.

    ``pressure``: mic pressure [B, N_w] (Pa, noise-free). With ``states=True``
    also ``z`` and ``v`` [N_w, B, D] (D = modes + membranes), the forcing
    ``force`` [N_w, B, D] and the energy ``energy`` [T_total, B] of every step.
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
            None or inf makes the membranes linear.
        volume_velocity: loudspeaker volume velocity of one tone at full drive, m^3/s.
        sample_rate: simulation and ADC rate, Hz.
        bin_hz: analysis bin spacing (1 / window length), Hz; sample_rate / bin_hz must be an integer.
        settle_s: time before the analysis window (includes the ramp), s.
        ramp_s: raised-cosine switch-on time of the tones, s.
        tone_bins: bin index of each tone (default 20, 22, ...).
        output_bins: bin indices measured (default: M bins spread over the tone band and its edges).
        mic_noise_pa: microphone noise, Pa rms per sample.
        adc_bits: ADC depth (signed, two's complement range).
        full_scale_pa: ADC full scale, +-Pa.
        noise: False turns the microphone noise off (the ADC stays).
        seed: seeds the geometry, membranes and tone phases, and separately the noise.
        device: where the time stepping runs.
        dtype: real dtype of the state (float32 default; float64 for reference runs).
        threads: intra-op threads during the time loop (None: leave torch's setting). The
            per-step tensors are tiny, so thread hand-off costs more than it gains: on a busy
            2-core machine 2 threads ran 2-25x slower than 1.
        max_batch: samples integrated together; bigger batches are split (bounds memory).
    """

    def __init__(
        self,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        *,
        n_modes: int = 40,
        n_membranes: int = 8,
        size_m: Sequence[float] | None = None,
        temperature: float = 20.0,
        q_factor: float = 30.0,
        membrane_hz: Sequence[float] = (300.0, 1200.0),
        membrane_q: float = 10.0,
        coupling: float = 0.5,
        nonlinear_pa: float | None = 0.1,
        volume_velocity: float = 2e-5,
        sample_rate: float = 32000.0,
        bin_hz: float = 20.0,
        settle_s: float = 0.1,
        ramp_s: float = 0.01,
        tone_bins: Sequence[int] | None = None,
        output_bins: Sequence[int] | None = None,
        mic_noise_pa: float = 2e-3,
        adc_bits: int = 16,
        full_scale_pa: float = 10.0,
        noise: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        threads: int | None = 1,
        max_batch: int = 1024,
    ):
        K = 20 if n_inputs is None else int(n_inputs)
        M = 20 if n_outputs is None else int(n_outputs)
        super().__init__(SystemSpec(K, M, 0.0, 1.0, None, name="acoustics", units="full amplitude"), device=device)
        for name, value in (("q_factor", q_factor), ("membrane_q", membrane_q), ("volume_velocity", volume_velocity),
                            ("sample_rate", sample_rate), ("bin_hz", bin_hz), ("full_scale_pa", full_scale_pa)):
            _positive(name, value)
        for name, value in (("settle_s", settle_s), ("ramp_s", ramp_s), ("mic_noise_pa", mic_noise_pa)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if ramp_s > settle_s:
            raise ValueError(f"ramp_s={ramp_s} s must not exceed settle_s={settle_s} s (the window must see full tones)")
        if not (isinstance(n_modes, int) and n_modes >= 1):
            raise ValueError(f"n_modes must be a positive integer, got {n_modes!r}")
        if not (isinstance(n_membranes, int) and n_membranes >= 0):
            raise ValueError(f"n_membranes must be an integer >= 0, got {n_membranes!r}")
        if not (0.0 <= coupling < 1.0):
            raise ValueError(f"coupling must be in [0, 1) (1 is the static-instability limit), got {coupling}")
        if nonlinear_pa is not None and not (nonlinear_pa > 0):
            raise ValueError(f"nonlinear_pa must be > 0 Pa (or None for linear membranes), got {nonlinear_pa}")
        if not (isinstance(adc_bits, int) and 2 <= adc_bits <= 24):
            raise ValueError(f"adc_bits must be an integer in 2..24, got {adc_bits!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        n_win = sample_rate / bin_hz
        if abs(n_win - round(n_win)) > 1e-9 * n_win:
            raise ValueError(f"sample_rate / bin_hz must be an integer (coherent sampling), got {sample_rate}/{bin_hz} = {n_win}")
        mem_lo, mem_hi = (float(v) for v in membrane_hz)
        if not (0 < mem_lo <= mem_hi):
            raise ValueError(f"membrane_hz must be (low, high) with 0 < low <= high, got {tuple(membrane_hz)}")

        self.n_modes, self.n_membranes = n_modes, n_membranes
        self.q_factor, self.membrane_q = float(q_factor), float(membrane_q)
        self.coupling = float(coupling)
        self.nonlinear_pa = None if nonlinear_pa is None or math.isinf(nonlinear_pa) else float(nonlinear_pa)
        self.volume_velocity = float(volume_velocity)
        self.sample_rate, self.bin_hz = float(sample_rate), float(bin_hz)
        self.n_window = int(round(n_win))
        self.n_settle = int(round(settle_s * sample_rate))
        self.ramp_s = float(ramp_s)
        self.mic_noise_pa, self.adc_bits, self.full_scale_pa = float(mic_noise_pa), adc_bits, float(full_scale_pa)
        self.noise = bool(noise)
        self.seed = int(seed)
        self.dtype = dtype
        if threads is not None and not (isinstance(threads, int) and threads >= 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        if not (isinstance(max_batch, int) and max_batch >= 1):
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        self.threads, self.max_batch = threads, max_batch
        nyquist_bin = self.n_window // 2

        self.tone_bins = list(range(20, 20 + 2 * K, 2)) if tone_bins is None else [int(b) for b in tone_bins]
        if len(self.tone_bins) != K or len(set(self.tone_bins)) != K:
            raise ValueError(f"tone_bins must be {K} distinct bin indices (one per input), got {self.tone_bins}")
        if min(self.tone_bins) < 1 or max(self.tone_bins) >= nyquist_bin:
            raise ValueError(f"tone bins must lie in 1..{nyquist_bin - 1} (below Nyquist), got {self.tone_bins}")
        if output_bins is None:
            output_bins = _default_output_bins(self.tone_bins, M, nyquist_bin)
        self.output_bins = [int(b) for b in output_bins]
        if len(self.output_bins) != M:
            raise ValueError(f"output_bins must hold {M} bin indices (one per output), got {len(self.output_bins)}")
        if min(self.output_bins) < 0 or max(self.output_bins) > nyquist_bin:
            raise ValueError(f"output bins must lie in 0..{nyquist_bin} (Nyquist), got {self.output_bins}")

        gen = torch.Generator().manual_seed(self.seed)
        f64 = torch.float64
        if size_m is None:
            lo = torch.tensor([0.45, 0.35, 0.25], dtype=f64)
            hi = torch.tensor([0.65, 0.50, 0.35], dtype=f64)
            size = lo + (hi - lo) * torch.rand(3, generator=gen, dtype=f64)
        else:
            size = torch.tensor([float(v) for v in size_m], dtype=f64)
            if size.shape != (3,) or not (size > 0).all():
                raise ValueError(f"size_m must be three positive lengths (m), got {tuple(size_m)}")
        self.size_m = size
        self.volume = float(size.prod())
        self.mode_indices, self._kappa = _lowest_box_modes(size, n_modes)

        speaker = torch.rand(3, generator=gen, dtype=f64) * size
        mic = torch.rand(3, generator=gen, dtype=f64) * size
        membranes = torch.rand(n_membranes, 3, generator=gen, dtype=f64) * size
        mem_f = mem_lo + (mem_hi - mem_lo) * torch.rand(n_membranes, generator=gen, dtype=f64)
        self.tone_phases = 2 * math.pi * torch.rand(K, generator=gen, dtype=f64)
        self.positions = {"speaker": speaker, "mic": mic, "membranes": membranes}
        self._phi_s = self.mode_shape(speaker[None])[0]  # [N]
        self._phi_mic = self.mode_shape(mic[None])[0]  # [N]
        phi_m = self.mode_shape(membranes).T if n_membranes else torch.zeros(n_modes, 0, dtype=f64)  # [N, J]
        norm = torch.linalg.matrix_norm(phi_m, ord=2) if n_membranes else torch.tensor(1.0, dtype=f64)
        self._C = phi_m / norm if float(norm) > 0 else phi_m

        # Drifting parameters (in place, see drift_parameters): kept as float64 tensors, read at every query.
        self._temperature = torch.tensor(float(temperature), dtype=f64)
        self._membrane_hz = mem_f
        self._check_temperature()
        self._noise_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self._tone_cache: tuple[Any, torch.Tensor] | None = None
        self._check_resolution()

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

    def drift_scales(self) -> dict[str, float]:
        """The change of each drift parameter that substantially alters the response (about 10 %).

        Measured on the default cavity with random drives: +1 K changes the
        output by ~3.5 %, +3 K by ~10 %, +5 K by ~15 %; a 5 % rms detuning of
        the membranes by ~6 %.
        """
        mean_hz = float(self._membrane_hz.mean()) if self.n_membranes else 1.0
        return {"temperature": 3.0, "membrane_hz": 0.05 * mean_hz}

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
        return self.n_settle + self.n_window

    @property
    def noise_floor_pa(self) -> float:
        """Mean output magnitude with zero drive: sigma * sqrt(pi / N_w) (Rayleigh mean)."""
        return self.mic_noise_pa * math.sqrt(math.pi / self.n_window)

    # ------------------------------------------------------------------ model
    def _check_temperature(self) -> None:
        _check_temperature(float(self._temperature))

    def _check_resolution(self) -> None:
        dt = 1.0 / self.sample_rate
        top = max(float(self.mode_frequencies().max()), float(self._membrane_hz.max()) if self.n_membranes else 0.0)
        if 2 * math.pi * top * dt > 0.5:
            raise ValueError(
                f"sample_rate={self.sample_rate:g} Hz is too low for the highest resonance {top:.1f} Hz "
                f"(omega*dt = {2 * math.pi * top * dt:.3f} > 0.5); raise sample_rate or lower n_modes"
            )

    def _operators(self) -> dict[str, torch.Tensor]:
        """Stiffness, damping, cubic and forcing vectors from the current (possibly drifted) parameters."""
        self._check_temperature()
        if self.n_membranes and not (self._membrane_hz > 0).all():
            raise ValueError(f"membrane frequencies must stay > 0 Hz, got {self._membrane_hz.tolist()}")
        self._check_resolution()
        dt = 1.0 / self.sample_rate
        f64 = torch.float64
        w_modes = 2 * math.pi * self.mode_frequencies()
        w_mem = 2 * math.pi * self._membrane_hz.to(f64)
        gamma = torch.cat([w_modes / self.q_factor, w_mem / self.membrane_q])
        w_all = torch.cat([w_modes, w_mem])
        w_warp = (2.0 / dt) * torch.sin(w_all * dt / 2)  # discrete oscillator resonates at w_all
        N, J = self.n_modes, self.n_membranes
        K = torch.diag(w_warp**2)
        if J:
            G = self.coupling * w_warp[:N, None] * self._C * w_warp[None, N:]
            K[:N, N:] = -G
            K[N:, :N] = -G.T
        beta = torch.zeros(N + J, dtype=f64)
        if J and self.nonlinear_pa is not None:
            beta[N:] = w_warp[N:] ** 2 / self.nonlinear_pa**2
        b = torch.zeros(N + J, dtype=f64)
        b[:N] = GAMMA_P0 / self.volume * self._phi_s
        mic = torch.zeros(N + J, dtype=f64)
        mic[:N] = self._phi_mic
        ops = dict(K=K, gamma=gamma, beta=beta, b=b, mic=mic)
        return {k: v.to(device=self.device, dtype=self.dtype) for k, v in ops.items()}

    def _tones(self) -> torch.Tensor:
        """dU/dt per unit drive of each tone at every step: [K, T_total] (m^3/s^2), ramp included."""
        key = (self.sample_rate, self.n_steps, self.ramp_s, tuple(self.tone_bins), self.volume_velocity, self.dtype)
        if self._tone_cache is not None and self._tone_cache[0] == key:
            return self._tone_cache[1]
        f64 = torch.float64
        t = torch.arange(self.n_steps, dtype=f64) / self.sample_rate
        w = 2 * math.pi * self.tone_frequencies[:, None]
        ph = self.tone_phases[:, None]
        if self.ramp_s > 0:
            x = (t / self.ramp_s).clamp(max=1.0)
            r = 0.5 * (1 - torch.cos(math.pi * x))
            dr = torch.where(t < self.ramp_s, 0.5 * math.pi / self.ramp_s * torch.sin(math.pi * x), torch.zeros_like(t))
        else:
            r, dr = torch.ones_like(t), torch.zeros_like(t)
        # d/dt [r(t) sin(w t + ph)] = r w cos(...) + r' sin(...)
        du = self.volume_velocity * (r * w * torch.cos(w * t + ph) + dr * torch.sin(w * t + ph))
        du = du.to(device=self.device, dtype=self.dtype)
        self._tone_cache = (key, du)
        return du

    def simulate(self, x: torch.Tensor, *, states: bool = False) -> Trajectory:
        """Integrate the noise-free model for drives x [B, K] (on self.device).

        Autograd flows through when x requires grad (used by :meth:`differentiable`).
        ``states=True`` also records states, forces and energies (memory
        ~ N_w * B * D; for tests and analysis, not for training).
        """
        ops = self._operators()
        K_neg, gamma, beta, b, mic = -ops["K"], ops["gamma"], ops["beta"], ops["b"], ops["mic"]
        dt = 1.0 / self.sample_rate
        inv_damp = 1.0 / (1.0 + dt * gamma)
        x = x.to(device=self.device, dtype=self.dtype)
        s = x @ self._tones()  # [B, T]: loudspeaker dU/dt for every sample and step
        B, D = x.shape[0], K_neg.shape[0]
        z = torch.zeros(B, D, device=self.device, dtype=self.dtype)
        v = torch.zeros_like(z)
        grad = torch.is_grad_enabled() and x.requires_grad
        start = self.n_settle
        rec: list[torch.Tensor] = []
        out = None if grad else torch.empty(self.n_window, B, device=self.device, dtype=self.dtype)
        zs, vs, fs, es = [], [], [], []
        Kpos = ops["K"]
        for i in range(self.n_steps):
            force = torch.outer(s[:, i], b)
            acc = torch.addmm(force, z, K_neg)
            if self.nonlinear_pa is not None and self.n_membranes:
                acc = torch.addcmul(acc, beta, z * z * z, value=-1.0)
            v = torch.add(v, acc, alpha=dt) * inv_damp
            z = torch.add(z, v, alpha=dt)
            if states:
                es.append(0.5 * (v * v).sum(1) + 0.5 * ((z @ Kpos) * z).sum(1) + 0.25 * (beta * z**4).sum(1))
            if i >= start:
                if grad:
                    rec.append(z @ mic)
                else:
                    torch.mv(z, mic, out=out[i - start])
                if states:
                    zs.append(z)
                    vs.append(v)
                    fs.append(force)
        if not (torch.isfinite(z).all() and torch.isfinite(v).all()):
            raise RuntimeError(
                "acoustic simulation diverged (non-finite state): the membranes hardened beyond what "
                f"sample_rate={self.sample_rate:g} Hz resolves; lower volume_velocity or raise sample_rate"
            )
        pressure = (torch.stack(rec) if grad else out).T  # [B, N_w]
        if not states:
            return Trajectory(pressure)
        return Trajectory(pressure, torch.stack(zs), torch.stack(vs), torch.stack(fs), torch.stack(es))

    def spectrum(self, pressure: torch.Tensor) -> torch.Tensor:
        """Complex single-sided amplitude spectrum 2*DFT/N_w of [B, N_w] pressures at the output bins (Pa)."""
        X = torch.fft.rfft(pressure, dim=1)[:, self.output_bins]
        return X * (2.0 / self.n_window)

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free complex mic spectrum at the output bins, [B, M] (Pa); graph-connected."""
        return self.spectrum(self.simulate(x).pressure)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        with _threads(self.threads):
            p = torch.cat([self.simulate(chunk).pressure for chunk in x.split(self.max_batch)])
        if self.noise and self.mic_noise_pa > 0:
            p = p + self.mic_noise_pa * torch.randn(p.shape, generator=self._noise_gen, device=p.device, dtype=p.dtype)
        full = 2 ** (self.adc_bits - 1) - 1
        over = int((p.abs() > self.full_scale_pa).sum())
        if over:
            self.stats.count("adc_saturated_samples", over)
            self.report_event("adc_saturation", samples=over, full_scale_pa=self.full_scale_pa,
                              peak_pa=float(p.abs().max()))
        codes = torch.round(p.clamp(-self.full_scale_pa, self.full_scale_pa) * (full / self.full_scale_pa))
        p_adc = codes * (self.full_scale_pa / full)
        return self.spectrum(p_adc).abs().to(torch.float32)

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free, unquantised magnitudes with the autograd graph through all time steps.

        Only for the in-silico backprop baseline. Backpropagating through the
        4800 steps keeps ~4 [B, D] tensors per step (about 4 MB per sample
        in float32 at the default size), so use modest batches.
        """
        with _threads(self.threads):
            return self.field(x).abs()

    def kinetic_energy_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Upper bound on the steady-state mean kinetic energy for drives x [B, K] (module docstring), [B]."""
        x = torch.as_tensor(x, dtype=torch.float64)
        w = 2 * math.pi * self.tone_frequencies
        s2 = 0.5 * ((self.volume_velocity * w * x) ** 2).sum(1)
        f2 = (GAMMA_P0 / self.volume) ** 2 * (self._phi_s**2).sum() * s2
        ops = self._operators()
        return f2 / (2 * float(ops["gamma"].double().min()) ** 2)

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
            output_units="Pa (amplitude spectrum)",
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


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (process-wide; restored on exit)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
        raise ValueError(
            f"temperature {t:g} deg C is outside {_TEMP_RANGE[0]:g}..{_TEMP_RANGE[1]:g} deg C, where "
            "c = 331.3 + 0.606 T m/s holds"
        )


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
