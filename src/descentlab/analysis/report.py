"""Write a report's files and log them as an `analysis` run, so figures live next to the runs they show."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def log_analysis_run(
    experiment: str,
    out_dir: Path,
    tracking_uri: str,
    name: str = "analysis",
    params: Mapping[str, object] | None = None,
) -> str:
    """Log every file under `out_dir` as artifacts of a new FINISHED run `name` in `experiment`; returns its id."""
    from descentlab.tracking import RunTracker, environment_tags, get_or_create_experiment, open_store
    from descentlab.tracking.store import artifact_root_for

    client = open_store(tracking_uri)
    experiment_id = get_or_create_experiment(client, experiment, artifact_root_for(tracking_uri))
    tags = {"task": "analysis", **environment_tags(None)}
    with RunTracker(client, experiment_id, name, tags=tags) as tracker:
        if params:
            tracker.log_params(params)
        tracker.log_artifacts(str(out_dir))
    return str(tracker.run_id)
