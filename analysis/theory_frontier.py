"""Theory compute-optimal frontier: figure, frontier CSV and the scaling-exponent table.

    python -m analysis.theory_frontier --alpha 1 --beta 1 --out runs/frontier

Writes into ``--out``:

* ``frontier.png``, ``frontier.pdf`` -- log-log E_g vs compute f = 2 P N t lambda_max(H): one
  colour per P, a thin line per model size N, the Pareto frontier of each P (thick, same colour)
  and over everything (thick, black), with the derived fixed-P slope for reference;
* ``frontier.csv`` -- the Pareto corners (column ``frontier``: ``P=<P>`` or ``global``) with the
  P, N, t that reach them; ``curves.csv`` -- every curve;
* ``exponents.csv``, ``exponents.md`` -- derived vs fitted exponents with confidence intervals,
  for every regime of docs/theory.md section 8 (``--table full|quick|none``), and the fitted
  exponents of the figure's own frontiers.

Definitions: docs/theory.md sections 7 (compute) and 8 (exponents).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "plot_frontier", "exponent_markdown"]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.theory_frontier", description=__doc__.split("\n")[0])
    p.add_argument("--alpha", type=float, default=1.0, help="spectrum exponent: lam_k = k^-(1+alpha)")
    p.add_argument("--beta", type=float, default=1.0, help="target exponent: lam_k E[wstar_k^2] = k^-(1+beta)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--P", type=_floats, default=[1e2, 1e3, 1e4, 1e5], help="sample sizes, e.g. '100,1000'")
    p.add_argument("--N", type=_floats, default=None,
                   help="model sizes (default: 2^2 .. 2^12, two per octave)")
    p.add_argument("--M", type=int, default=None, help="teacher modes (default: infinite teacher)")
    p.add_argument("--label-noise", type=float, default=0.0, help="label-noise variance sigma^2")
    p.add_argument("--t-per-decade", type=int, default=10, help="time-grid density")
    p.add_argument("--edge", choices=("de", "outlier"), default="de",
                   help="lambda_max of the theory: deterministic-equivalent edge or typical outlier")
    p.add_argument("--table", choices=("quick", "full", "none"), default="full",
                   help="exponent table: engine checks per regime (full ~ 0.5-2 min, the published one; "
                        "quick ~ 5 s, narrower ranges: slow-converging laws may miss)")
    p.add_argument("--dpi", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    return p


def _t_grid(P_values, N_values, alpha, per_decade):
    P = np.asarray(P_values, dtype=float)
    lo = 0.01 / P.max()                                          # before the top mode moves
    hi = 10.0 * float(np.max(np.minimum(max(N_values), P) ** (1 + alpha) / P))   # all curves flat
    return np.geomspace(lo, hi, int(np.log10(hi / lo) * per_decade) + 1)


def plot_frontier(result, path_stem: Path, dpi: int = 200, reference_slope: float | None = None,
                  global_slope: float | None = None):
    """Write ``<stem>.png`` and ``<stem>.pdf``; returns the two paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cur = result.curves
    Ps = list(result.P_values)
    cmap = plt.get_cmap("viridis")
    colours = {P: cmap(0.1 + 0.75 * i / max(len(Ps) - 1, 1)) for i, P in enumerate(Ps)}
    fig, ax = plt.subplots(figsize=(6.4, 4.6), constrained_layout=True)
    for (P, N), sub in cur.groupby(["P", "N"]):
        ax.plot(sub["compute"], sub["E_g"], color=colours[P], lw=0.6, alpha=0.45)
    for P in Ps:
        fr = result.frontier_by_P[int(P)]
        ax.plot(fr["compute"], fr["E_g"], color=colours[P], lw=2.6, drawstyle="steps-post")
    g = result.frontier
    ax.plot(g["compute"], g["E_g"], color="black", lw=2.0, ls="--", drawstyle="steps-post")
    handles = [Line2D([], [], color=colours[P], lw=2.6, label=f"P = {int(P):,}") for P in Ps]
    handles.append(Line2D([], [], color="black", lw=2.0, ls="--", label="frontier over all P"))
    handles.append(Line2D([], [], color="grey", lw=0.6, label="one model size N per line"))
    def guide(fr, slope, colour, label):
        """A dotted line of the given slope, half a decade below the middle of frontier ``fr``."""
        e = fr["E_g"].to_numpy()
        f = fr["compute"].to_numpy()
        i = int(np.argmin(np.abs(np.log(e) - 0.5 * (np.log(e.max()) + np.log(e.min())))))
        ff = f[i] * np.array([10**-1.5, 10**1.5])
        ax.plot(ff, 0.35 * e[i] * (ff / f[i]) ** slope, color=colour, lw=1.3, ls=":")
        handles.append(Line2D([], [], color=colour, lw=1.3, ls=":", label=label))

    if reference_slope is not None:
        guide(result.frontier_by_P[int(Ps[-1])], reference_slope, "tab:red",
              f"∝ f^({reference_slope:.3g}): derived, fixed P")
    if global_slope is not None and len(Ps) > 1:
        guide(result.frontier, global_slope, "black", f"∝ f^({global_slope:.3g}): derived, over P")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"compute $f = 2PN\,t\,\lambda_{\max}(H)$  [multiply-adds]")
    ax.set_ylabel(r"generalization error $E_g$")
    noise = f", $\\sigma^2$ = {result.label_noise:g}" if result.label_noise > 0 else ""
    ax.set_title(rf"Compute-optimal frontier (theory): $\alpha$ = {result.alpha:g}, $\beta$ = {result.beta:g}{noise}",
                 fontsize=10)
    lo = max(float(cur["E_g"].min()) * 0.5, 1e-300)
    ax.set_ylim(lo, float(cur["E_g"].max()) * 1.5)
    # start where learning starts (E_g 10 % below its initial value on some curve)
    e0 = cur.groupby(["P", "N"])["E_g"].transform("max")
    moving = cur.loc[cur["E_g"] < 0.9 * e0, "compute"]
    if len(moving):
        ax.set_xlim(float(moving.min()) / 10.0, float(cur["compute"].max()) * 2.0)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="lower left")
    paths = []
    for ext in ("png", "pdf"):
        path = path_stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    plt.close(fig)
    return paths


