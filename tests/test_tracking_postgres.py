"""Workers pointed at PostgreSQL directly (`tracking.uri=postgresql+psycopg2://...`, no tracking server): MLflow's
migrations create the schema on first use, the bulk SQL sink is the one chosen, every point is stored, and a run
written through MLflow's client calls stores the same rows. PostgreSQL is real: the session's scratch cluster
(conftest `postgres_cluster`)."""

from __future__ import annotations

import math
from unittest import mock

import pytest

from descentlab.tracking import run as run_module
from descentlab.tracking.sink import BulkSqlSink, ClientSink, choose_sink

pytestmark = pytest.mark.e2e  # starts a PostgreSQL cluster: run by `pytest --all-tiers`

ITERATIONS, EVAL_EVERY = 60, 20
QUICK = ("dataset=digits", f"training.iterations={ITERATIONS}", f"training.eval_every={EVAL_EVERY}",
         "training.progress=false")


def _train_recording_sinks(store, uri: str, *args: str, bulk: bool = True) -> tuple[object, list[type]]:
    """train.py in this process against `uri`; the sink class each run chose (bulk=False: MLflow's client calls)."""
    chosen: list[type] = []

    def recording(client, bulk_metrics: bool = True):
        sink = choose_sink(client, bulk_metrics and bulk)
        chosen.append(type(sink))
        return sink

    with mock.patch.object(run_module, "choose_sink", recording):
        result = store.train_in_process(*QUICK, f"tracking.uri={uri}", *args)
    return result, chosen


def _rows(client, run_id: str) -> tuple[dict, dict, dict]:
    """What a run stored, without timestamps (two runs differ only there): every point per key, latest values,
    params."""
    run = client.get_run(run_id)
    history = {
        key: sorted((m.step, "nan" if math.isnan(m.value) else m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
    }
    latest = {k: "nan" if math.isnan(v) else v for k, v in run.data.metrics.items()}
    return history, latest, run.data.params


def test_a_run_on_postgresql_directly_stores_every_point_through_the_bulk_sink(store, postgres_cluster) -> None:
    from mlflow.tracking import MlflowClient

    uri = postgres_cluster.create_database("direct")  # empty: MLflow's migrations run on first use
    result, sinks = _train_recording_sinks(store, uri)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sinks == [BulkSqlSink]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("optimizer-comparison")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    history, latest, params = _rows(client, run.info.run_id)
    assert [step for step, _ in history["train/loss"]] == list(range(ITERATIONS))
    assert all(math.isfinite(v) for _, v in history["train/loss"])
    evaluated = [step for step, _ in history["test/acc"]]
    assert evaluated[0] == 0 and evaluated[-1] == ITERATIONS and len(evaluated) >= ITERATIONS // EVAL_EVERY
    assert latest["train/loss"] == history["train/loss"][-1][1]
    assert params["training.iterations"] == str(ITERATIONS) and params["dataset.name"] == "digits"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.csv", "config.yaml"} <= artifacts

    # The same command again: the FINISHED run is found in PostgreSQL and skipped, nothing new is stored.
    again, sinks = _train_recording_sinks(store, uri)
    assert again.returncode == 0 and sinks == [], again.stderr[-3000:]
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_bulk_and_client_sinks_store_the_same_rows_on_postgresql(store, postgres_cluster) -> None:
    from mlflow.tracking import MlflowClient

    uri = postgres_cluster.create_database("both_sinks")
    by_bulk, sinks_bulk = _train_recording_sinks(store, uri)
    by_client, sinks_client = _train_recording_sinks(store, uri, "force=true", bulk=False)
    assert by_bulk.returncode == 0 and by_client.returncode == 0, (by_bulk.stderr + by_client.stderr)[-3000:]
    assert (sinks_bulk, sinks_client) == ([BulkSqlSink], [ClientSink])

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("optimizer-comparison")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    bulk_rows, client_rows = (_rows(client, r.info.run_id) for r in runs)
    assert len(bulk_rows[0]["train/loss"]) == ITERATIONS and bulk_rows[0].keys() == client_rows[0].keys()
    for key in bulk_rows[0]:  # every point of every key: same steps, and same values (seeded) but for wall times
        if key.startswith("time/"):
            assert [s for s, _ in bulk_rows[0][key]] == [s for s, _ in client_rows[0][key]], key
        else:
            assert bulk_rows[0][key] == client_rows[0][key], key
            assert bulk_rows[1][key] == client_rows[1][key], key  # latest value
    params = [{k: v for k, v in p.items() if k != "force"} for p in (bulk_rows[2], client_rows[2])]
    assert params[0] == params[1] and len(params[0]) > 20
