"""Data for the testbed: typed ensemble containers, seeds and streams, synthetic eigen-space
sampling, pools of input-space samples, and the registered data sets (``rfscaling/data/sets/``)."""

from rfscaling.data.eigen import (
    TEACHERS,
    EigenTask,
    power_law_eigen_task,
    sample_eigen_ensemble,
    sample_eigen_validation,
)
from rfscaling.data.ensemble import (
    EnsembleData,
    ValidationData,
    derive_seed,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from rfscaling.data.inputs import binary_labels, pool_ensemble
from rfscaling.data.sets import DATASETS, DataSet

__all__ = [
    "DATASETS",
    "DataSet",
    "binary_labels",
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
