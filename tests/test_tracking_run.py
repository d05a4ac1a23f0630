"""tracking.run: RunTracker against a real SQLite store (params, buffered metrics, endings, history,
artifacts) and find_finished_run."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline: telemetry once broke a request

from descentlab.data.idx_specs import cache_root
from descentlab.tracking.run import RunTracker, find_finished_run
from descentlab.tracking.settings import SqliteSettings
from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store, resolve_tracking_uri

# The schema template in the data cache, as the entry configures it: a new store in milliseconds.
SQLITE = SqliteSettings(template_dir=str(cache_root()))


@pytest.fixture(scope="module")
def mlstore(tmp_path_factory: pytest.TempPathFactory):
    """(client, experiment_id) of one store for the module; tests use their own run names."""
    uri = resolve_tracking_uri(None, tmp_path_factory.mktemp("store"))
    client = open_store(uri, SQLITE)
    return client, get_or_create_experiment(client, "runs", artifact_root_for(uri))


@pytest.fixture
def experiment(mlstore, request: pytest.FixtureRequest) -> str:
    """A fresh experiment per test, so searches see only that test's runs."""
    client, _ = mlstore
    return client.create_experiment(request.node.name)


def test_params_are_stringified_and_all_logged(mlstore) -> None:
    client, exp = mlstore
    many = {f"p{i:03d}": i for i in range(150)}  # more than one log_batch of 100
    with RunTracker(client, exp, "params") as run:
        run.log_params({"lr": 0.001, "hidden_sizes": [100, 100], "optimizer": "adam", "beta": np.float32(0.1),
                        "dims": (np.int64(3), 4), "flag": True, "none": None, **many})
    params = client.get_run(run.run_id).data.params
    assert {k: params[k] for k in ("lr", "hidden_sizes", "optimizer", "beta", "dims", "flag", "none")} == {
        "lr": "0.001", "hidden_sizes": "[100, 100]", "optimizer": "adam", "beta": "0.1", "dims": "[3, 4]",
        "flag": "True", "none": "None",
    }
    assert len(params) == 157 and params["p149"] == "149"


