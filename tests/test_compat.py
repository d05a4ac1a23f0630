"""The private library APIs descentlab.compat relies on still exist and behave as it assumes."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from descentlab import compat

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)


# ------------------------------------------------------------------------- hydra and its joblib launcher plugin


def test_basic_launcher_target_is_what_hydra_launcher_basic_names() -> None:
    from hydra import compose, initialize_config_dir

    from descentlab.config import register_schemas

    register_schemas()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=basic"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == compat.HYDRA_BASIC_LAUNCHER
    module, name = compat.HYDRA_BASIC_LAUNCHER.rsplit(".", 1)
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_callbacks_check_runs_before_hydra_builds_callbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra._internal import callbacks

    original = getattr(callbacks.Callbacks.__init__, "__wrapped__", callbacks.Callbacks.__init__)  # train.py's hook
    monkeypatch.setattr(callbacks.Callbacks, "__init__", original)  # undone after the test
    seen: list[object] = []

    def refuse(config: object) -> None:
        seen.append(config)
        raise ValueError("refused")

    compat.check_hydra_callbacks_with(refuse)
    compat.check_hydra_callbacks_with(refuse)  # idempotent: wrapped once
    config = OmegaConf.create({"hydra": {"callbacks": {}}})
    with pytest.raises(ValueError, match="refused"):
        callbacks.Callbacks(config)
    assert seen == [config]


def test_joblib_launcher_kwargs_are_what_the_plugin_passes_to_parallel() -> None:
    import inspect

    from hydra_plugins.hydra_joblib_launcher import _core

    kwargs = compat.joblib_launcher_kwargs({"_target_": "x", "n_jobs": 2, "backend": None, "prefer": "processes",
                                            "require": None, "verbose": 0, "timeout": None,
                                            "pre_dispatch": "2*n_jobs", "batch_size": "auto",
                                            "temp_folder": None, "max_nbytes": None, "mmap_mode": "r"})
    assert kwargs["backend"] == "loky" and kwargs["n_jobs"] == 2 and "_target_" not in kwargs
    source = inspect.getsource(_core.launch)  # the plugin still builds Parallel's arguments this way
    assert "process_joblib_cfg(joblib_cfg)" in source
    assert 'joblib_cfg["backend"] = "loky"' in source

# ---------------------------------------------------------------------------------------------- mlflow

# Each test names the MLflow internal descentlab.compat reaches for; it fails when MLflow moves or changes it.


@pytest.fixture
def mlflow_sqlite(tmp_path):
    """A client on a fresh SQLite store (from the cached schema template) and an experiment id."""
    from descentlab.data.idx_specs import cache_root
    from descentlab.tracking.settings import SqliteSettings
    from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = open_store(uri, SqliteSettings(template_dir=str(cache_root())))
    return client, get_or_create_experiment(client, "compat", artifact_root_for(uri))


def test_mlflow_sql_store_is_the_clients_sqlalchemy_store(mlflow_sqlite) -> None:
    """`MlflowClient._tracking_client.store` is a `SqlAlchemyStore` with an engine on the store's file."""
    from unittest import mock

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    client, _ = mlflow_sqlite
    store = compat.mlflow_sql_store(client)
    assert isinstance(store, SqlAlchemyStore) and store is client._tracking_client.store
    assert compat.mlflow_engine(client) is store.engine
    assert str(store.engine.url).endswith("/mlruns/mlflow.db")
    assert compat.mlflow_sql_store(MlflowClient("http://127.0.0.1:9")) is None  # a RestStore; nothing contacted
    assert compat.mlflow_sql_store(mock.MagicMock()) is None


def test_mlflow_engine_takes_a_connect_listener_and_disposes_its_pool(mlflow_sqlite) -> None:
    """The engine's connect event reaches every new connection (how tracking.store sets its PRAGMAs)."""
    client, _ = mlflow_sqlite
    seen: list[object] = []

    def listener(dbapi_connection, _record) -> None:
        seen.append(dbapi_connection)
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    assert compat.mlflow_on_sqlite_connect(client, listener) is True
    assert compat.mlflow_on_sqlite_connect(client, listener) is True  # once per engine
    with compat.mlflow_engine(client).connect() as con:
        assert con.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert len(seen) == 1
    compat.mlflow_dispose_engine(client)
    assert compat.mlflow_engine(client).pool.checkedin() == 0
    assert compat.mlflow_on_sqlite_connect(object(), listener) is False


def test_mlflow_orm_models_have_the_columns_bulk_writes() -> None:
    orm = compat.mlflow_orm()
    assert orm is not None
    columns = {name: set(model.__table__.columns.keys()) for name, model in
               (("run", orm.run), ("metric", orm.metric), ("latest_metric", orm.latest_metric), ("param", orm.param),
                ("tag", orm.tag))}
    point = {"run_uuid", "key", "value", "timestamp", "step", "is_nan"}
    assert point <= columns["metric"] and point <= columns["latest_metric"]
    assert {"run_uuid", "key", "value"} <= columns["param"] and {"run_uuid", "key", "value"} <= columns["tag"]
    assert {"run_uuid", "name", "experiment_id", "lifecycle_stage", "status", "start_time", "end_time",
            "artifact_uri"} <= columns["run"]


