"""Error types and the command-line error boundary.

Library code raises :class:`ConfigError` (a :class:`ValueError`) for bad settings and plain
``ValueError`` for bad arguments. Command-line entry points are wrapped with :func:`cli_errors`
(around the task function) and :func:`hydra_entry` (around the ``@hydra.main`` function) so a
user who types a bad value sees ONE line on stderr, exit status 2, and no traceback. Nothing is
ever deleted on the way out: files a run already wrote stay where they are.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, TypeVar

__all__ = ["ConfigError", "EXIT_BAD_INPUT", "one_line", "cli_errors", "hydra_entry"]

EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., Any])


class ConfigError(ValueError):
    """A configuration value is invalid.

    The message is a single line naming the key, its value and what is allowed, e.g.
    ``data.P=-3: must be a positive integer``.
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key}={_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value) if not isinstance(value, (int, float)) else str(value)


def one_line(exc: BaseException) -> str:
    """Collapse an exception (and, for Hydra/OmegaConf errors, its cause) into one line."""
    parts = []
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(parts) < 3:
        seen.add(id(cur))
        text = str(cur).strip()
        if text:
            # OmegaConf appends "full_key: ..., object_type=..." lines; keep the first line only.
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            first = lines[0]
            # Hydra's "Could not find 'group/x'" lists the options on the following lines.
            for j, ln in enumerate(lines[1:], start=1):
                if ln.startswith("Available options"):
                    opts = [o for o in lines[j + 1:] if " " not in o]
                    first += f" ({ln.rstrip(':')}: {', '.join(opts)})"
                    break
            if first and first not in parts:
                parts.append(first)
        cur = cur.__cause__
    msg = ": ".join(parts) if parts else type(exc).__name__
    return " ".join(msg.split())


def _bad_input_types() -> tuple[type, ...]:
    """Exception types that mean 'the user typed something wrong' (not a bug)."""
    types: list[type] = [ValueError]
    try:  # Hydra composition / override-parsing errors
        from hydra.errors import (
            ConfigCompositionException,
            MissingConfigException,
            OverrideParseException,
        )

        types += [ConfigCompositionException, MissingConfigException, OverrideParseException]
    except ImportError:  # pragma: no cover
        pass
    try:
        from omegaconf.errors import OmegaConfBaseException

        types.append(OmegaConfBaseException)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def _exit_bad_input(exc: BaseException) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"error: {one_line(exc)}\n")
    sys.stderr.flush()
    sys.exit(EXIT_BAD_INPUT)


def cli_errors(fn: F) -> F:
    """Decorate a Hydra task function: ConfigError/ValueError -> one stderr line, exit 2.

    Set ``HYDRA_FULL_ERROR=1`` to get the full traceback instead (for debugging).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:  # ConfigError is a ValueError
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _exit_bad_input(exc)

    return wrapper  # type: ignore[return-value]


def hydra_entry(main_fn: F) -> F:
    """Wrap a ``@hydra.main``-decorated function so composition errors are one line too.

    Hydra reports a bad override (``data.P=abc``, an unknown key, a missing preset) with a
    multi-line message and exit status 1 before the task function runs. This wrapper swaps
    Hydra's reporter for one that prints ``error: <one line>`` and exits with status 2 for
    such bad-input errors, and leaves every other exception (a genuine bug) to Hydra's own
    reporting. ``HYDRA_FULL_ERROR=1`` restores Hydra's behaviour entirely.
    """

    @functools.wraps(main_fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return main_fn(*args, **kwargs)
        try:
            import hydra._internal.utils as hutils
        except ImportError:  # pragma: no cover
            return main_fn(*args, **kwargs)
        original = getattr(hutils, "run_and_report", None)
        if original is None:  # pragma: no cover - Hydra internals changed
            return main_fn(*args, **kwargs)
        bad = _bad_input_types()

        def run_and_report(func: Callable[[], Any]) -> Any:
            try:
                return func()
            except bad as exc:
                _exit_bad_input(exc)
            except Exception as exc:  # not bad input: let Hydra report it as before
                def reraise(e: BaseException = exc) -> Any:
                    raise e

                return original(reraise)

        hutils.run_and_report = run_and_report
        try:
            return main_fn(*args, **kwargs)
        finally:
            hutils.run_and_report = original

    return wrapper  # type: ignore[return-value]
