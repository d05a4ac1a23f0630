"""Nothing tracked is lost when the store goes away for good: unsent metrics saved next to the job, re-imported later.

When a run cannot reach its store any more (after `tracking.retry` gave up), `save_unsent` writes into the
job's output folder (Hydra's, else the current directory):
- `unsent_metrics.csv`: the points never sent (step, metric, value, timestamp_ms),
- `metrics.csv`: the run's whole history (what the run's `metrics.csv` artifact would hold),
- `unsent_run.json`: run id, experiment id, tracking URI, the status the run should end with, the error.
`import_unsent` sends them once the store is back (`python scripts/runs.py import-unsent FOLDER`).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from descentlab.tracking.buffer import Point, write_points
from descentlab.tracking.store import TrackingUnavailableError, redact

__all__ = ["UNSENT_CSV", "UNSENT_JSON", "TrackingLostError", "import_unsent", "save_unsent", "write_points"]

UNSENT_CSV = "unsent_metrics.csv"
UNSENT_JSON = "unsent_run.json"
HISTORY_COPY = "metrics.csv"



class TrackingLostError(TrackingUnavailableError):
    """The store went away during a run and stayed away; the unsent metrics were saved to a file."""


def save_unsent(
    folder: str | Path | None,
    *,
    run_id: str,
    experiment_id: str,
    tracking_uri: str,
    run_name: str,
    status: str,
    error: BaseException,
    unsent: Sequence[Point],
    history: Sequence[Point],
) -> TrackingLostError:
    """Write the three files into `folder` (created if needed; None: the current directory) and return the
    one-line error to raise. `status` is what the run should end as once imported."""
    out = Path(folder) if folder is not None else Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    write_points(out / UNSENT_CSV, unsent, with_timestamp=True)
    write_points(out / HISTORY_COPY, history, with_timestamp=False)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    state = {
        "run_id": run_id,
        "experiment_id": str(experiment_id),
        "tracking_uri": redact(tracking_uri),
        "run_name": run_name,
        "status": status,
        "error": f"{type(error).__name__}: {first}"[:2000],
        "n_unsent": len(unsent),
        "n_history": len(history),
        "saved_at_ms": int(time.time() * 1000),
    }
    (out / UNSENT_JSON).write_text(json.dumps(state, indent=2), encoding="utf-8")
    last = first if len(first) <= 160 else first[:157] + "..."
    return TrackingLostError(
        f"tracking store {redact(tracking_uri)} went away during run {run_id} and did not come back "
        f"(last error: {last}); {len(unsent)} unsent metric points saved to {out / UNSENT_CSV} "
        f"(full history in {out / HISTORY_COPY}); re-import with: python scripts/runs.py import-unsent {out}"
    )


def _read_points(path: Path) -> list[Point]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(int(r["step"]), r["metric"], float(r["value"]), int(r["timestamp_ms"])) for r in csv.DictReader(f)]


def import_unsent(folder: str | Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """Send a saved folder's unsent points to its run, attach the full history as `metrics.csv`, end the run.

    The run ends with the saved status (FAILED if training itself was cut short). Safe to repeat:
    MLflow ignores points it already has. `tracking_uri` overrides the saved (password-redacted) URI.
    """
    from mlflow.entities import Metric

    from descentlab.tracking.retry import RetryingClient
    from descentlab.tracking.sink import MAX_METRICS_PER_BATCH
    from descentlab.tracking.store import open_store

    folder = Path(folder)
    state = json.loads((folder / UNSENT_JSON).read_text(encoding="utf-8"))
    points = _read_points(folder / UNSENT_CSV)
    client = RetryingClient(open_store(tracking_uri or state["tracking_uri"]))
    run_id = state["run_id"]
    run = client.get_run(run_id)
    for i in range(0, len(points), MAX_METRICS_PER_BATCH):
        chunk = points[i : i + MAX_METRICS_PER_BATCH]
        client.log_batch(run_id, metrics=[Metric(k, v, ts, s) for s, k, v, ts in chunk], synchronous=True)
    history = folder / HISTORY_COPY
    if history.exists() and HISTORY_COPY not in {a.path for a in client.list_artifacts(run_id)}:
        client.log_artifact(run_id, str(history))
    status = state.get("status", "FAILED")
    if status != "FINISHED":
        client.set_tag(run_id, "error", state.get("error", "tracking store went away"))
    client.set_tag(run_id, "unsent_imported_from", str(folder.resolve()))
    client.set_terminated(run_id, status)
    return {"run_id": run_id, "n_points": len(points), "status": status, "previous_status": run.info.status}
