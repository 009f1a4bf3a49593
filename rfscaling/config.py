"""Configuration: Hydra structured-config schemas, frozen typed settings, and the edge between them.

Three layers, kept strictly apart:

1. **Schemas** (``*Config`` dataclasses below) are registered in Hydra's ConfigStore. They fix
   the key names and rough types of everything in ``conf/``; the YAML presets in ``conf/<group>/``
   are merged into them, so a misspelt key fails at composition time.
2. **Settings** (``*Settings`` frozen dataclasses) are what library code takes. They hold
   plain Python values (no OmegaConf objects), with ``null`` defaults already resolved.
3. **The edge**: :func:`settings_from_config` turns a composed ``DictConfig`` (or any mapping)
   into :class:`Settings`, checking every value and raising :class:`~rfscaling.errors.ConfigError`
   with one line naming the key, the value and what is allowed. Entry points call it once;
   library code never sees a config object.

Entry points: decorate the task function with :func:`rfscaling.app.hydra_app` (``@hydra_app("train")``)
to get Hydra on ``conf/<name>.yaml`` plus the apps' error boundary (one line, exit statuses).

Key tree (``conf/train.yaml``; ``conf/predict.yaml`` has the same groups minus ensemble/hooks,
plus top-level ``rows`` (table rows) and ``plot`` (write the PNG))::

    seed: int                      # >= 0
    device: auto|cpu|cuda|cuda:K   # auto -> cuda if available else cpu (resolved at the edge)
    dtype: float32|float64
    data:      P, alpha, beta, lam_1, c, label_noise, kind, target, teacher, pool_size, input_dim
    model:     N, kind, nonlinearity, M
    dynamics:  name, weight_decay, temperature, init_variance, dt, t_max, n_evals, integrator, max_stride
    ensemble:  datasets, replicas, estimate_variance
    theory:    enabled, modes
    hooks:     eigenmode, tensorboard, early_stopping{enabled,patience,halt},
               checkpoint{enabled,every}
    (experiment: optional preset group, ``# @package _global_``; null by default)

Units and conventions follow docs/theory.md: ``label_noise`` and ``init_variance`` are
variances, the loss is summed over samples, time is gradient-flow time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rfscaling.errors import ConfigError

__all__ = [
    # schemas
    "DataConfig",
    "ModelConfig",
    "DynamicsConfig",
    "EnsembleConfig",
    "TheoryConfig",
    "EarlyStoppingConfig",
    "CheckpointConfig",
    "HooksConfig",
    "TrainConfig",
    "PredictConfig",
    "register_configs",
    "GROUP_SCHEMAS",
    # typed settings
    "DataSettings",
    "ModelSettings",
    "DynamicsSettings",
    "EnsembleSettings",
    "TheorySettings",
    "EarlyStoppingSettings",
    "CheckpointSettings",
    "HooksSettings",
    "Settings",
    "settings_from_config",
    "resolve_device",
    # constants
    "DATA_KINDS",
    "TARGETS",
    "TEACHERS",
    "MODEL_KINDS",
    "NONLINEARITIES",
    "DYNAMICS",
    "DEVICES",
    "DTYPES",
    "REAL_DATA_SIZES",
    "CONF_DIR",
    # re-exported error helpers
    "ConfigError",
]

#: Absolute path of the repository's ``conf/`` directory (used as Hydra's config_path).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

DATA_KINDS = ("powerlaw_eigen", "gaussian_powerlaw", "digits", "mnist1d")
REAL_DATA_KINDS = ("digits", "mnist1d")
TARGETS = ("powerlaw_teacher", "teacher_network", "labels")
TEACHERS = ("fixed", "random")
MODEL_KINDS = ("eigenfeature", "random_features")
NONLINEARITIES = ("relu", "tanh", "erf", "identity")
DYNAMICS = ("gradient_flow", "weight_decay", "langevin", "bayes")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
INTEGRATORS = ("euler", "exact", "auto")
#: Number of samples available in each real data set (upper bound on data.pool_size).
#: digits: sklearn.datasets.load_digits (1797). mnist1d is generated, so it has no fixed cap.
REAL_DATA_SIZES = {"digits": 1797}
#: ``data.pool_size: null`` resolves to max(POOL_FACTOR * model.N, 2 * data.P), capped as above.
POOL_FACTOR = 4


# --------------------------------------------------------------------------------------------
# 1. Schemas (Hydra structured configs). Defaults here mirror the YAML presets.
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    P: int = 256  # number of training samples
    alpha: Optional[float] = 1.0  # > 0; lam_k = lam_1 k^-(1+alpha); null for real data
    beta: Optional[float] = 1.0  # > -1; lam_k E[wstar_k^2] = c k^-(1+beta); null for real data
    lam_1: float = 1.0
    c: float = 1.0
    label_noise: float = 0.0  # VARIANCE of the additive label noise
    kind: str = "powerlaw_eigen"  # powerlaw_eigen|gaussian_powerlaw|digits|mnist1d
    target: str = "powerlaw_teacher"  # powerlaw_teacher|teacher_network|labels
    teacher: str = "fixed"  # fixed|random (random: redrawn per data set)
    pool_size: Optional[int] = None  # real/input data: pool to draw P from; null -> 4 N
    input_dim: int = 64  # input dimension for gaussian_powerlaw inputs


@dataclass
class ModelConfig:
    N: int = 1024  # number of features / eigenmodes of the student
    kind: str = "eigenfeature"  # eigenfeature|random_features
    nonlinearity: str = "relu"  # relu|tanh|erf|identity (random_features only)
    M: Optional[int] = None  # total teacher modes (>= N); null means M = N


@dataclass
class DynamicsConfig:
    name: str = "gradient_flow"  # gradient_flow|weight_decay|langevin|bayes
    weight_decay: float = 0.0
    temperature: float = 0.0
    init_variance: float = 0.0
    dt: Optional[float] = None  # null: chosen for stability
    t_max: float = 1000.0
    n_evals: int = 40  # log-spaced evaluation times
    integrator: str = "euler"  # euler | exact | auto (exact when Euler would cost > 5e10 multiply-adds)
    max_stride: Optional[int] = None  # Euler without noise: steps per propagator product; null: by cost, 1: stepwise


@dataclass
class EnsembleConfig:
    datasets: int = 8  # independent draws of the training set (and random teacher)
    replicas: int = 4  # runs per data set with independent noise/init
    estimate_variance: bool = True  # split E_g into bias + variance (needs replicas >= 2)


@dataclass
class TheoryConfig:
    enabled: bool = True
    modes: bool = True


@dataclass
class EarlyStoppingConfig:
    enabled: bool = True
    patience: int = 5  # evaluations without improvement of the monitored error
    halt: bool = False  # stop training (true) or only record the optimum (false)
    validation_size: Optional[int] = None  # held-out samples per data set; null means P


@dataclass
class CheckpointConfig:
    enabled: bool = False
    every: int = 10  # evaluations between checkpoints


@dataclass
class BudgetConfig:
    max_evals: Optional[int] = None  # evaluations per process before a resumable stop; null: no limit
    max_wall_s: Optional[float] = None  # wall-clock seconds per process; null: no limit


@dataclass
class HooksConfig:
    eigenmode: bool = True  # per-eigenmode error tracking
    tensorboard: bool = True
    progress: bool = True  # tqdm progress bar
    image_every: int = 1  # per-mode image in TensorBoard every k evaluations
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass
class TrainConfig:
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    threads: Optional[int] = 1  # torch CPU threads; null: torch default (see docs/performance.md)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    theory: TheoryConfig = field(default_factory=TheoryConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)


@dataclass
class PredictConfig:
    seed: int = 0
    device: str = "cpu"  # unused by the theory; kept so both apps share the top-level keys
    dtype: str = "float64"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    theory: TheoryConfig = field(default_factory=TheoryConfig)
    rows: int = 12  # rows of the printed table
    plot: bool = True  # write the PNG


#: Schema of each config group (conf/<group>/*.yaml are merged into these).
GROUP_SCHEMAS = {
    "data": DataConfig,
    "model": ModelConfig,
    "dynamics": DynamicsConfig,
    "ensemble": EnsembleConfig,
    "theory": TheoryConfig,
    "hooks": HooksConfig,
}


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent; runs at import).

    Primary schemas: ``train_schema`` and ``predict_schema`` (first entry of the defaults list
    of conf/train.yaml and conf/predict.yaml). Each group (data, model, dynamics, ensemble,
    theory, hooks) is a typed field of them (schema: ``GROUP_SCHEMAS[group]``), so every preset
    in ``conf/<group>/`` is checked against its group's schema when merged: a misspelt key or
    a value of the wrong type fails at composition. (The group schemas are deliberately not
    stored as options inside the groups, where they would show up as selectable presets.)
    """
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="predict_schema", node=PredictConfig)


