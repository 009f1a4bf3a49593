"""The collective order parameter of the DMFT: the effective ridge kappa(z).

All mode couplings of the theory pass through one scalar function of the Laplace frequency,
kappa(z) with z = s + weight_decay, defined as the physical root of

    z = kappa * (P - df1(kappa)),        df1(kappa) = sum_k lam_k / (lam_k + kappa).

It is the renormalised ridge of the deterministic equivalent of (z + X^T X)^{-1}: the diagonal
resolvent is D_k(z) = kappa / (z (kappa + lam_k)). dz/dkappa = P (1 - Gamma(kappa)) with
Gamma = (1/P) sum_k lam_k^2 / (lam_k + kappa)^2.

Solving: on the real axis the map kappa -> z is increasing and convex on the physical branch, so
Newton from the right converges monotonically. Off the axis we follow the physical branch by
continuation along the contour parameter (from the real vertex of the hyperbola outwards) on a
compressed spectrum (Gauss atoms per log bin, cheap, relative error ~1e-13), then one Newton step
on the full spectrum (more only where its correction exceeds _POLISH_TOL). Mode sums over the full
spectrum run in cache-sized blocks, as real matrix products summed pairwise.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

_BLOCK = 1024      # modes per block of the blocked mode sums (a 1024 x 64 complex block: 1 MiB, in cache)
_NODES = 64        # nodes per block
_DIRECT = 1 << 16  # (modes x nodes) up to which mode sums are formed directly, without blocking
_POLISH_TOL = 1e-8  # relative Newton correction on the full spectrum below which kappa counts as polished


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


def _residual_and_slope(lam, w, P, kappa, n_eff=None):
    """(P - df1(kappa), P (1 - Gamma(kappa))), each from whichever of two exact forms is free of
    cancellation: P - sum_k a_k when few modes are learned, (P - N) + sum_k (1 - a_k) when many are
    (a_k = lam_k/(lam_k + kappa), 1 - a_k = kappa/(lam_k + kappa); P ~ N and kappa -> 0 need the
    second, N >> P with large kappa the first). Mode sums are matrix products (BLAS); large complex
    problems go through :func:`_mode_sums` (blocked, cache-resident). ``n_eff``: the number of
    modes the weights stand for (default ``w.sum()``).
    """
    w = np.ones_like(lam) if w is None else w
    n_eff = w.sum() if n_eff is None else n_eff
    if np.iscomplexobj(kappa) and lam.size * kappa.size > _DIRECT:
        m1, m2 = _mode_sums(lam, w, kappa, slope=True)
    else:
        inv = 1.0 / (lam[:, None] + kappa[None, :])                   # (N, B)
        R = np.stack([w, w * lam, w * lam * lam])                      # (3, N)
        m1 = _real_gemm(R, inv)                                        # sums of w lam^j A
        m2 = _real_gemm(R, inv * inv)                                  # sums of w lam^j A^2
    sa, sb = m1[1], kappa * m1[0]                                      # sum a, sum (1 - a)
    sa2 = m2[2]                                                        # sum a^2
    sb2 = kappa * (2.0 * m2[1] + kappa * m2[0])                        # sum (1 - a^2)
    q = np.where(np.abs(sa) <= np.abs(sb), P - sa, (P - n_eff) + sb)
    fp = np.where(np.abs(sa2) <= np.abs(sb2), P - sa2, (P - n_eff) + sb2)
    return q, fp


def _residual(lam, P, kappa):
    """P - df1(kappa) on the full spectrum (unit weights) for complex kappa, in the cancellation-free
    form of :func:`_residual_and_slope`, without the slope (half the work)."""
    m1, _ = _mode_sums(lam, np.ones_like(lam), kappa, slope=False)
    sa, sb = m1[1], kappa * m1[0]
    return np.where(np.abs(sa) <= np.abs(sb), P - sa, (P - lam.size) + sb)


def _real_gemm(R: np.ndarray, A: np.ndarray) -> np.ndarray:
    """R @ A for real R (J, N) and real or complex A (N, B): a complex A is multiplied as its real
    view (N, 2B), a quarter of the flops of promoting R to complex."""
    if not np.iscomplexobj(A):
        return R @ A
    A = np.ascontiguousarray(A)
    return (R @ A.view(np.float64)).view(np.complex128)


class _PairwiseSum:
    """Streaming pairwise summation of arrays: partial sums of 2^j terms are merged like a binary
    counter, so the rounding error grows like log2(terms) instead of linearly, in O(log) memory."""

    def __init__(self):
        self._stack: list[tuple[int, np.ndarray]] = []

    def add(self, x: np.ndarray) -> None:
        count = 1
        while self._stack and self._stack[-1][0] == count:
            x = self._stack.pop()[1] + x
            count *= 2
        self._stack.append((count, x))

    def total(self) -> np.ndarray:
        parts = [x for _, x in self._stack]
        out = parts.pop()
        while parts:
            out = parts.pop() + out
        return out


_SUB = 128  # rows per partial sum inside a block: BLAS sums that many terms one after another


def _chunk_sums(R: np.ndarray, X: np.ndarray) -> np.ndarray:
    """R (J, m) @ X (m, c), as partial products over chunks of _SUB rows summed pairwise: BLAS
    accumulates the rows of a thin product sequentially, whose rounding error grows with m."""
    m = X.shape[0]
    q = m // _SUB
    out = None
    if q:
        parts = np.matmul(R[:, :q * _SUB].reshape(R.shape[0], q, _SUB).transpose(1, 0, 2),
                          X[:q * _SUB].reshape(q, _SUB, X.shape[1]))          # (q, J, c)
        while parts.shape[0] > 1:
            h = parts.shape[0] // 2
            top = parts[:h] + parts[h:2 * h]
            parts = top if parts.shape[0] == 2 * h else np.concatenate([top, parts[2 * h:]])
        out = parts[0]
    if m > q * _SUB:
        rest = R[:, q * _SUB:] @ X[q * _SUB:]
        out = rest if out is None else out + rest
    return out


def _mode_sums(lam, w, kappa, slope):
    """Mode sums over A_kb = 1/(lam_k + kappa_b) for complex kappa (B,): m1 = [sum w A, sum w lam A]
    (2, B) and, if ``slope``, m2 = [sum w lam^j A^2 for j = 0, 1, 2] (3, B) (else None).

    Blocked over modes (_BLOCK) and nodes (_NODES) so that every elementwise pass runs in cache;
    the sums are real matrix products on the complex blocks' real views, summed pairwise.
    """
    N, B = lam.size, kappa.size
    R = np.stack([w, w * lam, w * lam * lam])                          # (3, N)
    m1 = np.empty((2, B), dtype=np.complex128)
    m2 = np.empty((3, B), dtype=np.complex128) if slope else None
    buf = np.empty((min(_BLOCK, N), min(B, _NODES)), dtype=np.complex128)
    sq = np.empty_like(buf) if slope else None
    for j in range(0, B, _NODES):
        kj = kappa[j:j + _NODES]
        nb = kj.size
        acc1, acc2 = _PairwiseSum(), _PairwiseSum()
        for i in range(0, N, _BLOCK):
            lb = lam[i:i + _BLOCK]
            x = buf[:lb.size, :nb]
            np.add(lb[:, None], kj[None, :], out=x)
            np.reciprocal(x, out=x)
            acc1.add(_chunk_sums(R[:2, i:i + _BLOCK], x.view(np.float64)))
            if slope:
                x2 = sq[:lb.size, :nb]
                np.multiply(x, x, out=x2)
                acc2.add(_chunk_sums(R[:, i:i + _BLOCK], x2.view(np.float64)))
        m1[:, j:j + nb] = np.ascontiguousarray(acc1.total()).view(np.complex128)
        if slope:
            m2[:, j:j + nb] = np.ascontiguousarray(acc2.total()).view(np.complex128)
    return m1, m2


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


def _compress_gauss(lam: np.ndarray, per_decade: int = 48, points: int = 3, max_exact: int = 4096):
    """Log-binned spectrum with ``points`` atoms per bin: the nodes and weights of the Gauss
    quadrature of each bin's counting measure (exact for polynomials in lam of degree
    2 points - 1), so a mode sum of a function analytic near the bin is off by
    O((bin width / distance to its singularity)^(2 points)) instead of the O(width^2) of one atom
    at the bin mean (:func:`_compress`). Bins with at most ``points`` modes keep them. Returns
    (values, weights), or (lam, None) if the spectrum is small. Used only for initial guesses.
    """
    if lam.size <= max_exact:
        return lam, None
    logl = np.log10(lam)
    edges = np.arange(np.floor(logl.min() * per_decade), np.ceil(logl.max() * per_decade) + 2) / per_decade
    idx = np.clip(np.searchsorted(edges, logl, side="right") - 1, 0, edges.size - 2)
    nb = edges.size - 1
    counts = np.bincount(idx, minlength=nb).astype(np.float64)
    raw = counts[idx] <= points
    lo, hi = 10.0 ** edges[:-1], 10.0 ** edges[1:]
    centre, half = 0.5 * (hi + lo), 0.5 * (hi - lo)
    g, bins = ~raw, idx[~raw]
    u = (lam[g] - centre[bins]) / half[bins]                          # ~[-1, 1] within its bin
    # Stieltjes procedure per bin (recurrence of the orthogonal polynomials of the bin's measure)
    a = np.zeros((points, nb))
    b = np.zeros((points, nb))                                        # b[j] = ||p_j||^2 / ||p_{j-1}||^2
    live = np.ones(nb, dtype=bool)                                    # bins with >= j + 1 distinct modes
    p_prev, p = np.zeros_like(u), np.ones_like(u)
    n0 = np.bincount(bins, minlength=nb)
    n_prev = n0
    for j in range(points):
        pp = p * p
        nj = np.bincount(bins, weights=pp, minlength=nb)
        if j > 0:
            live &= nj > 1e-20 * n0                                   # fewer distinct modes than j + 1
            with np.errstate(invalid="ignore", divide="ignore"):
                b[j] = np.where(live, nj / n_prev, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            a[j] = np.where(live, np.bincount(bins, weights=u * pp, minlength=nb) / nj, 0.0)
        if j + 1 < points:
            p_prev, p = p, (u - a[j][bins]) * p - b[j][bins] * p_prev
            n_prev = nj
    used = np.flatnonzero(n0 > 0)
    J = np.zeros((used.size, points, points))
    r = np.arange(points)
    J[:, r, r] = a[:, used].T
    off = np.sqrt(b[1:, used].T)
    J[:, r[1:], r[:-1]] = off
    J[:, r[:-1], r[1:]] = off
    nodes, vec = np.linalg.eigh(J)                                    # Golub-Welsch
    wts = n0[used][:, None] * vec[:, 0, :] ** 2
    vals = centre[used][:, None] + half[used][:, None] * np.clip(nodes, -1.0, 1.0)
    keep = wts > 0
    values = np.concatenate([lam[raw], vals[keep]])
    weights = np.concatenate([np.ones(int(raw.sum())), wts[keep]])
    return values, weights


def _newton(lam, w, P, z, kappa, iters, tol=1e-14, n_eff=None):
    """Vectorised Newton for z = kappa (P - df1(kappa)); returns (kappa, converged)."""
    conv = np.zeros(z.shape, dtype=bool)
    for _ in range(iters):
        q, fp = _residual_and_slope(lam, w, P, kappa, n_eff)
        step = (kappa * q - z) / fp
        kappa = kappa - step
        conv = np.abs(step) <= tol * np.abs(kappa)
        if conv.all():
            break
    return kappa, conv


def _continue(lam, w, P, zfun, th0, th1, kappa, depth=0, n_eff=None):
    """Follow the physical root from contour parameter th0 to th1 (arrays over scales)."""
    kappa_new, conv = _newton(lam, w, P, zfun(th1), kappa.copy(), 12, tol=1e-12, n_eff=n_eff)
    bad = ~conv | ~np.isfinite(kappa_new)
    if bad.any():
        if depth > 12:
            raise FloatingPointError("effective-ridge continuation did not converge")
        mid = 0.5 * (th0 + th1)
        zb = lambda th: zfun(th)[bad]  # noqa: E731
        k_mid = _continue(lam, w, P, zb, th0, mid, kappa[bad], depth + 1, n_eff)
        kappa_new[bad] = _continue(lam, w, P, zb, mid, th1, k_mid, depth + 1, n_eff)
    return kappa_new


def kappa_on_contour(lam: np.ndarray, P: int, weight_decay: float, sigma, thetas: np.ndarray,
                     scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kappa at z = weight_decay + scale_j * sigma(theta_m), for all scales j and nodes m.

    sigma(theta) is the unit hyperbola (real at theta = 0). Returns kappa (J, M) and the size of
    the last Newton correction relative to |kappa| (J, M); after it the error is about its square.
    """
    # start on the real axis (theta = 0), where the root is real and easy, on a binned spectrum
    scales = np.asarray(scales, dtype=np.float64)
    z0 = weight_decay + scales * float(np.real(sigma(0.0)))
    lam_b, w_b = _compress(lam, per_decade=48)
    kappa0 = _kappa_real_monotone(lam_b, w_b, P, z0)
    zfun = lambda t: weight_decay + scales * sigma(t)  # noqa: E731
    return kappa_on_path(lam, P, zfun, thetas, kappa0)


