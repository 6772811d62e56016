r"""Time stepping of the acoustic cavity (:mod:`physnn.simulators.acoustics`): one step per audio sample.

The model is :math:`\ddot z = -Kz - \Gamma\dot z - \beta z^3 + b\,\dot U_s(t)` (see the cavity's docstring).
Two schemes, both vectorised over the batch with a Python loop over time (a few tensor operations per step):

``leapfrog`` (default): second order, with three corrections that make it exact where it can be
    Kick-drift-kick with the velocity at half steps and the damping applied exactly over each half step,

    .. math:: v_{n+1/2} = e^{-\gamma h} v_{n-1/2} + h e^{-\gamma h/2}\,a_n,\qquad z_{n+1} = z_n + h\,v_{n+1/2},

    :math:`a_n = -\tilde K z_n - \beta z_n^3 + b\,s_n`. (1) The stiffness is warped as a matrix,
    :math:`\tilde K = V\,\mathrm{diag}\big((2/h)^2\sin^2(\omega_m h/2)\big)V^T` for :math:`K = V\,\mathrm{diag}(\omega_m^2)V^T`,
    so every undamped *coupled* mode of the discrete system resonates exactly at its :math:`\omega_m` (the
    old scheme warped only the uncoupled frequencies). (2) Each tone's complex gain is set so that the
    discrete steady state at the microphone equals the continuous one exactly: with
    :math:`T_d(\Omega) = \tilde K + \mathrm{diag}\big((2i\sin(\Omega h/2)/h)(e^{i\Omega h/2} - e^{-\gamma h}e^{-i\Omega h/2})/(h e^{-\gamma h/2})\big)`
    the scheme's transfer matrix, :math:`\rho_k = m^T(K - \Omega_k^2 + i\Omega_k\Gamma)^{-1}b\,/\,m^T T_d(\Omega_k)^{-1}b`
    multiplies tone k. A linear cavity is then exact at any step (to float rounding, once settled); only
    the membranes' nonlinear forces carry the scheme's second-order error. (3) A row's arithmetic does
    not depend on its batch (the caller pads to whole row tiles).

    Accuracy against the continuous model integrated by scipy's DOP853 at rtol 1e-10 (cavity seeds 0, 1
    and 4, three random drives each, default drive level; ``benchmarks/acoustics_speed.py``): see the
    benchmark's results file. Stability: the leapfrog is stable while every discrete frequency, including
    the membranes' hardening :math:`3\beta u^2`, stays below :math:`2/h`; the cavity therefore requires
    :math:`\omega h \le 1` for its membranes (room for a hardening of 3x the linear stiffness) and
    :math:`\omega h \le 2.5` for its cavity modes (linear: the warp keeps them exact below Nyquist).

``euler``: the previous scheme, kept for comparisons (``benchmarks/acoustics_speed.py``)
    Semi-implicit (symplectic) Euler with implicit damping and the diagonal pre-warp,
    :math:`v \leftarrow (v + h(b s_n - \tilde K_{diag} z - \beta z^3))/(1 + h\gamma)`, :math:`z \leftarrow z + h v`:
    first order for the damped, coupled system, 4-7 % off the exact steady state at 32 kHz.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["INTEGRATORS", "Steps", "leapfrog_operators", "leapfrog_tone_gains", "run"]

INTEGRATORS = ("leapfrog", "euler")


class Steps(NamedTuple):
    """What one integration recorded: mic pressure over the window, optionally the states of every window step."""

    pressure: torch.Tensor  # [N_w, B]
    z: torch.Tensor | None = None  # [N_w, B, D]
    v: torch.Tensor | None = None  # [N_w, B, D] (leapfrog: the average of the two half-step velocities)
    force: torch.Tensor | None = None  # [N_w, B, D]
    energy: torch.Tensor | None = None  # [T, B]


def leapfrog_operators(K: torch.Tensor, gamma: torch.Tensor, h: float) -> dict[str, torch.Tensor]:
    """Warped stiffness (float64) and the exact half-step damping factors for step ``h``."""
    lam, V = torch.linalg.eigh(K)
    w = lam.clamp_min(0.0).sqrt()
    K_warped = (V * ((2.0 / h) * torch.sin(w * h / 2)) ** 2) @ V.T
    return {"K": K_warped, "decay": torch.exp(-gamma * h), "kick": h * torch.exp(-gamma * h / 2)}


def leapfrog_tone_gains(
    K: torch.Tensor,
    gamma: torch.Tensor,
    b: torch.Tensor,
    mic: torch.Tensor,
    ops: dict[str, torch.Tensor],
    omegas: torch.Tensor,
    h: float,
) -> torch.Tensor:
    """Complex gain per tone making the discrete steady state at the microphone equal the continuous one."""
    c128 = torch.complex128
    eye = torch.eye(K.shape[0], dtype=torch.float64)
    Kc, bc, mc = K.to(c128), b.to(c128), mic.to(c128)
    gains = []
    for W in omegas.tolist():
        continuous = torch.linalg.solve(Kc - W**2 * eye + 1j * W * torch.diag(gamma).to(c128), bc)
        e = complex(math.cos(W * h / 2), math.sin(W * h / 2))
        q = (2j * math.sin(W * h / 2) / h) * (e - ops["decay"] * e.conjugate()) / ops["kick"]
        discrete = torch.linalg.solve(ops["K"].to(c128) + torch.diag(q), bc)
        gains.append((mc @ continuous) / (mc @ discrete))
    return torch.stack(gains)


def run(
    scheme: str,
    s: torch.Tensor,
    ops: dict[str, torch.Tensor],
    n_membranes: int,
    h: float,
    start: int,
    *,
    states: bool = False,
) -> Steps:
    """Integrate from rest for ``s.shape[1]`` steps; record the window from step ``start`` on.

    ``s``: loudspeaker signal [B, T] (tone gains already applied); ``ops`` (system dtype and device):
    ``K`` (warped), ``gamma``, ``beta``, ``b``, ``mic`` and, for the leapfrog, ``decay`` and ``kick``.
    Autograd flows through when ``s`` requires grad (no in-place update then).
    """
    if scheme == "euler":
        return _run_euler(s, ops, h, start, states)
    return _run_leapfrog(s, ops, n_membranes, h, start, states)


def _run_leapfrog(
    s: torch.Tensor, ops: dict[str, torch.Tensor], n_membranes: int, h: float, start: int, states: bool
) -> Steps:
    """The kick factor is folded into the stiffness, the speaker vector and the cubic coefficients."""
    if not states and not (torch.is_grad_enabled() and s.requires_grad):
        return _run_leapfrog_fast(s, ops, n_membranes, h, start)
    B, T = s.shape
    kick, decay, beta, mic = ops["kick"], ops["decay"], ops["beta"], ops["mic"]
    K_kick = -ops["K"] * kick[None, :]  # z @ K_kick = -kick * (K z)
    b_kick = ops["b"] * kick
    D = K_kick.shape[0]
    N = D - n_membranes
    beta_kick = beta[N:] * kick[N:]
    cubic = n_membranes > 0 and bool((beta_kick != 0).any())
    grad = torch.is_grad_enabled() and s.requires_grad
    z = s.new_zeros(B, D)
    v = torch.zeros_like(z)
    out = None if grad else s.new_empty(T - start, B)
    rec: list[torch.Tensor] = []
    zs: list[torch.Tensor] = []
    vs: list[torch.Tensor] = []
    fs: list[torch.Tensor] = []
    es: list[torch.Tensor] = []
    chunk = 64
    for c0 in range(0, T, chunk):
        forces = s[:, c0 : c0 + chunk, None] * b_kick  # [B, C, D]
        for j in range(forces.shape[1]):
            i = c0 + j
            if i >= start:  # the pressure at t_i, before the step
                if grad:
                    rec.append(z @ mic)
                else:
                    torch.mv(z, mic, out=out[i - start])
            acc = torch.addmm(forces[:, j], z, K_kick)  # kick * (b s_i - K z)
            if cubic:
                if grad:
                    acc = torch.cat([acc[:, :N], acc[:, N:] - beta_kick * z[:, N:] ** 3], 1)
                else:
                    acc[:, N:].addcmul_(beta_kick, z[:, N:].pow(3), value=-1.0)
            v_new = torch.addcmul(acc, v, decay)
            if states:
                es.append(_energy(z, v, ops["K"], beta))
                if i >= start:
                    zs.append(z)
                    vs.append(0.5 * (v + v_new))
                    fs.append(forces[:, j] / kick)
            v = v_new
            z = torch.add(z, v, alpha=h)
    pressure = torch.stack(rec) if grad else out
    if not states:
        return Steps(pressure)
    return Steps(pressure, torch.stack(zs), torch.stack(vs), torch.stack(fs), torch.stack(es))


def _run_leapfrog_fast(s: torch.Tensor, ops: dict[str, torch.Tensor], n_membranes: int, h: float, start: int) -> Steps:
    """The measurement path (no autograd, no recorded states): six tensor operations per step, in place.

    The loudspeaker enters as one more column of the state, ``[z | s_i]``, and one more row of the
    (kick-scaled) stiffness, ``[-kick K; kick b]``, so a single matrix product gives the whole kick.
    """
    B, T = s.shape
    kick, decay, mic = ops["kick"], ops["decay"], ops["mic"]
    D = kick.shape[0]
    N = D - n_membranes
    K_aug = torch.cat([-ops["K"] * kick[None, :], (ops["b"] * kick)[None, :]])  # [D + 1, D]
    beta_kick = ops["beta"][N:] * kick[N:]
    cubic = n_membranes > 0 and bool((beta_kick != 0).any())
    zs = s.new_zeros(B, D + 1)
    z, z_u, drive = zs[:, :D], zs[:, N:D], zs[:, D]
    v = s.new_zeros(B, D)
    s_t = s.T.contiguous()  # [T, B]: one contiguous row per step
    out = s.new_empty(T - start, B)
    for i in range(T):
        if i >= start:
            torch.mv(z, mic, out=out[i - start])
        drive.copy_(s_t[i])
        acc = torch.mm(zs, K_aug)
        if cubic:
            acc[:, N:].addcmul_(beta_kick, z_u.pow(3), value=-1.0)
        v = torch.addcmul(acc, v, decay)
        z.add_(v, alpha=h)
    return Steps(out)


def _run_euler(s: torch.Tensor, ops: dict[str, torch.Tensor], h: float, start: int, states: bool) -> Steps:
    """The previous loop, operation for operation (so that the benchmark times what main ran)."""
    K_neg, gamma, beta, b, mic = -ops["K"], ops["gamma"], ops["beta"], ops["b"], ops["mic"]
    inv_damp = 1.0 / (1.0 + h * gamma)
    B, n_steps = s.shape
    z = s.new_zeros(B, K_neg.shape[0])
    v = torch.zeros_like(z)
    grad = torch.is_grad_enabled() and s.requires_grad
    cubic = bool((beta != 0).any())
    rec: list[torch.Tensor] = []
    out = None if grad else s.new_empty(n_steps - start, B)
    zs, vs, fs, es = [], [], [], []
    for i in range(n_steps):
        force = torch.outer(s[:, i], b)
        acc = torch.addmm(force, z, K_neg)
        if cubic:
            acc = torch.addcmul(acc, beta, z * z * z, value=-1.0)
        v = torch.add(v, acc, alpha=h) * inv_damp
        z = torch.add(z, v, alpha=h)
        if states:
            es.append(_energy(z, v, ops["K"], beta))
        if i >= start:
            if grad:
                rec.append(z @ mic)
            else:
                torch.mv(z, mic, out=out[i - start])
            if states:
                zs.append(z)
                vs.append(v)
                fs.append(force)
    pressure = torch.stack(rec) if grad else out
    if not states:
        return Steps(pressure)
    return Steps(pressure, torch.stack(zs), torch.stack(vs), torch.stack(fs), torch.stack(es))


def _energy(z: torch.Tensor, v: torch.Tensor, K: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Total energy per row: kinetic + elastic + quartic (per unit modal mass, Pa^2/s^2)."""
    return 0.5 * (v * v).sum(1) + 0.5 * ((z @ K) * z).sum(1) + 0.25 * (beta * z**4).sum(1)
