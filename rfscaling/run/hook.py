"""The observer contract of a run: start, evaluation snapshots, end.

Every evaluation hands all hooks the same immutable :class:`~rfscaling.run.records.Snapshot`
(frozen dataclass, tensors cloned); hooks never see the trainer or the dynamics.

Evaluations close together in steps are measured as a group (``EvalGroup``): the loop trains
through the group first, then measures all its snapshots with one product per matrix instead
of one per evaluation. ``prepare(group, snapshots)`` is called once per group before the
snapshots' ``on_eval`` calls, for a hook with its own per-evaluation products to compute them
the same way; a stop request earlier in the group means some prepared snapshots never reach
``on_eval`` (so ``prepare`` must not change the hook's recorded state). ``on_eval`` sees the
snapshots one by one, in order; a hook that acts on wall time reads ``snapshot.wall_clock``
(when the run reached the evaluation), not the clock at ``on_eval``. ``close()`` is called
when the run is left by an exception (a signal, a failing hook), to flush what was accepted.

A hook that keeps state across a resume also implements ``state_dict()`` /
``load_state_dict(d)`` (see :class:`Stateful`). :class:`HookBase` gives every method a no-op
default, so a hook defines only what it needs.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

from rfscaling.run.records import EvalGroup, RunInfo, RunSummary, Snapshot, StopRequest

__all__ = ["Hook", "HookBase", "Stateful"]


@runtime_checkable
class Hook(Protocol):
    def on_start(self, info: RunInfo) -> None: ...

    def prepare(self, group: EvalGroup, snapshots: Sequence[Snapshot]) -> None: ...

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]: ...

    def on_end(self, summary: RunSummary) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class HookBase:
    """No-op defaults of :class:`Hook`."""

    def on_start(self, info: RunInfo) -> None:
        pass

    def prepare(self, group: EvalGroup, snapshots: Sequence[Snapshot]) -> None:
        pass

    def on_eval(self, snapshot: Snapshot) -> Optional[StopRequest]:
        return None

    def on_end(self, summary: RunSummary) -> None:
        pass

    def close(self) -> None:
        pass
