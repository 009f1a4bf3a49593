"""Dynamics: Euler stepping, the exact OU integrator and the GP posterior, against independent
references (autograd, scipy.linalg.expm, closed-form Ornstein-Uhlenbeck moments, the ridge /
posterior formulas with numpy.linalg) and against each other within the stated errors."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from rfscaling.config import DynamicsConfig
from rfscaling.data import EnsembleData, make_generator, power_law_eigen_task, sample_eigen_ensemble
from rfscaling.dynamics import (
    EulerDynamics,
    ExactDynamics,
    HessianEigen,
    exact_moments,
    hessian_top_eigenvalue,
    posterior_sample,
    stable_step_size,
)

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(N, P, D, R, noise=0.1, seed=0, teacher="random", alpha=1.0):
    task = power_law_eigen_task(N, alpha, 1.0, label_noise=noise, teacher=teacher)
    return task, sample_eigen_ensemble(task, P, D, R, make_generator(seed, "data"), dtype=F64)


def test_euler_gradient_matches_autograd():
    _, data = _data(12, 7, 2, 3)
    wd = 0.3
    dyn = EulerDynamics(data, DynamicsConfig(weight_decay=wd))
    w = torch.randn(2, 3, 12, dtype=F64, requires_grad=True)
    pred = torch.einsum("dpn,drn->drp", data.features, w)
    loss = 0.5 * ((data.labels - pred) ** 2).sum() + 0.5 * wd * (w**2).sum()
    (g,) = torch.autograd.grad(loss, w)
    torch.testing.assert_close(dyn.gradient(w.detach()), g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("P,N", [(8, 20), (30, 10)])
def test_hessian_top_eigenvalue_and_default_step(P, N):
    _, data = _data(N, P, 3, 1)
    wd = 0.7
    ref = [np.linalg.eigvalsh(X.T @ X + wd * np.eye(N))[-1] for X in data.features.numpy()]
    np.testing.assert_allclose(hessian_top_eigenvalue(data.features, wd).numpy(), ref, rtol=1e-12)
    dyn = EulerDynamics(data, DynamicsConfig(weight_decay=wd))
    assert math.isclose(dyn.dt, 1.0 / max(ref), rel_tol=1e-12)
    assert math.isclose(stable_step_size(data.features, wd, 1.5), 1.5 / max(ref), rel_tol=1e-12)
    with pytest.raises(ValueError, match="dt"):
        EulerDynamics(data, DynamicsConfig(weight_decay=wd), dt=2.01 / max(ref))
    with pytest.raises(ValueError, match="weight_decay"):
        DynamicsConfig(weight_decay=-1.0)


@pytest.mark.parametrize("P,N", [(8, 20), (30, 10)])
def test_hessian_eigen_reconstructs_the_gram(P, N):
    _, data = _data(N, P, 2, 1)
    eig = HessianEigen.of(data.features)
    for d, X in enumerate(data.features.numpy()):
        V = eig.Vh[d].numpy().T
        C = V @ np.diag(eig.s2[d].numpy()) @ V.T
        np.testing.assert_allclose(C, X.T @ X, atol=1e-10 * np.abs(X.T @ X).max())
        np.testing.assert_allclose(eig.null_weight[d].numpy(), 1 - (V**2).sum(1), atol=1e-12)
        assert (eig.null_weight[d].numpy().sum() - max(N - P, 0)) == pytest.approx(0, abs=1e-9)


def _expm_reference(X, wstar, lam, t, noise, wd, T, v0):
    """Noise-averaged bias, variances and train error for one dataset via scipy.linalg.expm."""
    P, N = X.shape
    C = X.T @ X
    H = C + wd * np.eye(N)
    E = scipy.linalg.expm(-H * t)
    A = np.linalg.solve(H, np.eye(N) - E)  # (I - e^{-Ht}) H^{-1}
    mean = A @ C @ wstar
    cov_lab = noise * A @ C @ A.T
    cov_lang = T * np.linalg.solve(H, np.eye(N) - scipy.linalg.expm(-2 * H * t))
    cov_init = v0 * scipy.linalg.expm(-2 * H * t)
    cov = cov_lab + cov_lang + cov_init
    bias = lam @ (mean - wstar) ** 2
    resid_mean = X @ (mean - wstar)
    B = np.eye(P) - X @ A @ X.T  # maps eps to the residual
    train = (resid_mean @ resid_mean + noise * np.trace(B @ B.T) + np.trace(X @ (cov_lang + cov_init) @ X.T)) / P
    return bias, lam @ np.diag(cov_lab), lam @ np.diag(cov_lang), lam @ np.diag(cov_init), train


@pytest.mark.parametrize("P,N", [(9, 15), (20, 8)])
def test_exact_moments_match_matrix_exponential(P, N):
    task, data = _data(N, P, 2, 1, noise=0.3)
    wd, T, v0 = 0.05, 0.02, 0.4
    times = [0.0, 0.3, 2.0, 50.0]
    m = exact_moments(data, DynamicsConfig(wd, T, v0), times)
    for d in range(2):
        X, ws = data.features[d].numpy(), data.target_weights[d].numpy()
        for i, t in enumerate(times):
            ref = _expm_reference(X, ws, task.eigenvalues, t, 0.3, wd, T, v0)
            got = (m.bias[i, d], m.variance_label_noise[i, d], m.variance_langevin[i, d],
                   m.variance_init[i, d], m.train_error[i, d])
            np.testing.assert_allclose([float(g) for g in got], ref, rtol=1e-8, atol=1e-12)


def test_exact_moments_infinite_time_is_ridge_and_posterior():
    task, data = _data(15, 9, 2, 1, noise=0.3)
    wd, T = 0.2, 0.05
    m = exact_moments(data, DynamicsConfig(wd, T, 0.0), [math.inf])
    for d in range(2):
        X, ws = data.features[d].numpy(), data.target_weights[d].numpy()
        H = X.T @ X + wd * np.eye(15)
        mean = np.linalg.solve(H, X.T @ X @ ws)  # ridge estimator of the clean labels
        assert float(m.bias[0, d]) == pytest.approx(task.eigenvalues @ (mean - ws) ** 2, rel=1e-9)
        post = T * np.linalg.inv(H)
        assert float(m.variance_langevin[0, d]) == pytest.approx(task.eigenvalues @ np.diag(post), rel=1e-9)


@pytest.mark.parametrize("P,N,wd", [(16, 40, 0.0), (16, 40, 0.05), (60, 20, 0.0)])
def test_euler_matches_exact_flow_within_discretisation_error(P, N, wd):
    """Same data, same init: per H-eigendirection Euler decays as (1 - dt h)^n instead of
    e^{-h t}; docs/testbed.md bounds |(1-dt h)^n - e^{-h t}| <= 0.55 dt / t (t >= 4 dt).
    The weight difference in that direction is this times |w_j(0) - w_j(inf)|."""
    _, data = _data(N, P, 2, 2, noise=0.2)
    params = DynamicsConfig(weight_decay=wd, init_variance=0.5)
    euler = EulerDynamics(data, params)
    exact = ExactDynamics(data, params, dt=euler.dt)
    s0 = euler.init(make_generator(0, "dyn"))
    eig = exact.eig
    state = s0
    for n in (4, 40, 400):
        state = euler.advance(state, n - state.step)
        t = state.time
        w_ex = exact.transition(s0.weights, t, s0.generator)
        diff = torch.bmm(state.weights - w_ex, eig.Vh.transpose(1, 2)).abs()  # (D, R, r)
        # w_j(0) - w_j(inf) in the range directions: a_j(0) - b_j / h_j
        a0 = torch.bmm(s0.weights, eig.Vh.transpose(1, 2))
        amp = (a0 - exact._b / (eig.s2 + wd)[:, None, :]).abs()
        bound = 0.55 * euler.dt / t * amp + 1e-10
        assert torch.all(diff <= bound), float((diff / bound).max())
        # and the discrepancy is real (the test can fail): Euler is not the exact flow
        assert float(diff.max()) > 1e-6 * float(amp.max())


def test_ou_one_dimensional_closed_form():
    """1-D Ornstein-Uhlenbeck: dw = -(h w - b) dt + sqrt(2T) dB from w(0) = w0; Euler-Maruyama
    (dt h = 0.02) and the exact sampler reproduce m(t) = b/h + (w0 - b/h) e^{-ht} and
    v(t) = T/h (1 - e^{-2ht}) within 5 standard errors (+ Euler's O(dt h) bias)."""
    R = 20000
    X = torch.tensor([[[2.0]]], dtype=F64)  # P = N = 1: h = 4 + wd
    y = torch.full((1, R, 1), 1.5, dtype=F64)  # b = X y = 3
    data = EnsembleData(X, y, torch.zeros(1, 1, dtype=F64), torch.ones(1, dtype=F64), torch.ones(1, dtype=F64))
    wd, T, w0 = 1.0, 0.3, 2.0
    h, b = 4.0 + wd, 3.0
    p = DynamicsConfig(weight_decay=wd, temperature=T)
    for dyn, tol in ((EulerDynamics(data, p, dt=0.02 / h), 0.02), (ExactDynamics(data, p, dt=0.02 / h), 0.0)):
        state = dyn.init(make_generator(3, "ou"))
        state = type(state)(torch.full_like(state.weights, w0), 0, 0.0, state.generator)
        for n in (10, 50, 400):
            state = dyn.advance(state, n - state.step)
            t = state.time
            m = b / h + (w0 - b / h) * math.exp(-h * t)
            v = T / h * (1 - math.exp(-2 * h * t))
            w = state.weights.reshape(-1)
            se_m, se_v = math.sqrt(v / R), v * math.sqrt(2.0 / R)
            assert abs(float(w.mean()) - m) <= 5 * se_m + tol * abs(m - b / h) + 1e-12
            assert abs(float(w.var()) - v) <= 5 * se_v + tol * v


def _posterior(X, y, wd, T):
    H = X.T @ X + wd * np.eye(X.shape[1])
    return np.linalg.solve(H, X.T @ y), T * np.linalg.inv(H)


def test_langevin_long_time_is_the_gp_posterior():
    """Euler-Maruyama Langevin run to t >> 1/h_min: replica mean and covariance match the
    posterior mean (X^T X + wd)^{-1} X^T y and covariance T (X^T X + wd)^{-1}; so do closed-form
    posterior draws. Tolerances: 5 SE plus Euler's stationary-variance bias dt h / 2."""
    N, P, R = 4, 6, 4000
    torch.manual_seed(0)
    g = make_generator(5, "x")
    X = torch.randn(1, P, N, generator=g, dtype=F64) * torch.tensor([1.0, 0.8, 0.5, 0.3], dtype=F64)
    y1 = torch.randn(1, 1, P, generator=g, dtype=F64)
    data = EnsembleData(X, y1.expand(1, R, P).contiguous(), torch.zeros(1, N, dtype=F64),
                        torch.ones(N, dtype=F64), torch.ones(N, dtype=F64))
    wd, T = 1.0, 0.2
    mean, cov = _posterior(X[0].numpy(), y1[0, 0].numpy(), wd, T)
    p = DynamicsConfig(weight_decay=wd, temperature=T)
    h = np.linalg.eigvalsh(X[0].numpy().T @ X[0].numpy() + wd * np.eye(N))
    euler = EulerDynamics(data, p, dt=0.1 / h.max())
    n = int(math.ceil(10.0 / h.min() / euler.dt))
    state = euler.advance(euler.init(make_generator(1, "lv")), n)
    draws = {"euler": state.weights[0].numpy(), "posterior": posterior_sample(data, p, make_generator(2)).weights[0].numpy()}
    sd = np.sqrt(np.diag(cov))
    for name, w in draws.items():
        allow = 0.1 / 2 + 5e-5 if name == "euler" else 0.0
        emp_mean = w.mean(0)
        assert np.all(np.abs(emp_mean - mean) <= 5 * sd / math.sqrt(R) + allow * np.abs(mean)), name
        emp_cov = np.cov(w.T)
        se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / R)
        assert np.all(np.abs(emp_cov - cov) <= 5 * se_cov + allow * np.abs(cov).max()), name
    with pytest.raises(ValueError, match="temperature"):
        posterior_sample(data, DynamicsConfig(weight_decay=wd), make_generator(0))


