"""Unit level: liveness tags and heartbeat, stale-run repair, retries, saving and re-importing unsent metrics."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

from descentlab.data.idx_specs import cache_root
from descentlab.tracking import RunTracker, artifact_root_for, get_or_create_experiment, open_store
from descentlab.tracking.liveness import HEARTBEAT_TAG, HOST_TAG, PID_TAG, STARTED_TAG, process_alive
from descentlab.tracking.repair import find_stale_runs, repair_experiment
from descentlab.tracking.retry import RetryingClient, RetryPolicy, is_transient
from descentlab.tracking.settings import SqliteSettings
from descentlab.tracking.unsent import UNSENT_CSV, UNSENT_JSON, TrackingLostError, import_unsent

# The schema template in the data cache, as the entry configures it: a new store in milliseconds.
SQLITE = SqliteSettings(template_dir=str(cache_root()))

HOST = socket.gethostname()
NOW_MS = int(time.time() * 1000)


@pytest.fixture(autouse=True)
def _now() -> None:
    """Heartbeat ages are measured from each test's start: a module imported minutes before its tests run (a long
    suite) would otherwise age every "fresh" heartbeat past the 300 s timeout."""
    global NOW_MS
    NOW_MS = int(time.time() * 1000)


@pytest.fixture
def mlstore(tmp_path: Path) -> tuple:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = open_store(uri, SQLITE)
    return client, get_or_create_experiment(client, "faults", artifact_root_for(uri))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid no longer exists
    return proc.pid


def make_run(client, exp: str, name: str, *, pid: int | None, host: str = HOST, beat_age_s: float = 0.0,
             started_ms: int | None = None, extra: dict | None = None) -> str:
    tags = {HEARTBEAT_TAG: str(int(NOW_MS - beat_age_s * 1000)), HOST_TAG: host,
            STARTED_TAG: str(started_ms if started_ms is not None else NOW_MS), **(extra or {})}
    if pid is not None:
        tags[PID_TAG] = str(pid)
    return client.create_run(exp, run_name=name, tags=tags).info.run_id


def test_process_alive_sees_dead_reused_and_live_pids() -> None:
    assert process_alive(os.getpid(), NOW_MS)
    assert not process_alive(dead_pid())
    # Our pid, but "the run started" an hour before this process did: the pid was reused.
    assert not process_alive(os.getpid(), NOW_MS - 3_600_000 - int(time.monotonic() * 1000))
    assert not process_alive(0)


def test_repair_marks_only_runs_whose_process_is_gone(mlstore) -> None:
    client, exp = mlstore
    dead = make_run(client, exp, "dead-pid", pid=dead_pid())
    live_old_beat = make_run(client, exp, "live-old-beat", pid=os.getpid(), beat_age_s=3600)
    remote_silent = make_run(client, exp, "remote-silent", pid=123, host="elsewhere", beat_age_s=400)
    remote_fresh = make_run(client, exp, "remote-fresh", pid=123, host="elsewhere", beat_age_s=10)
    untagged = client.create_run(exp, run_name="no-liveness-tags").info.run_id
    done = make_run(client, exp, "already-done", pid=dead_pid())
    client.set_terminated(done, "FINISHED")

    assert {s.run_id for s in find_stale_runs(client, exp, timeout_s=300)} == {dead, remote_silent}
    stale = repair_experiment(client, exp, timeout_s=300)
    assert {s.run_id for s in stale} == {dead, remote_silent}
    status = {r: client.get_run(r).info.status for r in (dead, live_old_beat, remote_silent, remote_fresh,
                                                           untagged, done)}
    assert status == {dead: "FAILED", live_old_beat: "RUNNING", remote_silent: "FAILED", remote_fresh: "RUNNING",
                      untagged: "RUNNING", done: "FINISHED"}
    assert "is gone" in client.get_run(dead).data.tags["failure_reason"]
    assert "no heartbeat" in client.get_run(remote_silent).data.tags["failure_reason"]
    assert client.get_run(dead).data.tags["error"].startswith("WorkerLost: ")
    assert client.get_run(remote_silent).info.end_time == NOW_MS - 400_000  # ended at its last sign of life
    assert repair_experiment(client, exp, timeout_s=300) == []  # idempotent


def test_jobs_repair_once_a_minute_per_process_and_experiment(mlstore, monkeypatch, capsys) -> None:
    """`TrackingSession.repair_stale` (what each job calls): a worker's later jobs skip the search for a minute."""
    from descentlab.tracking import session
    from descentlab.tracking.settings import TrackingSettings

    client, exp = mlstore
    clock = [1000.0]
    monkeypatch.setattr(session, "_repaired_at", {})
    monkeypatch.setattr(session, "_monotonic", lambda: clock[0])
    uri, settings = str(client.tracking_uri), TrackingSettings(stale_after_s=300.0)
    first = make_run(client, exp, "first", pid=dead_pid())
    session.TrackingSession(uri, client, exp, settings).repair_stale()
    later = make_run(client, exp, "later", pid=dead_pid())
    clock[0] += 59.0
    session.TrackingSession(uri, client, exp, settings).repair_stale()  # within the minute: not searched again
    assert (client.get_run(first).info.status, client.get_run(later).info.status) == ("FAILED", "RUNNING")
    other = client.create_experiment("other-experiment")
    elsewhere = make_run(client, other, "elsewhere", pid=dead_pid())
    session.TrackingSession(uri, client, other, settings).repair_stale()  # another experiment is its own
    clock[0] += 2.0
    session.TrackingSession(uri, client, exp, settings).repair_stale()
    assert client.get_run(later).info.status == "FAILED" and client.get_run(elsewhere).info.status == "FAILED"
    assert capsys.readouterr().err.count("repaired: run ") == 3


