"""Every config in conf/ composes and converts to the frozen config objects; bad input gives
one-line errors naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from rfscaling.config import CONF_DIR, PredictConfig, TrainConfig, to_config
from rfscaling.data import DATASETS, resolve_device
from rfscaling.dynamics.kinds import DYNAMICS
from rfscaling.predict import typed_config as typed_predict
from rfscaling.train import typed_config as typed_train
from rfscaling.errors import ConfigError, one_line

CONF = Path(CONF_DIR)
PRIMARY = ("train", "predict")
GROUPS = ("data", "model", "dynamics", "ensemble", "theory", "hooks", "experiment")


def settings_from_config(cfg):
    """The edge of the app the config belongs to (train or predict)."""
    return typed_predict(cfg) if "rows" in cfg else typed_train(cfg)


def _pool(s) -> int:
    return DATASETS.get(s.data.kind).pool_size(s.data, s.model)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compatible(group: str, option: str) -> list[str]:
    """Overrides that make ``group=option`` a valid combination."""
    over = [f"{group}={option}"]
    if group == "data":
        kind = yaml.safe_load((CONF / "data" / f"{option}.yaml").read_text())["kind"]
        if kind != "powerlaw_eigen":
            over.append("model=random_features")
    if group == "model" and option == "random_features":
        over.append("data=gaussian_powerlaw")
    return over


def _all_cases():
    cases = []
    for primary in PRIMARY:
        cases.append((primary, ()))
        for group in GROUPS:
            if not (CONF / group).is_dir():
                continue
            if primary == "predict" and group in ("ensemble", "hooks", "experiment"):
                continue
            for option in _options(group):
                cases.append((primary, tuple(_compatible(group, option))))
    return cases


def _no_omegaconf(obj, path="config"):
    """Assert a config tree holds only plain Python values."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _no_omegaconf(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, (tuple, dict)):
        for k, v in (obj.items() if isinstance(obj, dict) else enumerate(obj)):
            _no_omegaconf(v, f"{path}[{k}]")
        assert type(obj) in (tuple, dict), f"{path}: {type(obj)}"
    else:
        assert obj is None or isinstance(obj, (bool, int, float, str)), f"{path}: {type(obj)}"


# --------------------------------------------------------------------------------------------
# Composition of every config


def test_conf_layout(conf_dir):
    assert (conf_dir / "train.yaml").is_file()
    assert (conf_dir / "predict.yaml").is_file()
    for group, required in {
        "data": {"powerlaw"},
        "dynamics": set(DYNAMICS),
        "model": {"eigenfeature", "random_features"},
        "ensemble": {"default"},
        "hooks": {"default"},
        "theory": {"default"},
    }.items():
        assert required <= set(_options(group)), group
    assert (conf_dir / "experiment").is_dir()


def test_every_option_is_composed():
    composed = {(o.split("=")[0], o.split("=")[1]) for _, over in _all_cases() for o in over[:1]}
    for group in GROUPS:
        for option in _options(group) if (CONF / group).is_dir() else []:
            assert (group, option) in composed


@pytest.mark.parametrize("primary,overrides", _all_cases(), ids=lambda v: v if isinstance(v, str) else ",".join(v) or "defaults")
def test_compose_and_convert(compose, primary, overrides):
    cfg = compose(primary, overrides)
    if primary == "predict" and "model=random_features" in overrides:  # the theory covers power laws only
        with pytest.raises(ConfigError, match=r"^data\.kind=\w+: the theory app supports only"):
            settings_from_config(cfg)
        return
    if primary == "predict" and "model=mlp" in overrides:  # a network's kernel is known only after drawing it
        with pytest.raises(ConfigError, match=r"^model\.kind=mlp: the theory app supports model.kind="):
            settings_from_config(cfg)
        return
    s = settings_from_config(cfg)
    assert isinstance(s, TrainConfig if primary == "train" else PredictConfig)
    _no_omegaconf(s)
    assert resolve_device(s.device) in ("cpu", "cuda") or s.device.startswith("cuda:")
    assert s.model.teacher_modes >= s.model.N
    for o in overrides:
        group, option = o.split("=")
        if group == "dynamics":
            assert s.dynamics.name == option
    if s.data.kind != "powerlaw_eigen":
        assert _pool(s) > s.data.P


