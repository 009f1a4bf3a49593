"""Periodic checkpoints from which a killed run resumes bit-identically (on CPU).

A checkpoint holds the snapshot's weights, step, time and noise-generator state, the states of
the stateful hooks it was given (``state_dict``/``load_state_dict``), and an ``identity``
(e.g. a hash of the resolved config) so that a checkpoint of a different run is never resumed.
Files are written to a temp file in the same folder and moved into place with ``os.replace``,
so a process killed at any moment leaves the previous checkpoint or the new one, never a torn
file. A run that diverged (non-finite weights) writes no final checkpoint: the last periodic
(finite) one is kept.

A checkpoint that cannot be read (truncated, say, by a full disk or a copy cut short) or that an
older version of rfscaling wrote (another ``format``) is not an error: it is moved aside to
``checkpoint.pt.unusable-<n>`` (never deleted), one warning names it and why, and the run starts
afresh. A readable checkpoint of a *different configuration* is still an error: that is a
mistaken run directory, not a damaged file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from rfscaling.files import atomic_write
from rfscaling.hooks.registry import HOOKS, HookContext
from rfscaling.run.hook import HookBase
from rfscaling.run.records import RunInfo, RunSummary, Snapshot, StopRequest

__all__ = ["CheckpointHook", "load_checkpoint", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
#: Version of the checkpoint's contents; a checkpoint of another format is set aside, not resumed.
#: 2: the run identity covers dynamics.max_stride; 3: the identity is derived from the config objects.
CHECKPOINT_FORMAT = 3

log = logging.getLogger(__name__)


def load_checkpoint(directory: str | os.PathLike, identity: Optional[str] = None) -> Optional[dict]:
    """The last checkpoint in ``directory``; None if there is none, or if it was unusable and has
    been moved aside (see the module docstring). ValueError if its identity differs from
    ``identity``."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... by damage
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return _set_aside(path, f"unreadable ({type(exc).__name__}: {reason[:200]})")
    found = ckpt.get("format") if isinstance(ckpt, dict) else None
    if found != CHECKPOINT_FORMAT:
        return _set_aside(path, f"written by another version of rfscaling (format {found}, this one reads "
                                f"{CHECKPOINT_FORMAT})")
    if identity is not None and ckpt.get("identity") != identity:
        raise ValueError(f"checkpoint {path}: written by a different configuration; "
                         "remove it or use another run directory")
    return ckpt


def _set_aside(path: Path, why: str) -> None:
    n = 1
    while (aside := path.with_name(f"{path.name}.unusable-{n}")).exists():
        n += 1
    os.replace(path, aside)
    log.warning("checkpoint %s is %s: moved to %s, starting the run afresh", path, why, aside.name)
    return None


class CheckpointHook(HookBase):
    """Save every ``every`` evaluations and at the end; see the module docstring."""

    def __init__(self, directory: str | os.PathLike, every: int, stateful: Mapping[str, Any] | None = None,
                 identity: str = "") -> None:
        if every < 1:
            raise ValueError(f"every={every}: must be a positive integer")
        self.directory = Path(directory)
        self.every = int(every)
        self.stateful = dict(stateful or {})
        self.identity = identity
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
            "format": CHECKPOINT_FORMAT,
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
        }
        atomic_write(self.directory / CHECKPOINT_NAME, lambda tmp: torch.save(ckpt, tmp))
        self.saved.append(snapshot.index)


@HOOKS.register("checkpoint")
def _factory(ctx: HookContext) -> Optional[CheckpointHook]:
    c = ctx.cfg.hooks.checkpoint
    if not c.enabled:
        return None
    return CheckpointHook(ctx.out_dir / "checkpoints", c.every, ctx.stateful, ctx.identity)
