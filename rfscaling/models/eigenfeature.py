"""The eigenfeature student: a linear model directly on the first N kernel eigenfeatures of the
synthetic power-law task, f(x) = sum_k w_k x_k with x_k = sqrt(lam_k) z_k. A teacher with M > N
modes adds its tail (modes N+1..M) as a Gaussian part of the clean target the student cannot
represent."""

from __future__ import annotations

import math

import numpy as np
import torch

from rfscaling.config import DataConfig, ModelConfig
from rfscaling.data.eigen import (
    EigenTask,
    sample_eigen_ensemble,
    sample_eigen_validation,
)
from rfscaling.data.ensemble import EnsembleData, ValidationData, make_generator
from rfscaling.data.sets import DataSet
from rfscaling.errors import ConfigError
from rfscaling.models.problem import MODELS, Problem, ProblemSpec
from rfscaling.theory.spectra import power_law_task


def _problem(spec: ProblemSpec) -> Problem:
    d, m = spec.data, spec.model
    M = m.teacher_modes
    lam_all, s_all = power_law_task(M, d.alpha, d.beta, lam_1=d.lam_1, c=d.c)
    task = EigenTask(lam_all[: m.N], s_all[: m.N], d.label_noise, d.teacher)
    g = make_generator(spec.seed, "data", device=spec.device)
    data = sample_eigen_ensemble(task, d.P, spec.datasets, spec.replicas, g, spec.dtype, spec.device)
    tail = float(np.sum(lam_all[m.N:] * s_all[m.N:]))  # target power beyond the student's modes
    val = None
    if spec.validation_size > 0:
        val = sample_eigen_validation(task, data, spec.validation_size, make_generator(spec.seed, "val", device=spec.device))
    if tail > 0:
        # modes N+1..M of a Gaussian design: an independent Gaussian part of the clean target,
        # a fixed function of each sample (shared by the replicas of a dataset)
        gt = make_generator(spec.seed, "tail", device=spec.device)
        extra = math.sqrt(tail) * torch.randn(spec.datasets, d.P, generator=gt, dtype=spec.dtype, device=spec.device)
        data = EnsembleData(data.features, data.labels + extra[:, None, :], data.target_weights, data.eigenvalues,
                            data.target_second_moment, data.label_noise, tail)
        if val is not None:
            ev = math.sqrt(tail) * torch.randn(val.labels.shape, generator=gt, dtype=spec.dtype, device=spec.device)
            val = ValidationData(val.features, val.labels + ev)
    return Problem(data, val, task.eigenvalues, task.target_second_moment, d.label_noise, tail,
                   info={"teacher_tail_power": tail})


@MODELS.register("eigenfeature")
class Eigenfeature:
    @staticmethod
    def check(data: DataConfig, model: ModelConfig, dataset: DataSet) -> None:
        if not dataset.eigen_space:
            raise ConfigError("model.kind", model.kind, f"{model.kind} needs data.kind=powerlaw_eigen (got "
                              f"data.kind={data.kind}); use model=random_features")

    problem = staticmethod(_problem)

    @staticmethod
    def draws(spec: ProblemSpec) -> dict[str, str]:
        draws = {"design": "data"}
        if spec.data.teacher == "random":
            draws["teacher"] = "data"
        draws["label_noise"] = "data"
        if spec.model.teacher_modes > spec.model.N:
            draws["teacher_tail"] = "tail"
        if spec.validation_size > 0:
            draws["validation"] = "val"
        return draws
