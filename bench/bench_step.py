"""Benchmark of the Euler step: the batched ensemble in its automatic step form against the
same ensemble in the features form, the naive per-seed loop (nn.Linear + SGD) and plain bmm of
the form's shapes; whole strided runs against one product per step; the per-step overhead on a
tiny problem; one thread against torch's default; choosing dt by Lanczos against eigvalsh.

    python -m bench.bench_step                  # N = P = 1024 and 2048, 3 rounds
    python -m bench.bench_step --quick          # N = P = 1024 only, 2 rounds
    python -m bench.bench_step --device cuda    # on a GPU

Writes bench/results/step.json (or --out); ``python -m bench`` runs it as part of the suite.
"""

from __future__ import annotations

import os
import time

import torch
from torch.utils import benchmark

from bench.timing import dtname, interleave, rel, sync, timer
from rfscaling.config import DataConfig, DynamicsConfig, ModelConfig
from rfscaling.data import make_generator
from rfscaling.dynamics import EulerDynamics, design_gram, hessian_top_eigenvalue
from rfscaling.dynamics.spectral import top_eigenvalue
from rfscaling.models import ProblemSpec, make_problem
from rfscaling.run import advance_calls, log_spaced_steps

#: a whole run: ~ the steps to t = 1e4 / (P lam_1) at the default dt, 40 log-spaced evaluations
RUN_STEPS = 10_000
LABEL = "Euler step"


def ensemble(N: int, P: int, D: int, R: int, dtype, device: torch.device, label_noise: float = 0.1,
             teacher: str = "random"):
    """The power-law problem's ensemble data (N modes, P samples, D x R members)."""
    spec = ProblemSpec(DataConfig(P=P, label_noise=label_noise, teacher=teacher), ModelConfig(N=N),
                       datasets=D, replicas=R, dtype=dtype, device=device.type)
    return make_problem(spec).data


def naive_loop(data, dt: float, steps: int) -> torch.Tensor:
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


def form_macs(form: str, data, steps: int) -> int:
    """Multiply-adds of one ``advance(state, steps)`` of the whole ensemble in ``form``."""
    P, N, M = data.n_samples, data.n_modes, data.n_datasets * data.n_replicas
    if form == "kernel":  # K a per step, X w0 and X^T a once per call
        return M * (P * P * steps + 2 * P * N)
    if form == "hessian":
        return M * N * N * steps
    return M * 2 * P * N * steps


def plain_bmm(form: str, data, gram: torch.Tensor, steps: int):
    """The same GEMMs as one ``advance`` in ``form``, as plain torch.bmm calls over the whole
    ensemble (no update, no blocking): the matmul reference."""
    D, R, P, N = data.n_datasets, data.n_replicas, data.n_samples, data.n_modes
    X = data.features
    Xt = X.transpose(1, 2).contiguous()
    kw = {"dtype": X.dtype, "device": X.device}
    W, A = torch.randn(D, R, N, **kw), torch.randn(D, R, P, **kw)
    if form == "kernel":
        def run():
            torch.bmm(W, Xt)
            for _ in range(steps):
                torch.bmm(A, gram)
            torch.bmm(A, X)
    elif form == "hessian":
        def run():
            for _ in range(steps):
                torch.bmm(W, gram)
    else:
        def run():
            for _ in range(steps):
                torch.bmm(W, Xt)
                torch.bmm(A, X)
    return run


