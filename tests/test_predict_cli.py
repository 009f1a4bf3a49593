"""The theory app ``python -m rfscaling.predict``: outputs, consistency, and bad-input handling."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rfscaling.theory")
pd = pytest.importorskip("pandas")

from rfscaling.predict import typed_config as settings_from_config  # noqa: E402
from rfscaling.predict import COLUMNS, compute, run, time_grid  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SMALL = ["data.P=64", "model.N=128", "dynamics.n_evals=16", "dynamics.t_max=500"]


def _run_cli(args, run_dir: Path, cwd: Path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [sys.executable, "-m", "rfscaling.predict", *args, f"hydra.run.dir={run_dir}"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def _check_outputs(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(run_dir / "predictions.csv")
    assert tuple(df.columns) == COLUMNS
    assert len(df) >= 16
    t = df["time"].to_numpy()
    assert np.all(np.diff(t) > 0)
    for col in COLUMNS[1:]:
        assert np.all(np.isfinite(df[col])), col
        assert np.all(df[col] >= -1e-12), col
    np.testing.assert_allclose(df["bias"] + df["variance"], df["E_g"], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(
        df["variance_label_noise"] + df["variance_langevin"] + df["variance_init"], df["variance"],
        rtol=1e-9, atol=1e-14)
    png = run_dir / "learning_curves.png"
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return df


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["dynamics=langevin", "dynamics.temperature=0.01"],
        ["dynamics=weight_decay"],
        ["dynamics=bayes", "dynamics.init_variance=0.5"],
        ["dynamics=langevin", "dynamics.temperature=0.01", "dynamics.learning_rate=0.005"],
    ],
    ids=["gradient_flow", "langevin", "weight_decay", "bayes", "sgld_learning_rate"],
)
def test_cli_writes_consistent_outputs(tmp_path, extra):
    run_dir = tmp_path / "run"
    res = _run_cli(SMALL + extra, run_dir, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    df = _check_outputs(run_dir)
    t = df["time"].to_numpy()
    assert t[0] == pytest.approx(0.005 if "dynamics.learning_rate=0.005" in extra else 1e-2 / 64)
    # t = inf is the last row exactly when the stationary limit is finite (not Langevin, wd = 0, P < N)
    assert math.isinf(t[-1]) == ("dynamics=langevin" not in extra)
    assert t[-2 if math.isinf(t[-1]) else -1] == pytest.approx(500.0)
    # the printed table: header plus about a dozen rows
    lines = res.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:5] == ["time", "E_g", "bias", "variance", "train_error"])
    assert set(lines[head + 1]) == {"-"}
    table = []
    for ln in lines[head + 2:]:
        if ln.startswith("minimum"):
            break
        table.append([float(v) for v in ln.split()])
    assert 8 <= len(table) <= 14, res.stdout
    assert all(len(row) == 5 for row in table)
    # no stray output in the working directory
    assert not (tmp_path / "runs").exists()


def test_cli_early_stopping_optimum_with_label_noise(tmp_path):
    run_dir = tmp_path / "run"
    res = _run_cli(SMALL + ["data.label_noise=0.2"], run_dir, tmp_path)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(run_dir / "predictions.csv")
    finite = df[np.isfinite(df["time"])]
    i = int(np.argmin(finite["E_g"]))
    assert 0 < i < len(finite) - 1  # an interior minimum: early stopping helps
    assert "minimum E_g" in res.stdout


@pytest.mark.parametrize(
    "bad,key",
    [
        (["data.P=-3"], "data.P"),
        (["dynamics.temperature=-1"], "dynamics.temperature"),
        (["dynamics=bayes", "dynamics.weight_decay=0"], "dynamics.weight_decay"),
        (["data.P=abc"], "data.P"),  # rejected by Hydra at composition
        (["data.Q=3"], "data.Q"),  # unknown key
        (["dynamics=adam"], "dynamics/adam"),  # unknown preset
        (["data=digits", "model=random_features"], "data.kind"),  # theory covers power laws only
        (["data.target=labels"], "data.target"),  # the power-law data set has no labels
        (["data.target=teacher_network"], "data.target"),
        (["data.alpha=null"], "data.alpha"),  # the power law needs its exponents
        (["dynamics.learning_rate=0.05"], "dynamics.learning_rate"),  # unstable for the typical spectrum
        (["dynamics.learning_rate=0"], "dynamics.learning_rate"),
        (["dynamics.learning_rate=0.01", "dynamics.dt=0.02"], "dynamics.learning_rate"),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, list) else v,
)
def test_cli_bad_value_one_line_exit_2(tmp_path, bad, key):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    keep = run_dir / "earlier_result.csv"
    keep.write_text("time,E_g\n1,0.5\n")
    res = _run_cli(SMALL + bad, run_dir, tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert key in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert keep.read_text() == "time,E_g\n1,0.5\n"  # nothing already written is deleted
    assert not (run_dir / "predictions.csv").exists()


def test_run_in_process(compose, tmp_path, capsys):
    cfg = compose("predict", SMALL + ["model.M=512"])
    c = run(cfg, tmp_path)
    out = capsys.readouterr().out
    assert "unlearnable teacher tail" in out
    assert c.tail > 0
    # the tail is irreducible: E_g never drops below it
    assert np.all(c.E_g >= c.tail * (1 - 1e-12))
    np.testing.assert_allclose(c.bias + c.variance, c.E_g, rtol=1e-12)
    assert (tmp_path / "predictions.csv").is_file()
    assert (tmp_path / "modes.npz").is_file()


def test_tail_reduces_to_no_tail(compose):
    base = compute(settings_from_config(compose("predict", SMALL)))
    same = compute(settings_from_config(compose("predict", SMALL + ["model.M=128"])))
    assert same.tail == 0.0
    np.testing.assert_allclose(base.E_g, same.E_g)


def test_time_grid(compose):
    s = settings_from_config(compose("predict", SMALL))
    t = time_grid(s)
    assert t[0] == pytest.approx(1e-2 / 64) and math.isinf(t[-1]) and t[-2] == pytest.approx(500)
    assert len(t) == 17
    s = settings_from_config(compose("predict", SMALL + ["dynamics=langevin"]))
    assert np.all(np.isfinite(time_grid(s)))
    s = settings_from_config(compose("predict", SMALL + ["dynamics=langevin", "data.P=256"]))
    assert math.isinf(time_grid(s)[-1])  # P > N: the Langevin stationary state exists


def test_cli_multirun_with_a_failed_job_exits_1_and_indexes_it(tmp_path):
    """The theory app's sweeps get the same sweep index as the training app's: the good job
    runs, the bad one is recorded with its one-line error, and the sweep exits 1."""
    import csv

    sweep = tmp_path / "sweep"
    p = subprocess.run([sys.executable, "-m", "rfscaling.predict", "-m", "data.P=64,-3", "plot=false",
                        f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr[-2000:]
    rows = {r["job"]: r for r in csv.DictReader(open(sweep / "index.csv"))}
    assert rows["0"]["status"] == "ok" and rows["1"]["status"] == "failed"
    assert "data.P=-3" in rows["1"]["error"] and "positive integer" in rows["1"]["error"]


def test_the_theory_app_imports_no_torch(compose):
    """Checking and computing a prediction needs numpy and scipy only (start-up time)."""
    import subprocess

    code = ("import sys; from rfscaling.predict import typed_config, compute; "
            "from rfscaling.config import PredictConfig, DataConfig, ModelConfig; "
            "compute(typed_config(PredictConfig(data=DataConfig(P=32), model=ModelConfig(N=64)))); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


def test_time_grid_in_steps(compose):
    """With a learning rate the grid is log-spaced step counts from 1 (times n lr), and the
    prediction there is the discrete-time one: it differs from gradient flow at the first step
    and agrees with it late (docs/theory.md, section 10)."""
    s = settings_from_config(compose("predict", SMALL + ["dynamics.learning_rate=0.005"]))
    t = time_grid(s)
    n = t[np.isfinite(t)] / 0.005
    np.testing.assert_allclose(n, np.round(n), rtol=0, atol=1e-9)
    assert n[0] == 1 and math.isinf(t[-1]) and len(n) <= 16
    disc = compute(s)
    cont = compute(settings_from_config(compose("predict", SMALL)))
    first = np.interp(disc.time[0], cont.time[:-1], cont.E_g[:-1])
    assert abs(disc.E_g[0] / first - 1) > 0.05
    np.testing.assert_allclose(disc.E_g[-2], cont.E_g[-2], rtol=1e-3)