register_configs()


# --------------------------------------------------------------------------------------------
# 2. Typed settings that library code takes.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSettings:
    P: int
    alpha: Optional[float]
    beta: Optional[float]
    lam_1: float
    c: float
    label_noise: float
    kind: str
    target: str
    teacher: str
    pool_size: Optional[int]  # resolved for kinds other than powerlaw_eigen; None there
    input_dim: int


@dataclass(frozen=True)
class ModelSettings:
    N: int
    kind: str
    nonlinearity: str
    M: int  # resolved: M = N when the config says null


@dataclass(frozen=True)
class DynamicsSettings:
    name: str
    weight_decay: float
    temperature: float
    init_variance: float
    dt: Optional[float]  # None: the integrator chooses a stable step
    t_max: float
    n_evals: int
    integrator: str = "euler"
    max_stride: Optional[int] = None  # None: chosen by cost (rfscaling.dynamics.euler.choose_stride)

    @property
    def has_stationary_limit(self) -> bool:
        """True when E_g(t -> inf) is finite for every P (no free diffusion)."""
        return self.temperature == 0.0 or self.weight_decay > 0.0


@dataclass(frozen=True)
class EnsembleSettings:
    datasets: int
    replicas: int
    estimate_variance: bool


@dataclass(frozen=True)
class TheorySettings:
    enabled: bool
    modes: bool


