"""Studies: the experiment presets run (reduced) as Hydra multiruns and their analyses write the
figures and tables; the sweep index and the multirun error boundary (a failed job does not spoil
the others); the joblib and submitit launchers; and the study checks of issue 4:

* the early-stopping hook's optimal stopping time and error agree with the DMFT optimum within
  statistical error (standard errors over independent seeds);
* the empirical compute-optimal (Pareto) frontier lies on the DMFT frontier within statistical
  error;
* (slow) the exponents fitted to empirical data- and model-limited sweeps agree with the derived
  ones within the stated tolerance (analysis.scaling.TOLERANCE).

The full-size numbers are in docs/studies.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the analysis scripts live next to the package, not inside it
    sys.path.insert(0, str(REPO))

PRESETS = ("bias_variance", "early_stopping", "scaling", "pareto", "model_size", "learning_rate", "sgd_noise",
           "width")
QUIET = ["device=cpu", "hooks.progress=false", "hooks.tensorboard=false"]
GF = "dynamics={name:gradient_flow,weight_decay:0.0,temperature:0.0}"
DPI = 60  # figures at low resolution: rendering dominates the analyses' run time


def _run(args, cwd, module="rfscaling.train", timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0", PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", module, *args] if module else [sys.executable, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _sweep(preset, overrides, tmp_path, launcher="basic", capsys=None, monkeypatch=None):
    """Run a preset's sweep (reduced by ``overrides``) into tmp_path/<preset>; returns the dir.

    With ``monkeypatch`` and the basic launcher the app runs in this process (``python -m
    rfscaling.train`` with these arguments, minus the interpreter start-up), else in a subprocess."""
    sweep = tmp_path / preset
    args = [f"experiment={preset}", f"hydra/launcher={launcher}", *QUIET, *overrides, f"hydra.sweep.dir={sweep}"]
    if monkeypatch is not None and launcher == "basic":
        import torch

        from rfscaling.train import main

        monkeypatch.setattr(sys, "argv", ["rfscaling-train", *args])
        monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
        threads = torch.get_num_threads()
        try:
            main()
        except SystemExit as exc:  # pragma: no cover - a failed sweep
            raise AssertionError(f"sweep exited with {exc.code}") from None
        finally:
            torch.set_num_threads(threads)
        assert "sweep index:" in capsys.readouterr().out
        return sweep
    p = _run(args, tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "sweep index:" in p.stdout
    return sweep


def _index(sweep):
    return pd.read_csv(sweep / "index.csv")


def idx_theory(sweep):
    """summary.json "theory" of every run of a sweep."""
    import json

    return [json.loads(p.read_text())["theory"] for p in sorted(sweep.glob("*/summary.json"))]


# --------------------------------------------------------------------------------------------
# Presets


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_as_a_multirun(preset):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from rfscaling.config import CONF_DIR, register_configs
    from rfscaling.train import typed_config as settings_from_config

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert "seed" in cfg.hydra.sweeper.params and len(cfg.hydra.sweeper.params) >= 2
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == -1
    assert cfg.hydra.sweep.dir.startswith(f"runs/studies/{preset}/")
    assert "sweep_index" in cfg.hydra.callbacks
    s = settings_from_config(cfg)
    assert s.threads == 1 and s.hooks.tensorboard is (preset == "bias_variance")  # the others: too costly per job
    if preset == "bias_variance":
        assert s.dynamics.integrator == "euler"


def test_slurm_launcher_preset_composes():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rfscaling.config import CONF_DIR, register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=["experiment=pareto", "hydra/launcher=slurm",
                                              "hydra.launcher.partition=cpu"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.cpus_per_task == 1 and cfg.hydra.launcher.partition == "cpu"


def test_bias_variance_reduced(tmp_path, capsys, monkeypatch):
    from analysis import bias_variance

    sweep = _sweep("bias_variance", ["model.N=64", "data.P=32", "ensemble.datasets=2", "dynamics.t_max=5",
                                     "dynamics.n_evals=12", "seed=0,1"], tmp_path, capsys=capsys,
                   monkeypatch=monkeypatch)
    idx = _index(sweep)
    assert len(idx) == 6 and set(idx["status"]) == {"ok"}
    assert {"job", "status", "error", "run_dir", "overrides", "E_g", "E_g_se", "es_time", "compute_macs"} <= set(idx)
    res = bias_variance.analyze(sweep, dpi=DPI)
    out = sweep / "analysis"
    for name in ("bias_variance.png", "bias_variance.pdf", "bias_variance_curves.csv", "bias_variance_optimum.csv",
                 "bias_variance_optimum.md", "results.json"):
        assert (out / name).stat().st_size > 0, name
    assert [r["label"].split()[0] for r in res["optimum"]] == ["gradient", "weight", "Langevin"]
    curves = pd.read_csv(out / "bias_variance_curves.csv")
    # the seed average keeps E_g = bias + variance
    np.testing.assert_allclose(curves["bias"] + curves["variance"], curves["E_g"], rtol=1e-9)


def test_learning_rate_reduced(tmp_path, capsys, monkeypatch):
    """Reduced learning-rate sweep (2 step sizes x 2 seeds): the runs carry the discrete-time DMFT of
    their step and the analysis writes its files. (Accuracy: too few data sets here, P = 32; the
    default run is checked in tests/test_train_app.py, the engine in tests/test_theory_discrete.py.)"""
    from analysis import learning_rate

    sweep = _sweep("learning_rate", ["model.N=64", "data.P=32", "ensemble.datasets=2", "dynamics.t_max=5",
                                     "dynamics.n_evals=12", "seed=0,1", "dynamics.dt=0.005,0.02"], tmp_path,
                   capsys=capsys, monkeypatch=monkeypatch)
    idx = _index(sweep)
    assert len(idx) == 4 and set(idx["status"]) == {"ok"}
    res = learning_rate.analyze(sweep, dpi=DPI)
    out = sweep / "analysis"
    for name in ("learning_rate.png", "learning_rate.pdf", "learning_rate_conditions.csv",
                 "learning_rate_theory.csv", "results.json"):
        assert (out / name).stat().st_size > 0, name
    assert [c["dt"] for c in res["conditions"]] == [0.005, 0.02]
    assert all(np.isfinite(c["E_g_rel_dev_step1"]) and c["n_star_dmft"] >= 1 for c in res["conditions"])
    assert all(str(t).startswith("discrete") for t in idx_theory(sweep))
    assert 0 <= res["unstable_fraction_at_1.5"] <= res["unstable_fraction_at_2.2"] <= 1


def test_early_stopping_hook_agrees_with_dmft_optimum(tmp_path, capsys, monkeypatch):
    """Reduced early_stopping sweep (one condition, 6 seeds x 4 data sets): the hook's stopping
    time and error at the stop agree with the DMFT optimum within statistical error (|z| <= 3,
    z as in analysis.early_stopping: SE over seeds, grid rounding and the flatness of the minimum)."""
    from analysis import early_stopping

    sweep = _sweep("early_stopping", ["model.N=512", "data.P=128", "data.label_noise=0.1", GF,
                                      "dynamics.t_max=200", "dynamics.n_evals=60", "seed=0,1,2,3,4,5"], tmp_path,
                   capsys=capsys, monkeypatch=monkeypatch)
    res = early_stopping.analyze(sweep, dpi=DPI)
    tab = pd.read_csv(sweep / "analysis" / "early_stopping.csv")
    assert len(tab) == 1 and tab["n_seeds"].iloc[0] == 6
    r = tab.iloc[0]
    assert r["theory_interior"] and 3 < r["theory_time"] < 12
    assert abs(r["time_z"]) <= 3.0, r.to_dict()
    assert abs(r["E_g_z"]) <= 3.0, r.to_dict()
    assert abs(r["E_g_rel_dev"]) < 0.05
    assert (sweep / "analysis" / "early_stopping.png").exists() and res["agreement"]["conditions"] == 1


def test_scaling_reduced(tmp_path, capsys, monkeypatch):
    from analysis import scaling

    sweep = _sweep("scaling", ["data.P=16,256", "model.N=16,128", "seed=0,1", "dynamics.t_max=1e4",
                               "dynamics.n_evals=30"], tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert len(_index(sweep)) == 8
    res = scaling.analyze(sweep, dpi=DPI)
    out = sweep / "analysis"
    for name in ("scaling.png", "scaling.pdf", "scaling_final.csv", "scaling_time.csv", "results.json"):
        assert (out / name).exists(), name
    fin = pd.read_csv(out / "scaling_final.csv")
    assert len(fin) == 4 and (fin["n_seeds"] == 2).all()
    assert res["final_vs_dmft"]["rel_dev_median_abs"] < 0.15


def test_model_size_reduced(tmp_path, capsys, monkeypatch):
    """Both students, beta = 3, N = 8 ... 32: the analysis fits E_g(N) per student and the
    experiment's exponent agrees with the DMFT's on the same points (4 data sets, 1 seed)."""
    from analysis import model_size

    sweep = _sweep("model_size", ["data.beta=3.0", "model.N=8,16,32", "seed=0", "data.P=512", "dynamics.n_evals=4"],
                   tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert len(_index(sweep)) == 6
    res = model_size.analyze(sweep, dpi=DPI)
    rows = {r["student"]: r for r in res["exponents"]}
    assert set(rows) == {"eigenfeature", "random_projection"}
    for r in rows.values():
        assert abs(r["fitted"] - r["dmft_same_points"]) < 0.3, r
    # the projected student saturates (derived -2 = -(1 + alpha)), the aligned one does not (-3)
    assert rows["random_projection"]["dmft_same_points"] > rows["eigenfeature"]["dmft_same_points"] + 0.5
    assert (sweep / "analysis" / "model_size_sweep.png").exists()


@pytest.mark.slow
def test_sgd_noise_reduced(tmp_path, capsys, monkeypatch):
    from analysis import sgd_noise

    sweep = _sweep("sgd_noise", ["model.N=32", "data.P=32", "data.pool_size=128", "dynamics.t_max=2", "seed=0"],
                   tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert (_index(sweep)["status"] == "ok").sum() == 6
    assert sgd_noise.main([str(sweep), "--dpi", str(DPI)]) == 0
    out = sweep / "analysis"
    for name in ("sgd_noise.png", "sgd_noise.pdf", "sgd_noise.csv", "results.json"):
        assert (out / name).exists(), name
    tab = pd.read_csv(out / "sgd_noise.csv").set_index("condition")
    assert tab.loc["GD", "excess_final"] == 0
    assert tab.loc["SGD B=32 (without repl.)", "excess_final"] == 0  # B = P without replacement is GD


@pytest.mark.slow
def test_width_reduced(tmp_path, capsys, monkeypatch):
    from analysis import width

    sweep = _sweep("width", ["model.N=16,32", "data.P=24", "data.pool_size=96", "dynamics.t_max=2", "seed=0"],
                   tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert (_index(sweep)["status"] == "ok").sum() == 4
    assert width.main([str(sweep), "--dpi", str(DPI)]) == 0
    for name in ("width.png", "width.pdf", "width.csv", "results.json"):
        assert (sweep / "analysis" / name).exists(), name


def test_pareto_frontier_lies_on_the_dmft_frontier(tmp_path, capsys, monkeypatch):
    """Reduced pareto sweep (P = 64, N = 8..32, 4 seeds): at every corner of the DMFT frontier the
    experiment's E_g (same P, N, t) agrees with it within statistical error, and so does every
    corner of the experiment's own frontier with the DMFT frontier at the same compute."""
    from analysis import pareto

    sweep = _sweep("pareto", ["data.P=64", "model.N=8,16,32", "seed=0,1,2,3", "dynamics.t_max=300",
                              "dynamics.n_evals=30", "ensemble.datasets=3"], tmp_path, capsys=capsys,
                   monkeypatch=monkeypatch)
    res = pareto.analyze(sweep, dpi=DPI)
    out = sweep / "analysis"
    for name in ("pareto.png", "pareto.pdf", "pareto_points.csv", "pareto_frontier.csv", "results.json"):
        assert (out / name).exists(), name
    fr = pd.read_csv(out / "pareto_frontier.csv")
    for kind in ("dmft_corner", "empirical_corner"):
        z = fr.loc[(fr["kind"] == kind) & (fr["frontier"] == "P=64"), "z"].to_numpy(float)
        assert len(z) >= 5
        # z over 4 seeds is Student-t with 3 degrees of freedom: |t3| <= 5.84 with 99 %
        assert np.nanmax(np.abs(z)) <= 5.84, (kind, z)
        assert np.nanmean(np.abs(z) <= 3.18) >= 0.8, (kind, z)   # |t3| <= 3.18 with 95 %
        assert abs(np.nanmean(z)) <= 2.0, (kind, z)
    rel = fr.loc[fr["kind"] == "dmft_corner", "rel_dev"].to_numpy(float)
    assert np.nanmedian(np.abs(rel)) < 0.05
    assert res["lambda_max_measured_over_de_edge"]