def test_train_defaults_match_brief(compose):
    s = settings_from_config(compose("train"))
    assert s.model.kind == "eigenfeature" and 1000 <= s.model.N <= 2000
    assert 200 <= s.data.P <= 500
    assert s.data.kind == "powerlaw_eigen"
    assert s.dynamics.name == "gradient_flow"
    assert s.data.label_noise > 0
    assert s.dynamics.dt is None


def test_no_target_strings(conf_dir):
    """No object construction from YAML, except Hydra's own callback mechanism in train.yaml."""
    for path in conf_dir.rglob("*.yaml"):
        cfg = yaml.safe_load(path.read_text()) or {}
        callbacks = (cfg.get("hydra") or {}).pop("callbacks", {}) if isinstance(cfg, dict) else {}
        assert "_target_" not in yaml.safe_dump(cfg), path
        for name, cb in (callbacks or {}).items():
            assert cb["_target_"].startswith("rfscaling.studies."), (path, name)


def test_run_dirs_under_runs(conf_dir):
    for name in PRIMARY:
        hydra_cfg = yaml.safe_load((conf_dir / f"{name}.yaml").read_text())["hydra"]
        assert hydra_cfg["run"]["dir"].startswith("runs/${now:")
        assert hydra_cfg["sweep"]["dir"].startswith("runs/multirun/")


def test_typo_in_key_fails_at_composition(compose):
    with pytest.raises(ConfigCompositionException):
        compose("train", ["data.Q=3"])
    with pytest.raises(ConfigCompositionException):
        compose("train", ["data.P=abc"])


