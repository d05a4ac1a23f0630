"""Shared fixtures: running the real `train.py` CLI in a subprocess against a temporary MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Store:
    """A temporary SQLite store and output folder, and a way to run `train.py` against them."""

    root: Path
    calls: int = 0

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlruns' / 'mlflow.db'}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
        env.update({"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_DISABLE_TELEMETRY": "true",
                    "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
        return env

    def train(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> CliResult:
        self.calls += 1  # a fresh output folder per call, as Hydra's timestamped default gives
        outputs = [f"hydra.run.dir={self.root}/outputs/{self.calls}",
                   f"hydra.sweep.dir={self.root}/multirun/{self.calls}"]
        proc = subprocess.run(
            [sys.executable, str(REPO / "train.py"), *args, *outputs],
            cwd=self.root, env=env or self.env(), capture_output=True, text=True, timeout=timeout,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment: str = "optimizer-comparison") -> list:
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return client.search_runs([exp.experiment_id], max_results=1000)


def log_history_csv(client, run_id: str, points: list[tuple[int, str, float]], folder: Path) -> None:
    """Log `points` (step, metric, value) as the run's `metrics.csv` artifact, as `RunTracker.log_history` does."""
    import csv

    path = folder / run_id / "metrics.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "metric", "value"])
        writer.writerows((s, k, repr(v)) for s, k, v in points)
    client.log_artifact(run_id, str(path))


@pytest.fixture(autouse=True)
def _own_signal_handlers() -> Iterator[None]:
    """A test that runs a job in this process (`app.run`) installs descentlab's SIGINT/SIGTERM handlers: give the
    test runner its own back, and forget any signal a test sent, so tests stay independent and Ctrl-C stops pytest."""
    from descentlab import interrupts

    handlers = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    interrupts._state = interrupts._State()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return Store(tmp_path)
