"""The evaluation loop: advance a dynamics to log-spaced evaluation steps and notify hooks.

``simulate`` takes typed arguments only (a :class:`~rfscaling.dynamics.base.Dynamics`, a state,
the evaluation steps, :class:`~rfscaling.run.hook.Hook` s); it never hands the dynamics to hooks,
only immutable snapshots, and returns a :class:`Simulation`: the final state, the recorded
curves, the stop reason and a status, like scipy's ``solve_ivp``.

Evaluation groups: evaluations close together in steps (at most ``EVAL_GROUP`` of them within
one progress chunk, 5 % of the run: :func:`eval_groups`) are measured together. The loop trains
through the group, keeping a copy of the weights at each of its evaluations, then computes the
training errors (and, through ``prepare``, the early-stopping hook its validation errors) with
one product per matrix for the whole group instead of one per evaluation; the products are
memory-bound, so this is 2.6-3.4x cheaper per evaluation (docs/performance.md "Hook overhead").
Hooks still get the snapshots one by one, in order. A stop request at an evaluation before the
group's last rolls the state back to that evaluation (weights, step, noise-generator state), so
the run ends exactly where it would have ended evaluating one at a time; the wasted training is
at most one chunk. Groups are a function of the whole run's schedule and every evaluation keeps
its slot in the group's stack, so a resumed run computes the same bits.

Divergence guard: every evaluation is checked for finite weights and training errors (one
pass over the weights, cheap next to the measurement) before any hook sees it (``prepare``
gets only the finite ones before the first non-finite one). A non-finite evaluation is
not handed to the hooks; the run ends there with ``RunSummary.divergence`` set and ``final``
the last finite snapshot, so hooks keep only finite rows and the checkpoint hook keeps its last
(finite) checkpoint. Hooks are closed (``close()``) when the loop is left by an
exception (including KeyboardInterrupt and the app's signal handlers), so e.g. TensorBoard
events written so far are flushed.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from rfscaling.dynamics.base import Dynamics, State
from rfscaling.run.hook import Hook
from rfscaling.run.measure import measure_many
from rfscaling.run.records import Divergence, EvalGroup, RunInfo, RunSummary, Snapshot, TheoryCurve

__all__ = ["simulate", "Simulation", "measure_group", "check_finite", "advance_calls", "eval_groups",
           "EVAL_GROUP"]

EVAL_GROUP = 8  # at most this many evaluations per group: 8 reads X once instead of 8 times


def _default_chunk(total: int) -> int:
    return max(1, total // 20)  # progress every 5 %; few calls, as the kernel form re-anchors per call


def advance_calls(eval_steps, chunk: int | None = None) -> list[int]:
    """The lengths of the ``advance`` calls ``simulate`` makes for a whole run (from step 0):
    up to each evaluation step, split at absolute multiples of ``chunk``."""
    steps = np.asarray(eval_steps, dtype=np.int64)
    total = int(steps[-1]) if steps.size else 0
    chunk = _default_chunk(total) if chunk is None else int(chunk)
    calls, at = [], 0
    for target in steps:
        while at < target:
            n = min(int(target) - at, chunk - at % chunk)
            calls.append(n)
            at += n
    return calls


def eval_groups(eval_steps, chunk: int | None = None, size: int = EVAL_GROUP) -> list[EvalGroup]:
    """How ``simulate`` groups the evaluations of a whole run: consecutive evaluations, at most
    ``size`` of them, the last at most ``chunk`` steps after the first. So a stop request, a
    checkpoint or a logged row comes at most one chunk (5 % of the run) late, and in a
    log-spaced schedule the dense early evaluations are grouped, the sparse late ones are not."""
    steps = np.asarray(eval_steps, dtype=np.int64)
    total = int(steps[-1]) if steps.size else 0
    chunk = _default_chunk(total) if chunk is None else int(chunk)
    if size < 1:
        raise ValueError(f"size={size}: must be a positive integer")
    groups, first = [], 0
    for i in range(1, steps.size + 1):
        if i == steps.size or i - first == size or steps[i] - steps[first] > chunk:
            groups.append(EvalGroup(first, i - first))
            first = i
    return groups


@dataclass(frozen=True)
class _Taken:
    """What the loop keeps of the state at an evaluation until its group is measured."""

    index: int
    step: int
    time: float
    weights: torch.Tensor
    rng_state: torch.Tensor
    wall_clock: float


def _take(index: int, state: State) -> _Taken:
    return _Taken(index, int(state.step), float(state.time), state.weights.detach().clone(),
                  state.generator.get_state(), _time.perf_counter())  # get_state is already a copy


def _restore(snap: Snapshot, generator: torch.Generator) -> State:
    """The state at a snapshot: the run continues (or ends) from there, as if never past it."""
    generator.set_state(snap.rng_state)
    return State(snap.weights.clone(), snap.step, snap.time, generator)


def measure_group(group: EvalGroup, taken: Sequence[_Taken], dynamics, target_weights: torch.Tensor,
                  eigenvalues: torch.Tensor, theory: Optional[TheoryCurve], error_offset: float = 0.0,
                  readout: Optional[torch.Tensor] = None) -> list[Snapshot]:
    """The snapshots of evaluations ``taken`` (all in ``group``), with their training errors
    and eigenmode metrics computed for the whole group at once. ``target_weights`` and
    ``eigenvalues`` are private copies that nobody modifies (shared by the snapshots)."""
    W = group.stack([t.index for t in taken], [t.weights for t in taken])  # (D, size R, N)
    train = group.unstack(dynamics.train_errors(W).detach())  # (size, D, R)
    metrics = measure_many(group.unstack(W), target_weights, eigenvalues, train, error_offset, readout)
    out = []
    for t in taken:
        k = group.slot(t.index)
        out.append(Snapshot(
            index=t.index, time=t.time, step=t.step, weights=t.weights, target_weights=target_weights,
            eigenvalues=eigenvalues, train_error=train[k].clone(),
            theory=theory.at(t.index) if theory is not None else None, rng_state=t.rng_state,
            error_offset=float(error_offset), measured=metrics[k], wall_clock=t.wall_clock, readout=readout))
    return out


def check_finite(snapshot: Snapshot) -> Optional[str]:
    """None if the snapshot's weights and training errors are all finite, else what is not."""
    if bool(torch.isfinite(snapshot.weights).all() & torch.isfinite(snapshot.train_error).all()):
        return None  # the common case: one reduction, one device sync
    bad_w = int((~torch.isfinite(snapshot.weights)).sum())
    if bad_w:
        return f"non-finite weights ({bad_w} of {snapshot.weights.numel()} entries)"
    if not bool(torch.isfinite(snapshot.train_error).all()):
        return "non-finite training error"
    return None


