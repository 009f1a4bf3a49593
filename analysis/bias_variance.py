"""Bias-variance study: E_g(t), bias and variance for each dynamics, theory vs experiment.

    python -m analysis bias_variance [SWEEP_DIR] [--out DIR]

Input: a sweep of ``experiment=bias_variance`` (one condition per dynamics, several seeds).
Writes into ``<sweep>/analysis/``:

* ``bias_variance.png|pdf`` -- top row, one panel per dynamics: E_g, bias and variance against
  time (log-log; DMFT lines, experiment points = mean over seeds +- standard error), the DMFT
  early-stopping optimum (star) and the early-stopping hook's (diamond, +- SE over seeds);
  bottom row: relative deviation of the experiment's E_g from the DMFT, with its error band;
* ``bias_variance_curves.csv`` -- the averaged curves, with the DMFT at the same times and the
  z-score of each deviation;
* ``bias_variance_optimum.csv|md`` -- optimal stopping time and error: DMFT vs the hook;
* ``results.json``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from analysis.common import (
    fmt,
    load_successful,
    output_dir,
    parser,
    resolve_sweep,
    save_figure,
    setup_matplotlib,
    successful,
    write_results,
    write_table,
)

STUDY = "bias_variance"
#: Euler steps before which the discretisation error of the first steps (docs/testbed.md: at most
#: 0.55/n relative) is not negligible against a gradient-flow theory; curve statistics start there
#: for runs whose *_theory columns are gradient flow's (theory.discrete=false). Runs compared with
#: the DMFT of their own step (the default, docs/theory.md section 10) are compared from step 1.
EULER_TRANSIENT_STEPS = 100
QUANTS = (("E_g", "$E_g$", "black", "o"), ("bias", "bias", "tab:blue", "s"), ("variance", "variance", "tab:orange", "^"))


def label_of(row) -> str:
    name = row["dynamics.name"]
    if name == "gradient_flow":
        return "gradient flow"
    if name == "weight_decay":
        return f"weight decay $\\lambda$ = {row['dynamics.weight_decay']:g}"
    if name == "langevin":
        extra = f", $\\lambda$ = {row['dynamics.weight_decay']:g}" if row["dynamics.weight_decay"] else ""
        return f"Langevin T = {row['dynamics.temperature']:g}{extra}"
    return str(name)


def hook_optimum(runs, by):
    """Per condition: the early-stopping hook's stopping time (geometric mean over seeds, SE of log t)
    and E_g there (mean +- SE), plus the grid spacing at the stop (log ratio of neighbouring evals)."""
    import pandas as pd

    ok = successful(runs).copy()
    ok["log_es_time"] = np.log(pd.to_numeric(ok["early_stopping.stopping_time"], errors="coerce"))
    rows = []
    for key, g in ok.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        lt = g["log_es_time"].to_numpy(float)
        e = pd.to_numeric(g["early_stopping.E_g"], errors="coerce").to_numpy(float)
        S = np.isfinite(lt).sum()
        rows.append({**dict(zip(by, key)), "n_seeds": int(S),
                     "hook_time": float(np.exp(np.nanmean(lt))),
                     "hook_log_time_se": float(np.nanstd(lt, ddof=1) / math.sqrt(S)) if S > 1 else float("nan"),
                     "hook_E_g": float(np.nanmean(e)),
                     "hook_E_g_se": float(np.nanstd(e, ddof=1) / math.sqrt(S)) if S > 1 else float("nan")})
    return pd.DataFrame(rows)


def grid_log_spacing(times: np.ndarray, t: float) -> float:
    """log of the ratio between the evaluation times around ``t`` (time resolution of the hook)."""
    tt = np.asarray(times, dtype=float)
    tt = tt[tt > 0]
    if tt.size < 2 or not math.isfinite(t):
        return float("nan")
    i = int(np.argmin(np.abs(np.log(tt) - math.log(t))))
    j = min(max(i, 1), tt.size - 1)
    return float(np.log(tt[j] / tt[j - 1]))


def analyze(sweep_dir: Path, out: Optional[Path] = None, dpi: int = 200, plot: bool = True) -> dict:
    import pandas as pd

    from rfscaling.studies.runs import condition_keys, curve_average, load_curves
    from rfscaling.studies.theory import condition, curve, optimal_stop

    runs, ok = load_successful(sweep_dir)
    by = [k for k in ("dynamics.name", "dynamics.weight_decay", "dynamics.temperature") if k in ok]
    by += [k for k in condition_keys(runs) if k not in by]
    curves = load_curves(runs)
    avg = curve_average(runs, curves, by)
    hooks = hook_optimum(runs, by)
    out_dir = output_dir(sweep_dir, out)

    order = {"gradient_flow": 0, "weight_decay": 1, "langevin": 2, "bayes": 3}
    conds = (ok.drop_duplicates(by)[by + ["data.P", "model.N"]]
             .assign(_o=lambda d: d["dynamics.name"].map(order).fillna(9)).sort_values(["_o", *by]))
    opt_rows, panels = [], []
    for _, c in conds.iterrows():
        sel = np.logical_and.reduce([avg[k] == c[k] for k in by])
        a = avg[sel].sort_values("eval")
        first = ok[np.logical_and.reduce([ok[k] == c[k] for k in by])].iloc[0].to_dict()
        cond = condition(first)
        tpos = a["time"][a["time"] > 0].to_numpy()
        t_lo, t_hi = float(tpos.min()), float(tpos.max())
        tf = np.geomspace(t_lo, t_hi, 240)
        pred = curve(cond, tf)
        opt = optimal_stop(cond, t_lo, t_hi)
        h = hooks[np.logical_and.reduce([hooks[k] == c[k] for k in by])].iloc[0]
        dlog = grid_log_spacing(tpos, h["hook_time"])
        log_sigma = math.sqrt(h["hook_log_time_se"] ** 2 + dlog**2 / 12.0)
        row = {**{k: c[k] for k in by}, "label": label_of(c), "P": int(c["data.P"]), "N": int(c["model.N"]),
               "n_seeds": int(h["n_seeds"]),
               "theory_time": opt.time, "theory_E_g": opt.error, "theory_interior": opt.interior,
               "hook_time": h["hook_time"], "hook_time_se": h["hook_time"] * h["hook_log_time_se"],
               "grid_log_spacing": dlog,
               "time_ratio": h["hook_time"] / opt.time if opt.interior else float("nan"),
               "time_z": (math.log(h["hook_time"]) - math.log(opt.time)) / log_sigma if opt.interior else float("nan"),
               "hook_E_g": h["hook_E_g"], "hook_E_g_se": h["hook_E_g_se"],
               "E_g_rel_dev": h["hook_E_g"] / opt.error - 1.0,
               "E_g_z": (h["hook_E_g"] - opt.error) / h["hook_E_g_se"]}
        discrete = str(first.get("theory") or "").startswith("discrete")
        euler = str(first.get("integrator", "euler")) == "euler" and not discrete  # a transient to shade
        past = (a["time"].to_numpy() > 0) & (a["step"].to_numpy() >= (EULER_TRANSIENT_STEPS if euler else 1))
        row["curve_from_step"] = EULER_TRANSIENT_STEPS if euler else 1
        row["theory"] = "discrete time (each run's dt)" if discrete else "gradient flow"
        for q in ("E_g", "bias", "variance"):
            zz = a[f"{q}_z"].to_numpy(float)[past]
            row[f"curve_max_abs_z_{q}"] = float(np.nanmax(np.abs(zz))) if np.isfinite(zz).any() else float("nan")
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = (a[f"{q}_dev"].to_numpy(float) / a[f"{q}_theory"].to_numpy(float))[past]
            row[f"curve_max_abs_rel_{q}"] = float(np.nanmax(np.abs(rel))) if np.isfinite(rel).any() else float("nan")
        opt_rows.append(row)
        panels.append((row, a, tf, pred, opt, h, euler))
    opt_df = pd.DataFrame(opt_rows)

    write_table(avg, out_dir, "bias_variance_curves")
    write_table(opt_df, out_dir, "bias_variance_optimum",
                ["label", "theory_time", "hook_time", "hook_time_se", "time_z", "theory_E_g", "hook_E_g",
                 "hook_E_g_se", "E_g_z", "curve_max_abs_z_E_g", "curve_max_abs_z_bias", "curve_max_abs_z_variance"])
    files = []
    if plot:
        files = _plot(panels, out_dir, dpi, ok)
    results = {"sweep_dir": str(sweep_dir), "jobs": len(runs), "ok": int(len(ok)),
               "optimum": opt_df.drop(columns=by).to_dict(orient="records"),
               "figures": [str(p) for p in files]}
    write_results(out_dir, results)
    return results


def _plot(panels, out_dir, dpi, ok):
    plt = setup_matplotlib()
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(3.3 * n, 4.9), sharex="col", squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": [3.0, 1.0]})
    ymin, ymax = np.inf, 0.0
    for j, (row, a, tf, pred, opt, h, euler) in enumerate(panels):
        ax, axr = axes[0, j], axes[1, j]
        t = a["time"].to_numpy(float)
        pos = t > 0
        if row["theory"] == "gradient flow":
            tx, theory = tf, {"E_g": pred.generalization_error, "bias": pred.bias, "variance": pred.variance}
        else:  # the discrete-time DMFT of each run's step, averaged like the points
            tx, theory = t[pos], {q: a[f"{q}_theory"].to_numpy(float)[pos] for q, *_ in QUANTS}
        for q, name, col, mk in QUANTS:
            ax.plot(tx, theory[q], color=col, lw=1.3, zorder=2)
            y, e = a[q].to_numpy(float), a[f"{q}_se"].to_numpy(float)
            good = pos & (y > 0)
            ax.errorbar(t[good], y[good], yerr=np.where(np.isfinite(e[good]), e[good], 0), fmt=mk, ms=3.2,
                        mfc="white", mec=col, ecolor=col, elinewidth=0.8, color=col, zorder=3, lw=0)
            ymin = min(ymin, float(np.nanmin(np.where(good, y, np.inf))))
            ymax = max(ymax, float(np.nanmax(np.where(good, y, 0))))
        if opt.interior:
            ax.plot([opt.time], [opt.error], marker="*", ms=11, color="crimson", mec="black", mew=0.5, zorder=5,
                    ls="none")
            ax.axvline(opt.time, color="crimson", lw=0.7, ls=":", zorder=1)
        xerr = np.array([[h["hook_time"] * (1 - math.exp(-h["hook_log_time_se"]))],
                         [h["hook_time"] * (math.exp(h["hook_log_time_se"]) - 1)]])
        ax.errorbar([h["hook_time"]], [h["hook_E_g"]], xerr=xerr, yerr=[[h["hook_E_g_se"]], [h["hook_E_g_se"]]],
                    fmt="D", ms=5, color="crimson", mfc="gold", mec="black", mew=0.6, ecolor="crimson", zorder=6)
        tt = "no optimum in range" if not opt.interior else f"$t^*$ = {opt.time:.3g} (DMFT)"
        ax.text(0.97, 0.04, f"{tt}, $E_g^*$ = {opt.error:.3g}\nhook: $t$ = {h['hook_time']:.3g} $\\pm$ "
                f"{row['hook_time_se']:.2g}, $E_g$ = {h['hook_E_g']:.3g} $\\pm$ {h['hook_E_g_se']:.1g}",
                transform=ax.transAxes, fontsize=7, va="bottom", ha="right")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{row['label']}  (P = {row['P']}, N = {row['N']})")
        # bottom: relative deviation of E_g from the DMFT at the same times, +- its SE
        th = a["E_g_theory"].to_numpy(float)
        dev, dse = a["E_g_dev"].to_numpy(float), a["E_g_dev_se"].to_numpy(float)
        rel, rse = dev / th, dse / th
        axr.axhline(0, color="black", lw=0.8)
        axr.fill_between(t[pos], (rel - rse)[pos], (rel + rse)[pos], color="0.6", alpha=0.35, lw=0)
        axr.plot(t[pos], rel[pos], "o", ms=2.5, color="black", mfc="white")
        if euler:
            t_tr = EULER_TRANSIENT_STEPS / (a["step"].to_numpy(float)[-1] / t[-1])
            axr.axvspan(t[pos].min() * 0.8, t_tr, color="0.92", lw=0, zorder=0)
            axr.text(0.02, 0.06, f"Euler transient\n(< {EULER_TRANSIENT_STEPS} steps)", transform=axr.transAxes,
                     fontsize=6.5, color="0.4", va="bottom")
        axr.set_xscale("log")
        axr.set_xlabel("time $t$ (gradient-flow units)")
        lim = max(0.1, float(np.nanmax(np.abs(rel[pos]) + rse[pos])) * 1.15)
        axr.set_ylim(-lim, lim)
    axes[0, 0].set_ylabel("error")
    axes[1, 0].set_ylabel("($E_g$ - DMFT) / DMFT")
    for ax in axes[0]:
        ax.set_ylim(max(ymin * 0.5, ymax * 1e-4), ymax * 1.6)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=col, marker=mk, mfc="white", label=name) for _, name, col, mk in QUANTS]
    handles += [Line2D([], [], color="0.3", label="DMFT (lines)"),
                Line2D([], [], color="crimson", marker="*", ms=9, ls="none", mec="black", label="DMFT optimum"),
                Line2D([], [], color="crimson", marker="D", mfc="gold", mec="black", ls="none",
                       label="early-stopping hook")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7.5)
    first = ok.iloc[0]
    fig.suptitle(f"Bias-variance decomposition: power-law task $\\alpha$ = {first['data.alpha']:g}, "
                 f"$\\beta$ = {first['data.beta']:g}, label noise $\\sigma^2$ = {first['data.label_noise']:g}; "
                 f"points: mean $\\pm$ SE over {int(panels[0][0]['n_seeds'])} seeds "
                 f"({int(first['ensemble.datasets'])} data sets x {int(first['ensemble.replicas'])} replicas each)",
                 fontsize=8.5)
    return save_figure(fig, out_dir, "bias_variance", dpi)


def main(argv=None) -> int:
    a = parser(STUDY, __doc__).parse_args(argv)
    sweep = resolve_sweep(STUDY, a.sweep_dir)
    res = analyze(sweep, a.out, a.dpi)
    for r in res["optimum"]:
        r = {**r, "label": r["label"].replace("$\\lambda$", "lambda")}
        print(f"{r['label']:<28} t*: DMFT {fmt(r['theory_time'])}, hook {fmt(r['hook_time'])} +- "
              f"{fmt(r['hook_time_se'], 2)} (z {fmt(r['time_z'], 2)});  E_g*: DMFT {fmt(r['theory_E_g'], 4)}, "
              f"hook {fmt(r['hook_E_g'], 4)} +- {fmt(r['hook_E_g_se'], 2)} (z {fmt(r['E_g_z'], 2)})")
    print(f"figures and tables: {Path(res['figures'][0]).parent if res['figures'] else a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
