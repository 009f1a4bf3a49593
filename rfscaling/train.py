"""Training app: the empirical testbed next to the DMFT.

    python -m rfscaling.train                                   # default run (< 1 min on 2 cores)
    python -m rfscaling.train data.P=512 dynamics=langevin dynamics.temperature=0.01
    python -m rfscaling.train -m data.P=64,128,256              # multirun sweep
    rfscaling-train hydra.run.dir=runs/my_run hooks.checkpoint.enabled=true   # resumable

Each run directory (``runs/<date>/<time>-train`` or ``hydra.run.dir``) holds ``.hydra/``,
``metrics.csv`` (time, step, E_g, E_g_theory, bias, bias_theory, variance, variance_theory,
train_error, train_error_theory), ``modes.npz``, ``summary.json``, ``tensorboard/`` (when
``hooks.tensorboard=true``) and ``checkpoints/`` (when ``hooks.checkpoint.enabled=true``).
Re-running the same command in the same run directory resumes from the last checkpoint; in the
directory of a finished run (summary.json of the same configuration identity) it does nothing.

Layers: :func:`main` (Hydra) -> :func:`spec_from_config` (the edge: config -> typed
:class:`TrainSpec`) -> :func:`train` (typed arguments only).

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
import sys
import threading
import time as _time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from rfscaling.data import ProblemSpec, derive_seed, make_generator, make_problem, random_streams, resolve_dtype
from rfscaling.dynamics import (
    MAX_STRIDE,
    DynamicsParams,
    EulerDynamics,
    ExactDynamics,
    HessianEigen,
    PosteriorDynamics,
    State,
    design_gram,
    hessian_top_eigenvalue,
)
from rfscaling.errors import ConfigError
from rfscaling.files import atomic_write, remove_stale_temp_files
from rfscaling.hooks import (
    BudgetHook,
    CheckpointHook,
    EarlyStoppingHook,
    EigenmodeHook,
    TensorBoardHook,
    load_checkpoint,
)
from rfscaling.hooks.pause import pause_hook_from_env
from rfscaling.run import Divergence, RunInfo, log_spaced_steps, simulate

log = logging.getLogger(__name__)

__all__ = ["TrainSpec", "HookSpec", "TrainingDiverged", "RunInterrupted", "train", "completed_summary",
           "spec_from_config", "main", "INTEGRATORS", "EXIT_DIVERGED"]

INTEGRATORS = ("euler", "exact", "auto")
#: integrator=auto uses Euler when the run costs at most this many multiply-adds
#: (t_max * lambda_max steps x 2 P N D R; ~20 s on one core), else the exact integrator.
AUTO_MAX_EULER_MACS = 5e10
#: Exit status of the app when training diverged (2 is bad input, 128 + n a signal).
EXIT_DIVERGED = 3
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


@dataclass(frozen=True)
class HookSpec:
    eigenmode: bool = True
    tensorboard: bool = True
    image_every: int = 1
    early_stopping: bool = True
    patience: int = 5
    halt: bool = False
    validation_size: Optional[int] = None  # None: P
    checkpoint: bool = False
    checkpoint_every: int = 10
    progress: bool = True
    max_evals: Optional[int] = None  # budget per process (resumable stop); None: no limit
    max_wall_s: Optional[float] = None


@dataclass(frozen=True)
class TrainSpec:
    """A whole run, typed: the problem, the dynamics and the hooks."""

    problem: ProblemSpec
    dynamics: str = "gradient_flow"  # gradient_flow | weight_decay | langevin | bayes (naming only)
    params: DynamicsParams = field(default_factory=DynamicsParams)
    integrator: str = "euler"  # euler | exact | auto (Euler if <= AUTO_MAX_EULER_MACS)
    max_stride: Optional[int] = None  # Euler without noise: cap on steps per product (None: by cost)
    threads: Optional[int] = 1  # torch CPU threads (None: torch's default)
    dt: Optional[float] = None  # None: 1 / lambda_max(H)
    t_max: float = 1000.0
    n_evals: int = 40
    theory: bool = True
    theory_modes: bool = True
    hooks: HookSpec = field(default_factory=HookSpec)
    hparams: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.integrator not in INTEGRATORS:
            raise ValueError(f"dynamics.integrator={self.integrator}: must be one of {'|'.join(INTEGRATORS)}")
        if not (self.t_max > 0 and math.isfinite(self.t_max)):
            raise ValueError(f"dynamics.t_max={self.t_max}: must be a positive finite number")
        if self.n_evals < 1:
            raise ValueError(f"dynamics.n_evals={self.n_evals}: must be a positive integer")
        if self.max_stride is not None and (self.max_stride < 1 or self.max_stride & (self.max_stride - 1)):
            raise ValueError(f"dynamics.max_stride={self.max_stride}: must be a power of two >= 1 or None")


def _identity(spec: TrainSpec) -> str:
    """Hash of everything that determines the results (not progress/budget/logging options)."""
    hooks = replace(spec.hooks, progress=True, max_evals=None, max_wall_s=None, tensorboard=True,
                    image_every=1, checkpoint=True, checkpoint_every=1, eigenmode=True)
    d = asdict(replace(spec, hooks=hooks, hparams={}))
    d["problem"]["dtype"] = str(spec.problem.dtype)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _make_dynamics(spec: TrainSpec, data):
    """The integrator of ``spec``. An explicit ``dt`` at or above the Euler stability bound
    2/lambda_max(H) is a ConfigError on ``dynamics.dt`` (the exact integrator has no bound).

    At most one eigendecomposition per dataset: lambda_max (hence the default dt, the same for
    every integrator) comes from Lanczos on the design-dtype Gram matrix, which Euler then steps
    with; the exact integrator adds its one ``eigh``."""
    if spec.dynamics == "bayes":
        return PosteriorDynamics(data, spec.params)
    wd = spec.params.weight_decay
    integrator, gram = spec.integrator, None
    if integrator == "exact":  # the same dt (time grid) as Euler and auto would take
        dt = float(spec.dt) if spec.dt is not None else 1.0 / float(hessian_top_eigenvalue(data.features, wd).max())
        return ExactDynamics(data, spec.params, dt=dt, eig=HessianEigen.of(data.features, wd))
    gram = design_gram(data.features)
    lam_max = float(hessian_top_eigenvalue(data.features, wd, gram=gram).max())
    dt = float(spec.dt) if spec.dt is not None else 1.0 / lam_max
    if integrator == "auto":
        steps = spec.t_max / dt
        macs = steps * 2 * data.n_samples * data.n_modes * data.n_datasets * data.n_replicas
        integrator = "euler" if macs <= AUTO_MAX_EULER_MACS else "exact"
        if integrator == "exact":
            log.info("integrator=auto: %.3g Euler steps (%.2g multiply-adds) for t_max=%g; using the exact "
                     "integrator (dynamics.integrator=euler forces stepping)", steps, macs, spec.t_max)
            return ExactDynamics(data, spec.params, dt=dt)
    if dt * lam_max >= 2.0:
        raise ConfigError("dynamics.dt", spec.dt,
                          f"unstable Euler step: must be < {2.0 / lam_max:.6g} = 2/lambda_max(H) of the drawn "
                          f"data (null picks 1/lambda_max = {1.0 / lam_max:.6g}; dynamics.integrator=exact has "
                          "no bound)")
    return EulerDynamics(data, spec.params, dt=dt, lambda_max=lam_max, gram=gram,
                         max_stride=spec.max_stride if spec.max_stride is not None else MAX_STRIDE)


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


def train(spec: TrainSpec, out_dir: str | os.PathLike, *, skip_completed: bool = True) -> dict:
    """Run ``spec``, write the run files into ``out_dir`` and return the summary dict.

    If ``out_dir`` already holds the summary of a finished run of the same identity (and
    ``skip_completed``), nothing is run: that summary is returned with ``"skipped": True``.
    Raises :class:`TrainingDiverged` (after writing the files) when training diverges, and
    ConfigError for an unstable explicit ``dt``. All result files are written atomically.
    """
    t_start = _time.perf_counter()
    identity = _identity(spec)
    if skip_completed:
        done = completed_summary(out_dir, identity)
        if done is not None:
            log.debug("run in %s already finished (identity %s): skipped", out_dir, identity)
            return {**done, "skipped": True}
    if spec.threads is not None and str(spec.problem.device) == "cpu":
        # one thread is the robust default: the per-step kernels are small and two OpenMP
        # threads on a busy 2-core machine can be 5-20x slower than one
        torch.set_num_threads(int(spec.threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_temp_files(out):  # a killed earlier run's half-written files
        log.info("removed %s, left by a run that was killed while writing it", stale)
    tb_hook = None
    if spec.hooks.tensorboard:  # its writer process takes ~1 s to start: let that overlap the setup
        tb_hook = TensorBoardHook(out / "tensorboard", spec.hparams, spec.hooks.image_every)
        tb_hook.launch()
    try:
        return _run(spec, out, identity, t_start, tb_hook)
    finally:
        if tb_hook is not None:  # closed already unless the setup failed before the loop
            with contextlib.suppress(Exception):
                tb_hook.close()


def _run(spec: TrainSpec, out: Path, identity: str, t_start: float, tb_hook: Optional[TensorBoardHook]) -> dict:
    """The body of :func:`train` after the skip check: draw, set up, simulate, write."""
    ps = spec.problem
    hs = spec.hooks
    val_size = 0
    if hs.early_stopping:
        val_size = hs.validation_size if hs.validation_size is not None else ps.P
        if ps.model == "random_features":
            pool = ps.pool_size or max(4 * ps.N, 2 * ps.P)
            if ps.kind == "digits":
                pool = min(pool, 1797)
            val_size = max(1, min(val_size, pool - ps.P))
    drawn = replace(ps, validation_size=val_size)
    problem = make_problem(drawn)
    data = problem.data
    dyn = _make_dynamics(spec, data)

    if spec.dynamics == "bayes":
        eval_steps = np.array([0], dtype=np.int64)
        eval_times = np.array([math.inf])
    else:
        n_steps = max(1, int(math.ceil(spec.t_max / dyn.dt - 1e-9)))
        eval_steps = log_spaced_steps(n_steps, spec.n_evals)
        eval_times = eval_steps * dyn.dt

    curve = None
    if spec.theory:
        p = spec.params
        curve = problem.theory(eval_times, p.weight_decay, p.temperature, p.init_variance, modes=spec.theory_modes)

    hooks: list = []
    stateful: dict = {}
    eig_hook = EigenmodeHook(out)  # always on: it writes metrics.csv / modes.npz
    hooks.append(eig_hook)
    stateful["eigenmode"] = eig_hook
    es_hook = None
    if hs.early_stopping and problem.validation is not None:
        es_hook = EarlyStoppingHook(problem.validation, hs.patience, hs.halt)
        hooks.append(es_hook)
        stateful["early_stopping"] = es_hook
    if tb_hook is not None:
        if es_hook is not None:  # final early-stopping figures in the hparams table
            tb_hook.extra_metrics = lambda: {k: v for k, v in es_hook.result().items()
                                             if k in ("E_g", "stopping_time")}
        hooks.append(tb_hook)
    if hs.max_evals is not None or hs.max_wall_s is not None:
        hooks.append(BudgetHook(hs.max_evals, hs.max_wall_s))
    ckpt_dir = out / "checkpoints"
    if hs.checkpoint:
        hooks.append(CheckpointHook(ckpt_dir, hs.checkpoint_every, stateful, identity))
    pause = pause_hook_from_env()  # tests only: freeze after evaluation k, last of the hooks
    if pause is not None:
        hooks.append(pause)

    gen = make_generator(ps.seed, DYNAMICS_STREAM, device=data.features.device)
    state = dyn.init(gen)
    start_index = 0
    resumed_from = None
    ckpt = load_checkpoint(ckpt_dir, identity) if hs.checkpoint else None
    if ckpt is not None:
        gen.set_state(ckpt["rng_state"])
        state = State(ckpt["weights"].to(device=data.features.device, dtype=data.features.dtype),
                      int(ckpt["step"]), float(ckpt["time"]), gen)
        for name, h in stateful.items():
            if name in ckpt["hooks"]:
                h.load_state_dict(ckpt["hooks"][name])
        start_index = len(eval_steps) if ckpt.get("finished") else int(ckpt["index"]) + 1
        resumed_from = {"index": int(ckpt["index"]), "step": int(ckpt["step"]), "time": float(ckpt["time"])}
        log.info("resuming from checkpoint at step %d (t=%.4g)", ckpt["step"], ckpt["time"])

    info = RunInfo(
        eigenvalues=data.eigenvalues.detach().cpu().double().numpy(),
        eval_times=eval_times, eval_steps=eval_steps, dt=float(dyn.dt), n_datasets=data.n_datasets,
        n_replicas=data.n_replicas, n_samples=data.n_samples, hparams=dict(spec.hparams), theory=curve,
        start_index=start_index,
    )
    summ = simulate(dyn, state, info, hooks, target_weights=data.target_weights, eigenvalues=data.eigenvalues,
                    progress=hs.progress, error_offset=problem.unexplained_variance,
                    desc=f"{spec.dynamics} P={ps.P} N={ps.N}").summary
    if ckpt is not None and ckpt.get("finished"):
        summ = replace(summ, stop_reason=ckpt.get("stop_reason") or summ.stop_reason,
                       completed=bool(ckpt.get("completed", summ.completed)))

    m = summ.final.metrics
    th = summ.final.theory
    final = {
        "time": _f(summ.final.time) if math.isfinite(summ.final.time) else "inf", "step": summ.final.step,
        "E_g": _f(m.generalization_error), "E_g_se": _f(m.generalization_error_se),
        "bias": _f(m.bias), "variance": _f(m.variance), "train_error": _f(m.train_error),
        "E_g_theory": _f(th.generalization_error) if th else None, "bias_theory": _f(th.bias) if th else None,
        "variance_theory": _f(th.variance) if th else None, "train_error_theory": _f(th.train_error) if th else None,
    }
    div = summ.divergence
    summary = {
        "final": final,
        "early_stopping": es_hook.result() if es_hook else None,
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
        "dynamics": spec.dynamics,
        "integrator": ("closed_form" if spec.dynamics == "bayes" else
                       "exact" if isinstance(dyn, ExactDynamics) else "euler"),
        # how the Euler iterates were computed (rfscaling/dynamics/euler.py); same iterates either way
        "euler_form": dyn.form if isinstance(dyn, EulerDynamics) else None,
        "euler_stride": dyn.stride if isinstance(dyn, EulerDynamics) else None,
        "dt": _f(dyn.dt),
        "lambda_max": _f(dyn.lambda_max),
        "n_steps": int(eval_steps[-1]),
        "n_parameters": data.n_modes,
        "datasets": data.n_datasets,
        "replicas": data.n_replicas,
        "P": data.n_samples,
        "unexplained_variance": problem.unexplained_variance,
        "problem": problem.info,
        "device": str(data.features.device),
        "dtype": str(data.features.dtype).replace("torch.", ""),
        "identity": identity,
        "seeds": _seeds(spec, drawn),
    }
    text = json.dumps(summary, indent=2, default=str) + "\n"
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(text))
    if div is not None:
        raise TrainingDiverged(div, summary)
    return summary


def _seeds(spec: TrainSpec, ps: ProblemSpec) -> dict:
    """Seeds of every random stream of the run (see :func:`rfscaling.data.random_streams`)."""
    rec = random_streams(ps)
    p = spec.params
    dyn: list[str] = []
    if spec.dynamics == "bayes":
        dyn = ["posterior_sample"]
    else:
        if p.init_variance > 0:
            dyn.append("init")
        if p.temperature > 0:
            dyn.append("langevin_noise")
    if dyn:
        rec["streams"][DYNAMICS_STREAM] = derive_seed(ps.seed, DYNAMICS_STREAM)
        rec["draws"].update({q: DYNAMICS_STREAM for q in dyn})
    return rec


# ---------------------------------------------------------------------------------------------
# The edge: composed config -> TrainSpec
# ---------------------------------------------------------------------------------------------


def spec_from_config(cfg) -> TrainSpec:
    """Validate the composed config (rfscaling.config) and build the typed :class:`TrainSpec`."""
    from omegaconf import OmegaConf

    from rfscaling.config import settings_from_config
    from rfscaling.studies.runs import flatten

    s = settings_from_config(cfg)
    d, mo, dy = s.data, s.model, s.dynamics
    ens = s.ensemble
    problem = ProblemSpec(
        kind=d.kind, target=d.target, teacher=d.teacher, model=mo.kind, nonlinearity=mo.nonlinearity,
        P=d.P, N=mo.N, M=mo.M, alpha=d.alpha, beta=d.beta, lam_1=d.lam_1, c=d.c, label_noise=d.label_noise,
        pool_size=d.pool_size, input_dim=d.input_dim, datasets=ens.datasets if ens else 4,
        replicas=ens.replicas if ens else 4, seed=s.seed, dtype=resolve_dtype(s.dtype), device=s.device,
    )
    h = s.hooks
    es = h.early_stopping if h else None
    hooks = HookSpec() if h is None else HookSpec(
        eigenmode=h.eigenmode, tensorboard=h.tensorboard, image_every=h.image_every,
        early_stopping=es.enabled, patience=es.patience, halt=es.halt, validation_size=es.validation_size,
        checkpoint=h.checkpoint.enabled, checkpoint_every=h.checkpoint.every, progress=h.progress,
        max_evals=h.max_evals, max_wall_s=h.max_wall_s,
    )
    container = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, Mapping) else dict(cfg)
    hparams = {k: v for k, v in flatten({k: container[k] for k in ("data", "model", "dynamics", "ensemble", "seed")
                                       if k in container}).items() if v is not None}
    return TrainSpec(
        problem=problem,
        dynamics=dy.name,
        params=DynamicsParams(dy.weight_decay, dy.temperature, dy.init_variance),
        integrator=dy.integrator,
        max_stride=dy.max_stride,
        threads=s.threads,
        dt=dy.dt,
        t_max=dy.t_max,
        n_evals=dy.n_evals,
        theory=s.theory.enabled,
        theory_modes=s.theory.modes,
        hooks=hooks,
        hparams=hparams,
    )


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
    spec = spec_from_config(cfg)
    summary = train(spec, out_dir)
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


def _fail(message: str, status: int) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    sys.exit(status)


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
