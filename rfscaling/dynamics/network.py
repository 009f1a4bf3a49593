"""Training an ensemble of real networks (``model=mlp``): full-batch GD, SGLD and minibatch SGD.

The D x R members (D training sets, R label-noise draws each; all start from the same network,
whose NTK at init defines the eigen-coordinates) are trained together: their parameters are
stacked with ``torch.func.stack_module_state``, per-member gradients of the summed loss come from
one ``vmap(grad(...))`` call, and :class:`rfscaling.optim.SGLD` steps the stacked tensors (its
update is elementwise, so stepping the stack steps every member). One step, per member:

    p <- p - dt (g + weight_decay p) + momentum (p - p_prev) + sqrt(2 temperature dt) xi,
    g = (P / B) grad of 1/2 sum_{mu in batch} (f(x_mu) - y_mu)^2

(B = P: full batch; the P/B factor makes g an unbiased estimate of the full-batch gradient, so
time = steps x dt is gradient-flow time for every batch size). The state handed to the loop is
the members' pseudo-weights (rfscaling/models/network.py): their outputs on the pool in NTK
eigen-coordinates, exact for the network at any time. The network parameters, momentum and
batch order live in this object: a run of it cannot be checkpointed or rolled back.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from rfscaling.config import DynamicsConfig
from rfscaling.dynamics.base import State
from rfscaling.dynamics.euler import EnsembleReadout, hessian_top_eigenvalue
from rfscaling.errors import ConfigError
from rfscaling.models.network import NetworkData, pseudo_weights
from rfscaling.optim import SGLD

__all__ = ["NetworkDynamics", "build_network", "EnsembleModule", "member_chunk"]

#: members per vmap chunk on the CPU: all at once, the activations of 32 members (32 MB per
#: tensor at width 1024, P = 1024) fall out of cache and a step was 2.3x slower than a per-seed
#: loop; in chunks of 2 it is ~1.2x faster than the loop (docs/performance.md)
CPU_MEMBER_CHUNK = 2


def member_chunk(device: torch.device | str) -> Optional[int]:
    """vmap's chunk_size over members: all at once on a GPU, :data:`CPU_MEMBER_CHUNK` on the CPU."""
    return None if torch.device(device).type == "cuda" else CPU_MEMBER_CHUNK


