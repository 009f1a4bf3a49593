"""Registries: adding a data set, a model, a dynamics or a hook is one module plus one YAML file
(docs/architecture.md lists them). A copy of the package gets four toy pieces, each exactly one
new module and one new preset, and one command trains with all four."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from rfscaling.data import DATASETS
from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.errors import ConfigError
from rfscaling.hooks.registry import HOOKS
from rfscaling.models import MODELS
from rfscaling.run import HookBase
from specs import config

REPO = Path(__file__).resolve().parent.parent

TOYS = {
    # a data set: isotropic Gaussian inputs
    "rfscaling/data/sets/toy_iso.py": '''
        import torch
        from rfscaling.data.ensemble import make_generator
        from rfscaling.data.sets import DATASETS, DataSet

        def _draw(data, n, seed, device):
            g = make_generator(seed, "toy_inputs", device=device)
            return torch.randn(n, data.input_dim, generator=g, dtype=torch.float64, device=device), None

        DATASETS.register("toy_iso")(DataSet("toy_iso", _draw, power_law=False, input_stream="toy_inputs"))
    ''',
    "conf/data/toy_iso.yaml": '''
        P: 24
        alpha: null
        beta: null
        lam_1: 1.0
        c: 1.0
        label_noise: 0.05
        kind: toy_iso
        target: teacher_network
        teacher: fixed
        pool_size: null
        input_dim: 8
    ''',
    # a model: random features with tanh, whatever model.nonlinearity says
    "rfscaling/models/toy_tanh.py": '''
        from dataclasses import replace
        from rfscaling.models.problem import MODELS
        from rfscaling.models.random_features import RandomFeatures

        @MODELS.register("toy_tanh")
        class ToyTanh(RandomFeatures):
            @staticmethod
            def problem(spec):
                problem = RandomFeatures.problem(replace(spec, model=replace(spec.model, nonlinearity="tanh")))
                problem.info["toy"] = "tanh"
                return problem
    ''',
    "conf/model/toy_tanh.yaml": '''
        N: 32
        kind: toy_tanh
        nonlinearity: relu
        M: null
    ''',
    # a dynamics: gradient descent at half the default step
    "rfscaling/dynamics/kinds/toy_half_step.py": '''
        from rfscaling.dynamics.kinds import DYNAMICS
        from rfscaling.errors import ConfigError

        @DYNAMICS.register("toy_half_step")
        class HalfStep:
            @staticmethod
            def check(cfg):
                if cfg.temperature:
                    raise ConfigError("dynamics.temperature", cfg.temperature, "must be 0 for toy_half_step")

            @staticmethod
            def build(data, cfg):
                from rfscaling.dynamics.euler import EulerDynamics, hessian_top_eigenvalue
                lam = float(hessian_top_eigenvalue(data.features, cfg.weight_decay).max())
                return EulerDynamics(data, cfg, dt=0.5 / lam, lambda_max=lam)

            @staticmethod
            def draws(cfg):
                return ["init"] if cfg.init_variance > 0 else []
    ''',
    "conf/dynamics/toy_half_step.yaml": '''
        name: toy_half_step
        weight_decay: 0.0
        temperature: 0.0
        init_variance: 0.0
        dt: null
        t_max: 5.0
        n_evals: 10
        integrator: euler
        max_stride: null
    ''',
    # a hook: counts the evaluations it saw and writes the count at the end
    "rfscaling/hooks/toy_counter.py": '''
        from rfscaling.hooks.registry import HOOKS
        from rfscaling.run.hook import HookBase

        class Counter(HookBase):
            def __init__(self, path, label):
                self.path, self.label, self.n = path, label, 0

            def on_eval(self, snapshot):
                self.n += 1

            def on_end(self, summary):
                self.path.write_text(f"{self.label} {self.n}")

        @HOOKS.register("toy_counter")
        def factory(ctx, label="evals"):
            return Counter(ctx.out_dir / "toy_counter.txt", label)
    ''',
    "conf/hooks/toy_counter.yaml": '''
        defaults:
          - default
        extra: [toy_counter]
        options:
          toy_counter:
            label: counted
    ''',
}


def test_registries_know_the_shipped_pieces():
    assert {"powerlaw_eigen", "gaussian_powerlaw", "digits", "mnist1d"} <= set(DATASETS.names())
    assert {"eigenfeature", "random_features", "mlp"} <= set(MODELS.names())
    assert {"gradient_flow", "weight_decay", "langevin", "bayes", "sgd"} <= set(DYNAMICS.names())
    assert set(HOOKS.names()) >= {"eigenmode", "early_stopping", "tensorboard", "budget", "checkpoint"}
    with pytest.raises(ConfigError, match=r"^dynamics\.name=adam: must be a registered dynamics: one of bayes\|"):
        DYNAMICS.get("adam")


def test_a_pickled_registry_is_the_registry():
    """Jobs unpickle code from a ``python -m`` __main__ (submitit): a copy of a registry would
    stay empty while the modules register into the original."""
    for registry in (DATASETS, MODELS, DYNAMICS, HOOKS):
        assert pickle.loads(pickle.dumps(registry)) is registry


@pytest.mark.parametrize("kind,key", [("data", "kind"), ("model", "kind"), ("dynamics", "name")])
def test_every_registered_piece_has_a_preset(kind, key):
    registry = {"data": DATASETS, "model": MODELS, "dynamics": DYNAMICS}[kind]
    named = {yaml.safe_load(p.read_text())[key] for p in (REPO / "conf" / kind).glob("*.yaml")}
    assert set(registry.names()) <= named


def test_a_toy_data_set_model_dynamics_and_hook_are_one_module_and_one_yaml_each(tmp_path):
    for part in ("rfscaling", "conf"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in TOYS.items():
        assert not (tmp_path / rel).exists(), rel  # new files only: nothing else is edited
        (tmp_path / rel).write_text(textwrap.dedent(text).lstrip())
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(PYTHONPATH=str(tmp_path), OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "rfscaling.train", "data=toy_iso", "model=toy_tanh",
                        "dynamics=toy_half_step", "hooks=toy_counter", "hooks.tensorboard=false",
                        "hooks.progress=false", "ensemble.datasets=2", "ensemble.replicas=2", "device=cpu",
                        f"hydra.run.dir={run}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["dynamics"] == "toy_half_step" and s["dt"] == pytest.approx(0.5 / s["lambda_max"])
    assert s["seeds"]["draws"]["inputs"] == "toy_inputs" and s["problem"]["input_dim"] == 8
    assert s["problem"]["toy"] == "tanh"
    rows = (run / "metrics.csv").read_text().strip().splitlines()[1:]
    assert (run / "toy_counter.txt").read_text() == f"counted {len(rows)}"


class _Tally(HookBase):
    """An extra hook with state: the number of evaluations it saw."""

    def __init__(self, start: int = 0) -> None:
        self.n = start

    def on_eval(self, snapshot):
        self.n += 1

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.n = state["n"]


def tally(ctx, start: int = 0):
    return _Tally(start)


TALLY = "test_registries:tally"  # tests/ is on sys.path under pytest


def _small(**flat):
    return config(P=16, N=32, datasets=2, replicas=2, t_max=5.0, n_evals=8, tensorboard=False, progress=False,
                  **flat)


def test_an_extra_stateful_hook_is_checkpointed_under_its_name(tmp_path):
    from rfscaling.hooks import load_checkpoint
    from rfscaling.train import run_identity, train

    cfg = _small(checkpoint=True, checkpoint_every=1, extra=[TALLY], options={TALLY: {"start": 100}})
    s = train(cfg, tmp_path)
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()[1:]
    ckpt = load_checkpoint(tmp_path / "checkpoints", s["identity"])
    assert ckpt["hooks"][TALLY] == {"n": 100 + len(rows)}
    assert run_identity(cfg) != run_identity(_small(checkpoint=True, checkpoint_every=1))  # a hook may stop a run


@pytest.mark.parametrize("flat,key", [
    ({"extra": ["nosuch"]}, "hooks.extra"),
    ({"extra": ["no.such.module:factory"]}, "hooks.extra"),
    ({"options": {"tensorbaord": {}}}, "hooks.options.tensorbaord"),
    ({"extra": [TALLY], "options": {TALLY: {"begin": 1}}}, f"hooks.options.{TALLY}"),
])
def test_bad_hook_names_and_options_stop_the_run_before_it_starts(tmp_path, flat, key):
    from rfscaling.train import train

    with pytest.raises(ConfigError) as info:
        train(_small(**flat), tmp_path / "run")
    assert info.value.key == key and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing was drawn or written
