"""The tracking server goes away mid-run (a real `mlflow server` on 127.0.0.1, stopped and restarted by the test).

To hit the outage at a known point, the test pauses the training process (SIGSTOP) once it has flushed
metrics, stops the server, and lets training go on (SIGCONT): its next metric flush finds no server.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import REPO, get_json
from test_cli_server import MlflowServer

pytestmark = pytest.mark.e2e  # a server cut under a real train.py: run by `pytest --all-tiers`

ITERATIONS = 3000
ARGS = ("tracking=server", f"training.iterations={ITERATIONS}", "training.eval_every=1000", "training.progress=false",
        "tracking.flush_every=300")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def runs_on(url: str) -> list[dict]:
    api = f"{url}/api/2.0/mlflow"
    try:
        exp = get_json(f"{api}/experiments/get-by-name?experiment_name=optimizer-comparison")["experiment"]
    except OSError:  # not created yet (404) or the server is restarting
        return []
    found = get_json(f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})
    return found.get("runs", [])


def loss_steps(url: str, run_id: str) -> list[int]:
    history = get_json(f"{url}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=train/loss"
                       "&max_results=25000")
    return sorted(m["step"] for m in history.get("metrics", []))


def start_and_cut(store, server: MlflowServer, out: Path, retry_s: float) -> tuple[subprocess.Popen, str]:
    """Start a run; once it has flushed metrics, pause it, stop the server, resume it. Returns (process, run id)."""
    env = store.env(MLFLOW_TRACKING_URI=server.url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")  # our retries only
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *ARGS, f"tracking.retry_s={retry_s}",
                             f"hydra.run.dir={out}"], cwd=store.root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        runs = runs_on(server.url)
        if runs and len(loss_steps(server.url, runs[0]["info"]["run_id"])) >= 300:
            os.kill(proc.pid, signal.SIGSTOP)
            server.stop()
            os.kill(proc.pid, signal.SIGCONT)
            return proc, runs[0]["info"]["run_id"]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the run did not start flushing: {proc.communicate()[1][-3000:]}")


def wait_for_retries(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the run's log shows it retrying against the absent server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if "retrying in" in (out / "train.log").read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"no retry seen: {(out / 'train.log').read_text(errors='replace')[-2000:]}")


def wait_ended(proc: subprocess.Popen, before: Callable[[], object] | None = None) -> str:
    """Run `before`, then wait for the job to end; its stderr. The job never outlives the test."""
    try:
        if before is not None:
            before()
        return proc.communicate(timeout=180)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_server_back_within_the_retry_window_loses_nothing(store, server: MlflowServer, tmp_path: Path) -> None:
    out = tmp_path / "job"
    proc, run_id = start_and_cut(store, server, out, retry_s=120)

    def bring_back() -> None:
        wait_for_retries(out, proc)
        server.start()  # same port, same database

    stderr = wait_ended(proc, before=bring_back)
    assert proc.returncode == 0, stderr[-3000:]
    run = next(r for r in runs_on(server.url) if r["info"]["run_id"] == run_id)
    assert run["info"]["status"] == "FINISHED"
    assert loss_steps(server.url, run_id) == list(range(ITERATIONS))
    assert not (out / "unsent_metrics.csv").exists()


def test_server_gone_for_good_saves_unsent_metrics_then_import_restores_them(store, server: MlflowServer,
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "job"
    proc, run_id = start_and_cut(store, server, out, retry_s=3)
    stderr = wait_ended(proc)
    assert proc.returncode == 2, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and server.url in errors[0] and str(out / "unsent_metrics.csv") in errors[0], stderr[-3000:]
    state = json.loads((out / "unsent_run.json").read_text())
    assert state["run_id"] == run_id and state["status"] == "FAILED"  # training was cut short
    with (out / "unsent_metrics.csv").open() as f:
        unsent = [int(r["step"]) for r in csv.DictReader(f) if r["metric"] == "train/loss"]
    with (out / "metrics.csv").open() as f:
        logged = [int(r["step"]) for r in csv.DictReader(f) if r["metric"] == "train/loss"]

    server.start()
    assert [r["info"]["status"] for r in runs_on(server.url)] == ["RUNNING"]  # nobody could close it
    sent = loss_steps(server.url, run_id)
    assert unsent and not set(sent) & set(unsent)
    assert sorted(sent + unsent) == logged == list(range(len(logged)))  # every point is in the store or the file

    imported = subprocess.run([sys.executable, str(REPO / "scripts" / "runs.py"), "--uri", server.url,
                               "import-unsent", str(out)], env=store.env(), capture_output=True, text=True,
                              timeout=120)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert loss_steps(server.url, run_id) == logged
    assert [r["info"]["status"] for r in runs_on(server.url)] == ["FAILED"]
