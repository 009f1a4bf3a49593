"""Early stopping on a held-out validation set with a patience policy.

At every evaluation the ensemble-mean validation error (noisy labels, fresh samples) is
compared with the best so far; after ``patience`` evaluations without an improvement by more
than ``min_delta`` the hook records that it would stop, and requests a stop only when
``halt=True``. It always records the validation-optimal time and the E_g there, next to the
optimum of the empirical and theoretical E_g curves.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from rfscaling.data.ensemble import ValidationData
from rfscaling.hooks.registry import HOOKS, HookContext
from rfscaling.run.hook import HookBase
from rfscaling.run.records import EvalGroup, RunInfo, Snapshot, StopRequest

__all__ = ["EarlyStoppingHook"]


class EarlyStoppingHook(HookBase):
    def __init__(self, validation: ValidationData, patience: int = 5, halt: bool = False,
                 min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"patience={patience}: must be a positive integer")
        self.validation = validation
        self.patience = int(patience)
        self.halt = bool(halt)
        self.min_delta = float(min_delta)
        self.theory_times: Optional[np.ndarray] = None
        self.theory_eg: Optional[np.ndarray] = None
        self._prepared: dict[int, np.ndarray] = {}  # evaluation index -> per-member errors (D, R)
        self._reset()

    def _reset(self) -> None:
        self.history: list[dict] = []
        self.best: Optional[dict] = None
        self.since_best = 0
        self.triggered: Optional[dict] = None

    def on_start(self, info: RunInfo) -> None:
        self._prepared = {}
        if info.theory is not None:
            self.theory_times = np.asarray(info.theory.times)
            self.theory_eg = np.asarray(info.theory.generalization_error)

    def prepare(self, group: EvalGroup, snapshots: list[Snapshot]) -> None:
        """The validation errors of a group's snapshots, one product for all (in their slots)."""
        W = group.stack([s.index for s in snapshots], [s.weights for s in snapshots])
        errs = group.unstack(self.validation.errors(W)).cpu().numpy()  # (size, D, R)
        self._prepared = {s.index: errs[group.slot(s.index)] for s in snapshots}

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        errs = self._prepared.pop(snapshot.index, None)
        if errs is None:  # not prepared (a caller outside the loop): this snapshot alone
            errs = self.validation.errors(snapshot.weights).cpu().numpy()
        per_d = errs.astype(np.float64).mean(1)  # (D,)
        val = float(per_d.mean())
        se = float(per_d.std(ddof=1) / math.sqrt(per_d.size)) if per_d.size > 1 else float("nan")
        m = snapshot.metrics
        rec = {
            "index": snapshot.index, "time": snapshot.time, "step": snapshot.step,
            "validation_error": val, "validation_error_se": se, "E_g": m.generalization_error,
            "E_g_se": m.generalization_error_se,
            "E_g_theory": snapshot.theory.generalization_error if snapshot.theory else float("nan"),
        }
        self.history.append(rec)
        if self.best is None or val < self.best["validation_error"] - self.min_delta:
            self.best, self.since_best = rec, 0
        else:
            self.since_best += 1
        if self.triggered is None and self.since_best >= self.patience:
            self.triggered = rec
            if self.halt:
                return StopRequest(f"early stopping: validation error did not improve for {self.patience} "
                                   f"evaluations (best at t={self.best['time']:.4g})")
        return None

    def state_dict(self) -> dict:
        return {"history": list(self.history), "best": self.best, "since_best": self.since_best,
                "triggered": self.triggered}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self.best, self.since_best, self.triggered = state["best"], state["since_best"], state["triggered"]

    def result(self) -> dict:
        """Summary: validation-optimal time/errors, when patience ran out, and the E_g optima."""
        out: dict = {"patience": self.patience, "halt": self.halt}
        if self.best is not None:
            b = self.best
            out.update({
                "stopping_time": b["time"], "stopping_step": b["step"],
                "validation_error": b["validation_error"], "E_g": b["E_g"], "E_g_se": b["E_g_se"],
                "E_g_theory": b["E_g_theory"],
            })
        out["patience_exhausted_at_time"] = self.triggered["time"] if self.triggered else None
        if self.history:
            eg = np.array([h["E_g"] for h in self.history])
            i = int(np.nanargmin(eg)) if np.isfinite(eg).any() else 0
            out["empirical_optimum_time"] = self.history[i]["time"]
            out["empirical_optimum_E_g"] = float(eg[i])
        if self.theory_eg is not None and np.isfinite(self.theory_eg).any():
            j = int(np.nanargmin(self.theory_eg))
            out["theory_optimum_time"] = float(self.theory_times[j])
            out["theory_optimum_E_g"] = float(self.theory_eg[j])
        return out


@HOOKS.register("early_stopping")
def _factory(ctx: HookContext) -> Optional[EarlyStoppingHook]:
    es = ctx.cfg.hooks.early_stopping
    if not es.enabled or ctx.problem.validation is None:
        return None
    return EarlyStoppingHook(ctx.problem.validation, es.patience, es.halt)
