"""SGLD against torch.optim.SGD (temperature 0) and against the exact stationary law of the
discrete chain on a quadratic (temperature > 0; the Gibbs law up to O(lr h))."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from rfscaling.optim import SGLD

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1)).to(dtype)


def _train(net, opt, steps=25):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(steps, 8, 5, generator=g), torch.randn(steps, 8, 1, generator=g)
    for i in range(steps):
        opt.zero_grad()
        (0.5 * ((net(x[i].to(net[0].weight.dtype)) - y[i]) ** 2).sum()).backward()  # summed loss
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_zero_temperature_is_sgd_bit_for_bit(wd):
    a, b = _net(), _net()
    pa = _train(a, SGLD(a.parameters(), lr=0.02, weight_decay=wd))
    pb = _train(b, torch.optim.SGD(b.parameters(), lr=0.02, weight_decay=wd))
    for u, v in zip(pa, pb):
        assert torch.equal(u, v)


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_zero_temperature_momentum_is_sgd_to_rounding(wd):
    # torch: b <- mu b + g, p <- p - lr b;  SGLD: d <- -lr g + mu d, p <- p + d (d = -lr b)
    a, b = _net(dtype=torch.float64), _net(dtype=torch.float64)
    pa = _train(a, SGLD(a.parameters(), lr=0.02, weight_decay=wd, momentum=0.9))
    pb = _train(b, torch.optim.SGD(b.parameters(), lr=0.02, weight_decay=wd, momentum=0.9))
    moved = max(float((u - p0).abs().max()) for u, p0 in zip(pa, [p.detach() for p in _net(dtype=torch.float64).parameters()]))
    assert moved > 1e-2  # the trajectories went somewhere
    for u, v in zip(pa, pb):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-13)


def test_per_group_options_and_seeded_generator():
    a = _net()
    groups = [{"params": a[0].parameters(), "temperature": 0.0}, {"params": a[2].parameters(), "lr": 0.0}]
    opt = SGLD(groups, lr=0.01, temperature=0.5, generator=torch.Generator().manual_seed(3))
    first = [p.detach().clone() for p in a.parameters()]
    (a(torch.ones(2, 5)) ** 2).sum().backward()
    opt.step()
    # group 2 has lr = 0: no gradient step and no noise (sqrt(2 T lr) = 0)
    assert torch.equal(a[2].weight, first[2])
    # group 1 is noiseless: exactly the SGD step
    assert torch.equal(a[0].weight, first[0].add(a[0].weight.grad, alpha=-0.01))
    # same seed -> same noise; another seed -> other noise
    outs = []
    for seed in (7, 7, 8):
        p = nn.Parameter(torch.zeros(100))
        o = SGLD([p], lr=0.1, temperature=1.0, generator=torch.Generator().manual_seed(seed))
        p.grad = torch.zeros(100)
        o.step()
        outs.append(p.detach().clone())
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    assert abs(float(outs[0].std()) - math.sqrt(2 * 1.0 * 0.1)) < 0.15  # 100 draws: se ~0.032


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(lr=0.1, temperature=-0.1), dict(lr=0.1, momentum=1.0),
                                 dict(lr=0.1, weight_decay=float("nan"))])
def test_rejects_bad_options(bad):
    with pytest.raises(ValueError, match="SGLD"):
        SGLD([nn.Parameter(torch.zeros(2))], **bad)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_samples_the_stationary_law_of_a_quadratic(momentum):
    """C independent chains on L = 1/2 (x - m)^T A (x - m) + wd/2 |x|^2 (2-D, correlated). The
    exact stationary covariance of x_{t+1} = x_t - lr grad + sqrt(2 T lr) xi (momentum 0) solves
    S = B S B^T + 2 T lr I, B = I - lr H (scipy's discrete Lyapunov solver), i.e. the Gibbs law
    T H^{-1} to O(lr h); the mean is H^{-1} A m. With momentum mu the chain on (x_t, x_{t-1}) is
    linear too, and its Lyapunov equation gives the reference (about T/(1 - mu) H^{-1})."""
    T, lr, wd, C = 0.3, 0.05, 0.2, 20000
    A = np.array([[2.0, 0.6], [0.6, 1.0]])
    m = np.array([1.0, -0.5])
    H = A + wd * np.eye(2)
    mean_ref = np.linalg.solve(H, A @ m)
    B = np.eye(2) - lr * H
    Z = np.zeros((2, 2))
    # state (x_t, x_{t-1}): x_{t+1} = (B + mu) x_t - mu x_{t-1} + noise
    F = np.block([[B + momentum * np.eye(2), -momentum * np.eye(2)], [np.eye(2), Z]])
    Q = np.block([[2 * T * lr * np.eye(2), Z], [Z, Z]])
    cov_ref = scipy.linalg.solve_discrete_lyapunov(F, Q)[:2, :2]
    assert np.abs(F).max() < 2 and max(abs(np.linalg.eigvals(F))) < 1

    x = nn.Parameter(torch.zeros(C, 2, dtype=torch.float64))
    At, mt = torch.as_tensor(A), torch.as_tensor(m)
    opt = SGLD([x], lr=lr, temperature=T, weight_decay=wd, momentum=momentum,
               generator=torch.Generator().manual_seed(0))
    # slowest relaxation: lr h_min / (1 + mu) per step; 1500 steps is > 30 e-folds
    for _ in range(1500):
        opt.zero_grad()
        e = x - mt
        (0.5 * torch.einsum("ci,ij,cj->", e, At, e)).backward()
        opt.step()
    s = x.detach().numpy()
    mean, cov = s.mean(0), np.cov(s.T)
    mean_se = np.sqrt(np.diag(cov_ref) / C)
    assert np.all(np.abs(mean - mean_ref) < 4 * mean_se), (mean, mean_ref, mean_se)
    # se of a sample (co)variance of a Gaussian: sqrt((S_ii S_jj + S_ij^2) / C)
    cov_se = np.sqrt((np.outer(np.diag(cov_ref), np.diag(cov_ref)) + cov_ref**2) / C)
    assert np.all(np.abs(cov - cov_ref) < 4 * cov_se), (cov, cov_ref, cov_se)
    gibbs = T / (1 - momentum) * np.linalg.inv(H)
    # the discrete law differs from Gibbs by O(lr h): up to ~7 % here, larger than 4 se (~1.4 %)
    assert np.all(np.abs(cov_ref - gibbs) < 0.12 * np.abs(gibbs).max())
