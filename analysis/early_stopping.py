"""Early-stopping study: optimal stopping time t* and error E_g(t*) against P, label noise,
weight decay and temperature; the early-stopping hook against the DMFT optimum.

    python -m analysis early_stopping [SWEEP_DIR] [--out DIR]

Input: a sweep of ``experiment=early_stopping`` (conditions x seeds). For every condition the
DMFT optimum (t*, E*) is located on the continuous time axis (``rfscaling.studies.theory.
optimal_stop``); the experiment is the early-stopping hook of each run (validation-optimal time
on fresh noisy data, and E_g there), averaged over seeds: the time as a geometric mean with the
standard error of log t, the error as a mean +- SE. Comparisons (z-scores):

* time: (log t_hook - log t*) / sqrt(s^2 + d^2/12), d = log spacing of the evaluation grid
  around t* (the hook can only stop at evaluations: rounding error d/sqrt(12)), s = the larger of
  the standard error of log t over seeds and w, the half-width in log t of the range where the
  DMFT curve lies within one standard error of E_g above its minimum (how well any curve measured
  to +- SE locates its minimum; this dominates for flat minima, where 4 seeds can agree by
  chance); also whether t_hook lies in the 2-SE window;
* error: (E_hook - E*) / SE(E_hook).

Writes into ``<sweep>/analysis/``: ``early_stopping.png|pdf`` (t* and E* against P, label noise,
weight decay and temperature: DMFT lines, hook points with error bars), ``early_stopping.csv|md``
(every condition), ``exponents.csv|md`` (E* and t* against P: fitted vs derived), ``results.json``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from analysis.common import (
    colors,
    fmt,
    load_successful,
    output_dir,
    parser,
    plain_log_ticks,
    resolve_sweep,
    save_figure,
    setup_matplotlib,
    successful,
    write_results,
    write_table,
)

STUDY = "early_stopping"
#: Stated tolerance on |fitted - derived| (absolute), as in analysis.scaling. The derived law is
#: the P -> infinity asymptote; at P = 64..512 the DMFT's own local exponent is still 0.05-0.2
#: steeper (column engine_same_points), which is the reference the experiment must match.
TOLERANCE = 0.1
#: Relative accuracy of the DMFT at these sizes (as in analysis.pareto): the second criterion for
#: the error at the stop allows 2 SE + this.
FINITE_SIZE = 0.02
BY = ["data.P", "data.label_noise", "dynamics.name", "dynamics.weight_decay", "dynamics.temperature"]


def dyn_label(name, wd, T) -> str:
    if name == "gradient_flow" or (wd == 0 and T == 0):
        return "gradient flow"
    if T == 0:
        return f"weight decay {wd:g}"
    return f"Langevin T = {T:g}" + (f", wd {wd:g}" if wd else "")


def _grid_spacing(run_dirs, t):
    """Median over the runs of the log spacing of their evaluation times around ``t``."""
    import pandas as pd

    out = []
    for d in run_dirs:
        try:
            tt = pd.read_csv(Path(d) / "metrics.csv", usecols=["time"])["time"].to_numpy(float)
        except (OSError, ValueError):
            continue
        tt = tt[tt > 0]
        if tt.size < 2 or not math.isfinite(t):
            continue
        i = int(np.argmin(np.abs(np.log(tt) - math.log(t))))
        j = min(max(i, 1), tt.size - 1)
        out.append(float(np.log(tt[j] / tt[j - 1])))
    return float(np.median(out)) if out else float("nan")


def table(runs) -> "pd.DataFrame":  # noqa: F821
    """One row per condition: the hook's optimum over seeds vs the DMFT optimum."""
    import pandas as pd

    from rfscaling.studies.theory import condition, flat_window, optimal_stop

    ok = successful(runs).copy()
    ok["_lt"] = np.log(pd.to_numeric(ok["early_stopping.stopping_time"], errors="coerce"))
    rows = []
    for key, g in ok.groupby(BY, sort=True):
        first = g.iloc[0].to_dict()
        cond = condition(first)
        t_max = float(first["dynamics.t_max"])
        t_min = float(pd.to_numeric(g["dt"], errors="coerce").min())
        opt = optimal_stop(cond, t_min, t_max)
        lt = g["_lt"].to_numpy(float)
        e = pd.to_numeric(g["early_stopping.E_g"], errors="coerce").to_numpy(float)
        S = int(np.isfinite(lt).sum())
        lse = float(np.nanstd(lt, ddof=1) / math.sqrt(S)) if S > 1 else float("nan")
        ese = float(np.nanstd(e, ddof=1) / math.sqrt(S)) if S > 1 else float("nan")
        th = float(np.exp(np.nanmean(lt)))
        d = _grid_spacing(g["run_dir"], opt.time if opt.interior else th)
        # resolution of the optimum: where the DMFT curve lies within one SE of the hook's error
        # above its minimum (half-width in log t); the seed scatter and this, whichever is larger
        w_lo, w_hi = flat_window(cond, opt, ese, t_min, t_max)
        w = 0.5 * math.log(w_hi / w_lo) if opt.interior and math.isfinite(w_lo) else float("nan")
        spread = max(lse, w) if math.isfinite(w) else lse
        sig_t = math.sqrt(spread**2 + d**2 / 12.0)
        w2_lo, w2_hi = flat_window(cond, opt, 2.0 * ese, t_min, t_max)
        in_window = bool(opt.interior and math.isfinite(w2_lo) and w2_lo <= th <= w2_hi)
        rows.append({
            **dict(zip(BY, key)), "label": dyn_label(key[2], key[3], key[4]), "n_seeds": S,
            "theory_time": opt.time, "theory_E_g": opt.error, "theory_interior": opt.interior,
            "hook_time": th, "hook_log_time_se": lse, "hook_time_lo": th * math.exp(-lse) if S > 1 else th,
            "hook_time_hi": th * math.exp(lse) if S > 1 else th, "grid_log_spacing": d,
            "optimum_log_halfwidth": w, "time_sigma_log": sig_t, "hook_time_in_2se_window": in_window,
            "hook_E_g": float(np.nanmean(e)), "hook_E_g_se": ese,
            "time_ratio": th / opt.time if opt.interior else float("nan"),
            "time_z": (math.log(th) - math.log(opt.time)) / sig_t if opt.interior else float("nan"),
            "E_g_rel_dev": float(np.nanmean(e)) / opt.error - 1.0,
            "E_g_z": (float(np.nanmean(e)) - opt.error) / ese if ese > 0 else float("nan"),
        })
    return pd.DataFrame(rows)


