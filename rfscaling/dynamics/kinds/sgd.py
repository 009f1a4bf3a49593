"""Minibatch SGD (with momentum, optionally Langevin noise) for a network model (model=mlp):
``dynamics.batch_size`` samples per step, drawn with or without replacement
(rfscaling/dynamics/network.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rfscaling.config import DynamicsConfig
from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.errors import ConfigError

if TYPE_CHECKING:
    from rfscaling.data.ensemble import EnsembleData
    from rfscaling.dynamics.base import Dynamics


@DYNAMICS.register("sgd")
class SGD:
    @staticmethod
    def check(cfg: DynamicsConfig) -> None:
        if cfg.batch_size is None:
            raise ConfigError("dynamics.batch_size", None, "must be a positive integer for dynamics=sgd")
        if cfg.integrator != "euler":
            raise ConfigError("dynamics.integrator", cfg.integrator, "must be euler for dynamics=sgd (it steps)")

    @staticmethod
    def build(data: "EnsembleData", cfg: DynamicsConfig) -> "Dynamics":
        from rfscaling.models.network import is_network

        if not is_network(data):
            raise ConfigError("dynamics.name", "sgd", "trains a network: needs model=mlp")
        from rfscaling.dynamics.network import build_network

        return build_network(data, cfg, cfg.batch_size)

    @staticmethod
    def draws(cfg: DynamicsConfig) -> list[str]:
        return ["minibatches"] + (["langevin_noise"] if cfg.temperature > 0 else [])