def test_repair_can_be_scoped_to_one_config_and_dry_run(mlstore) -> None:
    client, exp = mlstore
    mine = make_run(client, exp, "mine", pid=dead_pid(), extra={"config_hash": "abc"})
    other = make_run(client, exp, "other", pid=dead_pid(), extra={"config_hash": "xyz"})
    assert [s.run_id for s in repair_experiment(client, exp, config_hash="abc", dry_run=True)] == [mine]
    assert client.get_run(mine).info.status == "RUNNING"
    repair_experiment(client, exp, config_hash="abc")
    assert (client.get_run(mine).info.status, client.get_run(other).info.status) == ("FAILED", "RUNNING")


def test_sweep_parent_left_open_is_closed_only_without_live_children(mlstore) -> None:
    client, exp = mlstore
    orphan = client.create_run(exp, run_name="sweep-old", tags={"sweep.dir": "/x/old"}, start_time=NOW_MS - 900_000)
    child = make_run(client, exp, "child-dead", pid=dead_pid(), beat_age_s=800,
                     extra={"mlflow.parentRunId": orphan.info.run_id})
    busy = client.create_run(exp, run_name="sweep-busy", tags={"sweep.dir": "/x/busy"}, start_time=NOW_MS - 900_000)
    make_run(client, exp, "child-live", pid=os.getpid(), extra={"mlflow.parentRunId": busy.info.run_id})
    stale = {s.run_id: s.reason for s in repair_experiment(client, exp, timeout_s=300)}
    assert set(stale) == {orphan.info.run_id, child}
    assert "sweep parent left open" in stale[orphan.info.run_id]
    assert client.get_run(busy.info.run_id).info.status == "RUNNING"


def test_sweep_parent_is_judged_by_the_child_that_ended_last(mlstore) -> None:
    """A parent is open while any child ended within the timeout, found among FINISHED and RUNNING children alike."""
    client, exp = mlstore
    parents = {}
    for name, last_end_s in (("recent", 10), ("quiet", 600)):
        parent = client.create_run(exp, run_name=name, tags={"sweep.dir": f"/x/{name}"}, start_time=NOW_MS - 900_000)
        parents[name] = parent.info.run_id
        for age_s in (850, last_end_s, 700):  # the latest end is not the first or the last child made
            child = client.create_run(exp, tags={"mlflow.parentRunId": parent.info.run_id},
                                      start_time=NOW_MS - 890_000)
            client.set_terminated(child.info.run_id, "FINISHED", end_time=NOW_MS - age_s * 1000)
        make_run(client, exp, f"{name}-dead", pid=dead_pid(), beat_age_s=800,
                 extra={"mlflow.parentRunId": parent.info.run_id})  # RUNNING, no end time: sorted last
    stale = {s.run_id for s in repair_experiment(client, exp, timeout_s=300, dry_run=True)}
    assert parents["quiet"] in stale and parents["recent"] not in stale


def test_tracker_tags_liveness_and_beats_until_finished(mlstore) -> None:
    client, exp = mlstore
    with RunTracker(client, exp, "beating", heartbeat_s=0.1) as run:
        tags = client.get_run(run.run_id).data.tags
        assert tags[PID_TAG] == str(os.getpid()) and tags[HOST_TAG] == HOST
        first = int(tags[HEARTBEAT_TAG])
        deadline = time.monotonic() + 20
        while int(client.get_run(run.run_id).data.tags[HEARTBEAT_TAG]) == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert int(client.get_run(run.run_id).data.tags[HEARTBEAT_TAG]) > first
        assert find_stale_runs(client, exp, timeout_s=300) == []  # our own live run is never stale
    last = client.get_run(run.run_id).data.tags[HEARTBEAT_TAG]
    time.sleep(0.5)
    assert client.get_run(run.run_id).data.tags[HEARTBEAT_TAG] == last  # no beat after the run ended


