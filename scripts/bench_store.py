#!/usr/bin/env python
"""Stores of N runs built from real runs, and what a large store costs (issue 18).

    python scripts/bench_store.py build --from /work/stores/base --runs 10000 --out DIR
                                  [--backend sqlite|postgresql] [--history all|none] [--no-weights]
                                  [--seeds 10] [--sweep-size 280] [--port P]
    python scripts/bench_store.py measure --store DIR|URI [--experiment optimizer-comparison]
                                  [--upkeep none|apply] [--rounds 3] [--json FILE]

`build` copies the real FINISHED runs of a source store (a real sweep: one parent, its children) until the
experiment holds N finished child runs (the source's own runs count), through SQL: every copy is the rows of
one source run (runs, tags, params, latest_metrics and, with --history all, the per-step metrics) under a fresh
run id, inserted with INSERT ... SELECT from a mapping table in one transaction. Each copy is a configuration
a real job could have had: its source's optimizer with another `optimizer.lr` (a grid of factors around the
source's lr, never the source's own) and a seed from 0..--seeds-1, with the `config_hash` such a job computes
(descentlab.config.identity over the source's params with lr and seed changed), its run name, `hydra.overrides`,
a parent per --sweep-size copies (a copy of the source's parent run with its own `sweep.dir`) and start/end
times spread back in time (one job every 1.5 s, sweeps one after another), metric timestamps shifted with them.
The curves are those of the source run (seed s copies the source run of seed s mod 3). Artifacts are hard links
of the source's files in each copy's artifact folder (weights.npz left out with --no-weights), so a copy costs
no artifact disk. --history none leaves out the per-step `metrics` rows (64 GB at 100k runs otherwise); the
latest metrics and metrics.csv stay, so analyze.py (which reads metrics.csv) sees every curve, the UI's charts
do not. Column lists come from MLflow's ORM models (descentlab.compat.mlflow_orm), so the copy follows the
installed MLflow's schema. SQLite: the source database file copied with SQLite's backup API, then the copies
added in it (WAL, one transaction). PostgreSQL: scripts/server.py's PostgreSQL and MLflow's server started in
DIR (left running for `measure`; `python scripts/server.py stop --data DIR`), the source rows and then the
copies inserted into its database.

`measure` prints a markdown table: the skip check (`find_finished_run`, median of 20 hits and 20 misses), a new
job's wall time (`train.py` of a short job into this store and into an empty one, alternating, and a job
skipped as done), `analyze.py` wall time and peak RSS, and the UI's chart request for 100 runs
(`get-history-bulk-interval` on MLflow's server over the store, median of 5). --upkeep apply first calls
`descentlab.tracking.upkeep.ensure_indexes` and `refresh_statistics` on the store (the after numbers).
Careful: a SQLite store measured gets one short job's run and an analysis run added (`analyze.py --no-log`
logs none; the new-job timing does).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "optimizer-comparison"
JOB_SPACING_MS = 1500  # one job finished every 1.5 s: 2 cores, two 2,000-step jobs at a time
SWEEP_GAP_MS = 60_000
LR_DECADES = 1.0  # copies' lr: the source's lr times 10**u, u in (-1, 1)
CHART_METRIC = "train/loss"
CHART_MAX_RESULTS = 320  # what MLflow's UI asks for a line chart (its default sample count)
PARTS = ("skip", "job", "analyze", "chart")
SLOW_CHART_S = 60.0


class BenchInputError(Exception):
    """Bad input: one line naming the bad value and what is allowed."""


# ------------------------------------------------------------------------------------------------ build


@dataclass
class SourceRun:
    """A real FINISHED child run of the source store: the template of its copies."""

    run_id: str
    start_time: int
    end_time: int
    params: dict[str, str]
    tags: dict[str, str]
    artifact_dir: Path

    @property
    def typed_params(self) -> dict[str, Any]:
        """The params with their types back (`0.001` a float, `[100, 100]` a list): what the hash was made of."""
        return {key: _typed(value) for key, value in self.params.items()}


@dataclass
class Source:
    """The source store's experiment: its sweep's parent run and its finished children."""

    uri: str
    experiment_id: str
    parent_id: str
    parent_start: int
    children: list[SourceRun] = field(default_factory=list)


def _typed(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _orm() -> Any:
    from descentlab import compat

    orm = compat.mlflow_orm()
    if orm is None:
        raise RuntimeError("MLflow's ORM models moved (descentlab.compat.mlflow_orm() is None): update compat first")
    return orm


def _local_path(uri: str) -> Path:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("file", ""):
        raise BenchInputError(f"artifact location {uri!r} is not a local file:// folder; the copies link its files")
    return Path(unquote(parts.path))


def read_source(folder: Path, experiment: str) -> Source:
    """The source's runs (read-only): the experiment's FINISHED child runs with a `config_hash`, and their parent."""
    import sqlalchemy as sa

    from descentlab.config.identity import params_hash

    db = folder / "mlflow.db"
    if not db.is_file():
        raise BenchInputError(f"--from {folder}: no mlflow.db there; give a SQLite store folder of real runs")
    orm = _orm()
    Run, Tag, Param = orm.run, orm.tag, orm.param
    engine = sa.create_engine(f"sqlite:///file:{db}?mode=ro&uri=true")
    try:
        with engine.connect() as conn:
            from mlflow.store.tracking.dbmodels.models import SqlExperiment  # noqa: F401  (its table is in the metadata)

            exp_table = Run.__table__.metadata.tables["experiments"]
            row = conn.execute(sa.select(exp_table.c.experiment_id).where(exp_table.c.name == experiment)).first()
            if row is None:
                raise BenchInputError(f"--experiment {experiment!r} is not in {db}")
            exp_id = str(row[0])
            runs = conn.execute(sa.select(Run.run_uuid, Run.status, Run.start_time, Run.end_time, Run.artifact_uri)
                                .where(Run.experiment_id == int(exp_id))).all()
            tags: dict[str, dict[str, str]] = {}
            for run_id, key, value in conn.execute(sa.select(Tag.run_uuid, Tag.key, Tag.value)):
                tags.setdefault(run_id, {})[key] = value
            params: dict[str, dict[str, str]] = {}
            for run_id, key, value in conn.execute(sa.select(Param.run_uuid, Param.key, Param.value)):
                params.setdefault(run_id, {})[key] = value
    finally:
        engine.dispose()
    children = [SourceRun(r.run_uuid, r.start_time, r.end_time, params.get(r.run_uuid, {}), tags.get(r.run_uuid, {}),
                          _local_path(r.artifact_uri))
                for r in runs if r.status == "FINISHED" and "config_hash" in tags.get(r.run_uuid, {})]
    if not children:
        raise BenchInputError(f"--from {folder}: no FINISHED run with a config_hash in {experiment!r}")
    parents = {c.tags.get("mlflow.parentRunId") for c in children}
    if len(parents) != 1 or None in parents:
        raise BenchInputError(f"--from {folder}: the source's runs must be one sweep (one parent); found {parents}")
    parent_id = parents.pop()
    for child in children:  # the hash must be reproducible, or the copies' hashes would not be real ones
        if params_hash(child.typed_params) != child.tags["config_hash"]:
            raise BenchInputError(f"--from {folder}: run {child.run_id}'s config_hash is not its params' hash")
    parent = next(r for r in runs if r.run_uuid == parent_id)
    children.sort(key=lambda c: (c.params.get("optimizer.name", ""), int(c.params.get("seed", 0))))
    return Source(f"sqlite:///{db}", exp_id, parent_id, parent.start_time, children)


@dataclass
class Plan:
    """Every copy to make: its source, its run's values and the tag/param values that differ from the source."""

    copies: list[dict[str, Any]]  # rows of the mapping table
    tags: list[dict[str, Any]]  # (run, key, value) overriding or adding tags
    params: list[dict[str, Any]]  # (run, key, value) overriding params
    links: list[tuple[SourceRun, str]]  # (source, new run id) for the artifacts
    n_sweeps: int
    n_configs: int


