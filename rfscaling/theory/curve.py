"""The DMFT prediction at a run's evaluation times, as the testbed hands it to its observers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

__all__ = ["TheoryPoint", "TheoryCurve"]


@dataclass(frozen=True)
class TheoryPoint:
    """DMFT prediction at one time: totals (floats) and per-mode arrays (N,) (or None)."""

    generalization_error: float
    bias: float
    variance: float
    train_error: float
    mode_error: Optional[np.ndarray] = None
    mode_bias: Optional[np.ndarray] = None
    mode_variance: Optional[np.ndarray] = None
    generalization_error_gf: float = float("nan")   # E_g of the gradient-flow (continuous-time) theory


@dataclass(frozen=True)
class TheoryCurve:
    """DMFT prediction at all evaluation times: totals (T,), per-mode (T, N) or None.

    ``kind``: "discrete (learning_rate=...)" when it is the theory of the run's own step size,
    "continuous" for gradient flow; ``generalization_error_gf`` (T,) is the gradient-flow E_g in
    either case (the same array when ``kind`` is continuous)."""

    times: np.ndarray
    generalization_error: np.ndarray
    bias: np.ndarray
    variance: np.ndarray
    train_error: np.ndarray
    mode_error: Optional[np.ndarray] = None
    mode_bias: Optional[np.ndarray] = None
    mode_variance: Optional[np.ndarray] = None
    generalization_error_gf: Optional[np.ndarray] = None
    kind: str = "continuous"

    def at(self, i: int) -> TheoryPoint:
        def pick(a):
            return None if a is None else np.array(a[i], copy=True)

        return TheoryPoint(
            float(self.generalization_error[i]), float(self.bias[i]), float(self.variance[i]),
            float(self.train_error[i]), pick(self.mode_error), pick(self.mode_bias), pick(self.mode_variance),
            float((self.generalization_error if self.generalization_error_gf is None
                   else self.generalization_error_gf)[i]),
        )

    @staticmethod
    def from_prediction(pred: Any, n_modes: int | None = None) -> "TheoryCurve":
        """From a ``rfscaling.theory.predict`` result; per-mode arrays are zero-padded to
        ``n_modes`` columns (modes the theory was not given, e.g. zero-eigenvalue directions)."""

        def pad(a):
            if a is None:
                return None
            a = np.asarray(a, dtype=np.float64)
            if n_modes is not None and a.shape[1] < n_modes:
                a = np.concatenate([a, np.zeros((a.shape[0], n_modes - a.shape[1]))], axis=1)
            return a

        f = lambda name: np.asarray(getattr(pred, name), dtype=np.float64)  # noqa: E731
        return TheoryCurve(
            f("times"), f("generalization_error"), f("bias"), f("variance"), f("train_error"),
            pad(getattr(pred, "mode_error", None)), pad(getattr(pred, "mode_bias", None)),
            pad(getattr(pred, "mode_variance", None)),
        )
