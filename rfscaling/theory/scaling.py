"""Scaling-law exponents of the power-law task: derived values, power-law fits, engine checks.

Task (docs/theory.md, section 1): lam_k = lam_1 k^-(1+alpha), lam_k E[wstar_k^2] = c k^-(1+beta).
Every exponent here is derived in docs/theory.md, section 8, from one picture: mode k is learned
at rate P lam_k, so after time t the modes k < k*(t) = (P lam_1 t)^(1/(1+alpha)) are learned; the
unlearned tail carries sum_{k > k*} c k^-(1+beta) ~ k*^-beta, and every learned mode carries a
variance ~ (noise)/P. Sums over k are turned into integrals.

Exponents are *signed*: a law ``y ∝ x^s`` has ``slope = s`` (negative for a decaying error).
:func:`fit_power_law` fits ``y ≈ A x^-p`` and returns the decay exponent ``p`` (``slope = -p``).

Sections: derived laws (:func:`predicted_exponents`), closed-form asymptotes, power-law fits
(:func:`fit_power_law`), and engine checks (:func:`measure`, :func:`exponent_table`), which run
:func:`rfscaling.theory.predict` deep in each asymptotic regime and fit the curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.optimize import minimize_scalar
from scipy.special import gamma as _gamma
from scipy.special import zeta as _zeta

from .dmft import predict
from .spectra import power_law_tail, power_law_task

__all__ = ["REGIMES", "ScalingLaw", "predicted_exponents", "time_limited_error", "kick_error",
           "model_limited_error", "langevin_variance", "langevin_optimal_time",
           "langevin_optimal_error", "gf_noisy_optimal_time", "PowerLawFit", "fit_power_law",
           "Measurement", "PRECISION_FLOOR", "RangeUnavailable", "measure", "exponent_table"]

REGIMES = (
    "time",            # noiseless gradient flow, P, N >> k*(t)
    "time_saturated",  # noiseless gradient flow, beta > 2(1+alpha), P^(1/(beta-1-2alpha)) << k*(t) << P
    "data",            # noiseless, t = inf (ridgeless), N = inf
    "model",           # P, t -> inf, P >> N
    "early_stopping",  # label noise, gradient flow stopped at the optimal time, N = inf
    "ridge_optimal",   # label noise, t = inf, optimal weight decay
    "ridge_fixed",     # t = inf, fixed weight decay
    "bayes",           # posterior samples: fixed weight decay and temperature, t = inf
    "langevin",        # weight_decay = 0, temperature T > 0
    "compute",         # compute-optimal frontier at fixed P (P >> N*)
    "compute_global",  # compute-optimal frontier optimised over P, N and t
)


@dataclass(frozen=True)
class ScalingLaw:
    """One derived law ``y ∝ x^slope`` valid under ``condition``."""

    regime: str
    y: str
    x: str
    slope: float
    formula: str
    condition: str
    note: str = ""

    @property
    def law(self) -> str:
        return f"{self.y} ∝ {self.x}^({self.formula})"


def _check_ab(alpha, beta):
    alpha, beta = float(alpha), float(beta)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha}: must be a finite number > 0")
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta={beta}: must be a finite number > 0")
    return alpha, beta


_SAT = " (log correction at beta = 2(1+alpha))"
_KSTAR = "k*(t) = (P lam_1 t)^(1/(1+alpha))"


def _gradient_flow_laws(a, b):
    """Noiseless laws: the time-, data- and model-limited regimes."""
    bs, q = min(b, 2.0 * (1.0 + a)), 1.0 / (1.0 + a)
    return [
        ScalingLaw("time", "E_g", "t", -b * q, "-beta/(1+alpha)",
                   f"noiseless gradient flow, {_KSTAR} << min(P, N); if beta > 2(1+alpha) also "
                   "k* << P^(1/(beta-1-2alpha))",
                   "E_g -> c Gamma(beta/(1+alpha))/(1+alpha) (2 P lam_1 t)^(-beta/(1+alpha))"),
        ScalingLaw("time", "E_g", "P", -b * q, "-beta/(1+alpha)",
                   f"noiseless gradient flow at fixed t, {_KSTAR} << min(P, N) (and as above)",
                   "E_g depends on P and t only through P t"),
        ScalingLaw("time_saturated", "E_g", "t", -(1.0 + 2.0 * a) * q, "-(1+2alpha)/(1+alpha)",
                   "noiseless gradient flow, beta > 2(1+alpha), P^(1/(beta-1-2alpha)) << k*(t) << P",
                   "finite-P 'kick' of the top modes frozen into the unlearned ones: "
                   "(S_W/P) lam_1^2 q Gamma(2-q) (2 P lam_1 t)^(q-2), S_W = sum_i W_i/lam_i"),
        ScalingLaw("data", "E_g", "P", -bs, "-min(beta, 2(1+alpha))",
                   "noiseless, t = inf (ridgeless interpolant), N = inf" + _SAT,
                   "kappa_0 ∝ P^-(1+alpha); bias kappa_0^2 sum lam W/(lam+kappa_0)^2 saturates at kappa_0^2"),
        ScalingLaw("model", "E_g", "N", -b, "-beta",
                   "P -> inf and t -> inf (P >> N): only the unrepresentable tail remains",
                   "E_g -> c N^-beta / beta (Hurwitz zeta)"),
    ]


def _noisy_laws(a, b):
    """Laws with label noise, weight decay or temperature: optimal stopping, ridge, Bayes, Langevin."""
    bs, q = min(b, 2.0 * (1.0 + a)), 1.0 / (1.0 + a)
    return [
        ScalingLaw("early_stopping", "E_g*", "P", -b / (1.0 + b), "-beta/(1+beta)",
                   "label noise sigma^2 > 0, gradient flow stopped at the optimal time, N = inf",
                   "bias k*^-beta vs variance sigma^2 k*/P; no saturation"),
        ScalingLaw("early_stopping", "t*", "P", (a - b) / (1.0 + b), "(alpha-beta)/(1+beta)",
                   "as above; t* ∝ sigma^(-2(1+alpha)/(1+beta))",
                   "beta = alpha: t* -> (c/lam_1)(1-q) 2^(q-2) / (sigma^2 (1 - 2^(q-1))), q = 1/(1+alpha)"),
        ScalingLaw("ridge_optimal", "E_g*", "P", -bs / (1.0 + bs), "-b'/(1+b'), b' = min(beta, 2(1+alpha))",
                   "label noise sigma^2 > 0, t = inf, weight decay tuned per P" + _SAT),
        ScalingLaw("ridge_optimal", "lambda*", "P", (bs - a) / (1.0 + bs), "(b'-alpha)/(1+b')",
                   "summed loss: weight decay lambda = P x (per-sample ridge)",
                   "beta = alpha: lambda* = sigma^2 lam_1 / c exactly (Bayes-optimal ridge)"),
        ScalingLaw("ridge_fixed", "E_g", "P", -bs * q, "-b'/(1+alpha)",
                   "noiseless, fixed weight decay lambda > 0, t = inf" + _SAT),
        ScalingLaw("ridge_fixed", "E_g", "P", -min(bs, a) * q, "-min(b', alpha)/(1+alpha)",
                   "label noise sigma^2 > 0, fixed lambda > 0, t = inf",
                   "variance sigma^2 k*/P with k* = (P/lambda)^(1/(1+alpha))"),
        ScalingLaw("bayes", "E_g", "P", -min(bs, a) * q, "-min(b', alpha)/(1+alpha)",
                   "posterior samples: fixed weight decay and temperature (prior variance T/lambda), t = inf",
                   "posterior variance (T/lambda) sum lam_k kappa/(lam_k+kappa) ∝ kappa^(alpha/(1+alpha)); "
                   "matched prior (beta = alpha, T/lambda = c/lam_1, sigma^2 = T): E_g = 2 x error of the posterior mean"),
        ScalingLaw("langevin", "variance_langevin", "t", q, "1/(1+alpha)",
                   f"weight decay 0, temperature T, {_KSTAR} << min(P, N)",
                   "-> (T/P) Gamma(1-q) (2 P lam_1 t)^q, q = 1/(1+alpha)"),
        ScalingLaw("langevin", "variance_langevin", "P", q - 1.0, "-alpha/(1+alpha)",
                   "as above, at fixed t"),
        ScalingLaw("langevin", "E_g*", "P", -b / (1.0 + b), "-beta/(1+beta)",
                   "weight decay 0, temperature T > 0, optimal stopping time, N = inf",
                   "beta = alpha: E_g* -> Gamma(1-q) c^q (1-q)^(q-1) (T/P)^(1-q)"),
        ScalingLaw("langevin", "t*", "P", (a - b) / (1.0 + b), "(alpha-beta)/(1+beta)",
                   "as above", "beta = alpha: t* -> (c/lam_1) alpha / (2 (1+alpha) T), independent of P"),
    ]


def _compute_laws(a, b):
    """Compute-optimal frontiers: at fixed P, and optimised over P too."""
    return [
        ScalingLaw("compute", "E_g", "f", -b / (2.0 + a), "-beta/(2+alpha)",
                   "noiseless gradient flow at fixed P, frontier over N and t, 1 << N* << P; "
                   "if beta > 2(1+alpha) also N* << P^(1/(beta-1-2alpha))",
                   "f = 2 P N t lambda_max, lambda_max ≈ P lam_1; E ≈ A (P t)^-beta/(1+alpha) + B N^-beta"),
        ScalingLaw("compute", "N*", "f", 1.0 / (2.0 + a), "1/(2+alpha)", "as above",
                   "N* ≈ k*(t*): the model is as wide as the number of learned modes"),
        ScalingLaw("compute", "t*", "f", (1.0 + a) / (2.0 + a), "(1+alpha)/(2+alpha)", "as above"),
        ScalingLaw("compute_global", "E_g", "f", -b / (3.0 + a), "-beta/(3+alpha)",
                   "frontier over P, N and t; ansatz E = A (P t)^-beta/(1+alpha) + B N^-beta + C P^-beta, "
                   "beta < 2(1+alpha)"),
        ScalingLaw("compute_global", "N*", "f", 1.0 / (3.0 + a), "1/(3+alpha)", "as above"),
        ScalingLaw("compute_global", "P*", "f", 1.0 / (3.0 + a), "1/(3+alpha)", "as above"),
        ScalingLaw("compute_global", "t*", "f", a / (3.0 + a), "alpha/(3+alpha)", "as above"),
    ]


def predicted_exponents(alpha: float, beta: float, regime: str | None = None) -> list[ScalingLaw]:
    """Derived scaling laws for lam_k ∝ k^-(1+alpha), lam_k E[wstar_k^2] ∝ k^-(1+beta).

    ``regime``: one of :data:`REGIMES`, or None for all. Derivations: docs/theory.md, section 8.
    b' = min(beta, 2(1+alpha)) is the saturated source exponent of the ridge-type estimators
    (ridge/ridgeless, Bayes posterior); gradient flow at finite time does not saturate.
    """
    a, b = _check_ab(alpha, beta)
    laws = _gradient_flow_laws(a, b) + _noisy_laws(a, b) + _compute_laws(a, b)   # in REGIMES order
    if regime is None:
        return laws
    if regime not in REGIMES:
        raise ValueError(f"regime={regime!r}: must be one of {REGIMES}")
    return [law for law in laws if law.regime == regime]


# ----------------------------------------------------------------------------- closed-form asymptotes


def time_limited_error(t, P, alpha, beta, lam_1=1.0, c=1.0):
    """Noiseless gradient flow, N = P = inf continuum: c Gamma(b/(1+a))/(1+a) (2 P lam_1 t)^(-b/(1+a))."""
    a, b = _check_ab(alpha, beta)
    return c * _gamma(b / (1 + a)) / (1 + a) * (2.0 * P * lam_1 * np.asarray(t, dtype=float)) ** (-b / (1 + a))


def kick_error(t, P, alpha, beta, lam_1=1.0, c=1.0):
    """Finite-P term of noiseless gradient flow that dominates for beta > 2(1+alpha):
    (S_W / P) lam_1^2 q Gamma(2-q) (2 P lam_1 t)^(q-2), S_W = sum_i W_i/lam_i = c zeta(beta-1-2alpha)/lam_1^2.

    Each learned mode i, while relaxing (time ~ 1/(P lam_i)), pushes every unlearned mode j by
    -(X_j.X_i)/|X_i|^2 v_i(0); the push stays until j is learned: lam_j E[v_j^2] = lam_j^2 S_W / P."""
    a, b = _check_ab(alpha, beta)
    if b <= 2 * (1 + a):
        raise ValueError("kick_error: S_W converges only for beta > 2(1+alpha)")
    q = 1.0 / (1.0 + a)
    s_w = c * float(_zeta(b - 1.0 - 2.0 * a)) / lam_1**2
    x = 2.0 * P * lam_1 * np.asarray(t, dtype=float)
    return s_w / P * lam_1**2 * q * _gamma(2 - q) * x ** (q - 2)


def model_limited_error(N, beta, c=1.0):
    """Leading term c N^-beta / beta of the unrepresentable tail sum_{k > N} c k^-(1+beta)."""
    return c * np.asarray(N, dtype=float) ** (-beta) / beta


def langevin_variance(t, P, alpha, T, lam_1=1.0):
    """Langevin variance (T/P) sum_k (1 - e^{-2 P lam_k t}) of the OU reduction, N = inf:
    (T/P) [Gamma(1-q) (2 P lam_1 t)^q - 1/2], q = 1/(1+alpha) (integral from k = 0 plus the
    Euler-Maclaurin end correction -f(0)/2 of starting the sum at k = 1)."""
    q = 1.0 / (1.0 + float(alpha))
    return T / P * (_gamma(1 - q) * (2.0 * P * lam_1 * np.asarray(t, dtype=float)) ** q - 0.5)


def langevin_optimal_time(alpha, T, lam_1=1.0, c=1.0):
    """Optimal stopping time of Langevin dynamics for beta = alpha, P -> inf: (c/lam_1) a/(2(1+a)T)."""
    a = float(alpha)
    return (c / lam_1) * a / (2.0 * (1.0 + a) * T)


def langevin_optimal_error(alpha, T, P, c=1.0):
    """Minimal E_g of Langevin dynamics for beta = alpha, P -> inf: Gamma(1-q) c^q (1-q)^(q-1) (T/P)^(1-q)."""
    q = 1.0 / (1.0 + float(alpha))
    return _gamma(1 - q) * c**q * (1 - q) ** (q - 1) * (T / np.asarray(P, dtype=float)) ** (1 - q)


def gf_noisy_optimal_time(alpha, label_noise, lam_1=1.0, c=1.0):
    """Optimal stopping time of gradient flow with label noise sigma^2, beta = alpha, P -> inf.

    Per mode bias lam W e^{-2 P lam t}, label variance (sigma^2/P)(1 - e^{-P lam t})^2; setting the
    continuum dE/dt = 0 gives t* = (c/lam_1)(1-q) 2^(q-2) / (sigma^2 (1 - 2^(q-1))), q = 1/(1+alpha).
    """
    q = 1.0 / (1.0 + float(alpha))
    return (c / lam_1) * (1 - q) * 2.0 ** (q - 2) / (label_noise * (1 - 2.0 ** (q - 1)))


# ----------------------------------------------------------------------------- power-law fits


@dataclass(frozen=True)
class PowerLawFit:
    """Fit y ≈ A x^-p. ``ci`` is the confidence interval of p at ``level`` (see :func:`fit_power_law`)."""

    p: float
    prefactor: float
    ci: tuple[float, float]
    stderr: float
    method: str
    level: float
    n_points: int
    x_range: tuple[float, float]
    chi2_dof: float = float("nan")
    local_slopes: np.ndarray | None = field(default=None, repr=False)

    @property
    def slope(self) -> float:
        """Signed exponent s of y ∝ x^s (= -p)."""
        return -self.p

    @property
    def slope_ci(self) -> tuple[float, float]:
        return (-self.ci[1], -self.ci[0])

    def covers(self, p: float) -> bool:
        """True if the decay exponent ``p`` lies in the confidence interval."""
        return bool(self.ci[0] <= p <= self.ci[1])

    def covers_slope(self, s: float) -> bool:
        return self.covers(-s)


def _local_slopes(lx, ly):
    """Decay exponents -dlog y/dlog x between neighbours, at the log-midpoints."""
    return -np.diff(ly) / np.diff(lx), 0.5 * (lx[1:] + lx[:-1])


def fit_power_law(x, y, sigma=None, *, method: str = "auto", x_range=None, level: float = 0.95,
                  absolute_sigma: bool = True, asymptote: str = "right", decades: float = 1.0,
                  atol: float = 0.0, n_boot: int = 2000, rng=None) -> PowerLawFit:
    """Fit y ≈ A x^-p on a log-log range and give a confidence interval for p.

    Parameters
    ----------
    x, y : positive data (points with x or y <= 0 or non-finite are dropped).
    sigma : optional per-point standard errors of y (empirical data). They enter in log space as
        sigma/y (delta method) and weight the fit by (y/sigma)^2.
    method :
        * ``"ols"`` -- (weighted) least squares of log y on log x. Without ``sigma``: residual
          variance, Student-t interval with n - 2 degrees of freedom (exact for Gaussian scatter in
          log y). With ``sigma`` and ``absolute_sigma``: covariance (X^T W X)^-1, normal quantile
          (the errors are taken as known); ``absolute_sigma=False`` rescales by chi^2/dof and uses t.
        * ``"bootstrap"`` -- percentile interval over ``n_boot`` refits: parametric (y* drawn with
          the given sigma around the fit) if ``sigma`` is given, else residual bootstrap (residuals
          inflated by sqrt(n/(n-2))).
        * ``"local"`` -- for deterministic curves (theory), whose deviations from a power law are
          systematic corrections, not noise. p is the local exponent -dlog y/dlog x at the
          asymptotic end (``asymptote`` = ``"right"`` or ``"left"``); the interval is the range of
          the local exponents over the last ``decades`` decades at that end, widened on both sides
          by that same range (the drift per decade) plus ``atol``. If the correction to the local
          exponent decays like x^-omega with omega >= log10(2) per decade, the remaining drift
          beyond the end of the data is at most the drift over the last decade, so the interval
          contains the asymptotic exponent. Log corrections (omega = 0) are *not* covered: they
          show up as an interval that excludes the pure power law.
        * ``"auto"`` -- ``"ols"``.
    x_range : (lo, hi) inclusive fit range in x; None means all points.
    level : confidence level of the interval (ols, bootstrap).
    """
    x, y, s = _usable_points(x, y, sigma, x_range)
    if not 0 < level < 1:
        raise ValueError(f"level={level}: must be in (0, 1)")
    lx, ly = np.log(x), np.log(y)
    xr = (float(x[0]), float(x[-1]))
    if method == "auto":
        method = "ols"
    if method == "local":
        return _fit_local(lx, ly, xr, asymptote, decades, atol)
    if method not in ("ols", "bootstrap"):
        raise ValueError(f"method={method!r}: must be 'ols', 'bootstrap', 'local' or 'auto'")
    sl = None if s is None else s / y            # standard error of log y
    return _fit_log_linear(lx, ly, sl, xr, method, level, absolute_sigma, n_boot, rng)


def _usable_points(x, y, sigma, x_range):
    """Finite positive points (with sigma > 0 where given) inside x_range, sorted by x; >= 3 of them."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y: shapes differ ({x.shape} vs {y.shape})")
    s = None if sigma is None else np.broadcast_to(np.asarray(sigma, dtype=np.float64), y.shape).ravel()
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if s is not None:
        keep &= np.isfinite(s) & (s > 0)
    if x_range is not None:
        lo, hi = x_range
        keep &= (x >= lo * (1 - 1e-12)) & (x <= hi * (1 + 1e-12))
    x, y = x[keep], y[keep]
    s = None if s is None else s[keep]
    order = np.argsort(x)
    x, y = x[order], y[order]
    s = None if s is None else s[order]
    if x.size < 3:
        raise ValueError(f"fit_power_law: need at least 3 usable points, got {x.size}")
    return x, y, s


