"""Observers of a training run (the :class:`~rfscaling.run.hook.Hook` contract): the eigenmode
record, TensorBoard, early stopping, checkpoints, budgets; and :class:`EigenmodeMonitor`, the
eigenmodes of a user's own torch model in their own training loop."""

from rfscaling.hooks.budget import BudgetHook
from rfscaling.hooks.checkpoint import CHECKPOINT_NAME, CheckpointHook, load_checkpoint
from rfscaling.hooks.early_stopping import EarlyStoppingHook
from rfscaling.hooks.eigenmode import METRICS_COLUMNS, EigenmodeHook
from rfscaling.hooks.monitor import EigenmodeMonitor
from rfscaling.hooks.tensorboard import TensorBoardHook

__all__ = [
    "BudgetHook",
    "CHECKPOINT_NAME",
    "METRICS_COLUMNS",
    "CheckpointHook",
    "EarlyStoppingHook",
    "EigenmodeHook",
    "EigenmodeMonitor",
    "TensorBoardHook",
    "load_checkpoint",
]
