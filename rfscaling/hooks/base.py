"""Observer protocol of the testbed: start, evaluation snapshots, end.

A hook implements any of ``on_start(info)``, ``on_eval(snapshot) -> StopRequest | None`` and
``on_end(summary)``. Every evaluation hands all hooks the same immutable :class:`Snapshot`
(frozen dataclass, tensors cloned); hooks never see the trainer or the dynamics. A hook that
keeps state across a resume also implements ``state_dict()`` / ``load_state_dict(d)``.

Evaluations close together in steps are measured as a group (:class:`EvalGroup`): the loop
trains through the group first, then measures all its snapshots with one product per matrix
instead of one per evaluation. A hook with its own per-evaluation products may implement
``prepare(group, snapshots)``, called once per group before the snapshots' ``on_eval`` calls,
to compute them the same way; a stop request earlier in the group means some prepared
snapshots never reach ``on_eval`` (so ``prepare`` must not change the hook's recorded state).
``on_eval`` still sees the snapshots one by one, in order; a hook that acts on wall time reads
``snapshot.wall_clock`` (when the run reached the evaluation), not the clock at ``on_eval``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "Hook",
    "RunInfo",
    "Snapshot",
    "StopRequest",
    "TheoryPoint",
    "TheoryCurve",
    "RunSummary",
    "Divergence",
    "EvalGroup",
    "log_spaced_steps",
    "atomic_write",
]


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


@dataclass(frozen=True)
class TheoryCurve:
    """DMFT prediction at all evaluation times: totals (T,), per-mode (T, N) or None."""

    times: np.ndarray
    generalization_error: np.ndarray
    bias: np.ndarray
    variance: np.ndarray
    train_error: np.ndarray
    mode_error: Optional[np.ndarray] = None
    mode_bias: Optional[np.ndarray] = None
    mode_variance: Optional[np.ndarray] = None

    def at(self, i: int) -> TheoryPoint:
        def pick(a):
            return None if a is None else np.array(a[i], copy=True)

        return TheoryPoint(
            float(self.generalization_error[i]), float(self.bias[i]), float(self.variance[i]),
            float(self.train_error[i]), pick(self.mode_error), pick(self.mode_bias), pick(self.mode_variance),
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

    @cached_property
    def metrics(self):
        if self.measured is not None:
            return self.measured
        from rfscaling.hooks.eigenmode import measure

        return measure(self.weights, self.target_weights, self.eigenvalues, self.train_error, self.error_offset)


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


@runtime_checkable
class Hook(Protocol):
    def on_start(self, info: RunInfo) -> None: ...

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]: ...

    def on_end(self, summary: RunSummary) -> None: ...


def log_spaced_steps(n_steps: int, n_evals: int, include_zero: bool = True) -> np.ndarray:
    """Distinct integer steps, log-spaced in [1, n_steps] (plus 0), always containing n_steps."""
    if n_steps < 1 or n_evals < 1:
        raise ValueError(f"n_steps={n_steps}, n_evals={n_evals}: must be >= 1")
    s = np.unique(np.round(np.logspace(0.0, np.log10(n_steps), n_evals)).astype(np.int64))
    s = np.unique(np.concatenate([[0] if include_zero else [], s, [n_steps]]).astype(np.int64))
    return s


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")  # atomic_write's temp files


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temp files that :func:`atomic_write` left under ``directory`` when its process
    was killed mid-write (SIGKILL, power loss); files of live processes are kept. Returns the
    removed paths. A rerun in the same folder calls this first."""
    removed = []
    for p in Path(directory).rglob(".*.tmp*"):
        m = _TEMP_NAME.match(p.name)
        if m is None or not p.is_file():
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _alive(pid):  # in flight (or the pid was reused): leave it
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(tmp)`` on a temp file in the same folder, then ``os.replace``.

    Readers see the old file or the new one, never a torn one (also when the process is killed
    mid-write); on an exception (or an interrupt) the temp file is removed and the old file kept.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