def _wls(X, w, Y):
    """Weighted least-squares coefficients of Y (a vector, or one column per refit) on X."""
    XtW = X.T * w
    return np.linalg.solve(XtW @ X, XtW @ Y)


def _fit_log_linear(lx, ly, sl, xr, method, level, absolute_sigma, n_boot, rng):
    """Methods 'ols' and 'bootstrap': (weighted, by sl^-2) least squares of log y on log x."""
    n = lx.size
    X = np.stack([np.ones(n), lx], axis=1)
    w = np.ones(n) if sl is None else 1.0 / sl**2
    coef = _wls(X, w, ly)
    resid = ly - X @ coef
    cov, q, chi2_dof = _ols_covariance(X, w, resid, sl is None, absolute_sigma, level)
    p = -float(coef[1])
    A = float(np.exp(coef[0]))
    if method == "ols":
        se = float(np.sqrt(cov[1, 1]))
        return PowerLawFit(p, A, (p - q * se, p + q * se), se, "ols", level, n, xr, chi2_dof)
    pb = -_wls(X, w, _bootstrap_samples(X @ coef, resid, sl, n_boot, rng).T)[1]
    lo, hi = np.quantile(pb, [0.5 - level / 2, 0.5 + level / 2])
    return PowerLawFit(p, A, (float(lo), float(hi)), float(pb.std(ddof=1)), "bootstrap", level, n, xr,
                       chi2_dof)


