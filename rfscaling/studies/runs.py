"""Read the run directories of a sweep into pandas, and average them over seeds.

Nothing here trains or re-runs anything: everything comes from the files each run wrote
(``.hydra/config.yaml``, ``summary.json``, ``metrics.csv``) and the sweep index.

* :func:`load_runs` -- one row per job: the job's status and error (from the sweep index), its
  resolved config flattened to dotted columns (``data.P``, ``model.N``, ``dynamics.name``, ...),
  the summary numbers (``final.E_g``, ``early_stopping.stopping_time``, ``lambda_max``, ...).
* :func:`load_curves` -- ``metrics.csv`` of every successful run, long format, with the job
  number and the evaluation index.
* :func:`seed_average` / :func:`curve_average` -- mean and standard error over the seeds of each
  condition (every config key that varies, except ``seed``). Seeds are independent ensembles, so
  the standard error over seeds is an honest error bar for everything, including quantities a
  single run reports without one (the early-stopping time). Where a run also reports a
  within-run standard error over its data sets (``<q>_se`` columns), the two are combined
  (see :func:`curve_average`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "load_runs",
    "load_curves",
    "condition_keys",
    "seed_average",
    "curve_average",
    "flatten",
    "CURVE_QUANTITIES",
]

#: Quantities in metrics.csv that get averaged (each has a ``<q>_theory`` column).
CURVE_QUANTITIES = ("E_g", "bias", "variance", "train_error")


def _not_conditions() -> set[str]:
    """Config keys that never define a condition: the seed, where a run ran, and the fields that
    cannot change its results (``NOT_RESULT`` in rfscaling/config.py)."""
    from rfscaling.config import TrainConfig, as_dict

    every, results = (flatten(as_dict(TrainConfig(), results_only=r)) for r in (False, True))
    return {"seed", "device", "threads"} | (every.keys() - results.keys())


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {dotted.key: value}."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_config(job_dir: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return flatten(cfg) if isinstance(cfg, dict) else {}


def load_runs(sweep_dir: str | Path) -> "pd.DataFrame":  # noqa: F821
    """One row per job of the sweep in ``sweep_dir``.

    Columns: ``job``, ``status``, ``error``, ``run_dir``, the flattened config (``data.P``, ...),
    and the flattened summary prefixed by section (``final.E_g``, ``early_stopping.E_g``,
    ``lambda_max``, ``compute_macs``, ...). The index (``index.csv``) is used when present, else
    rebuilt from the job directories (:func:`rfscaling.studies.sweep.build_index`).
    """
    import pandas as pd

    from rfscaling.studies.sweep import build_index

    sweep_dir = Path(sweep_dir)
    index_json = sweep_dir / "index.json"
    idx = _read_json(index_json)
    rows = idx["jobs"] if idx and "jobs" in idx else build_index(sweep_dir)
    out = []
    for r in rows:
        job_dir = Path(r["run_dir"])
        if not job_dir.is_absolute() and not job_dir.exists():
            job_dir = sweep_dir / job_dir.name
        if not job_dir.exists():  # the sweep dir was moved: job dirs by their own name
            job_dir = sweep_dir / Path(r["run_dir"]).name
        row = {"job": r.get("job"), "status": r.get("status"), "error": r.get("error") or "",
               "run_dir": str(job_dir)}
        row.update(_read_config(job_dir))
        summary = _read_json(job_dir / "summary.json") if r.get("status") in ("ok", "skipped") else None
        if summary:
            flat = flatten({k: v for k, v in summary.items() if k not in ("problem", "seeds", "compute_definition")})
            row.update({k: v for k, v in flat.items() if not isinstance(v, (list, dict))})
        out.append(row)
    df = pd.DataFrame(out)
    if len(df):
        df = df.sort_values("job", kind="stable").reset_index(drop=True)
    return df


def load_curves(runs: "pd.DataFrame") -> "pd.DataFrame":  # noqa: F821
    """``metrics.csv`` of every run with status ok/skipped, stacked; columns of metrics.csv plus
    ``job``, ``run_dir`` (the key that identifies the run) and ``eval`` (the evaluation index)."""
    import pandas as pd

    parts = []
    for _, r in runs.iterrows():
        if r["status"] not in ("ok", "skipped"):
            continue
        path = Path(r["run_dir"]) / "metrics.csv"
        if not path.exists():
            continue
        m = pd.read_csv(path)
        m.insert(0, "eval", np.arange(len(m)))
        m.insert(0, "run_dir", r["run_dir"])
        m.insert(0, "job", r["job"])
        parts.append(m)
    if not parts:
        return pd.DataFrame(columns=["job", "run_dir", "eval", "time", "step", *CURVE_QUANTITIES])
    return pd.concat(parts, ignore_index=True)


def condition_keys(runs: "pd.DataFrame", exclude: Iterable[str] = ()) -> list[str]:  # noqa: F821
    """Config columns (dotted keys of .hydra/config.yaml) that vary across the successful runs,
    except the seed and bookkeeping keys: what distinguishes the conditions of a sweep."""
    ok = runs[runs["status"].isin(["ok", "skipped"])]
    cfg_cols = [c for c in ok.columns if "." in c and c.split(".")[0] in
                ("data", "model", "dynamics", "ensemble", "theory", "hooks")] + \
               [c for c in ("dtype",) if c in ok.columns]
    keys, not_conditions = [], _not_conditions()
    for c in cfg_cols:
        if c in not_conditions or c in exclude:
            continue
        vals = ok[c].map(lambda v: json.dumps(v, sort_keys=True, default=str))
        if vals.nunique() > 1:
            keys.append(c)
    return keys


def _se(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")


def seed_average(runs: "pd.DataFrame", by: Sequence[str], columns: Sequence[str]) -> "pd.DataFrame":  # noqa: F821
    """Per condition ``by``: ``<c>`` (mean over seeds), ``<c>_se`` (standard error over seeds) and
    ``n_seeds`` for every column in ``columns`` (runs with status ok/skipped only)."""
    import pandas as pd

    ok = runs[runs["status"].isin(["ok", "skipped"])]
    rows = []
    for key, g in ok.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        row["n_seeds"] = len(g)
        for c in columns:
            v = pd.to_numeric(g[c], errors="coerce").to_numpy(dtype=float) if c in g else np.array([np.nan])
            row[c] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            row[f"{c}_se"] = _se(v)
        rows.append(row)
    return pd.DataFrame(rows)


def curve_average(runs: "pd.DataFrame", curves: "pd.DataFrame", by: Sequence[str],  # noqa: F821
                  quantities: Sequence[str] = CURVE_QUANTITIES) -> "pd.DataFrame":  # noqa: F821
    """Average the metrics.csv curves of each condition ``by`` over its seeds, evaluation by
    evaluation.

    Runs of one condition evaluate at the same log-spaced *steps* but their times differ slightly
    (the step is 1/lambda_max of the drawn data); evaluation k is averaged over seeds with its
    mean time. If the runs have different numbers of evaluations, all are interpolated (log-log in
    time) onto the times of the first. Columns per quantity q: ``q`` (mean), ``q_se`` (standard
    error), ``q_theory`` (mean of the DMFT at the same times), ``q_dev`` and ``q_dev_se`` (mean and
    standard error of the per-seed deviation q - q_theory: the comparison with the DMFT at exactly
    the times each run was evaluated), ``q_z`` = q_dev / q_dev_se. Also ``time``, ``time_se``,
    ``step``, ``n_seeds``.

    Standard errors: over seeds when there are >= 2; if the runs also carry within-run standard
    errors (``q_se`` columns in metrics.csv), those are combined instead,
    sqrt(sum_s se_s^2) / S (more degrees of freedom), and used alone for a single seed.
    """
    import pandas as pd

    ok = runs[runs["status"].isin(["ok", "skipped"])]
    out = []
    for key, g in ok.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        cs = [curves[curves["run_dir"] == d].sort_values("eval") for d in g["run_dir"]]
        cs = [c for c in cs if len(c)]
        if not cs:
            continue
        S = len(cs)
        lengths = {len(c) for c in cs}
        ref_t = cs[0]["time"].to_numpy(dtype=float)

        def column(c, name, ref_t=ref_t, same=len(lengths) == 1):
            if name not in c:
                return np.full(len(ref_t), np.nan)
            v = c[name].to_numpy(dtype=float)
            if same:
                return v
            t = c["time"].to_numpy(dtype=float)
            return _loglog_interp(ref_t, t, v)

        times = np.stack([column(c, "time") if len(lengths) == 1 else ref_t for c in cs])
        n = times.shape[1]
        res = {k: [v] * n for k, v in zip(by, key)}
        res["n_seeds"] = [S] * n
        res["eval"] = np.arange(n)
        positive = np.all(times > 0, axis=0)
        mean_t = np.mean(times, axis=0)  # geometric mean where all times are > 0 (log-spaced grid)
        mean_t[positive] = np.exp(np.mean(np.log(times[:, positive]), axis=0))
        res["time"] = mean_t
        res["time_se"] = np.nanstd(times, axis=0, ddof=1) / math.sqrt(S) if S > 1 else np.full(n, np.nan)
        res["step"] = np.nanmean(np.stack([column(c, "step") for c in cs]), axis=0)
        for q in quantities:
            res.update(_quantity_stats(q, *(np.stack([column(c, name) for c in cs])
                                            for name in (q, f"{q}_theory", f"{q}_se"))))
        out.append(pd.DataFrame(res))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _seed_se(x: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Standard error of the seed mean of ``x`` (S, n): from the runs' own standard errors when
    they all have them (sqrt(sum se^2) / S, more degrees of freedom), else over seeds."""
    S, n = x.shape
    if np.isfinite(within).all():
        return np.sqrt(np.sum(within**2, axis=0)) / S
    return np.nanstd(x, axis=0, ddof=1) / math.sqrt(S) if S > 1 else np.full(n, np.nan)


