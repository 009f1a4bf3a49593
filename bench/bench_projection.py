"""Benchmark of the random-projection theory (``predict(..., n_features=N)``, docs/theory.md
section 9) against the aligned engine on the same M teacher modes, timed interleaved in one
process (A B A B ..., minimum per alternative), so that load from other processes falls on both.

    python -m bench.bench_projection            # M = 1e5, N = 1e3 and 1e4, P = 1e4, 100 times
    python -m bench.bench_projection --quick    # M = 2e4

Writes bench/results/projection.json (or --out).
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


def _interleaved(fns: dict, rounds: int) -> dict:
    """Minimum wall time of each callable over ``rounds`` round-robin rounds."""
    best = {k: np.inf for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def _peak_mb(fn) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/results/projection.json")
    args = ap.parse_args(argv)
    M = 20_000 if args.quick else 100_000
    P, rounds = 10_000, 2 if args.quick else 3
    lam, w2 = power_law_task(M, 1.0, 1.0)
    times = np.geomspace(1e-3, 1e4, 100)
    res = {"machine": dict(platform=platform.platform(), python=sys.version.split()[0], cpus=os.cpu_count(),
                           numpy=np.__version__, load=os.getloadavg()),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "M": M, "P": P, "n_times": times.size}
    fns = {"aligned": lambda: predict(lam, w2, P, times, label_noise=0.1)}
    for N in (1_000, 10_000):
        fns[f"projected_N{N}"] = lambda N=N: predict(lam, w2, P, times, label_noise=0.1, n_features=N)
    t = _interleaved(fns, rounds)
    res["totals_s"] = t
    for k, v in t.items():
        print(f"totals M={M} P={P} 100 times, {k:16s}: {v:6.2f} s  ({v / t['aligned']:.2f}x aligned)")
    res["peak_mb"] = {k: _peak_mb(f) for k, f in fns.items() if k != "aligned" or not args.quick}
    for k, v in res["peak_mb"].items():
        print(f"peak memory {k:16s}: {v:7.1f} MB ({v * 2**20 / M:.0f} B/mode)")
    # per-mode arrays (lazy, on first read) on a smaller problem, both students
    m = 10_000
    lam_s, w2_s = power_law_task(m, 1.0, 1.0)
    modes = {"aligned": lambda: predict(lam_s, w2_s, 1_000, times, label_noise=0.1).mode_error,
             "projected_N300": lambda: predict(lam_s, w2_s, 1_000, times, label_noise=0.1,
                                               n_features=300).mode_error}
    t = _interleaved(modes, rounds)
    res["modes_M1e4_P1e3_T100_s"] = t
    for k, v in t.items():
        print(f"totals + per-mode arrays M=1e4 P=1e3 100 times, {k:16s}: {v:6.2f} s "
              f"({v / t['aligned']:.2f}x aligned)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
