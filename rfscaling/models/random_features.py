"""Random-feature network and its kernel eigenbasis.

Student ``f(x) = w . phi(F x) / sqrt(N)`` with a frozen Gaussian first layer ``F`` (N x D_in,
entries N(0, 1/D_in), seeded) and trainable readout ``w``. Its kernel eigenmodes are the
eigenvectors of the (uncentred) feature covariance ``Sigma = E[phi phi^T] / N`` estimated on a
pool of inputs; the pool is the population: training sets are drawn from it and E_g is measured
on it, so ``E_g = (w - wstar)^T Sigma (w - wstar) = sum_k lam_k (w_k - wstar_k)^2`` exactly in
eigen-coordinates, where ``wstar = Sigma^{-1} E[phi y]`` is the best linear readout and
``E[y^2] - sum_k lam_k wstar_k^2`` the target variance the features cannot explain (which acts
as label noise in the Gaussian-equivalent theory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rfscaling.config import DataConfig, ModelConfig
from rfscaling.data.ensemble import make_generator
from rfscaling.data.inputs import binary_labels, pool_ensemble
from rfscaling.data.sets import DATASETS, DataSet
from rfscaling.errors import ConfigError
from rfscaling.models.problem import MODELS, Problem, ProblemSpec

__all__ = [
    "NONLINEARITIES",
    "RandomFeatureMap",
    "RandomFeatureModel",
    "KernelBasis",
    "kernel_basis",
    "teacher_coefficients",
]


def _erf(x: torch.Tensor) -> torch.Tensor:
    return torch.special.erf(x)


NONLINEARITIES = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "erf": _erf,
    "gelu": torch.nn.functional.gelu,
    "identity": lambda x: x,
}


class RandomFeatureMap(nn.Module):
    """x (..., D_in) -> phi(x F^T) / sqrt(N) (..., N); F is a frozen buffer."""

    def __init__(self, input_dim: int, n_features: int, nonlinearity: str, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity={nonlinearity}: must be one of {'|'.join(NONLINEARITIES)}")
        if n_features < 1 or input_dim < 1:
            raise ValueError(f"n_features={n_features}, input_dim={input_dim}: must be positive")
        self.nonlinearity = nonlinearity
        self.n_features = int(n_features)
        F = torch.randn(n_features, input_dim, generator=generator, dtype=dtype, device=device) / math.sqrt(input_dim)
        self.register_buffer("weight", F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = x.to(self.weight.dtype) @ self.weight.T
        return NONLINEARITIES[self.nonlinearity](pre) / math.sqrt(self.n_features)


class RandomFeatureModel(nn.Module):
    """Random-feature network; ``forward(x, weights)`` evaluates a whole ensemble of readouts.

    ``weights`` (..., N) in the raw feature basis; use ``basis.vectors @ w_eig`` to map
    eigen-coordinates back.
    """

    def __init__(self, feature_map: RandomFeatureMap) -> None:
        super().__init__()
        self.feature_map = feature_map

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ weights.transpose(-1, -2)


@dataclass(frozen=True)
class KernelBasis:
    """Eigen-decomposition of the pool feature covariance: ``eigenvalues`` (N,) decreasing
    (clamped >= 0), ``vectors`` (N, N) columns = eigenvectors, ``rank`` = number of modes with
    eigenvalue > rtol * lam_1 (the rest carry no signal and are left out of the theory)."""

    eigenvalues: torch.Tensor
    vectors: torch.Tensor
    rank: int

    def to_eigen(self, features: torch.Tensor) -> torch.Tensor:
        """Raw features (..., N) -> eigen-coordinates (..., N)."""
        return features @ self.vectors


def kernel_basis(pool_features: torch.Tensor, rtol: float = 1e-9) -> KernelBasis:
    """Eigenbasis of Sigma = Phi^T Phi / M for pool features Phi (M, N); computed in float64."""
    Phi = pool_features.to(torch.float64)
    M = Phi.shape[0]
    lam, Q = torch.linalg.eigh(Phi.T @ Phi / M)
    lam, Q = lam.flip(-1).clamp_min(0.0), Q.flip(-1)
    rank = int((lam > rtol * lam[0]).sum()) if lam[0] > 0 else 0
    dt = pool_features.dtype
    return KernelBasis(lam.to(dt), Q.to(dt), rank)


def teacher_coefficients(basis: KernelBasis, pool_features: torch.Tensor, pool_targets: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best linear readout of pool targets ``y`` (M,) or (D, M) in eigen-coordinates.

    Returns ``wstar`` (D, N) with ``wstar_k = E[x_k y] / lam_k`` on the first ``rank`` modes (0
    beyond), the unexplained variance ``E[y^2] - sum_k lam_k wstar_k^2`` (D,) and ``E[y^2]`` (D,).
    """
    Y = pool_targets.to(torch.float64)
    if Y.ndim == 1:
        Y = Y[None]
    Xe = basis.to_eigen(pool_features.to(torch.float64).to(basis.vectors.device)).to(torch.float64)
    M = Xe.shape[0]
    lam = basis.eigenvalues.to(torch.float64)
    cross = Y @ Xe / M  # (D, N) = E[y x_k]
    k = basis.rank
    w = torch.zeros_like(cross)
    w[:, :k] = cross[:, :k] / lam[:k]
    power = (Y**2).mean(-1)
    unexplained = (power - (lam * w**2).sum(-1)).clamp_min(0.0)
    dt = pool_features.dtype
    return w.to(dt), unexplained.to(dt), power.to(dt)


