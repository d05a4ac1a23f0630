"""tracking.store: URI resolution, store set-up (schema, WAL), experiments (artifact location, races)."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline: telemetry once broke a request

from descentlab.data.idx_specs import cache_root
from descentlab.tracking.settings import SqliteSettings
from descentlab.tracking.store import (
    TrackingUnavailableError,
    artifact_root_for,
    get_or_create_experiment,
    open_store,
    resolve_tracking_uri,
)

# The schema template in the data cache, as the entry configures it: a new store in milliseconds.
SQLITE = SqliteSettings(template_dir=str(cache_root()))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    """(uri, client) of a store created once for the module (schema creation costs ~0.3 s)."""
    uri = resolve_tracking_uri(None, tmp_path_factory.mktemp("store") / "mlruns")
    return uri, open_store(uri, SQLITE)


# -- resolve_tracking_uri ------------------------------------------------------------------------
def test_explicit_uri_wins_over_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env-host:5000")
    assert resolve_tracking_uri("http://explicit:5000", tmp_path) == "http://explicit:5000"


def test_env_wins_over_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://tracking.example.org")
    assert resolve_tracking_uri(None, tmp_path) == "https://tracking.example.org"


def test_default_is_absolute_sqlite_in_store_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None, "mlruns") == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert resolve_tracking_uri("", tmp_path / "x") == f"sqlite:///{tmp_path}/x/mlflow.db"  # empty = not given
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"


def test_relative_sqlite_path_becomes_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///rel/m.db", "ignored") == f"sqlite:///{tmp_path}/rel/m.db"
    assert resolve_tracking_uri("sqlite:///m.db?timeout=30", "x") == f"sqlite:///{tmp_path}/m.db?timeout=30"
    assert resolve_tracking_uri("sqlite:////abs/m.db", "x") == "sqlite:////abs/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri(None, "x") == f"sqlite:///{tmp_path}/env.db"


@pytest.mark.parametrize(
    "uri",
    ["postgresql://u:p@db/mlflow", "postgresql+psycopg2://db/mlflow", "mysql+pymysql://db/m", "file:///tmp/mlruns",
     "databricks", "databricks://profile", "http://127.0.0.1:5000"],
)
def test_supported_uris_pass_unchanged(uri: str, tmp_path: Path) -> None:
    assert resolve_tracking_uri(uri, tmp_path) == uri


@pytest.mark.parametrize(
    "uri", ["sqlte:///m.db", "mlruns", "/abs/mlruns", "sqlite://m.db", "sqlite:///", "http://", "s3://bucket/x",
            " sqlite:///m.db"],
)
def test_malformed_uri_is_rejected_in_one_line(uri: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed schemes: sqlite") as info:
        resolve_tracking_uri(uri, tmp_path)
    message = str(info.value)
    assert repr(uri) in message and "\n" not in message


def test_artifact_root_for() -> None:
    assert artifact_root_for("sqlite:////data/mlruns/mlflow.db") == "file:///data/mlruns/artifacts"
    assert artifact_root_for("sqlite:////data/mlruns/mlflow.db?timeout=5") == "file:///data/mlruns/artifacts"
    assert artifact_root_for("http://127.0.0.1:5000") is None
    assert artifact_root_for("postgresql://db/mlflow") is None


# -- open_store ------------------------------------------------------------------------------------
def test_open_store_creates_db_schema_and_wal(prepared) -> None:
    uri, _ = prepared  # made by open_store in a folder that did not exist
    db = Path(uri.removeprefix("sqlite:///"))
    assert db.name == "mlflow.db" and db.parent.name == "mlruns"
    con = sqlite3.connect(db)
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"experiments", "runs", "metrics", "latest_metrics", "params", "tags"} <= tables
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()
    assert open_store(uri, SQLITE).search_experiments()  # opening a ready store again is fine


def test_open_store_reuses_its_client_while_the_file_is_the_same(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep worker's later jobs skip the schema and WAL checks; a replaced database file is set up anew."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(None, tmp_path / "mlruns")
    first = open_store(uri, SQLITE)
    checks: list[str] = []
    real = MlflowClient.search_experiments
    monkeypatch.setattr(MlflowClient, "search_experiments",
                        lambda self, *a, **k: checks.append(self.tracking_uri) or real(self, *a, **k))
    assert open_store(uri, SQLITE) is first and checks == []
    db = Path(uri.removeprefix("sqlite:///"))
    db.unlink()  # deleted between two jobs: opened, and prepared, again
    for extra in ("-wal", "-shm"):
        db.with_name(db.name + extra).unlink(missing_ok=True)
    second = open_store(uri, SQLITE)
    assert second is not first and checks == [uri]
    con = sqlite3.connect(db)
    try:  # the new file has MLflow's schema again
        assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'runs'").fetchone() == (1,)
    finally:
        con.close()


def _closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_open_store_unreachable_server_fails_fast() -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=uri) as info:
        open_store(uri, SQLITE)
    assert time.monotonic() - start < 6
    assert "\n" not in str(info.value) and isinstance(info.value, RuntimeError)


def test_open_store_unreachable_database_fails_fast_without_the_password() -> None:
    port = _closed_port()
    start = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=f"postgresql://me:\\*\\*\\*@127.0.0.1:{port}/db") as info:
        open_store(f"postgresql://me:secret@127.0.0.1:{port}/db")
    assert time.monotonic() - start < 6 and "secret" not in str(info.value)
    with pytest.raises(ValueError, match="sqlite") as bad:
        resolve_tracking_uri("postgres://me:secret@db/x", ".")
    assert "secret" not in str(bad.value)


# -- experiments -------------------------------------------------------------------------------------
def test_get_or_create_experiment_is_stable_and_under_the_store(prepared) -> None:
    uri, client = prepared
    root = artifact_root_for(uri)
    first = get_or_create_experiment(client, "optimizers/fig 6-9", root)
    assert get_or_create_experiment(client, "optimizers/fig 6-9", root) == first
    location = client.get_experiment(first).artifact_location
    assert location == f"{root}/optimizers_fig_6-9"
    assert root == Path(uri.removeprefix("sqlite:///")).parent.joinpath("artifacts").as_uri()


def test_creation_race_falls_back_to_lookup(prepared) -> None:
    """Another process creates the experiment between our lookup and our create."""
    uri, client = prepared
    existing = client.create_experiment("raced", artifact_location=f"{artifact_root_for(uri)}/raced")

    class LateClient:
        calls = 0

        def get_experiment_by_name(self, name):
            LateClient.calls += 1
            return None if LateClient.calls == 1 else client.get_experiment_by_name(name)

        def __getattr__(self, attr):
            return getattr(client, attr)

    assert get_or_create_experiment(LateClient(), "raced", artifact_root_for(uri)) == existing


def test_deleted_experiment_is_restored(prepared) -> None:
    uri, client = prepared
    exp_id = get_or_create_experiment(client, "to-delete", artifact_root_for(uri))
    client.delete_experiment(exp_id)
    assert get_or_create_experiment(client, "to-delete", artifact_root_for(uri)) == exp_id
    assert client.get_experiment(exp_id).lifecycle_stage == "active"


def test_insecure_tls_probe_checks_neither_certificate_nor_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLFLOW_TRACKING_INSECURE_TLS=true: the probe's context verifies nothing (as MLflow's client then does), built
    with the public API; without it, urllib's default (verified) context is used."""
    import ssl

    from descentlab.tracking.store import tls_context

    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    context = tls_context("https://tracking.example.org/health")
    assert context is not None and (context.check_hostname, context.verify_mode) == (False, ssl.CERT_NONE)
    assert context.protocol == ssl.PROTOCOL_TLS_CLIENT
    assert tls_context("http://tracking.example.org/health") is None
    monkeypatch.delenv("MLFLOW_TRACKING_INSECURE_TLS")
    assert tls_context("https://tracking.example.org/health") is None


@pytest.mark.parametrize(("sqlite", "journal", "synchronous"), [
    (SqliteSettings(), "wal", 1),  # NORMAL: commits skip their fsync, checkpoints sync
    (SqliteSettings(synchronous="full"), "wal", 2),
    (SqliteSettings(wal=False), "delete", 2),  # synchronous=normal only in WAL: SQLite's default otherwise
])
def test_sqlite_settings_set_the_journal_and_sync(tmp_path: Path, sqlite: SqliteSettings, journal: str,
                                                  synchronous: int) -> None:
    from descentlab import compat

    uri = resolve_tracking_uri(None, tmp_path / "mlruns")
    client = open_store(uri, SqliteSettings(sqlite.wal, sqlite.synchronous, template_dir=SQLITE.template_dir))
    client.search_experiments()
    with compat.mlflow_engine(client).connect() as con:
        assert con.exec_driver_sql("PRAGMA journal_mode").scalar() == journal
        assert con.exec_driver_sql("PRAGMA synchronous").scalar() == synchronous
