"""Discrete-time engine ``predict(..., learning_rate=eta)`` against an exact Monte Carlo of the
iteration (tests/montecarlo_discrete.py: per data set, per-eigenvalue recurrences, no theory).

Tolerance as in tests/test_theory_montecarlo.py: |theory - MC| <= Z * SE + REL * |MC| + ATOL with
Z = 4, REL = 3 % (the finite-size allowance of the continuous tests: the DMFT is the N, P -> inf
limit, O(1/P) off at P ~ 100), ATOL = 1e-10 E_g(0). Measured at the sizes below (100 data sets):
totals within 1.8 % except right after the first steps near the edge of stability
(eta lambda_edge = 1.6: 3.7 % at n = 2, at 1.8 SE), bands within the same bounds.
"""

from __future__ import annotations

import numpy as np
import pytest

from montecarlo_discrete import discrete_spectral, step_times
from montecarlo_reference import dataset_quantities, log_bands, monte_carlo, single_thread_blas
from rfscaling.theory import power_law_task, predict
from rfscaling.theory.frontier import top_edge, top_outlier

Z, REL, ATOL_FRAC = 4.0, 0.03, 1e-10
TOTALS = ("generalization_error", "bias", "variance", "variance_label_noise", "variance_langevin",
          "variance_init", "train_error")
STEPS = np.array([0, 1, 2, 3, 5, 8, 12, 30, 100, 300, 1000])


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with single_thread_blas():
        yield


# ---------------------------------------------------------------------------------------------
# 1. The discrete reference against a direct matrix iteration of mean and covariance
# ---------------------------------------------------------------------------------------------

def _matrix_iteration(X, lam, s, rates, mu, lab, wd, T, s0, keep):
    """Per-mode bias and variances by iterating the N x N response matrices and the 2N x 2N
    covariance of (v_n, v_{n-1}) directly (no eigendecomposition)."""
    P, N = X.shape
    C = X.T @ X
    H = C + wd * np.eye(N)
    I = np.eye(N)
    Wm, Wm_prev = np.zeros((N, N)), np.zeros((N, N))          # E[w_n] = Wm wstar
    B, B_prev = np.zeros((N, P)), np.zeros((N, P))            # label-noise response
    R, R_prev = I.copy(), I.copy()                            # initial-condition response
    S = np.zeros((2 * N, 2 * N))                              # Langevin covariance of (v_n, v_{n-1})
    out = {}
    for n in range(max(keep) + 1):
        if n in keep:
            out[n] = dict(bias=lam * (((Wm - I) ** 2) @ s), label=lam * lab * np.sum(B**2, axis=1),
                          init=lam * s0 * np.sum(R**2, axis=1), langevin=lam * np.diag(S)[:N])
        eta = rates[n] if n < len(rates) else 0.0
        M = (1 + mu) * I - eta * H
        Wm, Wm_prev = M @ Wm - mu * Wm_prev + eta * C, Wm
        B, B_prev = M @ B - mu * B_prev + eta * X.T, B
        R, R_prev = M @ R - mu * R_prev, R
        A = np.block([[M, -mu * I], [I, np.zeros((N, N))]])
        S = A @ S @ A.T
        S[:N, :N] += 2 * T * eta * I
    return out


@pytest.mark.parametrize("P, wd, mu, schedule", [(3, 0.0, 0.0, "constant"), (9, 0.4, 0.9, "constant"),
                                                 (3, 0.2, 0.5, "cosine"), (9, 0.0, 0.0, "cosine")])
