"""What the testbed benchmarks share: torch.utils.benchmark Timers measured in interleaved
rounds, the machine's description and reference speeds, and the command line.

Every figure of the testbed is a ratio of two medians measured in the same process: each
alternative is a :class:`torch.utils.benchmark.Timer`, and :func:`interleave` runs their
``blocked_autorange`` round-robin (A B C A B C ...) and merges each one's blocks, so that load
from other processes falls on every alternative alike. The Timers synchronise CUDA themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils import benchmark

__all__ = ["dtname", "interleave", "machine_info", "machine_references", "parser", "rel", "setup", "stamp", "sync",
           "timer", "write"]


def timer(fn: Callable[[], object], label: str, sub_label: str, description: str,
          num_threads: int | None = None) -> benchmark.Timer:
    """A Timer of ``fn()`` (torch's current thread count unless ``num_threads``: the Timer sets
    it while measuring), labelled for :class:`torch.utils.benchmark.Compare`."""
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, label=label, sub_label=sub_label,
                           description=description,
                           num_threads=torch.get_num_threads() if num_threads is None else num_threads)


def interleave(timers: dict[str, benchmark.Timer], rounds: int, min_run_time: float = 0.05
               ) -> dict[str, benchmark.Measurement]:
    """``blocked_autorange`` of each timer, round-robin over ``rounds`` rounds, merged per timer.

    A statement longer than ``min_run_time`` runs twice per round: once to choose the block size
    (torch's warm-up), once measured."""
    parts: dict[str, list] = {k: [] for k in timers}
    for _ in range(rounds):
        for k, t in timers.items():
            parts[k].append(t.blocked_autorange(min_run_time=min_run_time))
    return {k: benchmark.Measurement.merge(v)[0] for k, v in parts.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def dtname(dtype) -> str:
    return str(dtype).replace("torch.", "")


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "platform": platform.platform(), "device": str(device),
            "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "blas": "mkl" if torch.backends.mkl.is_available() else "other"}
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def machine_references(device: torch.device) -> dict:
    """Memory bandwidth (copy of a 256 MiB buffer: read + write) and square GEMM FLOP/s."""
    n = 32 * 2**20  # float64 elements: 256 MiB
    a = torch.ones(n, dtype=torch.float64, device=device)
    b = torch.empty_like(a)
    m = 1024
    mats = {dt: (torch.randn(m, m, dtype=dt, device=device), torch.randn(m, m, dtype=dt, device=device))
            for dt in (torch.float32, torch.float64)}
    timers = {"copy": timer(lambda: b.copy_(a), "references", "256 MiB", "copy")}
    for dt, (A, B) in mats.items():
        timers[dtname(dt)] = timer(lambda A=A, B=B: torch.mm(A, B), "references", f"{m}^3", f"gemm {dtname(dt)}")
    t = interleave(timers, 2)
    out = {"copy_bandwidth_GBs": 2 * n * 8 / t["copy"].median / 1e9}
    for dt in mats:
        out[f"gemm_{m}_{dtname(dt)}_GFLOPs"] = 2 * m**3 / t[dtname(dt)].median / 1e9
    return out


def parser(doc: str, default_out: str) -> argparse.ArgumentParser:
    """The options every testbed benchmark takes."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes and rounds")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1, as the testbed's tests; 0: torch's default)")
    ap.add_argument("--out", default=default_out)
    return ap


def setup(args: argparse.Namespace, ap: argparse.ArgumentParser) -> torch.device:
    """The device (checked) and the CPU thread count of ``args``."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available on this machine")
    if device.type == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    return device


def write(res: dict, out: str | os.PathLike) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return path


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def bench_main(argv, doc: str, default_out: str, run: Callable, report: Callable) -> dict:
    """The command line of one part of the bench: parse, measure, print, write the JSON."""
    ap = parser(doc, default_out)
    args = ap.parse_args(argv)
    device = setup(args, ap)
    res = {"date": stamp(), "quick": args.quick, "machine": machine_info(device), **run(device, args.quick)}
    report(res)
    print(f"wrote {write({k: v for k, v in res.items() if k != 'measurements'}, args.out)}")
    return res
