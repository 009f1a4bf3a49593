"""Typical-case DMFT predictions for gradient flow, weight decay, Langevin and Bayesian regression.

The derivation and every formula used here are in docs/theory.md (section numbers in comments).
In short: in the Laplace domain each eigenmode k is an independent linear process whose coupling to
the others enters only through the collective effective ridge kappa(z), z = s + weight_decay, and
through one common effective noise whose two-time statistics give the 1/(1 - Gamma_12) factor.
Single-time quantities (noise variances, train error) are 1-D inverse Laplace transforms; the bias
needs the two-time function, inverted on the product of two contours. t = 0 and t = inf are
evaluated in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.linalg import blas

from .kappa import _chunk_sums, _PairwiseSum, kappa_on_contour, kappa_real
from .laplace import time_windows, unit_hyperbola

__all__ = ["Prediction", "predict"]


@dataclass(frozen=True)
class Prediction:
    """DMFT prediction on a time grid. Arrays over times have shape (T,), per-mode arrays (T, N).

    The totals are computed by ``predict``; the per-mode arrays (``mode_*``) cost O(T N nodes^2)
    and are computed only when one of them is first read (all of them at once), then cached.

    Conventions (docs/theory.md): E_g = sum_k lam_k (w_k - wstar_k)^2 averaged over everything,
    bias from the noise-averaged weights, variance = E_g - bias split by source, train error
    (1/P) sum_mu (y_mu - f(x_mu))^2 with noisy labels.
    """

    times: np.ndarray
    generalization_error: np.ndarray
    bias: np.ndarray
    variance: np.ndarray
    variance_label_noise: np.ndarray
    variance_langevin: np.ndarray
    variance_init: np.ndarray
    train_error: np.ndarray
    train_bias: np.ndarray
    train_variance: np.ndarray
    eigenvalues: np.ndarray
    target_second_moment: np.ndarray
    n_samples: int
    label_noise: float
    tail_power: float
    weight_decay: float
    temperature: float
    init_variance: float
    effective_ridge: float
    degrees_of_freedom: float
    gamma: float
    success: bool
    message: str
    max_residual: float = field(default=0.0)
    n_features: int | None = None    # random-projection student width N (None: aligned student)
    projection_tail: float = 0.0     # tau^2: teacher power outside the span of the N features
    _modes: "_ModeArrays | None" = field(default=None, repr=False, compare=False)

    # per-mode arrays (T, N): computed from the stored window data on first access, then cached
    @property
    def mode_error(self) -> np.ndarray:
        """e_k(t) = mode_bias + mode_variance; sum_k e_k = E_g - tail_power."""
        return self._mode("error")

    @property
    def mode_bias(self) -> np.ndarray:
        return self._mode("bias")

    @property
    def mode_variance(self) -> np.ndarray:
        return self._mode("variance")

    @property
    def mode_variance_label_noise(self) -> np.ndarray:
        return self._mode("lab")

    @property
    def mode_variance_langevin(self) -> np.ndarray:
        return self._mode("lan")

    @property
    def mode_variance_init(self) -> np.ndarray:
        return self._mode("init")

    @property
    def mode_response(self) -> np.ndarray:
        """E[g_t(H)]_kk: the mean residual fraction of mode k (1 at t = 0)."""
        return self._mode("response")

    def _mode(self, key: str) -> np.ndarray:
        if self._modes is None:
            raise AttributeError("this Prediction carries no per-mode data")
        return self._modes.get(key)

    def columns(self) -> dict[str, np.ndarray]:
        """Totals as a column dict (for CSV / pandas)."""
        return {
            "time": self.times,
            "E_g": self.generalization_error,
            "bias": self.bias,
            "variance": self.variance,
            "variance_label_noise": self.variance_label_noise,
            "variance_langevin": self.variance_langevin,
            "variance_init": self.variance_init,
            "train_error": self.train_error,
        }


# ----------------------------------------------------------------------------- validation


def _scalar(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: must be a real number >= 0") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name}={value!r}: must be a finite number >= 0")
    return value


def _validate(eigenvalues, target_second_moment, n_samples, times, **scalars):
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues: must be a non-empty 1-D array, got shape {lam.shape}")
    if not np.all(np.isfinite(lam)) or np.any(lam <= 0):
        raise ValueError("eigenvalues: must all be finite and > 0")
    w2 = np.asarray(target_second_moment, dtype=np.float64)
    if w2.shape != lam.shape:
        raise ValueError(f"target_second_moment: shape {w2.shape} does not match eigenvalues {lam.shape}")
    if not np.all(np.isfinite(w2)) or np.any(w2 < 0):
        raise ValueError("target_second_moment: must all be finite and >= 0")
    if isinstance(n_samples, bool) or not np.isscalar(n_samples) or not np.isfinite(float(n_samples)) \
            or float(n_samples) < 1 or not float(n_samples).is_integer():
        raise ValueError(f"n_samples={n_samples!r}: must be a positive integer")
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1 or t.size == 0:
        raise ValueError("times: must be a non-empty 1-D array")
    if np.any(np.isnan(t)) or np.any(t < 0):
        raise ValueError("times: must be >= 0 (numpy.inf allowed), no NaN")
    return lam, w2, int(n_samples), t, {k: _scalar(k, v) for k, v in scalars.items()}


# ----------------------------------------------------------------------------- closed forms


def _limit_infinity(lam, w2, P, lab, wd, T, s0):
    """Per-mode components and train parts at t = inf (docs/theory.md, 'Limits')."""
    N = lam.size
    kappa = float(kappa_real(lam, P, np.array([wd]))[0])
    a = lam / (kappa + lam)
    b = kappa / (kappa + lam)
    gamma = float(np.sum(a * a) / P)
    one_m_g = 1.0 - gamma
    dk = np.inf if one_m_g <= 0 else 1.0 / (P * one_m_g)  # dkappa/dz
    E = float(np.sum(lam * w2 / (kappa + lam) ** 2) / P)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = lam * b * b * (w2 + lam * E * dk * P) if kappa > 0 else np.zeros(N)
        var_lab = lab * a * a * dk if lab > 0 else np.zeros(N)
        if T == 0:
            var_lan = np.zeros(N)
        elif wd > 0:
            var_lan = T * lam * b / wd
        elif kappa > 0:  # null space of the data: unbounded linear growth
            var_lan = np.full(N, np.inf)
        else:
            var_lan = T * dk * np.ones(N)
        var_init = s0 * lam * b if (wd == 0 and kappa > 0) else np.zeros(N)
        da = lam * dk / (kappa + lam) ** 2  # -d a_k / dz
        tr_bias = wd**2 * np.sum(w2 * da) / P if wd > 0 else 0.0
        if lab == 0:
            tr_lab = 0.0
        elif wd > 0:
            db = lam * dk / (kappa + lam) ** 2
            dD = db / wd - b / wd**2
            tr_lab = lab * (np.sum(-wd**2 * dD) / P + (P - N) / P)
        else:
            tr_lab = lab * (np.sum(b) / P + (P - N) / P)
        tr_lan = T * np.sum(a) / P if T > 0 else 0.0
    return dict(bias=bias, lab=var_lab, lan=var_lan, init=var_init, tr_bias=tr_bias,
                tr_lab=tr_lab, tr_noise=tr_lan, response=b), kappa, gamma


def _limit_zero(lam, w2, P, lab, s0):
    N = lam.size
    return dict(bias=lam * w2, lab=np.zeros(N), lan=np.zeros(N), init=s0 * lam,
                tr_bias=float(np.sum(lam * w2)), tr_lab=lab, tr_noise=s0 * float(lam.sum()),
                response=np.ones(N))


# ----------------------------------------------------------------------------- the engine


def predict(eigenvalues, target_second_moment, n_samples, times, label_noise=0.0, weight_decay=0.0,
            temperature=0.0, init_variance=0.0, *, tail_power: float = 0.0,
            quadrature_nodes: int = 32, n_features: int | None = None, learning_rate=None,
            momentum: float = 0.0) -> Prediction:
    """Typical-case DMFT prediction of the learning curves of linear random-feature regression.

    Parameters
    ----------
    eigenvalues : (N,) kernel eigenvalues lam_k > 0.
    target_second_moment : (N,) E[wstar_k^2] >= 0 of the teacher in the eigenbasis.
    n_samples : number of training samples P.
    times : (T,) times >= 0; numpy.inf gives the exact t -> inf limit (ridge / posterior).
    label_noise, weight_decay, temperature, init_variance : see docs/theory.md.
    tail_power : target power sum_{k > N} lam_k E[wstar_k^2] of teacher modes the student lacks
        (finite model size). It enters the training labels like label noise but is fixed per data
        set, so its effect counts as bias; it is also an irreducible part of E_g (not of any mode).
    quadrature_nodes : nodes per half contour of the inverse Laplace transform (24 or 32).
    n_features : None for the aligned student (width = len(eigenvalues)); an integer N for the
        random-projection student f(x) = w . A psi(x)/sqrt(N) of the M = len(eigenvalues) teacher
        modes (docs/theory.md section 9; per-mode arrays are then over the M teacher modes).
    learning_rate : None (default) for gradient flow in continuous time; a step size eta > 0 for
        gradient descent with full-batch steps w <- w - eta grad L (+ sqrt(2 T eta) xi for
        T > 0: Euler-Maruyama SGLD). Times stay in gradient-flow units: t is the state after
        n = t / eta steps (t must be a multiple of eta); t = inf is the fixed point or the
        stationary law. A step beyond the stable range of the typical spectrum
        (eta lambda_edge >= 2) is a ValueError. docs/theory.md, section 10.
    momentum : heavy-ball momentum; only 0 is implemented in discrete time.

    The totals (E_g, bias, variances, train error) are computed here, at O(N nodes^2) per decade
    of time. The per-mode arrays ``mode_error``, ``mode_bias``, ``mode_variance``,
    ``mode_variance_label_noise``, ``mode_variance_langevin``, ``mode_variance_init`` and
    ``mode_response`` (shape (T, N), O(T N nodes^2)) are computed on the first read of any of them
    from data kept in the result, and cached; a caller that reads only totals never pays for them.
    """
    if n_features is not None and (learning_rate is not None or momentum != 0):
        raise ValueError("n_features with learning_rate/momentum: the discrete-time theory of the "
                         "random-projection student is not implemented; use learning_rate=None")
    if n_features is not None:
        return _predict_projected(eigenvalues, target_second_moment, n_samples, times, label_noise,
                                  weight_decay, temperature, init_variance, tail_power, quadrature_nodes,
                                  n_features)
    if learning_rate is not None or momentum != 0:
        from .discrete import predict_discrete  # the discrete-time kernel (imports this module)

        with _blas_single_thread():
            return predict_discrete(eigenvalues, target_second_moment, n_samples, times, label_noise,
                                    weight_decay, temperature, init_variance, tail_power,
                                    quadrature_nodes, learning_rate, momentum)
    with _blas_single_thread():
        return _predict(eigenvalues, target_second_moment, n_samples, times, label_noise, weight_decay,
                        temperature, init_variance, tail_power, quadrature_nodes)


def _predict_projected(eigenvalues, target_second_moment, n_samples, times, label_noise, weight_decay,
                       temperature, init_variance, tail_power, quadrature_nodes, n_features):
    from .projection import predict_projected  # imports this module: resolved at call time

    if isinstance(n_features, bool) or not float(n_features).is_integer() or int(n_features) < 1:
        raise ValueError(f"n_features={n_features!r}: must be a positive integer or None")
    if tail_power != 0:
        raise ValueError("tail_power: must be 0 with n_features (all M teacher modes are given)")
    lam, w2, P, t, sc = _validate(eigenvalues, target_second_moment, n_samples, times,
                                  label_noise=label_noise, weight_decay=weight_decay,
                                  temperature=temperature, init_variance=init_variance)
    unit_hyperbola(quadrature_nodes)  # checks the node count
    return predict_projected(lam, w2, P, int(n_features), t, sc["label_noise"], sc["weight_decay"],
                             sc["temperature"], sc["init_variance"], quadrature_nodes)


def _blas_single_thread():
    """BLAS limited to one thread while the engine runs: its products are thin (n x N)(N x n) ones
    that gain little from threads, while busy-waiting BLAS threads on a shared machine made the
    engine 2-6x slower, and a fixed thread count makes results bit-reproducible."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


