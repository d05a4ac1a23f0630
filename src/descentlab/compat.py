"""Every use of a library's private API, in one place (issue 16).

Each function here reaches into an internal of hydra, joblib/loky, mlflow or CPython that has no public
equivalent, says why, and has a test in tests/test_compat.py that fails when the library changes under it.
Nothing outside this module may touch a private attribute of those libraries.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------------- hydra and its joblib launcher plugin

# The `_target_` of hydra/launcher=basic: jobs run one after another in the launching process.
HYDRA_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def check_hydra_callbacks_with(check: Callable[[Any], None]) -> None:
    """Run `check(config)` before Hydra instantiates a config's `hydra.callbacks`.

    Hydra builds its callbacks (from `_target_` strings in the config) before any job function runs and offers
    no hook in front of that, so the check sits in front of `hydra._internal.callbacks.Callbacks.__init__`
    (Hydra 1.3). Idempotent.
    """
    from hydra._internal import callbacks

    init = callbacks.Callbacks.__init__
    if getattr(init, "descentlab_checked", False):
        return

    def checked_init(self: Any, config: Any = None) -> None:
        if config is not None:
            check(config)
        init(self, config)

    checked_init.descentlab_checked = True  # type: ignore[attr-defined]
    checked_init.__wrapped__ = init  # type: ignore[attr-defined]
    callbacks.Callbacks.__init__ = checked_init  # type: ignore[method-assign]


def hydra_basic_sweeper() -> type:
    """Hydra's BasicSweeper class (`hydra._internal.core_plugins.basic_sweeper`), which our sweeper plugin extends
    (it replaces only the pre-launch check)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper


def hydra_apply_value_overrides(overrides: Sequence[Any], config: Any) -> None:
    """Apply parsed value overrides (`seed=3`, `+a.b=1`) to a composed config exactly as Hydra does after composing
    (`ConfigLoaderImpl._apply_overrides_to_config`, Hydra 1.3): the same checks, the same
    `ConfigCompositionException` messages. Used by the sweeper plugin's fast pre-launch check."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    ConfigLoaderImpl._apply_overrides_to_config(list(overrides), config)


def joblib_launcher_kwargs(launcher: dict[str, Any]) -> dict[str, Any]:
    """The `joblib.Parallel` arguments hydra-joblib-launcher builds from its config (`hydra.launcher` minus
    `_target_`), so that work sent after the sweep reaches the same warm workers: joblib reuses its executor
    only for identical arguments. Mirrors `hydra_plugins.hydra_joblib_launcher._core.launch` (1.2).
    """
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    kwargs = {key: value for key, value in launcher.items() if key != "_target_"}
    kwargs["backend"] = "loky"  # what launch() passes besides the config
    process_joblib_cfg(kwargs)
    return kwargs


# ---------------------------------------------------------------------------------------------- mlflow

# MLflow offers no public handle on its SQL store (engine, sessions, ORM tables) nor on a run's artifact
# repository; descentlab uses them for the bulk write path (tracking.bulk), the SQLite PRAGMAs, the engine's
# disposal and the schema template (tracking.store), and artifact uploads without a `get_run` each
# (tracking.run). Nothing imports mlflow at module level here: callers import it only when they need it.


def mlflow_sql_store(client: Any) -> Any | None:
    """The `SqlAlchemyStore` behind an `MlflowClient` (`client._tracking_client.store`); None for any other store,
    a client that is not an `MlflowClient` (a test double decides by itself), or an MLflow laid out otherwise."""

    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")  # not loaded: not a SQL store
    store_class = getattr(module, "SqlAlchemyStore", None)
    if store_class is None:
        return None
    try:
        from mlflow.tracking import MlflowClient

        if not isinstance(client, MlflowClient):
            return None
        store = client._tracking_client.store
    except Exception:  # another MLflow layout: the public API still works
        return None
    return store if isinstance(store, store_class) else None


def mlflow_engine(client: Any) -> Any | None:
    """The SQLAlchemy engine of the client's SQL store (`store.engine`), or None."""
    return getattr(mlflow_sql_store(client), "engine", None)