@dataclass(frozen=True)
class EarlyStoppingSettings:
    enabled: bool
    patience: int
    halt: bool
    validation_size: Optional[int] = None


@dataclass(frozen=True)
class CheckpointSettings:
    enabled: bool
    every: int


@dataclass(frozen=True)
class HooksSettings:
    eigenmode: bool
    tensorboard: bool
    early_stopping: EarlyStoppingSettings
    checkpoint: CheckpointSettings
    progress: bool = True
    image_every: int = 1
    max_evals: Optional[int] = None
    max_wall_s: Optional[float] = None


@dataclass(frozen=True)
class Settings:
    seed: int
    device: str  # resolved: "cpu", "cuda" or "cuda:K" (never "auto")
    dtype: str
    threads: Optional[int]  # torch CPU threads; None: torch default
    data: DataSettings
    model: ModelSettings
    dynamics: DynamicsSettings
    theory: TheorySettings
    ensemble: Optional[EnsembleSettings] = None  # None when the config has no ensemble group
    hooks: Optional[HooksSettings] = None  # None when the config has no hooks group

    @property
    def has_noise(self) -> bool:
        """True when some source makes runs on one data set differ (label noise, T, init)."""
        d = self.dynamics
        return self.data.label_noise > 0 or d.temperature > 0 or d.init_variance > 0


# --------------------------------------------------------------------------------------------
# 3. The edge: DictConfig -> Settings, with validation.
# --------------------------------------------------------------------------------------------

_MISSING = object()


