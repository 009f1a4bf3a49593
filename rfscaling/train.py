"""Training app: the empirical testbed next to the DMFT.

    python -m rfscaling.train                                   # default run (< 1 min on 2 cores)
    python -m rfscaling.train data.P=512 dynamics=langevin dynamics.temperature=0.01
    python -m rfscaling.train -m data.P=64,128,256              # multirun sweep
    rfscaling-train hydra.run.dir=runs/my_run hooks.checkpoint.enabled=true   # resumable

Each run directory (``runs/<date>/<time>_<dynamics>_P<P>_N<N>`` or ``hydra.run.dir``) holds ``.hydra/``,
``metrics.csv`` (time, step, E_g, E_g_theory, bias, bias_theory, variance, variance_theory,
train_error, train_error_theory), ``modes.npz``, ``summary.json``, ``tensorboard/`` (when
``hooks.tensorboard=true``) and ``checkpoints/`` (when ``hooks.checkpoint.enabled=true``).
Re-running the same command in the same run directory resumes from the last checkpoint; in the
directory of a finished run (summary.json of the same configuration identity) it does nothing.

Layers: :func:`main` (Hydra, errors mapped to exit codes by rfscaling.app) ->
:func:`typed_config` (the edge: the composed config becomes a frozen
:class:`~rfscaling.config.TrainConfig`, every value checked) -> :func:`train` (typed arguments
only), which reads top to bottom: build the problem, build the dynamics, build the hooks,
simulate, write the summary.

Exit status of the app (each failure is one ``error: ...`` line on stderr, no traceback):
0 done (or already done), 2 bad input (including an unstable ``dynamics.dt``),
3 training diverged (:class:`TrainingDiverged`), 128 + signal number on SIGINT/SIGTERM
(130/143; TensorBoard flushed, files written so far kept; re-run to resume).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time as _time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from rfscaling.config import TrainConfig, as_dict, to_config
from rfscaling.data import derive_seed, make_generator, resolve_device, resolve_dtype
from rfscaling.dynamics.base import Dynamics, State
from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.errors import EXIT_DIVERGED, ConfigError
from rfscaling.files import atomic_write, remove_stale_temp_files
from rfscaling.hooks import TensorBoardHook, load_checkpoint
from rfscaling.hooks.registry import HookContext, build_hooks, check_hooks, hook_names
from rfscaling.models import MODELS, Problem, ProblemSpec, check_problem, make_problem, random_streams
from rfscaling.run import Divergence, RunInfo, RunSummary, TheoryCurve, log_spaced_steps, simulate
from rfscaling.studies.runs import flatten

log = logging.getLogger(__name__)

__all__ = ["TrainingDiverged", "RunInterrupted", "train", "completed_summary", "typed_config", "run_identity",
           "main", "EXIT_DIVERGED"]

#: Name of the noise stream of the dynamics (initialisation, Langevin noise, posterior draws).
DYNAMICS_STREAM = "dynamics"


class TrainingDiverged(RuntimeError):
    """Training produced non-finite weights or errors. ``divergence`` says where and the likely
    cause; ``summary`` is the summary.json written for the run (outputs up to the last finite
    evaluation are on disk, the last finite checkpoint is kept)."""

    def __init__(self, divergence: Divergence, summary: dict) -> None:
        super().__init__(divergence.message())
        self.divergence = divergence
        self.summary = summary


class RunInterrupted(BaseException):
    """Raised by the app's SIGINT/SIGTERM handlers (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)


def check(cfg: TrainConfig) -> None:
    """The checks that depend on the registered pieces the config names (data set, model,
    dynamics); with the dataclasses' own checks, every value is checked before anything runs."""
    check_problem(cfg.data, cfg.model)
    if cfg.hooks.checkpoint.enabled and not getattr(MODELS.get(cfg.model.kind), "checkpoints", True):
        raise ConfigError("hooks.checkpoint.enabled", True, f"model={cfg.model.kind} cannot be checkpointed (its "
                          "network parameters are not part of the run state): set it false")
    DYNAMICS.get(cfg.dynamics.name).check(cfg.dynamics)
    check_hooks(cfg.hooks.extra, cfg.hooks.options)
    resolve_device(cfg.device)  # a CUDA device that is not there


