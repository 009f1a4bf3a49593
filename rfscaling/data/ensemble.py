"""Typed containers for an ensemble of regression problems, and shared helpers.

Every model in the testbed is reduced to linear regression in the kernel eigen-coordinates:
``features`` are the student's features rotated into the eigenbasis of their (population)
covariance, so coordinate ``k`` of a weight vector is eigenmode ``k`` with eigenvalue
``eigenvalues[k]``. Shapes (D datasets, R replicas per dataset, P samples, N modes):

* ``features``       (D, P, N)   one design matrix per dataset, shared by its replicas
* ``labels``         (D, R, P)   noisy labels; replicas of a dataset differ in the label noise
* ``target_weights`` (D, N)      the teacher ``wstar`` (best linear predictor) per dataset
* ``eigenvalues``    (N,)        population eigenvalues ``lam_k``
* ``readout``        (D, M, N)   optional: the random-projection student's map F = A^T/sqrt(N) from
  its N weights to the M teacher eigenmodes (per dataset); then ``target_weights`` is (D, M),
  ``eigenvalues`` (M,) and errors are measured on v = F w - wstar (docs/theory.md section 9)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rfscaling.errors import ConfigError

__all__ = [
    "EnsembleData",
    "ValidationData",
    "resolve_device",
    "resolve_dtype",
    "make_generator",
    "derive_seed",
]


@dataclass(frozen=True)
class EnsembleData:
    """D datasets x R replicas of a linear regression problem in kernel eigen-coordinates.

    ``label_noise`` is the variance of the noise added to the labels; ``unexplained_variance``
    is the part of the (clean) target the features cannot represent, which acts as extra label
    noise in the Gaussian-equivalent theory (0 for the eigenfeature model).
    ``target_second_moment`` (N,) is E[wstar_k^2] as handed to the theory (the exact square of
    a fixed teacher, or the prior second moment of a random one).
    """

    features: torch.Tensor
    labels: torch.Tensor
    target_weights: torch.Tensor
    eigenvalues: torch.Tensor
    target_second_moment: torch.Tensor
    label_noise: float = 0.0
    unexplained_variance: float = 0.0
    readout: torch.Tensor | None = None

    def __post_init__(self) -> None:
        D, P, N = self.features.shape
        if self.labels.ndim != 3 or self.labels.shape[0] != D or self.labels.shape[2] != P:
            raise ValueError(f"labels: shape {tuple(self.labels.shape)} does not match features {(D, P, N)}")
        M = N if self.readout is None else int(self.readout.shape[1])
        if self.readout is not None and tuple(self.readout.shape) != (D, M, N):
            raise ValueError(f"readout: shape {tuple(self.readout.shape)} != (D, M, N) = {(D, M, N)}")
        if tuple(self.target_weights.shape) != (D, M):
            raise ValueError(f"target_weights: shape {tuple(self.target_weights.shape)} != {(D, M)}")
        if tuple(self.eigenvalues.shape) != (M,):
            raise ValueError(f"eigenvalues: shape {tuple(self.eigenvalues.shape)} != {(M,)}")

    @property
    def n_datasets(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_replicas(self) -> int:
        return int(self.labels.shape[1])

    @property
    def n_samples(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_modes(self) -> int:
        return int(self.features.shape[2])

    @property
    def effective_label_noise(self) -> float:
        """Label noise seen by the Gaussian-equivalent theory: added noise + unexplained target."""
        return float(self.label_noise) + float(self.unexplained_variance)


@dataclass(frozen=True)
class ValidationData:
    """Held-out samples per dataset: features (D, P_val, N) and noisy labels (D, P_val)."""

    features: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        # X^T stored once: bmm with a transposed view was ~25 % slower per evaluation
        object.__setattr__(self, "_features_t", self.features.transpose(1, 2).contiguous())

    def errors(self, weights: torch.Tensor) -> torch.Tensor:
        """Mean squared validation error per ensemble member, (D, R), for weights (D, R, N)."""
        resid = torch.baddbmm(self.labels[:, None, :], weights.to(self.features.dtype), self._features_t,
                              beta=-1.0)  # X w - y, (D, R, Pv)
        return (resid * resid).mean(dim=-1)


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda``/``cuda:K`` must exist
    (ConfigError on ``device`` otherwise). The one place a device name is resolved."""
    name = str(device)
    if name == "cpu":
        return name
    available = torch.cuda.is_available()
    if name == "auto":
        return "cuda" if available else "cpu"
    if not name.startswith("cuda"):
        raise ConfigError("device", name, "must be one of auto|cpu|cuda|cuda:K")
    if not available:
        raise ConfigError("device", name, "CUDA is not available on this machine; use cpu or auto")
    count = torch.cuda.device_count()
    if ":" in name and int(name.split(":")[1]) >= count:
        raise ConfigError("device", name, f"only {count} CUDA device(s) visible; use cuda:0..cuda:{count - 1}")
    return name


def resolve_dtype(dtype: str | torch.dtype = "float32") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "float64": torch.float64}
    if dtype not in table:
        raise ValueError(f"dtype={dtype}: must be float32 or float64")
    return table[dtype]


def derive_seed(seed: int, *stream: int | str) -> int:
    """Independent 63-bit seed for a named stream of a run seed (numpy SeedSequence)."""
    words = [int(seed)]
    for s in stream:
        words.append(s if isinstance(s, int) else int.from_bytes(str(s).encode()[:8].ljust(8, b"\0"), "little"))
    lo, hi = (int(v) for v in np.random.SeedSequence(words).generate_state(2, dtype=np.uint32))
    return (lo | (hi << 32)) & ((1 << 63) - 1)


def make_generator(seed: int, *stream: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator on ``device`` seeded from ``(seed, *stream)``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(derive_seed(seed, *stream))
    return g
