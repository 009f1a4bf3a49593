"""Models: the eigenfeature student agrees with the DMFT in every regime; the random-feature
network's feature map, kernel basis and teacher coefficients are right; the problem builder
works for every data kind.

Agreement tolerance (stated): |empirical - DMFT| <= 4 SE + 3 % of the DMFT value, where SE is
the standard error over datasets of the ensemble estimate and 3 % allows for finite-size
corrections to the DMFT at N ~ 1000, P ~ 250 (measured well below this, see docs/testbed.md).
"""

import math

import numpy as np
import pytest
import torch

from rfscaling.config import DynamicsConfig
from rfscaling.data import make_generator, power_law_eigen_task, sample_eigen_ensemble
from rfscaling.models import make_problem
from rfscaling.dynamics import EulerDynamics, ExactDynamics, posterior_sample
from rfscaling.run import measure
from rfscaling.models.random_features import RandomFeatureMap, RandomFeatureModel, kernel_basis, teacher_coefficients
from rfscaling.theory import predict
from specs import problem

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SE_FACTOR, REL_SYS = 4.0, 0.03


def _bands(n, n_bands=6):
    edges = np.unique(np.round(np.logspace(0, np.log10(n), n_bands + 1)).astype(int))
    edges[0] = 0
    edges[-1] = n
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _check(name, emp, se, th, abs_tol=1e-12):
    tol = SE_FACTOR * se + REL_SYS * abs(th) + abs_tol
    assert abs(emp - th) <= tol, f"{name}: empirical {emp:.5g} +- {se:.2g} vs DMFT {th:.5g} (tol {tol:.2g})"


REGIMES = {
    "gradient_flow_clean": dict(label_noise=0.0),
    "gradient_flow_noise": dict(label_noise=0.1),
    "weight_decay": dict(label_noise=0.1, weight_decay=0.05),
    "langevin": dict(label_noise=0.1, temperature=0.01),
    "langevin_wd_init": dict(label_noise=0.1, temperature=0.05, weight_decay=0.1, init_variance=0.5),
}


@pytest.mark.parametrize("regime", list(REGIMES))
def test_eigenfeature_ensemble_agrees_with_dmft(regime):
    """Exact OU sampling of D=16 datasets x R=8 replicas (N=1000, P=256), measured like the app
    (finite-replica-corrected bias, unbiased variance), against ``rfscaling.theory.predict``:
    E_g, bias, variance, train error at 5 times (and t = inf where finite), and per-mode errors
    summed in 6 log-spaced bands."""
    kw = REGIMES[regime]
    N, P, D, R = 1000, 256, 16, 8
    task = power_law_eigen_task(N, 1.0, 1.0, label_noise=kw.get("label_noise", 0.0), teacher="random")
    data = sample_eigen_ensemble(task, P, D, R, make_generator(11, regime), dtype=F64)
    params = DynamicsConfig(kw.get("weight_decay", 0.0), kw.get("temperature", 0.0), kw.get("init_variance", 0.0))
    times = [0.3, 3.0, 30.0, 300.0, 3000.0]
    if params.weight_decay > 0 or params.temperature == 0:
        times.append(math.inf)
    pred = predict(task.eigenvalues, task.target_second_moment, P, np.array(times), **kw)
    dyn = ExactDynamics(data, params, dt=0.1)
    state = dyn.init(make_generator(12, regime))
    lam = data.eigenvalues
    for i, t in enumerate(times):
        state = state.__class__(dyn.transition(state.weights, t - state.time if math.isfinite(t) else math.inf,
                                               state.generator), 0, t, state.generator)
        m = measure(state.weights, data.target_weights, lam, dyn.train_errors(state.weights))
        _check(f"E_g(t={t})", m.generalization_error, m.generalization_error_se, pred.generalization_error[i])
        _check(f"bias(t={t})", m.bias, m.bias_se, pred.bias[i])
        if params.temperature > 0 or params.init_variance > 0 or task.label_noise > 0:
            _check(f"variance(t={t})", m.variance, m.variance_se, pred.variance[i])
        else:
            assert m.variance == pytest.approx(0.0, abs=1e-20)
        _check(f"train_error(t={t})", m.train_error, m.train_error_se, pred.train_error[i], abs_tol=1e-6)
        # per-mode errors in log bands, SE over datasets
        e = state.weights - data.target_weights[:, None, :]
        mode_err = (lam * (e**2).mean(1)).numpy()  # (D, N)
        for a, b in _bands(N):
            band = mode_err[:, a:b].sum(1)
            _check(f"band[{a}:{b}](t={t})", band.mean(), band.std(ddof=1) / math.sqrt(D),
                   pred.mode_error[i, a:b].sum())


