"""Pause hook (for tests): the process stops itself with SIGSTOP after an evaluation's hooks ran.

A test that kills or signals a run "in the middle" must not guess the middle with a sleep: on a
loaded machine the run may already be over. With ``RFSCALING_PAUSE_AT_EVAL=k`` in its
environment the run freezes itself right after evaluation ``k`` (checkpoint and metrics of ``k``
written); the test waits for the stopped state, then kills it, or signals it and sends SIGCONT.
"""

from __future__ import annotations

import os
import signal
from typing import Optional

from rfscaling.hooks.registry import HOOKS, HookContext
from rfscaling.run.hook import HookBase
from rfscaling.run.records import Snapshot, StopRequest

__all__ = ["PauseHook", "PAUSE_ENV", "pause_hook_from_env"]

PAUSE_ENV = "RFSCALING_PAUSE_AT_EVAL"


class PauseHook(HookBase):
    def __init__(self, index: int) -> None:
        self.index = int(index)

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        if snapshot.index == self.index:
            os.kill(os.getpid(), signal.SIGSTOP)
        return None



def pause_hook_from_env() -> Optional[PauseHook]:
    value = os.environ.get(PAUSE_ENV)
    return PauseHook(int(value)) if value else None


@HOOKS.register("pause")
def _factory(ctx: HookContext) -> Optional[PauseHook]:
    return pause_hook_from_env()
