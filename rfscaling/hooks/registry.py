"""Hooks by name: a factory per hook builds it for a run from a :class:`HookContext`, or returns
None when the run's config leaves it off.

The training app builds the hooks in :func:`hook_names` order: the observers, the names in
``hooks.extra`` (a hook registered in a module of this package, ``@HOOKS.register("name")`` on
its factory, or any importable ``package.module:factory``), then the checkpoint hook, so that it
saves the state of every hook before it. ``hooks.options.<name>`` are keyword arguments of that
factory; :func:`check_hooks` checks names and options before the run starts. A new hook is one module plus one preset in ``conf/hooks/`` that names it in
``extra``. Hooks with ``state_dict``/``load_state_dict`` (:class:`~rfscaling.run.hook.Stateful`)
are checkpointed under their name.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from rfscaling.config import TrainConfig
from rfscaling.errors import ConfigError
from rfscaling.models.problem import Problem
from rfscaling.registry import Registry
from rfscaling.run.hook import Hook, Stateful

__all__ = ["HOOKS", "HookContext", "HookFactory", "hook_names", "hook_factory", "check_hooks", "build_hooks"]


@dataclass
class HookContext:
    """What a hook factory may use: the run's config, directory, problem and identity, the
    hooks built before it (by name), and the TensorBoard hook launched before the setup."""

    cfg: TrainConfig
    out_dir: Path
    problem: Problem
    identity: str
    built: dict[str, Hook] = field(default_factory=dict)
    tensorboard: Optional[Hook] = None

    @property
    def stateful(self) -> dict[str, Stateful]:
        return {name: h for name, h in self.built.items() if isinstance(h, Stateful)}


HookFactory = Callable[..., Optional[Hook]]
HOOKS: Registry[HookFactory] = Registry("hook", "hooks.extra", __name__.rsplit(".", 1)[0])


def hook_names(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The hooks of a run, in order (each factory decides from the config whether it is on):
    the checkpoint comes after every stateful hook; the pause hook (tests) comes last."""
    return ("eigenmode", "early_stopping", "tensorboard", "budget", *extra, "checkpoint", "pause")


def hook_factory(name: str) -> HookFactory:
    """A registered hook's factory, or the object ``package.module:attribute`` names."""
    if ":" not in name:
        return HOOKS.get(name)
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("hooks.extra", name, f"cannot import it ({type(exc).__name__}: {exc})") from None


@HOOKS.register("tensorboard")
def _tensorboard(ctx: HookContext) -> Optional[Hook]:
    # launched by the app before the setup (its writer starts in parallel); here it joins in order
    tb, es = ctx.tensorboard, ctx.built.get("early_stopping")
    if tb is not None and es is not None:  # final early-stopping figures in the hparams table
        tb.extra_metrics = lambda: {k: v for k, v in es.result().items() if k in ("E_g", "stopping_time")}
    return tb


def check_hooks(extra: tuple[str, ...], options: dict[str, Any]) -> None:
    """ConfigError for an unknown hook, options for a hook the run does not build, or options
    its factory does not take."""
    names = hook_names(extra)
    for name in extra:
        hook_factory(name)
    for name, opts in options.items():
        if name not in names:
            raise ConfigError(f"hooks.options.{name}", opts, "names no hook of the run: one of " + "|".join(names))
        try:
            inspect.signature(hook_factory(name)).bind(None, **dict(opts or {}))
        except TypeError as exc:
            raise ConfigError(f"hooks.options.{name}", opts, f"not accepted by the hook's factory ({exc})") from None


def build_hooks(ctx: HookContext, names: tuple[str, ...], options: dict[str, Any]) -> list[Hook]:
    """Build the hooks ``names`` in order; each sees the ones built before it in ``ctx.built``."""
    hooks = []
    for name in names:
        hook = hook_factory(name)(ctx, **dict(options.get(name) or {}))
        if hook is not None:
            ctx.built[name] = hook
            hooks.append(hook)
    return hooks