def _ols_covariance(X, w, resid, unweighted, absolute_sigma, level):
    """Coefficient covariance, the interval's quantile and chi^2/dof (nan when unweighted)."""
    dof = X.shape[0] - 2
    chi2 = float(np.sum(w * resid**2))
    cov0 = np.linalg.inv((X.T * w) @ X)
    if unweighted:      # scatter estimated from the residuals: Student t
        s2 = chi2 / dof if dof > 0 else np.nan
        return cov0 * s2, stats.t.ppf(0.5 + level / 2, dof), float("nan")
    chi2_dof = chi2 / dof if dof > 0 else float("nan")
    if absolute_sigma:  # errors taken as known: normal quantile
        return cov0, stats.norm.ppf(0.5 + level / 2), chi2_dof
    return cov0 * chi2_dof, stats.t.ppf(0.5 + level / 2, dof), chi2_dof


def _bootstrap_samples(fit_y, resid, sl, n_boot, rng):
    """(n_boot, n) resampled log y: parametric with errors sl, else residuals inflated by sqrt(n/dof)."""
    rng = np.random.default_rng(rng)
    n = fit_y.size
    if sl is None:
        r = resid * np.sqrt(n / (n - 2))
        return fit_y[None, :] + r[rng.integers(0, n, size=(n_boot, n))]
    return fit_y[None, :] + sl[None, :] * rng.standard_normal((n_boot, n))


