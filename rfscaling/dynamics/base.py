"""The contract every dynamics keeps, so that :func:`rfscaling.run.simulate` can drive it.

A dynamics is a small init/step object over an ensemble of linear models in kernel
eigen-coordinates (weights (D, R, N): data sets x replicas x modes):

* ``init(generator) -> State``: the state at step 0 (or, for the posterior, its one sample);
* ``advance(state, n) -> State``: ``n`` steps on (time = ``dt`` x step);
* ``plan(call_lengths) -> int``: told once the lengths of every ``advance`` call of the whole
  run, it may choose how to make them (Euler strides products); returns its stride (1: none);
* ``train_errors(weights) -> (D, R)`` and ``macs_per_step()`` for the measurement and the
  compute count; ``stepwise``: whether ``advance`` costs in proportion to ``n`` (then the loop
  splits long advances into progress chunks), ``lambda_max``: the stiffest Hessian eigenvalue
  of the drawn data (or None), named in the message of a diverged run; ``describe()``: how it
  steps, for summary.json (``integrator``, ``euler_form``, ``euler_stride``).

Dynamics are chosen by name (``dynamics.name``): see :mod:`rfscaling.dynamics.kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # torch only for the annotations: the registry of kinds imports this without it
    import torch

__all__ = ["State", "Dynamics"]


@dataclass(frozen=True)
class State:
    """Ensemble state: weights (D, R, N) in eigen-coordinates, step count, time = dt * step.

    ``generator`` is the torch Generator that drives the noise (advanced in place by steps).
    """

    weights: torch.Tensor
    step: int
    time: float
    generator: torch.Generator


@runtime_checkable
class Dynamics(Protocol):
    dt: float
    stepwise: bool
    lambda_max: Optional[float]

    def init(self, generator: torch.Generator) -> State: ...

    def advance(self, state: State, n_steps: int) -> State: ...

    def plan(self, call_lengths: Sequence[int]) -> int: ...

    def train_errors(self, weights: torch.Tensor) -> torch.Tensor: ...

    def macs_per_step(self) -> int: ...

    def describe(self) -> dict: ...
