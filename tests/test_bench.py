"""Smoke test of the benchmark suite's quick mode (slow: about two minutes on 2 cores). Timings are
never asserted; this checks that the suite runs end to end and writes its figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_suite_writes_its_figures(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out-dir", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    suite = json.loads((tmp_path / "suite.json").read_text())
    train, theory = suite["train"], suite["theory"]
    assert (tmp_path / "train.json").exists() and (tmp_path / "theory.json").exists()
    rows = train["throughput"]
    assert {(r["N"], r["datasets"], r["replicas"], r["dtype"]) for r in rows} >= {
        (1024, 4, 8, "float32"), (1024, 4, 8, "float64"), (1024, 32, 1, "float32"), (1024, 32, 1, "float64")}
    assert all(r["weights_match"] for r in rows if "weights_match" in r)  # same iterates as the naive loop
    whole = [r for r in rows if "run_s" in r]
    assert len(whole) >= 5
    for r in whole:  # whole strided runs: the same iterates as one product per step
        assert r["run_stride"] >= 1 and r["run_s"] > 0
        assert r["weights_rel_diff_strided_vs_stepwise"] < (1e-4 if r["dtype"] == "float32" else 1e-12)
    assert set(train["hooks"]["runs"]) == set(train["hooks_large"]["runs"]) == {"tensorboard_off", "tensorboard_on"}
    for key in ("float64", "float32"):
        ex = train["exact_vs_euler"][key]
        assert ex["exact_chain_vs_direct_rel"] < (1e-10 if key == "float64" else 1e-5)
        assert ex["equal_accuracy"]["0.01"]["max_rel_err_early"] <= 0.01
    assert theory["vs_monte_carlo"]["ratio_mc_over_theory"] > 1 and len(theory["vs_N"]) == 3
    assert "targets" in train and "ratio" in p.stdout
