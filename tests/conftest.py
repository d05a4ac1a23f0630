"""Shared fixtures: running the real `train.py` CLI against a temporary MLflow store, in this process (fast:
bad input, quick runs) or in a subprocess (end-to-end: signals, exit, sweeps over worker processes).

Tiers: the default `python -m pytest` runs every test not marked `e2e` (unit tests, in-process Hydra `compose`,
`app.run` and `train.py` in-process); `python -m pytest --all-tiers` (what CI runs) adds the `e2e` tests, which
start `train.py` or a script as a process of its own.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import runpy
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TIER = "not e2e"  # pyproject's `addopts -m`: what a plain `python -m pytest` runs


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all-tiers", action="store_true",
                     help=f"run every tier: also the e2e tests the default `-m '{DEFAULT_TIER}'` leaves out")


def pytest_configure(config: pytest.Config) -> None:
    """`--all-tiers` clears the default marker expression (pyproject's `-m 'not e2e'`), not one given on the command
    line after it."""
    if DEFAULT_TIER not in " ".join(config.getini("addopts")):  # the two spellings of the default tier drifted
        raise pytest.UsageError(f"pyproject's addopts must select the default tier with -m '{DEFAULT_TIER}'")
    if config.getoption("--all-tiers") and config.option.markexpr == DEFAULT_TIER:
        config.option.markexpr = ""


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

    def train_in_process(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        """`python train.py ARGS` run in this process (the file as `__main__`, so through its `guarded_main`): the
        same exit code, stderr and store writes as `train`, without a new interpreter (~3 s each)."""
        self.calls += 1
        outputs = [f"hydra.run.dir={self.root}/outputs/{self.calls}",
                   f"hydra.sweep.dir={self.root}/multirun/{self.calls}"]
        return run_in_process(REPO / "train.py", [*args, *outputs], env=env or self.env(), cwd=self.root)

    def script_in_process(self, name: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
        """`python scripts/NAME ARGS` run in this process, as `train_in_process` runs `train.py`."""
        return run_in_process(REPO / "scripts" / name, list(args), env=env or self.env(), cwd=self.root)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def runs(self, experiment: str = "optimizer-comparison") -> list:
        if not (self.root / "mlruns" / "mlflow.db").exists():
            return []  # no store, no run (and no store made by asking: MLflow builds a new one's schema in ~3 s)
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        return client.search_runs([exp.experiment_id], max_results=1000)


def run_in_process(path: Path, args: list[str], env: dict[str, str], cwd: Path) -> CliResult:
    """`python PATH ARGS` in this process: the file run as `__main__` (what Hydra needs to find `conf/` next to it)."""
    return in_process(lambda: runpy.run_path(str(path), run_name="__main__"), [str(path), *args], env, cwd)


def in_process(call: Callable[[], object], argv: list[str], env: dict[str, str], cwd: Path) -> CliResult:
    """Run a command-line entry in this process with `sys.argv`, the environment and the working directory set as
    a subprocess would have them: its exit code (SystemExit; 1 and the traceback on stderr for an uncaught
    exception, as the interpreter does), stdout and stderr. Everything it changes in this process is put back:
    the environment, argv, working directory, Hydra's global state, the collector (which `guarded_main` pauses),
    the root logger."""
    from hydra.core.global_hydra import GlobalHydra

    saved_env, saved_argv, saved_cwd = os.environ.copy(), sys.argv[:], os.getcwd()
    gc_enabled = gc.isenabled()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level

    out, err = io.StringIO(), io.StringIO()
    code: int = 0
    GlobalHydra.instance().clear()
    os.environ.clear()
    os.environ.update(env)
    sys.argv = argv
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                call()
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        GlobalHydra.instance().clear()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        if gc_enabled:
            gc.enable()
    return CliResult(code, out.getvalue(), err.getvalue())


def compose_config(*overrides: str, hydra: bool = False):
    """conf/config.yaml composed with `overrides` as train.py composes a job's config (schemas registered), without
    running anything; `hydra`: keep the `hydra` node."""
    from hydra import compose, initialize_config_dir

    from descentlab.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[object]:
    """A scratch PostgreSQL cluster for the session (`descentlab.server.postgres.scratch_cluster`; each user makes
    its own database with `create_database(name)`); skipped, with the reason, where PostgreSQL is not installed."""
    from descentlab.server import ServerInputError
    from descentlab.server.postgres import find_bin, scratch_cluster

    try:
        find_bin()
    except ServerInputError as exc:
        pytest.skip(str(exc))
    with scratch_cluster() as cluster:
        yield cluster


def get_json(url: str, payload: dict | None = None) -> dict:
    """A tracking server's REST answer (POST with `payload`, else GET), as the tests read runs back over HTTP."""
    import json
    import urllib.request

    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())