def test_eigenfeature_euler_agrees_with_dmft():
    """Euler stepping (dt = 1/lambda_max) with label noise: E_g, bias, variance, train error
    agree at t >= 30 dt, where the documented discretisation error is < 2 %."""
    N, P, D, R = 500, 100, 16, 4
    task = power_law_eigen_task(N, 1.0, 1.0, label_noise=0.2, teacher="random")
    data = sample_eigen_ensemble(task, P, D, R, make_generator(3), dtype=F64)
    dyn = EulerDynamics(data, DynamicsConfig())
    state = dyn.init(make_generator(4))
    steps = [30, 300, 1500]
    pred = predict(task.eigenvalues, task.target_second_moment, P, np.array(steps) * dyn.dt, label_noise=0.2)
    for i, n in enumerate(steps):
        state = dyn.advance(state, n - state.step)
        m = measure(state.weights, data.target_weights, data.eigenvalues, dyn.train_errors(state.weights))
        _check("E_g", m.generalization_error, m.generalization_error_se, pred.generalization_error[i])
        _check("bias", m.bias, m.bias_se, pred.bias[i])
        _check("variance", m.variance, m.variance_se, pred.variance[i])
        _check("train_error", m.train_error, m.train_error_se, pred.train_error[i])


def test_bayes_posterior_agrees_with_dmft():
    N, P, D, R = 1000, 256, 16, 8
    T, wd = 0.1, 0.1
    task = power_law_eigen_task(N, 1.0, 1.0, label_noise=0.1, teacher="random")
    data = sample_eigen_ensemble(task, P, D, R, make_generator(21), dtype=F64)
    state = posterior_sample(data, DynamicsConfig(weight_decay=wd, temperature=T), make_generator(22))
    pred = predict(task.eigenvalues, task.target_second_moment, P, np.array([np.inf]), label_noise=0.1,
                   weight_decay=wd, temperature=T)
    dyn = ExactDynamics(data, DynamicsConfig(weight_decay=wd, temperature=T))
    m = measure(state.weights, data.target_weights, data.eigenvalues, dyn.train_errors(state.weights))
    _check("E_g", m.generalization_error, m.generalization_error_se, pred.generalization_error[0])
    _check("bias", m.bias, m.bias_se, pred.bias[0])
    _check("variance", m.variance, m.variance_se, pred.variance[0])
    _check("train_error", m.train_error, m.train_error_se, pred.train_error[0])


def test_measure_bias_correction_is_unbiased():
    """With w = wstar + b + noise, the corrected bias estimates |b|_lam^2 without the var/R
    offset (checked over many ensembles); bias + variance = E_g exactly."""
    g = make_generator(0)
    D, R, N = 2000, 3, 4
    lam = torch.tensor([1.0, 0.5, 0.25, 0.1], dtype=F64)
    b = torch.tensor([0.3, -0.2, 0.0, 0.5], dtype=F64)
    sd = torch.tensor([0.5, 1.0, 0.7, 0.2], dtype=F64)
    wstar = torch.randn(D, N, generator=g, dtype=F64)
    w = wstar[:, None, :] + b + sd * torch.randn(D, R, N, generator=g, dtype=F64)
    m = measure(w, wstar, lam, torch.zeros(D, R, dtype=F64))
    true_bias = float((lam * b**2).sum())
    true_var = float((lam * sd**2).sum())
    assert abs(m.bias - true_bias) <= 4 * m.bias_se
    assert abs(m.variance - true_var) <= 4 * m.variance_se
    assert m.bias + m.variance == pytest.approx(m.generalization_error, rel=1e-12)
    np.testing.assert_allclose(m.mode_bias + m.mode_variance, m.mode_error, rtol=1e-12)
    # the uncorrected estimate is off by var/R, far outside the error bar: the correction matters
    naive = float((lam * (w - wstar[:, None]).mean(1) ** 2).sum(-1).mean())
    assert naive - true_bias > 10 * m.bias_se


# ------------------------------------------------------------------ random-feature network


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh", "erf", "identity"])
def test_random_feature_map(nonlinearity):
    g = make_generator(0)
    fmap = RandomFeatureMap(5, 7, nonlinearity, g, F64)
    x = torch.randn(3, 5, dtype=F64)
    F = fmap.weight
    ref = {"relu": torch.relu, "tanh": torch.tanh, "erf": torch.special.erf, "identity": lambda v: v}[nonlinearity]
    torch.testing.assert_close(fmap(x), ref(x @ F.T) / math.sqrt(7))
    assert not any(p.requires_grad for p in fmap.parameters())  # frozen: F is a buffer
    model = RandomFeatureModel(fmap)
    w = torch.randn(2, 7, dtype=F64)
    torch.testing.assert_close(model(x, w), fmap(x) @ w.T)
    # seeded: same generator seed -> same F
    assert torch.equal(RandomFeatureMap(5, 7, nonlinearity, make_generator(0), F64).weight, F)
    with pytest.raises(ValueError, match="nonlinearity"):
        RandomFeatureMap(5, 7, "sigmoid", g)


