"""Sweep-level index of a Hydra multirun: one row per job, whether it ran, failed or was skipped.

Registered in ``conf/train.yaml`` under ``hydra.callbacks.sweep_index``, so every multirun of the
training app (``-m``, or an ``experiment=<name>`` preset, which sets ``hydra.mode: MULTIRUN``)
ends with

* ``<sweep dir>/index.csv`` and ``index.json`` -- per job: ``job`` (Hydra's job number),
  ``status`` (below), ``error`` (the one-line error of a failed job, or the scheduler's reason
  for a job that did not finish), ``run_dir``, ``overrides`` (the job's overrides, space
  separated), one column per overridden key, and the key numbers of its ``summary.json`` (final
  and early-stopping errors with their standard errors and the DMFT values, compute, wall time);
* a line on stdout ``sweep index: <n> ok, <n> failed, <n> skipped[, <n> killed, ...] -> <sweep dir>/index.csv``.

Statuses: ``ok``; ``failed`` (the job raised: its line from ``error.txt``); ``skipped`` (a
finished run of the same configuration was already in its directory: re-running a sweep into
the same ``hydra.sweep.dir``; the submitit launchers skip these before submission); and, for a
job that left no result, written by the submitit launchers (rfscaling/studies/launcher.py) from
the scheduler's account: ``killed`` (its process died: ``kill -9``, out of memory, node
failure), ``cancelled`` (``scancel``), ``timeout`` (past its time limit, requeued too often or
not at all) and ``missing`` (the scheduler lost track of it; also any job found still
``running`` when the index is rebuilt). A failed job does not stop the sweep (the error
boundary in :mod:`rfscaling.app` writes ``<job dir>/error.txt`` and carries on); the app's exit
status is 1 when any job did not finish (every status but ``ok`` and ``skipped``): the boundary
reads :attr:`SweepIndex.finished`.

Each job also leaves ``<job dir>/job.json`` (written by the job's own process, so this works for
every launcher: basic, joblib, submitit); the index is assembled from those files, so it can be
rebuilt for any sweep directory, e.g. after an interrupted sweep::

    python -m rfscaling.studies.sweep runs/multirun/2026-01-01/12-00-00-train
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Optional

from hydra.experimental.callback import Callback

from rfscaling.errors import ERROR_FILE, TRACEBACK_FILE

__all__ = ["SweepIndex", "SweepResult", "build_index", "write_index", "summary_numbers", "record_job", "read_job",
           "JOB_FILE", "INDEX_CSV", "INDEX_JSON", "STATUSES", "FINISHED", "counts_line", "main"]

JOB_FILE = "job.json"
INDEX_CSV = "index.csv"
INDEX_JSON = "index.json"
START_FILE = ".sweep_started"
STATUSES = ("ok", "failed", "skipped", "killed", "cancelled", "timeout", "missing")
#: Statuses of jobs that finished; any other makes the sweep's exit status 1.
FINISHED = ("ok", "skipped")

#: summary.json entries copied into the index: column -> path in the summary
SUMMARY_COLUMNS = {
    "E_g": ("final", "E_g"),
    "E_g_se": ("final", "E_g_se"),
    "E_g_theory": ("final", "E_g_theory"),
    "bias": ("final", "bias"),
    "variance": ("final", "variance"),
    "final_time": ("final", "time"),
    "es_time": ("early_stopping", "stopping_time"),
    "es_E_g": ("early_stopping", "E_g"),
    "es_E_g_se": ("early_stopping", "E_g_se"),
    "es_theory_time": ("early_stopping", "theory_optimum_time"),
    "es_theory_E_g": ("early_stopping", "theory_optimum_E_g"),
    "compute_macs": ("compute_macs",),
    "wall_time_s": ("wall_time_s",),
    "dynamics": ("dynamics",),
    "integrator": ("integrator",),
    "P": ("P",),
    "N": ("n_parameters",),
    "datasets": ("datasets",),
    "replicas": ("replicas",),
    "stop_reason": ("stop_reason",),
}
FIXED_COLUMNS = ("job", "status", "error", "run_dir", "overrides")


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _is_multirun(config) -> bool:
    try:
        from hydra.types import RunMode

        return config.hydra.mode == RunMode.MULTIRUN
    except Exception:  # pragma: no cover
        return False


def _get(d: Any, path: Iterable[str]) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def summary_numbers(summary: Optional[dict]) -> dict:
    """The index columns taken from a summary.json dict (None where absent)."""
    out = {}
    for col, path in SUMMARY_COLUMNS.items():
        v = _get(summary or {}, path)
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[col] = v
    return out


def _one_line(exc: Any) -> str:
    try:
        from rfscaling.errors import one_line

        return f"{type(exc).__name__}: {one_line(exc)}" if isinstance(exc, BaseException) else str(exc)
    except Exception:  # pragma: no cover
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class SweepResult:
    """What one multirun ended with: the index written, the number of jobs, and how many of them
    did not finish (any status but ``ok`` and ``skipped``)."""

    index: Path
    jobs: int
    failed: int


class SweepIndex(Callback):
    """Hydra callback that writes the sweep index (module docstring). Does nothing in RUN mode.

    ``finished``: the :class:`SweepResult` of every multirun this process ran, in order (Hydra
    instantiates the callback itself, so the apps' boundary, :func:`rfscaling.app.hydra_app`,
    reads the entries its own multirun appended to choose exit status 1)."""

    finished: ClassVar[list[SweepResult]] = []

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / START_FILE).write_text(f"{time.time():.6f}\n")

    def on_job_start(self, config, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        job_dir.mkdir(parents=True, exist_ok=True)
        for name in (ERROR_FILE, TRACEBACK_FILE):  # from an earlier attempt in the same directory
            stale = job_dir / name
            if stale.exists():
                stale.unlink()
        earlier = read_job(job_dir) or {}  # a requeued job starts again in the same directory
        _atomic_json(job_dir / JOB_FILE, {
            "job": int(config.hydra.job.num), "status": "running", "error": None,
            "overrides": list(config.hydra.overrides.task), "started": time.time(), "ended": None,
            "pid": os.getpid(), "host": os.uname().nodename, "slurm_job": _slurm_job(),
            "attempt": int(earlier.get("attempt", 0)) + 1 if earlier.get("status") == "running" else 1,
        })

    def on_job_end(self, config, job_return, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        from hydra.core.utils import JobStatus

        job_dir = Path(str(config.hydra.runtime.output_dir))
        rec = read_job(job_dir) or {"job": int(config.hydra.job.num), "overrides": list(config.hydra.overrides.task),
                                     "started": None}
        error = None
        value = getattr(job_return, "_return_value", None)
        if job_return.status == JobStatus.FAILED:  # escaped the error boundary (HYDRA_FULL_ERROR=1)
            status, error = "failed", _one_line(value)
        elif (job_dir / ERROR_FILE).exists():
            status = "failed"
            error = (job_dir / ERROR_FILE).read_text().strip() or "failed"
        else:
            status = "ok"
            summary = job_dir / "summary.json"
            started = rec.get("started")
            if started is not None and summary.exists() and summary.stat().st_mtime < started:
                status = "skipped"  # a finished run of the same configuration was already there
        rec.update(status=status, error=error, ended=time.time())
        _atomic_json(job_dir / JOB_FILE, rec)

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        since = None
        try:
            since = float((sweep_dir / START_FILE).read_text())
        except (OSError, ValueError):
            pass
        rows = build_index(sweep_dir, since=since)
        csv_path = write_index(sweep_dir, rows)
        print(f"sweep index: {counts_line(rows)} -> {csv_path}", flush=True)
        SweepIndex.finished.append(SweepResult(csv_path, len(rows), sum(r["status"] not in FINISHED for r in rows)))


def _slurm_job() -> Optional[str]:
    """The SLURM job this process runs in (``110_0`` for a task of array 110: what ``scancel``
    takes), from SLURM's environment; None outside SLURM."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID")