def _lr_text(lr: float) -> str:
    return repr(float(f"{lr:.6g}"))


def plan_copies(source: Source, n_runs: int, seeds: int, sweep_size: int, out: Path, experiment_id: str,
                artifact_root: str) -> Plan:
    """The copies that bring the experiment to `n_runs` finished child runs: configurations (optimizer x lr)
    filled seed by seed, one parent per `sweep_size` copies, older than the source's sweep."""
    from descentlab.config.identity import params_hash, params_name

    n_copies = n_runs - len(source.children)
    if n_copies < 0:
        raise BenchInputError(f"--runs {n_runs}: the source already has {len(source.children)} runs; ask for more")
    by_opt: dict[str, list[SourceRun]] = {}
    for child in source.children:
        by_opt.setdefault(str(child.params.get("optimizer.name")), []).append(child)
    optimizers = sorted(by_opt)
    n_lrs = max(2, -(-n_copies // (len(optimizers) * seeds)))
    n_lrs += n_lrs % 2  # even: u = (j + 0.5)/n * 2 - 1 is never 0, no copy has its source's lr
    slots = [(j, opt, s) for j in range(n_lrs) for opt in optimizers for s in range(seeds)][:n_copies]
    n_sweeps = -(-n_copies // sweep_size) if n_copies else 0
    first_start = source.parent_start - n_sweeps * (sweep_size * JOB_SPACING_MS + SWEEP_GAP_MS)
    copies: list[dict[str, Any]] = []
    tags: list[dict[str, Any]] = []
    params: list[dict[str, Any]] = []
    links: list[tuple[SourceRun, str]] = []
    seen: set[str] = {c.tags["config_hash"] for c in source.children}
    configs: set[tuple[str, str]] = set()
    parent_src = source.parent_id
    sweep_start = first_start
    for k in range(n_sweeps):
        chunk = slots[k * sweep_size:(k + 1) * sweep_size]
        parent = uuid.uuid4().hex
        sweep_dir = f"{out}/sweeps/{k:05d}"
        lrs = sorted({_lr_text(float(by_opt[o][0].params["optimizer.lr"]) * 10 ** ((j + 0.5) / n_lrs * 2 - 1))
                      for j, o, _ in chunk}, key=float)
        overrides = (f"optimizer={','.join(sorted({o for _, o, _ in chunk}))} optimizer.lr={lrs[0]}..{lrs[-1]} "
                     f"seed={','.join(str(s) for s in sorted({s for _, _, s in chunk}))} "
                     f"tracking.store_dir={out} training.progress=False")
        name = f"sweep {k} ({len(chunk)} jobs, copied)"
        sweep_end = sweep_start + len(chunk) * JOB_SPACING_MS + 3000
        copies.append(dict(src=parent_src, new=parent, off=sweep_start - source.parent_start, name=name,
                           end_ms=sweep_end, artifact_uri=f"{artifact_root}/{parent}/artifacts", exp=experiment_id))
        for key, value in (("sweep.dir", sweep_dir), ("hydra.overrides", overrides), ("mlflow.runName", name),
                           ("sweep.n_jobs", str(len(chunk))), ("sweep.n_finished", str(len(chunk)))):
            tags.append(dict(run=parent, key=key, value=value))
        for i, (j, opt, seed) in enumerate(chunk):
            src = by_opt[opt][seed % len(by_opt[opt])]
            lr = _lr_text(float(src.params["optimizer.lr"]) * 10 ** (LR_DECADES * ((j + 0.5) / n_lrs * 2 - 1)))
            typed = src.typed_params
            typed.update({"optimizer.lr": float(lr), "seed": seed, "tracking.store_dir": str(out)})
            chash = params_hash(typed)
            if chash in seen:
                raise RuntimeError(f"two copies share the config_hash {chash} (optimizer {opt}, lr {lr}, seed {seed})")
            seen.add(chash)
            configs.add((opt, lr))
            new = uuid.uuid4().hex
            start = sweep_start + i * JOB_SPACING_MS
            off = start - src.start_time
            run_name = params_name(typed)
            copies.append(dict(src=src.run_id, new=new, off=off, name=run_name, end_ms=src.end_time + off,
                               artifact_uri=f"{artifact_root}/{new}/artifacts", exp=experiment_id))
            job_overrides = (f"optimizer={opt} optimizer.lr={lr} seed={seed} tracking.store_dir={out} "
                             "training.progress=False")
            for key, value in (("config_hash", chash), ("hydra.overrides", job_overrides),
                               ("mlflow.runName", run_name), ("mlflow.parentRunId", parent),
                               ("hydra.job_num", str(i)), ("hydra.sweep_dir", sweep_dir),
                               ("hydra.output_dir", f"{sweep_dir}/{i}"), ("process.started_ms", str(start)),
                               ("heartbeat_ms", str(start))):
                tags.append(dict(run=new, key=key, value=value))
            if "config_group" in src.tags:  # the seedless hash (tracking.best), where the source has it
                from descentlab.config.identity import group_hash

                tags.append(dict(run=new, key="config_group", value=group_hash(typed)))
            for key, value in (("optimizer.lr", lr), ("seed", str(seed)), ("tracking.store_dir", str(out))):
                params.append(dict(run=new, key=key, value=value))
            links.append((src, new))
        sweep_start = sweep_end + SWEEP_GAP_MS
    return Plan(copies, tags, params, links, n_sweeps, len(configs))


def _mapping_tables(sa: Any) -> tuple[Any, Any, Any]:
    """Temporary tables: the copies (source run -> new run, time offset, run values) and the tag/param values
    that differ from the source's."""
    meta = sa.MetaData()
    copy = sa.Table("bench_copy", meta,
                    sa.Column("new", sa.String(32), primary_key=True), sa.Column("src", sa.String(32), index=True),
                    sa.Column("off", sa.BigInteger), sa.Column("name", sa.String(250)),
                    sa.Column("end_ms", sa.BigInteger),
                    sa.Column("artifact_uri", sa.String(200)), sa.Column("exp", sa.Integer), prefixes=["TEMPORARY"])
    tag = sa.Table("bench_tag", meta, sa.Column("run", sa.String(32), primary_key=True),
                   sa.Column("key", sa.String(250), primary_key=True), sa.Column("value", sa.String(8000)),
                   prefixes=["TEMPORARY"])
    param = sa.Table("bench_param", meta, sa.Column("run", sa.String(32), primary_key=True),
                     sa.Column("key", sa.String(250), primary_key=True), sa.Column("value", sa.String(8000)),
                     prefixes=["TEMPORARY"])
    return copy, tag, param


def _copy_rows(conn: Any, model: Any, copy: Any, over: Any | None, times: tuple[str, ...],
               run_values: dict[str, Any] | None = None) -> int:
    """INSERT INTO <model's table> SELECT its columns from the source rows joined to the mapping: the new run id,
    times shifted, `run_values` (column -> mapping column) replaced, rows whose key `over` overrides left out
    (then `over`'s rows added). The column list is the installed MLflow's."""
    import sqlalchemy as sa

    table = model.__table__
    run_col = model.run_uuid.property.columns[0].name  # the run id column, named by the model
    exprs = []
    for col in table.columns:
        if col.name == run_col:
            exprs.append(copy.c.new)
        elif col.name in times:
            exprs.append(col + copy.c.off)
        elif run_values and col.name in run_values:
            exprs.append(run_values[col.name])
        else:
            exprs.append(col)
    query = sa.select(*exprs).select_from(copy.join(table, table.c[run_col] == copy.c.src))
    if over is not None:
        query = query.where(~sa.exists().where(over.c.run == copy.c.new, over.c.key == table.c.key))
    n = conn.execute(table.insert().from_select([c.name for c in table.columns], query)).rowcount
    if over is not None:
        cols = [c.name for c in table.columns]
        mapped = {run_col: over.c.run, "key": over.c.key, "value": over.c.value}
        n += conn.execute(table.insert().from_select(cols, sa.select(*[mapped[c] for c in cols]))).rowcount
    return n


def _insert_plan(conn: Any, plan: Plan, history: bool, say: Any) -> dict[str, int]:
    """The copies' rows, in the connection's transaction."""
    import sqlalchemy as sa

    orm = _orm()
    copy, tag, param = _mapping_tables(sa)
    for table in (copy, tag, param):
        table.create(conn)
    for table, rows in ((copy, plan.copies), (tag, plan.tags), (param, plan.params)):
        for first in range(0, len(rows), 50_000):
            conn.execute(table.insert(), rows[first:first + 50_000])
    Run = orm.run
    counts = {}
    steps = [("runs", orm.run, None, ("start_time",),
              {Run.end_time.property.columns[0].name: copy.c.end_ms, Run.name.property.columns[0].name: copy.c.name,
               Run.artifact_uri.property.columns[0].name: copy.c.artifact_uri,
               Run.experiment_id.property.columns[0].name: copy.c.exp}),
             ("params", orm.param, param, (), None), ("tags", orm.tag, tag, (), None),
             ("latest_metrics", orm.latest_metric, None, ("timestamp",), None)]
    if history:
        steps.append(("metrics", orm.metric, None, ("timestamp",), None))
    for what, model, over, times, values in steps:
        started = time.perf_counter()
        counts[what] = _copy_rows(conn, model, copy, over, times, values)
        say(f"  {what}: {counts[what]:,} rows in {time.perf_counter() - started:.1f} s")
    for table in (copy, tag, param):
        table.drop(conn)
    return counts


def _link_artifacts(plan: Plan, artifacts: Path, weights: bool) -> int:
    """Hard links of each source run's artifact files into its copies' artifact folders."""
    from tqdm import tqdm

    files: dict[str, list[Path]] = {}
    n = 0
    for src, new in tqdm(plan.links, desc="artifacts (hard links)", unit="run", mininterval=2):
        rels = files.get(src.run_id)
        if rels is None:
            rels = files[src.run_id] = sorted(p.relative_to(src.artifact_dir) for p in src.artifact_dir.rglob("*")
                                              if p.is_file() and (weights or p.name != "weights.npz"))
        target = artifacts / new / "artifacts"
        for rel in rels:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(src.artifact_dir / rel, target / rel)
            n += 1
    return n


def _fast_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """A build is one process writing one transaction: no journal (a failed build is thrown away; a WAL would
    hold the whole copy once more until its checkpoint), no fsync, a large page cache. WAL again at the end."""
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-400000", "temp_store=MEMORY"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _sqlite_copy(src: Path, dst: Path) -> None:
    """The source database copied page by page (SQLite's backup API: consistent even with a WAL beside it)."""
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as s, sqlite3.connect(dst) as d:
        s.backup(d)
    s.close()
    d.close()


def _own_source_runs(conn: Any, source: Source, artifact_root: str, artifacts: Path, weights: bool) -> None:
    """The source's own runs point at the new store's artifact folder (their files hard-linked there)."""
    orm = _orm()
    Run = orm.run
    for run_id in [source.parent_id, *(c.run_id for c in source.children)]:
        conn.execute(Run.__table__.update().where(Run.run_uuid == run_id)
                     .values({Run.artifact_uri.property.columns[0].name: f"{artifact_root}/{run_id}/artifacts"}))
    for child in source.children:
        for path in child.artifact_dir.rglob("*"):
            if path.is_file() and (weights or path.name != "weights.npz"):
                target = artifacts / child.run_id / "artifacts" / path.relative_to(child.artifact_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)


def _copy_source_into(conn: Any, source: Source, experiment_id: int, history: bool) -> None:
    """The source's runs (all their rows) into another database (PostgreSQL), in the new experiment."""
    import sqlalchemy as sa

    orm = _orm()
    engine = sa.create_engine(source.uri.replace("sqlite:///", "sqlite:///file:") + "?mode=ro&uri=true")
    ids = [source.parent_id, *(c.run_id for c in source.children)]
    models = [orm.run, orm.param, orm.tag, orm.latest_metric] + ([orm.metric] if history else [])
    try:
        with engine.connect() as src:
            for model in models:
                table = model.__table__
                rows = [dict(r._mapping) for r in src.execute(sa.select(table).where(table.c.run_uuid.in_(ids)))]
                if model is orm.run:
                    for r in rows:
                        r["experiment_id"] = experiment_id
                for first in range(0, len(rows), 10_000):
                    conn.execute(table.insert(), rows[first:first + 10_000])
    finally:
        engine.dispose()


def build(source_dir: Path, n_runs: int, out: Path, backend: str = "sqlite", history: bool = True,
          weights: bool = True, seeds: int = 10, sweep_size: int = 280, experiment: str = EXPERIMENT,
          port: int | None = None, say: Any = print) -> dict[str, Any]:
    """Build a store of `n_runs` finished child runs in `out` (see the module's docstring); its summary."""
    import sqlalchemy as sa

    if backend not in ("sqlite", "postgresql"):
        raise BenchInputError(f"--backend {backend!r} is not supported; allowed: sqlite, postgresql")
    if seeds < 1 or sweep_size < 1:
        raise BenchInputError(f"--seeds {seeds} / --sweep-size {sweep_size}: both must be at least 1")
    out = out.expanduser().absolute()
    if out.exists() and any(out.iterdir()):
        raise BenchInputError(f"--out {out} is not empty; give a new or empty folder")
    source = read_source(source_dir.expanduser().absolute(), experiment)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    artifacts = out / "artifacts" / experiment
    artifact_root = artifacts.as_uri()
    info: dict[str, Any] = {"out": str(out), "backend": backend, "history": "all" if history else "none"}
    if backend == "sqlite":
        db = out / "mlflow.db"
        _sqlite_copy(Path(source.uri.removeprefix("sqlite:///")), db)
        uri = f"sqlite:///{db}"
        experiment_id = int(source.experiment_id)
        engine = sa.create_engine(uri)
        sa.event.listen(engine, "connect", _fast_sqlite)
        if not history:
            with engine.begin() as conn:
                conn.execute(_orm().metric.__table__.delete())  # the source's own history goes too: all alike
    else:
        from mlflow import MlflowClient

        from descentlab.server import start

        st = start(out, port=port, backend="postgresql", say=say)
        uri = st.database_uri
        info.update(tracking_uri=st.tracking_uri, database_uri=uri)
        experiment_id = int(MlflowClient(tracking_uri=uri).create_experiment(experiment,
                                                                             artifact_location=artifact_root))
        engine = sa.create_engine(uri)
        with engine.begin() as conn:
            _copy_source_into(conn, source, experiment_id, history)
    plan = plan_copies(source, n_runs, seeds, sweep_size, out, experiment_id, artifact_root)
    say(f"copying {len(plan.links):,} runs ({plan.n_configs:,} configurations x up to {seeds} seeds) and "
        f"{plan.n_sweeps} sweep parents from {len(source.children)} runs of {source_dir} into {uri} ...")
    with engine.begin() as conn:
        if backend == "sqlite":
            exp_table = _orm().run.__table__.metadata.tables["experiments"]
            conn.execute(exp_table.update().where(exp_table.c.experiment_id == experiment_id)
                         .values(artifact_location=artifact_root))
        _own_source_runs(conn, source, artifact_root, artifacts, weights)
        counts = _insert_plan(conn, plan, history, say)
    engine.dispose()
    if backend == "sqlite":
        with sqlite3.connect(out / "mlflow.db") as conn:
            conn.execute("PRAGMA journal_mode=WAL")  # what descentlab's stores use
        conn.close()
    links = _link_artifacts(plan, artifacts, weights)
    source_configs = len({c.params.get("optimizer.name") for c in source.children})
    info.update(uri=uri, experiment=experiment, experiment_id=experiment_id, runs=n_runs, copies=len(plan.links),
                configurations=plan.n_configs + source_configs, sweeps=plan.n_sweeps + 1, rows=counts,
                links=links, seconds=round(time.perf_counter() - started, 1), db_bytes=_db_bytes(uri))
    (out / "bench_store.json").write_text(json.dumps(info, indent=1))
    return info


def _db_bytes(uri: str) -> int:
    """The database's size on disk: the SQLite file(s), or PostgreSQL's own count (its tables and indexes)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    import sqlalchemy as sa

    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one())
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------- measure


@dataclass
class Store:
    """What `measure` reads: the store's database URI, the tracking server's (PostgreSQL builds), its label."""

    uri: str
    label: str
    server_uri: str | None = None
    folder: Path | None = None


def resolve_store(spec: str) -> Store:
    """--store: a folder made by `build` (or any folder with mlflow.db), or a database URI."""
    if "://" in spec:
        if not spec.startswith(("sqlite:///", "postgresql")):
            raise BenchInputError(f"--store {spec!r}: give a store folder, a sqlite:/// or a postgresql:// URI")
        return Store(spec, spec.split(":", 1)[0])
    folder = Path(spec).expanduser().absolute()
    info_file = folder / "bench_store.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        label = f"{info['backend']}, {info['runs']:,} runs, history {info['history']}"
        return Store(info["uri"], label, info.get("tracking_uri"), folder)
    if (folder / "mlflow.db").is_file():
        return Store(f"sqlite:///{folder / 'mlflow.db'}", f"sqlite ({folder})", None, folder)
    raise BenchInputError(f"--store {spec}: no mlflow.db or bench_store.json there; give a store folder or a URI")


def _median_ms(calls: list[float]) -> float:
    return round(statistics.median(calls) * 1000, 2)


def measure_skip_check(uri: str, experiment: str, n: int = 20, seed: int = 0) -> dict[str, Any]:
    """`find_finished_run` as a job calls it: median ms of `n` hits (hashes of stored runs) and `n` misses."""
    import random

    from descentlab.tracking.run import find_finished_run
    from descentlab.tracking.store import open_store

    client = open_store(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise BenchInputError(f"--experiment {experiment!r} is not in {uri}")
    hashes = _stored_hashes(uri, exp.experiment_id)
    rng = random.Random(seed)
    hits = rng.sample(hashes, min(n, len(hashes)))
    misses = [f"{rng.getrandbits(64):016x}" for _ in range(n)]
    find_finished_run(client, exp.experiment_id, misses[0])  # warm: first query of a connection
    out: dict[str, Any] = {"experiment_id": exp.experiment_id, "runs": len(hashes)}
    for what, values in (("hit", hits), ("miss", misses)):
        seconds, found = [], 0
        for value in values:
            started = time.perf_counter()
            found += find_finished_run(client, exp.experiment_id, value) is not None
            seconds.append(time.perf_counter() - started)
        out[f"{what}_ms"] = _median_ms(seconds)
        out[f"{what}_found"] = found
        out[f"{what}_calls"] = len(values)
    return out


def _stored_hashes(uri: str, experiment_id: str) -> list[str]:
    """The `config_hash` tags of the experiment's FINISHED runs (one SQL query: the client would page 10k runs)."""
    import sqlalchemy as sa

    orm = _orm()
    Run, Tag = orm.run, orm.tag
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(sa.select(Tag.value).join(Run, Run.run_uuid == Tag.run_uuid)
                                       .where(Tag.key == "config_hash", Run.status == "FINISHED",
                                              Run.experiment_id == int(experiment_id))).scalars())
    finally:
        engine.dispose()


def _child_env(uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    return env


def _timed(argv: list[str], env: dict[str, str], cwd: Path = REPO) -> tuple[float, float, str]:
    """Run `argv`; (wall seconds, peak RSS in MB of the process, its output). Raises when it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def job_argv(seed: int, iterations: int = 200) -> list[str]:
    """One short real job (the digits data set, `iterations` steps), tracked, not skipped (its own seed)."""
    return [sys.executable, str(REPO / "train.py"), "dataset=digits", f"training.iterations={iterations}",
            f"seed={seed}", "training.progress=false", "tracking.experiment=bench-new-job"]


def measure_new_job(uri: str, rounds: int = 3, iterations: int = 200) -> dict[str, Any]:
    """`train.py` of one short job into this store and into an empty one, alternating (`rounds` each); then the
    last job again in this store: skipped as done. Seconds, process start to exit."""
    seed0 = int(time.time()) % 1_000_000 * 10  # seeds no earlier measurement used: every job trains
    big, empty, skipped = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-store-empty-") as tmp:
        empty_uri = f"sqlite:///{tmp}/mlflow.db"
        for r in range(rounds):
            for where, target, series in ((uri, "store", big), (empty_uri, "empty", empty))[:: 1 if r % 2 == 0 else -1]:
                seconds, _, output = _timed(job_argv(seed0 + r, iterations), _child_env(where))
                if "skipped" in output:
                    raise RuntimeError(f"the new job was skipped in the {target} store; pick other seeds")
                series.append(seconds)
        for _ in range(rounds):
            seconds, _, output = _timed(job_argv(seed0 + rounds - 1, iterations), _child_env(uri))
            if "skipped" not in output:
                raise RuntimeError(f"the repeated job was not skipped:\n{output[-2000:]}")
            skipped.append(seconds)
    return {"store_s": round(statistics.median(big), 2), "empty_s": round(statistics.median(empty), 2),
            "ratio": round(statistics.median(big) / statistics.median(empty), 2),
            "skipped_s": round(statistics.median(skipped), 2), "rounds": rounds, "iterations": iterations,
            "store_all_s": [round(x, 2) for x in big], "empty_all_s": [round(x, 2) for x in empty]}


def measure_analyze(uri: str, experiment: str) -> dict[str, Any]:
    """`scripts/analyze.py EXPERIMENT --no-log --out TMP`: wall seconds and the process's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-store-analyze-") as tmp:
        argv = [sys.executable, str(REPO / "scripts" / "analyze.py"), experiment, "--no-log", "--out", tmp]
        seconds, peak_mb, output = _timed(argv, _child_env(uri))
    return {"seconds": round(seconds, 1), "peak_mb": round(peak_mb), "tail": output.strip().splitlines()[-3:]}


def chart_query(run_ids: list[str], metric: str = CHART_METRIC, max_results: int = CHART_MAX_RESULTS) -> str:
    """The query string of the request MLflow's UI sends for a line chart of up to 100 runs (mlflow 3.x,
    `useSampledMetricHistory`: run_ids repeated, metric_key, max_results=320, no step range)."""
    from urllib.parse import urlencode

    return urlencode([*(("run_ids", r) for r in run_ids), ("metric_key", metric), ("max_results", max_results)])


def _chart_runs(uri: str, experiment: str, n: int = 100) -> list[str]:
    """The `n` newest FINISHED runs with the chart's metric: those the UI's runs table shows first."""
    from descentlab.tracking.store import open_store

    client = open_store(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=3 * n,
                              order_by=["attributes.start_time DESC"])
    return [r.info.run_id for r in runs if CHART_METRIC in r.data.metrics][:n]


def measure_chart(store: Store, experiment: str, repeats: int = 5) -> dict[str, Any]:
    """The UI's chart request for 100 runs against MLflow's server over the store: the first (cold) request
    and the median of `repeats` more (1 more when the first took over SLOW_CHART_S), seconds, and the points
    it returned."""
    from urllib.request import urlopen

    from descentlab.server import mlflow_server
    from descentlab.server.net import free_port, healthy

    run_ids = _chart_runs(store.uri, experiment)
    with tempfile.TemporaryDirectory(prefix="bench-store-server-") as tmp:
        proc = None
        url = store.server_uri if store.server_uri and healthy(store.server_uri) else None
        try:
            if url is None:
                port = free_port()
                proc = mlflow_server.start(store.uri, Path(tmp) / "artifacts", "127.0.0.1", port, Path(tmp) / "log")
                url = f"http://127.0.0.1:{port}"
            request = f"{url}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?{chart_query(run_ids)}"
            seconds, points = [], 0
            while len(seconds) < repeats + 1:
                started = time.perf_counter()
                with urlopen(request, timeout=1800) as response:
                    points = len(json.loads(response.read()).get("metrics", []))
                seconds.append(time.perf_counter() - started)
                if seconds[0] > SLOW_CHART_S:  # minutes a request: two are enough to say so
                    repeats = 1
        finally:
            if proc is not None:
                mlflow_server.stop(proc)
    return {"runs": len(run_ids), "points": points, "first_s": round(seconds[0], 3), "repeats": len(seconds) - 1,
            "median_s": round(statistics.median(seconds[1:]), 3), "server": "build's" if proc is None else "own"}


def apply_upkeep(uri: str) -> dict[str, float]:
    """Engineer A's store upkeep (descentlab.tracking.upkeep), both calls, timed: the after numbers."""
    try:
        from descentlab.tracking import upkeep
    except ImportError as exc:
        raise BenchInputError(f"--upkeep apply: descentlab.tracking.upkeep is not importable here ({exc}); "
                              "use --upkeep none, or a checkout that has it") from exc
    out = {}
    for name in ("ensure_indexes", "refresh_statistics"):
        started = time.perf_counter()
        getattr(upkeep, name)(uri)
        out[f"{name}_s"] = round(time.perf_counter() - started, 2)
    return out


def machine() -> str:
    """The machine in one line: CPU, cores, memory, OS, Python, SQLite."""
    from bench import cpu_model  # the sibling script

    cpu = cpu_model(platform.processor() or platform.machine())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def measure(spec: str, experiment: str = EXPERIMENT, upkeep: str = "none", rounds: int = 3,
            parts: tuple[str, ...] = ("skip", "job", "analyze", "chart"), say: Any = print) -> dict[str, Any]:
    """Every measurement of the module's docstring on one store; the numbers by part."""
    if upkeep not in ("none", "apply"):
        raise BenchInputError(f"--upkeep {upkeep!r} is not supported; allowed: none, apply")
    store = resolve_store(spec)
    result: dict[str, Any] = {"store": store.label, "uri": store.uri, "upkeep": upkeep, "machine": machine()}
    if upkeep == "apply":
        result["upkeep_s"] = apply_upkeep(store.uri)
    steps = {"skip": lambda: measure_skip_check(store.uri, experiment),
             "job": lambda: measure_new_job(store.uri, rounds),
             "analyze": lambda: measure_analyze(store.uri, experiment),
             "chart": lambda: measure_chart(store, experiment)}
    for part in parts:
        say(f"measuring {part} ...", file=sys.stderr)
        result[part] = steps[part]()
        say(f"{part}: {json.dumps(result[part])}", file=sys.stderr)  # kept if a later part is stopped
    return result


def table(result: dict[str, Any]) -> str:
    """The measurements as a markdown table."""
    rows = [("store", result["store"]), ("upkeep", result["upkeep"])]
    if "upkeep_s" in result:
        rows.append(("upkeep calls, s", ", ".join(f"{k[:-2]} {v}" for k, v in result["upkeep_s"].items())))
    if "skip" in result:
        s = result["skip"]
        rows += [("skip check `find_finished_run`, hit, ms (median of 20)", f"{s['hit_ms']} ({s['hit_found']}/"
                  f"{s['hit_calls']} found; {s['runs']:,} runs with a hash)"),
                 ("skip check, miss, ms (median of 20)", f"{s['miss_ms']} ({s['miss_found']} found)")]
    if "job" in result:
        j = result["job"]
        rows += [(f"new job ({j['iterations']} steps, digits), this store / empty store, s (median of {j['rounds']})",
                  f"{j['store_s']} / {j['empty_s']} (x{j['ratio']})"),
                 ("the same job again, skipped as done, s", f"{j['skipped_s']}")]
    if "analyze" in result:
        a = result["analyze"]
        rows.append(("`analyze.py --no-log`, s / peak RSS MB", f"{a['seconds']} / {a['peak_mb']:,}"))
    if "chart" in result:
        c = result["chart"]
        rows.append((f"UI chart request, {c['runs']} runs' `{CHART_METRIC}`, s (first / median of {c['repeats']})",
                     f"{c['first_s']} / {c['median_s']} ({c['points']:,} points)"))
    lines = ["| measurement | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- command line


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_store.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="a store of N runs copied from real runs")
    b.add_argument("--from", dest="source", type=Path, required=True, help="a SQLite store folder of a real sweep")
    b.add_argument("--runs", type=_positive, required=True, help="finished child runs in the experiment")
    b.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    b.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    b.add_argument("--history", choices=("all", "none"), default="all",
                   help="none: no per-step metric rows (latest metrics and metrics.csv stay)")
    b.add_argument("--no-weights", action="store_true", help="no weights.npz link in the copies' artifacts")
    b.add_argument("--seeds", type=_positive, default=10, help="seeds per configuration (default 10)")
    b.add_argument("--sweep-size", type=_positive, default=280, help="copies per sweep parent (default 280)")
    b.add_argument("--experiment", default=EXPERIMENT)
    b.add_argument("--port", type=_positive, help="PostgreSQL backend: the MLflow server's port (default 5000)")
    m = sub.add_parser("measure", help="skip check, a new job, analyze.py, the UI's chart on one store")
    m.add_argument("--store", required=True, help="a store folder (from build) or a sqlite:///, postgresql:// URI")
    m.add_argument("--experiment", default=EXPERIMENT)
    m.add_argument("--upkeep", choices=("none", "apply"), default="none",
                   help="apply: descentlab.tracking.upkeep's ensure_indexes and refresh_statistics first")
    m.add_argument("--rounds", type=_positive, default=3, help="new-job rounds (each: this store, an empty one)")
    m.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts, from {', '.join(PARTS)}")
    m.add_argument("--json", type=Path, help="also write the numbers here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    warnings.filterwarnings("ignore", message=".*noload.*")  # MLflow's ORM models under SQLAlchemy 2.1, harmless
    try:
        if args.command == "build":
            info = build(args.source, args.runs, args.out, args.backend, args.history == "all", not args.no_weights,
                         args.seeds, args.sweep_size, args.experiment, args.port)
            print(json.dumps(info, indent=1))
            print(f"\nstore of {info['runs']:,} runs in {info['out']} ({info['db_bytes'] / 1e9:.2f} GB of database, "
                  f"{info['seconds']} s); tracking URI: {info.get('tracking_uri', info['uri'])}")
            return 0
        parts = tuple(p.strip() for p in args.only.split(",") if p.strip())
        bad = [p for p in parts if p not in PARTS]
        if bad or not parts:
            raise BenchInputError(f"--only {args.only!r}: unknown part {bad}; allowed: {', '.join(PARTS)}")
        result = measure(args.store, args.experiment, args.upkeep, args.rounds, parts,
                         say=lambda *a, **k: print(*a, **k))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        print(f"machine: {result['machine']}")
        command = " ".join(argv if argv is not None else sys.argv[1:])
        print(f"command: python scripts/bench_store.py {command}\n")
        print(table(result))
        return 0
    except BenchInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