def test_kernel_basis_and_teacher_coefficients():
    """On the pool: eigen-coordinates are uncorrelated with variances lam_k; a target that is
    linear in the features is recovered exactly (no unexplained variance); adding an
    independent part leaves exactly its variance unexplained."""
    g = make_generator(1)
    fmap = RandomFeatureMap(10, 20, "relu", g, F64)
    x = torch.randn(3000, 10, generator=g, dtype=F64)
    phi = fmap(x)
    basis = kernel_basis(phi)
    Xe = basis.to_eigen(phi)
    cov = Xe.T @ Xe / 3000
    torch.testing.assert_close(cov, torch.diag(basis.eigenvalues), atol=1e-12, rtol=0)
    assert torch.all(basis.eigenvalues[:-1] >= basis.eigenvalues[1:]) and basis.rank == 20
    a = torch.randn(20, generator=g, dtype=F64)
    y = phi @ a
    W, unexpl, power = teacher_coefficients(basis, phi, y)
    torch.testing.assert_close(basis.vectors @ W[0], a, rtol=1e-8, atol=1e-8)
    assert float(unexpl[0]) < 1e-10 * float(power[0])
    noise = torch.randn(3000, generator=g, dtype=F64)
    noise = noise - Xe @ torch.linalg.lstsq(Xe, noise[:, None]).solution[:, 0]  # orthogonal to features
    _, unexpl2, _ = teacher_coefficients(basis, phi, y + noise)
    assert float(unexpl2[0]) == pytest.approx(float((noise**2).mean()), rel=1e-8)


def test_identity_features_have_input_rank():
    g = make_generator(2)
    fmap = RandomFeatureMap(6, 30, "identity", g, F64)
    basis = kernel_basis(fmap(torch.randn(500, 6, generator=g, dtype=F64)))
    assert basis.rank == 6


@pytest.mark.parametrize("kind,target", [("gaussian_powerlaw", "teacher_network"), ("gaussian_powerlaw", "powerlaw_teacher"),
                                         ("digits", "labels"), ("mnist1d", "labels")])
def test_problem_builder_random_features(kind, target):
    spec = problem(kind=kind, target=target, model="random_features", P=40, N=64, datasets=3, replicas=2,
                   label_noise=0.05, validation_size=20, pool_size=300, dtype=F64)
    pr = make_problem(spec)
    d = pr.data
    assert d.features.shape == (3, 40, 64) and d.labels.shape == (3, 2, 40)
    assert pr.validation.features.shape == (3, 20, 64)
    assert pr.theory_eigenvalues.size == pr.info["kernel_rank"] > 0
    assert np.all(pr.theory_eigenvalues > 0)
    if target == "powerlaw_teacher":
        assert pr.unexplained_variance == pytest.approx(0.0, abs=1e-10)
    else:
        assert 0 <= pr.unexplained_variance < pr.info["target_power"]
    curve = pr.theory(np.array([0.0, 1.0, np.inf]))
    # t = 0: E_g = full target power (features explain part, the rest is unexplained)
    assert curve.generalization_error[0] == pytest.approx(pr.info["target_power"], rel=1e-6)
    np.testing.assert_allclose(curve.bias + curve.variance, curve.generalization_error, rtol=1e-10)


def test_measured_spectrum_shape_on_gaussian_power_law_inputs():
    """Identity features of Gaussian inputs with covariance diag(v), v_i ~ i^-(1+alpha) summing
    to D_in: Sigma = F diag(v) F^T / N has the nonzero eigenvalues of diag(v)^1/2 F^T F diag(v)^1/2 / N
    ~ v / D_in (F^T F / N -> I / D_in), so the measured spectrum follows the input power law
    (within the sampling error of F and of the pool, ~ sqrt(D_in / N) + sqrt(1 / pool) relative)
    and has rank D_in. ReLU features keep the power-law head (log-log slope near -(1+alpha))."""
    from rfscaling.data.sets.gaussian_powerlaw import gaussian_power_law_inputs

    Din, N, pool, alpha = 16, 600, 8000, 1.0
    x = gaussian_power_law_inputs(pool, Din, alpha, make_generator(0, "x"))
    i = np.arange(1, Din + 1)
    v = i ** -(1 + alpha)
    v = v * Din / v.sum()
    np.testing.assert_allclose(x.var(0).numpy(), v, rtol=6 * math.sqrt(2 / pool))
    fmap = RandomFeatureMap(Din, N, "identity", make_generator(0, "F"), F64)
    basis = kernel_basis(fmap(x))
    assert basis.rank == Din
    lam = basis.eigenvalues.numpy()[:Din]
    F = fmap.weight.numpy()
    population = np.linalg.eigvalsh(np.sqrt(v)[:, None] * (F.T @ F / N) * np.sqrt(v)[None, :])[::-1]
    np.testing.assert_allclose(lam, population, rtol=6 * math.sqrt(2 / pool))  # pool sampling error
    np.testing.assert_allclose(population, v / Din, rtol=4 * math.sqrt(Din / N))  # F^T F / N ~ I / Din
    relu = kernel_basis(RandomFeatureMap(Din, 400, "relu", make_generator(1, "F"), F64)(x[:4000]))
    lr = relu.eigenvalues.numpy()
    k = np.arange(2, 12)  # skip the constant (mean) mode
    slope = np.polyfit(np.log(k), np.log(lr[k - 1]), 1)[0]
    assert -(1 + alpha) - 0.5 < slope < -(1 + alpha) + 0.5, slope