def _fit_local(lx, ly, xr, asymptote, decades, atol):
    if asymptote not in ("right", "left"):
        raise ValueError(f"asymptote={asymptote!r}: must be 'right' or 'left'")
    sl, mid = _local_slopes(lx, ly)
    span = decades * np.log(10.0)
    if asymptote == "right":
        seg = mid >= mid[-1] - span * (1 + 1e-9)
        p_end, end = float(sl[-1]), slice(-3, None)
    else:
        seg = mid <= mid[0] + span * (1 + 1e-9)
        p_end, end = float(sl[0]), slice(0, 3)
    if seg.sum() < 2:
        raise ValueError("fit_power_law(method='local'): need two local exponents within `decades` of the end")
    drift = float(sl[seg].max() - sl[seg].min())
    lo = float(sl[seg].min()) - drift - atol
    hi = float(sl[seg].max()) + drift + atol
    lA = float(np.mean(ly[end] + p_end * lx[end]))
    return PowerLawFit(p_end, float(np.exp(lA)), (lo, hi), float("nan"), "local", float("nan"),
                       lx.size, xr, float("nan"), sl)


# ----------------------------------------------------------------------------- engine checks

#: E_g values below this fraction of E_g(0) are not used in fits: the engine's inverse Laplace
#: transform is accurate to ~5e-14 of the transform's scale (docs/theory.md, section 6); far below
#: that, at extreme P, isolated times in a shared contour window were seen off by up to 1e-16 E_g(0)
#: in absolute terms (docs/theory.md, section 8). Ranges are chosen to stay 10x above the floor.
PRECISION_FLOOR = 1e-14


