"""Value checks the schemas cannot express: pure functions of the composed config, no file or network I/O.

`validate` raises ConfigError with one line naming the key, the value and what is allowed, on the first bad
value. The store's own checks (a writable folder with room, a server that answers) belong to the job's
set-up (`config.settings.check_store`), which runs right after this and still before any run exists.
"""

from __future__ import annotations

import dataclasses
import math
import re

from omegaconf import MISSING, DictConfig, OmegaConf

from descentlab.config.schema import (
    DTYPES,
    NUMERICS_BACKENDS,
    SQLITE_SYNCHRONOUS,
    SWEEP_PARENT,
    TASKS,
    WEIGHTS,
    mlp_name,
    optimizer_hyperparams,
)
from descentlab.data import DATASET_NAMES
from descentlab.nn import ACTIVATIONS, init_std
from descentlab.objectives import OBJECTIVES
from descentlab.optim import make_optimizer
from descentlab.training import SAMPLING


class ConfigError(ValueError):
    """A config value outside what is allowed; the message is one line naming key, value and range."""


_DERIVED_NAME = re.compile(r"(mlp_\d+x[\d-]+|linear)")


def validate(cfg: DictConfig) -> None:
    """Check every value the schemas cannot; raise ConfigError with one line on the first bad one.

    No I/O: the store (a writable folder with room, a well-formed URI) is checked by `check_store` next.
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
    elif cfg.task.name == "activations":
        _check_model(cfg.model)
        _check_int("task.n_inputs", cfg.task.n_inputs, 1)
        _check_int("task.bins", cfg.task.bins, 1)
    else:
        _check_classify(cfg)
    _check_int("tracking.flush_every", cfg.tracking.flush_every, 1)
    check_non_negative("tracking.flush_seconds", cfg.tracking.flush_seconds)
    _check_int("tracking.store_every", cfg.tracking.store_every, 1)
    _check_runtime(cfg)
    if cfg.tracking.enabled:
        check_non_negative("tracking.min_free_mb", cfg.tracking.min_free_mb)


def _check_runtime(cfg: DictConfig) -> None:
    """The knobs of how a job runs: liveness, retries, SQLite, folders, numerics backend."""
    t = cfg.tracking
    _check_positive("tracking.heartbeat_s", t.heartbeat_s)
    _check_positive("tracking.stale_after_s", t.stale_after_s)
    check_non_negative("tracking.retry_s", t.retry_s)
    _check_choice("tracking.sqlite.synchronous", t.sqlite.synchronous, SQLITE_SYNCHRONOUS)
    _check_choice("tracking.sweep_parent", t.sweep_parent, SWEEP_PARENT)
    _check_choice("tracking.weights", t.weights, WEIGHTS)
    for key in ("root", "cache_dir"):
        if OmegaConf.is_interpolation(cfg.paths, key):
            continue  # the default (a resolver's folder) or another key's value, checked there: not parsed again
        value = cfg.paths[key]
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"paths.{key} must be a folder (a non-empty path), got {value!r}")
    _check_choice("numerics.backend", cfg.numerics.backend, NUMERICS_BACKENDS)


def _check_choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def _check_positive(key: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{key} must be a finite number > 0, got {value!r}")



def _check_classify(cfg: DictConfig) -> None:
    _check_model(cfg.model)
    if cfg.dataset.name not in DATASET_NAMES:
        raise ConfigError(f"dataset.name must be one of {', '.join(DATASET_NAMES)}, got {cfg.dataset.name!r}")
    _check_dataset(cfg.dataset)
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



def _check_dataset(ds: DictConfig) -> None:
    if ds.train_subset is not None:
        _check_int("dataset.train_subset", ds.train_subset, 1)
    if not (math.isfinite(ds.validation) and 0.0 <= ds.validation < 1.0):
        raise ConfigError(f"dataset.validation must be a fraction in [0, 1) of the training set (0: no validation "
                          f"set), got {ds.validation!r}")
    _check_int("dataset.validation_seed", ds.validation_seed, 0)


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
    check_non_negative("model.weight_decay", model.weight_decay)
    if model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {', '.join(DTYPES)}, got {model.dtype!r}")



def _check_task_2d(task: DictConfig) -> None:
    if task.objective not in OBJECTIVES:
        raise ConfigError(f"task.objective must be one of {', '.join(OBJECTIVES)}, got {task.objective!r}")
    start = list(task.start)
    if len(start) != 2 or not all(math.isfinite(v) for v in start):
        raise ConfigError(f"task.start must be two finite numbers [x, y], got {start!r}")
    _check_int("task.steps", task.steps, 1)



def check_non_negative(key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{key} must be a finite number >= 0, got {value!r}")



def _check_int(key: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")


