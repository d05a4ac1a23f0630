"""A sweep tracked on a real `mlflow server` (127.0.0.1, a free port), read back over the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import get_json
from descentlab.server.net import free_port

pytestmark = pytest.mark.e2e  # an MLflow server and train.py as processes: run by `pytest --all-tiers`


class MlflowServer:
    """The project's tracking server (`descentlab.server`, SQLite backend) in `root`; can be stopped and started
    again (same port, same data), as a server that restarts would be."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.data, self.port = root / "server", port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        from descentlab.server import start

        return start(self.data, port=self.port, backend="sqlite", say=_quiet).tracking_uri

    def stop(self) -> None:
        from descentlab.server import stop

        stop(self.data, say=_quiet)


def _quiet(line: str) -> None:
    """The server's progress lines: not needed in a test's output."""


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
