"""A sweep tracked on a real `mlflow server` (127.0.0.1, a free port), read back over the REST API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # an MLflow server and train.py as processes: run by `pytest --all-tiers`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend in `root`; can be stopped and started again (same port,
    same data), as a server that restarts would be."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = root, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 90) -> str:
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        self.starts += 1
        log_path = self.root / f"server-{self.starts}.log"
        with open(log_path, "w") as log:  # the child keeps its own copy of the file descriptor
            self.process = subprocess.Popen(
                [mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
                 "--artifacts-destination", str(self.root / "server-artifacts")],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    server = MlflowServer(tmp_path)
    try:
        yield server.start()
    finally:
        server.stop()


def test_sweep_against_a_tracking_server(store, mlflow_server: str) -> None:
    env = store.env(MLFLOW_TRACKING_URI=mlflow_server)
    result = store.train("-m", "tracking=server", "optimizer=sgd,adam", "training.iterations=30",
                         "training.eval_every=10", env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = get_json(f"{api}/experiments/get-by-name?experiment_name=optimizer-comparison")["experiment"]
    runs = get_json(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    child_runs = [r for r, t in zip(runs, tags, strict=True) if "mlflow.parentRunId" in t]
    assert len(runs) == 3 and len(child_runs) == 2
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}
    for run in child_runs:
        run_id = run["info"]["run_id"]
        history = get_json(f"{api}/metrics/get-history?run_id={run_id}&metric_key=train/loss&max_results=1000")
        assert sorted(m["step"] for m in history["metrics"]) == list(range(30))
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["optimizer.name"] in {"sgd", "adam"} and params["training.iterations"] == "30"
        artifacts = get_json(f"{mlflow_server}/api/2.0/mlflow/artifacts/list?run_id={run_id}")
        assert {"weights.npz", "metrics.csv", "config.yaml"} <= {f["path"] for f in artifacts["files"]}
    # A server store: the launching process made the parent before any job (tracking.sweep_parent=auto).
    parent = next(r for r, t in zip(runs, tags, strict=True) if "mlflow.parentRunId" not in t)
    assert parent["info"]["start_time"] <= min(r["info"]["start_time"] for r in child_runs)

    again = store.train("-m", "tracking=server", "optimizer=sgd,adam", "training.iterations=30",
                        "training.eval_every=10", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped ") == 2
    rerun = get_json(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 100})
    assert len(rerun["runs"]) == 3  # the second launch's parent, which no job joined, was deleted


def test_unreachable_server_fails_before_any_run(store) -> None:
    env = store.env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    result = store.train("tracking=server", "training.iterations=5", env=env, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], result.stderr[-2000:]
