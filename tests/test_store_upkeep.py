"""tracking.upkeep: the skip check's index (new stores, existing stores on open, the server's database) and the
query planner's statistics (sqlite_stat1 after a sweep), and `mlflow db upgrade` on a store that has both.

No timings here (speed: scripts/bench_store.py): the tests assert the index, the plan SQLite and PostgreSQL choose
for MLflow's own skip query, the statistics rows and the runs read back."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline: telemetry once broke a request

from descentlab import compat
from descentlab.data.idx_specs import cache_root
from descentlab.tracking import upkeep
from descentlab.tracking.run import find_finished_run
from descentlab.tracking.settings import SqliteSettings
from descentlab.tracking.store import get_or_create_experiment, open_store

SQLITE = SqliteSettings(template_dir=str(cache_root()))  # the cached schema template, as the entry configures it


def _uri(db: Path) -> str:
    return f"sqlite:///{db}"


def _indexes(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        con.close()


def _fill(client, experiment_id: str, n: int, status: str = "FINISHED") -> dict[str, str]:
    """`n` runs tagged config_hash h0..h{n-1}, ended with `status`: {hash: run id}."""
    from mlflow.entities import RunTag

    runs = {}
    for i in range(n):
        run = client.create_run(experiment_id, run_name=f"r{i}", tags={"config_hash": f"h{i}"})
        client.log_batch(run.info.run_id, tags=[RunTag("other", "x")], synchronous=True)
        client.set_terminated(run.info.run_id, status)
        runs[f"h{i}"] = run.info.run_id
    return runs


def _skip_query(client, experiment_id: str, config_hash: str) -> tuple[str, Any]:
    """The SELECT MLflow sends for `find_finished_run`, with its parameters (captured from MLflow's engine)."""
    import sqlalchemy

    engine = compat.mlflow_engine(client)
    seen: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        values = tuple(parameters.values()) if isinstance(parameters, dict) else tuple(parameters or ())
        if statement.lstrip().upper().startswith("SELECT") and config_hash in values:
            seen.append((statement, parameters))

    sqlalchemy.event.listen(engine, "before_cursor_execute", capture)
    try:
        find_finished_run(client, experiment_id, config_hash)
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", capture)
    assert seen, "MLflow sent no SELECT with the hash"
    return seen[0]


@pytest.fixture
def store(tmp_path: Path):
    """(db path, client, experiment id) of a new store with 30 FINISHED runs and 2 FAILED ones."""
    db = tmp_path / "mlruns" / "mlflow.db"
    client = open_store(_uri(db), SQLITE)
    experiment_id = get_or_create_experiment(client, "e", None)
    runs = _fill(client, experiment_id, 30)
    return db, client, experiment_id, runs


# -- the index ------------------------------------------------------------------------------------------------------
def test_a_new_store_has_the_index_from_the_template(store) -> None:
    db, *_ = store
    assert upkeep.SQLITE_INDEX in _indexes(db)
    template = next(Path(cache_root()).glob("mlflow-empty-idx1-*.db"))  # the renamed cache holds it too
    assert upkeep.SQLITE_INDEX in _indexes(template)


def test_an_existing_store_without_the_index_gets_it_when_opened(store, tmp_path: Path) -> None:
    db, client, experiment_id, runs = store
    compat.mlflow_dispose_engine(client)
    old = tmp_path / "old" / "mlflow.db"  # another file: this process's client cache does not know it
    old.parent.mkdir()
    shutil.copyfile(db, old)
    con = sqlite3.connect(old)
    con.execute(f"DROP INDEX {upkeep.SQLITE_INDEX}")
    con.close()
    assert upkeep.SQLITE_INDEX not in _indexes(old)
    reopened = open_store(_uri(old), SQLITE)
    assert upkeep.SQLITE_INDEX in _indexes(old)
    assert find_finished_run(reopened, experiment_id, "h7") == runs["h7"]
    assert upkeep.ensure_indexes(_uri(old)) == []  # present: nothing created


def test_ensure_indexes_creates_only_what_is_missing_and_ignores_servers_and_empty_files(tmp_path: Path) -> None:
    assert upkeep.ensure_indexes("http://127.0.0.1:9") == []
    assert upkeep.ensure_indexes(_uri(tmp_path / "absent.db")) == []
    (tmp_path / "empty.db").touch()
    assert upkeep.ensure_indexes(_uri(tmp_path / "empty.db")) == []
    upkeep.refresh_statistics(_uri(tmp_path / "empty.db"))  # no schema: nothing to do, no error
    assert _indexes(tmp_path / "empty.db") == set()


def test_mlflows_skip_query_uses_the_index_with_and_without_statistics(store) -> None:
    db, client, experiment_id, runs = store
    for refreshed in (False, True):
        if refreshed:
            upkeep.refresh_statistics(_uri(db))
        statement, params = _skip_query(client, experiment_id, "h3")
        con = sqlite3.connect(db)
        plan = " | ".join(row[3] for row in con.execute("EXPLAIN QUERY PLAN " + statement, params))
        con.close()
        assert f"SEARCH tags USING INDEX {upkeep.SQLITE_INDEX} (key=? AND value=?)" in plan, plan
    assert find_finished_run(client, experiment_id, "h3") == runs["h3"]


# -- the statistics -------------------------------------------------------------------------------------------------
def _stat1(db: Path) -> dict[tuple[str, str], str]:
    con = sqlite3.connect(db)
    try:
        return {(t, i): s for t, i, s in con.execute("SELECT tbl, idx, stat FROM sqlite_stat1")}
    except sqlite3.OperationalError:  # no table: never analysed
        return {}
    finally:
        con.close()


def test_refresh_statistics_analyses_once_then_again_when_the_store_grew(store) -> None:
    db, client, experiment_id, _ = store
    assert _stat1(db) == {}
    upkeep.refresh_statistics(_uri(db))
    first = _stat1(db)
    assert first[("tags", upkeep.SQLITE_INDEX)].split()[0] == str(30 * 3)  # rows: config_hash, other, runName
    assert ("runs", "sqlite_autoindex_runs_1") in first
    upkeep.refresh_statistics(_uri(db))
    assert _stat1(db) == first  # nothing changed: not analysed again
    _fill(client, experiment_id, 10)
    upkeep.refresh_statistics(_uri(db))
    assert _stat1(db) == first  # 40 runs: less than REANALYZE_GROWTH times 30
    _fill(client, experiment_id, 25, status="FAILED")
    upkeep.refresh_statistics(_uri(db))
    assert _stat1(db)[("tags", upkeep.SQLITE_INDEX)].split()[0] == str(65 * 3)


def _metric_rows(db: Path, runs: int) -> None:
    """Points shaped like real 2,000-step runs': 3 summary values, 4 metrics at 21 evaluations, 2,000 losses."""
    import uuid

    rows = []
    for r in range(runs):
        run, t0 = uuid.uuid4().hex, 1_700_000_000_000 + r * 10_000
        rows += [(key, 0.9, t0 + 3000, run, 2000, 0) for key in ("best/test_acc", "final/test_acc", "final/train_loss")]
        rows += [(key, 0.5, t0 + s, run, s, 0) for key in ("test/acc", "test/loss", "time/elapsed_s", "train/acc")
                 for s in range(0, 2001, 100)]
        rows += [("train/loss", 1.0 / (s + 1), t0 + s, run, s, 0) for s in range(2000)]
    con = sqlite3.connect(db)
    with con:
        con.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?)",
                        rows)
    con.close()


