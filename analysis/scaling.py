"""Scaling-law study: E_g against P, against N and against t; fitted vs derived exponents.

    python -m analysis scaling [SWEEP_DIR] [--out DIR]

Input: a sweep of ``experiment=scaling`` (a P x N grid x seeds, noiseless gradient flow, each run
evaluated from the first step to t_max, effectively t = infinity). Writes into ``<sweep>/analysis/``:

* ``scaling.png|pdf`` -- (a) E_g(t_max) against P, one curve per N; (b) against N, one curve per
  P; (c) E_g(t) against t for several P at the largest N. Lines: DMFT; points: mean +- standard
  error over seeds; dashed: the derived power law through the fitted window; filled points: the
  ones used in the fit;
* ``exponents.csv|md`` -- per regime the derived exponent, the exponent fitted to the experiment
  (log-log least squares weighted by the standard errors, 95 % interval rescaled by the scatter),
  the DMFT fitted on the same points (its difference from the derived value is the finite-size
  drift of that window) and whether |fitted - derived| <= TOLERANCE;
* ``scaling_final.csv`` (E_g at t_max per (P, N)), ``scaling_time.csv``, ``results.json``.

Fit windows (where the derived asymptotics hold): data-limited P <= N_max/8 at N = N_max;
model-limited N <= P_max/8 at P = P_max; time-limited 10/P <= t <= min(P, N)^2/(100 P) (learned
modes 3 <~ k*(t) = (P t)^(1/2) <~ min(P, N)/10 for alpha = 1) at the largest P and N.
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
    write_results,
    write_table,
)

STUDY = "scaling"
#: Stated tolerance on |fitted - derived| for the empirical exponents (absolute). The windows
#: reachable at N, P <= 2048 carry a finite-size drift of the DMFT itself of up to ~0.05.
TOLERANCE = 0.1
#: Ratio between the large and the small size for the data- and model-limited windows.
RATIO = 8


def _final(runs):
    from rfscaling.studies.runs import seed_average

    return seed_average(runs, ["data.P", "model.N"], ["final.E_g", "final.E_g_theory", "final.time"])


def _fit(x, y, se, y_th, law, regime, window, tol):
    from rfscaling.theory.scaling import fit_power_law

    x, y, se, y_th = (np.asarray(v, dtype=float) for v in (x, y, se, y_th))
    sig = se if np.all(np.isfinite(se) & (se > 0)) else None
    fe = fit_power_law(x, y, sigma=sig, method="ols", absolute_sigma=False)
    ft = fit_power_law(x, y_th, method="ols")
    lo, hi = fe.slope_ci
    return {"regime": regime, "law": law.law, "derived": law.slope, "fitted": fe.slope, "ci_lo": lo, "ci_hi": hi,
            "engine_same_points": ft.slope, "fit_minus_derived": fe.slope - law.slope,
            "engine_minus_derived": ft.slope - law.slope, "within_tolerance": bool(abs(fe.slope - law.slope) <= tol),
            "tolerance": tol, "ci_covers_derived": bool(lo <= law.slope <= hi), "n_points": fe.n_points,
            "window": window, "prefactor": fe.prefactor, "condition": law.condition}


def analyze(sweep_dir: Path, out: Optional[Path] = None, dpi: int = 200, plot: bool = True,
            tolerance: float = TOLERANCE) -> dict:
    import pandas as pd

    from rfscaling.studies.runs import curve_average, load_curves
    from rfscaling.theory.scaling import predicted_exponents

    runs, ok = load_successful(sweep_dir)
    out_dir = output_dir(sweep_dir, out)
    a, b = float(ok["data.alpha"].iloc[0]), float(ok["data.beta"].iloc[0])
    fin = _final(runs)
    write_table(fin, out_dir, "scaling_final")
    Ps, Ns = sorted(fin["data.P"].unique()), sorted(fin["model.N"].unique())
    Pmax, Nmax = max(Ps), max(Ns)
    curves = load_curves(runs)
    avg = curve_average(runs, curves, ["data.P", "model.N"], quantities=("E_g",))
    write_table(avg, out_dir, "scaling_time")

    laws = {(L.regime, L.y, L.x): L for L in predicted_exponents(a, b)}
    rows, used = [], {}
    # data-limited: E_g(t_max) against P at the largest N, P <= N/RATIO
    g = fin[(fin["model.N"] == Nmax) & (fin["data.P"] <= Nmax / RATIO)].sort_values("data.P")
    if len(g) >= 3:
        rows.append(_fit(g["data.P"], g["final.E_g"], g["final.E_g_se"], g["final.E_g_theory"],
                         laws[("data", "E_g", "P")], "data-limited (t = t_max)",
                         f"N = {Nmax}, P = {int(g['data.P'].min())}-{int(g['data.P'].max())}", tolerance))
        used["P"] = g
    # model-limited: against N at the largest P, N <= P/RATIO
    g = fin[(fin["data.P"] == Pmax) & (fin["model.N"] <= Pmax / RATIO)].sort_values("model.N")
    if len(g) >= 3:
        rows.append(_fit(g["model.N"], g["final.E_g"], g["final.E_g_se"], g["final.E_g_theory"],
                         laws[("model", "E_g", "N")], "model-limited (t = t_max)",
                         f"P = {Pmax}, N = {int(g['model.N'].min())}-{int(g['model.N'].max())}", tolerance))
        used["N"] = g
    # time-limited: E_g(t) at the largest P and N, 3 <~ k*(t) <~ min(P, N)/10
    c = avg[(avg["data.P"] == Pmax) & (avg["model.N"] == Nmax)]
    m = min(Pmax, Nmax)
    t_lo, t_hi = 10.0 / Pmax, (m / 10.0) ** (1.0 + a) / Pmax
    g = c[(c["time"] >= t_lo) & (c["time"] <= t_hi)]
    if len(g) >= 3:
        rows.append(_fit(g["time"], g["E_g"], g["E_g_se"], g["E_g_theory"], laws[("time", "E_g", "t")],
                         "time-limited", f"P = {Pmax}, N = {Nmax}, t = {g['time'].min():.3g}-{g['time'].max():.3g}",
                         tolerance))
        used["t"] = g
    ex = pd.DataFrame(rows)
    if len(ex):
        write_table(ex, out_dir, "exponents", ["regime", "law", "derived", "fitted", "ci_lo", "ci_hi",
                                                "engine_same_points", "within_tolerance", "window"])
    # agreement of every final point with the DMFT (z over seeds), away from the P = N peak
    away = fin[(fin["data.P"] <= fin["model.N"] / 2) | (fin["data.P"] >= fin["model.N"] * 2)]
    z = ((away["final.E_g"] - away["final.E_g_theory"]) / away["final.E_g_se"]).to_numpy(float)
    rel = ((away["final.E_g"] - away["final.E_g_theory"]) / away["final.E_g_theory"]).to_numpy(float)
    big = (away["data.P"] >= 64).to_numpy()
    files = _plot(fin, avg, used, ex, ok, out_dir, dpi) if plot else []
    results = {"sweep_dir": str(sweep_dir), "jobs": len(runs), "ok": int(len(ok)), "tolerance": tolerance,
               "exponents": ex.to_dict(orient="records"),
               "final_vs_dmft": {"points": int(np.isfinite(z).sum()), "z_max_abs": float(np.nanmax(np.abs(z))),
                                 "z_rms": float(np.sqrt(np.nanmean(z**2))),
                                 "rel_dev_max_abs": float(np.nanmax(np.abs(rel))),
                                 "rel_dev_median_abs": float(np.nanmedian(np.abs(rel))),
                                 "P_ge_64_rel_dev_max_abs": float(np.nanmax(np.abs(rel[big]))) if big.any() else None,
                                 "P_ge_64_z_rms": float(np.sqrt(np.nanmean(z[big] ** 2))) if big.any() else None},
               "figures": [str(p) for p in files]}
    write_results(out_dir, results)
    return results


def _line_grid(lo, hi, peaks, per_decade=12):
    """Integer grid for a theory line: log-spaced, plus points around each interpolation peak
    (P = N), which is too sharp at t = t_max for a plain grid."""
    g = np.geomspace(lo, hi, int(np.log10(hi / lo) * per_decade) + 2)
    extra = [p * f for p in peaks for f in (0.85, 0.95, 1.0, 1.05, 1.2)]
    v = np.unique(np.round(np.concatenate([g, extra])).astype(int))
    return v[(v >= lo) & (v <= hi)]


def _theory_vs(key, values, fixed: dict, t):
    from rfscaling.studies.theory import Condition, curve

    out = []
    for v in values:
        c = Condition(**{**fixed, key: int(v)})
        try:
            out.append(float(curve(c, [t]).generalization_error[0]))
        except ValueError:
            out.append(np.nan)
    return np.array(out)


def _plot(fin, avg, used, ex, ok, out_dir, dpi):
    from rfscaling.studies.theory import condition, curve

    plt = setup_matplotlib()
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 4.3), layout="constrained")
    first = ok.iloc[0].to_dict()
    base = condition(first)
    fixed = dict(M=base.M, alpha=base.alpha, beta=base.beta, lam_1=base.lam_1, c=base.c)
    t_end = float(fin["final.time"].median())
    Ps, Ns = sorted(fin["data.P"].unique()), sorted(fin["model.N"].unique())
    fitrow = {r["regime"].split()[0]: r for r in ex.to_dict(orient="records")} if len(ex) else {}

    def ref_line(ax, g, x, y, row):
        xs = g[x].to_numpy(float)
        ys = g[y].to_numpy(float)
        s = row["derived"]
        A = math.exp(np.mean(np.log(ys) - s * np.log(xs)))
        xx = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 10)
        ax.plot(xx, A * xx**s, ls="--", color="crimson", lw=1.3, zorder=4,
                label=f"derived slope {s:.3g}; fit {row['fitted']:.3f} [{row['ci_lo']:.3f}, {row['ci_hi']:.3f}]")

    def peak(g):  # P = N: the interpolation peak (the mean over data sets is dominated by rare,
        return (g["data.P"] == g["model.N"]).to_numpy()  # nearly singular ones: not compared)

    def size_panel(ax, x, curve, xs, curves, cmap, marker, ms, fit, title, xlabel, **ax_kw):
        """E_g(t_end) against ``x`` (data.P or model.N), one curve per value of ``curve``."""
        cols = colors(len(curves), *cmap)
        xf = _line_grid(min(xs) * 0.75, max(xs) * 1.3, curves)
        xname, cname = x.split(".")[1], curve.split(".")[1]
        for col, c in zip(cols, curves):
            g = fin[fin[curve] == c].sort_values(x)
            ax.plot(xf, _theory_vs(xname, xf, {**fixed, cname: int(c)}, t_end), color=col, lw=0.9, zorder=2)
            k = ~peak(g)
            ax.errorbar(g[x][k], g["final.E_g"][k], yerr=g["final.E_g_se"][k], fmt=marker, ms=ms, mfc="white",
                        color=col, elinewidth=0.8, label=f"{cname} = {int(c)}", zorder=3)
            ax.plot(g[x][~k], g["final.E_g"][~k], "x", color="0.55", ms=4, zorder=3)
        if xname in used:
            g = used[xname]
            ax.plot(g[x], g["final.E_g"], marker, ms=ms + 0.2, color=cols[-1], zorder=5)
            ref_line(ax, g, x, "final.E_g", fitrow[fit])
        ax.set(xscale="log", yscale="log", xlabel=xlabel, title=title, **ax_kw)
        ax.legend(fontsize=6.2, ncol=2, loc="lower left")

    size_panel(axes[0], "data.P", "model.N", Ps, Ns, ("viridis",), "o", 3.2, "data-limited",
               "(a) data-limited: against P (one curve per N)", "samples P", ylabel=f"$E_g$ at t = {t_end:.0e}")
    size_panel(axes[1], "model.N", "data.P", Ns, Ps, ("plasma", 0.0, 0.85), "s", 3.0, "model-limited",
               "(b) model-limited: against N (one curve per P)", "model size N (student modes)")
    lo = float(np.nanmin(fin["final.E_g"])) / 2.5
    for a_ in axes[:2]:
        a_.set_ylim(lo, 1.0)
        a_.text(0.98, 0.98, "x: P = N (interpolation peak; mean dominated\nby nearly singular data sets, not compared)",
                transform=a_.transAxes, ha="right", va="top", fontsize=6, color="0.4")
    # (c) against t, several P at the largest N
    ax = axes[2]
    Nmax = max(Ns)
    show = [P for P in Ps if P in (Ps[1], Ps[len(Ps) // 2], Ps[-1])] if len(Ps) > 3 else Ps
    cT = colors(len(show), "cividis", 0.0, 0.8)
    for col, P in zip(cT, show):
        g = avg[(avg["data.P"] == P) & (avg["model.N"] == Nmax) & (avg["time"] > 0)]
        sub = ok[(ok["data.P"] == P) & (ok["model.N"] == Nmax)]
        if g.empty or sub.empty:
            continue
        tf = np.geomspace(g["time"].min(), g["time"].max(), 120)
        ax.plot(tf, curve(condition(sub.iloc[0].to_dict()), tf).generalization_error, color=col, lw=1.0, zorder=2)
        ax.errorbar(g["time"], g["E_g"], yerr=g["E_g_se"], fmt="^", ms=3.0, mfc="white", color=col, elinewidth=0.8,
                    label=f"P = {int(P)}, N = {int(Nmax)}", zorder=3)
    if "t" in used:
        g = used["t"]
        ax.plot(g["time"], g["E_g"], "^", ms=3.2, color=cT[-1], zorder=5)
        ref_line(ax, g, "time", "E_g", fitrow["time-limited"])
    ax.set(xscale="log", yscale="log", xlabel="time t (gradient-flow units)",
           title="(c) time-limited: against t")
    ax.legend(fontsize=6.2, loc="lower left")
    for a_ in axes:
        plain_log_ticks(a_)
    S = int(fin["n_seeds"].median())
    fig.suptitle(f"Scaling laws, power-law task $\\alpha$ = {base.alpha:g}, $\\beta$ = {base.beta:g}, teacher "
                 f"M = {base.M:.0e} modes, no label noise; lines DMFT, points mean $\\pm$ SE over {S} seeds x "
                 f"{int(first['ensemble.datasets'])} data sets; dashed: derived exponent", fontsize=8.5)
    return save_figure(fig, out_dir, "scaling", dpi)


def main(argv=None) -> int:
    a = parser(STUDY, __doc__).parse_args(argv)
    sweep = resolve_sweep(STUDY, a.sweep_dir)
    res = analyze(sweep, a.out, a.dpi)
    for r in res["exponents"]:
        print(f"{r['regime']:<26} {r['law']:<32} derived {r['derived']:.3f}  fitted {r['fitted']:.3f} "
              f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]  DMFT same points {r['engine_same_points']:.3f}  "
              f"{'ok' if r['within_tolerance'] else 'OFF'} (tol {r['tolerance']:g})  [{r['window']}]")
    f = res["final_vs_dmft"]
    print(f"E_g(t_max) vs DMFT over {f['points']} (P, N) off the P = N peak: |z| max {fmt(f['z_max_abs'], 2)}, "
          f"rms {fmt(f['z_rms'], 2)}; |rel. dev.| median {100 * f['rel_dev_median_abs']:.1f}%, "
          f"max {100 * f['rel_dev_max_abs']:.1f}%")
    print(f"figures and tables: {Path(res['figures'][0]).parent if res['figures'] else a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
