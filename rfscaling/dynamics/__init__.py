"""Dynamics of the linear models: Euler(-Maruyama) stepping, the exact OU integrator, the
closed-form GP posterior, and the evaluation loop that feeds hooks."""

from rfscaling.dynamics.euler import (
    DynamicsParams,
    FORMS,
    MAX_STRIDE,
    EulerDynamics,
    State,
    choose_form,
    choose_stride,
    design_gram,
    hessian_top_eigenvalue,
    stable_step_size,
)
from rfscaling.dynamics.exact import (
    ExactDynamics,
    ExactMoments,
    HessianEigen,
    PosteriorDynamics,
    exact_moments,
    flow_factor,
    posterior_sample,
)
from rfscaling.dynamics.loop import EVAL_GROUP, advance_calls, eval_groups, make_snapshot, simulate

__all__ = [
    "EVAL_GROUP",
    "FORMS",
    "MAX_STRIDE",
    "advance_calls",
    "choose_stride",
    "DynamicsParams",
    "EulerDynamics",
    "ExactDynamics",
    "ExactMoments",
    "HessianEigen",
    "PosteriorDynamics",
    "State",
    "choose_form",
    "design_gram",
    "eval_groups",
    "exact_moments",
    "flow_factor",
    "hessian_top_eigenvalue",
    "make_snapshot",
    "posterior_sample",
    "simulate",
    "stable_step_size",
]
