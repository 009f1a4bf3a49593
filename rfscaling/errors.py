"""Error types and the command-line error boundary.

Library code raises :class:`ConfigError` (a :class:`ValueError`) for bad settings and plain
``ValueError`` for bad arguments. Command-line entry points are wrapped with :func:`cli_errors`
(around the task function) and :func:`hydra_entry` (around the ``@hydra.main`` function) so a
user who types a bad value sees ONE line on stderr, exit status 2, and no traceback. Nothing is
ever deleted on the way out: files a run already wrote stay where they are.

**Multirun sweeps** (``-m`` or ``hydra.mode=MULTIRUN``): one bad job must not spoil the others.
Inside a multirun, :func:`cli_errors` turns a job's failure -- bad input, any exception, or a
``sys.exit`` with a non-zero status below 128 -- into ``<job dir>/error.txt`` (one line), prints
``error: job <num> failed: <line>`` on stderr, keeps the traceback of an unexpected exception in
``<job dir>/traceback.txt``, and returns
a :class:`JobFailed` marker, so the launcher carries on with the next job. Signals (exit status
>= 128, KeyboardInterrupt) still stop the whole sweep. After the sweep, :func:`hydra_entry` exits
with status :data:`EXIT_SWEEP_FAILED` (1) if any job failed, with one line pointing at the
sweep index (``rfscaling.studies.sweep`` writes ``index.csv``). ``HYDRA_FULL_ERROR=1`` restores
Hydra's own behaviour (the first failure aborts the sweep with a traceback).
"""

from __future__ import annotations

import functools
import io
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

__all__ = [
    "ConfigError",
    "MissingPackage",
    "EXIT_BAD_INPUT",
    "EXIT_SWEEP_FAILED",
    "ERROR_FILE",
    "JobFailed",
    "one_line",
    "cli_errors",
    "hydra_entry",
    "note_sweep_failures",
]

EXIT_BAD_INPUT = 2
#: Exit status of a multirun in which at least one job failed (the others ran to the end).
EXIT_SWEEP_FAILED = 1
#: One-line error of a failed multirun job, written into its job directory.
ERROR_FILE = "error.txt"
#: Traceback of a multirun job that failed with an exception other than bad input.
TRACEBACK_FILE = "traceback.txt"

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


class MissingPackage(ValueError):
    """An optional package is not installed: one line naming the pip command; exit status 2."""

    def __init__(self, feature: str, package: str, pip: str) -> None:
        self.package = package
        super().__init__(f"{feature} needs the package {package}, which is not installed: pip install {pip}")


#: Hydra launcher plugins by the name Hydra cannot load without them, and what installs them.
LAUNCHER_PACKAGES = {
    "submitit_slurm": ("hydra-submitit-launcher", "'rfscaling[slurm]'"),
    "submitit_local": ("hydra-submitit-launcher", "'rfscaling[slurm]'"),
    "joblib": ("hydra-joblib-launcher", "hydra-joblib-launcher"),
}


def _launcher_hint(line: str) -> str:
    """Hydra says only "Could not load 'hydra/launcher/<name>'" when a launcher plugin is not
    installed; name the package and the pip command too."""
    for name, (package, pip) in LAUNCHER_PACKAGES.items():
        if f"Could not load 'hydra/launcher/{name}'" in line:
            return f"{line.rstrip('.')}: the launcher needs the package {package}, which is not installed: pip install {pip}"
    return line


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
    return _launcher_hint(" ".join(msg.split()))


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

    In a multirun, every failure of the job is contained instead (see the module docstring and
    :func:`_run_sweep_job`). Set ``HYDRA_FULL_ERROR=1`` to get the full traceback instead (for
    debugging).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
        job = None if full_error else _multirun_job()
        if job is not None:
            return _run_sweep_job(fn, job, args, kwargs)
        try:
            return fn(*args, **kwargs)
        except ValueError as exc:  # ConfigError is a ValueError
            if full_error:
                raise
            _exit_bad_input(exc)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Multirun: contain the failure of one job


@dataclass(frozen=True)
class JobFailed:
    """Return value of a multirun job that failed (Hydra sees the job as finished).

    ``error``: the one-line message (also in ``<job_dir>/error.txt``); ``kind``: ``bad_input``
    (ConfigError/ValueError), ``exception`` (any other exception: a bug or a crash) or ``exit``
    (the task called sys.exit with a non-zero status ``status``)."""

    error: str
    kind: str
    job_dir: str
    job_num: Optional[int] = None
    status: Optional[int] = None


