"""start / stop / status of a data folder's tracking server: PostgreSQL (or a SQLite file) behind `mlflow server`.

Layout of a data folder DIR: `postgres/` (the cluster), `postgres.log`, `.s.PGSQL.<port>` (its socket),
`artifacts/` (proxied artifacts), `mlflow.log`, `mlflow.db` (sqlite backend), `server.json` (state, ports
remembered across restarts), `server.lock`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from descentlab.server import mlflow_server, net
from descentlab.server import state as state_file
from descentlab.server.errors import ServerInputError
from descentlab.server.postgres import Cluster, find_bin, run_as_user
from descentlab.server.state import Proc, State

__all__ = ["BACKENDS", "ServerStatus", "start", "status", "stop"]

BACKENDS = ("postgresql", "sqlite")
DEFAULT_PORT = 5000
DEFAULT_HOST = "127.0.0.1"

Say = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class ServerStatus:
    """What `status --json` prints."""

    running: bool
    backend: str
    tracking_uri: str
    database_uri: str
    data: str
    pids: dict[str, int | None]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _database_uri(data: Path, st: State) -> str:
    if st.backend == "sqlite":
        return "sqlite:///" + (data / "mlflow.db").as_posix()
    return f"postgresql+psycopg2://postgres@127.0.0.1:{st.db_port}/mlflow" if st.db_port else ""


def _tracking_uri(st: State) -> str:
    return f"http://{net.client_host(st.host)}:{st.port}"


def _alive(proc: Proc | None) -> bool:
    return proc is not None and proc.alive()


def _status(data: Path, st: State) -> ServerStatus:
    pg_ok = st.backend == "sqlite" or _alive(st.postgres)
    running = pg_ok and _alive(st.mlflow) and net.healthy(_tracking_uri(st))
    pids = {"postgres": st.postgres.pid if _alive(st.postgres) else None,
            "mlflow": st.mlflow.pid if _alive(st.mlflow) else None}
    return ServerStatus(running, st.backend, _tracking_uri(st), _database_uri(data, st), str(data), pids)


def status(data: Path) -> ServerStatus:
    """The data folder's servers as they are now (running: every process alive and /health answering)."""
    data = Path(data).expanduser().absolute()
    return _status(data, state_file.load(data) or State())


def _check_port(flag: str, host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ServerInputError(f"{flag} {port} is not a port; allowed: 1..65535")
    if not net.port_free(host, port):
        raise ServerInputError(f"{flag} {port}: {host}:{port} is already in use; choose a free port "
                               f"(e.g. {flag} {net.free_port()})")


def _cluster(data: Path, db_port: int) -> Cluster:
    return Cluster(data=data, port=db_port, bin=find_bin(), user=run_as_user())


def start(data: Path, port: int | None = None, host: str | None = None, backend: str | None = None,
          db_port: int | None = None, say: Say = _stderr) -> ServerStatus:
    """Start the folder's database (PostgreSQL, initialised on first start) and `mlflow server` on it; return
    once /health answers. Already running: returns its status. Options left None take the folder's remembered
    values, else the defaults (127.0.0.1:5000, postgresql, a free database port chosen once).

    ServerInputError (nothing started) for bad input or a missing prerequisite; ServerStartError when a process
    did not come up (everything started for it is stopped again).
    """
    if backend is not None and backend not in BACKENDS:
        raise ServerInputError(f"--backend {backend!r} is not supported; allowed: {', '.join(BACKENDS)}")
    data = Path(data).expanduser().absolute()
    if data.exists() and not data.is_dir():
        raise ServerInputError(f"--data {data} is a file, not a folder; give a folder (created if missing)")
    with state_file.locked(data):
        remembered = state_file.load(data)
        st = remembered or State()
        current = _status(data, st)
        if current.running:
            say(f"already running in {data} (mlflow pid {current.pids['mlflow']}, backend {st.backend})")
            return current
        if any(current.pids.values()):  # half up (one process died): start from a clean state
            say("a part of the server is not running; stopping the rest before starting again")
            _stop_locked(data, st, say)
        st.backend = backend or (remembered.backend if remembered else "postgresql")
        st.host = host or st.host or DEFAULT_HOST
        st.port = port or st.port or DEFAULT_PORT
        _check_port("--port", st.host, st.port)
        if st.host not in net.LOOPBACK:
            say(f"warning: --host {st.host}: the tracking server has no authentication: anyone who can reach "
                f"{st.host}:{st.port} can read and change every run (see docs/scaling.md: TLS proxy, basic auth)")
        if st.backend == "postgresql":
            cluster = _cluster(data, db_port or st.db_port or net.free_port())
            already = cluster.running()  # left running by an earlier start that failed later: reuse it
            if not already:
                _check_port("--db-port", "127.0.0.1", cluster.port)
            cluster.check_reachable()
            st.db_port = cluster.port
            try:
                if not cluster.initialised():
                    say(f"initialising PostgreSQL in {cluster.folder} ...")
                    cluster.init()
                if not already:
                    say(f"starting PostgreSQL on 127.0.0.1:{cluster.port} (socket in {data}) ...")
                    cluster.start()
                cluster.create_database()
                pid = cluster.pid()
                st.postgres = Proc.of(pid) if pid else None
                state_file.save(data, st)
            except BaseException:
                cluster.stop()
                st.postgres = None
                state_file.save(data, st)
                raise
            backend_uri = cluster.uri
        else:
            data.mkdir(parents=True, exist_ok=True)
            backend_uri = _database_uri(data, st)
        say(f"starting mlflow server on {st.host}:{st.port} (first start runs MLflow's migrations, ~10 s) ...")
        try:
            st.mlflow = mlflow_server.start(backend_uri, data / "artifacts", st.host, st.port, data / "mlflow.log")
            _upkeep(backend_uri)
        except BaseException:
            if st.backend == "postgresql":
                _cluster(data, st.db_port or 0).stop()
            st.postgres = st.mlflow = None
            state_file.save(data, st)
            raise
        state_file.save(data, st)
        return _status(data, st)


def _upkeep(backend_uri: str) -> None:
    """The skip check's index and the planner's statistics (`tracking.upkeep`) on the server's database, once
    MLflow's server has run its migrations (it answers /health only after): jobs reach it over HTTP and cannot."""
    from descentlab.tracking.upkeep import upkeep_quietly

    upkeep_quietly(backend_uri)


def _stop_locked(data: Path, st: State, say: Say) -> bool:
    stopped = False
    if st.mlflow is not None and mlflow_server.group_members(st.mlflow):
        say(f"stopping mlflow server (pid {st.mlflow.pid}) ...")
        mlflow_server.stop(st.mlflow)
        stopped = True
    if st.backend == "postgresql" and st.db_port and (data / "postgres").is_dir():
        cluster = _cluster(data, st.db_port)
        if cluster.running():
            say(f"stopping PostgreSQL (pid {cluster.pid()}) ...")
            cluster.stop()
            stopped = True
    st.mlflow = st.postgres = None
    state_file.save(data, st)
    return stopped


def stop(data: Path, say: Say = _stderr) -> bool:
    """Stop the folder's mlflow server (its whole process group), then PostgreSQL (`pg_ctl stop -m fast`).
    False when nothing was running."""
    data = Path(data).expanduser().absolute()
    st = state_file.load(data)
    if st is None:
        return False
    with state_file.locked(data):
        return _stop_locked(data, state_file.load(data) or st, say)

