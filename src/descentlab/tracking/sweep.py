"""One parent run per multirun sweep, shared by jobs in any process.

The jobs of a sweep may run in other processes (joblib/loky, submitit), so the parent's id cannot
live in memory: it is kept in `<sweep_dir>/.mlflow_sweep.json`, read and written under an exclusive
`flock` on `<sweep_dir>/.mlflow_sweep.lock`. The first job that actually runs creates the parent,
so a re-run whose jobs are all skipped leaves no empty parent behind.

What the parent says about the sweep (its name, the whole command line as `hydra.overrides`, the swept keys and
their values as params) comes from the launching process, which alone sees the sweep's arguments: it writes
them to `<sweep_dir>/.sweep.json` before any job starts (`tracking.sweep_description`), and sets them again when
it closes the parent (`finish_parent`), for jobs that could not read the folder. The closing summary counts the
children by outcome, `rejected` (bad input, refused before training) among the failed, and lists those.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from descentlab.tracking.search import search_all
from descentlab.tracking.sweep_description import (
    SWEEP_DIR_TAG,
    parent_identity,
    read_description,
    sweep_dir_key,
    write_json,
)

__all__ = [
    "LOCK_FILE",
    "REJECTED_TAG",
    "STATE_FILE",
    "adopt_parent",
    "finish_parent",
    "get_or_create_parent",
    "read_sweep_state",
]

_log = logging.getLogger(__name__)

STATE_FILE = ".mlflow_sweep.json"
LOCK_FILE = ".mlflow_sweep.lock"
REJECTED_TAG = "rejected"  # on a job's run refused for bad input: "true"


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


def _usable_parent(client: MlflowClient, run_id: str, experiment_id: str) -> Run | None:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.lifecycle_stage != "active" or run.info.experiment_id != str(experiment_id):
        return None
    return run


def _find_by_key(client: MlflowClient, experiment_id: str, sweep_key: str) -> Run | None:
    """The oldest active parent run tagged with this sweep's key, or None (a quote in the key cannot be searched)."""
    if "'" in sweep_key:
        return None
    found = client.search_runs([str(experiment_id)], filter_string=f"tags.`{SWEEP_DIR_TAG}` = '{sweep_key}'",
                               order_by=["attributes.start_time ASC"], max_results=10)
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    return parents[0] if parents else None


def get_or_create_parent(client: MlflowClient, experiment_id: str, sweep_dir: str | Path,
                         sweep_key: str | None = None) -> str:
    """The sweep's parent run id, creating the run (left RUNNING) if this is the sweep's first job.

    `sweep_dir` is the sweep folder as this process reaches it; `sweep_key` the same folder as the launching
    process names it (`sweep_dir_key`; default: `sweep_dir` against this process's working directory), which the
    parent carries as its tag `sweep.dir`. The parent is found in the folder's state file, else in the store by
    that tag: a job on a node that does not share the sweep folder (Ray, SLURM without shared storage) joins the
    parent the launching process created (`tracking.sweep_parent`) instead of starting one of its own.
    The new run is named and tagged from the sweep's description (`parent_identity`), its params are the
    swept keys. A parent that was already terminated (a re-run of the sweep) is set back to RUNNING so that
    `finish_parent` summarises the new children too. A recorded parent that no longer exists, is
    deleted, or belongs to another experiment or store is replaced, with a warning.
    """
    sweep_key = sweep_key or sweep_dir_key(sweep_dir)
    sweep_dir = Path(sweep_dir).absolute()
    with _locked(sweep_dir):
        state = read_sweep_state(sweep_dir)
        run = _usable_parent(client, state["parent_run_id"], experiment_id) if state is not None else None
        if state is not None and run is None:
            _log.warning(
                "sweep parent %s recorded in %s is not usable here (experiment %s, %s); creating a new one",
                state["parent_run_id"],
                sweep_dir / STATE_FILE,
                experiment_id,
                client.tracking_uri,
            )
        if state is None:
            run = _find_by_key(client, experiment_id, sweep_key)
        if run is not None:
            if run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
        else:
            run_name, tags, params = parent_identity(sweep_key, read_description(sweep_dir))
            run = client.create_run(str(experiment_id), run_name=run_name, tags=tags)
            if params:
                client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()],
                                 synchronous=True)
        if state is None or state["parent_run_id"] != run.info.run_id:
            _record_parent(client, experiment_id, sweep_dir, run.info.run_id)
        return run.info.run_id


def adopt_parent(client: MlflowClient, experiment_id: str, sweep_dir: str | Path, parent_run_id: str) -> bool:
    """Make an existing run the parent of the sweep in `sweep_dir`: its jobs join it (`get_or_create_parent` sets
    it back to RUNNING), so a search relaunched into a new folder keeps one parent (the Optuna sweeper's study).

    False, changing nothing, when that run is gone, deleted or in another experiment. A different parent already
    recorded for the folder that no job joined (the eager one a launching process makes for a tracking server) is
    deleted, as `finish_parent(drop_empty=True)` would have.
    """
    if _usable_parent(client, parent_run_id, experiment_id) is None:
        return False
    sweep_dir = Path(sweep_dir).absolute()
    with _locked(sweep_dir):
        state = read_sweep_state(sweep_dir)
        if state is not None and state["parent_run_id"] == parent_run_id:
            return True
        if state is not None and not _children(client, str(experiment_id), state["parent_run_id"]):
            client.delete_run(state["parent_run_id"])
        _record_parent(client, experiment_id, sweep_dir, parent_run_id)
    return True


