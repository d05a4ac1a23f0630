"""Hydra callback: prepare the MLflow store before a sweep's jobs start, close the sweep's parent after.

Parallel jobs race when they create the SQLite schema or the experiment (and `set_experiment` can drop
runs into "Default"), so the launching process creates both first; jobs then only look them up. The
parent run is created lazily by the first job that really runs (see `tracking.sweep`), so a re-run
whose jobs are all skipped leaves no empty parent behind.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# The sweep this process launched and has not closed yet: (tracking URI, sweep dir).
_open_sweep: tuple[str, Path] | None = None


def store_for(cfg: DictConfig) -> tuple[str, Any, str]:
    """(tracking URI, client, experiment id) for a composed config; creates store and experiment if needed."""
    from descentlab.tracking.store import (
        artifact_root_for,
        get_or_create_experiment,
        open_store,
        resolve_tracking_uri,
    )

    uri = resolve_tracking_uri(cfg.tracking.uri, cfg.tracking.store_dir)
    client = open_store(uri)
    experiment_id = get_or_create_experiment(client, cfg.tracking.experiment, artifact_root_for(uri))
    return uri, client, experiment_id


def repair_stale(client: Any, experiment_id: str, config_hash: str | None = None) -> None:
    """Mark runs of killed jobs FAILED (`tracking.repair`) so that this launch redoes their configs; say so."""
    from descentlab.tracking.repair import repair_experiment

    for stale in repair_experiment(client, experiment_id, config_hash=config_hash):
        print(f"repaired: run {stale.run_id} ({stale.run_name}) marked FAILED: {stale.reason}", file=sys.stderr)


class SweepCallback(Callback):
    """Creates the store and experiment in the launching process, repairs runs of killed jobs; ends the parent."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _open_sweep
        if not config.tracking.enabled:
            return
        uri, client, experiment_id = store_for(config)
        repair_stale(client, experiment_id)
        _open_sweep = (uri, Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = close_open_sweep()
        if summary:
            print(
                f"sweep: {summary['finished']} finished, {summary['failed']} failed, {summary['killed']} killed "
                f"(parent run {summary['parent_run_id']})",
                file=sys.stderr,
            )


def close_open_sweep() -> dict[str, Any] | None:
    """End the parent run of the sweep this process launched, if it has one still open.

    Called after the sweep, and by `cli.guarded_main` when the process fails or is interrupted mid-sweep
    (Hydra skips `on_multirun_end` then). The parent's status follows its children's.
    """
    global _open_sweep
    if _open_sweep is None:
        return None
    uri, sweep_dir = _open_sweep
    _open_sweep = None
    from descentlab.tracking.store import open_store
    from descentlab.tracking.sweep import finish_parent

    return finish_parent(open_store(uri), sweep_dir)