class Flaky:
    """A client whose calls fail with `error` `failures` times, then answer."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0
        self.tracking_uri = "http://127.0.0.1:9"

    def get_run(self, run_id: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return run_id


FAST = RetryPolicy(deadline_s=5.0, first_wait_s=0.01, max_wait_s=0.05)


def test_retrying_client_rides_out_transient_errors_only() -> None:
    down = MlflowException("API request failed: connection refused", error_code=INTERNAL_ERROR)
    flaky = Flaky(3, down)
    assert RetryingClient(flaky, FAST).get_run("r1") == "r1" and flaky.calls == 4
    assert RetryingClient(Flaky(0, down), FAST).tracking_uri == "http://127.0.0.1:9"

    bad = Flaky(1, MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST))
    with pytest.raises(MlflowException, match="no such run"):
        RetryingClient(bad, FAST).get_run("r1")
    assert bad.calls == 1
    assert is_transient(MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE))
    assert not is_transient(OSError("disk full"))


def test_retrying_client_gives_up_at_the_deadline_then_fails_fast() -> None:
    down = Flaky(10**9, ConnectionRefusedError("refused"))
    client = RetryingClient(down, RetryPolicy(deadline_s=0.3, first_wait_s=0.01, max_wait_s=0.05))
    start = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        client.get_run("r1")
    assert time.monotonic() - start >= 0.3 and down.calls > 2
    calls = down.calls
    with pytest.raises(ConnectionRefusedError):
        client.get_run("r1")
    assert down.calls == calls + 1  # the store is known to be away: one attempt, no second wait
    down.failures = 0
    assert client.get_run("r2") == "r2" and client.outage_since is None


class GoesAway:
    """The real client until `away` is set; then metric batches and run updates fail like an absent server."""

    def __init__(self, client) -> None:
        self.client, self.away = client, False

    def __getattr__(self, name: str):
        attr = getattr(self.client, name)
        if name not in ("log_batch", "set_tag", "set_terminated") or not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.away:
                raise MlflowException("API request to http://127.0.0.1:9 failed: connection refused",
                                      error_code=INTERNAL_ERROR)
            return attr(*args, **kwargs)

        return call


@pytest.mark.parametrize(("away_at", "n_steps", "n_sent", "status"), [(105, 120, 100, "FINISHED"),
                                                                 (60, 200, 50, "FAILED")])
def test_lost_store_saves_every_unsent_point_and_import_restores_them(
        mlstore, tmp_path: Path, away_at: int, n_steps: int, n_sent: int, status: str) -> None:
    """Store lost at the final flush (the run had trained: FINISHED once imported) or mid-run (FAILED)."""
    client, exp = mlstore
    wrapped = GoesAway(client)
    tracker = RunTracker(RetryingClient(wrapped, RetryPolicy(deadline_s=0.2, first_wait_s=0.01)), exp, "lost",
                         flush_every=50, spill_dir=tmp_path / "job")
    logged = 0
    with pytest.raises(TrackingLostError) as info, tracker:
        for step in range(n_steps):
            wrapped.away = step >= away_at
            tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
            logged += 1
    n_logged = n_steps if status == "FINISHED" else 100  # mid-run: the flush at step 99 gave up
    assert logged in (n_logged, n_logged - 1)
    message = str(info.value)
    assert "\n" not in message and client.tracking_uri in message
    assert str(tmp_path / "job" / UNSENT_CSV) in message and "import-unsent" in message
    with (tmp_path / "job" / UNSENT_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(n_sent, n_logged))  # exactly the points the store lacks
    with (tmp_path / "job" / "metrics.csv").open() as f:
        assert len(list(csv.DictReader(f))) == n_logged
    state = json.loads((tmp_path / "job" / UNSENT_JSON).read_text())
    assert state["run_id"] == tracker.run_id and state["status"] == status
    assert client.get_run(tracker.run_id).info.status == "RUNNING"
    assert len(client.get_metric_history(tracker.run_id, "train/loss")) == n_sent

    done = import_unsent(tmp_path / "job", tracking_uri=client.tracking_uri)
    assert done["n_points"] == n_logged - n_sent
    run = client.get_run(tracker.run_id)
    assert run.info.status == status
    assert sorted(m.step for m in client.get_metric_history(tracker.run_id, "train/loss")) == list(range(n_logged))
    assert "metrics.csv" in {a.path for a in client.list_artifacts(tracker.run_id)}
    import_unsent(tmp_path / "job", tracking_uri=client.tracking_uri)  # repeating it adds nothing
    assert len(client.get_metric_history(tracker.run_id, "train/loss")) == n_logged


@pytest.mark.e2e
def test_runs_script_lists_and_repairs(mlstore, tmp_path: Path) -> None:
    client, exp = mlstore
    dead = make_run(client, exp, "dead-job", pid=dead_pid())
    script = [sys.executable, str(Path(__file__).resolve().parent.parent / "scripts" / "runs.py"),
              "--uri", client.tracking_uri]

    def runs(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*script, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    dry = runs("repair", "faults", "--dry-run")
    assert dry.returncode == 0 and f"would mark FAILED: {dead}" in dry.stdout
    assert client.get_run(dead).info.status == "RUNNING"
    done = runs("repair", "faults")
    assert done.returncode == 0 and dead in done.stdout and "1 stale runs marked FAILED" in done.stderr
    listed = runs("list", "faults", "--status", "FAILED")
    assert listed.returncode == 0 and dead in listed.stdout and "is gone" in listed.stdout
    missing = runs("repair", "no-such-experiment")
    assert missing.returncode == 2 and missing.stderr.startswith("error: no experiment 'no-such-experiment'")
    assert client.get_run(dead).info.status == "FAILED"
