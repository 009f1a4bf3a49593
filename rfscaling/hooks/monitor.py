"""Eigenmodes of a user's own torch model, next to the DMFT (docs/theory.md, section 11).

:class:`EigenmodeMonitor` takes the empirical NTK of the model at its parameters at
construction (or the feature kernel of a readout-linear model), eigendecomposes ``K_pool / M``
on a pool of M inputs (the population: training sets are drawn from it and E_g is measured on
it), measures the target's power per eigenmode, and builds the DMFT for ``train_size`` samples.
``measure(model, time)`` then projects the model's error on the pool onto the eigenmodes.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from rfscaling.models.ntk import (
    HasFeatures,
    empirical_ntk,
    feature_kernel,
    model_outputs,
)

__all__ = ["EigenmodeMonitor"]

KERNELS = ("ntk", "features")


class EigenmodeMonitor:
    """Per-eigenmode generalization error of any scalar-output ``nn.Module`` and its DMFT.

    Conventions (docs/theory.md): the loss is summed over the training batch, time is gradient
    flow time (``time = steps * lr``), ``label_noise`` the label-noise variance, ``temperature``
    and ``weight_decay`` as in :class:`rfscaling.optim.SGLD`.

    Construction: K (the empirical NTK of the trainable parameters, or ``kernel="features"``:
    ``Phi Phi^T`` with ``Phi = model.features(pool_inputs)``), eigenpairs ``K / M = sum_k lam_k u_k
    u_k^T`` (decreasing), eigenfunctions ``psi_k = sqrt(M) u_k`` (orthonormal in the pool
    average). The theory's target is the initial residual ``r_0 = f* - f_0`` (f_0 the model's
    outputs now; zero for a doubled network), with power ``c_k^2 = <psi_k, r_0>^2`` per mode, i.e.
    ``W_k = c_k^2 / lam_k``, on the ``rank`` modes with ``lam_k > rtol lam_1``; the rest
    (``unexplained_power``, residual outside the kernel's range) can never be learned by the
    linearised model and enters the DMFT as its ``tail_power``. This is exactly gradient descent on
    the model linearised at construction, on Gaussian eigenfeatures; a real network departs from
    it by feature learning (finite width) and by non-Gaussian eigenfeatures: measure, do not fit.
    ``weight_decay`` in the theory pulls towards the parameters at construction, in SGLD towards 0.
    ``learning_rate``: the step eta of the user's (full-batch) GD/SGLD loop: the DMFT is then the
    discrete-time theory of that step (docs/theory.md section 10), at times n * eta; None: gradient flow.

    ``measure(model, time)`` returns a dict: ``time``, ``E_g`` = mean over the pool of (f - f*)^2
    (clean targets), ``mode_error`` (M,) = <psi_k, f - f*>^2 (sums to E_g over all M modes),
    ``unexplained`` (their sum beyond ``rank``), and ``E_g_theory``, ``mode_error_theory`` (M,;
    modes beyond ``rank`` keep their initial power), ``bias_theory``, ``variance_theory``,
    ``train_error_theory``, ``unexplained_theory``.
    """

    def __init__(self, model: nn.Module, pool_inputs: torch.Tensor, pool_targets: torch.Tensor, train_size: int,
                 label_noise: float = 0.0, temperature: float = 0.0, weight_decay: float = 0.0, *,
                 kernel: str = "ntk", times: Optional[Sequence[float]] = None, rtol: Optional[float] = None,
                 max_jacobian_entries: Optional[int] = None, learning_rate: Optional[float] = None) -> None:
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r}: must be one of {'|'.join(KERNELS)}")
        M = pool_inputs.shape[0]
        if pool_targets.reshape(-1).shape[0] != M:
            raise ValueError(f"pool_targets: {pool_targets.numel()} values for {M} pool inputs")
        if not 1 <= int(train_size) <= M:
            raise ValueError(f"train_size={train_size}: must be in 1..{M} (training sets are drawn from the pool)")
        self.pool_inputs = pool_inputs
        self.targets = pool_targets.reshape(-1).to(torch.float64)
        self.train_size = int(train_size)
        self.label_noise, self.temperature, self.weight_decay = float(label_noise), float(temperature), float(weight_decay)
        self.kernel = kernel
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.K = self._kernel(model, pool_inputs, kernel, max_jacobian_entries)
        lam, U = torch.linalg.eigh(self.K / M)
        self.eigenvalues = lam.flip(0).clamp_min(0.0)  # (M,) decreasing
        self.eigenvectors = U.flip(1)  # (M, M), columns u_k
        if rtol is None:  # eigenvalues below the rounding of the Jacobian's dtype carry no signal
            rtol = 1e-9 if next(model.parameters()).dtype == torch.float64 else 1e-5
        self.rank = int((self.eigenvalues > rtol * self.eigenvalues[0]).sum())
        self.initial_outputs = model_outputs(model, pool_inputs).to(torch.float64)
        self.target_power = self._project(self.targets - self.initial_outputs)  # (M,) c_k^2
        r = self.rank
        self.unexplained_power = float(self.target_power[r:].sum())
        lam_np = self.eigenvalues[:r].cpu().numpy()
        self._theory_inputs = (lam_np, self.target_power[:r].cpu().numpy() / lam_np)
        self._cache: dict[float, dict] = {}
        if times is not None:
            self._predict(np.asarray(times, dtype=np.float64))

    @staticmethod
    def _kernel(model: nn.Module, x: torch.Tensor, kernel: str, max_entries: Optional[int]) -> torch.Tensor:
        if kernel == "features":
            if not isinstance(model, HasFeatures):
                raise ValueError("kernel='features' needs a model with a features(x) method (linear readout)")
            return feature_kernel(model, x)
        return empirical_ntk(model, x) if max_entries is None else empirical_ntk(model, x, max_entries=max_entries)

    def _project(self, residual: torch.Tensor) -> torch.Tensor:
        """<psi_k, r>^2 = (u_k . r)^2 / M for every pool eigenmode k."""
        return (self.eigenvectors.T @ residual.to(self.eigenvectors.device)) ** 2 / residual.shape[0]

    def _predict(self, times: np.ndarray) -> None:
        """The DMFT at ``times`` (cached per time): one ``predict`` call shares its contours."""
        from rfscaling.theory import predict

        new = np.array(sorted({float(t) for t in times} - set(self._cache)))
        if new.size == 0:
            return
        lam, W = self._theory_inputs
        pred = predict(lam, W, self.train_size, new, label_noise=self.label_noise,
                       weight_decay=self.weight_decay, temperature=self.temperature,
                       tail_power=self.unexplained_power, learning_rate=self.learning_rate)
        tail = self.target_power[self.rank:].cpu().numpy()
        modes = np.asarray(pred.mode_error, dtype=np.float64)
        for i, t in enumerate(new):
            self._cache[float(t)] = {
                "E_g_theory": float(pred.generalization_error[i]),
                "bias_theory": float(pred.bias[i]),
                "variance_theory": float(pred.variance[i]),
                "train_error_theory": float(pred.train_error[i]),
                "mode_error_theory": np.concatenate([modes[i], tail]),
                "unexplained_theory": self.unexplained_power,
            }

    def theory(self, time: float) -> dict:
        """The DMFT values at ``time`` (see the class docstring)."""
        if not (math.isfinite(time) or time == math.inf) or time < 0:
            raise ValueError(f"time={time!r}: must be >= 0")
        self._predict(np.array([float(time)]))
        return dict(self._cache[float(time)])

    def measure(self, model: nn.Module, time: float, outputs: Optional[torch.Tensor] = None) -> dict:
        """Evaluate ``model`` on the pool (or take its ``outputs`` (M,)) and project its error."""
        f = model_outputs(model, self.pool_inputs) if outputs is None else outputs.reshape(-1)
        err = f.to(torch.float64) - self.targets.to(f.device)
        modes = self._project(err)
        record = {
            "time": float(time),
            "E_g": float((err**2).mean()),
            "mode_error": modes.cpu().numpy(),
            "unexplained": float(modes[self.rank:].sum()),
        }
        record.update(self.theory(float(time)))
        return record
