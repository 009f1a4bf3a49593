"""Smoke test of the benchmark suite's quick mode (slow: a few minutes on 2 cores). Timings are
never asserted; this checks that the suite runs end to end, writes its figures, and that the
figures' correctness checks (same iterates as the naive loop, strided as stepwise) hold."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_suite_writes_its_figures(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out-dir", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=900, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    suite = json.loads((tmp_path / "suite.json").read_text())
    train, theory = suite["train"], suite["theory"]
    assert json.loads((tmp_path / "train.json").read_text()).keys() == train.keys()
    assert (tmp_path / "theory.json").exists()
    rows = train["throughput"]
    assert {(r["N"], r["datasets"], r["replicas"], r["dtype"]) for r in rows} >= {
        (1024, 4, 8, "float32"), (1024, 4, 8, "float64"), (1024, 32, 1, "float32"), (1024, 32, 1, "float64")}
    for r in rows:  # the same iterates as the naive loop and as the features form
        tol = 1e-4 if r["dtype"] == "float32" else 1e-10
        assert r["weights_rel_diff_vs_naive"] < tol and r["weights_rel_diff_form_vs_features"] < tol
        assert r["speedup_vs_naive"] > 0 and r["flops_fraction_of_bmm"] > 0
    whole = [r for r in rows if "run_s" in r]
    assert len(whole) >= 5
    for r in whole:  # whole strided runs: the same iterates as one product per step
        assert r["run_stride"] >= 1 and r["run_s"] > 0
        assert r["weights_rel_diff_strided_vs_stepwise"] < (1e-4 if r["dtype"] == "float32" else 1e-12)
    for key in ("hooks", "hooks_large"):
        runs = train[key]["runs"]
        assert set(runs) == {"tensorboard_off", "tensorboard_on"}
        for r in runs.values():
            assert r["n_evals"] >= 30 and 0 < r["train_steps_in_run_s"] < r["loop_s"]
            assert r["per_eval_ms"]["early_stopping eval"] > 0 and r["per_eval_ms"]["eigenmode eval"] > 0
        assert runs["tensorboard_on"]["per_eval_ms"]["tensorboard eval"] > 0
    for key in ("float64", "float32"):
        ex = train["exact_vs_euler"][key]
        assert ex["exact_chain_vs_direct_rel"] < (1e-10 if key == "float64" else 1e-5)
        assert ex["equal_accuracy"]["0.01"]["max_rel_err_early"] <= 0.01
    assert theory["vs_monte_carlo"]["ratio_mc_over_theory"] > 1 and len(theory["vs_N"]) == 3
    assert len(theory["discrete_vs_continuous"]) == 3 and all(r["ratio"] > 0 for r in theory["discrete_vs_continuous"])
    assert "targets" not in train and "ratio" in p.stdout  # targets live in docs/performance.md
    assert "Times are in" in p.stdout  # torch.utils.benchmark.Compare's tables


@pytest.mark.slow
def test_a_section_runs_alone(tmp_path):
    """Each section is a module with its own command line (here the cheapest one)."""
    out = tmp_path / "exact.json"
    p = subprocess.run([sys.executable, "-m", "bench.bench_exact", "--quick", "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["exact_vs_euler"]) == {"problem", "float64", "float32"} and "measurements" not in res
