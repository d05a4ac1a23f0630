"""MLflow tracking for descentlab: store set-up, runs with batched logging, sweep parents, environment tags.

Where to look: `settings` (every knob, typed), `session` (what a job uses: store, repair, skip, sweep parent, new
run), `store` (URI, probes, SQLite journal and schema template, experiments), `run` (a run's lifecycle), `buffer`
(points, flush policy, metrics.csv), `sink` (MLflow's client or the bulk SQL path, `bulk`), `unsent`, `retry`,
`liveness`/`repair` (killed jobs), `sweep` (parent runs). MLflow's private internals: `descentlab.compat`.

The only package (with analysis/) that imports mlflow. Names are loaded lazily: `import mlflow`
takes ~2 s, so `import descentlab.tracking` (and the mlflow-free `store` URI helpers and `tags`)
stay cheap until a run or a client is actually needed. `callbacks` (Hydra) is not re-exported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ALLOWED_SCHEMES": "store",
    "TrackingUnavailableError": "store",
    "artifact_root_for": "store",
    "get_or_create_experiment": "store",
    "open_store": "store",
    "redact": "store",
    "resolve_tracking_uri": "store",
    "SqliteSettings": "settings",
    "TrackingSettings": "settings",
    "TrackingSession": "session",
    "HISTORY_CSV": "buffer",
    "RunTracker": "run",
    "find_finished_run": "run",
    "param_str": "run",
    "finish_parent": "sweep",
    "get_or_create_parent": "sweep",
    "read_sweep_state": "sweep",
    "environment_tags": "tags",
    "git_state": "tags",
}

__all__ = [
    "ALLOWED_SCHEMES",
    "HISTORY_CSV",
    "RunTracker",
    "SqliteSettings",
    "TrackingSession",
    "TrackingSettings",
    "TrackingUnavailableError",
    "artifact_root_for",
    "environment_tags",
    "find_finished_run",
    "finish_parent",
    "get_or_create_experiment",
    "get_or_create_parent",
    "git_state",
    "open_store",
    "param_str",
    "read_sweep_state",
    "redact",
    "resolve_tracking_uri",
]

if TYPE_CHECKING:
    from .buffer import HISTORY_CSV
    from .run import RunTracker, find_finished_run, param_str
    from .session import TrackingSession
    from .settings import SqliteSettings, TrackingSettings
    from .store import (
        ALLOWED_SCHEMES,
        TrackingUnavailableError,
        artifact_root_for,
        get_or_create_experiment,
        open_store,
        redact,
        resolve_tracking_uri,
    )
    from .sweep import finish_parent, get_or_create_parent, read_sweep_state
    from .tags import environment_tags, git_state


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
