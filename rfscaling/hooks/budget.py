"""Budget hook: end a run after a number of evaluations or seconds of wall time, resumably.

The stop request is marked ``resumable``: with checkpoints enabled, the final checkpoint is not
marked finished, and re-running the same command continues the run from there.
"""

from __future__ import annotations

import time
from typing import Optional

from rfscaling.hooks.registry import HOOKS, HookContext
from rfscaling.run.hook import HookBase
from rfscaling.run.records import RunInfo, Snapshot, StopRequest

__all__ = ["BudgetHook"]


class BudgetHook(HookBase):
    def __init__(self, max_evals: Optional[int] = None, max_wall_s: Optional[float] = None) -> None:
        self.max_evals = max_evals
        self.max_wall_s = max_wall_s
        self._count = 0
        self._t0 = 0.0

    def on_start(self, info: RunInfo) -> None:
        self._count = 0
        self._t0 = time.perf_counter()

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        self._count += 1
        if self.max_evals is not None and self._count >= self.max_evals:
            return StopRequest(f"budget: {self._count} evaluations in this process", resumable=True)
        # the clock when the run reached this evaluation: it is handed over after the rest of
        # its evaluation group was trained, and the run goes back to it on a stop
        now = snapshot.wall_clock if snapshot.wall_clock is not None else time.perf_counter()
        if self.max_wall_s is not None and now - self._t0 >= self.max_wall_s:
            return StopRequest(f"budget: {self.max_wall_s:g} s of wall time", resumable=True)
        return None


@HOOKS.register("budget")
def _factory(ctx: HookContext) -> Optional[BudgetHook]:
    b = ctx.cfg.hooks.budget
    if b.max_evals is None and b.max_wall_s is None:
        return None
    return BudgetHook(b.max_evals, b.max_wall_s)
