"""Models of the testbed: the eigenfeature student and the random-feature network (frozen
random first layer, trainable readout), plus the kernel eigenbasis measured on a pool."""

from rfscaling.models.random_features import (
    NONLINEARITIES,
    EigenfeatureModel,
    KernelBasis,
    RandomFeatureMap,
    RandomFeatureModel,
    kernel_basis,
    teacher_coefficients,
)

__all__ = [
    "NONLINEARITIES",
    "EigenfeatureModel",
    "KernelBasis",
    "RandomFeatureMap",
    "RandomFeatureModel",
    "kernel_basis",
    "teacher_coefficients",
]
