"""Shared pytest fixtures. Other test modules may append fixtures here."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable, Sequence

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
_COMPOSE_CACHE: dict = {}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def conf_dir() -> Path:
    return CONF_DIR


@pytest.fixture
def compose() -> Callable[..., "object"]:
    """compose(config_name="train", overrides=()) -> DictConfig, using the repository's conf/.

    Wraps hydra's compose API (initialize_config_dir + compose) and cleans Hydra's global
    state afterwards, so tests can call it any number of times.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rfscaling.config import register_configs

    register_configs()  # the structured schemas conf/*.yaml are merged into

    def _compose(config_name: str = "train", overrides: Sequence[str] = ()):
        key = (config_name, tuple(overrides))
        if key not in _COMPOSE_CACHE:  # composing takes ~0.2 s; cache per session
            GlobalHydra.instance().clear()
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                _COMPOSE_CACHE[key] = hydra_compose(config_name=config_name, overrides=list(overrides))
        return copy.deepcopy(_COMPOSE_CACHE[key])

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (restored afterwards).

    The testbed's unit problems are tiny; with two OpenMP threads on a loaded 2-core machine
    each small kernel can wait milliseconds for the second thread, so single-threaded is both
    faster and more predictable. Used by the testbed's test modules via ``pytestmark``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
