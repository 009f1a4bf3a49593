"""The whole benchmark suite in one command: the theory engine, then the training testbed.

    python -m bench --quick              # reduced sizes (a few minutes on 2 CPU cores)
    python -m bench                      # full sizes
    python -m bench --device cuda        # the testbed part on a GPU (the theory runs on numpy)
    python -m bench --skip theory,hooks  # leave sections out (theory, step, hooks, exact, ensemble)

The testbed's sections are modules of their own, each runnable alone (``python -m
bench.bench_step`` ...): bench_step (the Euler step: forms, naive loop, plain bmm, whole strided
runs, threads, choosing dt), bench_hooks (hook overhead of the app's run), bench_exact (the exact
integrator against Euler). Writes bench/results/theory.json, bench/results/train.json (the
testbed's figures) and bench/results/suite.json (both, and the wall time). docs/performance.md
states the figures and the targets they are read against.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench import bench_ensemble, bench_exact, bench_hooks, bench_step, bench_theory
from bench.timing import machine_info, machine_references, setup, stamp, write

SECTIONS = {"step": bench_step, "hooks": bench_hooks, "exact": bench_exact, "ensemble": bench_ensemble}
TITLES = {
    "step": "[1] the Euler step (bench.bench_step): the batched ensemble (EulerDynamics.advance, automatic step form) "
            "against its features form, the naive per-seed loop (nn.Linear + SGD) and plain bmm of the form's shapes",
    "hooks": "[2] hook overhead (bench.bench_hooks): the app's default run, progress bar off, against its training "
             "alone",
    "exact": "[3] exact integrator vs Euler (bench.bench_exact): E_g at 100 log-spaced times up to t = 1e4/(P lam_1)",
    "ensemble": "[4] network ensembles (bench.bench_ensemble): one GD step of K doubled MLPs stacked and vmapped "
                "(model=mlp) against a per-seed loop of torch.optim.SGD",
}


def testbed(device: torch.device, quick: bool, skip: set[str]) -> dict:
    """The testbed's sections in one process; their figures in one dict (train.json)."""
    t_start = time.perf_counter()
    res: dict = {"date": stamp(), "quick": quick, "machine": machine_info(device)}
    m = res["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"device {m['device']}{' (' + m['cuda_device'] + ')' if 'cuda_device' in m else ''}, "
          f"load average {m['load_average_1_5_15']}")
    refs = res["references"] = machine_references(device)
    print("references: copy bandwidth {:.1f} GB/s, GEMM 1024^3 {:.0f} GFLOP/s fp32, {:.0f} GFLOP/s fp64".format(
        refs["copy_bandwidth_GBs"], refs["gemm_1024_float32_GFLOPs"], refs["gemm_1024_float64_GFLOPs"]))
    res["section_s"] = {}
    for name, module in SECTIONS.items():
        if name in skip:
            continue
        print(f"\n{TITLES[name]}")
        t0 = time.perf_counter()
        part = module.run(device, quick)
        module.report(part)
        part.pop("measurements")
        res.update(part)
        res["section_s"][name] = time.perf_counter() - t0
    res["total_s"] = time.perf_counter() - t_start
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes and rounds")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the testbed benchmarks")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads of the testbed (default 1, as the app; 0: torch's default)")
    ap.add_argument("--skip", default="", help="comma list of sections to leave out: theory,step,hooks,exact")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    unknown = skip - {"theory", *SECTIONS}
    if unknown:
        ap.error(f"--skip: unknown section(s) {', '.join(sorted(unknown))}")
    device = setup(args, ap)
    out = Path(args.out_dir)
    t0 = time.perf_counter()
    suite: dict = {"quick": args.quick, "device": args.device}
    if "theory" not in skip:
        print("== theory engine (bench.bench_theory) ==")
        suite["theory"] = bench_theory.main([*(["--quick"] if args.quick else []), "--out", str(out / "theory.json")])
    if set(SECTIONS) - skip:
        print("\n== training testbed ==")
        train = suite["train"] = testbed(device, args.quick, skip)
        sections = ", ".join(f"{k} {v:.1f} s" for k, v in train["section_s"].items())
        print(f"\ntestbed {train['total_s']:.1f} s ({sections}); wrote {write(train, out / 'train.json')}")
    suite["total_s"] = time.perf_counter() - t0
    print(f"\nsuite: {suite['total_s']:.0f} s; wrote {write(suite, out / 'suite.json')}")
    return suite


if __name__ == "__main__":
    main()
