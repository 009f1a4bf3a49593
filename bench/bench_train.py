"""Benchmark of the training testbed: throughput of the batched ensemble against a naive per-seed
loop, achieved FLOP/s against plain bmm, hook overhead of a default-schedule run, and the exact
integrator against Euler stepping; all figures measured side by side in one process.

    python -m bench.bench_train                  # full (a few minutes on 2 cores)
    python -m bench.bench_train --quick          # reduced sizes (well under a minute)
    python -m bench.bench_train --device cuda    # the same suite on a GPU

Writes bench/results/train.json (or --out). Timings are the minimum over interleaved rounds
(A B A B ...), so load from other processes mostly cancels in the ratios; absolute numbers on a
loaded machine are noisy. Nothing here changes rfscaling/: the hook timers are installed by
wrapping methods for the duration of one run and removed afterwards, and the "candidate" rows
are local prototypes of proposed changes, checked against the trainer's weights.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rfscaling.data import ProblemSpec, make_generator, make_problem, power_law_eigen_task, sample_eigen_ensemble
from rfscaling.dynamics import DynamicsParams, EulerDynamics, ExactDynamics, exact_moments
from rfscaling.dynamics.exact import HessianEigen

INF = float("inf")


# ---------------------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _round_robin(fns: dict, rounds: int, device: torch.device) -> dict:
    """Best wall time of each function over ``rounds`` interleaved rounds (A B C A B C ...)."""
    best = {k: INF for k in fns}
    out = {}
    for _ in range(rounds):
        for k, f in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            out[k] = f()
            _sync(device)
            best[k] = min(best[k], time.perf_counter() - t0)
    return best, out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _dtname(dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------------------------


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": str(device),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    info["blas"] = "mkl" if torch.backends.mkl.is_available() else "other"
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_references(device: torch.device, quick: bool) -> dict:
    """Memory bandwidth (copy of a 256 MiB buffer: read + write) and square GEMM FLOP/s."""
    n = 32 * 2**20  # float64 elements: 256 MiB
    a = torch.ones(n, dtype=torch.float64, device=device)
    b = torch.empty_like(a)
    t, _ = _round_robin({"copy": lambda: b.copy_(a) is None}, 3, device)
    out = {"copy_bandwidth_GBs": 2 * n * 8 / t["copy"] / 1e9}
    m = 1024
    for dt in (torch.float32, torch.float64):
        A = torch.randn(m, m, dtype=dt, device=device)
        B = torch.randn(m, m, dtype=dt, device=device)
        reps = 2 if quick else 4
        t, _ = _round_robin({"mm": lambda A=A, B=B, reps=reps: [torch.mm(A, B) for _ in range(reps)] and None}, 3,
                            device)
        out[f"gemm_{m}_{_dtname(dt)}_GFLOPs"] = 2 * m**3 * reps / t["mm"] / 1e9
    return out


# ---------------------------------------------------------------------------------------------
# 1. throughput: batched ensemble vs naive per-seed loop, and FLOP/s vs plain bmm
# ---------------------------------------------------------------------------------------------


def _top_eig_power(X: torch.Tensor, iters: int = 30) -> float:
    """max_d lambda_max(X_d^T X_d) by power iteration with row vectors (v X^T) X (cheap; used only
    to pick a stable dt; the column form X^T (X v) hits a ~10x slower batched-GEMV path on CPU)."""
    X = X.double()
    v = torch.ones(X.shape[0], 1, X.shape[2], dtype=X.dtype, device=X.device)
    lam = torch.zeros(X.shape[0], dtype=X.dtype, device=X.device)
    for _ in range(iters):
        u = torch.bmm(torch.bmm(v, X.transpose(1, 2)), X)
        lam = u.norm(dim=(1, 2))
        v = u / lam[:, None, None]
    return float(lam.max())


def _make_euler(data, params, lam_max: float | None):
    """EulerDynamics with dt = 1/lambda_max; passes lambda_max when the constructor takes it
    (skips the full eigvalsh of every Gram matrix, see the setup-cost row)."""
    if lam_max is not None and "lambda_max" in inspect.signature(EulerDynamics.__init__).parameters:
        return EulerDynamics(data, params, dt=1.0 / lam_max, lambda_max=lam_max)
    return EulerDynamics(data, params, dt=None if lam_max is None else 1.0 / lam_max)


def _naive_loop(data, dt: float, steps: int) -> torch.Tensor:
    """What a user would write: per seed a Linear readout, SGD with lr = dt, summed loss."""
    X_all, Y_all = data.features, data.labels
    D, R, N = X_all.shape[0], Y_all.shape[1], X_all.shape[2]
    out = torch.empty(D, R, N, dtype=X_all.dtype, device=X_all.device)
    for d in range(D):
        X = X_all[d]
        for r in range(R):
            y = Y_all[d, r][:, None]
            model = torch.nn.Linear(N, 1, bias=False, dtype=X.dtype, device=X.device)
            with torch.no_grad():
                model.weight.zero_()
            opt = torch.optim.SGD(model.parameters(), lr=dt)
            for _ in range(steps):
                opt.zero_grad()
                loss = 0.5 * ((model(X) - y) ** 2).sum()
                loss.backward()
                opt.step()
            out[d, r] = model.weight.detach()[0]
    return out


def _fused_step_prototype(X, Xt, y, dt, steps, w):
    """Candidate: the update folded into the second GEMM (w <- w - dt X^T r in one baddbmm)."""
    for _ in range(steps):
        r = torch.baddbmm(y, w, Xt, beta=-1.0)
        w = torch.baddbmm(w, r, X, beta=1.0, alpha=-dt)
    return w


def _gram_step_prototype(X, y, dt, steps, D, R):
    """Candidate: Euler in the smaller Gram space (gradient flow from w(0) = 0, same iterates up
    to rounding). P < N: w = X^T a, a <- a - dt (K a - y), K = X X^T (P x P); else
    w <- w - dt (H w - b), H = X^T X (N x N), b = X^T y. Returns (setup, run) closures."""
    P, N = X.shape[1], X.shape[2]
    if P < N:
        K = X @ X.transpose(1, 2)  # setup, timed by the caller

        def run():
            a = torch.zeros(D, R, P, dtype=X.dtype, device=X.device)
            for _ in range(steps):
                a.sub_(torch.baddbmm(y, a, K, beta=-1.0), alpha=dt)  # K a - y (K symmetric)
            return torch.bmm(a, X)
    else:
        H = X.transpose(1, 2) @ X
        b = torch.bmm(y, X)

        def run():
            w = torch.zeros(D, R, N, dtype=X.dtype, device=X.device)
            for _ in range(steps):
                w = torch.baddbmm(w, w, H, alpha=-dt).add_(b, alpha=dt)
            return w
    return run


def bench_throughput(N: int, P: int, D: int, R: int, dtype, steps: int, rounds: int, device, naive=True,
                     candidates=True) -> dict:
    task = power_law_eigen_task(N, 1.0, 1.0, label_noise=0.1, teacher="random")
    data = sample_eigen_ensemble(task, P, D, R, make_generator(0, "bench", device=device), dtype, device)
    lam = _top_eig_power(data.features)
    params = DynamicsParams()
    dyn = _make_euler(data, params, lam)
    dt = dyn.dt
    X = data.features
    Xt = getattr(dyn, "_Xt", X.transpose(1, 2))
    gen = make_generator(0, "dyn", device=device)

    def ensemble():
        return dyn.advance(dyn.init(gen), steps).weights

    W = torch.randn(D, R, N, dtype=dtype, device=device)
    Rm = torch.randn(D, R, P, dtype=dtype, device=device)

    def plain_bmm():
        for _ in range(steps):
            torch.bmm(W, Xt)
            torch.bmm(Rm, X)

    fns = {"ensemble": ensemble, "bmm": plain_bmm}
    if naive:
        fns["naive"] = lambda: _naive_loop(data, dt, steps)
    if candidates:
        w0 = torch.zeros(D, R, N, dtype=dtype, device=device)
        fns["cand_fused_update"] = lambda: _fused_step_prototype(X, X.transpose(1, 2), data.labels, dt, steps, w0)
        _sync(device)
        t0 = time.perf_counter()
        fns["cand_gram_space"] = _gram_step_prototype(X, data.labels, dt, steps, D, R)
        _sync(device)
        gram_setup = time.perf_counter() - t0
    # warm-up (allocator, BLAS dispatch, autograd)
    for f in fns.values():
        f()
    best, out = _round_robin(fns, rounds, device)

    members = D * R
    flops = members * (4 * P * N + 2 * N) * steps  # two GEMMs (2 P N each) + the axpy, per member
    bmm_flops = members * 4 * P * N * steps
    esize = torch.finfo(dtype).bits // 8
    bytes_step = (2 * D * P * N + 4 * members * (N + P)) * esize  # X read twice + vectors
    res = {
        "N": N, "P": P, "datasets": D, "replicas": R, "seeds": members, "dtype": _dtname(dtype), "steps": steps,
        "dt": dt, "ensemble_s": best["ensemble"], "bmm_s": best["bmm"],
        "ensemble_seed_steps_per_s": members * steps / best["ensemble"],
        "ensemble_ms_per_step": best["ensemble"] / steps * 1e3,
        "ensemble_GFLOPs": flops / best["ensemble"] / 1e9,
        "bmm_GFLOPs": bmm_flops / best["bmm"] / 1e9,
        "flops_fraction_of_bmm": (flops / best["ensemble"]) / (bmm_flops / best["bmm"]),
        "ensemble_GBs": bytes_step * steps / best["ensemble"] / 1e9,
        "bytes_per_step": bytes_step,
    }
    if naive:
        res.update({
            "naive_s": best["naive"], "naive_seed_steps_per_s": members * steps / best["naive"],
            "speedup_vs_naive": best["naive"] / best["ensemble"],
            "weights_rel_diff_vs_naive": _rel(out["ensemble"], out["naive"]),
        })
        res["weights_match"] = res["weights_rel_diff_vs_naive"] <= (1e-4 if dtype == torch.float32 else 1e-10)
    if candidates:
        for k in ("cand_fused_update", "cand_gram_space"):
            res[f"{k}_speedup"] = best["ensemble"] / best[k]
            res[f"{k}_rel_diff"] = _rel(out[k], out["ensemble"])
        res["cand_gram_space_setup_s"] = gram_setup
        saved = (best["ensemble"] - best["cand_gram_space"]) / steps
        res["cand_gram_space_break_even_steps"] = gram_setup / saved if saved > 0 else None
    return res


def bench_step_overhead(device, rounds: int) -> dict:
    """Per-step cost on a tiny problem (N = P = 16, one member): pure Python/dispatch overhead."""
    r = bench_throughput(16, 16, 1, 1, torch.float64, 200, rounds, device, naive=True, candidates=False)
    return {"ensemble_us_per_step": r["ensemble_s"] / 200 * 1e6, "naive_us_per_seed_step": r["naive_s"] / 200 * 1e6}


def bench_threads(device, steps: int, rounds: int) -> dict:
    """The app's default problem (4x4, P=256, N=1024, float32): ms/step with one thread vs torch's
    default thread count, interleaved (the app's ``threads`` setting)."""
    if device.type != "cpu":
        return {}
    prev = torch.get_num_threads()
    ncpu = os.cpu_count() or 1
    task = power_law_eigen_task(1024, 1.0, 1.0, label_noise=0.1, teacher="fixed")
    data = sample_eigen_ensemble(task, 256, 4, 4, make_generator(0, "bench", device=device), torch.float32, device)
    dyn = EulerDynamics(data, DynamicsParams())
    st = dyn.init(make_generator(0, "dyn", device=device))

    def with_threads(n):
        def f():
            torch.set_num_threads(n)
            dyn.advance(st, steps)
        return f

    try:
        with_threads(1)()
        with_threads(ncpu)()
        best, _ = _round_robin({"1": with_threads(1), str(ncpu): with_threads(ncpu)}, rounds, device)
    finally:
        torch.set_num_threads(prev)
    return {"steps": steps, "ms_per_step_1_thread": best["1"] / steps * 1e3,
            "ms_per_step_default_threads": best[str(ncpu)] / steps * 1e3, "threads_default": ncpu,
            "speedup_default_over_1": best["1"] / best[str(ncpu)]}


def bench_setup_cost(N: int, P: int, D: int, dtype, device) -> dict:
    """Cost of choosing dt: full eigvalsh of every Gram matrix (what EulerDynamics does without a
    given lambda_max) vs 60 power iterations (the estimate used above)."""
    from rfscaling.dynamics import hessian_top_eigenvalue

    g = make_generator(1, "setup", device=device)
    X = torch.randn(D, P, N, generator=g, dtype=dtype, device=device)
    best, out = _round_robin({"eigvalsh": lambda: float(hessian_top_eigenvalue(X).max()),
                              "power": lambda: _top_eig_power(X)}, 1, device)
    return {"N": N, "P": P, "datasets": D, "dtype": _dtname(dtype), "eigvalsh_s": best["eigvalsh"],
            "power_iteration_s": best["power"], "ratio": best["eigvalsh"] / best["power"],
            "power_rel_error": abs(out["power"] - out["eigvalsh"]) / out["eigvalsh"]}


# ---------------------------------------------------------------------------------------------
# 2. hook overhead of a default-schedule run
# ---------------------------------------------------------------------------------------------


class _Timers:
    def __init__(self):
        self.calls: dict[str, list] = {}
        self.last_snapshot = None

    def add(self, k, dt):
        self.calls.setdefault(k, []).append(dt)

    def total(self, k) -> float:
        return float(sum(self.calls.get(k, [])))

    def count(self, k) -> int:
        return len(self.calls.get(k, []))

    def per_call(self, k) -> np.ndarray:
        return np.asarray(self.calls.get(k, []), dtype=np.float64)


@contextlib.contextmanager
def _instrument(timers: _Timers, device):
    """Wrap (for this block only) the methods a run spends its time in with timers."""
    import rfscaling.dynamics.loop as loop_mod
    import rfscaling.hooks.eigenmode as eig_mod
    from rfscaling.hooks import EarlyStoppingHook, EigenmodeHook, TensorBoardHook

    patches = []

    def wrap(owner, name, key, keep_snapshot=False):
        orig = getattr(owner, name, None)
        if orig is None:
            return

        @functools.wraps(orig)
        def timed(*a, **k):
            _sync(device)
            t0 = time.perf_counter()
            r = orig(*a, **k)
            _sync(device)
            timers.add(key, time.perf_counter() - t0)
            if keep_snapshot:
                timers.last_snapshot = r
            return r

        patches.append((owner, name, orig))
        setattr(owner, name, timed)

    wrap(EulerDynamics, "advance", "train_steps")
    wrap(loop_mod, "make_snapshot", "snapshot", keep_snapshot=True)
    wrap(eig_mod, "measure", "measure")
    wrap(EigenmodeHook, "on_eval", "eigenmode_hook")
    wrap(EarlyStoppingHook, "on_eval", "early_stopping_hook")
    wrap(TensorBoardHook, "on_eval", "tensorboard_hook")
    wrap(TensorBoardHook, "mode_image", "tensorboard_image")
    wrap(TensorBoardHook, "on_start", "tensorboard_start")
    try:
        yield
    finally:
        for owner, name, orig in reversed(patches):
            setattr(owner, name, orig)


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rfscaling.config import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


class _BlitModeImage:
    """Candidate for TensorBoardHook.mode_image: one persistent figure with fixed log-log axes
    (limits from the DMFT curve known at on_start), static parts drawn once, per evaluation only
    the two lines and the title redrawn (Agg blitting)."""

    def __init__(self, n_modes: int, ylim):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.5), dpi=80)
        self.canvas = FigureCanvasAgg(fig)
        ax = fig.add_subplot(111)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.8, n_modes * 1.25)
        ax.set_ylim(*ylim)
        (self.emp,) = ax.plot([], [], ".", ms=3, color="C0", label="empirical", animated=True)
        (self.th,) = ax.plot([], [], "-", color="C3", lw=1.2, label="DMFT", animated=True)
        ax.set_xlabel("mode index k")
        ax.set_ylabel("per-mode error e_k")
        ax.legend(loc="lower left", fontsize=8)
        self.title = ax.set_title(" ", animated=True)
        fig.tight_layout()
        self.canvas.draw()
        self.bg = self.canvas.copy_from_bbox(fig.bbox)
        self.fig, self.ax = fig, ax

    def __call__(self, snapshot) -> np.ndarray:
        m, th = snapshot.metrics, snapshot.theory
        k = np.arange(1, m.mode_error.size + 1)
        pos = m.mode_error > 0
        self.emp.set_data(k[pos], m.mode_error[pos])
        if th is not None and th.mode_error is not None:
            tp = th.mode_error > 0
            self.th.set_data(k[tp], th.mode_error[tp])
        self.title.set_text(f"t = {snapshot.time:.3g}")
        self.canvas.restore_region(self.bg)
        self.ax.draw_artist(self.th)
        self.ax.draw_artist(self.emp)
        self.fig.draw_artist(self.title)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


