"""Data sets by name (``data.kind``): one module each in this package, registered in
:data:`DATASETS`, plus one preset in ``conf/data/``.

A :class:`DataSet` says what it is (drawn in kernel eigen-coordinates, or inputs; with class
labels; with a power-law spectrum; how many samples exist) and draws its inputs. The config
checks that depend on the data set (which targets it supports, its size cap) live here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from rfscaling.config import POOL_FACTOR, DataConfig, ModelConfig
from rfscaling.errors import ConfigError
from rfscaling.registry import Registry

if TYPE_CHECKING:  # no torch here: the theory app checks its data group with DataSet.check
    import numpy as np
    import torch

__all__ = ["DataSet", "DATASETS", "Inputs"]

#: ``draw(data_config, n, seed, device) -> (inputs (n, d) float64, class labels (n,) or None)``
Inputs = Callable[[DataConfig, int, int, str], "tuple[torch.Tensor, Optional[np.ndarray]]"]


@dataclass(frozen=True)
class DataSet:
    name: str
    draw: Optional[Inputs] = None  # None: drawn in kernel eigen-coordinates by the model
    labels: bool = False  # class labels: data.target=labels (and only that)
    power_law: bool = True  # data.alpha / data.beta describe it
    size: Optional[int] = None  # samples there are (caps the pool); None: generated on demand
    input_stream: Optional[str] = None  # the random stream the inputs are drawn from (summary.json)

    @property
    def eigen_space(self) -> bool:
        return self.draw is None

    def check(self, data: DataConfig) -> None:
        if self.labels and data.target != "labels":
            raise ConfigError("data.target", data.target, f"must be labels for data.kind={self.name}")
        if not self.labels and data.target == "labels":
            raise ConfigError("data.target", data.target,
                              f"labels needs a data set with class labels, got data.kind={self.name}")
        if self.eigen_space and data.target == "teacher_network":
            raise ConfigError("data.target", data.target, f"must be powerlaw_teacher for data.kind={self.name}")
        if self.power_law:
            for key in ("alpha", "beta"):
                if getattr(data, key) is None:
                    raise ConfigError(f"data.{key}", None, f"must be a number for data.kind={self.name}")

    def pool_size(self, data: DataConfig, model: ModelConfig) -> Optional[int]:
        """The pool the training sets are drawn from (None for eigen-space data); ConfigError
        when it cannot hold P samples or exceeds the data set."""
        if self.eigen_space:
            return data.pool_size
        pool = data.pool_size
        if pool is None:
            pool = max(POOL_FACTOR * model.N, 2 * data.P)
            if self.size is not None:
                pool = min(pool, self.size)
        if self.size is not None and pool > self.size:
            raise ConfigError("data.pool_size", pool, f"must be <= {self.size} (size of the {self.name} data set)")
        if pool <= data.P:
            if data.pool_size is None:  # the resolved default is too small: blame P
                raise ConfigError("data.P", data.P, f"must be < {pool} (samples available in {self.name})")
            raise ConfigError("data.pool_size", pool, f"must be an integer > data.P={data.P}")
        return pool


DATASETS: Registry[DataSet] = Registry("data set", "data.kind", __name__)
