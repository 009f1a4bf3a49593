"""Scaling laws and the compute-optimal frontier (rfscaling.theory.scaling, rfscaling.theory.frontier).

* fit_power_law: recovers a known exponent, and its confidence intervals have the stated coverage
  on synthetic noisy data (counted over many replicates; binomial tolerance); the 'local' band
  covers power laws with decaying corrections and excludes a log-corrected one.
* Engine vs derived exponents (docs/theory.md, section 8): the engine's curves, deep in each regime,
  are fitted with fit_power_law(method='local') and the derived exponent must lie in the band.
  Closed-form prefactors (time-limited E_g, Langevin variance and optimal time, noisy gradient flow
  optimal time, Bayes-optimal ridge) are checked too.
* Compute: the deterministic-equivalent top edge against numpy eigvalsh of sampled X^T X, and the
  Pareto frontier (lower envelope, monotone, against brute force; fixed-P exponents).
"""

from __future__ import annotations

import numpy as np
import pytest

from montecarlo_reference import single_thread_blas
from rfscaling.theory import power_law_spectrum, power_law_tail, power_law_task, predict
from rfscaling.theory.frontier import (compute_cost, compute_optimal_exponents, pareto_frontier, theory_frontier,
                                       top_edge, top_outlier)
from rfscaling.theory.scaling import (fit_power_law, gf_noisy_optimal_time, kick_error, langevin_optimal_time,
                                      langevin_variance, measure, predicted_exponents, time_limited_error)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with single_thread_blas():
        yield


def _assert_agree(measurements):
    assert measurements, "no measurement"
    for m in measurements:
        lo, hi = m.fit.slope_ci
        assert m.agrees, (f"{m.regime}: {m.law.law}: derived {m.law.slope:.5f} outside the engine's "
                          f"band [{lo:.5f}, {hi:.5f}] (fitted {m.fit.slope:.5f}; {m.setting})")
        # a band so wide that it would accept anything is a defect too
        assert hi - lo < 0.1 * max(abs(m.law.slope), 0.5), f"{m.law.law}: band too wide [{lo}, {hi}]"


# ---------------------------------------------------------------------------------- fit_power_law


def _coverage_bounds(level, n):
    sd = np.sqrt(level * (1 - level) / n)
    return level - 3.5 * sd, level + 3.5 * sd


def test_fit_power_law_exact_data():
    x = np.geomspace(1, 1e3, 10)
    for method in ("ols", "local"):
        fit = fit_power_law(x, 3.0 * x**-0.7, method=method)
        assert fit.p == pytest.approx(0.7, abs=1e-12)
        assert fit.prefactor == pytest.approx(3.0, rel=1e-10)
        assert fit.covers(0.7) and fit.slope == pytest.approx(-0.7, abs=1e-12)


def test_fit_power_law_coverage_known_sigma():
    """Lognormal scatter with known, unequal per-point errors: WLS interval, normal quantile."""
    rng = np.random.default_rng(0)
    x = np.geomspace(10, 1e4, 12)
    s_log = np.linspace(0.05, 0.4, x.size)          # heteroscedastic
    n_rep, hits, p_hat = 600, 0, []
    for _ in range(n_rep):
        y = 2.0 * x**-0.8 * np.exp(s_log * rng.standard_normal(x.size))
        fit = fit_power_law(x, y, sigma=s_log * y)    # standard error of y given per point
        hits += fit.covers(0.8)
        p_hat.append(fit.p)
    lo, hi = _coverage_bounds(0.95, n_rep)
    assert lo <= hits / n_rep <= hi
    p_hat = np.array(p_hat)
    assert abs(p_hat.mean() - 0.8) < 4 * p_hat.std() / np.sqrt(n_rep)
    # the weights matter: unweighted OLS has a larger spread than the WLS estimate
    ols = [fit_power_law(x, 2.0 * x**-0.8 * np.exp(s_log * rng.standard_normal(x.size))).p for _ in range(n_rep)]
    assert np.std(ols) > 1.1 * p_hat.std()


