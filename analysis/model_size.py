"""Model-size study: the random-projection student against the aligned (eigenfeature) student.

    python -m analysis model_size [SWEEP_DIR] [--out DIR]     # a sweep of experiment=model_size
    python -m analysis.model_size --theory [--out DIR] [--quick]

The sweep (conf/experiment/model_size.yaml: both students, beta = 1 and 3, N = 8 ... 256, P = 4096,
noiseless gradient flow to t = 1e6, exact integrator) gives E_g(N) at t -> inf per student and
beta: ``model_size_sweep.png|pdf``, ``exponents.csv|md`` (OLS of log E_g on log N weighted by the
standard errors over seeds, 95 % interval rescaled by the scatter; the DMFT fitted on the same
points; the derived exponent) and ``results.json`` in ``<sweep>/analysis/``.

``--theory`` (no sweep):

Theory (``rfscaling.theory.predict``, with ``n_features=N`` for the projected student; docs/theory.md
sections 8 and 9) plus an exact Monte Carlo of the one quantity that sets the projected model-size
law, the teacher power outside the span of the N random features (tau^2 = u^T (1 - Pi) u, per draw of
A, no approximation). Three parts, alpha = 1:

1. E_g against N at t = inf, P = 1000 N (model-limited), for beta = 0.5, 1, 1.5 (hard, beta < 1 + alpha)
   and beta = 3, 5 (easy): local-exponent bands (``fit_power_law(method="local")``) against the
   derived min(beta, 1 + alpha) (projected) and beta (aligned), and the published claims
   min(beta, 2 + 2 alpha) (Bordelon, Atanasov & Pehlevan 2024, as summarised) and min(beta, 1 + alpha)
   (Paquette et al. 2024, 4+3 phases, mapped).
2. Monte Carlo of tau^2(N) (M = 2048, beta = 3): OLS slope with a 95 % CI, and the theory's values.
3. The compute-optimal frontier over (N, t) at fixed P = 1e5: compute f = 2 P N t lambda_max with
   lambda_max = P lam_1 (the outlier, docs/theory.md section 7); Pareto corners; OLS slopes of
   N*, t*, E* against f (95 % CI) next to the derived ones.

Writes ``model_size.png`` (docs/figures by default) and ``model_size.json``; prints the tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rfscaling.theory import power_law_task, predict
from rfscaling.theory.frontier import pareto_frontier
from rfscaling.theory.scaling import fit_power_law

ALPHA = 1.0
BETAS = (0.5, 1.0, 1.5, 3.0, 5.0)


def model_size_curves(Ns, M, betas=BETAS, alpha=ALPHA, p_factor=1000):
    """E_g(N) at t = inf, P = p_factor N, projected and aligned; local-exponent fits."""
    out = {}
    for beta in betas:
        lam, w2 = power_law_task(M, alpha, beta)
        proj, alig = [], []
        for N in Ns:
            P = p_factor * int(N)
            proj.append(predict(lam, w2, P, [np.inf], n_features=int(N)).generalization_error[0])
            tail = float(np.sum(lam[N:] * w2[N:]))
            alig.append(predict(lam[:N], w2[:N], P, [np.inf], tail_power=tail).generalization_error[0])
        proj, alig = np.array(proj), np.array(alig)
        fp = fit_power_law(Ns, proj, method="local", decades=1.0)
        fa = fit_power_law(Ns, alig, method="local", decades=1.0)
        out[beta] = dict(N=list(map(int, Ns)), projected=proj.tolist(), aligned=alig.tolist(),
                         fit_projected=(fp.p, *fp.ci), fit_aligned=(fa.p, *fa.ci),
                         derived_projected=min(beta, 1 + alpha), derived_aligned=beta,
                         claim_bap=min(beta, 2 + 2 * alpha), claim_paquette=min(beta, 1 + alpha))
    return out


def tau2_monte_carlo(Ns, M=2048, beta=3.0, alpha=ALPHA, draws=20, seed=0):
    """Exact tau^2 = u^T (1 - Pi) u per draw of A (u = Lam^1/2 wstar, wstar_k = sqrt(W_k)), its mean
    and standard error over draws, the theory's tau^2 = sum lam W b(kappa_N), and an OLS fit."""
    from rfscaling.theory.kappa import kappa_at_zero

    lam, w2 = power_law_task(M, alpha, beta)
    u = np.sqrt(lam * w2)
    rng = np.random.default_rng(seed)
    mean, se, theory = [], [], []
    for N in Ns:
        vals = []
        for _ in range(draws):
            Y = np.sqrt(lam)[:, None] * rng.standard_normal((M, N))  # columns span Lam^1/2 F
            Q, _ = np.linalg.qr(Y)
            vals.append(float(u @ u - np.sum((Q.T @ u) ** 2)))
        mean.append(np.mean(vals))
        se.append(np.std(vals, ddof=1) / np.sqrt(draws))
        kN = kappa_at_zero(lam, int(N))
        theory.append(float(np.sum(lam * w2 * kN / (kN + lam))))
    fit = fit_power_law(Ns, mean, np.array(se), method="ols")
    return dict(N=list(map(int, Ns)), mc=mean, se=se, theory=theory, fit=(fit.p, *fit.ci),
                derived=min(beta, 1 + alpha), claim_bap=min(beta, 2 + 2 * alpha))


