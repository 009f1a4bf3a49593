"""Build a complete regression problem (ensemble data, validation set, theory inputs) from a
typed :class:`ProblemSpec`, for both models (eigenfeature, random-feature network) and every
input/target kind. Train-time code calls :func:`make_problem` once; everything downstream works
in kernel eigen-coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from rfscaling.data.eigen import EigenTask, sample_eigen_ensemble, sample_eigen_validation
from rfscaling.data.ensemble import EnsembleData, ValidationData, derive_seed, make_generator
from rfscaling.data.inputs import (
    binary_labels,
    digits_inputs,
    gaussian_power_law_inputs,
    mnist1d_inputs,
    pool_ensemble,
)

__all__ = ["ProblemSpec", "Problem", "make_problem", "random_streams", "DATA_KINDS", "TARGETS", "MODEL_KINDS"]

DATA_KINDS = ("powerlaw_eigen", "gaussian_powerlaw", "digits", "mnist1d")
TARGETS = ("powerlaw_teacher", "teacher_network", "labels")
MODEL_KINDS = ("eigenfeature", "random_features")
DIGITS_SIZE = 1797  # samples in sklearn's digits


@dataclass(frozen=True)
class ProblemSpec:
    """Everything that defines the data of a run (typed; built from the config at the edge)."""

    kind: str = "powerlaw_eigen"
    target: str = "powerlaw_teacher"
    teacher: str = "fixed"
    model: str = "eigenfeature"
    nonlinearity: str = "relu"
    P: int = 256
    N: int = 1024
    M: Optional[int] = None  # eigen: total teacher modes (>= N); rf: teacher-network width
    alpha: Optional[float] = 1.0
    beta: Optional[float] = 1.0
    lam_1: float = 1.0
    c: float = 1.0
    label_noise: float = 0.0
    pool_size: Optional[int] = None
    input_dim: int = 64
    datasets: int = 4
    replicas: int = 4
    validation_size: int = 0
    seed: int = 0
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"kind={self.kind}: must be one of {'|'.join(DATA_KINDS)}")
        if self.target not in TARGETS:
            raise ValueError(f"target={self.target}: must be one of {'|'.join(TARGETS)}")
        if self.model not in MODEL_KINDS:
            raise ValueError(f"model={self.model}: must be one of {'|'.join(MODEL_KINDS)}")
        if self.model == "eigenfeature" and self.kind != "powerlaw_eigen":
            raise ValueError(f"model={self.model}: needs kind=powerlaw_eigen")
        if self.model == "random_features" and self.kind == "powerlaw_eigen":
            raise ValueError(f"kind={self.kind}: the random-feature network needs input data "
                             "(gaussian_powerlaw, digits or mnist1d)")


@dataclass(frozen=True)
class Problem:
    """The data of a run plus what the theory needs.

    ``theory_eigenvalues`` / ``theory_target_second_moment`` (n_theory,) are the positive-
    eigenvalue modes (all N for the eigenfeature model); ``label_noise`` is the added noise and
    ``unexplained_variance`` the target part the features cannot represent (Gaussian-equivalent
    theory: extra label noise, but frozen per dataset, so it counts as bias empirically).
    ``info`` holds measured descriptors (spectrum, pool size, ...) for summary.json.
    """

    data: EnsembleData
    validation: Optional[ValidationData]
    theory_eigenvalues: np.ndarray
    theory_target_second_moment: np.ndarray
    label_noise: float
    unexplained_variance: float
    model: Optional[torch.nn.Module] = None
    info: dict = field(default_factory=dict)

    def theory(self, times, weight_decay: float = 0.0, temperature: float = 0.0, init_variance: float = 0.0,
               modes: bool = True):
        """DMFT curve (:class:`~rfscaling.theory.curve.TheoryCurve`) at ``times`` for this problem.

        The unexplained target variance ``u`` enters ``predict`` as label noise (Gaussian
        equivalence); E_g and bias are against the full clean target, so ``u`` is added to both,
        and its share ``u / (label_noise + u)`` of the label-noise variance (linear in the noise
        variance) is moved to the bias, because it is a fixed function of the inputs and hence
        identical across the replicas of a dataset (as in ``rfscaling.predict``).
        """
        from rfscaling.theory.curve import TheoryCurve
        from rfscaling.theory import predict

        noise = self.label_noise + self.unexplained_variance
        pred = predict(self.theory_eigenvalues, self.theory_target_second_moment, self.data.n_samples,
                       np.asarray(times, dtype=np.float64), label_noise=noise, weight_decay=weight_decay,
                       temperature=temperature, init_variance=init_variance, modes=modes)
        curve = TheoryCurve.from_prediction(pred, n_modes=self.data.n_modes)
        u = self.unexplained_variance
        if u > 0:
            f = u / noise
            shift = f * np.asarray(pred.variance_label_noise, dtype=np.float64)
            mshift = 0.0
            if modes and pred.mode_variance_label_noise is not None:
                mvl = np.asarray(pred.mode_variance_label_noise, dtype=np.float64)
                mshift = np.zeros((mvl.shape[0], self.data.n_modes))
                mshift[:, : mvl.shape[1]] = f * mvl
            curve = TheoryCurve(
                curve.times, curve.generalization_error + u, curve.bias + u + shift, curve.variance - shift,
                curve.train_error, curve.mode_error,
                None if curve.mode_bias is None else curve.mode_bias + mshift,
                None if curve.mode_variance is None else curve.mode_variance - mshift,
            )
        return curve


def make_problem(spec: ProblemSpec) -> Problem:
    """Draw the ensemble for ``spec`` (seeded by ``spec.seed``; streams 'data', 'model', 'val')."""
    if spec.model == "eigenfeature":
        return _eigen_problem(spec)
    return _rf_problem(spec)


def random_streams(spec: ProblemSpec) -> dict:
    """The random streams :func:`make_problem` draws from, for the run record (summary.json).

    Returns ``{"seed": run seed, "streams": {name: seed}, "draws": {quantity: stream name}}``:
    each torch stream ``name`` is a Generator seeded with ``derive_seed(seed, name)`` (the
    seed listed); ``digits_subset`` is ``numpy.random.default_rng(seed)`` and ``mnist1d`` the
    package's generator seeded with ``seed``. ``draws`` names the stream of every random
    quantity of this problem (deterministic ones, e.g. a fixed teacher, are absent); quantities
    sharing a stream are drawn in the order listed.
    """
    draws: dict[str, str] = {}
    if spec.model == "eigenfeature":
        draws["design"] = "data"
        if spec.teacher == "random":
            draws["teacher"] = "data"
        draws["label_noise"] = "data"
        if (spec.M or spec.N) > spec.N:
            draws["teacher_tail"] = "tail"
        if spec.validation_size > 0:
            draws["validation"] = "val"
    else:
        pool = spec.pool_size or max(4 * spec.N, 2 * spec.P)
        if spec.kind != "digits" or pool < DIGITS_SIZE:  # all 1797 digits: no random subset
            draws["inputs"] = {"gaussian_powerlaw": "inputs", "digits": "digits_subset",
                               "mnist1d": "mnist1d"}[spec.kind]
        draws["feature_map"] = "model"
        if spec.target == "teacher_network" or (spec.target == "powerlaw_teacher" and spec.teacher == "random"):
            draws["teacher"] = "teacher"
        draws["sample_selection"] = "data"
        draws["label_noise"] = "data"
        if spec.validation_size > 0:
            draws["validation"] = "data"
    streams = {name: (int(spec.seed) if name in ("digits_subset", "mnist1d") else derive_seed(spec.seed, name))
               for name in dict.fromkeys(draws.values())}
    return {"seed": int(spec.seed), "streams": streams, "draws": draws}


def _eigen_problem(spec: ProblemSpec) -> Problem:
    from rfscaling.theory.spectra import power_law_task

    M = spec.M or spec.N
    if M < spec.N:
        raise ValueError(f"M={M}: must be >= N={spec.N}")
    lam_all, s_all = power_law_task(M, spec.alpha, spec.beta, lam_1=spec.lam_1, c=spec.c)
    task = EigenTask(lam_all[: spec.N], s_all[: spec.N], spec.label_noise, spec.teacher)
    g = make_generator(spec.seed, "data", device=spec.device)
    data = sample_eigen_ensemble(task, spec.P, spec.datasets, spec.replicas, g, spec.dtype, spec.device)
    tail = float(np.sum(lam_all[spec.N:] * s_all[spec.N:]))  # target power beyond the student's modes
    val = None
    if spec.validation_size > 0:
        val = sample_eigen_validation(task, data, spec.validation_size, make_generator(spec.seed, "val", device=spec.device))
    if tail > 0:
        # modes N+1..M of a Gaussian design: an independent Gaussian part of the clean target,
        # a fixed function of each sample (shared by the replicas of a dataset)
        gt = make_generator(spec.seed, "tail", device=spec.device)
        extra = math.sqrt(tail) * torch.randn(spec.datasets, spec.P, generator=gt, dtype=spec.dtype, device=spec.device)
        data = EnsembleData(data.features, data.labels + extra[:, None, :], data.target_weights, data.eigenvalues,
                            data.target_second_moment, data.label_noise, tail)
        if val is not None:
            ev = math.sqrt(tail) * torch.randn(val.labels.shape, generator=gt, dtype=spec.dtype, device=spec.device)
            val = ValidationData(val.features, val.labels + ev)
    from rfscaling.models.random_features import EigenfeatureModel

    return Problem(data, val, task.eigenvalues, task.target_second_moment, spec.label_noise, tail,
                   model=EigenfeatureModel(data.eigenvalues), info={"teacher_tail_power": tail})


def _rf_inputs(spec: ProblemSpec, pool: int) -> tuple[torch.Tensor, Optional[np.ndarray]]:
    if spec.kind == "gaussian_powerlaw":
        g = make_generator(spec.seed, "inputs", device=spec.device)
        return gaussian_power_law_inputs(pool, spec.input_dim, spec.alpha, g, torch.float64, spec.device), None
    if spec.kind == "digits":
        x, y = digits_inputs()
        if pool < len(x):  # a seeded subset of the 1797 digits
            sel = np.random.default_rng(spec.seed).permutation(len(x))[:pool]
            x, y = x[sel], y[sel]
        return torch.as_tensor(x, device=spec.device), y
    x, y = mnist1d_inputs(pool, seed=spec.seed)
    return torch.as_tensor(x, device=spec.device), y


def _rf_problem(spec: ProblemSpec) -> Problem:
    from rfscaling.models.random_features import (
        RandomFeatureMap,
        RandomFeatureModel,
        kernel_basis,
        teacher_coefficients,
    )

    pool = spec.pool_size or max(4 * spec.N, 2 * spec.P)
    if spec.kind == "digits":
        pool = min(pool, 1797)
    x, labels = _rf_inputs(spec, pool)
    pool = x.shape[0]
    din = x.shape[1]
    gm = make_generator(spec.seed, "model", device=spec.device)
    fmap = RandomFeatureMap(din, spec.N, spec.nonlinearity, gm, torch.float64, spec.device)
    with torch.no_grad():
        phi = fmap(x)  # (pool, N)
    basis = kernel_basis(phi)
    Xe = basis.to_eigen(phi)  # (pool, N) eigen-coordinates, float64
    lam = basis.eigenvalues
    D = spec.datasets
    gt = make_generator(spec.seed, "teacher", device=spec.device)
    if spec.target == "powerlaw_teacher":
        k = torch.arange(1, spec.N + 1, dtype=torch.float64, device=spec.device)
        s = torch.zeros(spec.N, dtype=torch.float64, device=spec.device)
        r = basis.rank
        s[:r] = spec.c * k[:r] ** (-(1.0 + spec.beta)) / lam[:r]
        amp = s.sqrt().expand(D, -1)
        W = amp.clone() if spec.teacher == "fixed" else amp * torch.randn(D, spec.N, generator=gt, dtype=torch.float64, device=spec.device)
        Y = W @ Xe.T  # (D, pool)
    elif spec.target == "teacher_network":
        width = spec.M or spec.N
        n_teachers = 1 if spec.teacher == "fixed" else D
        Ys = []
        for _ in range(n_teachers):  # a handful of teachers at most; each is one matmul
            tmap = RandomFeatureMap(din, width, spec.nonlinearity, gt, torch.float64, spec.device)
            a = torch.randn(width, generator=gt, dtype=torch.float64, device=spec.device)
            with torch.no_grad():
                Ys.append(tmap(x) @ a)
        Y = torch.stack(Ys).expand(D, -1) if n_teachers == 1 else torch.stack(Ys)
    else:
        if labels is None:
            raise ValueError(f"target=labels: data kind {spec.kind} has no labels")
        Y = torch.as_tensor(binary_labels(labels), dtype=torch.float64, device=spec.device).expand(D, -1)
    W, unexplained, power = teacher_coefficients(basis, phi, Y)
    unexplained_mean = float(unexplained.mean())
    gd = make_generator(spec.seed, "data", device=spec.device)
    data, val = pool_ensemble(Xe.to(spec.dtype), Y.to(spec.dtype), W.to(spec.dtype), lam.to(spec.dtype), spec.P, D,
                              spec.replicas, spec.label_noise, gd, spec.validation_size, unexplained_mean)
    r = basis.rank
    lam_np = lam.cpu().numpy()[:r]
    s_np = (W.to(torch.float64) ** 2).mean(0).cpu().numpy()[:r]
    info = {
        "pool_size": int(pool),
        "input_dim": int(din),
        "kernel_rank": int(r),
        "target_power": float(power.mean()),
        "unexplained_variance": unexplained_mean,
        "spectrum_head": [float(v) for v in lam_np[:8]],
    }
    return Problem(data, val, lam_np, s_np, spec.label_noise, unexplained_mean,
                   model=RandomFeatureModel(fmap), info=info)
