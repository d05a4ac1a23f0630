"""Ctrl-C and SIGTERM on a sweep, as a terminal or a scheduler sends them: every started job ends KILLED with
every point it computed, its metrics.csv and config.yaml; jobs not started leave nothing; the parent ends KILLED
with counts; the exit code is 128 + the signal; no worker outlives the sweep; the same command finishes the rest."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e  # signals to real processes: run by `pytest --all-tiers`

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
PROGRESS = re.compile(r"\[([\w.-]+)\] step (\d+)/(\d+)")


def start(store, args: list[str], log: Path) -> subprocess.Popen:
    """The command in a session of its own, as a terminal runs it: its process group is what Ctrl-C reaches."""
    with log.open("w") as err:
        return subprocess.Popen(args, cwd=store.root, env=store.env(), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def wait_for_training(proc: subprocess.Popen, log: Path, jobs: int, step: int, timeout: float = 120) -> set[str]:
    """Until `jobs` runs have printed progress at or past `step` (they are mid-training); their names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        reached = {name for name, s, _ in PROGRESS.findall(log.read_text(errors="replace")) if int(s) >= step}
        if len(reached) >= jobs:
            return reached
        time.sleep(0.1)
    raise AssertionError(f"no {jobs} jobs past step {step}:\n{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen, signum: int, group: bool) -> tuple[int, list[psutil.Process]]:
    """Send the signal; the exit code and the processes the command had started (to check none outlives it)."""
    family = psutil.Process(proc.pid).children(recursive=True)
    try:
        if group:
            os.killpg(proc.pid, signum)  # a terminal's Ctrl-C: every process of the group
        else:
            os.kill(proc.pid, signum)  # the launching process alone (a scheduler, `kill PID`)
        return proc.wait(timeout=120), family
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def interrupt(store, args: list[str], signum: int, *, group: bool, jobs: int, step: int) -> tuple[int, str, set[str]]:
    """Start the command, wait until `jobs` runs are past `step`, send the signal: (exit code, stderr, the runs
    that were training). No process the command started may outlive it."""
    log = store.root / "err.log"
    proc = start(store, args, log)
    started = wait_for_training(proc, log, jobs=jobs, step=step)
    code, family = stop(proc, signum, group=group)
    assert_none_left(family)
    return code, log.read_text(errors="replace"), started


def assert_none_left(family: list[psutil.Process]) -> None:
    """No process the command started is alive (workers are killed, helpers end with their parent)."""
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"processes outlived the sweep: {[(p.pid, p.cmdline()) for p in alive]}"


def csv_points(run) -> dict[str, list[int]]:
    """Steps per metric in the run's metrics.csv artifact (local store: read from disk)."""
    path = Path(run.info.artifact_uri.removeprefix("file://")) / "metrics.csv"
    steps: dict[str, list[int]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            steps.setdefault(row["metric"], []).append(int(row["step"]))
    return steps


def check_interrupted(store, started: set[str], signum: int, iterations: int) -> list:
    """The store after an interrupted sweep; returns the children."""
    runs = store.runs()
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if "config_hash" not in r.data.tags]
    children = [r for r in runs if "config_hash" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    # Jobs not started leave nothing: every run belongs to a job that was training when the signal came.
    assert children and {r.info.run_name for r in children} <= started
    killed = [r for r in children if r.info.status == "KILLED"]
    assert killed, "the signal came mid-training: at least one run must end KILLED"
    assert parents[0].data.tags["sweep.n_killed"] == str(len(killed))
    assert parents[0].data.tags["sweep.n_finished"] == str(len(children) - len(killed))
    client = store.client()
    for run in killed:
        assert run.data.tags["interrupted_by"] == signal.Signals(signum).name
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "metrics.csv", "hydra"} <= files, files
        stored = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        computed = csv_points(run)["train/loss"]
        # Every point computed reached the store and the CSV, with no gap, and training had not finished.
        assert sorted(stored) == computed == list(range(len(computed))) and 0 < len(computed) < iterations
        assert run.data.params["optimizer.name"] in OPTIMIZERS
    return children


@pytest.mark.slow
def test_ctrl_c_on_a_parallel_sweep_keeps_every_point_and_a_rerun_redoes_exactly_the_rest(store) -> None:
    iterations = 3000
    sweep = ["-m", "hydra/launcher=parallel", f"optimizer={','.join(OPTIMIZERS)}", f"training.iterations={iterations}",
             "training.eval_every=250"]
    args = [sys.executable, str(REPO / "train.py"), *sweep, f"hydra.sweep.dir={store.root}/m1"]
    code, stderr, started = interrupt(store, args, signal.SIGINT, group=True, jobs=2, step=250)
    assert code == 130, stderr[-3000:]
    assert "interrupted (SIGINT)" in stderr and "Traceback" not in stderr
    children = check_interrupted(store, started, signal.SIGINT, iterations)
    finished_first = {r.data.tags["config_hash"] for r in children if r.info.status == "FINISHED"}

    again = store.train(*sweep)  # the same command: skips what finished, redoes the killed and the never started
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped ") == len(finished_first)
    runs = [r for r in store.runs() if "config_hash" in r.data.tags]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.data.params["optimizer.name"] for r in finished) == sorted(OPTIMIZERS)
    assert len(finished) == len(OPTIMIZERS)  # each config finished once: nothing redone that had finished
    assert len(runs) == len(children) + len(OPTIMIZERS) - len(finished_first)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_launching_process_alone_reaches_the_workers(store, signum: int) -> None:
    iterations = 20000
    args = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=parallel", "optimizer=sgd,adam,adagrad",
            f"training.iterations={iterations}", "training.eval_every=250", f"hydra.sweep.dir={store.root}/m"]
    code, stderr, started = interrupt(store, args, signum, group=False, jobs=2, step=250)  # loky's workers end too
    assert code == 128 + signum, stderr[-3000:]
    assert f"interrupted ({signal.Signals(signum).name})" in stderr
    children = check_interrupted(store, started, signum, iterations)
    assert len(children) == 2  # the third job never started


