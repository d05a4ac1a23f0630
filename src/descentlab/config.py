"""Typed schemas for the Hydra configs, value checks, and the config's identity (flat params, hash).

The schemas live in Hydra's ConfigStore, so a misspelled key or a wrong type fails when the config
is composed; `validate` then checks values (lr > 0, batch_size >= 1, ...) before any MLflow run exists.
Optimizer schemas are generated from `descentlab.optim`, so defaults have one source of truth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from descentlab.data import DATASET_NAMES
from descentlab.identity import NON_SEMANTIC_KEYS, is_semantic  # noqa: F401 - NON_SEMANTIC_KEYS re-exported
from descentlab.nn import ACTIVATIONS, init_std
from descentlab.objectives import OBJECTIVES
from descentlab.optim import OPTIMIZERS, make_optimizer
from descentlab.training import SAMPLING

TASKS = ("classify", "function2d")
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
    """A config value outside what is allowed; the message is one line naming key, value and range."""


@dataclass
class ModelConf:
    name: str = MISSING
    hidden_sizes: list[int] = MISSING
    activation: str = "relu"
    weight_init: Any = "he"  # "he", "xavier" or a float std (a Union the schema cannot express)
    batch_norm: bool = False
    dropout: float = 0.0
    weight_decay: float = 0.0
    dtype: str = "float32"


@dataclass
class DatasetConf:
    name: str = MISSING
    path: str | None = None
    download: bool = True


@dataclass
class ClassifyTaskConf:
    name: str = "classify"


@dataclass
class Function2dTaskConf:
    name: str = "function2d"
    objective: str = "book"
    start: list[float] = field(default_factory=lambda: [-7.0, 2.0])
    steps: int = 30
    # Per-optimizer learning rates a preset may interpolate into optimizer.lr (Figure 6-8 uses four).
    lr_by_optimizer: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainingConf:
    iterations: int = 2000
    batch_size: int = 128
    eval_every: int = 100
    sampling: str = "replacement"
    eval_train_subset: int | None = 1_000
    eval_test_subset: int | None = 1_000
    blas_threads: int | None = 1  # 1: fastest on these small matrices, same bits under every launcher
    progress: bool = True


@dataclass
class TrackingConf:
    enabled: bool = True  # false (tracking=none): train without recording anything
    uri: str | None = None
    experiment: str = "optimizer-comparison"
    store_dir: str = "mlruns"
    flush_every: int = 10_000  # metric points buffered per write ...
    flush_seconds: float = 10.0  # ... or seconds the oldest waits: a 2,000-step run writes once, at its end
    store_every: int = 1
    # Free space the store's folder must have before a run starts: a full disk found mid-run can leave a
    # run that cannot even be marked FAILED. 0 turns the check off.
    min_free_mb: float = 50.0


@dataclass
class Config:
    optimizer: Any = MISSING
    model: ModelConf = MISSING
    dataset: DatasetConf = MISSING
    task: Any = MISSING
    training: TrainingConf = field(default_factory=TrainingConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    seed: int = 0
    force: bool = False


def optimizer_schema(name: str) -> type:
    """A dataclass with `name` and every hyperparameter of optimizer `name`, defaults from its class."""
    defaults = OPTIMIZERS[name]().hyperparams
    fields: list[tuple[str, type, Any]] = [("name", str, field(default=name))]
    fields += [(key, float, field(default=value)) for key, value in defaults.items()]
    return make_dataclass(f"{OPTIMIZERS[name].__name__}Conf", fields)


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore, where the YAML files extend them (`/schema_model_mlp@_here_`).

    They are stored outside any config group, so `--help` and Hydra's "available options" list only the groups a
    user picks from. Also registers the `mlp_name` resolver the model presets name themselves with.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="schema_model_mlp", node=ModelConf)
    cs.store(name="schema_dataset_dataset", node=DatasetConf)
    cs.store(name="schema_task_classify", node=ClassifyTaskConf)
    cs.store(name="schema_task_function2d", node=Function2dTaskConf)
    for name in OPTIMIZERS:
        cs.store(name=f"schema_optimizer_{name}", node=optimizer_schema(name))
    OmegaConf.register_new_resolver("mlp_name", lambda sizes: mlp_name(list(sizes)), replace=True)


def mlp_name(hidden_sizes: list[int]) -> str:
    """The name of an MLP from its hidden sizes: `mlp_5x100` (5 affine layers, all hidden of width 100),
    `mlp_3x200-100` (widths differ), `linear` (no hidden layer). Presets use it, so names never lie."""
    if not hidden_sizes:
        return "linear"
    widths = [str(w) for w in hidden_sizes]
    width = widths[0] if len(set(widths)) == 1 else "-".join(widths)
    return f"mlp_{len(widths) + 1}x{width}"


_DERIVED_NAME = re.compile(r"(mlp_\d+x[\d-]+|linear)")


def validate(cfg: DictConfig) -> None:
    """Check every value the schemas cannot, then the store; raise ConfigError with one line on the first bad one.

    Store problems (unwritable folder, too little free space) raise TrackingUnavailableError.
    """
    check_targets(cfg)
    check_known_keys(cfg)
    for group in ("optimizer", "task"):
        _check_preset_name(cfg, group)
    _check_optimizer(cfg.optimizer)
    _check_int("seed", cfg.seed, 0)
    if cfg.task.name not in TASKS:
        raise ConfigError(f"task.name must be one of {', '.join(TASKS)}, got {cfg.task.name!r}")
    if cfg.task.name == "function2d":
        _check_task_2d(cfg.task)
    else:
        _check_classify(cfg)
    _check_int("tracking.flush_every", cfg.tracking.flush_every, 1)
    _check_non_negative("tracking.flush_seconds", cfg.tracking.flush_seconds)
    _check_int("tracking.store_every", cfg.tracking.store_every, 1)
    if cfg.tracking.enabled:
        check_store(cfg.tracking)


def _check_classify(cfg: DictConfig) -> None:
    _check_model(cfg.model)
    if cfg.dataset.name not in DATASET_NAMES:
        raise ConfigError(f"dataset.name must be one of {', '.join(DATASET_NAMES)}, got {cfg.dataset.name!r}")
    t = cfg.training
    _check_int("training.iterations", t.iterations, 1)
    _check_int("training.batch_size", t.batch_size, 1)
    _check_int("training.eval_every", t.eval_every, 1)
    for key in ("eval_train_subset", "eval_test_subset"):
        if t[key] is not None:
            _check_int(f"training.{key}", t[key], 1)
    if t.blas_threads is not None:
        _check_int("training.blas_threads", t.blas_threads, 1)
    if t.sampling not in SAMPLING:
        raise ConfigError(f"training.sampling must be one of {', '.join(SAMPLING)}, got {t.sampling!r}")


def check_targets(cfg: DictConfig) -> None:
    """Reject `_target_` keys that would make Hydra import and call something outside descentlab.

    descentlab instantiates nothing from the job config, so a `_target_` there is always an error; under
    `hydra.callbacks` (which Hydra instantiates) only `descentlab.` targets are allowed. Hydra itself only
    instantiates launchers and sweepers registered under `hydra_plugins`, and blocks `os.system` and
    friends, but allows any other importable callable: this is the allow-list on top.
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    for path, target in _targets(tree, ""):
        if path.startswith("hydra.callbacks."):
            if isinstance(target, str) and target.startswith("descentlab."):
                continue
            raise ConfigError(f"{path}._target_ must name a class in descentlab (descentlab.…), got {target!r}")
        if path == "hydra" or path.startswith("hydra."):
            continue  # launcher/sweeper: Hydra instantiates only registered hydra_plugins classes
        where = f"{path}._target_" if path else "_target_"
        raise ConfigError(f"{where} is not allowed: descentlab instantiates no objects from the job config, "
                          f"got _target_={target!r}")


