"""The config: schemas (`schema`), pure value checks (`validate`), identity (`identity`), typed settings (`settings`).

Names are loaded on first use: `descentlab.analysis` reads `config.identity` (stdlib only) without paying for
omegaconf and Hydra. Importing `config.schema` (which `validate`, `settings` and `register_schemas` do) registers
the resolvers the YAML files use (`mlp_name`, the default `paths.*`), so every process that reads a job's config
can resolve it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from descentlab.config.checks import (
        ConfigError,
        check_known_keys,
        check_targets,
        validate,
    )
    from descentlab.config.hydra_guard import (
        restrict_targets,
    )
    from descentlab.config.identity import (
        NON_SEMANTIC_KEYS,
        SEED_KEY,
        config_hash,
        flatten,
        is_semantic,
        params_hash,
        params_name,
        run_name,
        run_params,
        semantic_config,
    )
    from descentlab.config.schema import (
        DTYPES,
        NUMERICS_BACKENDS,
        TASKS,
        Config,
        mlp_name,
        optimizer_hyperparams,
        optimizer_schema,
        register_schemas,
    )
    from descentlab.config.settings import (
        JobIdentity,
        JobSettings,
        check_store,
        job_settings,
        tracking_settings,
    )

_WHERE = {
    "Config": "schema",
    "ConfigError": "checks",
    "DTYPES": "schema",
    "JobIdentity": "settings",
    "JobSettings": "settings",
    "NON_SEMANTIC_KEYS": "identity",
    "NUMERICS_BACKENDS": "schema",
    "SEED_KEY": "identity",
    "TASKS": "schema",
    "check_known_keys": "checks",
    "check_store": "settings",
    "check_targets": "checks",
    "config_hash": "identity",
    "flatten": "identity",
    "job_settings": "settings",
    "params_name": "identity",
    "params_hash": "identity",
    "is_semantic": "identity",
    "mlp_name": "schema",
    "optimizer_hyperparams": "schema",
    "optimizer_schema": "schema",
    "register_schemas": "schema",
    "restrict_targets": "hydra_guard",
    "run_name": "identity",
    "run_params": "identity",
    "semantic_config": "identity",
    "tracking_settings": "settings",
    "validate": "checks",
}
__all__ = [
    "DTYPES",
    "NON_SEMANTIC_KEYS",
    "NUMERICS_BACKENDS",
    "SEED_KEY",
    "TASKS",
    "Config",
    "ConfigError",
    "JobIdentity",
    "JobSettings",
    "check_known_keys",
    "check_store",
    "check_targets",
    "config_hash",
    "flatten",
    "is_semantic",
    "job_settings",
    "mlp_name",
    "optimizer_hyperparams",
    "optimizer_schema",
    "params_hash",
    "params_name",
    "register_schemas",
    "restrict_targets",
    "run_name",
    "run_params",
    "semantic_config",
    "tracking_settings",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
