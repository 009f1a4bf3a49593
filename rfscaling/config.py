"""Configuration: one frozen, typed dataclass per config group, checked where it is built.

The YAML presets in ``conf/<group>/`` are merged into these dataclasses by Hydra (they are the
structured-config schemas: a misspelt key or a value of the wrong type fails at composition),
and :func:`to_config` turns the composed config (or any mapping) into instances of them.
Construction runs ``__post_init__``, which checks every value and raises
:class:`~rfscaling.errors.ConfigError` with one line naming the key, the value and what is
allowed. Library code receives these objects (or plain arguments), never a DictConfig.

Checks that depend on a registered piece (a data set, a model, a dynamics: which keys it needs)
live with that piece and run at the edge (``typed_config`` of rfscaling.train and
rfscaling.predict), before anything runs.

Key tree (``conf/train.yaml``; ``conf/predict.yaml`` has the same groups minus ensemble/hooks,
plus ``rows`` and ``plot``)::

    seed, device (auto|cpu|cuda|cuda:K), dtype (float32|float64), threads
    data:      P, alpha, beta, lam_1, c, label_noise, kind, target, teacher, pool_size, input_dim
    model:     N, kind, nonlinearity, M
    dynamics:  name, weight_decay, temperature, init_variance, dt, t_max, n_evals, integrator, max_stride
    ensemble:  datasets, replicas, estimate_variance
    theory:    enabled, modes
    hooks:     tensorboard, progress, image_every, early_stopping{...}, checkpoint{...}, budget{...},
               extra, options

Units follow docs/theory.md: ``label_noise`` and ``init_variance`` are variances, the loss is
summed over samples, time is gradient-flow time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from rfscaling.errors import ConfigError

__all__ = [
    "DataConfig", "ModelConfig", "DynamicsConfig", "EnsembleConfig", "TheoryConfig", "EarlyStoppingConfig",
    "CheckpointConfig", "BudgetConfig", "HooksConfig", "TrainConfig", "PredictConfig", "register_configs",
    "GROUP_SCHEMAS", "CONF_DIR", "TARGETS", "TEACHERS", "NONLINEARITIES", "PARAMETERIZATIONS", "INTEGRATORS", "DTYPES",
    "POOL_FACTOR", "NOT_RESULT", "as_dict", "schema", "to_config", "ConfigError",
]

#: Absolute path of the repository's ``conf/`` directory (Hydra's config_path).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

TARGETS = ("powerlaw_teacher", "teacher_network", "labels")
TEACHERS = ("fixed", "random")
NONLINEARITIES = ("relu", "tanh", "erf", "gelu", "identity")
PARAMETERIZATIONS = ("ntk", "mean_field")
INTEGRATORS = ("euler", "exact", "auto")
DTYPES = ("float32", "float64")
#: ``data.pool_size: null`` resolves to max(POOL_FACTOR * model.N, 2 * data.P), capped by the data set.
POOL_FACTOR = 4
#: metadata of a field that does not change a run's results (left out of its identity)
NOT_RESULT = {"result": False}


# --------------------------------------------------------------------------------------------
# Checks: one line naming the key, its value and what is allowed


def _int(key: str, v: Any, lo: int, allowed: str = "", optional: bool = False, hi: Optional[int] = None) -> None:
    if v is None and optional:
        return
    allowed = allowed or ("must be a positive integer" if lo == 1 else f"must be an integer >= {lo}")
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise ConfigError(key, v, allowed + (" or null" if optional else ""))


def _num(key: str, v: Any, lo: float, *, open_: bool = False, allowed: str = "", optional: bool = False) -> None:
    if v is None and optional:
        return
    if not allowed:
        allowed = ("must be a positive finite number" if lo == 0 and open_ else
                   f"must be a finite number {'>' if open_ else '>='} {lo:g}")
    bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
    if bad or v < lo or (open_ and v == lo):
        raise ConfigError(key, v, allowed + (" or null" if optional else ""))


def _choice(key: str, v: Any, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise ConfigError(key, v, "must be one of " + "|".join(choices))


# --------------------------------------------------------------------------------------------
# The groups. Defaults mirror the YAML presets.


@dataclass(frozen=True)
class DataConfig:
    P: int = 256  # training samples
    alpha: Optional[float] = 1.0  # lam_k = lam_1 k^-(1+alpha); null for data sets without a power law
    beta: Optional[float] = 1.0  # lam_k E[wstar_k^2] = c k^-(1+beta)
    lam_1: float = 1.0
    c: float = 1.0
    label_noise: float = 0.0  # VARIANCE of the additive label noise
    kind: str = "powerlaw_eigen"  # a registered data set (rfscaling/data/sets/)
    target: str = "powerlaw_teacher"  # powerlaw_teacher|teacher_network|labels
    teacher: str = "fixed"  # fixed|random (random: redrawn per data set)
    pool_size: Optional[int] = None  # input data: pool to draw P from; null: max(4 N, 2 P), capped
    input_dim: int = 64  # input dimension of generated inputs

    def __post_init__(self) -> None:
        _int("data.P", self.P, 1)
        _num("data.alpha", self.alpha, 0.0, open_=True, optional=True)
        _num("data.beta", self.beta, -1.0, open_=True, optional=True)
        _num("data.lam_1", self.lam_1, 0.0, open_=True)
        _num("data.c", self.c, 0.0, open_=True)
        _num("data.label_noise", self.label_noise, 0.0, allowed="must be a finite number >= 0 (a variance)")
        _choice("data.target", self.target, TARGETS)
        _choice("data.teacher", self.teacher, TEACHERS)
        _int("data.pool_size", self.pool_size, 1, optional=True)
        _int("data.input_dim", self.input_dim, 1)


@dataclass(frozen=True)
class ModelConfig:
    N: int = 1024  # features / eigenmodes of the student
    kind: str = "eigenfeature"  # a registered model (rfscaling/models/)
    nonlinearity: str = "relu"  # relu|tanh|erf|gelu|identity (random features, mlp)
    M: Optional[int] = None  # teacher modes / teacher-network width (>= N); null: M = N
    depth: int = 1  # mlp: hidden layers
    parameterization: str = "ntk"  # mlp: ntk | mean_field (readout 1/N instead of 1/sqrt(N))
    doubling: bool = True  # mlp: f = g_theta - g_theta' with theta' = theta at init (f_0 = 0)

    def __post_init__(self) -> None:
        _int("model.N", self.N, 1)
        _choice("model.nonlinearity", self.nonlinearity, NONLINEARITIES)
        _int("model.depth", self.depth, 1)
        _choice("model.parameterization", self.parameterization, PARAMETERIZATIONS)
        if not isinstance(self.doubling, bool):
            raise ConfigError("model.doubling", self.doubling, "must be true or false")
        if self.M is not None and (isinstance(self.M, bool) or not isinstance(self.M, int) or self.M < self.N):
            raise ConfigError("model.M", self.M, f"must be an integer >= model.N={self.N} or null (M = N)")

    @property
    def teacher_modes(self) -> int:
        """M, with null meaning N."""
        return self.N if self.M is None else self.M


@dataclass(frozen=True)
class DynamicsConfig:
    """``dw = -grad L dt + sqrt(2 temperature) dB``, ``w(0) ~ N(0, init_variance I)``, and how
    the run steps through it. The process comes first, so ``DynamicsConfig(wd, T, v0)`` reads
    as the SDE; ``name`` picks a registered dynamics (rfscaling/dynamics/kinds/)."""

    weight_decay: float = 0.0
    temperature: float = 0.0
    init_variance: float = 0.0
    name: str = "gradient_flow"
    dt: Optional[float] = None  # null: 1 / lambda_max(H) of the drawn data
    # the same step under its optimiser name (set either): gradient descent w <- w - lr grad L;
    # the theory app predicts discrete time for it (null there: gradient flow)
    learning_rate: Optional[float] = None
    t_max: float = 1000.0
    n_evals: int = 40  # log-spaced evaluation times
    integrator: str = "euler"  # euler | exact | auto (exact when Euler would cost > 5e10 multiply-adds)
    max_stride: Optional[int] = None  # Euler without noise: steps per propagator product; null: by cost
    batch_size: Optional[int] = None  # sgd: samples per step (<= data.P)
    replacement: bool = False  # sgd: batches drawn with replacement (else: epochs of a permutation)
    momentum: float = 0.0  # sgd: heavy-ball momentum in [0, 1)

    def __post_init__(self) -> None:
        _num("dynamics.weight_decay", self.weight_decay, 0.0)
        _num("dynamics.temperature", self.temperature, 0.0)
        _num("dynamics.init_variance", self.init_variance, 0.0, allowed="must be a finite number >= 0 (a variance)")
        _num("dynamics.dt", self.dt, 0.0, open_=True, optional=True)
        _num("dynamics.t_max", self.t_max, 0.0, open_=True)
        _int("dynamics.n_evals", self.n_evals, 2, allowed="must be an integer >= 2")
        _choice("dynamics.integrator", self.integrator, INTEGRATORS)
        stride = self.max_stride
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1
                                   or stride & (stride - 1)):
            raise ConfigError("dynamics.max_stride", stride,
                              "must be a power of two >= 1 (1: one product per Euler step) or null")
        _num("dynamics.learning_rate", self.learning_rate, 0.0, open_=True, optional=True)
        if self.dt is not None and self.learning_rate is not None and self.dt != self.learning_rate:
            raise ConfigError("dynamics.learning_rate", self.learning_rate,
                              f"must be null or equal dynamics.dt={self.dt:g} (the same step; set one of them)")
        _int("dynamics.batch_size", self.batch_size, 1, optional=True)
        if not isinstance(self.replacement, bool):
            raise ConfigError("dynamics.replacement", self.replacement, "must be true or false")
        m = self.momentum
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m < 1.0:
            raise ConfigError("dynamics.momentum", m, "must be a number in [0, 1)")
        if self.dt is not None and self.dt > self.t_max:
            raise ConfigError("dynamics.dt", self.dt, f"must be <= dynamics.t_max={self.t_max:g}")
        if self.learning_rate is not None and self.learning_rate > self.t_max:
            raise ConfigError("dynamics.learning_rate", self.learning_rate, f"must be <= dynamics.t_max={self.t_max:g}")

    @property
    def step(self) -> Optional[float]:
        """The step size set by ``dt`` or ``learning_rate`` (None: chosen from the data / gradient flow)."""
        return self.dt if self.dt is not None else self.learning_rate

    @property
    def has_stationary_limit(self) -> bool:
        """True when E_g(t -> inf) is finite for every P (no free diffusion)."""
        return self.temperature == 0.0 or self.weight_decay > 0.0


@dataclass(frozen=True)
class EnsembleConfig:
    datasets: int = 8  # independent draws of the training set (and random teacher)
    replicas: int = 4  # runs per data set with independent noise / init
    estimate_variance: bool = True  # split E_g into bias + variance (needs replicas >= 2 with noise)

    def __post_init__(self) -> None:
        _int("ensemble.datasets", self.datasets, 1)
        _int("ensemble.replicas", self.replicas, 1)


@dataclass(frozen=True)
class TheoryConfig:
    enabled: bool = True
    modes: bool = True  # also per-mode predictions (computed when first read)
    # an Euler / Euler-Maruyama run's *_theory columns are the DMFT of its own step size dt
    # (docs/theory.md section 10); false: of gradient flow. metrics.csv has both E_g theories.
    discrete: bool = True


@dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = True
    patience: int = 5  # evaluations without improvement of the validation error
    halt: bool = False  # stop training (true) or only record the optimum (false)
    validation_size: Optional[int] = None  # held-out samples per data set; null: P

    def __post_init__(self) -> None:
        _int("hooks.early_stopping.patience", self.patience, 1)
        _int("hooks.early_stopping.validation_size", self.validation_size, 1, optional=True)


@dataclass(frozen=True)
class CheckpointConfig:
    enabled: bool = False
    every: int = 10  # evaluations between checkpoints

    def __post_init__(self) -> None:
        _int("hooks.checkpoint.every", self.every, 1)


@dataclass(frozen=True)
class BudgetConfig:
    max_evals: Optional[int] = None  # evaluations per process before a resumable stop
    max_wall_s: Optional[float] = None  # wall-clock seconds per process before a resumable stop

    def __post_init__(self) -> None:
        _int("hooks.budget.max_evals", self.max_evals, 1, optional=True)
        _num("hooks.budget.max_wall_s", self.max_wall_s, 0.0, open_=True, optional=True)


@dataclass(frozen=True)
class HooksConfig:
    tensorboard: bool = field(default=True, metadata=NOT_RESULT)
    progress: bool = field(default=True, metadata=NOT_RESULT)  # tqdm progress bar
    image_every: int = field(default=1, metadata=NOT_RESULT)  # per-mode image every k evaluations
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig, metadata=NOT_RESULT)
    budget: BudgetConfig = field(default_factory=BudgetConfig, metadata=NOT_RESULT)
    # more hooks: registered names (rfscaling/hooks/registry.py) or "package.module:factory";
    # options.<name>: keyword arguments of that hook's factory. Part of the run identity: a
    # hook may stop a run.
    extra: List[str] = field(default_factory=list)
    options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _int("hooks.image_every", self.image_every, 1)
        object.__setattr__(self, "extra", tuple(self.extra))  # immutable, like the rest


def _top_level(seed: Any, dtype: Any, device: Any) -> None:
    _int("seed", seed, 0, allowed="must be an integer in [0, 2**63 - 1]", hi=2**63 - 1)
    _choice("dtype", dtype, DTYPES)
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError("device", device, "must be one of auto|cpu|cuda|cuda:K")


def _has_noise(data: DataConfig, dynamics: DynamicsConfig) -> bool:
    """Some source makes runs on one data set differ: label noise, temperature or init."""
    return data.label_noise > 0 or dynamics.temperature > 0 or dynamics.init_variance > 0


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:K (resolved when the run starts)
    dtype: str = "float32"
    threads: Optional[int] = 1  # torch CPU threads; null: torch's default (docs/performance.md)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    theory: TheoryConfig = field(default_factory=TheoryConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)

    def __post_init__(self) -> None:
        _top_level(self.seed, self.dtype, self.device)
        _int("threads", self.threads, 1, allowed="must be a positive integer (torch CPU threads)", optional=True)
        e = self.ensemble
        if e.estimate_variance and e.replicas < 2 and _has_noise(self.data, self.dynamics):
            raise ConfigError("ensemble.replicas", e.replicas,
                              "must be >= 2 to split bias and variance when there is noise (label noise, "
                              "temperature or init variance); or set ensemble.estimate_variance=false")

    @property
    def validation_size(self) -> int:
        """Held-out samples per data set for early stopping (0: none)."""
        es = self.hooks.early_stopping
        if not es.enabled:
            return 0
        return es.validation_size if es.validation_size is not None else self.data.P


@dataclass(frozen=True)
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

    def __post_init__(self) -> None:
        _top_level(self.seed, self.dtype, self.device)
        _int("rows", self.rows, 1)


#: Schema of each config group (conf/<group>/*.yaml are merged into these).
GROUP_SCHEMAS = {
    "data": DataConfig,
    "model": ModelConfig,
    "dynamics": DynamicsConfig,
    "ensemble": EnsembleConfig,
    "theory": TheoryConfig,
    "hooks": HooksConfig,
}


def schema(cls: type):
    """The structured config of a frozen dataclass, made writable: Hydra merges the presets
    and overrides into it (OmegaConf marks frozen dataclasses read-only, node by node)."""
    from omegaconf import DictConfig, OmegaConf

    node = OmegaConf.structured(cls)

    def unfreeze(n: DictConfig) -> None:
        OmegaConf.set_readonly(n, None)
        for key in n:
            child = n._get_node(key)
            if isinstance(child, DictConfig):
                unfreeze(child)

    unfreeze(node)
    return node


def _check_groups(cls: type, node: Any, prefix: str = "") -> None:
    """Each config group given is a mapping (OmegaConf's own message would not name the key)."""
    from collections.abc import Mapping

    from omegaconf import DictConfig

    defaults = cls()
    for f in fields(cls):
        value = getattr(defaults, f.name)
        if not is_dataclass(value) or f.name not in node:
            continue
        given, key = node[f.name], f"{prefix}{f.name}"
        if not isinstance(given, (Mapping, DictConfig)):
            raise ConfigError(key, given, "must be a config group (mapping)")
        _check_groups(type(value), given, key + ".")


def to_config(cfg: Any, cls: type) -> Any:
    """``cfg`` (a composed DictConfig, or any mapping, e.g. built in a notebook) as an instance
    of the config dataclass ``cls``. OmegaConf converts and type-checks every value against the
    schema (missing keys take the defaults), then the dataclasses check them; any failure is a
    ConfigError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cfg, cls):
        return cfg
    if "hydra" in cfg:  # composed with Hydra's own node (compose(..., return_hydra_config=True))
        cfg = {k: cfg[k] for k in cfg if k != "hydra"}
    _check_groups(cls, cfg)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema(cls), cfg))
    except OmegaConfBaseException as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(exc.full_key or "<config>", getattr(exc, "value", None), line) from None


def register_configs() -> None:
    """Store the schemas ``train_schema`` and ``predict_schema`` in Hydra's ConfigStore (the
    first entry of the defaults lists of conf/train.yaml and conf/predict.yaml). Idempotent."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=schema(TrainConfig))
    cs.store(name="predict_schema", node=schema(PredictConfig))


def as_dict(obj: Any, results_only: bool = False) -> Any:
    """A config object as nested plain dicts (for records and hashing); ``results_only``: only
    the fields that can change a run's results (not those marked :data:`NOT_RESULT`)."""
    if is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name), results_only) for f in fields(obj)
                if not (results_only and f.metadata.get("result") is False)}
    if isinstance(obj, (list, tuple)):
        return [as_dict(v, results_only) for v in obj]
    return obj
