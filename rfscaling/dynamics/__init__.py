"""Dynamics of the linear models: Euler(-Maruyama) stepping, the exact OU integrator and the
closed-form GP posterior, each keeping the :class:`~rfscaling.dynamics.base.Dynamics` contract;
chosen by name from :data:`~rfscaling.dynamics.kinds.DYNAMICS`.

The names below are imported on first use (PEP 562), so that ``rfscaling.dynamics.kinds``
(config checks, used by the theory app) comes without torch.
"""

from importlib import import_module

_WHERE = {
    "DYNAMICS": "kinds", "DynamicsKind": "kinds", "Dynamics": "base", "State": "base",
    "FORMS": "euler", "MAX_STRIDE": "euler", "EulerDynamics": "euler", "choose_form": "euler",
    "choose_stride": "euler", "design_gram": "euler", "hessian_top_eigenvalue": "euler",
    "stable_step_size": "euler", "ExactDynamics": "exact", "ExactMoments": "exact", "HessianEigen": "exact",
    "PosteriorDynamics": "exact", "exact_moments": "exact", "flow_factor": "exact", "posterior_sample": "exact",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