def bench_forms(N: int, P: int, D: int, R: int, dtype, steps: int, rounds: int, device: torch.device,
                naive: bool = True, run_steps: int | None = None, run_rounds: int = 1) -> tuple[dict, list]:
    """Seed-steps/s of ``EulerDynamics.advance`` (its automatic step form, with the Gram matrix
    the default dt needs anyway) against the features form, the naive loop and plain bmm of
    the form's shapes, interleaved; the setup (Gram product and Lanczos) timed alone.

    ``run_steps``: also a whole run of that many steps with the default schedule (40 log-spaced
    evaluations, progress chunks), strided as ``simulate`` plans it, propagator setup included;
    its seed-steps/s against the naive loop's (which has no setup: its per-step rate holds at
    any length) and against one product per step. Returns the row and its Measurements."""
    data = ensemble(N, P, D, R, dtype, device)
    cfg = DynamicsConfig()
    sub = f"N={N} P={P} {D}x{R} {dtname(dtype)}"
    built: dict = {}

    def setup():  # what the gradient_flow kind builds before the first step
        built["gram"] = gram = design_gram(data.features)
        built["lam"] = float(hessian_top_eigenvalue(data.features, gram=gram).max())

    t_setup = interleave({"setup": timer(setup, LABEL, f"{sub} {steps} steps", "setup (Gram, Lanczos)")}, 1)["setup"]
    gram, lam = built["gram"], built["lam"]
    dyn = EulerDynamics(data, cfg, lambda_max=lam, gram=gram)
    feat = EulerDynamics(data, cfg, lambda_max=lam, form="features")
    gen = make_generator(0, "dyn", device=device)
    out: dict = {}

    def keep(name, fn):
        def f():
            out[name] = fn()
        return f

    fns = {"ensemble": keep("ensemble", lambda: dyn.advance(dyn.init(gen), steps).weights),
           "features": keep("features", lambda: feat.advance(feat.init(gen), steps).weights),
           "bmm": plain_bmm(dyn.form, data, gram, steps)}
    if naive:
        fns["naive"] = keep("naive", lambda: naive_loop(data, dyn.dt, steps))
    m = interleave({k: timer(f, LABEL, f"{sub} {steps} steps", k) for k, f in fns.items()}, rounds)
    t = {k: v.median for k, v in m.items()}

    members = D * R
    flops = 2 * form_macs(dyn.form, data, steps)
    res = {
        "N": N, "P": P, "datasets": D, "replicas": R, "seeds": members, "dtype": dtname(dtype), "steps": steps,
        "form": dyn.form, "dt": dyn.dt,
        **{f"{k}_s": v for k, v in t.items()}, **{f"{k}_min_s": min(v.times) for k, v in m.items()},
        "ensemble_seed_steps_per_s": members * steps / t["ensemble"],
        "features_seed_steps_per_s": members * steps / t["features"],
        "speedup_form_over_features": t["features"] / t["ensemble"],
        "ensemble_GFLOPs": flops / t["ensemble"] / 1e9,
        "bmm_GFLOPs": flops / t["bmm"] / 1e9,
        "flops_fraction_of_bmm": t["bmm"] / t["ensemble"],
        "matrix_bytes_per_dataset": (gram if dyn.form != "features" else data.features)[0].numel()
        * data.features.element_size(),
        "setup_s": t_setup.median,
        "weights_rel_diff_form_vs_features": rel(out["ensemble"], out["features"]),
    }
    saved = (t["features"] - t["ensemble"]) / steps
    res["setup_break_even_steps_vs_features"] = res["setup_s"] / saved if saved > 0 else None
    if naive:
        res.update({
            "naive_seed_steps_per_s": members * steps / t["naive"],
            "speedup_vs_naive": t["naive"] / t["ensemble"],
            "features_speedup_vs_naive": t["naive"] / t["features"],
            "weights_rel_diff_vs_naive": rel(out["ensemble"], out["naive"]),
            "setup_in_naive_seed_steps": res["setup_s"] / (t["naive"] / (members * steps)),
        })
    ms = list(m.values()) + [t_setup]
    if run_steps:
        res.update(_whole_run(data, cfg, lam, gram, gen, device, run_steps, run_rounds, sub, t["ensemble"] / steps,
                              ms))
        if naive:
            res["run_speedup_vs_naive"] = res["run_seed_steps_per_s"] / res["naive_seed_steps_per_s"]
    return res, ms


