"""What a run hands its observers: the start (:class:`RunInfo`), immutable evaluation
snapshots, stop requests, evaluation groups, and the end (:class:`RunSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Optional

import numpy as np
import torch

from rfscaling.theory.curve import TheoryCurve, TheoryPoint

__all__ = ["RunInfo", "Snapshot", "StopRequest", "EvalGroup", "Divergence", "RunSummary", "log_spaced_steps",
           "TheoryCurve", "TheoryPoint"]


@dataclass(frozen=True)
class RunInfo:
    """What hooks learn at the start: eigenvalues (N,), evaluation times/steps, step size,
    ensemble sizes, flat hyperparameters, the theory curve (or None), resume position."""

    eigenvalues: np.ndarray
    eval_times: np.ndarray
    eval_steps: np.ndarray
    dt: float
    n_datasets: int
    n_replicas: int
    n_samples: int
    hparams: Mapping[str, Any] = field(default_factory=dict)
    theory: Optional[TheoryCurve] = None
    start_index: int = 0


@dataclass(frozen=True)
class StopRequest:
    """A hook's request to end the run. ``resumable``: the run is unfinished (e.g. a compute
    budget ran out) and re-running the same command continues it from the last checkpoint."""

    reason: str
    resumable: bool = False


@dataclass(frozen=True)
class Snapshot:
    """One evaluation of the ensemble, immutable.

    ``weights`` (D, R, N) and ``target_weights`` (D, N) are in kernel eigen-coordinates
    (cloned, detached); ``train_error`` (D, R) per member; ``eigenvalues`` (N,);
    ``theory`` the DMFT at this time (or None); ``rng_state`` the noise generator's state
    after this evaluation (for checkpoints); ``error_offset`` the target power the features
    cannot represent (added to E_g and bias). ``metrics`` is the eigenmode measurement, shared
    by all hooks: ``measured`` when the loop computed it for the whole group, else computed
    once on first use. ``wall_clock``: ``time.perf_counter()`` when the run reached this
    evaluation (hooks see it later, after the rest of its group was trained).
    """

    index: int
    time: float
    step: int
    weights: torch.Tensor
    target_weights: torch.Tensor
    eigenvalues: torch.Tensor
    train_error: torch.Tensor
    theory: Optional[TheoryPoint] = None
    rng_state: Optional[torch.Tensor] = None
    error_offset: float = 0.0
    measured: Any = field(default=None, repr=False, compare=False)
    wall_clock: Optional[float] = None  # time.perf_counter() when the run reached this evaluation
    readout: Optional[torch.Tensor] = None  # random-projection student: weights -> teacher modes

    @cached_property
    def metrics(self):
        if self.measured is not None:
            return self.measured
        from rfscaling.run.measure import measure  # measure imports these records

        return measure(self.weights, self.target_weights, self.eigenvalues, self.train_error, self.error_offset,
                       self.readout)


@dataclass(frozen=True)
class EvalGroup:
    """Consecutive evaluations ``first .. first + size - 1`` measured together.

    Evaluation ``i`` always sits in slot ``i - first`` of a stack of ``size`` slots (absent
    ones zero), also when a resumed run starts inside the group: every product then has the
    same shapes as in the uninterrupted run and gives the same bits."""

    first: int
    size: int

    def slot(self, index: int) -> int:
        if not self.first <= index < self.first + self.size:
            raise ValueError(f"evaluation {index} is not in the group {self.first}..{self.first + self.size - 1}")
        return index - self.first

    def stack(self, indices, tensors) -> torch.Tensor:
        """Per-evaluation tensors (D, R, ...) -> one (D, size * R, ...) stack (row slot * R + r)."""
        tensors = list(tensors)
        t0 = tensors[0]
        out = t0.new_zeros((t0.shape[0], self.size) + tuple(t0.shape[1:]))
        for i, t in zip(indices, tensors):
            out[:, self.slot(i)] = t
        return out.reshape((t0.shape[0], self.size * t0.shape[1]) + tuple(t0.shape[2:]))

    def unstack(self, stacked: torch.Tensor) -> torch.Tensor:
        """The inverse layout: (D, size * R, ...) -> (size, D, R, ...)."""
        D, SR = stacked.shape[:2]
        return stacked.reshape((D, self.size, SR // self.size) + tuple(stacked.shape[2:])).transpose(0, 1)


@dataclass(frozen=True)
class Divergence:
    """Where and why a run stopped on non-finite weights or errors (see ``simulate``).

    ``index``/``step``/``time``: the first evaluation with non-finite values; ``last_good_*``:
    the last finite evaluation (None if there was none in this process); ``what``: which values
    were non-finite; ``cause``: the likely cause and what to try.
    """

    index: int
    step: int
    time: float
    what: str
    cause: str
    last_good_step: Optional[int] = None
    last_good_time: Optional[float] = None

    def message(self) -> str:
        """One line: what, where, the last good evaluation, the likely cause."""
        last = ("no finite evaluation in this process" if self.last_good_step is None else
                f"last finite evaluation at step {self.last_good_step} (t={self.last_good_time:.6g})")
        return (f"training diverged: {self.what} at step {self.step} (t={self.time:.6g}, evaluation "
                f"{self.index}); {last}; likely cause: {self.cause}")


@dataclass(frozen=True)
class RunSummary:
    """Handed to ``on_end``: final snapshot, why the run ended, wall time, compute spent.

    ``divergence`` is set when the run stopped on non-finite values; ``final`` is then the
    last finite snapshot (the non-finite one only if there was none)."""

    final: Snapshot
    stop_reason: str
    wall_time_s: float
    compute_macs: int
    completed: bool
    resumable: bool = False
    divergence: Optional[Divergence] = None


def log_spaced_steps(n_steps: int, n_evals: int, include_zero: bool = True) -> np.ndarray:
    """Distinct integer steps, log-spaced in [1, n_steps] (plus 0), always containing n_steps."""
    if n_steps < 1 or n_evals < 1:
        raise ValueError(f"n_steps={n_steps}, n_evals={n_evals}: must be >= 1")
    s = np.unique(np.round(np.logspace(0.0, np.log10(n_steps), n_evals)).astype(np.int64))
    s = np.unique(np.concatenate([[0] if include_zero else [], s, [n_steps]]).astype(np.int64))
    return s
