"""Ensembles drawn from a pool of input-space samples (the data sets are in
``rfscaling/data/sets/``), and regression targets from class labels (``+1`` for classes 0-4,
``-1`` for 5-9).

The pool is the population: every dataset of the ensemble draws its P training samples (and
its validation samples) without replacement from the pool, and E_g is measured on the pool.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rfscaling.data.ensemble import EnsembleData, ValidationData

__all__ = ["binary_labels", "pool_ensemble", "pool_ensemble_indexed"]


def binary_labels(labels: np.ndarray) -> np.ndarray:
    """Regression target from class labels: +1 for classes 0-4, -1 for 5-9."""
    return np.where(np.asarray(labels) < 5, 1.0, -1.0)


def pool_ensemble(pool_features: torch.Tensor, pool_targets: torch.Tensor, target_weights: torch.Tensor,
                  eigenvalues: torch.Tensor, n_samples: int, datasets: int, replicas: int, label_noise: float,
                  generator: torch.Generator, validation_size: int = 0, unexplained_variance: float = 0.0,
                  ) -> tuple[EnsembleData, ValidationData | None]:
    """Draw D training sets of P pool samples (without replacement) and R label-noise draws each.

    ``pool_features`` (M, N) in eigen-coordinates, ``pool_targets`` (M,) or (D, M) clean targets,
    ``target_weights`` (D, N) the best linear readout. With ``validation_size > 0`` also a
    validation set per dataset, disjoint from its training set (noisy labels, one draw).
    """
    data, val, _ = pool_ensemble_indexed(pool_features, pool_targets, target_weights, eigenvalues, n_samples,
                                         datasets, replicas, label_noise, generator, validation_size,
                                         unexplained_variance)
    return data, val


def pool_ensemble_indexed(pool_features, pool_targets, target_weights, eigenvalues, n_samples, datasets, replicas,
                          label_noise, generator, validation_size=0, unexplained_variance=0.0):
    """:func:`pool_ensemble` and the pool indices it drew, (D, P + validation_size): training
    samples first (a model that trains on the inputs themselves needs them)."""
    M, N = pool_features.shape
    Y = pool_targets if pool_targets.ndim == 2 else pool_targets[None].expand(datasets, -1)
    need = n_samples + validation_size
    if need > M:
        raise ValueError(f"n_samples={n_samples}: P + validation ({need}) exceeds the pool size {M}")
    dev, dt = pool_features.device, pool_features.dtype
    keys = torch.rand(datasets, M, generator=generator, device=dev)
    idx = keys.argsort(dim=1)[:, :need]  # (D, need): a uniformly random subset per dataset
    X = pool_features[idx]  # (D, need, N)
    y = torch.gather(Y.to(dt), 1, idx)  # (D, need)
    sd = math.sqrt(label_noise)
    eps = torch.randn(datasets, replicas, n_samples, generator=generator, dtype=dt, device=dev)
    labels = y[:, None, :n_samples] + sd * eps
    data = EnsembleData(
        features=X[:, :n_samples].contiguous(),
        labels=labels,
        target_weights=target_weights.to(dt),
        eigenvalues=eigenvalues.to(dt),
        target_second_moment=(target_weights.to(torch.float64) ** 2).mean(0).to(dt),
        label_noise=float(label_noise),
        unexplained_variance=float(unexplained_variance),
    )
    val = None
    if validation_size > 0:
        yv = y[:, n_samples:] + sd * torch.randn(datasets, validation_size, generator=generator, dtype=dt, device=dev)
        val = ValidationData(features=X[:, n_samples:].contiguous(), labels=yv)
    return data, val, idx
