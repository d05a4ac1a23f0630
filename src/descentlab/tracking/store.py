"""Where runs are stored: tracking URI resolution, store set-up, experiments.

The URI helpers and `prepare_store` are plain functions without an mlflow import (~2 s), so config
validation and the launching process of a sweep stay cheap. `open_store` and `get_or_create_experiment`
import mlflow when called.

Facts this module relies on (measured, see the field notes): a new SQLite file opened by several
processes at once crashes in MLflow's schema set-up, so the store must exist before parallel jobs start
(`prepare_store` copies a cached empty-schema template in milliseconds; without one, `open_store` runs
MLflow's ~1.2 s of migrations, once, in the launching process); an experiment created without
`artifact_location` stores its artifacts under the creator's cwd; MLflow retries an absent server for
minutes; the experiment tags MLflow's UI reads are described in `tracking.ui`. The skip check's index
(`tracking.upkeep`) comes with the template for new SQLite stores and is added to an existing store when it is
opened (SQLite: by `prepare_store`, without mlflow; PostgreSQL: by `open_store`, after MLflow's migrations).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sqlite3
import ssl
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from descentlab.tracking.settings import SqliteSettings

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "ALLOWED_SCHEMES",
    "TrackingUnavailableError",
    "artifact_root_for",
    "check_store_writable",
    "get_or_create_experiment",
    "needs_schema_creation",
    "open_store",
    "prepare_store",
    "resolve_tracking_uri",
]

_log = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("sqlite", "postgresql[+driver]", "mysql[+driver]", "http", "https", "file", "databricks")
_SCHEME_RE = re.compile(r"^(sqlite|(postgresql|mysql)(\+[a-z0-9_]+)?|https?|file|databricks)$")
_SQLITE_PREFIX = "sqlite:///"
HEALTH_TIMEOUT_S = 5.0


class TrackingUnavailableError(RuntimeError):
    """The tracking server or database cannot be reached; raised before any run is started."""


def redact(uri: str) -> str:
    """The URI with any password replaced by ***, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _bad_uri(uri: str, why: str) -> ValueError:
    return ValueError(f"malformed tracking URI {redact(uri)!r} ({why}); allowed schemes: {', '.join(ALLOWED_SCHEMES)}")


def _sqlite_parts(uri: str) -> tuple[str, str]:
    """Split `sqlite:///PATH?QUERY` into (PATH, '?QUERY' or '')."""
    rest = uri[len(_SQLITE_PREFIX) :]
    path, sep, query = rest.partition("?")
    return path, sep + query


