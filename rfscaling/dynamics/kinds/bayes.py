"""The Bayesian GP posterior (``dynamics=bayes``): one closed-form draw per replica, at t = inf."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rfscaling.config import DynamicsConfig
from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.errors import ConfigError

if TYPE_CHECKING:
    from rfscaling.data.ensemble import EnsembleData
    from rfscaling.dynamics.base import Dynamics


@DYNAMICS.register("bayes")
class Bayes:
    @staticmethod
    def check(cfg: DynamicsConfig) -> None:
        if cfg.weight_decay <= 0.0:
            raise ConfigError("dynamics.weight_decay", cfg.weight_decay,
                              "must be > 0 for dynamics=bayes (prior variance = temperature/weight_decay)")
        if cfg.temperature <= 0.0:
            raise ConfigError("dynamics.temperature", cfg.temperature,
                              "must be > 0 for dynamics=bayes (the posterior noise variance)")

    @staticmethod
    def build(data: "EnsembleData", cfg: DynamicsConfig) -> "Dynamics":
        from rfscaling.dynamics.exact import PosteriorDynamics
        from rfscaling.models.network import is_network

        if is_network(data):
            raise ConfigError("dynamics.name", "bayes", "has no network form: use dynamics=langevin with model=mlp")
        return PosteriorDynamics(data, cfg)

    @staticmethod
    def draws(cfg: DynamicsConfig) -> list[str]:
        return ["posterior_sample"]