class RangeUnavailable(ValueError):
    """No clean asymptotic range for this regime and (alpha, beta) within the numerical limits."""


@dataclass(frozen=True)
class Measurement:
    """An engine curve y(x) in one regime, its fit and the derived law it is compared with."""

    regime: str
    law: ScalingLaw
    x: np.ndarray
    y: np.ndarray
    fit: PowerLawFit
    setting: str

    @property
    def agrees(self) -> bool:
        return self.fit.covers_slope(self.law.slope)

    def row(self) -> dict:
        lo, hi = self.fit.slope_ci
        return dict(regime=self.regime, law=self.law.law, derived=self.law.slope, fitted=self.fit.slope,
                    ci_lo=lo, ci_hi=hi, agrees=self.agrees, method=self.fit.method,
                    x_range=f"{self.fit.x_range[0]:.3g}-{self.fit.x_range[1]:.3g}", setting=self.setting,
                    condition=self.law.condition)


def _law(alpha, beta, regime, y, x, index=0):
    laws = [L for L in predicted_exponents(alpha, beta, regime) if L.y == y and L.x == x]
    return laws[index]


_CAP_TIME = 100_000     # widest student used for time-domain curves (cost O(N) per window)
_CAP_INF = 4_000_000    # t = inf is closed form: much wider students are cheap


def _n_modes(kstar_max, floor=1000, mult=30.0, cap=_CAP_TIME):
    """Student width that emulates N = inf: mult x the largest learned-mode cutoff k*, with the
    teacher modes beyond N passed as tail_power (they are unlearned, so they only add their power).
    Raises if the cap would truncate the learned modes."""
    n = int(max(mult * kstar_max, floor))
    if n > cap:
        raise ValueError(f"N = {n} > {cap}: range too wide for an N = inf emulation; narrow it")
    return n


def _p_grid(lo, hi, per_decade=1.0):
    n = int(round(np.log10(hi / lo) * per_decade)) + 1
    return np.geomspace(lo, hi, max(n, 3))


def _task(N, alpha, beta, lam_1, c):
    lam, w2 = power_law_task(N, alpha, beta, lam_1=lam_1, c=c)
    return lam, w2, power_law_tail(N, beta, c)


def _refine_min(lt, lE):
    """Minimum of a sampled curve by a parabola through 5 points around the discrete minimum."""
    i = int(np.argmin(lE))
    if i < 2 or i > lt.size - 3:
        raise RuntimeError("optimum at the edge of the time grid; widen the grid")
    c2, c1, c0 = np.polyfit(lt[i - 2:i + 3], lE[i - 2:i + 3], 2)
    xm = -c1 / (2 * c2)
    return float(np.exp(xm)), float(np.exp(np.polyval([c2, c1, c0], xm)))