# --------------------------------------------------------------------------------------------
# Sweep index and error boundary

CRASHY_APP = '''
"""The training app with one forced crash: seed=13 raises before training."""
from rfscaling.app import hydra_app
from rfscaling.train import run


@hydra_app("train")
def main(cfg):
    from hydra.core.hydra_config import HydraConfig

    if cfg.seed == 13:
        raise RuntimeError("forced crash (seed=13)")
    run(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
'''
TINY = ["model.N=32", "ensemble.datasets=2", "ensemble.replicas=2", "dynamics.t_max=3", "dynamics.n_evals=6",
        *QUIET]


def test_failed_jobs_do_not_spoil_the_sweep_joblib(tmp_path):
    """A multirun (joblib launcher, 2 workers) where one value is invalid (data.P=-3) and one job
    is forced to crash: the other jobs complete, the index lists every failure with its error
    line, the exit status is 1."""
    app = tmp_path / "crashy_app.py"
    app.write_text(CRASHY_APP)
    sweep = tmp_path / "sweep"
    args = [str(app), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "data.P=16,-3", "seed=0,13",
            *TINY, f"hydra.sweep.dir={sweep}"]
    p = _run(args, tmp_path, module=None)
    assert p.returncode == 1, p.stderr[-3000:]
    idx = _index(sweep).set_index("job")
    assert list(idx.index) == [0, 1, 2, 3]
    assert idx.loc[0, "status"] == "ok" and np.isfinite(idx.loc[0, "E_g"])
    assert idx.loc[1, "status"] == "failed" and idx.loc[1, "error"] == "RuntimeError: forced crash (seed=13)"
    assert idx.loc[2, "status"] == "failed" and idx.loc[2, "error"] == "data.P=-3: must be a positive integer"
    assert idx.loc[3, "status"] == "failed"
    job_dir = {n: Path(idx.loc[n, "run_dir"]) for n in idx.index}
    assert (job_dir[2] / "error.txt").read_text() == "data.P=-3: must be a positive integer\n"
    assert "forced crash" in (job_dir[1] / "traceback.txt").read_text()
    assert not (job_dir[0] / "error.txt").exists() and not (job_dir[2] / "traceback.txt").exists()
    assert "error: job 2 failed: data.P=-3: must be a positive integer" in p.stderr
    assert "3 job(s) of the sweep failed" in p.stderr.splitlines()[-1]
    assert "Traceback" not in p.stderr
    assert json.loads((sweep / "index.json").read_text())["jobs"][1]["status"] == "failed"


