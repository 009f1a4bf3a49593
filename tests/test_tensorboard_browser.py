"""TensorBoard as a user sees it (issue 12.5): a small sweep of the training app, ``tensorboard
--logdir`` on it, and headless-Chromium screenshots of the default view.

Opt-in (``python -m pytest -m slow tests/test_tensorboard_browser.py``, ~30 s); skipped where
/usr/bin/chromium is missing (Debian: ``apt-get install -y chromium``). With
``RFSCALING_UPDATE_FIGURES=1`` the time-series screenshot is copied to
docs/figures/tensorboard_time_series.png. The fast checks of the same event files (steps, tags,
images, hparams) are in tests/test_hooks.py (``test_tensorboard_in_the_app_reads_back_as_documented``).

The page is loaded with ``?forceSVG=true``, TensorBoard's own switch from WebGL to SVG line
charts: headless Chromium without a GPU renders the WebGL charts empty. Nothing else about the
view changes (smoothing, groups, runs are TensorBoard's defaults).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FIGURE = REPO / "docs" / "figures" / "tensorboard_time_series.png"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing")]

#: the sweep: two values of P, small and fast; the fixed settings are left out of the job names
SWEEP = ["-m", "data.P=32,64", "model.N=64", "ensemble.datasets=2", "ensemble.replicas=2", "dynamics.t_max=20",
         "dynamics.n_evals=20", "hooks.progress=false", "device=cpu",
         "hydra.job.config.override_dirname.exclude_keys=[model.N,ensemble.datasets,ensemble.replicas,"
         "dynamics.t_max,dynamics.n_evals,hooks.progress,device]"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None):
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(),
                                 headers={"X-XSRF-Protected": "1", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _screenshot(url: str, path: Path, profile: Path) -> None:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={path}", "--window-size=1600,1200",
           "--virtual-time-budget=15000", url]
    subprocess.run(cmd, capture_output=True, timeout=180, check=False)
    assert path.exists() and path.stat().st_size > 20_000, f"no screenshot from {' '.join(cmd)}"


def test_a_sweep_in_tensorboard(tmp_path):
    sweep = tmp_path / "sweep"
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0", MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, "-m", "rfscaling.train", *SWEEP, f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir())
    assert jobs == ["000_data.P=32", "001_data.P=64"]  # run names carry the swept setting

    port = _free_port()
    log = open(tmp_path / "tensorboard.log", "w")  # noqa: SIM115  closed below
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(sweep), "--port", str(port),
                           "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        want = {f"{j}/tensorboard{r}" for j in jobs for r in ("/experiment", "/dmft", "")}
        deadline, runs = time.monotonic() + 90, []
        while time.monotonic() < deadline:
            try:
                runs = _get(f"{base}/data/runs")
            except OSError:
                runs = []
            if set(runs) >= want:
                break
            assert tb.poll() is None, (tmp_path / "tensorboard.log").read_text()[-3000:]
            time.sleep(0.5)
        assert set(runs) == want, runs

        # the HParams dashboard's data: the five hyperparameters shown first, the metric columns
        exp = _get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""})
        shown = [h["name"] for h in exp["hparamInfos"] if h.get("differs")]
        assert shown == ["data.P", "dynamics.name", "dynamics.temperature", "dynamics.weight_decay", "model.N"]
        metrics = [(m["name"].get("group", ""), m["name"]["tag"]) for m in exp["metricInfos"]]
        assert metrics[:4] == [("experiment", "curves/E_g"), ("dmft", "curves/E_g"), ("", "hparam/E_g_early_stopped"),
                               ("", "hparam/E_g_optimum_dmft")]
        groups = _get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                      "STATUS_RUNNING"],
            "colParams": [], "startIndex": 0, "sliceSize": 100})["sessionGroups"]
        assert sorted(g["name"] for g in groups) == [f"{j}/tensorboard" for j in jobs]
        for g in groups:  # every metric column has a value in every session
            assert len(g["metricValues"]) == len(metrics), g["name"]

        shots = {}
        for view in ("timeseries", "hparams"):
            shots[view] = tmp_path / f"tensorboard_{view}.png"
            _screenshot(f"{base}/?forceSVG=true#{view}", shots[view], tmp_path / f"profile_{view}")
    finally:
        tb.terminate()
        try:
            tb.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tb.kill()
        log.close()

    from PIL import Image

    img = np.asarray(Image.open(shots["timeseries"]).convert("RGB")).astype(int)
    assert img.shape == (1200, 1600, 3)
    body = img[130:, 330:1330]  # the cards, below TensorBoard's bar, right of the runs list
    saturated = body.max(-1) - body.min(-1) > 80
    orange = (body[..., 0] > 200) & (body[..., 2] < 80)  # TensorBoard's checkboxes and accents
    assert (saturated & ~orange).sum() > 2000, "no coloured lines in the charts"
    if os.environ.get("RFSCALING_UPDATE_FIGURES") == "1":
        shutil.copyfile(shots["timeseries"], FIGURE)