def test_mlflow_write_session_round_trips_a_bulk_insert(mlflow_sqlite) -> None:
    """Rows inserted with the ORM table in one session are what `get_metric_history` and `get_run` read back."""
    client, exp = mlflow_sqlite
    run_id = client.create_run(exp).info.run_id
    orm = compat.mlflow_orm()
    rows = [{"run_uuid": run_id, "key": "m", "value": 1.0 / (s + 1), "timestamp": 1000 + s, "step": s, "is_nan": False}
            for s in range(3)]
    with compat.mlflow_write_session(compat.mlflow_sql_store(client)) as session:
        session.execute(orm.metric.__table__.insert(), rows)
        session.add(orm.latest_metric(run_uuid=run_id, key="m", value=1 / 3, timestamp=1002, step=2, is_nan=False))
        session.execute(orm.param.__table__.insert(), [{"run_uuid": run_id, "key": "lr", "value": "0.1"}])
    history = client.get_metric_history(run_id, "m")
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [(0, 1.0, 1000), (1, 0.5, 1001), (2, 1 / 3, 1002)]
    data = client.get_run(run_id).data
    assert data.metrics == {"m": 1 / 3} and data.params == {"lr": "0.1"}


def test_mlflow_checked_params_raise_what_log_batch_raises() -> None:
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException

    checked = compat.mlflow_checked_params([Param("optimizer.lr", "0.01"), Param("empty", "")])
    assert [(p.key, p.value) for p in checked] == [("optimizer.lr", "0.01"), ("empty", "")]
    with pytest.raises(MlflowException, match="Invalid value"):
        compat.mlflow_checked_params([Param("bad!key", "1")])
    with pytest.raises(MlflowException, match="Duplicate parameter keys"):
        compat.mlflow_checked_params([Param("k", "1"), Param("k", "2")])


def test_mlflow_artifact_repository_writes_where_the_client_reads(mlflow_sqlite, tmp_path) -> None:
    client, exp = mlflow_sqlite
    run = client.create_run(exp)
    (tmp_path / "a.txt").write_text("hello")
    repo = compat.mlflow_artifact_repository(run.info.artifact_uri, str(client.tracking_uri))
    assert repo is not None
    repo.log_artifact(str(tmp_path / "a.txt"), "sub")
    assert [f.path for f in client.list_artifacts(run.info.run_id, "sub")] == ["sub/a.txt"]


# --------------------------------------------------------------------------------------------- CPython


def test_exit_at_once_skips_atexit() -> None:
    result = _python("""
        import atexit
        from descentlab import compat
        atexit.register(lambda: print("atexit ran"))
        compat.exit_at_once(130)
    """)
    assert result.returncode == 130 and "atexit ran" not in result.stdout


# ============================================================================ Ray launcher (hydra/launcher=ray)


def test_hydra_singleton_state_carries_resolvers_and_config_store_to_another_process() -> None:
    """What the Ray launcher sends to a worker: after a pickle round trip and `set_state`, the worker has the
    launching process's resolvers and ConfigStore entries, and loses what it had registered on its own."""
    result = _python("""
        from ray import cloudpickle as pickle  # how Ray sends a task's arguments (no Ray is started)
        from hydra.core.config_store import ConfigStore
        from omegaconf import OmegaConf
        from descentlab import compat

        OmegaConf.register_new_resolver("launcher_side", lambda: "from the launcher")
        ConfigStore.instance().store(group="probe", name="launcher_side", node={"a": 1})
        state = pickle.loads(pickle.dumps(compat.hydra_singleton_state()))
        OmegaConf.clear_resolver("launcher_side")
        OmegaConf.register_new_resolver("worker_side", lambda: "own")
        compat.hydra_set_singleton_state(state)
        print(OmegaConf.create({"x": "${launcher_side:}"}).x)
        print(OmegaConf.has_resolver("worker_side"))
        print("launcher_side.yaml" in ConfigStore.instance().repo["probe"])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["from", "the", "launcher", "False", "True"]
# ======================================================================== end of the Ray launcher section


# -- MLflow's names and migrations the store's upkeep (tracking.upkeep) relies on


def test_mlflow_tag_and_statistics_table_names_are_mlflows_orm_tables() -> None:
    orm = compat.mlflow_orm()
    assert orm is not None
    table = orm.tag.__table__
    assert table.name == compat.MLFLOW_TAGS_TABLE
    assert {compat.MLFLOW_TAG_KEY, compat.MLFLOW_TAG_VALUE} <= set(table.columns.keys())
    orm_tables = {model.__table__.name for model in (orm.run, orm.tag, orm.metric, orm.latest_metric, orm.param)}
    assert set(compat.MLFLOW_STATISTICS_TABLES) == orm_tables


def test_mlflow_migrations_rebuild_tags_after_the_revision_the_upgrade_test_starts_from() -> None:
    """The upgrade test (test_store_upkeep) starts at the revision before MLflow's `tags` rebuilds; if MLflow renames
    or reorders them, this fails (and the test would no longer cover them)."""
    from alembic.script import ScriptDirectory

    first, second = compat.MLFLOW_TAGS_REBUILD_REVISIONS
    assert compat.mlflow_revision_parent(first) == compat.MLFLOW_REVISION_BEFORE_TAGS_REBUILD
    script = ScriptDirectory.from_config(compat.mlflow_alembic_config("sqlite://"))
    later = {rev.revision for rev in script.iterate_revisions("heads", compat.MLFLOW_REVISION_BEFORE_TAGS_REBUILD)}
    assert {first, second} <= later
    for revision in (first, second):
        source = Path(script.get_revision(revision).path).read_text(encoding="utf-8")
        assert 'batch_alter_table("tags")' in source


def test_mlflow_create_schema_at_an_old_revision_and_read_it_back(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    compat.mlflow_create_schema_at(uri, compat.MLFLOW_REVISION_BEFORE_TAGS_REBUILD)
    assert compat.mlflow_schema_revision(uri) == compat.MLFLOW_REVISION_BEFORE_TAGS_REBUILD
    assert compat.mlflow_schema_revision(f"sqlite:///{tmp_path / 'none.db'}") is None
