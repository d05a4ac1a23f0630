"""One MLflow run's lifecycle: creation with liveness tags, a heartbeat, params/tags/artifacts, a reliable ending.

The pieces it is made of: `buffer.MetricBuffer` keeps every point (the history, `metrics.csv`) and decides when to
send; `sink` writes them (MLflow's client or the bulk SQL path), chosen once per run; `unsent` saves what the store
could not take if it went away for good; `liveness` beats. `fit` hands the losses over in blocks (`log_series`),
so nothing here runs once per training step.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from descentlab.tracking import liveness, unsent
from descentlab.tracking.buffer import HISTORY_CSV, MetricBuffer
from descentlab.tracking.retry import RetryingClient, RetryPolicy, is_transient
from descentlab.tracking.sink import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, choose_sink

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HISTORY_CSV",
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_PER_BATCH",
    "RunTracker",
    "find_finished_run",
    "param_str",
]

_log = logging.getLogger(__name__)

MAX_TAGS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000  # MLflow rejects longer param values
MAX_ERROR_LENGTH = 4000  # tag values may hold 8,000 characters; keep the error tag readable
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


def _plain(value: object) -> object:
    """NumPy scalars to Python, containers recursively, so lists print as "[100, 100]" not "[np.int64(100), ...]"."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        item = value.item()  # type: ignore[attr-defined]
        return float(str(value)) if isinstance(item, float) else item  # float32(0.1) -> 0.1, not 0.10000000149...
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # arrays
        return value.tolist()  # type: ignore[attr-defined]
    return value


def param_str(value: object) -> str:
    """The string MLflow stores for a param value: str() of its plain-Python form."""
    text = value if isinstance(value, str) else str(_plain(value))
    if len(text) > MAX_PARAM_LENGTH:
        _log.warning("param value of %d characters truncated to %d", len(text), MAX_PARAM_LENGTH)
        text = text[: MAX_PARAM_LENGTH - 3] + "..."
    return text