def check_known_keys(cfg: DictConfig, path: str = "") -> None:
    """Reject keys the schema does not know, however they were added (`+foo=1`, `++model.extra=3`).

    Hydra refuses a misspelled `foo=1` against the typed schema, but `+`/`++` add keys to it; descentlab would
    then log them as params and hash them into the config's identity while nothing reads them.
    """
    schema = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(schema):
        return  # a free dict (task.lr_by_optimizer) or a value
    known = {f.name: f for f in dataclasses.fields(schema)}
    for key in cfg:
        dotted = f"{path}.{key}" if path else str(key)
        if key == "hydra" and not path:
            continue  # Hydra's own config, in the launching process
        if key not in known:
            raise ConfigError(f"unknown key {dotted!r} (added with + or ++): not in {schema.__name__!r}, whose keys "
                              f"are {', '.join(known)}")
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            check_known_keys(node, dotted)


def _check_preset_name(cfg: DictConfig, group: str) -> None:
    """`optimizer.name` and `task.name` must name the option whose settings the group holds: `optimizer=adam
    optimizer.name=sgd` would run SGD with Adam's keys, or fail inside it."""
    node = cfg[group]
    schema = OmegaConf.get_type(node)
    fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    expected = fields["name"].default if "name" in fields else None
    if isinstance(expected, str) and expected != MISSING and node.name != expected:
        raise ConfigError(f"{group}.name={node.name!r} does not match the {group} settings in use ({expected!r}, "
                          f"with keys {', '.join(k for k in fields if k != 'name') or 'none'}); choose it with "
                          f"{group}={node.name} instead")


