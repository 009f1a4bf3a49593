"""The whole benchmark suite in one command: the theory engine, then the training testbed.

    python -m bench --quick              # under two minutes on 2 CPU cores
    python -m bench                      # full sizes (about 14 minutes on 2 cores)
    python -m bench --device cuda        # the testbed part on a GPU (the theory runs on numpy)

Writes bench/results/theory.json, bench/results/train.json and bench/results/suite.json (both
sets of figures, the targets and the wall time). docs/performance.md states the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench import bench_theory, bench_train


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes (under two minutes on 2 cores)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the testbed benchmarks")
    ap.add_argument("--out-dir", default="bench/results")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    q = ["--quick"] if args.quick else []
    t0 = time.perf_counter()
    print("== theory engine (bench.bench_theory) ==")
    theory = bench_theory.main([*q, "--out", str(out / "theory.json")])
    print("\n== training testbed (bench.bench_train) ==")
    train = bench_train.main([*q, "--device", args.device, "--out", str(out / "train.json")])
    suite = {"quick": args.quick, "device": args.device, "total_s": time.perf_counter() - t0,
             "theory": theory, "train": train}
    (out / "suite.json").write_text(json.dumps(suite, indent=2, default=str) + "\n")
    print(f"\nsuite: {suite['total_s']:.0f} s; wrote {out / 'suite.json'}")
    return suite


if __name__ == "__main__":
    main()
