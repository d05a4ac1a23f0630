"""Mark runs whose process is gone FAILED, so a killed job's run does not stay RUNNING and its config is redone.

A run is stale when (liveness tags from `tracking.liveness`):
- it was started on this host and its process no longer exists (or the pid now belongs to another process), or
- its last heartbeat is older than the timeout (`tracking.stale_after_s`, 300 s by default: ten missed
  beats), whatever the host.
A live process on this host is never touched, however old its heartbeat. Runs without a heartbeat tag
(created before this existed, or by other tools) are left alone. A sweep's parent run (no heartbeat of its
own) is stale when none of its children is RUNNING and none has ended within the timeout: the process that
launched the sweep died before closing it.

Stale runs end FAILED with tags `failure_reason` and `error` (what analysis shows), end time = last sign of life.
Because the skip logic looks for FINISHED runs only, re-running the sweep then redoes exactly those configs.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Any

from descentlab.tracking.liveness import (
    HEARTBEAT_TAG,
    HOST_TAG,
    PID_TAG,
    STARTED_TAG,
    now_ms,
    process_alive,
)
from descentlab.tracking.search import search_all
from descentlab.tracking.sweep_description import SWEEP_DIR_TAG  # set on a sweep's parent by tracking.sweep

__all__ = ["DEFAULT_STALE_AFTER_S", "Stale", "find_stale_runs", "repair_experiment"]

_log = logging.getLogger(__name__)

DEFAULT_STALE_AFTER_S = 300.0
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class Stale:
    run_id: str
    run_name: str
    reason: str
    last_alive_ms: int


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _running(client: Any, experiment_id: str, extra: str = "") -> list[Any]:
    return search_all(client, experiment_id, f"attributes.status = 'RUNNING'{extra}")


def _judge(run: Any, host: str, timeout_s: float, now: int) -> Stale | None:
    tags = run.data.tags
    beat = _int(tags.get(HEARTBEAT_TAG))
    if beat is None:
        return None
    pid, run_host, started = _int(tags.get(PID_TAG)), tags.get(HOST_TAG), _int(tags.get(STARTED_TAG))
    name = run.info.run_name or ""
    if run_host == host and pid is not None:
        if process_alive(pid, started):
            return None
        return Stale(run.info.run_id, name, f"process {pid} on {host} is gone (killed or crashed); "
                     f"last heartbeat {(now - beat) / 1000:.0f} s ago", beat)
    if now - beat > timeout_s * 1000:
        who = f"process {pid} on {run_host}" if pid is not None else "its process"
        return Stale(run.info.run_id, name, f"no heartbeat from {who} for {(now - beat) / 1000:.0f} s "
                     f"(timeout {timeout_s:.0f} s)", beat)
    return None


def find_stale_runs(client: Any, experiment_id: str, *, timeout_s: float | None = None,
                    config_hash: str | None = None) -> list[Stale]:
    """RUNNING runs of the experiment whose process is gone (see the module doc); children before parents.

    `config_hash`: only runs of that configuration (and no parents), for a single run's start.
    """
    timeout_s = DEFAULT_STALE_AFTER_S if timeout_s is None else float(timeout_s)
    host, now = socket.gethostname(), now_ms()
    extra = f" and tags.config_hash = '{config_hash}'" if config_hash else ""
    running = _running(client, experiment_id, extra)
    stale = [s for s in (_judge(r, host, timeout_s, now) for r in running) if s is not None]
    if config_hash:
        return stale
    dead = {s.run_id for s in stale}
    alive_children: dict[str, int] = {}
    for run in running:
        parent = run.data.tags.get(PARENT_TAG)
        if parent and run.info.run_id not in dead:
            alive_children[parent] = alive_children.get(parent, 0) + 1
    for run in running:
        tags = run.data.tags
        if SWEEP_DIR_TAG not in tags or PARENT_TAG in tags or HEARTBEAT_TAG in tags:
            continue
        run_id = run.info.run_id
        if alive_children.get(run_id):
            continue
        # The child that ended last (MLflow sorts runs without an end last) and the stale children's heartbeats:
        # one query, whatever the sweep's size (a page of 1,000 children missed the rest of a larger sweep).
        ended = client.search_runs([str(experiment_id)], filter_string=f"tags.{PARENT_TAG} = '{run_id}'",
                                   max_results=1, order_by=["attributes.end_time DESC"])
        own = {r.info.run_id for r in running if r.data.tags.get(PARENT_TAG) == run_id}
        last = max([run.info.start_time or 0] + [c.info.end_time or 0 for c in ended]
                   + [s.last_alive_ms for s in stale if s.run_id in own])
        if now - last > timeout_s * 1000:
            stale.append(Stale(run_id, run.info.run_name or "", f"sweep parent left open: no job of the sweep "
                               f"alive for {(now - last) / 1000:.0f} s (timeout {timeout_s:.0f} s)", last))
    return stale


def repair_experiment(client: Any, experiment_id: str, *, timeout_s: float | None = None,
                      config_hash: str | None = None, dry_run: bool = False) -> list[Stale]:
    """Mark the stale runs FAILED (tags `failure_reason`, `error`); returns those it marked (`dry_run`: all found).

    Jobs that start together may find the same stale run: the one that finds it still RUNNING marks it.
    """
    stale = find_stale_runs(client, experiment_id, timeout_s=timeout_s, config_hash=config_hash)
    if dry_run:
        return stale
    marked = []
    for s in stale:
        try:
            if client.get_run(s.run_id).info.status != "RUNNING":  # another job repaired it meanwhile
                continue
            client.set_tag(s.run_id, "failure_reason", s.reason)
            client.set_tag(s.run_id, "error", f"WorkerLost: {s.reason}")
            client.set_terminated(s.run_id, "FAILED", end_time=s.last_alive_ms)
        except Exception as exc:  # one run that cannot be updated should not stop the others
            _log.warning("could not mark run %s FAILED: %s", s.run_id, exc)
            continue
        marked.append(s)
        _log.info("run %s (%s) marked FAILED: %s", s.run_id, s.run_name, s.reason)
    return marked