def exponents(tab, runs) -> "pd.DataFrame":  # noqa: F821
    """E* and t* against P (gradient flow, each label noise): fit of the hook's values vs the
    derived asymptotic exponents, and the engine's optimum fitted on the same P values."""
    import pandas as pd

    from rfscaling.theory.scaling import fit_power_law, predicted_exponents

    ok = successful(runs)
    a, b = float(ok["data.alpha"].iloc[0]), float(ok["data.beta"].iloc[0])
    laws = {L.y: L for L in predicted_exponents(a, b, "early_stopping")}
    rows = []
    gf = tab[tab["dynamics.name"] == "gradient_flow"]
    for s2, g in gf.groupby("data.label_noise"):
        g = g.sort_values("data.P")
        if len(g) < 3:
            continue
        P = g["data.P"].to_numpy(float)
        for y, emp, se, th in (("E*", g["hook_E_g"], g["hook_E_g_se"], g["theory_E_g"]),
                               ("t*", g["hook_time"], g["hook_time"] * g["hook_log_time_se"], g["theory_time"])):
            law = laws["E_g*" if y == "E*" else "t*"]
            sig = se.to_numpy(float)
            fe = fit_power_law(P, emp.to_numpy(float), sigma=sig if np.all(sig > 0) else None, method="ols",
                               absolute_sigma=False)
            ft = fit_power_law(P, th.to_numpy(float), method="ols")
            lo, hi = fe.slope_ci
            rows.append({"quantity": f"{y} vs P", "label_noise": s2, "law": law.law, "derived": law.slope,
                         "fitted": fe.slope, "ci_lo": lo, "ci_hi": hi, "engine_same_points": ft.slope,
                         "engine_in_ci": bool(lo <= ft.slope <= hi),
                         "within_tolerance": bool(abs(fe.slope - law.slope) <= TOLERANCE), "tolerance": TOLERANCE,
                         "fit_minus_engine": fe.slope - ft.slope, "engine_minus_derived": ft.slope - law.slope,
                         "P_range": f"{int(P.min())}-{int(P.max())}", "n_points": fe.n_points,
                         "condition": law.condition})
    return pd.DataFrame(rows)