def _likely_cause(dynamics: Dynamics) -> str:
    dt, lam = float(dynamics.dt), dynamics.lambda_max
    if dynamics.stepwise and lam is not None and dt * lam > 1.0:
        return (f"the Euler step dt={dt:.4g} is close to the stability bound 2/lambda_max(H)={2.0 / lam:.4g} "
                "(rounding makes the stiffest mode grow); use a smaller dynamics.dt (null picks 1/lambda_max) "
                "or dynamics.integrator=exact")
    return ("floating-point overflow or non-finite data/labels (large temperature, init_variance or "
            "targets); check the data, or use dtype=float64")


def _close(hooks: Sequence[Hook]) -> None:
    for h in hooks:
        try:
            h.close()
        except Exception:  # best effort on the way out; the original error matters
            pass


@dataclass(frozen=True)
class Simulation:
    """What :func:`simulate` returns. ``status``: 0 completed, 1 stopped by a hook (``message``
    says why; ``resumable`` in the summary if re-running continues it), -1 diverged. The curves
    (T,) are the totals of the evaluations this call measured (the hooks saw the same)."""

    state: State
    summary: RunSummary
    times: np.ndarray
    steps: np.ndarray
    generalization_error: np.ndarray
    bias: np.ndarray
    variance: np.ndarray
    train_error: np.ndarray

    @property
    def status(self) -> int:
        s = self.summary
        return -1 if s.divergence is not None else (0 if s.completed else 1)

    @property
    def success(self) -> bool:
        return self.status == 0

    @property
    def message(self) -> str:
        return self.summary.stop_reason


def _curves(snaps: Sequence[Snapshot]) -> dict:
    m = [s.metrics for s in snaps]
    return dict(times=np.array([s.time for s in snaps], dtype=np.float64),
                steps=np.array([s.step for s in snaps], dtype=np.int64),
                generalization_error=np.array([x.generalization_error for x in m], dtype=np.float64),
                bias=np.array([x.bias for x in m], dtype=np.float64),
                variance=np.array([x.variance for x in m], dtype=np.float64),
                train_error=np.array([x.train_error for x in m], dtype=np.float64))


@dataclass
class _Ending:
    """How the evaluations went so far: the last snapshot the hooks saw, all of them (for the
    result's curves), and why the run ended (completed unless a stop or a divergence)."""

    snap: Optional[Snapshot] = None
    seen: list = field(default_factory=list)
    reason: str = "completed"
    completed: bool = True
    resumable: bool = False
    divergence: Optional[Divergence] = None


def _advance_to(dynamics: Dynamics, state: State, target: int, chunk: int, bar) -> State:
    """Train up to step ``target``; stepwise dynamics in progress chunks (absolute multiples)."""
    if target < state.step:
        raise ValueError(f"eval step {target} lies before the state's step {state.step}")
    while state.step < target:
        n = target - state.step
        if dynamics.stepwise:
            n = min(n, chunk - state.step % chunk)
        state = dynamics.advance(state, n)
        bar.update(n)
    return state


