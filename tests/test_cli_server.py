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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below, after the server stops
    server = subprocess.Popen(
        [mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


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


def test_unreachable_server_fails_before_any_run(store) -> None:
    env = store.env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    result = store.train("tracking=server", "training.iterations=5", env=env, timeout=120)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], result.stderr[-2000:]
