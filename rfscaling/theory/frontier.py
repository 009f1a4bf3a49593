"""Compute and the compute-optimal frontier of the theory (docs/theory.md, sections 7 and 8).

Compute of one run to time t (matches rfscaling.dynamics.euler: 2 P N multiply-adds per
full-batch Euler step per ensemble member, step size dt = 1/lambda_max(H), H = X^T X + weight_decay I):

    f(N, P, t) = 2 P N * t * lambda_max(H)      multiply-adds.

The theory replaces lambda_max(X^T X) by the top edge of the deterministic-equivalent spectrum
(:func:`top_edge`): with df1(kappa) = sum_k lam_k/(lam_k + kappa), the edge is at
x_max = -kappa_u (P - df1(kappa_u)), where kappa_u < -lam_1 solves sum_k lam_k^2/(lam_k + kappa_u)^2 = P.
For a power-law spectrum the top eigenvalue is an isolated outlier and this edge lies about
2 lam_1 sqrt(P) above its typical value (:func:`top_outlier` gives that value); see docs/theory.md.

:func:`theory_frontier` evaluates E_g(t) for every (P, N) with the engine, maps t to compute, and
takes the Pareto frontier (the smallest E_g reachable with at most compute f, i.e. the lower
envelope of all curves, with early stopping allowed) per P and over everything.
:func:`compute_optimal_exponents` fits its slopes and compares them with the derived ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from .dmft import predict
from .scaling import PRECISION_FLOOR, fit_power_law, predicted_exponents
from .spectra import power_law_tail, power_law_task

__all__ = ["top_edge", "top_outlier", "lambda_max", "compute_cost", "pareto_frontier",
           "FrontierResult", "theory_frontier", "compute_optimal_exponents", "frontier_exponents"]


def top_edge(eigenvalues, P: int, weight_decay: float = 0.0) -> float:
    """Top edge of the deterministic-equivalent spectrum of X^T X, plus ``weight_decay``.

    x_max = -kappa_u (P - df1(kappa_u)) with kappa_u < -lam_1 the root of
    sum_k lam_k^2 / (lam_k + kappa_u)^2 = P (the point where dz/dkappa = P (1 - Gamma) vanishes on
    the branch beyond the spectrum). Flat spectrum: the Marchenko-Pastur edge (sqrt P + sqrt N)^2.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or np.any(lam <= 0):
        raise ValueError("eigenvalues: must be a non-empty 1-D array of positive numbers")
    P = float(P)
    if P <= 0:
        raise ValueError(f"P={P}: must be > 0")
    l1 = float(lam.max())

    # kappa = -l1 - e^v ; g(v) is decreasing in v from +inf to -P
    def g(v):
        d = lam - l1 - np.exp(v)
        return float(np.sum((lam / d) ** 2)) - P

    lo, hi = np.log(l1) - 60.0, np.log(l1) + 5.0
    while g(hi) > 0:
        hi += 5.0
    v = brentq(g, lo, hi, xtol=1e-14, rtol=1e-14, maxiter=500)
    kappa = -l1 - np.exp(v)
    df1 = float(np.sum(lam / (lam + kappa)))
    return -kappa * (P - df1) + float(weight_decay)