def frontier(beta, P, M, Ns, times, projected, alpha=ALPHA, lam_1=1.0):
    """Pareto corners of E_g over (N, t) at fixed P against f = 2 P N t (P lam_1)."""
    lam, w2 = power_law_task(M, alpha, beta)
    f, E, NN, TT = [], [], [], []
    for N in Ns:
        if projected:
            pr = predict(lam, w2, P, times, n_features=int(N))
        else:
            pr = predict(lam[:N], w2[:N], P, times, tail_power=float(np.sum(lam[N:] * w2[N:])))
        f.append(2.0 * P * N * times * P * lam_1)
        E.append(pr.generalization_error)
        NN.append(np.full(times.size, N))
        TT.append(times)
    f, E, NN, TT = (np.concatenate(a) for a in (f, E, NN, TT))
    c = pareto_frontier(f, E)
    # corners where the optimal N is interior to the grid (not the smallest or largest N)
    inner = c[(NN[c] > Ns[1]) & (NN[c] < Ns[-2])]
    fits = {}
    for name, y in (("N*", NN[inner]), ("t*", TT[inner]), ("E*", E[inner])):
        fit = fit_power_law(f[inner], y, method="ols")
        fits[name] = (-fit.p, -fit.ci[1], -fit.ci[0])  # signed slope and its CI
    return dict(f=f[c].tolist(), E=E[c].tolist(), N=NN[c].tolist(), t=TT[c].tolist(), fits=fits,
                n_inner=int(inner.size))


def derived_frontier(beta, alpha=ALPHA, projected=True):
    """Signed slopes of N*, t*, E* against f (docs/studies.md section 5).

    Aligned, or projected with beta < 1 + alpha: E ~ N^-m + tau^-r (m = beta, r = beta/(1+alpha)),
    optimised at fixed N tau: tau* ~ F^(m/(m+r)), N* ~ F^(r/(m+r)), E* ~ F^(-m r/(m+r)).
    Projected with beta > 1 + alpha: the cross term tau^(-alpha/(1+alpha))/N (measured) dominates the
    model term: balancing it with tau^-r gives tau* ~ F^((1+alpha)/(1+beta)), N* ~ F^((beta-alpha)/(1+beta)),
    E* ~ F^(-beta/(1+beta))."""
    if projected and beta > 1 + alpha:
        return {"N*": (beta - alpha) / (1 + beta), "t*": (1 + alpha) / (1 + beta), "E*": -beta / (1 + beta)}
    m, r = beta, beta / (1 + alpha)
    return {"N*": r / (m + r), "t*": m / (m + r), "E*": -m * r / (m + r)}


def cross_term(beta=3.0, alpha=ALPHA, M=10**5, P=10**6, Ns=(100, 300, 1000, 3000)):
    """E_projected(N, t) - E_aligned(M modes, t) - E_projected(N, inf) against tau = P t: times N."""
    lam, w2 = power_law_task(M, alpha, beta)
    times = np.geomspace(1e-5, 1e-1, 9)
    aligned = predict(lam, w2, P, times).generalization_error
    rows = {}
    for N in Ns:
        p = predict(lam, w2, P, np.append(times, np.inf), n_features=int(N)).generalization_error
        rows[int(N)] = ((p[:-1] - aligned - p[-1]) * N).tolist()
    return {"tau": (P * times).tolist(), "cross_times_N": rows}


