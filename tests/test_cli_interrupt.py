"""Ctrl-C during a tracked run: the run ends KILLED with its metrics flushed, the sweep's parent is closed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from conftest import REPO


def test_sigint_marks_the_run_killed_and_keeps_its_metrics(store) -> None:
    args = [sys.executable, str(REPO / "train.py"), "-m", "optimizer=adam", "training.iterations=200000",
            "training.eval_every=1000", "tracking.flush_every=100", f"hydra.sweep.dir={store.root}/multirun"]
    proc = subprocess.Popen(args, cwd=store.root, env=store.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        client = None
        while time.monotonic() < deadline and proc.poll() is None:
            # Read the store only once the job created its parent run: the schema is complete by then
            # (a second process touching a database still being created races MLflow's migrations).
            runs = store.runs() if (store.root / "multirun" / ".mlflow_sweep.json").exists() else []
            child = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
            if child:
                client = client or store.client()
                if len(client.get_metric_history(child[0].info.run_id, "train/loss")) >= 100:
                    break  # training is under way and has flushed at least once
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    runs = store.runs()
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert child.info.status == "KILLED"
    assert parent.info.status != "RUNNING"
    steps = [m.step for m in store.client().get_metric_history(child.info.run_id, "train/loss")]
    assert len(steps) >= 100 and sorted(steps) == list(range(len(steps)))  # buffered points were flushed
