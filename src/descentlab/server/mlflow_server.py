"""`mlflow server` as a daemon of its own: started in a new session, waited for at /health, stopped as a group.

Why a session of its own: `mlflow server` runs its web server (uvicorn or gunicorn) as child processes; signalling
the process group stops them all, and the server outlives the command that started it. Its environment: no
telemetry (offline, its thread once broke a request), no job runner (7 extra processes), and no
MLFLOW_TRACKING_URI of the caller's (the server's own store is its --backend-store-uri).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from descentlab.server.errors import ServerStartError
from descentlab.server.net import client_host, healthy
from descentlab.server.state import Proc

__all__ = ["server_env", "start", "stop"]


def server_env() -> dict[str, str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def start(backend_uri: str, artifacts: Path, host: str, port: int, log: Path, timeout: float = 180.0) -> Proc:
    """Start `mlflow server --workers 1` with proxied artifacts in `artifacts`; return once /health answers.

    ServerStartError (with the log's last lines) when it exits or does not answer within `timeout`; the
    process group is stopped then.
    """
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
            "--backend-store-uri", backend_uri, "--serve-artifacts", "--artifacts-destination", str(artifacts)]
    with open(log, "a") as handle:  # the child keeps its own descriptor
        process = subprocess.Popen(argv, env=server_env(), stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=artifacts.parent)
    proc = Proc.of(process.pid) or Proc(process.pid, 0.0)
    url = f"http://{client_host(host)}:{port}"
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            process.wait()
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            why = f"exited with code {process.returncode}" if process.returncode is not None else "did not answer"
            raise ServerStartError(f"mlflow server {why} at {url} (log {log}):\n{tail}")
        time.sleep(0.25)
    return proc


def group_members(proc: Proc) -> list[int]:
    """The live (non-zombie) processes of the server's group: its leader and workers, none started before it
    (so a group id reused after a reboot matches nothing)."""
    members = []
    for other in psutil.process_iter(["pid", "status", "create_time"]):
        try:
            if (os.getpgid(other.pid) == proc.pid and other.info["status"] != psutil.STATUS_ZOMBIE
                    and other.info["create_time"] >= proc.started - 0.01):
                members.append(other.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def stop(proc: Proc, timeout: float = 20.0) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL after `timeout` seconds.

    A group with none of our processes left (gone, or its id reused) is left alone.
    """
    if not group_members(proc):
        return
    pgid = proc.pid  # it leads its own session and group
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while group_members(proc):
        if time.monotonic() > deadline:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 5
        time.sleep(0.1)
