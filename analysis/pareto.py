"""Pareto study: E_g against compute for several P, one curve per model size N; the frontier.

    python -m analysis pareto [SWEEP_DIR] [--out DIR] [--no-reference]

Input: a sweep of ``experiment=pareto`` (P x N x seeds, noiseless gradient flow on the Euler time
grid, exact integrator). Compute of an evaluation: f = 2 P N x steps = 2 P N t lambda_max(H), the
multiply-adds of full-batch training per ensemble member at the stable step dt = 1/lambda_max
(docs/theory.md section 7; summary.json ``compute_macs`` is the same count times the ensemble).
The Pareto frontier F(f) = min{E_g of any (N, t) with compute <= f} is the lower envelope of the
curves (``rfscaling.theory.frontier.pareto_frontier``).

Comparison with the DMFT, at exactly the evaluated points (the DMFT column of metrics.csv, same
times, same compute):

* theory-optimal configurations: at every corner of the DMFT frontier, the experiment's E_g at
  the same (P, N, t) against the DMFT's (z = deviation / its standard error over seeds);
* empirical frontier: every corner of the experiment's frontier against the DMFT frontier at the
  same compute (a minimum over noisy points sits slightly low: selection).

Writes into ``<sweep>/analysis/``: ``pareto.png|pdf`` (one panel per P: DMFT lines, experiment
points +- SE, both frontiers; last panel: the frontiers of every P, the global one, the
``rfscaling.theory.frontier`` prediction on its own continuous grid and the derived slope),
``pareto_points.csv``, ``pareto_frontier.csv|md``, ``exponents.csv|md``, ``results.json``.
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
    resolve_sweep,
    save_figure,
    setup_matplotlib,
    write_results,
    write_table,
)

STUDY = "pareto"
#: Stated tolerance on |fitted - derived| of the fixed-P compute exponent (the window between
#: N* = 8 and N* ~ P/4 is short; the DMFT on the same corners drifts by a similar amount).
TOLERANCE = 0.1
#: Relative accuracy of the DMFT at these sizes (finite-N, P corrections; docs/testbed.md: 2-7 %
#: at N = 1000, P = 256 in single quantities): the second criterion allows 2 SE + this.
FINITE_SIZE = 0.02


def points(runs, curves):
    """Seed-averaged evaluations with their compute: one row per (P, N, evaluation)."""
    from rfscaling.studies.runs import curve_average

    avg = curve_average(runs, curves, ["data.P", "model.N"], quantities=("E_g",))
    avg = avg[avg["step"] > 0].copy()
    avg["compute"] = 2.0 * avg["data.P"] * avg["model.N"] * avg["step"]
    return avg.reset_index(drop=True)


def frontiers(pts):
    """Corners of the DMFT and the experimental frontiers (per P and global), with comparisons."""
    import pandas as pd

    from rfscaling.theory.frontier import pareto_frontier

    rows = []
    groups = [(int(P), g) for P, g in pts.groupby("data.P")] + [("all", pts)]
    for P, g in groups:
        g = g.reset_index(drop=True)
        f = g["compute"].to_numpy(float)
        e_th = g["E_g_theory"].to_numpy(float)
        e_ex = g["E_g"].to_numpy(float)
        th_idx = pareto_frontier(f, e_th)
        ex_idx = pareto_frontier(f, e_ex)
        fc_th, ec_th = f[th_idx], e_th[th_idx]
        for i in th_idx:  # DMFT-optimal configurations, measured
            r = g.iloc[i]
            rows.append({"frontier": f"P={P}" if P != "all" else "global", "kind": "dmft_corner",
                         "P": int(r["data.P"]), "N": int(r["model.N"]), "time": r["time"], "compute": r["compute"],
                         "E_g_dmft": r["E_g_theory"], "E_g": r["E_g"], "E_g_se": r["E_g_se"],
                         "z": r["E_g_dev"] / r["E_g_dev_se"], "rel_dev": r["E_g_dev"] / r["E_g_theory"]})
        for i in ex_idx:  # empirical corners against the DMFT frontier at the same compute
            r = g.iloc[i]
            k = np.searchsorted(fc_th, r["compute"], side="right") - 1
            F = ec_th[k] if k >= 0 else np.nan
            rows.append({"frontier": f"P={P}" if P != "all" else "global", "kind": "empirical_corner",
                         "P": int(r["data.P"]), "N": int(r["model.N"]), "time": r["time"], "compute": r["compute"],
                         "E_g_dmft": F, "E_g": r["E_g"], "E_g_se": r["E_g_se"],
                         "z": (r["E_g"] - F) / r["E_g_se"], "rel_dev": r["E_g"] / F - 1.0})
    return pd.DataFrame(rows)


def exponents(fr, pts, tol):
    """Fixed-P compute exponent of the frontier (largest P), corners with N* strictly inside the
    N grid and t* inside the time range: experiment vs derived, and the DMFT on the same corners."""
    import pandas as pd

    from rfscaling.theory.scaling import fit_power_law, predicted_exponents

    a, b = pts.attrs["alpha"], pts.attrs["beta"]
    law = {L.y: L for L in predicted_exponents(a, b, "compute")}["E_g"]
    rows = []
    Ns = sorted(pts["model.N"].unique())
    for P in sorted(pts["data.P"].unique())[::-1][:1]:
        sub = fr[(fr["frontier"] == f"P={int(P)}") & (fr["kind"] == "dmft_corner")]
        sub = sub[(sub["N"] > Ns[0]) & (sub["N"] < min(Ns[-1], P / 2))].sort_values("compute")
        if len(sub) < 3:
            continue
        fe = fit_power_law(sub["compute"], sub["E_g"], sigma=sub["E_g_se"], method="ols", absolute_sigma=False)
        ft = fit_power_law(sub["compute"], sub["E_g_dmft"], method="ols")
        lo, hi = fe.slope_ci
        rows.append({"regime": "compute (fixed P)", "law": law.law, "P": int(P), "derived": law.slope,
                     "fitted": fe.slope, "ci_lo": lo, "ci_hi": hi, "engine_same_points": ft.slope,
                     "within_tolerance": bool(abs(fe.slope - law.slope) <= tol), "tolerance": tol,
                     "ci_covers_derived": bool(lo <= law.slope <= hi), "n_points": fe.n_points,
                     "window": f"N* = {int(sub['N'].min())}-{int(sub['N'].max())}, f = {sub['compute'].min():.2g}-"
                               f"{sub['compute'].max():.2g}", "condition": law.condition})
    return pd.DataFrame(rows)


def reference_frontier(ok, pts):
    """``rfscaling.theory.frontier.theory_frontier`` on its own time grid and lambda_max (the
    deterministic-equivalent edge), for the same P and N; and the ratio of the measured
    lambda_max (mean over seeds) to that edge, per P."""
    from rfscaling.theory import power_law_task
    from rfscaling.theory.frontier import lambda_max, theory_frontier

    first = ok.iloc[0]
    a, b = float(first["data.alpha"]), float(first["data.beta"])
    Ps = sorted(int(p) for p in pts["data.P"].unique())
    Ns = sorted(int(n) for n in pts["model.N"].unique())
    M = first.get("model.M")
    M = None if M is None or (isinstance(M, float) and math.isnan(M)) else int(M)
    t = np.geomspace(float(pts["time"].min()), float(pts["time"].max()), 36)
    res = theory_frontier(a, b, Ps, Ns, t, label_noise=float(first["data.label_noise"]), M=M,
                          lam_1=float(first["data.lam_1"]), c=float(first["data.c"]))
    ratio = {}
    for P in Ps:
        lam, _ = power_law_task(max(Ns), a, b, lam_1=float(first["data.lam_1"]), c=float(first["data.c"]))
        measured = float(ok[(ok["data.P"] == P) & (ok["model.N"] == max(Ns))]["lambda_max"].mean())
        ratio[P] = measured / lambda_max(lam, P)
    return res, ratio


def analyze(sweep_dir: Path, out: Optional[Path] = None, dpi: int = 200, plot: bool = True, reference: bool = True,
            tolerance: float = TOLERANCE) -> dict:
    from rfscaling.studies.runs import load_curves

    runs, ok = load_successful(sweep_dir)
    out_dir = output_dir(sweep_dir, out)
    pts = points(runs, load_curves(runs))
    pts.attrs.update(alpha=float(ok["data.alpha"].iloc[0]), beta=float(ok["data.beta"].iloc[0]))
    write_table(pts, out_dir, "pareto_points")
    fr = frontiers(pts)
    write_table(fr, out_dir, "pareto_frontier", ["frontier", "kind", "P", "N", "time", "compute", "E_g_dmft", "E_g",
                                                  "E_g_se", "z", "rel_dev"])
    ex = exponents(fr, pts, tolerance)
    if len(ex):
        write_table(ex, out_dir, "exponents", ["regime", "law", "P", "derived", "fitted", "ci_lo", "ci_hi",
                                                "engine_same_points", "within_tolerance", "window"])
    summary = {}
    for kind in ("dmft_corner", "empirical_corner"):
        for scope in ("per_P", "global"):
            s = fr[(fr["kind"] == kind) & ((fr["frontier"] == "global") == (scope == "global"))]
            z, rel = s["z"].to_numpy(float), s["rel_dev"].to_numpy(float)
            dev = (s["E_g"] - s["E_g_dmft"]).abs().to_numpy(float)
            allow = (2.0 * s["E_g_se"] + FINITE_SIZE * s["E_g_dmft"]).to_numpy(float)
            summary[f"{kind}_{scope}"] = {
                "corners": int(len(s)), "z_max_abs": float(np.nanmax(np.abs(z))) if len(z) else None,
                "within_2se_plus_finite_size": float(np.nanmean(dev <= allow)) if len(z) else None,
                "z_rms": float(np.sqrt(np.nanmean(z**2))) if len(z) else None,
                "z_mean": float(np.nanmean(z)) if len(z) else None,
                "within_2": float(np.nanmean(np.abs(z) <= 2)) if len(z) else None,
                "rel_dev_median_abs": float(np.nanmedian(np.abs(rel))) if len(rel) else None,
                "rel_dev_max_abs": float(np.nanmax(np.abs(rel))) if len(rel) else None}
    ref, ratio = (reference_frontier(ok, pts) if reference else (None, {}))
    files = _plot(pts, fr, ex, ok, ref, out_dir, dpi) if plot else []
    results = {"sweep_dir": str(sweep_dir), "jobs": len(runs), "ok": int(len(ok)), "agreement": summary,
               "lambda_max_measured_over_de_edge": {str(k): v for k, v in ratio.items()},
               "exponents": ex.to_dict(orient="records"), "figures": [str(p) for p in files]}
    write_results(out_dir, results)
    return results


def _plot(pts, fr, ex, ok, ref, out_dir, dpi):
    plt = setup_matplotlib()
    Ps = sorted(int(p) for p in pts["data.P"].unique())
    Ns = sorted(int(n) for n in pts["model.N"].unique())
    nP = len(Ps)
    fig, axes = plt.subplots(1, nP + 1, figsize=(3.5 * (nP + 1), 4.2), layout="constrained", sharey=True)
    cN = dict(zip(Ns, colors(len(Ns), "viridis", 0.0, 0.9)))
    cP = dict(zip(Ps, colors(len(Ps), "plasma", 0.05, 0.8)))
    for ax, P in zip(axes, Ps):
        for N in Ns:
            g = pts[(pts["data.P"] == P) & (pts["model.N"] == N)].sort_values("compute")
            if g.empty:
                continue
            ax.plot(g["compute"], g["E_g_theory"], color=cN[N], lw=0.9, zorder=2)
            s = g.iloc[::2]
            ax.errorbar(s["compute"], s["E_g"], yerr=s["E_g_se"], fmt="o", ms=2.4, mfc="white", color=cN[N],
                        elinewidth=0.6, zorder=3, label=f"N = {N}")
        d = fr[(fr["frontier"] == f"P={P}") & (fr["kind"] == "dmft_corner")].sort_values("compute")
        e = fr[(fr["frontier"] == f"P={P}") & (fr["kind"] == "empirical_corner")].sort_values("compute")
        ax.step(d["compute"], d["E_g_dmft"], where="post", color="black", lw=2.0, zorder=4, label="DMFT frontier")
        ax.step(e["compute"], e["E_g"], where="post", color="crimson", lw=1.0, ls="--", zorder=5,
                label="experiment frontier")
        ax.set(xscale="log", yscale="log", xlabel="compute f = 2 P N t $\\lambda_{max}$ (multiply-adds)",
               title=f"P = {P}")
    axes[0].set_ylabel("generalization error $E_g$")
    axes[0].legend(fontsize=6, ncol=2, loc="lower left")
    ax = axes[-1]
    if ref is not None:
        g = ref.frontier.sort_values("compute")
        ax.step(g["compute"], g["E_g"], where="post", color="0.75", lw=4.0, zorder=1, solid_capstyle="butt",
                label="theory.frontier ($\\lambda_{max}$ = DE edge)")
    for P in Ps:
        d = fr[(fr["frontier"] == f"P={P}") & (fr["kind"] == "dmft_corner")].sort_values("compute")
        ax.step(d["compute"], d["E_g_dmft"], where="post", color=cP[P], lw=1.2, zorder=2,
                label=f"DMFT frontier P = {P}")
        s = d.iloc[::2]
        ax.errorbar(s["compute"], s["E_g"], yerr=s["E_g_se"], fmt="o", ms=2.4, mfc="white", color=cP[P],
                    elinewidth=0.7, zorder=3)
    gl = fr[(fr["frontier"] == "global") & (fr["kind"] == "dmft_corner")].sort_values("compute")
    ax.step(gl["compute"], gl["E_g_dmft"], where="post", color="black", lw=1.1, ls="--", zorder=4,
            label="global DMFT frontier (all P)")
    if len(ex):
        r = ex.iloc[0]
        sub = fr[(fr["frontier"] == f"P={int(r['P'])}") & (fr["kind"] == "dmft_corner")]
        f0 = float(np.sqrt(sub["compute"].min() * sub["compute"].max()))
        e0 = float(np.interp(np.log(f0), np.log(sub["compute"]), np.log(sub["E_g_dmft"])))
        ff = np.geomspace(f0 / 300, f0 * 300, 8)
        ax.plot(ff, 1.6 * math.exp(e0) * (ff / f0) ** r["derived"], color="crimson", ls="--", lw=1.2,
                label=f"derived slope {r['derived']:.3g} (fit at P = {int(r['P'])}: {r['fitted']:.3f} "
                      f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}])")
    ax.set(xscale="log", yscale="log", xlabel="compute f (multiply-adds)",
           title="frontiers (points: experiment at DMFT-optimal N, t)")
    ax.legend(fontsize=5.8, loc="lower left")
    first = ok.iloc[0]
    S = int(pts["n_seeds"].median())
    fig.suptitle(f"Compute-optimal frontier, power-law task $\\alpha$ = {first['data.alpha']:g}, $\\beta$ = "
                 f"{first['data.beta']:g}, no label noise: lines DMFT at the evaluated times, points mean $\\pm$ SE "
                 f"over {S} seeds x {int(first['ensemble.datasets'])} data sets (every 2nd evaluation)", fontsize=8.5)
    return save_figure(fig, out_dir, "pareto", dpi)


def main(argv=None) -> int:
    p = parser(STUDY, __doc__)
    p.add_argument("--no-reference", action="store_true",
                   help="skip the rfscaling.theory.frontier reference curve (saves ~10-20 s)")
    a = p.parse_args(argv)
    sweep = resolve_sweep(STUDY, a.sweep_dir)
    res = analyze(sweep, a.out, a.dpi, reference=not a.no_reference)
    for key, s in res["agreement"].items():
        print(f"{key:<24} corners {s['corners']:>3}: |z| max {fmt(s['z_max_abs'], 2)}, rms {fmt(s['z_rms'], 2)}, "
              f"mean z {fmt(s['z_mean'], 2)}, {100 * (s['within_2'] or 0):.0f}% within 2 SE, "
              f"{100 * (s['within_2se_plus_finite_size'] or 0):.0f}% within 2 SE + {100 * FINITE_SIZE:g}%; |rel. dev.| median "
              f"{100 * (s['rel_dev_median_abs'] or 0):.1f}%, max {100 * (s['rel_dev_max_abs'] or 0):.1f}%")
    for r in res["exponents"]:
        print(f"{r['regime']} P={r['P']}: {r['law']} derived {r['derived']:.3f}, fitted {r['fitted']:.3f} "
              f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}], DMFT same corners {r['engine_same_points']:.3f} [{r['window']}]")
    if res["lambda_max_measured_over_de_edge"]:
        print("lambda_max measured / DE edge: " + ", ".join(f"P={k}: {v:.3f}" for k, v in
                                                             res["lambda_max_measured_over_de_edge"].items()))
    print(f"figures and tables: {Path(res['figures'][0]).parent if res['figures'] else a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
