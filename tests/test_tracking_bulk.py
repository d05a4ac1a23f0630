"""tracking.bulk: metric points inserted in bulk must be exactly what MLflow's log_batch stores, and
RunTracker must use that path on SQL stores (a test here fails if an MLflow upgrade silently disables it)."""

from __future__ import annotations

import math
import os
from unittest import mock

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline: telemetry once broke a request

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from descentlab.tracking import bulk
from descentlab.tracking.run import RunTracker
from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store, resolve_tracking_uri

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


@pytest.fixture(scope="module")
def mlstore(tmp_path_factory: pytest.TempPathFactory):
    uri = resolve_tracking_uri(None, tmp_path_factory.mktemp("store"))
    client = open_store(uri)
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
    assert store is not None, "a sqlite:// client must expose MLflow's SqlAlchemyStore"
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
        run._pending.append(run._points[0])
        run.log_metric("m", 2.0, 1)
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "m")) == [(0, 1.0), (1, 2.0)]