def _whole_run(data, cfg, lam, gram, gen, device, run_steps, rounds, sub, per_step_s, ms) -> dict:
    """A whole run's advance calls, strided as ``plan`` picks, its propagators built from
    scratch each time (``set_stride(1)`` drops them)."""
    calls = advance_calls(log_spaced_steps(run_steps, 40))
    dyn = EulerDynamics(data, cfg, lambda_max=lam, gram=gram)
    setup_s: list[float] = []

    def run():
        dyn.set_stride(1)
        t0 = time.perf_counter()
        dyn.plan(calls)
        sync(device)
        setup_s.append(time.perf_counter() - t0)  # the propagator setup's share of this run
        st = dyn.init(gen)
        for n in calls:
            st = dyn.advance(st, n)
        return st

    m = interleave({"run": timer(run, LABEL, f"{sub} run of {run_steps} steps", "whole run (strided)")}, rounds)["run"]
    ms.append(m)
    s = dyn.stride
    # the propagator against one product per step, over 2 s + 3 steps
    check = EulerDynamics(data, cfg, lambda_max=lam, gram=gram)
    n_chk = 2 * s + 3
    w_one = check.advance(check.init(gen), n_chk).weights
    check.set_stride(s)
    w_str = check.advance(check.init(gen), n_chk).weights
    members = data.n_datasets * data.n_replicas
    return {
        "run_steps": run_steps, "run_calls": len(calls), "run_stride": s,
        "run_products": sum(n // s + n % s for n in calls) if s > 1 else run_steps,
        "run_s": m.median, "run_min_s": min(m.times), "run_stride_setup_s": sorted(setup_s)[len(setup_s) // 2],
        "run_seed_steps_per_s": members * run_steps / m.median,
        "run_speedup_over_one_product_per_step": run_steps * per_step_s / m.median,
        "weights_rel_diff_strided_vs_stepwise": rel(w_str, w_one),
    }


def bench_step_overhead(device: torch.device, rounds: int) -> tuple[dict, list]:
    """Per-step cost on a tiny problem (N = P = 16, one member): Python and dispatch overhead."""
    r, ms = bench_forms(16, 16, 1, 1, torch.float64, 200, rounds, device)
    return {"ensemble_us_per_step": r["ensemble_s"] / 200 * 1e6, "naive_us_per_seed_step": r["naive_s"] / 200 * 1e6,
            "ratio_naive_over_ensemble": r["speedup_vs_naive"]}, ms


def bench_threads(device: torch.device, steps: int, rounds: int) -> tuple[dict, list]:
    """The app's default problem (4x4, P = 256, N = 1024, fp32): one thread against torch's
    default thread count (the app's ``threads`` setting)."""
    if device.type != "cpu":
        return {}, []
    ncpu = os.cpu_count() or 1
    data = ensemble(1024, 256, 4, 4, torch.float32, device, label_noise=0.0, teacher="fixed")
    dyn = EulerDynamics(data, DynamicsConfig())
    st = dyn.init(make_generator(0, "dyn", device=device))
    sub = f"default problem, {steps} steps"
    m = interleave({n: timer(lambda: dyn.advance(st, steps), "threads", sub, f"{n} threads", num_threads=n)
                    for n in (1, ncpu)}, rounds)
    return {"steps": steps, "form": dyn.form, "ms_per_step_1_thread": m[1].median / steps * 1e3,
            "ms_per_step_default_threads": m[ncpu].median / steps * 1e3, "threads_default": ncpu,
            "speedup_default_over_1": m[1].median / m[ncpu].median}, list(m.values())


def bench_setup_cost(N: int, P: int, D: int, dtype, device: torch.device) -> tuple[dict, list]:
    """Choosing dt: Lanczos (what hessian_top_eigenvalue does) against eigvalsh of every Gram."""
    g = make_generator(1, "setup", device=device)
    X = torch.randn(D, P, N, generator=g, dtype=dtype, device=device) * torch.arange(
        1, N + 1, dtype=dtype, device=device) ** -0.5
    gram = design_gram(X)
    out: dict = {}

    def eigvalsh():
        out["eigvalsh"] = torch.linalg.eigvalsh(gram.double())[..., -1]

    def lanczos():
        out["lanczos"] = top_eigenvalue(gram)

    sub = f"D={D} N={N} P={P} {dtname(dtype)}"
    m = interleave({"eigvalsh": timer(eigvalsh, "choosing dt", sub, "eigvalsh"),
                    "lanczos": timer(lanczos, "choosing dt", sub, "Lanczos")}, 1)
    return {"N": N, "P": P, "datasets": D, "dtype": dtname(dtype), "eigvalsh_s": m["eigvalsh"].median,
            "lanczos_s": m["lanczos"].median, "ratio": m["eigvalsh"].median / m["lanczos"].median,
            "lanczos_max_rel_error": float(((out["lanczos"] - out["eigvalsh"]).abs() / out["eigvalsh"]).max())
            }, list(m.values())


def run(device: torch.device, quick: bool) -> dict:
    """The section's figures: ``throughput`` (rows), ``step_overhead``, ``threads``, ``setup_cost``;
    ``measurements``: the Measurements, for :class:`torch.utils.benchmark.Compare`."""
    rounds = 2 if quick else 3
    rows, ms = [], []
    for n in [1024] if quick else [1024, 2048]:
        for D, R in ((4, 8), (32, 1)):
            for dtype in (torch.float32, torch.float64):
                steps = 16 if (quick or n > 1024) else 32
                # quick mode: the whole 32x1 run in fp64 only (its fp32 twin adds 7 s)
                whole = not (quick and R == 1 and dtype == torch.float32)
                row, m = bench_forms(n, n, D, R, dtype, steps, rounds, device, run_steps=RUN_STEPS if whole else None)
                rows.append(row)
                ms += m
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    for dtype in (torch.float32, torch.float64):  # the app's default problem; 166 = its steps per call
        row, m = bench_forms(1024, 256, 4, 4, dtype, 166, rounds, device, run_steps=RUN_STEPS, run_rounds=2)
        rows.append(row)
        ms += m
    res: dict = {"throughput": rows}
    res["step_overhead"], m = bench_step_overhead(device, rounds)
    ms += m
    th, m = bench_threads(device, 500, 3)
    if th:
        res["threads"] = th
        ms += m
    res["setup_cost"], m = bench_setup_cost(1024, 1024, 4 if quick else 32, torch.float64, device)
    ms += m
    res["measurements"] = ms
    return res


def report(res: dict) -> None:
    """Print the section: the Compare table of the timings, then the ratios."""
    benchmark.Compare(res["measurements"]).print()
    rows = res["throughput"]
    print("ratios, same rounds (seed-steps/s = members x steps / median):")
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
    ov = res["step_overhead"]
    print(f"per-step overhead (N=P=16, one member): ensemble {ov['ensemble_us_per_step']:.0f} us/step, "
          f"naive {ov['naive_us_per_seed_step']:.0f} us/seed-step (ratio {ov['ratio_naive_over_ensemble']:.0f}x)")
    th = res.get("threads")
    if th:
        print(f"app default problem (4x4, P=256, N=1024, fp32, {th['form']} form): {th['ms_per_step_1_thread']:.3f} "
              f"ms/step with 1 thread, {th['ms_per_step_default_threads']:.3f} with {th['threads_default']} "
              f"(torch default) -> ratio {th['speedup_default_over_1']:.2f}")
    sc = res["setup_cost"]
    print(f"choosing dt (D={sc['datasets']}, N=P={sc['N']}, fp64): Lanczos {sc['lanczos_s']:.3f} s vs eigvalsh "
          f"{sc['eigvalsh_s']:.2f} s (ratio {sc['ratio']:.0f}x), max rel. difference {sc['lanczos_max_rel_error']:.1e}")


def main(argv=None) -> dict:
    from bench.timing import bench_main

    return bench_main(argv, __doc__, "bench/results/step.json", run, report)


if __name__ == "__main__":
    main()