def test_settings_are_frozen(compose):
    s = settings_from_config(compose("train"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.data.P = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1  # type: ignore[misc]


def test_null_resolution(compose):
    s = settings_from_config(compose("train", ["model.N=100", "model.M=null"]))
    assert s.model.M is None and s.model.teacher_modes == 100
    s = settings_from_config(compose("train", ["model.N=100", "model.M=400"]))
    assert s.model.teacher_modes == 400
    s = settings_from_config(compose("train", ["data=gaussian_powerlaw", "model=random_features",
                                               "model.N=100", "data.P=50"]))
    assert s.data.pool_size is None and _pool(s) == 400
    s = settings_from_config(compose("train", ["data=digits", "model=random_features", "model.N=2000"]))
    assert _pool(s) == 1797
    s = settings_from_config(compose("train", ["dynamics.dt=0.001"]))
    assert s.dynamics.dt == 0.001


def test_device_auto_resolves():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")


def test_replicas_one_ok_without_noise_or_split(compose):
    s = settings_from_config(compose("train", ["ensemble.replicas=1", "data.label_noise=0"]))
    assert s.ensemble.replicas == 1 and s.data.label_noise == 0 == s.dynamics.temperature
    s = settings_from_config(compose("train", ["ensemble.replicas=1", "ensemble.estimate_variance=false"]))
    assert s.ensemble.replicas == 1


def test_plain_dict_input(compose):
    d = OmegaConf.to_container(compose("train"), resolve=True)
    s = settings_from_config(d)
    assert s == settings_from_config(compose("train"))


# --------------------------------------------------------------------------------------------
# Bad input: one ConfigError line naming the key

BAD_OVERRIDES = [
    (["data.P=-3"], "data.P"),
    (["data.P=0"], "data.P"),
    (["model.N=0"], "model.N"),
    (["model.N=-5"], "model.N"),
    (["model.M=10"], "model.M"),
    (["data.alpha=0"], "data.alpha"),
    (["data.beta=-1"], "data.beta"),
    (["data.lam_1=0"], "data.lam_1"),
    (["data.c=-1"], "data.c"),
    (["data.label_noise=-0.5"], "data.label_noise"),
    (["data.input_dim=0"], "data.input_dim"),
    (["data.teacher=learned"], "data.teacher"),
    (["data.kind=images"], "data.kind"),
    (["data.target=guess"], "data.target"),
    (["dynamics.temperature=-0.1"], "dynamics.temperature"),
    (["dynamics=weight_decay", "dynamics.weight_decay=-1"], "dynamics.weight_decay"),
    (["dynamics=weight_decay", "dynamics.weight_decay=0"], "dynamics.weight_decay"),
    (["dynamics=bayes", "dynamics.weight_decay=0"], "dynamics.weight_decay"),
    (["dynamics=bayes", "dynamics.temperature=0"], "dynamics.temperature"),
    (["dynamics=langevin", "dynamics.temperature=0"], "dynamics.temperature"),
    (["dynamics=gradient_flow", "dynamics.weight_decay=0.1"], "dynamics.weight_decay"),
    (["dynamics=gradient_flow", "dynamics.temperature=0.1"], "dynamics.temperature"),
    (["dynamics.name=adam"], "dynamics.name"),
    (["dynamics.dt=0"], "dynamics.dt"),
    (["dynamics.dt=-0.001"], "dynamics.dt"),
    (["dynamics.dt=5000"], "dynamics.dt"),
    (["dynamics.t_max=0"], "dynamics.t_max"),
    (["dynamics.t_max=inf"], "dynamics.t_max"),
    (["dynamics.t_max=nan"], "dynamics.t_max"),
    (["dynamics.n_evals=1"], "dynamics.n_evals"),
    (["dynamics.max_stride=3"], "dynamics.max_stride"),
    (["dynamics.max_stride=0"], "dynamics.max_stride"),
    (["dynamics.init_variance=-1"], "dynamics.init_variance"),
    (["ensemble.replicas=1"], "ensemble.replicas"),
    (["ensemble.replicas=0", "ensemble.estimate_variance=false"], "ensemble.replicas"),
    (["ensemble.datasets=0"], "ensemble.datasets"),
    (["hooks.early_stopping.patience=0"], "hooks.early_stopping.patience"),
    (["hooks.checkpoint.every=0"], "hooks.checkpoint.every"),
    (["seed=-1"], "seed"),
    (["dtype=float16"], "dtype"),
    (["device=tpu"], "device"),
    (["model.nonlinearity=softplus"], "model.nonlinearity"),
    (["model.kind=transformer"], "model.kind"),
    (["data=digits"], "model.kind"),  # eigenfeature student needs eigenfeature data
    (["data=digits", "model=random_features", "data.target=powerlaw_teacher"], "data.target"),
    (["data=digits", "model=random_features", "data.pool_size=5000"], "data.pool_size"),
    (["data=digits", "model=random_features", "data.P=1800"], "data.P"),
    (["data=gaussian_powerlaw", "model=random_features", "data.pool_size=10"], "data.pool_size"),
    (["data=gaussian_powerlaw", "model=eigenfeature"], "model.kind"),
    (["data.target=labels"], "data.target"),
    (["data=powerlaw", "data.target=teacher_network"], "data.target"),
]


def _check_error(exc: ConfigError, key: str) -> None:
    msg = str(exc)
    assert "\n" not in msg
    assert msg.startswith(f"{key}="), msg
    assert exc.key == key
    assert ": " in msg


@pytest.mark.parametrize("overrides,key", BAD_OVERRIDES, ids=lambda v: ",".join(v) if isinstance(v, list) else v)
def test_bad_override_names_key(compose, overrides, key):
    cfg = compose("train", overrides)
    with pytest.raises(ConfigError) as info:
        settings_from_config(cfg)
    _check_error(info.value, key)


def test_example_message(compose):
    with pytest.raises(ConfigError, match=r"^data\.P=-3: must be a positive integer$"):
        settings_from_config(compose("train", ["data.P=-3"]))


def test_cuda_without_cuda(compose):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError) as info:
        settings_from_config(compose("train", ["device=cuda"]))
    _check_error(info.value, "device")


def _set(d: dict, dotted: str, value) -> None:
    *head, last = dotted.split(".")
    for h in head:
        d = d[h]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()

# Wrong types that a structured schema rejects at composition, and that can also reach the edge
# from a plain dict / untyped DictConfig (e.g. a config built in a notebook): the edge merges it
# into the schema, so OmegaConf's conversion applies exactly as on the command line.
BAD_RAW = [
    ("data.P", True),
    ("data.P", 2.5),
    ("data.P", "twelve"),
    ("model.N", None),
    ("data.alpha", None),  # optional in the schema, needed by the power-law data set
    ("data.alpha", "one"),
    ("data.label_noise", float("inf")),
    ("theory.enabled", "maybe"),
    ("hooks.tensorboard", "sometimes"),
    ("dynamics.n_evals", 10.5),
    ("dynamics.max_stride", 2.5),
    ("seed", 1.5),
    ("dynamics", None),
    ("hooks.early_stopping", 3),
]
# What the command line accepts is accepted from a mapping too (OmegaConf's own conversions);
# a key left out takes the schema's default.
COERCED = [("data.P", "12", 12), ("theory.enabled", "yes", True), ("hooks.tensorboard", 1, True),
           ("data.P", _DELETE, 256)]


@pytest.mark.parametrize("key,value", BAD_RAW, ids=lambda v: repr(v) if not isinstance(v, str) else v)
def test_bad_raw_value_names_key(compose, key, value):
    d = OmegaConf.to_container(compose("train"), resolve=True)
    _set(d, key, value)
    for cfg in (d, OmegaConf.create(d)):
        with pytest.raises(ConfigError) as info:
            settings_from_config(cfg)
        _check_error(info.value, key)


@pytest.mark.parametrize("key,value,expected", COERCED, ids=lambda v: repr(v) if not isinstance(v, str) else v)
def test_raw_values_convert_as_on_the_command_line(compose, key, value, expected):
    d = OmegaConf.to_container(compose("train"), resolve=True)
    _set(d, key, value)
    got = settings_from_config(d)
    for part in key.split("."):
        got = getattr(got, part)
    assert got == expected and type(got) is type(expected)


def test_configs_are_the_objects_library_code_takes(compose):
    """to_config of a composed config and of the same values as a plain dict agree, and the
    result is what TrainConfig() with those values is."""
    cfg = compose("train", ["data.P=64", "dynamics=langevin", "dynamics.temperature=0.02"])
    a = to_config(cfg, TrainConfig)
    b = to_config(OmegaConf.to_container(cfg, resolve=True), TrainConfig)
    assert a == b and a.data.P == 64 and a.dynamics.temperature == 0.02
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.dynamics.temperature = 0.1  # type: ignore[misc]


def test_config_error_is_value_error():
    e = ConfigError("data.P", -3, "must be a positive integer")
    assert isinstance(e, ValueError)
    assert str(e) == "data.P=-3: must be a positive integer"


# --------------------------------------------------------------------------------------------
# One-line errors (the apps' error boundary itself: tests/test_app.py)


def test_one_line_collapses_causes():
    try:
        try:
            raise ValueError("Value 'abc' could not be converted\n  full_key: data.P")
        except ValueError as inner:
            raise RuntimeError("Error merging override data.P=abc") from inner
    except RuntimeError as exc:
        msg = one_line(exc)
    assert "\n" not in msg
    assert msg.startswith("Error merging override data.P=abc: Value 'abc'")


def test_data_kinds_have_presets():
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in (CONF / "data").glob("*.yaml")}
    assert kinds == set(DATASETS.names())


@pytest.mark.parametrize(
    "group,option",
    [(g, o) for g in ("data", "model", "dynamics", "ensemble", "theory", "hooks") for o in _options(g)],
)
def test_preset_matches_group_schema(group, option):
    """Each preset file on its own merges into its group's schema and sets every key."""
    from rfscaling.config import GROUP_SCHEMAS, schema

    raw = OmegaConf.load(CONF / group / f"{option}.yaml")
    merged = OmegaConf.merge(schema(GROUP_SCHEMAS[group]), raw)
    assert set(raw.keys()) == set(merged.keys()), "preset should set every key of its group"
