"""The private library APIs descentlab.compat relies on still exist and behave as it assumes."""

from __future__ import annotations

import pytest

from descentlab import compat

# ----------------------------------------------------------------------------------------------- hydra

# ------------------------------------------------------------------------------------------ joblib/loky

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
               (("run", orm.run), ("metric", orm.metric), ("latest_metric", orm.latest_metric), ("param", orm.param))}
    point = {"run_uuid", "key", "value", "timestamp", "step", "is_nan"}
    assert point <= columns["metric"] and point <= columns["latest_metric"]
    assert {"run_uuid", "key", "value"} <= columns["param"]
    assert {"run_uuid", "lifecycle_stage", "status", "end_time"} <= columns["run"]


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
