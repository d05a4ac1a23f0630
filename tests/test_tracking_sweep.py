"""tracking.sweep: one parent run per sweep directory, shared across processes, closed with a summary."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline: telemetry once broke a request

from descentlab.callbacks import describe_sweep
from descentlab.data.idx_specs import cache_root
from descentlab.tracking.run import RunTracker
from descentlab.tracking.settings import SqliteSettings
from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store, resolve_tracking_uri
from descentlab.tracking.sweep import STATE_FILE, adopt_parent, finish_parent, get_or_create_parent, read_sweep_state
from descentlab.tracking.sweep_description import describe, write_description

# The schema template in the data cache, as the entry configures it: a new store in milliseconds.
SQLITE = SqliteSettings(template_dir=str(cache_root()))


@pytest.fixture(scope="module")
def mlstore(tmp_path_factory: pytest.TempPathFactory):
    """(uri, client) of one store for the module."""
    uri = resolve_tracking_uri(None, tmp_path_factory.mktemp("store"))
    return uri, open_store(uri, SQLITE)


@pytest.fixture
def experiment(mlstore, request: pytest.FixtureRequest) -> str:
    uri, client = mlstore
    return get_or_create_experiment(client, request.node.name, artifact_root_for(uri))


def _runs(client, experiment_id: str) -> list:
    return list(client.search_runs([experiment_id], max_results=1000))


def _child(client, experiment_id: str, parent: str, status: str, config_hash: str | None = None) -> str:
    tags = {"config_hash": config_hash} if config_hash else {}
    run = RunTracker(client, experiment_id, f"child-{status}", tags=tags, parent_run_id=parent).start()
    run.log_metric("train/loss", 0.1, 0)
    run.finish(status)
    return run.run_id


def _experiment_and_parent_in_child(uri: str, sweep_dir: str, barrier, results) -> None:
    """One sweep job's start: look up (or race to create) the experiment, then the sweep's parent."""
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    barrier.wait(timeout=60)
    experiment_id = get_or_create_experiment(client, "concurrent", artifact_root_for(uri))
    barrier.wait(timeout=60)
    parent = get_or_create_parent(client, experiment_id, sweep_dir)
    results.put((experiment_id, parent))


@pytest.mark.e2e
def test_two_processes_share_one_experiment_and_one_parent(mlstore, tmp_path: Path) -> None:
    """Two spawned processes race (barrier-synchronised) on a prepared store: one experiment, one parent."""
    uri, client = mlstore
    sweep_dir = tmp_path / "multirun" / "2026-01-01" / "12-00-00"  # does not exist yet
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    write_description(sweep_dir, describe_sweep(["optimizer=sgd,adam", "seed=0,1,2", "training.iterations=50"]))
    procs = [ctx.Process(target=_experiment_and_parent_in_child, args=(uri, str(sweep_dir), barrier, results))
             for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got[0] == got[1]
    experiment, parent = got[0]
    assert [e.experiment_id for e in client.search_experiments() if e.name == "concurrent"] == [experiment]
    assert client.get_experiment(experiment).artifact_location == f"{artifact_root_for(uri)}/concurrent"
    runs = _runs(client, experiment)
    assert [r.info.run_id for r in runs] == [parent]
    # Named and tagged from the launching process's description: what was swept, the whole command line.
    assert runs[0].info.status == "RUNNING" and runs[0].info.run_name == "sweep optimizer=sgd,adam seed=0,1,2"
    tags, params = runs[0].data.tags, runs[0].data.params
    assert tags["hydra.overrides"] == "optimizer=sgd,adam seed=0,1,2 training.iterations=50"
    assert tags["sweep.keys"] == "optimizer,seed" and tags["sweep.n_jobs"] == "6"
    assert tags["sweep.dir"] == str(sweep_dir) and "sweep_dir" not in tags  # one fact, one tag
    assert params == {"optimizer": "sgd,adam", "seed": "0,1,2", "training.iterations": "50"}
    state = json.loads((sweep_dir / STATE_FILE).read_text())
    assert state == {"parent_run_id": parent, "experiment_id": experiment, "tracking_uri": uri}
    assert get_or_create_parent(client, experiment, sweep_dir) == parent  # and in this process


def test_finish_parent_summarises_children(mlstore, experiment: str, tmp_path: Path) -> None:
    _, client = mlstore
    parent = get_or_create_parent(client, experiment, tmp_path)
    for status in ("FINISHED", "FINISHED", "FAILED"):
        _child(client, experiment, parent, status)
    summary = finish_parent(client, tmp_path)
    expected = {"parent_run_id": parent, "finished": 2, "failed": 1, "rejected": 0, "killed": 0, "running": 0,
                "status": "FAILED", "rejections": [], "n_jobs": None}
    assert summary == expected
    got = client.get_run(parent)
    assert got.info.status == "FAILED"
    assert got.data.metrics["sweep.n_finished"] == 2 and got.data.metrics["sweep.n_failed"] == 1
    assert got.data.metrics["sweep.n_killed"] == 0 and got.data.tags["sweep.n_failed"] == "1"
    assert finish_parent(client, tmp_path) == expected  # idempotent
    assert len(client.get_metric_history(parent, "sweep.n_finished")) == 1


def test_all_children_finished_finishes_the_parent(mlstore, experiment: str, tmp_path: Path) -> None:
    _, client = mlstore
    parent = get_or_create_parent(client, experiment, tmp_path)
    _child(client, experiment, parent, "FINISHED")
    _child(client, experiment, parent, "FINISHED")
    assert finish_parent(client, tmp_path)["status"] == "FINISHED"
    assert client.get_run(parent).info.status == "FINISHED"


def test_no_state_file_means_no_parent(mlstore, experiment: str, tmp_path: Path) -> None:
    _, client = mlstore
    assert finish_parent(client, tmp_path) is None
    assert read_sweep_state(tmp_path) is None
    assert _runs(client, experiment) == []


def test_rerun_reopens_the_parent_and_counts_retries_once(mlstore, experiment: str, tmp_path: Path) -> None:
    _, client = mlstore
    parent = get_or_create_parent(client, experiment, tmp_path)
    _child(client, experiment, parent, "FINISHED", "h1")
    _child(client, experiment, parent, "FAILED", "h2")
    assert finish_parent(client, tmp_path)["status"] == "FAILED"
    # The sweep is launched again: the failed configuration runs again under the same parent.
    assert get_or_create_parent(client, experiment, tmp_path) == parent
    assert client.get_run(parent).info.status == "RUNNING"
    _child(client, experiment, parent, "FINISHED", "h2")
    summary = finish_parent(client, tmp_path)
    assert (summary["finished"], summary["failed"], summary["status"]) == (2, 0, "FINISHED")
    assert client.get_run(parent).data.metrics["sweep.n_failed"] == 0


def test_deleted_parent_is_replaced(mlstore, experiment: str, tmp_path: Path) -> None:
    _, client = mlstore
    first = get_or_create_parent(client, experiment, tmp_path)
    client.delete_run(first)
    second = get_or_create_parent(client, experiment, tmp_path)
    assert second != first and read_sweep_state(tmp_path)["parent_run_id"] == second


def test_rejected_jobs_are_counted_and_listed_with_their_overrides_and_reasons(mlstore, experiment: str,
                                                                              tmp_path: Path) -> None:
    _, client = mlstore
    parent = get_or_create_parent(client, experiment, tmp_path)
    _child(client, experiment, parent, "FINISHED", "h1")
    for num, (overrides, reason) in enumerate([("optimizer=sgd optimizer.lr=0", "SGD: lr must be > 0, got 0.0"),
                                               ("optimizer=adam optimizer.lr=0", "Adam: lr must be > 0, got 0.0")]):
        run = RunTracker(client, experiment, f"rejected-{num}", parent_run_id=parent,
                         tags={"config_hash": f"r{num}", "rejected": "true", "hydra.overrides": overrides,
                               "hydra.job_num": str(num + 1)}).start()
        run.finish("FAILED", error=reason)
    summary = finish_parent(client, tmp_path)
    assert (summary["finished"], summary["failed"], summary["rejected"], summary["status"]) == (1, 2, 2, "FAILED")
    assert summary["rejections"] == [("optimizer=sgd optimizer.lr=0", "SGD: lr must be > 0, got 0.0"),
                                     ("optimizer=adam optimizer.lr=0", "Adam: lr must be > 0, got 0.0")]
    assert client.get_run(parent).data.tags["sweep.n_rejected"] == "2"


def test_an_interrupted_sweep_ends_killed_and_is_described_when_closed(mlstore, experiment: str,
                                                                       tmp_path: Path) -> None:
    _, client = mlstore
    parent = get_or_create_parent(client, experiment, tmp_path)  # no description reached the job (another host)
    assert client.get_run(parent).info.run_name == f"sweep {tmp_path.name}"
    _child(client, experiment, parent, "FINISHED", "h1")
    _child(client, experiment, parent, "KILLED", "h2")
    description = describe_sweep(["optimizer=sgd,adam"])
    summary = finish_parent(client, tmp_path, status="KILLED", description=description)
    assert (summary["status"], summary["killed"], summary["n_jobs"]) == ("KILLED", 1, 2)
    got = client.get_run(parent)
    assert got.info.status == "KILLED" and got.info.run_name == "sweep optimizer=sgd,adam"
    assert got.data.tags["hydra.overrides"] == "optimizer=sgd,adam" and got.data.params == {"optimizer": "sgd,adam"}


def test_a_sweep_is_named_by_what_it_sweeps() -> None:
    assert describe_sweep(["optimizer=sgd,momentum,adagrad,adam", "seed=0,1,2"])["name"] == (
        "sweep optimizer=sgd,momentum,adagrad,adam seed=0,1,2")
    assert describe_sweep(["seed=range(0,3)", "optimizer.lr=0.1"])["params"] == {"seed": "0,1,2", "optimizer.lr": "0.1"}
    assert describe_sweep(["optimizer=adam"])["name"] == "sweep optimizer=adam"  # nothing swept: the overrides
    escaped = describe_sweep([r"tracking.uri=sqlite\:////tmp/x.db", "model.hidden_sizes=[100,50]"])["params"]
    assert escaped == {"tracking.uri": "sqlite:////tmp/x.db", "model.hidden_sizes": "[100,50]"}
    assert describe_sweep([])["name"] == "sweep (no overrides)"
    many = describe(["x"], {f"key{i}": [str(v) for v in range(20)] for i in range(3)}, {}, 8000)
    assert many["name"] == "sweep key0×20 key1×20 key2×20" and many["n_jobs"] == 8000
    interval = describe_sweep(["optimizer.lr=interval(0.001,0.1)", "seed=0,1"])
    assert interval["n_jobs"] is None and interval["params"]["optimizer.lr"] == "interval(0.001,0.1)"


def test_a_sweep_given_in_the_config_is_counted_and_the_command_line_replaces_its_keys() -> None:
    grid = {"model.batch_norm": "true,false", "model.weight_init": "1.0,0.1,0.01"}
    described = describe_sweep(["experiment=batch_norm", "seed=0,1"], grid)
    assert described["n_jobs"] == 12 and described["params"]["model.weight_init"] == "1.0,0.1,0.01"
    assert described["overrides"] == "experiment=batch_norm seed=0,1"  # the command line as typed
    narrowed = describe_sweep(["model.weight_init=0.5"], grid)
    assert narrowed["n_jobs"] == 2 and narrowed["params"]["model.weight_init"] == "0.5"
    search = describe_sweep(["experiment=hparam_search"], {"optimizer.lr": "tag(log, interval(1e-6, 1e-2))"}, 100)
    assert search["n_jobs"] == 100 and "optimizer.lr" in search["swept"]


def test_adopt_parent_points_a_new_folder_at_an_existing_parent_and_drops_an_empty_eager_one(
        mlstore, experiment: str, tmp_path: Path) -> None:
    _, client = mlstore
    study_parent = get_or_create_parent(client, experiment, tmp_path / "first_launch")
    relaunch = tmp_path / "relaunch"
    eager = get_or_create_parent(client, experiment, relaunch)  # the launching process's parent, no job yet
    assert adopt_parent(client, experiment, relaunch, study_parent)
    assert read_sweep_state(relaunch)["parent_run_id"] == study_parent
    assert client.get_run(eager).info.lifecycle_stage == "deleted"
    assert get_or_create_parent(client, experiment, relaunch) == study_parent  # the relaunch's jobs join it
    assert adopt_parent(client, experiment, relaunch, study_parent)  # again: nothing changes
    assert read_sweep_state(relaunch)["parent_run_id"] == study_parent


def test_adopt_parent_keeps_a_parent_with_children_and_refuses_an_unusable_run(
        mlstore, experiment: str, tmp_path: Path) -> None:
    _, client = mlstore
    study_parent = get_or_create_parent(client, experiment, tmp_path / "first_launch")
    busy = get_or_create_parent(client, experiment, tmp_path / "relaunch")
    _child(client, experiment, busy, "FINISHED")
    assert adopt_parent(client, experiment, tmp_path / "relaunch", study_parent)
    assert client.get_run(busy).info.lifecycle_stage == "active"  # it holds a run: not dropped

    other = tmp_path / "other"
    client.delete_run(study_parent)
    assert not adopt_parent(client, experiment, other, study_parent)  # deleted: nothing written
    assert read_sweep_state(other) is None
    assert not adopt_parent(client, experiment, other, "0" * 32)  # no such run
    assert read_sweep_state(other) is None