def test_discrete_reference_matches_matrix_iteration(P, wd, mu, schedule):
    rng = np.random.default_rng(5 + P)
    N = 5
    lam = 1.0 / np.arange(1, N + 1) ** 1.5
    s = np.array([1.0, 0.5, 2.0, 0.3, 1.2])
    X = rng.standard_normal((P, N)) * np.sqrt(lam)
    eta0 = 0.5 / np.linalg.eigvalsh(X.T @ X + wd * np.eye(N)).max()
    n_max = 40
    rates = np.full(n_max, eta0)
    if schedule == "cosine":
        rates = eta0 * 0.5 * (1 + np.cos(np.pi * np.arange(n_max) / n_max))
    keep = [0, 1, 2, 7, 40]
    times = step_times(rates)[keep]
    kw = dict(label_noise=0.3, weight_decay=wd, temperature=0.2, init_variance=0.5)
    ref = dataset_quantities(X, lam, s, times, modes=True, spectral=discrete_spectral(rates, mu), **kw)
    direct = _matrix_iteration(X, lam, s, rates, mu, 0.3, wd, 0.2, 0.5, set(keep))
    for i, n in enumerate(keep):
        d = direct[n]
        for key, name in (("bias", "mode_bias"), ("label", "mode_variance_label_noise"),
                          ("init", "mode_variance_init"), ("langevin", "mode_variance_langevin")):
            np.testing.assert_allclose(ref[name][i], d[key], rtol=1e-9, atol=1e-13)


# ---------------------------------------------------------------------------------------------
# 2. The engine against the Monte Carlo of the iteration
# ---------------------------------------------------------------------------------------------

def _case(name):
    lam, w2 = power_law_task(N=200, alpha=1.0, beta=1.0)
    if name == "gd_eta_1_over_lambda_max":       # the testbed's step: 1 / (typical top eigenvalue)
        P, kw = 100, dict(label_noise=0.1)
        eta = 1.0 / top_outlier(lam, P)
    elif name == "sgld_weight_decay_init":
        P, kw = 150, dict(label_noise=0.05, weight_decay=0.5, temperature=0.01, init_variance=0.2)
        eta = 0.5 / top_edge(lam, P, 0.5)
    elif name == "p_greater_n":
        lam, w2 = power_law_task(N=150, alpha=1.0, beta=1.0)
        P, kw = 300, dict(label_noise=0.1, temperature=0.005)
        eta = 1.0 / top_edge(lam, P)
    else:                                          # near the edge of the typical spectrum
        P, kw = 100, dict(label_noise=0.1, init_variance=0.1)
        eta = 1.6 / top_edge(lam, P)
    return lam, w2, P, eta, kw


@pytest.mark.parametrize("name", ["gd_eta_1_over_lambda_max", "sgld_weight_decay_init", "p_greater_n",
                                  "near_edge"])
def test_engine_matches_discrete_monte_carlo(name):
    lam, w2, P, eta, kw = _case(name)
    rates = np.full(STEPS.max(), eta)
    times = np.append(step_times(rates)[STEPS], np.inf)
    bands = log_bands(lam.size, 5)
    mc = monte_carlo(lam, w2, P, times, n_datasets=100, seed=3, bands=bands,
                     spectral=discrete_spectral(rates), **kw)
    pred = predict(lam, w2, P, times, learning_rate=eta, **kw)
    assert pred.success, pred.message
    atol = ATOL_FRAC * pred.generalization_error[0]
    for key in TOTALS:
        th, m, se = getattr(pred, key), mc.mean[key], mc.se[key]
        ok = np.isfinite(m)
        assert np.all(np.isfinite(th[ok])), key
        err = np.abs(th[ok] - m[ok])
        bound = Z * se[ok] + REL * np.abs(m[ok]) + atol
        assert np.all(err <= bound), (name, key, np.max(err / bound))
    for field, band in (("mode_error", "band_error"), ("mode_bias", "band_bias"),
                        ("mode_variance", "band_variance")):
        th = np.stack([getattr(pred, field)[:, b].sum(axis=1) for b in bands], axis=1)
        m, se = mc.mean[band], mc.se[band]
        ok = np.isfinite(m)
        assert np.all(np.abs(th[ok] - m[ok]) <= Z * se[ok] + REL * np.abs(m[ok]) + atol), (name, field)


# ---------------------------------------------------------------------------------------------
# 3. Limits and errors
# ---------------------------------------------------------------------------------------------