def test_metrics_are_buffered_flushed_and_complete(mlstore) -> None:
    client, exp = mlstore
    with RunTracker(client, exp, "metrics", flush_every=1000) as run:
        assert client.get_run(run.run_id).info.status == "RUNNING"
        for step in range(999):
            run.log_metric("train/loss", 1.0 / (step + 1), step)
        assert run.n_pending == 999 and client.get_metric_history(run.run_id, "train/loss") == []
        run.log_metric("train/loss", 1.0 / 1000, 999)
        assert run.n_pending == 0  # the 1,000th point triggered a flush
        for step in range(1000, 2500):
            run.log_metric("train/loss", 1.0 / (step + 1), step)
        assert run.n_pending == 500
    history = sorted(client.get_metric_history(run.run_id, "train/loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(2500))
    assert [m.value for m in history] == [1.0 / (s + 1) for s in range(2500)]
    info = client.get_run(run.run_id).info
    assert info.status == "FINISHED" and info.end_time is not None and run.status == "FINISHED"
    assert client.get_run(run.run_id).data.metrics["train/loss"] == 1.0 / 2500


def test_log_metrics_one_step_several_keys(mlstore) -> None:
    client, exp = mlstore
    with RunTracker(client, exp, "evals") as run:
        for step in (0, 100, 200):
            run.log_metrics({"test/acc": step / 1000, "test/loss": 2.0 - step / 100}, step)
    acc = client.get_metric_history(run.run_id, "test/acc")
    assert sorted((m.step, m.value) for m in acc) == [(0, 0.0), (100, 0.1), (200, 0.2)]
    assert client.get_run(run.run_id).data.metrics == {"test/acc": 0.2, "test/loss": 0.0}


def test_exception_marks_failed_flushes_and_propagates(mlstore) -> None:
    client, exp = mlstore
    with pytest.raises(ValueError, match="boom"), RunTracker(client, exp, "fails") as run:
        for step in range(10):
            run.log_metric("train/loss", float(step), step)
        raise ValueError("boom")
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags["error"] == "ValueError: boom"
    assert len(client.get_metric_history(run.run_id, "train/loss")) == 10


def test_keyboard_interrupt_marks_killed(mlstore) -> None:
    client, exp = mlstore
    with pytest.raises(KeyboardInterrupt), RunTracker(client, exp, "interrupted") as run:
        run.log_metric("train/loss", 1.0, 0)
        raise KeyboardInterrupt
    got = client.get_run(run.run_id)
    assert got.info.status == "KILLED" and "error" not in got.data.tags
    assert len(client.get_metric_history(run.run_id, "train/loss")) == 1


def test_finish_is_idempotent_and_explicit_status_wins(mlstore) -> None:
    client, exp = mlstore
    with RunTracker(client, exp, "explicit") as run:
        run.finish("FAILED", error="diverged at step 12: " + "x" * 10_000)
        run.finish()  # no effect
        with pytest.raises(RuntimeError, match="already finished"):
            run.log_metric("train/loss", 1.0, 0)
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags["error"].startswith("diverged at step 12")
    assert len(got.data.tags["error"]) <= 4000
    with pytest.raises(ValueError, match="status"):
        RunTracker(client, exp, "bad").start().finish("DONE")


def test_failed_flush_still_terminates_the_run(mlstore) -> None:
    client, exp = mlstore

    class BrokenMetrics:
        def log_batch(self, run_id, metrics=(), **kwargs):
            if metrics:
                raise OSError("disk full")
            return client.log_batch(run_id, metrics=metrics, **kwargs)

        def __getattr__(self, attr):
            return getattr(client, attr)

    run = RunTracker(BrokenMetrics(), exp, "broken-flush").start()
    run.log_metric("train/loss", 1.0, 0)
    with pytest.raises(OSError, match="disk full"):
        run.finish()
    got = client.get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags["error"] == "metric flush failed: OSError: disk full"
    assert run.n_pending == 1  # kept, not lost

    # Inside `with`, the run's own exception is the one that propagates.
    with pytest.raises(ZeroDivisionError), RunTracker(BrokenMetrics(), exp, "broken-both") as run2:
        run2.log_metric("train/loss", 1.0, 0)
        _ = 1 / 0
    assert client.get_run(run2.run_id).info.status == "FAILED"


def test_log_series_buffers_a_block_with_spread_timestamps(mlstore) -> None:
    import time

    client, exp = mlstore
    before = int(time.time() * 1000)
    with RunTracker(client, exp, "series", flush_every=250, store_every=3) as run:
        run.log_metrics({"test/acc": 0.5}, 0)
        run.log_series("train/loss", 0, np.linspace(1.0, 0.5, 200))
        assert run.n_pending == 1 + 67  # steps 0, 3, ..., 198 go to the store ...
        run.log_series("train/loss", 200, np.array([0.25] * 400))
        assert run.n_pending < 250  # ... and reaching flush_every sent them
        run.log_series("train/loss", 600, [])
    after = int(time.time() * 1000)
    assert [p[0] for p in run.history() if p[1] == "train/loss"] == list(range(600))
    stamps = [ts for step, key, _, ts in run.buffer.points if key == "train/loss"]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after
    stored = client.get_metric_history(run.run_id, "train/loss")
    assert sorted(m.step for m in stored) == [*range(0, 600, 3), 599]  # the last point always goes
    assert client.get_run(run.run_id).data.metrics["train/loss"] == 0.25


def test_history_csv_holds_every_point(mlstore, tmp_path: Path) -> None:
    client, exp = mlstore
    with RunTracker(client, exp, "history", flush_every=7) as run:
        for step in range(30):
            run.log_metric("train/loss", 1 / 3 + step, step)
            if step % 10 == 0:
                run.log_metrics({"test/acc": 0.1 * step, "test/loss": math.inf}, step)
    path = run.write_history_csv(tmp_path / "sub" / "h.csv")
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "metric", "value"] and len(rows) == 1 + 30 + 3 * 2
    assert rows[1] == ["0", "train/loss", repr(1 / 3)]
    assert rows[2:4] == [["0", "test/acc", "0.0"], ["0", "test/loss", "inf"]]
    frame = run.history_frame()
    assert list(frame.columns) == ["step", "metric", "value"] and len(frame) == 36
    loss = frame[frame.metric == "train/loss"]
    assert loss.step.tolist() == list(range(30)) and loss.value.tolist() == [1 / 3 + s for s in range(30)]


def test_store_every_thins_the_store_not_the_history(mlstore) -> None:
    client, exp = mlstore
    with RunTracker(client, exp, "thinned", store_every=10) as run:
        for step in range(2000):
            run.log_metrics({"train/loss": float(step)}, step)
            if step % 100 == 0 or step == 1999:
                run.log_metrics({"test/acc": step / 2000}, step)
    stored = sorted(m.step for m in client.get_metric_history(run.run_id, "train/loss"))
    assert stored == [*range(0, 2000, 10), 1999]  # the last point always reaches the store
    assert sorted(m.step for m in client.get_metric_history(run.run_id, "test/acc")) == [*range(0, 2000, 100), 1999]
    assert client.get_run(run.run_id).data.metrics == {"train/loss": 1999.0, "test/acc": 1999 / 2000}
    assert len(run.history()) == 2000 + 21


def test_flush_seconds_bound_how_long_points_wait(mlstore) -> None:
    import time

    client, exp = mlstore
    with RunTracker(client, exp, "waits", flush_every=10**6, flush_seconds=3600) as run:
        run.log_series("train/loss", 0, np.linspace(1.0, 0.5, 2000))
        assert run.n_pending == 2000 and client.get_metric_history(run.run_id, "train/loss") == []
    assert len(client.get_metric_history(run.run_id, "train/loss")) == 2000  # all sent at finish
    with RunTracker(client, exp, "every-call", flush_every=10**6, flush_seconds=0) as run:
        run.log_metrics({"test/acc": 0.5}, 0)
        assert run.n_pending == 0 and len(client.get_metric_history(run.run_id, "test/acc")) == 1
    with RunTracker(client, exp, "timed", flush_every=10**6, flush_seconds=0.2) as run:
        run.log_series("train/loss", 0, [1.0, 0.9])
        time.sleep(0.3)
        run.log_series("train/loss", 2, [0.8])  # the first points have waited longer than 0.2 s: all go
        assert run.n_pending == 0 and len(client.get_metric_history(run.run_id, "train/loss")) == 3
    with pytest.raises(ValueError, match="flush_seconds must be >= 0, got -1"):
        RunTracker(client, exp, "bad", flush_seconds=-1)


def test_artifacts_need_no_run_lookup(mlstore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The artifact URI comes from create_run: MlflowClient would look the run up again (~6 ms on SQLite)."""
    from descentlab import compat

    client, exp = mlstore
    (tmp_path / "w.npz").write_bytes(b"weights")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("[]")
    with RunTracker(client, exp, "no-lookup") as run:
        run.log_metric("train/loss", 0.5, 0)
        with monkeypatch.context() as patch:
            patch.setattr(compat.mlflow_sql_store(client), "get_run", lambda *a, **k: pytest.fail("run looked up"))
            run.log_artifact(tmp_path / "w.npz")
            run.log_artifact(tmp_path / ".hydra", "job")  # a folder goes in under its name
            run.log_artifacts(tmp_path / ".hydra", "hydra")
            run.log_text("a: 1\n", "config.yaml")
            run.log_history()
    assert sorted(f.path for f in client.list_artifacts(run.run_id)) == [
        "config.yaml", "hydra", "job", "metrics.csv", "w.npz"]
    assert [f.path for f in client.list_artifacts(run.run_id, "job/.hydra")] == ["job/.hydra/overrides.yaml"]
    assert [f.path for f in client.list_artifacts(run.run_id, "hydra")] == ["hydra/overrides.yaml"]
    local = client.download_artifacts(run.run_id, "config.yaml", str(tmp_path / "dl"))
    assert Path(local).read_text() == "a: 1\n"


def test_artifacts_and_history_artifact(mlstore, tmp_path: Path) -> None:
    client, exp = mlstore
    (tmp_path / "one.txt").write_text("1")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "two.txt").write_text("2")
    with RunTracker(client, exp, "artifacts") as run:
        run.log_metric("train/loss", 0.5, 0)
        run.log_artifact(tmp_path / "one.txt")
        run.log_artifacts(tmp_path / "dir", "more")
        run.log_dict({"a": 1}, "config.json")
        run.log_text("hello", "notes/readme.txt")
        run.log_history()
    assert run.artifact_uri.endswith(f"/{run.run_id}/artifacts")
    assert sorted(f.path for f in client.list_artifacts(run.run_id)) == [
        "config.json", "metrics.csv", "more", "notes", "one.txt"]
    assert [f.path for f in client.list_artifacts(run.run_id, "more")] == ["more/two.txt"]
    local = client.download_artifacts(run.run_id, "metrics.csv", str(tmp_path / "dl"))
    assert Path(local).read_text().splitlines() == ["step,metric,value", "0,train/loss,0.5"]


def test_tags_parent_and_defaults(mlstore) -> None:
    client, exp = mlstore
    with RunTracker(client, exp, "child", tags={"config_hash": "abc"}, parent_run_id="p" * 32) as run:
        run.set_tag("seed", 3)
        run.set_tags({f"t{i}": i for i in range(120)})
    tags = client.get_run(run.run_id).data.tags
    assert tags["config_hash"] == "abc" and tags["mlflow.parentRunId"] == "p" * 32
    assert tags["mlflow.runName"] == "child" and tags["seed"] == "3" and tags["t119"] == "119"


def test_find_finished_run(mlstore, experiment: str) -> None:
    client, _ = mlstore
    with RunTracker(client, experiment, "done", tags={"config_hash": "abc"}) as done:
        pass
    with pytest.raises(RuntimeError), RunTracker(client, experiment, "failed", tags={"config_hash": "def"}):
        raise RuntimeError("no")
    RunTracker(client, experiment, "running", tags={"config_hash": "ghi"}).start()
    assert find_finished_run(client, experiment, "abc") == done.run_id
    assert find_finished_run(client, experiment, "def") is None
    assert find_finished_run(client, experiment, "ghi") is None
    assert find_finished_run(client, experiment, "zzz") is None
    with pytest.raises(ValueError, match="config_hash"):
        find_finished_run(client, experiment, "x' or '1'='1")


KEYS = st.sampled_from(["train/loss", "test/acc", "a,b", 'q"uote', "l\nf"])  # the last three need quotes


@settings(max_examples=60, deadline=None)
@given(points=st.lists(st.tuples(st.integers(0, 10**6), KEYS, st.floats(allow_nan=True, allow_infinity=True),
                                 st.integers(0, 2**41)), max_size=30),
       with_timestamp=st.booleans())
def test_points_csv_is_what_csv_writer_writes(tmp_path_factory, points, with_timestamp: bool) -> None:
    """`buffer.write_points` formats plain keys itself: the bytes must be csv.writer's, and read back exactly."""
    import io

    from descentlab.tracking.buffer import write_points

    path = tmp_path_factory.mktemp("csv") / "points.csv"
    write_points(path, points, with_timestamp)
    expected = io.StringIO(newline="")
    writer = csv.writer(expected)
    writer.writerow(["step", "metric", "value", "timestamp_ms"] if with_timestamp else ["step", "metric", "value"])
    for step, key, value, ts in points:
        writer.writerow([step, key, repr(value), ts] if with_timestamp else [step, key, repr(value)])
    assert path.read_bytes() == expected.getvalue().encode()
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert [(int(r[0]), r[1], r[2]) for r in rows] == [(s, k, repr(v)) for s, k, v, _ in points]
