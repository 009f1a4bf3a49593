"""Typical-case DMFT of discrete-time gradient descent: full-batch steps of size eta (learning rate),
with weight decay, label noise, initial-weight variance and Euler-Maruyama Langevin noise (SGLD).

The derivation is in docs/theory.md, section 10. In short: after n steps every quantity is a
polynomial in the data Hessian H, built from p_n(h) = (1 - eta h)^n. Its z-transform in steps,
eta sum_m p_m x^-m = x / (sigma(x) + h) with sigma(x) = (x - 1)/eta, is a resolvent of H at
z = weight_decay + sigma(x), so the deterministic equivalent kappa(z) of the continuous engine
applies unchanged; x^n = e^{u t} with x = e^{eta u}, t = n eta, turns the inversion into a
Bromwich integral in u on the same hyperbolas (modes with 1 - eta h > 0), plus a second one with
x = -e^{eta u} for modes that oscillate (1 - eta h < 0), weighted by (-1)^n. Squares of
p_n are p_2n (the second node set, x2 = +-e^{eta u / 2}, as z2 = s/2 in continuous time), and
the two-time bias uses the same kernel E_12 / (1 - Gamma_12) as in continuous time. The first
few steps (n < _N_HYPERBOLA) use a circle |x| = _R_CIRCLE (plain Cauchy integral).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from .dmft import Prediction, _gram_full, _LazyModes, _limit_infinity, _limit_zero, _validate, _window_sums
from .kappa import _compress_gauss, _kappa_real_monotone, kappa_on_path
from .laplace import time_windows, unit_hyperbola

__all__ = ["predict_discrete"]

_N_HYPERBOLA = 8      # steps from which the hyperbola contours are used (their nodes stay in |Im u| < pi/eta)
_R_CIRCLE = 1.6       # radius of the x-circle for n < _N_HYPERBOLA: growth R^(2n) <= 720
_M_CIRCLE = 40        # nodes on the upper half circle: aliasing R^(-80) ~ 5e-17
_NEGLIGIBLE = 1e-18   # oscillating modes are skipped when (eta h_edge - 1)^n is below this


def _steps(t: np.ndarray, eta: float) -> np.ndarray:
    """Step counts n = t / eta (inf stays inf); a t that is not a multiple of eta is an error."""
    fin = np.isfinite(t)
    n = np.full(t.shape, np.inf)
    n[fin] = np.round(t[fin] / eta)
    bad = np.zeros(t.shape, bool)
    bad[fin] = np.abs(t[fin] / eta - n[fin]) > 1e-9 * np.maximum(1.0, n[fin])
    if np.any(bad):
        tb = t[bad][0]
        raise ValueError(f"times: t={tb!r} is not a multiple of learning_rate={eta!r} "
                         f"(t / learning_rate = {tb / eta!r}); the prediction after n steps is at t = n eta")
    return n


def _kappa_outer(lam, w, P, z):
    """Real kappa(z) on the branch beyond the top of the spectrum (z below -x_max): the root of
    z = kappa (P - df1(kappa)) with kappa < kappa_u, where z(kappa) increases (kappa_u < -lam_1 is
    the edge, sum_k w_k lam_k^2/(lam_k + kappa_u)^2 = P)."""
    w = np.ones_like(lam) if w is None else w
    l1 = float(lam.max())
    g = lambda v: float(np.sum(w * (lam / (lam - l1 - np.exp(v))) ** 2)) - P  # noqa: E731 (decreasing)
    lo, hi = np.log(l1) - 60.0, np.log(l1) + 5.0
    while g(hi) > 0:
        hi += 5.0
    ku = -l1 - np.exp(brentq(g, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500))
    out = np.empty(np.size(z))
    for i, zi in enumerate(np.atleast_1d(z)):
        f = lambda k: k * (P - float(np.sum(w * lam / (lam + k)))) - zi  # noqa: E731
        lo = min(ku, (zi + float(np.sum(w * lam))) / P) * 2.0 - 1.0
        while f(lo) > 0:
            lo *= 2.0
        out[i] = brentq(f, lo, ku, xtol=1e-300, rtol=1e-15, maxiter=500)
    return out


@dataclass(frozen=True)
class _Group:
    """Nodes of one group of times (docs/theory.md 10.4): upper-half nodes as d = x - 1 (kept
    without the cancellation of x - 1 near x = 1) of frame 1 (index n) and frame 2 (index 2n),
    kappa there, the stable-form mask (the +e^{eta u} hyperbola), the inversion weights W1, W2
    (J, Tg) (a_n = 2 Re sum_j W_j F_j), the two-time kernel Q."""

    idx: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    k1: np.ndarray
    k2: np.ndarray
    dk: np.ndarray
    stable: np.ndarray
    W1: np.ndarray
    W2: np.ndarray
    Q: np.ndarray


def _hyperbola_nodes(t0s, eta, need_b, quadrature_nodes):
    """Per window: the u-hyperbola of the continuous engine mapped to x = +-e^{eta u} (frame 1) and
    x2 = +-e^{eta u / 2} (frame 2). Returns (paths, per-window list of (rows, sign, u, w))."""
    sig, thetas, w_unit = unit_hyperbola(quadrature_nodes)
    rows, specs = 0, []
    for g, t0 in enumerate(t0s):
        loops = [1.0] + ([-1.0] if need_b[g] else [])
        specs.append([(rows + 2 * i, sgn, t0) for i, sgn in enumerate(loops)])
        rows += 2 * len(loops)
    J = rows
    sgn = np.empty(J)
    scale = np.empty(J)                                   # eta u = scale * sigma(theta)
    for sp in specs:
        for r, s_, t0 in sp:
            sgn[r:r + 2] = s_
            scale[r] = eta / t0
            scale[r + 1] = 0.5 * eta / t0

    def xfun(th):
        e = scale * sig(th)
        return np.where(sgn > 0, np.expm1(e), -np.exp(e) - 1.0)   # x - 1, without cancellation

    return xfun, thetas, w_unit, sig, specs


def _solve_paths(lam, P, wd, eta, xm1fun, thetas):
    """kappa at z = wd + (x - 1)/eta along the node paths (x - 1 = xm1fun(theta), (J,)), from
    theta = 0 where z is real: on the physical branch (z >= 0) or beyond the spectrum (z < 0)."""
    z0 = wd + np.real(xm1fun(0.0)) / eta
    lam_c, w_c = _compress_gauss(lam, per_decade=48, points=3)
    k0 = np.empty(z0.size)
    pos = z0 >= 0
    if pos.any():
        k0[pos] = _kappa_real_monotone(lam_c, w_c, P, z0[pos])
    if (~pos).any():
        k0[~pos] = _kappa_outer(lam_c, w_c, P, z0[~pos])
    zfun = lambda th: wd + xm1fun(th) / eta  # noqa: E731
    return kappa_on_path(lam, P, zfun, thetas, k0)


def predict_discrete(eigenvalues, target_second_moment, n_samples, times, label_noise, weight_decay,
                     temperature, init_variance, tail_power, quadrature_nodes, learning_rate,
                     momentum) -> Prediction:
    """The discrete-time engine behind ``predict(..., learning_rate=eta)`` (see its docstring)."""
    lam, w2, P, t, sc = _validate(eigenvalues, target_second_moment, n_samples, times,
                                  label_noise=label_noise, weight_decay=weight_decay,
                                  temperature=temperature, init_variance=init_variance,
                                  tail_power=tail_power)
    if np.ndim(learning_rate) > 0:
        raise ValueError("learning_rate: a schedule (array of per-step rates) is not implemented in the "
                         "discrete-time engine (docs/theory.md, section 10.6); give one step size")
    try:
        eta = float(learning_rate)
    except (TypeError, ValueError):
        raise ValueError(f"learning_rate={learning_rate!r}: must be a number > 0") from None
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"learning_rate={learning_rate!r}: must be a finite number > 0")
    if momentum != 0:
        raise ValueError(f"momentum={momentum!r}: the discrete-time engine supports only momentum = 0 "
                         "so far (docs/theory.md, section 10.6)")
    wd, T, s0, tail = sc["weight_decay"], sc["temperature"], sc["init_variance"], sc["tail_power"]
    from .frontier import top_edge
    h_edge = top_edge(lam, P, wd)
    if eta * h_edge >= 2.0:
        raise ValueError(f"learning_rate={eta!r}: unstable, learning_rate * lambda_edge = {eta * h_edge:.6g} "
                         f">= 2 (lambda_edge = {h_edge:.6g}, the top of the typical spectrum of the Hessian)")
    n = _steps(t, eta)
    return _assemble(lam, w2, P, t, n, sc, eta, h_edge, quadrature_nodes)


def _groups(lam, P, wd, eta, h_edge, t, n, quadrature_nodes):
    """Node groups (:class:`_Group` without weights/kernel yet) for the finite times n >= 1:
    one circle for n < _N_HYPERBOLA, one hyperbola window per decade of time beyond."""
    out = []
    small = np.flatnonzero(np.isfinite(n) & (n >= 1) & (n < _N_HYPERBOLA))
    if small.size:
        th = (np.arange(_M_CIRCLE) + 0.5) * np.pi / _M_CIRCLE
        xm1fun = lambda a: np.atleast_1d(_R_CIRCLE * np.exp(1j * np.asarray(a)) - 1.0)  # noqa: E731
        K, resid = _solve_paths(lam, P, wd, eta, xm1fun, th)
        x = _R_CIRCLE * np.exp(1j * th)
        nn = n[small]
        W1 = x[:, None] ** nn[None, :] / (2 * _M_CIRCLE * eta)
        W2 = x[:, None] ** (2 * nn)[None, :] / (2 * _M_CIRCLE * eta)
        out.append((small, x - 1.0, x - 1.0, K[0], K[0], np.zeros(x.size, bool), W1, W2, float(resid.max())))
    large = np.flatnonzero(np.isfinite(n) & (n >= _N_HYPERBOLA))
    if not large.size:
        return out
    wins = [large[g] for g in time_windows(t[large])]
    t0s = np.array([t[g].min() for g in wins])
    osc = eta * h_edge - 1.0       # |1 - eta h| of the fastest oscillating mode (if > 0)
    need_b = [osc > 0 and osc ** float(n[g].min()) > _NEGLIGIBLE for g in wins]
    xm1fun, thetas, w_unit, sig, specs = _hyperbola_nodes(t0s, eta, need_b, quadrature_nodes)
    K, resid = _solve_paths(lam, P, wd, eta, xm1fun, thetas)
    XM1 = np.stack([xm1fun(th) for th in thetas], axis=1)                     # (rows, n)
    for idx, t0, sp in zip(wins, t0s, specs):
        tg, ng = t[idx], n[idx]
        u, w = sig(thetas) / t0, w_unit / t0
        E = w[:, None] * np.exp(u[:, None] * tg[None, :])                   # (nodes, Tg)
        parts = []
        for r, sgn, _ in sp:
            W1 = E * (sgn ** ng)[None, :]
            parts.append((XM1[r], XM1[r + 1], K[r], K[r + 1],
                          np.full(u.size, sgn > 0), W1, 0.5 * E))
        d1, d2, k1, k2, st, W1, W2 = (np.concatenate(c) for c in zip(*parts))
        rows = [r for r, _, _ in sp]
        res = float(max(resid[r:r + 2].max() for r in rows))
        out.append((idx, d1, d2, k1, k2, st, W1, W2, res))
    return out


_ONE, _LAM, _LAM2, _LW = range(4)


def _two_time_kernel(lam, V, P, kf, E12, M2, k1, k2):
    """Q_12 = E_12 / (1 - Gamma_12) on the full node set (as in the continuous engine)."""
    N = lam.size
    E12, M2 = _gram_full(E12), _gram_full(M2)
    one_m_G = (P - M2) / P
    if np.any(np.abs(P - M2) < 1e-5 * np.abs(M2)):   # P ~ N, kappa -> 0: the complementary form
        *_, (M0, M1) = _window_sums(lam, V[:1], k1, k2, [np.ones(N), lam])
        M0, M1 = _gram_full(M0), _gram_full(M1)
        G_b = M0 * np.outer(kf, kf) + M1 * (kf[:, None] + kf[None, :])
        one_m_G = np.where(np.abs(M2) <= np.abs(G_b), P - M2, (P - N) + G_b) / P
    return E12 / one_m_G


def _frames(d1, d2, wd, eta, stable, one_m_gam):
    """x, sigma, z of both frames (from d = x - 1) and k2 - k1 (exact divided difference)."""
    x1, x2, s1, s2 = 1.0 + d1, 1.0 + d2, d1 / eta, d2 / eta
    dz = np.where(stable, -x2 * s2, s2 - s1)            # z2 - z1; = -x2 sigma2 when x1 = x2^2
    return x1, x2, s1, s2, wd + s1, wd + s2, dz / one_m_gam


def _transforms(c, A1, A2, A12, x1, x2, s1, s2, z1, z2, k1, k2, dk, stable, eta):
    """Frame-1 and frame-2 transforms (F1, F2) of the per-mode (or, given mode sums, total) error
    components, docs/theory.md 10.3. A1(j), A2(j), A12(j): lam^j / (kappa + lam) at kappa1, kappa2
    and lam^j A1 A2, per mode or summed over modes; c["De"]: lam D(z_e), per mode or summed."""
    K = eta**2 * x2 / (x2 + 1.0) ** 2                  # x2/s2^2 - 4 x1/s1^2 on the stable loop
    lab, wd, T, s0, De = c["lab"], c["wd"], c["T"], c["s0"], c["De"]
    zero = np.zeros_like(x1)
    F1, F2 = {}, {}
    F1["response"] = x1 * k1 * A1(0) / s1
    lab_st = (x2 / s2**2) * (-dk * A12(2)) + A1(2) * K
    F1["lab"] = lab * np.where(stable, zero, -2.0 * x1 * A1(2) / s1**2)
    F2["lab"] = lab * np.where(stable, lab_st, x2 * A2(2) / s2**2)
    lan_f = 2.0 * T * x2 / (s2 * (1.0 + x2))
    F2["lan"] = lan_f * (k2 * A2(1) / z2 - De)
    F2["init"] = s0 * x2 * k2 * A2(1) / z2
    return F1, F2, lan_f, K


def _assemble(lam, w2, P, t, n, sc, eta, h_edge, quadrature_nodes) -> Prediction:
    wd, T, s0, tail = sc["weight_decay"], sc["temperature"], sc["init_variance"], sc["tail_power"]
    lab = sc["label_noise"] + tail
    f_tail = tail / lab if lab > 0 else 0.0
    N, nT, lw = lam.size, t.size, lam * w2
    # Langevin: the stationary law of SGLD needs kappa at z_e = wd - 2/eta (h = 2/eta, beyond the spectrum)
    z_e = wd - 2.0 / eta
    k_e = float(_kappa_outer(lam, None, P, np.array([z_e]))[0]) if T > 0 else -np.inf
    De = k_e / (z_e * (k_e + lam)) if T > 0 else np.zeros(N)
    S_e = float(np.sum(lam * De))
    S_ae = float(np.sum(lam / (lam + k_e))) if T > 0 else 0.0
    tot = {c: np.zeros(nT) for c in ("bias", "lab", "lan", "init", "tr_bias", "tr_lab", "tr_noise")}
    inf_d, kappa_inf, gamma_inf = _limit_infinity(lam, w2, P, lab, wd, T, s0)
    if T > 0:   # discrete stationary covariance T (1/h + eta/(2 - eta h)) instead of T/h
        with np.errstate(invalid="ignore"):
            inf_d["lan"] = inf_d["lan"] - T * lam * De
        inf_d["tr_noise"] = inf_d["tr_noise"] - T * S_ae / P
    zero_d = _limit_zero(lam, w2, P, lab, s0)
    inf_idx, zero_idx = np.flatnonzero(np.isinf(t)), np.flatnonzero(t == 0)
    for rows, d in ((inf_idx, inf_d), (zero_idx, zero_d)):
        for c in ("bias", "lab", "lan", "init"):
            tot[c][rows] = np.sum(d[c])
        for c in ("tr_bias", "tr_lab", "tr_noise"):
            tot[c][rows] = d[c]
    consts = dict(lab=lab, wd=wd, T=T, s0=s0, De=S_e)
    V = np.stack([np.ones(N), lam, lam**2, lw])
    groups, max_resid = [], 0.0
    for idx, d1, d2, k1, k2, st, W1, W2, res in _groups(lam, P, wd, eta, h_edge, t, n, quadrature_nodes):
        max_resid = max(max_resid, res)
        m1, m2, m12, (E12, M2) = _window_sums(lam, V, k1, k2, [lw / P, lam**2])
        g_a = m12[_LAM2]
        g_b = k1 * k2 * m12[_ONE] + (k1 + k2) * m12[_LAM]
        one_m_gam = np.where(np.abs(g_a) <= np.abs(g_b), P - g_a, (P - N) + g_b)
        x1, x2, s1, s2, z1, z2, dk = _frames(d1, d2, wd, eta, st, one_m_gam)
        F1, F2, lan_f, K = _transforms(consts, lambda j: m1[j], lambda j: m2[j], lambda j: m12[j],
                                       x1, x2, s1, s2, z1, z2, k1, k2, dk, st, eta)
        inv = lambda F, W: np.real(F @ (2.0 * W))                          # noqa: E731
        for c in ("lab", "lan", "init"):
            tot[c][idx] = sum(inv(F[c], W) for F, W in ((F1, W1), (F2, W2)) if c in F)
        # training error (docs/theory.md 10.3): label part single-time, noise part frame 2
        trl_st = wd * (x2 / s2**2) * dk * m12[_LAM] + (x2 / s2) * k2 * m2[_ONE] + wd * k1 * m1[_ONE] * K
        trl1 = np.where(st, 0.0, -2.0 * wd * x1 * k1 * m1[_ONE] / s1**2)
        trl2 = np.where(st, trl_st, x2 * z2 * k2 * m2[_ONE] / s2**2)
        tot["tr_lab"][idx] = lab / P * (inv(trl1, W1) + inv(trl2, W2)) + lab * (P - N) / P
        trn = lan_f * (m2[_LAM] - S_ae) + s0 * x2 * m2[_LAM]
        tot["tr_noise"][idx] = inv(trn / P, W2)
        # two-time quantities: bias and the bias part of the training error
        kf, zf = np.concatenate([k1, np.conj(k1)]), np.concatenate([z1, np.conj(z1)])
        Q = _two_time_kernel(lam, V, P, kf, E12, M2, k1, k2)
        ef = np.concatenate([W1 * (x1 / s1)[:, None], np.conj(W1 * (x1 / s1)[:, None])])
        c_b, c_t = ef * kf[:, None], ef * zf[:, None]
        tot["bias"][idx] = P * np.real(np.einsum("mt,mk,kt->t", c_b, Q, c_b))
        tot["tr_bias"][idx] = np.real(np.einsum("mt,mk,kt->t", c_t, Q, c_t)) / P
        groups.append(_Group(idx=idx, d1=d1, d2=d2, k1=k1, k2=k2, dk=dk, stable=st, W1=W1, W2=W2, Q=Q))

    with np.errstate(invalid="ignore"):
        bias = tot["bias"] + (f_tail * tot["lab"] + tail if tail > 0 else 0.0)
        lab_v, lan_v, init_v = (1.0 - f_tail) * tot["lab"], tot["lan"], tot["init"]
        variance = lab_v + lan_v + init_v
        eg = bias + variance
        train_bias = tot["tr_bias"] + (f_tail * tot["tr_lab"] if tail > 0 else 0.0)
        train_var = (1.0 - f_tail) * tot["tr_lab"] + tot["tr_noise"]
    ok = bool(max_resid < 1e-6) and not np.any(np.isnan(eg))
    msg = ("converged" if ok else
           f"effective-ridge solve residual {max_resid:.2e} (or NaN output); results may be inaccurate")
    a_inf = lam / (kappa_inf + lam)
    modes = _DiscreteModes(lam=lam, lw=lw, consts=dict(consts, De=De), eta=eta, wd=wd, f_tail=f_tail,
                           tail=tail, n_times=nT, rows=[(inf_idx, inf_d), (zero_idx, zero_d)], groups=groups)
    return Prediction(
        times=t, generalization_error=eg, bias=bias, variance=variance,
        variance_label_noise=lab_v, variance_langevin=lan_v, variance_init=init_v,
        train_error=train_bias + train_var, train_bias=train_bias, train_variance=train_var,
        eigenvalues=lam, target_second_moment=w2, n_samples=P, label_noise=sc["label_noise"],
        tail_power=tail, weight_decay=wd, temperature=T, init_variance=s0, effective_ridge=kappa_inf,
        degrees_of_freedom=float(a_inf.sum()), gamma=gamma_inf, success=ok, message=msg,
        max_residual=max_resid, _modes=modes,
    )


_COMPONENTS = ("bias", "lab", "lan", "init", "response")


class _DiscreteModes(_LazyModes):
    """Lazy per-mode arrays of a discrete-time prediction (same interface as dmft._ModeArrays)."""

    def __init__(self, *, lam, lw, consts, eta, wd, f_tail, tail, n_times, rows, groups):
        self.lam, self.lw, self.consts, self.eta, self.wd = lam, lw, consts, eta, wd
        self.f_tail, self.tail, self.n_times, self.rows, self.groups = f_tail, tail, n_times, rows, groups
        self.cache: dict[str, np.ndarray] = {}


    def compute(self) -> dict[str, np.ndarray]:
        lam = self.lam
        mode = {c: np.zeros((self.n_times, lam.size)) for c in _COMPONENTS}
        for idx, d in self.rows:                                             # t = inf and t = 0
            for c in _COMPONENTS:
                mode[c][idx] = d[c]
        for g in self.groups:
            self._group(g, mode)
        if self.tail > 0:
            mode["bias"] = mode["bias"] + self.f_tail * mode["lab"]
            mode["lab"] = (1.0 - self.f_tail) * mode["lab"]
        mode["variance"] = mode["lab"] + mode["lan"] + mode["init"]
        mode["error"] = mode["bias"] + mode["variance"]
        return mode

    def _group(self, g: _Group, mode) -> None:
        lam, eta, lc = self.lam, self.eta, self.lam[:, None]
        A1 = 1.0 / (g.k1[None, :] + lc)                                      # (N, J)
        A2 = 1.0 / (g.k2[None, :] + lc)
        x1, x2, s1, s2 = 1.0 + g.d1, 1.0 + g.d2, g.d1 / eta, g.d2 / eta
        z1, z2 = self.wd + s1, self.wd + s2
        c = dict(self.consts, De=(lam * self.consts["De"])[:, None])
        F1, F2, _, _ = _transforms(c, lambda j: lc**j * A1, lambda j: lc**j * A2,
                                   lambda j: lc**j * A1 * A2, x1, x2, s1, s2, z1, z2,
                                   g.k1, g.k2, g.dk, g.stable, eta)
        for key in ("lab", "lan", "init", "response"):
            out = sum(np.real(F[key] @ (2.0 * W)) for F, W in ((F1, g.W1), (F2, g.W2)) if key in F)
            mode[key][g.idx] = out.T
        beta = mode["response"][g.idx]
        b1 = g.k1[None, :] * A1
        Bf = np.concatenate([b1, np.conj(b1)], axis=1)
        ef = np.concatenate([g.W1 * (x1 / s1)[:, None], np.conj(g.W1 * (x1 / s1)[:, None])])
        for j, i in enumerate(g.idx):
            y = Bf * ef[None, :, j]
            quad = np.real(np.sum((y @ g.Q) * y, axis=1))
            mode["bias"][i] = self.lw * beta[j] ** 2 + lam**2 * quad