_COMPONENTS = ("bias", "lab", "lan", "init", "response")


def _predict(eigenvalues, target_second_moment, n_samples, times, label_noise, weight_decay, temperature,
             init_variance, tail_power, quadrature_nodes) -> Prediction:
    lam, w2, P, t, sc = _validate(eigenvalues, target_second_moment, n_samples, times,
                                  label_noise=label_noise, weight_decay=weight_decay,
                                  temperature=temperature, init_variance=init_variance,
                                  tail_power=tail_power)
    wd, T, s0, tail = sc["weight_decay"], sc["temperature"], sc["init_variance"], sc["tail_power"]
    # the missing tail acts on the labels like noise: solve with the total, split afterwards
    lab = sc["label_noise"] + tail
    f_tail = tail / lab if lab > 0 else 0.0
    nT = t.size
    lw = lam * w2

    tot = {c: np.zeros(nT) for c in ("bias", "lab", "lan", "init", "tr_bias", "tr_lab", "tr_noise")}

    def put(i, d):
        for c in ("bias", "lab", "lan", "init"):
            tot[c][i] = np.sum(d[c])
        for c in ("tr_bias", "tr_lab", "tr_noise"):
            tot[c][i] = d[c]

    inf_d, kappa_inf, gamma_inf = _limit_infinity(lam, w2, P, lab, wd, T, s0)
    zero_d = _limit_zero(lam, w2, P, lab, s0)
    inf_idx, zero_idx = np.flatnonzero(np.isinf(t)), np.flatnonzero(t == 0)
    for i in inf_idx:
        put(i, inf_d)
    for i in zero_idx:
        put(i, zero_d)

    finite = np.flatnonzero(np.isfinite(t) & (t > 0))
    max_resid = 0.0
    windows = []
    if finite.size:
        groups = [finite[g] for g in time_windows(t[finite])]
        t0s = np.array([t[g].min() for g in groups])
        sigma, thetas, w_unit = unit_hyperbola(quadrature_nodes)
        scales = np.concatenate([1.0 / t0s, 0.5 / t0s])  # z = wd + s and z = wd + s/2
        K, resid = kappa_on_contour(lam, P, wd, sigma, thetas, scales)
        max_resid = float(resid.max())
        sig = sigma(thetas)
        G = len(groups)
        for g, idx in enumerate(groups):
            s = sig / t0s[g]                      # (n,) upper-half nodes
            w = w_unit / t0s[g]
            windows.append(_window(lam, lw, P, lab, wd, T, s0, s, w, K[g], K[G + g], t[idx], idx, tot))

    with np.errstate(invalid="ignore"):
        # (guarded: 0 * inf must stay 0 where the label variance diverges, e.g. at P = N)
        bias = tot["bias"] + (f_tail * tot["lab"] + tail if tail > 0 else 0.0)
        lab_v, lan_v, init_v = (1.0 - f_tail) * tot["lab"], tot["lan"], tot["init"]
        variance = lab_v + lan_v + init_v
        eg = bias + variance
        train_bias = tot["tr_bias"] + (f_tail * tot["tr_lab"] if tail > 0 else 0.0)
        train_var = (1.0 - f_tail) * tot["tr_lab"] + tot["tr_noise"]
        train = train_bias + train_var
    ok = bool(max_resid < 1e-6) and not np.any(np.isnan(eg))
    msg = ("converged" if ok else
           f"effective-ridge solve residual {max_resid:.2e} (or NaN output); results may be inaccurate")
    a_inf = lam / (kappa_inf + lam)
    modes = _ModeArrays(lam=lam, lw=lw, lab=lab, wd=wd, T=T, s0=s0, f_tail=f_tail, tail=tail, n_times=nT,
                        rows=[(inf_idx, {c: inf_d[c] for c in _COMPONENTS}),
                              (zero_idx, {c: zero_d[c] for c in _COMPONENTS})],
                        windows=windows)
    return Prediction(
        times=t, generalization_error=eg, bias=bias, variance=variance,
        variance_label_noise=lab_v, variance_langevin=lan_v, variance_init=init_v,
        train_error=train, train_bias=train_bias, train_variance=train_var,
        eigenvalues=lam, target_second_moment=w2, n_samples=P, label_noise=sc["label_noise"],
        tail_power=tail, weight_decay=wd,
        temperature=T, init_variance=s0, effective_ridge=kappa_inf,
        degrees_of_freedom=float(a_inf.sum()), gamma=gamma_inf, success=ok, message=msg,
        max_residual=max_resid, _modes=modes,
    )


