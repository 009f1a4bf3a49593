"""Exact finite-size Monte Carlo reference for linear regression on Gaussian features.

Independent of the package under test (numpy only, no import from ``rfscaling``).
Conventions follow docs/conventions-brief.md:

* features ``x_{mu k} = sqrt(lam_k) z_{mu k}``, ``X`` is ``P x N``, ``C = X^T X``;
* loss summed over samples, ``L = 1/2 |y - X w|^2 + wd/2 |w|^2``, Hessian ``H = C + wd I``;
* ``dw = -grad L dt + sqrt(2 T) dB``, ``w(0) ~ N(0, init_variance I)``;
* teacher ``y = X wstar + eps``, ``eps ~ N(0, label_noise I_P)``, ``E[wstar_k^2] = s_k``
  (the teacher is averaged analytically: ``E_wstar[(A wstar)_k^2] = sum_j A_kj^2 s_j``).

No time stepping: for each dataset, the law of ``w(t)`` given ``(X, wstar)`` is Gaussian with

    mean      E[w(t)]  = phi(H) C wstar,                 phi(h) = (1 - e^{-h t}) / h  (phi(0) = t)
    label     Cov_eps  = label_noise * phi(H) C phi(H)
    Langevin  Cov_L    = T H^{-1} (I - e^{-2 H t})       (h -> 0: 2 T t; infinite at t = inf)
    init      Cov_0    = init_variance e^{-2 H t}

and everything is diagonal in the eigenbasis of ``C`` (from the SVD ``X = U S V^T``).  With
``b_i = phi(h_i) c_i`` (``c_i = S_ii^2``) and ``M = V_r diag(b) V_r^T`` the mean error matrix is
``A = M - I`` (null directions of ``C`` have ``b = 0``), so

    bias_k      = lam_k [ (M S M)_kk - 2 M_kk s_k + s_k ]
    var_k(src)  = lam_k sum_i V_ki^2 g_i(src)           (+ null-space part, weight 1 - sum_r V_ki^2)

and the training error (1/P) E|y - X w|^2 with residual
``y - X w = -X A wstar + (I_P - X phi X^T) eps - X (init + Langevin fluctuations)`` is

    P * train = sum_i (b_i - 1)^2 c_i (V_r^T S V_r)_ii
              + label_noise * [ sum_i (1 - b_i)^2 + (P - r) ]
              + sum_i c_i (g_i(init) + g_i(Langevin))

(null directions of ``C`` do not enter the training error).
"""

from __future__ import annotations

import contextlib

import numpy as np

try:  # optional: BLAS threading only slows these small (<= 1000) matrices down, badly so
    from threadpoolctl import threadpool_limits  # when the CPUs are shared with other jobs

    def single_thread_blas():
        return threadpool_limits(limits=1, user_api="blas")
except ImportError:  # pragma: no cover - results are identical, only slower
    def single_thread_blas():
        return contextlib.nullcontext()

__all__ = [
    "MCResult",
    "dataset_quantities",
    "monte_carlo",
    "log_bands",
    "spectral_functions",
    "single_thread_blas",
]

