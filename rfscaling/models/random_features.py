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

__all__ = [
    "NONLINEARITIES",
    "RandomFeatureMap",
    "RandomFeatureModel",
    "EigenfeatureModel",
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


class EigenfeatureModel(nn.Module):
    """Linear student on eigenfeatures, f(x) = sum_k w_k x_k (the theory's own model).

    Inputs are already eigen-coordinates (x_k = sqrt(lam_k) z_k); ``forward(x (D, P, N),
    weights (D, R, N)) -> (D, R, P)``.
    """

    def __init__(self, eigenvalues: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("eigenvalues", eigenvalues.clone())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return torch.bmm(weights, x.transpose(1, 2))


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
