"""A worker killed with SIGKILL mid-run: the next launch marks its run FAILED and redoes only the unfinished configs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from descentlab.tracking.liveness import PID_TAG

pytestmark = pytest.mark.e2e  # SIGKILL to a real sweep: run by `pytest --all-tiers`

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
ITERATIONS = 2000
SWEEP = ("-m", "hydra/launcher=parallel", f"optimizer={','.join(OPTIMIZERS)}", f"training.iterations={ITERATIONS}",
         "training.eval_every=1000", "training.progress=false", "tracking.flush_every=200")


def test_sigkilled_job_is_repaired_and_only_unfinished_configs_rerun(store) -> None:
    sweep_dir = store.root / "multirun" / "killed"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *SWEEP, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=store.root, env=store.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    try:
        deadline = time.monotonic() + 180
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            # The launcher created the store before any job; read it once a job created the sweep's parent.
            if (sweep_dir / ".mlflow_sweep.json").exists():
                client, runs = store.client(), store.runs()
                if not any(r.info.status == "FINISHED" for r in runs):
                    time.sleep(0.2)  # kill a later job, so that the re-run has finished configs to skip
                    continue
                for run in runs:
                    stored = len(client.get_metric_history(run.info.run_id, "train/loss")) \
                        if run.info.status == "RUNNING" and PID_TAG in run.data.tags else 0
                    if 200 <= stored <= ITERATIONS // 2:
                        victim = run  # mid-training, with points already in the store and far from its end
                        break
            time.sleep(0.2)
        assert victim is not None, proc.communicate(timeout=60)[1][-3000:]
        os.kill(int(victim.data.tags[PID_TAG]), signal.SIGKILL)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, stderr[-3000:]  # the launcher saw its worker die
    # The fault: the victim never finished. A job the launcher started after the kill may already have
    # repaired it (a process's first job repairs its experiment before its skip check); otherwise the re-run does.
    assert store.client().get_run(victim.info.run_id).info.status in ("RUNNING", "FAILED")
    first = {r.info.run_id: r.info.status for r in store.runs() if "mlflow.parentRunId" in r.data.tags}
    finished_first = {r for r, s in first.items() if s == "FINISHED"}
    assert finished_first and victim.info.run_id not in finished_first

    again = store.train(*SWEEP)
    assert again.returncode == 0, again.stderr[-3000:]
    both = stderr + again.stderr
    assert f"repaired: run {victim.info.run_id}" in both
    # Jobs starting together may both repair the same run (idempotent): count runs, not lines.
    n_repaired = len(set(re.findall(r"repaired: run (\w+)", both)))
    assert again.stderr.count("skipped ") == len(finished_first)  # finished configs are not redone

    runs = store.runs()
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == len(OPTIMIZERS)
    assert sorted(r.data.params["optimizer.name"] for r in finished) == sorted(OPTIMIZERS)
    assert len({r.data.tags["config_hash"] for r in finished}) == len(OPTIMIZERS)
    assert finished_first <= {r.info.run_id for r in finished}
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(failed) == n_repaired >= 1 and len(children) == len(OPTIMIZERS) + n_repaired
    killed = store.client().get_run(victim.info.run_id)
    assert killed.info.status == "FAILED" and "is gone" in killed.data.tags["failure_reason"]
    client = store.client()
    for run in finished:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
        assert steps == list(range(ITERATIONS)), run.info.run_name