@pytest.mark.parametrize("sampled", [False, True])
def test_statistics_of_a_small_store_keep_the_charts_on_the_run_index(store, monkeypatch, sampled: bool) -> None:
    """A sampled ANALYZE made MLflow's (key, ...) index look selective on a store of a hundred real-shaped runs (the
    UI's chart query then read every run's points: 4.9 s instead of 1.6 s); below FULL_ANALYZE_ROWS the statistics
    are exact, and the chart's query uses the run's index."""
    db, client, *_ = store
    compat.mlflow_dispose_engine(client)
    _metric_rows(db, 112)
    if sampled:  # what the statistics were before: proves the check below can fail
        monkeypatch.setattr(upkeep, "FULL_ANALYZE_ROWS", 0)
    upkeep.refresh_statistics(_uri(db))
    con = sqlite3.connect(db)
    try:
        plan = " ".join(row[3] for row in con.execute(
            "EXPLAIN QUERY PLAN SELECT value, step FROM metrics WHERE run_uuid = ? AND key = ? ORDER BY step",
            ("x", "train/loss")))
        rows = con.execute("SELECT count(*) FROM metrics").fetchone()[0]
        recorded = {idx: int(stat.split()[0]) for idx, stat in
                    con.execute("SELECT idx, stat FROM sqlite_stat1 WHERE tbl = 'metrics'")}
    finally:
        con.close()
    assert "index_metrics_run_uuid_key_step" in plan, plan
    exact = set(recorded.values()) == {rows}
    assert exact is not sampled, (recorded, rows)  # a sample extrapolates the row count


def test_closing_a_sweep_refreshes_the_statistics(store, tmp_path: Path) -> None:
    from descentlab.callbacks import _finish

    db, *_ = store
    assert _finish(_uri(db), tmp_path / "sweep") is None  # no job made a parent: nothing to close
    assert ("tags", upkeep.SQLITE_INDEX) in _stat1(db)


def test_train_py_leaves_statistics_after_a_single_job_and_after_a_sweep(tmp_path: Path) -> None:
    """A job outside a sweep analyses the store when it ends; a sweep's launching process when the sweep ends."""
    from conftest import Store

    for name, args in (("single", ()), ("sweep", ("-m", "seed=0,1"))):
        (tmp_path / name).mkdir()
        store = Store(tmp_path / name)
        assert store.train_in_process(*args, "dataset=digits", "training.iterations=20").returncode == 0
        assert ("tags", upkeep.SQLITE_INDEX) in _stat1(store.root / "mlruns" / "mlflow.db"), name


