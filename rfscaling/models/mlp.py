"""A fully connected network with all layers trained, and the antisymmetric doubling.

``MLP``: x (M, D_in) -> h_1 = phi(W_1 x / sqrt(D_in)), h_l = phi(W_l h_{l-1} / sqrt(N)), f = a . h_L / s
with all weights N(0, 1) at init and no biases; s = sqrt(N) in the NTK parameterisation
(lazy as N -> inf: the NTK is fixed) and s = N in the mean-field / muP one (the readout's
1/N scale lets features move at O(1) rate; with the summed loss the NTK is then O(1/N), so a
fixed time horizon needs a learning rate O(N) -- the monitor's time stays gradient-flow time).

``Doubled(net)``: f = g_theta - g_theta' with theta' = theta at init, so f_0 = 0 exactly and
the NTK is twice that of g: the theory's zero-init convention holds for any network.

Registered as ``model=mlp`` (width ``model.N``, ``model.depth``, ``model.nonlinearity``,
``model.parameterization``, ``model.doubling``): its problem is in the eigen-coordinates of the
network's empirical NTK at init (rfscaling/models/network.py).
"""

from __future__ import annotations

import copy
import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from rfscaling.config import POOL_FACTOR, DataConfig, ModelConfig
from rfscaling.data.ensemble import make_generator
from rfscaling.data.inputs import binary_labels
from rfscaling.data.sets import DataSet
from rfscaling.data.sets.gaussian_powerlaw import gaussian_power_law_inputs
from rfscaling.errors import ConfigError
from rfscaling.models.network import Targets, network_problem
from rfscaling.models.problem import MODELS, Problem, ProblemSpec
from rfscaling.models.random_features import RandomFeatureMap

__all__ = ["ACTIVATIONS", "PARAMETERIZATIONS", "MLP", "Doubled"]

ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "erf": torch.special.erf,
    "gelu": nn.functional.gelu,
    "identity": lambda x: x,
}
PARAMETERIZATIONS = ("ntk", "mean_field")


class MLP(nn.Module):
    """``depth`` hidden layers of width ``width`` (see the module docstring); weights drawn from
    ``generator``."""

    def __init__(self, input_dim: int, width: int, depth: int = 1, activation: str = "relu",
                 parameterization: str = "ntk", *, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: must be one of {'|'.join(ACTIVATIONS)}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization={parameterization!r}: must be one of {'|'.join(PARAMETERIZATIONS)}")
        if min(input_dim, width, depth) < 1:
            raise ValueError(f"input_dim={input_dim}, width={width}, depth={depth}: must be >= 1")
        self.activation, self.parameterization = activation, parameterization
        fan_in = [input_dim] + [width] * (depth - 1)
        self.hidden = nn.ParameterList(
            nn.Parameter(torch.randn(width, d, generator=generator, dtype=dtype, device=device)) for d in fan_in)
        self.readout = nn.Parameter(torch.randn(width, generator=generator, dtype=dtype, device=device))
        self.readout_scale = math.sqrt(width) if parameterization == "ntk" else float(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to(self.readout.dtype)
        act = ACTIVATIONS[self.activation]
        for W in self.hidden:
            h = act(h @ W.T / math.sqrt(W.shape[1]))
        return h @ self.readout / self.readout_scale


class Doubled(nn.Module):
    """f = g_theta(x) - g_theta'(x), theta' a copy of theta at construction (f_0 = 0)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.plus = net
        self.minus = copy.deepcopy(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.plus(x) - self.minus(x)


# --------------------------------------------------------------------------------------------
# The registered model: an MLP with all layers trained (model=mlp)


def _inputs(spec: ProblemSpec, pool: int) -> tuple[torch.Tensor, Optional[np.ndarray]]:
    """Pool inputs: the data set's, or for the eigen-space power-law task Gaussian inputs of
    dimension data.input_dim with the power-law covariance (stream "inputs")."""
    d = spec.data
    if spec.dataset.eigen_space:
        g = make_generator(spec.seed, "inputs", device=spec.device)
        return gaussian_power_law_inputs(pool, d.input_dim, d.alpha, g, torch.float64, spec.device), None
    return spec.dataset.draw(d, pool, spec.seed, spec.device)


def _targets(spec: ProblemSpec, x: torch.Tensor, labels) -> Targets:
    """Clean pool targets (D, M): a power law c k^-(1+beta) per mode of the network's NTK, a
    random-feature teacher network of width model.M, or the data set's labels (+1 / -1)."""
    d, m, D = spec.data, spec.model, spec.datasets
    gt = make_generator(spec.seed, "teacher", device=spec.device)

    def powerlaw(phi, lam, r):
        k = torch.arange(1, r + 1, dtype=torch.float64, device=phi.device)
        amp = torch.sqrt(d.c * k ** (-(1.0 + d.beta)) / lam[:r]).expand(D, -1)
        if d.teacher == "random":
            amp = amp * torch.randn(D, r, generator=gt, dtype=torch.float64, device=phi.device)
        return amp @ phi[:, :r].T

    def network(phi, lam, r):
        n = 1 if d.teacher == "fixed" else D
        ys = []
        for _ in range(n):  # a handful of teachers at most; each is one matmul
            tmap = RandomFeatureMap(x.shape[1], m.teacher_modes, m.nonlinearity, gt, torch.float64, spec.device)
            a = torch.randn(m.teacher_modes, generator=gt, dtype=torch.float64, device=spec.device)
            with torch.no_grad():
                ys.append(tmap(x) @ a)
        return torch.stack(ys).expand(D, -1)

    def from_labels(phi, lam, r):
        return torch.as_tensor(binary_labels(labels), dtype=torch.float64, device=spec.device).expand(D, -1)

    return {"powerlaw_teacher": powerlaw, "teacher_network": network, "labels": from_labels}[d.target]


def _problem(spec: ProblemSpec) -> Problem:
    d, m = spec.data, spec.model
    pool = spec.pool_size or max(POOL_FACTOR * m.N, 2 * d.P)
    x, labels = _inputs(spec, pool)
    g = make_generator(spec.seed, "model", device=spec.device)
    net = MLP(x.shape[1], m.N, m.depth, m.nonlinearity, m.parameterization, generator=g, dtype=spec.dtype,
              device=spec.device)
    if m.doubling:
        net = Doubled(net)
    info = {"input_dim": int(x.shape[1]), "width": m.N, "depth": m.depth, "parameterization": m.parameterization,
            "doubling": m.doubling}
    return network_problem(spec, net, x, _targets(spec, x, labels), info)


@MODELS.register("mlp")
class MLPModel:
    checkpoints = False  # the network's parameters live in its dynamics, not in the run state

    @staticmethod
    def check(data: DataConfig, model: ModelConfig, dataset: DataSet) -> None:
        if dataset.eigen_space and data.pool_size is not None and data.pool_size <= data.P:
            raise ConfigError("data.pool_size", data.pool_size, f"must be an integer > data.P={data.P}")

    problem = staticmethod(_problem)

    @staticmethod
    def draws(spec: ProblemSpec) -> dict[str, str]:
        d, dataset = spec.data, spec.dataset
        draws = {}
        if dataset.eigen_space or dataset.size is None or spec.pool_size < dataset.size:
            draws["inputs"] = "inputs" if dataset.eigen_space else dataset.input_stream
        draws["network_init"] = "model"
        if d.target == "teacher_network" or (d.target == "powerlaw_teacher" and d.teacher == "random"):
            draws["teacher"] = "teacher"
        draws.update(sample_selection="data", label_noise="data")
        if spec.validation_size > 0:
            draws["validation"] = "data"
        return draws
