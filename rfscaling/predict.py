"""Theory app: DMFT learning curves of the power-law task, from the command line.

    python -m rfscaling.predict data.P=512 data.alpha=1.0 dynamics=langevin dynamics.temperature=0.01
    python -m rfscaling.predict dynamics.learning_rate=0.002     # gradient descent with that step

With ``dynamics.learning_rate`` (or ``dynamics.dt``) set, the prediction is that of discrete-time
gradient descent / SGLD with that step (docs/theory.md, section 10), at log-spaced step counts
n = 1 ... t_max/lr (times n lr); a step beyond the stable range of the typical spectrum is a
ConfigError.

Builds the power-law task (``model.N`` modes, ``data.alpha``, ``data.beta``, ``data.lam_1``,
``data.c``), evaluates :func:`rfscaling.theory.predict` on ``dynamics.n_evals`` log-spaced times
from ``1e-2 / (P lam_1)`` to ``dynamics.t_max`` (plus ``t = inf`` where that limit is finite),
prints a short table, and writes into the Hydra run directory (``runs/<date>/<time>-predict``):

* ``predictions.csv``  columns time,E_g,bias,variance,variance_label_noise,variance_langevin,
  variance_init,train_error (``time = inf`` is the stationary limit);
* ``learning_curves.png``  E_g(t), bias, variance and train error on log-log axes;
* ``modes.npz``  per-mode arrays (when ``theory.modes=true``).

A teacher wider than the student (``model.M > model.N``) is handled exactly for the eigenfeature
student: the target power of modes N+1..M is invisible to the student, so it acts as extra label
noise during training and adds a constant to E_g; since it is fixed given the data set, it
counts as bias (``predict(..., tail_power=...)``). ``model=random_projection`` is the student on
N random projections of the M teacher modes (``predict(..., n_features=N)``, docs/theory.md
section 9); its per-mode arrays are over the M teacher modes.

Bad input -> one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfscaling.app import hydra_app
from rfscaling.config import ConfigError, PredictConfig, to_config

log = logging.getLogger(__name__)

__all__ = ["main", "run", "time_grid", "Curves", "compute", "format_table", "COLUMNS"]

COLUMNS = (
    "time",
    "E_g",
    "bias",
    "variance",
    "variance_label_noise",
    "variance_langevin",
    "variance_init",
    "train_error",
)

#: The students the theory app computes: aligned (eigenfeature) and random projections of the teacher.
THEORY_MODELS = ("eigenfeature", "random_projection")

#: First evaluation time in units of 1 / (P lam_1), the time scale of the fastest mode.
T_MIN_FACTOR = 1e-2


@dataclass(frozen=True)
class Curves:
    """Learning curves over ``time`` (shape (T,) each); ``modes`` holds optional (T, N) arrays."""

    time: np.ndarray
    E_g: np.ndarray
    bias: np.ndarray
    variance: np.ndarray
    variance_label_noise: np.ndarray
    variance_langevin: np.ndarray
    variance_init: np.ndarray
    train_error: np.ndarray
    eigenvalues: np.ndarray
    modes: dict | None
    tail: float
    message: str
    success: bool

    def columns(self) -> dict[str, np.ndarray]:
        return {c: getattr(self, c) for c in COLUMNS}


def time_grid(s: PredictConfig) -> np.ndarray:
    """Log-spaced times from 1e-2/(P lam_1) to t_max (n_evals points), plus inf where finite.

    ``t = inf`` is included when the stationary limit exists: no Langevin noise, or weight decay
    > 0, or P > N (the data pin down every direction, so Langevin noise cannot diffuse freely).
    """
    eta = s.dynamics.step
    if eta is not None:  # discrete time: log-spaced step counts from the first step
        n = np.unique(np.round(np.geomspace(1.0, max(1.0, s.dynamics.t_max / eta), s.dynamics.n_evals)))
        times = n * eta
        if s.dynamics.has_stationary_limit or s.data.P > s.model.N:
            times = np.append(times, np.inf)
        return times
    t_min = T_MIN_FACTOR / (s.data.P * s.data.lam_1)
    if s.dynamics.t_max <= t_min:
        raise ConfigError("dynamics.t_max", s.dynamics.t_max,
                          f"must be > {T_MIN_FACTOR:g}/(data.P*data.lam_1) = {t_min:.3g}")
    times = np.geomspace(t_min, s.dynamics.t_max, s.dynamics.n_evals)
    if s.dynamics.has_stationary_limit or s.data.P > s.model.N:
        times = np.append(times, np.inf)
    return times


def compute(s: PredictConfig) -> Curves:
    """Evaluate the DMFT prediction for settings ``s`` (power-law task, eigenfeature student)."""
    from rfscaling.theory import power_law_tail, power_law_task, predict

    check(s)
    d, y = s.data, s.dynamics
    M = s.model.teacher_modes
    projected = s.model.kind == "random_projection"
    lam, w2 = power_law_task(M if projected else s.model.N, d.alpha, d.beta, d.lam_1, d.c)
    tail = power_law_tail(s.model.N, d.beta, d.c, M) if M > s.model.N and not projected else 0.0
    times = time_grid(s)
    # teacher modes N+1..M of the eigenfeature student: the engine treats them as dataset-fixed
    # label noise (bias) plus an irreducible error (docs/theory.md, "Finite model size")
    try:
        pred = predict(lam, w2, d.P, times, label_noise=d.label_noise, tail_power=tail,
                       weight_decay=y.weight_decay, temperature=y.temperature,
                       init_variance=y.init_variance, learning_rate=y.step,
                       n_features=s.model.N if projected else None)
    except ValueError as err:  # an unstable step for the typical spectrum
        if y.step is None or "unstable" not in str(err):
            raise
        raise ConfigError("dynamics.dt" if y.dt is not None else "dynamics.learning_rate", y.step,
                          str(err).split(": ", 1)[1]) from None
    bias = np.asarray(pred.bias, float)
    var_lab = np.asarray(pred.variance_label_noise, float)
    train = np.asarray(pred.train_error, float)
    var_lan = np.asarray(pred.variance_langevin, float)
    var_init = np.asarray(pred.variance_init, float)
    variance = var_lab + var_lan + var_init
    E_g = bias + variance
    t = np.asarray(pred.times, float)
    keep = np.isfinite(t) | (np.isfinite(E_g) & np.isfinite(train))  # drop a divergent t = inf row
    modes = None
    if s.theory.modes and getattr(pred, "mode_error", None) is not None:
        modes = {k: np.asarray(getattr(pred, k))[keep] for k in
                 ("mode_error", "mode_bias", "mode_variance") if getattr(pred, k, None) is not None}
    return Curves(
        time=t[keep], E_g=E_g[keep], bias=bias[keep], variance=variance[keep],
        variance_label_noise=var_lab[keep], variance_langevin=var_lan[keep],
        variance_init=var_init[keep], train_error=train[keep], eigenvalues=np.asarray(lam),
        modes=modes, tail=float(tail), message=str(getattr(pred, "message", "")),
        success=bool(getattr(pred, "success", True)),
    )


def _table_rows(n: int, rows: int) -> np.ndarray:
    if n <= rows:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, rows)).astype(int))


def format_table(c: Curves, rows: int = 12) -> str:
    """A fixed-width table of about ``rows`` rows (first, last and evenly spaced in between)."""
    head = f"{'time':>11} {'E_g':>11} {'bias':>11} {'variance':>11} {'train_error':>11}"
    lines = [head, "-" * len(head)]
    for i in _table_rows(c.time.size, rows):
        t = c.time[i]
        ts = "inf" if math.isinf(t) else f"{t:.4g}"
        lines.append(f"{ts:>11} {c.E_g[i]:11.4e} {c.bias[i]:11.4e} {c.variance[i]:11.4e} "
                     f"{c.train_error[i]:11.4e}")
    return "\n".join(lines)


def _title(s: PredictConfig) -> str:
    from rfscaling.plotting import format_title

    d, y = s.data, s.dynamics
    params: dict[str, Any] = {"P": d.P, "N": s.model.N}
    if s.model.teacher_modes != s.model.N:
        params["M"] = s.model.teacher_modes
    params.update({"alpha": d.alpha, "beta": d.beta, "noise": d.label_noise})
    if y.weight_decay:
        params["wd"] = y.weight_decay
    if y.temperature:
        params["T"] = y.temperature
    if y.init_variance:
        params["init var"] = y.init_variance
    if y.step is not None:
        params["lr"] = y.step
    return format_title(f"DMFT, {y.name}" + (", discrete time" if y.step is not None else ""), params)


def write_outputs(c: Curves, s: PredictConfig, out_dir: Path, plot: bool = True) -> list[Path]:
    """Write predictions.csv, learning_curves.png and modes.npz into ``out_dir``."""
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    csv = out_dir / "predictions.csv"
    pd.DataFrame(c.columns()).to_csv(csv, index=False, float_format="%.10g")
    written.append(csv)
    if plot:
        from rfscaling.plotting import plot_learning_curves

        png = plot_learning_curves(
            out_dir / "learning_curves.png", c.time,
            {"E_g": c.E_g, "bias": c.bias, "variance": c.variance, "train_error": c.train_error},
            title=_title(s))
        written.append(png)
    if c.modes:
        npz = out_dir / "modes.npz"
        np.savez_compressed(npz, time=c.time, eigenvalues=c.eigenvalues, **c.modes)
        written.append(npz)
    return written


def check(s: PredictConfig) -> None:
    """The checks that depend on what the config names: the power-law task with the eigenfeature
    student (the only problem the theory app solves) and the dynamics. Imports no torch."""
    from rfscaling.data.sets.powerlaw_eigen import POWERLAW_EIGEN
    from rfscaling.dynamics.kinds import DYNAMICS

    if s.data.kind != POWERLAW_EIGEN.name:
        raise ConfigError("data.kind", s.data.kind, "the theory app supports only data.kind=powerlaw_eigen")
    if s.model.kind not in THEORY_MODELS:
        raise ConfigError("model.kind", s.model.kind, f"the theory app supports model.kind={'|'.join(THEORY_MODELS)}")
    POWERLAW_EIGEN.check(s.data)
    DYNAMICS.get(s.dynamics.name).check(s.dynamics)


def typed_config(cfg: Any) -> PredictConfig:
    """The composed config (or any mapping) as a checked :class:`PredictConfig` (ConfigError
    naming the first bad value)."""
    typed = to_config(cfg, PredictConfig)
    check(typed)
    return typed


def run(cfg: Any, out_dir: str | Path) -> Curves:
    """Validate ``cfg``, compute, print the table and write the outputs into ``out_dir``."""
    s = typed_config(cfg)
    c = compute(s)
    if not c.success:
        log.warning("theory solver reports a problem: %s", c.message)
    print(_title(s))
    if c.tail > 0:
        print(f"unlearnable teacher tail (modes {s.model.N + 1}..{s.model.teacher_modes}): {c.tail:.4e}")
    print(format_table(c, s.rows))
    finite = np.isfinite(c.time) & np.isfinite(c.E_g)
    if finite.any():
        i = int(np.argmin(np.where(finite, c.E_g, np.inf)))
        print(f"minimum E_g = {c.E_g[i]:.4e} at t = {c.time[i]:.4g}")
    for p in write_outputs(c, s, Path(out_dir), plot=s.plot):
        print(f"wrote {p}")
    sys.stdout.flush()
    return c


@hydra_app("predict")
def main(cfg) -> None:
    """Console-script / ``python -m`` entry point (parses Hydra overrides from sys.argv)."""
    from hydra.core.hydra_config import HydraConfig

    run(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
