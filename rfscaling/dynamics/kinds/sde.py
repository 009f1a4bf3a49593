"""Gradient flow, weight decay and Langevin: one SDE, three registered names with their checks,
integrated by Euler(-Maruyama) or the exact OU integrator (``dynamics.integrator``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rfscaling.config import DynamicsConfig
from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.errors import ConfigError

if TYPE_CHECKING:
    from rfscaling.data.ensemble import EnsembleData
    from rfscaling.dynamics.base import Dynamics

__all__ = ["AUTO_MAX_EULER_MACS", "build_sde"]

log = logging.getLogger(__name__)

#: integrator=auto uses Euler when the run costs at most this many multiply-adds
#: (t_max * lambda_max steps x 2 P N D R; ~20 s on one core), else the exact integrator.
AUTO_MAX_EULER_MACS = 5e10


def build_sde(data: "EnsembleData", cfg: DynamicsConfig) -> "Dynamics":
    """The integrator of ``cfg``. An explicit ``dt`` at or above the Euler stability bound
    2/lambda_max(H) is a ConfigError on ``dynamics.dt`` (the exact integrator has no bound).

    At most one eigendecomposition per dataset: lambda_max (hence the default dt, the same for
    every integrator) comes from Lanczos on the design-dtype Gram matrix, which Euler then steps
    with; the exact integrator adds its one ``eigh``."""
    from rfscaling.dynamics.euler import (
        MAX_STRIDE,
        EulerDynamics,
        design_gram,
        hessian_top_eigenvalue,
    )
    from rfscaling.dynamics.exact import ExactDynamics, HessianEigen
    from rfscaling.models.network import is_network

    if is_network(data):  # model=mlp: the network itself, full batch (GD, weight decay, SGLD)
        from rfscaling.dynamics.network import build_network

        return build_network(data, cfg)
    wd = cfg.weight_decay
    if cfg.integrator == "exact":  # the same dt (time grid) as Euler and auto would take
        dt = cfg.step if cfg.step is not None else 1.0 / float(hessian_top_eigenvalue(data.features, wd).max())
        return ExactDynamics(data, cfg, dt=dt, eig=HessianEigen.of(data.features))
    gram = design_gram(data.features)
    lam_max = float(hessian_top_eigenvalue(data.features, wd, gram=gram).max())
    dt = cfg.step if cfg.step is not None else 1.0 / lam_max
    if cfg.integrator == "auto":
        steps = cfg.t_max / dt
        macs = steps * 2 * data.n_samples * data.n_modes * data.n_datasets * data.n_replicas
        if macs > AUTO_MAX_EULER_MACS:
            log.info("integrator=auto: %.3g Euler steps (%.2g multiply-adds) for t_max=%g; using the exact "
                     "integrator (dynamics.integrator=euler forces stepping)", steps, macs, cfg.t_max)
            return ExactDynamics(data, cfg, dt=dt)
    if dt * lam_max >= 2.0:
        raise ConfigError("dynamics.dt" if cfg.dt is not None else "dynamics.learning_rate", cfg.step,
                          f"unstable Euler step: must be < {2.0 / lam_max:.6g} = 2/lambda_max(H) of the drawn "
                          f"data (null picks 1/lambda_max = {1.0 / lam_max:.6g}; dynamics.integrator=exact has "
                          "no bound)")
    return EulerDynamics(data, cfg, dt=dt, lambda_max=lam_max, gram=gram,
                         max_stride=cfg.max_stride if cfg.max_stride is not None else MAX_STRIDE)


class _SDE:
    """gradient_flow / weight_decay / langevin: the same process, named by which terms are on."""

    def __init__(self, name: str, weight_decay: str, temperature: str) -> None:
        self.name = name
        self.rules = {"weight_decay": weight_decay, "temperature": temperature}  # "zero" | "positive" | "any"

    def check(self, cfg: DynamicsConfig) -> None:
        hint = {"weight_decay": "use dynamics=weight_decay", "temperature": "use dynamics=langevin"}
        if self.name == "weight_decay":
            hint["temperature"] = "use dynamics=langevin or bayes"
        if cfg.momentum != 0.0 or cfg.batch_size is not None:
            key = "dynamics.momentum" if cfg.momentum != 0.0 else "dynamics.batch_size"
            raise ConfigError(key, cfg.momentum if cfg.momentum != 0.0 else cfg.batch_size,
                              f"must be {'0' if cfg.momentum != 0.0 else 'null'} for dynamics={self.name} "
                              "(minibatches and momentum: dynamics=sgd)")
        for key, rule in self.rules.items():
            v = getattr(cfg, key)
            if rule == "zero" and v != 0.0:
                raise ConfigError(f"dynamics.{key}", v, f"must be 0 for dynamics={self.name} ({hint[key]})")
            if rule == "positive" and v <= 0.0:
                raise ConfigError(f"dynamics.{key}", v, f"must be > 0 for dynamics={self.name}")

    def build(self, data: "EnsembleData", cfg: DynamicsConfig) -> "Dynamics":
        return build_sde(data, cfg)

    def draws(self, cfg: DynamicsConfig) -> list[str]:
        return [q for q, on in (("init", cfg.init_variance > 0), ("langevin_noise", cfg.temperature > 0)) if on]


DYNAMICS.register("gradient_flow")(_SDE("gradient_flow", weight_decay="zero", temperature="zero"))
DYNAMICS.register("weight_decay")(_SDE("weight_decay", weight_decay="positive", temperature="zero"))
DYNAMICS.register("langevin")(_SDE("langevin", weight_decay="any", temperature="positive"))