def test_rerun_skips_finished_jobs_and_index_can_be_rebuilt(tmp_path, capsys):
    """Basic launcher: a sweep re-run into the same directory skips the finished jobs (status
    skipped, same numbers) and retries the failed one; the index can be rebuilt from the job dirs."""
    from rfscaling.studies.sweep import main as sweep_main

    sweep = tmp_path / "s"
    args = ["-m", "data.P=12,-3", *TINY, f"hydra.sweep.dir={sweep}"]
    p = _run(args, tmp_path)
    assert p.returncode == 1, p.stderr[-2000:]
    first = _index(sweep)
    assert list(first["status"]) == ["ok", "failed"]
    p = _run(args, tmp_path)
    assert p.returncode == 1, p.stderr[-2000:]
    again = _index(sweep)
    assert list(again["status"]) == ["skipped", "failed"]
    assert again.loc[0, "E_g"] == pytest.approx(first.loc[0, "E_g"])
    assert "0 ok, 1 failed, 1 skipped" in p.stdout
    (sweep / "index.csv").unlink()
    assert sweep_main([str(sweep)]) == 1  # a failed job: status 1
    pd.testing.assert_frame_equal(_index(sweep), again)
    assert "2 jobs (1 failed, 1 skipped)" in capsys.readouterr().out


