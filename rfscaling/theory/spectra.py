"""Power-law spectra and targets in the conventions of docs/theory.md.

lam_k = lam_1 k^-(1+alpha) and per-mode target power lam_k E[wstar_k^2] = c k^-(1+beta), k = 1..N.
beta = alpha is a teacher drawn from the GP prior (E[wstar_k^2] constant).
"""

from __future__ import annotations

import numpy as np

__all__ = ["power_law_spectrum", "power_law_target", "power_law_task", "power_law_tail"]


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < 1:
        raise ValueError(f"{name}={value!r}: must be a positive integer")
    return int(value)


def _check_positive(name: str, value) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a finite number > 0")
    return value


def _check_exponent(name: str, value) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= -1:
        raise ValueError(f"{name}={value!r}: must be a finite number > -1")
    return value


def power_law_spectrum(N: int, alpha: float, lam_1: float = 1.0) -> np.ndarray:
    """Kernel eigenvalues lam_k = lam_1 k^-(1+alpha), shape (N,), decreasing."""
    N = _check_size("N", N)
    alpha = _check_positive("alpha", alpha)
    lam_1 = _check_positive("lam_1", lam_1)
    k = np.arange(1, N + 1, dtype=np.float64)
    return lam_1 * k ** (-(1.0 + alpha))


def power_law_target(N: int, alpha: float, beta: float, lam_1: float = 1.0, c: float = 1.0) -> np.ndarray:
    """Per-mode teacher second moment E[wstar_k^2] = c k^-(1+beta) / lam_k, shape (N,)."""
    lam = power_law_spectrum(N, alpha, lam_1)
    beta = _check_exponent("beta", beta)
    c = _check_positive("c", c)
    k = np.arange(1, N + 1, dtype=np.float64)
    return c * k ** (-(1.0 + beta)) / lam


def power_law_task(N: int, alpha: float, beta: float, lam_1: float = 1.0, c: float = 1.0):
    """(eigenvalues, target_second_moment) of the power-law task with N modes."""
    return power_law_spectrum(N, alpha, lam_1), power_law_target(N, alpha, beta, lam_1, c)


def power_law_tail(N: int, beta: float, c: float = 1.0, M: float | None = None) -> float:
    """Target power sum_{k=N+1}^{M} c k^-(1+beta) of the modes a width-N student cannot represent.

    M = None means an infinite teacher; the tail is then summed with the Hurwitz zeta function.
    """
    from scipy.special import zeta

    N = _check_size("N", N)
    beta = _check_positive("beta", beta)
    c = _check_positive("c", c)
    tail = c * float(zeta(1.0 + beta, N + 1))
    if M is not None:
        M = _check_size("M", M)
        if M < N:
            raise ValueError(f"M={M}: must be >= N={N}")
        tail -= c * float(zeta(1.0 + beta, M + 1))
    return max(tail, 0.0)