def _standalone_ms_per_step(spec, device, steps: int, rounds: int) -> float:
    """Best ms/step of EulerDynamics.advance on the run's own problem, in this process."""
    problem = make_problem(spec.problem)
    dyn = EulerDynamics(problem.data, spec.params, dt=spec.dt)
    st = dyn.init(make_generator(0, "dyn", device=device))
    dyn.advance(st, 5)
    best, _ = _round_robin({"advance": lambda: dyn.advance(st, steps)}, rounds, device)
    return best["advance"] / steps * 1e3


def bench_hooks(device, quick: bool) -> dict:
    """The app's own run (rfscaling.train.train on the composed default config, Euler, no progress
    bar) with TensorBoard off and on. Timers around the snapshot and each hook's on_eval give the
    per-evaluation cost; the training steps are timed inside the same run.

    Two overhead figures per run: ``overhead_fraction`` = (loop wall - training steps in the run) /
    training steps (raw, sensitive to load spikes), and ``overhead_fraction_robust`` = (evaluations
    x median per-evaluation cost + one-off writer start) / (steps x best standalone ms/step), which
    a loaded machine disturbs much less. Quick mode runs t_max/10 (fewer steps per evaluation, so a
    larger fraction) and also reports the projection to the default schedule."""
    from rfscaling.hooks import log_spaced_steps
    from rfscaling.train import spec_from_config, train

    base = [f"device={device.type}", "hooks.progress=false", "dynamics.integrator=euler"]
    default_cfg = _compose(base)
    t_max_default = float(default_cfg.dynamics.t_max)
    t_max = t_max_default / 10 if quick else t_max_default
    n_evals_default = int(default_cfg.dynamics.n_evals)
    n_evals = max(2, n_evals_default // 4) if quick else n_evals_default
    out: dict = {"t_max_default": t_max_default, "t_max": t_max, "n_evals": n_evals, "runs": {}}
    spec = None
    for tb in (False, True):
        cfg = _compose(base + [f"dynamics.t_max={t_max}", f"dynamics.n_evals={n_evals}",
                               f"hooks.tensorboard={str(tb).lower()}"])
        spec = spec_from_config(cfg)
        timers = _Timers()
        with tempfile.TemporaryDirectory() as tmp, _instrument(timers, device):
            summ = train(spec, tmp)
        loop = float(summ["loop_wall_time_s"])
        steps = int(summ["n_steps"])
        tr = timers.total("train_steps")
        n_eval = timers.count("snapshot")
        per_eval = timers.per_call("snapshot").copy()
        for k in ("eigenmode_hook", "early_stopping_hook", "tensorboard_hook"):
            c = timers.per_call(k)
            if c.size == per_eval.size:
                per_eval += c

        def med(k, timers=timers):
            return float(np.median(timers.per_call(k))) * 1e3 if timers.count(k) else 0.0

        row = {
            "tensorboard": tb, "n_steps": steps, "n_evals": n_eval, "dt": summ["dt"],
            "dtype": summ.get("dtype"), "ensemble": [summ.get("datasets"), summ.get("replicas")],
            "P": summ.get("P"), "N": summ.get("n_parameters"),
            "wall_s": float(summ["wall_time_s"]), "loop_s": loop, "train_steps_s": tr,
            "ms_per_step_in_run": tr / max(steps, 1) * 1e3,
            "overhead_s": loop - tr, "overhead_fraction": (loop - tr) / tr,
            "per_eval_ms_median": float(np.median(per_eval)) * 1e3 if per_eval.size else 0.0,
            "per_eval_ms_mean": float(np.mean(per_eval)) * 1e3 if per_eval.size else 0.0,
            "per_eval_ms_median_by_part": {
                "snapshot": med("snapshot"),
                "measure (in eigenmode hook)": med("measure"),
                "eigenmode hook": med("eigenmode_hook"),
                "early stopping hook": med("early_stopping_hook"),
                "tensorboard hook": med("tensorboard_hook"),
                "mode image (in tensorboard hook)": med("tensorboard_image"),
            },
            "tensorboard_start_s": timers.total("tensorboard_start"),
            "setup_s": float(summ["wall_time_s"]) - loop,
        }
        out["runs"]["tensorboard_on" if tb else "tensorboard_off"] = row
        if tb and timers.last_snapshot is not None:
            out["image_candidate"] = _bench_image(timers.last_snapshot, spec)

    ms_step = _standalone_ms_per_step(spec, device, 100 if quick else 300, 3)
    if "image_candidate" in out and "tensorboard_on" in out["runs"]:
        r = out["runs"]["tensorboard_on"]
        img = r["per_eval_ms_median_by_part"]["mode image (in tensorboard hook)"]
        r["per_eval_ms_median_with_candidate_image"] = r["per_eval_ms_median"] - img + out["image_candidate"]["blit_ms"]
    out["standalone_ms_per_step"] = ms_step
    dt = out["runs"]["tensorboard_off"]["dt"]
    n_def = max(1, math.ceil(t_max_default / dt - 1e-9))
    e_def = len(log_spaced_steps(n_def, n_evals_default))
    out["default_schedule"] = {"n_steps": n_def, "n_evals": e_def}
    for row in out["runs"].values():
        once = 1e3 * row["tensorboard_start_s"]
        row["overhead_fraction_robust"] = (row["n_evals"] * row["per_eval_ms_median"] + once) / (
            row["n_steps"] * ms_step)
        row["projected_default_overhead_fraction"] = (e_def * row["per_eval_ms_median"] + once) / (n_def * ms_step)
        if "per_eval_ms_median_with_candidate_image" in row:
            cand = row["per_eval_ms_median_with_candidate_image"]
            setup = out["image_candidate"]["blit_setup_ms"]
            row["projected_default_overhead_fraction_with_candidate_image"] = (e_def * cand + once + setup) / (
                n_def * ms_step)
    return out


def _bench_image(snapshot, spec) -> dict:
    from rfscaling.hooks import TensorBoardHook

    with tempfile.TemporaryDirectory() as tmp:
        hook = TensorBoardHook(tmp)
        th = snapshot.theory
        hi = max(float(np.max(snapshot.metrics.mode_error)), float(np.max(th.mode_error)) if th is not None and
                 th.mode_error is not None else 0.0)
        pos = snapshot.metrics.mode_error[snapshot.metrics.mode_error > 0]
        lo = float(pos.min()) if pos.size else hi * 1e-6
        t0 = time.perf_counter()
        blit = _BlitModeImage(snapshot.metrics.mode_error.size, (lo / 3, hi * 3))
        setup = time.perf_counter() - t0
        best, out = _round_robin({"current": lambda: hook.mode_image(snapshot), "blit": lambda: blit(snapshot)},
                                 3, torch.device("cpu"))
    return {"current_ms": best["current"] * 1e3, "blit_ms": best["blit"] * 1e3, "blit_setup_ms": setup * 1e3,
            "speedup": best["current"] / best["blit"], "same_image_shape": out["current"].shape == out["blit"].shape}


# ---------------------------------------------------------------------------------------------
# 3. exact integrator vs Euler stepping to the same horizon
# ---------------------------------------------------------------------------------------------


def _eg(weights: torch.Tensor, wstar: torch.Tensor, lam: torch.Tensor) -> float:
    e = weights.double() - wstar.double()[:, None, :]
    return float((lam.double() * e**2).sum(-1).mean())


def _hundred_steps(n_total: int, k: int = 100) -> np.ndarray:
    """k distinct integer steps log-spaced in [1, n_total] (k or fewer if n_total < k)."""
    m = k
    s = np.unique(np.round(np.geomspace(1, n_total, m)).astype(np.int64))
    while s.size < min(k, n_total) and m < 50 * k:
        m += max(1, (k - s.size))
        s = np.unique(np.round(np.geomspace(1, n_total, m)).astype(np.int64))
    if s.size > k:  # keep the ends, thin the middle evenly in log
        idx = np.unique(np.round(np.geomspace(1, s.size, k)).astype(np.int64) - 1)
        s = s[idx]
    return s


def _exact_curve_batched(data, params, times: np.ndarray) -> np.ndarray:
    """Candidate: E_g of the exact flow at all times in one batched evaluation (gradient flow or
    weight decay from w(0) = 0, no Langevin noise): a(t) = g(h, t) V^T X^T y in the H-eigenbasis,
    w(t) = a(t) V^T for all T times as one (T R x r) x (r x N) GEMM per dataset."""
    from rfscaling.dynamics import flow_factor

    X, y = data.features, data.labels
    eig = HessianEigen.of(X, params.weight_decay)
    Vh = eig.Vh
    b = torch.bmm(torch.bmm(y, X), Vh.transpose(1, 2))  # (D, R, r)
    t = torch.as_tensor(times, dtype=X.dtype, device=X.device).reshape(-1, 1, 1, 1)
    a = flow_factor(eig.h[None, :, None, :], t) * b[None]  # (T, D, R, r)
    T, D, R, r = a.shape
    W = torch.bmm(a.permute(1, 0, 2, 3).reshape(D, T * R, r), Vh).reshape(D, T, R, -1)
    e = W.double() - data.target_weights.double()[:, None, None, :]
    return (data.eigenvalues.double() * e**2).sum(-1).mean(dim=(0, 2)).cpu().numpy()


def bench_exact_vs_euler(device, quick: bool, dtypes=(torch.float64, torch.float32)) -> dict:
    res: dict = {"problem": "default (N=1024, P=256, 4 datasets x 4 replicas, label noise 0.1, power law 1/1)"}
    for dtype in dtypes:
        ps = ProblemSpec(label_noise=0.1, dtype=dtype, device=device.type)
        problem = make_problem(ps)
        data = problem.data
        lam_1 = float(data.eigenvalues[0])
        horizon = 1e4 / (data.n_samples * lam_1)
        params = DynamicsParams()
        euler = EulerDynamics(data, params)
        dt = euler.dt
        n_total = math.ceil(horizon / dt - 1e-9)
        steps = _hundred_steps(n_total)
        times = steps * dt
        lam, wstar = data.eigenvalues, data.target_weights

        # exact: one eigendecomposition, then an exact OU transition per evaluation time
        _sync(device)
        t0 = time.perf_counter()
        ex = ExactDynamics(data, params, dt=dt)
        st = ex.init(make_generator(0, "dyn", device=device))
        eg_exact = []
        for s in steps:
            st = ex.advance(st, int(s) - st.step)
            eg_exact.append(_eg(st.weights, wstar, lam))
        _sync(device)
        t_exact = time.perf_counter() - t0
        w_chain = st.weights
        # consistency of the exact integrator: one direct jump 0 -> horizon vs the 100-step chain
        w_direct = ex.transition(ex.init(make_generator(0, "dyn", device=device)).weights, float(steps[-1]) * dt,
                                 make_generator(0, "dyn2", device=device))
        chain_vs_direct = _rel(w_chain, w_direct)
        # noise-averaged curve (bias / variances / per mode) at the same 100 times
        _sync(device)
        t0 = time.perf_counter()
        mom = exact_moments(data, params, torch.as_tensor(times))
        _sync(device)
        t_moments = time.perf_counter() - t0
        t0 = time.perf_counter()
        HessianEigen.of(data.features)
        t_eig = time.perf_counter() - t0
        _sync(device)
        t0 = time.perf_counter()
        eg_batched = _exact_curve_batched(data, params, times)
        _sync(device)
        t_batched = time.perf_counter() - t0
        batched_rel = float(np.max(np.abs(eg_batched - np.array(eg_exact)) / np.array(eg_exact)))

        # Euler: step to the horizon (quick: a fraction of the steps, extrapolated linearly)
        frac = 0.05 if quick else 1.0
        n_run = n_total if frac >= 1 else max(int(steps[0]), int(n_total * frac))
        st = euler.init(make_generator(0, "dyn", device=device))
        eg_euler = []
        _sync(device)
        t0 = time.perf_counter()
        for s in steps:
            if s > n_run:
                break
            st = euler.advance(st, int(s) - st.step)
            eg_euler.append(_eg(st.weights, wstar, lam))
        if st.step < n_run:
            st = euler.advance(st, n_run - st.step)
        _sync(device)
        t_euler_run = time.perf_counter() - t0
        t_euler = t_euler_run * n_total / n_run
        k = len(eg_euler)
        ee, ex_ = np.array(eg_euler), np.array(eg_exact[:k])
        rel = (ee - ex_) / ex_
        late = times[:k] >= 4 * dt
        res[_dtname(dtype)] = {
            "horizon_t": horizon, "dt": dt, "lambda_max": euler.lambda_max, "n_steps": n_total,
            "n_times": int(steps.size), "euler_steps_run": n_run, "euler_extrapolated": n_run < n_total,
            "euler_s": t_euler, "euler_s_measured": t_euler_run, "exact_s": t_exact,
            "exact_eig_s": t_eig, "exact_moments_s": t_moments,
            "ratio_euler_over_exact": t_euler / t_exact,
            "ratio_euler_over_moments": t_euler / t_moments,
            "euler_max_rel_err_t_ge_4dt": float(np.max(np.abs(rel[late]))) if late.any() else None,
            "euler_rel_err_first_step": float(rel[0]),
            "euler_rel_err_last_compared": float(rel[-1]), "last_compared_t": float(times[k - 1]),
            "bound_0p55_dt_over_t_at_last": 0.55 * dt / float(times[k - 1]),
            "exact_chain_vs_direct_rel": chain_vs_direct,
            "cand_exact_batched_s": t_batched, "ratio_euler_over_cand_exact_batched": t_euler / t_batched,
            "cand_exact_batched_max_rel_diff": batched_rel,
            "E_g_exact_at_horizon": eg_exact[-1],
            "E_g_moments_at_horizon": float(mom.generalization_error[-1].mean()),
        }
    return res


# ---------------------------------------------------------------------------------------------
# 4. end to end: the default app run with the candidates patched in (opt-in, --e2e)
# ---------------------------------------------------------------------------------------------


def _kernel_space_advance(orig):
    """Candidate EulerDynamics.advance for P < N without Langevin noise: with c = 1 - dt wd,
    w_k = c^k w + X^T a_k, a_{k+1} = c a_k - dt (c^k X w + K a_k - y), K = X X^T (P x P); the
    same iterates as the w-space step up to rounding. Other cases fall back to ``orig``."""

    def advance(self, state, n_steps):
        n = int(n_steps)
        X = self.data.features
        if n == 0 or self.params.temperature > 0 or X.shape[1] >= X.shape[2]:
            return orig(self, state, n_steps)
        K = self.__dict__.get("_cand_K")
        if K is None:
            K = self.__dict__["_cand_K"] = X @ X.transpose(1, 2)
        dt, c = self.dt, 1.0 - self.dt * self.params.weight_decay
        xw = torch.bmm(state.weights, X.transpose(1, 2))  # X w, (D, R, P)
        y = self.data.labels
        a = torch.zeros_like(xw)
        ck = 1.0
        for _ in range(n):
            r = torch.baddbmm(torch.add(-y, xw, alpha=ck) if ck != 1.0 else xw - y, a, K)
            a = a.mul_(c).sub_(r, alpha=dt) if c != 1.0 else a.sub_(r, alpha=dt)
            ck *= c
        w = torch.baddbmm(state.weights, a, X, beta=ck)
        m = state.step + n
        return type(state)(w, m, m * dt, state.generator)

    return advance


@contextlib.contextmanager
def _candidates(image: bool, kernel: bool):
    from rfscaling.hooks import TensorBoardHook

    orig_img, orig_adv = TensorBoardHook.mode_image, EulerDynamics.advance

    def blit_image(self, snapshot):
        blit = self.__dict__.get("_cand_blit")
        if blit is None:
            th = snapshot.theory.mode_error if snapshot.theory is not None else None
            ref = th if th is not None and np.any(th > 0) else snapshot.metrics.mode_error
            ylim = (float(ref[ref > 0].min()) * 1e-4, float(ref.max()) * 3)
            blit = self.__dict__["_cand_blit"] = _BlitModeImage(ref.size, ylim)
        return blit(snapshot)

    if image:
        TensorBoardHook.mode_image = blit_image
    if kernel:
        EulerDynamics.advance = _kernel_space_advance(orig_adv)
    try:
        yield
    finally:
        TensorBoardHook.mode_image, EulerDynamics.advance = orig_img, orig_adv


def bench_end_to_end(device, rounds: int) -> dict:
    """rfscaling.train.train on the default config (progress bar off), as is and with the
    candidates patched in, interleaved; final E_g and early-stopping time must not change."""
    from rfscaling.train import spec_from_config, train

    variants = {
        "tensorboard on, as is": (True, False, False),
        "tensorboard on, candidate image": (True, True, False),
        "tensorboard on, candidate image + kernel-space advance": (True, True, True),
        "tensorboard off, as is": (False, False, False),
        "tensorboard off, kernel-space advance": (False, False, True),
    }
    best: dict = {}
    for _ in range(rounds):
        for name, (tb, img, kern) in variants.items():
            spec = spec_from_config(_compose([f"device={device.type}", "hooks.progress=false",
                                              f"hooks.tensorboard={str(tb).lower()}"]))
            with tempfile.TemporaryDirectory() as tmp, _candidates(img, kern):
                s = train(spec, tmp)
            row = {"wall_s": float(s["wall_time_s"]), "loop_s": float(s["loop_wall_time_s"]),
                   "E_g": s["final"]["E_g"], "stopping_time": (s.get("early_stopping") or {}).get("stopping_time")}
            if name not in best or row["wall_s"] < best[name]["wall_s"]:
                best[name] = row
    base_on, base_off = best["tensorboard on, as is"]["wall_s"], best["tensorboard off, as is"]["wall_s"]
    for name, row in best.items():
        row["speedup"] = (base_on if name.startswith("tensorboard on") else base_off) / row["wall_s"]
        row["E_g_rel_diff"] = abs(row["E_g"] - best["tensorboard on, as is"]["E_g"]) / best["tensorboard on, as is"]["E_g"]
    return best


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def _fmt_throughput(rows: list[dict]) -> None:
    print(f"{'N=P':>6} {'DxR':>6} {'dtype':>8} {'steps':>5} | {'ensemble':>10} {'naive':>10} {'ratio':>6} | "
          f"{'GFLOP/s':>8} {'bmm':>8} {'frac':>5} {'GB/s':>6} | {'w diff':>8} | {'fused':>5} {'gram':>5}")
    for r in rows:
        nv = r.get("naive_seed_steps_per_s")
        print(f"{r['N']:>6} {r['datasets']:>2}x{r['replicas']:<3} {r['dtype']:>8} {r['steps']:>5} | "
              f"{r['ensemble_seed_steps_per_s']:>10.0f} {nv if nv is None else f'{nv:10.0f}'} "
              f"{r.get('speedup_vs_naive', float('nan')):>5.1f}x | {r['ensemble_GFLOPs']:>8.1f} {r['bmm_GFLOPs']:>8.1f} "
              f"{100 * r['flops_fraction_of_bmm']:>4.0f}% {r['ensemble_GBs']:>6.1f} | "
              f"{r.get('weights_rel_diff_vs_naive', float('nan')):>8.1e} | "
              f"{r.get('cand_fused_update_speedup', float('nan')):>4.2f}x {r.get('cand_gram_space_speedup', float('nan')):>4.1f}x")


def _targets(res: dict) -> dict:
    """The issue's targets against the measured figures (one line each)."""
    out = {}
    rows = res.get("throughput", [])
    nv = [r for r in rows if "speedup_vs_naive" in r and r["N"] == r["P"]]
    if nv:
        out["same weights as the naive loop"] = "all" if all(r["weights_match"] for r in nv + [
            r for r in rows if "weights_match" in r]) else "MISMATCH: " + ", ".join(
            f"N={r['N']} {r['dtype']} {r['weights_rel_diff_vs_naive']:.1e}" for r in rows if not r.get("weights_match", True))
        out["throughput >= 5x naive (N=P, 32 seeds)"] = "; ".join(
            f"N={r['N']} {r['datasets']}x{r['replicas']} {r['dtype']}: {r['speedup_vs_naive']:.1f}x" for r in nv)
    if rows:
        out["FLOP/s >= 60% of plain bmm"] = "; ".join(
            f"N={r['N']} P={r['P']} {r['datasets']}x{r['replicas']} {r['dtype']}: {100 * r['flops_fraction_of_bmm']:.0f}%"
            for r in rows)
    h = res.get("hooks")
    if h:
        out["hook overhead <= 10% (default schedule)"] = "; ".join(
            f"{k}: {100 * r['projected_default_overhead_fraction']:.1f}%" for k, r in h["runs"].items())
    ex = res.get("exact_vs_euler")
    if ex:
        out["exact >= 100x Euler"] = "; ".join(
            f"{k}: integrator {ex[k]['ratio_euler_over_exact']:.0f}x, exact_moments {ex[k]['ratio_euler_over_moments']:.0f}x, "
            f"batched candidate {ex[k]['ratio_euler_over_cand_exact_batched']:.0f}x"
            for k in ("float64", "float32") if k in ex)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes and steps (well under a minute)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1, as the testbed's tests; 0: torch's default)")
    ap.add_argument("--out", default="bench/results/train.json")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: throughput,hooks,exact")
    ap.add_argument("--e2e", action="store_true",
                    help="also time the default app run end to end with the candidates patched in (~40 s a round)")
    args = ap.parse_args(argv)
    q = args.quick
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available on this machine")
    if device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    t_start = time.perf_counter()
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": q, "machine": machine_info(device)}
    m = res["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"device {m['device']}{' (' + m['cuda_device'] + ')' if 'cuda_device' in m else ''}, "
          f"load average {m['load_average_1_5_15']}")
    refs = machine_references(device, q)
    res["references"] = refs
    print("references: copy bandwidth {:.1f} GB/s, GEMM 1024^3 {:.0f} GFLOP/s fp32, {:.0f} GFLOP/s fp64".format(
        refs["copy_bandwidth_GBs"], refs["gemm_1024_float32_GFLOPs"], refs["gemm_1024_float64_GFLOPs"]))

    res["section_s"] = {}
    t_sec = time.perf_counter()
    if "throughput" not in skip:
        print("\n[1] throughput, seed-steps/s: batched ensemble (EulerDynamics.advance) vs naive per-seed loop "
              "(nn.Linear + SGD, summed loss); FLOP/s of the step vs plain bmm of the same shapes; "
              "candidates = local prototypes (speed-up over the ensemble)")
        sizes = [1024] if q else [1024, 2048]
        layouts = [(4, 8), (32, 1)]
        rows = []
        for n in sizes:
            for D, R in layouts:
                for dtype in (torch.float32, torch.float64):
                    steps = 3 if q else (8 if n == 1024 else 4)
                    rows.append(bench_throughput(n, n, D, R, dtype, steps, 2 if q else 3, device))
                    torch.cuda.empty_cache() if device.type == "cuda" else None
        for dtype in (torch.float32, torch.float64):  # the app's default problem shape
            rows.append(bench_throughput(1024, 256, 4, 4, dtype, 40 if q else 200, 2 if q else 3, device))
        _fmt_throughput(rows)
        res["throughput"] = rows
        ov = bench_step_overhead(device, 2 if q else 3)
        res["step_overhead"] = ov
        print(f"per-step overhead (N=P=16, one member): ensemble {ov['ensemble_us_per_step']:.0f} us/step, "
              f"naive {ov['naive_us_per_seed_step']:.0f} us/seed-step")
        th = bench_threads(device, 100, 3)
        if th:
            res["threads"] = th
            print(f"app default problem (4x4, P=256, N=1024, fp32): {th['ms_per_step_1_thread']:.3f} ms/step with 1 thread, "
                  f"{th['ms_per_step_default_threads']:.3f} with {th['threads_default']} "
                  "(torch default) "
                  f"-> x{th['speedup_default_over_1']:.2f}")
        gs = [r for r in rows if "cand_gram_space_setup_s" in r]
        if gs:
            print("gram-space candidate setup (X^T X or X X^T once): " + "; ".join(
                f"N={r['N']} P={r['P']} {r['datasets']}x{r['replicas']} {r['dtype']}: {r['cand_gram_space_setup_s']:.2f} s"
                + (f" (pays off after {r['cand_gram_space_break_even_steps']:.0f} steps)"
                   if r["cand_gram_space_break_even_steps"] else "") for r in gs))
        sc = bench_setup_cost(1024, 1024, 4 if q else 32, torch.float64, device)
        res["setup_cost"] = sc
        print(f"choosing dt (D={sc['datasets']}, N=P={sc['N']}, fp64): eigvalsh of the Grams {sc['eigvalsh_s']:.2f} s "
              f"vs power iteration {sc['power_iteration_s']:.3f} s ({sc['ratio']:.0f}x, rel. error "
              f"{sc['power_rel_error']:.1e})")
        res["section_s"]["throughput"] = time.perf_counter() - t_sec

    t_sec = time.perf_counter()
    if "hooks" not in skip:
        print("\n[2] hook overhead of a default-schedule run (python -m rfscaling.train defaults, Euler, progress "
              "bar off)" + (": quick mode runs t_max/10" if q else ""))
        nthreads = torch.get_num_threads()
        h = bench_hooks(device, q)
        h["torch_threads_in_run"] = torch.get_num_threads()
        torch.set_num_threads(nthreads)  # train() may set its own thread count
        res["hooks"] = h
        for key, r in h["runs"].items():
            pe = r["per_eval_ms_median_by_part"]
            print(f"  {key:<16} {r['n_steps']} steps, {r['n_evals']} evals: loop {r['loop_s']:.2f} s, training "
                  f"{r['train_steps_s']:.2f} s in the run -> overhead {100 * r['overhead_fraction']:.1f}% raw, "
                  f"{100 * r['overhead_fraction_robust']:.1f}% robust; projected at the default schedule "
                  f"{100 * r['projected_default_overhead_fraction']:.1f}%")
            print(f"  {'':<16} per eval (median) {r['per_eval_ms_median']:.1f} ms: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in pe.items() if v > 0)
                  + (f"; writer start {1e3 * r['tensorboard_start_s']:.0f} ms" if r["tensorboard"] else "")
                  + f"; setup before the loop {r['setup_s']:.2f} s")
        print(f"  standalone training {h['standalone_ms_per_step']:.3f} ms/step; default schedule "
              f"{h['default_schedule']['n_steps']} steps / {h['default_schedule']['n_evals']} evals")
        if "image_candidate" in h:
            ic = h["image_candidate"]
            print(f"  candidate mode image (persistent figure, fixed axes, blitting): {ic['blit_ms']:.1f} ms vs "
                  f"{ic['current_ms']:.1f} ms per image ({ic['speedup']:.0f}x; one-off setup {ic['blit_setup_ms']:.0f} ms)"
                  + (" -> projected TensorBoard-on overhead at the default schedule "
                     f"{100 * h['runs']['tensorboard_on']['projected_default_overhead_fraction_with_candidate_image']:.1f}%"
                     if "projected_default_overhead_fraction_with_candidate_image" in h["runs"].get("tensorboard_on", {})
                     else ""))
        res["section_s"]["hooks"] = time.perf_counter() - t_sec

    t_sec = time.perf_counter()
    if "exact" not in skip:
        print("\n[3] exact integrator vs Euler: E_g at 100 log-spaced times up to t = 1e4/(P lam_1)")
        ex = bench_exact_vs_euler(device, q)
        res["exact_vs_euler"] = ex
        for key in ("float64", "float32"):
            if key not in ex:
                continue
            r = ex[key]
            extra = (f" (measured {r['euler_steps_run']} of {r['n_steps']} steps in {r['euler_s_measured']:.2f} s, "
                     "extrapolated linearly)") if r["euler_extrapolated"] else ""
            print(f"  {key}: horizon t={r['horizon_t']:.4g}, dt={r['dt']:.4g} -> {r['n_steps']} Euler steps, "
                  f"{r['n_times']} times")
            print(f"    Euler {r['euler_s']:.2f} s{extra}; exact {r['exact_s'] * 1e3:.1f} ms (eigendecomposition "
                  f"{r['exact_eig_s'] * 1e3:.1f} ms) -> {r['ratio_euler_over_exact']:.0f}x; exact_moments "
                  f"(noise-averaged, per mode) {r['exact_moments_s'] * 1e3:.1f} ms -> {r['ratio_euler_over_moments']:.0f}x")
            print(f"    accuracy: Euler vs exact E_g rel. error {r['euler_rel_err_first_step']:+.2e} after one step, max "
                  f"{r['euler_max_rel_err_t_ge_4dt']:.1e} for t >= 4 dt, {r['euler_rel_err_last_compared']:+.1e} at "
                  f"t={r['last_compared_t']:.3g} (bound 0.55 dt/t = {r['bound_0p55_dt_over_t_at_last']:.1e} per "
                  f"direction); exact chain of {r['n_times']} transitions vs one jump: {r['exact_chain_vs_direct_rel']:.1e}")
            print(f"    candidate: all {r['n_times']} times in one batched evaluation {r['cand_exact_batched_s'] * 1e3:.1f} ms "
                  f"-> {r['ratio_euler_over_cand_exact_batched']:.0f}x over Euler (max rel. diff to the exact chain "
                  f"{r['cand_exact_batched_max_rel_diff']:.1e})")
        res["section_s"]["exact"] = time.perf_counter() - t_sec

    t_sec = time.perf_counter()
    if args.e2e:
        print("\n[4] end to end: python -m rfscaling.train defaults (progress bar off), as is vs candidates patched in "
              f"(best of {1 if q else 2} interleaved rounds)")
        e2e = bench_end_to_end(device, 1 if q else 2)
        res["end_to_end"] = e2e
        for name, r in e2e.items():
            print(f"  {name:<56} wall {r['wall_s']:6.2f} s (loop {r['loop_s']:6.2f} s) x{r['speedup']:.1f}; final E_g "
                  f"{r['E_g']:.6g} (rel. diff {r['E_g_rel_diff']:.0e}), early-stopping t {r['stopping_time']:.4g}")
        res["section_s"]["e2e"] = time.perf_counter() - t_sec

    res["targets"] = _targets(res)
    print("\ntargets:")
    for k, v in res["targets"].items():
        print(f"  {k}: {v}")
    res["total_s"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"\ntotal {res['total_s']:.1f} s (" + ", ".join(f"{k} {v:.1f} s" for k, v in res["section_s"].items())
          + f"); wrote {out}")
    return res


if __name__ == "__main__":
    main()
