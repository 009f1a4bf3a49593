"""Benchmark of the hooks' overhead: the app's default run (its composed config, the default
hooks, progress bar off) with TensorBoard off and on, against its training alone (the same
``advance`` calls and stride, no evaluations); the same schedule at N = P = 1024 and, in full
mode, 2048 with 32 seeds (4 x 8).

    python -m bench.bench_hooks [--quick] [--device cuda]

The run is put together from the training app's public steps (``problem_spec``,
``make_problem``, ``DYNAMICS``, ``eval_schedule``, ``theory_curve``, ``build_hooks``,
``start_state``) and run by ``rfscaling.run.simulate``, with each hook wrapped in a
:class:`TimedHook` and the dynamics in a :class:`TimedDynamics`: they delegate every call and
add up its wall time. The loop time is simulate's own (``RunSummary.wall_time_s``); the training
alone is a ``torch.utils.benchmark.Timer``, measured in the same rounds. Two overhead figures:
loop / training alone - 1 (includes indirect costs: caches cooled by the evaluations, a writer
process competing for the CPU) and loop / steps timed inside the run - 1.

Writes bench/results/hooks.json (or --out); ``python -m bench`` runs it as part of the suite.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils import benchmark

from bench.timing import dtname, sync, timer
from rfscaling.config import TrainConfig, as_dict
from rfscaling.data import make_generator, resolve_device
from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.hooks import TensorBoardHook
from rfscaling.hooks.registry import HookContext, build_hooks, hook_names
from rfscaling.models import make_problem
from rfscaling.run import HookBase, RunInfo, advance_calls, simulate
from rfscaling.studies.runs import flatten
from rfscaling.train import (
    eval_schedule,
    problem_spec,
    run_identity,
    start_state,
    theory_curve,
)

LABEL = "hook overhead"
#: the problems measured (Hydra overrides of the default run, same schedule)
LARGE = ("data.P=1024", "ensemble.datasets=4", "ensemble.replicas=8")
LARGEST = ("model.N=2048", "data.P=2048", "ensemble.datasets=4", "ensemble.replicas=8")


class TimedHook(HookBase):
    """Delegates each call to ``hook`` and adds its wall time (device synchronised) to
    ``seconds[phase]`` (start, prepare, eval, end)."""

    def __init__(self, name: str, hook, device: torch.device) -> None:
        self.name, self.hook, self.device = name, hook, device
        self.seconds = dict.fromkeys(("start", "prepare", "eval", "end"), 0.0)
        self.calls = dict.fromkeys(self.seconds, 0)

    def _timed(self, phase: str, fn, *args):
        sync(self.device)
        t0 = time.perf_counter()
        out = fn(*args)
        sync(self.device)
        self.seconds[phase] += time.perf_counter() - t0
        self.calls[phase] += 1
        return out

    def on_start(self, info):
        self._timed("start", self.hook.on_start, info)

    def prepare(self, group, snapshots: Sequence):
        self._timed("prepare", self.hook.prepare, group, snapshots)

    def on_eval(self, snapshot):
        return self._timed("eval", self.hook.on_eval, snapshot)

    def on_end(self, summary):
        self._timed("end", self.hook.on_end, summary)

    def close(self):
        self.hook.close()


class TimedDynamics:
    """A dynamics whose ``advance`` calls are timed (``advance_s``); the rest is delegated."""

    def __init__(self, dynamics, device: torch.device) -> None:
        self.dynamics, self.device, self.advance_s = dynamics, device, 0.0

    def __getattr__(self, name: str):
        return getattr(self.dynamics, name)

    def advance(self, state, n_steps: int):
        sync(self.device)
        t0 = time.perf_counter()
        state = self.dynamics.advance(state, n_steps)
        sync(self.device)
        self.advance_s += time.perf_counter() - t0
        return state


def compose(overrides: Sequence[str]) -> TrainConfig:
    """The app's composed config (conf/train.yaml) with these Hydra overrides, typed."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rfscaling.config import CONF_DIR, register_configs
    from rfscaling.train import typed_config

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return typed_config(hydra_compose(config_name="train", overrides=list(overrides)))
    finally:
        GlobalHydra.instance().clear()


def hparams(cfg: TrainConfig) -> dict:
    """The flat settings TensorBoard's HParams get (as the app gives them)."""
    groups = {k: as_dict(getattr(cfg, k)) for k in ("data", "model", "dynamics", "ensemble")}
    return {k: v for k, v in flatten({**groups, "seed": cfg.seed}).items() if v is not None}


