"""Kernels of a user's torch model: the empirical neural tangent kernel and the feature kernel.

For a scalar-output model f(x; theta), the empirical NTK on inputs x_1..x_M is
``K_ij = sum_p d f(x_i)/d theta_p  d f(x_j)/d theta_p`` over the trainable parameters (those with
``requires_grad``), at the current parameters. Gradient descent on the summed loss of the model
linearised around these parameters is linear regression on the features ``J(x)``, whose
covariance over the pool has the nonzero eigenvalues of ``K / M`` (docs/theory.md, section 1).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

__all__ = ["empirical_ntk", "feature_kernel", "HasFeatures", "model_outputs"]

#: default bound on the Jacobian entries held at once (2^26 float64 entries = 512 MiB)
MAX_JACOBIAN_ENTRIES = 2**26


@runtime_checkable
class HasFeatures(Protocol):
    """A model linear in its readout: f(x) = features(x) . w (kernel="features")."""

    def features(self, x: torch.Tensor) -> torch.Tensor: ...


def model_outputs(model: nn.Module, inputs: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """f(x) (M,) for a scalar-output model (outputs (M,) or (M, 1)), evaluated in chunks."""
    outs = []
    with torch.no_grad():
        for i in range(0, inputs.shape[0], chunk):
            x = inputs[i: i + chunk]
            out = model(x)
            if out.numel() != x.shape[0]:
                raise ValueError(f"model output has shape {tuple(out.shape)} for {x.shape[0]} inputs: the "
                                 "eigenmode monitor needs one scalar output per input ((M,) or (M, 1))")
            outs.append(out.reshape(-1))
    return torch.cat(outs)


def _jacobian_fn(model: nn.Module):
    """(params, x batch) -> Jacobian (batch, n_params): per-sample gradients by vmap(jacrev)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no trainable parameters (requires_grad): its NTK is zero")
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def single(p, x):
        return functional_call(model, (p, buffers), (x[None],)).reshape(())

    per_sample = vmap(jacrev(single), in_dims=(None, 0))

    def jac(x: torch.Tensor) -> torch.Tensor:
        grads = per_sample(params, x)
        return torch.cat([g.reshape(x.shape[0], -1) for g in grads.values()], 1)

    return jac, sum(p.numel() for p in params.values())


def empirical_ntk(model: nn.Module, inputs: torch.Tensor, *, max_entries: int = MAX_JACOBIAN_ENTRIES
                  ) -> torch.Tensor:
    """The empirical NTK (M, M), float64, of ``model`` at its current parameters on ``inputs``.

    Memory stays bounded by ``max_entries`` Jacobian entries: rows are taken in blocks of B
    inputs with 2 B n_params <= max_entries, and K_ab = J_a J_b^T is accumulated block by block.
    When the whole Jacobian fits (M n_params <= max_entries) each block is computed once;
    otherwise block b is recomputed for every a <= b (about (M/B)^2 / 2 block Jacobians).
    """
    jac, n_params = _jacobian_fn(model)
    M = inputs.shape[0]
    block = max(1, min(M, max_entries // (2 * n_params)))
    starts = list(range(0, M, block))
    keep = M * n_params <= max_entries
    cache: dict[int, torch.Tensor] = {}

    def J(i: int) -> torch.Tensor:
        if i in cache:
            return cache[i]
        out = jac(inputs[starts[i]: starts[i] + block]).to(torch.float64)
        if keep:
            cache[i] = out
        return out

    K = torch.empty(M, M, dtype=torch.float64, device=inputs.device)
    for a in range(len(starts)):
        Ja = J(a)
        sa = slice(starts[a], starts[a] + Ja.shape[0])
        for b in range(a, len(starts)):
            Jb = Ja if b == a else J(b)
            sb = slice(starts[b], starts[b] + Jb.shape[0])
            Kab = Ja @ Jb.T
            K[sa, sb] = Kab
            if b != a:
                K[sb, sa] = Kab.T
    return K


def feature_kernel(model: HasFeatures, inputs: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """K = Phi Phi^T (M, M), float64, for a model linear in its readout, Phi = model.features(x):
    the NTK of training only the readout."""
    with torch.no_grad():
        phi = torch.cat([model.features(inputs[i: i + chunk]).to(torch.float64)
                         for i in range(0, inputs.shape[0], chunk)])
    return phi.reshape(phi.shape[0], -1) @ phi.reshape(phi.shape[0], -1).T