def analyze(sweep_dir: Path, out: Optional[Path] = None, dpi: int = 200, plot: bool = True) -> dict:

    runs, ok = load_successful(sweep_dir)
    out_dir = output_dir(sweep_dir, out)
    tab = table(runs)
    write_table(tab, out_dir, "early_stopping",
                ["data.P", "data.label_noise", "label", "theory_time", "hook_time", "time_sigma_log", "time_z",
                 "hook_time_in_2se_window", "theory_E_g", "hook_E_g", "hook_E_g_se", "E_g_z"])
    ex = exponents(tab, runs)
    if len(ex):
        write_table(ex, out_dir, "exponents", ["quantity", "label_noise", "law", "derived", "fitted", "ci_lo", "ci_hi",
                                                "engine_same_points", "engine_in_ci", "within_tolerance", "P_range"])
    inter = tab[tab["theory_interior"]]
    zt, ze = inter["time_z"].to_numpy(float), tab["E_g_z"].to_numpy(float)
    stats = {
        "conditions": int(len(tab)), "with_interior_optimum": int(len(inter)),
        "time_z_max_abs": float(np.nanmax(np.abs(zt))) if len(zt) else None,
        "time_z_rms": float(np.sqrt(np.nanmean(zt**2))) if len(zt) else None,
        "time_within_2": float(np.nanmean(np.abs(zt) <= 2)) if len(zt) else None,
        "time_in_2se_window": float(inter["hook_time_in_2se_window"].mean()) if len(inter) else None,
        "E_g_z_max_abs": float(np.nanmax(np.abs(ze))), "E_g_z_rms": float(np.sqrt(np.nanmean(ze**2))),
        "E_g_within_2": float(np.nanmean(np.abs(ze) <= 2)),
        "E_g_within_2se_plus_finite_size": float(np.nanmean(
            np.abs(tab["hook_E_g"] - tab["theory_E_g"]) <= 2 * tab["hook_E_g_se"] + FINITE_SIZE * tab["theory_E_g"])),
        "E_g_rel_dev_mean": float(np.nanmean(tab["E_g_rel_dev"])),
        "E_g_rel_dev_max_abs": float(np.nanmax(np.abs(tab["E_g_rel_dev"]))),
        "time_ratio_median": float(np.nanmedian(inter["time_ratio"])) if len(inter) else None,
    }
    files = _plot(tab, ok, out_dir, dpi) if plot else []
    results = {"sweep_dir": str(sweep_dir), "jobs": len(runs), "ok": int(len(ok)), "agreement": stats,
               "exponents": ex.to_dict(orient="records"), "figures": [str(p) for p in files]}
    write_results(out_dir, results)
    return results


def _theory_line(base, key, values, t_min, t_max):
    from rfscaling.studies.theory import optimal_stop

    ts, es = [], []
    guess = None
    for v in values:
        o = optimal_stop(base.replace(**{key: type(getattr(base, key))(v)}), t_min, t_max, per_decade=24,
                         guess=guess)
        guess = o.time if o.interior else None
        ts.append(o.time if o.interior else np.nan)
        es.append(o.error)
    return np.array(ts), np.array(es)


