"""Observers of a training run: the protocol (start / evaluation snapshots / end), the
eigenmode measurement, TensorBoard, early stopping and checkpoints."""

from rfscaling.hooks.base import (
    Divergence,
    EvalGroup,
    Hook,
    RunInfo,
    RunSummary,
    Snapshot,
    StopRequest,
    TheoryCurve,
    TheoryPoint,
    atomic_write,
    remove_stale_temp_files,
    log_spaced_steps,
)
from rfscaling.hooks.budget import BudgetHook
from rfscaling.hooks.checkpoint import CHECKPOINT_NAME, CheckpointHook, load_checkpoint
from rfscaling.hooks.early_stopping import EarlyStoppingHook
from rfscaling.hooks.eigenmode import METRICS_COLUMNS, EigenmodeHook, EnsembleMetrics, measure, measure_many
from rfscaling.hooks.tensorboard import TensorBoardHook

__all__ = [
    "BudgetHook",
    "CHECKPOINT_NAME",
    "METRICS_COLUMNS",
    "CheckpointHook",
    "Divergence",
    "EarlyStoppingHook",
    "EigenmodeHook",
    "EvalGroup",
    "EnsembleMetrics",
    "Hook",
    "RunInfo",
    "RunSummary",
    "Snapshot",
    "StopRequest",
    "TensorBoardHook",
    "TheoryCurve",
    "TheoryPoint",
    "atomic_write",
    "remove_stale_temp_files",
    "load_checkpoint",
    "log_spaced_steps",
    "measure",
    "measure_many",
]