def kappa_on_path(lam: np.ndarray, P: int, zfun, thetas: np.ndarray,
                  kappa0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kappa(zfun(theta_m)) for J paths at once: zfun(theta) -> (J,) complex z, real at theta = 0,
    where ``kappa0`` (J,) is the physical root (possibly on a binned spectrum: the first
    continuation step corrects it). The physical branch is followed from theta = 0 through the
    nodes ``thetas`` (increasing) on a Gauss-compressed spectrum, then polished on the full one.
    Returns kappa (J, M) and the last relative Newton correction (J, M).
    """
    # continuation on a Gauss-compressed spectrum (three atoms per bin: the first full-spectrum
    # correction was 1e-16 ... 2e-12 relative on the spectra tried, against ~1e-4 with one atom at
    # the bin mean), so that one Newton step on the full spectrum polishes it
    lam_c, w_c = _compress_gauss(lam, per_decade=48, points=3)
    n_eff = float(lam.size)
    kappa = np.asarray(kappa0, dtype=np.complex128)
    out = np.empty((kappa.size, thetas.size), dtype=np.complex128)
    th_prev = 0.0
    for m, th in enumerate(thetas):
        kappa = _continue(lam_c, w_c, P, zfun, th_prev, th, kappa, n_eff=n_eff)
        out[:, m] = kappa
        th_prev = th
    z = np.stack([zfun(th) for th in thetas], axis=1)
    if w_c is None:  # solved on the exact spectrum already
        return out, np.zeros(z.shape)
    # polish on the full spectrum: one Newton step with the full residual and the slope of the
    # compressed spectrum (its relative error, ~ that of kappa, multiplies the step: the error
    # after it is ~ the square of the correction, as with the exact slope); exact Newton steps
    # where the correction was larger than _POLISH_TOL
    flat_z, k = z.ravel(), out.ravel().copy()
    _, fp = _residual_and_slope(lam_c, w_c, P, k, n_eff=n_eff)
    d = (k * _residual(lam, P, k) - flat_z) / fp
    k -= d
    resid = np.abs(d) / np.abs(k)
    todo = resid > _POLISH_TOL
    for _ in range(8):
        if not todo.any():
            break
        kt = k[todo]
        q, fp = _residual_and_slope(lam, None, P, kt)
        d = (kt * q - flat_z[todo]) / fp
        kt = kt - d
        k[todo] = kt
        rel = np.abs(d) / np.abs(kt)
        resid[todo] = rel
        todo[todo] = rel > _POLISH_TOL
    return k.reshape(z.shape), resid.reshape(z.shape)
