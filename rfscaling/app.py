"""The apps layer: Hydra entry points, and the ONE place where exceptions become exit statuses.

    @hydra_app("train")
    def main(cfg) -> None:
        run(cfg, HydraConfig.get().runtime.output_dir)

``main()`` parses Hydra's command line (sys.argv) and runs the task through ``hydra.main`` on
``conf/<name>.yaml``. Library code and tasks only raise; here, and only here, exceptions are
mapped to the exit statuses of README.md, each failure reported as ONE line ``error: ...`` on
stderr, without a traceback; files a run already wrote are never deleted:

* nothing raised: 0;
* bad input: 2 -- a bad override (syntax, type, unknown key or preset, missing launcher plugin),
  :class:`~rfscaling.errors.ConfigError`, :class:`~rfscaling.errors.MissingPackage`, any other
  ``ValueError``;
* ``rfscaling.train.TrainingDiverged``: 3 (:data:`~rfscaling.errors.EXIT_DIVERGED`);
* ``rfscaling.train.RunInterrupted`` or ``KeyboardInterrupt``: 128 + n on signal n (130, 143);
* any other exception (a bug): Hydra's own report with the traceback, status 1.

Only public Hydra API is used. Before handing over to ``hydra.main``, :func:`check_overrides`
composes the configuration once from the command-line overrides with ``hydra.compose``, so that
a bad override is one line and status 2 before Hydra runs anything. A sweep (``data.P=16,32``,
``seed=range(4)``) is composed with its first value; its other values are checked as well.

**Multirun** (``-m``, or a preset that sets ``hydra.mode: MULTIRUN``): one bad job does not
spoil the others. A job that fails (anything above but a signal) leaves its one line in
``<job dir>/error.txt`` (and the traceback of an unexpected exception in ``traceback.txt``),
prints ``error: job <num> failed: <line>`` and returns, so the launcher carries on. A signal
stops the whole sweep (with the SLURM launchers, only the job it was sent to: the launcher lists
it as killed or cancelled, and :class:`~rfscaling.errors.TimeLimitSignal`, the time-limit
warning, passes through to the launcher, which requeues the job). After the sweep the app exits
with status 1 and one line naming the sweep index ``index.csv`` when any job did not finish; they
are counted by :class:`rfscaling.studies.sweep.SweepIndex`, which sees the jobs of every
launcher, including those run in other processes.

``HYDRA_FULL_ERROR=1`` bypasses all of this: Hydra's own behaviour, full tracebacks, and the
first failed job aborts a sweep.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from rfscaling.errors import (
    ERROR_FILE,
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_SIGNAL_BASE,
    EXIT_SWEEP_FAILED,
    TRACEBACK_FILE,
    TimeLimitSignal,
    one_line,
)

__all__ = ["hydra_app", "Failure", "classify", "check_overrides", "MAX_EXTRA_COMPOSES"]

#: Compositions (~60 ms each) spent before a multirun on the 2nd, 3rd, ... values of swept config
#: groups and hydra.* keys; values of swept plain keys are checked without composing.
MAX_EXTRA_COMPOSES = 8
#: Values checked per swept key (a sweep over range(10**6) is checked on its first ones).
MAX_SWEEP_VALUES = 64

#: Command-line flags of hydra.main that check_overrides understands; with any other (--cfg,
#: --help, -cn, ...) the command line is Hydra's business alone.
_MODE_FLAGS = {"-m": True, "--multirun": True, "-r": False, "--run": False}


@dataclass(frozen=True)
class Failure:
    """A failure as the user sees it: ``kind`` (bad_input | diverged | interrupted | exit |
    exception | sweep), the one-line message, and the exit status of a single run."""

    kind: str
    line: str
    status: int


class _Stop(BaseException):
    """Carries a :class:`Failure` out through ``hydra.main`` to the boundary, which prints it.
    (Hydra reports any Exception itself with a traceback; a BaseException passes, as SystemExit
    does.)"""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.line)
        self.failure = failure


def _raised_by_train(exc: BaseException, name: str) -> bool:
    """Whether ``exc`` is an ``rfscaling.train.<name>`` (TrainingDiverged, RunInterrupted). Matched
    by name, not imported: the module may also run as ``__main__`` (``python -m rfscaling.train``,
    with classes of its own), and the theory app need not import torch to find out."""
    return any(c.__name__ == name and c.__module__ in ("rfscaling.train", "__main__") for c in type(exc).__mro__)


def classify(exc: BaseException, run_dir: Optional[str] = None) -> Failure:
    """The exit status and one-line message for ``exc`` raised by a run writing into ``run_dir``."""
    if _raised_by_train(exc, "RunInterrupted"):
        line = str(exc)
        if run_dir:
            line += (f": files written so far are kept in {run_dir}; with hooks.checkpoint.enabled=true "
                     "the same command resumes from the last checkpoint")
        failure = Failure("interrupted", line, EXIT_SIGNAL_BASE + int(exc.signum))  # type: ignore[attr-defined]
    elif isinstance(exc, KeyboardInterrupt):
        kept = f": files written so far are kept in {run_dir}" if run_dir else ""
        failure = Failure("interrupted", f"interrupted by SIGINT{kept}", EXIT_SIGNAL_BASE + signal.SIGINT)
    elif isinstance(exc, SystemExit):
        code = exc.code
        status = 0 if code is None else code if isinstance(code, int) else 1
        line = f"exit status {code}" if isinstance(code, int) or code is None else str(code)
        failure = Failure("interrupted" if status >= EXIT_SIGNAL_BASE else "exit", line, status)
    elif _raised_by_train(exc, "TrainingDiverged"):
        where = f" (outputs up to the last finite evaluation are in {run_dir})" if run_dir else ""
        failure = Failure("diverged", f"{exc}{where}", EXIT_DIVERGED)
    elif isinstance(exc, ValueError):  # ConfigError, MissingPackage, bad arguments
        failure = Failure("bad_input", one_line(exc), EXIT_BAD_INPUT)
    else:
        failure = Failure("exception", f"{type(exc).__name__}: {one_line(exc)}", 1)
    return Failure(failure.kind, " ".join(failure.line.split()) or failure.kind, failure.status)


def _exit(failure: Failure) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"error: {failure.line}\n")
    sys.stderr.flush()
    raise SystemExit(failure.status)


# --------------------------------------------------------------------------------------------
# Bad overrides: compose once before hydra.main


def check_overrides(config_name: str, argv: Sequence[str]) -> None:
    """Compose ``conf/<config_name>.yaml`` with the overrides of the command line ``argv`` (as
    ``hydra.main`` is about to) and raise ``_Stop`` (bad input) where Hydra would reject one.
    Command lines with flags other than -m/--multirun/-r/--run are left to Hydra."""
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    overrides, multirun = [], False
    for arg in argv:
        if arg in _MODE_FLAGS:
            multirun |= _MODE_FLAGS[arg]
        elif arg.startswith("-"):
            return
        else:
            overrides.append(arg)
    try:
        _compose_all(config_name, overrides, multirun)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        line = one_line(exc)
        if isinstance(exc, OverrideParseException):  # its message does not say which override
            line = f"{exc.override}: {line}"
        raise _Stop(Failure("bad_input", line, EXIT_BAD_INPUT)) from exc


def _compose_all(config_name: str, overrides: list[str], multirun: bool) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import ConfigCompositionException
    from hydra.types import RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from rfscaling.config import CONF_DIR

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)  # OverrideParseException on bad syntax
    first: list[str] = []
    sweeps = []  # (position in first, key, the other values)
    for text, o in zip(overrides, parsed):
        if not o.is_sweep_override():
            first.append(text)
            continue
        if not o.is_discrete_sweep() or o.value_type == ValueType.GLOB_CHOICE_SWEEP:
            return  # interval and glob sweeps: the sweeper's business
        values = list(itertools.islice(o.sweep_string_iterator(), MAX_SWEEP_VALUES))
        if values:  # an empty sweep runs no job
            key = o.get_key_element()
            first.append(f"{key}={values[0]}")
            plain = key == o.key_or_group and not key.startswith("hydra.")
            sweeps.append((len(first) - 1, key, plain, values[1:]))

    def compose_with(overrides: list[str]):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name=config_name):
        cfg = compose_with(first)
        if not sweeps:
            return
        if not multirun and cfg.hydra.mode != RunMode.MULTIRUN:
            compose_with(overrides)  # a sweep without --multirun: Hydra's "Ambiguous value" error
            return
        budget = MAX_EXTRA_COMPOSES
        absent = object()
        for i, key, plain, rest in sweeps:
            node = OmegaConf.select(cfg, key, default=absent, throw_on_missing=False) if plain else absent
            leaf = node is not absent and not OmegaConf.is_config(node)
            for value in rest:
                if leaf:  # as Hydra applies a plain override (ConfigLoaderImpl._apply_overrides_to_config)
                    try:
                        OmegaConf.update(cfg, key, parser.parse_override(f"{key}={value}").value(), merge=True)
                    except OmegaConfBaseException as exc:
                        raise ConfigCompositionException(f"Error merging override {key}={value}") from exc
                elif budget > 0:
                    budget -= 1
                    compose_with([*first[:i], f"{key}={value}", *first[i + 1:]])


# --------------------------------------------------------------------------------------------
# The task inside hydra.main: contain a multirun job's failure, carry a single run's out


class _Sweep:
    """Failures of the multirun jobs run in this process (the sweep index also counts the jobs
    of launchers that run them elsewhere)."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}

    def record(self, failure: Failure, exc: BaseException, job_dir: str, num: Optional[int]) -> None:
        path = Path(job_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / ERROR_FILE).write_text(failure.line + "\n")
            if failure.kind == "exception":
                (path / TRACEBACK_FILE).write_text("".join(traceback.format_exception(exc)))
        except OSError:  # pragma: no cover - unwritable job dir: the line below still says it
            pass
        self.failed[job_dir] = failure.line
        label = f"job {num}" if num is not None else f"job in {job_dir}"
        sys.stdout.flush()
        sys.stderr.write(f"error: {label} failed: {failure.line}\n")
        sys.stderr.flush()