def _default_postgresql_driver() -> str:
    """The module SQLAlchemy loads for a bare `postgresql://` (psycopg 3 from SQLAlchemy 2.1 on, psycopg2 before),
    read from the installed version without importing SQLAlchemy."""
    from importlib import metadata

    try:
        major, minor = (int(x) for x in metadata.version("sqlalchemy").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return "psycopg"
    return "psycopg" if (major, minor) >= (2, 1) else "psycopg2"


def _check_postgresql_driver(uri: str) -> None:
    """A bare `postgresql://` works only when SQLAlchemy's default driver is installed; otherwise one line naming
    the spelling that works (MLflow would fail later with "No module named 'psycopg'"). In `prepare_store`, not in
    `validate_uri`: the URI is well-formed, this machine just cannot open it."""
    import importlib.util

    driver = _default_postgresql_driver()
    if importlib.util.find_spec(driver) is not None:
        return
    fixed = "postgresql+psycopg2" + uri[len("postgresql"):]
    has_psycopg2 = driver != "psycopg2" and importlib.util.find_spec("psycopg2") is not None
    how = (f"write {redact(fixed)!r} (psycopg2 is installed) or install psycopg[binary]" if has_psycopg2
           else "install psycopg2-binary (the [cluster] extra) and write postgresql+psycopg2://...")
    raise TrackingUnavailableError(f"tracking database {redact(uri)!r} names no driver, so SQLAlchemy uses "
                                   f"{driver}, which is not installed; {how}")


def validate_uri(uri: str) -> None:
    """ValueError (one line, password redacted) unless `uri` is a tracking URI descentlab can open."""
    if uri == "databricks":  # MLflow's bare form: the default Databricks profile
        return
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if uri.strip() != uri or not scheme:
        raise _bad_uri(uri, "no scheme" if not scheme else "surrounding whitespace")
    if not _SCHEME_RE.match(scheme):
        raise _bad_uri(uri, f"scheme {scheme!r} not supported")
    if scheme == "sqlite":
        if not uri.startswith(_SQLITE_PREFIX) or not _sqlite_parts(uri)[0]:
            raise _bad_uri(uri, "expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    elif scheme in ("http", "https") and not parts.netloc:
        raise _bad_uri(uri, "no host")


def resolve_tracking_uri(uri: str | None, store_dir: str | os.PathLike[str]) -> str:
    """The tracking URI to use: explicit `uri`, else $MLFLOW_TRACKING_URI, else a SQLite file in `store_dir`.

    Relative SQLite paths are made absolute against the current directory, so that every job of a
    sweep (whatever its cwd) writes to the same file.
    """
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if chosen is None:
        db = Path(store_dir).expanduser().absolute() / "mlflow.db"
        return _SQLITE_PREFIX + db.as_posix()
    validate_uri(chosen)
    if urlsplit(chosen).scheme.lower() == "sqlite":
        path, query = _sqlite_parts(chosen)
        if path != ":memory:" and not path.startswith("/"):
            path = Path(path).expanduser().absolute().as_posix()
        return _SQLITE_PREFIX + path + query
    return chosen


def _sqlite_db_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (absolute), or None for other URIs and in-memory databases."""
    if not uri.startswith(_SQLITE_PREFIX):
        return None
    path, _ = _sqlite_parts(uri)
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().absolute()


def artifact_root_for(uri: str) -> str | None:
    """`file://` URI of `<db dir>/artifacts` for a SQLite store; None where the server/backend decides."""
    db = _sqlite_db_path(uri)
    if db is None:
        return None
    return (db.parent / "artifacts").as_uri()


def check_store_writable(uri: str, min_free_mb: float = 0.0) -> None:
    """For a local SQLite store: its folder (or nearest existing parent) is a writable folder with at least
    `min_free_mb` MB free; raises TrackingUnavailableError naming the folder otherwise. Other URIs pass.

    Writability is probed by creating and deleting a temporary file (`os.access` says yes to root even on a
    read-only mount); nothing else is created, so a failed check leaves no folder behind.
    """
    db = _sqlite_db_path(uri)
    if db is None:
        return
    folder = db.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise TrackingUnavailableError(f"store folder {db.parent} is not writable: {folder} is a file, not a folder "
                                       "(point tracking.uri or MLFLOW_TRACKING_URI at a writable folder)")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".descentlab-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TrackingUnavailableError(f"store folder {db.parent} is not writable: {exc.strerror or exc} in {folder} "
                                       "(point tracking.uri or MLFLOW_TRACKING_URI at a writable folder)") from None
    free_mb = shutil.disk_usage(folder).free / 2**20
    if free_mb < min_free_mb:
        raise TrackingUnavailableError(f"store folder {db.parent} has {free_mb:.0f} MB free, at least "
                                       f"tracking.min_free_mb={min_free_mb:g} MB is needed (free space or lower it)")


def _normal_sync(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _relax_sync(client: MlflowClient, sqlite: SqliteSettings) -> None:
    """`PRAGMA synchronous=NORMAL` on the connections of MLflow's engine for a WAL database.

    Why: in WAL mode a commit then skips its fsync (checkpoints still sync); the database stays consistent, and
    only a power cut or OS crash (not a killed process) can lose the last commits. SQLite's own advice for WAL.
    Measured side by side: a 2,000-point run's writes 72 ms (normal) vs 81 ms (full), one writer; no difference
    with two. `tracking.sqlite.synchronous=full` keeps SQLite's default.
    """
    if not sqlite.relaxed_sync:
        return
    from descentlab import compat

    compat.mlflow_on_sqlite_connect(client, _normal_sync)


def _enable_wal(db: Path, sqlite: SqliteSettings) -> None:
    """Switch the database to WAL journaling (a persistent property of the file).

    Why: readers (the UI, analysis) no longer block writers, and commits are cheaper (2.5-4x for one-row writes
    in the field notes; a 2,000-point run's writes 72 ms vs 132 ms with the rollback journal). Done with sqlite3
    after MLflow created its schema, in the launching process before jobs start; skipped when already WAL; a
    failure only warns. WAL needs shared memory: set tracking.sqlite.wal=false on network file systems.
    """
    if not sqlite.wal:
        return
    try:
        con = sqlite3.connect(db, timeout=20.0)
        try:
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as exc:
        mode = f"error: {exc}"
    if str(mode).lower() != "wal":
        _log.warning("could not switch %s to WAL (%s); writes will be slower", db, mode)


def tls_context(url: str) -> ssl.SSLContext | None:
    """The TLS context of the health probe, following MLflow's TLS variables so the probe agrees with the client:
    MLFLOW_TRACKING_INSECURE_TLS=true (no certificate or host check), MLFLOW_TRACKING_SERVER_CERT_PATH (a CA file);
    None (urllib's default) otherwise or for plain HTTP."""
    if not url.startswith("https"):
        return None
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl.create_default_context()  # with the two lines below: what ssl's (private) unverified
        context.check_hostname = False  # context helper builds, from the public API
        context.verify_mode = ssl.CERT_NONE
        return context
    if os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        return ssl.create_default_context(cafile=os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"])
    return None


def _probe_http(uri: str) -> None:
    """GET /health with a short timeout: MLflow's own client would retry an absent server for minutes."""
    url = uri.rstrip("/") + "/health"
    context = tls_context(url)
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S, context=context) as resp:
            resp.read(64)
    except urllib.error.HTTPError as exc:
        # The server answered: an auth-protected or proxied /health still means it is up.
        if exc.code >= 500:
            raise TrackingUnavailableError(f"tracking server {redact(uri)} answered {exc.code} at /health") from exc
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnavailableError(f"tracking server {redact(uri)} is unreachable: {reason}") from exc


def _probe_tcp(uri: str) -> None:
    """Fail in seconds when a database server is down (MLflow retries for ~100 s)."""
    parts = urlsplit(uri)
    if not parts.hostname:  # unix socket or driver defaults: let the driver decide
        return
    port = parts.port or (5432 if parts.scheme.startswith("postgresql") else 3306)
    try:
        socket.create_connection((parts.hostname, port), timeout=HEALTH_TIMEOUT_S).close()
    except OSError as exc:
        raise TrackingUnavailableError(f"tracking database {redact(uri)} is unreachable: {exc}") from exc


def _schema_template(folder: str) -> Path | None:
    """An empty SQLite store with MLflow's current schema, built once per MLflow/SQLAlchemy/Alembic version.

    Why: MLflow creates a new store's schema by running its ~60 Alembic migrations (~1.2 s, and several
    processes doing it at once crash). Copying a file built by MLflow itself takes milliseconds. The
    template holds no experiment: MLflow adds its "Default" experiment (with this store's artifact root)
    when it first opens the copy. Returns None (and the caller lets MLflow build the schema) on any failure.
    """
    from importlib import metadata

    try:
        versions = "-".join(metadata.version(d) for d in ("mlflow", "sqlalchemy", "alembic"))
    except metadata.PackageNotFoundError:
        return None
    # "-idx1": the template holds the skip check's index (tracking.upkeep); a new name leaves older caches unused.
    template = Path(folder).expanduser() / f"mlflow-empty-idx1-{re.sub(r'[^A-Za-z0-9.]+', '_', versions)}.db"
    if template.is_file():
        return template
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=template.parent, prefix=".template-") as tmp:
            db = Path(tmp) / "mlflow.db"
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=_SQLITE_PREFIX + db.as_posix())
            client.search_experiments(max_results=1)
            from descentlab import compat
            from descentlab.tracking import upkeep

            with contextlib.suppress(Exception):  # close pooled connections before editing the file
                compat.mlflow_dispose_engine(client)
            del client
            con = sqlite3.connect(db)
            try:
                with con:
                    con.execute("DELETE FROM experiments")  # MLflow re-creates "Default" on first open
                    con.execute(upkeep.sqlite_index_sql())  # every new store has the skip check's index
                con.execute("VACUUM")
            finally:
                con.close()
            with contextlib.suppress(FileExistsError):  # another process built it first: same content
                os.link(db, template)
        return template
    except Exception:  # a cache is an optimisation: never fail a run for it
        _log.warning("could not build the MLflow schema template in %s", template.parent, exc_info=True)
        return None


def _copy_schema_template(db: Path, folder: str) -> None:
    """Create a missing SQLite store from the template in `folder` (atomically: no process sees half a file)."""
    if db.exists():
        return
    template = _schema_template(folder)
    if template is None:
        return
    tmp = db.parent / f".{db.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # created with the umask's mode
    try:
        shutil.copyfile(template, tmp)
        with contextlib.suppress(FileExistsError):  # a parallel job created the store first
            os.link(tmp, db)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def prepare_store(uri: str, sqlite: SqliteSettings | None = None) -> None:
    """Get the store ready for parallel writers without importing mlflow (when the template is cached).

    SQLite: the folder, the schema (copied from a cached template), WAL. HTTP(S): probes `/health` with a
    short timeout, so an absent server fails in seconds, not after MLflow's minutes of retries.
    PostgreSQL/MySQL: a TCP connect with the same timeout (and, for a bare `postgresql://`, a check that
    SQLAlchemy's default driver for it is installed). Cheap enough for the launching process of a
    sweep, which then needs no mlflow at all: the jobs open the store. `sqlite`: journal, sync and template
    settings (default: `SqliteSettings()`, which has no template folder).
    """
    sqlite = sqlite or SqliteSettings()
    validate_uri(uri)
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        _probe_http(uri)
        from descentlab.tracking.retry import bound_mlflow_http_retries

        bound_mlflow_http_retries()  # our retries (tracking.retry) bound the wait, not MLflow's 4 minutes
    elif scheme.startswith(("postgresql", "mysql")):
        if scheme == "postgresql":
            _check_postgresql_driver(uri)
        _probe_tcp(uri)
    db = _sqlite_db_path(uri) if scheme == "sqlite" else None
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        if sqlite.template_folder is not None:
            _copy_schema_template(db, sqlite.template_folder)
        if db.exists():
            _enable_wal(db, sqlite)
            _ensure_indexes(uri)


def _ensure_indexes(uri: str, client: MlflowClient | None = None) -> None:
    """The skip check's index (`tracking.upkeep`) on a store that lacks it: an existing store gets it when it is
    next opened (a catalogue lookup when present); a failure only warns."""
    from descentlab import compat
    from descentlab.tracking import upkeep

    upkeep.upkeep_quietly(uri, statistics=False, engine=compat.mlflow_engine(client) if client else None)


def needs_schema_creation(uri: str) -> bool:
    """True when opening `uri` may run MLflow's schema migrations (which race across processes)."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme.startswith(("postgresql", "mysql")):
        return True  # cannot tell cheaply whether the schema exists
    db = _sqlite_db_path(uri) if scheme == "sqlite" else None
    return db is not None and (not db.exists() or db.stat().st_size == 0)


# SQLite clients this process opened: URI -> (the database file's identity then, client).
_opened: dict[str, tuple[tuple[int, int], MlflowClient]] = {}


def _file_identity(db: Path | None) -> tuple[int, int] | None:
    try:
        st = db.stat() if db is not None else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st is not None else None


def open_store(uri: str, sqlite: SqliteSettings | None = None) -> MlflowClient:
    """A client for `uri`, with the store ready for parallel writers (see `prepare_store`).

    SQLite without a cached template: MLflow creates the schema when the client is built; call this once
    in the launching process before jobs start (`needs_schema_creation`). A SQLite store already opened by
    this process, whose file is still the same, gets the same client: the checks (schema, WAL) hold for
    the file and cost ~8 ms a job of a sweep worker. `sqlite`: as for `prepare_store`.
    """
    sqlite = sqlite or SqliteSettings()
    db = _sqlite_db_path(uri)
    identity = _file_identity(db)
    opened = _opened.get(uri)
    if opened is not None and identity is not None and opened[0] == identity:
        return opened[1]
    prepare_store(uri, sqlite)  # an existing SQLite store gets the skip check's index here
    had_schema = not needs_schema_creation(uri)
    scheme = urlsplit(uri).scheme.lower()
    sql = scheme == "sqlite" or scheme.startswith(("postgresql", "mysql"))

    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)  # builds the store: a SQL backend creates its schema here
        if sql:
            client.search_experiments(max_results=1)  # cheap; makes sure the schema is there and usable
    except Exception as exc:
        if scheme.startswith(("postgresql", "mysql")):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrackingUnavailableError(f"tracking database {redact(uri)} is unavailable: {first}") from exc
        raise
    if sql and (db is None or not had_schema):  # a database server, or a schema MLflow built just now
        _ensure_indexes(uri, client)
    if db is not None:
        _enable_wal(db, sqlite)  # a no-op when already WAL (MLflow created the schema just now otherwise)
        _relax_sync(client, sqlite)
        identity = _file_identity(db)
        if identity is not None:
            _opened[uri] = (identity, client)
    return client


def _location_name(name: str) -> str:
    """A folder name for an experiment's artifacts (names may hold '/', spaces, ...)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def _add_ui_tags(client: MlflowClient, experiment_id: str, tags: dict[str, str]) -> None:
    """Give an experiment created by an earlier version the UI tags it lacks; a failure only warns.

    Why here: the lookup that every job makes already returns the experiment's tags, so an experiment
    with its tags costs no call, and one without them is tagged once, by its next job.
    """
    for key, value in tags.items():
        try:
            client.set_experiment_tag(experiment_id, key, value)
        except Exception as exc:  # a cosmetic tag (e.g. no permission to edit the experiment) never fails a run
            _log.warning("could not tag experiment %s with %s: %s", experiment_id, key, exc)
            return


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The id of experiment `name`, created (race-safe) with artifacts under `artifact_root/<name>`.

    A soft-deleted experiment of that name is restored (with a warning): the name is taken until
    `mlflow gc` purges it, and reusing it is what a re-run asks for. New experiments get the tags that
    mark them model training for MLflow's UI and add a runs-table view (`tracking.ui`); existing ones get
    those they lack.
    """
    from mlflow.exceptions import MlflowException

    from descentlab.tracking import ui

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = f"{artifact_root.rstrip('/')}/{_location_name(name)}" if artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location, tags=ui.experiment_tags())
        except MlflowException:
            exp = client.get_experiment_by_name(name)  # another process created it first
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        _log.warning("experiment %r (id %s) was deleted; restoring it", name, exp.experiment_id)
        try:
            client.restore_experiment(exp.experiment_id)
        except MlflowException:
            if client.get_experiment(exp.experiment_id).lifecycle_stage != "active":  # not restored by a peer
                raise
    elif artifact_root and not exp.artifact_location.startswith(artifact_root.rstrip("/")):
        _log.warning(
            "experiment %r keeps its artifacts at %s, outside this store's %s",
            name,
            exp.artifact_location,
            artifact_root,
        )
    missing = ui.missing_tags(exp.tags or {})
    if missing:
        _add_ui_tags(client, exp.experiment_id, missing)
    return exp.experiment_id
