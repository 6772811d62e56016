r"""A reverberant microwave cavity shaped by a 1-bit programmable metasurface.

The physical layer of the paper's microwave PNN: the drive is the on/off
configuration of ``N`` metasurface elements lining a chaotic cavity, the
measurement is the transmission magnitude :math:`|S_{21}(f)|` between two
antennas at ``F`` frequencies. The wave is linear; the response is nonlinear in
the configuration because waves scatter many times between the elements, the
walls and the clutter before reaching the receiver.

Model: coupled dipoles in 2-D
-----------------------------
Every object is a point dipole in the plane (scalar TM field, time convention
:math:`e^{-i\omega t}`), as in the PhysFad model of RIS-parametrised rooms:

* two antennas, transmitter **T** and receiver **R**;
* the cavity walls: a closed rectangle ``cavity_m`` (default 0.40 m x 0.30 m)
  of strongly scattering, slightly lossy dipoles every ``wall_pitch_m`` (1 cm,
  about :math:`\lambda/5.7` at 5.25 GHz). The walls are made of dipoles rather
  than image sources so that the whole model uses one Green's function and is
  passive by construction; the small gaps let a little energy leak out, which
  with the absorption sets the cavity's finite Q;
* ``n_scatterers`` fixed clutter objects (default 12) at seeded random
  positions inside, with seeded random resonances (4.5-6.0 GHz) — they make the
  rectangle chaotic (no regular mode ladder);
* the ``N`` metasurface elements, on the first ``N`` wall sites going round the
  perimeter from the corner (0, 0): the bottom wall for the default N = 40.

Distances are in metres, frequencies in Hz, :math:`k = 2\pi f/c_0`. Each dipole
has a Lorentzian polarisability with the 2-D radiation reaction built in,

.. math::
    \frac{1}{\alpha_i(f)} = \frac{k^2}{4}\left[\frac{f_i^2 - f^2}{f\,\Gamma_i}
    - i\left(1 + \frac{\Gamma^{abs}_i}{\Gamma_i}\right)\right],

with resonance :math:`f_i`, radiative linewidth :math:`\Gamma_i` and absorptive
(or, for an antenna, port) linewidth :math:`\Gamma^{abs}_i \ge 0`. A metasurface
element's resonance depends on its bit :math:`c_i`:
:math:`f_i = f^{(c_i)}(1+\epsilon_i)(1+\delta_i)` with the two state
resonances ``element_resonances_ghz`` (5.05 / 5.45 GHz), a frozen seeded
fabrication spread :math:`\epsilon_i` (``element_spread`` rms) and a drifting
detuning :math:`\delta_i` (0 until a drift wrapper moves it). The dipoles
couple through the 2-D free-space Green's function

.. math:: G_{ij}(f) = \frac{i k^2}{4} H_0^{(1)}(k r_{ij}) \quad (i \ne j),

(:math:`r_{ij}` floored at 0.1 mm, a regularisation that only matters if two
dipoles nearly touch), and the dipole moments solve
:math:`W(c,f)\,p = E^{inc}` with the symmetric interaction matrix
:math:`W = \mathrm{diag}(1/\alpha(c,f)) - G(f)`.

Transmission
------------
Driving the transmitter port and loading the receiver port with the port
linewidth :math:`\Gamma^{port}` gives (power delivered to the receiver load
over the power available from the source)

.. math:: S_{21}(f) = -2i\,\frac{k^2}{4}\,\frac{\Gamma^{port}}{\Gamma_{ant}}\,[W^{-1}]_{RT}

(both antennas: resonance 5.25 GHz, radiative linewidth 1 GHz, port linewidth
1 GHz, i.e. matched at resonance; positions fixed at 18 %/70 % and 82 %/57 % of
the cavity width/height).

Passivity: :math:`Z = iW` has Hermitian part
:math:`\mathrm{diag}(\tfrac{k^2}{4}\Gamma^{abs}/\Gamma) + \tfrac{k^2}{4}J_0(k r_{ij})`,
positive definite (the :math:`J_0` kernel is the radiation matrix, positive
semi-definite in 2-D), so the network absorbs power and :math:`|S_{21}| \le 1`.
Reciprocity: :math:`W` is symmetric, so :math:`S_{12} = S_{21}`. Both are
tested. The default band is 5.0-5.5 GHz sampled at ``F`` = 20 equally spaced
frequencies (``band_ghz``, 26 MHz apart); the spectral correlation of
:math:`|S_{21}|` in the default cavity falls to 0.5 at about 33 MHz, so
neighbouring outputs are correlated but not redundant.

Noise
-----
A complex circular Gaussian noise floor is added to :math:`S_{21}` before the
magnitude is taken, independently per sample and frequency:
:math:`n = \sigma(\xi_1 + i\xi_2)/\sqrt{2}`, :math:`\xi \sim N(0,1)`,
:math:`\sigma = 10^{\text{noise\_db}/20}`, so :math:`E|n|^2 = \sigma^2`
(default -50 dB re. full transmission; over random configurations of the
default cavity :math:`|S_{21}|` has median -16 dB, 5-95 % range -26 to -10 dB).
The output is :math:`|S_{21} + n|`, dimensionless.

Speed: solving only the metasurface block
-----------------------------------------
Only the metasurface diagonal of :math:`W` changes between samples. Ordering
the dipoles as E (antennas, walls, clutter) and M (metasurface), the fixed part
is eliminated once per frequency, :math:`A = W_{EE}^{-1}`, giving the N x N
Schur complement :math:`S(c) = \mathrm{diag}(1/\alpha_M(c)) + K`,
:math:`K = -G_{MM} - W_{ME} A W_{EM}`, and

.. math:: [W^{-1}]_{RT} = A_{RT} + u^\top S(c)^{-1} v,\quad u = (A W_{EM})_{R,:},\; v = (W_{ME} A)_{:,T}.

``solver="schur"`` solves that N x N system per sample and frequency.
``solver="woodbury"`` (the default) goes further: with 1-bit elements,
:math:`S(c)` differs from the all-0 or the all-1 reference (whichever is closer)
on at most N/2 diagonal entries, so the precomputed reference inverse is updated
with the Woodbury identity through an r x r system, r <= N/2 (samples are
grouped by r and padded to their group's largest r). ``solver="full"`` builds
and solves the whole
``P x P`` system (P = 154 by default); it is the slow reference the other two
are tested against. The elimination of E is itself done in two stages: the
static block (antennas, walls) once at construction, the clutter after each
drift move (a few ms), so a drifting cavity stays fast. Setup runs in
complex128; the per-sample solves run in ``dtype`` (complex64 by default; the
difference to complex128 is tested).

Drift protocol
--------------
:meth:`MetasurfaceCavity.drift_parameters` returns the live tensors a drift
wrapper (:mod:`physnn.simulators.drift`) may change in place:
``scatterer_positions`` ([n_scatterers, 2], metres: clutter creeping, people
and cables moving) and ``element_detuning`` ([N], relative resonance shift of
the metasurface elements: temperature). :meth:`drift_scales` gives the change
of each that decorrelates the response (a quarter wavelength; one element
linewidth). The physics is rebuilt automatically on the next query after any
change; clutter is kept inside the cavity when the physics is built (the
tensor itself is left as the wrapper set it).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import torch

from physnn.core import checks
from physnn.core.system import PhysicalSystem, SystemSpec

__all__ = ["MetasurfaceCavity", "SPEED_OF_LIGHT"]

#: Speed of light in vacuum (m/s).
SPEED_OF_LIGHT = 299_792_458.0

_SOLVERS = ("woodbury", "schur", "full")
_MIN_DISTANCE_M = 1e-4  # floor on dipole separations (regularises the point-dipole singularity)
_CHUNK_BYTES = 64 * 2**20  # bound on the per-chunk working memory of a batched solve
_MIN_GROUP = 32  # smallest group of samples solved together by the Woodbury solver


class MetasurfaceCavity(PhysicalSystem):
    """1-bit metasurface -> chaotic 2-D cavity -> |S21| at F frequencies.

    Args:
        n_inputs: metasurface elements N (default 40); drive 0 or 1 per element.
        n_outputs: frequency points F (default 20) spread evenly over ``band_ghz``.
        band_ghz: (low, high) edges of the measured band in GHz, inclusive.
        cavity_m: (width, height) of the rectangular cavity in metres.
        wall_pitch_m: spacing of the wall dipoles (and metasurface elements) in metres.
        n_scatterers: clutter objects at seeded random positions inside the cavity.
        element_resonances_ghz: resonance of a metasurface element in state 0 and state 1 (GHz).
        element_linewidth_ghz: radiative linewidth of a metasurface element (GHz).
        element_loss_ghz: absorptive linewidth of a metasurface element (GHz; diode loss).
        element_spread: rms relative fabrication spread of element resonances (frozen, seeded).
        wall_loss_ghz: absorptive linewidth of a wall dipole (GHz); sets the wall loss.
        antenna_positions_m: ((x_T, y_T), (x_R, y_R)) in metres, inside the cavity; default
            18 %/70 % and 82 %/57 % of the cavity width/height.
        noise_db: noise floor sigma in dB re. |S21| = 1 (E|n|^2 = sigma^2).
        noise: False turns the noise floor off.
        solver: ``"woodbury"`` (fast, default), ``"schur"`` or ``"full"`` (reference).
        seed: seeds the geometry and, separately (seed + 1), the noise stream.
        device: where the solves run.
        dtype: complex dtype of the per-sample solves (complex64 or complex128).
    """

    def __init__(
        self,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        *,
        band_ghz: tuple[float, float] = (5.0, 5.5),
        cavity_m: tuple[float, float] = (0.40, 0.30),
        wall_pitch_m: float = 0.01,
        n_scatterers: int = 12,
        element_resonances_ghz: tuple[float, float] = (5.05, 5.45),
        element_linewidth_ghz: float = 0.3,
        element_loss_ghz: float = 0.01,
        element_spread: float = 0.005,
        wall_loss_ghz: float = 0.005,
        antenna_positions_m: tuple[tuple[float, float], tuple[float, float]] | None = None,
        noise_db: float = -50.0,
        noise: bool = True,
        solver: str = "woodbury",
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.complex64,
    ):
        n = 40 if n_inputs is None else checks.integer("n_inputs", n_inputs, low=1)
        n_f = 20 if n_outputs is None else checks.integer("n_outputs", n_outputs, low=1)
        spec = SystemSpec(n, n_f, 0.0, 1.0, 2, name="microwave", units="bit", output_units="|S21| (dimensionless)")
        super().__init__(spec, device=device)
        self._set_geometry_options(band_ghz, cavity_m, wall_pitch_m, n_scatterers)
        self._set_element_options(
            element_resonances_ghz, element_linewidth_ghz, element_loss_ghz, element_spread, wall_loss_ghz
        )
        self._set_run_options(noise_db, noise, solver, seed, dtype)
        self._check_elements_fit()
        self._set_design_constants()
        self._place_dipoles(antenna_positions_m)
        self._noise_gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self._built_positions: torch.Tensor | None = None
        self._built_detuning: torch.Tensor | None = None
        self.builds = 0
        self._ensure_built()

    # ------------------------------------------------------ construction steps
    def _set_geometry_options(self, band_ghz: Any, cavity_m: Any, wall_pitch_m: Any, n_scatterers: Any) -> None:
        f_lo, f_hi = _pair("band_ghz", band_ghz)
        if not f_lo < f_hi:
            raise checks.ParameterError(f"band_ghz must be (low, high) with low < high, got {tuple(band_ghz)}")
        self.band_ghz = (f_lo, f_hi)
        self.cavity_m = _pair("cavity_m", cavity_m)
        self.wall_pitch_m = checks.positive("wall_pitch_m", wall_pitch_m)
        self.n_scatterers = checks.integer("n_scatterers", n_scatterers, low=0)

    def _set_element_options(
        self, resonances_ghz: Any, linewidth_ghz: Any, loss_ghz: Any, spread: Any, wall_loss_ghz: Any
    ) -> None:
        res0, res1 = _pair("element_resonances_ghz", resonances_ghz)
        if res0 == res1:
            raise checks.ParameterError(
                f"element_resonances_ghz must differ between the two states, got {tuple(resonances_ghz)}"
            )
        self.element_resonances_ghz = (res0, res1)
        self.element_linewidth_ghz = checks.positive("element_linewidth_ghz", linewidth_ghz)
        self.element_loss_ghz = checks.positive("element_loss_ghz", loss_ghz)  # > 0 keeps W invertible (passive)
        self.element_spread = checks.real("element_spread", spread, low=0.0, high=0.2, high_open=True)
        self.wall_loss_ghz = checks.positive("wall_loss_ghz", wall_loss_ghz)

    def _set_run_options(self, noise_db: Any, noise: Any, solver: Any, seed: Any, dtype: Any) -> None:
        self.noise_db = checks.real("noise_db", noise_db, high=0.0)
        self.noise = checks.boolean("noise", noise)
        self.solver = checks.choice("solver", solver, _SOLVERS)
        self.seed = checks.integer("seed", seed, low=0)
        if dtype not in (torch.complex64, torch.complex128):
            raise checks.ParameterError(f"dtype must be torch.complex64 or torch.complex128, got {dtype!r}")
        self.dtype = dtype

    def _check_elements_fit(self) -> None:
        (width, height), pitch, n = self.cavity_m, self.wall_pitch_m, self.spec.n_inputs
        n_sites = 2 * round(width / pitch) + 2 * round(height / pitch)
        if n > n_sites:
            raise checks.ParameterError(
                f"n_inputs must be at most the {n_sites} wall sites of a {width} m x {height} m cavity at "
                f"wall_pitch_m={pitch} (enlarge cavity_m or reduce wall_pitch_m), got {n}"
            )

    def _set_design_constants(self) -> None:
        """Fixed design values, documented in the module docstring and describe()."""
        self.wall_resonance_ghz, self.wall_linewidth_ghz = 5.25, 10.0
        self.scatterer_linewidth_ghz, self.scatterer_loss_ghz = 3.0, 0.005
        self.antenna_resonance_ghz, self.antenna_linewidth_ghz, self.port_linewidth_ghz = 5.25, 1.0, 1.0
        f_lo, f_hi = self.band_ghz
        f64 = dict(dtype=torch.float64, device=self.device)
        self.frequencies_hz = torch.linspace(f_lo * 1e9, f_hi * 1e9, self.spec.n_outputs, **f64)
        self._k = 2 * math.pi * self.frequencies_hz / SPEED_OF_LIGHT
        self.wavelength_m = SPEED_OF_LIGHT / (0.5 * (f_lo + f_hi) * 1e9)

    def _place_dipoles(self, antenna_positions_m: Any) -> None:
        """Seeded geometry: antennas, wall sites (the first N are the metasurface), clutter, fabrication spread."""
        (width, height), n = self.cavity_m, self.spec.n_inputs
        f64 = dict(dtype=torch.float64, device=self.device)
        sites = _perimeter_sites(width, height, self.wall_pitch_m)
        gen = torch.Generator().manual_seed(self.seed)
        if antenna_positions_m is None:
            antenna_positions_m = ((0.18 * width, 0.70 * height), (0.82 * width, 0.57 * height))
        antennas = _antennas(antenna_positions_m, width, height)
        scat = _place_scatterers(self.n_scatterers, width, height, antennas, self.wavelength_m, gen)
        scat_res = 4.5 + 1.5 * torch.rand(self.n_scatterers, generator=gen, dtype=torch.float64)
        spread = self.element_spread * torch.randn(n, generator=gen, dtype=torch.float64)
        self.antenna_positions = antennas.to(**f64)
        self.element_positions = sites[:n].to(**f64)
        self.wall_positions = sites[n:].to(**f64)
        self.scatterer_resonances_ghz = scat_res.to(**f64)
        self.element_fabrication_spread = spread.to(**f64)
        #: Drift parameters (live tensors; see drift_parameters()).
        self.scatterer_positions = scat.to(**f64)
        self.element_detuning = torch.zeros(n, **f64)

    # --------------------------------------------------------------- geometry
    @property
    def n_dipoles(self) -> int:
        """P: antennas + walls + clutter + metasurface elements."""
        return 2 + len(self.wall_positions) + self.n_scatterers + self.spec.n_inputs

    def _static_positions(self) -> torch.Tensor:
        """Positions of the static block B: transmitter, receiver, walls, [2 + n_walls, 2] m."""
        return torch.cat([self.antenna_positions, self.wall_positions])

    def _clutter_positions(self) -> torch.Tensor:
        """The drifting clutter positions, kept inside the cavity (a copy; the live tensor is untouched)."""
        w, h = self.cavity_m
        margin = 0.25 * self.wall_pitch_m
        scat = self.scatterer_positions.detach().clone()
        if len(scat):
            scat[:, 0].clamp_(margin, w - margin)
            scat[:, 1].clamp_(margin, h - margin)
        return scat

    def _inverse_alpha(self, resonance_ghz: torch.Tensor, linewidth_ghz: float, loss_ghz: float) -> torch.Tensor:
        """(4/k^2) / alpha for dipoles with the given resonances, shape [F, len(resonance)] (complex128)."""
        f = self.frequencies_hz[:, None] / 1e9
        fr = resonance_ghz.reshape(1, -1)
        re = (fr**2 - f**2) / (f * linewidth_ghz)
        im = torch.full_like(re, -(1.0 + loss_ghz / linewidth_ghz))
        return torch.complex(re, im)

    def _static_inverse_alpha(self) -> torch.Tensor:
        """Scaled inverse polarisabilities of the static block (antennas, walls), [F, n_B]."""
        full = lambda m, v: torch.full((m,), v, dtype=torch.float64, device=self.device)  # noqa: E731
        return torch.cat(
            [
                self._inverse_alpha(
                    full(2, self.antenna_resonance_ghz), self.antenna_linewidth_ghz, self.port_linewidth_ghz
                ),
                self._inverse_alpha(
                    full(len(self.wall_positions), self.wall_resonance_ghz), self.wall_linewidth_ghz, self.wall_loss_ghz
                ),
            ],
            dim=1,
        )

    def _clutter_inverse_alpha(self) -> torch.Tensor:
        """Scaled inverse polarisabilities of the clutter, [F, n_scatterers]."""
        return self._inverse_alpha(self.scatterer_resonances_ghz, self.scatterer_linewidth_ghz, self.scatterer_loss_ghz)

    def _element_inverse_alpha(self, detuning: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled inverse polarisabilities of the metasurface in state 0 and 1, each [F, N]."""
        detuning = self.element_detuning if detuning is None else detuning
        scale = (1 + self.element_fabrication_spread) * (1 + detuning)
        r0, r1 = self.element_resonances_ghz
        return (
            self._inverse_alpha(r0 * scale, self.element_linewidth_ghz, self.element_loss_ghz),
            self._inverse_alpha(r1 * scale, self.element_linewidth_ghz, self.element_loss_ghz),
        )

    def _coupling(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Scaled Green's function (4/k^2) G between point sets: i H0^(1)(k r), [F, len(a), len(b)]."""
        r = torch.cdist(a, b).clamp_min(_MIN_DISTANCE_M)
        kr = self._k[:, None, None] * r
        return 1j * torch.complex(torch.special.bessel_j0(kr), torch.special.bessel_y0(kr))

    @property
    def port_factor(self) -> float:
        """|S21| / |(k^2/4) [W^-1]_RT| = 2 Gamma_port / Gamma_ant (S21 carries a further factor -i)."""
        return 2.0 * self.port_linewidth_ghz / self.antenna_linewidth_ghz

    # ----------------------------------------------------------------- setup
    def _ensure_built(self) -> None:
        """Recompute what a drift invalidated (detected by comparing with the last build)."""
        if not hasattr(self, "_b_inv"):
            self._build_static()
        pos_changed = self._built_positions is None or not torch.equal(self._built_positions, self.scatterer_positions)
        det_changed = self._built_detuning is None or not torch.equal(self._built_detuning, self.element_detuning)
        if pos_changed:
            self._build_clutter()
        if pos_changed or det_changed:
            self._build_metasurface()
            self.builds += 1
        self._built_positions = self.scatterer_positions.detach().clone()
        self._built_detuning = self.element_detuning.detach().clone()

    def _build_static(self) -> None:
        """Once: eliminate the static block B (antennas, walls), whose geometry never changes.

        Keeps B^-1 = W_BB^-1, X_BM = B^-1 W_BM, B^-1 e_T, B^-1 e_R and the metasurface
        Schur complement of the B + M system, K0 = -G_MM - W_MB X_BM (complex128).
        """
        pos_b, pos_m = self._static_positions(), self.element_positions
        w_bb = -self._coupling(pos_b, pos_b)
        w_bb.diagonal(dim1=-2, dim2=-1).copy_(self._static_inverse_alpha())
        self._b_inv = _inv(w_bb)  # [F, nB, nB]
        self._w_bm = -self._coupling(pos_b, pos_m)
        self._x_bm = self._b_inv @ self._w_bm
        k0 = -self._coupling(pos_m, pos_m)
        k0.diagonal(dim1=-2, dim2=-1).zero_()
        self._k0 = k0 - self._w_bm.transpose(1, 2) @ self._x_bm
        self._y_b = self._b_inv[:, :, :2]  # columns B^-1 e_T, B^-1 e_R: [F, nB, 2]

    def _build_clutter(self) -> None:
        """After any clutter move: eliminate the clutter block S, giving K, u, v, a for the metasurface.

        With B eliminated, the (S, M) system has blocks P = W_SS - W_SB B^-1 W_BS,
        Q = W_SM - W_SB X_BM, Q2 = W_MS - W_MB B^-1 W_BS and K0; eliminating S gives
        K = K0 - Q2 P^-1 Q and, for source s and receiver d (direction 0: T -> R),
        u = (X_BM)_d - Q^T P^-T (B^-1 W_BS)_d, v = W_MB B^-1 e_s - Q2 P^-1 W_SB B^-1 e_s,
        a = (B^-1)_ds + (B^-1 W_BS)_d P^-1 W_SB B^-1 e_s. u and v are computed along
        different routes (rows vs. columns), so reciprocity S21 = S12 is a real check.
        """
        pos_b, pos_m, pos_s = self._static_positions(), self.element_positions, self._clutter_positions()
        w_mb = self._w_bm.transpose(1, 2)
        src = torch.tensor([0, 1], device=self.device)
        dst = torch.tensor([1, 0], device=self.device)
        y_src = self._y_b  # B^-1 e_s for s = T, R: [F, nB, 2]
        a = self._b_inv[:, dst, src]  # [F, 2]
        u = self._x_bm[:, dst, :]  # [F, 2, N]
        v = w_mb @ y_src  # [F, N, 2]
        k = self._k0
        if len(pos_s):
            w_bs = -self._coupling(pos_b, pos_s)
            w_sm = -self._coupling(pos_s, pos_m)
            w_ss = -self._coupling(pos_s, pos_s)
            w_ss.diagonal(dim1=-2, dim2=-1).copy_(self._clutter_inverse_alpha())
            w_sb = w_bs.transpose(1, 2)
            x_bs = self._b_inv @ w_bs  # B^-1 W_BS
            p = w_ss - w_sb @ x_bs
            q = w_sm - w_sb @ self._x_bm
            q2 = w_sm.transpose(1, 2) - w_mb @ x_bs  # W_MS - W_MB B^-1 W_BS
            rhs_s = w_sb @ y_src  # W_SB B^-1 e_s: [F, nS, 2]
            sol = _solve(p, torch.cat([q, rhs_s], dim=2))
            p_inv_q, p_inv_rhs = sol[..., : q.shape[2]], sol[..., q.shape[2] :]
            k = k - q2 @ p_inv_q
            v = v - q2 @ p_inv_rhs
            row_s = x_bs[:, dst, :]  # (B^-1 W_BS)_d: [F, 2, nS]
            u = u - row_s @ p_inv_q
            a = a + (row_s * p_inv_rhs.transpose(1, 2)).sum(-1)
        self._K = k  # [F, N, N]
        self._u = u.transpose(0, 1)  # [2 dir, F, N]
        self._v = v.permute(2, 0, 1)  # [2 dir, F, N]
        self._a = a.transpose(0, 1)  # [2 dir, F]
        self._w_full_base: torch.Tensor | None = None  # built on first use by the full solver

    def _full_matrix_base(self) -> torch.Tensor:
        """The whole P x P matrix W with a zero metasurface diagonal (the reference solver's starting point).

        Built from scratch from the positions, without any of the block eliminations
        the fast solvers use, so that comparing with it checks them.
        """
        if self._w_full_base is not None:
            return self._w_full_base
        pos = torch.cat([self._static_positions(), self._clutter_positions(), self.element_positions])
        w = -self._coupling(pos, pos)
        n_m = self.spec.n_inputs
        diag = torch.cat(
            [
                self._static_inverse_alpha(),
                self._clutter_inverse_alpha(),
                torch.zeros(len(self._k), n_m, dtype=torch.complex128, device=self.device),
            ],
            dim=1,
        )
        w.diagonal(dim1=-2, dim2=-1).copy_(diag)
        self._w_full_base = w
        return w

    def _build_metasurface(self) -> None:
        """Reference inverses for the all-0 and all-1 configurations (Woodbury) and the diagonals."""
        d0, d1 = self._element_inverse_alpha()
        self._d0, self._delta = d0, d1 - d0
        s_ref = torch.stack([self._K.clone(), self._K.clone()])  # [2 ref, F, N, N]
        s_ref[0].diagonal(dim1=-2, dim2=-1).add_(d0)
        s_ref[1].diagonal(dim1=-2, dim2=-1).add_(d1)
        s_inv = _inv(s_ref)
        # uS[dir, ref] = u^T S_ref^-1, Sv[dir, ref] = S_ref^-1 v, y_ref = a + u^T S_ref^-1 v
        self._uS = torch.einsum("dfn,rfnm->drfm", self._u, s_inv)
        self._Sv = torch.einsum("rfnm,dfm->drfn", s_inv, self._v)
        self._y_ref = self._a[:, None, :] + torch.einsum("drfn,dfn->drf", self._uS, self._v)
        # Woodbury tables, frequency last so that one gather index serves every frequency, padded
        # with a dummy element N (zero couplings, unit diagonal) that fills short flip lists.
        n, n_f = self.spec.n_inputs, self.spec.n_outputs
        z = dict(dtype=torch.complex128, device=self.device)
        self._wb_s_inv = torch.zeros(2, n + 1, n + 1, n_f, **z)
        self._wb_s_inv[:, :n, :n] = s_inv.permute(0, 2, 3, 1)
        # flipping from ref 0 adds delta to the diagonal, from ref 1 subtracts it
        self._wb_inv_flip = torch.ones(2, n + 1, n_f, **z)
        self._wb_inv_flip[0, :n] = (1.0 / self._delta).T
        self._wb_inv_flip[1, :n] = (-1.0 / self._delta).T
        self._wb_uS = torch.zeros(2, 2, n + 1, n_f, **z)
        self._wb_uS[:, :, :n] = self._uS.permute(0, 1, 3, 2)
        self._wb_Sv = torch.zeros(2, 2, n + 1, n_f, **z)
        self._wb_Sv[:, :, :n] = self._Sv.permute(0, 1, 3, 2)
        self._cast = {}

    def _low(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """Precomputed tensors cast once to the solve dtype."""
        key = (name, dtype)
        if key not in self._cast:
            self._cast[key] = getattr(self, name).to(dtype)
        return self._cast[key]

    # --------------------------------------------------------------- physics
    def transfer(
        self,
        x: Any,
        *,
        reverse: bool = False,
        solver: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Noise-free complex S21 (or S12 with ``reverse=True``), shape [B, F].

        A look inside the simulator for tests and baselines: validated, but not
        counted as queries. ``solver``/``dtype`` override the instance settings.
        """
        c = self.validate_input(x).to(self.device)
        solver = self.solver if solver is None else solver
        if solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(_SOLVERS)}, got {solver!r}")
        dtype = self.dtype if dtype is None else dtype
        self._ensure_built()
        direction = 1 if reverse else 0
        bits = torch.round(c)
        with torch.no_grad():
            if solver == "full":
                return self._chunked(self._solve_full, bits, direction, dtype, per_sample=self.n_dipoles**2)
            if solver == "schur":
                return self._chunked(self._solve_schur, bits, direction, dtype, per_sample=self.spec.n_inputs**2)
            return self._chunked(
                self._solve_woodbury, bits, direction, dtype, per_sample=(self.spec.n_inputs // 2 + 1) ** 2
            )

    def _chunked(self, fn, c: torch.Tensor, direction: int, dtype: torch.dtype, per_sample: int) -> torch.Tensor:
        item = torch.empty((), dtype=dtype).element_size()
        chunk = max(1, _CHUNK_BYTES // (3 * per_sample * self.spec.n_outputs * item))
        parts = [fn(c[i : i + chunk], direction, dtype) for i in range(0, c.shape[0], chunk)]
        return (torch.cat(parts) * (-1j * self.port_factor)).to(dtype)

    def _schur_matrix(self, c: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """S(c) = diag(d0 + c delta) + K for a (possibly relaxed) configuration, [B, F, N, N]."""
        d = self._low("_d0", dtype) + c[:, None, :].to(dtype) * self._low("_delta", dtype)
        return self._low("_K", dtype).expand(c.shape[0], -1, -1, -1) + torch.diag_embed(d)

    def _solve_schur(self, c: torch.Tensor, direction: int, dtype: torch.dtype) -> torch.Tensor:
        s = self._schur_matrix(c, dtype)
        z = _solve(s, self._low("_v", dtype)[direction].expand(c.shape[0], -1, -1).unsqueeze(-1))[..., 0]
        return self._low("_a", dtype)[direction] + (self._low("_u", dtype)[direction] * z).sum(-1)

    def _solve_woodbury(self, c: torch.Tensor, direction: int, dtype: torch.dtype) -> torch.Tensor:
        n = c.shape[1]
        ref = (c.sum(1) > n / 2).long()  # the reference closer to c: all-0 or all-1
        flip = c != ref[:, None].to(c.dtype)  # elements that differ from it
        counts = flip.sum(1)
        out = self._low("_y_ref", dtype)[direction][ref].clone()  # [B, F]
        # Samples with similar flip counts are solved together, padded to their group's largest
        # count: the r x r factorisation dominates and costs ~r^3, so this beats padding every
        # sample to the batch maximum. Groups under _MIN_GROUP samples join the next one.
        order = torch.argsort(counts)
        sorted_counts = counts[order].tolist()
        start = 0
        while start < len(order):
            stop = start
            while stop < len(order) and (stop - start < _MIN_GROUP or sorted_counts[stop] == sorted_counts[stop - 1]):
                stop += 1
            rows = order[start:stop]
            r = sorted_counts[stop - 1]
            if r > 0:
                out[rows] -= self._woodbury_update(flip[rows], counts[rows], ref[rows], r, direction, dtype)
            start = stop
        return out

    def _woodbury_update(
        self, flip: torch.Tensor, counts: torch.Tensor, ref: torch.Tensor, r: int, direction: int, dtype: torch.dtype
    ) -> torch.Tensor:
        """(u^T S_ref^-1 E) M^-1 (E^T S_ref^-1 v) for flip sets of at most r elements, [b, F]."""
        n = flip.shape[1]
        first = torch.sort(flip.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :r]  # flips first
        pad = torch.arange(r, device=flip.device)[None, :] >= counts[:, None]
        idx = first.masked_fill(pad, n)  # short flip lists point at the dummy element n
        r_b = ref[:, None]
        m = self._low("_wb_s_inv", dtype)[ref[:, None, None], idx[:, :, None], idx[:, None, :]]  # [b, r, r, F]
        m.diagonal(dim1=1, dim2=2).add_(self._low("_wb_inv_flip", dtype)[r_b, idx].transpose(1, 2))
        us = self._low("_wb_uS", dtype)[direction][r_b, idx]  # [b, r, F]
        sv = self._low("_wb_Sv", dtype)[direction][r_b, idx]
        z = _solve(m.permute(0, 3, 1, 2), sv.transpose(1, 2).unsqueeze(-1))[..., 0]  # [b, F, r]
        return (us.transpose(1, 2) * z).sum(-1)

    def _solve_full(self, c: torch.Tensor, direction: int, dtype: torch.dtype) -> torch.Tensor:
        n_e = self.n_dipoles - self.spec.n_inputs
        w = self._full_matrix_base().to(dtype).expand(c.shape[0], -1, -1, -1).clone()
        d = self._d0.to(dtype) + c[:, None, :].to(dtype) * self._delta.to(dtype)
        w.diagonal(dim1=-2, dim2=-1)[..., n_e:] = d
        src, dst = (0, 1) if direction == 0 else (1, 0)
        e = torch.zeros(self.n_dipoles, dtype=dtype, device=c.device)
        e[src] = 1.0
        p = _solve(w, e.expand(c.shape[0], self.spec.n_outputs, -1).unsqueeze(-1))[..., 0]
        return p[..., dst]

    def noise_free(self, x: Any) -> torch.Tensor:
        """|S21| without the noise floor, [B, F] float32 (not counted as queries)."""
        return self.transfer(x).abs().to(torch.float32)

    def _measure(self, x: torch.Tensor) -> torch.Tensor:
        s21 = self.transfer(x)
        if self.noise:
            sigma = 10.0 ** (self.noise_db / 20.0)
            re_im = torch.randn((*s21.shape, 2), generator=self._noise_gen, device=s21.device, dtype=torch.float32)
            s21 = s21 + (sigma / math.sqrt(2.0)) * torch.view_as_complex(re_im).to(s21.dtype)
        return s21.abs().to(torch.float32)

    def differentiable(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free |S21| of a relaxed configuration c in [0, 1], with its autograd graph.

        The element's inverse polarisability is interpolated linearly between
        its two states (a convex mix, so the relaxed cavity is still passive).
        Only for the in-silico backprop baseline.
        """
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.spec.n_inputs:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"differentiable expects a [B, {self.spec.n_inputs}] tensor, got {shape}")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ValueError(
                f"differentiable expects a relaxed configuration in [0, 1], got values in "
                f"[{x.min().item():.4g}, {x.max().item():.4g}]"
            )
        self._ensure_built()
        c = x.to(self.device)
        s = self._schur_matrix(c, self.dtype)
        z = _solve(s, self._low("_v", self.dtype)[0].expand(c.shape[0], -1, -1).unsqueeze(-1))[..., 0]
        y = self._low("_a", self.dtype)[0] + (self._low("_u", self.dtype)[0] * z).sum(-1)
        return (-1j * self.port_factor * y).abs().to(x.device)  # float32 for complex64, float64 for complex128

    # ------------------------------------------------------------------ drift
    def drift_parameters(self) -> dict[str, torch.Tensor]:
        """The live tensors a drift wrapper may change in place (units in :meth:`drift_scales`)."""
        return {"scatterer_positions": self.scatterer_positions, "element_detuning": self.element_detuning}

    def drift_scales(self) -> dict[str, float]:
        """The change of each drift parameter that decorrelates the response.

        ``scatterer_positions``: a quarter wavelength at the band centre (m);
        ``element_detuning``: one element linewidth relative to the band centre.
        """
        f_c = 0.5 * sum(self.band_ghz)
        return {
            "scatterer_positions": self.wavelength_m / 4,
            "element_detuning": self.element_linewidth_ghz / f_c,
        }

    # --------------------------------------------------------------- metadata
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            model="2-D coupled dipoles (TM), time convention exp(-i w t)",
            band_ghz=list(self.band_ghz),
            frequencies_ghz=(self.frequencies_hz / 1e9).tolist(),
            cavity_m=list(self.cavity_m),
            wall_pitch_m=self.wall_pitch_m,
            n_dipoles=self.n_dipoles,
            n_wall_dipoles=len(self.wall_positions),
            n_scatterers=self.n_scatterers,
            antenna_positions_m=self.antenna_positions.tolist(),
            antenna_resonance_ghz=self.antenna_resonance_ghz,
            antenna_linewidth_ghz=self.antenna_linewidth_ghz,
            port_linewidth_ghz=self.port_linewidth_ghz,
            element_positions_m=self.element_positions.tolist(),
            element_resonances_ghz=list(self.element_resonances_ghz),
            element_linewidth_ghz=self.element_linewidth_ghz,
            element_loss_ghz=self.element_loss_ghz,
            element_spread=self.element_spread,
            wall_resonance_ghz=self.wall_resonance_ghz,
            wall_linewidth_ghz=self.wall_linewidth_ghz,
            wall_loss_ghz=self.wall_loss_ghz,
            scatterer_positions_m=self.scatterer_positions.tolist(),
            scatterer_resonances_ghz=self.scatterer_resonances_ghz.tolist(),
            scatterer_linewidth_ghz=self.scatterer_linewidth_ghz,
            scatterer_loss_ghz=self.scatterer_loss_ghz,
            element_detuning=self.element_detuning.tolist(),
            noise_db=self.noise_db,
            noise=self.noise,
            solver=self.solver,
            seed=self.seed,
            dtype=str(self.dtype),
            builds=self.builds,
        )
        return d


# ---------------------------------------------------------------- helpers
#: Largest matrix order solved as a batched CPU call with several threads. Batched CPU LU of
#: larger matrices with several threads fails inside MKL ("Parameter 6 was incorrect on entry
#: to CLASWP", then an error or a hang; pytorch/pytorch#142815, seen here with torch 2.13 at
#: n >= 151), so larger systems are factorised with one thread (or one matrix at a time when
#: a gradient is needed, so that the backward pass avoids the batched path too).
_BATCHED_LU_MAX_N = 128


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.linalg.solve(a, b) for matrix right-hand sides [..., n, k], safe from pytorch#142815."""
    n = a.shape[-1]
    if a.device.type != "cpu" or n <= _BATCHED_LU_MAX_N or a.dim() == 2:
        return torch.linalg.solve(a, b)
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        a2 = a.expand(*batch, n, n).reshape(-1, n, n)
        b2 = b.expand(*batch, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
        return torch.stack([torch.linalg.solve(ai, bi) for ai, bi in zip(a2, b2)]).reshape(*batch, *b.shape[-2:])
    with _one_thread():
        return torch.linalg.solve(a, b)


def _inv(a: torch.Tensor) -> torch.Tensor:
    """torch.linalg.inv(a) without gradient, safe from pytorch#142815 (see _solve)."""
    if a.device.type != "cpu" or a.shape[-1] <= _BATCHED_LU_MAX_N or a.dim() == 2:
        return torch.linalg.inv(a)
    with _one_thread():
        return torch.linalg.inv(a)


def _perimeter_sites(width: float, height: float, pitch: float) -> torch.Tensor:
    """Wall sites every ``pitch`` round the rectangle, counter-clockwise from (0, 0): [n, 2] m."""
    nx, ny = round(width / pitch), round(height / pitch)
    dx, dy = width / nx, height / ny
    t_x = (torch.arange(nx, dtype=torch.float64) + 0.5) * dx
    t_y = (torch.arange(ny, dtype=torch.float64) + 0.5) * dy
    zx, zy = torch.zeros(nx, dtype=torch.float64), torch.zeros(ny, dtype=torch.float64)
    bottom = torch.stack([t_x, zx], 1)
    right = torch.stack([zy + width, t_y], 1)
    top = torch.stack([width - t_x, zx + height], 1)
    left = torch.stack([zy, height - t_y], 1)
    return torch.cat([bottom, right, top, left])


def _place_scatterers(
    n: int, width: float, height: float, antennas: torch.Tensor, wavelength: float, gen: torch.Generator
) -> torch.Tensor:
    """Seeded random clutter positions, a quarter wavelength from the walls, each other and the antennas."""
    gap = wavelength / 4
    if n == 0:
        return torch.zeros(0, 2, dtype=torch.float64)
    if width <= 2 * gap or height <= 2 * gap:
        raise ValueError(f"cavity_m=({width}, {height}) is too small for clutter (needs > {2 * gap:.3g} m each side)")
    placed: list[torch.Tensor] = []
    others = antennas.to(torch.float64)
    for _ in range(200 * n):
        p = torch.rand(2, generator=gen, dtype=torch.float64) * torch.tensor([width - 2 * gap, height - 2 * gap]) + gap
        taken = torch.cat([others, torch.stack(placed)]) if placed else others
        if torch.cdist(p[None], taken).min() >= gap:
            placed.append(p)
            if len(placed) == n:
                return torch.stack(placed)
    raise ValueError(
        f"could not place n_scatterers={n} at least {gap:.3g} m apart in a {width} m x {height} m cavity; "
        f"use fewer scatterers or a larger cavity"
    )


def _antennas(value: Any, width: float, height: float) -> torch.Tensor:
    try:
        pos = torch.tensor([[float(v) for v in p] for p in value], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ValueError(f"antenna_positions_m must be two (x, y) pairs in metres, got {value!r}") from None
    if pos.shape != (2, 2) or not torch.isfinite(pos).all():
        raise ValueError(f"antenna_positions_m must be two finite (x, y) pairs in metres, got {value!r}")
    for i, (x, y) in enumerate(pos.tolist()):
        if not (0 < x < width and 0 < y < height):
            raise ValueError(
                f"antenna {'TR'[i]} at ({x}, {y}) m is outside the cavity interior (0..{width}) x (0..{height}) m"
            )
    if float(torch.dist(pos[0], pos[1])) < _MIN_DISTANCE_M:
        raise ValueError(f"the two antennas must be at least {_MIN_DISTANCE_M} m apart, got {value!r}")
    return pos


def _pair(name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise checks.ParameterError(f"{name} must be a pair of positive finite numbers, got {value!r}")
    a, b = (checks.positive(f"{name}[{i}]", v) for i, v in enumerate(value))
    return a, b