def test_small_steps_converge_to_gradient_flow_at_first_order():
    """|discrete - continuous| halves when eta halves (first order in eta), for every output."""
    lam, w2 = power_law_task(N=300, alpha=1.0, beta=1.0)
    P = 100
    kw = dict(label_noise=0.1, weight_decay=0.01, temperature=0.01, init_variance=0.1)
    eta0 = 0.5 / top_edge(lam, P, 0.01)
    times = np.array([8, 64, 512, 4096]) * eta0
    cont = predict(lam, w2, P, times, **kw)
    diffs = []
    for j in (3, 4):
        d = predict(lam, w2, P, times, learning_rate=eta0 / 2**j, **kw)
        diffs.append({k: np.abs(getattr(d, k) - getattr(cont, k)) for k in TOTALS})
    for k in TOTALS:
        rate = diffs[0][k] / diffs[1][k]
        assert np.all((rate > 1.8) & (rate < 2.25)), (k, rate)    # measured 1.98 ... 2.06
        assert np.all(diffs[1][k] < 0.02 * np.abs(getattr(cont, k))), k


def test_mode_arrays_sum_to_totals_with_tail():
    lam, w2 = power_law_task(N=200, alpha=1.0, beta=1.0)
    P = 80
    eta = 1.0 / top_outlier(lam, P)
    times = np.array([0.0, 1, 3, 20, 500]) * eta
    pred = predict(lam, w2, P, np.append(times, np.inf), learning_rate=eta, label_noise=0.1,
                   temperature=0.01, weight_decay=0.1, init_variance=0.1, tail_power=0.05)
    np.testing.assert_allclose(pred.mode_error.sum(axis=1), pred.generalization_error - 0.05, rtol=1e-10)
    np.testing.assert_allclose(pred.mode_bias.sum(axis=1), pred.bias - 0.05, rtol=1e-10)
    np.testing.assert_allclose(pred.mode_variance_langevin.sum(axis=1), pred.variance_langevin, rtol=1e-10)


def test_bad_learning_rates_and_times_are_errors():
    lam, w2 = power_law_task(N=50, alpha=1.0, beta=1.0)
    P = 40
    edge = top_edge(lam, P)
    with pytest.raises(ValueError, match="not a multiple of learning_rate"):
        predict(lam, w2, P, [0.0, 1.5 / edge], learning_rate=1.0 / edge)
    with pytest.raises(ValueError, match="unstable"):
        predict(lam, w2, P, [2.0 / edge], learning_rate=2.0 / edge)
    with pytest.raises(ValueError, match="learning_rate"):
        predict(lam, w2, P, [1.0], learning_rate=-1.0)
    with pytest.raises(ValueError, match="schedule"):
        predict(lam, w2, P, [2.0 / edge], learning_rate=np.full(2, 1.0 / edge))
    with pytest.raises(ValueError, match="momentum"):
        predict(lam, w2, P, [1.0 / edge], learning_rate=1.0 / edge, momentum=0.9)


def test_late_times_keep_double_precision():
    """Late windows (1e5 ... 1e7 steps, N = 20000 on the compressed-spectrum path): near x = 1 the
    transforms are formed from x - 1 = expm1(eta u) (1 + (x - 1) - 1 lost 9 digits of the
    training error's cancellation against sigma^2 (P - N)/P here); every component stays >= -1e-13
    E_g(0) and E_g agrees with gradient flow, whose difference is O(eta / t)."""
    lam, w2 = power_law_task(N=20_000, alpha=2.0, beta=1.0)
    P = 20
    eta = 0.3 / top_edge(lam, P)
    times = np.array([1e5, 1e6, 3.29e6, 1e7]) * eta
    kw = dict(label_noise=0.1, init_variance=0.3)
    d = predict(lam, w2, P, times, learning_rate=eta, **kw)
    c = predict(lam, w2, P, times, **kw)
    e0 = float(np.sum(lam * (w2 + 0.3)))
    for key in ("bias", "variance_label_noise", "variance_init", "train_error"):
        assert np.all(getattr(d, key) >= -1e-13 * e0), key
    assert np.all(np.abs(d.train_error - c.train_error) <= 1e-4 * np.abs(c.train_error) + 1e-11 * e0)
    np.testing.assert_allclose(d.generalization_error, c.generalization_error, rtol=1e-4)
