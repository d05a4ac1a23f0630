"""scripts/server.py for real: PostgreSQL initialised and started, `mlflow server` on it with proxied artifacts,
a training run tracked through it and read back over the REST API, a restart that keeps the data, a stop that
leaves no process; the SQLite backend; bad input refused in one line with nothing left running."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from conftest import get_json
from descentlab.server.net import free_port

pytestmark = pytest.mark.e2e  # PostgreSQL, mlflow server and train.py as processes: run by `pytest --all-tiers`

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "server.py"
ITERATIONS, EVAL_EVERY = 60, 20


def server(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def gone(pid: int) -> bool:
    """No such process, or only its zombie (the container's init may not reap daemons' parents' children)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def family(pid: int) -> list[int]:
    """The process and all its descendants (mlflow server and its uvicorn worker)."""
    proc = psutil.Process(pid)
    return [proc.pid, *(c.pid for c in proc.children(recursive=True))]


def listening(pids: list[int]) -> set[str]:
    """The addresses these processes listen on (TCP)."""
    addresses = set()
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                addresses.add(conn.laddr.ip)
    return addresses


@dataclass
class Server:
    data: Path
    port: int
    uri: str

    def status(self) -> tuple[int, dict]:
        result = server("status", "--data", str(self.data), "--json")
        return result.returncode, json.loads(result.stdout)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Server]:
    """A PostgreSQL-backed server for the module, in a folder the `postgres` user can enter (pytest's tmp_path
    sits under a 0700 folder of root's, which PostgreSQL, run as `postgres`, cannot reach)."""
    data = Path(tempfile.mkdtemp(prefix="descentlab-server-"))
    port = free_port()
    try:
        started = time.monotonic()
        result = server("start", "--data", str(data), "--port", str(port))
        assert result.returncode == 0, result.stderr[-3000:]
        print(f"first start: {time.monotonic() - started:.1f} s")
        assert last_line(result.stdout) == f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}"
        assert "initialising PostgreSQL in" in result.stderr
        yield Server(data, port, f"http://127.0.0.1:{port}")
    finally:
        stopped = server("stop", "--data", str(data))
        shutil.rmtree(data, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr


def test_status_json_describes_a_running_postgresql_backed_server(pg_server: Server) -> None:
    code, st = pg_server.status()
    assert code == 0 and st["running"] is True
    assert st["backend"] == "postgresql" and st["tracking_uri"] == pg_server.uri
    assert st["data"] == str(pg_server.data)
    assert re.fullmatch(r"postgresql\+psycopg2://postgres@127\.0\.0\.1:\d+/mlflow", st["database_uri"])
    pids = st["pids"]
    assert isinstance(pids["postgres"], int) and isinstance(pids["mlflow"], int)
    assert psutil.Process(pids["postgres"]).username() == "postgres" or os.geteuid() != 0  # never root
    assert listening(family(pids["postgres"])) == {"127.0.0.1"}
    assert listening(family(pids["mlflow"])) == {"127.0.0.1"}
    human = server("status", "--data", str(pg_server.data))
    assert human.returncode == 0 and human.stdout.startswith("running (postgresql)")


def test_starting_again_says_it_runs_and_prints_the_same_uri(pg_server: Server) -> None:
    _, before = pg_server.status()
    result = server("start", "--data", str(pg_server.data))
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert last_line(result.stdout) == f"MLFLOW_TRACKING_URI={pg_server.uri}"
    assert pg_server.status()[1]["pids"] == before["pids"]


def test_a_tracked_run_reads_back_over_the_rest_api(pg_server: Server, store) -> None:
    env = store.env(MLFLOW_TRACKING_URI=pg_server.uri)
    result = store.train("tracking=server", "dataset=digits", f"training.iterations={ITERATIONS}",
                         f"training.eval_every={EVAL_EVERY}", "training.progress=false", env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    api = f"{pg_server.uri}/api/2.0/mlflow"
    experiment = get_json(f"{api}/experiments/get-by-name?experiment_name=optimizer-comparison")["experiment"]
    (run,) = get_json(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    run_id = run["info"]["run_id"]
    assert run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["training.iterations"] == str(ITERATIONS) and params["dataset.name"] == "digits"
    latest = {m["key"]: m for m in run["data"]["metrics"]}
    history = {
        key: get_json(f"{api}/metrics/get-history?run_id={run_id}&metric_key={key}&max_results=10000")["metrics"]
        for key in latest
    }
    assert sorted(m["step"] for m in history["train/loss"]) == list(range(ITERATIONS))
    assert sorted(m["step"] for m in history["test/acc"]) == list(range(0, ITERATIONS + 1, EVAL_EVERY))

    # Artifacts go through the server (proxied) into its data folder; the client never sees that folder.
    files = {f["path"] for f in get_json(f"{api}/artifacts/list?run_id={run_id}")["files"]}
    assert {"metrics.csv", "config.yaml", "weights.npz"} <= files
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/")
    location = run["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
    with urllib.request.urlopen(f"{pg_server.uri}/api/2.0/mlflow-artifacts/artifacts/{location}/metrics.csv",
                                timeout=10) as response:
        csv_lines = response.read().decode().strip().splitlines()
    assert csv_lines[0] == "step,metric,value"
    loss_steps = sorted(int(row.split(",")[0]) for row in csv_lines[1:] if row.split(",")[1] == "train/loss")
    assert loss_steps == list(range(ITERATIONS))  # every point in the CSV artifact too
    assert (pg_server.data / "artifacts" / location / "metrics.csv").is_file()
    assert not (store.root / "mlruns" / "artifacts").exists()


def test_stop_leaves_no_process_and_a_restart_keeps_the_data(pg_server: Server) -> None:
    api = f"{pg_server.uri}/api/2.0/mlflow"
    marker = get_json(f"{api}/experiments/create", {"name": "kept-across-restarts"})["experiment_id"]
    _, st = pg_server.status()
    processes = family(st["pids"]["postgres"]) + family(st["pids"]["mlflow"])

    started = time.monotonic()
    stopped = server("stop", "--data", str(pg_server.data))
    print(f"stop: {time.monotonic() - started:.1f} s")
    assert stopped.returncode == 0, stopped.stderr
    assert [pid for pid in processes if not gone(pid)] == []
    code, st = pg_server.status()
    assert code == 3 and st["running"] is False and st["pids"] == {"postgres": None, "mlflow": None}
    again = server("stop", "--data", str(pg_server.data))
    assert again.returncode == 0 and "already stopped" in again.stderr

    started = time.monotonic()
    restarted = server("start", "--data", str(pg_server.data))  # port and database port remembered
    print(f"restart: {time.monotonic() - started:.1f} s")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert last_line(restarted.stdout) == f"MLFLOW_TRACKING_URI={pg_server.uri}"
    assert "initialising" not in restarted.stderr
    kept = get_json(f"{api}/experiments/get-by-name?experiment_name=kept-across-restarts")["experiment"]
    assert kept["experiment_id"] == marker


def test_sqlite_backend_starts_and_stops(tmp_path: Path) -> None:
    data, port = tmp_path / "server", free_port()  # no PostgreSQL user involved: any folder will do
    result = server("start", "--data", str(data), "--port", str(port), "--backend", "sqlite")
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        assert last_line(result.stdout) == f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}"
        code, st = Server(data, port, "").status()
        assert code == 0 and st["backend"] == "sqlite" and st["pids"]["postgres"] is None
        assert st["database_uri"] == f"sqlite:///{data / 'mlflow.db'}" and (data / "mlflow.db").is_file()
        created = get_json(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/create", {"name": "on-sqlite"})
        assert created["experiment_id"]
        processes = family(st["pids"]["mlflow"])
    finally:
        stopped = server("stop", "--data", str(data))
    assert stopped.returncode == 0, stopped.stderr
    assert [pid for pid in processes if not gone(pid)] == []
    assert Server(data, port, "").status()[0] == 3
    assert not (data / "postgres").exists()


def _refused(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and last_line(result.stderr) == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def _nothing_runs_in(data: Path) -> None:
    assert server("status", "--data", str(data)).returncode == 3
    assert not (data / "postgres").exists()
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"]) if str(data) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


def test_bad_input_is_one_line_exit_2_and_starts_nothing(tmp_path: Path) -> None:
    data = tmp_path / "server"
    _refused(server("start", "--data", str(data), "--backend", "mysql"), "'mysql'", "allowed: postgresql, sqlite")
    _nothing_runs_in(data)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _refused(server("start", "--data", str(data), "--port", str(port)), f"--port {port}", "already in use")
        _nothing_runs_in(data)
        _refused(server("start", "--data", str(data), "--port", str(free_port()), "--db-port", str(port)),
                 f"--db-port {port}", "already in use")
        _nothing_runs_in(data)
    _refused(server("start", "--data", str(data), "--port", "70000", "--backend", "sqlite"), "--port 70000",
             "1..65535")
    _nothing_runs_in(data)