def _hand_over(group: EvalGroup, snaps: list[Snapshot], hooks: Sequence[Hook], dynamics: Dynamics,
               end: _Ending, bar, progress: bool) -> Optional[Snapshot]:
    """Check a measured group and show its snapshots to the hooks, in order. Returns the
    snapshot the run ends at (a stop request or the first non-finite one), else None."""
    bad = [check_finite(s) for s in snaps]
    n_ok = next((k for k, b in enumerate(bad) if b is not None), len(snaps))
    if n_ok:
        for h in hooks:
            h.prepare(group, snaps[:n_ok])
    for new, why in zip(snaps, bad):
        if why is not None:
            last = end.snap
            end.divergence = Divergence(
                index=new.index, step=new.step, time=new.time, what=why, cause=_likely_cause(dynamics),
                last_good_step=None if last is None else last.step, last_good_time=None if last is None else last.time)
            end.reason, end.completed, end.resumable = end.divergence.message(), False, False
            end.snap = last if last is not None else new
            return new
        end.snap = new
        end.seen.append(new)
        if progress and math.isfinite(new.time):
            bar.set_postfix(t=f"{new.time:.3g}", E_g=f"{new.metrics.generalization_error:.3g}", refresh=False)
        stops = [r for r in (h.on_eval(new) for h in hooks) if r is not None]
        if stops:
            end.reason, end.completed, end.resumable = stops[0].reason, False, stops[0].resumable
            return new
    return None


def _notify(hooks: Sequence[Hook], call) -> None:
    """``call(hook)`` for every hook; on any failure all hooks are closed, then it re-raises
    (the hooks after the failing one still flush and close)."""
    try:
        for h in hooks:
            call(h)
    except BaseException:
        _close(hooks)
        raise


def simulate(dynamics: Dynamics, state: State, info: RunInfo, hooks: Sequence[Hook], *,
             target_weights: torch.Tensor, eigenvalues: torch.Tensor, progress: bool = True,
             chunk: int | None = None, desc: str = "train", error_offset: float = 0.0,
             group_size: int = EVAL_GROUP, readout: torch.Tensor | None = None) -> Simulation:
    """Run ``dynamics`` from ``state`` through ``info.eval_steps[info.start_index:]``.

    At every evaluation all hooks get the same snapshot; the first stop request ends the run
    (its reason is recorded) and the returned state is the one at that evaluation. A
    non-finite evaluation ends it with ``summary.divergence`` set (see the module docstring).
    ``chunk`` bounds the steps between progress-bar updates for stepwise (Euler) dynamics and
    the span of an evaluation group; chunk boundaries are absolute step multiples, so a resumed
    run makes exactly the same calls. The dynamics gets ``plan(calls)`` for the whole run first
    (Euler strides its products where that pays; see rfscaling/dynamics/euler.py). ``group_size``:
    the most evaluations measured together (1: each on its own). ``readout`` (D, M, N): the
    random-projection student's map to the teacher modes, for the measurement (EnsembleData).
    """
    from tqdm.auto import tqdm

    steps = np.asarray(info.eval_steps, dtype=np.int64)
    total = int(steps[-1]) if steps.size else 0
    chunk = _default_chunk(total) if chunk is None else chunk
    # planned for the whole run (from step 0): a resumed run computes the same iterates
    dynamics.plan(advance_calls(steps, chunk if dynamics.stepwise else max(total, 1)))
    groups = eval_groups(steps, chunk, group_size)
    group_of = np.repeat(np.arange(len(groups)), [g.size for g in groups])  # evaluation -> its group
    target_weights, eigenvalues = target_weights.detach().clone(), eigenvalues.detach().clone()

    def measure(g: EvalGroup, taken: list) -> list[Snapshot]:
        return measure_group(g, taken, dynamics, target_weights, eigenvalues, info.theory, error_offset, readout)

    _notify(hooks, lambda h: h.on_start(info))  # e.g. a later hook cannot create its folder
    t0 = _time.perf_counter()
    end, pending = _Ending(), []  # pending: evaluations of the current group, not yet measured
    bar = tqdm(total=total, initial=int(state.step), disable=not progress, desc=desc, unit="step",
               dynamic_ncols=True, leave=False)
    try:
        for i in range(info.start_index, steps.size):
            state = _advance_to(dynamics, state, int(steps[i]), chunk, bar)
            pending.append(_take(i, state))
            g = groups[group_of[i]]
            if i < g.first + g.size - 1:
                continue  # train on to the group's last evaluation first
            snaps, pending = measure(g, pending), []
            ended = _hand_over(g, snaps, hooks, dynamics, end, bar, progress)
            if ended is not None:
                if ended is not snaps[-1]:  # trained past it within the group: go back
                    state = _restore(ended, state.generator)
                break
    except BaseException:
        _close(hooks)
        raise
    finally:
        bar.close()
    snap = end.snap
    if snap is None:  # nothing left to evaluate (resumed from a finished checkpoint)
        # the evaluation the run ended at (a halt may have ended it before the last), measured
        # in its own group and slot as when the run reached it
        at = np.flatnonzero(steps == state.step)
        last = int(at[-1]) if at.size else steps.size - 1
        snap = measure(groups[group_of[last]], [_take(last, state)])[0]
    summary = RunSummary(final=snap, stop_reason=end.reason, wall_time_s=_time.perf_counter() - t0,
                         compute_macs=int(dynamics.macs_per_step()) * int(snap.step), completed=end.completed,
                         resumable=end.resumable, divergence=end.divergence)
    _notify(hooks, lambda h: h.on_end(summary))
    return Simulation(state, summary, **_curves(end.seen))