def _langevin_tail(t, N, alpha, T, lam_1=1.0):
    """Langevin variance of the modes k > N that a width-N student lacks, for N >> k*(t): they are
    unlearned and diffuse freely, 2 T t sum_{k>N} lam_k (relative corrections O((k*/N)^(1+alpha))).
    Added to emulate N = inf; without it the missing part is a fraction ~ (k*/N)^alpha."""
    return 2.0 * T * np.asarray(t, dtype=float) * lam_1 * float(_zeta(1.0 + alpha, N + 1))


def _optimal_stop(lam, w2, P, tail, t_guess, span=30.0, per_decade=16, alpha=None, lam_1=1.0, **kw):
    t = np.geomspace(t_guess / span, t_guess * span, int(2 * np.log10(span) * per_decade) + 1)
    E = predict(lam, w2, P, t, tail_power=tail, **kw).generalization_error
    if kw.get("temperature", 0.0) > 0:
        E = E + _langevin_tail(t, lam.size, alpha, kw["temperature"], lam_1)
    return _refine_min(np.log(t), np.log(E))


def _p_max(kstar_of_p, hi, mult, cap):
    """Largest P <= hi whose k* keeps mult * k* <= cap."""
    P = hi
    while mult * kstar_of_p(P) > cap and P > 1e3:
        P /= 10.0
    return P


@dataclass
class _Run:
    """One :func:`measure` call: its settings, derived constants and the measurements so far."""

    regime: str
    a: float
    b: float
    full: bool
    quantity: str | None
    label_noise: float
    weight_decay: float
    temperature: float
    lam_1: float
    c: float
    out: list = field(default_factory=list)

    def __post_init__(self):
        self.decades = 2.0 if self.full else 1.0
        self.bs = min(self.b, 2 * (1 + self.a))
        self.q = 1.0 / (1.0 + self.a)
        self.E0 = self.c * float(_zeta(1.0 + self.b))     # E_g(0) of the infinite teacher

    def want(self, y):
        return self.quantity is None or self.quantity == y

    def task(self, N):
        return _task(N, self.a, self.b, self.lam_1, self.c)

    def add(self, y, x, xs, ys, setting, index=0, **fit_kw):
        """Fit ys(xs) (E_g points below the precision floor dropped) and pair it with its law."""
        law = _law(self.a, self.b, self.regime, y, x, index)
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        if y.startswith("E_g"):
            keep = ys >= PRECISION_FLOOR * self.E0
            if keep.sum() < 3:
                raise RangeUnavailable(f"{self.regime}: {y} falls below the precision floor "
                                       f"{PRECISION_FLOOR:g} E_g(0) within the range")
            xs, ys = xs[keep], ys[keep]
        fit_kw.setdefault("decades", self.decades)
        fit = fit_power_law(xs, ys, method="local", **fit_kw)
        self.out.append(Measurement(self.regime, law, np.asarray(xs, float), np.asarray(ys, float), fit, setting))


def _tau_grid(r):
    """P lam_1 t = tau over 3 (quick) or 4 (full) decades -> (tau, P, t); k* = tau^q << P and << N."""
    a, b, q = r.a, r.b, r.q
    tau_hi = 1e5 if r.full else 1e4
    if r.regime == "time":   # stay above the precision floor: c Gamma(bq) q (2 tau)^(-bq) >= 10 floor E0
        tau_hi = min(tau_hi, 0.5 * (r.c * _gamma(b * q) * q / (10 * PRECISION_FLOOR * r.E0)) ** (1 / (b * q)))
        if tau_hi < 10**2.5:
            raise RangeUnavailable(f"time: E_g reaches the precision floor before k* = {tau_hi ** q:.3g}")
    tau = np.geomspace(10, tau_hi, int(round(4 * np.log10(tau_hi / 10))) + 1)
    P = 1e8
    # for beta > 2(1+alpha) also k* << P^(1/(beta-1-2alpha)) (regime "time_saturated" beyond)
    if r.regime == "time" and b > 2 * (1 + a):
        P = max(P, float(30.0 * tau[-1] ** q) ** (b - 1 - 2 * a))
    return tau, P, tau / (P * r.lam_1)


