"""Gaussian inputs with a power-law covariance: x ~ N(0, diag(v)), v_i proportional to i^-(1+alpha)."""

from __future__ import annotations

import torch

from rfscaling.data.ensemble import make_generator
from rfscaling.data.sets import DATASETS, DataSet

__all__ = ["gaussian_power_law_inputs"]


def gaussian_power_law_inputs(n: int, input_dim: int, alpha: float, generator: torch.Generator,
                              dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
    """x ~ N(0, diag(v)), v_i proportional to i^-(1+alpha), normalised to sum v_i = input_dim."""
    i = torch.arange(1, input_dim + 1, dtype=torch.float64)
    v = i ** (-(1.0 + alpha))
    v = v * (input_dim / v.sum())
    z = torch.randn(n, input_dim, generator=generator, dtype=dtype, device=device)
    return z * v.sqrt().to(dtype=dtype, device=device)


def _draw(data, n: int, seed: int, device: str):
    g = make_generator(seed, "inputs", device=device)
    return gaussian_power_law_inputs(n, data.input_dim, data.alpha, g, torch.float64, device), None


DATASETS.register("gaussian_powerlaw")(DataSet("gaussian_powerlaw", _draw, input_stream="inputs"))
