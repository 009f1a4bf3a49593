"""The DMFT engine ``rfscaling.theory.predict`` against an exact finite-size Monte Carlo.

The reference (tests/montecarlo_reference.py, numpy only) draws Gaussian designs and evaluates
every quantity in closed form per dataset (no time stepping, teacher averaged analytically), so
its only randomness is the dataset; standard errors (SE) are over datasets.  The reference is
itself checked against brute force (Van Loan matrix exponentials, direct sampling) below.

Tolerance: |theory - MC| <= Z * SE + REL * |MC| + ATOL, on totals (E_g, bias, variance, each
variance source, train error) and on band sums of mode_error / mode_bias / mode_variance over
log-spaced bands of modes, at 0, 20 log-spaced times from 1e-3/(P lam_1) to 1e3, and inf.
  * Z = 4: a few hundred correlated comparisons per regime; a 4-sigma excursion of a dataset
    average has probability ~6e-5 each.
  * REL = 3%: the DMFT is the N, P -> inf limit at fixed ratio; its finite-size bias is O(1/P).
    Measured at the default sizes (N, P in {200, 400}, 100-150 datasets): totals within 1.1%
    (the systematic part, e.g. at t = inf, is 0.4-0.6% ~ 1/P and halves when N and P double;
    OLS-like limits show exactly N/(P-N) vs the exact N/(P-N-1)); band sums within 4.7%
    relative but within 3.6 SE (noise dominated).  The slow variant doubles N and P and uses
    1% (measured totals <= 0.9%, bands within 4 SE).  3% is an allowance for O(1/P) effects,
    not a fit: every 5% perturbation of the inputs (t, P, label_noise, temperature,
    weight_decay, init_variance) fed to the engine makes these tests fail.
  * ATOL = 1e-10 * E_g(0): only matters for quantities that vanish identically (a noise source
    that is switched off, the training error of an interpolator at t = inf).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from montecarlo_reference import dataset_quantities, log_bands, monte_carlo, single_thread_blas

Z = 4.0


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small matrices: BLAS threads only cost time (a lot when the CPUs are shared)."""
    with single_thread_blas():
        yield

REL = 0.03
ATOL_FRAC = 1e-10

TOTALS = (
    "generalization_error",
    "bias",
    "variance",
    "variance_label_noise",
    "variance_langevin",
    "variance_init",
    "train_error",
)
BAND_FIELDS = (("mode_error", "band_error"), ("mode_bias", "band_bias"),
               ("mode_variance", "band_variance"))


# ----------------------------------------------------------------------------------------------
# 1. The reference itself, against brute force (matrix exponentials, sampling).  No engine needed.
# ----------------------------------------------------------------------------------------------

def _brute_force_moments(X, wstar_cov, times, label_noise, weight_decay, temperature,
                         init_variance):
    """Per-mode bias/variances of w(t) for one design by Van Loan block exponentials.

    int_0^t e^{-H s} ds = top-right block of expm(t [[-H, I], [0, 0]]) -- valid for singular H.
    """
    P, N = X.shape
    C = X.T @ X
    H = C + weight_decay * np.eye(N)
    I = np.eye(N)
    out = []
    for t in times:
        blk = np.zeros((2 * N, 2 * N))
        blk[:N, :N] = -H
        blk[:N, N:] = I
        Phi = scipy.linalg.expm(t * blk)[:N, N:]  # int_0^t e^{-Hs} ds
        blk2 = blk.copy()
        blk2[:N, :N] = -2.0 * H
        Psi = scipy.linalg.expm(t * blk2)[:N, N:]  # int_0^t e^{-2Hs} ds
        E2 = scipy.linalg.expm(-2.0 * t * H)
        A = Phi @ C - I
        out.append(dict(
            A=A, Phi=Phi,
            bias=np.diag(A @ wstar_cov @ A.T),
            label=label_noise * np.diag(Phi @ C @ Phi.T),
            langevin=2.0 * temperature * np.diag(Psi),
            init=init_variance * np.diag(E2),
            cov_noise=2.0 * temperature * Psi + init_variance * E2,
        ))
    return out


