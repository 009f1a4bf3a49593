"""A complete regression problem (ensemble data, validation set, theory inputs) for a model on
a data set. Train-time code calls :func:`make_problem` once; everything downstream works in
kernel eigen-coordinates. Models are looked up by name (``model.kind``) in :data:`MODELS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np
import torch

from rfscaling.config import DataConfig, ModelConfig
from rfscaling.data.ensemble import EnsembleData, ValidationData, derive_seed
from rfscaling.data.sets import DATASETS, DataSet
from rfscaling.registry import Registry

__all__ = ["ProblemSpec", "Problem", "Model", "MODELS", "make_problem", "random_streams", "check_problem"]


@dataclass(frozen=True)
class ProblemSpec:
    """What a problem is drawn from: the data and model groups of the config, the ensemble
    sizes, the validation size, the seed, dtype and device."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    datasets: int = 4
    replicas: int = 4
    validation_size: int = 0
    seed: int = 0
    dtype: torch.dtype = torch.float32
    device: str = "cpu"

    @property
    def dataset(self) -> DataSet:
        return DATASETS.get(self.data.kind)

    @property
    def pool_size(self) -> Optional[int]:
        return self.dataset.pool_size(self.data, self.model)


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
    info: dict = field(default_factory=dict)
    n_features: Optional[int] = None  # random-projection student: its width N (theory over M modes)
    error_offset: Optional[float] = None  # added to the measured E_g and bias; None: unexplained_variance

    @property
    def measured_offset(self) -> float:
        """What the measurement adds to E_g and bias: the target power outside the measured modes
        (0 for a network model, whose pseudo-weights cover every pool mode)."""
        return self.unexplained_variance if self.error_offset is None else float(self.error_offset)

    def theory(self, times, weight_decay: float = 0.0, temperature: float = 0.0, init_variance: float = 0.0,
               modes: bool = True, learning_rate: Optional[float] = None):
        """DMFT curve (:class:`~rfscaling.theory.curve.TheoryCurve`) at ``times`` for this problem.

        The unexplained target variance ``u`` enters ``predict`` as label noise (Gaussian
        equivalence); E_g and bias are against the full clean target, so ``u`` is added to both,
        and its share ``u / (label_noise + u)`` of the label-noise variance (linear in the noise
        variance) is moved to the bias, because it is a fixed function of the inputs and hence
        identical across the replicas of a dataset (as in ``rfscaling.predict``).
        ``learning_rate``: the step size of a discrete-time run (None: gradient flow).
        """
        from rfscaling.theory import predict
        from rfscaling.theory.curve import TheoryCurve

        noise = self.label_noise + self.unexplained_variance
        pred = predict(self.theory_eigenvalues, self.theory_target_second_moment, self.data.n_samples,
                       np.asarray(times, dtype=np.float64), label_noise=noise, weight_decay=weight_decay,
                       temperature=temperature, init_variance=init_variance, n_features=self.n_features,
                       learning_rate=learning_rate)
        if modes:
            curve = TheoryCurve.from_prediction(pred, n_modes=int(self.data.eigenvalues.shape[0]))
        else:  # the per-mode arrays are computed on first read: do not read them
            curve = TheoryCurve(*(np.asarray(getattr(pred, k), dtype=np.float64) for k in
                                  ("times", "generalization_error", "bias", "variance", "train_error")))
        u = self.unexplained_variance
        if u > 0:
            f = u / noise
            shift = f * np.asarray(pred.variance_label_noise, dtype=np.float64)
            mshift = 0.0
            if modes and pred.mode_variance_label_noise is not None:
                mvl = np.asarray(pred.mode_variance_label_noise, dtype=np.float64)
                mshift = np.zeros((mvl.shape[0], int(self.data.eigenvalues.shape[0])))
                mshift[:, : mvl.shape[1]] = f * mvl
            curve = TheoryCurve(
                curve.times, curve.generalization_error + u, curve.bias + u + shift, curve.variance - shift,
                curve.train_error, curve.mode_error,
                None if curve.mode_bias is None else curve.mode_bias + mshift,
                None if curve.mode_variance is None else curve.mode_variance - mshift,
            )
        return curve


class Model(Protocol):
    """A registered model: the config checks it needs, the problem it makes of a data set, and
    the random streams that problem draws (``{quantity: stream name}``, for summary.json)."""

    def check(self, data: DataConfig, model: ModelConfig, dataset: DataSet) -> None: ...

    def problem(self, spec: ProblemSpec) -> Problem: ...

    def draws(self, spec: ProblemSpec) -> dict[str, str]: ...


MODELS: Registry[Model] = Registry("model", "model.kind", "rfscaling.models")


def check_problem(data: DataConfig, model: ModelConfig) -> None:
    """The checks of the config that depend on the data set and the model (ConfigError)."""
    dataset = DATASETS.get(data.kind)
    dataset.check(data)
    MODELS.get(model.kind).check(data, model, dataset)
    dataset.pool_size(data, model)


def make_problem(spec: ProblemSpec) -> Problem:
    """Draw the ensemble for ``spec`` (seeded by ``spec.seed``; the model names its streams)."""
    check_problem(spec.data, spec.model)
    return MODELS.get(spec.model.kind).problem(spec)


def random_streams(spec: ProblemSpec) -> dict:
    """The random streams :func:`make_problem` draws from, for the run record (summary.json).

    Returns ``{"seed": run seed, "streams": {name: seed}, "draws": {quantity: stream name}}``:
    each torch stream ``name`` is a Generator seeded with ``derive_seed(seed, name)`` (the
    seed listed); ``digits_subset`` is ``numpy.random.default_rng(seed)`` and ``mnist1d`` the
    package's generator seeded with ``seed``. ``draws`` names the stream of every random
    quantity of this problem (deterministic ones, e.g. a fixed teacher, are absent); quantities
    sharing a stream are drawn in the order listed.
    """
    draws = MODELS.get(spec.model.kind).draws(spec)
    streams = {name: (int(spec.seed) if name in ("digits_subset", "mnist1d") else derive_seed(spec.seed, name))
               for name in dict.fromkeys(draws.values())}
    return {"seed": int(spec.seed), "streams": streams, "draws": draws}
