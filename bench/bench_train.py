"""Benchmark of the training testbed: throughput of the batched ensemble against a naive per-seed
loop, achieved FLOP/s against plain bmm, whole strided runs, hook overhead (the default run,
N = P = 1024 and, in full mode, 2048), and the exact integrator against Euler stepping; all
figures measured side by side in one process.

    python -m bench.bench_train                  # full (~12 min on 2 cores)
    python -m bench.bench_train --quick          # N = P = 1024 only, fewer rounds (~90 s)
    python -m bench.bench_train --device cuda    # the same suite on a GPU

Writes bench/results/train.json (or --out). Timings are the minimum over interleaved rounds
(A B A B ...), so load from other processes mostly cancels in the ratios; absolute numbers on a
loaded machine are noisy. Nothing here changes rfscaling/: the hook timers are installed by
wrapping methods for the duration of one run and removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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

from rfscaling.data import (
    ProblemSpec,
    make_generator,
    make_problem,
    power_law_eigen_task,
    sample_eigen_ensemble,
)
from rfscaling.dynamics import (
    advance_calls,
    DynamicsParams,
    EulerDynamics,
    ExactDynamics,
    exact_moments,
)
from rfscaling.dynamics.exact import HessianEigen
from rfscaling.hooks import log_spaced_steps

INF = float("inf")
# a whole run in the throughput section: ~ the steps to t = 1e4 / (P lam_1) at the default dt
RUN_STEPS = 10_000


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


def _form_macs(dyn: EulerDynamics, steps: int) -> int:
    """Multiply-adds of one ``advance(state, steps)`` of the whole ensemble in the chosen form."""
    d = dyn.data
    P, N, M = d.n_samples, d.n_modes, d.n_datasets * d.n_replicas
    if dyn.form == "kernel":  # K a per step, X w0 and X^T a once per call
        return M * (P * P * steps + 2 * P * N)
    if dyn.form == "hessian":
        return M * N * N * steps
    return M * 2 * P * N * steps


def _plain_bmm(dyn: EulerDynamics, steps: int):
    """The same GEMMs as one ``advance`` of the chosen form, as plain torch.bmm calls over the
    whole ensemble (no update, no blocking): the matmul reference."""
    d = dyn.data
    D, R, P, N = d.n_datasets, d.n_replicas, d.n_samples, d.n_modes
    X = d.features
    Xt = X.transpose(1, 2).contiguous()
    kw = {"dtype": X.dtype, "device": X.device}
    W, A = torch.randn(D, R, N, **kw), torch.randn(D, R, P, **kw)
    if dyn.form == "kernel":
        K = dyn._gram

        def run():
            torch.bmm(W, Xt)
            for _ in range(steps):
                torch.bmm(A, K)
            torch.bmm(A, X)
    elif dyn.form == "hessian":
        H = dyn._gram

        def run():
            for _ in range(steps):
                torch.bmm(W, H)
    else:
        def run():
            for _ in range(steps):
                torch.bmm(W, Xt)
                torch.bmm(A, X)
    return run


def _whole_run(dyn: EulerDynamics, calls: list[int], gen, device) -> tuple[float, float, torch.Tensor]:
    """One run of ``calls`` with the stride ``plan`` picks, its propagators built from scratch:
    (stride setup s, total s, final weights)."""
    dyn.set_stride(1)  # drop earlier propagators: building them is part of the run
    _sync(device)
    t0 = time.perf_counter()
    dyn.plan(calls)
    _sync(device)
    t_setup = time.perf_counter() - t0
    st = dyn.init(gen)
    for n in calls:
        st = dyn.advance(st, n)
    _sync(device)
    return t_setup, time.perf_counter() - t0, st.weights


def bench_throughput(N: int, P: int, D: int, R: int, dtype, steps: int, rounds: int, device, naive=True,
                     run_steps: int | None = None, run_rounds: int = 1) -> dict:
    """Seed-steps/s of ``EulerDynamics.advance`` (its automatic step form, with the Gram matrix
    that the default step computes anyway) against the naive per-seed loop and against the
    plain features form, FLOP/s against plain bmm of the form's shapes, and the one-off setup.

    ``run_steps``: also time a whole run of that many steps with the default schedule (40
    log-spaced evaluations, progress chunks), strided as ``simulate`` plans it, propagator setup
    included; its seed-steps/s against the naive loop's (which has no setup: its per-step rate
    holds at any length)."""
    from rfscaling.dynamics import design_gram, hessian_top_eigenvalue

    task = power_law_eigen_task(N, 1.0, 1.0, label_noise=0.1, teacher="random")
    data = sample_eigen_ensemble(task, P, D, R, make_generator(0, "bench", device=device), dtype, device)
    params = DynamicsParams()
    _sync(device)
    t0 = time.perf_counter()
    gram = design_gram(data.features)
    _sync(device)
    t_gram = time.perf_counter() - t0
    lam = float(hessian_top_eigenvalue(data.features, gram=gram).max())
    _sync(device)
    t_setup = time.perf_counter() - t0
    dyn = EulerDynamics(data, params, lambda_max=lam, gram=gram)
    feat = EulerDynamics(data, params, lambda_max=lam, form="features")
    gen = make_generator(0, "dyn", device=device)
    fns = {"ensemble": lambda: dyn.advance(dyn.init(gen), steps).weights,
           "features": lambda: feat.advance(feat.init(gen), steps).weights,
           "bmm": _plain_bmm(dyn, steps)}
    if naive:
        fns["naive"] = lambda: _naive_loop(data, dyn.dt, steps)
    for f in fns.values():  # warm-up (allocator, BLAS dispatch, autograd)
        f()
    best, out = _round_robin(fns, rounds, device)

    members = D * R
    flops = 2 * _form_macs(dyn, steps)
    esize = torch.finfo(dtype).bits // 8
    res = {
        "N": N, "P": P, "datasets": D, "replicas": R, "seeds": members, "dtype": _dtname(dtype), "steps": steps,
        "form": dyn.form, "block_datasets": dyn._block, "dt": dyn.dt,
        "ensemble_s": best["ensemble"], "features_s": best["features"], "bmm_s": best["bmm"],
        "ensemble_seed_steps_per_s": members * steps / best["ensemble"],
        "features_seed_steps_per_s": members * steps / best["features"],
        "speedup_form_over_features": best["features"] / best["ensemble"],
        "ensemble_GFLOPs": flops / best["ensemble"] / 1e9,
        "bmm_GFLOPs": flops / best["bmm"] / 1e9,
        "flops_fraction_of_bmm": best["bmm"] / best["ensemble"],
        "features_flops_fraction_of_bmm": None,
        "matrix_bytes_per_dataset": (dyn._gram if dyn._gram is not None else data.features)[0].numel() * esize,
        "setup_s": t_setup, "setup_gram_s": t_gram, "setup_lambda_max_s": t_setup - t_gram,
        "weights_rel_diff_form_vs_features": _rel(out["ensemble"], out["features"]),
    }
    saved = (best["features"] - best["ensemble"]) / steps
    res["setup_break_even_steps_vs_features"] = t_setup / saved if saved > 0 else None
    if naive:
        res.update({
            "naive_s": best["naive"], "naive_seed_steps_per_s": members * steps / best["naive"],
            "speedup_vs_naive": best["naive"] / best["ensemble"],
            "features_speedup_vs_naive": best["naive"] / best["features"],
            "weights_rel_diff_vs_naive": _rel(out["ensemble"], out["naive"]),
            "setup_in_naive_seed_steps": t_setup / (best["naive"] / (members * steps)),
        })
        res["weights_match"] = res["weights_rel_diff_vs_naive"] <= (1e-4 if dtype == torch.float32 else 1e-10)
    if run_steps:
        calls = advance_calls(log_spaced_steps(run_steps, 40))
        run_dyn = EulerDynamics(data, params, lambda_max=lam, gram=gram)
        best_run = None
        for _ in range(run_rounds):
            t_stride, t_run, w_run = _whole_run(run_dyn, calls, gen, device)
            if best_run is None or t_run < best_run[1]:
                best_run = (t_stride, t_run)
        s = run_dyn.stride
        # accuracy of the propagator against one product per step, over 2 s + 3 steps
        check = EulerDynamics(data, params, lambda_max=lam, gram=gram)
        n_chk = 2 * s + 3
        w_one = check.advance(check.init(gen), n_chk).weights
        check.set_stride(s)
        w_str = check.advance(check.init(gen), n_chk).weights
        res.update({
            "run_steps": run_steps, "run_calls": len(calls), "run_stride": s,
            "run_products": sum(n // s + n % s for n in calls) if s > 1 else run_steps,
            "run_s": best_run[1], "run_stride_setup_s": best_run[0],
            "run_seed_steps_per_s": members * run_steps / best_run[1],
            "run_speedup_over_one_product_per_step": (run_steps * best["ensemble"] / steps) / best_run[1],
            "weights_rel_diff_strided_vs_stepwise": _rel(w_str, w_one),
        })
        if naive:
            res["run_speedup_vs_naive"] = res["run_seed_steps_per_s"] / res["naive_seed_steps_per_s"]
    return res


def bench_step_overhead(device, rounds: int) -> dict:
    """Per-step cost on a tiny problem (N = P = 16, one member): pure Python/dispatch overhead."""
    r = bench_throughput(16, 16, 1, 1, torch.float64, 200, rounds, device, naive=True)
    return {"ensemble_us_per_step": r["ensemble_s"] / 200 * 1e6, "naive_us_per_seed_step": r["naive_s"] / 200 * 1e6}


def bench_threads(device, steps: int, rounds: int) -> dict:
    """The app's default problem (4x4, P=256, N=1024, float32): ms/step with one thread vs torch's
    default thread count, interleaved (the app's ``threads`` setting)."""
    if device.type != "cpu":
        return {}
    prev = torch.get_num_threads()
    ncpu = os.cpu_count() or 1
    data = make_problem(ProblemSpec(device=device.type)).data
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
    return {"steps": steps, "form": dyn.form, "ms_per_step_1_thread": best["1"] / steps * 1e3,
            "ms_per_step_default_threads": best[str(ncpu)] / steps * 1e3, "threads_default": ncpu,
            "speedup_default_over_1": best["1"] / best[str(ncpu)]}


def bench_setup_cost(N: int, P: int, D: int, dtype, device) -> dict:
    """Cost of choosing dt: Lanczos (what hessian_top_eigenvalue does) vs eigvalsh of every Gram."""
    from rfscaling.dynamics import design_gram
    from rfscaling.dynamics.spectral import top_eigenvalue

    g = make_generator(1, "setup", device=device)
    X = torch.randn(D, P, N, generator=g, dtype=dtype, device=device) * torch.arange(
        1, N + 1, dtype=dtype, device=device) ** -0.5
    gram = design_gram(X)
    best, out = _round_robin({"eigvalsh": lambda: torch.linalg.eigvalsh(gram.double())[..., -1],
                              "lanczos": lambda: top_eigenvalue(gram)}, 1, device)
    return {"N": N, "P": P, "datasets": D, "dtype": _dtname(dtype), "eigvalsh_s": best["eigvalsh"],
            "lanczos_s": best["lanczos"], "ratio": best["eigvalsh"] / best["lanczos"],
            "lanczos_max_rel_error": float(((out["lanczos"] - out["eigvalsh"]).abs() / out["eigvalsh"]).max())}


# ---------------------------------------------------------------------------------------------
# 2. hook overhead of the default run
# ---------------------------------------------------------------------------------------------


class _Timers:
    def __init__(self):
        self.calls: dict[str, list] = {}

    def add(self, k, dt):
        self.calls.setdefault(k, []).append(dt)

    def total(self, k) -> float:
        return float(sum(self.calls.get(k, [])))

    def count(self, k) -> int:
        return len(self.calls.get(k, []))


@contextlib.contextmanager
def _instrument(timers: _Timers, device):
    """Wrap (for this block only) the methods a run spends its time in with timers."""
    import rfscaling.run.loop as loop_mod
    from rfscaling.hooks import EarlyStoppingHook, EigenmodeHook, TensorBoardHook

    patches = []

    def wrap(owner, name, key):
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
            return r

        patches.append((owner, name, orig))
        setattr(owner, name, timed)

    wrap(EulerDynamics, "advance", "train_steps")
    wrap(loop_mod, "measure_group", "measure")  # once per group of evaluations
    wrap(EarlyStoppingHook, "prepare", "early_stopping_prepare")
    wrap(EigenmodeHook, "on_eval", "eigenmode_hook")
    wrap(EarlyStoppingHook, "on_eval", "early_stopping_hook")
    wrap(TensorBoardHook, "on_eval", "tensorboard_hook")
    wrap(TensorBoardHook, "on_start", "tensorboard_start")
    wrap(TensorBoardHook, "on_end", "tensorboard_end")
    wrap(EigenmodeHook, "on_start", "eigenmode_start")
    wrap(EigenmodeHook, "on_end", "eigenmode_end")
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


def _pure_training(spec):
    """A closure that runs the default run's training alone: the same problem, integrator and
    ``advance`` calls as ``simulate`` (evaluation steps, chunks of total // 20), no evaluations."""
    from rfscaling.train import _make_dynamics

    data = make_problem(spec.problem).data
    dyn = _make_dynamics(spec, data)
    n_steps = max(1, int(math.ceil(spec.t_max / dyn.dt - 1e-9)))
    calls = advance_calls(log_spaced_steps(n_steps, spec.n_evals))
    if isinstance(dyn, EulerDynamics):
        dyn.plan(calls)  # as simulate does

    def run():
        st = dyn.init(make_generator(0, "dyn", device=data.features.device))
        for n in calls:
            st = dyn.advance(st, n)
        return st

    return run, dyn


def bench_hooks(device, rounds: int, overrides: tuple[str, ...] = ()) -> dict:
    """The app's own default run (rfscaling.train.train, progress bar off) with TensorBoard off
    and on, against its training alone, interleaved over rounds (best of each).

    overhead: the larger of (loop wall time - training alone) / training alone, which includes
    indirect costs (caches cooled by the evaluations, a writer competing for the CPU), and
    (loop wall time - steps timed inside the run) / steps inside the run.
    One-off costs outside the loop are reported apart: the TensorBoard start (imports, writer,
    image frame; on_start waits for it) and the end (modes.npz, flushing and closing).
    ``overrides``: Hydra overrides of the run (e.g. a larger problem, same schedule)."""
    from rfscaling.train import spec_from_config, train

    base = [f"device={device.type}", "hooks.progress=false", *overrides]
    specs = {tb: spec_from_config(_compose(base + [f"hooks.tensorboard={str(tb).lower()}"])) for tb in (False, True)}
    pure, dyn = _pure_training(specs[False])
    torch.set_num_threads(specs[False].threads or torch.get_num_threads())
    pure()
    best_pure = INF
    runs: dict = {}
    for _ in range(rounds):
        for tb, spec in specs.items():
            timers = _Timers()
            with tempfile.TemporaryDirectory() as tmp, _instrument(timers, device):
                summ = train(spec, tmp)
            key = "tensorboard_on" if tb else "tensorboard_off"
            row = {"loop_s": float(summ["loop_wall_time_s"]), "wall_s": float(summ["wall_time_s"]),
                   "n_steps": int(summ["n_steps"]), "n_evals": timers.count("eigenmode_hook"),
                   "n_groups": timers.count("measure"),
                   "train_steps_in_run_s": timers.total("train_steps"),
                   "per_eval_ms": {k: 1e3 * timers.total(k) / max(1, timers.count("eigenmode_hook"))
                                   for k in ("measure", "eigenmode_hook", "early_stopping_prepare",
                                             "early_stopping_hook", "tensorboard_hook")},
                   "start_s": timers.total("tensorboard_start") + timers.total("eigenmode_start"),
                   "end_s": timers.total("tensorboard_end") + timers.total("eigenmode_end")}
            if key not in runs or row["loop_s"] < runs[key]["loop_s"]:
                runs[key] = row
        t0 = time.perf_counter()
        pure()
        best_pure = min(best_pure, time.perf_counter() - t0)
    for row in runs.values():
        row["training_alone_s"] = best_pure
        row["overhead_vs_alone"] = (row["loop_s"] - best_pure) / best_pure
        row["overhead_in_run"] = (row["loop_s"] - row["train_steps_in_run_s"]) / row["train_steps_in_run_s"]
        row["overhead_fraction"] = max(row["overhead_vs_alone"], row["overhead_in_run"])  # the larger of the two
        row["per_eval_overhead_ms"] = 1e3 * row["overhead_fraction"] * best_pure / max(1, row["n_evals"])
        row["on_training_thread_fraction"] = sum(row["per_eval_ms"].values()) * row["n_evals"] / 1e3 / best_pure
        row["one_off_fraction"] = (row["start_s"] + row["end_s"]) / best_pure
    d = dyn.data
    return {"problem": f"N={d.n_modes}, P={d.n_samples}, {d.n_datasets}x{d.n_replicas}, "
                       f"{_dtname(d.features.dtype)}, form {dyn.form}",
            "training_alone_s": best_pure, "ms_per_step": 1e3 * best_pure / runs["tensorboard_off"]["n_steps"],
            "runs": runs}


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


def _euler_curve(data, params, dt: float, steps: np.ndarray, stop_at: int | None = None, strided: bool = False):
    """E_g of Euler at ``dt`` after each of ``steps`` (up to step ``stop_at``), and the time
    (with ``strided``: including the propagator setup that ``plan`` picks for these calls)."""
    lam, wstar = data.eigenvalues, data.target_weights
    dyn = EulerDynamics(data, params, dt=dt)
    st = dyn.init(make_generator(0, "dyn", device=data.features.device))
    eg = []
    t0 = time.perf_counter()
    if strided:
        dyn.plan(np.diff(np.concatenate([[0], steps])).tolist())
    for s in steps:
        if stop_at is not None and s > stop_at:
            break
        st = dyn.advance(st, int(s) - st.step)
        eg.append(_eg(st.weights, wstar, lam))
    _sync(data.features.device)
    return np.array(eg), time.perf_counter() - t0, dyn


def bench_exact_vs_euler(device, quick: bool, dtypes=(torch.float64, torch.float32)) -> dict:
    """E_g at 100 log-spaced times up to t = 1e4/(P lam_1) on the default problem: the exact
    integrator (one eigendecomposition, then one exact transition per time; what
    ``dynamics.integrator=exact`` runs) and ``exact_moments`` against Euler stepping, at
    Euler's default dt and at the dt that Euler needs for the same accuracy (relative error of
    E_g at most eps at every one of the 100 times)."""
    res: dict = {"problem": "default (N=1024, P=256, 4 datasets x 4 replicas, label noise 0.1, power law 1/1)"}
    eps_list = (1e-2,) if quick else (1e-2, 1e-3)
    for dtype in dtypes:
        data = make_problem(ProblemSpec(label_noise=0.1, dtype=dtype, device=device.type)).data
        params = DynamicsParams()
        lam, wstar = data.eigenvalues, data.target_weights
        horizon = 1e4 / (data.n_samples * float(lam[0]))

        _sync(device)
        t0 = time.perf_counter()
        eig = HessianEigen.of(data.features)
        _sync(device)
        t_eig = time.perf_counter() - t0
        ex = ExactDynamics(data, params, dt=1.0 / float(eig.h.max()), eig=eig)
        dt = ex.dt
        n_total = math.ceil(horizon / dt - 1e-9)
        steps = _hundred_steps(n_total)
        times = steps * dt
        st = ex.init(make_generator(0, "dyn", device=device))
        eg_exact = []
        for s in steps:
            st = ex.advance(st, int(s) - st.step)
            eg_exact.append(_eg(st.weights, wstar, lam))
        _sync(device)
        t_exact = time.perf_counter() - t0
        eg_exact = np.array(eg_exact)
        w_direct = ex.transition(ex.init(make_generator(0, "dyn", device=device)).weights, float(steps[-1]) * dt,
                                 make_generator(0, "dyn2", device=device))
        t0 = time.perf_counter()
        exact_moments(data, params, torch.as_tensor(times))
        _sync(device)
        t_moments = time.perf_counter() - t0

        # Euler at its default dt, all the way (the kernel form makes this affordable)
        eg_euler, t_euler, euler = _euler_curve(data, params, dt, steps)
        eg_str, t_str, euler_str = _euler_curve(data, params, dt, steps, strided=True)
        rel = np.abs(eg_euler - eg_exact) / eg_exact
        per_step = t_euler / n_total
        row = {"horizon_t": horizon, "dt": dt, "n_steps": n_total, "n_times": int(steps.size),
               "euler_form": euler.form, "euler_s": t_euler, "euler_ms_per_step": 1e3 * per_step,
               "exact_s": t_exact, "exact_eig_s": t_eig, "exact_moments_s": t_moments,
               "ratio_euler_over_exact": t_euler / t_exact, "ratio_euler_over_moments": t_euler / t_moments,
               "euler_strided_s": t_str, "euler_stride": euler_str.stride,
               "ratio_strided_euler_over_exact": t_str / t_exact,
               "strided_vs_stepwise_eg_rel": float((np.abs(eg_str - eg_euler) / eg_exact).max()),
               "euler_max_rel_err": float(rel.max()), "euler_rel_err_first": float(rel[0]),
               "euler_rel_err_last": float(rel[-1]),
               "exact_chain_vs_direct_rel": _rel(st.weights, w_direct), "equal_accuracy": {}}
        # equal accuracy: the smallest dt / k (k a power of 2) with rel. error <= eps at the
        # early times t <= 64 dt, where Euler's error (~0.55 dt'/t, docs/testbed.md) is largest
        early = steps[steps <= 64]
        for eps in eps_list:
            k, err = 1, float(rel[: early.size].max())
            while err > eps and k < 4096:
                k *= 2
                e_k, _, _ = _euler_curve(data, params, dt / k, early * k)
                err = float((np.abs(e_k - eg_exact[: early.size]) / eg_exact[: early.size]).max())
            t_eq = per_step * n_total * k  # same step cost, k times the steps
            # strided Euler at dt / k, measured over the whole horizon (the remainders of the 100
            # evaluation calls, not the propagator products, dominate its cost)
            _, t_str_k, dyn_k = _euler_curve(data, params, dt / k, steps * k, strided=True)
            row["equal_accuracy"][f"{eps:g}"] = {
                "dt_divisor": k, "max_rel_err_early": err, "euler_steps": n_total * k,
                "euler_s_extrapolated": t_eq, "ratio_euler_over_exact": t_eq / t_exact,
                "ratio_euler_over_moments": t_eq / t_moments,
                "strided_euler_s": t_str_k, "strided_stride": dyn_k.stride,
                "ratio_strided_euler_over_exact": t_str_k / t_exact}
        res[_dtname(dtype)] = row
    return res


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def _fmt_throughput(rows: list[dict]) -> None:
    print(f"{'N':>5} {'P':>5} {'DxR':>5} {'dtype':>8} {'form':>8} {'steps':>5} | {'ensemble':>9} {'features':>9} "
          f"{'naive':>8} {'ratio':>6} {'feat.':>5} | {'GFLOP/s':>7} {'bmm':>6} {'frac':>5} | {'w diff':>7} | "
          f"{'setup':>6}")
    for r in rows:
        nv = r.get("naive_seed_steps_per_s")
        print(f"{r['N']:>5} {r['P']:>5} {r['datasets']:>2}x{r['replicas']:<2} {r['dtype']:>8} {r['form']:>8} "
              f"{r['steps']:>5} | {r['ensemble_seed_steps_per_s']:>9.0f} {r['features_seed_steps_per_s']:>9.0f} "
              f"{'' if nv is None else f'{nv:8.0f}'} {r.get('speedup_vs_naive', float('nan')):>5.1f}x "
              f"{r.get('features_speedup_vs_naive', float('nan')):>4.1f}x | {r['ensemble_GFLOPs']:>7.1f} "
              f"{r['bmm_GFLOPs']:>6.1f} {100 * r['flops_fraction_of_bmm']:>4.0f}% | "
              f"{r.get('weights_rel_diff_vs_naive', float('nan')):>7.1e} | {r['setup_s']:>5.2f}s")
    runs = [r for r in rows if "run_s" in r]
    if runs:
        print(f"whole runs ({runs[0]['run_steps']} steps, 40 log-spaced evaluations; strided as simulate plans it, "
              "propagator setup included):")
        for r in runs:
            nv = r.get("run_speedup_vs_naive")
            print(f"{r['N']:>5} {r['P']:>5} {r['datasets']:>2}x{r['replicas']:<2} {r['dtype']:>8} stride "
                  f"{r['run_stride']:>4}: {r['run_s']:7.2f} s (setup {r['run_stride_setup_s']:.2f} s), "
                  f"{r['run_seed_steps_per_s']:>9.0f} seed-steps/s = {r['run_speedup_over_one_product_per_step']:.1f}x "
                  f"one product per step" + ("" if nv is None else f", {nv:.1f}x naive")
                  + f"; weights vs stepwise {r['weights_rel_diff_strided_vs_stepwise']:.1e}")


def _print_hooks(h: dict) -> None:
    print(f"  {h['problem']}: training alone {h['training_alone_s']:.3f} s ({h['ms_per_step']:.3f} ms/step)")
    for key, r in h["runs"].items():
        pe = r["per_eval_ms"]
        print(f"  {key:<16} {r['n_steps']} steps, {r['n_evals']} evals in {r['n_groups']} groups: loop {r['loop_s']:.3f} s, steps in it "
              f"{r['train_steps_in_run_s']:.3f} s -> overhead {100 * r['overhead_fraction']:.1f}% (vs training "
              f"alone {100 * r['overhead_vs_alone']:.1f}%, in the run {100 * r['overhead_in_run']:.1f}%; "
              f"{r['per_eval_overhead_ms']:.2f} ms per evaluation; on the "
              f"training thread " + ", ".join(f"{k} {v:.2f}" for k, v in pe.items() if v > 0) + " ms)")
        print(f"  {'':<16} one-off outside the loop: start {r['start_s']:.2f} s, end {r['end_s']:.2f} s "
              f"({100 * r['one_off_fraction']:.0f}% of this short run's training)")


def _targets(res: dict) -> dict:
    """The issue's targets against the measured figures (one line each)."""
    out = {}
    rows = res.get("throughput", [])
    nv = [r for r in rows if "speedup_vs_naive" in r and r["N"] == r["P"]]
    if nv:
        out["same weights as the naive loop"] = "all" if all(r["weights_match"] for r in rows if "weights_match" in r) \
            else "MISMATCH: " + ", ".join(f"N={r['N']} {r['dtype']} {r['weights_rel_diff_vs_naive']:.1e}"
                                          for r in rows if not r.get("weights_match", True))
        out["throughput >= 5x naive (N=P, 32 seeds), one product per step"] = "; ".join(
            f"N={r['N']} {r['datasets']}x{r['replicas']} {r['dtype']}: {r['speedup_vs_naive']:.1f}x" for r in nv)
        runs = [r for r in nv if "run_speedup_vs_naive" in r]
        if runs:
            out[f"throughput >= 5x naive (N=P, 32 seeds), whole {runs[0]['run_steps']}-step runs"] = "; ".join(
                f"N={r['N']} {r['datasets']}x{r['replicas']} {r['dtype']}: {r['run_speedup_vs_naive']:.1f}x "
                f"(stride {r['run_stride']})" for r in runs)
    if rows:
        out["FLOP/s >= 60% of plain bmm"] = "; ".join(
            f"N={r['N']} P={r['P']} {r['datasets']}x{r['replicas']} {r['dtype']}: {100 * r['flops_fraction_of_bmm']:.0f}%"
            for r in rows)
    for key, what in (("hooks", "default run"), ("hooks_large", "N=P=1024, 4x8"), ("hooks_2048", "N=P=2048, 4x8")):
        h = res.get(key)
        if h:
            out[f"hook overhead <= 10% ({what})"] = "; ".join(
                f"{k}: {100 * r['overhead_fraction']:.1f}% in the loop (+{100 * r['one_off_fraction']:.0f}% one-off "
                "start/end)" for k, r in h["runs"].items())
    ex = res.get("exact_vs_euler")
    if ex:
        out["exact >= 100x Euler at equal accuracy"] = "; ".join(
            f"{k}: " + ", ".join(f"eps {e}: {v['ratio_euler_over_exact']:.0f}x" for e, v in ex[k]["equal_accuracy"].items())
            + f" (default dt: {ex[k]['ratio_euler_over_exact']:.0f}x)" for k in ("float64", "float32") if k in ex)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = P = 1024 only, fewer rounds (~90 s)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1, as the testbed's tests; 0: torch's default)")
    ap.add_argument("--out", default="bench/results/train.json")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: throughput,hooks,exact")
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
        print("\n[1] throughput, seed-steps/s: batched ensemble (EulerDynamics.advance, automatic step form) vs its "
              "features form and the naive per-seed loop (nn.Linear + SGD); FLOP/s vs plain bmm of the form's shapes")
        rows = []
        for n in [1024] if q else [1024, 2048]:
            for D, R in ((4, 8), (32, 1)):
                for dtype in (torch.float32, torch.float64):
                    steps = 16 if (q or n > 1024) else 32
                    # quick mode: the whole 32x1 run in fp64 only (its fp32 twin adds 7 s)
                    whole = not (q and R == 1 and dtype == torch.float32)
                    rows.append(bench_throughput(n, n, D, R, dtype, steps, 2 if q else 3, device,
                                                 run_steps=RUN_STEPS if whole else None))
                    torch.cuda.empty_cache() if device.type == "cuda" else None
        for dtype in (torch.float32, torch.float64):  # the app's default problem; 166 = its steps per call
            rows.append(bench_throughput(1024, 256, 4, 4, dtype, 166, 2 if q else 3, device, run_steps=RUN_STEPS,
                                         run_rounds=2))
        _fmt_throughput(rows)
        res["throughput"] = rows
        ov = bench_step_overhead(device, 2 if q else 3)
        res["step_overhead"] = ov
        print(f"per-step overhead (N=P=16, one member): ensemble {ov['ensemble_us_per_step']:.0f} us/step, "
              f"naive {ov['naive_us_per_seed_step']:.0f} us/seed-step")
        th = bench_threads(device, 500, 3)
        if th:
            res["threads"] = th
            print(f"app default problem (4x4, P=256, N=1024, fp32, {th['form']} form): {th['ms_per_step_1_thread']:.3f} "
                  f"ms/step with 1 thread, {th['ms_per_step_default_threads']:.3f} with {th['threads_default']} "
                  f"(torch default) -> x{th['speedup_default_over_1']:.2f}")
        sc = bench_setup_cost(1024, 1024, 4 if q else 32, torch.float64, device)
        res["setup_cost"] = sc
        print(f"choosing dt (D={sc['datasets']}, N=P={sc['N']}, fp64): Lanczos {sc['lanczos_s']:.3f} s vs eigvalsh "
              f"{sc['eigvalsh_s']:.2f} s ({sc['ratio']:.0f}x), max rel. difference {sc['lanczos_max_rel_error']:.1e}")
        res["section_s"]["throughput"] = time.perf_counter() - t_sec

    t_sec = time.perf_counter()
    if "hooks" not in skip:
        print("\n[2] hook overhead of the default run (python -m rfscaling.train, progress bar off) against its "
              "training alone")
        nthreads = torch.get_num_threads()
        res["hooks"] = bench_hooks(device, 2 if q else 3)
        torch.set_num_threads(nthreads)  # train() sets its own thread count
        # the throughput section's problem (N = P = 1024, 32 seeds as 4 x 8) at the same schedule
        res["hooks_large"] = bench_hooks(device, 1 if q else 3, ("data.P=1024", "ensemble.datasets=4", "ensemble.replicas=8"))
        torch.set_num_threads(nthreads)
        if not q:  # and at N = P = 2048 (~20 s per run on 2 CPU cores)
            res["hooks_2048"] = bench_hooks(device, 2, ("model.N=2048", "data.P=2048", "ensemble.datasets=4",
                                                        "ensemble.replicas=8"))
            torch.set_num_threads(nthreads)
        for key in ("hooks", "hooks_large", "hooks_2048"):
            if key in res:
                _print_hooks(res[key])
        res["section_s"]["hooks"] = time.perf_counter() - t_sec

    t_sec = time.perf_counter()
    if "exact" not in skip:
        print("\n[3] exact integrator vs Euler: E_g at 100 log-spaced times up to t = 1e4/(P lam_1)")
        ex = bench_exact_vs_euler(device, q)
        res["exact_vs_euler"] = ex
        for key in ("float64", "float32"):
            r = ex.get(key)
            if r is None:
                continue
            print(f"  {key}: horizon t={r['horizon_t']:.4g}, dt={r['dt']:.4g} -> {r['n_steps']} Euler steps "
                  f"({r['euler_form']} form, {r['euler_ms_per_step']:.3f} ms/step), {r['n_times']} times")
            print(f"    exact {1e3 * r['exact_s']:.1f} ms (eigendecomposition {1e3 * r['exact_eig_s']:.1f} ms), "
                  f"exact_moments {1e3 * r['exact_moments_s']:.1f} ms; Euler at dt {r['euler_s']:.2f} s -> "
                  f"{r['ratio_euler_over_exact']:.0f}x / {r['ratio_euler_over_moments']:.0f}x; its E_g error "
                  f"{r['euler_rel_err_first']:.1e} at the first time, {r['euler_rel_err_last']:.1e} at the last")
            print(f"    strided Euler (stride {r['euler_stride']}, setup included) {r['euler_strided_s']:.3f} s -> "
                  f"{r['ratio_strided_euler_over_exact']:.0f}x the exact integrator (E_g within "
                  f"{r['strided_vs_stepwise_eg_rel']:.1e} of stepwise Euler)")
            for eps, v in r["equal_accuracy"].items():
                print(f"    same accuracy (rel. error <= {eps}): dt/{v['dt_divisor']} (early error "
                      f"{v['max_rel_err_early']:.1e}), {v['euler_steps']} steps ~ {v['euler_s_extrapolated']:.1f} s "
                      f"(extrapolated at the measured ms/step) -> {v['ratio_euler_over_exact']:.0f}x the exact "
                      f"integrator, {v['ratio_euler_over_moments']:.0f}x exact_moments; strided (stride "
                      f"{v['strided_stride']}) measured {v['strided_euler_s']:.2f} s -> "
                      f"{v['ratio_strided_euler_over_exact']:.0f}x")
            print(f"    exact chain of {r['n_times']} transitions vs one jump: {r['exact_chain_vs_direct_rel']:.1e}")
        res["section_s"]["exact"] = time.perf_counter() - t_sec

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