def _default_tags() -> dict[str, str]:
    """What MLflow's fluent API would add and the UI shows: user and source."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": os.path.basename(sys.argv[0] or "python")}
    with contextlib.suppress(Exception):  # no passwd entry in some containers
        tags["mlflow.user"] = getpass.getuser()
    return tags


class RunTracker:
    """Context manager around one run; the run's status always ends terminal, the exception still propagates.

    `flush_every`, `flush_seconds`, `store_every`: the metric buffer's policy (`buffer.MetricBuffer`).
    `spill_dir`: where unsent metrics go if the store goes away for good (`tracking.unsent`).
    `bulk_metrics=False`: always write with MLflow's client, never through `tracking.bulk` (`sink`).
    `heartbeat_s`: seconds between heartbeats (`tracking.liveness`), so `tracking.repair` tells a killed run
    from a live one. `retry_s`: how long every client call rides out transient errors (`tracking.retry`).
    `write_guard`: a context manager factory wrapped around each write of points, params and the run's end, so
    that a signal's exception lands between writes, never inside a transaction: one interrupted inside a SQLite
    write left its connection holding the database's lock, and the run's KILLED record then failed with
    "database is locked". The job passes `interrupts.deferred`; tracking itself knows no signals.
    Usually built by `TrackingSession.new_run`, which takes these from the settings.
    """

    keeps_artifacts = True  # NullTracker: False, so callers can skip building files nobody keeps

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        flush_every: int = 10_000,
        flush_seconds: float = 10.0,
        store_every: int = 1,
        spill_dir: str | os.PathLike[str] | None = None,
        bulk_metrics: bool = True,
        heartbeat_s: float = liveness.DEFAULT_HEARTBEAT_S,
        retry_s: float = 120.0,
        write_guard: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.buffer = MetricBuffer(flush_every, flush_seconds, store_every)
        if not heartbeat_s > 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s}")
        if not retry_s >= 0:
            raise ValueError(f"retry_s must be >= 0, got {retry_s}")
        self.client = client if isinstance(client, RetryingClient) else RetryingClient(client, RetryPolicy(retry_s))
        self.sink = choose_sink(self.client, bulk_metrics)
        self.write_guard = write_guard
        self.heartbeat_s = float(heartbeat_s)
        self.spill_dir = spill_dir
        self._heartbeat: liveness.Heartbeat | None = None
        self.experiment_id = str(experiment_id)
        self.run_name = run_name
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None
        self.artifact_uri: str | None = None
        self._artifact_repo: Any = None  # built from artifact_uri at the first artifact
        self.status: str | None = None  # terminal status once finished
        self._finished = False

    @property
    def flush_every(self) -> int:
        return self.buffer.flush_every

    @property
    def flush_seconds(self) -> float:
        return self.buffer.flush_seconds

    @property
    def store_every(self) -> int:
        return self.buffer.store_every

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> RunTracker:
        """Create the run (RUNNING) and start its heartbeat. `with RunTracker(...)` calls this."""
        if self.run_id is not None:
            raise RuntimeError(f"run {self.run_id} already started")
        tags = {**_default_tags(), **liveness.liveness_tags(), **self.tags}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags=tags)
        self.run_id = run.info.run_id
        self.artifact_uri = run.info.artifact_uri
        self.buffer.flushed()
        self._heartbeat = liveness.Heartbeat(self.client.raw, self.run_id, self.heartbeat_s).start()
        return self

    def __enter__(self) -> RunTracker:
        """Start the run unless `start()` already did (a caller that must create it before the `with`)."""
        return self if self.run_id is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._finished or self.run_id is None:
            return
        if exc_type is None:
            self.finish()  # errors here (e.g. the final flush) must surface
            return
        if issubclass(exc_type, KeyboardInterrupt):
            status, error = "KILLED", None
        else:
            status, error = "FAILED", f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__
        try:
            self.finish(status, error)
        except unsent.TrackingLostError as lost:  # the store is gone: say where the metrics went
            if issubclass(exc_type, Exception):
                raise lost  # its message quotes the store's error; its context keeps `exc`
            _log.error("%s", lost)
        except Exception:  # never mask the run's own exception
            _log.warning("could not close run %s cleanly", self.run_id, exc_info=True)

    @property
    def finished(self) -> bool:
        return self._finished

    def finish(self, status: str = "FINISHED", error: str | None = None) -> None:
        """Flush metrics, tag `error`, set the terminal status. Idempotent.

        If the flush fails the run is still terminated (FAILED, or KILLED on Ctrl-C) and the flush
        error is raised afterwards.
        """
        if self._finished:
            return
        run_id = self._require_started()
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {TERMINAL_STATUSES}, got {status!r}")
        problems: list[BaseException] = []
        requested = status  # what the run ends as once unsent metrics are imported
        self.buffer.close()
        try:
            self.flush()
        except BaseException as exc:
            problems.append(exc)
            if isinstance(exc, KeyboardInterrupt):
                status = "KILLED"
            elif status == "FINISHED":
                status = "FAILED"
                error = error or f"metric flush failed: {type(exc).__name__}: {exc}"
        if error:
            text = error if len(error) <= MAX_ERROR_LENGTH else error[: MAX_ERROR_LENGTH - 3] + "..."
            try:
                self.client.set_tag(run_id, "error", text)
            except Exception as exc:
                problems.append(exc)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        try:
            with self.write_guard():  # a signal held here is raised after the run is known to be ended
                self.sink.end(run_id, status, int(time.time() * 1000))
                self._finished = True
                self.status = status
        except Exception as exc:
            problems.append(exc)
        if problems:
            self._raise_lost(problems, requested)
            raise problems[0]

    def _raise_lost(self, problems: list[BaseException], status: str) -> None:
        """If the store is away (a transient error outlived the retries), save what it lacks and say where."""
        lost = next((p for p in problems if is_transient(p)), None)
        if lost is None:
            return
        # Not chained (`from lost`): the CLI would append the cause to the one-line message, which quotes it.
        raise unsent.save_unsent(
            self.spill_dir, run_id=str(self.run_id), experiment_id=self.experiment_id,
            tracking_uri=str(self.client.tracking_uri), run_name=self.run_name, status=status, error=lost,
            unsent=self.buffer.pending, history=self.buffer.points,
        )

    def _require_started(self) -> str:
        if self.run_id is None:
            raise RuntimeError("run not started: use `with RunTracker(...)` or call start()")
        return self.run_id

    def _require_open(self) -> str:
        run_id = self._require_started()
        if self._finished:
            raise RuntimeError(f"run {run_id} is already finished ({self.status})")
        return run_id

    # -- params and tags ---------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, object]) -> None:
        """All params at once (`sink`: one transaction on a SQL store, else a `log_batch` per 100 keys)."""
        run_id = self._require_open()
        with self.write_guard():
            self.sink.write_params(run_id, [Param(str(k), param_str(v)) for k, v in params.items()])

    def set_tag(self, key: str, value: object) -> None:
        self.client.set_tag(self._require_started(), key, str(value))

    def set_tags(self, tags: Mapping[str, object]) -> None:
        run_id = self._require_started()
        entities = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for i in range(0, len(entities), MAX_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=entities[i : i + MAX_TAGS_PER_BATCH], synchronous=True)

    # -- metrics -----------------------------------------------------------------------------------
    def log_metric(self, key: str, value: float, step: int) -> None:
        """Buffer one point; sent when `flush_every` points are pending, after `flush_seconds`, and at finish."""
        self._require_open()
        self._add([(int(step), key, float(value), int(time.time() * 1000))])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer several points of one step (`training.fit`'s callback has the arguments swapped)."""
        self._require_open()
        self._add(self.buffer.step_points(dict(metrics), step))

    def log_series(self, key: str, first_step: int, values: Sequence[float]) -> None:
        """Buffer `values` as steps first_step, first_step + 1, ... of one metric (`fit`'s loss blocks)."""
        self._require_open()
        self._add(self.buffer.series(key, first_step, values))

    def _add(self, points: list[tuple[int, str, float, int]]) -> None:
        if self.buffer.add(points):
            self.flush()

    def flush(self) -> None:
        """Send the pending points through the run's sink, in chunks; a chunk that fails stays pending."""
        run_id = self._require_started()
        buffer, sink = self.buffer, self.sink
        while buffer.pending:
            with self.write_guard():  # the chunk and its bookkeeping, or neither
                buffer.sent(sink.write_metrics(run_id, buffer.pending[: sink.chunk]))
        buffer.flushed()

    @property
    def n_pending(self) -> int:
        """Points logged for the store but not yet sent."""
        return len(self.buffer.pending)

    def history(self) -> list[tuple[int, str, float]]:
        """Every logged point as (step, metric, value), in logging order."""
        return self.buffer.history()

    def history_frame(self) -> pd.DataFrame:
        """The metric history as a DataFrame with columns step, metric, value."""
        return self.buffer.history_frame()

    def write_history_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the full history as CSV (step,metric,value; values round-trip exactly)."""
        return self.buffer.write_csv(path)

    def log_history(self, artifact_path: str | None = None, filename: str = HISTORY_CSV) -> None:
        """Write the history CSV and store it as an artifact (what analysis reads)."""
        self._require_started()
        with tempfile.TemporaryDirectory(prefix="descentlab-history-") as tmp:
            self.log_artifact(self.write_history_csv(Path(tmp) / filename), artifact_path)

    # -- artifacts ---------------------------------------------------------------------------------
    def _repo(self) -> Any:
        """The run's artifact repository, built once from the URI `create_run` returned.

        `MlflowClient.log_artifact` finds the same URI with a `get_run` (params, tags, inputs: ~6 ms on
        SQLite) for each run. None if this MLflow lacks the registry: the client's calls are used then.
        """
        if self._artifact_repo is None and self.artifact_uri:
            from descentlab import compat

            self._artifact_repo = compat.mlflow_artifact_repository(self.artifact_uri, str(self.client.tracking_uri))
        return self._artifact_repo

    def log_artifact(self, local_path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """A file (or a folder, as `artifact_path/<its name>`, like `MlflowClient.log_artifact`)."""
        run_id, local = self._require_started(), os.fspath(local_path)
        repo = self._repo()
        if repo is None:
            self.client.log_artifact(run_id, local, artifact_path)
        elif os.path.isdir(local):
            name = os.path.basename(os.path.normpath(local))
            self.log_artifacts(local, f"{artifact_path}/{name}" if artifact_path else name)
        else:
            self.client.retrying(lambda: repo.log_artifact(local, artifact_path), "MLflow log_artifact")

    def log_artifacts(self, local_dir: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        run_id, local = self._require_started(), os.fspath(local_dir)
        repo = self._repo()
        if repo is None:
            self.client.log_artifacts(run_id, local, artifact_path)
        else:
            self.client.retrying(lambda: repo.log_artifacts(local, artifact_path), "MLflow log_artifacts")

    def log_dict(self, dictionary: dict[str, Any], artifact_file: str) -> None:
        """JSON or YAML by the file's extension."""
        self.client.log_dict(self._require_started(), dictionary, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        """`text` as the artifact `artifact_file` (a path inside the run's artifacts, e.g. "notes/a.txt")."""
        self._require_started()
        folder, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory(prefix="descentlab-text-") as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.log_artifact(path, folder or None)


def find_finished_run(client: MlflowClient, experiment_id: str, config_hash: str) -> str | None:
    """The newest FINISHED run in the experiment tagged `config_hash`, or None (for skipping done work)."""
    if not config_hash or "'" in config_hash or "\\" in config_hash:
        raise ValueError(f"config_hash must be a non-empty string without quotes or backslashes, got {config_hash!r}")
    runs = client.search_runs(
        [str(experiment_id)],
        filter_string=f"tags.config_hash = '{config_hash}' and attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None