_BLOCK = 1024  # modes per block of the window sums: the block's arrays (2 MiB) stay in cache


def _window_sums(lam, V, k1, k2, d_list):
    """Mode sums of one window, blocked over modes so that every elementwise pass runs in cache.

    With A1 = 1/(k1 + lam), A2 = 1/(k2 + lam) (N, n): returns V^T A1, V^T A2 and V^T (A1 A2)
    (each (J, n)) for real V (J, N), and for each d in d_list (d >= 0) the real Gram matrix
    sum_k d_k r_k r_k^T (2n, 2n) of the real views r_k = (Re A1_k1, Im A1_k1, Re A1_k2, ...) of
    the rows of A1 (upper triangle; :func:`_gram_full` completes it). The sums are real matrix
    products on real views, summed pairwise over blocks; a real rank-k update (dsyrk) of the
    (N, 2n) real view is half the flops of the complex zsyrk + zherk pair that gives the same two
    blocks.
    """
    N, n = lam.size, k1.size
    W = np.empty((3, min(_BLOCK, N), n), dtype=np.complex128)               # A1, A2, A1 A2
    Bt = np.empty((min(_BLOCK, N), 2 * n))
    sums = [_PairwiseSum() for _ in range(3)]
    roots = [np.sqrt(d) for d in d_list]
    grams = [_PairwiseSum() for _ in d_list]
    for i in range(0, N, _BLOCK):
        m = min(_BLOCK, N - i)
        lb = lam[i:i + m, None]
        A1, A2, P12 = W[0, :m], W[1, :m], W[2, :m]
        np.add(lb, k1, out=A1)
        np.reciprocal(A1, out=A1)
        np.add(lb, k2, out=A2)
        np.reciprocal(A2, out=A2)
        np.multiply(A1, A2, out=P12)
        Vb = V[:, i:i + m]
        for acc, A in zip(sums, (A1, A2, P12)):
            acc.add(_chunk_sums(Vb, A.view(np.float64)))
        a1 = A1.view(np.float64)                                             # (m, 2n) real view
        for acc, r in zip(grams, roots):
            b = Bt[:m]
            np.multiply(a1, r[i:i + m, None], out=b)
            acc.add(blas.dsyrk(1.0, b.T, trans=0))
    m1, m2, m12 = (np.ascontiguousarray(acc.total()).view(np.complex128) for acc in sums)
    return m1, m2, m12, [acc.total() for acc in grams]


