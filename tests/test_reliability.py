"""Reliability of training runs (issue 6): validation at the one-line boundary, the divergence
guard, atomic result files, kill/resume bit-identity, signals, skipping finished runs, and
reproducibility (seeds). docs/testbed.md, section "Reliability", lists the guarantees.

Runs are tiny (N = 32, P = 16). Two tests start ``python -m rfscaling.train`` in subprocesses
(SIGKILL + resume, SIGTERM); the others call the app (same error boundary) or ``train`` in-process.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import rfscaling.train as train_mod
from specs import config, problem, with_
from rfscaling.data import derive_seed, sample_eigen_ensemble
from rfscaling.data.eigen import EigenTask
from rfscaling.config import DynamicsConfig, TrainConfig
from rfscaling.dynamics import EulerDynamics, ExactDynamics, hessian_top_eigenvalue
from rfscaling.errors import ConfigError
from rfscaling.hooks import CHECKPOINT_NAME, load_checkpoint
from rfscaling.hooks.pause import PAUSE_ENV
from rfscaling.models import make_problem, random_streams
from rfscaling.train import (
    problem_spec,
    EXIT_DIVERGED,
    RunInterrupted,
    TrainingDiverged,
    interrupts_raise,
    train,
)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")

TINY = ["model.N=32", "data.P=16", "ensemble.datasets=2", "ensemble.replicas=2", "dynamics.t_max=5",
        "dynamics.n_evals=8", "hooks.tensorboard=false", "hooks.progress=false", "device=cpu", "threads=1",
        "theory.enabled=false"]
#: A Langevin run of ~40k Euler steps (1-3 s) that checkpoints at every evaluation: long enough
#: to be killed in the middle, with every random stream and the early-stopping state in play.
LONG = ["model.N=32", "data.P=16", "ensemble.datasets=2", "ensemble.replicas=2", "dynamics=langevin",
        "dynamics.temperature=0.01", "dynamics.init_variance=0.1", "dynamics.t_max=2000", "dynamics.n_evals=30",
        "hooks.progress=false", "hooks.checkpoint.enabled=true", "hooks.checkpoint.every=1", "device=cpu",
        "threads=1"]
WALL_KEYS = ("wall_time_s", "loop_wall_time_s", "resumed_from")


def _spec(**problem) -> TrainConfig:
    ps = dict(P=16, N=32, datasets=2, replicas=2, label_noise=0.1, teacher="random", dtype=torch.float64)
    ps.update(problem)
    return config(**ps, dynamics="langevin", temperature=0.01, init_variance=0.1, t_max=5.0, n_evals=8,
                  theory=False, threads=1, tensorboard=False, progress=False, patience=3)


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _summary(d: Path) -> dict:
    return json.loads((d / "summary.json").read_text())


def _strip(summary: dict) -> dict:
    """A summary without its wall times and resume position."""
    return {k: v for k, v in summary.items() if k not in WALL_KEYS}


def _no_temp_files(d: Path) -> None:
    left = [p for p in d.rglob(".*") if ".tmp" in p.name]
    assert not left, f"temp files left behind: {left}"


def _app(args, monkeypatch) -> int:
    """Run the Hydra app in-process (same boundary as the console script); its exit status."""
    monkeypatch.setattr(sys, "argv", ["rfscaling-train", *args])
    try:
        train_mod.main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    return env


def _cli(args, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rfscaling.train", *args], cwd=cwd, env=_cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def _popen(args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rfscaling.train", *args], cwd=cwd, env=_cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"run ended (rc={proc.returncode}) before it could be interrupted:\n{err[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.02)


def _popen_paused(args, cwd: Path, at_eval: int) -> subprocess.Popen:
    """A run that freezes itself (SIGSTOP) right after evaluation ``at_eval``: tests interrupt
    it at a point the run chose, however fast or loaded the machine is."""
    env = {**_cli_env(), PAUSE_ENV: str(at_eval)}
    return subprocess.Popen([sys.executable, "-m", "rfscaling.train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stopped(proc: subprocess.Popen) -> bool:
    # field 3 of /proc/<pid>/stat is the state; "T": stopped by a signal
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip()]


# --------------------------------------------------------------------------------------------
# 1. Validation: one line naming key, value and the allowed range; exit 2; no traceback


def test_unstable_dt_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """Found only after the data are drawn, yet reported at the same boundary as the config
    checks (the console script's code path, in-process)."""
    status = _app([*TINY, "dynamics.dt=1.0", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch)
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: dynamics.dt=1.0: unstable Euler step: must be < ")
    assert "2/lambda_max(H)" in lines[0]
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_unstable_dt_bound_is_the_largest_stable_step(tmp_path):
    """The bound in the message is 2/lambda_max(H) of the drawn data: 0.1 % below it runs, 0.1 %
    above it fails; the exact integrator (no stability bound) accepts any dt."""
    spec = _spec()
    with pytest.raises(ConfigError) as exc:
        train(with_(spec, dt=1.0), tmp_path / "a")
    assert exc.value.key == "dynamics.dt" and exc.value.value == 1.0
    bound = float(str(exc.value).split("must be < ")[1].split(" ")[0])
    data = make_problem(problem_spec(spec, "cpu")).data
    lam = float(hessian_top_eigenvalue(data.features).max())
    assert bound == pytest.approx(2.0 / lam, rel=1e-5)
    # just past the bound is refused; exactly at it is a floating-point coin toss (the last bit of
    # a Lanczos estimate depends on the CPU's BLAS), so neither side is tested there
    with pytest.raises(ConfigError, match="dynamics.dt"):
        train(with_(spec, dt=1.001 * 2.0 / lam), tmp_path / "b")
    s = train(with_(spec, dt=0.999 * 2.0 / lam, t_max=0.5), tmp_path / "c")
    assert s["completed"] and s["dt"] == pytest.approx(0.999 * 2.0 / lam)
    s = train(with_(spec, dt=1.0, integrator="exact"), tmp_path / "d")
    assert s["completed"] and s["integrator"] == "exact"


def test_tensorboard_writer_started_early_is_stopped_when_the_setup_fails(tmp_path, monkeypatch):
    """train() launches the TensorBoard writer process before drawing the data (its start then
    overlaps the setup); a ConfigError found after the draw still stops it, and it wrote nothing."""
    from rfscaling.hooks import TensorBoardHook

    launched = []
    original = TensorBoardHook.launch

    def launch(self):
        launched.append(self)
        original(self)
        assert self._proc is not None and self._proc.is_alive()  # running during the setup

    monkeypatch.setattr(TensorBoardHook, "launch", launch)
    spec = with_(_spec(), dt=1.0, tensorboard=True, patience=5)
    with pytest.raises(ConfigError, match="dynamics.dt"):
        train(spec, tmp_path / "a")
    (hook,) = launched
    assert hook._proc is None  # closed and waited for
    assert not list((tmp_path / "a").rglob("events.out.tfevents*"))
    s = train(with_(spec, dt=None), tmp_path / "b")  # and a run that goes through writes events
    assert s["completed"] and list((tmp_path / "b" / "tensorboard" / "experiment").glob("events.out.tfevents*"))


@pytest.mark.parametrize("args, key", [
    (["dynamics=bayes", "dynamics.weight_decay=0"], "dynamics.weight_decay"),
    (["device=cuda"], "device"),
    (["device=cuda:1"], "device"),
])
def test_bad_values_at_the_app_boundary(args, key, tmp_path, monkeypatch, capsys):
    if key == "device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    base = [a for a in TINY if not a.startswith("device=")]
    status = _app([*base, *args, f"hydra.run.dir={tmp_path}"], monkeypatch)
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert status == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {key}=") and "Traceback" not in err


# --------------------------------------------------------------------------------------------
# 2. Divergence guard


def _inf_gradient_after(monkeypatch, n_steps: int) -> None:
    """Make Euler weights non-finite from step ``n_steps`` on (a forced divergence)."""
    original = EulerDynamics.advance

    def advance(self, state, n):
        new = original(self, state, n)
        if new.step >= n_steps:
            new = replace(new, weights=torch.full_like(new.weights, float("inf")))
        return new

    monkeypatch.setattr(EulerDynamics, "advance", advance)


def test_divergence_stops_with_message_and_keeps_good_outputs(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = _spec()
    spec = with_(spec, n_evals=20, tensorboard=True, checkpoint=True, checkpoint_every=2)
    _inf_gradient_after(monkeypatch, 40)
    with pytest.raises(TrainingDiverged) as exc:
        train(spec, tmp_path)
    div, msg = exc.value.divergence, str(exc.value)
    assert "\n" not in msg and msg.startswith("training diverged: non-finite weights")
    assert f"at step {div.step} " in msg and "likely cause" in msg and "t=" in msg
    assert div.step >= 40 and div.last_good_step < 40 <= div.step

    rows = _rows(tmp_path / "metrics.csv")  # every finite evaluation before the divergence
    steps = [int(r["step"]) for r in rows]
    assert steps[-1] == div.last_good_step and len(rows) == div.index
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("E_g", "bias", "variance", "train_error"))
    z = np.load(tmp_path / "modes.npz")
    assert z["mode_error"].shape[0] == len(rows) and np.isfinite(z["mode_error"]).all()

    ckpt = load_checkpoint(tmp_path / "checkpoints", exc.value.summary["identity"])
    assert not ckpt["finished"] and torch.isfinite(ckpt["weights"]).all()
    assert ckpt["step"] <= div.last_good_step and ckpt["index"] % 2 == 1  # the last periodic one

    s = _summary(tmp_path)
    assert s["divergence"]["step"] == div.step and s["stop_reason"] == msg
    assert not s["completed"] and not s["resumable"] and s["final"]["step"] == div.last_good_step

    acc = EventAccumulator(str(tmp_path / "tensorboard" / "experiment"), size_guidance={"scalars": 0})
    acc.Reload()  # flushed: every finite evaluation is in the event file
    from rfscaling.hooks.tensorboard import time_steps

    assert [e.step for e in acc.Scalars("curves/E_g")] == time_steps([float(r["time"]) for r in rows]).tolist()
    _no_temp_files(tmp_path)


def test_divergence_exit_status_is_one_line(tmp_path, monkeypatch, capsys):
    _inf_gradient_after(monkeypatch, 10)
    status = _app([*TINY, f"hydra.run.dir={tmp_path}"], monkeypatch)
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert status == EXIT_DIVERGED == 3 and len(lines) == 1, err
    assert re.match(r"error: training diverged: non-finite weights \(\d+ of \d+ entries\) at step \d+ \(t=",
                    lines[0]), lines[0]
    assert str(tmp_path) in lines[0] and "Traceback" not in err
    # a diverged run is not 'finished': the same command runs (and diverges) again
    monkeypatch.undo()
    status = _app([*TINY, f"hydra.run.dir={tmp_path}"], monkeypatch)
    assert status == 0 and _summary(tmp_path)["divergence"] is None


# --------------------------------------------------------------------------------------------
# 3. Atomic files, kill/resume, signals, finished runs


def test_every_result_file_is_written_atomically(tmp_path, monkeypatch):
    spec = _spec()
    spec = with_(spec, checkpoint=True, checkpoint_every=1)
    moves = []
    real_replace = os.replace

    def recording_replace(src, dst):
        moves.append((Path(src), Path(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    train(spec, tmp_path)
    monkeypatch.undo()
    written = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == {Path("metrics.csv"), Path("modes.npz"), Path("summary.json"),
                       Path("checkpoints") / CHECKPOINT_NAME}
    for name in written:
        ops = [(s, d) for s, d in moves if d == tmp_path / name]
        assert ops, f"{name} was not moved into place with os.replace"
        assert all(s.parent == d.parent and s.name.startswith(f".{d.name}.tmp") for s, d in ops)

    # a writer failing mid-way keeps the previous file and leaves no temp file
    before = {n: (tmp_path / n).read_bytes() for n in ("modes.npz", "summary.json")}

    def broken_savez(fh, **arrays):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        train(spec, tmp_path, skip_completed=False)
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    _no_temp_files(tmp_path)


@needs_proc
def test_sigkill_then_same_command_is_bit_identical(tmp_path):
    """Kill -9 a checkpointing run after a random evaluation past its first checkpoint (the run
    freezes itself there, so the machine's speed does not matter), re-run the same command:
    metrics.csv, modes.npz and summary.json (bar wall times) are bit-identical to an
    uninterrupted run's."""
    run_dir, full = tmp_path / "killed", tmp_path / "full"
    args = [*LONG, "hooks.tensorboard=false", f"hydra.run.dir={run_dir}"]
    at = random.randrange(1, 20)  # any evaluation must do; it is in the failure messages
    # the uninterrupted reference runs alongside (same command, another directory)
    reference = _popen([*LONG, "hooks.tensorboard=false", f"hydra.run.dir={full}"], tmp_path)
    proc = _popen_paused(args, tmp_path, at)
    try:
        _wait_for(lambda: _stopped(proc), proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        _, err = reference.communicate(timeout=240)
    finally:
        for pr in (proc, reference):
            if pr.poll() is None:
                pr.kill()
    assert reference.returncode == 0, err[-3000:]
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.json").exists(), f"killed after evaluation {at}"
    killed_rows = _rows(run_dir / "metrics.csv")  # the files on disk are whole
    assert load_checkpoint(run_dir / "checkpoints") is not None

    p = _cli(args, tmp_path)
    assert p.returncode == 0, f"killed after evaluation {at}: {p.stderr[-3000:]}"
    s, ref = _summary(run_dir), _summary(full)
    assert s["resumed_from"] is not None and s["completed"]
    assert (run_dir / "metrics.csv").read_bytes() == (full / "metrics.csv").read_bytes(), f"killed after evaluation {at}"
    assert len(_rows(run_dir / "metrics.csv")) >= len(killed_rows)
    a, b = np.load(run_dir / "modes.npz"), np.load(full / "modes.npz")
    assert a.files == b.files
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
    assert _strip(s) == _strip(ref)
    _no_temp_files(run_dir)


def test_stale_temp_files_of_killed_writers_are_removed_on_rerun(tmp_path):
    """A SIGKILL during an atomic write leaves its temp file; the next run in that folder
    deletes it (its writer is dead) but not one whose writer is alive, nor other dot files."""
    import subprocess

    from rfscaling.files import remove_stale_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / f".checkpoint.pt.tmp{dead.pid}"
    live = tmp_path / f".metrics.csv.tmp{os.getppid()}"
    other = tmp_path / ".hydra.tmpnotes"
    for p in (stale, live, other):
        p.write_text("x")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    live.unlink()
    stale.write_text("x")
    s = train(_spec(), tmp_path)  # the app does it before anything else
    assert s["completed"] and not stale.exists() and other.exists()


@needs_proc
def test_sigterm_flushes_tensorboard_and_exits_143(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    proc = _popen_paused([*LONG, "hooks.tensorboard=true", f"hydra.run.dir={run_dir}"], tmp_path, 3)
    try:
        _wait_for(lambda: _stopped(proc), proc)
        proc.send_signal(signal.SIGTERM)  # pending until the run continues
        proc.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM == 143, err[-3000:]
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by SIGTERM") and "Traceback" not in err
    assert not (run_dir / "summary.json").exists()
    n = len(_rows(run_dir / "metrics.csv"))
    acc = EventAccumulator(str(run_dir / "tensorboard" / "experiment"), size_guidance={"scalars": 0})
    acc.Reload()
    logged = len(acc.Scalars("curves/E_g"))
    assert n - 1 <= logged <= n and logged >= 2  # the evaluation in flight may be missing
    assert load_checkpoint(run_dir / "checkpoints") is not None
    _no_temp_files(run_dir)


def test_sigint_closes_hooks_and_restores_handlers(tmp_path):
    """In-process: SIGINT during training raises RunInterrupted through ``train``; TensorBoard
    is flushed, the files written so far are whole; the previous handlers come back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = _spec()
    spec = with_(spec, n_evals=20, tensorboard=True)
    import rfscaling.run.loop as loop_mod

    original = loop_mod.measure_group
    sizes = []

    def measure_group(group, taken, *a, **k):  # called once per group of evaluations: interrupt at the 3rd
        sizes.append(len(taken))
        if len(sizes) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(group, taken, *a, **k)

    before = signal.getsignal(signal.SIGINT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop_mod, "measure_group", measure_group)
        with pytest.raises(RunInterrupted) as exc:
            with interrupts_raise():
                train(spec, tmp_path)
    assert exc.value.signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is before
    rows = _rows(tmp_path / "metrics.csv")
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "experiment"), size_guidance={"scalars": 0})
    acc.Reload()
    handed = sizes[0] + sizes[1]  # the evaluations the hooks got before the interrupt
    assert len(sizes) == 3 and handed >= 3
    assert len(rows) == handed and len(acc.Scalars("curves/E_g")) == handed
    _no_temp_files(tmp_path)


def test_finished_run_is_skipped_other_configs_are_not(tmp_path, monkeypatch, capsys):
    d = tmp_path / "run"
    assert _app([*TINY, f"hydra.run.dir={d}"], monkeypatch) == 0
    first = (d / "metrics.csv").read_bytes(), (d / "summary.json").read_bytes()
    mtime = (d / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    # logging options are not part of the identity: still the same, finished run
    assert _app([*TINY, "hooks.progress=true", f"hydra.run.dir={d}"], monkeypatch) == 0
    assert "already finished" in capsys.readouterr().out
    assert ((d / "metrics.csv").read_bytes(), (d / "summary.json").read_bytes()) == first
    assert (d / "summary.json").stat().st_mtime_ns == mtime
    # another configuration in the same directory runs
    assert _app([*TINY, "seed=1", f"hydra.run.dir={d}"], monkeypatch) == 0
    assert "already finished" not in capsys.readouterr().out and _summary(d)["seeds"]["seed"] == 1
    # a run stopped by its budget (resumable) is not finished: re-running continues it
    spec = _spec()
    spec = with_(spec, checkpoint=True, checkpoint_every=1, max_evals=3)
    assert train(spec, tmp_path / "budget")["resumable"]
    s = train(spec, tmp_path / "budget")
    assert "skipped" not in s and s["resumed_from"] is not None
    assert train(with_(spec, max_evals=None), tmp_path / "budget")["completed"]
    assert train(spec, tmp_path / "budget").get("skipped") is True


# --------------------------------------------------------------------------------------------
# 4. Reproducibility


def test_same_seed_gives_identical_results(tmp_path):
    spec = _spec(M=64)
    spec = with_(spec, theory=True)
    a, b = train(spec, tmp_path / "a"), train(spec, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()
    za, zb = np.load(tmp_path / "a" / "modes.npz"), np.load(tmp_path / "b" / "modes.npz")
    for k in za.files:
        np.testing.assert_array_equal(za[k], zb[k])
    assert _strip(a) == _strip(b)
    c = train(with_(spec, seed=1), tmp_path / "c")
    assert c["final"]["E_g"] != a["final"]["E_g"] and c["identity"] != a["identity"]


def test_different_seeds_give_independent_ensembles():
    """Per-dataset errors (the fluctuations the ensemble averages over) are uncorrelated across
    seeds; the designs and the dynamics noise of two seeds are uncorrelated draws."""
    D = 64
    errs, designs, noise = [], [], []
    for seed in (0, 1, 0):
        ps = problem(P=8, N=16, datasets=D, replicas=2, label_noise=0.1, teacher="random", seed=seed,
                         dtype=torch.float64)
        data = make_problem(ps).data
        dyn = ExactDynamics(data, DynamicsConfig(weight_decay=0.05), dt=1.0)
        w = dyn.transition(torch.zeros(D, 2, 16, dtype=torch.float64), float("inf"), None)
        e = ((w - data.target_weights[:, None]) ** 2 * data.eigenvalues).sum(-1).mean(1)  # (D,)
        errs.append(e.numpy())
        designs.append(data.features.flatten().numpy())
        g = torch.Generator().manual_seed(derive_seed(seed, train_mod.DYNAMICS_STREAM))
        noise.append(torch.randn(4096, generator=g, dtype=torch.float64).numpy())
    np.testing.assert_array_equal(errs[0], errs[2])  # same seed: the same ensemble
    r = np.corrcoef(errs[0], errs[1])[0, 1]
    assert abs(r) < 4 / np.sqrt(D), r  # |r| ~ 1/sqrt(D) for independent draws
    for x in (designs, noise):
        r = np.corrcoef(x[0], x[1])[0, 1]
        assert abs(r) < 4 / np.sqrt(x[0].size), r
        assert not np.array_equal(x[0], x[1])


def test_every_random_stream_seed_is_recorded(tmp_path):
    spec = _spec(M=64)  # random teacher, label noise, a teacher tail, validation, Langevin, init
    s = train(spec, tmp_path)["seeds"]
    assert _summary(tmp_path)["seeds"] == s and s["seed"] == 0
    assert s["draws"] == {"design": "data", "teacher": "data", "label_noise": "data", "teacher_tail": "tail",
                          "validation": "val", "init": "dynamics", "langevin_noise": "dynamics"}
    assert s["streams"] == {name: derive_seed(0, name) for name in ("data", "tail", "val", "dynamics")}
    assert len(set(s["streams"].values())) == len(s["streams"])  # distinct streams
    # the recorded seed alone reproduces the stream's draws
    task = EigenTask(*_eigen_task_arrays(spec), spec.data.label_noise, "random")
    g = torch.Generator().manual_seed(s["streams"]["data"])
    again = sample_eigen_ensemble(task, 16, 2, 2, g, torch.float64)
    data = make_problem(problem_spec(spec, "cpu")).data
    assert torch.equal(again.features, data.features) and torch.equal(again.target_weights, data.target_weights)
    # random-feature problems record their input, feature-map and teacher streams
    rf = random_streams(problem(kind="gaussian_powerlaw", model="random_features", target="teacher_network",
                                    P=16, N=32, seed=5, validation_size=8))
    assert rf["draws"] == {"inputs": "inputs", "feature_map": "model", "teacher": "teacher",
                           "sample_selection": "data", "label_noise": "data", "validation": "data"}
    assert rf["streams"] == {n: derive_seed(5, n) for n in ("inputs", "model", "teacher", "data")}
    bayes = train(with_(spec, dynamics="bayes", weight_decay=0.1, temperature=0.1, init_variance=0.0),
                  tmp_path / "bayes")["seeds"]
    assert bayes["draws"]["posterior_sample"] == "dynamics" and "langevin_noise" not in bayes["draws"]


def _eigen_task_arrays(cfg: TrainConfig):
    from rfscaling.theory.spectra import power_law_task

    d, N = cfg.data, cfg.model.N
    lam, s = power_law_task(cfg.model.teacher_modes, d.alpha, d.beta, lam_1=d.lam_1, c=d.c)
    return lam[:N], s[:N]