def exponent_markdown(table) -> str:
    cols = ["regime", "law", "derived", "fitted", "CI", "agrees", "setting"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        if not np.isfinite(r["fitted"]):          # not measurable (see the setting)
            fitted, ci, agrees = "n/m", "", "n/m"
        else:
            fitted, ci = f"{r['fitted']:+.4f}", f"[{r['ci_lo']:+.4f}, {r['ci_hi']:+.4f}]"
            agrees = "yes" if r["agrees"] else "NO"
        lines.append(f"| {r['regime']} | {r['law']} | {r['derived']:+.4f} | {fitted} | {ci} | {agrees} | "
                     f"{r.get('setting', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import pandas as pd

    from rfscaling.theory.frontier import compute_optimal_exponents, frontier_exponents, theory_frontier
    from rfscaling.theory.scaling import exponent_table, predicted_exponents

    args = _parser().parse_args(argv)
    try:  # the engine's GEMMs are small: extra BLAS threads only cost time, a lot on shared CPUs
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=args.threads, user_api="blas")
    except ImportError:  # pragma: no cover
        pass
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    P_values = np.unique(np.asarray(args.P, dtype=int))
    N_values = (np.unique(np.round(2.0 ** np.arange(2, 12.01, 0.5)).astype(int)) if args.N is None
                else np.unique(np.asarray(args.N, dtype=int)))
    t = _t_grid(P_values, N_values, args.alpha, args.t_per_decade)
    t0 = time.time()
    res = theory_frontier(args.alpha, args.beta, P_values, N_values, t, label_noise=args.label_noise, M=args.M,
                          edge=args.edge)
    print(f"frontier: {len(P_values)} P x {len(N_values)} N x {t.size} times in {time.time() - t0:.1f} s")

    res.curves.to_csv(out / "curves.csv", index=False)
    frames = [res.frontier.assign(frontier="global")]
    frames += [res.frontier_by_P[int(P)].assign(frontier=f"P={int(P)}") for P in P_values]
    pd.concat(frames, ignore_index=True).to_csv(out / "frontier.csv", index=False)
    slope = [L.slope for L in predicted_exponents(args.alpha, args.beta, "compute") if L.y == "E_g"][0]
    gslope = [L.slope for L in predicted_exponents(args.alpha, args.beta, "compute_global") if L.y == "E_g"][0]
    paths = plot_frontier(res, out / "frontier", dpi=args.dpi, reference_slope=slope, global_slope=gslope)

    # exponents: clean asymptotic checks (engine deep in each regime), then this figure's frontiers
    keep = ["regime", "law", "derived", "fitted", "ci_lo", "ci_hi", "agrees", "setting"]
    clean = pd.DataFrame(columns=keep)
    if args.table != "none":
        t0 = time.time()
        clean = pd.concat([frontier_exponents(args.alpha, args.beta, size=args.table),
                           exponent_table(args.alpha, args.beta, size=args.table)], ignore_index=True)
        print(f"exponent checks ({args.table}) in {time.time() - t0:.1f} s")
    rows = []
    for P in list(P_values) + [None]:
        try:
            df = compute_optimal_exponents(res, P=None if P is None else int(P))
        except ValueError:
            continue
        df["setting"] = [("figure grid" + ("" if P is None else f", P={int(P)}") + f", N*/P up to {r:.2g}")
                         for r in df["max_N_over_P"]]
        rows.append(df)
    figure = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=keep)
    table = pd.concat([clean.assign(source="asymptotic check"), figure.assign(source="figure grid")],
                      ignore_index=True)
    table = table[[c for c in keep + ["source"] if c in table.columns]]
    table.to_csv(out / "exponents.csv", index=False)
    (out / "exponents.md").write_text(
        f"# Scaling exponents, alpha = {args.alpha:g}, beta = {args.beta:g}\n\n"
        "Signed exponents s of y ∝ x^s: derived (docs/theory.md section 8) vs fitted on the engine's curves,\n"
        "with the fit's interval (local-exponent band or windowed OLS, see rfscaling.theory.scaling).\n\n"
        "## Asymptotic checks (engine deep in each regime)\n\n" + exponent_markdown(clean)
        + "\n## Frontiers of the figure\n\nThe derived frontier exponents assume 1 << N* << P (fixed P) and "
        "beta < 2(1+alpha); where N*/P is not small the data limit bends the frontier.\n\n"
        + exponent_markdown(figure))
    print(exponent_markdown(table))
    for p in [*paths, out / "frontier.csv", out / "curves.csv", out / "exponents.csv", out / "exponents.md"]:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
