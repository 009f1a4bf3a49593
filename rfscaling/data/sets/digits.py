"""scikit-learn's bundled 8x8 digits (1797 x 64, shipped with scikit-learn; no download)."""

from __future__ import annotations

import numpy as np
import torch

from rfscaling.data.sets import DATASETS, DataSet

__all__ = ["digits_inputs", "standardise", "SIZE"]

SIZE = 1797  # samples in sklearn's digits


def standardise(x: np.ndarray) -> np.ndarray:
    mu, sd = x.mean(0), x.std(0)
    return (x - mu) / np.where(sd > 0, sd, 1.0)


def digits_inputs() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled 8x8 digits (1797 x 64, shipped with scikit-learn), pixels z-scored."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return standardise(d.data.astype(np.float64)), d.target.astype(np.int64)


def _draw(data, n: int, seed: int, device: str):
    x, y = digits_inputs()
    if n < len(x):  # a seeded subset of the 1797 digits
        sel = np.random.default_rng(seed).permutation(len(x))[:n]
        x, y = x[sel], y[sel]
    return torch.as_tensor(x, device=device), y


DATASETS.register("digits")(DataSet("digits", _draw, labels=True, power_law=False, size=SIZE,
                                    input_stream="digits_subset"))
