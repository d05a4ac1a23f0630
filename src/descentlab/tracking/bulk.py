"""Metric points written straight into MLflow's SQL tables: the rows `log_batch` writes, ~6x cheaper.

MLflow's `SqlAlchemyStore.log_batch` builds one ORM object per point and keeps each key's latest value
through the ORM: ~80 us of CPU per point, 0.16 s of a 2.7 s Figure 6-9 run for its 2,000 `train/loss`
points. Here the same rows go in as one executemany INSERT into MLflow's own table definition (so the
columns are always those of the installed MLflow), and each key's latest value is kept by MLflow's rule
(the greatest (step, timestamp, value)): ~11 us per point, most of it SQLite's own index upkeep.
Only for SQL stores reached directly; anything else (a tracking server, a point already stored, an MLflow
whose internals moved) returns False and the caller uses `log_batch`: faster, never different.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

_log = logging.getLogger(__name__)

Point = tuple[int, str, float, int]  # (step, key, value, timestamp_ms), as RunTracker buffers them


def sql_store(client: Any) -> Any | None:
    """The `SqlAlchemyStore` behind an `MlflowClient` (or a `RetryingClient` around one); None otherwise."""
    module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")  # not loaded: not a SQL store
    store_class = getattr(module, "SqlAlchemyStore", None)
    if store_class is None:
        return None
    client = getattr(client, "raw", client)
    try:
        from mlflow.tracking import MlflowClient

        if not isinstance(client, MlflowClient):  # a wrapper or test double: its own log_batch decides
            return None
        store = client._tracking_client.store
    except Exception:  # another MLflow layout: the public API still works
        return None
    return store if isinstance(store, store_class) else None


def _sanitize(value: float) -> tuple[bool, float]:
    """MLflow's storage of a value: NaN as (True, 0.0), +-inf as +-max float (SQL has no infinities)."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, 1.7976931348623157e308 if value > 0 else -1.7976931348623157e308
    return False, value


def insert_metrics(store: Any, run_id: str, points: Sequence[Point]) -> bool:
    """Store `points` for `run_id` in one transaction; False (nothing written) if `log_batch` must do it.

    Raises what the store raises for an inactive run or a store that is away (transient errors are the
    caller's to retry, as for `log_batch`).
    """
    if not points:
        return True
    try:
        import sqlalchemy
        from mlflow.entities import LifecycleStage
        from mlflow.exceptions import MlflowException
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun
    except ImportError:  # pragma: no cover - only when MLflow reorganises its modules
        return False

    rows = []
    latest: dict[str, tuple[int, int, float, bool]] = {}
    for step, key, value, timestamp in points:
        is_nan, stored = _sanitize(float(value))
        rows.append({"run_uuid": run_id, "key": key, "value": stored, "timestamp": int(timestamp),
                     "step": int(step), "is_nan": is_nan})
        candidate = (int(step), int(timestamp), stored, is_nan)
        if key not in latest or candidate[:3] > latest[key][:3]:
            latest[key] = candidate
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            stage = session.query(SqlRun.lifecycle_stage).filter(SqlRun.run_uuid == run_id).scalar()
            if stage != LifecycleStage.ACTIVE:
                # Let log_batch raise MLflow's own error (no such run, or a deleted one).
                return False
            session.execute(SqlMetric.__table__.insert(), rows)  # Core executemany: no ORM objects
            stored_latest = {
                m.key: m
                for m in session.query(SqlLatestMetric)
                .filter(SqlLatestMetric.run_uuid == run_id, SqlLatestMetric.key.in_(sorted(latest)))
                .all()
            }
            for key, (step, timestamp, value, is_nan) in latest.items():
                old = stored_latest.get(key)
                if old is None:
                    session.add(SqlLatestMetric(run_uuid=run_id, key=key, value=value, timestamp=timestamp,
                                                step=step, is_nan=is_nan))
                elif (step, timestamp, value) > (old.step, old.timestamp, old.value):
                    old.step, old.timestamp, old.value, old.is_nan = step, timestamp, value, is_nan
    except MlflowException as exc:
        if isinstance(exc.__cause__, sqlalchemy.exc.IntegrityError):
            # A point already stored (a retried batch): log_batch skips duplicates one by one.
            _log.debug("bulk insert hit a stored point; falling back to log_batch")
            return False
        raise
    return True