@pytest.mark.slow
def test_another_launcher_gets_the_same_guarantee_without_code_of_its_own(store) -> None:
    """hydra-submitit-launcher's local executor: jobs in processes of its own controller, which descentlab knows
    nothing of. SIGTERM to the launching process, as a scheduler sends it."""
    iterations = 20000
    args = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=submitit_local", "optimizer=sgd,adam",
            f"training.iterations={iterations}", "training.eval_every=250", "tracking.flush_seconds=1",
            f"hydra.sweep.dir={store.root}/m"]
    log = store.root / "err.log"
    proc = start(store, args, log)
    # submitit writes each job's output to its own folder: wait for both runs to be training, through the store.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        client = store.client()
        running = [r for r in store.runs() if r.info.status == "RUNNING" and "config_hash" in r.data.tags]
        if len(running) == 2 and all(len(client.get_metric_history(r.info.run_id, "test/acc")) >= 1
                                     for r in running):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(log.read_text(errors="replace")[-3000:])
    code, family = stop(proc, signal.SIGTERM, group=False)
    stderr = log.read_text(errors="replace")
    assert code == 143, stderr[-3000:]
    assert_none_left(family)
    check_interrupted(store, {r.info.run_name for r in running}, signal.SIGTERM, iterations)


@pytest.mark.slow
def test_sigterm_on_the_basic_launcher_kills_the_running_job_and_starts_no_other(store) -> None:
    iterations = 200000
    args = [sys.executable, str(REPO / "train.py"), "-m", "optimizer=adam,sgd", f"training.iterations={iterations}",
            "training.eval_every=500", "tracking.flush_every=10000000", "tracking.flush_seconds=1000000",
            f"hydra.sweep.dir={store.root}/m"]
    # flush_every and flush_seconds exceed the run: every point found in the store was flushed on the way out.
    code, stderr, started = interrupt(store, args, signal.SIGTERM, group=False, jobs=1, step=1000)
    assert code == 143, stderr[-3000:]
    children = check_interrupted(store, started, signal.SIGTERM, iterations)
    assert [r.data.params["optimizer.name"] for r in children] == ["adam"]


@pytest.mark.slow
@pytest.mark.parametrize("signum,group", [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "SIGTERM"])
def test_reproduce_passes_the_signal_on_and_exits_as_the_sweep_did(store, signum: int, group: bool) -> None:
    iterations = 100000
    args = [sys.executable, str(REPO / "scripts" / "reproduce.py"), "fig6_9", "--seeds", "1", "--iterations",
            str(iterations), "--out", str(store.root / "reports"), "--sweep-dir", str(store.root / "multirun")]
    code, stderr, started = interrupt(store, args, signum, group=group, jobs=2, step=250)
    assert code == 128 + signum, stderr[-3000:]
    assert "run the same command to finish it" in stderr
    runs = store.runs("fig6_9")
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    killed = [r for r in runs if r.info.status == "KILLED" and "config_hash" in r.data.tags]
    assert len(killed) == 2 and {r.info.run_name for r in killed} <= started
    assert not (store.root / "reports" / "fig6_9").exists()  # no figure drawn from an unfinished sweep