def test_upkeep_quietly_warns_instead_of_failing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database, but not empty either")
    upkeep.upkeep_quietly(_uri(db))
    assert "store upkeep" in caplog.text and "failed" in caplog.text


# -- mlflow db upgrade ----------------------------------------------------------------------------------------------
def _old_store(uri: str) -> None:
    """A store at MLflow's schema before its `tags` rebuilds, with one FINISHED run tagged, the index and statistics."""
    compat.mlflow_create_schema_at(uri, compat.MLFLOW_REVISION_BEFORE_TAGS_REBUILD)
    assert compat.mlflow_schema_revision(uri) == compat.MLFLOW_REVISION_BEFORE_TAGS_REBUILD
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    now = int(time.time() * 1000)
    with engine.begin() as con:  # the rows MLflow 2.x wrote, in its columns of that revision
        con.execute(sqlalchemy.text("INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage) "
                                    "VALUES (1, 'old', '/tmp/old', 'active')"))
        for i, status in enumerate(("FINISHED", "FAILED")):
            con.execute(sqlalchemy.text(
                "INSERT INTO runs (run_uuid, name, source_type, user_id, status, start_time, end_time, "
                "lifecycle_stage, artifact_uri, experiment_id) "
                "VALUES (:id, :id, 'LOCAL', 'u', :s, :t, :t, 'active', '/tmp/old/x', 1)"),
                {"id": f"run{i}", "s": status, "t": now + i})
            con.execute(sqlalchemy.text("INSERT INTO tags (key, value, run_uuid) VALUES ('config_hash', 'h', :id)"),
                        {"id": f"run{i}"})
    engine.dispose()
    assert upkeep.ensure_indexes(uri)
    upkeep.refresh_statistics(uri)


def _mlflow_db_upgrade(uri: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", uri], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.e2e
def test_mlflow_db_upgrade_keeps_the_index_statistics_and_runs_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    uri = _uri(db)
    _old_store(uri)
    _mlflow_db_upgrade(uri)
    assert compat.mlflow_schema_revision(uri) not in (None, compat.MLFLOW_REVISION_BEFORE_TAGS_REBUILD)
    assert upkeep.SQLITE_INDEX in _indexes(db)  # alembic's batch mode re-creates the rebuilt table's indexes
    # Dropping the old tables (tags, runs) dropped their statistics: the next refresh (a sweep's end) sees that.
    assert ("tags", upkeep.SQLITE_INDEX) not in _stat1(db)
    upkeep.refresh_statistics(uri)
    assert _stat1(db)[("tags", upkeep.SQLITE_INDEX)].split()[0] == "2"
    assert _stat1(db)[("runs", "sqlite_autoindex_runs_1")].split()[0] == "2"
    client = open_store(uri)
    assert find_finished_run(client, "1", "h") == "run0"
    assert {r.info.run_id: r.info.status for r in client.search_runs(["1"])} == {"run0": "FINISHED",
                                                                                   "run1": "FAILED"}


# -- PostgreSQL -----------------------------------------------------------------------------------------------------
def _pg_plan(engine, statement: str, params: Any) -> str:
    """EXPLAIN of a statement captured from psycopg2, with sequential scans off: whether the index can serve the
    query at all (on a few rows the planner rightly prefers reading the table)."""
    import sqlalchemy

    with engine.connect() as con:
        con.execute(sqlalchemy.text("SET enable_seqscan = off"))
        cursor = con.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN " + statement, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.e2e
def test_postgresql_gets_the_hash_index_on_open_and_the_skip_query_can_use_it(postgres_cluster) -> None:
    uri = postgres_cluster.create_database("upkeep")
    client = open_store(uri)  # MLflow's migrations, then the index
    engine = compat.mlflow_engine(client)
    assert upkeep.ensure_indexes(uri) == []  # made by the open already
    import sqlalchemy

    with engine.connect() as con:
        definition = con.execute(sqlalchemy.text("SELECT indexdef FROM pg_indexes WHERE indexname = :i"),
                                 {"i": upkeep.POSTGRES_INDEX}).scalar()
    assert definition is not None and "USING hash" in definition and "(value)" in definition
    experiment_id = get_or_create_experiment(client, "e", None)
    runs = _fill(client, experiment_id, 5)
    upkeep.refresh_statistics(uri)
    statement, params = _skip_query(client, experiment_id, "h2")
    assert find_finished_run(client, experiment_id, "h2") == runs["h2"]
    plan = _pg_plan(engine, statement, params)
    assert upkeep.POSTGRES_INDEX in plan, plan
    with engine.connect() as con:
        analysed = con.execute(sqlalchemy.text(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'tags' "
            "AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)")).scalar()
    assert analysed == 1
