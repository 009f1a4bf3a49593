"""Benchmark of the DMFT engine: time and peak memory against N and the number of times, and the
ratio to an exact Monte Carlo over data sets at equal accuracy, measured side by side.

    python -m bench.bench_theory            # full (a few minutes on 2 cores)
    python -m bench.bench_theory --quick    # reduced sizes (under a minute)

Writes bench/results/theory.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from rfscaling.theory import power_law_task, predict


def _timed(fn, repeat=1):
    best = np.inf
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _peak_mb(fn):
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def _mc_one_dataset(lam, w2, P, times, lab, rng):
    """Exact E_g(t) of one sampled data set (eigendecomposition of X^T X; no time stepping)."""
    N = lam.size
    X = rng.standard_normal((P, N)) * np.sqrt(lam)
    h, V = np.linalg.eigh(X.T @ X)
    h = np.maximum(h, 0.0)
    Vl = V * np.sqrt(lam)[:, None]                      # rows: sqrt(lam_k) V_kj
    out = np.empty(times.size)
    for i, t in enumerate(times):
        g = np.exp(-h * t)
        M = (V * g) @ V.T                               # e^{-Ct}
        bias = np.sum(lam[:, None] * M**2 * w2[None, :])
        with np.errstate(divide="ignore", invalid="ignore"):
            phi2c = np.where(h > 1e-12, (-np.expm1(-h * t)) ** 2 / h, 0.0)
        out[i] = bias + lab * np.sum((Vl**2) @ phi2c)
    return out


def bench_vs_monte_carlo(N, P, n_times, rel_se_target, lab=0.1):
    """Projected Monte Carlo time to reach a relative standard error rel_se_target on E_g, vs the
    engine's time for the same curve (the engine's own error at this size is about that large)."""
    lam, w2 = power_law_task(N, 1.0, 1.0)
    times = np.geomspace(1e-2 / P, 1e3, n_times)
    t_theory, pred = _timed(lambda: predict(lam, w2, P, times, label_noise=lab), repeat=3)
    rng = np.random.default_rng(0)
    pilot = 16
    t0 = time.perf_counter()
    samples = np.array([_mc_one_dataset(lam, w2, P, times, lab, rng) for _ in range(pilot)])
    t_per = (time.perf_counter() - t0) / pilot
    rel_sd = np.max(samples.std(0, ddof=1) / samples.mean(0))
    need = int(np.ceil((rel_sd / rel_se_target) ** 2))
    gap = np.max(np.abs(samples.mean(0) - pred.generalization_error) / samples.mean(0))
    return dict(N=N, P=P, n_times=n_times, theory_s=t_theory, mc_s_per_dataset=t_per,
                mc_datasets_needed=need, mc_projected_s=need * t_per,
                ratio_mc_over_theory=need * t_per / t_theory, rel_se_target=rel_se_target,
                pilot_max_rel_gap=float(gap))


def bench_discrete(N, P, n_times, rounds=3, modes=False, lab=0.1, T=0.0):
    """The discrete-time engine (learning_rate = 1/typical top eigenvalue, as the testbed's dt)
    against the continuous one at the same times (multiples of the step, 1 ... 1e6 steps),
    timed interleaved (A B A B ..., minimum per alternative)."""
    from rfscaling.theory.frontier import top_outlier

    lam, w2 = power_law_task(N, 1.0, 1.0)
    eta = 1.0 / top_outlier(lam, P)
    times = eta * np.unique(np.round(np.geomspace(1, 1e6, n_times)))
    kw = dict(label_noise=lab, temperature=T)

    def run(lr):
        p = predict(lam, w2, P, times, learning_rate=lr, **kw)
        return p.mode_error if modes else p

    best = {"continuous": np.inf, "discrete": np.inf}
    for _ in range(rounds):
        for name, lr in (("continuous", None), ("discrete", eta)):
            t0 = time.perf_counter()
            run(lr)
            best[name] = min(best[name], time.perf_counter() - t0)
    return dict(N=N, P=P, n_times=int(times.size), modes=modes, temperature=T, continuous_s=best["continuous"],
                discrete_s=best["discrete"], ratio=best["discrete"] / best["continuous"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results/theory.json")
    args = ap.parse_args(argv)
    q = args.quick
    res = {"machine": dict(platform=platform.platform(), python=sys.version.split()[0],
                           cpus=os.cpu_count(), numpy=np.__version__),
           "date": time.strftime("%Y-%m-%d %H:%M:%S")}

    # 1. the headline numbers of the brief: totals, then the per-mode arrays, which predict computes
    # only when one of them is first read (pred.mode_error)
    lam, w2 = power_law_task(100_000, 1.0, 1.0)
    times = np.geomspace(1e-3, 1e4, 100)
    t, pred = _timed(lambda: predict(lam, w2, 10_000, times, label_noise=0.1), repeat=1 if q else 3)
    res["totals_N1e5_P1e4_T100_s"] = t
    print(f"totals (E_g, bias, variance, train) N=1e5 P=1e4, 100 times: {t:.2f} s  [{pred.message}]")
    if not q:
        t, _ = _timed(lambda: pred.mode_error)
        res["modes_first_read_N1e5_P1e4_T100_s"] = t
        print(f"  + per-mode arrays on first read (same prediction): {t:.2f} s")
    lam, w2 = power_law_task(10_000, 1.0, 1.0)
    t, _ = _timed(lambda: predict(lam, w2, 1_000, times, label_noise=0.1).mode_error)
    res["modes_N1e4_P1e3_T100_s"] = t
    print(f"totals + per-mode errors N=1e4 P=1e3, 100 times: {t:.2f} s")

    # 2. scaling with N (time and peak memory) and with the number of times
    Ns = [1_000, 10_000, 100_000] + ([] if q else [1_000_000])
    rows = []
    for N in Ns:
        lam, w2 = power_law_task(N, 1.0, 1.0)
        times = np.geomspace(1e-3, 1e4, 50)
        f = lambda: predict(lam, w2, max(N // 10, 1), times, label_noise=0.1)  # noqa: E731
        t, _ = _timed(f)
        mem = _peak_mb(f) if N <= 100_000 or not q else float("nan")
        rows.append(dict(N=N, seconds=t, peak_mb=mem, bytes_per_mode=mem * 2**20 / N))
        print(f"N={N:>8d} P=N/10 50 times: {t:7.3f} s  peak {mem:8.1f} MB ({mem * 2**20 / N:7.0f} B/mode)")
    res["vs_N"] = rows
    rows = []
    lam, w2 = power_law_task(10_000, 1.0, 1.0)
    for nt in [10, 100, 1000]:
        times = np.geomspace(1e-3, 1e4, nt)
        t, _ = _timed(lambda: predict(lam, w2, 1000, times, label_noise=0.1))
        rows.append(dict(n_times=nt, seconds=t))
        print(f"N=1e4 P=1e3, {nt:5d} times over 7 decades: {t:.3f} s")
    res["vs_times"] = rows

    # 3. discrete time (learning_rate) against continuous time at the same times
    rows = []
    for N, P, modes, T in ([(10_000, 1_000, False, 0.0), (10_000, 1_000, False, 0.01), (2_000, 200, True, 0.0)]
                           + ([] if q else [(100_000, 10_000, False, 0.0)])):
        r = bench_discrete(N, P, 100, rounds=2 if q else 3, modes=modes, T=T)
        rows.append(r)
        print(f"discrete vs continuous, N={N} P={P} {r['n_times']} times{' + modes' if modes else ''}"
              f"{' T=0.01' if T else ''}: {r['discrete_s']:.3f} s vs {r['continuous_s']:.3f} s, ratio {r['ratio']:.2f}")
    res["discrete_vs_continuous"] = rows

    # 4. side-by-side with the exact Monte Carlo at equal accuracy
    mc = bench_vs_monte_carlo(N=400 if q else 1000, P=200 if q else 500, n_times=30, rel_se_target=0.005)
    res["vs_monte_carlo"] = mc
    print(f"Monte Carlo at N={mc['N']} P={mc['P']}: {mc['mc_s_per_dataset'] * 1e3:.0f} ms/data set, "
          f"{mc['mc_datasets_needed']} data sets for 0.5 % SE -> {mc['mc_projected_s']:.1f} s vs theory "
          f"{mc['theory_s'] * 1e3:.1f} ms: ratio {mc['ratio_mc_over_theory']:.0f}x")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
