"""Full-batch gradient flow / weight decay / Langevin SGLD by Euler(-Maruyama) steps.

Contract (jax-md style): ``state = dyn.init(generator)``; ``state = dyn.step(state)``;
``state = dyn.advance(state, n)``. The whole ensemble (D datasets x R replicas) is one batched
tensor ``weights`` of shape (D, R, N); there is no Python loop over members.

Loss summed over samples: ``L(w) = 1/2 |y - X w|^2 + weight_decay/2 |w|^2``, so
``grad L = X^T (X w - y) + weight_decay w`` and one step is

    w <- w - dt grad L(w) + sqrt(2 temperature dt) xi,   xi ~ N(0, I),   t = dt * steps.

The default step ``dt = 1 / lambda_max(H)`` with ``H = X^T X + weight_decay I`` (the largest over
the D datasets) is stable (the bound is ``2 / lambda_max``); docs/testbed.md states the
discretisation error against the exact flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rfscaling.data.ensemble import EnsembleData

__all__ = ["DynamicsParams", "State", "EulerDynamics", "hessian_top_eigenvalue", "stable_step_size"]


@dataclass(frozen=True)
class DynamicsParams:
    """``dw = -grad L dt + sqrt(2 temperature) dB``, ``w(0) ~ N(0, init_variance I)``."""

    weight_decay: float = 0.0
    temperature: float = 0.0
    init_variance: float = 0.0

    def __post_init__(self) -> None:
        for name in ("weight_decay", "temperature", "init_variance"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{name}={v}: must be a finite number >= 0")


@dataclass(frozen=True)
class State:
    """Ensemble state: weights (D, R, N) in eigen-coordinates, step count, time = dt * step.

    ``generator`` is the torch Generator that drives the noise (advanced in place by steps).
    """

    weights: torch.Tensor
    step: int
    time: float
    generator: torch.Generator


def hessian_top_eigenvalue(features: torch.Tensor, weight_decay: float = 0.0) -> torch.Tensor:
    """lambda_max(X^T X + weight_decay I) per dataset, (D,), via eigvalsh of the smaller Gram."""
    X = features
    gram = X @ X.transpose(1, 2) if X.shape[1] <= X.shape[2] else X.transpose(1, 2) @ X
    top = torch.linalg.eigvalsh(gram.to(torch.float64))[..., -1]
    return top + float(weight_decay)


def stable_step_size(features: torch.Tensor, weight_decay: float = 0.0, fraction: float = 1.0) -> float:
    """``dt = fraction / max_d lambda_max(H_d)``; Euler is stable for fraction < 2."""
    if not 0 < fraction < 2:
        raise ValueError(f"fraction={fraction}: must be in (0, 2) for a stable Euler step")
    return float(fraction / hessian_top_eigenvalue(features, weight_decay).max())


def init_weights(shape, params: DynamicsParams, generator: torch.Generator, dtype, device) -> torch.Tensor:
    w = torch.zeros(shape, dtype=dtype, device=device)
    if params.init_variance > 0:
        w = math.sqrt(params.init_variance) * torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return w


class EnsembleReadout:
    """What every integrator of the linear ensemble reports besides its state: the training errors
    and the cost of one full-batch step. Needs ``self.data`` and ``self._Xt`` (X^T, (D, N, P))."""

    data: EnsembleData
    _Xt: torch.Tensor

    def train_errors(self, weights: torch.Tensor) -> torch.Tensor:
        """(1/P) |y - X w|^2 per member, (D, R)."""
        resid = torch.baddbmm(self.data.labels, weights, self._Xt, beta=-1.0)
        return (resid**2).mean(dim=-1)

    def macs_per_step(self) -> int:
        """Multiply-adds of one full-batch step for the whole ensemble: 2 P N per member."""
        d = self.data
        return 2 * d.n_samples * d.n_modes * d.n_datasets * d.n_replicas


class EulerDynamics(EnsembleReadout):
    """Euler(-Maruyama) integrator of the ensemble; see the module docstring."""

    def __init__(self, data: EnsembleData, params: DynamicsParams, dt: float | None = None,
                 lambda_max: float | None = None) -> None:
        """``lambda_max``: max_d lambda_max(H_d) if the caller has it already (else computed)."""
        self.data = data
        self.params = params
        self.lambda_max = (float(lambda_max) if lambda_max is not None else
                           float(hessian_top_eigenvalue(data.features, params.weight_decay).max()))
        self.dt = float(dt) if dt is not None else 1.0 / self.lambda_max
        if not math.isfinite(self.dt) or self.dt <= 0:
            raise ValueError(f"dt={dt}: must be a finite number > 0")
        if self.dt * self.lambda_max >= 2.0:
            raise ValueError(
                f"dt={self.dt:.4g}: unstable, must be < 2/lambda_max(H) = {2.0 / self.lambda_max:.4g}"
            )
        self._X = data.features
        self._Xt = data.features.transpose(1, 2).contiguous()
        self._noise = math.sqrt(2.0 * params.temperature * self.dt)

    def init(self, generator: torch.Generator) -> State:
        D, R = self.data.n_datasets, self.data.n_replicas
        w = init_weights((D, R, self.data.n_modes), self.params, generator, self._X.dtype, self._X.device)
        return State(w, 0, 0.0, generator)

    def gradient(self, weights: torch.Tensor) -> torch.Tensor:
        resid = torch.baddbmm(self.data.labels, weights, self._Xt, beta=-1.0)  # X w - y, (D, R, P)
        return torch.baddbmm(weights, resid, self._X, beta=self.params.weight_decay)

    def step(self, state: State) -> State:
        w = state.weights - self.dt * self.gradient(state.weights)
        if self._noise > 0:
            w = w + self._noise * torch.randn(w.shape, generator=state.generator, dtype=w.dtype, device=w.device)
        n = state.step + 1
        return State(w, n, n * self.dt, state.generator)

    def advance(self, state: State, n_steps: int) -> State:
        for _ in range(int(n_steps)):
            state = self.step(state)
        return state

