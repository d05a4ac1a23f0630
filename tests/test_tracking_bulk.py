"""tracking.bulk: metric points, params and run ends written in bulk must be exactly what MLflow's log_batch and
set_terminated store, and RunTracker must use that path on SQL stores (a test here fails if an MLflow upgrade
silently disables it). Every check runs on SQLite and on a real PostgreSQL (e2e tier: the session's scratch
cluster, conftest `postgres_cluster`)."""

from __future__ import annotations

import math
import os
from unittest import mock

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline: telemetry once broke a request

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from descentlab.data.idx_specs import cache_root
from descentlab.tracking import bulk
from descentlab.tracking.run import RunTracker
from descentlab.tracking.settings import SqliteSettings
from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store, resolve_tracking_uri

# The schema template in the data cache, as the entry configures it: a new store in milliseconds.
SQLITE = SqliteSettings(template_dir=str(cache_root()))

# (step, key, value, timestamp_ms): several keys, a NaN and infinities (stored specially), steps out of order,
# two points of one step, and a later chunk whose steps are lower than the first's (latest must not move back).
CHUNKS = [
    [(0, "train/loss", 2.5, 1000), (1, "train/loss", 2.25, 1001), (2, "train/loss", float("nan"), 1002),
     (5, "train/loss", 1.5, 1005), (3, "train/loss", 1.75, 1003), (0, "test/acc", 0.125, 1000),
     (5, "test/acc", 0.5, 1005), (5, "big", float("inf"), 1005), (6, "big", float("-inf"), 1006),
     (4, "tie", 1.0, 1004), (4, "tie", 3.0, 1004)],
    [(1, "train/loss", 9.0, 2001), (7, "train/loss", 1.25, 2007), (2, "test/acc", 0.75, 2002),
     (4, "tie", 2.0, 1004)],
]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def mlstore(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if request.param == "sqlite":
        uri = resolve_tracking_uri(None, tmp_path_factory.mktemp("store"))
    else:
        uri = request.getfixturevalue("postgres_cluster").create_database("bulk")
    client = open_store(uri, SQLITE)
    return client, get_or_create_experiment(client, "bulk", artifact_root_for(uri))


def _stored(client: MlflowClient, run_id: str) -> tuple[dict, dict]:
    """Every stored point per key (sorted: MLflow returns history in no fixed order) and the latest values."""
    keys = {key for chunk in CHUNKS for _, key, _, _ in chunk}
    history = {
        key: sorted((m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
                    for m in client.get_metric_history(run_id, key))
        for key in keys
    }
    latest = {k: ("nan" if math.isnan(v) else v) for k, v in client.get_run(run_id).data.metrics.items()}
    return history, latest


def test_bulk_insert_stores_what_log_batch_stores(mlstore) -> None:
    client, exp = mlstore
    store = bulk.sql_store(client)
    assert store is not None, f"a {client.tracking_uri} client must expose MLflow's SqlAlchemyStore"
    by_bulk = client.create_run(exp).info.run_id
    by_batch = client.create_run(exp).info.run_id
    for chunk in CHUNKS:
        assert bulk.insert_metrics(store, by_bulk, chunk) is True
        client.log_batch(by_batch, metrics=[Metric(k, v, ts, s) for s, k, v, ts in chunk])
    history, latest = _stored(client, by_bulk)
    assert (history, latest) == _stored(client, by_batch)
    assert len(history["train/loss"]) == 7 and latest["train/loss"] == 1.25  # step 7 of the second chunk
    assert latest["big"] == -1.7976931348623157e308 and latest["test/acc"] == 0.5
    # Search by metric works on bulk-written runs (it reads latest_metrics).
    found = client.search_runs([exp], "metrics.`test/acc` = 0.5")
    assert {r.info.run_id for r in found} == {by_bulk, by_batch}


def test_a_stored_point_makes_bulk_decline_and_write_nothing(mlstore) -> None:
    client, exp = mlstore
    store = bulk.sql_store(client)
    run_id = client.create_run(exp).info.run_id
    assert bulk.insert_metrics(store, run_id, [(0, "m", 1.0, 10)])
    assert bulk.insert_metrics(store, run_id, [(1, "m", 2.0, 11), (0, "m", 1.0, 10)]) is False
    assert sorted(m.step for m in client.get_metric_history(run_id, "m")) == [0]  # step 1 rolled back too


def test_a_deleted_run_is_left_to_log_batch_to_refuse(mlstore) -> None:
    client, exp = mlstore
    store = bulk.sql_store(client)
    run_id = client.create_run(exp).info.run_id
    client.delete_run(run_id)
    assert bulk.insert_metrics(store, run_id, [(0, "m", 1.0, 10)]) is False
    with pytest.raises(MlflowException, match="active"):
        client.log_batch(run_id, metrics=[Metric("m", 1.0, 10, 0)])


def test_other_stores_use_log_batch() -> None:
    assert bulk.sql_store(MlflowClient("http://127.0.0.1:9")) is None  # RestStore: nothing is contacted
    assert bulk.sql_store(mock.MagicMock()) is None


def test_run_tracker_sends_metrics_in_bulk_and_falls_back_on_a_stored_point(mlstore) -> None:
    client, exp = mlstore
    with (mock.patch.object(bulk, "insert_metrics", wraps=bulk.insert_metrics) as spy,
          mock.patch.object(client, "log_batch", wraps=client.log_batch) as log_batch):
        with RunTracker(client, exp, "bulk-run", flush_every=1000) as run:
            for step in range(2500):
                run.log_metric("train/loss", 1.0 / (step + 1), step)
        assert spy.call_count == 3 and all(call.args[1] == run.run_id for call in spy.call_args_list)
        assert not any(call.kwargs.get("metrics") for call in log_batch.call_args_list)
    history = client.get_metric_history(run.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(2500))
    assert client.get_run(run.run_id).data.metrics["train/loss"] == 1.0 / 2500

    # A retried chunk that is partly stored already: log_batch takes it and skips the stored point.
    with RunTracker(client, exp, "bulk-dup") as run:
        run.log_metric("m", 1.0, 0)
        run.flush()
        run.buffer.pending.append(run.buffer.points[0])
        run.log_metric("m", 2.0, 1)
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "m")) == [(0, 1.0), (1, 2.0)]