def counts_line(rows: list[dict]) -> str:
    """``3 ok, 1 failed, 0 skipped, 1 killed``: ok, failed and skipped always, the others where
    any job has them."""
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("ok", "failed", "skipped"))


def read_job(job_dir: str | os.PathLike) -> Optional[dict]:
    """The job's ``job.json`` (None where absent or unreadable)."""
    try:
        rec = json.loads((Path(job_dir) / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def record_job(job_dir: str | os.PathLike, num: int, overrides: list[str], status: str,
               error: Optional[str] = None) -> None:
    """Set the status (and error line) in a job's ``job.json``, keeping what the job wrote
    itself; for the launchers, which account for jobs that left no result or never ran."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    rec = read_job(job_dir) or {"job": num, "overrides": list(overrides), "started": time.time()}
    rec.update(status=status, error=error, ended=time.time())  # ended: in this sweep's index (``since``)
    _atomic_json(job_dir / JOB_FILE, rec)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Job directories below ``sweep_dir`` (any depth up to 3): those with ``.hydra/hydra.yaml``,
    or a ``job.json`` alone (a job the launcher accounted for that never started)."""
    out = []
    for depth in ("*", "*/*", "*/*/*"):
        out += [p.parent.parent for p in sweep_dir.glob(f"{depth}/.hydra/hydra.yaml")]
        out += [p.parent for p in sweep_dir.glob(f"{depth}/{JOB_FILE}")]
    return sorted(set(out))


def _read_overrides(job_dir: Path) -> list[str]:
    import yaml

    try:
        ov = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
        return [str(o) for o in ov] if isinstance(ov, list) else []
    except (OSError, ValueError, yaml.YAMLError):
        return []


def _job_num(job_dir: Path) -> Optional[int]:
    import yaml

    try:
        h = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())
        return int(h["hydra"]["job"]["num"])
    except Exception:
        try:
            return int(job_dir.name)
        except ValueError:
            return None


def build_index(sweep_dir: str | os.PathLike, since: Optional[float] = None) -> list[dict]:
    """Rows of the index of ``sweep_dir`` (sorted by job number). ``since``: drop job dirs not
    touched by a sweep started at that time (left over from an earlier sweep into the same dir)."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for job_dir in _job_dirs(sweep_dir):
        rec = read_job(job_dir)
        if since is not None:  # touched by this sweep: started, or accounted for by its launcher
            stamps = [t for t in ((rec or {}).get("started"), (rec or {}).get("ended")) if t is not None]
            stamp = max(stamps) if stamps else (job_dir / ".hydra" / "hydra.yaml").stat().st_mtime
            if stamp < since - 1.0:
                continue
        summary = None
        try:
            summary = json.loads((job_dir / "summary.json").read_text())
        except (OSError, ValueError):
            pass
        error_file = job_dir / ERROR_FILE
        if rec is not None and rec.get("status") in STATUSES:
            status, error = rec["status"], rec.get("error")
        elif error_file.exists():
            status, error = "failed", None
        elif rec is None and summary is not None:  # a job of a sweep without the callback
            status, error = "ok", None
        else:
            status, error = "missing", "the job left no result (killed?)"
        if status == "failed" and not error and error_file.exists():
            error = error_file.read_text().strip()
        overrides = (rec or {}).get("overrides") or _read_overrides(job_dir)
        num = (rec or {}).get("job")
        row = {
            "job": num if num is not None else _job_num(job_dir),
            "status": status,
            "error": error or "",
            "run_dir": str(job_dir),
            "overrides": " ".join(overrides),
        }
        for o in overrides:
            key, _, value = o.partition("=")
            row[f"{key.lstrip('+~')}"] = value
        row.update(summary_numbers(summary) if status in ("ok", "skipped") else summary_numbers(None))
        rows.append(row)
    rows.sort(key=lambda r: (r["job"] is None, r["job"] if r["job"] is not None else 0, r["run_dir"]))
    return rows


def write_index(sweep_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``index.csv`` and ``index.json`` into ``sweep_dir``; returns the CSV path."""
    sweep_dir = Path(sweep_dir)
    over_cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in FIXED_COLUMNS and k not in SUMMARY_COLUMNS and k not in over_cols:
                over_cols.append(k)
    columns = [*FIXED_COLUMNS, *over_cols, *SUMMARY_COLUMNS]
    csv_path = sweep_dir / INDEX_CSV
    tmp = csv_path.with_name(f".{INDEX_CSV}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})
    os.replace(tmp, csv_path)
    _atomic_json(sweep_dir / INDEX_JSON, {"sweep_dir": str(sweep_dir), "columns": columns, "jobs": rows})
    return csv_path


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rfscaling.studies.sweep",
                                description="(Re)build index.csv / index.json of a sweep directory.")
    p.add_argument("sweep_dir", type=Path)
    a = p.parse_args(argv)
    if not a.sweep_dir.is_dir():
        sys.stderr.write(f"error: {a.sweep_dir}: not a directory\n")
        return 2
    rows = build_index(a.sweep_dir)
    path = write_index(a.sweep_dir, rows)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    print(f"{len(rows)} jobs ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}) -> {path}")
    return 1 if any(r["status"] not in FINISHED for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
