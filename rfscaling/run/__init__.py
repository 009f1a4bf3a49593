"""Running a dynamics: the records a run hands its observers, the eigenmode measurement, the
observer contract and the evaluation loop :func:`simulate`. Above dynamics and data, below the
hooks (which observe runs) and the apps."""

from rfscaling.run.hook import Hook, HookBase, Stateful
from rfscaling.run.loop import EVAL_GROUP, Simulation, advance_calls, check_finite, eval_groups, measure_group, simulate
from rfscaling.run.measure import EnsembleMetrics, measure, measure_many
from rfscaling.run.records import (
    Divergence,
    EvalGroup,
    RunInfo,
    RunSummary,
    Snapshot,
    StopRequest,
    TheoryCurve,
    TheoryPoint,
    log_spaced_steps,
)

__all__ = [
    "EVAL_GROUP", "Divergence", "EnsembleMetrics", "EvalGroup", "Hook", "HookBase", "RunInfo", "RunSummary",
    "Simulation", "Snapshot", "Stateful", "StopRequest", "TheoryCurve", "TheoryPoint", "advance_calls",
    "check_finite", "eval_groups", "log_spaced_steps", "measure", "measure_group", "measure_many", "simulate",
]