def top_outlier(eigenvalues, P: int, weight_decay: float = 0.0) -> float:
    """Typical top eigenvalue of X^T X when lam_1 is an isolated spike, plus ``weight_decay``.

    Spike equation 1 = lam_1 z^T (x - G_r)^{-1} z with G_r the Gram of the other modes, closed with
    the deterministic equivalent tr (x - G_r)^{-1} = -1/kappa_r: kappa_r = -lam_1, so

        x_1 = lam_1 (P + sum_{k >= 2} lam_k / (lam_1 - lam_k)).

    It is an outlier if the other modes' edge condition holds there,
    sum_{k >= 2} lam_k^2/(lam_1 - lam_k)^2 < P; otherwise the deterministic-equivalent edge is
    returned (e.g. a flat spectrum).
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    l1, rest = lam[0], lam[1:]
    gap = l1 - rest
    if rest.size and (np.any(gap <= 0) or np.sum((rest / gap) ** 2) >= P):
        return top_edge(lam, P, weight_decay)
    return float(l1 * (P + np.sum(rest / gap))) + float(weight_decay)


def lambda_max(eigenvalues, P: int, weight_decay: float = 0.0, edge: str = "de") -> float:
    """lambda_max(H) of the theory: ``edge="de"`` (deterministic-equivalent edge, default) or
    ``"outlier"`` (typical top eigenvalue, :func:`top_outlier`)."""
    if edge == "de":
        return top_edge(eigenvalues, P, weight_decay)
    if edge == "outlier":
        return top_outlier(eigenvalues, P, weight_decay)
    raise ValueError(f"edge={edge!r}: must be 'de' or 'outlier'")


def compute_cost(N, P, t, lam_max):
    """Multiply-adds of one run to time t: 2 P N per Euler step times t * lambda_max steps."""
    return 2.0 * np.asarray(P, dtype=float) * np.asarray(N, dtype=float) * np.asarray(t, dtype=float) \
        * np.asarray(lam_max, dtype=float)


def pareto_frontier(compute, error) -> np.ndarray:
    """Indices of the Pareto corners, ordered by compute: points with an error strictly below that
    of every point with smaller or equal compute. The frontier F(f) = min{E_i : f_i <= f} is the
    step function through them (non-increasing by construction)."""
    f = np.asarray(compute, dtype=np.float64).ravel()
    e = np.asarray(error, dtype=np.float64).ravel()
    ok = np.flatnonzero(np.isfinite(f) & np.isfinite(e))
    order = ok[np.lexsort((e[ok], f[ok]))]
    run = np.minimum.accumulate(e[order])
    prev = np.concatenate([[np.inf], run[:-1]])
    return order[e[order] < prev]


@dataclass(frozen=True)
class FrontierResult:
    """Curves E_g(compute) for each (P, N) and their Pareto frontiers.

    ``curves``: DataFrame (P, N, t, compute, E_g, lambda_max); ``frontier``: Pareto corners over
    everything; ``frontier_by_P``: dict P -> Pareto corners of that P (columns as ``curves``).
    """

    alpha: float
    beta: float
    label_noise: float
    M: int | None
    curves: "object"
    frontier: "object"
    frontier_by_P: dict
    N_values: np.ndarray
    P_values: np.ndarray
    edge: str

    def frontier_at(self, f, P=None) -> np.ndarray:
        """F(f) = min E_g over all runs (of size P, if given) with compute <= f; NaN below the
        smallest compute."""
        fr = self.frontier if P is None else self.frontier_by_P[P]
        fc, ec = fr["compute"].to_numpy(), fr["E_g"].to_numpy()
        idx = np.searchsorted(fc, np.asarray(f, dtype=float), side="right") - 1
        out = np.where(idx >= 0, ec[np.clip(idx, 0, None)], np.nan)
        return out


def theory_frontier(alpha, beta, P_values, N_values, t_grid, label_noise=0.0, M=None, *, lam_1=1.0, c=1.0,
                    weight_decay=0.0, temperature=0.0, edge="de", quadrature_nodes=32) -> FrontierResult:
    """E_g vs compute for students of width N (top N modes of a teacher with M >= N modes; M = None:
    infinite teacher) trained on P samples, and the Pareto frontier over N (per P) and over all.

    For each (P, N): ``predict(lam_N, W_N, P, t_grid, label_noise, ..., tail_power=
    power_law_tail(N, beta, c, M))`` and compute f = 2 P N t lambda_max(H) (:func:`compute_cost`,
    :func:`lambda_max` with ``edge``).
    """
    import pandas as pd

    P_values = np.unique(np.asarray(P_values, dtype=int))
    N_values = np.unique(np.asarray(N_values, dtype=int))
    t = np.asarray(t_grid, dtype=np.float64)
    if np.any(~np.isfinite(t)) or np.any(t <= 0):
        raise ValueError("t_grid: must be finite and > 0")
    if M is not None and int(M) < N_values.max():
        raise ValueError(f"M={M}: must be >= max(N_values)={N_values.max()}")
    rows = []
    for P in P_values:
        for N in N_values:
            lam, w2 = power_law_task(int(N), alpha, beta, lam_1=lam_1, c=c)
            tail = power_law_tail(int(N), beta, c, M)
            pr = predict(lam, w2, int(P), t, label_noise=label_noise, weight_decay=weight_decay,
                         temperature=temperature, tail_power=tail, quadrature_nodes=quadrature_nodes)
            lm = lambda_max(lam, int(P), weight_decay, edge)
            rows.append(pd.DataFrame(dict(P=int(P), N=int(N), t=t, compute=compute_cost(N, P, t, lm),
                                          E_g=pr.generalization_error, lambda_max=lm)))
    curves = pd.concat(rows, ignore_index=True)

    def corners(df):
        idx = pareto_frontier(df["compute"].to_numpy(), df["E_g"].to_numpy())
        return df.iloc[idx].reset_index(drop=True)

    by_P = {int(P): corners(curves[curves["P"] == P]) for P in P_values}
    return FrontierResult(float(alpha), float(beta), float(label_noise), None if M is None else int(M), curves,
                          corners(curves), by_P, N_values, P_values, edge)


def compute_optimal_exponents(result: FrontierResult, P=None, f_range=None, level=0.95, window=3.0,
                              floor=PRECISION_FLOOR):
    """Fit the frontier (of size P, or global if None) and the optimal N*, t* (and P*) vs compute.

    Fit range: ``f_range`` or, by default, the compute span of the Pareto corners whose N (and, for
    the global frontier, P) and t lie strictly inside their grids -- where the optimum is not pinned
    to a grid edge. Within it, each quantity is fitted by log-log OLS (:func:`fit_power_law`,
    Student-t interval: the corners of a discrete (N, t) grid scatter around the continuous
    envelope) on the last ``window`` decades [f_hi 10^-window, f_hi] (A) and on the same window
    one decade lower (B). Reported: the slope of A, with A's interval widened on both sides by
    |slope_A - slope_B| (the systematic drift per decade from finite-size corrections, as in
    ``fit_power_law(method="local")``). If the range spans less than window + 1 decades, one OLS
    fit over the whole range is reported. Returns a DataFrame (y, derived, fitted, ci_lo, ci_hi,
    agrees, ..., max_N_over_P: the largest N*/P among the fitted corners -- the derivation needs it << 1).
    """
    import pandas as pd

    fr = result.frontier if P is None else result.frontier_by_P[int(P)]
    regime = "compute_global" if P is None else "compute"
    laws = {L.y: L for L in predicted_exponents(result.alpha, result.beta, regime)}
    Nv = result.N_values
    inside = (fr["N"] > Nv.min()) & (fr["N"] < Nv.max())
    if P is None:
        Pv = result.P_values
        inside &= (fr["P"] > Pv.min()) & (fr["P"] < Pv.max())
    tv = np.sort(result.curves["t"].unique())
    inside &= (fr["t"] > tv.min()) & (fr["t"] < tv.max())
    inside &= fr["E_g"] >= floor * float(result.curves["E_g"].max())   # engine precision floor
    if f_range is None:
        if inside.sum() < 3:
            raise ValueError("fewer than 3 frontier corners with an interior optimum; widen the grids")
        f_range = (fr.loc[inside, "compute"].min(), fr.loc[inside, "compute"].max())
    f_lo, f_hi = float(f_range[0]), float(f_range[1])
    sel = fr[(fr["compute"] >= f_lo) & (fr["compute"] <= f_hi)]
    two = np.log10(f_hi / f_lo) >= window + 1
    rows = []
    targets = [("E_g", "E_g"), ("N*", "N"), ("t*", "t")] + ([("P*", "P")] if P is None else [])
    for y, col in targets:
        law = laws[y]
        if two:
            fa = fit_power_law(sel["compute"], sel[col], method="ols", level=level,
                               x_range=(f_hi * 10.0**-window, f_hi))
            fb = fit_power_law(sel["compute"], sel[col], method="ols", level=level,
                               x_range=(f_hi * 10.0 ** -(window + 1), f_hi / 10.0))
            drift = abs(fa.p - fb.p)
            lo, hi = -(fa.ci[1] + drift), -(fa.ci[0] - drift)
            slope, n, rng = fa.slope, fa.n_points, fa.x_range
        else:
            fa = fit_power_law(sel["compute"], sel[col], method="ols", level=level)
            (lo, hi), slope, n, rng, drift = fa.slope_ci, fa.slope, fa.n_points, fa.x_range, float("nan")
        used = sel[(sel["compute"] >= rng[0]) & (sel["compute"] <= rng[1])]
        n_over_p = float((used["N"] / used["P"]).max())
        rows.append(dict(regime=regime, P=P if P is not None else "all", law=law.law, y=y, derived=law.slope,
                         fitted=slope, ci_lo=lo, ci_hi=hi, agrees=bool(lo <= law.slope <= hi), drift=drift,
                         n_points=n, f_lo=rng[0], f_hi=rng[1], max_N_over_P=n_over_p))
    return pd.DataFrame(rows)


def frontier_exponents(alpha, beta, *, size="quick", label_noise=0.0):
    """Compute-optimal exponents from frontiers built deep in the asymptotic regime.

    * fixed P (regime ``compute``): P = 1e6 (quick) or 1e7 (full), N from 4 to 2000 (4000),
      9 (10) per decade, so that 1 << N* << P (for beta > 2(1+alpha): P >= (30 N_max)^(beta-1-2alpha));
    * over P, N and t (regime ``compute_global``, ``size="full"`` only, about a minute): P from 4
      to 3e4 and N from 2 to 3e3, 7 per decade.
    Time grids: 12 per decade from 0.1/P to 10 min(N, P)^(1+alpha)/P (where E_g has stopped moving).
    Returns the rows of :func:`compute_optimal_exponents` with a ``setting`` column.
    """
    import pandas as pd

    if size not in ("quick", "full"):
        raise ValueError(f"size={size!r}: must be 'quick' or 'full'")
    full = size == "full"
    a = float(alpha)

    def t_grid(Ps, n_hi):
        Ps = np.asarray(Ps, dtype=float)
        lo, hi = 0.1 / Ps.max(), 10.0 * float(np.max(np.minimum(n_hi, Ps) ** (1 + a) / Ps))
        return np.geomspace(lo, hi, int(np.log10(hi / lo) * 12) + 1)

    out = [pd.DataFrame()]
    n_hi = 4000 if full else 2000
    P = 10**7 if full else 10**6
    b = float(beta)
    if b > 2 * (1 + a):   # keep N* << P^(1/(beta-1-2alpha)), where the finite-P kick term is negligible
        n_hi = int(min(n_hi, 1e15 ** (1.0 / (b - 1 - 2 * a)) / 30.0))
        if n_hi < 200:     # would need P > 1e15: no clean fixed-P range
            return pd.DataFrame()
        P = max(P, int(float(30 * n_hi) ** (b - 1 - 2 * a)))
    Ns = np.unique(np.geomspace(4, n_hi, 32 if full else 28).astype(int))
    res = theory_frontier(alpha, beta, [P], Ns, t_grid([P], n_hi), label_noise=label_noise)
    df = compute_optimal_exponents(res, P=P)
    df["setting"] = f"P={P:g}, N=4..{n_hi}, sigma^2={label_noise:g}"
    out.append(df)
    if full:
        Ps = np.unique(np.geomspace(4, 3e4, 28).astype(int))
        Ns = np.unique(np.geomspace(2, 3e3, 23).astype(int))
        res = theory_frontier(alpha, beta, Ps, Ns, t_grid(Ps, Ns.max()), label_noise=label_noise)
        df = compute_optimal_exponents(res)
        df["setting"] = f"P=4..3e4, N=2..3e3, sigma^2={label_noise:g}"
        out.append(df)
    return pd.concat(out, ignore_index=True)
