"""Ctrl-C during a tracked run: the run ends KILLED with its metrics flushed, the sweep's parent is closed."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

from conftest import REPO


def test_sigint_marks_the_run_killed_and_keeps_its_metrics(store) -> None:
    # flush_every and flush_seconds exceed the run: no point reaches the store before the interrupt, so every
    # point found there afterwards was flushed on the way out.
    args = [sys.executable, str(REPO / "train.py"), "-m", "optimizer=adam", "training.iterations=200000",
            "training.eval_every=500", "tracking.flush_every=10000000",
            "tracking.flush_seconds=1000000", f"hydra.sweep.dir={store.root}/multirun"]
    log = store.root / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(args, cwd=store.root, env=store.env(), stdout=subprocess.DEVNULL, stderr=err, text=True)
    try:
        deadline = time.monotonic() + 120
        reached = 0
        while time.monotonic() < deadline and proc.poll() is None:
            # Progress lines ("[name] step 1000/200000 ...") say how far training got.
            steps = [int(m) for m in re.findall(r"\] step (\d+)/200000", log.read_text(errors="replace"))]
            reached = max(steps, default=0)
            if reached >= 1000:
                break
            time.sleep(0.2)
        assert proc.poll() is None and reached >= 1000, log.read_text(errors="replace")[-2000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = log.read_text(errors="replace")
    assert proc.returncode == 130, stderr[-2000:]
    runs = store.runs()
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert child.info.status == "KILLED"
    assert parent.info.status != "RUNNING"
    steps = [m.step for m in store.client().get_metric_history(child.info.run_id, "train/loss")]
    assert len(steps) >= reached and sorted(steps) == list(range(len(steps)))  # the buffer was flushed, in full
    assert len(steps) < 200000
