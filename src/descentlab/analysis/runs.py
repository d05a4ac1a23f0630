"""Tracked runs as pandas tables: one row per job run (`load_runs`), every metric point (`load_history`), or one
run's points at a time (`iter_histories`).

Why this shape: a sweep's parent run only groups its children, so rows are the *job* runs (those
tagged `config_hash`). FAILED, diverged and KILLED jobs are kept and labelled in `outcome`, so
aggregates can count them instead of silently dropping them.

Speed and memory: `import mlflow` costs ~2 s, so it is imported inside the functions. Runs are read a page at a
time and each page turned into rows at once (no `Run` object outlives its page, no cap on their number); a SQL
store reached directly is read with a few bulk SELECTs instead of MLflow's ORM search. Per-step histories come
from each run's `metrics.csv` artifact (pyarrow, read ahead in a few threads), because `get_metric_history`
costs ~10 ms per run and key; `iter_histories` hands them over one run at a time, so an analysis that
aggregates while it reads holds one run's points, not every run's (~0.7 MB a 2,000-step run).
"""

from __future__ import annotations

import ast
import collections
import contextlib
import difflib
import functools
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd

from descentlab.tracking.search import search_pages

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "BASE_COLUMNS",
    "HISTORY_FILES",
    "AnalysisError",
    "default_tracking_uri",
    "is_summary_metric",
    "iter_histories",
    "load_history",
    "load_runs",
    "normalize_param",
    "parse_param",
]

# Columns every `load_runs` frame starts with, before the params and the summary metrics.
BASE_COLUMNS = (
    "run_id",
    "run_name",
    "status",
    "outcome",
    "start_time",
    "duration_s",
    "parent_run_id",
    "sweep_dir",
    "config_hash",
    "error",
    "diverged_at_step",
    "artifact_uri",
)
# The per-run history CSV: `app.run` logs `metrics.csv`; `RunTracker.log_history` defaults to the second name.
HISTORY_FILES = ("metrics.csv", "metric_history.csv")
HISTORY_COLUMNS = ("run_id", "step", "metric", "value")
_SUMMARY_PREFIXES = ("final/", "best/")
_SUMMARY_KEYS = frozenset({"time/elapsed_s"})
_OUTCOMES = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}  # anything else: "running"
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


@contextlib.contextmanager
def _progress(enabled: bool, desc: str, total: int | None) -> Iterator[Any]:
    """A tqdm bar on an interactive terminal when `enabled` (tqdm's disable=None: off in logs and CI)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="run", disable=None if enabled else True, leave=False,
               mininterval=0.5)
    try:
        yield bar
    finally:
        bar.close()


class AnalysisError(ValueError):
    """Bad input to an analysis function (unknown experiment, no runs, missing columns); one-line message."""


# -- tracking URI ------------------------------------------------------------------------------------
def default_tracking_uri() -> str:
    """Where `train.py` writes by default: $MLFLOW_TRACKING_URI, else `<repo>/mlruns/mlflow.db`.

    `<repo>` is `paths.root`'s default: the checkout holding this package (editable install), else the
    current directory — the same store a run from the repository uses.
    """
    from descentlab.config.paths import default_root
    from descentlab.tracking.store import resolve_tracking_uri  # plain string helpers, no mlflow import

    return resolve_tracking_uri(None, default_root() / "mlruns")


def _client(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    """A client for an existing store; a missing SQLite file is an error (MLflow would create an empty one)."""
    from descentlab.tracking.store import redact, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, ".") if tracking_uri else default_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :].partition("?")[0]
        if path != ":memory:" and not Path(path).is_file():
            raise AnalysisError(f"no MLflow store at {path} (pass tracking_uri or set MLFLOW_TRACKING_URI)")
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=uri), uri
    except Exception as exc:  # malformed URI, unreachable database: one line naming the store
        raise AnalysisError(f"cannot open MLflow store {redact(uri)}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- param values ------------------------------------------------------------------------------------
def parse_param(text: str | None) -> object:
    """A stored param string back to a value: ints, floats, True/False, None; anything else (lists too) stays text."""
    if text is None:
        return None
    s = text.strip()
    if s in ("True", "False"):
        return s == "True"
    if s == "None":
        return None
    if _INT_RE.fullmatch(s):
        return int(s)
    if _FLOAT_RE.fullmatch(s):
        return float(s)
    return text


def normalize_param(value: object) -> str:
    """A canonical string for comparing param values: 0.01 == "0.010" == "1e-2", 1 == "1.0", [1,2] == "[1, 2]"."""
    if isinstance(value, str):
        parsed = parse_param(value)
        if isinstance(parsed, str):
            s = parsed.strip()
            if s[:1] in "[(":
                try:
                    literal = ast.literal_eval(s)
                except (ValueError, SyntaxError):
                    return s
                return normalize_param(list(literal)) if isinstance(literal, list | tuple) else s
            return s
        value = parsed
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, list | tuple | np.ndarray):
        return "[" + ", ".join(normalize_param(v) for v in value) + "]"
    return str(value).strip()


def is_summary_metric(key: str) -> bool:
    """Metrics `load_runs` turns into columns: `final/*`, `best/*` and the run's `time/elapsed_s`."""
    return key.startswith(_SUMMARY_PREFIXES) or key in _SUMMARY_KEYS


