"""Dynamics by name (``dynamics.name``): each module here registers a :class:`DynamicsKind` in
:data:`DYNAMICS`, which checks the config it needs and builds the dynamics for the drawn data.
A new kind is one module here plus one preset in ``conf/dynamics/``.

This package imports no torch (the theory app checks ``dynamics.*`` with it): a kind imports
its integrator inside ``build``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from rfscaling.config import DynamicsConfig
from rfscaling.registry import Registry

if TYPE_CHECKING:
    from rfscaling.data.ensemble import EnsembleData
    from rfscaling.dynamics.base import Dynamics

__all__ = ["DynamicsKind", "DYNAMICS"]


class DynamicsKind(Protocol):
    """A registered dynamics: its config checks, the dynamics it builds for the drawn data, and
    the random quantities it draws from the run's dynamics stream (for summary.json)."""

    def check(self, cfg: DynamicsConfig) -> None: ...

    def build(self, data: "EnsembleData", cfg: DynamicsConfig) -> "Dynamics": ...

    def draws(self, cfg: DynamicsConfig) -> list[str]: ...


DYNAMICS: "Registry[DynamicsKind]" = Registry("dynamics", "dynamics.name", __name__)