def _targets(tree: object, path: str) -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        if key == "_target_":
            found.append((path, value))
        else:
            found += _targets(value, f"{path}.{key}" if path else str(key))
    return found


def restrict_targets() -> None:
    """Make Hydra check `check_targets` before it instantiates the `hydra.callbacks` of a config.

    Hydra builds its callbacks before our job function runs, so the check has to sit in front of
    `hydra._internal.callbacks.Callbacks` (Hydra 1.3). Idempotent. The job's own config is also checked
    in `validate`, for per-job sweep overrides.
    """
    from hydra._internal import callbacks

    init = callbacks.Callbacks.__init__
    if getattr(init, "descentlab_checked", False):
        return

    def checked_init(self: Any, config: DictConfig | None = None) -> None:
        if config is not None:
            check_targets(config)
        init(self, config)

    checked_init.descentlab_checked = True  # type: ignore[attr-defined]
    callbacks.Callbacks.__init__ = checked_init  # type: ignore[method-assign]


def check_store(tracking: DictConfig) -> None:
    """The tracking URI is well formed and a local store's folder is writable with room to spare.

    Runs before any MLflow import or run, so a bad URI, a read-only folder or a full disk is one line, not
    a traceback or a run that cannot be closed.
    """
    from descentlab.tracking.store import check_store_writable, resolve_tracking_uri

    _check_non_negative("tracking.min_free_mb", tracking.min_free_mb)
    source = "tracking.uri" if tracking.uri else "MLFLOW_TRACKING_URI"
    try:
        uri = resolve_tracking_uri(tracking.uri, tracking.store_dir)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    check_store_writable(uri, tracking.min_free_mb)


def _check_optimizer(opt: DictConfig) -> None:
    try:
        make_optimizer(opt.name, **optimizer_hyperparams(opt))
    except ValueError as exc:
        raise ConfigError(f"optimizer: {exc}") from None


def _check_model(model: DictConfig) -> None:
    sizes = list(model.hidden_sizes)
    for i, size in enumerate(sizes):
        _check_int(f"model.hidden_sizes[{i}]", size, 1)
    derived = mlp_name(sizes)
    if _DERIVED_NAME.fullmatch(str(model.name)) and model.name != derived:
        raise ConfigError(f"model.name={model.name!r} names another architecture than model.hidden_sizes={sizes} "
                          f"({derived!r}); leave model.name to the preset, or give a name of your own")
    if model.activation not in ACTIVATIONS:
        raise ConfigError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {model.activation!r}")
    try:
        init_std(model.weight_init, 1)
    except ValueError as exc:
        raise ConfigError(f"model.{exc}") from None
    if not 0.0 <= model.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {model.dropout!r}")
    _check_non_negative("model.weight_decay", model.weight_decay)
    if model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {model.dtype!r}")


def _check_task_2d(task: DictConfig) -> None:
    if task.objective not in OBJECTIVES:
        raise ConfigError(f"task.objective must be one of {', '.join(OBJECTIVES)}, got {task.objective!r}")
    start = list(task.start)
    if len(start) != 2 or not all(math.isfinite(v) for v in start):
        raise ConfigError(f"task.start must be two finite numbers [x, y], got {start!r}")
    _check_int("task.steps", task.steps, 1)


def _check_non_negative(key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{key} must be a finite number >= 0, got {value!r}")


def _check_int(key: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """The resolved config as dotted keys (`optimizer.lr`, `model.hidden_sizes`, ...), lists kept whole."""
    tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def run_params(cfg: DictConfig) -> dict[str, Any]:
    """The flat config a run uses: a 2-D descent has no model, data set or training loop."""
    flat = flatten(cfg)
    if cfg.task.name == "function2d":
        flat = {k: v for k, v in flat.items() if not k.startswith(("model.", "dataset.", "training."))}
    return flat


def semantic_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's flat config without the keys that do not change what it computes."""
    return {
        key: value
        for key, value in run_params(cfg).items()
        if is_semantic(key)
    }


def optimizer_hyperparams(opt: DictConfig) -> dict[str, float]:
    """The optimizer group without its `name`: the keyword arguments of its class."""
    return {k: v for k, v in OmegaConf.to_container(opt, resolve=True).items() if k != "name"}


def config_hash(cfg: DictConfig) -> str:
    """A short, stable SHA-256 of the semantic config: equal hashes mean the same computation."""
    blob = json.dumps(semantic_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_name(cfg: DictConfig) -> str:
    """What ran, readable in the MLflow UI: `adam-mlp_5x100-mnist_5k-s0` or `adam-book-s0`."""
    if cfg.task.name == "function2d":
        return f"{cfg.optimizer.name}-{cfg.task.objective}-s{cfg.seed}"
    return f"{cfg.optimizer.name}-{cfg.model.name}-{cfg.dataset.name}-s{cfg.seed}"
