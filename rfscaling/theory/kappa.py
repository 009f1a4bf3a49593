"""The collective order parameter of the DMFT: the effective ridge kappa(z).

All mode couplings of the theory pass through one scalar function of the Laplace frequency,
kappa(z) with z = s + weight_decay, defined as the physical root of

    z = kappa * (P - df1(kappa)),        df1(kappa) = sum_k lam_k / (lam_k + kappa).

It is the renormalised ridge of the deterministic equivalent of (z + X^T X)^{-1}: the diagonal
resolvent is D_k(z) = kappa / (z (kappa + lam_k)). dz/dkappa = P (1 - Gamma(kappa)) with
Gamma = (1/P) sum_k lam_k^2 / (lam_k + kappa)^2.

Solving: on the real axis the map kappa -> z is increasing and convex on the physical branch, so
Newton from the right converges monotonically. Off the axis we follow the physical branch by
continuation along the contour parameter (from the real vertex of the hyperbola outwards), first
on a compressed spectrum (log bins, cheap), then polish with Newton on the full spectrum.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

_CHUNK = 1 << 22  # elements per (modes x nodes) work block: bounds memory at O(N x nodes) chunks


def df1(lam: np.ndarray, kappa, weights: np.ndarray | None = None):
    """Effective number of learned modes sum_k w_k lam_k / (lam_k + kappa) (vectorised in kappa)."""
    kappa = np.asarray(kappa)
    r = lam[:, None] / (lam[:, None] + kappa.reshape(1, -1))
    out = (r if weights is None else r * weights[:, None]).sum(0)
    return out.reshape(kappa.shape)


def kappa_at_zero(lam: np.ndarray, P: int, weights: np.ndarray | None = None) -> float:
    """kappa(0+): the ridgeless effective ridge, root of df1(kappa) = P when P < N, else 0."""
    n_eff = lam.size if weights is None else float(weights.sum())
    if P >= n_eff:
        return 0.0
    f = lambda u: float(df1(lam, np.exp(u), weights)) - P  # decreasing in u  # noqa: E731
    lo, hi = np.log(lam.min()) - 1.0, np.log(lam.max()) + 1.0
    while f(lo) <= 0:
        lo -= 5.0
    while f(hi) >= 0:
        hi += 5.0
    return float(np.exp(brentq(f, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)))


def _residual_and_slope(lam, w, P, kappa):
    """(P - df1(kappa), P (1 - Gamma(kappa))), each from whichever of two exact forms is free of
    cancellation: P - sum_k a_k when few modes are learned, (P - N) + sum_k (1 - a_k) when many are
    (a_k = lam_k/(lam_k + kappa), 1 - a_k = kappa/(lam_k + kappa); P ~ N and kappa -> 0 need the
    second, N >> P with large kappa the first). Mode sums are matrix products (BLAS).
    """
    w = np.ones_like(lam) if w is None else w
    inv = 1.0 / (lam[:, None] + kappa[None, :])                       # (N, B)
    R = np.stack([w, w * lam, w * lam * lam]).astype(inv.dtype)        # (3, N)
    m1 = R @ inv                                                       # sums of w lam^j A
    m2 = R @ (inv * inv)                                               # sums of w lam^j A^2
    n_eff = w.sum()
    sa, sb = m1[1], kappa * m1[0]                                      # sum a, sum (1 - a)
    sa2 = m2[2]                                                        # sum a^2
    sb2 = kappa * (2.0 * m2[1] + kappa * m2[0])                        # sum (1 - a^2)
    q = np.where(np.abs(sa) <= np.abs(sb), P - sa, (P - n_eff) + sb)
    fp = np.where(np.abs(sa2) <= np.abs(sb2), P - sa2, (P - n_eff) + sb2)
    return q, fp


def _kappa_real_monotone(lam, w, P, z):
    """Newton from the right on the convex increasing branch: converges monotonically."""
    k0 = kappa_at_zero(lam, P, w)
    kappa = np.maximum((z + float(lam @ (np.ones_like(lam) if w is None else w))) / P, k0)
    for _ in range(2000):
        q, fp = _residual_and_slope(lam, w, P, kappa)
        f = kappa * q - z
        with np.errstate(invalid="ignore", divide="ignore"):
            new = np.maximum(np.where(fp > 0, kappa - f / fp, 0.5 * (kappa + k0)), k0)
        done = np.abs(new - kappa) <= 1e-15 * np.abs(new) + 1e-300
        kappa = new
        if done.all():
            break
    return np.where(z == 0, k0, kappa)


def kappa_real(lam: np.ndarray, P: int, z: np.ndarray) -> np.ndarray:
    """kappa(z) for real z >= 0 (vectorised): monotone Newton on a compressed spectrum, then
    Newton polish on the full spectrum."""
    z = np.asarray(z, dtype=np.float64)
    lam_c, w_c = _compress(lam)
    if w_c is None:
        return _kappa_real_monotone(lam, None, P, z)
    kappa = _kappa_real_monotone(lam_c, w_c, P, z)
    k0 = kappa_at_zero(lam, P)
    for _ in range(20):
        q, fp = _residual_and_slope(lam, None, P, kappa)
        with np.errstate(invalid="ignore", divide="ignore"):
            new = np.maximum(np.where(fp > 0, kappa - (kappa * q - z) / fp, kappa), k0)
        done = np.abs(new - kappa) <= 1e-15 * np.abs(new) + 1e-300
        kappa = new
        if done.all():
            break
    return np.where(z == 0, k0, kappa)


def _compress(lam: np.ndarray, per_decade: int = 400, max_exact: int = 4096):
    """Log-binned spectrum (values, counts) used only for initial guesses; (lam, None) if small."""
    if lam.size <= max_exact:
        return lam, None
    logl = np.log10(lam)
    edges = np.arange(np.floor(logl.min() * per_decade), np.ceil(logl.max() * per_decade) + 2) / per_decade
    idx = np.clip(np.searchsorted(edges, logl, side="right") - 1, 0, edges.size - 2)
    counts = np.bincount(idx, minlength=edges.size - 1).astype(np.float64)
    sums = np.bincount(idx, weights=lam, minlength=edges.size - 1)
    keep = counts > 0
    return sums[keep] / counts[keep], counts[keep]


def _newton(lam, w, P, z, kappa, iters, tol=1e-14):
    """Vectorised Newton for z = kappa (P - df1(kappa)); returns (kappa, converged)."""
    conv = np.zeros(z.shape, dtype=bool)
    for _ in range(iters):
        q, fp = _residual_and_slope(lam, w, P, kappa)
        step = (kappa * q - z) / fp
        kappa = kappa - step
        conv = np.abs(step) <= tol * np.abs(kappa)
        if conv.all():
            break
    return kappa, conv


def _continue(lam, w, P, zfun, th0, th1, kappa, depth=0):
    """Follow the physical root from contour parameter th0 to th1 (arrays over scales)."""
    kappa_new, conv = _newton(lam, w, P, zfun(th1), kappa.copy(), 12, tol=1e-12)
    bad = ~conv | ~np.isfinite(kappa_new)
    if bad.any():
        if depth > 12:
            raise FloatingPointError("effective-ridge continuation did not converge")
        mid = 0.5 * (th0 + th1)
        zb = lambda th: zfun(th)[bad]  # noqa: E731
        k_mid = _continue(lam, w, P, zb, th0, mid, kappa[bad], depth + 1)
        kappa_new[bad] = _continue(lam, w, P, zb, mid, th1, k_mid, depth + 1)
    return kappa_new


def kappa_on_contour(lam: np.ndarray, P: int, weight_decay: float, sigma, thetas: np.ndarray,
                     scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kappa at z = weight_decay + scale_j * sigma(theta_m), for all scales j and nodes m.

    sigma(theta) is the unit hyperbola (real at theta = 0). Returns kappa (J, M) and the size of
    the last Newton correction relative to |kappa| (J, M); after it the error is about its square.
    """
    # continuation runs on a coarsely binned spectrum (cheap); polishing removes the binning error
    lam_c, w_c = _compress(lam, per_decade=48)
    scales = np.asarray(scales, dtype=np.float64)
    # start on the real axis (theta = 0), where the root is real and easy
    z0 = weight_decay + scales * float(np.real(sigma(0.0)))
    kappa = _kappa_real_monotone(lam_c, w_c, P, z0).astype(np.complex128)
    out = np.empty((scales.size, thetas.size), dtype=np.complex128)
    th_prev = 0.0
    zfun = lambda t: weight_decay + scales * sigma(t)  # noqa: E731
    for m, th in enumerate(thetas):
        kappa = _continue(lam_c, w_c, P, zfun, th_prev, th, kappa)
        out[:, m] = kappa
        th_prev = th
    z = weight_decay + scales[:, None] * sigma(thetas)[None, :]
    if w_c is None:  # solved on the exact spectrum already
        return out, np.zeros(z.shape)
    # polish on the full spectrum (chunked over nodes to bound memory): Newton from the binned
    # solution (relative error ~1e-4) converges quadratically; repeat only where needed
    flat_z, flat_k = z.ravel(), out.ravel()
    step = max(1, _CHUNK // lam.size)
    resid = np.empty(flat_z.size)
    for i in range(0, flat_z.size, step):
        sl = slice(i, i + step)
        zz, k = flat_z[sl], flat_k[sl]
        todo = np.ones(k.shape, dtype=bool)
        for _ in range(8):
            q, fp = _residual_and_slope(lam, None, P, k[todo])
            d = (k[todo] * q - zz[todo]) / fp
            k[todo] -= d
            rel = np.abs(d) / np.abs(k[todo])
            r = resid[sl]
            r[todo] = rel
            resid[sl] = r
            todo[todo] = rel > 1e-7
            if not todo.any():
                break
        flat_k[sl] = k
    return flat_k.reshape(z.shape), resid.reshape(z.shape)