def _gram_full(G: np.ndarray) -> np.ndarray:
    """Af^T diag(d) Af with Af = [A1, conj(A1)] (N, 2n), from the real Gram G of :func:`_window_sums`.

    With A1 = X + iY: the upper-left block A1^T D A1 = XX - YY + i (XY + YX), the upper-right
    A1^T D conj(A1) = XX + YY + i (YX - XY); the lower blocks are their conjugates.
    """
    n = G.shape[0] // 2
    G = np.triu(G) + np.triu(G, 1).T
    XX, YY, XY = G[0::2, 0::2], G[1::2, 1::2], G[0::2, 1::2]                # XY[m, l] = sum X_m Y_l
    S = (XX - YY) + 1j * (XY + XY.T)
    H = (XX + YY) + 1j * (XY.T - XY)
    up = np.concatenate([S, H], axis=1)
    return np.concatenate([up, np.conj(np.roll(up, n, axis=1))], axis=0)


def _window(lam, lw, P, lab, wd, T, s0, s, w, k1, k2, tg, idx, tot):
    """Totals for the times tg of one contour window (docs/theory.md, 'Laplace domain'); returns
    what the per-mode arrays of these times need later (:meth:`_ModeArrays.compute`).

    k1 = kappa(wd + s), k2 = kappa(wd + s/2) on the n upper-half nodes s with weights w.
    """
    N = lam.size
    z1, z2 = wd + s, wd + 0.5 * s
    # 1-D inversion on the upper half contour: f(t) = 2 Re sum_m w_m e^{s_m t} F(s_m)
    ker = 2.0 * w[:, None] * np.exp(s[:, None] * tg[None, :])              # (n, Tg)
    inv = lambda F: np.real(F @ ker)                                         # noqa: E731

    # mode sums: rows of V are the weights summed against A1, A2 and A1 A2 (A = 1/(kappa + lam));
    # the Gram matrices of A1 weighted by lam w2 / P and lam^2 give the two-time bias kernel
    V = np.stack([np.ones(N), lam, lam**2, lw])                              # (4, N)
    m1, m2, m12, (E12, M2) = _window_sums(lam, V, k1, k2, [lw / P, lam**2])
    m1, m2, m12 = m1[0], m2.T, m12.T                                         # (n,), (n, 4), (n, 4)
    ONE, LAM, LAM2, LW = range(4)
    # P (1 - Gamma(k1, k2)): two exact forms, take the one without cancellation (as in kappa.py)
    g_a = m12[:, LAM2]
    g_b = k1 * k2 * m12[:, ONE] + (k1 + k2) * m12[:, LAM]
    one_m_gam = np.where(np.abs(g_a) <= np.abs(g_b), P - g_a, (P - N) + g_b)
    dk = (z2 - z1) / one_m_gam                                               # k2 - k1 (stable)
    # a2 - a1 = -lam dk A1 A2 ;  D2 - D1 = -(a2 - a1)/z2 + b1 (s/2)/(z1 z2)
    cw = 2.0 * wd * z1 / s**2
    # sum_k w2_k [C g_t(H)^2]_kk / P with a_k = lam_k A_k
    S_trb = (0.5 * m2[:, LW] - cw * dk * m12[:, LW]) / P
    sum_D2 = k2 * m2[:, ONE] / z2
    sum_dD = dk * m12[:, LAM] / z2 + k1 * m1 * (0.5 * s) / (z1 * z2)
    S_trl = lab * (0.5 * sum_D2 + cw * sum_dD) / P
    S_trn = (T / s + 0.5 * s0) * m2[:, LAM] / P
    tot["tr_bias"][idx] = inv(S_trb)
    tot["tr_lab"][idx] = inv(S_trl) + lab * (P - N) / P
    tot["tr_noise"][idx] = inv(S_trn)

    # two-time bias: Laplace kernel P k1 k2 E12 / ((1 - Gamma12) s1 s2) on the full contour
    kf = np.concatenate([k1, np.conj(k1)])
    sf = np.concatenate([s, np.conj(s)])
    wf = np.concatenate([w, np.conj(w)])                                     # w(-theta) = conj(w)
    E12, M2 = _gram_full(E12), _gram_full(M2)
    one_m_G = (P - M2) / P
    # P - M2 loses digits only where it nearly vanishes (P ~ N, kappa -> 0): there use the exact
    # complementary form (P - N) + sum (k1 k2 + lam (k1 + k2)) A1 A2, which needs two more Grams
    if np.any(np.abs(P - M2) < 1e-5 * np.abs(M2)):
        *_, (M0, M1) = _window_sums(lam, V[:1], k1, k2, [np.ones(N), lam])
        M0, M1 = _gram_full(M0), _gram_full(M1)
        G_b = M0 * np.outer(kf, kf) + M1 * (kf[:, None] + kf[None, :])
        one_m_G = np.where(np.abs(M2) <= np.abs(G_b), P - M2, (P - N) + G_b) / P
    Q = E12 / one_m_G
    ef = wf[:, None] * np.exp(sf[:, None] * tg[None, :]) / sf[:, None]       # (2n, Tg)
    c = ef * kf[:, None]
    tot["bias"][idx] = P * np.real(np.einsum("mt,mk,kt->t", c, Q, c))

    # sum_k of the per-mode transforms of _window_modes
    tot["lab"][idx] = inv(-lab * (2.0 / s**2) * dk * m12[:, LAM2])
    tot["lan"][idx] = inv(T * k2 * m2[:, LAM] / (z2 * s))
    tot["init"][idx] = inv(0.5 * s0 * k2 * m2[:, LAM] / z2)
    return _Window(idx=idx, s=s, w=w, k1=k1, k2=k2, dk=dk, Q=Q, ef=ef, ker=ker)


