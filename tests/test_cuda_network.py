"""The network path on CUDA (SGLD, the empirical NTK and EigenmodeMonitor, model=mlp with GD and
SGD): the same code as on the CPU, checked against the CPU. Skipped without CUDA."""

import math

import numpy as np
import pytest
import torch

from rfscaling.hooks import EigenmodeMonitor
from rfscaling.models.mlp import MLP, Doubled
from rfscaling.models.ntk import empirical_ntk
from rfscaling.optim import SGLD
from rfscaling.train import train
from specs import config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
F64 = torch.float64


def _net(device):
    return Doubled(MLP(5, 64, 2, "gelu", "ntk", generator=torch.Generator().manual_seed(0), dtype=F64)).to(device)


def test_ntk_and_monitor_on_cuda_match_cpu():
    x = torch.randn(150, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    y = torch.sin(x.sum(1))
    K_cpu = empirical_ntk(_net("cpu"), x)
    K_gpu = empirical_ntk(_net("cuda"), x.cuda(), max_entries=20000)  # the block path too
    torch.testing.assert_close(K_gpu.cpu(), K_cpu, rtol=1e-10, atol=1e-10)
    a = EigenmodeMonitor(_net("cpu"), x, y, 40, label_noise=0.1)
    b = EigenmodeMonitor(_net("cuda"), x.cuda(), y.cuda(), 40, label_noise=0.1)
    ra, rb = a.measure(_net("cpu"), 1.0), b.measure(_net("cuda"), 1.0)
    assert math.isclose(ra["E_g_theory"], rb["E_g_theory"], rel_tol=1e-8)
    assert math.isclose(rb["mode_error"].sum(), rb["E_g"], rel_tol=1e-10)


def test_sgld_on_cuda_is_sgd_at_zero_temperature_and_seeded():
    p = torch.nn.Parameter(torch.zeros(1000, device="cuda"))
    q = torch.nn.Parameter(torch.zeros(1000, device="cuda"))
    a = SGLD([p], lr=0.1, momentum=0.9)
    b = torch.optim.SGD([q], lr=0.1, momentum=0.9)
    for i in range(5):
        p.grad = torch.full_like(p, float(i + 1))
        q.grad = torch.full_like(q, float(i + 1))
        a.step()
        b.step()
    torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    outs = []
    for _ in range(2):
        r = torch.nn.Parameter(torch.zeros(20000, device="cuda"))
        o = SGLD([r], lr=0.5, temperature=1.0, generator=torch.Generator(device="cuda").manual_seed(3))
        r.grad = torch.zeros_like(r)
        o.step()
        outs.append(r.detach())
    assert torch.equal(outs[0], outs[1])
    assert abs(float(outs[0].std()) - 1.0) < 0.03  # sqrt(2 T lr) = 1; se 0.005


@pytest.mark.parametrize("flat", [dict(), dict(dynamics="sgd", batch_size=8, momentum=0.5)])
def test_mlp_run_on_cuda_matches_cpu(tmp_path, flat):
    base = dict(model="mlp", kind="gaussian_powerlaw", N=32, P=24, input_dim=6, pool_size=96, datasets=2,
                replicas=2, dtype="float64", t_max=2.0, n_evals=6, progress=False, tensorboard=False, **flat)
    cpu = train(config(**base), tmp_path / "cpu")
    gpu = train(config(**{**base, "device": "cuda"}), tmp_path / "gpu")
    assert gpu["device"].startswith("cuda")
    for k in ("E_g", "E_g_theory", "train_error"):
        if "batch_size" in flat and k != "E_g_theory":  # minibatches come from another generator
            assert np.isfinite(gpu["final"][k]) and gpu["final"][k] < 2 * cpu["final"][k] + 0.1
        else:
            assert math.isclose(gpu["final"][k], cpu["final"][k], rel_tol=1e-6), k
