"""model=mlp and dynamics=sgd: the vmap ensemble against one network trained by torch.optim.SGD,
the pseudo-weights against the network's own pool error, SGD with B = P against full-batch GD,
config errors, and the app writing complete run files for the two default commands."""

import copy
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from specs import config, problem

from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.errors import ConfigError
from rfscaling.hooks import METRICS_COLUMNS
from rfscaling.models import make_problem
from rfscaling.models.ntk import model_outputs
from rfscaling.train import train

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")
F64 = torch.float64

SMALL = dict(model="mlp", kind="gaussian_powerlaw", N=24, P=20, input_dim=6, pool_size=80, datasets=2, replicas=2,
             dtype=F64)


def _dyn(name="gradient_flow", **flat):
    spec = problem(**{**SMALL, **flat})
    prob = make_problem(spec)
    cfg = config(**{**SMALL, "dynamics": name, **flat}).dynamics
    return prob, DYNAMICS.get(name).build(prob.data, cfg)


def _member(data, d, r):
    """Member (d, r) as an ordinary module with its training inputs and labels."""
    net = copy.deepcopy(data.network)
    return net, data.pool_inputs[data.sample_index[d]], data.labels[d, r]


@pytest.mark.parametrize("flat", [dict(), dict(weight_decay=0.3, dynamics_name="weight_decay"),
                                  dict(momentum=0.5, batch_size=20, dynamics_name="sgd")])
def test_vmap_ensemble_equals_one_network_trained_by_torch_sgd(flat):
    flat = dict(flat)
    name = flat.pop("dynamics_name", "gradient_flow")
    prob, dyn = _dyn(name, **flat)
    data = prob.data
    state = dyn.advance(dyn.init(torch.Generator().manual_seed(0)), 30)
    D, R = data.n_datasets, data.n_replicas
    for d, r in [(0, 0), (1, 1), (1, 0)]:
        net, x, y = _member(data, d, r)
        opt = torch.optim.SGD(net.parameters(), lr=dyn.dt, weight_decay=flat.get("weight_decay", 0.0),
                              momentum=flat.get("momentum", 0.0))
        for _ in range(30):
            opt.zero_grad()
            (0.5 * ((net(x) - y) ** 2).sum()).backward()  # B = P: the full batch
            opt.step()
        k = d * R + r
        for name_, p in net.named_parameters():
            torch.testing.assert_close(dyn.ensemble.params[name_][k], p.detach(), rtol=1e-9, atol=1e-11)
        # the state's pseudo-weights are the network's pool outputs in NTK eigen-coordinates
        f = model_outputs(net, data.pool_inputs)
        inv = torch.linalg.inv(data.to_eigen)
        w = state.weights[d, r]
        torch.testing.assert_close(w @ inv, f, rtol=1e-8, atol=1e-10)
        # and sum_k s_k (w_k - wstar_k)^2 is the network's mean squared error on the pool
        y_clean = data.target_weights[d] @ inv
        e_modes = data.eigenvalues * (w - data.target_weights[d]) ** 2
        assert math.isclose(float(e_modes.sum()), float(((f - y_clean) ** 2).mean()), rel_tol=1e-8)
    assert dyn.ensemble.params[next(iter(dyn.ensemble.params))].shape[0] == D * R


