"""Error types, exit statuses and one-line messages.

Library code raises :class:`ConfigError` (a :class:`ValueError`) for bad settings,
:class:`MissingPackage` for an optional package that is not installed, and plain ``ValueError``
for bad arguments; the training code raises ``rfscaling.train.TrainingDiverged`` and, on
SIGINT/SIGTERM, ``rfscaling.train.RunInterrupted``. Nothing here catches anything: the apps'
one boundary, :mod:`rfscaling.app`, maps exceptions to the exit statuses below (0 done, 2 bad
input, 3 training diverged, 128 + n on signal n, 1 after a multirun in which some jobs failed)
and each failure to ONE ``error: ...`` line (:func:`one_line`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "MissingPackage", "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_SWEEP_FAILED",
           "EXIT_SIGNAL_BASE", "ERROR_FILE", "TRACEBACK_FILE", "one_line", "TimeLimitSignal"]

#: Exit status for bad input (a bad value, key, preset or override; a missing optional package).
EXIT_BAD_INPUT = 2
#: Exit status when training diverged (``rfscaling.train.TrainingDiverged``).
EXIT_DIVERGED = 3
#: Exit status of a multirun in which at least one job failed (the others ran to the end).
EXIT_SWEEP_FAILED = 1
#: A run stopped by signal n exits with EXIT_SIGNAL_BASE + n (130 SIGINT, 143 SIGTERM).
EXIT_SIGNAL_BASE = 128
#: One-line error of a failed multirun job, written into its job directory.
ERROR_FILE = "error.txt"
#: Traceback of a multirun job that failed with an unexpected exception (not bad input).
TRACEBACK_FILE = "traceback.txt"


class TimeLimitSignal(BaseException):
    """The scheduler's warning before a sweep job's time limit (submitit's signal, SIGUSR2),
    raised in the job by the project's submitit launchers (rfscaling/studies/launcher.py). A
    BaseException that the error boundary lets through: the launcher requeues the job, which
    resumes from the run's last checkpoint."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"time-limit signal {signum}")
        self.signum = signum


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


_PLUGIN_AND_REPO = "hydra-submitit-launcher (and, started from the repository root, its hydra_plugins/)"
#: Hydra launcher plugins by the name Hydra cannot load without them, and what installs them.
LAUNCHER_PACKAGES = {
    "submitit_slurm": ("hydra-submitit-launcher", "'rfscaling[slurm]'"),
    "submitit_local": ("hydra-submitit-launcher", "'rfscaling[slurm]'"),
    "joblib": ("hydra-joblib-launcher", "hydra-joblib-launcher"),
    # hydra/launcher=slurm and slurm_local: the plugin above and hydra_plugins/rfscaling_launcher of
    # the repository (found when the command starts from the repository root)
    "rfscaling_submitit_slurm": (_PLUGIN_AND_REPO, "'rfscaling[slurm]'"),
    "rfscaling_submitit_local": (_PLUGIN_AND_REPO, "'rfscaling[slurm]'"),
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

