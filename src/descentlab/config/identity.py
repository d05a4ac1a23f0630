"""A config's identity: its flat params, the keys that do not change what a run computes, its hash and run name.

Stdlib only at import (omegaconf is imported when a DictConfig is flattened), so `descentlab.analysis`, which
groups tracked runs without Hydra, reads the same list as the hash: two runs that differ only in
NON_SEMANTIC_KEYS are the same configuration.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

# Keys that change how a run is executed or stored, not what it computes: left out of the config hash,
# so moving the data folder or the store, changing thread counts or the numerics backend (the same bits),
# does not re-run finished work.
NON_SEMANTIC_KEYS = (
    "force",
    "tracking",
    "paths",
    "numerics",
    "dataset.path",
    "dataset.download",
    "training.blas_threads",
    "training.progress",
)
# Knobs added after runs were first tracked, with the value that computes what runs without the knob computed. At
# that value a knob is left out of a run's params (and so of its hash and of the analysis' grouping): runs tracked
# before it existed stay the same configuration as new runs that leave it alone.
NEUTRAL_VALUES: dict[str, Any] = {
    "dataset.train_subset": None,
    "dataset.validation": 0.0,
    "task.lr_by_optimizer": {},
    "task.lr_factor": 1.0,
}
# The key whose runs are repeats of one configuration: analysis pools over it and nothing else.
SEED_KEY = "seed"


def is_semantic(key: str) -> bool:
    """True unless `key` is one of NON_SEMANTIC_KEYS or lies under one (`tracking.uri` under `tracking`)."""
    return not any(key == skip or key.startswith(f"{skip}.") for skip in NON_SEMANTIC_KEYS)


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """The resolved config as dotted keys (`optimizer.lr`, `model.hidden_sizes`, ...), lists kept whole."""
    if isinstance(cfg, dict):
        tree = cfg
    else:
        from omegaconf import OmegaConf

        tree = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def run_params(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The flat config a run uses: a 2-D descent has no model, data set or training loop; the activation histograms
    (a model at its initial weights) no optimizer, data set or training loop."""
    flat = flatten(cfg)
    unused = _UNUSED_BY_TASK.get(flat.get("task.name"))
    if unused:
        flat = {k: v for k, v in flat.items() if not k.startswith(unused)}
    return _without_neutral(flat)


def _without_neutral(flat: dict[str, Any]) -> dict[str, Any]:
    """`flat` without the knobs at their NEUTRAL_VALUES (and the validation split's seed when there is none)."""
    neutral = {key for key, value in NEUTRAL_VALUES.items() if key in flat and flat[key] == value}
    if "dataset.validation" in neutral:
        neutral.add("dataset.validation_seed")
    return {k: v for k, v in flat.items() if k not in neutral}


_UNUSED_BY_TASK: dict[object, tuple[str, ...]] = {
    "function2d": ("model.", "dataset.", "training."),
    "activations": ("optimizer.", "dataset.", "training."),
}


def semantic_config(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The run's flat config without the keys that do not change what it computes."""
    return semantic_params(run_params(cfg))


def semantic_params(params: dict[str, Any]) -> dict[str, Any]:
    """Flat params without the keys that do not change what a run computes."""
    return {key: value for key, value in params.items() if is_semantic(key)}


def config_hash(cfg: DictConfig | dict[str, Any]) -> str:
    """A short, stable SHA-256 of the semantic config: equal hashes mean the same computation."""
    return params_hash(run_params(cfg))


def params_hash(params: dict[str, Any]) -> str:
    """`config_hash` of a run's flat params (`run_params`)."""
    blob = json.dumps(semantic_params(params), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def group_hash(params: dict[str, Any]) -> str:
    """`params_hash` of a run's flat params without the seed: equal for the repeats of one configuration (the runs
    the analysis pools). A run outside a sweep finds its siblings by it (`tracking.best`, its `config_group` tag)."""
    return params_hash({key: value for key, value in params.items() if key != SEED_KEY})


def run_name(cfg: DictConfig | dict[str, Any]) -> str:
    """What ran, readable in the MLflow UI: `adam-mlp_5x100-mnist_5k-s0` or `adam-book-s0`."""
    return params_name(flatten(cfg))


def params_name(flat: dict[str, Any]) -> str:
    """`run_name` of a flat config (`flatten`, `run_params`)."""
    if flat["task.name"] == "function2d":
        return f"{flat['optimizer.name']}-{flat['task.objective']}-s{flat['seed']}"
    if flat["task.name"] == "activations":
        return f"activations-{flat['model.activation']}-{flat['model.weight_init']}-s{flat['seed']}"
    knobs = "".join(f"-{knob}" for knob in _changed_knobs(flat))
    return f"{flat['optimizer.name']}-{flat['model.name']}-{flat['dataset.name']}{knobs}-s{flat['seed']}"


def _changed_knobs(flat: dict[str, Any]) -> list[str]:
    """Short marks for what sets a run apart from its optimizer's and model's defaults (`lr0.0316`, `w0.01`, `bn`,
    `dropout0.2`, `wd0.1`): the jobs of a learning-rate grid or a batch-norm sweep get names that differ in the UI."""
    from descentlab.optim import OPTIMIZERS  # numpy; only a job names its run

    marks = []
    name = flat.get("optimizer.name")
    lr = flat.get("optimizer.lr")
    if name in OPTIMIZERS and lr is not None and lr != OPTIMIZERS[name]().hyperparams.get("lr"):
        marks.append(f"lr{lr:.3g}")
    init = flat.get("model.weight_init", "he")
    if init != "he":
        marks.append(str(init) if isinstance(init, str) else f"w{init:.3g}")
    if flat.get("model.batch_norm"):
        marks.append("bn")
    for key, mark in (("model.dropout", "dropout"), ("model.weight_decay", "wd")):
        if flat.get(key):
            marks.append(f"{mark}{flat[key]:g}")
    return marks