def _quantity_stats(q: str, v: np.ndarray, th: np.ndarray, within: np.ndarray) -> dict:
    """The columns of quantity ``q`` (see :func:`curve_average`) from per-seed values ``v``,
    theory ``th`` and within-run standard errors ``within``, each (S, n)."""
    dm = np.nanmean(v - th, axis=0)
    dse = _seed_se(v - th, within)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = dm / dse
    return {q: np.nanmean(v, axis=0), f"{q}_se": _seed_se(v, within), f"{q}_theory": np.nanmean(th, axis=0),
            f"{q}_dev": dm, f"{q}_dev_se": dse, f"{q}_z": z}


def _loglog_interp(t_new: np.ndarray, t: np.ndarray, v: np.ndarray) -> np.ndarray:
    pos = (t > 0) & np.isfinite(v)
    out = np.full(t_new.shape, np.nan)
    if pos.sum() < 2:
        return out
    good = t_new > 0
    vv = v[pos]
    if np.all(vv > 0):
        out[good] = np.exp(np.interp(np.log(t_new[good]), np.log(t[pos]), np.log(vv)))
    else:
        out[good] = np.interp(np.log(t_new[good]), np.log(t[pos]), vv)
    zero = t_new == 0
    if zero.any() and (t == 0).any():
        out[zero] = v[t == 0][0]
    return out