@pytest.mark.parametrize("replacement", [False, True])
def test_minibatches(replacement):
    prob, dyn = _dyn("sgd", batch_size=5, replacement=replacement)
    g = torch.Generator().manual_seed(0)
    K, P = dyn._y.shape
    seen = []
    for _ in range(P // 5):
        x, y = dyn._batch(g)
        assert x.shape == (K, 5, dyn._x.shape[-1]) and y.shape == (K, 5)
        seen.append(y)
    epoch = torch.cat(seen, 1)  # (K, P): labels drawn in one epoch
    if not replacement:  # one epoch is a permutation of each member's training set
        torch.testing.assert_close(epoch.sort(1).values, dyn._y.sort(1).values, rtol=0, atol=0)
    else:  # with replacement some member repeats a sample (P = 20 draws of 20: P(no repeat) ~ 2e-8)
        assert any(len(set(row.tolist())) < P for row in epoch)
    state = dyn.advance(dyn.init(g), 200)
    m0 = float((prob.data.eigenvalues * prob.data.target_weights.pow(2)).sum(1).mean())
    e = float((prob.data.eigenvalues * (state.weights - prob.data.target_weights[:, None]) ** 2).sum(-1).mean())
    assert e < 0.5 * m0  # it learns


def test_sgd_with_the_full_batch_is_gradient_descent():
    _, gd = _dyn("gradient_flow")
    _, sgd = _dyn("sgd", batch_size=20)
    a = gd.advance(gd.init(torch.Generator().manual_seed(0)), 25)
    b = sgd.advance(sgd.init(torch.Generator().manual_seed(0)), 25)
    torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=0)


@pytest.mark.parametrize("flat,key", [
    (dict(dynamics="sgd", batch_size=16, model="eigenfeature", kind="powerlaw_eigen", pool_size=None), "dynamics.name"),
    (dict(dynamics="sgd", batch_size=21), "dynamics.batch_size"),
    (dict(dynamics="sgd"), "dynamics.batch_size"),
    (dict(dynamics="gradient_flow", momentum=0.9), "dynamics.momentum"),
    (dict(dynamics="bayes", temperature=0.1, weight_decay=0.1), "dynamics.name"),
    (dict(checkpoint=True), "hooks.checkpoint.enabled"),
])
def test_config_errors_name_the_key(tmp_path, flat, key):
    cfg = config(**{**SMALL, "progress": False, "tensorboard": False, **flat})
    with pytest.raises(ConfigError) as err:
        train(cfg, tmp_path)
    assert err.value.key == key


def _cli(args, cwd, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "rfscaling.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# the default commands at small sizes (the defaults themselves: 285 s for model=mlp on 2 loaded cores)
SMALL_CLI = ["model.N=32", "data.P=32", "data.input_dim=8", "ensemble.datasets=2", "ensemble.replicas=2",
             "dynamics.t_max=3", "dynamics.n_evals=8", "hooks.progress=false", "device=cpu"]


def _check_run_files(out: Path, integrator: str):
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == METRICS_COLUMNS and len(rows) >= 5
    for r in rows:
        assert all(math.isfinite(float(v)) for v in r.values()), r
    z = np.load(out / "modes.npz")
    s = json.loads((out / "summary.json").read_text())
    M = s["problem"]["pool_size"]
    assert z["mode_error"].shape == (len(rows), M) == z["mode_error_theory"].shape
    np.testing.assert_allclose(z["mode_error"].sum(1), [float(r["E_g"]) for r in rows], rtol=1e-6)
    # doubled network: f_0 = 0, so E_g(0) is the target power, measured and predicted alike
    assert float(rows[0]["E_g"]) == pytest.approx(float(rows[0]["E_g_theory"]), rel=1e-5)
    assert float(rows[-1]["E_g"]) < 0.7 * float(rows[0]["E_g"])
    assert s["integrator"] == integrator
    assert any((out / "tensorboard").rglob("events.out.tfevents*"))


def test_app_writes_complete_run_files(tmp_path):
    """``python -m rfscaling.train model=mlp`` (small sizes) on the command line."""
    out = tmp_path / "run"
    p = _cli(["model=mlp", *SMALL_CLI, f"hydra.run.dir={out}"], tmp_path)
    assert p.returncode == 0, p.stderr
    _check_run_files(out, "network_gd")


def test_sgd_run_writes_complete_run_files(tmp_path):
    """``model=mlp dynamics=sgd dynamics.batch_size=16`` (small sizes), in process."""
    cfg = config(model="mlp", dynamics="sgd", batch_size=16, N=32, P=32, input_dim=8, datasets=2, replicas=2,
                 t_max=3.0, n_evals=8, progress=False, tensorboard=True)
    train(cfg, tmp_path)
    _check_run_files(tmp_path, "network_sgd")