_SWEEP_FAILURES: dict[str, str] = {}


def note_sweep_failures(failures: dict[str, str], index: Optional[str] = None) -> None:
    """Record failed jobs of the current multirun (job dir -> error line), so that the process
    ends with :data:`EXIT_SWEEP_FAILED`. Called for each contained failure, and by the sweep-index
    callback (which sees the jobs of every launcher, including other processes); ``index`` is
    the index file named in the final message."""
    _SWEEP_FAILURES.update(failures)
    if index is not None:
        _SWEEP_FAILURES["__index__"] = index


def _take_sweep_failures() -> tuple[dict[str, str], Optional[str]]:
    failures = dict(_SWEEP_FAILURES)
    _SWEEP_FAILURES.clear()
    index = failures.pop("__index__", None)
    return failures, index


def _multirun_job() -> Optional[tuple[Path, Optional[int]]]:
    """(job output dir, job number) when running as a job of a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        num = hc.job.get("num")
        return Path(str(hc.runtime.output_dir)), (int(num) if num is not None else None)
    except Exception:  # pragma: no cover - not under Hydra, or Hydra internals changed
        return None


class _ErrorLineTee(io.TextIOBase):
    """Passes writes through to ``stream`` and remembers the last ``error: ...`` line, so that a
    task which reports its own failure (one line on stderr, then sys.exit) can be recorded."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.last: Optional[str] = None
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for ln in lines:
            if ln.startswith("error: "):
                self.last = ln[len("error: "):].strip()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())

    @property
    def encoding(self):  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def fileno(self) -> int:
        return self.stream.fileno()


def _run_sweep_job(fn: Callable[..., Any], job: tuple[Path, Optional[int]], args, kwargs) -> Any:
    job_dir, num = job
    tee = _ErrorLineTee(sys.stderr)
    saved = sys.stderr
    sys.stderr = tee
    try:
        return fn(*args, **kwargs)
    except SystemExit as exc:
        code = exc.code
        if code is None or code == 0:
            return None
        if isinstance(code, int) and code >= 128:  # a signal (SIGINT/SIGTERM): stop the sweep
            raise
        if isinstance(code, int):
            line = tee.last or f"exit status {code}"
            return _job_failed(job_dir, num, line, "exit", code)
        return _job_failed(job_dir, num, " ".join(str(code).split()), "exit", EXIT_SWEEP_FAILED)
    except ValueError as exc:  # ConfigError is a ValueError
        return _job_failed(job_dir, num, one_line(exc), "bad_input", EXIT_BAD_INPUT)
    except Exception as exc:  # a bug or a crash of this job: record it, keep the sweep going
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / TRACEBACK_FILE).write_text("".join(traceback.format_exception(exc)))
        except OSError:  # pragma: no cover
            pass
        return _job_failed(job_dir, num, f"{type(exc).__name__}: {one_line(exc)}", "exception", None)
    finally:
        sys.stderr = saved


def _job_failed(job_dir: Path, num: Optional[int], line: str, kind: str, status: Optional[int]) -> JobFailed:
    line = " ".join(line.split()) or kind
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / ERROR_FILE).write_text(line + "\n")
    except OSError:  # pragma: no cover - unwritable job dir: the message below still says it
        pass
    label = f"job {num}" if num is not None else f"job in {job_dir}"
    sys.stdout.flush()
    sys.stderr.write(f"error: {label} failed: {line}\n")
    sys.stderr.flush()
    note_sweep_failures({str(job_dir): line})
    return JobFailed(line, kind, str(job_dir), num, status)


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
        _take_sweep_failures()
        try:
            result = main_fn(*args, **kwargs)
        finally:
            hutils.run_and_report = original
        failures, index = _take_sweep_failures()
        if failures:
            where = f"; see {index}" if index else ""
            sys.stdout.flush()
            sys.stderr.write(f"error: {len(failures)} job(s) of the sweep failed{where}\n")
            sys.stderr.flush()
            sys.exit(EXIT_SWEEP_FAILED)
        return result

    return wrapper  # type: ignore[return-value]