def plot(res, out: Path):
    from analysis.common import setup_matplotlib

    plt = setup_matplotlib()
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4))
    for i, (beta, d) in enumerate(res["model_size"].items()):
        col = f"C{i}"
        ax[0].loglog(d["N"], d["projected"], "-o", ms=3, color=col, label=f"beta={beta} projected")
        ax[0].loglog(d["N"], d["aligned"], "--", color=col, label=f"beta={beta} aligned")
    ax[0].set(xlabel="N", ylabel="E_g (t = inf, P = 1000 N)", title="model size, alpha = 1")
    ax[0].legend(ncol=1, fontsize=6)
    m = res["tau2_mc"]
    ax[1].errorbar(m["N"], m["mc"], yerr=m["se"], fmt="o", ms=3, label="MC tau^2 (exact per A)")
    ax[1].loglog(m["N"], m["theory"], "-", label="theory tau^2")
    n = np.array(m["N"], float)
    ax[1].loglog(n, m["theory"][0] * (n / n[0]) ** -2.0, ":", label="N^-2 (1+alpha)")
    ax[1].loglog(n, m["theory"][0] * (n / n[0]) ** -3.0, ":", label="N^-3 (beta)")
    ax[1].set(xscale="log", yscale="log", xlabel="N", ylabel="tau^2", title="beta = 3: teacher power outside span")
    ax[1].legend(fontsize=6)
    for key, ls in (("projected", "-"), ("aligned", "--")):
        for beta, d in res["frontier"][key].items():
            ax[2].loglog(d["f"], d["E"], ls, label=f"{key} beta={beta}")
    ax[2].set(xlabel="compute f", ylabel="E_g frontier", title="compute-optimal frontier, P = 1e5")
    ax[2].legend(fontsize=6)
    fig.tight_layout()
    for ext in ("png",):
        fig.savefig(out / f"model_size.{ext}", dpi=130)


STUDY = "model_size"


def analyze(sweep_dir: Path, out=None, dpi: int = 200) -> dict:
    """Exponents of E_g(N) at the last evaluation (t = t_max) per student and beta, from a sweep."""
    import pandas as pd

    from analysis.common import load_successful, output_dir, save_figure, setup_matplotlib, write_results, write_table
    from rfscaling.studies.runs import seed_average

    runs, ok = load_successful(sweep_dir)
    out_dir = output_dir(sweep_dir, out)
    fin = seed_average(runs, ["model.kind", "data.beta", "model.N"], ["final.E_g", "final.E_g_theory"])
    write_table(fin, out_dir, "model_size_final")
    alpha = float(ok["data.alpha"].iloc[0])
    rows = []
    plt = setup_matplotlib()
    fig, ax = plt.subplots(1, 1, figsize=(4.6, 3.6))
    for i, ((kind, beta), g) in enumerate(fin.groupby(["model.kind", "data.beta"], sort=True)):
        g = g.sort_values("model.N")
        if len(g) < 3:  # a reduced sweep: nothing to fit
            continue
        N, E, se, th = (g[c].to_numpy(float) for c in ("model.N", "final.E_g", "final.E_g_se", "final.E_g_theory"))
        sig = se if np.all(np.isfinite(se) & (se > 0)) else None
        fe = fit_power_law(N, E, sigma=sig, method="ols", absolute_sigma=False)
        ft = fit_power_law(N, th, method="ols")
        derived = min(beta, 1 + alpha) if kind == "random_projection" else beta
        rows.append({"student": kind, "beta": beta, "derived": -derived, "fitted": fe.slope,
                     "ci_lo": fe.slope_ci[0], "ci_hi": fe.slope_ci[1], "dmft_same_points": ft.slope,
                     "ci_covers_derived": bool(fe.slope_ci[0] <= -derived <= fe.slope_ci[1]),
                     "claim_bap": -min(beta, 2 + 2 * alpha), "claim_paquette": -min(beta, 1 + alpha),
                     "N": f"{int(N.min())}-{int(N.max())}"})
        ls = "-" if kind == "random_projection" else "--"
        ax.errorbar(N, E, yerr=se, fmt="o", ms=3, color=f"C{i}", label=f"{kind}, beta={beta:g}")
        ax.plot(N, th, ls, color=f"C{i}", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="model size N", ylabel="E_g at t_max",
           title="model size: points experiment +- SE, lines DMFT")
    ax.legend(fontsize=6)
    fig.tight_layout()
    figs = save_figure(fig, out_dir, "model_size_sweep", dpi)
    ex = pd.DataFrame(rows)
    write_table(ex, out_dir, "exponents")
    res = {"exponents": rows, "figures": [str(f) for f in figs]}
    write_results(out_dir, res)
    return res