@dataclass(frozen=True)
class _Window:
    """What one contour window's per-mode arrays need: times idx, nodes s and weights w (n,),
    kappa at z1 and z2, k2 - k1, the two-time kernel Q (2n, 2n) and the inversion kernels."""

    idx: np.ndarray
    s: np.ndarray
    w: np.ndarray
    k1: np.ndarray
    k2: np.ndarray
    dk: np.ndarray
    Q: np.ndarray
    ef: np.ndarray
    ker: np.ndarray


def _window_modes(lam, lw, lab, wd, T, s0, win: _Window, mode):
    """Per-mode arrays (docs/theory.md, table of section 4) for the times of one window."""
    s, k1, k2, idx = win.s, win.k1, win.k2, win.idx
    z2 = wd + 0.5 * s
    inv = lambda F: np.real(F @ win.ker)                                     # noqa: E731
    A1 = 1.0 / (k1[None, :] + lam[:, None])                                  # (N, n)
    A2 = 1.0 / (k2[None, :] + lam[:, None])
    P12 = A1 * A2
    lam_c = lam[:, None]
    b1, b2 = k1[None, :] * A1, k2[None, :] * A2
    F = {
        "lab": -lab * lam_c**2 * (2.0 / s**2) * win.dk[None, :] * P12,
        "lan": T * lam_c * b2 / (z2 * s),
        "init": 0.5 * s0 * lam_c * b2 / z2,
        "response": b1 / s,
    }
    for key, Fk in F.items():
        mode[key][idx] = inv(Fk).T                                           # (Tg, N)
    beta = mode["response"][idx]
    Bf = np.concatenate([b1, np.conj(b1)], axis=1)                           # (N, 2n)
    for j, i in enumerate(idx):
        y = Bf * win.ef[None, :, j]                                          # (N, 2n)
        quad = np.real(np.sum((y @ win.Q) * y, axis=1))
        mode["bias"][i] = lw * beta[j] ** 2 + lam**2 * quad