# -- load_runs ---------------------------------------------------------------------------------------
def _experiment_id(client: MlflowClient, uri: str, experiment: str) -> str:
    from descentlab.tracking.store import redact

    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        state = "no experiment named" if exp is None else "deleted experiment"
        raise AnalysisError(f"{state} {experiment!r} in {redact(uri)}; experiments: {', '.join(names) or '(none)'}")
    return exp.experiment_id


def _outcome(status: str, tags: Mapping[str, str]) -> str:
    outcome = _OUTCOMES.get(status, "running")
    if outcome == "failed" and ("diverged_at_step" in tags or tags.get("error", "").startswith("DivergedError")):
        return "diverged"
    return outcome


@dataclass
class _Scan:
    """What `load_runs` keeps of each run while paging: a row, its raw params, its summary metrics (strings
    interned: thousands of runs share keys and most values), and each sweep parent's folder."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    params: list[dict[str, str]] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    sweep_of_parent: dict[str, str] = field(default_factory=dict)
    read: int = 0

    def add(self, run_id: str, name: str | None, status: str, start_time: int | None, end_time: int | None,
            artifact_uri: str | None, tags: Mapping[str, str], params: Mapping[str, str],
            metrics: Mapping[str, float]) -> None:
        """One run as MLflow returns it (a `Run`'s info and data); parents only note their sweep folder."""
        self.read += 1
        if "config_hash" not in tags:
            # A sweep's parent names its folder in `sweep.dir` (older parents also, or only, in `sweep_dir`).
            self.sweep_of_parent[run_id] = tags.get("sweep.dir") or tags.get("sweep_dir", "")
            return
        self.rows.append(_row(run_id, name, status, start_time, end_time, artifact_uri, tags))
        self.params.append({sys.intern(k): sys.intern(v) for k, v in params.items()})
        self.metrics.append({sys.intern(k): v for k, v in metrics.items() if is_summary_metric(k)})


def _row(run_id: str, name: str | None, status: str, start_time: int | None, end_time: int | None,
         artifact_uri: str | None, tags: Mapping[str, str]) -> dict[str, Any]:
    parent = tags.get("mlflow.parentRunId")
    end = end_time if status in _OUTCOMES else None
    diverged = parse_param(tags.get("diverged_at_step"))
    row: dict[str, Any] = {
        "run_id": run_id,
        "run_name": name or tags.get("mlflow.runName"),
        "status": status,
        "outcome": _outcome(status, tags),
        "start_time": start_time,
        "duration_s": (end - start_time) / 1000.0 if end and start_time else math.nan,
        "parent_run_id": parent,
        "sweep_dir": tags.get("hydra.sweep_dir"),  # else the parent's folder, filled in once every page is read
        "config_hash": tags.get("config_hash"),
        "error": tags.get("error"),
        "diverged_at_step": diverged if isinstance(diverged, int) else None,
        "artifact_uri": artifact_uri,
    }
    return row


def _scan_client(client: MlflowClient, experiment_id: str, bar: Any) -> _Scan:
    """Page through `search_runs`, turning each page into rows before the next one is fetched."""
    scan = _Scan()
    for page in search_pages(client, experiment_id):  # no cap, no list of all runs
        for run in page:
            info, data = run.info, run.data
            scan.add(info.run_id, info.run_name, info.status, info.start_time, info.end_time, info.artifact_uri,
                     data.tags, data.params, data.metrics)
        bar.update(len(page))
    return scan


def _scan_sql(client: MlflowClient, experiment_id: str, bar: Any, chunk: int = 2000) -> _Scan | None:
    """The runs `search_runs` returns (active runs of the experiment, newest first), read with a few SELECTs per
    `chunk` runs over MLflow's own tables (`compat.mlflow_orm`); None when the store is not a SQL database reached
    directly (a tracking server) or MLflow's models moved. MLflow's search builds an ORM object per run, param and
    tag: ~1.8-4.7 ms a run; this reads the same rows as tuples (10,000 runs: ~6 s against ~47 s)."""
    from descentlab import compat

    engine, orm = compat.mlflow_engine(client), compat.mlflow_orm()
    if engine is None or orm is None:
        return None
    import sqlalchemy as sa

    R, P, T, M = orm.run, orm.param, orm.tag, orm.latest_metric
    scan = _Scan()
    with engine.connect() as conn:
        heads = conn.execute(
            sa.select(R.run_uuid, R.name, R.status, R.start_time, R.end_time, R.artifact_uri)
            .where(R.experiment_id == int(experiment_id), R.lifecycle_stage == "active")
            .order_by(R.start_time.desc(), R.run_uuid)).all()  # search_runs' order
        for first in range(0, len(heads), chunk):
            part = heads[first:first + chunk]
            ids = [h[0] for h in part]
            tags: dict[str, dict[str, str]] = {i: {} for i in ids}
            params: dict[str, dict[str, str]] = {i: {} for i in ids}
            metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
            for run_id, key, value in conn.execute(sa.select(T.run_uuid, T.key, T.value).where(T.run_uuid.in_(ids))):
                tags[run_id][key] = value
            for run_id, key, value in conn.execute(sa.select(P.run_uuid, P.key, P.value).where(P.run_uuid.in_(ids))):
                params[run_id][key] = value
            for run_id, key, value, is_nan in conn.execute(
                    sa.select(M.run_uuid, M.key, M.value, M.is_nan).where(M.run_uuid.in_(ids))):
                metrics[run_id][key] = math.nan if is_nan else float(value)
            for run_id, name, status, start, end, artifact_uri in part:
                if not name:  # as MLflow's Run entity: the name from the mlflow.runName tag
                    name = tags[run_id].get("mlflow.runName")
                scan.add(run_id, name, status, start, end, artifact_uri, tags[run_id], params[run_id],
                         metrics[run_id])
            bar.update(len(part))
    return scan


def _sweep_matches(sweep: str, parent_run_id: str | None, sweep_dir: str | None) -> bool:
    """`sweep` names the parent run id, or the sweep folder: whole, or its last path components."""
    if sweep == parent_run_id or (sweep_dir and sweep == sweep_dir):
        return True
    if not sweep_dir:
        return False
    want, have = PurePosixPath(sweep.rstrip("/")).parts, PurePosixPath(sweep_dir.rstrip("/")).parts
    k = min(len(want), len(have))
    return k > 0 and want[-k:] == have[-k:] and (len(want) == k or len(have) == k)


def _params_filter(frame: pd.DataFrame, raw: Mapping[str, Mapping[str, str]],
                   params: Mapping[str, object], experiment: str) -> pd.DataFrame:
    """Keep rows whose stored param equals the wanted value (a set means any of its values), compared normalised."""
    keep = np.ones(len(frame), dtype=bool)
    for key, wanted in params.items():
        known = sorted({k for p in raw.values() for k in p})
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; params: {', '.join(known)}"
            raise AnalysisError(f"no param {key!r} in experiment {experiment!r}{hint}")
        values = wanted if isinstance(wanted, set | frozenset) else [wanted]
        targets = {normalize_param(v) for v in values}
        stored = [raw[rid].get(key) for rid in frame["run_id"]]
        match = np.array([s is not None and normalize_param(s) in targets for s in stored], dtype=bool)
        if not (keep & match).any():
            present = sorted({s for s, k in zip(stored, keep, strict=True) if s is not None and k})
            shown = ", ".join(present[:20]) + (", ..." if len(present) > 20 else "")
            raise AnalysisError(f"no runs with {key}={_show(wanted)} in experiment {experiment!r}; "
                                f"{key} values: {shown or '(none)'}")
        keep &= match
    return frame[keep]


def _show(value: object) -> str:
    if isinstance(value, set | frozenset):
        return "{" + ", ".join(sorted(repr(v) for v in value)) + "}"
    return repr(value)


def load_runs(
    experiment: str,
    tracking_uri: str | None = None,
    sweep: str | None = None,
    params: Mapping[str, object] | None = None,
    *,
    progress: bool = False,
    via: str = "auto",
) -> pd.DataFrame:
    """One row per job run of `experiment` (FAILED, diverged, KILLED included, labelled in `outcome`).

    `sweep`: only the children of one sweep, named by the parent run id or by the sweep folder (the
    `hydra.sweep_dir` tag, or its last path component(s), e.g. "12-19-30.630815").
    `params`: keep runs whose param equals the value, compared after normalisation (0.01 == "0.010",
    1 == "1.0", [100, 100] == "[100, 100]"); a set of values means any of them.

    Columns: `BASE_COLUMNS` (start_time as UTC timestamps, duration_s NaN while running), then every
    param under its dotted name with values parsed (`parse_param`; absent → NaN), then the latest value
    of each summary metric (`is_summary_metric`). Rows are sorted by start time. `attrs` holds the
    experiment name and id, the tracking URI (`load_history` reuses it) and `params`, the param columns
    (`analysis.groups` groups runs by them; pandas drops attrs on merge, so add columns with `map`).
    `attrs["runs_read"]`: how many runs the store returned (sweep parents included), `attrs["job_runs"]`: how
    many were job runs (before the filters). Runs are read a page at a time, every page (no cap), each page
    turned into rows at once; `progress`: a tqdm bar on a terminal. `via`: "client" pages through
    `MlflowClient.search_runs`; "sql" reads MLflow's tables of a SQL store reached directly with a few bulk
    SELECTs (the same frame, faster); "auto" (default) tries SQL and falls back to the client on any error.
    Raises AnalysisError for an unknown experiment, an experiment without job runs, or a filter that
    matches nothing.
    """
    client, uri = _client(tracking_uri)
    experiment_id = _experiment_id(client, uri, experiment)
    if via not in ("auto", "sql", "client"):
        raise AnalysisError(f"via must be 'auto', 'sql' or 'client', got {via!r}")
    scan = None
    if via != "client":
        with _progress(progress, "runs", None) as bar:
            try:
                scan = _scan_sql(client, experiment_id, bar)
            except Exception as exc:  # a schema MLflow changed, a dialect quirk: the client reads the same runs
                if via == "sql":
                    raise AnalysisError(f"cannot read the runs with SQL: {_first_line(exc)}") from exc
                scan = None
        if scan is None and via == "sql":
            raise AnalysisError("via='sql' needs a SQL store reached directly (sqlite:, postgresql+psycopg2:)")
    if scan is None:
        with _progress(progress, "runs", None) as bar:
            scan = _scan_client(client, experiment_id, bar)
    if not scan.rows:
        raise AnalysisError(f"experiment {experiment!r} has no runs")
    for row in scan.rows:  # as `tags.get("hydra.sweep_dir") or sweep_of_parent.get(parent)`, parents now all known
        row["sweep_dir"] = row["sweep_dir"] or scan.sweep_of_parent.get(row["parent_run_id"] or "")
    return _frame(scan, experiment, experiment_id, uri, sweep, params)


def _frame(scan: _Scan, experiment: str, experiment_id: str, uri: str, sweep: str | None,
           params: Mapping[str, object] | None) -> pd.DataFrame:
    """The `load_runs` frame from the scanned rows (the same code for every way of reading the store)."""
    rows = scan.rows
    raw_params = {row["run_id"]: p for row, p in zip(scan.rows, scan.params, strict=True)}
    run_metrics = {row["run_id"]: m for row, m in zip(scan.rows, scan.metrics, strict=True)}
    if sweep is not None:
        chosen = [row for row in rows if _sweep_matches(str(sweep), row["parent_run_id"], row["sweep_dir"])]
        if not chosen:
            sweeps = sorted({f"{PurePosixPath(row['sweep_dir']).name} ({row['parent_run_id']})" for row in rows
                             if row["parent_run_id"] and row["sweep_dir"]})
            raise AnalysisError(f"no runs of sweep {sweep!r} in experiment {experiment!r}; "
                                f"sweeps: {', '.join(sweeps) or '(none)'}")
        rows = chosen
    frame = pd.DataFrame(rows, columns=list(BASE_COLUMNS))
    if params:
        frame = _params_filter(frame, raw_params, params, experiment)

    ids = list(frame["run_id"])
    param_keys = sorted({k for rid in ids for k in raw_params[rid]})
    metric_keys = sorted({k for rid in ids for k in run_metrics[rid]})
    parsed = functools.lru_cache(maxsize=None)(parse_param)  # values repeat across runs; parse each once
    extra = pd.DataFrame(
        [{**{_free(k): parsed(v) for k, v in raw_params[rid].items()}, **run_metrics[rid]} for rid in ids],
        columns=[_free(k) for k in param_keys] + metric_keys,
        index=frame.index,
    )
    for key in metric_keys:
        extra[key] = pd.to_numeric(extra[key], errors="coerce").astype("float64")
    frame = pd.concat([frame, extra], axis=1)
    frame["start_time"] = pd.to_datetime(frame["start_time"], unit="ms", utc=True)
    frame["duration_s"] = frame["duration_s"].astype("float64")
    frame["diverged_at_step"] = frame["diverged_at_step"].astype("Int64")
    frame = frame.sort_values(["start_time", "run_name"], kind="stable").reset_index(drop=True)
    frame.attrs.update({"experiment": experiment, "experiment_id": experiment_id, "tracking_uri": uri,
                        "params": tuple(_free(k) for k in param_keys), "runs_read": scan.read,
                        "job_runs": len(scan.rows)})
    return frame


def _free(key: str) -> str:
    """A param whose name collides with a base column keeps it under `param.<name>`."""
    return f"param.{key}" if key in BASE_COLUMNS else key


# -- load_history ------------------------------------------------------------------------------------
def _local_dir(artifact_uri: str | None) -> Path | None:
    """The folder of a `file://` (or plain path) artifact URI; None for remote stores."""
    if not artifact_uri:
        return None
    parts = urlsplit(artifact_uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        return Path(artifact_uri)
    return None


def _read_csv(path: str | os.PathLike[str], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """step, metric, value of a history CSV, only `metrics` when given.

    pyarrow's CSV reader (MLflow depends on it) with its own threads, the metric filter applied before any Python
    string is made: ~0.35 ms to parse a 2,000-step run's file against ~3.5 ms for pandas' C parser (and for
    pyarrow without threads), with the same float64 values. pandas reads anything pyarrow rejects, so a bad file
    fails with pandas' message as before.
    """
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError:  # pragma: no cover - pyarrow comes with mlflow
        pa = None
    if pa is not None:
        try:
            table = pcsv.read_csv(
                path, read_options=pcsv.ReadOptions(use_threads=True),  # 0.34 ms, 10x False
                convert_options=pcsv.ConvertOptions(
                    column_types={"step": pa.int64(), "metric": pa.string(), "value": pa.float64()},
                    include_columns=list(HISTORY_COLUMNS[1:]), strings_can_be_null=False))
        except (pa.ArrowInvalid, pa.ArrowKeyError, KeyError):
            table = None
        if table is not None and table["step"].null_count == 0:
            if metrics is not None:
                table = table.filter(pc.is_in(table["metric"], value_set=pa.array(list(metrics), pa.string())))
            return pd.DataFrame({"step": table["step"].to_numpy(),
                                 "metric": np.asarray(table["metric"].to_pylist(), dtype=object),
                                 "value": table["value"].to_numpy(zero_copy_only=False)})
    frame = pd.read_csv(path, dtype={"step": "int64", "metric": str, "value": "float64"})
    return frame[frame["metric"].isin(metrics)].reset_index(drop=True) if metrics is not None else frame


def _history_from_csv(client: MlflowClient, run_id: str, artifact_uri: str | None,
                      metrics: Sequence[str] | None = None) -> pd.DataFrame | None:
    """The run's history CSV, or None when it has none (failed before it was written, other writer)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    local = _local_dir(artifact_uri)
    for name in HISTORY_FILES:
        if local is not None:
            path = local / name
            if path.is_file():
                return _read_csv(path, metrics)
            continue
        with tempfile.TemporaryDirectory(prefix="descentlab-history-") as tmp:
            try:
                if artifact_uri:  # straight from the artifact store: no get_run round trip
                    downloaded = download_artifacts(artifact_uri=f"{artifact_uri.rstrip('/')}/{name}", dst_path=tmp,
                                                    tracking_uri=client.tracking_uri)
                else:
                    downloaded = client.download_artifacts(run_id, name, tmp)
            except (MlflowException, OSError):
                continue
            return _read_csv(downloaded, metrics)
    return None


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """MLflow draws a tqdm bar per downloaded file; hundreds of one-file bars are noise."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _history_from_store(client: MlflowClient, run_id: str, metrics: Sequence[str] | None) -> pd.DataFrame:
    """Fallback through `get_metric_history` (~10 ms per key; holds only what the store kept, see store_every)."""
    keys = list(metrics) if metrics is not None else sorted(client.get_run(run_id).data.metrics)
    points = [(m.step, key, m.value) for key in keys for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(points, columns=["step", "metric", "value"]).astype(
        {"step": "int64", "metric": str, "value": "float64"})


def _one_history(client: MlflowClient, run_id: str, artifact_uri: str | None,
                 metrics: Sequence[str] | None) -> pd.DataFrame:
    """step, metric, value of one run (CSV, else the store), limited to `metrics`, sorted by metric then step
    (stable: logging order within a step)."""
    frame = _history_from_csv(client, run_id, artifact_uri, metrics)
    if frame is None:
        frame = _history_from_store(client, run_id, metrics)
    if len(frame) > 1:
        codes = pd.Categorical(frame["metric"]).codes  # categories are sorted
        order = np.lexsort((frame["step"].to_numpy(), codes))
        if (order != np.arange(len(order))).any():
            frame = frame.take(order)
    return frame.reset_index(drop=True)


def _ordered_map(fn: Any, items: Sequence[Any], workers: int, ahead: int) -> Iterator[Any]:
    """fn over items in order, `workers` threads computing at most `ahead` results not yet consumed."""
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque[Future[Any]] = collections.deque()
        position = 0
        while position < len(items) and len(pending) < ahead:
            pending.append(pool.submit(fn, items[position]))
            position += 1
        while pending:
            done = pending.popleft()
            if position < len(items):
                pending.append(pool.submit(fn, items[position]))
                position += 1
            yield done.result()


def _run_refs(runs: pd.DataFrame | Iterable[str], columns: Sequence[str], tracking_uri: str | None
              ) -> tuple[pd.DataFrame, MlflowClient, list[str], list[str | None]]:
    frame = runs if isinstance(runs, pd.DataFrame) else pd.DataFrame({"run_id": list(runs)})
    if "run_id" not in frame.columns:
        raise AnalysisError("load_history needs a frame with a run_id column (from load_runs)")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise AnalysisError(f"columns not in runs: {', '.join(missing)}")
    uri = tracking_uri or frame.attrs.get("tracking_uri")
    ids = [str(r) for r in frame["run_id"]]
    if "artifact_uri" in frame.columns:
        client: Any = _LazyClient(uri)  # local CSVs need no store: opening MLflow's costs ~2 s
        uris = [u if isinstance(u, str) else None for u in frame["artifact_uri"]]
    else:
        client, _ = _client(uri)
        uris = [client.get_run(rid).info.artifact_uri for rid in ids]
    return frame, client, ids, uris


class _LazyClient:
    """An `MlflowClient` opened on first use (a download, a run without a CSV), once, from any thread."""

    def __init__(self, tracking_uri: str | None) -> None:
        self._uri = tracking_uri
        self._client: MlflowClient | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._client is None:
                self._client, _ = _client(self._uri)
        return getattr(self._client, name)


def iter_histories(
    runs: pd.DataFrame | Iterable[str],
    metrics: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    *,
    max_workers: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[str, pd.DataFrame]]:
    """(run_id, history) per run, in the order of `runs`, one run at a time: what `load_history` concatenates.

    history: columns step, metric, value (sorted by metric, then step), read as `load_history` reads it. Only a
    few runs are held at once (those being read ahead), so a caller that aggregates while it iterates needs
    memory for one run, whatever the number of runs. `max_workers`: threads reading ahead (default: 8 for remote
    artifact stores, where a download waits on the network; 2 for local files, whose parsing releases the GIL).
    `progress`: a tqdm bar on a terminal.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    _, client, ids, uris = _run_refs(runs, (), tracking_uri)
    yield from _iter_histories(client, ids, uris, metrics, max_workers, progress)


def _iter_histories(client: MlflowClient, ids: list[str], uris: list[str | None], metrics: Sequence[str] | None,
                    max_workers: int | None, progress: bool) -> Iterator[tuple[str, pd.DataFrame]]:
    remote = any(_local_dir(u) is None for u in uris)
    workers = max_workers if max_workers is not None else (8 if remote else 2)

    def one(i: int) -> tuple[str, pd.DataFrame]:
        return ids[i], _one_history(client, ids[i], uris[i], metrics)

    with _quiet_downloads() if remote else contextlib.nullcontext(), _progress(progress, "histories", len(ids)) as bar:
        for item in _ordered_map(one, range(len(ids)), workers, ahead=4 * max(workers, 1)):
            bar.update(1)
            yield item


def load_history(
    runs: pd.DataFrame | Iterable[str],
    metrics: Sequence[str] | None = None,
    tracking_uri: str | None = None,
    *,
    columns: Sequence[str] = (),
    max_workers: int = 8,
) -> pd.DataFrame:
    """Every logged point of the runs as a long table `run_id, step, metric, value` (+ `columns`).

    Read from each run's `metrics.csv` artifact (every point, even with tracking.store_every > 1),
    else from the store's metric history (only the stored points). `runs` is a `load_runs` frame
    (its `artifact_uri` column avoids a lookup per run, its attrs give the tracking URI) or run ids.
    `metrics` limits the keys; `columns` names columns of `runs` to merge in (e.g. "optimizer.name",
    "seed") — otherwise merge with `runs` yourself on `run_id`. Rows follow the order of `runs`, then
    metric, then step. Holds every point of every run: for many runs, iterate `iter_histories` instead.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    frame, client, ids, uris = _run_refs(runs, columns, tracking_uri)
    remote = any(_local_dir(u) is None for u in uris)
    parts = [h for _, h in _iter_histories(client, ids, uris, metrics, max_workers if remote else None, False)]
    lengths = np.array([len(p) for p in parts], dtype=np.int64)
    if not lengths.sum():
        history = pd.DataFrame({"run_id": pd.Series(dtype=str), "step": pd.Series(dtype="int64"),
                                "metric": pd.Series(dtype=str), "value": pd.Series(dtype="float64")})
    else:
        history = pd.concat([p for p in parts if len(p)], ignore_index=True)
        history.insert(0, "run_id", np.repeat(np.array(ids, dtype=object), lengths))
    if columns:
        extra = frame[["run_id", *columns]].drop_duplicates("run_id")
        history = history.merge(extra, on="run_id", how="left", validate="many_to_one")
    return history.reset_index(drop=True)