def test_bulk_params_store_what_log_batch_stores_and_refuse_what_it_refuses(mlstore) -> None:
    from mlflow.entities import Param

    client, exp = mlstore
    store = bulk.sql_store(client)
    params = [Param("optimizer.lr", "0.01"), Param("model.hidden_sizes", "[100, 100]"), Param("note", "a b: c/d"),
              Param("empty", "")]
    by_bulk, by_batch = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    assert bulk.insert_params(store, by_bulk, params) is True
    client.log_batch(by_batch, params=params)
    assert client.get_run(by_bulk).data.params == client.get_run(by_batch).data.params
    assert len(client.get_run(by_bulk).data.params) == 4
    # A param the run has: declined, nothing written; log_batch then accepts the same value and refuses another.
    assert bulk.insert_params(store, by_bulk, [Param("new", "1"), Param("optimizer.lr", "0.01")]) is False
    assert "new" not in client.get_run(by_bulk).data.params
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        client.log_batch(by_bulk, params=[Param("optimizer.lr", "0.02")])
    # MLflow's own validation: the same errors as log_batch.
    for bad in ([Param("bad!key", "1")], [Param("k", "1"), Param("k", "2")]):
        with pytest.raises(MlflowException) as via_bulk:
            bulk.insert_params(store, by_bulk, bad)
        with pytest.raises(MlflowException) as via_batch:
            client.log_batch(by_batch, params=bad)
        assert str(via_bulk.value) == str(via_batch.value)
    client.delete_run(by_batch)
    assert bulk.insert_params(store, by_batch, [Param("late", "1")]) is False  # log_batch says why


def test_run_tracker_logs_params_in_bulk(mlstore) -> None:
    client, exp = mlstore
    with (mock.patch.object(bulk, "insert_params", wraps=bulk.insert_params) as spy,
          mock.patch.object(client, "log_batch", wraps=client.log_batch) as log_batch):
        with RunTracker(client, exp, "bulk-params") as run:
            run.log_params({f"p{i:03d}": i for i in range(150)})  # more than one log_batch would take
        assert spy.call_count == 1 and not any(call.kwargs.get("params") for call in log_batch.call_args_list)
    params = client.get_run(run.run_id).data.params
    assert len(params) == 150 and params["p149"] == "149"


def test_bulk_end_stores_what_set_terminated_stores(mlstore) -> None:
    client, exp = mlstore
    store = bulk.sql_store(client)
    by_bulk, by_client = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    assert bulk.end_run(store, by_bulk, "KILLED", 1234567) is True
    client.set_terminated(by_client, "KILLED", end_time=1234567)
    ended = [client.get_run(r).info for r in (by_bulk, by_client)]
    assert [(i.status, i.end_time, i.lifecycle_stage) for i in ended] == [("KILLED", 1234567, "active")] * 2
    with pytest.raises(Exception, match="BOGUS"):  # MLflow's own check of the status (a plain Exception)
        bulk.end_run(store, by_bulk, "BOGUS", 1)
    client.delete_run(by_client)
    assert bulk.end_run(store, by_client, "FINISHED", 1) is False  # set_terminated says why
    assert bulk.end_run(store, "0" * 32, "FINISHED", 1) is False


def test_run_tracker_ends_runs_in_bulk(mlstore) -> None:
    client, exp = mlstore
    with (mock.patch.object(bulk, "end_run", wraps=bulk.end_run) as spy,
          mock.patch.object(client, "set_terminated", wraps=client.set_terminated) as set_terminated):
        with pytest.raises(ValueError), RunTracker(client, exp, "bulk-fail") as failed:
            raise ValueError("boom")
        with RunTracker(client, exp, "bulk-ok") as ok:
            pass
        assert spy.call_count == 2 and set_terminated.call_count == 0
    assert [client.get_run(r.run_id).info.status for r in (failed, ok)] == ["FAILED", "FINISHED"]
    assert client.get_run(failed.run_id).data.tags["error"] == "ValueError: boom"
    info = client.get_run(ok.run_id).info
    assert info.start_time <= info.end_time


def test_the_sink_is_chosen_once_per_run(mlstore) -> None:
    """A SQL client (SQLite, PostgreSQL) gets the bulk SQL sink, a client without a SQL store (a server, a double)
    MLflow's own calls."""
    from descentlab.tracking.retry import RetryingClient
    from descentlab.tracking.sink import BulkSqlSink, ClientSink, choose_sink

    client, exp = mlstore
    assert type(RunTracker(client, exp, "sql").sink) is BulkSqlSink
    assert type(RunTracker(client, exp, "plain", bulk_metrics=False).sink) is ClientSink
    assert type(choose_sink(RetryingClient(mock.MagicMock()))) is ClientSink
    double = mock.MagicMock()
    with RunTracker(double, exp, "double", retry_s=0) as run:  # every write goes through the client's log_batch
        run.log_params({"a": 1})
        run.log_series("train/loss", 0, [1.0] * 1500)
    sent = [len(call.kwargs["metrics"]) for call in double.log_batch.call_args_list if call.kwargs.get("metrics")]
    assert sent == [1000, 500]
    double.set_terminated.assert_called_once()
    assert double.set_terminated.call_args.args[1] == "FINISHED"