def test_exact_sampler_matches_exact_moments():
    """Replica statistics of the exact OU sampler (advanced in uneven jumps) agree with the
    noise-averaged moments per dataset: checks the sampler and the moments against each other."""
    N, P, D, R = 30, 12, 2, 4000
    task, data = _data(N, P, D, R, noise=0.3)
    p = DynamicsConfig(weight_decay=0.1, temperature=0.05, init_variance=0.5)
    dyn = ExactDynamics(data, p, dt=0.01)
    state = dyn.init(make_generator(0, "dyn"))
    for n in (7, 50, 300):
        state = dyn.advance(state, n - state.step)
    m = exact_moments(data, p, [state.time])
    e = (state.weights - data.target_weights[:, None, :]).numpy()
    lam = task.eigenvalues
    for d in range(D):
        mode_mean = e[d].mean(0)
        mode_var = e[d].var(0, ddof=1)
        exp_mean = (m.mean_weights[0, d] - data.target_weights[d]).numpy()
        exp_var = (m.mode_variance[0, d] / data.eigenvalues).numpy()
        assert np.all(np.abs(mode_mean - exp_mean) <= 5 * np.sqrt(exp_var / R) + 1e-12)
        assert np.all(np.abs(mode_var - exp_var) <= 5 * exp_var * math.sqrt(2 / R) + 1e-12)
        assert float(np.sum(lam * mode_var)) == pytest.approx(float(m.variance[0, d]), rel=6 * math.sqrt(2 / R))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_cuda_matches_cpu():
    task = power_law_eigen_task(64, 1.0, 1.0, label_noise=0.1)
    out = {}
    for dev in ("cpu", "cuda"):
        data = sample_eigen_ensemble(task, 32, 2, 2, make_generator(0, device="cpu"), dtype=F64)
        data = EnsembleData(*(getattr(data, f).to(dev) for f in ("features", "labels", "target_weights", "eigenvalues", "target_second_moment")), data.label_noise)
        for stride in (1, 8):  # one product per step, and strided
            dyn = EulerDynamics(data, DynamicsConfig())
            dyn.set_stride(stride)
            s = dyn.advance(dyn.init(make_generator(0, device=dev)), 100)
            out[dev, stride] = s.weights.cpu()
    for stride in (1, 8):
        torch.testing.assert_close(out["cpu", stride], out["cuda", stride], rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
def test_cuda_grouped_evaluation_and_rollback():
    """On the GPU: a Langevin run evaluated in groups and one at a time sees the same weights
    and ends a stop inside a group at that evaluation, with the CUDA generator's state restored."""
    from rfscaling.run import simulate
    from rfscaling.run import HookBase, RunInfo, StopRequest, log_spaced_steps

    task = power_law_eigen_task(64, 1.0, 1.0, label_noise=0.1)
    data = sample_eigen_ensemble(task, 32, 2, 2, make_generator(0, device="cpu"), dtype=F64)
    data = EnsembleData(*(getattr(data, f).to("cuda") for f in ("features", "labels", "target_weights", "eigenvalues", "target_second_moment")), data.label_noise)
    dyn = EulerDynamics(data, DynamicsConfig(temperature=0.02))
    steps = log_spaced_steps(400, 15)
    info = RunInfo(task.eigenvalues, steps * dyn.dt, steps, dyn.dt, 2, 2, 32)

    class Stop(HookBase):
        def __init__(self):
            self.weights = []

        def on_start(self, info):
            pass

        def on_eval(self, snap):
            self.weights.append(snap.weights.cpu())
            return StopRequest("stop") if snap.index == 3 else None

        def on_end(self, summary):
            pass

    out = {}
    for size in (8, 1):
        hook = Stop()
        state = simulate(dyn, dyn.init(make_generator(1, device="cuda")), info, [hook],
                         target_weights=data.target_weights, eigenvalues=data.eigenvalues, progress=False,
                         chunk=7, group_size=size).state
        out[size] = hook.weights, state
    assert all(torch.equal(a, b) for a, b in zip(out[8][0], out[1][0])) and len(out[8][0]) == 4
    assert out[8][1].step == out[1][1].step == steps[3]
    assert torch.equal(out[8][1].generator.get_state(), out[1][1].generator.get_state())


def _numpy_euler(X, Y, w0, dt, wd, steps):
    """Independent reference: the Euler recursion w <- w - dt (X^T (X w - y) + wd w), per member."""
    W = w0.copy()
    for _ in range(steps):
        for d in range(X.shape[0]):
            W[d] = W[d] - dt * ((W[d] @ X[d].T - Y[d]) @ X[d] + wd * W[d])
    return W


@pytest.mark.parametrize("P,N", [(9, 25), (25, 9), (16, 16)])
@pytest.mark.parametrize("wd,init", [(0.0, 0.0), (0.4, 0.5)])
def test_euler_step_forms_give_the_same_iterates(P, N, wd, init, monkeypatch):
    """The kernel (w = c w0 + X^T a) and Hessian (X^T X) forms are the same recursion as stepping
    with the features; checked against a numpy loop, across uneven advance calls (the kernel form
    re-anchors at every call) and with datasets run in blocks of one."""
    _, data = _data(N, P, 3, 2)
    params = DynamicsConfig(weight_decay=wd, init_variance=init)
    forms = ["features", "kernel" if P < N else "hessian"]
    auto = EulerDynamics(data, params)
    assert auto.form == forms[1]  # the cheaper one is picked when the Gram is at hand
    ref = None
    for form in forms:
        for block in (None, 1):
            if block is not None:
                monkeypatch.setattr("rfscaling.dynamics.euler._BLOCK_BYTES", 1)
            for stride in ((1,) if form == "features" else (1, 4)):
                dyn = EulerDynamics(data, params, form=form)
                assert dyn.form == form and (block is None or dyn._block == 1)
                assert dyn.set_stride(stride) == stride
                state = dyn.init(make_generator(3, "dyn"))
                if ref is None:
                    ref = _numpy_euler(data.features.numpy(), data.labels.numpy(), state.weights.numpy(), dyn.dt, wd,
                                       40)
                for n in (1, 2, 7, 30):  # at stride 4: remainder only, 1 + 3, 7 propagator steps + 2
                    state = dyn.advance(state, n)
                assert state.step == 40 and math.isclose(state.time, 40 * dyn.dt)
                np.testing.assert_allclose(state.weights.numpy(), ref, rtol=1e-10, atol=1e-12)
            monkeypatch.undo()


@pytest.mark.parametrize("P,N", [(12, 40), (40, 12)])
@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_euler_strided_stepping_matches_the_recursion_over_long_runs(P, N, wd):
    """Propagators M^s up to s = 256 (8 squarings) over 1000 steps against the numpy loop, in
    float64 and float32. Tolerances: stepping one product per step is itself 2e-15 to 8e-15
    (float64) and 5e-7 to 9e-6 (float32) off the loop here; strided stepping measured the same."""
    _, data = _data(N, P, 2, 3)
    params = DynamicsConfig(weight_decay=wd, init_variance=0.3)
    X, Y = data.features.numpy(), data.labels.numpy()
    for dtype, tol in ((F64, 1e-13), (torch.float32, 5e-5)):
        d = EnsembleData(data.features.to(dtype), data.labels.to(dtype), data.target_weights.to(dtype),
                         data.eigenvalues.to(dtype), data.target_second_moment, data.label_noise)
        for s in (16, 256):
            dyn = EulerDynamics(d, params)
            dyn.set_stride(s)
            st = dyn.init(make_generator(1, "dyn"))
            ref = _numpy_euler(X, Y, st.weights.double().numpy(), dyn.dt, wd, 1000)
            for n in (300, 700):
                st = dyn.advance(st, n)
            err = np.abs(st.weights.double().numpy() - ref).max() / np.abs(ref).max()
            assert err < tol, (dtype, s, err)


def test_choose_stride_and_plan(monkeypatch):
    """The cost model: no stride for short calls or the features form, a long one for long calls;
    Langevin noise and non-powers of two are refused; ``plan`` uses the whole run's calls."""
    from rfscaling.dynamics import choose_stride
    from rfscaling.run import advance_calls

    assert choose_stride([3] * 2000, 256, 4, "hessian") == 2  # 2 products instead of 3 per call pay off
    assert choose_stride([3] * 2, 256, 4, "hessian") == 1  # ... but not for two calls
    assert choose_stride([3] * 2000, 256, 4, "kernel") == 1  # the kernel form's anchor product eats it
    assert choose_stride([10_000], 256, 4, "features") == 1
    long = choose_stride([10_000], 256, 4, "hessian")
    assert long >= 64 and long & (long - 1) == 0
    assert choose_stride([3, 3, 3], 2048, 1, "hessian") == 1  # the setup would cost more than the run
    calls = advance_calls([0, 1, 5, 40, 200], chunk=30)
    assert calls == [1, 4, 25, 10, 20, 30, 30, 30, 30, 20]  # cut at multiples of 30
    _, data = _data(20, 40, 2, 2)
    dyn = EulerDynamics(data, DynamicsConfig())
    assert dyn.plan([5000]) > 1 and dyn.stride > 1
    with pytest.raises(ValueError, match="power of two"):
        dyn.set_stride(6)
    monkeypatch.setattr("rfscaling.dynamics.euler._STRIDE_MAX_BYTES", 1)  # no memory for propagators
    assert dyn.plan([5000]) == 1 and dyn._power is None
    noisy = EulerDynamics(data, DynamicsConfig(temperature=0.1))
    assert noisy.plan([5000]) == 1
    with pytest.raises(ValueError, match="without noise"):
        noisy.set_stride(4)


def test_euler_hessian_form_langevin_uses_the_same_noise_stream():
    _, data = _data(10, 30, 2, 3)
    params = DynamicsConfig(temperature=0.05, weight_decay=0.1)
    out = []
    for form in ("features", "hessian"):
        dyn = EulerDynamics(data, params, form=form)
        out.append(dyn.advance(dyn.init(make_generator(5, "dyn")), 25).weights)
    torch.testing.assert_close(out[0], out[1], rtol=1e-10, atol=1e-12)
    _, wide = _data(30, 10, 2, 3)
    with pytest.raises(ValueError, match="kernel"):
        EulerDynamics(wide, params, form="kernel")
    with pytest.raises(ValueError, match="form"):
        EulerDynamics(wide, params, form="gram")
    assert EulerDynamics(wide, params).form == "features"  # noise leaves the row space of X


def test_euler_forms_run_under_inference_mode():
    """No autograd state is needed: every form steps inference tensors (as a caller's
    ``torch.inference_mode()`` block makes them)."""
    for P, N in ((9, 25), (25, 9)):
        _, data = _data(N, P, 2, 2)
        for form in ("features", "kernel" if P < N else "hessian"):
            dyn = EulerDynamics(data, DynamicsConfig(weight_decay=0.1), form=form)
            if form != "features":
                dyn.set_stride(2)
            with torch.inference_mode():
                st = dyn.advance(dyn.init(make_generator(0, "dyn")), 7)
                assert torch.isfinite(dyn.train_errors(st.weights)).all()