class _LazyModes:
    """Per-mode arrays computed all at once by ``compute()`` on the first ``get(key)``, then cached
    (the base of the continuous, discrete-time and projected engines' mode arrays)."""

    cache: dict

    def get(self, key: str) -> np.ndarray:
        if not self.cache:
            with _blas_single_thread():
                self.cache = self.compute()
        return self.cache[key]


class _ModeArrays(_LazyModes):
    """Lazy per-mode arrays of one prediction: the data to compute them (O(N) vectors and, per
    contour window, O(nodes^2) kernels) and, after the first request, the (T, N) arrays.

    A plain object of numpy arrays, so a Prediction pickles and copies with or without them.
    """

    def __init__(self, *, lam, lw, lab, wd, T, s0, f_tail, tail, n_times, rows, windows):
        self.lam, self.lw, self.lab, self.wd, self.T, self.s0 = lam, lw, lab, wd, T, s0
        self.f_tail, self.tail, self.n_times = f_tail, tail, n_times
        self.rows, self.windows = rows, windows
        self.cache: dict[str, np.ndarray] = {}


    def compute(self) -> dict[str, np.ndarray]:
        lam = self.lam
        mode = {c: np.zeros((self.n_times, lam.size)) for c in _COMPONENTS}
        for idx, d in self.rows:                                             # t = inf and t = 0
            for i in idx:
                for c in _COMPONENTS:
                    mode[c][i] = d[c]
        for win in self.windows:
            _window_modes(lam, self.lw, self.lab, self.wd, self.T, self.s0, win, mode)
        if self.tail > 0:
            mode["bias"] = mode["bias"] + self.f_tail * mode["lab"]
            mode["lab"] = (1.0 - self.f_tail) * mode["lab"]
        mode["variance"] = mode["lab"] + mode["lan"] + mode["init"]
        mode["error"] = mode["bias"] + mode["variance"]
        return mode