def _job_context() -> tuple[Optional[str], Optional[int], bool]:
    """(output dir, job number, whether in a multirun) of the Hydra job running now."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None, None, False
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    num = OmegaConf.select(hc, "job.num", throw_on_missing=False) if multirun else None
    return str(hc.runtime.output_dir), (int(num) if num is not None else None), multirun


def _contained(task: Callable[[Any], Any], sweep: _Sweep) -> Callable[[Any], Any]:
    @functools.wraps(task)  # hydra.main names the job after the task's module
    def job(cfg: Any) -> Any:
        try:
            return task(cfg)
        except TimeLimitSignal:
            raise  # the submitit launcher requeues the job (rfscaling/studies/launcher.py)
        except BaseException as exc:
            run_dir, num, multirun = _job_context()
            if isinstance(exc, SystemExit) and not multirun:
                raise  # the task chose its exit status
            failure = classify(exc, run_dir)
            if failure.status == 0:
                return None
            if multirun and failure.kind != "interrupted":
                sweep.record(failure, exc, run_dir or ".", num)
                return failure  # Hydra sees a finished job; the sweep goes on
            if failure.kind == "exception":
                raise  # a bug: Hydra's usual report with the traceback
            raise _Stop(failure) from exc

    return job


# --------------------------------------------------------------------------------------------
# The boundary


def hydra_app(config_name: str) -> Callable[[Callable[[Any], Any]], Callable[..., Any]]:
    """Decorator for a Hydra entry point on ``conf/<config_name>.yaml`` (module docstring).

    The decorated ``main()`` parses Hydra's command line from sys.argv; ``main(cfg)`` runs the
    task on a composed config (Hydra's pass-through), with the same error boundary."""

    def decorate(task: Callable[[Any], Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def main(cfg: Any = None) -> Any:
            import hydra

            from rfscaling.config import CONF_DIR, register_configs

            register_configs()  # the schemas conf/*.yaml are merged into
            entry = hydra.main(config_path=CONF_DIR, config_name=config_name, version_base="1.3")
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                return entry(task)(cfg)
            from rfscaling.studies.sweep import SweepIndex

            sweep = _Sweep()
            seen = len(SweepIndex.finished)
            try:
                if cfg is None:
                    check_overrides(config_name, sys.argv[1:])
                result = entry(_contained(task, sweep))(cfg)
            except _Stop as stop:
                _exit(stop.failure)
            except KeyboardInterrupt as exc:  # not inside a task: before or between jobs
                _exit(classify(exc))
            except BaseException as exc:
                if _raised_by_train(exc, "RunInterrupted"):
                    _exit(classify(exc))
                raise
            indexes = SweepIndex.finished[seen:]
            failed = sum(r.failed for r in indexes) if indexes else len(sweep.failed)
            if failed:
                where = indexes[-1].index if indexes else f"{ERROR_FILE} in the job directories"
                _exit(Failure("sweep", f"{failed} job(s) of the sweep failed; see {where}", EXIT_SWEEP_FAILED))
            return result

        return main

    return decorate
