"""Concurrent writers: 8 jobs, 4 at a time, into one SQLite store: every run FINISHED, every metric row there."""

from __future__ import annotations

import csv
import sqlite3

import pytest

pytestmark = pytest.mark.e2e  # a parallel sweep of train.py: run by `pytest --all-tiers`

ITERATIONS = 300
ARGS = ("-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=4", "optimizer=sgd,momentum,adagrad,adam",
        "seed=0,1", f"training.iterations={ITERATIONS}", "training.eval_every=50", "training.progress=false",
        "tracking.flush_every=40")  # many small batches: the writers collide often


def test_eight_jobs_four_at_a_time_into_one_sqlite_store(store) -> None:
    result = store.train(*ARGS, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stderr.lower()

    runs = store.runs()
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 8 and len(runs) == 9
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["config_hash"] for r in children}) == 8

    client = store.client()
    db = sqlite3.connect(store.root / "mlruns" / "mlflow.db")
    try:
        for run in children:
            run_id = run.info.run_id
            history = client.download_artifacts(run_id, "metrics.csv", str(store.root / run_id))
            with open(history, newline="") as f:
                logged = sorted((int(r["step"]), r["metric"]) for r in csv.DictReader(f))
            rows = sorted(db.execute("SELECT step, key FROM metrics WHERE run_uuid = ?", (run_id,)).fetchall())
            assert rows == logged  # exactly the points logged: none lost, none twice
            assert sum(1 for _, key in rows if key == "train/loss") == ITERATIONS
    finally:
        db.close()
