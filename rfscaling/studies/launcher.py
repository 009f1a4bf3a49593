"""What the sweeps' submitit launchers add to Hydra's submitit plugin (``hydra/launcher=slurm``,
``hydra/launcher=slurm_local``): a sweep survives what clusters do to jobs every day.

The plugin's launcher waits for its jobs with ``[j.results()[0] for j in jobs]``: the first job
that SLURM cancels or kills (``scancel``, out of memory, node failure, ``kill -9``) raises
``UncompletedJobError`` and takes the sweep command down, index unwritten, while the other
array tasks go on. :class:`SweepJobs` (mixed into the plugin's two launchers in
``hydra_plugins/rfscaling_launcher``) replaces the two methods where that happens:

* :meth:`SweepJobs.launch` (the sweep command): jobs whose directory already holds a finished
  run of the same configuration are not submitted (status ``skipped``); the others are submitted
  as one job array and waited for one by one. A job that ends without a result gets its status
  from the scheduler (``killed``, ``cancelled``, ``timeout``; :func:`job_status`) and the
  scheduler's reason as its error line, in its ``job.json`` (:func:`rfscaling.studies.sweep.record_job`);
  the sweep index is then written as after any multirun, and the app exits with status 1.
  SLURM's account of a job comes from ``scontrol show job`` while the controller remembers it
  (``MinJobAge``, 300 s by default), else from ``sacct``. On a cluster without accounting a job
  that neither knows, and that left no result, is ``missing`` after ``missing_after_min`` (10 min
  by default).
* :meth:`SweepJobs.__call__` (inside the job): the time-limit warning (submitit's signal,
  SIGUSR2, ``signal_delay_s`` before the limit) stops the run where it is; submitit's handler
  then requeues the job (at most ``max_num_timeout`` times), and the requeued job resumes from
  the run's last checkpoint (the presets add ``hooks.checkpoint.enabled=true
  hooks.checkpoint.every=1`` to every job: ``job_overrides``). The work since the last
  evaluation is done again; the files are those of an uninterrupted run. Requeued too often, the
  job is ``timeout``. Everything the job prints goes also into ``<job dir>/output.log``;
  submitit's own lines stay in ``.submitit/`` (once, not in the app's ``<job dir>/train.log``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from rfscaling.errors import TimeLimitSignal, one_line
from rfscaling.studies.sweep import FINISHED, read_job, record_job

__all__ = ["SweepJobs", "job_status", "OPTIONS", "OUTPUT_LOG", "ACTIVE"]

log = logging.getLogger(__name__)

#: The launcher options that are this project's, not submitit's (conf/hydra/launcher/*.yaml).
OPTIONS = {"missing_after_min": 10.0, "poll_s": 10.0, "job_overrides": ()}
#: Everything a job printed (stdout and stderr), in its job directory.
OUTPUT_LOG = "output.log"
#: Seconds a SLURM job that ended may take to show its result file (submitit waits as long).
RESULT_GRACE_S = 15.0
#: SLURM job states of a job that has not ended (a requeued job passes through some of them).
ACTIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                    "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "READY"})


def job_status(state: str) -> str:
    """The index status of a job that ended without a result, from the scheduler's state
    (SLURM's, e.g. ``CANCELLED by 0``, or submitit's local one)."""
    word = state.split()[0].upper() if state.strip() else "UNKNOWN"
    if word == "CANCELLED":
        return "cancelled"
    if word in ("TIMEOUT", "DEADLINE"):
        return "timeout"
    return "missing" if word == "UNKNOWN" else "killed"  # FAILED, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, ...


@dataclass(frozen=True)
class _Job:
    num: int
    overrides: list[str]
    job_dir: Path
    finished: bool


class SweepJobs:
    """Mixin for the submitit plugin's ``LocalLauncher`` and ``SlurmLauncher`` (module docstring).
    Options of its own (popped before the plugin sees them): ``missing_after_min``, ``poll_s``
    (seconds between looks at the jobs), ``job_overrides`` (added to every job's overrides
    unless the job sets the key itself)."""

    def __init__(self, **params: Any) -> None:
        from omegaconf import OmegaConf

        own = {k: params.pop(k, v) for k, v in OPTIONS.items()}
        own = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in own.items()}
        super().__init__(**params)  # type: ignore[call-arg]
        self.missing_after_s = 60.0 * float(own["missing_after_min"])
        self.poll_s = float(own["poll_s"])
        self.job_overrides = [str(o) for o in own["job_overrides"]]

    # ---------------------------------------------------------------------------------- the job

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict) -> Any:
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals

        Singleton.set_state(singleton_state)
        setup_globals()
        cfg = self._job_config(sweep_overrides, job_num, submitit.JobEnvironment().job_id)
        job_dir = _job_dir(cfg)
        usr = submitit.JobEnvironment._usr_sig()
        requeue = signal.getsignal(usr)  # submitit's: checkpoints this call (self.checkpoint), requeues, exits
        signal.signal(usr, _time_limit)
        logging.getLogger("submitit").propagate = False  # its lines once, in .submitit/, not in train.log
        try:
            with _tee(job_dir / OUTPUT_LOG):
                return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                               job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")
        except TimeLimitSignal as stop:
            signal.signal(usr, requeue)
            try:
                requeue(stop.signum, None)  # type: ignore[operator]  # requeued: the process exits here
            except submitit.core.utils.UncompletedJobError as exc:  # requeued too often
                record_job(job_dir, job_num, list(sweep_overrides), "timeout", one_line(exc))
            return JobReturn(overrides=list(sweep_overrides), working_dir=str(job_dir), status=JobStatus.COMPLETED,
                             _return_value="timeout")

    def _job_config(self, overrides: Sequence[str], num: int, job_id: str) -> Any:
        """The job's config, as the plugin composes it (load_sweep_config keeps the sweep's ${now:})."""
        from omegaconf import open_dict

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.id = job_id
            cfg.hydra.job.num = num
        return cfg

    # -------------------------------------------------------------------------- the sweep command

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        from hydra.core.singleton import Singleton

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        jobs = [self._plan(initial_job_idx + i, _with_defaults(list(o), self.job_overrides))
                for i, o in enumerate(job_overrides)]
        for j in jobs:
            if j.finished:
                record_job(j.job_dir, j.num, j.overrides, "skipped")
        todo = [j for j in jobs if not j.finished]
        log.info("submitit %s: %d of %d jobs to run (%d finished before) -> %s", self._EXECUTOR, len(todo), len(jobs),
                 len(jobs) - len(todo), sweep_dir)
        returned: dict[int, Any] = {}
        if todo:
            args = [(j.overrides, "hydra.sweep.dir", j.num, f"job_id_for_{j.num}", Singleton.get_state()) for j in todo]
            try:
                submitted = self._executor().map_array(self, *zip(*args))
            except Exception as exc:  # nothing runs: the scheduler refused the array (partition, limits, ...)
                for j in todo:
                    record_job(j.job_dir, j.num, j.overrides, "missing", f"not submitted: {one_line(exc)}")
            else:
                returned = self._wait(dict(zip((j.num for j in todo), submitted)), {j.num: j for j in todo})
        return [returned.get(j.num) or _accounted(j, self.config.hydra.job.name) for j in jobs]

    def _plan(self, num: int, overrides: list[str]) -> _Job:
        cfg = self._job_config(overrides, num, f"job_id_for_{num}")
        job_dir = _job_dir(cfg)
        return _Job(num, overrides, job_dir, _finished(job_dir, cfg))

    def _executor(self) -> Any:
        """The plugin's executor, built as its ``launch`` builds it."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        init_keys = {"max_num_timeout"}
        init = {f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in init_keys}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"], **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in init_keys | {"submitit_folder"}})
        return executor

    def _wait(self, jobs: dict[int, Any], plan: dict[int, _Job]) -> dict[int, Any]:
        """Until every job returned or was accounted for: ``{num: its JobReturn, or None}``."""
        ended: dict[int, float] = {}  # num -> when first seen ended (or unknown) without a result
        out: dict[int, Any] = {}
        while len(out) < len(jobs):
            records = self._slurm_records() if self._EXECUTOR == "slurm" else {}
            for num, job in jobs.items():
                if num not in out:
                    self._settle(job, plan[num], records.get(str(job.job_id)), ended, out)
            if len(out) < len(jobs):
                time.sleep(self.poll_s)
        return out

    def _settle(self, job: Any, j: _Job, record: Optional[dict], ended: dict[int, float], out: dict) -> None:
        """Put the job's JobReturn (None: accounted for in job.json) into ``out`` once it ended."""
        if job.paths.result_pickle.exists():
            try:
                out[j.num] = job.results()[0]
            except Exception as exc:  # failed in submitit, outside the task (e.g. a signal before it started)
                last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                record_job(j.job_dir, j.num, j.overrides, "timeout" if "not requeued" in last else "failed", last)
                out[j.num] = None
            return
        state, reason = self._state(job, record)
        if state in ACTIVE:
            ended.pop(j.num, None)
            return
        first = ended.setdefault(j.num, time.monotonic())
        unknown = job_status(state) == "missing"
        # a local job's result is written before its process ends; a cluster's file system may lag
        grace = self.missing_after_s if unknown else RESULT_GRACE_S if self._EXECUTOR == "slurm" else 0.0
        if time.monotonic() - first < grace:
            return
        if unknown:
            reason += f"; no result {self.missing_after_s / 60:g} min later (missing_after_min)"
        record_job(j.job_dir, j.num, j.overrides, job_status(state), reason)
        out[j.num] = None

    def _state(self, job: Any, record: Optional[dict]) -> tuple[str, str]:
        """(state, the scheduler's reason in one line) of a job without a result."""
        if self._EXECUTOR != "slurm":
            state = str(job.state)
            return state, f"the job's process ended without a result (submitit local: {state})"
        if record is not None:
            return record.get("JobState", "UNKNOWN"), (
                f"SLURM job {job.job_id}: {record.get('JobState')} (reason {record.get('Reason')}, exit code "
                f"{record.get('ExitCode')}, run time {record.get('RunTime')} of {record.get('TimeLimit')})")
        state, exit_code = _sacct(str(job.job_id))
        if job_status(state) == "missing":
            return "UNKNOWN", f"SLURM job {job.job_id}: unknown to scontrol and sacct"
        return state, f"SLURM job {job.job_id}: {state} (exit code {exit_code}, sacct)"

    @staticmethod
    def _slurm_records() -> dict[str, dict]:
        """``scontrol show job``: {job id (``<array>_<task>`` for array tasks): its fields}; {}
        where scontrol fails (a look is retried at the next poll)."""
        try:
            text = subprocess.run(["scontrol", "show", "job", "--oneliner"], capture_output=True, text=True,
                                  timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        records: dict[str, dict] = {}
        for line in text.splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            array, tasks = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
            if not array or not tasks or tasks == "N/A":
                records[fields.get("JobId", "")] = fields
                continue
            for task in _task_ids(tasks):  # a pending array's tasks share one line: 3-7%64
                records[f"{array}_{task}"] = fields
        return records


def _sacct(job_id: str) -> tuple[str, str]:
    """(state, exit code) of a job from ``sacct``; ("UNKNOWN", "") where sacct fails (no
    accounting: "Slurm accounting storage is disabled") or does not know the job."""
    try:
        text = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job_id,
                               "--format", "State,ExitCode"], capture_output=True, text=True, timeout=60,
                              check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN", ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    state, _, exit_code = (lines[-1] if lines else "UNKNOWN|").partition("|")
    return state, exit_code


