"""Observers of a training run (the :class:`~rfscaling.run.hook.Hook` contract): the eigenmode
record, TensorBoard, early stopping, checkpoints, budgets."""

from rfscaling.hooks.budget import BudgetHook
from rfscaling.hooks.checkpoint import CHECKPOINT_NAME, CheckpointHook, load_checkpoint
from rfscaling.hooks.early_stopping import EarlyStoppingHook
from rfscaling.hooks.eigenmode import METRICS_COLUMNS, EigenmodeHook
from rfscaling.hooks.tensorboard import TensorBoardHook

__all__ = [
    "BudgetHook",
    "CHECKPOINT_NAME",
    "METRICS_COLUMNS",
    "CheckpointHook",
    "EarlyStoppingHook",
    "EigenmodeHook",
    "TensorBoardHook",
    "load_checkpoint",
]
