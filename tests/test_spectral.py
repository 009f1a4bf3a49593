"""top_eigenvalue (batched Lanczos) against numpy's eigvalsh: accuracy on the Gram matrices of the
project and on hard cases (near-degenerate top pair, rank deficiency, float32 input, zero matrix),
the dense path, the eigvalsh fallback, determinism and the iteration count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfscaling.dynamics.spectral import top_eigenvalue

D = 3
REL = 1e-12


def _powerlaw(rng: np.random.Generator, m: int, alpha: float) -> np.ndarray:
    """X X^T with X = Z sqrt(k^-alpha), Z ~ N(0, 1) of shape (m, 2m): the project's Gram matrices."""
    k = np.arange(1, 2 * m + 1, dtype=np.float64)
    X = rng.standard_normal((m, 2 * m)) * np.sqrt(k ** -alpha)
    return X @ X.T


def _spectrum(rng: np.random.Generator, eigenvalues: np.ndarray) -> np.ndarray:
    m = len(eigenvalues)
    Q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    G = (Q * eigenvalues) @ Q.T
    return (G + G.T) / 2


def _near_degenerate(rng: np.random.Generator, m: int) -> np.ndarray:
    """Top pair 1 and 1 - 1e-6, the rest uniform in [0, 0.9]."""
    return _spectrum(rng, np.concatenate([[1.0, 1.0 - 1e-6], rng.uniform(0.0, 0.9, m - 2)]))


def _rank_deficient(rng: np.random.Generator, m: int, rank: int = 20) -> np.ndarray:
    X = rng.standard_normal((m, rank))
    return X @ X.T


KINDS = {
    "powerlaw1": lambda rng, m: _powerlaw(rng, m, 1.0),
    "powerlaw2": lambda rng, m: _powerlaw(rng, m, 2.0),
    "near_degenerate": _near_degenerate,
    "rank20": _rank_deficient,
}


def _batch(kind: str, m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([KINDS[kind](rng, m) for _ in range(D)])


def _rel_err(gram: torch.Tensor, lam: torch.Tensor) -> float:
    ref = np.linalg.eigvalsh(gram.double().numpy())[:, -1]
    return float(np.max(np.abs(lam.numpy() - ref) / np.abs(ref)))


@pytest.mark.parametrize("m", [200, 300, 500])
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_numpy_eigvalsh(kind, m):
    gram = torch.from_numpy(_batch(kind, m))
    info: dict = {}
    lam = top_eigenvalue(gram, info=info)
    assert lam.dtype == torch.float64 and lam.shape == (D,)
    assert info["iterations"] > 0 and info["fallback"] == 0  # Lanczos answered, not eigvalsh
    assert _rel_err(gram, lam) <= REL


@pytest.mark.parametrize("m", [200, 300, 500])
@pytest.mark.parametrize("kind", ["powerlaw1", "near_degenerate"])
def test_float32_gram_matches_eigvalsh_of_its_float64_copy(kind, m):
    gram = torch.from_numpy(_batch(kind, m, seed=1)).float()
    info: dict = {}
    lam = top_eigenvalue(gram, info=info)
    assert lam.dtype == torch.float64
    assert info["fallback"] == 0
    assert _rel_err(gram, lam) <= REL  # float64 arithmetic on the exact float64 copy: no float32 error


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m", [50, 192])
def test_dense_path_is_eigvalsh(m, dtype):
    gram = torch.from_numpy(_batch("powerlaw1", m)).to(dtype)
    info: dict = {}
    lam = top_eigenvalue(gram, info=info)
    assert torch.equal(lam, torch.linalg.eigvalsh(gram.to(torch.float64))[..., -1])
    assert info["iterations"] == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zero_matrix_in_batch(dtype):
    rng = np.random.default_rng(2)
    m = 300
    gram = torch.from_numpy(np.stack([_powerlaw(rng, m, 1.0), np.zeros((m, m)), _powerlaw(rng, m, 2.0)])).to(dtype)
    info: dict = {}
    lam = top_eigenvalue(gram, info=info)
    assert torch.isfinite(lam).all()
    assert lam[1].item() == 0.0
    ref = np.linalg.eigvalsh(gram.double().numpy())[[0, 2], -1]
    assert np.max(np.abs(lam[[0, 2]].numpy() - ref) / ref) <= REL
    assert info["fallback"] == 0
    assert torch.equal(top_eigenvalue(torch.zeros(2, m, m, dtype=dtype)), torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mixed_batch_finishing_at_different_iterations(dtype):
    """Breakdown (rank 20), fast (power law) and slow (near-degenerate) matrices in one batch, in
    both orders: finished matrices leave the batch and the others keep their own results."""
    rng = np.random.default_rng(3)
    m = 300
    mats = [_rank_deficient(rng, m), _powerlaw(rng, m, 1.0), _near_degenerate(rng, m), _powerlaw(rng, m, 2.0)]
    for order in (mats, mats[::-1]):
        gram = torch.from_numpy(np.stack(order)).to(dtype)
        info: dict = {}
        lam = top_eigenvalue(gram, info=info)
        assert _rel_err(gram, lam) <= REL
        assert info["fallback"] == 0
        assert info["matvecs"] < len(order) * info["iterations"]  # finished ones stopped early


def test_not_converged_falls_back_to_eigvalsh():
    gram = torch.from_numpy(_batch("near_degenerate", 300))
    info: dict = {}
    lam = top_eigenvalue(gram, max_iter=8, info=info)
    assert info["iterations"] == 8 and info["fallback"] == D
    assert _rel_err(gram, lam) <= REL


def test_deterministic_and_leaves_global_rng_alone():
    gram = torch.from_numpy(_batch("powerlaw1", 400))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = top_eigenvalue(gram)
    second = top_eigenvalue(gram)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)  # the start vector does not depend on the global seed
    third = top_eigenvalue(gram)
    assert torch.equal(first, second) and torch.equal(first, third)


def test_power_law_converges_in_few_iterations():
    gram = torch.from_numpy(_batch("powerlaw1", 500))
    info: dict = {}
    top_eigenvalue(gram, info=info)
    assert info["fallback"] == 0
    assert info["iterations"] <= 40  # far fewer than m = 500 (16 when this was written)
    assert info["matvecs"] <= D * info["iterations"]


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        top_eigenvalue(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError):
        top_eigenvalue(torch.zeros(3, 3))