def _phi(h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """phi(h, t) = (1 - e^{-h t}) / h for h > 0 (outer product over t x h); exact at t = 0, inf."""
    h = np.asarray(h, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ht = t[:, None] * h[None, :]
        out = -np.expm1(-ht) / h[None, :]
    return out


def spectral_functions(c, times, label_noise=0.0, weight_decay=0.0, temperature=0.0,
                       init_variance=0.0):
    """Per-eigendirection functions of ``c`` (eigenvalues of C, all > 0) at the given times.

    Returns ``b, g_label, g_langevin, g_init`` each of shape (T, r), plus the null-space
    variances ``(g_label0, g_langevin0, g_init0)`` each (T,) for directions with ``c = 0``.
    """
    c = np.asarray(c, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    h = c + weight_decay  # > 0
    phi = _phi(h, t)
    b = phi * c[None, :]
    g_label = label_noise * phi**2 * c[None, :]
    # Langevin: T h^{-1} (1 - e^{-2 h t}) = T phi(h, 2 t)
    g_lang = temperature * _phi(h, 2.0 * t)
    with np.errstate(over="ignore"):
        g_init = init_variance * np.exp(-2.0 * t[:, None] * h[None, :])
    # null directions: c = 0, h = weight_decay
    if weight_decay > 0:
        lang0 = temperature * (-np.expm1(-2.0 * weight_decay * t)) / weight_decay
        init0 = init_variance * np.exp(-2.0 * weight_decay * t)
    else:
        # h = 0 exactly: phi = t, e^{-0 t} = 1 even at t = inf
        lang0 = np.where(t == 0, 0.0, 2.0 * temperature * t) if temperature > 0 else np.zeros_like(t)
        init0 = np.full_like(t, init_variance)
    label0 = np.zeros_like(t)
    return b, g_label, g_lang, g_init, (label0, lang0, init0)


def _eig_design(X):
    """Eigen-decomposition of C = X^T X restricted to its range: returns (c, V) with
    C = V diag(c) V^T, V (N, r) orthonormal, r = min(P, N), via the smaller Gram matrix."""
    P, N = X.shape
    if P >= N:
        c, V = np.linalg.eigh(X.T @ X)
    else:
        c, U = np.linalg.eigh(X @ X.T)
        V = (X.T @ U) / np.sqrt(c)
    if not np.all(c > 0):
        raise FloatingPointError("design has a (numerically) zero eigenvalue in its range")
    return c, V


def dataset_quantities(X, lam, s, times, label_noise=0.0, weight_decay=0.0, temperature=0.0,
                       init_variance=0.0, bands=None, modes=False, spectral=None):
    """Exact noise- and teacher-averaged quantities for one design matrix ``X`` (P x N).

    Returns a dict of (T,) totals ``bias``, ``variance_label_noise``, ``variance_langevin``,
    ``variance_init``, ``train_error``; with ``bands`` (list of index arrays) the (T, B) band
    sums ``band_<name>`` of the per-mode quantities; with ``modes=True`` the (T, N) arrays
    ``mode_bias``, ``mode_variance_label_noise``, ``mode_variance_langevin``,
    ``mode_variance_init``.

    ``spectral``: a replacement for :func:`spectral_functions` with its signature and outputs
    (e.g. the discrete-time twin in tests/montecarlo_discrete.py).

    Cost: O(P N r + N r^2 + T (B + 1) r^2), plus O(T N r^2) when ``modes=True``.
    """
    X = np.asarray(X, dtype=np.float64)
    lam = np.asarray(lam, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    P, N = X.shape
    c, V = _eig_design(X)
    r = c.size
    b, g_lab, g_lang, g_init, (lab0, lang0, init0) = (spectral or spectral_functions)(
        c, times, label_noise, weight_decay, temperature, init_variance)
    V2 = V**2  # (N, r)
    null_w = np.clip(1.0 - V2.sum(axis=1), 0.0, None) if r < N else np.zeros(N)
    G_s = (V.T * s) @ V  # (r, r) = V^T S V

    def band_Q(idx):
        Vb = V[idx]
        return ((Vb.T * lam[idx]) @ Vb) * G_s  # (r, r): (V^T Lam V)_{ii'} (V^T S V)_{ii'}

    def bias_sum(idx, Q):
        # sum_{k in idx} lam_k [ (M S M)_kk - 2 M_kk s_k + s_k ],  M = V diag(b) V^T
        quad = ((b @ Q) * b).sum(axis=1)
        lin = b @ ((lam[idx] * s[idx]) @ V2[idx])
        return quad - 2.0 * lin + (lam[idx] * s[idx]).sum()

    def var_sum(g, g0, idx):
        v = g @ (lam[idx] @ V2[idx])
        if r < N:
            w0 = (lam[idx] * null_w[idx]).sum()
            v = v + np.where(g0 == 0, 0.0, g0 * w0)
        return v

    all_idx = np.arange(N)
    if bands is not None:
        band_Qs = [band_Q(idx) for idx in bands]
        covered = np.sort(np.concatenate(bands)) if len(bands) else np.array([], int)
        Q_all = sum(band_Qs) if np.array_equal(covered, all_idx) else band_Q(all_idx)
    else:
        Q_all = band_Q(all_idx)
    out = {
        "bias": bias_sum(all_idx, Q_all),
        "variance_label_noise": var_sum(g_lab, lab0, all_idx),
        "variance_langevin": var_sum(g_lang, lang0, all_idx),
        "variance_init": var_sum(g_init, init0, all_idx),
    }
    if bands is not None:
        out["band_bias"] = np.stack([bias_sum(idx, Q) for idx, Q in zip(bands, band_Qs)], axis=1)
        for name, g, g0 in (("label_noise", g_lab, lab0), ("langevin", g_lang, lang0),
                            ("init", g_init, init0)):
            out["band_variance_" + name] = np.stack([var_sum(g, g0, idx) for idx in bands], axis=1)
    if modes:
        m_diag = b @ V2.T  # (T, N): M_kk
        W = V[None, :, :] * b[:, None, :]  # (T, N, r)
        q = ((W @ G_s) * W).sum(axis=2)  # (M S M)_kk
        out["mode_bias"] = lam * (q - 2.0 * m_diag * s + s)

        def var_modes(g, g0):
            v = g @ V2.T
            if r < N:
                v = v + np.where(g0[:, None] == 0, 0.0, g0[:, None] * null_w[None, :])
            return lam * v

        out["mode_variance_label_noise"] = var_modes(g_lab, lab0)
        out["mode_variance_langevin"] = var_modes(g_lang, lang0)
        out["mode_variance_init"] = var_modes(g_init, init0)

    train = ((b - 1.0) ** 2 * c) @ np.diag(G_s)
    train = train + label_noise * (((1.0 - b) ** 2).sum(axis=1) + (P - r))
    train = train + (g_lang + g_init) @ c
    out["train_error"] = train / P
    return out


class MCResult:
    """Dataset averages (``mean[name]``, also as attributes) and standard errors (``se[name]``).

    Totals (T,): generalization_error, bias, variance, variance_label_noise, variance_langevin,
    variance_init, train_error.  Bands (T, B): band_error, band_bias, band_variance,
    band_variance_<source>.  Modes (T, N) when requested: mode_error, mode_bias, mode_variance,
    mode_variance_<source>.  ``per_dataset[name]`` keeps the (n_datasets, T) totals.
    """

    def __init__(self, times, n_datasets, mean, se, per_dataset):
        self.times = times
        self.n_datasets = n_datasets
        self.mean = mean
        self.se = se
        self.per_dataset = per_dataset

    def __getattr__(self, name):
        mean = self.__dict__.get("mean", {})
        if name in mean:
            return mean[name]
        raise AttributeError(name)


def log_bands(n_modes: int, n_bands: int = 6):
    """Log-spaced bands of mode indices (0-based), as a list of index arrays covering 0..N-1."""
    edges = np.unique(np.round(np.logspace(0, np.log10(n_modes), n_bands + 1)).astype(int))
    edges[0] = 0
    edges[-1] = n_modes
    return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _complete(d, prefix):
    src = ("label_noise", "langevin", "init")
    var = sum(d[prefix + "variance_" + k] for k in src)
    d[prefix + "variance"] = var
    d[prefix + ("error" if prefix else "generalization_error")] = d[prefix + "bias"] + var


def monte_carlo(lam, target_second_moment, n_samples, times, label_noise=0.0,
                weight_decay=0.0, temperature=0.0, init_variance=0.0, n_datasets=200,
                seed=0, bands=None, modes=False, spectral=None) -> MCResult:
    """Average :func:`dataset_quantities` over ``n_datasets`` independent Gaussian designs
    (seeded with ``seed``); standard errors are over datasets (ddof = 1)."""
    lam = np.asarray(lam, dtype=np.float64)
    s = np.asarray(target_second_moment, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if lam.shape != s.shape or lam.ndim != 1:
        raise ValueError("lam and target_second_moment must be 1-d arrays of equal length")
    N = lam.size
    P = int(n_samples)
    rng = np.random.default_rng(seed)
    sqrt_lam = np.sqrt(lam)
    samples = {}
    with single_thread_blas():
        for _ in range(n_datasets):
            X = rng.standard_normal((P, N)) * sqrt_lam
            d = dataset_quantities(X, lam, s, times, label_noise, weight_decay, temperature,
                                   init_variance, bands=bands, modes=modes, spectral=spectral)
            _complete(d, "")
            if bands is not None:
                _complete(d, "band_")
            if modes:
                _complete(d, "mode_")
            for k, v in d.items():
                samples.setdefault(k, []).append(v)
    mean, se, per_dataset = {}, {}, {}
    n = n_datasets
    for k, v in samples.items():
        arr = np.array(v)
        with np.errstate(invalid="ignore", over="ignore"):
            mean[k] = arr.mean(axis=0)
            se[k] = arr.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.full(arr.shape[1:], np.inf)
        if arr.ndim == 2:
            per_dataset[k] = arr
    return MCResult(times, n, mean, se, per_dataset)
