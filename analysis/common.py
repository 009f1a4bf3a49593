"""Shared pieces of the study analyses: command line, output folder, figure style, saving.

Every analysis reads a finished sweep directory and writes, into ``<sweep dir>/analysis/`` (or
``--out``): figures as PNG and PDF, tables as CSV (and Markdown), and ``results.json`` with the
headline numbers. Nothing is trained or re-run: the inputs are the run files and the sweep index;
theory lines come from :mod:`rfscaling.theory` (milliseconds per curve).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

__all__ = ["parser", "resolve_sweep", "output_dir", "setup_matplotlib", "save_figure", "write_table",
           "write_results", "markdown_table", "fmt", "colors", "STUDIES_ROOT"]

#: Where the presets put their sweeps (hydra.sweep.dir of conf/experiment/*.yaml).
STUDIES_ROOT = Path("runs") / "studies"


def parser(study: str, doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m analysis {study}", description=doc.strip().splitlines()[0])
    p.add_argument("sweep_dir", nargs="?", type=Path, default=None,
                   help=f"sweep directory (default: the newest under {STUDIES_ROOT / study})")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <sweep_dir>/analysis)")
    p.add_argument("--dpi", type=int, default=200, help="PNG resolution")
    return p


def resolve_sweep(study: str, sweep_dir: Optional[Path]) -> Path:
    """The sweep to analyse: ``sweep_dir``, or the newest one of ``study`` under runs/studies."""
    if sweep_dir is not None:
        if not sweep_dir.is_dir():
            raise SystemExit(f"error: {sweep_dir}: not a directory")
        return sweep_dir
    root = STUDIES_ROOT / study
    cands = sorted((d for d in root.glob("*") if d.is_dir()), key=lambda d: d.stat().st_mtime) if root.is_dir() else []
    if not cands:
        raise SystemExit(f"error: no sweep under {root}; run `python -m rfscaling.train experiment={study}` first "
                         "or pass the sweep directory")
    return cands[-1]


def successful(runs):
    """The rows of a run table (``rfscaling.studies.runs.load_runs``) whose job finished."""
    from rfscaling.studies.sweep import FINISHED

    return runs[runs["status"].isin(FINISHED)]


#: Jobs named in the line on left-out jobs; more are counted only.
MAX_NAMED = 10


def left_out_line(runs, sweep_dir: Path) -> Optional[str]:
    """One line on the jobs that did not finish and are left out of an analysis (how many, and
    which with their status), e.g. ``warning: 2 of 12 jobs left out (did not finish): job 3
    killed, job 7 missing; see <sweep dir>/index.csv``; None when every job finished."""
    bad = runs[~runs.index.isin(successful(runs).index)]
    if bad.empty:
        return None
    named = [f"job {r.job} {r.status}" for r in bad.head(MAX_NAMED).itertuples()]
    more = f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
    return (f"warning: {len(bad)} of {len(runs)} jobs left out (did not finish): {', '.join(named)}{more}; "
            f"see {Path(sweep_dir) / 'index.csv'}")


def load_successful(sweep_dir: Path):
    """(all runs, finished runs) of a sweep; exits with one line when none finished, and says
    in one line on stderr which jobs are left out (:func:`left_out_line`)."""
    from rfscaling.studies.runs import load_runs

    runs = load_runs(sweep_dir)
    ok = successful(runs)
    if ok.empty:
        raise SystemExit(f"error: {sweep_dir}: no successful runs")
    line = left_out_line(runs, sweep_dir)
    if line:
        print(line, file=sys.stderr, flush=True)
    return runs, ok


def output_dir(sweep_dir: Path, out: Optional[Path]) -> Path:
    d = Path(out) if out is not None else Path(sweep_dir) / "analysis"
    d.mkdir(parents=True, exist_ok=True)
    return d


def setup_matplotlib():
    """Agg backend and a clean, publication-style default (returns pyplot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9.5, "legend.fontsize": 7.5,
        "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.25,
        "grid.linewidth": 0.5, "axes.spines.top": False, "axes.spines.right": False,
        "lines.linewidth": 1.4, "errorbar.capsize": 1.8, "lines.markersize": 4.0,
        "legend.frameon": False, "pdf.fonttype": 42,
    })
    return plt


def save_figure(fig, out_dir: Path, stem: str, dpi: int = 200) -> list[Path]:
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=dpi)
    fig.savefig(paths[1])
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def fmt(x, digits: int = 3) -> str:
    """Short number format for tables ('' for None/NaN)."""
    if x is None:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, str):
        return x
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "")
    return f"{x:.{digits}g}"


def markdown_table(df, columns: Optional[Iterable[str]] = None, digits: int = 3) -> str:
    cols = list(columns) if columns is not None else list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt(r[c], digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_table(df, out_dir: Path, stem: str, markdown_columns: Optional[Iterable[str]] = None) -> Path:
    """``<stem>.csv`` (all columns, full precision) and ``<stem>.md`` (selected columns, 3 digits)."""
    path = out_dir / f"{stem}.csv"
    df.to_csv(path, index=False)
    (out_dir / f"{stem}.md").write_text(markdown_table(df, markdown_columns))
    return path


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def write_results(out_dir: Path, results: dict) -> Path:
    path = out_dir / "results.json"
    path.write_text(json.dumps(_plain(results), indent=1) + "\n")
    return path


def colors(n: int, cmap: str = "viridis", lo: float = 0.05, hi: float = 0.85) -> list:
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    return [cm(lo + (hi - lo) * i / max(n - 1, 1)) for i in range(n)]


def plain_log_ticks(ax, which: str = "both", values=None) -> None:
    """Readable tick labels on log axes: plain numbers ('0.03', '256') at the major ticks (or at
    ``values`` on the x axis), no labels on the minor ones."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    def fmt_tick(v, _pos=None):
        if v <= 0:
            return ""
        if 1e-3 <= v < 1e4:
            return f"{v:g}"
        e = int(np.floor(np.log10(v) + 1e-9))
        m = v / 10**e
        return f"$10^{{{e}}}$" if abs(m - 1) < 1e-6 else f"${m:g}\\cdot10^{{{e}}}$"

    from matplotlib.ticker import LogLocator

    axes = [ax.xaxis, ax.yaxis] if which == "both" else [ax.xaxis if which == "x" else ax.yaxis]
    for axis in axes:
        if axis.get_scale() != "log":
            continue
        if values is not None and axis is ax.xaxis:
            axis.set_major_locator(FixedLocator(list(values)))
        else:
            lo, hi = (ax.get_xlim() if axis is ax.xaxis else ax.get_ylim())
            decades = np.log10(max(hi, 1e-300) / max(lo, 1e-300))
            subs = (1.0,) if decades > 2.5 else ((1.0, 2.0, 5.0) if decades > 0.8 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))
            axis.set_major_locator(LogLocator(base=10.0, subs=subs))
        axis.set_major_formatter(FuncFormatter(fmt_tick))
        axis.set_minor_formatter(NullFormatter())
