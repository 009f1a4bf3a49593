"""Dynamics of the linear models: Euler(-Maruyama) stepping, the exact OU integrator and the
closed-form GP posterior, each keeping the :class:`~rfscaling.dynamics.base.Dynamics` contract."""

from rfscaling.dynamics.base import Dynamics, State

from rfscaling.dynamics.euler import (
    DynamicsParams,
    FORMS,
    MAX_STRIDE,
    EulerDynamics,
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

__all__ = [
    "FORMS",
    "MAX_STRIDE",
    "choose_stride",
    "Dynamics",
    "DynamicsParams",
    "EulerDynamics",
    "ExactDynamics",
    "ExactMoments",
    "HessianEigen",
    "PosteriorDynamics",
    "State",
    "choose_form",
    "design_gram",
    "exact_moments",
    "flow_factor",
    "hessian_top_eigenvalue",
    "posterior_sample",
    "stable_step_size",
]
