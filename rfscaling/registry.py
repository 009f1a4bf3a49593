"""Registries: data sets, models, dynamics and hooks are looked up by name, one registry per kind.

A new piece is one module that registers itself plus one YAML preset. The module lives in the
registry's package (e.g. ``rfscaling/data/sets/``), which is imported module by module the first
time a name is looked up, so nothing else has to import it; code outside the package can call
``register`` itself before the run. An unknown name is a :class:`ConfigError` on the config key
that selects the kind, listing the names there are.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, Iterator, TypeVar

from rfscaling.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")
_ALL: dict[str, "Registry"] = {}  # by config key


def _lookup(package: str, key: str) -> "Registry":
    importlib.import_module(package)  # defines (and registers) it
    return _ALL[key]


class Registry(Generic[T]):
    def __init__(self, kind: str, key: str, package: str) -> None:
        self.kind = kind  # what the entries are, for messages
        self.key = key  # the config key whose value is a name here
        self.package = package  # imported module by module on first lookup
        self._entries: dict[str, T] = {}
        self._discovered = False
        _ALL[key] = self

    def __reduce__(self):
        # a pickled reference, never a copy: a job that unpickles code from a `python -m`
        # __main__ (submitit, joblib) must register into and look up the one registry
        return _lookup, (self.package, self.key)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` on a class or function."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> tuple[str, ...]:
        self._discover()
        return tuple(sorted(self._entries))

    def get(self, name: str) -> T:
        self._discover()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(self.key, name, f"must be a registered {self.kind}: one of "
                              + "|".join(self.names())) from None

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