def main(argv=None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--theory" not in argv:
        from analysis.common import parser, resolve_sweep

        a = parser(STUDY, __doc__).parse_args(argv)
        res = analyze(resolve_sweep(STUDY, a.sweep_dir), a.out, a.dpi)
        for r in res["exponents"]:
            print(f"{r['student']:<18} beta={r['beta']:g}: E_g ∝ N^s, fitted {r['fitted']:+.3f} [{r['ci_lo']:+.3f}, "
                  f"{r['ci_hi']:+.3f}], DMFT same points {r['dmft_same_points']:+.3f}, derived {r['derived']:+.3f} "
                  f"(BAP claim {r['claim_bap']:+g}, 4+3 phases {r['claim_paquette']:+g}; N = {r['N']})")
        return 0
    argv.remove("--theory")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    Ns = np.unique(np.round(np.geomspace(30, 1000 if q else 3000, 9 if q else 11)).astype(int))
    res = {"model_size": model_size_curves(Ns, 10**5 if q else 10**6)}
    print("model size, t = inf, P = 1000 N: decay exponent of E_g in N, local band at the largest N")
    for beta, d in res["model_size"].items():
        print(f"  beta={beta}: projected {d['fit_projected'][0]:.3f} [{d['fit_projected'][1]:.3f}, "
              f"{d['fit_projected'][2]:.3f}] derived {d['derived_projected']}; aligned {d['fit_aligned'][0]:.3f} "
              f"derived {d['derived_aligned']}; claims BAP {d['claim_bap']}, Paquette {d['claim_paquette']}")
    res["tau2_mc"] = tau2_monte_carlo(np.array([8, 16, 32, 64, 128]), draws=10 if q else 30)
    m = res["tau2_mc"]
    print(f"MC tau^2 (beta=3): OLS exponent {m['fit'][0]:.3f} [{m['fit'][1]:.3f}, {m['fit'][2]:.3f}], derived "
          f"{m['derived']}, BAP claim {m['claim_bap']}; MC/theory - 1: "
          f"{np.round(np.array(m['mc']) / np.array(m['theory']) - 1, 3)}")
    res["cross"] = cross_term()
    c = res["cross"]
    lc = np.log(np.array(c["cross_times_N"][3000]))
    print("cross term (E_proj - E_aligned - E_proj(inf)) x N at tau = 10 ... 1e5: "
          + "; ".join(f"N={N}: {v[0]:.3f} ... {v[4]:.4f}" for N, v in c["cross_times_N"].items())
          + f"; slope in tau (N = 3000, tau 10-1e3): {(lc[4] - lc[0]) / np.log(100):.3f}")
    times = np.geomspace(1e-6, 1e-1 if q else 1.0, 40 if q else 60)
    fNs = np.unique(np.round(np.geomspace(10, 1000 if q else 3000, 12 if q else 16)).astype(int))
    res["frontier"] = {}
    for key in ("projected", "aligned"):
        res["frontier"][key] = {}
        for beta in (1.0, 3.0):
            d = frontier(beta, 10**5, 10**5, fNs, times, key == "projected")
            d["derived"] = derived_frontier(beta, projected=key == "projected")
            res["frontier"][key][beta] = d
            s = ", ".join(f"{k} {v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}] (derived {d['derived'][k]:+.3f})"
                          for k, v in d["fits"].items())
            print(f"frontier {key} beta={beta} ({d['n_inner']} inner corners): {s}")
    plot(res, out)
    (out / "model_size.json").write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {out / 'model_size.png'}, {out / 'model_size.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
