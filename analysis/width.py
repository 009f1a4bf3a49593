"""From lazy to rich: trained MLPs against the DMFT of their NTK at init, against width.

    python -m analysis width [SWEEP_DIR] [--out DIR]

Input: a sweep of ``experiment=width`` (model=mlp, widths x parameterisations x seeds, GD).
Writes into ``<sweep>/analysis/``:

* ``width.png|pdf`` -- (a) E_g(t) against the DMFT for each width (NTK parameterisation solid,
  mean-field dashed); (b) the deviation max_t |E_g / E_g,DMFT - 1| (t >= 20 steps, past the first
  steps where discrete GD and continuous time differ by O(dt lambda_max)) against width, with
  power-law fits; (c) the signed deviation at the last time: below 0, the network beats its
  initial kernel (feature learning helps), above 0 it does worse;
* ``width.csv|md`` -- per width and parameterisation (mean over seeds); ``results.json`` with the
  fitted exponents.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from analysis.common import (
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

STUDY = "width"
SKIP_STEPS = 20  # discrete-time transient (dt = 1/lambda_max): compare from this step on


def _run(run_dir: str) -> dict:
    import pandas as pd

    m = pd.read_csv(Path(run_dir) / "metrics.csv")
    return {k: m[c].to_numpy() for k, c in (("t", "time"), ("step", "step"), ("E_g", "E_g"), ("th", "E_g_theory"))}


def _table(ok) -> tuple[list[dict], dict]:
    rows, curves = [], {}
    for (param, width), g in ok.groupby(["model.parameterization", "model.N"]):
        runs = [_run(d) for d in g["run_dir"]]
        rel = [r["E_g"] / r["th"] - 1 for r in runs]
        late = runs[0]["step"] >= min(SKIP_STEPS, runs[0]["step"][-1])
        dev = [float(np.abs(x[late]).max()) for x in rel]
        final = [float(x[-1]) for x in rel]
        curves[(param, int(width))] = {"t": runs[0]["t"], "E_g": np.mean([r["E_g"] for r in runs], 0),
                                       "th": np.mean([r["th"] for r in runs], 0)}
        n = len(runs)
        rows.append({"parameterization": param, "width": int(width), "seeds": n, "max_rel_dev": float(np.mean(dev)),
                     "max_rel_dev_se": float(np.std(dev, ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                     "final_rel_dev": float(np.mean(final)),
                     "final_rel_dev_se": float(np.std(final, ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                     "E_g_final": float(curves[(param, int(width))]["E_g"][-1]),
                     "E_g_theory_final": float(curves[(param, int(width))]["th"][-1])})
    return rows, curves


def _fit(rows) -> dict:
    """Least-squares slope of log(deviation) against log(width), per parameterisation."""
    out = {}
    for param in sorted({r["parameterization"] for r in rows}):
        rs = sorted((r for r in rows if r["parameterization"] == param), key=lambda r: r["width"])
        x, y = np.log([r["width"] for r in rs]), np.log([r["max_rel_dev"] for r in rs])
        if len(rs) >= 2:
            slope, icpt = np.polyfit(x, y, 1)
            out[param] = {"exponent": float(slope), "prefactor": float(np.exp(icpt)),
                          "widths": [r["width"] for r in rs]}
    return out


def _figure(rows, curves, fits, dpi, out):
    plt = setup_matplotlib()
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    widths = sorted({w for _, w in curves})
    cols = dict(zip(widths, plt.cm.viridis(np.linspace(0.05, 0.85, len(widths)))))
    for (param, w), cv in curves.items():
        ls = "-" if param == "ntk" else "--"
        ax[0].loglog(cv["t"], cv["E_g"], ls, color=cols[w], lw=1.2, label=f"N={w} {param}")
        if param == "ntk" and w == widths[-1]:
            ax[0].loglog(cv["t"], cv["th"], ":", color="k", lw=1, label="DMFT (N=%d, ntk)" % w)
    for param, mk, c in (("ntk", "o", "tab:blue"), ("mean_field", "s", "tab:red")):
        rs = sorted((r for r in rows if r["parameterization"] == param), key=lambda r: r["width"])
        if not rs:
            continue
        w = np.array([r["width"] for r in rs])
        ax[1].errorbar(w, [r["max_rel_dev"] for r in rs], yerr=[r["max_rel_dev_se"] for r in rs], fmt=mk, color=c,
                       label=param)
        if param in fits:
            f = fits[param]
            ax[1].plot(w, f["prefactor"] * w ** f["exponent"], "-", lw=1, color=c,
                       label=f"fit: width^{f['exponent']:.2f}")
        ax[2].errorbar(w, [r["final_rel_dev"] for r in rs], yerr=[r["final_rel_dev_se"] for r in rs], fmt=mk,
                       color=c, label=param)
    ax[0].set(xlabel="t", ylabel="$E_g$", title="(a) $E_g(t)$; dotted: DMFT of the initial NTK")
    ax[1].set(xscale="log", yscale="log", xlabel="width N", ylabel="max$_t$ |$E_g/E_{g,DMFT}$ - 1|",
              title="(b) deviation from the kernel theory")
    ax[2].set(xscale="log", xlabel="width N", ylabel="$E_g/E_{g,DMFT}$ - 1 at the last t",
              title="(c) < 0: better than the initial kernel")
    ax[2].axhline(0, color="k", lw=0.6)
    ax[0].legend(fontsize=6, ncol=2)
    ax[1].legend()
    return save_figure(fig, out, STUDY, dpi)


def main(argv=None) -> int:
    args = parser(STUDY, __doc__).parse_args(argv)
    sweep = resolve_sweep(STUDY, args.sweep_dir)
    _, ok = load_successful(sweep)
    out = output_dir(sweep, args.out)
    rows, curves = _table(ok)
    fits = _fit(rows)
    import pandas as pd

    write_table(pd.DataFrame(rows), out, STUDY)
    paths = _figure(rows, curves, fits, args.dpi, out)
    write_results(out, {"sweep": str(sweep), "rows": rows, "fits": fits, "figures": [str(p) for p in paths]})
    for r in rows:
        print(f"{r['parameterization']:<11} N={r['width']:<5} max dev {fmt(r['max_rel_dev'])} final dev "
              f"{fmt(r['final_rel_dev'])} E_g {fmt(r['E_g_final'])} (DMFT {fmt(r['E_g_theory_final'])})")
    for p, f in fits.items():
        print(f"fit {p}: deviation ~ width^{f['exponent']:.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
