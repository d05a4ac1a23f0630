"""Keep a large store fast: the skip check's index and the query planner's statistics (issue 18).

Why: the skip check (`run.find_finished_run`) searches the runs tagged `config_hash = <hash>`; MLflow's own indexes
on `tags` lead with `key` (primary key `(key, run_uuid)`) or `run_uuid`, so the search reads every `config_hash` row
of the store: 216 ms at 100,000 runs. An index on the tag's value makes it independent of the store's size.
Without planner statistics SQLite also picks the wrong index for MLflow's bulk metric history (the UI's charts):
11 s instead of 0.3 s for 100 runs at 3.4k runs; one `ANALYZE` fixes it.

- SQLite: a b-tree `descentlab_tags_key_value` on `tags(key, value)` (MLflow binds `key = ?`, so a partial index
  `WHERE key = 'config_hash'` would not be used). MLflow's migrations rebuild `tags` in alembic's batch mode, which
  re-creates the table's indexes (tests/test_store_upkeep.py upgrades such a store with `mlflow db upgrade`); if a
  future migration drops it, the next open creates it again.
- PostgreSQL: a HASH index `descentlab_tags_value_hash` on `tags(value)`: a b-tree cannot hold values over ~2.7 KB
  (a tag value may have 8,000 characters) and the search binds value by equality. Built `CONCURRENTLY` (writers go
  on); looked up first, so the check costs one catalogue query.
- Statistics, SQLite: what SQLite advises for a long-lived database is `PRAGMA optimize` now and then, but before
  3.46 it only analyses tables queried on the same connection, so a fresh connection that never analysed does
  nothing. Here: `ANALYZE` (with `analysis_limit`, milliseconds even at 100,000 runs) when the statistics are missing,
  lack an index, or a table grew to `REANALYZE_GROWTH` times the rows they recorded; then `PRAGMA optimize`.
- Statistics, PostgreSQL: autovacuum's autoanalyze keeps them (tables are analysed after 10 % of their rows
  changed); `refresh_statistics` only analyses tables never analysed. Measured: the plans of the skip query and of
  the bulk metric history at 10k runs used the indexes with and without statistics; at 100k runs, right after a
  bulk load that autoanalyze had not reached yet, the skip check took 39 ms, 11 ms after `ANALYZE` (0.45 s).

Table and column names come from `descentlab.compat` (checked there against MLflow's ORM): the launching process of
a sweep runs this without importing mlflow.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from descentlab import compat

__all__ = [
    "ANALYSIS_LIMIT",
    "FULL_ANALYZE_ROWS",
    "POSTGRES_INDEX",
    "REANALYZE_GROWTH",
    "SQLITE_INDEX",
    "ensure_indexes",
    "refresh_statistics",
    "sqlite_index_sql",
    "upkeep_quietly",
]

_log = logging.getLogger(__name__)

SQLITE_INDEX = "descentlab_tags_key_value"
POSTGRES_INDEX = "descentlab_tags_value_hash"
ANALYSIS_LIMIT = 1000  # rows ANALYZE reads per index (SQLite's advice: 100..1000); statistics stay approximate
FULL_ANALYZE_ROWS = 4_000_000  # up to this many rows in MLflow's largest table (~2,000 runs of 2,000 steps), ANALYZE
# reads everything (~1.5 s at the limit, 0.1 s at 100 runs): a sampled one misjudged small stores' `metrics` indexes
REANALYZE_GROWTH = 2.0  # re-ANALYZE once a table holds this many times the rows its statistics recorded
BUSY_TIMEOUT_S = 20.0  # as MLflow's own sessions: wait for a writer rather than fail


def _kind(uri: str) -> str | None:
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        return "sqlite"
    if scheme.startswith("postgresql"):
        return "postgresql"
    return None  # http(s), file, databricks (the server's business), mysql (not covered)


def _sqlite_path(uri: str) -> Path | None:
    from descentlab.tracking.store import _sqlite_db_path

    return _sqlite_db_path(uri)


@contextlib.contextmanager
def _sqlite(uri: str) -> Iterator[sqlite3.Connection | None]:
    """A connection to an existing SQLite store that holds MLflow's tags table, else None."""
    db = _sqlite_path(uri)
    if db is None or not db.is_file() or db.stat().st_size == 0:
        yield None
        return
    con = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        found = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (compat.MLFLOW_TAGS_TABLE,)).fetchone()
        yield con if found else None
    finally:
        con.close()