def _record_parent(client: MlflowClient, experiment_id: str, sweep_dir: Path, parent_run_id: str) -> None:
    """The sweep folder's state file: which run is the parent, in which experiment and store."""
    write_json(sweep_dir, {"parent_run_id": parent_run_id, "experiment_id": str(experiment_id),
                           "tracking_uri": str(client.tracking_uri)}, STATE_FILE)


def _children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[Run]:
    return search_all(client, experiment_id, f"tags.mlflow.parentRunId = '{parent_run_id}'")


def _count(children: list[Run]) -> tuple[dict[str, int], list[Run]]:
    """Count outcomes per configuration: a config retried after a failure counts once, by its best attempt.

    Runs tagged with the same `config_hash` are one configuration (FINISHED if any attempt finished,
    else the newest attempt's status); untagged runs count individually. `rejected` counts the failed
    configurations whose attempt was refused for bad input; those runs are returned too.
    """
    by_config: dict[str, list[Run]] = {}
    for i, run in enumerate(children):
        by_config.setdefault(run.data.tags.get("config_hash") or f"#untagged-{i}", []).append(run)
    counts = {"finished": 0, "failed": 0, "rejected": 0, "killed": 0, "running": 0}
    rejected: list[Run] = []
    for attempts in by_config.values():
        if any(r.info.status == "FINISHED" for r in attempts):
            counts["finished"] += 1
            continue
        latest = max(attempts, key=lambda r: r.info.start_time or 0)
        key = {"FAILED": "failed", "KILLED": "killed"}.get(latest.info.status, "running")
        counts[key] += 1
        if key == "failed" and latest.data.tags.get(REJECTED_TAG) == "true":
            counts["rejected"] += 1
            rejected.append(latest)
    return counts, sorted(rejected, key=lambda r: int(r.data.tags.get("hydra.job_num", "0") or 0))


def finish_parent(client: MlflowClient, sweep_dir: str | Path, status: str | None = None,
                  description: Mapping[str, Any] | None = None, drop_empty: bool = False) -> dict[str, Any] | None:
    """Summarise the children on the parent and terminate it: FINISHED only if every configuration finished.

    `status` (KILLED for an interrupted sweep) replaces the status the children's outcomes would give.
    `description` (the launching process's, see `describe`) names and tags a parent whose jobs could not read it.
    `drop_empty` (a parent the launching process created before its jobs): a parent no job joined (every job
    skipped as already FINISHED) is deleted with its state file, as if it had never been made; None is returned.
    Returns {"parent_run_id", "finished", "failed", "rejected", "killed", "running", "status", "n_jobs",
    "rejections": [(job overrides, reason), ...]}, or None when no job created a parent. Idempotent: an
    already terminated parent is counted but not changed.
    """
    sweep_dir = Path(sweep_dir).absolute()
    with _locked(sweep_dir):
        state = read_sweep_state(sweep_dir)
        if state is None:
            return None
        parent_id = state["parent_run_id"]
        parent = client.get_run(parent_id)
        children = _children(client, parent.info.experiment_id, parent_id)
        if drop_empty and not children and status is None and parent.info.status == "RUNNING":
            client.delete_run(parent_id)
            (sweep_dir / STATE_FILE).unlink(missing_ok=True)
            return None
        counts, rejected = _count(children)
        forced, status = status, parent.info.status
        if status == "RUNNING" and parent.info.lifecycle_stage == "active":  # a deleted run cannot be updated
            n_configs = counts["finished"] + counts["failed"] + counts["killed"] + counts["running"]
            status = forced or ("FINISHED" if n_configs and counts["finished"] == n_configs else "FAILED")
            now = int(time.time() * 1000)
            tags = [RunTag(f"sweep.n_{k}", str(v)) for k, v in counts.items()]
            params: list[Param] = []
            if description and "hydra.overrides" not in parent.data.tags:
                name, more_tags, more_params = parent_identity(sweep_dir, description)
                client.update_run(parent_id, name=name)
                tags += [RunTag(k, v) for k, v in more_tags.items()]
                params = [Param(k, v) for k, v in more_params.items() if k not in parent.data.params]
            client.log_batch(
                parent_id,
                metrics=[Metric(f"sweep.n_{k}", float(v), now, 0) for k, v in counts.items()],
                params=params,
                tags=tags,
                synchronous=True,
            )
            client.set_terminated(parent_id, status)
        n_jobs = (description or {}).get("n_jobs") or parent.data.tags.get("sweep.n_jobs")
        rejections = [(r.data.tags.get("hydra.overrides", r.info.run_name or r.info.run_id),
                       r.data.tags.get("error", "")) for r in rejected]
        return {"parent_run_id": parent_id, **counts, "status": status, "rejections": rejections,
                "n_jobs": int(n_jobs) if n_jobs else None}