def run_identity(cfg: TrainConfig) -> str:
    """Hash of the config fields that can change the results (not progress, logging, budget or
    checkpoint options: the fields marked ``NOT_RESULT`` in rfscaling/config.py)."""
    d = as_dict(replace(cfg, device=resolve_device(cfg.device)), results_only=True)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def completed_summary(out_dir: str | os.PathLike, identity: str) -> Optional[dict]:
    """The summary.json in ``out_dir`` if it is that of a finished run with this ``identity``
    (not resumable, not diverged), else None."""
    try:
        summary = json.loads((Path(out_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(summary, dict) or summary.get("identity") != identity or summary.get("resumable", True)
            or summary.get("divergence")):
        return None
    return summary


def _f(x) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def train(cfg: TrainConfig, out_dir: str | os.PathLike, *, skip_completed: bool = True) -> dict:
    """Run ``cfg``, write the run files into ``out_dir`` and return the summary dict.

    If ``out_dir`` already holds the summary of a finished run of the same identity (and
    ``skip_completed``), nothing is run: that summary is returned with ``"skipped": True``.
    Raises :class:`TrainingDiverged` (after writing the files) when training diverges, and
    ConfigError for a bad value (e.g. an unstable explicit ``dt``). Result files are written
    atomically.
    """
    t_start = _time.perf_counter()
    check(cfg)
    identity = run_identity(cfg)
    if skip_completed and (done := completed_summary(out_dir, identity)) is not None:
        log.debug("run in %s already finished (identity %s): skipped", out_dir, identity)
        return {**done, "skipped": True}
    device = resolve_device(cfg.device)
    if cfg.threads is not None and device == "cpu":
        # one thread is the robust default: the per-step kernels are small and two OpenMP
        # threads on a busy 2-core machine can be 5-20x slower than one
        torch.set_num_threads(int(cfg.threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temp_files(out):  # a killed earlier run's half-written files
        log.info("removed %s, left by a run that was killed while writing it", stale)
    tb = None
    if cfg.hooks.tensorboard:  # its writer takes ~1 s to start: let that overlap the setup
        tb = TensorBoardHook(out / "tensorboard", _hparams(cfg), cfg.hooks.image_every)
        tb.launch()
    try:
        return _run(cfg, device, out, identity, t_start, tb)
    finally:
        if tb is not None:  # closed already unless the setup failed before the loop
            with contextlib.suppress(Exception):
                tb.close()


def _run(cfg: TrainConfig, device: str, out: Path, identity: str, t_start: float,
         tb: Optional[TensorBoardHook]) -> dict:
    """The body of :func:`train` after the skip check, top to bottom."""
    spec = problem_spec(cfg, device)
    problem = make_problem(spec)
    dyn = DYNAMICS.get(cfg.dynamics.name).build(problem.data, cfg.dynamics)
    steps, times = eval_schedule(cfg, dyn)
    theory = theory_curve(cfg, problem, times, dyn)
    ctx = HookContext(cfg, out, problem, identity, tensorboard=tb)
    hooks = build_hooks(ctx, hook_names(cfg.hooks.extra), cfg.hooks.options)
    state, start, ckpt = start_state(cfg, problem, dyn, ctx, len(steps))
    data = problem.data
    info = RunInfo(eigenvalues=data.eigenvalues.detach().cpu().double().numpy(), eval_times=times,
                   eval_steps=steps, dt=float(dyn.dt), n_datasets=data.n_datasets, n_replicas=data.n_replicas,
                   n_samples=data.n_samples, hparams=_hparams(cfg), theory=theory, start_index=start)
    summ = simulate(dyn, state, info, hooks, target_weights=data.target_weights, eigenvalues=data.eigenvalues,
                    progress=cfg.hooks.progress, error_offset=problem.measured_offset, readout=data.readout,
                    desc=f"{cfg.dynamics.name} P={cfg.data.P} N={cfg.model.N}").summary
    if ckpt is not None and ckpt.get("finished"):  # rebuilt from a finished checkpoint: its end
        summ = replace(summ, stop_reason=ckpt.get("stop_reason") or summ.stop_reason,
                       completed=bool(ckpt.get("completed", summ.completed)))
    summary = write_summary(cfg, spec, problem, dyn, summ, ctx, steps, ckpt, t_start, theory)
    if summ.divergence is not None:
        raise TrainingDiverged(summ.divergence, summary)
    return summary


def problem_spec(cfg: TrainConfig, device: str) -> ProblemSpec:
    """What the problem is drawn from, with the validation set early stopping needs (within the
    pool for input data)."""
    spec = ProblemSpec(cfg.data, cfg.model, cfg.ensemble.datasets, cfg.ensemble.replicas, 0, cfg.seed,
                       resolve_dtype(cfg.dtype), device)
    val = cfg.validation_size
    if val and not spec.dataset.eigen_space:
        val = max(1, min(val, spec.pool_size - cfg.data.P))
    return replace(spec, validation_size=val)


def eval_schedule(cfg: TrainConfig, dyn: Dynamics) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation steps and times: log-spaced up to t_max, or t = inf alone for a dynamics
    without steps (the posterior)."""
    if not math.isfinite(dyn.dt):
        return np.array([0], dtype=np.int64), np.array([math.inf])
    n_steps = max(1, int(math.ceil(cfg.dynamics.t_max / dyn.dt - 1e-9)))
    steps = log_spaced_steps(n_steps, cfg.dynamics.n_evals)
    return steps, steps * dyn.dt


def theory_curve(cfg: TrainConfig, problem: Problem, times: np.ndarray,
                 dyn: Optional[Dynamics] = None) -> Optional[TheoryCurve]:
    """The DMFT at the evaluation times: for a run that takes Euler steps (``dyn.stepwise``) the
    discrete-time theory of its step size dt (unless ``theory.discrete=false``), else gradient
    flow; the gradient-flow E_g rides along in ``generalization_error_gf`` either way."""
    if not cfg.theory.enabled:
        return None
    y = cfg.dynamics
    args = (times, y.weight_decay, y.temperature, y.init_variance)
    if dyn is None or not dyn.stepwise or not cfg.theory.discrete:
        gf = problem.theory(*args, modes=cfg.theory.modes)
        return replace(gf, generalization_error_gf=gf.generalization_error)
    gf = problem.theory(*args, modes=False)
    step = float(dyn.dt)
    try:
        curve = problem.theory(*args, modes=cfg.theory.modes, learning_rate=step)
    except ValueError as err:  # dt beyond the stable range of the typical spectrum (docs/theory.md 10.5)
        log.warning("no discrete-time theory for this step (%s); the *_theory columns are gradient flow's", err)
        gf = problem.theory(*args, modes=cfg.theory.modes)
        return replace(gf, generalization_error_gf=gf.generalization_error, kind=f"continuous ({err})")
    return replace(curve, generalization_error_gf=gf.generalization_error,
                   kind=f"discrete (learning_rate = dt = {step:.6g})")


def start_state(cfg: TrainConfig, problem: Problem, dyn: Dynamics, ctx: HookContext, n_evals: int
                ) -> tuple[State, int, Optional[dict]]:
    """The state to start from, the first of the ``n_evals`` evaluations left to do, and the
    checkpoint resumed from (None: a fresh start). Restores the checkpointed hooks' states."""
    gen = make_generator(cfg.seed, DYNAMICS_STREAM, device=problem.data.features.device)
    state = dyn.init(gen)
    ckpt = load_checkpoint(ctx.out_dir / "checkpoints", ctx.identity) if cfg.hooks.checkpoint.enabled else None
    if ckpt is None:
        return state, 0, None
    gen.set_state(ckpt["rng_state"])
    X = problem.data.features
    state = State(ckpt["weights"].to(device=X.device, dtype=X.dtype), int(ckpt["step"]), float(ckpt["time"]), gen)
    for name, hook in ctx.stateful.items():
        if name in ckpt["hooks"]:
            hook.load_state_dict(ckpt["hooks"][name])
    log.info("resuming from checkpoint at step %d (t=%.4g)", ckpt["step"], ckpt["time"])
    return state, (n_evals if ckpt.get("finished") else int(ckpt["index"]) + 1), ckpt


def write_summary(cfg: TrainConfig, spec: ProblemSpec, problem: Problem, dyn: Dynamics, summ: RunSummary,
                  ctx: HookContext, steps: np.ndarray, ckpt: Optional[dict], t_start: float,
                  theory: Optional[TheoryCurve] = None) -> dict:
    """summary.json: final and early-stopped errors next to the DMFT, how the run went, what
    it cost, and every seed."""
    data = problem.data
    es_hook = ctx.built.get("early_stopping")
    resumed_from = None if ckpt is None else {
        "index": int(ckpt["index"]), "step": int(ckpt["step"]), "time": float(ckpt["time"])}
    div = summ.divergence
    summary = {
        "final": _final(summ),
        "theory": None if theory is None else theory.kind,
        "early_stopping": es_hook.result() if es_hook is not None else None,
        "stop_reason": summ.stop_reason,
        "completed": summ.completed,
        "resumable": summ.resumable,
        "resumed_from": resumed_from,
        "divergence": None if div is None else {
            "step": div.step, "time": _f(div.time), "index": div.index, "what": div.what, "cause": div.cause,
            "last_good_step": div.last_good_step, "last_good_time": div.last_good_time},
        "wall_time_s": _time.perf_counter() - t_start,
        "loop_wall_time_s": summ.wall_time_s,
        "compute_macs": summ.compute_macs,
        "compute_definition": "multiply-adds of full-batch training: 2 P N per step per ensemble member "
                              "(X w and X^T r), times steps, datasets and replicas (exact/bayes: the "
                              "Euler-equivalent count, or 0 for bayes)",
        "dynamics": cfg.dynamics.name,
        # how it stepped (rfscaling/dynamics/): integrator, and the Euler form and stride
        **dyn.describe(),
        "dt": _f(dyn.dt),
        "lambda_max": _f(dyn.lambda_max),
        "n_steps": int(steps[-1]),
        "n_parameters": data.n_modes,
        "datasets": data.n_datasets,
        "replicas": data.n_replicas,
        "P": data.n_samples,
        "unexplained_variance": problem.unexplained_variance,
        "problem": problem.info,
        "device": str(data.features.device),
        "dtype": str(data.features.dtype).replace("torch.", ""),
        "identity": ctx.identity,
        "seeds": _seeds(cfg, spec),
    }
    text = json.dumps(summary, indent=2, default=str) + "\n"
    atomic_write(ctx.out_dir / "summary.json", lambda tmp: tmp.write_text(text))
    return summary


def _final(summ: RunSummary) -> dict:
    """The final evaluation's errors next to the DMFT's."""
    m = summ.final.metrics
    th = summ.final.theory
    final = {
        "time": _f(summ.final.time) if math.isfinite(summ.final.time) else "inf", "step": summ.final.step,
        "E_g": _f(m.generalization_error), "E_g_se": _f(m.generalization_error_se),
        "bias": _f(m.bias), "variance": _f(m.variance), "train_error": _f(m.train_error),
        "E_g_theory": _f(th.generalization_error) if th else None, "bias_theory": _f(th.bias) if th else None,
        "variance_theory": _f(th.variance) if th else None, "train_error_theory": _f(th.train_error) if th else None,
    }
    return final


def _seeds(cfg: TrainConfig, spec: ProblemSpec) -> dict:
    """Seeds of every random stream of the run (see :func:`rfscaling.models.random_streams`)."""
    rec = random_streams(spec)
    draws = DYNAMICS.get(cfg.dynamics.name).draws(cfg.dynamics)
    if draws:
        rec["streams"][DYNAMICS_STREAM] = derive_seed(cfg.seed, DYNAMICS_STREAM)
        rec["draws"].update({q: DYNAMICS_STREAM for q in draws})
    return rec


def _hparams(cfg: TrainConfig) -> dict[str, Any]:
    """The flat settings a run is compared by (TensorBoard's HParams)."""
    groups = {k: as_dict(getattr(cfg, k)) for k in ("data", "model", "dynamics", "ensemble")}
    return {k: v for k, v in flatten({**groups, "seed": cfg.seed}).items() if v is not None}


# ---------------------------------------------------------------------------------------------
# The edge: composed config -> TrainConfig
# ---------------------------------------------------------------------------------------------


def typed_config(cfg: Any) -> TrainConfig:
    """The composed config (or any mapping) as a checked :class:`TrainConfig`; ConfigError
    naming the first bad value."""
    typed = to_config(cfg, TrainConfig)
    check(typed)
    return typed


def _print_summary(summary: dict, out_dir: Path) -> None:
    f = summary["final"]

    def fmt(x):
        return "n/a" if x is None else f"{x:.4g}"

    print(f"run dir: {out_dir}")
    if summary.get("skipped"):
        print(f"already finished (identity {summary['identity']}): skipped, nothing was run; delete its "
              "summary.json or use another hydra.run.dir to run it again")
    print(f"final t={f['time'] if isinstance(f['time'], str) else fmt(f['time'])}: E_g={fmt(f['E_g'])} "
          f"(DMFT {fmt(f['E_g_theory'])}), bias={fmt(f['bias'])} (DMFT {fmt(f['bias_theory'])}), "
          f"variance={fmt(f['variance'])} (DMFT {fmt(f['variance_theory'])})")
    es = summary.get("early_stopping")
    if es and "stopping_time" in es:
        print(f"early stopping: t={fmt(es['stopping_time'])}, E_g={fmt(es['E_g'])} "
              f"(DMFT optimum {fmt(es.get('theory_optimum_E_g'))} at t={fmt(es.get('theory_optimum_time'))})")
    print(f"wall time {summary['wall_time_s']:.1f} s, compute {summary['compute_macs']:.3g} multiply-adds")


def run(cfg, out_dir: str | os.PathLike) -> dict:
    summary = train(typed_config(cfg), out_dir)
    _print_summary(summary, Path(out_dir))
    return summary


@contextlib.contextmanager
def interrupts_raise(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
    """Within the block, SIGINT/SIGTERM raise :class:`RunInterrupted` (so hooks are closed and
    TensorBoard flushed on the way out); the previous handlers are restored afterwards. Does
    nothing outside the main thread (Python only delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise RunInterrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _hydra_main():
    from rfscaling.app import hydra_app

    @hydra_app("train")
    def main(cfg) -> None:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir
        with interrupts_raise():  # TrainingDiverged, RunInterrupted: exit status 3, 128 + n (rfscaling.app)
            run(cfg, out_dir)

    return main


def main() -> None:
    """Console-script / ``python -m rfscaling.train`` entry point (Hydra parses sys.argv)."""
    _hydra_main()()


if __name__ == "__main__":
    main()
