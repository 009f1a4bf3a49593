"""Learning-rate study: gradient descent at several step sizes against the discrete-time DMFT.

    python -m analysis learning_rate [SWEEP_DIR] [--out DIR]

Input: a sweep of ``experiment=learning_rate`` (one condition per ``dynamics.dt``, several seeds).
Writes into ``<sweep>/analysis/``:

* ``learning_rate.png|pdf`` -- (a) E_g against the number of steps per step size: experiment
  (mean +- SE over seeds) and the discrete-time DMFT; (b) the early-stopping optimum against
  eta lambda_edge: t* (time) and n* (steps) of the DMFT, the hook's stop; (c) the optimal error
  E_g* and the best error within a fixed budget of steps (fixed compute) against eta lambda_edge;
  (d) the edge of stability: the fraction of sampled data sets whose top Hessian eigenvalue makes
  the step unstable (eta lambda_max >= 2), per data set and per run of ``ensemble.datasets``;
* ``learning_rate_conditions.csv|md`` -- per step size: DMFT and hook optimum, curve agreement;
* ``learning_rate_theory.csv`` -- the DMFT optimum and fixed-budget errors on a fine grid of eta;
* ``results.json``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from analysis.common import load_successful, output_dir, parser, resolve_sweep, save_figure, setup_matplotlib
from analysis.common import write_results, write_table

STUDY = "learning_rate"
BUDGETS = (100, 1000)          # fixed compute: steps (each step costs 2 P N per member)
N_SPECTRA = 1000               # sampled data sets for the edge of stability (~5 s at P = 128, N = 1024)


def discrete_curve(lam, w2, P, eta, n_max, noise, n_points=300):
    """(steps, E_g) of the discrete-time DMFT at log-spaced step counts 1 ... n_max."""
    from rfscaling.theory import predict

    n = np.unique(np.round(np.geomspace(1, n_max, n_points)))
    pred = predict(lam, w2, P, n * eta, label_noise=noise, learning_rate=eta)
    return n, np.asarray(pred.generalization_error)


def grid_minimum(n, e):
    """(n*, E*) of a sampled curve: the grid minimum refined by a parabola in (log n, log E) through
    it and its neighbours (the step count is then not an integer; its resolution ~1e-3)."""
    i = int(np.argmin(e))
    if 0 < i < n.size - 1:
        x, y = np.log(n[i - 1:i + 2]), np.log(e[i - 1:i + 2])
        c2, c1, c0 = np.polyfit(x, y, 2)
        if c2 > 0:
            xm = -c1 / (2 * c2)
            return float(np.exp(xm)), float(np.exp(c0 + c1 * xm + c2 * xm * xm))
    return float(n[i]), float(e[i])


def theory_scan(lam, w2, P, edge, t_max, noise, fractions):
    """DMFT optimum (n*, t*, E_g*) and the best error within each budget of steps, per eta."""
    rows = []
    for f in fractions:
        eta = f / edge
        n, e = discrete_curve(lam, w2, P, eta, max(2.0, t_max / eta), noise, 400)
        ns, es = grid_minimum(n, e)
        row = {"eta_edge": f, "eta": eta, "n_star": ns, "t_star": ns * eta, "E_g_star": es}
        for b in BUDGETS:
            row[f"E_g_best_{b}_steps"] = float(e[n <= b].min())
        rows.append(row)
    return rows


def top_eigenvalues(lam, P, n, seed=0):
    """Top eigenvalue of X^T X for ``n`` sampled data sets (via the P x P Gram)."""
    rng = np.random.default_rng(seed)
    s = np.sqrt(lam)
    out = np.empty(n)
    for i in range(n):
        X = rng.standard_normal((P, lam.size)) * s
        out[i] = np.linalg.eigvalsh(X @ X.T)[-1]
    return out


def analyze(sweep_dir: Path, out: Optional[Path] = None, dpi: int = 200, plot: bool = True) -> dict:
    import pandas as pd

    from rfscaling.studies.runs import curve_average, load_curves
    from rfscaling.studies.theory import condition
    from rfscaling.theory.frontier import top_edge, top_outlier

    runs, ok = load_successful(sweep_dir)
    by = ["dynamics.dt"]
    avg = curve_average(runs, load_curves(runs), by)
    first = ok.iloc[0].to_dict()
    cond = condition(first)
    lam, w2, _ = cond.task()
    P, noise, t_max = cond.P, cond.label_noise, float(first["dynamics.t_max"])
    edge, typical = top_edge(lam, P), top_outlier(lam, P)
    D = int(first["ensemble.datasets"])
    out_dir = output_dir(sweep_dir, out)

    scan = pd.DataFrame(theory_scan(lam, w2, P, edge, t_max, noise, np.round(np.linspace(0.05, 1.99, 40), 4)))
    lmax = top_eigenvalues(lam, P, N_SPECTRA)
    fr = np.linspace(0.05, 2.3, 200)
    p_unstable = np.array([np.mean(f / edge * lmax >= 2.0) for f in fr])

    rows, curves = [], []
    for dt, g in ok.groupby("dynamics.dt", sort=True):
        a = avg[avg["dynamics.dt"] == dt].sort_values("eval")
        n, e = discrete_curve(lam, w2, P, dt, t_max / dt, noise)
        ns, es = grid_minimum(n, e)
        es_t = pd.to_numeric(g["early_stopping.stopping_time"], errors="coerce").to_numpy(float)
        es_e = pd.to_numeric(g["early_stopping.E_g"], errors="coerce").to_numpy(float)
        S = len(g)
        z = a["E_g_z"].to_numpy(float)
        rel = (a["E_g_dev"] / a["E_g_theory"]).to_numpy(float)
        step = a["step"].to_numpy(float)
        rows.append({"dt": dt, "eta_edge": dt * edge, "seeds": S, "n_star_dmft": ns,
                     "t_star_dmft": ns * dt, "E_g_star_dmft": es,
                     "hook_steps": float(np.exp(np.mean(np.log(es_t / dt)))),
                     "hook_time": float(np.exp(np.mean(np.log(es_t)))),
                     "hook_E_g": float(np.mean(es_e)), "hook_E_g_se": float(np.std(es_e, ddof=1) / math.sqrt(S)),
                     "E_g_rel_dev_step1": float(rel[step == 1][0]) if np.any(step == 1) else float("nan"),
                     "max_abs_z_E_g": float(np.nanmax(np.abs(z[step >= 1]))),
                     "max_abs_rel_E_g": float(np.nanmax(np.abs(rel[step >= 1]))),
                     "unstable_datasets_sampled": float(np.mean(dt * lmax >= 2.0))})
        curves.append((dt, a, n, e))
    cond_df = pd.DataFrame(rows)
    write_table(cond_df, out_dir, "learning_rate_conditions",
                ["eta_edge", "dt", "n_star_dmft", "hook_steps", "t_star_dmft", "hook_time", "E_g_star_dmft", "hook_E_g",
                 "hook_E_g_se", "E_g_rel_dev_step1", "max_abs_z_E_g", "max_abs_rel_E_g"])
    write_table(scan, out_dir, "learning_rate_theory")
    edge_stats = {f"unstable_fraction_at_{f:g}": float(np.mean(f / edge * lmax >= 2.0)) for f in (1.5, 1.8, 1.9, 2.0, 2.2)}
    files = _plot(curves, cond_df, scan, fr, p_unstable, D, edge, typical, cond, out_dir, dpi) if plot else []
    results = {"sweep_dir": str(sweep_dir), "jobs": len(runs), "ok": int(len(ok)), "lambda_edge": edge,
               "typical_top_eigenvalue": typical, "sampled_top_eigenvalue_mean": float(lmax.mean()),
               "sampled_top_eigenvalue_sd": float(lmax.std(ddof=1)), "sampled_top_eigenvalue_max": float(lmax.max()),
               "n_spectra": N_SPECTRA, **edge_stats, "conditions": cond_df.to_dict(orient="records"),
               "figures": [str(p) for p in files]}
    write_results(out_dir, results)
    for r in rows:
        print(f"eta lambda_edge = {r['eta_edge']:.2f}: n* DMFT {r['n_star_dmft']:.0f}, hook {r['hook_steps']:.0f} steps; "
              f"E_g* DMFT {r['E_g_star_dmft']:.4g}, hook {r['hook_E_g']:.4g} +- {r['hook_E_g_se']:.2g}; "
              f"step 1 {100 * r['E_g_rel_dev_step1']:+.1f} %, max |z| {r['max_abs_z_E_g']:.1f}")
    print("unstable data sets (sampled):", ", ".join(f"{k[20:]}: {v:.3f}" for k, v in edge_stats.items()))
    print(f"figures and tables: {out_dir}")
    return results


def _plot(curves, hooks, scan, fr, p_unstable, D, edge, typical, cond, out_dir, dpi):
    plt = setup_matplotlib()
    fig, ax = plt.subplots(1, 4, figsize=(15.5, 3.9), layout="constrained")
    cmap = plt.get_cmap("viridis")
    for j, (dt, a, n, e) in enumerate(curves):
        col = cmap(0.1 + 0.8 * j / max(1, len(curves) - 1))
        st = a["step"].to_numpy(float)
        good = st >= 1
        ax[0].plot(n, e, color=col, lw=1.2, label=f"$\\eta \\lambda_{{edge}}$ = {dt * edge:.2g}")
        ax[0].errorbar(st[good], a["E_g"].to_numpy(float)[good], yerr=a["E_g_se"].to_numpy(float)[good], fmt="o",
                       ms=2.6, mfc="white", color=col, lw=0, elinewidth=0.7)
    ax[0].set(xscale="log", yscale="log", xlabel="steps n", ylabel="$E_g$",
              title="(a) $E_g$ vs steps: DMFT lines, experiment points")
    ax[0].legend(fontsize=6.5)
    f = scan["eta_edge"].to_numpy(float)
    ax[1].plot(f, scan["t_star"], color="black", label="$t^*$ (time)")
    ax1b = ax[1].twinx()
    ax1b.plot(f, scan["n_star"], color="tab:red", ls="--", label="$n^*$ (steps)")
    ax[1].errorbar(hooks["eta_edge"], hooks["hook_time"], fmt="D", ms=4, color="crimson", mfc="gold", mec="black",
                   label="hook (experiment)")
    ax[1].set(xlabel="$\\eta\\, \\lambda_{edge}$", ylabel="$t^* = n^* \\eta$", title="(b) early-stopping optimum")
    ax[1].legend(fontsize=7, loc="center left")
    ax1b.set_ylabel("$n^*$", color="tab:red")
    ax1b.set_yscale("log")
    ax[2].plot(f, scan["E_g_star"], color="black", label="$E_g^*$ (any number of steps)")
    ax[2].errorbar(hooks["eta_edge"], hooks["hook_E_g"], yerr=hooks["hook_E_g_se"], fmt="D", ms=4, color="crimson",
                   mfc="gold", mec="black", label="hook (experiment)")
    for b, ls in zip(BUDGETS, (":", "--")):
        ax[2].plot(f, scan[f"E_g_best_{b}_steps"], color="tab:blue", ls=ls, label=f"best within {b} steps")
    ax[2].set(yscale="log", xlabel="$\\eta\\, \\lambda_{edge}$", ylabel="$E_g$", title="(c) optimum at fixed compute")
    ax[2].legend(fontsize=7)
    ax[3].plot(fr, p_unstable, color="black", label="one data set")
    ax[3].plot(fr, 1 - (1 - p_unstable) ** D, color="tab:orange", label=f"a run of {D} data sets")
    ax[3].axvline(2.0, color="crimson", lw=0.8, ls=":", label="typical-spectrum edge (DMFT)")
    ax[3].axvline(2.0 * edge / typical, color="0.5", lw=0.8, ls="--", label="2 / typical top eigenvalue")
    ax[3].set(xlabel="$\\eta\\, \\lambda_{edge}$", ylabel="fraction unstable ($\\eta \\lambda_{max} \\geq 2$)",
              title=f"(d) edge of stability ({N_SPECTRA} data sets)")
    ax[3].legend(fontsize=6.5)
    fig.suptitle(f"Learning rate: P = {cond.P}, N = {cond.N}, $\\alpha$ = {cond.alpha:g}, $\\beta$ = {cond.beta:g}, "
                 f"$\\sigma^2$ = {cond.label_noise:g}; $\\lambda_{{edge}}$ = {edge:.1f}", fontsize=9)
    return save_figure(fig, out_dir, "learning_rate", dpi)


def main(argv=None) -> int:
    args = parser(STUDY, __doc__).parse_args(argv)
    analyze(resolve_sweep(STUDY, args.sweep_dir), args.out, args.dpi)
    return 0


if __name__ == "__main__":
    sys.exit(main())