def run_once(cfg: TrainConfig, out_dir: Path, device: torch.device) -> dict:
    """One run, put together as ``rfscaling.train.train`` does; the loop by ``simulate`` with
    every hook timed. Returns the loop time and its parts."""
    tb: TensorBoardHook | None = None
    if cfg.hooks.tensorboard:  # launched before the setup, as the app does (its writer starts meanwhile)
        tb = TensorBoardHook(out_dir / "tensorboard", hparams(cfg), cfg.hooks.image_every)
        tb.launch()
    try:
        problem = make_problem(problem_spec(cfg, resolve_device(cfg.device)))
        dyn = TimedDynamics(DYNAMICS.get(cfg.dynamics.name).build(problem.data, cfg.dynamics), device)
        steps, times = eval_schedule(cfg, dyn)
        ctx = HookContext(cfg, out_dir, problem, run_identity(cfg), tensorboard=tb)
        build_hooks(ctx, hook_names(tuple(cfg.hooks.extra)), cfg.hooks.options)
        hooks = [TimedHook(name, h, device) for name, h in ctx.built.items()]
        state, start, _ = start_state(cfg, problem, dyn, ctx, len(steps))
        data = problem.data
        info = RunInfo(eigenvalues=data.eigenvalues.detach().cpu().double().numpy(), eval_times=times,
                       eval_steps=steps, dt=float(dyn.dt), n_datasets=data.n_datasets, n_replicas=data.n_replicas,
                       n_samples=data.n_samples, hparams=hparams(cfg), theory=theory_curve(cfg, problem, times),
                       start_index=start)
        sim = simulate(dyn, state, info, hooks, target_weights=data.target_weights, eigenvalues=data.eigenvalues,
                       progress=False, error_offset=problem.unexplained_variance)
    finally:
        if tb is not None:
            tb.close()
    n_evals = len(sim.steps)
    in_hooks = sum(h.seconds["prepare"] + h.seconds["eval"] for h in hooks)
    loop = sim.summary.wall_time_s
    per_eval = {f"{h.name} {phase}": 1e3 * h.seconds[phase] / max(1, n_evals) for h in hooks
                for phase in ("prepare", "eval")}
    return {"loop_s": loop, "n_steps": int(sim.summary.final.step), "n_evals": n_evals,
            "n_groups": max(h.calls["prepare"] for h in hooks), "train_steps_in_run_s": dyn.advance_s,
            "per_eval_ms": {"measure and loop": 1e3 * (loop - dyn.advance_s - in_hooks) / max(1, n_evals),
                            **{k: v for k, v in per_eval.items() if v > 0}},
            "start_s": sum(h.seconds["start"] for h in hooks), "end_s": sum(h.seconds["end"] for h in hooks),
            "problem": f"N={data.n_modes}, P={data.n_samples}, {data.n_datasets}x{data.n_replicas}, "
                       f"{dtname(data.features.dtype)}, form {getattr(dyn, 'form', '-')}"}


def training_alone(cfg: TrainConfig):
    """The run's training alone: the same problem, integrator, stride and ``advance`` calls as
    ``simulate`` makes, no evaluations."""
    problem = make_problem(problem_spec(cfg, resolve_device(cfg.device)))
    dyn = DYNAMICS.get(cfg.dynamics.name).build(problem.data, cfg.dynamics)
    steps, _ = eval_schedule(cfg, dyn)
    calls = advance_calls(steps)
    dyn.plan(calls)  # as simulate does
    gen = make_generator(cfg.seed, "dynamics", device=problem.data.features.device)

    def run():
        st = dyn.init(gen)
        for n in calls:
            st = dyn.advance(st, n)
        return st

    return run


