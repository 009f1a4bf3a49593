"""Synthetic eigenfeature data: the theory's own setting (docs/theory.md conventions).

Features ``x_{mu k} = sqrt(lam_k) z_{mu k}`` with ``z`` standard normal; teacher
``y_mu = wstar . x_mu + eps_mu``, ``eps ~ N(0, label_noise)``. The teacher is either *fixed*
(``wstar_k = sqrt(E[wstar_k^2])``, the same for every dataset) or *random*
(``wstar_k = sqrt(E[wstar_k^2]) g_k``, ``g`` standard normal, drawn once per dataset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rfscaling.data.ensemble import EnsembleData, ValidationData
from rfscaling.theory.spectra import power_law_task

__all__ = ["EigenTask", "TEACHERS", "power_law_eigen_task", "sample_eigen_ensemble", "sample_eigen_validation"]

TEACHERS = ("fixed", "random")


@dataclass(frozen=True)
class EigenTask:
    """Spectrum ``eigenvalues`` (N,), teacher second moment (N,), label-noise variance, teacher kind."""

    eigenvalues: np.ndarray
    target_second_moment: np.ndarray
    label_noise: float = 0.0
    teacher: str = "random"

    def __post_init__(self) -> None:
        lam = np.asarray(self.eigenvalues, dtype=np.float64)
        s = np.asarray(self.target_second_moment, dtype=np.float64)
        if lam.ndim != 1 or lam.size == 0 or not np.all(lam > 0) or not np.all(np.isfinite(lam)):
            raise ValueError("eigenvalues: must be a non-empty 1-d array of finite positive numbers")
        if s.shape != lam.shape or not np.all(s >= 0) or not np.all(np.isfinite(s)):
            raise ValueError("target_second_moment: must be finite, >= 0 and have the shape of eigenvalues")
        if not np.isfinite(self.label_noise) or self.label_noise < 0:
            raise ValueError(f"label_noise={self.label_noise}: must be a finite variance >= 0")
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher={self.teacher}: must be one of {', '.join(TEACHERS)}")
        object.__setattr__(self, "eigenvalues", lam)
        object.__setattr__(self, "target_second_moment", s)

    @property
    def n_modes(self) -> int:
        return int(self.eigenvalues.size)


def power_law_eigen_task(N: int, alpha: float, beta: float, label_noise: float = 0.0,
                         teacher: str = "random", lam_1: float = 1.0, c: float = 1.0) -> EigenTask:
    """Power-law task: ``lam_k = lam_1 k^-(1+alpha)``, ``lam_k E[wstar_k^2] = c k^-(1+beta)``."""
    lam, s = power_law_task(N, alpha, beta, lam_1=lam_1, c=c)
    return EigenTask(lam, s, float(label_noise), teacher)


def _teacher(task: EigenTask, datasets: int, generator: torch.Generator, dtype, device) -> torch.Tensor:
    amp = torch.as_tensor(np.sqrt(task.target_second_moment), dtype=dtype, device=device)
    if task.teacher == "fixed":
        return amp.expand(datasets, -1).clone()
    g = torch.randn(datasets, task.n_modes, generator=generator, dtype=dtype, device=device)
    return amp * g


def sample_eigen_ensemble(task: EigenTask, n_samples: int, datasets: int, replicas: int,
                          generator: torch.Generator, dtype: torch.dtype = torch.float32,
                          device: str | torch.device = "cpu") -> EnsembleData:
    """Draw D = ``datasets`` Gaussian designs (P = ``n_samples``), their teachers, and
    R = ``replicas`` independent label-noise draws per dataset; one batched computation."""
    for name, v in (("n_samples", n_samples), ("datasets", datasets), ("replicas", replicas)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}={v}: must be a positive integer")
    device = torch.device(device)
    N = task.n_modes
    sqrt_lam = torch.as_tensor(np.sqrt(task.eigenvalues), dtype=dtype, device=device)
    X = torch.randn(datasets, n_samples, N, generator=generator, dtype=dtype, device=device) * sqrt_lam
    wstar = _teacher(task, datasets, generator, dtype, device)
    clean = torch.bmm(X, wstar[:, :, None])[:, :, 0]  # (D, P)
    eps = torch.randn(datasets, replicas, n_samples, generator=generator, dtype=dtype, device=device)
    labels = clean[:, None, :] + float(np.sqrt(task.label_noise)) * eps
    return EnsembleData(
        features=X,
        labels=labels,
        target_weights=wstar,
        eigenvalues=torch.as_tensor(task.eigenvalues, dtype=dtype, device=device),
        target_second_moment=torch.as_tensor(task.target_second_moment, dtype=dtype, device=device),
        label_noise=float(task.label_noise),
        unexplained_variance=0.0,
    )


def sample_eigen_validation(task: EigenTask, data: EnsembleData, n_samples: int,
                            generator: torch.Generator) -> ValidationData:
    """A fresh held-out set per dataset (same teacher, fresh inputs and label noise)."""
    X0 = data.features
    D, _, N = X0.shape
    sqrt_lam = data.eigenvalues.sqrt()
    X = torch.randn(D, n_samples, N, generator=generator, dtype=X0.dtype, device=X0.device) * sqrt_lam
    y = torch.bmm(X, data.target_weights[:, :, None])[:, :, 0]
    y = y + float(np.sqrt(task.label_noise)) * torch.randn(D, n_samples, generator=generator, dtype=X0.dtype, device=X0.device)
    return ValidationData(features=X, labels=y)