def test_submitit_local_launcher(tmp_path):
    """The same sweep through submitit's local executor (what the SLURM preset uses on a cluster)."""
    sweep = tmp_path / "sweep"
    p = _run(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "data.P=12,-3", *TINY,
              f"hydra.sweep.dir={sweep}"], tmp_path, timeout=600)
    assert p.returncode == 1, p.stderr[-3000:]
    idx = _index(sweep).set_index("job")
    assert idx.loc[0, "status"] == "ok" and idx.loc[1, "status"] == "failed"
    assert idx.loc[1, "error"] == "data.P=-3: must be a positive integer"


# --------------------------------------------------------------------------------------------
# Empirical exponents (slow: the windows need P or N up to 2048)


@pytest.mark.slow
def test_empirical_exponents_agree_with_derived(tmp_path):
    """Data-limited (P = 16..256 at N = 2048) and model-limited (N = 16..256 at P = 2048) sweeps,
    3 seeds x 2 data sets, t = 1e6: the fitted exponents are within analysis.scaling.TOLERANCE of
    the derived ones, and within 0.05 of the DMFT fitted on the same points."""
    from analysis import scaling

    common = ["seed=0,1,2", "dynamics.t_max=1e6", "dynamics.n_evals=12"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _sweep("scaling", ["data.P=16,32,64,128,256", "model.N=2048", *common], tmp_path / "a", launcher="local")
    b = _sweep("scaling", ["data.P=2048", "model.N=16,32,64,128,256", *common], tmp_path / "b", launcher="local")
    merged = tmp_path / "merged"
    merged.mkdir()
    for src in (a, b):
        for d in src.iterdir():
            if d.is_dir() and (d / ".hydra").is_dir():
                (merged / f"{src.parent.name}{d.name}").symlink_to(d)
    res = scaling.analyze(merged, plot=False)
    ex = {r["regime"].split()[0]: r for r in res["exponents"]}
    assert set(ex) >= {"data-limited", "model-limited"}
    for r in ex.values():
        assert abs(r["fitted"] - r["derived"]) <= scaling.TOLERANCE, r
        # and close to the DMFT on the same points (the window's finite-size drift is shared)
        assert abs(r["fitted"] - r["engine_same_points"]) <= 0.05, r