class EnsembleModule:
    """K modules of one architecture (seeds, or copies of one), their parameters stacked
    (``torch.func.stack_module_state``: leaf tensors (K, ...)) and evaluated by vmap."""

    def __init__(self, modules: Sequence[torch.nn.Module], chunk_size: Optional[int] = None) -> None:
        self.params, self.buffers = stack_module_state(list(modules))
        self.base = copy.deepcopy(modules[0]).to("meta")

        def f(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,)).reshape(x.shape[0])

        def loss(params, buffers, x, y, scale):
            return 0.5 * scale * ((f(params, buffers, x) - y) ** 2).sum()

        self.outputs = vmap(f, in_dims=(0, 0, None))  # one input batch for every member
        self.member_outputs = vmap(f)  # (K, B, d) inputs, one batch per member
        self.gradients = vmap(grad(loss), in_dims=(0, 0, 0, 0, None), chunk_size=chunk_size)

    def forward(self, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Outputs (K, M) of every member on the same inputs (M, d)."""
        with torch.no_grad():
            return torch.cat([self.outputs(self.params, self.buffers, x[i: i + chunk])
                              for i in range(0, x.shape[0], chunk)], 1)

    def set_gradients(self, x: torch.Tensor, y: torch.Tensor, scale: float) -> None:
        """p.grad of every stacked parameter: per-member gradients of scale/2 sum (f(x) - y)^2."""
        grads = self.gradients({k: p.detach() for k, p in self.params.items()}, self.buffers, x, y, scale)
        for k, p in self.params.items():
            p.grad = grads[k]


class NetworkDynamics(EnsembleReadout):
    """See the module docstring. ``batch_size`` None: full batch."""

    stepwise = True

    def __init__(self, data: NetworkData, cfg: DynamicsConfig, dt: float, lambda_max: Optional[float],
                 batch_size: Optional[int] = None) -> None:
        D, R, P = data.labels.shape
        self.data, self.cfg, self.dt, self.lambda_max = data, cfg, float(dt), lambda_max
        self.batch = P if batch_size is None else int(batch_size)
        self._Xt = data.features.transpose(1, 2).contiguous()
        self.ensemble = EnsembleModule([data.network] * (D * R), member_chunk(data.labels.device))
        x = data.pool_inputs[data.sample_index]  # (D, P, d)
        self._x = x[:, None].expand(D, R, *x.shape[1:]).reshape(D * R, *x.shape[1:])
        self._y = data.labels.reshape(D * R, P)
        self._opt = SGLD(list(self.ensemble.params.values()), lr=self.dt, temperature=cfg.temperature,
                         weight_decay=cfg.weight_decay, momentum=cfg.momentum)
        self._order: Optional[torch.Tensor] = None  # sgd without replacement: this epoch's order
        self._at = 0

    def _batch(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        K, P = self._y.shape
        if self.batch == P and not self.cfg.replacement:
            return self._x, self._y
        if self.cfg.replacement:
            idx = torch.randint(0, P, (K, self.batch), generator=gen, device=self._y.device)
        else:  # epochs of a fresh permutation per member; the last partial batch is dropped
            if self._order is None or self._at + self.batch > P:
                self._order = torch.rand(K, P, generator=gen, device=self._y.device).argsort(1)
                self._at = 0
            idx = self._order[:, self._at: self._at + self.batch]
            self._at += self.batch
        rows = torch.arange(K, device=idx.device)[:, None]
        return self._x[rows, idx], self._y[rows, idx]

    def _state(self, step: int, gen: torch.Generator) -> State:
        D, R = self.data.n_datasets, self.data.n_replicas
        w = pseudo_weights(self.ensemble.forward(self.data.pool_inputs), self.data.to_eigen)
        return State(w.reshape(D, R, -1), step, step * self.dt, gen)

    def init(self, generator: torch.Generator) -> State:
        return self._state(0, generator)

    def advance(self, state: State, n_steps: int) -> State:
        self._opt.generator = state.generator
        scale = self._y.shape[1] / self.batch
        for _ in range(n_steps):
            x, y = self._batch(state.generator)
            self.ensemble.set_gradients(x, y, scale)
            self._opt.step()
        return self._state(state.step + n_steps, state.generator)

    def plan(self, call_lengths: Sequence[int]) -> int:
        return 1

    def macs_per_step(self) -> int:
        """About 3 multiply-adds per parameter per sample (forward and backward), all members."""
        n_params = sum(p[0].numel() for p in self.ensemble.params.values())
        return 3 * self.batch * n_params * self._y.shape[0]

    def describe(self) -> dict:
        return {"integrator": "network_sgd" if self.batch < self._y.shape[1] or self.cfg.replacement
                else "network_gd", "euler_form": None, "euler_stride": 1, "batch_size": self.batch}


def build_network(data: NetworkData, cfg: DynamicsConfig, batch_size: Optional[int] = None) -> NetworkDynamics:
    """The network dynamics of ``cfg``; dt defaults to 1/lambda_max of the training sets' NTK
    (the linearised model's Hessian), and must stay below 2/lambda_max."""
    P = data.n_samples
    if batch_size is not None and batch_size > P:
        raise ConfigError("dynamics.batch_size", batch_size, f"must be <= data.P={P}")
    lam_max = float(hessian_top_eigenvalue(data.features, cfg.weight_decay).max())
    dt = cfg.dt if cfg.dt is not None else 1.0 / lam_max
    if dt * lam_max >= 2.0:
        raise ConfigError("dynamics.dt", cfg.dt, f"unstable step: must be < {2.0 / lam_max:.6g} = 2/lambda_max of "
                          "the training sets' NTK (null picks 1/lambda_max)")
    return NetworkDynamics(data, cfg, dt, lam_max, batch_size)
