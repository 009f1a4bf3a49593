"""Benchmark of training an ensemble of networks together against a per-seed loop: one
full-batch gradient step of K doubled MLPs (different seeds and data sets), stacked with
torch.func.stack_module_state and differentiated by vmap(grad) as model=mlp trains them
(rfscaling.dynamics.network.EnsembleModule + rfscaling.optim.SGLD), against K ordinary modules
each stepped by torch.optim.SGD in a Python loop.

    python -m bench.bench_ensemble [--quick] [--device cuda]

Writes bench/results/ensemble.json (or --out); ``python -m bench`` runs it as part of the suite.
"""

from __future__ import annotations

import torch
from torch.utils import benchmark

from bench.timing import dtname, interleave, rel, timer
from rfscaling.dynamics.network import EnsembleModule, member_chunk
from rfscaling.models.mlp import MLP, Doubled
from rfscaling.optim import SGLD

LABEL = "network ensemble step"
INPUT_DIM = 64


def _setup(seeds: int, width: int, P: int, device, dtype):
    g = torch.Generator(device=device).manual_seed(0)
    nets = [Doubled(MLP(INPUT_DIM, width, 1, "erf", "ntk", generator=g, dtype=dtype, device=device))
            for _ in range(seeds)]
    x = torch.randn(seeds, P, INPUT_DIM, generator=g, dtype=dtype, device=device)
    y = torch.randn(seeds, P, generator=g, dtype=dtype, device=device)
    return nets, x, y


def _vmap_step(nets, x, y, lr, chunk=None):
    ens = EnsembleModule(nets, chunk)
    opt = SGLD(list(ens.params.values()), lr=lr)

    def step():
        ens.set_gradients(x, y, 1.0)
        opt.step()
    return step, ens


def _loop_step(nets, x, y, lr):
    opts = [torch.optim.SGD(n.parameters(), lr=lr) for n in nets]

    def step():
        for net, opt, xi, yi in zip(nets, opts, x, y):
            opt.zero_grad()
            (0.5 * ((net(xi) - yi) ** 2).sum()).backward()
            opt.step()
    return step


def _agree(nets, x, y, lr) -> float:
    """max relative difference of the parameters after 3 steps of each (same start)."""
    import copy

    a, b = copy.deepcopy(nets), copy.deepcopy(nets)
    vstep, ens = _vmap_step(a, x, y, lr)
    lstep = _loop_step(b, x, y, lr)
    for _ in range(3):
        vstep()
        lstep()
    return max(rel(ens.params[k][i], p) for i, net in enumerate(b) for k, p in net.named_parameters())


def run(device: torch.device, quick: bool) -> dict:
    sizes = [(32, 1024, 1024)] if not quick else [(32, 256, 256)]
    rows, measurements = [], []
    for seeds, width, P in sizes:
        for dtype in (torch.float32,):
            nets, x, y = _setup(seeds, width, P, device, dtype)
            lr = 0.1 / P
            chunk = member_chunk(device)
            sub = f"K={seeds} N={width} P={P} {dtname(dtype)}"
            vstep, _ = _vmap_step(nets, x, y, lr)
            timers = {"vmap": timer(vstep, LABEL, sub, "vmap, all members")}
            if chunk is not None:  # what model=mlp uses on the CPU
                cstep, _ = _vmap_step(nets, x, y, lr, chunk)
                timers["chunked"] = timer(cstep, LABEL, sub, f"vmap, chunks of {chunk}")
            timers["loop"] = timer(_loop_step(nets, x, y, lr), LABEL, sub, "per-seed loop")
            t = interleave(timers, rounds=2 if quick else 3)  # all step the same modules: only time counts
            measurements += list(t.values())
            nets, x, y = _setup(seeds, width, P, device, dtype)
            rows.append({"seeds": seeds, "width": width, "P": P, "dtype": dtname(dtype),
                         "n_parameters_per_net": sum(p.numel() for p in nets[0].parameters()),
                         "vmap_s": t["vmap"].median, "loop_s": t["loop"].median,
                         "speedup_vmap_vs_loop": t["loop"].median / t["vmap"].median,
                         "member_chunk": chunk,
                         "speedup_app_vmap_vs_loop": t["loop"].median / t["chunked" if chunk else "vmap"].median,
                         "params_rel_diff_vmap_vs_loop": _agree(nets, x, y, lr)})
    return {"ensemble": rows, "measurements": measurements}


def report(res: dict) -> None:
    benchmark.Compare(res["measurements"]).print()
    for r in res["ensemble"]:
        print(f"K={r['seeds']} N={r['width']} P={r['P']} {r['dtype']}: vmap {r['vmap_s'] * 1e3:.1f} ms, loop "
              f"{r['loop_s'] * 1e3:.1f} ms per step: ratio {r['speedup_vmap_vs_loop']:.2f}x; as model=mlp steps "
              f"(member chunk {r['member_chunk']}): {r['speedup_app_vmap_vs_loop']:.2f}x (parameters agree to "
              f"{r['params_rel_diff_vmap_vs_loop']:.1e})")


def main(argv=None) -> dict:
    from bench.timing import bench_main

    return bench_main(argv, __doc__, "bench/results/ensemble.json", run, report)


if __name__ == "__main__":
    main()
