"""Eigenmode measurement of an ensemble: what every evaluation of a run reports.

For weights ``w`` (D, R, N) in kernel eigen-coordinates and teachers ``wstar`` (D, N), with
``e = w - wstar`` and per dataset d

    mode_error_dk    = lam_k mean_r e_drk^2
    mode_variance_dk = lam_k var_r(e_drk)                 (unbiased, ddof = 1)
    mode_bias_dk     = lam_k [ (mean_r e_drk)^2 - var_r(e_drk) / R ]   (finite-replica corrected)

so that bias + variance = error exactly per dataset (the theory's bias is |E[w|data] - wstar|^2
averaged over data; the correction removes the var/R the finite replica mean adds to it).
Everything is averaged over datasets, with standard errors over datasets (ddof = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["EnsembleMetrics", "measure", "measure_many"]


@dataclass(frozen=True)
class EnsembleMetrics:
    """Dataset averages (floats / (N,) arrays) and their standard errors over datasets."""

    generalization_error: float
    generalization_error_se: float
    bias: float
    bias_se: float
    variance: float
    variance_se: float
    train_error: float
    train_error_se: float
    mode_error: np.ndarray
    mode_error_se: np.ndarray
    mode_bias: np.ndarray
    mode_variance: np.ndarray


def _mean_se(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the dataset axis (axis 1 of (K, D, ...))."""
    D = x.shape[1]
    m = x.mean(1)
    se = x.std(1, ddof=1) / math.sqrt(D) if D > 1 else np.full_like(m, np.nan)
    return m, se


def measure(weights: torch.Tensor, target_weights: torch.Tensor, eigenvalues: torch.Tensor,
            train_error: torch.Tensor, error_offset: float = 0.0, readout: torch.Tensor | None = None
            ) -> EnsembleMetrics:
    """Project ``w - wstar`` on the eigenmodes; see the module docstring. Computed in float64.

    ``error_offset`` (the unexplained target power, e.g. teacher modes beyond the student's N,
    or what random features cannot represent) is added to the totals E_g and bias, so that
    E_g = E_x[(f(x) - f*(x))^2] against the full clean target; per-mode arrays exclude it.
    ``readout`` (D, M, N): the random-projection student's map to the M teacher modes; the
    weights are then mapped to teacher coordinates F w first (per-mode arrays over M)."""
    return measure_many(weights[None], target_weights, eigenvalues, train_error[None], error_offset, readout)[0]


def measure_many(weights: torch.Tensor, target_weights: torch.Tensor, eigenvalues: torch.Tensor,
                 train_error: torch.Tensor, error_offset: float = 0.0, readout: torch.Tensor | None = None
                 ) -> list[EnsembleMetrics]:
    """:func:`measure` for K evaluations at once: ``weights`` (K, D, R, N), ``train_error``
    (K, D, R); one list entry per evaluation."""
    # numpy on host copies: one transfer per group, and on these small arrays numpy's per-call
    # cost is a fraction of torch's (0.19 vs 0.37 ms for the default run, one evaluation)
    if readout is not None:  # teacher coordinates F w (K, D, R, M), in float64 like the rest
        weights = torch.einsum("kdrn,dmn->kdrm", weights.detach().double(), readout.detach().double())
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged group: the loop reports it
        return _measure_many(weights, target_weights, eigenvalues, train_error, error_offset)


def _measure_many(weights, target_weights, eigenvalues, train_error, error_offset) -> list[EnsembleMetrics]:
    w = weights.detach().cpu().numpy().astype(np.float64)
    e = w - target_weights.detach().cpu().numpy().astype(np.float64)[None, :, None, :]  # (K, D, R, N)
    lam = eigenvalues.detach().cpu().numpy().astype(np.float64)
    R = e.shape[2]
    err = lam * np.einsum("kdrn,kdrn->kdn", e, e) / R  # (K, D, N)
    if R > 1:
        em = e.mean(2)
        d = e - em[:, :, None, :]
        var = lam * np.einsum("kdrn,kdrn->kdn", d, d) / (R - 1)
        bias = lam * em**2 - var / R
    else:
        var = np.full_like(err, np.nan)
        bias = np.full_like(err, np.nan)
    off = float(error_offset)
    train = train_error.detach().cpu().numpy().astype(np.float64).mean(2)  # (K, D)
    tot = np.stack([err.sum(-1) + off, bias.sum(-1) + off, var.sum(-1), train], -1)  # (K, D, 4)
    tm, tse = _mean_se(tot)
    me, mse = _mean_se(err)
    bias_m, var_m = bias.mean(1), var.mean(1)
    return [EnsembleMetrics(
        float(tm[k, 0]), float(tse[k, 0]), float(tm[k, 1]), float(tse[k, 1]), float(tm[k, 2]), float(tse[k, 2]),
        float(tm[k, 3]), float(tse[k, 3]), me[k], mse[k], bias_m[k], var_m[k],
    ) for k in range(w.shape[0])]