def _plot(tab, ok, out_dir, dpi):
    from rfscaling.studies.theory import condition

    plt = setup_matplotlib()
    fig, axes = plt.subplots(2, 4, figsize=(13.0, 6.0), layout="constrained", sharex="col")
    t_max = float(ok["dynamics.t_max"].iloc[0])
    t_min = float(ok["dt"].min())
    Ps = sorted(tab["data.P"].unique())
    noises = sorted(tab["data.label_noise"].unique())
    P_ref = 256 if 256 in Ps else Ps[len(Ps) // 2]
    s_ref = 0.1 if 0.1 in noises else noises[len(noises) // 2]
    dyn = tab.drop_duplicates(["dynamics.name", "dynamics.weight_decay", "dynamics.temperature"])
    dyn = dyn.sort_values(["dynamics.temperature", "dynamics.weight_decay"])
    dkeys = [(r["dynamics.name"], r["dynamics.weight_decay"], r["dynamics.temperature"]) for _, r in dyn.iterrows()]
    dcol = dict(zip(dkeys, colors(len(dkeys), "plasma", 0.0, 0.85)))
    ncol = dict(zip(noises, colors(len(noises), "viridis", 0.1, 0.85)))

    def where(df, sel: dict):
        for k, v in sel.items():
            df = df[df[k] == v]
        return df

    def base_for(**sel):
        return condition(where(ok, sel).iloc[0].to_dict())

    def points(ax_t, ax_e, x, g, col, label):
        g = g.sort_values(x)
        xv = g[x].to_numpy(float)
        ax_t.errorbar(xv, g["hook_time"], yerr=[g["hook_time"] - g["hook_time_lo"], g["hook_time_hi"] - g["hook_time"]],
                      fmt="o", color=col, mfc="white", ms=4, elinewidth=0.9, label=label, zorder=3)
        ax_e.errorbar(xv, g["hook_E_g"], yerr=g["hook_E_g_se"], fmt="o", color=col, mfc="white", ms=4,
                      elinewidth=0.9, zorder=3)

    def per_dynamics(j, fixed_key, fixed_value, x, theory_key, xf, theory_x, labels):
        """Column j: hook optimum against ``x`` at ``fixed_key = fixed_value``, one colour per dynamics."""
        for k in dkeys:
            cond = {fixed_key: fixed_value, "dynamics.name": k[0], "dynamics.weight_decay": k[1],
                    "dynamics.temperature": k[2]}
            sel = where(tab, cond)
            if sel.empty:
                continue
            tt, ee = _theory_line(base_for(**cond), theory_key, theory_x, t_min, t_max)
            axes[0, j].plot(xf, tt, color=dcol[k], lw=1.2)
            axes[1, j].plot(xf, ee, color=dcol[k], lw=1.2)
            points(axes[0, j], axes[1, j], x, sel, dcol[k], dyn_label(*k) if labels else None)

    # (1) against P at the reference noise, (2) against label noise at P_ref
    Pf = np.geomspace(min(Ps) * 0.8, max(Ps) * 1.25, 9)
    per_dynamics(0, "data.label_noise", s_ref, "data.P", "P", Pf, Pf.round().astype(int), True)
    axes[0, 0].set_title(f"against P ($\\sigma^2$ = {s_ref:g})")
    axes[1, 0].set_xlabel("samples P")
    sf = np.geomspace(min(noises) * 0.8, max(noises) * 1.25, 9)
    per_dynamics(1, "data.P", P_ref, "data.label_noise", "label_noise", sf, sf, False)
    axes[0, 1].set_title(f"against label noise (P = {P_ref})")
    axes[1, 1].set_xlabel("label-noise variance $\\sigma^2$")
    # (3) against weight decay and (4) temperature at P_ref, one colour per label noise
    for col_i, (key, name, xlabel) in enumerate((("weight_decay", "dynamics.weight_decay", "weight decay $\\lambda$"),
                                                 ("temperature", "dynamics.temperature", "temperature T"))):
        other = "dynamics.temperature" if key == "weight_decay" else "dynamics.weight_decay"
        xs = sorted(tab.loc[(tab[other] == 0), name].unique())
        xf = np.linspace(0.0, max(xs) * 1.15 if max(xs) > 0 else 1.0, 12)
        for s2 in noises:
            sel = tab[(tab["data.P"] == P_ref) & (tab["data.label_noise"] == s2) & (tab[other] == 0)]
            if sel.empty:
                continue
            base = base_for(**{"data.P": P_ref, "data.label_noise": s2, "dynamics.weight_decay": 0.0,
                               "dynamics.temperature": 0.0})
            tt, ee = _theory_line(base, key, xf, t_min, t_max)
            ax_t, ax_e = axes[0, 2 + col_i], axes[1, 2 + col_i]
            ax_t.plot(xf, tt, color=ncol[s2], lw=1.2)
            ax_e.plot(xf, ee, color=ncol[s2], lw=1.2)
            points(ax_t, ax_e, name, sel, ncol[s2], f"$\\sigma^2$ = {s2:g}" if col_i == 0 else None)
        axes[0, 2 + col_i].set_title(f"against {key.replace('_', ' ')} (P = {P_ref})")
        axes[1, 2 + col_i].set_xlabel(xlabel)
    for j in range(4):
        axes[0, j].set_yscale("log")
        axes[1, j].set_yscale("log")
    for j in (0, 1):
        axes[0, j].set_xscale("log")
    for j in range(4):
        for i in (0, 1):
            plain_log_ticks(axes[i, j], values=Ps if j == 0 else (noises if j == 1 else None))
    axes[0, 0].set_ylabel("optimal stopping time $t^*$")
    axes[1, 0].set_ylabel("error at the optimum $E_g(t^*)$")
    h0, l0 = axes[0, 0].get_legend_handles_labels()
    h2, l2 = axes[0, 2].get_legend_handles_labels()
    fig.legend(h0, l0, loc="outside lower left", ncol=len(h0), fontsize=7, title="dynamics (columns 1-2)",
               title_fontsize=7)
    fig.legend(h2, l2, loc="outside lower right", ncol=len(h2), fontsize=7, title="label noise (columns 3-4)",
               title_fontsize=7)
    first = ok.iloc[0]
    S = int(tab["n_seeds"].median())
    fig.suptitle(f"Early stopping, power-law task $\\alpha$ = {first['data.alpha']:g}, $\\beta$ = {first['data.beta']:g}, "
                 f"N = {int(first['model.N'])}: lines DMFT optimum; points early-stopping hook (validation set, "
                 f"patience {int(first['hooks.early_stopping.patience'])}), mean $\\pm$ SE over {S} seeds "
                 f"x {int(first['ensemble.datasets'])} data sets", fontsize=8.5)
    return save_figure(fig, out_dir, "early_stopping", dpi)


def main(argv=None) -> int:
    a = parser(STUDY, __doc__).parse_args(argv)
    sweep = resolve_sweep(STUDY, a.sweep_dir)
    res = analyze(sweep, a.out, a.dpi)
    s = res["agreement"]
    print(f"{s['conditions']} conditions ({s['with_interior_optimum']} with an optimum inside the time range)")
    print(f"stopping time: hook / DMFT median {fmt(s['time_ratio_median'])}, |z| max {fmt(s['time_z_max_abs'], 2)}, "
          f"rms {fmt(s['time_z_rms'], 2)}, {100 * s['time_within_2']:.0f}% within 2 sigma, "
          f"{100 * s['time_in_2se_window']:.0f}% inside the 2-SE window of the DMFT optimum")
    print(f"error at stop: rel. dev. mean {100 * s['E_g_rel_dev_mean']:+.1f}%, |max| {100 * s['E_g_rel_dev_max_abs']:.1f}%, "
          f"|z| max {fmt(s['E_g_z_max_abs'], 2)}, rms {fmt(s['E_g_z_rms'], 2)}, {100 * s['E_g_within_2']:.0f}% within "
          f"2 sigma, {100 * s['E_g_within_2se_plus_finite_size']:.0f}% within 2 SE + {100 * FINITE_SIZE:g}%")
    for r in res["exponents"]:
        print(f"{r['quantity']} (sigma^2={r['label_noise']:g}): fitted {r['fitted']:.3f} [{r['ci_lo']:.3f}, "
              f"{r['ci_hi']:.3f}], DMFT same points {r['engine_same_points']:.3f}, derived asymptote {r['derived']:.3f}")
    print(f"figures and tables: {Path(res['figures'][0]).parent if res['figures'] else a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
