"""The evaluation loop: advance a dynamics to log-spaced evaluation steps and notify hooks.

``simulate`` takes typed arguments only (a dynamics object with ``dt``/``step``/``advance``/
``train_errors``/``macs_per_step``, a state, the evaluation steps, hooks); it never hands
the dynamics to hooks, only immutable snapshots.
"""

from __future__ import annotations

import math
import time as _time
from typing import Optional, Sequence

import numpy as np
import torch

from rfscaling.dynamics.euler import EulerDynamics, State
from rfscaling.hooks.base import RunInfo, RunSummary, Snapshot, TheoryCurve

__all__ = ["simulate", "make_snapshot"]


def make_snapshot(index: int, state: State, dynamics, target_weights: torch.Tensor, eigenvalues: torch.Tensor,
                  theory: Optional[TheoryCurve], error_offset: float = 0.0) -> Snapshot:
    w = state.weights.detach().clone()
    return Snapshot(
        index=index,
        time=float(state.time),
        step=int(state.step),
        weights=w,
        target_weights=target_weights.detach().clone(),
        eigenvalues=eigenvalues.detach().clone(),
        train_error=dynamics.train_errors(w).detach().clone(),
        theory=theory.at(index) if theory is not None else None,
        rng_state=state.generator.get_state().clone(),
        error_offset=float(error_offset),
    )


def simulate(dynamics, state: State, info: RunInfo, hooks: Sequence, *, target_weights: torch.Tensor,
             eigenvalues: torch.Tensor, progress: bool = True, chunk: int | None = None,
             desc: str = "train", error_offset: float = 0.0) -> tuple[State, RunSummary]:
    """Run ``dynamics`` from ``state`` through ``info.eval_steps[info.start_index:]``.

    At every evaluation all hooks get the same snapshot; the first stop request ends the run
    (its reason is recorded). ``chunk`` bounds the steps between progress-bar updates for
    stepwise (Euler) dynamics; chunk boundaries are absolute step multiples, so a resumed run
    makes exactly the same calls.
    """
    from tqdm.auto import tqdm

    steps = np.asarray(info.eval_steps, dtype=np.int64)
    stepwise = isinstance(dynamics, EulerDynamics)
    total = int(steps[-1]) if steps.size else 0
    if chunk is None:
        chunk = max(1, total // 200)
    for h in hooks:
        h.on_start(info)
    t0 = _time.perf_counter()
    reason, completed, resumable = "completed", True, False
    snap = None
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
            snap = make_snapshot(i, state, dynamics, target_weights, eigenvalues, info.theory, error_offset)
            if progress and math.isfinite(snap.time):
                bar.set_postfix(t=f"{snap.time:.3g}", E_g=f"{snap.metrics.generalization_error:.3g}", refresh=False)
            stops = [r for r in (h.on_eval(snap) for h in hooks) if r is not None]
            if stops:
                reason, completed, resumable = stops[0].reason, False, stops[0].resumable
                break
    finally:
        bar.close()
    if snap is None:  # nothing left to evaluate (resumed after the last evaluation)
        snap = make_snapshot(steps.size - 1, state, dynamics, target_weights, eigenvalues, info.theory,
                             error_offset)
    wall = _time.perf_counter() - t0
    summary = RunSummary(final=snap, stop_reason=reason, wall_time_s=wall,
                         compute_macs=int(dynamics.macs_per_step()) * int(snap.step), completed=completed,
                         resumable=resumable)
    for h in hooks:
        h.on_end(summary)
    return state, summary