def test_fit_power_law_coverage_unknown_sigma():
    """Gaussian scatter in log y of unknown size: Student-t interval with n - 2 degrees of freedom."""
    rng = np.random.default_rng(1)
    x = np.geomspace(1, 100, 6)                      # few points: the t quantile matters
    n_rep, hits, hits_normal = 800, 0, 0
    for _ in range(n_rep):
        y = x**-1.3 * np.exp(0.2 * rng.standard_normal(x.size))
        fit = fit_power_law(x, y, level=0.9)
        hits += fit.covers(1.3)
        half_normal = 1.6448536 * fit.stderr
        hits_normal += abs(fit.p - 1.3) <= half_normal
    lo, hi = _coverage_bounds(0.9, n_rep)
    assert lo <= hits / n_rep <= hi
    assert hits_normal / n_rep < lo                  # a normal quantile would under-cover here


def test_fit_power_law_bootstrap_coverage():
    rng = np.random.default_rng(2)
    x = np.geomspace(1, 1e3, 15)
    n_rep, hits = 300, 0
    for i in range(n_rep):
        y = 5.0 * x**-0.5 * (1 + 0.05 * rng.standard_normal(x.size))   # additive, 5 % of the mean
        fit = fit_power_law(x, y, sigma=0.05 * 5.0 * x**-0.5, method="bootstrap", n_boot=400, rng=i)
        hits += fit.covers(0.5)
    lo, hi = _coverage_bounds(0.95, n_rep)
    assert lo <= hits / n_rep <= hi


def test_fit_power_law_local_band():
    x = np.geomspace(10, 1e5, 25)
    # decaying correction x^-0.4 (slower than the band's log10(2) guarantee needs? no: 0.4 > 0.301)
    y = x**-0.5 * (1 + 3.0 * x**-0.4)
    fit = fit_power_law(x, y, method="local")
    assert fit.covers(0.5)
    assert not (fit.local_slopes.min() <= 0.5 <= fit.local_slopes.max())  # the raw slopes do not reach it
    # a log correction is not a power law: the band must exclude the bare exponent
    fit_log = fit_power_law(x, x**-0.5 * np.log(x), method="local")
    assert not fit_log.covers(0.5)


def test_fit_power_law_validation():
    with pytest.raises(ValueError):
        fit_power_law([1, 2], [1, 2])
    with pytest.raises(ValueError):
        fit_power_law([1, 2, 3], [1, 2, 3], method="nope")
    fit = fit_power_law([1, 2, 4, 8, -1, 0], [1, 0.5, 0.25, 0.125, 1, 1])   # non-positive points dropped
    assert fit.n_points == 4 and fit.p == pytest.approx(1.0)


# ---------------------------------------------------------------------------------- derived table


def test_predicted_exponents_table():
    laws = predicted_exponents(1.0, 1.0)
    regimes = {L.regime for L in laws}
    assert {"time", "time_saturated", "data", "model", "early_stopping", "ridge_optimal", "ridge_fixed", "bayes", "langevin",
            "compute", "compute_global"} <= regimes
    sat = {L.y: L.slope for L in predicted_exponents(1.0, 5.0, "data")}
    assert sat["E_g"] == pytest.approx(-4.0)          # saturates at 2(1+alpha)
    with pytest.raises(ValueError):
        predicted_exponents(1.0, 1.0, "nope")
    with pytest.raises(ValueError):
        predicted_exponents(-1.0, 1.0)


# ---------------------------------------------------------------------------------- engine vs derived


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 1.5)])
def test_time_limited(alpha, beta):
    ms = measure("time", alpha, beta)
    _assert_agree(ms)
    m = ms[0]   # E_g vs t at P = 1e8: the prefactor too
    ratio = m.y / time_limited_error(m.x, 1e8, alpha, beta)
    assert np.all(np.abs(ratio - 1) < 1e-3)


