"""Minibatch noise against Langevin: the effective-temperature picture (docs/theory.md section 12).

    python -m analysis sgd_noise [SWEEP_DIR] [--out DIR]

Input: a sweep of ``experiment=sgd_noise`` (model=mlp; full-batch GD, minibatch SGD, SGLD; several
seeds; every dynamics of a seed trains the same networks on the same data sets). Writes into
``<sweep>/analysis/``:

* ``sgd_noise.png|pdf`` -- (a) E_g(t) of every dynamics (mean over seeds) and the DMFT of GD and
  of the SGLD runs; (b) the excess of each run over GD with the same seed (paired), against the
  prediction eta P E_train(t)/(2B) sum_k lam_k (1 - exp(-2 P lam_k t)) (x (P-B)/(P-1) without
  replacement) for SGD and the DMFT's excess for SGLD; (c) the excess per eigenmode at the last
  time, measured and predicted;
* ``sgd_noise.csv|md`` -- per condition: final E_g, E_train, measured and predicted excess, their
  ratio, and the isotropic T_eff of the learned modes; ``results.json``.
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

STUDY = "sgd_noise"


def label_of(row) -> str:
    name = row["dynamics.name"]
    if name == "sgd":
        rep = "with" if bool(row["dynamics.replacement"]) else "without"
        return f"SGD B={int(row['dynamics.batch_size'])} ({rep} repl.)"
    if name == "langevin":
        return f"SGLD T={row['dynamics.temperature']:g}"
    return "GD"


def _run(run_dir: str) -> dict:
    import pandas as pd

    m = pd.read_csv(Path(run_dir) / "metrics.csv")
    z = np.load(Path(run_dir) / "modes.npz")
    return {"t": m["time"].to_numpy(), "E_g": m["E_g"].to_numpy(), "E_g_theory": m["E_g_theory"].to_numpy(),
            "train": m["train_error"].to_numpy(), "modes": z["mode_error"], "lam": z["eigenvalues"]}


def predicted_excess(t, train, lam, P, eta, B, replacement):
    """(E_g excess over GD (T,), per mode at the last time (M,)) of docs/theory.md section 12."""
    factor = 1.0 if replacement else (P - B) / (P - 1)
    relax = 1.0 - np.exp(-2.0 * P * np.outer(t, lam))  # (T, M)
    per_mode = (eta * P * train / (2.0 * B) * factor)[:, None] * lam * relax
    return per_mode.sum(1), per_mode[-1]


def _conditions(ok):
    """{label: [(seed, run dict, row)]} and the GD runs by seed."""
    groups: dict[str, list] = {}
    for _, r in ok.iterrows():
        groups.setdefault(label_of(r), []).append((int(r["seed"]), _run(r["run_dir"]), r))
    gd = {seed: run for seed, run, _ in groups.get("GD", [])}
    return groups, gd


def _analyse(groups, gd) -> tuple[list[dict], dict]:
    rows, curves = [], {}
    for lab, runs in groups.items():
        ex, pred, pmode, emode, trains = [], [], [], [], []
        for seed, run, r in runs:
            base = gd[seed]
            ex.append(run["E_g"] - base["E_g"])
            emode.append(run["modes"][-1] - base["modes"][-1])
            trains.append(run["train"])
            P, eta = int(r["data.P"]), float(r["dt"])
            if r["dynamics.name"] == "sgd":
                p, pm = predicted_excess(run["t"], run["train"], run["lam"], P, eta, int(r["dynamics.batch_size"]),
                                         bool(r["dynamics.replacement"]))
            else:  # SGLD: the DMFT's own excess over GD; GD: zero
                p, pm = run["E_g_theory"] - base["E_g_theory"], np.full_like(run["lam"], np.nan)
            pred.append(p)
            pmode.append(pm)
        ex, pred = np.array(ex), np.array(pred)
        lam = runs[0][1]["lam"]
        t = runs[0][1]["t"]
        learned = 2 * P * lam * t[-1] > 1.0
        train_f = float(np.mean([tr[-1] for tr in trains]))
        r0 = runs[0][2]
        t_eff = (eta * P**2 * train_f * lam[learned].mean() / (2 * int(r0["dynamics.batch_size"]))
                 if r0["dynamics.name"] == "sgd" else float(r0["dynamics.temperature"]))
        se = ex.std(0, ddof=1) / np.sqrt(len(ex)) if len(ex) > 1 else np.full(ex.shape[1], np.nan)
        curves[lab] = {"t": t, "E_g": np.mean([r[1]["E_g"] for r in runs], 0), "excess": ex.mean(0), "excess_se": se,
                       "predicted": pred.mean(0), "mode_excess": np.mean(emode, 0), "mode_predicted": np.mean(pmode, 0),
                       "E_g_theory": runs[0][1]["E_g_theory"], "lam": lam}
        rows.append({"condition": lab, "seeds": len(runs), "E_g_final": float(curves[lab]["E_g"][-1]),
                     "E_train_final": train_f, "excess_final": float(ex.mean(0)[-1]), "excess_se": float(se[-1]),
                     "predicted_final": float(pred.mean(0)[-1]),
                     "ratio": float(ex.mean(0)[-1] / pred.mean(0)[-1]) if pred.mean(0)[-1] else float("nan"),
                     "T_eff_or_T": t_eff, "learned_modes": int(learned.sum())})
    return rows, curves


def _figure(curves, dpi, out):
    plt = setup_matplotlib()
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    cols = plt.cm.tab10(np.arange(len(curves)))
    for c, (lab, cv) in zip(cols, curves.items()):
        ax[0].loglog(cv["t"], cv["E_g"], "o", ms=2.5, color=c, label=lab)
        if lab == "GD" or lab.startswith("SGLD"):
            ax[0].loglog(cv["t"], cv["E_g_theory"], "-", color=c, lw=1)
        if lab == "GD":
            continue
        ax[1].errorbar(cv["t"], cv["excess"], yerr=cv["excess_se"], fmt="o", ms=2.5, color=c, label=lab)
        ax[1].plot(cv["t"], cv["predicted"], "-", color=c, lw=1)
        k = np.arange(1, cv["lam"].size + 1)
        ax[2].loglog(k, np.abs(cv["mode_excess"]), ".", ms=2, color=c, alpha=0.6)
        if np.isfinite(cv["mode_predicted"]).any():
            ax[2].loglog(k, cv["mode_predicted"], "-", color=c, lw=1)
    ax[0].set(xlabel="t", ylabel="$E_g$", title="(a) $E_g(t)$; lines: DMFT (GD, SGLD)")
    ax[1].set(xscale="log", xlabel="t", ylabel="$E_g - E_{g,GD}$ (same seed)",
              title="(b) excess over GD; lines: prediction (sec. 10) / DMFT")
    ax[2].set(xlabel="mode k", ylabel="|excess of mode k| at last t", title="(c) per mode; lines: prediction")
    ax[2].set_ylim(1e-8, None)
    ax[0].legend(fontsize=7)
    return save_figure(fig, out, STUDY, dpi)


def main(argv=None) -> int:
    args = parser(STUDY, __doc__).parse_args(argv)
    sweep = resolve_sweep(STUDY, args.sweep_dir)
    _, ok = load_successful(sweep)
    out = output_dir(sweep, args.out)
    groups, gd = _conditions(ok)
    if not gd:
        raise SystemExit(f"error: {sweep}: no gradient-descent run to compare with")
    rows, curves = _analyse(groups, gd)
    import pandas as pd

    df = pd.DataFrame(rows)
    write_table(df, out, STUDY)
    paths = _figure(curves, args.dpi, out)
    write_results(out, {"sweep": str(sweep), "conditions": rows, "figures": [str(p) for p in paths]})
    for r in rows:
        print(f"{r['condition']:<28} E_g {fmt(r['E_g_final'])}  E_train {fmt(r['E_train_final'])}  excess "
              f"{fmt(r['excess_final'])} +- {fmt(r['excess_se'])}  predicted {fmt(r['predicted_final'])}  "
              f"T_eff/T {fmt(r['T_eff_or_T'])}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
