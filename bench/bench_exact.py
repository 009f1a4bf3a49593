"""Benchmark of the exact integrator against Euler stepping: E_g at 100 log-spaced times up to
t = 1e4/(P lam_1) on the app's default problem, at Euler's default dt and at the dt Euler needs
for the same accuracy; stepwise and strided Euler.

    python -m bench.bench_exact [--quick] [--device cuda]

Writes bench/results/exact.json (or --out); ``python -m bench`` runs it as part of the suite.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils import benchmark

from bench.timing import dtname, interleave, rel, timer
from rfscaling.config import DataConfig, DynamicsConfig, ModelConfig
from rfscaling.data import make_generator
from rfscaling.dynamics import HessianEigen, exact_moments
from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.models import ProblemSpec, make_problem

LABEL = "exact vs Euler"


def e_g(weights: torch.Tensor, wstar: torch.Tensor, lam: torch.Tensor) -> float:
    e = weights.double() - wstar.double()[:, None, :]
    return float((lam.double() * e**2).sum(-1).mean())


def hundred_steps(n_total: int, k: int = 100) -> np.ndarray:
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


def build(data, **dynamics):
    """The dynamics the app builds for gradient flow with these ``dynamics.*`` settings."""
    return DYNAMICS.get("gradient_flow").build(data, DynamicsConfig(**dynamics))


def curve(dyn, data, steps: np.ndarray, strided: bool = False) -> np.ndarray:
    """E_g after each of ``steps`` (from step 0); ``strided``: with the stride ``plan`` picks for
    these calls, its propagators built from scratch (part of the cost)."""
    lam, wstar = data.eigenvalues, data.target_weights
    if strided:
        dyn.set_stride(1)
        dyn.plan(np.diff(np.concatenate([[0], steps])).tolist())
    st = dyn.init(make_generator(0, "dyn", device=data.features.device))
    eg = []
    for s in steps:
        st = dyn.advance(st, int(s) - st.step)
        eg.append(e_g(st.weights, wstar, lam))
    return np.array(eg), st


def bench_dtype(dtype, device: torch.device, eps_list, rounds: int, ms: list) -> dict:
    data = make_problem(ProblemSpec(DataConfig(label_noise=0.1), ModelConfig(), dtype=dtype,
                                    device=device.type)).data
    lam = data.eigenvalues
    horizon = 1e4 / (data.n_samples * float(lam[0]))
    ex = build(data, integrator="exact")
    dt = ex.dt
    n_total = math.ceil(horizon / dt - 1e-9)
    steps = hundred_steps(n_total)
    times = steps * dt
    euler = build(data, dt=dt)  # one product per step: nothing plans a stride for it
    strided = build(data, dt=dt)
    out: dict = {}

    def exact_run():  # what integrator=exact runs: Lanczos for dt, one eigh, a transition per time
        dyn = build(data, integrator="exact")
        out["exact"] = curve(dyn, data, steps)

    def keep(name, fn):
        def f():
            out[name] = fn()
        return f

    sub = f"{dtname(dtype)}, 100 times to t={horizon:.4g} ({n_total} Euler steps at dt)"
    m = interleave({
        "exact": timer(exact_run, LABEL, sub, "exact (build + 100 transitions)"),
        "eig": timer(lambda: HessianEigen.of(data.features), LABEL, sub, "of which eigh"),
        "moments": timer(lambda: exact_moments(data, ex.params, torch.as_tensor(times)), LABEL, sub, "exact_moments"),
        "euler": timer(keep("euler", lambda: curve(euler, data, steps)), LABEL, sub, "Euler at dt"),
        "strided": timer(keep("strided", lambda: curve(strided, data, steps, strided=True)), LABEL, sub,
                         "strided Euler at dt"),
    }, rounds)
    ms += m.values()
    t = {k: v.median for k, v in m.items()}
    eg_exact, st = out["exact"]
    eg_euler, eg_str = out["euler"][0], out["strided"][0]
    w_direct = ex.transition(ex.init(make_generator(0, "dyn", device=device)).weights, float(steps[-1]) * dt,
                             make_generator(0, "dyn2", device=device))
    err = np.abs(eg_euler - eg_exact) / eg_exact
    per_step = t["euler"] / n_total
    row = {"horizon_t": horizon, "dt": dt, "n_steps": n_total, "n_times": int(steps.size),
           "euler_form": euler.form, "euler_s": t["euler"], "euler_ms_per_step": 1e3 * per_step,
           "exact_s": t["exact"], "exact_eig_s": t["eig"], "exact_moments_s": t["moments"],
           "ratio_euler_over_exact": t["euler"] / t["exact"], "ratio_euler_over_moments": t["euler"] / t["moments"],
           "euler_strided_s": t["strided"], "euler_stride": strided.stride,
           "ratio_strided_euler_over_exact": t["strided"] / t["exact"],
           "strided_vs_stepwise_eg_rel": float((np.abs(eg_str - eg_euler) / eg_exact).max()),
           "euler_max_rel_err": float(err.max()), "euler_rel_err_first": float(err[0]),
           "euler_rel_err_last": float(err[-1]),
           "exact_chain_vs_direct_rel": rel(st.weights, w_direct), "equal_accuracy": {}}
    # equal accuracy: the smallest dt / k (k a power of 2) with rel. error <= eps at the early
    # times t <= 64 dt, where Euler's error (~0.55 dt'/t, docs/testbed.md) is largest
    early = steps[steps <= 64]
    for eps in eps_list:
        k, e = 1, float(err[: early.size].max())
        while e > eps and k < 4096:
            k *= 2
            e_k, _ = curve(build(data, dt=dt / k), data, early * k)
            e = float((np.abs(e_k - eg_exact[: early.size]) / eg_exact[: early.size]).max())
        t_eq = per_step * n_total * k  # same step cost, k times the steps
        # strided Euler at dt / k over the whole horizon (the remainders of the 100 evaluation
        # calls, not the propagator products, dominate its cost)
        dyn_k = build(data, dt=dt / k)

        def run_k(dyn_k=dyn_k, k=k):
            return curve(dyn_k, data, steps * k, strided=True)

        m_k = interleave({"strided": timer(run_k, LABEL, sub, f"strided Euler at dt/{k}")}, rounds)["strided"]
        ms.append(m_k)
        row["equal_accuracy"][f"{eps:g}"] = {
            "dt_divisor": k, "max_rel_err_early": e, "euler_steps": n_total * k,
            "euler_s_extrapolated": t_eq, "ratio_euler_over_exact": t_eq / t["exact"],
            "ratio_euler_over_moments": t_eq / t["moments"],
            "strided_euler_s": m_k.median, "strided_stride": dyn_k.stride,
            "ratio_strided_euler_over_exact": m_k.median / t["exact"]}
    return row


def run(device: torch.device, quick: bool, dtypes=(torch.float64, torch.float32)) -> dict:
    """``exact_vs_euler``: one row per dtype; ``measurements``: for Compare."""
    ms: list = []
    res: dict = {"problem": "default (N=1024, P=256, 4 datasets x 4 replicas, label noise 0.1, power law 1/1)"}
    for dtype in dtypes:
        res[dtname(dtype)] = bench_dtype(dtype, device, (1e-2,) if quick else (1e-2, 1e-3), 1 if quick else 2, ms)
    return {"exact_vs_euler": res, "measurements": ms}


def report(res: dict) -> None:
    benchmark.Compare(res["measurements"]).print()
    ex = res["exact_vs_euler"]
    for key in ("float64", "float32"):
        r = ex.get(key)
        if r is None:
            continue
        print(f"  {key}: horizon t={r['horizon_t']:.4g}, dt={r['dt']:.4g} -> {r['n_steps']} Euler steps "
              f"({r['euler_form']} form, {r['euler_ms_per_step']:.3f} ms/step), {r['n_times']} times")
        print(f"    exact {1e3 * r['exact_s']:.1f} ms (eigendecomposition {1e3 * r['exact_eig_s']:.1f} ms), "
              f"exact_moments {1e3 * r['exact_moments_s']:.1f} ms; Euler at dt {r['euler_s']:.2f} s -> ratio "
              f"{r['ratio_euler_over_exact']:.0f}x / {r['ratio_euler_over_moments']:.0f}x; its E_g error "
              f"{r['euler_rel_err_first']:.1e} at the first time, {r['euler_rel_err_last']:.1e} at the last")
        print(f"    strided Euler (stride {r['euler_stride']}, setup included) {r['euler_strided_s']:.3f} s -> ratio "
              f"{r['ratio_strided_euler_over_exact']:.1f}x the exact integrator (E_g within "
              f"{r['strided_vs_stepwise_eg_rel']:.1e} of stepwise Euler)")
        for eps, v in r["equal_accuracy"].items():
            print(f"    same accuracy (rel. error <= {eps}): dt/{v['dt_divisor']} (early error "
                  f"{v['max_rel_err_early']:.1e}), {v['euler_steps']} steps ~ {v['euler_s_extrapolated']:.1f} s "
                  f"(extrapolated at the measured ms/step) -> ratio {v['ratio_euler_over_exact']:.0f}x the exact "
                  f"integrator, {v['ratio_euler_over_moments']:.0f}x exact_moments; strided (stride "
                  f"{v['strided_stride']}) {v['strided_euler_s']:.2f} s -> {v['ratio_strided_euler_over_exact']:.1f}x")
        print(f"    exact chain of {r['n_times']} transitions vs one jump: {r['exact_chain_vs_direct_rel']:.1e}")


def main(argv=None) -> dict:
    from bench.timing import bench_main

    return bench_main(argv, __doc__, "bench/results/exact.json", run, report)


if __name__ == "__main__":
    main()
