"""The testbed's random-projection student (``model=random_projection``, docs/theory.md section 9).

Simulations (exact OU transitions, Euler steps, the posterior) on the projected features, measured
per teacher mode through ``EnsembleData.readout``, against ``predict(..., n_features=N)``.
Tolerance: |empirical - DMFT| <= 4 SE + 5 % of the DMFT value (SE over datasets; 5 % is the
finite-size allowance at M = 400, N = 80-160, P = 120-200, where tests/test_theory_projection.py
measured the engine against the exact Monte Carlo within 1-3 % on totals).
"""

import math

import numpy as np
import pytest
import torch

from rfscaling.config import DynamicsConfig
from rfscaling.data import make_generator
from rfscaling.dynamics import EulerDynamics, ExactDynamics, posterior_sample
from rfscaling.models import make_problem
from rfscaling.run import measure
from rfscaling.theory import predict
from rfscaling.train import train
from specs import config, problem

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_torch_thread")
SE_FACTOR, REL_SYS = 4.0, 0.05


def _check(name, emp, se, th, abs_tol=1e-12):
    tol = SE_FACTOR * se + REL_SYS * abs(th) + abs_tol
    assert abs(emp - th) <= tol, f"{name}: empirical {emp:.5g} +- {se:.2g} vs DMFT {th:.5g} (tol {tol:.2g})"


def _problem(N, M, P, D=24, R=4, **kw):
    return make_problem(problem(model="random_projection", N=N, M=M, P=P, datasets=D, replicas=R, dtype=F64,
                                teacher="random", **kw))


def test_problem_draws_one_projection_per_dataset():
    pb = _problem(60, 200, 50, D=3, R=2, label_noise=0.1)
    d = pb.data
    assert d.features.shape == (3, 50, 60) and d.readout.shape == (3, 200, 60)
    assert d.target_weights.shape == (3, 200) and d.eigenvalues.shape == (200,)
    assert not torch.allclose(d.readout[0], d.readout[1])
    # E|F w|^2 per teacher mode at w = wstar-free zero weights: E_g(0) = sum lam wstar^2 exactly
    m = measure(torch.zeros(3, 2, 60, dtype=F64), d.target_weights, d.eigenvalues,
                torch.zeros(3, 2, dtype=F64), readout=d.readout)
    np.testing.assert_allclose(m.generalization_error,
                               float((d.eigenvalues * d.target_weights**2).sum(1).mean()), rtol=1e-12)
    assert m.mode_error.shape == (200,) and pb.n_features == 60
    # a weight vector that reproduces the teacher inside the span of F: error = what F cannot express
    F = d.readout[0]
    w = torch.linalg.lstsq(d.eigenvalues.sqrt()[:, None] * F, d.eigenvalues.sqrt() * d.target_weights[0]).solution
    v = F @ w - d.target_weights[0]
    np.testing.assert_allclose(measure(w.expand(3, 2, 60)[:1], d.target_weights[:1], d.eigenvalues,
                                       torch.zeros(1, 2, dtype=F64), readout=d.readout[:1]).generalization_error,
                               float((d.eigenvalues * v**2).sum()), rtol=1e-10)


@pytest.mark.parametrize("N,P,kw", [(80, 200, dict(label_noise=0.1)),
                                    (160, 120, dict(label_noise=0.1, weight_decay=0.02, temperature=0.005,
                                                    init_variance=0.3))])
def test_exact_transitions_agree_with_projected_dmft(N, P, kw):
    M = 400
    pb = _problem(N, M, P, label_noise=kw["label_noise"])
    data = pb.data
    params = DynamicsConfig(kw.get("weight_decay", 0.0), kw.get("temperature", 0.0), kw.get("init_variance", 0.0))
    times = [0.3, 3.0, 30.0, 300.0, math.inf]
    pred = predict(pb.theory_eigenvalues, pb.theory_target_second_moment, P, np.array(times), n_features=N, **kw)
    dyn = ExactDynamics(data, params, dt=0.1)
    state = dyn.init(make_generator(5))
    for i, t in enumerate(times):
        step = t - state.time if math.isfinite(t) else math.inf
        state = state.__class__(dyn.transition(state.weights, step, state.generator), 0, t, state.generator)
        m = measure(state.weights, data.target_weights, data.eigenvalues, dyn.train_errors(state.weights),
                    readout=data.readout)
        _check(f"E_g(t={t})", m.generalization_error, m.generalization_error_se, pred.generalization_error[i])
        _check(f"bias(t={t})", m.bias, m.bias_se, pred.bias[i])
        _check(f"variance(t={t})", m.variance, m.variance_se, pred.variance[i])
        _check(f"train(t={t})", m.train_error, m.train_error_se, pred.train_error[i], abs_tol=1e-6)
        top = slice(0, 10)  # the ten leading teacher modes, where most of the error sits early on
        _check(f"modes 1-10 (t={t})", m.mode_error[top].sum(), math.sqrt((m.mode_error_se[top] ** 2).sum()),
               pred.mode_error[i, top].sum())


def test_euler_and_posterior_on_projected_features():
    N, M, P = 100, 400, 150
    pb = _problem(N, M, P, label_noise=0.2)
    data = pb.data
    dyn = EulerDynamics(data, DynamicsConfig())
    state = dyn.init(make_generator(4))
    steps = [30, 300, 1500]
    pred = predict(pb.theory_eigenvalues, pb.theory_target_second_moment, P, np.array(steps) * dyn.dt,
                   label_noise=0.2, n_features=N)
    for i, n in enumerate(steps):
        state = dyn.advance(state, n - state.step)
        m = measure(state.weights, data.target_weights, data.eigenvalues, dyn.train_errors(state.weights),
                    readout=data.readout)
        _check("E_g", m.generalization_error, m.generalization_error_se, pred.generalization_error[i])
        _check("train_error", m.train_error, m.train_error_se, pred.train_error[i])
    wd, T = 0.1, 0.05
    post = posterior_sample(data, DynamicsConfig(weight_decay=wd, temperature=T), make_generator(6))
    m = measure(post.weights, data.target_weights, data.eigenvalues, dyn.train_errors(post.weights),
                readout=data.readout)
    pred = predict(pb.theory_eigenvalues, pb.theory_target_second_moment, P, [np.inf], label_noise=0.2,
                   weight_decay=wd, temperature=T, n_features=N)
    _check("posterior E_g", m.generalization_error, m.generalization_error_se, pred.generalization_error[0])
    _check("posterior variance", m.variance, m.variance_se, pred.variance[0])


def test_train_app_runs_the_projected_student(tmp_path):
    spec = config(model="random_projection", N=48, M=160, P=40, label_noise=0.1, datasets=2, replicas=2,
                  t_max=5.0, n_evals=8, tensorboard=False, progress=False, dtype=torch.float64)
    s = train(spec, tmp_path)
    z = np.load(tmp_path / "modes.npz")
    assert z["mode_error"].shape[1] == 160 == z["mode_error_theory"].shape[1]
    assert s["final"]["E_g"] > 0 and np.isfinite(s["final"]["E_g_theory"])
    np.testing.assert_allclose(z["mode_error_theory"].sum(1)[-1], s["final"]["E_g_theory"], rtol=1e-9)
    s2 = train(config(model="random_projection", N=48, M=160, P=40, datasets=2, replicas=2, t_max=5.0,
                      n_evals=8, tensorboard=False, progress=False, integrator="exact"), tmp_path / "exact")
    assert s2["integrator"] == "exact" and np.isfinite(s2["final"]["E_g"])
