"""The random-projection student of the random-feature scaling-law literature: a linear model on
N random projections of the M teacher eigenfeatures, f(x) = w . A psi(x) / sqrt(N), with A (N x M)
i.i.d. N(0, 1), frozen, drawn afresh for every data set (docs/theory.md section 9).

The dynamics runs on the projected features Phi = X A^T / sqrt(N) (D, P, N); the errors are
measured in teacher coordinates v = F w - wstar with F = A^T / sqrt(N) (``EnsembleData.readout``),
so the per-mode arrays are over the M teacher modes and the theory is ``predict(..., n_features=N)``.
"""

from __future__ import annotations

import math

import torch

from rfscaling.config import DataConfig, ModelConfig
from rfscaling.data.eigen import EigenTask, sample_eigen_ensemble, sample_eigen_validation
from rfscaling.data.ensemble import EnsembleData, ValidationData, make_generator
from rfscaling.data.sets import DataSet
from rfscaling.errors import ConfigError
from rfscaling.models.eigenfeature import Eigenfeature
from rfscaling.models.problem import MODELS, Problem, ProblemSpec
from rfscaling.theory.spectra import power_law_task


def _problem(spec: ProblemSpec) -> Problem:
    d, m = spec.data, spec.model
    N, M = m.N, m.teacher_modes
    lam, s = power_law_task(M, d.alpha, d.beta, lam_1=d.lam_1, c=d.c)
    task = EigenTask(lam, s, d.label_noise, d.teacher)
    teacher = sample_eigen_ensemble(task, d.P, spec.datasets, spec.replicas,
                                    make_generator(spec.seed, "data", device=spec.device), spec.dtype, spec.device)
    gp = make_generator(spec.seed, "projection", device=spec.device)
    A = torch.randn(spec.datasets, N, M, generator=gp, dtype=spec.dtype, device=spec.device)
    F = A.transpose(1, 2) / math.sqrt(N)                                          # (D, M, N)
    data = EnsembleData(torch.bmm(teacher.features, F), teacher.labels, teacher.target_weights,
                        teacher.eigenvalues, teacher.target_second_moment, d.label_noise, 0.0, readout=F)
    val = None
    if spec.validation_size > 0:
        v = sample_eigen_validation(task, teacher, spec.validation_size,
                                    make_generator(spec.seed, "val", device=spec.device))
        val = ValidationData(torch.bmm(v.features, F), v.labels)
    return Problem(data, val, lam, s, d.label_noise, 0.0, info={"teacher_modes": M}, n_features=N)


@MODELS.register("random_projection")
class RandomProjection(Eigenfeature):
    """The eigenfeature data path, compressed by a per-data-set projection A (no teacher tail:
    all M teacher modes are features of the teacher)."""

    problem = staticmethod(_problem)

    @staticmethod
    def draws(spec: ProblemSpec) -> dict[str, str]:
        draws = {k: v for k, v in Eigenfeature.draws(spec).items() if k != "teacher_tail"}
        return {**draws, "projection": "projection"}
