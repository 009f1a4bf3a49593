"""Exact Monte Carlo reference for the random-projection student (numpy only, no rfscaling import).

Teacher psi_k = sqrt(lam_k) z_k (M modes), y = psi . wstar + eps; student f(x) = w . A psi(x) / sqrt(N)
with A (N x M) i.i.d. N(0, 1), drawn per data set. With X = Z Lam^{1/2} (P x M), F = A^T / sqrt(N)
(M x N) and Phi = X F (P x N), the summed loss L = 1/2 |y - Phi w|^2 + wd/2 |w|^2 gives the linear
dynamics dw = -(H w - Phi^T y) dt + sqrt(2T) dB, H = Phi^T Phi + wd I, w(0) ~ N(0, s0 I). For one
(A, X) and a fixed teacher wstar, in the eigenbasis Phi^T Phi = V diag(c) V^T (h = c + wd,
phi_t(h) = (1 - e^{-h t})/h, B = F V):

    mean       v(t) = B (phi_t(h) * V^T Phi^T X wstar) - wstar       bias_k  = lam_k v_k^2
    label      lam_k sigma^2 sum_i B_ki^2 phi_t(h_i)^2 c_i
    Langevin   lam_k T sum_i B_ki^2 phi_{2t}(h_i)                 (h = 0: 2 T t)
    init       lam_k s0 sum_i B_ki^2 e^{-2 h_i t}

and the training error (1/P) E|y - Phi w|^2 = |X wstar - Phi wbar|^2/P + sigma^2 [sum_{c>0} (1 - phi c)^2
+ (P - rank)]/P + sum_i c_i (Langevin_i + init_i)/P. Exact expectations over label noise,
Langevin noise and init; the average over A and Z is the Monte Carlo. A fixed wstar = sqrt(W)
suffices for the average over teachers with E[wstar wstar^T] = diag(W): flipping column j of both
Z and A leaves Phi unchanged and flips wstar_j, so cross terms average to zero.
"""

from __future__ import annotations

import numpy as np

__all__ = ["draw_quantities", "monte_carlo"]

KEYS = ("bias", "lab", "lan", "init")


def _phi(h, t):
    """(T, n) array of (1 - e^{-h t})/h, = t where h = 0 (inf at t = inf)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ht = np.where(h[None, :] > 0, t[:, None] * h[None, :], 0.0)
        out = np.where(h[None, :] > 0, -np.expm1(-ht) / np.where(h > 0, h, 1.0)[None, :],
                       np.broadcast_to(t[:, None], ht.shape))
    return out


def draw_quantities(rng, lam, W, P, N, times, label_noise=0.0, weight_decay=0.0, temperature=0.0,
                    init_variance=0.0):
    """Per-mode (T, M) bias, lab, lan, init and (T,) train error for one draw of (A, Z)."""
    M = lam.size
    t = np.asarray(times, dtype=np.float64)
    X = rng.standard_normal((P, M)) * np.sqrt(lam)
    F = rng.standard_normal((N, M)).T / np.sqrt(N)
    Phi = X @ F
    c, V = np.linalg.eigh(Phi.T @ Phi)
    c = np.where(c > 1e-10 * c.max(), c, 0.0)                         # the null space exactly 0
    h = c + weight_decay
    wstar = np.sqrt(W)
    Xw = X @ wstar
    proj = V.T @ (Phi.T @ Xw)
    proj[c == 0] = 0.0
    B = F @ V                                                          # (M, N)
    B2 = B**2
    ph = _phi(h, t)                                                    # (T, N)
    with np.errstate(invalid="ignore"):
        mean = np.where(c[None, :] > 0, ph * proj[None, :], 0.0)      # null directions: proj = 0
        v = mean @ B.T - wstar[None, :]
        out = {"bias": lam * v**2}
        g_lab = np.where(c[None, :] > 0, ph**2 * c[None, :], 0.0)
        out["lab"] = label_noise * lam * (g_lab @ B2.T) if label_noise else np.zeros_like(v)
        g_lan = temperature * _phi(h, 2.0 * t) if temperature else np.zeros_like(ph)
        out["lan"] = lam * (g_lan @ B2.T)
        with np.errstate(over="ignore"):
            g_init = init_variance * np.exp(-2.0 * np.where(h[None, :] > 0, t[:, None] * h[None, :], 0.0))
        out["init"] = lam * (g_init @ B2.T)
        U = Phi @ V                                                    # (P, N) = U_svd * sqrt(c)
        resid = Xw[None, :] - mean @ U.T                               # (T, P)
        rank = int(np.sum(c > 0))
        lab_train = label_noise * (np.sum(np.where(c > 0, (1.0 - ph * c) ** 2, 0.0), axis=1) + (P - rank))
        noise_train = np.sum(np.where(c > 0, c * (g_lan + g_init), 0.0), axis=1)
        out["train"] = (np.sum(resid**2, axis=1) + lab_train + noise_train) / P
    return out


def monte_carlo(lam, W, P, N, times, n_draws, seed=0, bands=(), **noise):
    """Means and standard errors over draws: dict key -> (mean, se); per-mode keys are (T, M),
    totals ``<key>_total`` and ``E_g`` (T,), band sums ``<key>_band`` (T, len(bands)) for index
    arrays ``bands`` (the per-draw sums, so that their standard errors are right)."""
    rng = np.random.default_rng(seed)
    acc = None
    for _ in range(n_draws):
        d = draw_quantities(rng, lam, W, P, N, times, **noise)
        d["E_g"] = sum(d[k] for k in KEYS).sum(axis=1)
        for k in KEYS:
            d[k + "_total"] = d[k].sum(axis=1)
        d["variance"] = d["lab"] + d["lan"] + d["init"]
        for k in ("bias", "variance"):
            d[k + "_band"] = np.stack([d[k][:, b].sum(axis=1) for b in bands], axis=1) if len(bands) else \
                np.zeros((d[k].shape[0], 0))
        if acc is None:
            acc = {k: [np.zeros_like(x), np.zeros_like(x)] for k, x in d.items()}
        for k, x in d.items():
            acc[k][0] += x
            acc[k][1] += x**2
    out = {}
    for k, (s1, s2) in acc.items():
        m = s1 / n_draws
        var = np.maximum(s2 / n_draws - m**2, 0.0) * n_draws / max(n_draws - 1, 1)
        out[k] = (m, np.sqrt(var / n_draws))
    return out