@pytest.mark.parametrize("P, weight_decay", [(3, 0.0), (3, 0.4), (9, 0.0), (9, 0.4)])
def test_reference_matches_brute_force(P, weight_decay):
    rng = np.random.default_rng(11 + P)
    N = 5
    lam = 1.0 / np.arange(1, N + 1) ** 1.5
    s = np.array([1.0, 0.5, 2.0, 0.3, 1.2])
    X = rng.standard_normal((P, N)) * np.sqrt(lam)
    times = np.array([0.0, 0.05, 0.7, 4.0])
    kw = dict(label_noise=0.3, weight_decay=weight_decay, temperature=0.2, init_variance=0.5)
    ref = dataset_quantities(X, lam, s, times, bands=[np.arange(2), np.arange(2, N)],
                             modes=True, **kw)
    bf = _brute_force_moments(X, np.diag(s), times, **kw)
    for it, b in enumerate(bf):
        np.testing.assert_allclose(ref["mode_bias"][it], lam * b["bias"], rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(ref["mode_variance_label_noise"][it], lam * b["label"],
                                   rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(ref["mode_variance_langevin"][it], lam * b["langevin"],
                                   rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(ref["mode_variance_init"][it], lam * b["init"],
                                   rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(ref["bias"][it], (lam * b["bias"]).sum(), rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(ref["band_bias"][it],
                                   [(lam * b["bias"])[:2].sum(), (lam * b["bias"])[2:].sum()],
                                   rtol=1e-9, atol=1e-13)

    # training error: direct sampling of (wstar, eps, w(t)) from their exact Gaussian laws
    n = 100_000
    for it, b in enumerate(bf):
        wstar = rng.standard_normal((n, N)) * np.sqrt(s)
        eps = rng.standard_normal((n, P)) * np.sqrt(kw["label_noise"])
        y = wstar @ X.T + eps
        mean_w = (y @ X) @ b["Phi"].T  # Phi X^T y
        Lc = np.linalg.cholesky(b["cov_noise"] + 1e-300 * np.eye(N)) if times[it] > 0 else \
            np.sqrt(kw["init_variance"]) * np.eye(N)
        w = mean_w + rng.standard_normal((n, N)) @ Lc.T
        te = ((y - w @ X.T) ** 2).sum(axis=1) / P
        se = te.std(ddof=1) / np.sqrt(n)
        assert abs(ref["train_error"][it] - te.mean()) < 5 * se, (it, ref["train_error"][it],
                                                                  te.mean(), se)


def test_reference_limits_exact():
    """t = 0 and t = inf in the reference: exact values, and the infinite Langevin variance."""
    N, P = 40, 15
    k = np.arange(1, N + 1)
    lam = k ** -1.5
    s = k ** -0.5
    times = np.array([0.0, 1.0, np.inf])
    mc = monte_carlo(lam, s, P, times, label_noise=0.2, temperature=0.1, init_variance=0.3,
                     n_datasets=400, seed=1)
    np.testing.assert_allclose(mc.generalization_error[0], (lam * (s + 0.3)).sum(), rtol=1e-12)
    # per dataset the t = 0 training error is tr(C S)/P + ..., exact only on average
    assert abs(mc.train_error[0] - ((lam * (s + 0.3)).sum() + 0.2)) < 5 * mc.se["train_error"][0]
    assert mc.se["train_error"][0] > 0
    assert np.isinf(mc.variance_langevin[2]) and np.isfinite(mc.variance_langevin[1])
    assert np.isfinite(mc.train_error[2])  # null directions of C do not reach the training set
    # init variance in the null space of C (P < N, no weight decay) never decays
    assert mc.variance_init[2] > 0.0


# ----------------------------------------------------------------------------------------------
# 2. Engine against the Monte Carlo
# ----------------------------------------------------------------------------------------------

def _time_grid(P, lam_1, include_inf):
    t = np.concatenate([[0.0], np.logspace(np.log10(1e-3 / (P * lam_1)), 3.0, 20)])
    if include_inf:
        t = np.concatenate([t, [np.inf]])
    return t


def _discrepancies(theory, mc_mean, mc_se, scale, rel):
    """|theory - MC| / (Z SE + rel |MC| + ATOL) elementwise."""
    theory = np.asarray(theory, dtype=np.float64)
    tol = Z * mc_se + rel * np.abs(mc_mean) + ATOL_FRAC * scale
    return np.abs(theory - mc_mean) / tol


def _rel(theory, mc_mean, scale):
    return np.abs(np.asarray(theory) - mc_mean) / np.maximum(np.abs(mc_mean), ATOL_FRAC * scale)


def compare_with_mc(pred, mc, bands, scale, finite_mask, rel_tol=REL):
    """Return a list of failure strings and a dict of measured max relative discrepancies."""
    failures = []
    measured = {}
    for name in TOTALS:
        th = getattr(pred, name)[finite_mask]
        m = mc.mean[name][finite_mask]
        se = mc.se[name][finite_mask]
        ratio = _discrepancies(th, m, se, scale, rel_tol)
        rel = _rel(th, m, scale)
        # relative discrepancy over entries >= 1e-3 of the largest (the rest is ~0 on both sides)
        big = np.abs(m) >= 1e-3 * np.max(np.abs(m))
        measured[name] = float(np.max(np.where(big, rel, 0.0)))
        bad = ~(ratio <= 1.0)
        if np.any(bad):
            i = np.flatnonzero(bad)[0]
            failures.append(f"{name} at t={mc.times[finite_mask][i]:.3g}: theory={th[i]:.6g} "
                            f"MC={m[i]:.6g}+-{se[i]:.2g} (rel {rel[i]:.3g})")
    for mode_name, band_name in BAND_FIELDS:
        th_modes = getattr(pred, mode_name)
        th = np.stack([th_modes[:, idx].sum(axis=1) for idx in bands], axis=1)[finite_mask]
        m = mc.mean[band_name][finite_mask]
        se = mc.se[band_name][finite_mask]
        ratio = _discrepancies(th, m, se, scale, rel_tol)
        rel = _rel(th, m, scale)
        # relative discrepancy over entries that carry >= 1e-3 of the total (the rest is noise)
        big = np.abs(m) >= 1e-3 * np.abs(mc.mean["generalization_error"][finite_mask])[:, None]
        measured[band_name] = float(np.max(np.where(big, rel, 0.0)))
        bad = ~(ratio <= 1.0)
        if np.any(bad):
            i, j = np.argwhere(bad)[0]
            failures.append(f"{band_name} band {j} (modes {bands[j][0] + 1}..{bands[j][-1] + 1}) "
                            f"at t={mc.times[finite_mask][i]:.3g}: theory={th[i, j]:.6g} "
                            f"MC={m[i, j]:.6g}+-{se[i, j]:.2g} (rel {rel[i, j]:.3g})")
    return failures, measured


# name: (N, P, alpha, beta, kwargs, n_datasets, t=inf finite?)
REGIMES = {
    "gf_noiseless_P<N_beta=alpha": (400, 200, 1.0, 1.0, {}, 150, True),
    "gf_noiseless_P<N_beta!=alpha": (400, 200, 0.5, 1.5, {}, 150, True),
    "gf_label_noise_P<N": (400, 200, 1.0, 0.5, dict(label_noise=0.05), 150, True),
    "gf_label_noise_P>N": (200, 400, 1.5, 1.0, dict(label_noise=0.05), 100, True),
    "weight_decay_P<N": (400, 200, 1.0, 1.0, dict(label_noise=0.05, weight_decay=0.5), 150, True),
    "weight_decay_P>N": (200, 400, 0.5, 0.8, dict(label_noise=0.1, weight_decay=2.0), 100, True),
    "langevin_wd_P<N": (400, 200, 1.0, 1.0,
                        dict(label_noise=0.02, temperature=0.01, weight_decay=0.5), 150, True),
    "langevin_no_wd_P<N": (400, 200, 1.0, 1.5, dict(temperature=0.01), 150, False),
    "langevin_no_wd_P>N": (200, 400, 1.0, 1.0, dict(label_noise=0.02, temperature=0.01), 100, True),
    "init_variance_P<N": (400, 200, 1.0, 1.0, dict(init_variance=0.5), 150, True),
    "init_variance_P>N_all_sources": (200, 400, 1.0, 0.5,
                                      dict(init_variance=0.3, label_noise=0.05, temperature=0.005,
                                           weight_decay=0.1), 100, True),
}


def run_regime(name, seed=1234, size_factor=1, n_datasets=None, n_bands=6, rel_tol=REL):
    from rfscaling.theory import power_law_task, predict

    N, P, alpha, beta, kw, nd, inf_finite = REGIMES[name]
    N, P = N * size_factor, P * size_factor
    lam, w2 = power_law_task(N, alpha, beta)
    times = _time_grid(P, lam[0], include_inf=True)
    bands = log_bands(N, n_bands)
    mc = monte_carlo(lam, w2, P, times, n_datasets=n_datasets or nd, seed=seed, bands=bands, **kw)
    pred = predict(lam, w2, P, times, **kw)
    finite_mask = np.isfinite(times) | inf_finite
    scale = float(np.sum(lam * (w2 + kw.get("init_variance", 0.0))))
    failures, measured = compare_with_mc(pred, mc, bands, scale, finite_mask, rel_tol)
    if not inf_finite:  # Langevin, no weight decay, P < N: infinite variance at t = inf
        if not (np.isinf(pred.generalization_error[-1]) and np.isinf(pred.variance_langevin[-1])):
            failures.append(f"t=inf should give infinite E_g / variance_langevin, got "
                            f"{pred.generalization_error[-1]}, {pred.variance_langevin[-1]}")
    return pred, mc, failures, measured


@pytest.mark.parametrize("name", list(REGIMES))
def test_predict_matches_monte_carlo(name):
    pred, mc, failures, measured = run_regime(name)
    assert pred.success, pred.message
    np.testing.assert_array_equal(pred.times, mc.times)
    assert pred.mode_error.shape == (mc.times.size, REGIMES[name][0])
    assert not failures, f"{name}: " + "; ".join(failures[:6]) + f"  (measured max rel {measured})"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGIMES))
def test_predict_matches_monte_carlo_larger_tighter(name):
    """Twice the sizes, 8 bands, and a 1% systematic allowance: the finite-size bias halves
    with the sizes (measured max ~0.9% on totals at these sizes; band sums are within 4 SE)."""
    pred, mc, failures, measured = run_regime(name, seed=99, size_factor=2, n_datasets=80,
                                              n_bands=8, rel_tol=0.01)
    assert pred.success, pred.message
    assert not failures, f"{name}: " + "; ".join(failures[:6]) + f"  (measured max rel {measured})"


def test_langevin_without_weight_decay_diverges_when_underparameterised_data():
    """P < N, weight_decay = 0, temperature > 0: the null space of C diffuses freely, so the
    variance is infinite at t = inf (and grows linearly, 2 T t per null direction, at late t)."""
    from rfscaling.theory import power_law_task, predict

    N, P, T = 300, 100, 0.01
    lam, w2 = power_law_task(N, 1.0, 1.0)
    times = np.array([1e2, 1e3, 1e4, np.inf])
    pred = predict(lam, w2, P, times, temperature=T)
    assert np.isinf(pred.variance_langevin[-1]) and pred.variance_langevin[-1] > 0
    assert np.isinf(pred.generalization_error[-1]) and pred.generalization_error[-1] > 0
    assert np.all(np.isfinite(pred.generalization_error[:-1]))
    # the training error stays finite: null directions are invisible on the training set
    assert np.isfinite(pred.train_error[-1])
    # late-time slope: d variance / dt -> 2 T sum_k lam_k (null-space weight of mode k);
    # it must be positive and no larger than 2 T sum_k lam_k.
    slope = (pred.variance_langevin[2] - pred.variance_langevin[1]) / (times[2] - times[1])
    assert 0.0 < slope <= 2 * T * lam.sum() * (1 + 1e-9)
    mc = monte_carlo(lam, w2, P, times[:3], temperature=T, n_datasets=60, seed=5)
    mc_slope = (mc.variance_langevin[2] - mc.variance_langevin[1]) / (times[2] - times[1])
    assert abs(slope - mc_slope) <= REL * mc_slope + Z * np.hypot(mc.se["variance_langevin"][2],
                                                                  mc.se["variance_langevin"][1]) / (
        times[2] - times[1])
