"""Input-space data for the random-feature network, and ensembles drawn from a pool.

Inputs: Gaussian with a power-law covariance, scikit-learn's bundled digits (no download),
MNIST-1D generated locally with the ``mnist1d`` package's generator (never its download path).
Targets: a power-law teacher in the kernel eigenbasis, a random teacher network, or the data
set's labels (``+1`` for classes 0-4, ``-1`` for 5-9).

The pool is the population: every dataset of the ensemble draws its P training samples (and
its validation samples) without replacement from the pool, and E_g is measured on the pool.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rfscaling.data.ensemble import EnsembleData, ValidationData
from rfscaling.errors import MissingPackage

__all__ = [
    "gaussian_power_law_inputs",
    "digits_inputs",
    "mnist1d_inputs",
    "binary_labels",
    "pool_ensemble",
]


def gaussian_power_law_inputs(n: int, input_dim: int, alpha: float, generator: torch.Generator,
                              dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
    """x ~ N(0, diag(v)), v_i proportional to i^-(1+alpha), normalised to sum v_i = input_dim."""
    i = torch.arange(1, input_dim + 1, dtype=torch.float64)
    v = i ** (-(1.0 + alpha))
    v = v * (input_dim / v.sum())
    z = torch.randn(n, input_dim, generator=generator, dtype=dtype, device=device)
    return z * v.sqrt().to(dtype=dtype, device=device)


def _standardise(x: np.ndarray) -> np.ndarray:
    mu, sd = x.mean(0), x.std(0)
    return (x - mu) / np.where(sd > 0, sd, 1.0)


def digits_inputs() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled 8x8 digits (1797 x 64, shipped with scikit-learn), pixels z-scored."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _standardise(d.data.astype(np.float64)), d.target.astype(np.int64)


def mnist1d_inputs(n: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """``n`` MNIST-1D signals (n x 40) from the package's local generator, z-scored per position.

    Uses ``mnist1d.data.make_dataset`` with ``get_dataset_args()`` (never the download path);
    numpy's global RNG, which the generator reseeds, is restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise MissingPackage("data=mnist1d", "mnist1d", "mnist1d") from None

    args = get_dataset_args()
    per_class = int(math.ceil(n / 10))
    args.num_samples = 10 * per_class
    args.train_split = 1.0
    args.seed = int(seed)
    state = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    x, y = d["x"][:n].astype(np.float64), d["y"][:n].astype(np.int64)
    return _standardise(x), y


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
    return data, val
