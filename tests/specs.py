"""Tests build configs from flat keyword arguments (``P=16, N=32, temperature=0.01, ...``):
each key is placed in its config group, so a test reads like the run it describes."""

from __future__ import annotations

from dataclasses import replace

import torch

from rfscaling.config import TrainConfig
from rfscaling.models import ProblemSpec

#: flat key -> (group path, field name)
_WHERE = {
    **{k: (("data",), k) for k in ("P", "alpha", "beta", "lam_1", "c", "label_noise", "kind", "target", "teacher",
                                   "pool_size", "input_dim")},
    **{k: (("model",), k) for k in ("N", "M", "nonlinearity", "depth", "parameterization", "doubling")},
    "model": (("model",), "kind"),
    **{k: (("dynamics",), k) for k in ("weight_decay", "temperature", "init_variance", "dt", "t_max", "n_evals",
                                       "integrator", "max_stride", "batch_size", "replacement", "momentum")},
    "dynamics": (("dynamics",), "name"),
    **{k: (("ensemble",), k) for k in ("datasets", "replicas", "estimate_variance")},
    "theory": (("theory",), "enabled"),
    "theory_modes": (("theory",), "modes"),
    "theory_discrete": (("theory",), "discrete"),
    **{k: (("hooks",), k) for k in ("tensorboard", "progress", "image_every", "extra", "options")},
    "early_stopping": (("hooks", "early_stopping"), "enabled"),
    **{k: (("hooks", "early_stopping"), k) for k in ("patience", "halt", "validation_size")},
    "checkpoint": (("hooks", "checkpoint"), "enabled"),
    "checkpoint_every": (("hooks", "checkpoint"), "every"),
    **{k: (("hooks", "budget"), k) for k in ("max_evals", "max_wall_s")},
    **{k: ((), k) for k in ("seed", "device", "dtype", "threads")},
}


def _set(obj, path: tuple[str, ...], changes: dict):
    if not path:
        return replace(obj, **changes)
    return replace(obj, **{path[0]: _set(getattr(obj, path[0]), path[1:], changes)})


def with_(cfg: TrainConfig, **flat) -> TrainConfig:
    """``cfg`` with the flat keys changed (group by group, so each group is checked whole)."""
    groups: dict[tuple[str, ...], dict] = {}
    for key, value in flat.items():
        path, name = _WHERE[key]
        if isinstance(value, torch.dtype):
            value = str(value).replace("torch.", "")
        groups.setdefault(path, {})[name] = value
    for path in sorted(groups, key=len, reverse=True):  # inner groups first, the top level last
        cfg = _set(cfg, path, groups[path])
    return cfg


def config(**flat) -> TrainConfig:
    """A TrainConfig on the CPU with these flat keys (defaults: the dataclasses')."""
    return with_(TrainConfig(device="cpu"), **flat)


def problem(validation_size: int = 0, **flat) -> ProblemSpec:
    """A ProblemSpec from flat keys (ensemble sizes default to 4 x 4, like ProblemSpec's)."""
    flat = {"datasets": 4, "replicas": 4, "dtype": torch.float32, **flat}
    cfg = config(**flat)
    return ProblemSpec(cfg.data, cfg.model, cfg.ensemble.datasets, cfg.ensemble.replicas, validation_size,
                       cfg.seed, getattr(torch, cfg.dtype), cfg.device)
