"""Sweeps through the submitit launchers survive what clusters do to jobs (issue 17).

With ``hydra/launcher=slurm_local`` (submitit's local executor with the project's bookkeeping,
rfscaling/studies/launcher.py; no cluster needed):

* a job's process killed with SIGKILL mid-run: the sweep command ends with the full index, the job
  listed ``killed`` with a reason, the other job's results intact, exit status 1, no traceback;
* the time-limit signal (SIGUSR2, what SLURM sends ``signal_delay_s`` before the limit): the job
  is requeued, resumes from its checkpoint, and ends with the files of an uninterrupted run; with
  ``max_num_timeout=0`` it is listed ``timeout`` instead;
* re-running the sweep into its directory submits nothing for the finished jobs.

"Mid-run" is a point the run chose (``RFSCALING_PAUSE_AT_EVAL``: the run stops itself with
SIGSTOP after that evaluation, rfscaling/hooks/pause.py), never a guess with a sleep. The signal
is sent by the test, as submitit's local controller or SLURM would send it.

Slow and opt-in, skipped where ``sbatch`` is absent or no cluster answers, on a real SLURM
cluster (docs/studies.md has a single-node recipe): a sweep with one job ``scancel``ed and one
``kill -9``ed; a job past its time limit, requeued by SLURM's own signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from rfscaling.hooks.pause import PAUSE_ENV
from rfscaling.studies.launcher import job_status

REPO = Path(__file__).resolve().parent.parent
TINY = ["model.N=32", "ensemble.datasets=2", "ensemble.replicas=2", "dynamics.t_max=3", "dynamics.n_evals=6",
        "device=cpu", "hooks.progress=false", "hooks.tensorboard=false"]
PAUSE_AT = 2  # of the 6 evaluations


def _env(**extra: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0", PYTHONPATH=str(REPO), **extra)


def _sweep(args: list[str], cwd: Path, pause: bool) -> subprocess.Popen:
    env = _env(**{PAUSE_ENV: str(PAUSE_AT)}) if pause else _env()
    return subprocess.Popen([sys.executable, "-m", "rfscaling.train", "-m", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _job_file(sweep: Path, num: int) -> Path:
    found = list(sweep.glob(f"{num:03d}_*/job.json"))
    return found[0] if found else sweep / f"{num:03d}_none" / "job.json"


def _stopped(pid: int) -> bool:
    try:  # field 3 of /proc/<pid>/stat: "T" stopped by a signal
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def _paused_pids(sweep: Path, nums: list[int], proc: subprocess.Popen, timeout: float = 300.0) -> dict[int, int]:
    """Wait until each job's process has stopped itself at evaluation PAUSE_AT; {num: pid}."""
    t0 = time.monotonic()
    while True:
        pids = {}
        for n in nums:
            try:
                pids[n] = json.loads(_job_file(sweep, n).read_text())["pid"]
            except (OSError, ValueError, KeyError):
                pass
        if len(pids) == len(nums) and all(_stopped(p) for p in pids.values()):
            return pids
        if proc.poll() is not None:
            pytest.fail(f"sweep ended (rc={proc.returncode}) before its jobs paused:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the jobs to pause")
        time.sleep(0.05)


def _index(sweep: Path) -> pd.DataFrame:
    return pd.read_csv(sweep / "index.csv", keep_default_na=False).set_index("job")


