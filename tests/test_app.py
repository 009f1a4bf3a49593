"""The apps' one error boundary (rfscaling.app): exit statuses and one-line errors for single
runs, bad overrides rejected before Hydra runs anything, multirun jobs that fail without
spoiling the sweep, and no use of Hydra's internals anywhere in rfscaling/.

The apps are run in-process with tiny fake tasks (no training), so every case takes well under
a second; tests/test_studies.py and tests/test_train_app.py run the real apps in subprocesses."""

from __future__ import annotations

import ast
import json
import re
import signal
import sys
from pathlib import Path

import pytest

from rfscaling.app import MAX_EXTRA_COMPOSES, Failure, check_overrides, classify, hydra_app
from rfscaling import train as train_mod
from rfscaling.errors import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_SWEEP_FAILED, ConfigError, MissingPackage
from rfscaling.train import RunInterrupted, TrainingDiverged

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_full_error(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


def _diverged(msg: str = "training diverged: non-finite weights at step 12") -> TrainingDiverged:
    exc = TrainingDiverged.__new__(TrainingDiverged)  # without a Divergence record
    RuntimeError.__init__(exc, msg)
    return exc


def _app(task, args, monkeypatch) -> int:
    """Run ``hydra_app("train")(task)`` in-process with command line ``args``; its exit status."""
    monkeypatch.setattr(sys, "argv", ["rfscaling-test", *args])
    try:
        hydra_app("train")(task)()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# --------------------------------------------------------------------------------------------
# Hydra's internals are nowhere


def test_nothing_in_rfscaling_uses_hydra_internals():
    offenders = []
    for path in sorted((REPO / "rfscaling").rglob("*.py")):
        src = path.read_text()
        for node in ast.walk(ast.parse(src)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            offenders += [f"{path}: import {n}" for n in names if n.startswith("hydra._internal")]
        if re.search(r"hydra\s*\.\s*_internal|[\"']hydra\._internal", src):
            offenders.append(f"{path}: mentions hydra._internal")
    assert not offenders, offenders


# --------------------------------------------------------------------------------------------
# The mapping: exception -> exit status and one line


@pytest.mark.parametrize("exc,kind,status,line", [
    (ConfigError("data.P", -3, "must be a positive integer"), "bad_input", 2, "data.P=-3: must be a positive integer"),
    (ValueError("n_samples=0: must be a positive integer\n(details)"), "bad_input", 2,
     "n_samples=0: must be a positive integer"),
    (MissingPackage("data.kind=mnist1d", "mnist1d", "mnist1d"), "bad_input", 2,
     "data.kind=mnist1d needs the package mnist1d, which is not installed: pip install mnist1d"),
    (_diverged(), "diverged", 3,
     "training diverged: non-finite weights at step 12 (outputs up to the last finite evaluation are in /r)"),
    (RunInterrupted(signal.SIGTERM), "interrupted", 143, "interrupted by SIGTERM: files written so far are kept "
     "in /r; with hooks.checkpoint.enabled=true the same command resumes from the last checkpoint"),
    (KeyboardInterrupt(), "interrupted", 130, "interrupted by SIGINT: files written so far are kept in /r"),
    (SystemExit(3), "exit", 3, "exit status 3"),
    (SystemExit(130), "interrupted", 130, "exit status 130"),
    (RuntimeError("boom\nmore details"), "exception", 1, "RuntimeError: boom"),
])
def test_classify(exc, kind, status, line):
    assert classify(exc, "/r") == Failure(kind, line, status)
    assert EXIT_DIVERGED == train_mod.EXIT_DIVERGED == 3 and EXIT_BAD_INPUT == 2 and EXIT_SWEEP_FAILED == 1


def test_classify_knows_the_classes_of_train_run_as_main():
    """``python -m rfscaling.train`` runs the module as __main__, with classes of its own."""
    ns: dict = {"__name__": "__main__"}
    exec("class RunInterrupted(BaseException):\n    signum = 15\nclass TrainingDiverged(RuntimeError): pass", ns)
    assert classify(ns["RunInterrupted"]("interrupted by SIGTERM")).status == 143
    assert classify(ns["TrainingDiverged"]("training diverged")).status == 3
    ns = {"__name__": "elsewhere"}
    exec("class TrainingDiverged(RuntimeError): pass", ns)
    assert classify(ns["TrainingDiverged"]("x")).kind == "exception"


# --------------------------------------------------------------------------------------------
# Single runs


@pytest.mark.parametrize("exc,status,line", [
    (ConfigError("data.P", -3, "must be a positive integer"), 2, "error: data.P=-3: must be a positive integer"),
    (ValueError("n_samples=0: must be a positive integer\n(details)"), 2,
     "error: n_samples=0: must be a positive integer"),
    (_diverged(), 3, "error: training diverged: non-finite weights at step 12 (outputs up to the last finite "
     "evaluation are in {run})"),
    (RunInterrupted(signal.SIGTERM), 143, "error: interrupted by SIGTERM: files written so far are kept in {run}; "
     "with hooks.checkpoint.enabled=true the same command resumes from the last checkpoint"),
])
def test_single_run_failure_is_one_line_with_its_status_and_keeps_files(tmp_path, monkeypatch, capsys, exc,
                                                                          status, line):
    run = tmp_path / "run"

    def task(cfg):
        (run / "partial.csv").write_text("t,E_g\n1,2\n")
        raise exc

    assert _app(task, [f"hydra.run.dir={run}"], monkeypatch) == status
    err = capsys.readouterr().err
    assert _lines(err) == [line.format(run=run)] and "Traceback" not in err
    assert (run / "partial.csv").read_text() == "t,E_g\n1,2\n"
    assert not (run / "error.txt").exists()  # error.txt is for multirun jobs


def test_single_run_bug_keeps_hydras_report(tmp_path, monkeypatch, capsys):
    def task(cfg):
        raise RuntimeError("a bug")

    assert _app(task, [f"hydra.run.dir={tmp_path}"], monkeypatch) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err


def test_single_run_ok_and_pass_through(tmp_path, monkeypatch, capsys):
    seen = []
    assert _app(lambda cfg: seen.append(cfg.data.P), [f"hydra.run.dir={tmp_path}", "data.P=17"], monkeypatch) == 0
    assert seen == [17] and capsys.readouterr().err == ""

    def task(cfg):  # called with a composed config: the same boundary
        raise ConfigError("data.P", cfg, "must be a positive integer")

    with pytest.raises(SystemExit) as info:
        hydra_app("train")(task)(-3)
    assert info.value.code == 2 and capsys.readouterr().err == "error: data.P=-3: must be a positive integer\n"


def test_full_error_restores_hydras_behaviour(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")

    def task(cfg):
        raise ConfigError("data.P", -3, "must be a positive integer")

    monkeypatch.setattr(sys, "argv", ["rfscaling-test", f"hydra.run.dir={tmp_path}"])
    with pytest.raises(ConfigError):
        hydra_app("train")(task)()


# --------------------------------------------------------------------------------------------
# Bad overrides: one line, status 2, before any job runs


@pytest.mark.parametrize("args,expect", [
    (["data.P=abc"], "error: Error merging override data.P=abc: Value 'abc' of type 'str' could not be converted"),
    (["data.foo=1"], "error: Could not override 'data.foo'"),
    (["data=nope"], "error: In 'train': Could not find 'data/nope' (Available options in 'data': "),
    (["data.P=[1,"], "error: data.P=[1,: no viable alternative at input '[1,'"),
    (["data.P=1,2"], "error: Ambiguous value for argument 'data.P=1,2'"),  # a sweep without -m
    (["-m", "data.P=16,abc"], "error: Error merging override data.P=abc"),  # a later value of a sweep
    (["-m", "seed=range(2)", "data=powerlaw,nope"], "error: In 'train': Could not find 'data/nope'"),
    (["-m", "hydra/launcher=nope", "data.P=1,2"], "error: In 'hydra/config': Could not find 'hydra/launcher/nope'"),
    (["-m", "hydra.launcher.n_jobs=2", "data.P=1,2"], "error: Could not override 'hydra.launcher.n_jobs'"),
])
def test_bad_override_is_one_line_exit_2(tmp_path, monkeypatch, capsys, args, expect):
    ran = []
    status = _app(ran.append, [*args, f"hydra.run.dir={tmp_path / 'r'}", f"hydra.sweep.dir={tmp_path / 's'}"],
                  monkeypatch)
    err = capsys.readouterr().err
    assert status == 2 and len(_lines(err)) == 1 and err.startswith(expect), err
    assert not ran and not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_check_overrides_accepts_what_hydra_accepts():
    check_overrides("train", ["-m", "data.P=16,32", "seed=range(3)", "dynamics=gradient_flow,langevin",
                              "hydra/launcher=joblib", "hydra.launcher.n_jobs=1,2", "+hooks.budget.max_evals=3"])
    check_overrides("train", ["experiment=scaling", "data.P=16,64", "model.N=16,64"])  # MULTIRUN preset
    check_overrides("predict", ["data.P=64", "data.alpha=1.5", "dynamics=langevin"])
    check_overrides("train", ["--cfg", "job", "data.P=abc"])  # other flags: Hydra's business
    check_overrides("train", ["-m", "data=glob(*)"])  # left to the sweeper
    assert MAX_EXTRA_COMPOSES >= 1


# --------------------------------------------------------------------------------------------
# Multiruns: a failed job does not spoil the others; status 1 after the sweep


JOB_DIRS: dict[int, Path] = {}  # seed -> job directory of the last sweep of _sweep_task


def _sweep_task(cfg):
    from hydra.core.hydra_config import HydraConfig

    out = JOB_DIRS[cfg.seed] = Path(HydraConfig.get().runtime.output_dir)
    (out / "partial.csv").write_text("t\n1\n")
    seed = cfg.seed
    if seed == 1:
        raise ConfigError("data.P", -3, "must be a positive integer")
    if seed == 2:
        raise RuntimeError("forced crash\nmore")
    if seed == 3:
        raise _diverged()
    if seed == 4:
        sys.exit(5)
    if seed == 5:
        sys.exit(0)
    (out / "summary.json").write_text("{}")


def test_multirun_contains_each_failure_and_exits_1(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "s"
    JOB_DIRS.clear()
    status = _app(_sweep_task, ["-m", "seed=range(6)", f"hydra.sweep.dir={sweep}"], monkeypatch)
    cap = capsys.readouterr()
    lines = _lines(cap.err)
    expected = {
        1: "data.P=-3: must be a positive integer",
        2: "RuntimeError: forced crash",
        3: f"training diverged: non-finite weights at step 12 (outputs up to the last finite evaluation are in "
           f"{JOB_DIRS[3]})",
        4: "exit status 5",
    }
    assert status == EXIT_SWEEP_FAILED == 1, cap.err
    assert lines == [*(f"error: job {n} failed: {e}" for n, e in expected.items()),
                     f"error: 4 job(s) of the sweep failed; see {sweep / 'index.csv'}"]
    assert "Traceback" not in cap.err
    assert sorted(JOB_DIRS) == list(range(6))
    for n, job_dir in JOB_DIRS.items():
        assert job_dir.parent == sweep and (job_dir / "partial.csv").exists()  # nothing deleted
        error = job_dir / "error.txt"
        assert (error.read_text() if error.exists() else None) == (expected[n] + "\n" if n in expected else None)
        assert (job_dir / "traceback.txt").exists() == (n == 2)
    assert "forced crash" in (JOB_DIRS[2] / "traceback.txt").read_text()
    jobs = json.loads((sweep / "index.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["ok", "failed", "failed", "failed", "failed", "ok"]
    assert [j["error"] for j in jobs][1:5] == list(expected.values())
    assert "sweep index: 2 ok, 4 failed, 0 skipped" in cap.out


def test_multirun_without_failures_exits_0(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "s"
    assert _app(_sweep_task, ["-m", "seed=0,5", f"hydra.sweep.dir={sweep}"], monkeypatch) == 0
    assert capsys.readouterr().err == ""


def test_multirun_without_the_index_callback_still_exits_1(tmp_path, monkeypatch, capsys):
    """Without the sweep index the boundary counts the failures of the jobs run in-process."""
    sweep = tmp_path / "s"
    status = _app(_sweep_task, ["-m", "seed=0,1", "~hydra.callbacks.sweep_index", f"hydra.sweep.dir={sweep}"],
                  monkeypatch)
    lines = _lines(capsys.readouterr().err)
    assert status == 1 and not (sweep / "index.csv").exists()
    assert lines == ["error: job 1 failed: data.P=-3: must be a positive integer",
                     "error: 1 job(s) of the sweep failed; see error.txt in the job directories"]


@pytest.mark.parametrize("exc,status,line", [
    (RunInterrupted(signal.SIGTERM), 143, "error: interrupted by SIGTERM: files written so far are kept in {dir}; "
     "with hooks.checkpoint.enabled=true the same command resumes from the last checkpoint"),
    (KeyboardInterrupt(), 130, "error: interrupted by SIGINT: files written so far are kept in {dir}"),
    (SystemExit(130), 130, "error: exit status 130"),
])
def test_a_signal_stops_the_sweep(tmp_path, monkeypatch, capsys, exc, status, line):
    ran = []

    def task(cfg):
        from hydra.core.hydra_config import HydraConfig

        ran.append((cfg.seed, HydraConfig.get().runtime.output_dir))
        if cfg.seed == 1:
            raise exc

    sweep = tmp_path / "s"
    assert _app(task, ["-m", "seed=0,1,2", f"hydra.sweep.dir={sweep}"], monkeypatch) == status
    lines = _lines(capsys.readouterr().err)
    assert [seed for seed, _ in ran] == [0, 1] and lines == [line.format(dir=ran[1][1])]
    assert not (Path(ran[1][1]) / "error.txt").exists()
