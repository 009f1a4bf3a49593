"""Data for the testbed: typed ensemble containers, synthetic eigenfeature data, input data
(Gaussian power-law inputs, sklearn digits, MNIST-1D) and targets."""

from rfscaling.data.eigen import (
    TEACHERS,
    EigenTask,
    power_law_eigen_task,
    sample_eigen_ensemble,
    sample_eigen_validation,
)
from rfscaling.data.inputs import (
    binary_labels,
    digits_inputs,
    gaussian_power_law_inputs,
    mnist1d_inputs,
    pool_ensemble,
)
from rfscaling.data.problem import Problem, ProblemSpec, make_problem, random_streams
from rfscaling.data.ensemble import (
    EnsembleData,
    ValidationData,
    derive_seed,
    make_generator,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "Problem",
    "ProblemSpec",
    "make_problem",
    "random_streams",
    "binary_labels",
    "digits_inputs",
    "gaussian_power_law_inputs",
    "mnist1d_inputs",
    "pool_ensemble",
    "TEACHERS",
    "EigenTask",
    "EnsembleData",
    "ValidationData",
    "derive_seed",
    "make_generator",
    "power_law_eigen_task",
    "resolve_device",
    "resolve_dtype",
    "sample_eigen_ensemble",
    "sample_eigen_validation",
]