class _Reader:
    """Reads and checks values of one (sub)mapping; errors name the full dotted key."""

    def __init__(self, node: Any, prefix: str) -> None:
        self.node = node
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        node = self.node
        if isinstance(node, DictConfig):
            if name not in node:
                if default is _MISSING:
                    raise ConfigError(self.key(name), "<missing>", "required key is missing")
                return default
            if OmegaConf.is_missing(node, name):
                raise ConfigError(self.key(name), "???", "required value is missing")
            try:
                value = node[name]
            except Exception as exc:  # interpolation errors etc.
                raise ConfigError(self.key(name), "<unresolvable>", f"cannot resolve ({exc})".splitlines()[0]) from None
            return value
        if isinstance(node, Mapping):
            if name not in node:
                if default is _MISSING:
                    raise ConfigError(self.key(name), "<missing>", "required key is missing")
                return default
            return node[name]
        if hasattr(node, name):  # a schema dataclass instance
            return getattr(node, name)
        if default is _MISSING:
            raise ConfigError(self.key(name), "<missing>", "required key is missing")
        return default

    def sub(self, name: str, required: bool = True) -> Optional["_Reader"]:
        value = self.raw(name, _MISSING if required else None)
        if value is None:
            if required:
                raise ConfigError(self.key(name), value, "must be a config group (mapping)")
            return None
        if not (isinstance(value, (DictConfig, Mapping)) or hasattr(value, "__dataclass_fields__")):
            raise ConfigError(self.key(name), value, "must be a config group (mapping)")
        return _Reader(value, self.key(name))

    # -- typed readers ------------------------------------------------------------------------

    def int_(self, name: str, *, lo: Optional[int] = None, hi: Optional[int] = None,
             what: str = "", optional: bool = False, default: Any = _MISSING) -> Optional[int]:
        v = self.raw(name, default)
        if v is None and optional:
            return None
        allowed = what or _int_range_text(lo, hi)
        if optional:
            allowed += " or null"
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer() and math.isfinite(v):
                v = int(v)
            else:
                raise ConfigError(self.key(name), v, allowed)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ConfigError(self.key(name), v, allowed)
        return int(v)

    def float_(self, name: str, *, lo: Optional[float] = None, lo_open: bool = False,
               hi: Optional[float] = None, what: str = "", optional: bool = False,
               default: Any = _MISSING) -> Optional[float]:
        v = self.raw(name, default)
        if v is None and optional:
            return None
        allowed = what or _float_range_text(lo, lo_open, hi)
        if optional:
            allowed += " or null"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(self.key(name), v, allowed)
        v = float(v)
        if not math.isfinite(v):
            raise ConfigError(self.key(name), v, allowed)
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ConfigError(self.key(name), v, allowed)
        if hi is not None and v > hi:
            raise ConfigError(self.key(name), v, allowed)
        return v

    def bool_(self, name: str, default: Any = _MISSING) -> bool:
        v = self.raw(name, default)
        if not isinstance(v, bool):
            raise ConfigError(self.key(name), v, "must be true or false")
        return v

    def choice(self, name: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        v = self.raw(name, default)
        if not isinstance(v, str) or v not in choices:
            raise ConfigError(self.key(name), v, "must be one of " + "|".join(choices))
        return v


def _int_range_text(lo: Optional[int], hi: Optional[int]) -> str:
    if lo == 1 and hi is None:
        return "must be a positive integer"
    if lo == 0 and hi is None:
        return "must be a non-negative integer"
    if lo is not None and hi is not None:
        return f"must be an integer in [{lo}, {hi}]"
    if lo is not None:
        return f"must be an integer >= {lo}"
    return "must be an integer"


def _float_range_text(lo: Optional[float], lo_open: bool, hi: Optional[float]) -> str:
    if lo == 0 and lo_open and hi is None:
        return "must be a positive finite number"
    if lo == 0 and not lo_open and hi is None:
        return "must be a finite number >= 0"
    if lo is not None:
        op = ">" if lo_open else ">="
        if hi is not None:
            return f"must be a finite number {op} {lo:g} and <= {hi:g}"
        return f"must be a finite number {op} {lo:g}"
    return "must be a finite number"


def resolve_device(device: str, key: str = "device") -> str:
    """Resolve ``auto`` and check that a requested CUDA device exists.

    ``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``. ``cuda``/``cuda:K`` without CUDA
    (or without torch) raises ConfigError.
    """
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(key, device, "must be one of auto|cpu|cuda|cuda:K")
    if device == "cpu":
        return "cpu"
    try:
        import torch

        available = bool(torch.cuda.is_available())
        count = torch.cuda.device_count() if available else 0
    except Exception:  # torch missing or broken: no CUDA
        available, count = False, 0
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ConfigError(key, device, "CUDA is not available on this machine; use cpu or auto")
    if ":" in device and int(device.split(":")[1]) >= count:
        raise ConfigError(key, device, f"only {count} CUDA device(s) visible; use cuda:0..cuda:{count - 1}")
    return device


def _data(r: _Reader) -> dict:
    """Read and check data.* (checks that need model.N happen in settings_from_config)."""
    kind = r.choice("kind", DATA_KINDS)
    target = r.choice("target", TARGETS)
    teacher = r.choice("teacher", TEACHERS, default="fixed")
    real = kind in REAL_DATA_KINDS
    out = dict(
        P=r.int_("P", lo=1),
        alpha=r.float_("alpha", lo=0.0, lo_open=True, optional=real),
        beta=r.float_("beta", lo=-1.0, lo_open=True, optional=real),
        lam_1=r.float_("lam_1", lo=0.0, lo_open=True, default=1.0),
        c=r.float_("c", lo=0.0, lo_open=True, default=1.0),
        label_noise=r.float_("label_noise", lo=0.0, default=0.0,
                             what="must be a finite number >= 0 (a variance)"),
        kind=kind,
        target=target,
        teacher=teacher,
        pool_size=r.int_("pool_size", lo=1, optional=True, default=None),
        input_dim=r.int_("input_dim", lo=1, default=64),
    )
    if real and target != "labels":
        raise ConfigError(r.key("target"), target, f"must be labels for data.kind={kind}")
    if not real and target == "labels":
        raise ConfigError(r.key("target"), target,
                          f"labels needs real data (data.kind=digits|mnist1d), got data.kind={kind}")
    if kind == "powerlaw_eigen" and target == "teacher_network":
        raise ConfigError(r.key("target"), target,
                          "must be powerlaw_teacher for data.kind=powerlaw_eigen")
    return out


def settings_from_config(cfg: Any) -> Settings:
    """Turn a composed config (DictConfig, dict or schema instance) into frozen :class:`Settings`.

    Checks every value; raises :class:`ConfigError` with a one-line message naming the key,
    its value and what is allowed. Groups ``ensemble`` and ``hooks`` are optional (the theory
    app has neither). ``device: auto`` is resolved here (imports torch only if needed).
    """
    if isinstance(cfg, (DictConfig, Mapping)) or hasattr(cfg, "__dataclass_fields__"):
        top = _Reader(cfg, "")
    else:
        raise ConfigError("<config>", type(cfg).__name__, "must be a mapping / DictConfig")

    seed = top.int_("seed", lo=0, hi=2**63 - 1, what="must be an integer in [0, 2**63 - 1]", default=0)
    dtype = top.choice("dtype", DTYPES, default="float32")
    threads = top.int_("threads", lo=1, optional=True, default=1,
                       what="must be a positive integer (torch CPU threads) or null")
    device_raw = top.raw("device", "auto")

    # ---- data
    rd = top.sub("data")
    data = _data(rd)

    # ---- model
    rm = top.sub("model")
    N = rm.int_("N", lo=1)
    model_kind = rm.choice("kind", MODEL_KINDS)
    nonlinearity = rm.choice("nonlinearity", NONLINEARITIES, default="relu")
    M_raw = rm.int_("M", lo=1, optional=True, default=None,
                    what="must be an integer >= model.N (total teacher modes)")
    if M_raw is not None and M_raw < N:
        raise ConfigError(rm.key("M"), M_raw, f"must be an integer >= model.N={N} or null (M = N)")
    M = N if M_raw is None else M_raw
    if model_kind == "eigenfeature" and data["kind"] != "powerlaw_eigen":
        raise ConfigError(rm.key("kind"), model_kind,
                          f"eigenfeature needs data.kind=powerlaw_eigen (got data.kind={data['kind']}); "
                          "use model=random_features")
    if data["target"] == "teacher_network" and model_kind != "random_features":
        raise ConfigError(rd.key("target"), data["target"], "teacher_network needs model=random_features")

    # pool size: only meaningful for input-space data; resolve null to several times N.
    if data["kind"] == "powerlaw_eigen":
        pool_size = data["pool_size"]
    else:
        cap = REAL_DATA_SIZES.get(data["kind"])
        pool_size = data["pool_size"]
        if pool_size is None:
            pool_size = max(POOL_FACTOR * N, 2 * data["P"])
            if cap is not None:
                pool_size = min(pool_size, cap)
        if cap is not None and pool_size > cap:
            raise ConfigError(rd.key("pool_size"), pool_size,
                              f"must be <= {cap} (size of the {data['kind']} data set)")
        if pool_size <= data["P"]:
            if data["pool_size"] is None:  # resolved default too small: blame P
                raise ConfigError(rd.key("P"), data["P"],
                                  f"must be < {pool_size} (samples available in {data['kind']})")
            raise ConfigError(rd.key("pool_size"), pool_size,
                              f"must be an integer > data.P={data['P']}")
    data["pool_size"] = pool_size

    # ---- dynamics
    ry = top.sub("dynamics")
    name = ry.choice("name", DYNAMICS)
    wd = ry.float_("weight_decay", lo=0.0, default=0.0)
    temp = ry.float_("temperature", lo=0.0, default=0.0)
    init_var = ry.float_("init_variance", lo=0.0, default=0.0,
                         what="must be a finite number >= 0 (a variance)")
    dt = ry.float_("dt", lo=0.0, lo_open=True, optional=True, default=None)
    t_max = ry.float_("t_max", lo=0.0, lo_open=True)
    n_evals = ry.int_("n_evals", lo=2, what="must be an integer >= 2")
    integrator = ry.choice("integrator", INTEGRATORS, default="euler")
    stride_rule = "must be a power of two >= 1 (1: one product per Euler step)"
    max_stride = ry.int_("max_stride", lo=1, optional=True, default=None, what=stride_rule)
    if max_stride is not None and max_stride & (max_stride - 1):
        raise ConfigError(ry.key("max_stride"), max_stride, stride_rule + " or null")
    if dt is not None and dt > t_max:
        raise ConfigError(ry.key("dt"), dt, f"must be <= dynamics.t_max={t_max:g}")
    if name == "gradient_flow":
        if wd != 0.0:
            raise ConfigError(ry.key("weight_decay"), wd,
                              "must be 0 for dynamics=gradient_flow (use dynamics=weight_decay)")
        if temp != 0.0:
            raise ConfigError(ry.key("temperature"), temp,
                              "must be 0 for dynamics=gradient_flow (use dynamics=langevin)")
    elif name == "weight_decay":
        if wd <= 0.0:
            raise ConfigError(ry.key("weight_decay"), wd, "must be > 0 for dynamics=weight_decay")
        if temp != 0.0:
            raise ConfigError(ry.key("temperature"), temp,
                              "must be 0 for dynamics=weight_decay (use dynamics=langevin or bayes)")
    elif name == "langevin":
        if temp <= 0.0:
            raise ConfigError(ry.key("temperature"), temp, "must be > 0 for dynamics=langevin")
    elif name == "bayes":
        if wd <= 0.0:
            raise ConfigError(ry.key("weight_decay"), wd,
                              "must be > 0 for dynamics=bayes (prior variance = temperature/weight_decay)")
        if temp <= 0.0:
            raise ConfigError(ry.key("temperature"), temp,
                              "must be > 0 for dynamics=bayes (the posterior noise variance)")

    # ---- theory
    rt = top.sub("theory")
    theory = TheorySettings(enabled=rt.bool_("enabled"), modes=rt.bool_("modes", default=True))

    # ---- ensemble (optional group)
    ensemble = None
    re_ = top.sub("ensemble", required=False)
    if re_ is not None:
        ensemble = EnsembleSettings(
            datasets=re_.int_("datasets", lo=1),
            replicas=re_.int_("replicas", lo=1),
            estimate_variance=re_.bool_("estimate_variance", default=True),
        )

    # ---- hooks (optional group)
    hooks = None
    rh = top.sub("hooks", required=False)
    if rh is not None:
        res = rh.sub("early_stopping")
        rc = rh.sub("checkpoint")
        hooks = HooksSettings(
            eigenmode=rh.bool_("eigenmode"),
            tensorboard=rh.bool_("tensorboard"),
            early_stopping=EarlyStoppingSettings(
                enabled=res.bool_("enabled"),
                patience=res.int_("patience", lo=1),
                halt=res.bool_("halt", default=False),
                validation_size=res.int_("validation_size", lo=1, optional=True, default=None),
            ),
            checkpoint=CheckpointSettings(enabled=rc.bool_("enabled"), every=rc.int_("every", lo=1)),
            progress=rh.bool_("progress", default=True),
            image_every=rh.int_("image_every", lo=1, default=1),
        )
        rb = rh.sub("budget", required=False)
        if rb is not None:
            hooks = replace(hooks, max_evals=rb.int_("max_evals", lo=1, optional=True, default=None),
                            max_wall_s=rb.float_("max_wall_s", lo=0.0, lo_open=True, optional=True,
                                                 default=None))

    settings_wo_device = dict(
        seed=seed,
        dtype=dtype,
        threads=threads,
        data=DataSettings(**data),
        model=ModelSettings(N=N, kind=model_kind, nonlinearity=nonlinearity, M=M),
        dynamics=DynamicsSettings(name=name, weight_decay=wd, temperature=temp, init_variance=init_var,
                                  dt=dt, t_max=t_max, n_evals=n_evals, integrator=integrator,
                                  max_stride=max_stride),
        theory=theory,
        ensemble=ensemble,
        hooks=hooks,
    )
    probe = Settings(device="cpu", **settings_wo_device)
    if ensemble is not None and ensemble.estimate_variance and probe.has_noise and ensemble.replicas < 2:
        raise ConfigError(
            "ensemble.replicas", ensemble.replicas,
            "must be >= 2 to split bias and variance when there is noise (label noise, temperature "
            "or init variance); or set ensemble.estimate_variance=false",
        )
    device = resolve_device(device_raw)  # last: may import torch
    return Settings(device=device, **settings_wo_device)