def sqlite_index_sql() -> str:
    """The statement that creates the SQLite index (also run on the schema template, `store._schema_template`)."""
    t, k, v = compat.MLFLOW_TAGS_TABLE, compat.MLFLOW_TAG_KEY, compat.MLFLOW_TAG_VALUE
    return f'CREATE INDEX IF NOT EXISTS {SQLITE_INDEX} ON "{t}" ("{k}", "{v}")'


def _sqlite_has_index(con: sqlite3.Connection) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (SQLITE_INDEX,)).fetchone() \
        is not None


def _ensure_sqlite(uri: str) -> list[str]:
    with _sqlite(uri) as con:
        if con is None or _sqlite_has_index(con):
            return []
        con.execute(sqlite_index_sql())  # one statement: its own transaction; another process's copy is a no-op
        return [SQLITE_INDEX]


def _postgres_engine(uri: str, engine: Any | None) -> tuple[Any, bool]:
    if engine is not None:
        return engine, False
    import sqlalchemy

    return sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool), True


def _ensure_postgres(uri: str, engine: Any | None) -> list[str]:
    import sqlalchemy

    engine, own = _postgres_engine(uri, engine)
    try:
        with engine.connect() as con:
            con = con.execution_options(isolation_level="AUTOCOMMIT")  # CONCURRENTLY runs outside a transaction
            if con.execute(sqlalchemy.text("SELECT to_regclass(:t)"), {"t": compat.MLFLOW_TAGS_TABLE}).scalar() \
                    is None:
                return []  # no MLflow schema (yet): MLflow's migrations run first
            valid = con.execute(sqlalchemy.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:i)"),
                                {"i": POSTGRES_INDEX}).scalar()
            if valid:
                return []
            if valid is not None:  # an interrupted CONCURRENTLY build leaves an invalid index behind
                con.execute(sqlalchemy.text(f"DROP INDEX CONCURRENTLY IF EXISTS {POSTGRES_INDEX}"))
            t, v = compat.MLFLOW_TAGS_TABLE, compat.MLFLOW_TAG_VALUE
            con.execute(sqlalchemy.text(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS {POSTGRES_INDEX} ON "{t}" USING hash ("{v}")'))
            return [POSTGRES_INDEX]
    finally:
        if own:
            engine.dispose()


def ensure_indexes(uri: str, engine: Any | None = None) -> list[str]:
    """Create the indexes the skip check needs where they are missing; return the names created (empty when all were
    there, for a store without MLflow's schema yet, and for http(s)/file/databricks/mysql URIs).

    SQLite: a b-tree on `tags(key, value)` (6-8 s at 100,000 runs, once; MLflow's writers wait up to 20 s).
    PostgreSQL: a hash index on `tags(value)`, built without blocking writers (37 s at 100,000 runs, once).
    `engine`: an SQLAlchemy engine on a PostgreSQL `uri` to use instead of a new one (MLflow's, via
    `compat.mlflow_engine`).
    """
    kind = _kind(uri)
    if kind == "sqlite":
        return _ensure_sqlite(uri)
    if kind == "postgresql":
        return _ensure_postgres(uri, engine)
    return []


def _watched_tables(con: sqlite3.Connection) -> dict[str, tuple[list[str], int]]:
    """The watched MLflow tables in this store: their indexes and their row count (`max(rowid)`: O(log n))."""
    tables: dict[str, tuple[list[str], int]] = {}
    for table in compat.MLFLOW_STATISTICS_TABLES:
        indexes = [row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                                                 (table,))]
        if indexes:  # else not an MLflow table here
            tables[table] = (indexes, con.execute(f'SELECT max(rowid) FROM "{table}"').fetchone()[0] or 0)
    return tables


def _sqlite_statistics_stale(con: sqlite3.Connection, tables: dict[str, tuple[list[str], int]]) -> bool:
    """No statistics, an index of the watched tables without them, or a table grown `REANALYZE_GROWTH`-fold."""
    if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone() is None:
        return True
    recorded: dict[tuple[str, str | None], int] = {}
    for tbl, idx, stat in con.execute("SELECT tbl, idx, stat FROM sqlite_stat1"):
        with contextlib.suppress(ValueError, IndexError):
            recorded[(tbl, idx)] = int(str(stat).split()[0])
    for table, (indexes, rows) in tables.items():
        if rows == 0:
            continue  # ANALYZE records nothing for an empty table
        if any((table, index) not in recorded for index in indexes):
            return True
        if rows > REANALYZE_GROWTH * max(recorded[(table, indexes[0])], 1) and rows > 100:
            return True
    return False


def _refresh_sqlite(uri: str) -> None:
    with _sqlite(uri) as con:
        if con is None:
            return
        tables = _watched_tables(con)
        if _sqlite_statistics_stale(con, tables):
            # A sampled ANALYZE reads the first rows of each index only; on a store of a few hundred runs that made
            # MLflow's `metrics (key, ...)` index look selective and the UI's chart query scan every run's points
            # (4.9 s instead of 1.6 s for 100 runs at 112 runs). Below FULL_ANALYZE_ROWS rows the exact ANALYZE
            # costs at most ~1.5 s; above, the sample's first key covers every sampled row and the plans hold.
            largest = max((rows for _, rows in tables.values()), default=0)
            con.execute(f"PRAGMA analysis_limit = {0 if largest <= FULL_ANALYZE_ROWS else ANALYSIS_LIMIT}")
            con.execute("ANALYZE")
        con.execute("PRAGMA optimize")  # SQLite's own upkeep (analyses more from 3.46 on)


def _refresh_postgres(uri: str, engine: Any | None) -> None:
    import sqlalchemy

    engine, own = _postgres_engine(uri, engine)
    try:
        with engine.connect() as con:
            con = con.execution_options(isolation_level="AUTOCOMMIT")
            never = con.execute(sqlalchemy.text(
                "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(:tables) "
                "AND last_analyze IS NULL AND last_autoanalyze IS NULL"),
                {"tables": list(compat.MLFLOW_STATISTICS_TABLES)}).scalars().all()
            for table in never:
                con.execute(sqlalchemy.text(f'ANALYZE "{table}"'))
    finally:
        if own:
            engine.dispose()


def refresh_statistics(uri: str, engine: Any | None = None) -> None:
    """Bring the query planner's statistics up to date where they are missing or stale (see the module's notes);
    a no-op for other stores and for a store without MLflow's schema. Cheap when nothing changed (a few catalogue
    reads); an `ANALYZE` costs 20-60 ms at 100,000 runs (SQLite, `analysis_limit`)."""
    kind = _kind(uri)
    if kind == "sqlite":
        _refresh_sqlite(uri)
    elif kind == "postgresql":
        _refresh_postgres(uri, engine)


def upkeep_quietly(uri: str, *, indexes: bool = True, statistics: bool = True, engine: Any | None = None) -> None:
    """`ensure_indexes` and/or `refresh_statistics`, warning instead of raising: upkeep never fails a run."""
    from descentlab.tracking.store import redact

    try:
        if indexes:
            created = ensure_indexes(uri, engine)
            if created:
                _log.info("created %s in %s (skip check)", ", ".join(created), redact(uri))
        if statistics:
            refresh_statistics(uri, engine)
    except Exception as exc:  # the store works without; it is only slower
        _log.warning("store upkeep of %s failed (%s); searches may be slower", redact(uri), exc)
