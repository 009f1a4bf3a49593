"""The random-projection student (``predict(..., n_features=N)``, docs/theory.md section 9).

1. Against an exact Monte Carlo over A and data sets (tests/projection_reference.py, numpy only:
   per draw the linear dynamics is solved in the eigenbasis of Phi^T Phi, exact expectations over
   label noise, Langevin noise and init). Tolerance |theory - MC| <= Z SE + REL |MC| + ATOL on
   totals (E_g, bias, each variance source, train error) and on log-band sums of mode_bias and
   mode_variance over the M teacher modes, at t = 0, 6 finite times and t = inf.
   * Z = 4 (a few hundred correlated comparisons per regime).
   * REL = 6 %: finite-size allowance. The theory is the M, N, P -> inf limit; at these sizes
     (M = 300, N and P 60 ... 400) the systematic part is O(1/N + 1/P). Measured (60-80 draws,
     seed 7): totals within 3.4 % (6.2 % for the bias of the N = 60 Langevin regime), log-band
     sums of mode_bias within 15-22 % relative where a band is small but within 2.4 SE (noise:
     the band of mode 1 alone); mode_variance bands within 4 %. With 300 draws at
     (M, N, P) = (300, 200, 60) the late-time bias is +1.6 % (1.5 SE) and at twice the sizes
     -0.6 % (0.6 SE): the systematic part shrinks with size.
   * ATOL = 1e-10 E_g(0) for quantities that vanish identically.
2. Limits: N -> inf is the aligned engine (n_features=None); t = inf is the deterministic
   equivalent of linear random-feature ridge regression in the form of Simon, Karkada, Ghosh &
   Belkin (arXiv:2311.14646, their risk with k features, n samples, ridge delta), written
   here independently of the engine; t = 0 is exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq

from montecarlo_reference import log_bands
from projection_reference import monte_carlo
from rfscaling.theory import predict

Z, REL, ATOL_FRAC = 4.0, 0.06, 1e-10
M_MODES = 300
TIMES = np.array([0.0, 0.3, 3.0, 30.0, 300.0, 3e3, 3e4, np.inf])


def _task(M=M_MODES, alpha=1.0, beta=1.0):
    k = np.arange(1, M + 1, dtype=np.float64)
    lam = k ** -(1.0 + alpha)
    return lam, k ** -(1.0 + beta) / lam


# name: (P, N, noise, draws, t = inf finite)
REGIMES = {
    "model_limited_N<P": (200, 60, dict(label_noise=0.1), 80, True),
    "data_limited_N>P": (60, 200, dict(label_noise=0.1), 80, True),
    "N~P": (100, 100, dict(label_noise=0.02), 80, False),
    "N>M": (120, 400, dict(label_noise=0.05), 60, True),
    "wd_langevin_init": (80, 150, dict(label_noise=0.1, weight_decay=0.02, temperature=0.01,
                                       init_variance=0.5), 80, True),
    "langevin_no_wd_N<P": (150, 60, dict(temperature=0.01, init_variance=0.3), 60, True),
}

TOTALS = [("generalization_error", "E_g"), ("bias", "bias_total"), ("variance_label_noise", "lab_total"),
          ("variance_langevin", "lan_total"), ("variance_init", "init_total"), ("train_error", "train")]


def _compare(pred, mc, bands, scale, mask):
    failures, measured = [], {}

    def check(name, th, m, se, big):
        tol = Z * se + REL * np.abs(m) + ATOL_FRAC * scale
        rel = np.abs(th - m) / np.maximum(np.abs(m), ATOL_FRAC * scale)
        measured[name] = float(np.max(np.where(big, rel, 0.0)))
        bad = ~(np.abs(th - m) <= tol)
        if bad.any():
            i = tuple(np.argwhere(bad)[0])
            failures.append(f"{name}{i}: theory {th[i]:.6g} MC {m[i]:.6g}+-{se[i]:.2g}")

    for attr, key in TOTALS:
        th, (m, se) = getattr(pred, attr)[mask], (x[mask] for x in mc[key])
        check(attr, th, m, se, np.abs(m) >= 1e-3 * np.max(np.abs(m)))
    eg = mc["E_g"][0][mask][:, None]
    for attr, key in (("mode_bias", "bias_band"), ("mode_variance", "variance_band")):
        modes = getattr(pred, attr)
        th = np.stack([modes[:, b].sum(axis=1) for b in bands], axis=1)[mask]
        m, se = (x[mask] for x in mc[key])
        check(attr, th, m, se, np.abs(m) >= 1e-3 * eg)
    return failures, measured


@pytest.mark.parametrize("name", list(REGIMES))
def test_projection_matches_monte_carlo(name):
    P, N, noise, draws, inf_finite = REGIMES[name]
    lam, W = _task()
    bands = log_bands(M_MODES, 6)
    pred = predict(lam, W, P, TIMES, n_features=N, **noise)
    assert pred.success, pred.message
    mc = monte_carlo(lam, W, P, N, TIMES, draws, seed=7, bands=bands, **noise)
    mask = np.isfinite(TIMES) | inf_finite
    scale = float(np.sum(lam * (W + noise.get("init_variance", 0.0))))
    failures, measured = _compare(pred, mc, bands, scale, mask)
    assert not failures, f"{name}: " + "; ".join(failures[:6]) + f" (measured max rel {measured})"
    np.testing.assert_allclose(pred.mode_error.sum(axis=1), pred.generalization_error, rtol=1e-9)


def test_interpolation_peak_and_null_space_at_t_inf():
    """N = P < M without weight decay: label variance infinite at t = inf (double descent);
    Langevin without weight decay with P <= N: infinite (the data's null space in teacher space)."""
    lam, W = _task()
    p = predict(lam, W, 100, [np.inf], n_features=100, label_noise=0.1)
    assert np.isinf(p.variance_label_noise[0])
    # without label noise the frozen tail tau^2 alone diverges there: infinite bias, no NaN
    for N in (1, 100):
        z = predict(lam, W, N, [1.0, np.inf], n_features=N)
        assert np.isinf(z.bias[1]) and z.variance[1] == 0 and np.all(np.isfinite(z.mode_error[0]))
    q = predict(lam, W, 80, [np.inf], n_features=150, temperature=0.01)
    assert np.isinf(q.variance_langevin[0])
    r = predict(lam, W, 150, [np.inf], n_features=80, temperature=0.01)
    assert np.isfinite(r.variance_langevin[0]) and r.variance_langevin[0] > 0


# ----------------------------------------------------------------------------- limits


def test_large_n_features_is_the_aligned_student():
    lam, W = _task(200)
    times = np.array([0.0, 0.05, 0.5, 5.0, 50.0, 500.0, np.inf])
    kw = dict(label_noise=0.05, weight_decay=0.01, temperature=0.002, init_variance=0.2)
    a = predict(lam, W, 120, times, **kw)
    for N in (10**7, 10**9):
        p = predict(lam, W, 120, times, n_features=N, **kw)
        err = max(np.max(np.abs(getattr(p, f) - getattr(a, f)) / np.abs(getattr(a, f)).max())
                  for f in ("generalization_error", "bias", "variance_label_noise", "variance_langevin",
                            "variance_init", "train_error", "mode_error", "mode_bias", "mode_response"))
        assert err < 200.0 / N, (N, err)  # corrections are O(M / N); 1e-16-level numerics otherwise
    assert err > 0  # (an exact equality would mean the projected path was not taken)


def _rf_ridge_risk(lam, v2, n, k, ridge, noise):
    """Test risk of linear random-feature ridge regression, deterministic equivalent of Simon et al.
    (arXiv:2311.14646): gamma, kappa from df1(gamma) + ridge/kappa = n, df1(gamma) + k kappa/gamma = k;
    risk = (bias coefficients . v^2 + noise) / (1 - x). ``v2`` is the target power per mode."""
    df1 = lambda g: np.sum(lam / (lam + g))  # noqa: E731

    def gamma_of(kappa):
        return brentq(lambda lg: df1(np.exp(lg)) + ridge / kappa - n, -60, 60, xtol=1e-14)

    def outer(lk):
        g = np.exp(gamma_of(np.exp(lk)))
        return df1(g) + k * np.exp(lk) / g - k

    # gamma > 0 exists for kappa > ridge / n (n < number of modes here)
    kappa = np.exp(brentq(outer, np.log(ridge / n) + 1e-9, 20, xtol=1e-14))
    g = np.exp(gamma_of(kappa))
    L = lam / (lam + g)
    z, q = L.sum(), (L**2).sum()
    x = (q * (k - 2 * z) + z**2) / (n * (k - q))
    bias_c = (1 - L) - kappa * L / (lam + g) * k / (k - q)
    return (bias_c @ v2 + noise) / (1 - x)


@pytest.mark.parametrize("P,N,wd,noise", [(100, 40, 0.05, 0.1), (40, 100, 0.05, 0.1), (80, 80, 0.3, 0.2),
                                          (200, 60, 1e-3, 0.0), (60, 500, 2.0, 0.05)])
def test_t_inf_is_the_random_feature_ridge_equivalent(P, N, wd, noise):
    lam, W = _task()
    p = predict(lam, W, P, [np.inf], n_features=N, label_noise=noise, weight_decay=wd)
    # their ridge delta multiplies the kernel Gram matrix Phi Phi^T: our summed-loss weight decay
    ref = _rf_ridge_risk(lam, lam * W, P, N, wd, noise) - noise   # E_g is against the clean target
    np.testing.assert_allclose(p.generalization_error[0], ref, rtol=1e-8)
    np.testing.assert_allclose(p.bias[0] + p.variance_label_noise[0], p.generalization_error[0], rtol=1e-12)


def test_t_zero_exact_and_input_checks():
    lam, W = _task(50)
    p = predict(lam, W, 30, [0.0], n_features=20, label_noise=0.1, init_variance=0.4)
    np.testing.assert_allclose(p.mode_error[0], lam * (W + 0.4), rtol=1e-14)
    np.testing.assert_allclose(p.train_error[0], np.sum(lam * (W + 0.4)) + 0.1, rtol=1e-14)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_features"):
            predict(lam, W, 30, [1.0], n_features=bad)
    with pytest.raises(ValueError, match="tail_power"):
        predict(lam, W, 30, [1.0], n_features=10, tail_power=0.1)
