"""Largest eigenvalue of a batch of symmetric PSD matrices by batched Lanczos.

The Euler step only needs ``dt = 1 / lambda_max`` of each Gram matrix, not the whole spectrum:
``eigvalsh`` costs O(m^3) per matrix, Lanczos O(k m^2) for k iterations (one matrix-vector
product each), and for the spectra of this project the top eigenvalue converges in k << m.
"""

from __future__ import annotations

import torch

__all__ = ["top_eigenvalue"]

_START_SEED = 20240611  # fixed seed of the Lanczos start vector (a private CPU generator)
_CHECK_EVERY = 8  # iterations between convergence checks (eigh of the small tridiagonal T_k)


def _start_vector(m: int, device: torch.device) -> torch.Tensor:
    """Deterministic, generic unit vector of length m (float64). A Gaussian draw from a private
    generator: no structured matrix (e.g. circulant) can make it orthogonal to its top
    eigenvector, and the global RNG is neither read nor advanced."""
    g = torch.Generator(device="cpu").manual_seed(_START_SEED)
    v = torch.randn(m, generator=g, dtype=torch.float64)
    return (v / v.norm()).to(device)


def _tridiagonal_top(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top eigenvalue of T_k = tridiag(beta, alpha, beta) per row, and the last component of its
    eigenvector. ``alpha`` (d, k), ``beta`` (d, k - 1)."""
    T = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    evals, evecs = torch.linalg.eigh(T)
    return evals[:, -1], evecs[:, -1, -1]


def _check_args(gram: torch.Tensor, max_iter: int) -> None:
    if gram.ndim != 3 or gram.shape[1] != gram.shape[2] or gram.shape[1] == 0:
        raise ValueError(f"gram has shape {tuple(gram.shape)}: expected (D, m, m) with m >= 1")
    if max_iter < 1:
        raise ValueError(f"max_iter={max_iter}: must be >= 1")
    if not gram.is_floating_point():
        raise TypeError(f"gram has dtype {gram.dtype}: expected a floating dtype")


def _compact(A: torch.Tensor, keep: torch.Tensor, owned: bool) -> torch.Tensor:
    """The matrices ``keep`` (increasing) of the batch ``A``; in place when ``A`` is a private
    copy (front to back, so no source is overwritten before it is read)."""
    if not owned:
        return A.index_select(0, keep)
    for i, src in enumerate(keep.tolist()):
        if i != src:
            A[i].copy_(A[src])
    return A[: keep.numel()]


def top_eigenvalue(gram: torch.Tensor, *, tol: float = 1e-13, max_iter: int = 160, dense_below: int = 192,
                   info: dict | None = None) -> torch.Tensor:
    """lambda_max of each symmetric PSD matrix of ``gram`` (D, m, m), any float dtype and device,
    as float64 (D,); replaces ``torch.linalg.eigvalsh(gram.double())[..., -1]``.

    Lanczos in float64 (``gram`` converted once) with full reorthogonalisation (classical
    Gram-Schmidt, twice), from a fixed start vector: bit-reproducible, no global RNG use. A matrix
    stops when the residual bound of its top Ritz value theta, ``|beta_k s_k| <= tol * theta``,
    holds (checked every few iterations), or at breakdown (an invariant subspace: theta is then
    exact). Since ``|theta - lambda_max| <= |beta_k s_k|`` this is ``tol``-relative accurate, plus
    float64 rounding: about 1e-14 relative to ``eigvalsh`` of ``gram.double()`` in the tests.
    Matrices not converged after ``max_iter`` iterations fall back to ``eigvalsh`` (only those),
    as does the whole batch when ``m <= dense_below`` (there eigvalsh is cheap; same value).

    ``info``, if given, receives ``iterations`` (the largest k used), ``matvecs`` (matrix-vector
    products in total) and ``fallback`` (how many matrices went to eigvalsh after Lanczos).
    """
    _check_args(gram, max_iter)
    D, m, _ = gram.shape
    if info is not None:
        info.update(iterations=0, matvecs=0, fallback=0)
    if m <= dense_below or D == 0:
        return torch.linalg.eigvalsh(gram.to(torch.float64))[..., -1]

    f64 = torch.float64
    device = gram.device
    A = gram.to(f64)
    owned = A is not gram  # a private copy may be compacted in place
    out = torch.empty(D, dtype=f64, device=device)
    idx = torch.arange(D, device=device)  # original index of each active matrix
    k_max = min(int(max_iter), m)
    Q = torch.empty(D, k_max, m, dtype=f64, device=device)  # Lanczos vectors as rows
    alpha = torch.zeros(D, k_max, dtype=f64, device=device)
    beta = torch.zeros(D, k_max, dtype=f64, device=device)
    anorm = torch.zeros(D, dtype=f64, device=device)  # max_i |A q_i|, a lower bound on lambda_max
    Q[:, 0] = _start_vector(m, device)
    iterations = matvecs = 0

    for j in range(k_max):
        d = A.shape[0]
        q = Q[:, j]
        w = torch.bmm(q[:, None, :], A).squeeze(1)  # (A q)^T: the row form is the fast path on CPU
        matvecs += d
        anorm = torch.maximum(anorm, w.norm(dim=1))
        Qj = Q[:, : j + 1]
        for _ in range(2):  # full reorthogonalisation, classical Gram-Schmidt twice
            c = torch.bmm(w[:, None, :], Qj.transpose(1, 2))  # (d, 1, j + 1)
            w = w - torch.bmm(c, Qj).squeeze(1)
            alpha[:, j] += c[:, 0, j]  # q_j . A q_j (+ its second-pass correction)
        b = w.norm(dim=1)
        beta[:, j] = b
        iterations = j + 1

        broken = b <= tol * anorm  # invariant subspace (exactly 0 for a zero matrix)
        last = j + 1 == k_max
        if not (broken.any() or last or (j + 1) % _CHECK_EVERY == 0):
            Q[:, j + 1] = w / b[:, None]
            continue
        theta, s = _tridiagonal_top(alpha[:, : j + 1], beta[:, :j])
        done = broken | ((b * s).abs() <= tol * theta.abs())
        out[idx[done]] = theta[done]
        if last:
            break
        keep = (~done).nonzero().squeeze(1)
        if keep.numel() == 0:
            break
        if keep.numel() < d:  # drop the finished matrices from the batch
            A, owned = _compact(A, keep, owned), True
            Q, alpha, beta = Q[keep], alpha[keep], beta[keep]
            anorm, idx, w, b = anorm[keep], idx[keep], w[keep], b[keep]
        Q[:, j + 1] = w / b[:, None]

    fallback = int((~done).sum())
    if fallback:
        rest = (~done).nonzero().squeeze(1)
        out[idx[rest]] = torch.linalg.eigvalsh(A.index_select(0, rest))[..., -1]
    if info is not None:
        info.update(iterations=iterations, matvecs=matvecs, fallback=fallback)
    return out
