"""The evaluation loop: advance a dynamics to log-spaced evaluation steps and notify hooks.

``simulate`` takes typed arguments only (a dynamics object with ``dt``/``step``/``advance``/
``train_errors``/``macs_per_step``, a state, the evaluation steps, hooks); it never hands
the dynamics to hooks, only immutable snapshots.

Divergence guard: every evaluation first checks that the weights and training errors are
finite (one pass over the weights, cheap next to the measurement). A non-finite evaluation is
not handed to the hooks; the run ends there with ``RunSummary.divergence`` set and ``final``
the last finite snapshot, so hooks keep only finite rows and the checkpoint hook keeps its last
(finite) checkpoint. Hooks with a ``close()`` method are closed when the loop is left by an
exception (including KeyboardInterrupt and the app's signal handlers), so e.g. TensorBoard
events written so far are flushed.
"""

from __future__ import annotations

import math
import time as _time
from typing import Optional, Sequence

import numpy as np
import torch

from rfscaling.dynamics.euler import EulerDynamics, State
from rfscaling.hooks.base import Divergence, RunInfo, RunSummary, Snapshot, TheoryCurve

__all__ = ["simulate", "make_snapshot", "check_finite", "advance_calls"]


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


def make_snapshot(index: int, state: State, dynamics, target_weights: torch.Tensor, eigenvalues: torch.Tensor,
                  theory: Optional[TheoryCurve], error_offset: float = 0.0, *, constants_owned: bool = False) -> Snapshot:
    """``constants_owned``: ``target_weights`` and ``eigenvalues`` are private copies that nobody
    modifies (``simulate`` copies them once per run instead of once per evaluation)."""
    w = state.weights.detach().clone()
    if not constants_owned:
        target_weights, eigenvalues = target_weights.detach().clone(), eigenvalues.detach().clone()
    return Snapshot(
        index=index,
        time=float(state.time),
        step=int(state.step),
        weights=w,
        target_weights=target_weights,
        eigenvalues=eigenvalues,
        train_error=dynamics.train_errors(w).detach(),
        theory=theory.at(index) if theory is not None else None,
        rng_state=state.generator.get_state(),  # already a copy
        error_offset=float(error_offset),
    )


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


def _likely_cause(dynamics) -> str:
    dt, lam = float(getattr(dynamics, "dt", math.nan)), getattr(dynamics, "lambda_max", None)
    if isinstance(dynamics, EulerDynamics) and lam is not None and dt * lam > 1.0:
        return (f"the Euler step dt={dt:.4g} is close to the stability bound 2/lambda_max(H)={2.0 / lam:.4g} "
                "(rounding makes the stiffest mode grow); use a smaller dynamics.dt (null picks 1/lambda_max) "
                "or dynamics.integrator=exact")
    return ("floating-point overflow or non-finite data/labels (large temperature, init_variance or "
            "targets); check the data, or use dtype=float64")


def _close(hooks: Sequence) -> None:
    for h in hooks:
        close = getattr(h, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # best effort on the way out; the original error matters
                pass


def simulate(dynamics, state: State, info: RunInfo, hooks: Sequence, *, target_weights: torch.Tensor,
             eigenvalues: torch.Tensor, progress: bool = True, chunk: int | None = None,
             desc: str = "train", error_offset: float = 0.0) -> tuple[State, RunSummary]:
    """Run ``dynamics`` from ``state`` through ``info.eval_steps[info.start_index:]``.

    At every evaluation all hooks get the same snapshot; the first stop request ends the run
    (its reason is recorded). A non-finite evaluation ends it with ``summary.divergence`` set
    (see the module docstring). ``chunk`` bounds the steps between progress-bar updates for
    stepwise (Euler) dynamics; chunk boundaries are absolute step multiples, so a resumed run
    makes exactly the same calls. Euler dynamics get ``plan(calls)`` for the whole run first
    (strided stepping where it pays; see rfscaling/dynamics/euler.py).
    """
    from tqdm.auto import tqdm

    steps = np.asarray(info.eval_steps, dtype=np.int64)
    stepwise = isinstance(dynamics, EulerDynamics)
    total = int(steps[-1]) if steps.size else 0
    if chunk is None:
        chunk = _default_chunk(total)
    if stepwise:  # the stride for the whole run (from step 0): a resumed run computes the same iterates
        dynamics.plan(advance_calls(steps, chunk))
    target_weights, eigenvalues = target_weights.detach().clone(), eigenvalues.detach().clone()
    try:
        for h in hooks:
            h.on_start(info)
    except BaseException:  # e.g. a later hook cannot create its folder: stop the ones started
        _close(hooks)
        raise
    t0 = _time.perf_counter()
    reason, completed, resumable = "completed", True, False
    snap = None
    divergence = None
    bar = tqdm(total=total, initial=int(state.step), disable=not progress, desc=desc, unit="step",
               dynamic_ncols=True, leave=False)
    try:
        for i in range(info.start_index, steps.size):
            target = int(steps[i])
            if target < state.step:
                raise ValueError(f"eval step {target} lies before the state's step {state.step}")
            while state.step < target:
                n = target - state.step
                if stepwise:
                    n = min(n, chunk - state.step % chunk)
                state = dynamics.advance(state, n)
                bar.update(n)
            new = make_snapshot(i, state, dynamics, target_weights, eigenvalues, info.theory, error_offset,
                                constants_owned=True)
            bad = check_finite(new)
            if bad is not None:
                divergence = Divergence(
                    index=i, step=new.step, time=new.time, what=bad, cause=_likely_cause(dynamics),
                    last_good_step=None if snap is None else snap.step,
                    last_good_time=None if snap is None else snap.time)
                reason, completed, resumable = divergence.message(), False, False
                snap = snap if snap is not None else new
                break
            snap = new
            if progress and math.isfinite(snap.time):
                bar.set_postfix(t=f"{snap.time:.3g}", E_g=f"{snap.metrics.generalization_error:.3g}", refresh=False)
            stops = [r for r in (h.on_eval(snap) for h in hooks) if r is not None]
            if stops:
                reason, completed, resumable = stops[0].reason, False, stops[0].resumable
                break
    except BaseException:
        _close(hooks)
        raise
    finally:
        bar.close()
    if snap is None:  # nothing left to evaluate (resumed after the last evaluation)
        snap = make_snapshot(steps.size - 1, state, dynamics, target_weights, eigenvalues, info.theory,
                             error_offset)
    wall = _time.perf_counter() - t0
    summary = RunSummary(final=snap, stop_reason=reason, wall_time_s=wall,
                         compute_macs=int(dynamics.macs_per_step()) * int(snap.step), completed=completed,
                         resumable=resumable, divergence=divergence)
    try:
        for h in hooks:
            h.on_end(summary)
    except BaseException:  # the hooks after the failing one still flush and close
        _close(hooks)
        raise
    return state, summary
