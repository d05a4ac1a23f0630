"""Hydra callback: prepare the MLflow store before a sweep's jobs start, close the sweep's parent after.

Parallel jobs race when they create the SQLite schema, so the launching process creates the store first
(a copy of a cached empty-schema template: no mlflow import, see `store.prepare_store`). Experiments are
created race-safely by whichever job comes first. The parent run is created lazily by the first job that
really runs (see `tracking.sweep`), so a re-run whose jobs are all skipped leaves no empty parent behind.

Why the launching process avoids mlflow: `import mlflow` plus its SQL store cost ~2.3 s of one core. With
the parallel (joblib) launcher the jobs run in worker processes that import mlflow anyway, so the
launcher's own import would only delay the first job; the parent run is closed by one of those warm
workers instead. For the same reason runs of killed jobs are repaired (`tracking.repair`) by the jobs
(each process's first, see `repair_stale`) before they look for a FINISHED run of their config, not here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from descentlab import startup

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"  # runs the jobs in this process

# The sweep this process launched and has not closed yet: (tracking URI, sweep dir).
_open_sweep: tuple[str, Path] | None = None
# When this process last repaired an experiment: (tracking URI, experiment id, config hash) -> monotonic s.
_repaired_at: dict[tuple[str, str, str | None], float] = {}
REPAIR_EVERY_S = 60.0
_monotonic = time.monotonic  # the repair clock (tests move it)


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
    """Mark runs of killed jobs FAILED (`tracking.repair`) so that this launch redoes their configs; say so.

    At most once a minute per process and experiment (the search costs ~4 ms a job): runs killed before
    the launch are found by its first job in each process; one killed during the sweep is redone anyway
    (only FINISHED runs are skipped) and shows FAILED after the next search.
    """
    from descentlab.tracking.repair import repair_experiment

    key = (str(getattr(client, "tracking_uri", "")), str(experiment_id), config_hash)
    now = _monotonic()
    if key in _repaired_at and now - _repaired_at[key] < REPAIR_EVERY_S:
        return
    for stale in repair_experiment(client, experiment_id, config_hash=config_hash):
        print(f"repaired: run {stale.run_id} ({stale.run_name}) marked FAILED: {stale.reason}", file=sys.stderr)
    _repaired_at[key] = now


class SweepCallback(Callback):
    """Creates the store in the launching process; ends the sweep's parent run."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from descentlab import interrupts

        interrupts.watch_sweep(str(config.hydra.sweep.dir))  # a signal waits for the jobs announced there
        try:
            self._prepare(config)
        finally:
            if OmegaConf.select(config, "hydra.launcher._target_") != BASIC_LAUNCHER:
                startup.resume()  # the jobs run elsewhere: this process's start-up is over

    def _prepare(self, config: DictConfig) -> None:
        global _open_sweep
        if not config.tracking.enabled:
            return
        from descentlab.tracking.store import needs_schema_creation, prepare_store, resolve_tracking_uri

        uri = resolve_tracking_uri(config.tracking.uri, config.tracking.store_dir)
        prepare_store(uri)  # bad URIs and absent servers fail here, before any job
        if needs_schema_creation(uri):  # no template, or a database server: MLflow's migrations run once, here
            store_for(config)
        _open_sweep = (uri, Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        summary = close_open_sweep(_joblib_kwargs(config))
        if summary:
            _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"sweep: {summary['finished']} finished, {summary['failed']} failed, {summary['killed']} killed "
          f"(parent run {summary['parent_run_id']}: {summary['status']})", file=sys.stderr, flush=True)


def _joblib_kwargs(config: DictConfig) -> dict[str, Any] | None:
    """The `joblib.Parallel` arguments Hydra's joblib launcher used, or None for other launchers."""
    launcher = OmegaConf.select(config, "hydra.launcher")
    if launcher is None or launcher.get("_target_") != JOBLIB_LAUNCHER:
        return None
    kwargs = OmegaConf.to_container(launcher, resolve=True)
    assert isinstance(kwargs, dict)
    kwargs.pop("_target_", None)
    kwargs["backend"] = "loky"  # as hydra_joblib_launcher._core.launch does
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    process_joblib_cfg(kwargs)
    return kwargs


def _finish(uri: str, sweep_dir: Path, status: str | None = None) -> dict[str, Any] | None:
    from descentlab.tracking.store import open_store
    from descentlab.tracking.sweep import finish_parent

    return finish_parent(open_store(uri), sweep_dir, status=status)


def close_open_sweep(joblib_kwargs: dict[str, Any] | None = None, status: str | None = None) -> dict[str, Any] | None:
    """End the parent run of the sweep this process launched, if it has one still open.

    Called after the sweep, and by `cli.guarded_main` when the process fails or is interrupted mid-sweep
    (Hydra skips `on_multirun_end` then). The parent's status follows its children's, unless `status` (KILLED
    for an interrupted sweep) says otherwise. With
    `joblib_kwargs` (a sweep that ran in joblib workers) and no mlflow in this process, the work is sent
    to the same, still warm, workers: joblib reuses its executor for identical arguments.
    """
    global _open_sweep
    if _open_sweep is None:
        return None
    uri, sweep_dir = _open_sweep
    _open_sweep = None
    if joblib_kwargs is not None and "mlflow" not in sys.modules:
        try:
            from joblib import Parallel, delayed

            return Parallel(**joblib_kwargs)([delayed(_finish)(uri, sweep_dir)])[0]
        except Exception as exc:  # a broken pool: do it here
            print(f"warning: closing the sweep's parent run in a worker failed ({exc!r}); closing it here",
                  file=sys.stderr)
    summary = _finish(uri, sweep_dir, status)
    if summary and status is not None:
        _print_summary(summary)
    return summary