def test_time_limited_saturates_for_smooth_targets():
    """beta > 2(1+alpha): the finite-P kick of the top modes into the unlearned ones takes over,
    E_g -> time law + kick law, t-exponent (1+2alpha)/(1+alpha) instead of beta/(1+alpha)."""
    ms = measure("time_saturated", 1.0, 9.0)
    _assert_agree(ms)
    assert not ms[0].fit.covers_slope(-9.0 / 2.0)
    # the kick law with its prefactor, where k*/P ~ 3e-5 and E_g >> the precision floor
    P, ks = 10**6, np.array([30.0, 40.0, 55.0])
    lam, w2 = power_law_task(1650, 1.0, 9.0)
    t = ks**2 / P
    E = predict(lam, w2, P, t, tail_power=power_law_tail(1650, 9.0)).generalization_error
    kick = kick_error(t, P, 1.0, 9.0)
    assert np.all(kick > 30 * time_limited_error(t, P, 1.0, 9.0))
    np.testing.assert_allclose(E, kick + time_limited_error(t, P, 1.0, 9.0), rtol=5e-3)   # O(1/k*) corrections
    assert measure("time_saturated", 1.0, 1.0) == []            # no such regime for beta < 2(1+alpha)


def test_data_limited_saturates():
    _assert_agree(measure("data", 1.0, 1.0))
    m = measure("data", 1.0, 5.0)        # beta > 2(1+alpha): exponent 4, not 5
    _assert_agree(m)
    assert not m[0].fit.covers_slope(-5.0)


def test_model_limited():
    _assert_agree(measure("model", 1.0, 1.5))


@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (2.0, 1.0)])
def test_early_stopping(alpha, beta):
    ms = measure("early_stopping", alpha, beta)
    _assert_agree(ms)
    if alpha == beta:   # t* independent of P, with the closed form of the continuum
        t_star = [m for m in ms if m.law.y == "t*"][0].y
        assert t_star[-1] == pytest.approx(gf_noisy_optimal_time(alpha, 1.0), rel=2e-3)


def test_ridge_optimal():
    ms = measure("ridge_optimal", 1.0, 1.0)
    _assert_agree(ms)
    lam_star = [m for m in ms if m.law.y == "lambda*"][0].y
    np.testing.assert_allclose(lam_star, 1.0, rtol=1e-3)   # Bayes-optimal ridge sigma^2 lam_1 / c
    _assert_agree(measure("ridge_optimal", 1.0, 2.0, quantity="lambda*"))


def test_ridge_fixed_and_bayes():
    _assert_agree(measure("ridge_fixed", 1.0, 3.0))   # noiseless b'/(1+a) = 1.5 vs noisy a/(1+a) = 0.5
    _assert_agree(measure("bayes", 2.0, 1.0))


def test_bayes_matched_prior_doubles_error():
    """Posterior samples with prior = teacher distribution and noise = T: sampled error = 2 x mean's."""
    lam, w2 = power_law_task(2000, 1.0, 1.0)
    T = 0.3
    for P in (50, 5000):
        pr = predict(lam, w2, P, [np.inf], label_noise=T, weight_decay=T, temperature=T)
        assert pr.variance_langevin[0] == pytest.approx(pr.bias[0] + pr.variance_label_noise[0], rel=1e-10)


def test_langevin():
    T = 0.1
    ms = measure("langevin", 1.0, 1.0, temperature=T)
    _assert_agree([m for m in ms if m.law.y != "t*"])
    var = [m for m in ms if m.law.y == "variance_langevin"][0]
    np.testing.assert_allclose(var.y, langevin_variance(var.x, 1e8, 1.0, T), rtol=1e-4)
    # optimal stopping time -> alpha / (2 (1+alpha) T), independent of P, with O(k*/P) = O(P^-1/2) corrections
    t_star = [m for m in ms if m.law.y == "t*"][0]
    dev = np.abs(t_star.y / langevin_optimal_time(1.0, T) - 1)
    assert dev[-1] < 0.015
    assert np.all(np.diff(dev) < 0)
    rate = -np.diff(np.log(dev)) / np.diff(np.log(t_star.x))
    np.testing.assert_allclose(rate, 0.5, atol=0.06)


# ---------------------------------------------------------------------------------- compute


def test_top_edge_flat_is_marchenko_pastur():
    for N, P in [(50, 200), (300, 100), (100, 100)]:
        assert top_edge(np.ones(N), P) == pytest.approx((np.sqrt(P) + np.sqrt(N)) ** 2, rel=1e-10)
        assert top_edge(np.ones(N), P, weight_decay=0.5) == pytest.approx((np.sqrt(P) + np.sqrt(N)) ** 2 + 0.5)
    # a flat spectrum has no outlier: top_outlier falls back to the edge
    assert top_outlier(np.ones(50), 200) == pytest.approx(top_edge(np.ones(50), 200))