def _measure_time(r):
    """E_g of noiseless gradient flow against t (P = 1e8), and against P at fixed t."""
    tau, P, t = _tau_grid(r)
    if not r.want("E_g"):
        return
    N = _n_modes(tau[-1] ** r.q)
    lam, w2, tail = r.task(N)
    E = predict(lam, w2, int(P), t, tail_power=tail).generalization_error
    r.add("E_g", "t", t, E, f"P={P:.3g}, N={N}+tail, sigma^2=0")
    t_fix = 1e-4 * 1e8 / P  # E_g vs P at fixed t: the same function of P t
    Ps = np.geomspace(tau[0], tau[-1], max(4, tau.size // 4 + 1)) / (r.lam_1 * t_fix)
    E2 = [predict(lam, w2, int(round(Pp)), [t_fix], tail_power=tail).generalization_error[0]
          for Pp in Ps]
    r.add("E_g", "P", Ps, E2, f"t={t_fix:.3g}, N={N}+tail, sigma^2=0")


def _saturated_window(r):
    """(P, lo, hi): 3 P^(1/(beta-1-2alpha)) <= k* <= min(1e-3 P, 1e3 (3e3 full), precision floor),
    for the P in 1e4..1e12 with the widest window (kick term >> time term; k*/P corrections <= 1e-3)."""
    a, b, q = r.a, r.b, r.q
    s_w = r.c * float(_zeta(b - 1 - 2 * a)) / r.lam_1**2
    best = None
    for P in 10.0 ** np.arange(4, 13):
        lo = 3.0 * P ** (1.0 / (b - 1 - 2 * a))
        k_floor = (0.5 * (s_w * r.lam_1**2 * q * _gamma(2 - q) / (P * 10 * PRECISION_FLOOR * r.E0))
                   ** (1 / (2 - q))) ** q
        hi = min(1e-3 * P, 3e3 if r.full else 1e3, k_floor)
        if best is None or hi / lo > best[2] / best[1]:
            best = (P, lo, hi)
    return best


def _measure_time_saturated(r):
    """E_g against t where the finite-P kick dominates (beta > 2(1+alpha) only)."""
    if r.b <= 2 * (1 + r.a):
        return                      # no such regime
    P, lo, hi = _saturated_window(r)
    if hi < 4 * lo:
        raise RangeUnavailable(f"time_saturated: no clean window for beta={r.b} (best P={P:g}: "
                               f"k* from {lo:.3g} to {hi:.3g})")
    ks = np.geomspace(lo, hi, int(np.log10(hi / lo) * 6) + 1)
    N = _n_modes(hi, mult=30)
    lam, w2, tail = r.task(N)
    t = ks ** (1 + r.a) / (P * r.lam_1)
    E = predict(lam, w2, int(P), t, tail_power=tail).generalization_error
    # an intermediate regime (corrections from both ends): the band spans the whole window
    r.add("E_g", "t", t, E, f"P={P:.3g}, N={N}+tail, sigma^2=0, k*={lo:.3g}..{hi:.3g}", decades=20.0)


def _measure_data(r):
    """Ridgeless (t = inf) E_g against P, N = inf emulated by N = 40 P."""
    Ps = np.unique(_p_grid(30, 1e4 if r.full else 3e3, 4).astype(int))
    E = []
    for P in Ps:
        lam, w2, tail = r.task(_n_modes(P, mult=40, cap=_CAP_INF))
        E.append(predict(lam, w2, int(P), [np.inf], tail_power=tail).generalization_error[0])
    r.add("E_g", "P", Ps, E, "t=inf, N=40P+tail, sigma^2=0, weight_decay=0")


def _measure_model(r):
    """E_g against N at t = inf and P = 1e6 N."""
    Ns = np.unique(_p_grid(10, 1e4 if r.full else 1e3, 4).astype(int))
    E = []
    for N in Ns:
        lam, w2, tail = r.task(int(N))
        E.append(predict(lam, w2, int(1e6 * N), [np.inf], tail_power=tail)
                 .generalization_error[0])
    r.add("E_g", "N", Ns, E, "t=inf, P=1e6 N, infinite teacher, sigma^2=0")


def _measure_optimal_stop(r):
    """E_g* and t* of gradient flow with label noise (early_stopping) or of Langevin dynamics."""
    a, b = r.a, r.b
    noisy = r.regime == "early_stopping"
    level = r.label_noise if noisy else r.temperature
    kw = dict(label_noise=r.label_noise) if noisy else dict(temperature=r.temperature)
    kstar = lambda P: (P / level) ** (1.0 / (1.0 + b))  # noqa: E731
    Ps = _p_grid(1e3, _p_max(kstar, 1e7 if r.full else 1e5, 10, _CAP_TIME))
    res = []
    for P in Ps:
        # N = 10 k*: the truncation is a fixed fraction of k*, so it shifts prefactors, not exponents
        lam, w2, tail = r.task(_n_modes(kstar(P), floor=2000, mult=10))
        t_guess = P ** ((a - b) / (1 + b)) / level ** ((1 + a) / (1 + b)) / r.lam_1
        res.append(_optimal_stop(lam, w2, int(P), tail, t_guess, alpha=a, lam_1=r.lam_1, **kw))
    res = np.array(res)
    what = f"sigma^2={r.label_noise}" if noisy else f"T={r.temperature}, weight_decay=0"
    if r.want("E_g*"):
        r.add("E_g*", "P", Ps, res[:, 1], f"{what}, N=10 k*+tail, optimal t")
    if r.want("t*"):
        r.add("t*", "P", Ps, res[:, 0], f"{what}, N=10 k*+tail", atol=1e-3)


def _measure_langevin(r):
    """Langevin variance against t, then the optimal stop (E_g*, t*) against P."""
    if r.want("variance_langevin"):
        tau, P, t = _tau_grid(r)
        N = _n_modes(tau[-1] ** r.q)
        lam, w2, tail = r.task(N)
        v = predict(lam, w2, int(P), t, temperature=r.temperature, tail_power=tail).variance_langevin
        v = v + _langevin_tail(t, N, r.a, r.temperature, r.lam_1)
        r.add("variance_langevin", "t", t, v, f"P=1e8, N={N}+tail, T={r.temperature}")
    if r.want("E_g*") or r.want("t*"):
        _measure_optimal_stop(r)


def _optimal_ridge(lam, w2, P, tail, label_noise, guess):
    """(lambda*, E_g*) at t = inf, minimising log E_g over log lambda from a bracket around ``guess``."""
    def f(u):
        return math.log(predict(lam, w2, int(P), [np.inf], label_noise=label_noise,
                                weight_decay=math.exp(u),
                                tail_power=tail).generalization_error[0])
    best = minimize_scalar(f, bracket=(guess - 2, guess + 2), tol=1e-10)
    return math.exp(best.x), math.exp(best.fun)


def _measure_ridge_optimal(r):
    """E_g* and lambda* of tuned ridge against P (t = inf, label noise)."""
    a, bs, noise = r.a, r.bs, r.label_noise
    kstar = lambda P: (P / noise) ** (1.0 / (1.0 + bs))  # noqa: E731
    Ps = _p_grid(1e3, _p_max(kstar, 1e7 if r.full else 1e5, 100, _CAP_INF))
    res = []
    for P in Ps:
        lam, w2, tail = r.task(_n_modes(kstar(P), floor=5000, mult=100, cap=_CAP_INF))
        g = math.log(P ** ((bs - a) / (1 + bs)) * noise ** ((1 + a) / (1 + bs)) * r.lam_1 / r.c)
        res.append(_optimal_ridge(lam, w2, P, tail, noise, g))
    res = np.array(res)
    if r.want("E_g*"):
        r.add("E_g*", "P", Ps, res[:, 1], f"sigma^2={noise}, t=inf, N=100 k*+tail, optimal lambda")
    if r.want("lambda*"):
        r.add("lambda*", "P", Ps, res[:, 0], f"sigma^2={noise}, t=inf", atol=1e-3)


def _measure_fixed_penalty(r):
    """E_g at fixed weight decay, t = inf: ridge (noiseless, then noisy) or Bayes posterior samples."""
    if not r.want("E_g"):
        return
    kstar = lambda P: (P / r.weight_decay) ** r.q  # noqa: E731
    Ps = _p_grid(1e3, _p_max(kstar, 1e7 if r.full else 1e5, 100, _CAP_INF), 2)
    settings = ([(0, dict(label_noise=0.0, weight_decay=r.weight_decay)),
                 (1, dict(label_noise=r.label_noise, weight_decay=r.weight_decay))]
                if r.regime == "ridge_fixed" else
                [(0, dict(label_noise=0.0, weight_decay=r.weight_decay, temperature=r.temperature))])
    for idx, kw in settings:
        E = []
        for P in Ps:
            lam, w2, tail = r.task(_n_modes(kstar(P), floor=5000, mult=100, cap=_CAP_INF))
            E.append(predict(lam, w2, int(P), [np.inf], tail_power=tail, **kw)
                     .generalization_error[0])
        r.add("E_g", "P", Ps, E, ", ".join(f"{k}={v:g}" for k, v in kw.items()) + ", t=inf, N=100 k*+tail",
              index=idx)


#: The regimes measure() covers (all but the compute ones), each with the function that fills a _Run.
_MEASURE = {
    "time": _measure_time,
    "time_saturated": _measure_time_saturated,
    "data": _measure_data,
    "model": _measure_model,
    "early_stopping": _measure_optimal_stop,
    "ridge_optimal": _measure_ridge_optimal,
    "ridge_fixed": _measure_fixed_penalty,
    "bayes": _measure_fixed_penalty,
    "langevin": _measure_langevin,
}


def measure(regime: str, alpha: float, beta: float, *, quantity: str | None = None, size: str = "quick",
            label_noise: float = 1.0, weight_decay: float = 1.0, temperature: float = 1.0,
            lam_1: float = 1.0, c: float = 1.0) -> list[Measurement]:
    """Run the engine deep in one regime, fit the curves and pair them with the derived laws.

    ``size`` = ``"quick"`` (about a second per regime; the tests) or ``"full"`` (wider ranges, two
    decades for the drift; analysis.theory_frontier). ``quantity`` restricts to one y (e.g.
    ``"t*"``). N = inf is emulated by a student of width N >= 10-100 k* plus the teacher tail
    (:func:`_n_modes`) and, for Langevin, the free diffusion of the missing modes
    (:func:`_langevin_tail`); ranges shrink where that would need more than 1e5 modes (4e6 at t = inf).
    Compute regimes are measured by :mod:`rfscaling.theory.frontier`. Fits: ``fit_power_law(...,
    method="local")``; optimal times and ridges (whose optimum is located to ~1e-4 in log) get
    ``atol = 1e-3``.
    """
    a, b = _check_ab(alpha, beta)
    if regime not in REGIMES[:-2]:
        raise ValueError(f"regime={regime!r}: measure() covers {REGIMES[:-2]}; "
                         "use rfscaling.theory.frontier for the compute regimes")
    if size not in ("quick", "full"):
        raise ValueError(f"size={size!r}: must be 'quick' or 'full'")
    run = _Run(regime, a, b, size == "full", quantity, label_noise, weight_decay, temperature, lam_1, c)
    _MEASURE[regime](run)
    return run.out


def exponent_table(alpha: float, beta: float, *, size: str = "quick", regimes=None, **kw):
    """pandas DataFrame: derived vs fitted (signed) exponents with CIs, one row per law measured."""
    import pandas as pd

    rows = []
    for regime in regimes or REGIMES[:-2]:
        try:
            ms = measure(regime, alpha, beta, size=size, **kw)
        except RangeUnavailable as err:      # not measurable cleanly: say so in the table
            for law in predicted_exponents(alpha, beta, regime):
                rows.append(dict(regime=regime, law=law.law, derived=law.slope, fitted=np.nan, ci_lo=np.nan,
                                 ci_hi=np.nan, agrees=None, method="", x_range="", setting=f"not measured: {err}",
                                 condition=law.condition))
            continue
        rows.extend(m.row() for m in ms)
    return pd.DataFrame(rows)
