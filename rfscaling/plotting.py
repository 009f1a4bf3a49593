"""Plots of learning curves (matplotlib, Agg backend: works without a display).

:func:`plot_learning_curves` draws E_g(t), bias and variance (and optionally the training
error and measured curves from the testbed) on log-log axes. Points at t = inf (the stationary
limit) cannot sit on a log axis; they are drawn as dotted horizontal lines labelled ``t = inf``.
Non-positive values (e.g. a variance that is exactly zero) are left out of the log plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_learning_curves", "format_title"]

_STYLE = {
    "E_g": dict(color="black", lw=2.0),
    "bias": dict(color="tab:blue", lw=1.5, ls="--"),
    "variance": dict(color="tab:red", lw=1.5, ls="--"),
    "train_error": dict(color="tab:green", lw=1.2, ls=":"),
}


def format_title(prefix: str, params: Mapping[str, object]) -> str:
    """``"prefix: k1=v1, k2=v2, ..."`` with floats in compact ``%g`` form."""
    parts = []
    for k, v in params.items():
        parts.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return f"{prefix}: " + ", ".join(parts) if prefix else ", ".join(parts)


def _split_inf(times: np.ndarray, values: np.ndarray):
    finite = np.isfinite(times)
    return times[finite], values[finite], values[np.isposinf(times)]


def plot_learning_curves(
    path: str | Path,
    times: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    measured: Optional[Mapping[str, tuple]] = None,
    mark_minimum: Optional[str] = "E_g",
    xlabel: str = "gradient-flow time t",
    ylabel: str = "error",
) -> Path:
    """Write a log-log plot of ``curves`` (name -> values over ``times``) to ``path`` (PNG).

    ``measured``: optional name -> ``(times, values)`` or ``(times, values, errors)`` drawn as
    markers (with error bars) on top of the theory lines. ``mark_minimum``: name of the curve
    whose minimum over finite times (the early-stopping optimum) is marked. Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.asarray(times, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 4.6), constrained_layout=True)
    inf_labelled = False
    try:
        for name, values in curves.items():
            y = np.asarray(values, dtype=float)
            tf, yf, yinf = _split_inf(t, y)
            ok = (tf > 0) & (yf > 0) & np.isfinite(yf)
            style = _STYLE.get(name, {})
            label = name.replace("_", " ") if name != "E_g" else r"$E_g$"
            if ok.any():
                (line,) = ax.plot(tf[ok], yf[ok], label=label, **style)
                color = line.get_color()
            else:
                color = style.get("color")
            for v in yinf:
                if np.isfinite(v) and v > 0:
                    ax.axhline(v, color=color, lw=0.8, ls=":", alpha=0.8,
                               label=None if inf_labelled else "dotted: t = inf")
                    inf_labelled = True
            if name == mark_minimum and ok.any():
                i = int(np.argmin(np.where(ok, yf, np.inf)))
                ax.plot([tf[i]], [yf[i]], marker="o", color=color, ms=6, ls="none",
                        label=f"min {label} at t={tf[i]:.3g}")
        for name, spec in (measured or {}).items():
            mt = np.asarray(spec[0], dtype=float)
            my = np.asarray(spec[1], dtype=float)
            ok = (mt > 0) & np.isfinite(mt) & (my > 0) & np.isfinite(my)
            if not ok.any():
                continue
            style = _STYLE.get(name, {})
            err = np.asarray(spec[2], dtype=float)[ok] if len(spec) > 2 and spec[2] is not None else None
            ax.errorbar(mt[ok], my[ok], yerr=err, fmt="o", ms=3.5, color=style.get("color"),
                        alpha=0.8, label=f"{name.replace('_', ' ')} (measured)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
