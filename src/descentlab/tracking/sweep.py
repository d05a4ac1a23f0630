"""One parent run per multirun sweep, shared by jobs in any process.

The jobs of a sweep may run in other processes (joblib/loky, submitit), so the parent's id cannot
live in memory: it is kept in `<sweep_dir>/.mlflow_sweep.json`, read and written under an exclusive
`flock` on `<sweep_dir>/.mlflow_sweep.lock`. The first job that actually runs creates the parent,
so a re-run whose jobs are all skipped leaves no empty parent behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

__all__ = ["LOCK_FILE", "STATE_FILE", "finish_parent", "get_or_create_parent", "read_sweep_state"]

_log = logging.getLogger(__name__)

STATE_FILE = ".mlflow_sweep.json"
LOCK_FILE = ".mlflow_sweep.lock"


@contextlib.contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    """Exclusive lock across processes (released when the file closes, even if the process dies)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / LOCK_FILE, "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def read_sweep_state(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The sweep's JSON ({"parent_run_id", "experiment_id", "tracking_uri"}), or None if no parent exists."""
    path = Path(sweep_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(state, dict) or not state.get("parent_run_id"):
        raise ValueError(f"{path} does not hold a parent_run_id: {state!r}")
    return state


def _write_state(sweep_dir: Path, state: Mapping[str, Any]) -> None:
    """Write-then-rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=sweep_dir, prefix=STATE_FILE, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(state), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, sweep_dir / STATE_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _usable_parent(client: MlflowClient, run_id: str, experiment_id: str) -> Run | None:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.lifecycle_stage != "active" or run.info.experiment_id != str(experiment_id):
        return None
    return run


def get_or_create_parent(
    client: MlflowClient, experiment_id: str, sweep_dir: str | Path, run_name: str, tags: Mapping[str, str]
) -> str:
    """The sweep's parent run id, creating the run (left RUNNING) if this is the sweep's first job.

    A parent that was already terminated (a re-run of the sweep) is set back to RUNNING so that
    `finish_parent` summarises the new children too. A recorded parent that no longer exists, is
    deleted, or belongs to another experiment or store is replaced, with a warning.
    """
    sweep_dir = Path(sweep_dir).absolute()
    with _locked(sweep_dir):
        state = read_sweep_state(sweep_dir)
        if state is not None:
            run = _usable_parent(client, state["parent_run_id"], experiment_id)
            if run is not None:
                if run.info.status != "RUNNING":
                    client.update_run(run.info.run_id, status="RUNNING")
                return run.info.run_id
            _log.warning(
                "sweep parent %s recorded in %s is not usable here (experiment %s, %s); creating a new one",
                state["parent_run_id"],
                sweep_dir / STATE_FILE,
                experiment_id,
                client.tracking_uri,
            )
        all_tags = {"sweep.dir": str(sweep_dir), **{str(k): str(v) for k, v in tags.items()}}
        run = client.create_run(str(experiment_id), run_name=run_name, tags=all_tags)
        _write_state(
            sweep_dir,
            {
                "parent_run_id": run.info.run_id,
                "experiment_id": str(experiment_id),
                "tracking_uri": str(client.tracking_uri),
            },
        )
        return run.info.run_id


def _children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _count(children: list[Run]) -> dict[str, int]:
    """Count outcomes per configuration: a config retried after a failure counts once, by its best attempt.

    Runs tagged with the same `config_hash` are one configuration (FINISHED if any attempt finished,
    else the newest attempt's status); untagged runs count individually.
    """
    by_config: dict[str, list[Run]] = {}
    for i, run in enumerate(children):
        by_config.setdefault(run.data.tags.get("config_hash") or f"#untagged-{i}", []).append(run)
    counts = {"finished": 0, "failed": 0, "killed": 0, "running": 0}
    for attempts in by_config.values():
        statuses = {r.info.status for r in attempts}
        if "FINISHED" in statuses:
            status = "FINISHED"
        else:
            status = max(attempts, key=lambda r: r.info.start_time or 0).info.status
        key = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(status, "running")
        counts[key] += 1
    return counts


def finish_parent(client: MlflowClient, sweep_dir: str | Path, status: str | None = None) -> dict[str, Any] | None:
    """Summarise the children on the parent and terminate it: FINISHED only if every configuration finished.

    `status` (KILLED for an interrupted sweep) replaces the status the children's outcomes would give.

    Returns {"parent_run_id", "finished", "failed", "killed", "running", "status"}, or None when no job
    created a parent. Idempotent: an already terminated parent is counted but not changed.
    """
    sweep_dir = Path(sweep_dir).absolute()
    with _locked(sweep_dir):
        state = read_sweep_state(sweep_dir)
        if state is None:
            return None
        parent_id = state["parent_run_id"]
        parent = client.get_run(parent_id)
        counts = _count(_children(client, parent.info.experiment_id, parent_id))
        forced, status = status, parent.info.status
        if status == "RUNNING" and parent.info.lifecycle_stage == "active":  # a deleted run cannot be updated
            n_configs = sum(counts.values())
            status = forced or ("FINISHED" if n_configs and counts["finished"] == n_configs else "FAILED")
            now = int(time.time() * 1000)
            client.log_batch(
                parent_id,
                metrics=[Metric(f"sweep.n_{k}", float(v), now, 0) for k, v in counts.items()],
                tags=[RunTag(f"sweep.n_{k}", str(v)) for k, v in counts.items()],
                synchronous=True,
            )
            client.set_terminated(parent_id, status)
        return {"parent_run_id": parent_id, **counts, "status": status}
