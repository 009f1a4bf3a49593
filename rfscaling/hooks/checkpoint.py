"""Periodic checkpoints from which a killed run resumes bit-identically (on CPU).

A checkpoint holds the snapshot's weights, step, time and noise-generator state, the states of
the stateful hooks it was given (``state_dict``/``load_state_dict``), and an ``identity``
(e.g. a hash of the resolved config) so that a checkpoint of a different run is never resumed.
Files are written to a temp file in the same folder and moved into place with ``os.replace``,
so a process killed at any moment leaves the previous checkpoint or the new one, never a torn
file. A run that diverged (non-finite weights) writes no final checkpoint: the last periodic
(finite) one is kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from rfscaling.hooks.base import RunInfo, RunSummary, Snapshot, StopRequest, atomic_write

__all__ = ["CheckpointHook", "load_checkpoint", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"


def load_checkpoint(directory: str | os.PathLike, identity: Optional[str] = None) -> Optional[dict]:
    """The last checkpoint in ``directory`` (None if there is none); ValueError if its identity
    differs from ``identity``."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if identity is not None and ckpt.get("identity") != identity:
        raise ValueError(f"checkpoint {path}: written by a different configuration; "
                         "remove it or use another run directory")
    return ckpt


class CheckpointHook:
    """Save every ``every`` evaluations and at the end; see the module docstring."""

    def __init__(self, directory: str | os.PathLike, every: int, stateful: Mapping[str, Any] | None = None,
                 identity: str = "", extra: Mapping[str, Any] | None = None) -> None:
        if every < 1:
            raise ValueError(f"every={every}: must be a positive integer")
        self.directory = Path(directory)
        self.every = int(every)
        self.stateful = dict(stateful or {})
        self.identity = identity
        self.extra = dict(extra or {})
        self.saved: list[int] = []

    def on_start(self, info: RunInfo) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        if (snapshot.index + 1) % self.every == 0:
            self.save(snapshot)
        return None

    def on_end(self, summary: RunSummary) -> None:
        if summary.divergence is not None:  # keep the last finite checkpoint
            return
        self.save(summary.final, completed=summary.completed, finished=not summary.resumable,
                  stop_reason=summary.stop_reason)

    def save(self, snapshot: Snapshot, completed: bool = False, finished: bool = False,
             stop_reason: Optional[str] = None) -> None:
        """``finished``: the run ended here (completed, or stopped by a hook's request); a
        resumed run with a finished checkpoint only rewrites its outputs."""
        ckpt = {
            "identity": self.identity,
            "index": snapshot.index,
            "step": snapshot.step,
            "time": snapshot.time,
            "weights": snapshot.weights.cpu(),
            "rng_state": snapshot.rng_state,
            "hooks": {name: h.state_dict() for name, h in self.stateful.items()},
            "completed": completed,
            "finished": finished,
            "stop_reason": stop_reason,
            **self.extra,
        }
        atomic_write(self.directory / CHECKPOINT_NAME, lambda tmp: torch.save(ckpt, tmp))
        self.saved.append(snapshot.index)
