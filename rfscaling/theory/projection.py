"""DMFT of the random-projection student: f(x) = w . A psi(x) / sqrt(N), A (N x M) i.i.d. N(0, 1).

The derivation is docs/theory.md section 9. Conditional on A the student is the aligned student of
sections 2-5 with feature covariance Sigma = A Lam A^T / N, target beta = Sigma^+ A Lam wstar / sqrt(N)
and the teacher part the features cannot express, tau^2, as frozen label noise (level 1, effective
ridge q). Averaging over A is a second deterministic equivalent of the same kind with N in the
role of P (level 2, effective ridge kappa). The two compose into one scalar equation

    z = q(kappa) (P - df1(kappa)),      q(kappa) = kappa (1 - df1(kappa) / N),

and every per-teacher-mode quantity is a closed function of kappa at the contour nodes plus, for the
bias, a two-time kernel with one geometric series per level (1 - Gamma1_12 and 1 - Gamma2_12).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from .dmft import Prediction, _blas_single_thread, _gram_full, _LazyModes, _window_sums
from .kappa import _compress_gauss, _mode_sums, kappa_at_zero
from .laplace import time_windows, unit_hyperbola

__all__ = ["predict_projected", "kappa_projected"]

_POLISH_TOL = 1e-8  # relative Newton step on the full spectrum below which kappa counts as polished


# ----------------------------------------------------------------------------- the effective ridge


def _level_terms(lam, w, n_eff, P, N, kappa):
    """(N - df1, P - df1, 1 - Gamma2, sum w lam A^2) at complex kappa (B,), each in the exact form
    without cancellation (as in kappa.py: P - sum a or (P - M) + sum b)."""
    m1, m2 = _mode_sums(lam, w, np.asarray(kappa, dtype=np.complex128), slope=True)
    sa, sb = m1[1], kappa * m1[0]                                    # sum a, sum b
    pick = np.abs(sa) <= np.abs(sb)
    n_m = np.where(pick, N - sa, (N - n_eff) + sb)
    p_m = np.where(pick, P - sa, (P - n_eff) + sb)
    sa2, sb2 = m2[2], kappa * (2.0 * m2[1] + kappa * m2[0])          # sum a^2, sum (1 - a^2)
    g2 = np.where(np.abs(sa2) <= np.abs(sb2), N - sa2, (N - n_eff) + sb2) / N
    return n_m, p_m, g2, m2[1]


def _newton_step(lam, w, n_eff, P, N, z, kappa):
    """One Newton step on z = q (P - df1); returns (new kappa, |step| / |kappa|)."""
    n_m, p_m, g2, l1 = _level_terms(lam, w, n_eff, P, N, kappa)
    q = kappa * n_m / N
    step = (q * p_m - z) / (g2 * p_m + q * l1)
    new = kappa - step
    return new, np.abs(step) / np.abs(new)


def kappa_zero(lam: np.ndarray, P: int, N: int, weights=None) -> float:
    """kappa(0+): the root of df1 = min(N, P) (0 if that is at least the number of modes)."""
    return kappa_at_zero(lam, min(int(N), int(P)), weights)


def kappa_projected(lam: np.ndarray, P: int, N: int, z, weights=None) -> np.ndarray:
    """kappa(z) for real z >= 0 on the physical branch kappa > kappa(0+), where z is increasing."""
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    w = np.ones_like(lam) if weights is None else weights
    n_eff = float(w.sum())
    k0 = kappa_zero(lam, P, N, weights)

    def f(u, zz):
        n_m, p_m, *_ = _level_terms(lam, w, n_eff, P, N, np.array([k0 + np.exp(u)]))
        return float(np.real((k0 + np.exp(u)) * n_m[0] / N * p_m[0])) - zz

    out = np.empty_like(z)
    for i, zz in enumerate(z):
        if zz <= 0:
            out[i] = k0
            continue
        lo, hi = -690.0, np.log(zz / P + lam.sum() + k0 + 1.0)   # z(k0 + e^-690) ~ 0 < zz
        while f(hi, zz) < 0:
            hi += 5.0
        out[i] = k0 + np.exp(brentq(lambda u: f(u, zz), lo, hi, xtol=1e-14, rtol=1e-15, maxiter=500))
    return out


def _continue(lam, w, n_eff, P, N, zfun, th0, th1, kappa, depth=0):
    """Follow the physical root from contour parameter th0 to th1 (arrays over scales)."""
    z = zfun(th1)
    k = kappa.copy()
    ok = np.zeros(k.shape, dtype=bool)
    for _ in range(12):
        k, rel = _newton_step(lam, w, n_eff, P, N, z, k)
        ok = rel < 1e-12
        if ok.all():
            break
    bad = ~ok | ~np.isfinite(k)
    if bad.any():
        if depth > 14:
            raise FloatingPointError("effective-ridge continuation did not converge")
        mid = 0.5 * (th0 + th1)
        zb = lambda th: zfun(th)[bad]  # noqa: E731
        k_mid = _continue(lam, w, n_eff, P, N, zb, th0, mid, kappa[bad], depth + 1)
        k[bad] = _continue(lam, w, n_eff, P, N, zb, mid, th1, k_mid, depth + 1)
    return k


def _kappa_contour(lam, P, N, wd, sigma, thetas, scales):
    """kappa at z = wd + scale_j sigma(theta_m): continuation on a Gauss-compressed spectrum from
    the real vertex, then Newton polish on the full spectrum. Returns (kappa (J, M), last rel step)."""
    lam_c, w_c = _compress_gauss(lam, per_decade=48, points=3)
    w_c = np.ones_like(lam_c) if w_c is None else w_c
    n_eff = float(lam.size)
    z0 = wd + scales * float(np.real(sigma(0.0)))
    kappa = kappa_projected(lam_c, P, N, z0, w_c).astype(np.complex128)
    out = np.empty((scales.size, thetas.size), dtype=np.complex128)
    zfun = lambda th: wd + scales * sigma(th)  # noqa: E731
    th_prev = 0.0
    for m, th in enumerate(thetas):
        kappa = _continue(lam_c, w_c, n_eff, P, N, zfun, th_prev, th, kappa)
        out[:, m] = kappa
        th_prev = th
    z = (wd + scales[:, None] * sigma(thetas)[None, :]).ravel()
    k = out.ravel()
    ones = np.ones_like(lam)
    rel = np.ones(k.shape)
    todo = np.ones(k.shape, dtype=bool)
    for _ in range(8):
        k[todo], rel[todo] = _newton_step(lam, ones, n_eff, P, N, z[todo], k[todo])
        todo = rel > _POLISH_TOL
        if not todo.any():
            break
    return k.reshape(out.shape), rel.reshape(out.shape)


# ----------------------------------------------------------------------------- closed forms


def _tail(lam, lw, N):
    """tau^2 = sum_k lam_k W_k b_k(kappa_N): the teacher power outside the span of the N features
    (kappa_N solves df1 = N; 0 when N >= M), and A_k(kappa_N) = 1/(kappa_N + lam_k)."""
    kN = kappa_at_zero(lam, int(N))
    return float(np.sum(lw * kN / (kN + lam))), kN, 1.0 / (kN + lam)


def _real_terms(lam, P, N, kappa):
    n_m, p_m, g2, l1 = _level_terms(lam, np.ones_like(lam), float(lam.size), P, N, np.array([kappa]))
    return float(np.real(n_m[0])), float(np.real(p_m[0])), float(np.real(g2[0])), float(np.real(l1[0]))


def _limit_infinity(lam, lw, P, N, lab, wd, T, s0, tau2, AN):
    """Per-mode components and train parts at t = inf (docs/theory.md section 9.4)."""
    M = lam.size
    kappa = float(kappa_projected(lam, P, N, np.array([wd]))[0])
    A = 1.0 / (kappa + lam)
    b = kappa * A
    n_m, p_m, g2, l1 = _real_terms(lam, P, N, kappa)
    if wd == 0:  # the factor of z = q (P - df1) that vanishes at kappa(0+) is exactly 0
        p_m = 0.0 if P <= min(N, M) else p_m
        n_m = 0.0 if N <= min(P, M) else n_m
    q = kappa * n_m / N
    q_g2 = 0.0 if kappa == 0 else q / g2          # q / (1 - Gamma2); 0 when kappa = 0 (N = M ok)
    gl2, glw, gllw = np.sum(lam**2 * A**2), np.sum(lw * A**2), np.sum(lam * lw * A**2)
    if kappa > 0:
        omega = kappa**2 * (glw + l1 * gllw / (N * g2))
        pg1 = gl2 + kappa**2 * l1**2 / (N * g2)
    else:
        omega, pg1 = 0.0, gl2
    peak = wd == 0 and N == P < M     # both factors of z vanish: 0/0 here, the divergence is carried
    with np.errstate(invalid="ignore", divide="ignore"):  # by the label shape (frozen tail + noise)
        Q = (omega - tau2) / (P - pg1) if (omega != tau2 and not peak) else 0.0
        R = 0.0 if kappa == 0 else (gllw + Q * l1) / (N * g2)
        bias = lam * b * b * (lw / lam + R) + lam**2 * A**2 * Q
        dz = np.float64(p_m + q_g2 * l1)               # (dz/dkappa) / (1 - Gamma2)
        var_lab = lab * lam * (A - q_g2 * A**2) / dz if lab > 0 else np.zeros(M)
        pinned = wd == 0 and P <= min(N, M)            # P - df1 = 0: data null space in teacher space
        if T == 0:
            var_lan = np.zeros(M)
        elif pinned:
            var_lan = np.full(M, np.inf)
        else:
            var_lan = T * lam * A / p_m
        var_init = s0 * lam * q * A if (wd == 0 and P < min(N, M)) else np.zeros(M)
        # train error: derivatives in z of TB = Nu/De and of sum_D = (N - df1)/z (section 9.4)
        dk_dz = np.float64(1.0) / (g2 * dz) if g2 > 0 else 0.0
        if wd > 0:
            nu, de = np.sum(lw * lam * A * AN), 1.0 - np.sum(lam**2 * A * AN) / N
            dnu, dde = -np.sum(lw * lam * A**2 * AN), np.sum(lam**2 * A**2 * AN) / N
            tr_bias = -(wd**2 / P) * (dnu * de - nu * dde) / de**2 * dk_dz
            tr_lab = lab * ((P - N) - wd**2 * (l1 * dk_dz / wd - n_m / wd**2)) / P
        else:
            tr_bias = 0.0
            tr_lab = lab * ((P - N) + n_m) / P
        tr_noise = T * (M - np.sum(b)) / P if T > 0 else 0.0
    gamma = pg1 / P
    return dict(bias=bias, lab=var_lab, lan=var_lan, init=var_init, tr_bias=float(tr_bias),
                tr_lab=float(tr_lab), tr_noise=float(tr_noise), response=b), kappa, gamma


def _limit_zero(lam, lw, lab, s0, tau2):
    M = lam.size  # train: the tail tau^2 is counted in tr_lab (lab includes it) and moved to bias later
    return dict(bias=lw.copy(), lab=np.zeros(M), lan=np.zeros(M), init=s0 * lam,
                tr_bias=float(np.sum(lw)) - tau2, tr_lab=lab, tr_noise=s0 * float(lam.sum()),
                response=np.ones(M))


# ----------------------------------------------------------------------------- contour windows


def _cancel_free(a, b, big, n_eff):
    """big - a, or (big - n_eff) + b: the same number, take the form without cancellation."""
    return np.where(np.abs(a) <= np.abs(b), big - a, (big - n_eff) + b)


class _Ctx:
    """What every window needs: spectrum, sizes, noise levels, the tail tau^2 and A(kappa_N)."""

    def __init__(self, lam, lw, P, N, lab, wd, T, s0, tau2, kN, AN):
        self.lam, self.lw, self.P, self.N, self.lab = lam, lw, P, N, lab
        self.wd, self.T, self.s0, self.tau2, self.kN, self.AN = wd, T, s0, tau2, kN, AN


_ONE, _LAM, _LAM2, _LW, _LLW, _TBN, _TBD, _AN, _LAN = range(9)


def _window(c: _Ctx, s, w, k1, k2, tg, idx, tot):
    """Totals for the times tg of one contour window (docs/theory.md section 9.3); returns what
    the per-mode arrays of these times need later (:func:`_window_modes`)."""
    lam, P, N, M, wd = c.lam, c.P, c.N, c.lam.size, c.wd
    z1, z2 = wd + s, wd + 0.5 * s
    ker = 2.0 * w[:, None] * np.exp(s[:, None] * tg[None, :])              # (n, Tg)
    inv = lambda F: np.real(F @ ker)                                         # noqa: E731
    V = np.stack([np.ones(M), lam, lam**2, c.lw, lam * c.lw, lam * c.lw * c.AN, lam**2 * c.AN,
                  c.AN, lam * c.AN])
    m1, m2, m12, grams = _window_sums(lam, V, k1, k2, [lam**2, lam, c.lw, lam * c.lw])
    m1, m2, m12 = m1.T, m2.T, m12.T                                          # (n, 9)
    nm1 = _cancel_free(m1[:, _LAM], k1 * m1[:, _ONE], N, M)                  # N - df1(k1)
    nm2 = _cancel_free(m2[:, _LAM], k2 * m2[:, _ONE], N, M)
    pm2 = _cancel_free(m2[:, _LAM], k2 * m2[:, _ONE], P, M)                  # P - df1(k2)
    q1 = k1 * nm1 / N
    g2d = _cancel_free(m12[:, _LAM2], k1 * k2 * m12[:, _ONE] + (k1 + k2) * m12[:, _LAM], N, M) / N
    dk = (-0.5 * s) / (g2d * pm2 + q1 * m12[:, _LAM])                       # k2 - k1, exact
    # label-noise shape: sum_k [c_k(z2) - c_k(z1)], c_k = lam_k (1 - q A_k)
    dc = -dk * (g2d * m2[:, _LAM] - q1 * m12[:, _LAM])
    tot["lab"][idx] = inv(c.lab * (2.0 / s**2) * dc)
    tot["lan"][idx] = inv(c.T * m2[:, _LAM] / (pm2 * s))
    tot["init"][idx] = inv(0.5 * c.s0 * m2[:, _LAM] / pm2)
    # train error (level-1 table of section 4 with the level-2 traces of section 9.3)
    de1 = _cancel_free(m1[:, _TBD], c.kN * k1 * m1[:, _AN] + (k1 + c.kN) * m1[:, _LAN], N, M) / N
    de2 = _cancel_free(m2[:, _TBD], c.kN * k2 * m2[:, _AN] + (k2 + c.kN) * m2[:, _LAN], N, M) / N
    nu1, nu2 = m1[:, _TBN], m2[:, _TBN]
    d_tb = -dk * m12[:, _TBN] / de2 - nu1 * (dk * m12[:, _TBD] / N) / (de1 * de2)
    cw = 2.0 * wd * z1 / s**2
    tot["tr_bias"][idx] = inv((0.5 * nu2 / de2 + cw * d_tb) / P)
    d_sd = dk * m12[:, _LAM] / z2 + nm1 * (0.5 * s) / (z1 * z2)
    tot["tr_lab"][idx] = inv(c.lab * (0.5 * nm2 / z2 + cw * d_sd) / P) + c.lab * (P - N) / P
    tot["tr_noise"][idx] = inv((c.T / s + 0.5 * c.s0) * m2[:, _LAM] / P)

    # two-time bias on the full contour (z = wd + s at both times)
    kf = np.concatenate([k1, np.conj(k1)])
    sf = np.concatenate([s, np.conj(s)])
    wf = np.concatenate([w, np.conj(w)])
    gl2, gl1, glw, gllw = (_gram_full(G) for G in grams)
    one_m_g2 = (N - gl2) / N
    if np.any(np.abs(N - gl2) < 1e-5 * np.abs(gl2)):                         # N ~ M, kappa -> 0
        *_, (G0,) = _window_sums(lam, V[:1], k1, k2, [np.ones(M)])
        gb = _gram_full(G0) * np.outer(kf, kf) + gl1 * (kf[:, None] + kf[None, :])
        one_m_g2 = np.where(np.abs(gl2) <= np.abs(gb), N - gl2, (N - M) + gb) / N
    KK = np.outer(kf, kf)
    omega = KK * (glw + gl1 * gllw / (N * one_m_g2))
    p_g1 = gl2 + KK * gl1**2 / (N * one_m_g2)
    Q = (omega - c.tau2) / (P - p_g1)                                        # level-1 noise power
    R = (gllw + Q * gl1) / (N * one_m_g2)                                    # level-2 noise power
    ef = wf[:, None] * np.exp(sf[:, None] * tg[None, :]) / sf[:, None]       # (2n, Tg)
    tot["bias"][idx] = np.real(np.einsum("mt,mk,kt->t", ef, P * Q, ef)) + c.tau2
    return dict(idx=idx, s=s, k1=k1, k2=k2, dk=dk, g2d=g2d, q1=q1, pm2=pm2, kf=kf, Q=Q, R=R,
                ef=ef, ker=ker)


def _window_modes(c: _Ctx, win: dict, mode: dict) -> None:
    """Per-teacher-mode arrays for the times of one window (section 9.3)."""
    lam, s, k1, k2, idx = c.lam, win["s"], win["k1"], win["k2"], win["idx"]
    inv = lambda F: np.real(F @ win["ker"])                                  # noqa: E731
    A1 = 1.0 / (k1[None, :] + lam[:, None])                                  # (M, n)
    A2 = 1.0 / (k2[None, :] + lam[:, None])
    lc = lam[:, None]
    F = {
        "lab": -c.lab * lc * (2.0 / s**2) * win["dk"] * (win["g2d"] * A2 - win["q1"] * A1 * A2),
        "lan": c.T * lc * A2 / (win["pm2"] * s),
        "init": 0.5 * c.s0 * lc * A2 / win["pm2"],
        "response": k1[None, :] * A1 / s,
    }
    for key, Fk in F.items():
        mode[key][idx] = inv(Fk).T
    # quadratic forms over the full contour [s, conj(s)] from the upper half alone: the kernels
    # satisfy K(conj a, conj b) = conj K(a, b), so y^T K y = 2 Re[y^T K_uu y + y^T K_ul conj(y)]
    # = 2 sum_l [Re(y K+)_l Re y_l + Im(y K-)_l Im y_l] with K+ = K_uu + K_ul, K- = K_ul - K_uu
    n = s.size
    kern = [(K[:n, :n] + K[:n, n:], K[:n, n:] - K[:n, :n]) for K in (win["R"], win["Q"])]
    Bu = k1[None, :] * A1                                                    # z = wd + s: kappa = k1
    dot = lambda a, b: np.einsum("ij,ij->i", a, b)                          # noqa: E731

    def quad(y, K):
        return 2.0 * (dot((y @ K[0]).real, y.real) + dot((y @ K[1]).imag, y.imag))

    for j, i in enumerate(idx):
        e = win["ef"][None, :n, j]
        y, x = Bu * e, A1 * e
        beta = 2.0 * y.real.sum(axis=1)
        mode["bias"][i] = c.lw * beta**2 + lam * quad(y, kern[0]) + lam**2 * quad(x, kern[1])


# ----------------------------------------------------------------------------- the engine


_COMPONENTS = ("bias", "lab", "lan", "init", "response")


def predict_projected(lam, w2, P, N, t, label_noise, wd, T, s0, quadrature_nodes) -> Prediction:
    """The finite-N random-projection student; inputs validated by :func:`rfscaling.theory.predict`.

    Per-mode arrays are over the M teacher modes and sum to E_g (no tail_power: all modes are in).
    """
    with _blas_single_thread():
        return _predict(lam, w2, P, N, t, label_noise, wd, T, s0, quadrature_nodes)


def _predict(lam, w2, P, N, t, label_noise, wd, T, s0, quadrature_nodes) -> Prediction:
    lw = lam * w2
    tau2, kN, AN = _tail(lam, lw, N)
    lab = label_noise + tau2          # the inexpressible teacher part acts on the labels like noise
    f_tail = tau2 / lab if lab > 0 else 0.0
    c = _Ctx(lam, lw, P, N, lab, wd, T, s0, tau2, kN, AN)
    nT = t.size
    tot = {k: np.zeros(nT) for k in ("bias", "lab", "lan", "init", "tr_bias", "tr_lab", "tr_noise")}
    inf_d, kappa_inf, gamma_inf = _limit_infinity(lam, lw, P, N, lab, wd, T, s0, tau2, AN)
    zero_d = _limit_zero(lam, lw, lab, s0, tau2)
    inf_idx, zero_idx = np.flatnonzero(np.isinf(t)), np.flatnonzero(t == 0)
    for rows, d in ((inf_idx, inf_d), (zero_idx, zero_d)):
        for i in rows:
            for k in ("bias", "lab", "lan", "init"):
                tot[k][i] = np.sum(d[k])
            for k in ("tr_bias", "tr_lab", "tr_noise"):
                tot[k][i] = d[k]
    finite = np.flatnonzero(np.isfinite(t) & (t > 0))
    max_resid, windows = 0.0, []
    if finite.size:
        groups = [finite[g] for g in time_windows(t[finite])]
        t0s = np.array([t[g].min() for g in groups])
        sigma, thetas, w_unit = unit_hyperbola(quadrature_nodes)
        K, resid = _kappa_contour(lam, P, N, wd, sigma, thetas, np.concatenate([1.0 / t0s, 0.5 / t0s]))
        max_resid = float(resid.max())
        sig, G = sigma(thetas), len(groups)
        for g, idx in enumerate(groups):
            windows.append(_window(c, sig / t0s[g], w_unit / t0s[g], K[g], K[G + g], t[idx], idx, tot))
    with np.errstate(invalid="ignore"):
        bias = tot["bias"] + (f_tail * tot["lab"] if tau2 > 0 else 0.0)
        # (1 - f_tail) exactly 0 without label noise: 0 * inf at the interpolation peak stays 0
        keep = (lambda x: (1.0 - f_tail) * x) if f_tail < 1 else np.zeros_like  # noqa: E731
        lab_v, lan_v, init_v = keep(tot["lab"]), tot["lan"], tot["init"]
        variance = lab_v + lan_v + init_v
        train_bias = tot["tr_bias"] + (f_tail * tot["tr_lab"] if tau2 > 0 else 0.0)
        train_var = keep(tot["tr_lab"]) + tot["tr_noise"]
    eg = bias + variance
    ok = bool(max_resid < 1e-6) and not np.any(np.isnan(eg))
    msg = ("converged" if ok else
           f"effective-ridge solve residual {max_resid:.2e} (or NaN output); results may be inaccurate")
    modes = _ProjectedModes(c, nT, [(inf_idx, inf_d), (zero_idx, zero_d)], windows, f_tail)
    return Prediction(
        times=t, generalization_error=eg, bias=bias, variance=variance,
        variance_label_noise=lab_v, variance_langevin=lan_v, variance_init=init_v,
        train_error=train_bias + train_var, train_bias=train_bias, train_variance=train_var,
        eigenvalues=lam, target_second_moment=w2, n_samples=P, label_noise=label_noise,
        tail_power=0.0, weight_decay=wd, temperature=T, init_variance=s0,
        effective_ridge=kappa_inf, degrees_of_freedom=float(np.sum(lam / (kappa_inf + lam))),
        gamma=gamma_inf, success=ok, message=msg, max_residual=max_resid, _modes=modes,
        n_features=int(N), projection_tail=tau2,
    )


class _ProjectedModes(_LazyModes):
    """Lazy per-teacher-mode arrays (same interface as dmft._ModeArrays: ``get(key)``)."""

    def __init__(self, ctx: _Ctx, n_times: int, rows, windows, f_tail: float):
        self.ctx, self.n_times, self.rows, self.windows, self.f_tail = ctx, n_times, rows, windows, f_tail
        self.cache: dict[str, np.ndarray] = {}


    def compute(self) -> dict[str, np.ndarray]:
        mode = {k: np.zeros((self.n_times, self.ctx.lam.size)) for k in _COMPONENTS}
        for idx, d in self.rows:                                             # t = inf and t = 0
            for i in idx:
                for k in _COMPONENTS:
                    mode[k][i] = d[k]
        for win in self.windows:
            _window_modes(self.ctx, win, mode)
        if self.ctx.tau2 > 0:                    # the tail's share of the label shape is bias
            mode["bias"] = mode["bias"] + self.f_tail * mode["lab"]
            mode["lab"] = (1.0 - self.f_tail) * mode["lab"] if self.f_tail < 1 else np.zeros_like(mode["lab"])
        mode["variance"] = mode["lab"] + mode["lan"] + mode["init"]
        mode["error"] = mode["bias"] + mode["variance"]
        return mode
