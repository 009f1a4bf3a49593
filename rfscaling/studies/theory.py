"""The DMFT for the conditions of a study (power-law eigenfeature task), evaluated fresh.

A condition is the flattened run config (``data.P``, ``model.N``, ``model.M``, ``data.alpha``,
``data.beta``, ``data.lam_1``, ``data.c``, ``data.label_noise``, ``dynamics.weight_decay``,
``dynamics.temperature``, ``dynamics.init_variance``). The student sees the top N of the teacher's
M modes; the missing tail sum_{N<k<=M} c k^-(1+beta) enters as ``tail_power`` -- the same theory
the testbed overlays in ``metrics.csv`` (checked in tests/test_studies.py), but on any time grid
and at t = inf, so figures can draw smooth lines and locate optima exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np

from rfscaling.theory import power_law_tail, power_law_task, predict

__all__ = ["Condition", "condition", "curve", "optimal_stop", "OptimalStop"]


@dataclass(frozen=True)
class Condition:
    """The parameters of one power-law eigenfeature run, as the theory needs them."""

    P: int
    N: int
    M: Optional[int]
    alpha: float
    beta: float
    lam_1: float = 1.0
    c: float = 1.0
    label_noise: float = 0.0
    weight_decay: float = 0.0
    temperature: float = 0.0
    init_variance: float = 0.0

    def replace(self, **kw) -> "Condition":
        from dataclasses import replace

        return replace(self, **kw)

    def task(self):
        lam, w2 = power_law_task(self.N, self.alpha, self.beta, lam_1=self.lam_1, c=self.c)
        M = self.M if self.M is not None else self.N
        tail = power_law_tail(self.N, self.beta, self.c, M) if M > self.N else 0.0
        return lam, w2, tail


def _num(cfg: Mapping, key: str, default=None):
    v = cfg.get(key, default)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return default
    return v


def condition(cfg: Mapping) -> Condition:
    """:class:`Condition` from a flattened run config (a row of :func:`rfscaling.studies.load_runs`)."""
    kind = _num(cfg, "data.kind", "powerlaw_eigen")
    if kind != "powerlaw_eigen" or _num(cfg, "model.kind", "eigenfeature") != "eigenfeature":
        raise ValueError(f"data.kind={kind}: the study theory covers the power-law eigenfeature task only")
    M = _num(cfg, "model.M")
    return Condition(
        P=int(_num(cfg, "data.P")), N=int(_num(cfg, "model.N")), M=None if M is None else int(M),
        alpha=float(_num(cfg, "data.alpha")), beta=float(_num(cfg, "data.beta")),
        lam_1=float(_num(cfg, "data.lam_1", 1.0)), c=float(_num(cfg, "data.c", 1.0)),
        label_noise=float(_num(cfg, "data.label_noise", 0.0)),
        weight_decay=float(_num(cfg, "dynamics.weight_decay", 0.0)),
        temperature=float(_num(cfg, "dynamics.temperature", 0.0)),
        init_variance=float(_num(cfg, "dynamics.init_variance", 0.0)),
    )


def curve(cond: Condition, times, modes: bool = False):
    """:class:`rfscaling.theory.Prediction` for ``cond`` at ``times`` (t = inf allowed)."""
    lam, w2, tail = cond.task()
    return predict(lam, w2, cond.P, np.asarray(times, dtype=float), label_noise=cond.label_noise,
                   weight_decay=cond.weight_decay, temperature=cond.temperature,
                   init_variance=cond.init_variance, tail_power=tail)


@dataclass(frozen=True)
class OptimalStop:
    """Minimum of E_g(t) over t in (0, t_max]: ``time`` (inf when E_g keeps decreasing up to
    t_max, i.e. no early-stopping optimum in range; then ``error`` is E_g(t_max)) and ``error``."""

    time: float
    error: float
    interior: bool


def optimal_stop(cond: Condition, t_min: float, t_max: float, per_decade: int = 40,
                 guess: Optional[float] = None) -> OptimalStop:
    """Locate the early-stopping optimum of the DMFT E_g(t) in [t_min, t_max]: a grid with
    ``per_decade`` points per decade, refined by a parabola in (log t, log E) through the five
    points around the grid minimum (relative accuracy ~1e-4 in t for smooth minima).

    ``guess``: search [guess/30, 30 guess] first (the cost grows with the decades searched), and
    the whole range only if the minimum falls on the edge of that window."""
    if guess is not None and math.isfinite(guess) and guess > 0:
        lo, hi = max(t_min, guess / 30.0), min(t_max, guess * 30.0)
        if hi > lo * 1.5:
            o = optimal_stop(cond, lo, hi, per_decade)
            at_edge = (not o.interior) and ((lo > t_min and o.time <= lo * 1.2) or
                                            (hi < t_max and (math.isinf(o.time) or o.time >= hi / 1.2)))
            if o.interior or not at_edge:
                return o
    n = max(int(np.log10(t_max / t_min) * per_decade) + 1, 8)
    t = np.geomspace(t_min, t_max, n)
    E = np.asarray(curve(cond, t).generalization_error, dtype=float)
    i = int(np.nanargmin(E))
    if i >= n - 2:
        return OptimalStop(math.inf, float(E[-1]), False)
    if i < 2:
        return OptimalStop(float(t[i]), float(E[i]), False)
    lt, lE = np.log(t[i - 2:i + 3]), np.log(E[i - 2:i + 3])
    c2, c1, _ = np.polyfit(lt, lE, 2)
    if c2 <= 0:
        return OptimalStop(float(t[i]), float(E[i]), True)
    xm = -c1 / (2 * c2)
    xm = float(np.clip(xm, lt[0], lt[-1]))
    # one more evaluation at the vertex: the refined minimum of the actual curve
    Em = float(curve(cond, [math.exp(xm)]).generalization_error[0])
    return OptimalStop(math.exp(xm), min(Em, float(E[i])), True)


def flat_window(cond: Condition, opt: OptimalStop, dE: float, t_min: float, t_max: float) -> tuple[float, float]:
    """Times around the optimum where the DMFT E_g(t) <= E* + dE: the resolution with which the
    optimum of a curve measured to +-dE can be located. Returns (t_lo, t_hi) (clipped to the
    range; (nan, nan) without an interior optimum)."""
    if not opt.interior or not (dE > 0):
        return float("nan"), float("nan")
    lo, hi = max(t_min, opt.time / 300.0), min(t_max, opt.time * 300.0)
    t = np.geomspace(lo, hi, 121)
    E = np.asarray(curve(cond, t).generalization_error, dtype=float)
    inside = E <= opt.error + dE
    i = int(np.argmin(np.abs(np.log(t / opt.time))))
    a = i
    while a > 0 and inside[a - 1]:
        a -= 1
    b = i
    while b < t.size - 1 and inside[b + 1]:
        b += 1
    return float(t[a]), float(t[b])
