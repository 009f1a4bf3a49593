"""MNIST-1D, generated locally with the ``mnist1d`` package's generator (never its download path)."""

from __future__ import annotations

import math

import numpy as np
import torch

from rfscaling.data.sets import DATASETS, DataSet
from rfscaling.data.sets.digits import standardise
from rfscaling.errors import MissingPackage

__all__ = ["mnist1d_inputs"]


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
    return standardise(x), y


def _draw(data, n: int, seed: int, device: str):
    x, y = mnist1d_inputs(n, seed=seed)
    return torch.as_tensor(x, device=device), y


DATASETS.register("mnist1d")(DataSet("mnist1d", _draw, labels=True, power_law=False, input_stream="mnist1d"))