@pytest.mark.parametrize("preset,executor", [("slurm", "Slurm"), ("slurm_local", "Local")])
def test_presets_select_the_projects_launchers(preset, executor):
    """Both presets compose to the project's launcher with its options; a checkpoint at every
    evaluation for every job (what a requeued job resumes from)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rfscaling.config import CONF_DIR, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"hydra/launcher={preset}", "hydra.launcher.missing_after_min=2"],
                          return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_ == f"hydra_plugins.rfscaling_launcher.{executor}Launcher"
    assert launcher.max_num_timeout == 3 and launcher.missing_after_min == 2
    assert list(launcher.job_overrides) == ["hooks.checkpoint.enabled=true", "hooks.checkpoint.every=1"]


def test_status_from_scheduler_states():
    """SLURM's states (scontrol's JobState, sacct's State) and submitit's local ones."""
    assert job_status("CANCELLED by 0") == job_status("CANCELLED") == "cancelled"
    assert job_status("TIMEOUT") == job_status("DEADLINE") == "timeout"
    for state in ("FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "COMPLETED", "FINISHED",
                  "INTERRUPTED"):
        assert job_status(state) == "killed", state
    assert job_status("UNKNOWN") == job_status("") == "missing"


class _FakeJob:
    """A submitted job as the launcher sees it: an id and a result file that never appears."""

    def __init__(self, job_id: str, folder: Path) -> None:
        self.job_id = job_id
        self.paths = type("Paths", (), {"result_pickle": folder / f"{job_id}_result.pkl"})()


def _slurm_launcher(records: dict, **options):
    from rfscaling.studies.launcher import SweepJobs

    class Base:
        def __init__(self, **params):
            self.params = params

    class Launcher(SweepJobs, Base):
        _EXECUTOR = "slurm"

        @staticmethod
        def _slurm_records():
            return records

    return Launcher(**options)


def test_jobs_the_scheduler_lost_are_missing_after_the_documented_time(tmp_path, monkeypatch):
    """Ended without a result: the status from scontrol's state while it remembers the job, else
    from sacct's; a job neither knows (no accounting, scontrol forgot it) is ``missing`` once
    ``missing_after_min`` has passed since it was first seen so (0 here: at the first look)."""
    from rfscaling.studies import launcher as launcher_module
    from rfscaling.studies.launcher import _Job
    from rfscaling.studies.sweep import read_job

    monkeypatch.setattr(launcher_module, "RESULT_GRACE_S", 0.0)
    sacct = {"7_2": ("CANCELLED by 0", "0:0")}
    monkeypatch.setattr(launcher_module, "_sacct", lambda job_id: sacct.get(job_id, ("UNKNOWN", "")))
    records = {"7_1": {"JobState": "OUT_OF_MEMORY", "Reason": "OutOfMemory", "ExitCode": "0:125",
                       "RunTime": "00:00:09", "TimeLimit": "01:00:00"}}
    launcher = _slurm_launcher(records, missing_after_min=0.0, poll_s=0.0)
    assert launcher.params == {}  # the project's options are not handed to submitit
    plan = {n: _Job(n, [f"seed={n}"], tmp_path / f"{n:03d}", False) for n in (0, 1, 2)}
    jobs = {n: _FakeJob(f"7_{n}", tmp_path) for n in plan}
    assert launcher._wait(jobs, plan) == {0: None, 1: None, 2: None}
    lost, oom, cancelled = (read_job(plan[n].job_dir) for n in plan)
    assert lost["status"] == "missing" and lost["overrides"] == ["seed=0"]
    assert lost["error"] == "SLURM job 7_0: unknown to scontrol and sacct; no result 0 min later (missing_after_min)"
    assert oom["status"] == "killed" and oom["error"].startswith("SLURM job 7_1: OUT_OF_MEMORY (reason OutOfMemory")
    assert cancelled["status"] == "cancelled"
    assert cancelled["error"] == "SLURM job 7_2: CANCELLED by 0 (exit code 0:0, sacct)"


def test_job_overrides_do_not_override_the_users_choice():
    from rfscaling.studies.launcher import _with_defaults

    defaults = ["hooks.checkpoint.enabled=true", "hooks.checkpoint.every=1"]
    assert _with_defaults(["data.P=12", "hooks.checkpoint.every=5"], defaults) == [
        "data.P=12", "hooks.checkpoint.every=5", "hooks.checkpoint.enabled=true"]
    assert _with_defaults(["++hooks.checkpoint.enabled=false"], defaults) == [
        "++hooks.checkpoint.enabled=false", "hooks.checkpoint.every=1"]


def test_a_pending_array_line_covers_its_tasks():
    from rfscaling.studies.launcher import _task_ids

    assert list(_task_ids("3-5%64")) == [3, 4, 5] and list(_task_ids("1,4-5")) == [1, 4, 5]
    assert list(_task_ids("2")) == [2]


def test_analysis_names_left_out_jobs_in_one_line(tmp_path):
    if str(REPO) not in sys.path:  # the analysis scripts live next to the package
        sys.path.insert(0, str(REPO))
    from analysis.common import MAX_NAMED, left_out_line

    runs = pd.DataFrame({"job": [0, 1, 2, 3], "status": ["ok", "killed", "skipped", "missing"]})
    line = left_out_line(runs, tmp_path)
    assert line == (f"warning: 2 of 4 jobs left out (did not finish): job 1 killed, job 3 missing; "
                    f"see {tmp_path / 'index.csv'}")
    assert left_out_line(runs[runs.status.isin(["ok", "skipped"])], tmp_path) is None
    many = pd.DataFrame({"job": range(MAX_NAMED + 3), "status": "timeout"})
    line = left_out_line(many, tmp_path)
    assert line.count("timeout") == MAX_NAMED and " and 3 more;" in line


def test_killed_job_is_listed_and_the_others_kept(tmp_path):
    """Job 0's process is killed (SIGKILL) at evaluation 2; job 1 goes on. The sweep ends with
    the index listing job 0 as killed and job 1 ok with its full curve; exit 1; no traceback.
    Re-run into the same directory: job 1 is not submitted again (skipped), job 0 runs."""
    sweep = tmp_path / "sweep"
    args = ["hydra/launcher=slurm_local", "data.P=12,16", *TINY, f"hydra.sweep.dir={sweep}"]
    proc = _sweep(args, tmp_path, pause=True)
    pids = _paused_pids(sweep, [0, 1], proc)
    os.kill(pids[0], signal.SIGKILL)
    os.kill(pids[1], signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "sweep index: 1 ok, 0 failed, 0 skipped, 1 killed" in out, out
    assert err.strip().splitlines()[-1].startswith("error: 1 job(s) of the sweep failed; see ")
    idx = _index(sweep)
    assert list(idx["status"]) == ["killed", "ok"]
    assert "ended without a result" in idx.loc[0, "error"]
    assert idx.loc[1, "error"] == "" and float(idx.loc[1, "E_g"]) > 0
    job1 = Path(idx.loc[1, "run_dir"])
    assert pd.read_csv(job1 / "metrics.csv")["time"].iloc[-1] >= 3.0  # ran to t_max
    assert json.loads((job1 / "summary.json").read_text())["final"]["E_g"] == pytest.approx(float(idx.loc[1, "E_g"]))
    assert "final t=" in (job1 / "output.log").read_text()  # the job's own output in its folder
    assert json.loads((sweep / "index.json").read_text())["jobs"][0]["status"] == "killed"

    again = subprocess.run([sys.executable, "-m", "rfscaling.train", "-m", *args], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 of 2 jobs to run (1 finished before)" in again.stdout + again.stderr
    assert list(_index(sweep)["status"]) == ["ok", "skipped"]
    assert len(list((sweep / ".submitit").glob("*/*_submitted.pkl"))) == 3  # 2 + 1 submissions


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv")


@pytest.mark.parametrize("requeues", [1, 0])
def test_time_limit_signal_requeues_and_resumes(tmp_path, requeues):
    """SIGUSR2 at evaluation 2 (timeout_min=5: the real limit is never reached; the signal is
    the test's, as the scheduler's would be): with one requeue allowed the job restarts from its
    checkpoint and ends with metrics.csv equal, to the bit, to that of an uninterrupted run of
    the same configuration; with none allowed it is listed as timeout (exit 1, no traceback)."""
    sweep = tmp_path / "sweep"
    args = ["data.P=12", *TINY, "hooks.checkpoint.enabled=true", "hooks.checkpoint.every=1"]
    proc = _sweep(["hydra/launcher=slurm_local", "hydra.launcher.timeout_min=5",
                   f"hydra.launcher.max_num_timeout={requeues}", *args, f"hydra.sweep.dir={sweep}"], tmp_path,
                  pause=True)
    pid = _paused_pids(sweep, [0], proc)[0]
    os.kill(pid, signal.SIGUSR2)
    os.kill(pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=300)
    assert "Traceback" not in err, err[-3000:]
    idx = _index(sweep)
    rec = json.loads(_job_file(sweep, 0).read_text())
    if requeues == 0:
        assert proc.returncode == 1 and idx.loc[0, "status"] == "timeout", err[-3000:]
        assert "timed-out too many times" in idx.loc[0, "error"]
        return
    assert proc.returncode == 0, err[-3000:]
    assert idx.loc[0, "status"] == "ok" and rec["attempt"] == 2  # requeued once
    run_dir = Path(idx.loc[0, "run_dir"])
    assert "resuming from checkpoint at step" in (run_dir / "train.log").read_text()
    ref = tmp_path / "ref"
    p = subprocess.run([sys.executable, "-m", "rfscaling.train", *args, f"hydra.run.dir={ref}"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    pd.testing.assert_frame_equal(_metrics(run_dir), _metrics(ref), check_exact=True)
    a, b = (json.loads((d / "summary.json").read_text())["final"] for d in (run_dir, ref))
    assert a == b


def _slurm_available() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _slurm_available(), reason="no SLURM cluster (sbatch/sinfo) here")
def test_real_slurm_cluster_cancel_and_kill(tmp_path):
    """A 3-job sweep on the SLURM cluster of this machine (docs/studies.md): at evaluation 2 job
    0 is scancel'ed, job 1's process is kill -9'ed, job 2 goes on. The index names both with
    SLURM's reason, job 2 is ok, exit 1, no traceback. The sweep dir must be on a file system the
    nodes share: here, the test's tmp_path (one machine)."""
    sweep = tmp_path / "sweep"
    args = ["hydra/launcher=slurm", "hydra.launcher.poll_s=2", "hydra.launcher.timeout_min=10",
            "hydra.launcher.mem_gb=1", "data.P=12,16,20", *TINY, f"hydra.sweep.dir={sweep}"]
    proc = _sweep(args, REPO, pause=True)  # the jobs import the plugin from the repository
    # one job at a time: the cluster may have a single core free
    _paused_pids(sweep, [0], proc, timeout=600)
    slurm0 = json.loads(_job_file(sweep, 0).read_text())["slurm_job"]
    subprocess.run(["scancel", slurm0], check=True)
    os.kill(_paused_pids(sweep, [1], proc, timeout=600)[1], signal.SIGKILL)
    os.kill(_paused_pids(sweep, [2], proc, timeout=600)[2], signal.SIGCONT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    idx = _index(sweep)
    assert list(idx["status"]) == ["cancelled", "killed", "ok"], idx[["status", "error"]]
    assert idx.loc[0, "error"].startswith(f"SLURM job {slurm0}: CANCELLED")
    assert "FAILED" in idx.loc[1, "error"]


def _usr2_pending(pid: int) -> bool:
    try:
        masks = [ln.split()[1] for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                 if ln.startswith(("SigPnd:", "ShdPnd:"))]
    except OSError:
        return False
    return any(int(m, 16) >> (signal.SIGUSR2 - 1) & 1 for m in masks)


@pytest.mark.slow
@pytest.mark.skipif(not _slurm_available(), reason="no SLURM cluster (sbatch/sinfo) here")
def test_real_slurm_time_limit_requeues_and_resumes(tmp_path):
    """One job with a 3 min limit and SLURM's warning 60 s before it; the job pauses itself at
    evaluation 2 and is continued once SLURM's SIGUSR2 is pending (SLURM itself sends SIGCONT
    with it on the single-node cluster). The job is requeued, resumes from its checkpoint and
    ends with the metrics.csv of an uninterrupted run. About 5 min (SLURM starts a requeued job
    again only after about 2 min)."""
    sweep = tmp_path / "sweep"
    args = ["data.P=12", *TINY]
    proc = _sweep(["hydra/launcher=slurm", "hydra.launcher.poll_s=2", "hydra.launcher.mem_gb=1",
                   "hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=60", *args,
                   f"hydra.sweep.dir={sweep}"], REPO, pause=True)
    pid = _paused_pids(sweep, [0], proc, timeout=600)[0]
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 900:
        if _stopped(pid) and _usr2_pending(pid):
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.2)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    run_dir = Path(_index(sweep).loc[0, "run_dir"])
    assert json.loads(_job_file(sweep, 0).read_text())["attempt"] == 2
    assert "resuming from checkpoint at step" in (run_dir / "train.log").read_text()
    ref = tmp_path / "ref"
    p = subprocess.run([sys.executable, "-m", "rfscaling.train", *args, "hooks.checkpoint.enabled=true",
                        f"hydra.run.dir={ref}"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    pd.testing.assert_frame_equal(_metrics(run_dir), _metrics(ref), check_exact=True)
