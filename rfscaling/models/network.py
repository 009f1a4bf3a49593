"""A problem for a model that is a real ``nn.Module`` trained in all its layers (``model=mlp``).

The testbed measures everything in kernel eigen-coordinates. For a network these are those of
its empirical NTK at initialisation on the pool (docs/theory.md, section 11): with
``K / M = U diag(lam) U^T``, the pool eigenfeatures are ``Phi = sqrt(M) U diag(sqrt(s))`` (M x M,
``s_k = lam_k`` on the ``rank`` learnable modes, the smallest learnable eigenvalue on the others,
which only sets their unit), and any function on the pool has the exact pseudo-weights
``w = Phi^{-1} f = f @ to_eigen``. Then ``sum_k s_k (w_k - wstar_k)^2`` is E_g on the pool, mode by
mode, for the network at any time (lazy or not), and the linear-model machinery (measurement,
hooks, validation and training errors) applies unchanged. The DMFT gets the ``rank`` learnable
modes with the initial residual ``wstar - w_0`` as target and the rest as ``tail_power``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Optional

import torch
from torch import nn

from rfscaling.data.ensemble import EnsembleData, make_generator
from rfscaling.data.inputs import pool_ensemble_indexed
from rfscaling.models.ntk import empirical_ntk, model_outputs
from rfscaling.models.problem import Problem, ProblemSpec

__all__ = ["NetworkData", "network_problem", "is_network", "pseudo_weights"]


@dataclass(frozen=True)
class NetworkData(EnsembleData):
    """:class:`EnsembleData` in NTK eigen-coordinates plus what training the network needs:
    ``network`` at init, ``pool_inputs`` (M, d), ``sample_index`` (D, P) the training samples'
    pool rows, ``to_eigen`` (M, M) with pseudo-weights ``w = f_pool @ to_eigen``."""

    network: Optional[nn.Module] = None
    pool_inputs: Optional[torch.Tensor] = None
    sample_index: Optional[torch.Tensor] = None
    to_eigen: Optional[torch.Tensor] = None


def is_network(data: EnsembleData) -> bool:
    """Whether the drawn data are trained as a network (not as a linear model)."""
    return getattr(data, "network", None) is not None


def _eigenbasis(K: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Eigenvalues (decreasing) of K / M, eigenvectors, the units s and the rank."""
    M = K.shape[0]
    lam, U = torch.linalg.eigh(K / M)
    lam, U = lam.flip(0).clamp_min(0.0), U.flip(1)
    rank = int((lam > rtol * lam[0]).sum())
    if rank == 0:
        raise ValueError("the network's NTK on the pool is zero")
    s = lam.clone()
    s[rank:] = lam[rank - 1]
    return lam, U, s, rank


#: clean pool targets (D, M) from the pool eigenfeatures phi (M, M), eigenvalues lam (M,) and rank
Targets = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def network_problem(spec: ProblemSpec, net: nn.Module, x: torch.Tensor, targets: Targets, info: dict) -> Problem:
    """The problem of training ``net`` (at init, dtype ``spec.dtype``) on pool inputs ``x`` (M, d)
    with clean targets ``targets(phi, lam, rank)`` (D, M): D training sets of P pool samples
    (``spec.validation_size`` held out, capped to the pool), R label-noise draws."""
    d, dt = spec.data, spec.dtype
    xin = x.to(dt)
    M = xin.shape[0]
    lam, U, s, r = _eigenbasis(empirical_ntk(net, xin), 1e-9 if dt == torch.float64 else 1e-5)
    to_eigen = U / torch.sqrt(M * s)
    phi = U * torch.sqrt(M * s)  # f_pool = phi @ w
    Y = targets(phi, lam, r)
    w0 = model_outputs(net, xin).to(torch.float64) @ to_eigen
    wstar = Y.to(torch.float64) @ to_eigen  # (D, M)
    resid = wstar - w0
    unexplained = float((s[r:] * resid[:, r:] ** 2).sum(1).mean())
    gd = make_generator(spec.seed, "data", device=spec.device)
    n_val = min(spec.validation_size, M - d.P)
    data, val, idx = pool_ensemble_indexed(phi.to(dt), Y.to(dt), wstar.to(dt), s.to(dt), d.P, spec.datasets,
                                           spec.replicas, d.label_noise, gd, n_val, unexplained)
    base = {f.name: getattr(data, f.name) for f in fields(EnsembleData)}
    data = NetworkData(**base, network=net, pool_inputs=xin, sample_index=idx[:, : d.P].contiguous(),
                       to_eigen=to_eigen.to(dt))
    info = {**info, "pool_size": M, "kernel_rank": r, "n_parameters": sum(p.numel() for p in net.parameters()),
            "unexplained_variance": unexplained, "spectrum_head": [float(v) for v in lam[:8]],
            "initial_output_power": float((w0 ** 2 * s).sum())}
    return Problem(data, val, lam[:r].cpu().numpy(), (resid[:, :r] ** 2).mean(0).cpu().numpy(), d.label_noise,
                   unexplained, info=info, error_offset=0.0)


def pseudo_weights(outputs: torch.Tensor, to_eigen: torch.Tensor) -> torch.Tensor:
    """Pool outputs (..., M) -> pseudo-weights (..., M) in NTK eigen-coordinates."""
    return outputs.to(to_eigen.dtype) @ to_eigen