# --------------------------------------------------------------------------------------------
# The registered model: random features of a data set's inputs


def _targets(spec: ProblemSpec, x: torch.Tensor, labels, Xe: torch.Tensor, basis: KernelBasis,
             gt: torch.Generator) -> torch.Tensor:
    """Clean targets on the pool, (D, pool): a power-law teacher in the kernel eigenbasis, random
    teacher networks of width M, or the data set's labels (+1 for classes 0-4, -1 for 5-9)."""
    d, m, D = spec.data, spec.model, spec.datasets
    if d.target == "powerlaw_teacher":
        k = torch.arange(1, m.N + 1, dtype=torch.float64, device=spec.device)
        s = torch.zeros(m.N, dtype=torch.float64, device=spec.device)
        r = basis.rank
        s[:r] = d.c * k[:r] ** (-(1.0 + d.beta)) / basis.eigenvalues[:r]
        amp = s.sqrt().expand(D, -1)
        W = amp.clone() if d.teacher == "fixed" else amp * torch.randn(D, m.N, generator=gt, dtype=torch.float64,
                                                                       device=spec.device)
        return W @ Xe.T  # (D, pool)
    if d.target == "teacher_network":
        width = m.teacher_modes
        n_teachers = 1 if d.teacher == "fixed" else D
        Ys = []
        for _ in range(n_teachers):  # a handful of teachers at most; each is one matmul
            tmap = RandomFeatureMap(x.shape[1], width, m.nonlinearity, gt, torch.float64, spec.device)
            a = torch.randn(width, generator=gt, dtype=torch.float64, device=spec.device)
            with torch.no_grad():
                Ys.append(tmap(x) @ a)
        return torch.stack(Ys).expand(D, -1) if n_teachers == 1 else torch.stack(Ys)
    return torch.as_tensor(binary_labels(labels), dtype=torch.float64, device=spec.device).expand(D, -1)


def _problem(spec: ProblemSpec) -> Problem:
    d, m = spec.data, spec.model
    x, labels = spec.dataset.draw(d, spec.pool_size, spec.seed, spec.device)
    pool = x.shape[0]
    din = x.shape[1]
    gm = make_generator(spec.seed, "model", device=spec.device)
    fmap = RandomFeatureMap(din, m.N, m.nonlinearity, gm, torch.float64, spec.device)
    with torch.no_grad():
        phi = fmap(x)  # (pool, N)
    basis = kernel_basis(phi)
    Xe = basis.to_eigen(phi)  # (pool, N) eigen-coordinates, float64
    lam = basis.eigenvalues
    D = spec.datasets
    Y = _targets(spec, x, labels, Xe, basis, make_generator(spec.seed, "teacher", device=spec.device))
    W, unexplained, power = teacher_coefficients(basis, phi, Y)
    unexplained_mean = float(unexplained.mean())
    gd = make_generator(spec.seed, "data", device=spec.device)
    data, val = pool_ensemble(Xe.to(spec.dtype), Y.to(spec.dtype), W.to(spec.dtype), lam.to(spec.dtype), d.P, D,
                              spec.replicas, d.label_noise, gd, spec.validation_size, unexplained_mean)
    r = basis.rank
    lam_np = lam.cpu().numpy()[:r]
    s_np = (W.to(torch.float64) ** 2).mean(0).cpu().numpy()[:r]
    info = {
        "pool_size": int(pool),
        "input_dim": int(din),
        "kernel_rank": int(r),
        "target_power": float(power.mean()),
        "unexplained_variance": unexplained_mean,
        "spectrum_head": [float(v) for v in lam_np[:8]],
    }
    return Problem(data, val, lam_np, s_np, d.label_noise, unexplained_mean, info=info)


@MODELS.register("random_features")
class RandomFeatures:
    @staticmethod
    def check(data: DataConfig, model: ModelConfig, dataset: DataSet) -> None:
        if dataset.eigen_space:
            inputs = [n for n in DATASETS.names() if not DATASETS.get(n).eigen_space]
            raise ConfigError("data.kind", data.kind, "the random-feature network needs input data "
                              f"(data.kind={'|'.join(inputs)})")

    problem = staticmethod(_problem)

    @staticmethod
    def draws(spec: ProblemSpec) -> dict[str, str]:
        d, dataset = spec.data, spec.dataset
        draws = {}
        if dataset.size is None or spec.pool_size < dataset.size:  # all of a fixed data set: no random subset
            draws["inputs"] = dataset.input_stream
        draws["feature_map"] = "model"
        if d.target == "teacher_network" or (d.target == "powerlaw_teacher" and d.teacher == "random"):
            draws["teacher"] = "teacher"
        draws.update(sample_selection="data", label_noise="data")
        if spec.validation_size > 0:
            draws["validation"] = "data"
        return draws