@pytest.mark.parametrize("alpha, N, P", [(1.0, 300, 150), (0.5, 150, 400)])
def test_top_edge_vs_eigvalsh(alpha, N, P):
    """Power law: the top eigenvalue is an outlier at lam_1 (P + sum_k>1 lam_k/(lam_1 - lam_k)); the DE
    edge sits ~2 lam_1 sqrt(P) above it (docs/theory.md, section 7)."""
    rng = np.random.default_rng(3)
    lam = power_law_spectrum(N, alpha)
    R = 120
    tops = np.empty(R)
    for r in range(R):
        X = rng.standard_normal((P, N)) * np.sqrt(lam)
        G = X @ X.T if P <= N else X.T @ X
        tops[r] = np.linalg.eigvalsh(G)[-1]
    mean, se = tops.mean(), tops.std(ddof=1) / np.sqrt(R)
    assert abs(top_outlier(lam, P) - mean) <= 4 * se
    excess = top_edge(lam, P) - mean
    assert abs(excess - 2 * lam[0] * np.sqrt(P)) <= 4 * se + 0.25 * lam[0] * np.sqrt(P)


def test_pareto_frontier_brute_force():
    rng = np.random.default_rng(4)
    f = np.exp(rng.uniform(0, 10, 400))
    e = np.exp(rng.normal(size=400))
    idx = pareto_frontier(f, e)
    grid = np.exp(np.linspace(-1, 11, 300))
    brute = np.array([e[f <= g].min() if np.any(f <= g) else np.nan for g in grid])
    corners_f, corners_e = f[idx], e[idx]
    step = np.array([corners_e[corners_f <= g][-1] if np.any(corners_f <= g) else np.nan for g in grid])
    np.testing.assert_array_equal(step, brute)
    assert np.all(np.diff(corners_f) >= 0) and np.all(np.diff(corners_e) < 0)


def test_theory_frontier_is_lower_envelope():
    # label noise makes the curves non-monotone in t: the frontier must use early stopping
    res = theory_frontier(1.0, 1.0, [64, 512], [8, 32, 128], np.geomspace(1e-3, 1e3, 49), label_noise=0.5, M=4096)
    cur = res.curves
    assert np.any(np.diff(cur[cur["N"] == 128]["E_g"].to_numpy()) > 0)       # some curve does go up
    lm = cur["lambda_max"].to_numpy()
    np.testing.assert_allclose(cur["compute"], 2 * cur["P"] * cur["N"] * cur["t"] * lm, rtol=1e-12)
    np.testing.assert_allclose(compute_cost(8, 64, 1.0, 10.0), 2 * 8 * 64 * 10.0)
    for P, sub in [(None, cur)] + [(P, cur[cur["P"] == P]) for P in (64, 512)]:
        f_all, e_all = sub["compute"].to_numpy(), sub["E_g"].to_numpy()
        F = res.frontier_at(f_all, P=P)
        assert np.all(e_all >= F)                                   # every curve on or above it
        fr = res.frontier if P is None else res.frontier_by_P[P]
        assert np.all(np.diff(fr["compute"]) >= 0) and np.all(np.diff(fr["E_g"]) < 0)   # monotone
        grid = np.geomspace(f_all.min() / 2, f_all.max() * 2, 200)
        brute = np.array([e_all[f_all <= g].min() if np.any(f_all <= g) else np.nan for g in grid])
        np.testing.assert_array_equal(res.frontier_at(grid, P=P), brute)
    # the global frontier is below each per-P frontier
    g = np.geomspace(cur["compute"].min(), cur["compute"].max(), 50)
    for P in (64, 512):
        fp = res.frontier_at(g, P=P)
        ok = np.isfinite(fp)
        assert np.all(res.frontier_at(g)[ok] <= fp[ok])


def test_fixed_P_frontier_exponents():
    P = 10**6
    res = theory_frontier(1.0, 1.0, [P], np.unique(np.geomspace(4, 2000, 28).astype(int)),
                          np.geomspace(1e-8, 1e2, 121))
    table = compute_optimal_exponents(res, P=P)
    for _, row in table.iterrows():
        assert row["agrees"], row.to_dict()
        assert row["ci_hi"] - row["ci_lo"] < 0.1