def bench_hooks(device: torch.device, rounds: int, overrides: Sequence[str] = ()) -> dict:
    """The run with TensorBoard off and on, and its training alone, interleaved over rounds;
    medians. ``overrides``: Hydra overrides of the default run (a larger problem, same schedule)."""
    base = [f"device={device.type}", "hooks.progress=false", *overrides]
    cfgs = {f"tensorboard_{'on' if tb else 'off'}": compose(base + [f"hooks.tensorboard={str(tb).lower()}"])
            for tb in (False, True)}
    cfg0 = cfgs["tensorboard_off"]
    e = cfg0.ensemble
    sub = f"N={cfg0.model.N} P={cfg0.data.P} {e.datasets}x{e.replicas} {cfg0.dtype}"
    threads = torch.get_num_threads()
    if cfg0.threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg0.threads)  # as train() does
    try:
        alone_t = timer(training_alone(cfg0), LABEL, sub, "training alone")
        samples: dict = {k: [] for k in cfgs}
        alone = []
        for _ in range(rounds):
            for key, cfg in cfgs.items():
                with tempfile.TemporaryDirectory() as tmp:
                    samples[key].append(run_once(cfg, Path(tmp), device))
            alone.append(alone_t.blocked_autorange(min_run_time=0.05))
    finally:
        torch.set_num_threads(threads)
    problem = samples["tensorboard_off"][0]["problem"]
    m_alone = benchmark.Measurement.merge(alone)[0]
    t_alone = m_alone.median
    ms = [m_alone]
    runs = {}
    for key, rows in samples.items():
        ms.append(benchmark.Measurement(1, [r["loop_s"] for r in rows],
                                        benchmark.TaskSpec("simulate", "", label=LABEL, sub_label=sub,
                                                           description=f"loop, {key}")))
        row = {k: _median([r[k] for r in rows]) for k in ("loop_s", "train_steps_in_run_s", "start_s", "end_s")}
        row.update({k: rows[0][k] for k in ("n_steps", "n_evals", "n_groups")})
        row["per_eval_ms"] = {k: _median([r["per_eval_ms"].get(k, 0.0) for r in rows]) for k in rows[0]["per_eval_ms"]}
        row["rounds"] = len(rows)
        row["training_alone_s"] = t_alone
        row["overhead_vs_alone"] = row["loop_s"] / t_alone - 1
        row["overhead_in_run"] = row["loop_s"] / row["train_steps_in_run_s"] - 1
        row["overhead_fraction"] = max(row["overhead_vs_alone"], row["overhead_in_run"])  # the larger of the two
        row["per_eval_overhead_ms"] = 1e3 * row["overhead_fraction"] * t_alone / max(1, row["n_evals"])
        row["one_off_fraction"] = (row["start_s"] + row["end_s"]) / t_alone
        runs[key] = row
    return {"problem": problem, "training_alone_s": t_alone,
            "ms_per_step": 1e3 * t_alone / runs["tensorboard_off"]["n_steps"], "runs": runs, "measurements": ms}


def _median(xs: list) -> float:
    xs = sorted(xs)
    n = len(xs)
    return float(xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2)


def run(device: torch.device, quick: bool) -> dict:
    """``hooks`` (the default run), ``hooks_large`` (N = P = 1024, 4x8) and, in full mode,
    ``hooks_2048``; ``measurements``: for Compare."""
    res = {"hooks": bench_hooks(device, 2 if quick else 3),
           "hooks_large": bench_hooks(device, 1 if quick else 3, LARGE)}
    if not quick:  # ~20 s per run on 2 CPU cores
        res["hooks_2048"] = bench_hooks(device, 2, LARGEST)
    res["measurements"] = [m for h in res.values() for m in h.pop("measurements")]
    return res


def report(res: dict) -> None:
    benchmark.Compare(res["measurements"]).print()
    for key in ("hooks", "hooks_large", "hooks_2048"):
        h = res.get(key)
        if not h:
            continue
        print(f"  {h['problem']}: training alone {h['training_alone_s']:.3f} s ({h['ms_per_step']:.3f} ms/step)")
        for name, r in h["runs"].items():
            pe = ", ".join(f"{k} {v:.2f}" for k, v in r["per_eval_ms"].items() if v > 0.005)
            print(f"  {name:<16} {r['n_steps']} steps, {r['n_evals']} evals in {r['n_groups']} groups: loop "
                  f"{r['loop_s']:.3f} s, steps in it {r['train_steps_in_run_s']:.3f} s -> overhead ratio vs training "
                  f"alone {100 * r['overhead_vs_alone']:.1f}%, in the run {100 * r['overhead_in_run']:.1f}% "
                  f"({r['rounds']} rounds; per evaluation, ms: {pe})")
            print(f"  {'':<16} one-off outside the loop: start {r['start_s']:.2f} s, end {r['end_s']:.2f} s "
                  f"({100 * r['one_off_fraction']:.0f}% of this short run's training)")


def main(argv=None) -> dict:
    from bench.timing import bench_main

    return bench_main(argv, __doc__, "bench/results/hooks.json", run, report)


if __name__ == "__main__":
    main()
