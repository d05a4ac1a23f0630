"""One job's view of the tracking store: open it, repair runs of killed jobs, skip finished work, find the sweep's
parent, start a run. What app.py and the Hydra callback use instead of wiring store, repair and runs by hand.

The session holds what every call needs (URI resolved once, client, experiment id, settings), so no layer below
re-reads the config or the environment.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from descentlab.tracking.settings import TrackingSettings

if TYPE_CHECKING:
    from descentlab.tracking.run import RunTracker

__all__ = ["REPAIR_EVERY_S", "TrackingSession", "prepare"]

REPAIR_EVERY_S = 60.0
# When this process last repaired an experiment: (tracking URI, experiment id, config hash) -> monotonic s.
_repaired_at: dict[tuple[str, str, str | None], float] = {}
_monotonic = time.monotonic  # the repair clock (tests move it)


@dataclass
class TrackingSession:
    """An open store and experiment. Build it with `TrackingSession.open(settings)`."""

    uri: str
    client: Any  # MlflowClient
    experiment_id: str
    settings: TrackingSettings

    @classmethod
    def open(cls, settings: TrackingSettings) -> TrackingSession:
        """Set up the store (folder, schema, journal; probes a server) and get or create the experiment.

        Raises TrackingUnavailableError for a store that cannot be reached, ValueError for a malformed URI.
        """
        from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store

        uri = settings.resolved_uri()
        client = open_store(uri, settings.sqlite)
        experiment_id = get_or_create_experiment(client, settings.experiment, artifact_root_for(uri))
        return cls(uri=uri, client=client, experiment_id=str(experiment_id), settings=settings)

    def repair_stale(self, config_hash: str | None = None) -> None:
        """Mark runs of killed jobs FAILED (`tracking.repair`) so that this launch redoes their configs; say so.

        At most once a minute per process and experiment (the search costs ~4 ms a job): runs killed before
        the launch are found by its first job in each process; one killed during the sweep is redone anyway
        (only FINISHED runs are skipped) and shows FAILED after the next search.
        """
        from descentlab.tracking.repair import repair_experiment

        key = (self.uri, self.experiment_id, config_hash)
        now = _monotonic()
        if key in _repaired_at and now - _repaired_at[key] < REPAIR_EVERY_S:
            return
        for stale in repair_experiment(self.client, self.experiment_id, timeout_s=self.settings.stale_after_s,
                                       config_hash=config_hash):
            print(f"repaired: run {stale.run_id} ({stale.run_name}) marked FAILED: {stale.reason}", file=sys.stderr)
        _repaired_at[key] = now

    def find_finished(self, config_hash: str) -> str | None:
        """The newest FINISHED run of this configuration in the experiment, or None (for skipping done work)."""
        from descentlab.tracking.run import find_finished_run

        return find_finished_run(self.client, self.experiment_id, config_hash)

    def refresh_statistics(self) -> None:
        """After a job outside a sweep: the query planner's statistics (`tracking.upkeep`; milliseconds, and only
        when stale). A sweep's jobs leave this to the launching process, which does it once when the sweep ends.
        Never raises: a failure only warns."""
        from descentlab import compat
        from descentlab.tracking.upkeep import upkeep_quietly

        upkeep_quietly(self.uri, indexes=False, engine=compat.mlflow_engine(self.client))

    def parent_run(self, sweep_dir: str, sweep_key: str | None = None) -> str:
        """The sweep's parent run id, created by whoever asks first (`tracking.sweep`): the launching process
        (`TrackingSettings.parent_by_launcher`) or the sweep's first job. `sweep_key`: the sweep folder as the
        launching process names it, which finds the parent from a node that does not share the folder."""
        from descentlab.tracking.sweep import get_or_create_parent

        return get_or_create_parent(self.client, self.experiment_id, sweep_dir, sweep_key)

    def new_run(self, name: str, *, tags: Mapping[str, str], parent_run_id: str | None = None,
                spill_dir: str | None = None,
                write_guard: Callable[[], AbstractContextManager[object]] | None = None) -> RunTracker:
        """A run, not started yet (`start()` or `with`), writing as the settings say (flush, store_every,
        heartbeat, retry window); `spill_dir` receives unsent metrics if the store goes away for good;
        `write_guard` holds a signal's exception until a write ends (`RunTracker`)."""
        from descentlab.tracking.run import RunTracker

        s = self.settings
        return RunTracker(self.client, self.experiment_id, name, tags=tags, parent_run_id=parent_run_id,
                          flush_every=s.flush_every, flush_seconds=s.flush_seconds, store_every=s.store_every,
                          spill_dir=spill_dir, heartbeat_s=s.heartbeat_s, retry_s=s.retry_s,
                          write_guard=write_guard or contextlib.nullcontext)


def prepare(settings: TrackingSettings) -> str:
    """The launching process's share, without importing mlflow when the template is cached: the store's folder,
    schema and journal (an absent server fails here, in seconds); MLflow's migrations run here, once, only where no
    template can be used. Returns the resolved URI."""
    from descentlab.tracking.store import needs_schema_creation, prepare_store

    uri = settings.resolved_uri()
    prepare_store(uri, settings.sqlite)
    if needs_schema_creation(uri):  # no template, or a database server
        TrackingSession.open(settings)
    return uri