def mlflow_dispose_engine(client: Any) -> None:
    """Close the pooled connections of the client's SQL store (before a file is edited or copied)."""
    engine = mlflow_engine(client)
    if engine is not None:
        engine.dispose()


def mlflow_on_sqlite_connect(client: Any, listener: Callable[[Any, Any], None]) -> bool:
    """Run `listener(dbapi_connection, record)` on every new connection of the client's SQL store, once per engine;
    pooled connections are closed so that all later ones get it. False when there is no such engine."""
    engine = mlflow_engine(client)
    if engine is None:
        return False
    import sqlalchemy

    if not sqlalchemy.event.contains(engine, "connect", listener):
        sqlalchemy.event.listen(engine, "connect", listener)
        engine.dispose()  # connections pooled so far were opened without it
    return True


def mlflow_write_session(store: Any) -> Any:
    """A context manager around one read-write ORM session (one transaction) of a SQL store; MLflow wraps
    database errors in `MlflowException` with the original as `__cause__`."""
    return store.ManagedSessionMaker(read_only=False)


@dataclass(frozen=True)
class MlflowOrm:
    """MLflow's ORM classes for the tables tracking.bulk writes and bulk reads use
    (`mlflow.store.tracking.dbmodels.models`)."""

    run: Any  # SqlRun: run_uuid, name, experiment_id, lifecycle_stage, status, start_time, end_time, artifact_uri
    metric: Any  # SqlMetric: run_uuid, key, value, timestamp, step, is_nan
    latest_metric: Any  # SqlLatestMetric: the same columns, one row per (run, key)
    param: Any  # SqlParam: run_uuid, key, value
    tag: Any  # SqlTag: run_uuid, key, value


def mlflow_orm() -> MlflowOrm | None:
    """MLflow's ORM models, or None when MLflow moved them (callers then use the public client)."""
    try:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    except ImportError:  # pragma: no cover - only when MLflow reorganises its modules
        return None
    return MlflowOrm(run=SqlRun, metric=SqlMetric, latest_metric=SqlLatestMetric, param=SqlParam, tag=SqlTag)


def mlflow_checked_params(params: Sequence[Any]) -> list[Any]:
    """`params` (MLflow `Param`s) checked as `log_batch` checks them (raising its errors), as it would store them."""
    from mlflow.utils.validation import _validate_batch_log_data, _validate_param_keys_unique

    _, checked, _ = _validate_batch_log_data([], list(params), [])
    _validate_param_keys_unique(checked)
    return list(checked)


def mlflow_artifact_repository(artifact_uri: str, tracking_uri: str) -> Any | None:
    """The artifact repository of a run's `artifact_uri` (what `MlflowClient.log_artifact` builds after a
    `get_run`), or None when this MLflow lacks the registry (callers then use the client)."""
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri
    except ImportError:  # pragma: no cover - only when MLflow reorganises its modules
        return None
    uri = add_databricks_profile_info_to_artifact_uri(artifact_uri, tracking_uri)
    return get_artifact_repository(uri, tracking_uri=tracking_uri)


# --------------------------------------------------------------------------------------------- CPython


def exit_at_once(code: int) -> None:
    """Leave now, running nothing (`os._exit`): the third Ctrl-C, when waiting for the jobs is refused."""
    import os

    os._exit(code)


# ============================================================================ Ray launcher (hydra/launcher=ray)
# hydra_plugins.descentlab_ray_launcher hands each Ray worker the launching process's Hydra state, as Hydra's own
# joblib and ray launchers do; Hydra 1.3 offers that only as `Singleton.get_state`/`set_state`.


def hydra_singleton_state() -> Any:
    """Hydra's process-wide state (its singletons: config store, job runtime, HydraConfig; and OmegaConf's
    registered resolvers), picklable, to recreate a launching process's state in a worker."""
    from hydra.core.singleton import Singleton

    return Singleton.get_state()


def hydra_set_singleton_state(state: Any) -> None:
    """Install a state from `hydra_singleton_state()` in this process (a worker, before `run_job`)."""
    from hydra.core.singleton import Singleton

    Singleton.set_state(state)
# ======================================================================== end of the Ray launcher section