def _task_ids(spec: str) -> Iterator[int]:
    for part in spec.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            yield from range(int(lo), int(hi or lo) + 1)


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def _with_defaults(overrides: list[str], defaults: list[str]) -> list[str]:
    """``overrides`` plus those of ``defaults`` whose key they do not set (the user's choice wins)."""
    keys = {_key(o) for o in overrides}
    return overrides + [d for d in defaults if _key(d) not in keys]


def _time_limit(signum: int, frame: Any) -> None:
    raise TimeLimitSignal(signum)


def _job_dir(cfg: Any) -> Path:
    """The job's output directory, resolved as Hydra's run_job resolves it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra = HydraConfig.instance()
    previous = hydra.cfg
    hydra.set_config(cfg)
    try:
        return Path(os.path.abspath(os.path.join(str(OmegaConf.select(cfg, "hydra.sweep.dir")),
                                                 str(OmegaConf.select(cfg, "hydra.sweep.subdir")))))
    finally:
        hydra.cfg = previous


def _finished(job_dir: Path, cfg: Any) -> bool:
    """Whether ``job_dir`` holds a finished run (job.json ok or skipped; summary.json neither
    resumable nor diverged) of exactly this configuration (the saved ``.hydra/config.yaml``)."""
    import copy
    import json

    import yaml
    from omegaconf import OmegaConf, open_dict, read_write

    if (read_job(job_dir) or {}).get("status") not in FINISHED:
        return False
    try:
        summary = json.loads((job_dir / "summary.json").read_text())
        saved = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    if not isinstance(summary, dict) or summary.get("resumable", True) or summary.get("divergence"):
        return False
    task = copy.deepcopy(cfg)  # the job's config as run_job saves it
    with read_write(task), open_dict(task):
        del task["hydra"]
    return saved == yaml.safe_load(OmegaConf.to_yaml(task))


def _accounted(j: _Job, task_name: str) -> Any:
    """A finished JobReturn for a job whose status is in its job.json (Hydra's sweeper reads
    every job's return value; a failed one would abort the sweep)."""
    from hydra.core.utils import JobReturn, JobStatus

    return JobReturn(overrides=j.overrides, working_dir=str(j.job_dir), task_name=task_name,
                     status=JobStatus.COMPLETED, _return_value=(read_job(j.job_dir) or {}).get("status"))


class _Tee:
    """A text stream writing to ``stream`` and to ``copy``."""

    def __init__(self, stream: Any, copy: Any) -> None:
        self._stream, self._copy = stream, copy

    def write(self, text: str) -> int:
        if not self._copy.closed:  # a logging handler may outlive the job's block
            self._copy.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        if not self._copy.closed:
            self._copy.flush()
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the real stream's
        return getattr(self._stream, name)


@contextlib.contextmanager
def _tee(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1) as copy:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, copy), _Tee(sys.stderr, copy)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
