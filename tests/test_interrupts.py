"""descentlab.interrupts in one process: what a job does with SIGINT/SIGTERM, and what a launcher does with them.

The conftest fixture restores the test runner's own handlers after each test.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from descentlab import interrupts
from descentlab.interrupts import JobInterrupted


def send(signum: int) -> None:
    """Deliver a signal to this process and let Python run its handler (at the next bytecode)."""
    os.kill(os.getpid(), signum)
    for _ in range(100):
        time.sleep(0.001)


def test_job_interrupted_is_a_keyboard_interrupt_that_survives_pickling() -> None:
    exc = pickle.loads(pickle.dumps(JobInterrupted(signal.SIGTERM)))  # how a pool worker sends it back
    assert isinstance(exc, KeyboardInterrupt) and exc.signum == signal.SIGTERM
    assert exc.exit_code == 143 and str(exc) == "SIGTERM"
    assert JobInterrupted().exit_code == 130


def test_a_signal_during_a_job_raises_once_and_deferred_blocks_hold_it(tmp_path: Path) -> None:
    interrupts.install("job")
    reached = []
    with pytest.raises(JobInterrupted) as caught, interrupts.job(tmp_path):
        with interrupts.deferred():
            send(signal.SIGTERM)
            reached.append("deferred block ran to its end")
        reached.append("not reached")
    assert reached == ["deferred block ran to its end"] and caught.value.signum == signal.SIGTERM
    assert interrupts.received() == signal.SIGTERM and interrupts.exit_code() == 143


def test_later_signals_in_the_same_job_do_not_interrupt_its_record() -> None:
    interrupts.install("job")
    steps = []
    with pytest.raises(JobInterrupted), interrupts.job():
        try:
            send(signal.SIGINT)
        finally:  # writing the run's record
            send(signal.SIGINT)
            send(signal.SIGTERM)
            steps.append("record written")
    assert steps == ["record written"] and interrupts.exit_code() == 130


def test_a_worker_between_jobs_remembers_the_signal_and_starts_no_other_job(tmp_path: Path) -> None:
    interrupts.install("job")
    send(signal.SIGTERM)  # idle: nothing raised
    body = []
    with pytest.raises(JobInterrupted) as caught, interrupts.job(tmp_path):
        body.append("ran")
    assert body == [] and caught.value.signum == signal.SIGTERM
    assert not list((tmp_path / interrupts.JOBS_DIR).glob("**/*.json"))  # never announced


def test_a_job_is_announced_while_it_runs_and_as_a_worker_for_good(tmp_path: Path) -> None:
    interrupts.install("job")
    name = f"{os.uname().nodename}-{os.getpid()}.json"
    with interrupts.job(tmp_path):
        running = tmp_path / interrupts.JOBS_DIR / "running" / name
        assert json.loads(running.read_text()) == {"host": os.uname().nodename, "pid": os.getpid()}
    assert not running.exists()
    assert (tmp_path / interrupts.JOBS_DIR / "workers" / name).is_file()


def announce(sweep: Path, kind: str, pid: int) -> None:
    folder = sweep / interrupts.JOBS_DIR / kind
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.uname().nodename}-{pid}.json").write_text(json.dumps({"host": os.uname().nodename, "pid": pid}))


def test_a_launcher_passes_the_signal_on_and_waits_for_its_running_jobs(tmp_path: Path) -> None:
    # A "job" that needs a moment to record its run after SIGTERM, then leaves the sweep (removes its marker).
    marker = tmp_path / "sweep" / interrupts.JOBS_DIR / "running" / "job.json"
    code = (f"import json, os, pathlib, signal, socket, sys, time\n"
            f"m = pathlib.Path({str(marker)!r})\n"
            "def bye(s, f):\n    time.sleep(0.5); m.unlink(); sys.exit(7)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "m.parent.mkdir(parents=True, exist_ok=True)\n"
            "m.write_text(json.dumps({'host': socket.gethostname(), 'pid': os.getpid()}))\n"
            "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        interrupts.install("launcher")
        interrupts.watch_sweep(tmp_path / "sweep")
        t0 = time.monotonic()
        with pytest.raises(JobInterrupted) as caught:
            send(signal.SIGTERM)
        waited = time.monotonic() - t0
        assert caught.value.signum == signal.SIGTERM
        assert child.wait(timeout=5) == 7  # it got the signal and finished its own way ...
        assert waited >= 0.4 and not marker.exists()  # ... while the launcher waited for it
        # No other job of the sweep starts, in any process that reads the folder.
        stop = json.loads((tmp_path / "sweep" / interrupts.JOBS_DIR / "stop").read_text())
        assert stop["signal"] == signal.SIGTERM
    finally:
        child.kill()
        child.wait()


def test_stop_workers_kills_only_the_sweeps_workers(tmp_path: Path) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                               "signal.SIG_IGN); time.sleep(60)"])
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # never ran a job
    try:
        announce(tmp_path, "workers", worker.pid)
        announce(tmp_path, "workers", 2**22 + 12345)  # a pid that is not ours: never touched
        interrupts.watch_sweep(tmp_path)
        assert interrupts.stop_workers(grace_s=0.2) == [worker.pid]
        assert not psutil.pid_exists(worker.pid)  # killed (and reaped)
        assert helper.poll() is None
    finally:
        for proc in (worker, helper):
            proc.kill()
            proc.wait()


def test_run_child_passes_signals_on_and_returns_the_childs_code(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (f"import pathlib, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            "time.sleep(60)\n")

    def interrupt_when_ready() -> None:
        while not ready.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # to us, the parent: passed on

    import threading

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    previous = signal.getsignal(signal.SIGTERM)
    assert interrupts.run_child([sys.executable, "-c", code]) == 143
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_launcher_finishes_closing_the_sweep_before_it_stops_and_ignores_signals_on_its_way_out() -> None:
    interrupts.install("launcher")
    closed = []
    with pytest.raises(JobInterrupted), interrupts.deferred():  # closing the sweep's parent run
        send(signal.SIGINT)
        closed.append("parent closed")
    assert closed == ["parent closed"]
    interrupts.exiting()
    send(signal.SIGINT)  # the second: ignored on the way out (a third would exit at once)
    assert interrupts.exit_code() == 130


def test_a_stopped_sweep_starts_no_job_until_it_is_launched_again(tmp_path: Path) -> None:
    interrupts.install("job")
    folder = tmp_path / interrupts.JOBS_DIR
    folder.mkdir()
    (folder / "stop").write_text(json.dumps({"signal": int(signal.SIGTERM)}))
    with pytest.raises(JobInterrupted) as caught, interrupts.job(tmp_path):
        pass
    assert caught.value.signum == signal.SIGTERM and interrupts.received() is None  # this process got no signal
    interrupts.watch_sweep(tmp_path)  # the same folder launched again
    with interrupts.job(tmp_path):
        pass


def test_a_signal_during_a_metric_write_lands_after_the_write_and_its_bookkeeping(tmp_path: Path) -> None:
    """A signal arriving while a chunk of points is written is held until the chunk is stored and marked sent
    (`RunTracker.write_guard`): the run then ends KILLED with every point once. Unguarded, the interrupt fell
    between the INSERT and the buffer's bookkeeping (or inside the transaction), and the KILLED record re-sent or
    could not write the points."""
    from descentlab.data.idx_specs import cache_root
    from descentlab.tracking.run import RunTracker
    from descentlab.tracking.settings import SqliteSettings
    from descentlab.tracking.store import get_or_create_experiment, open_store, resolve_tracking_uri

    uri = resolve_tracking_uri(None, tmp_path / "store")
    client = open_store(uri, SqliteSettings(template_dir=str(cache_root())))
    experiment = get_or_create_experiment(client, "guarded", None)
    tracker = RunTracker(client, experiment, "guarded", write_guard=interrupts.deferred).start()
    write = tracker.sink.write_metrics

    def write_then_signal(run_id: str, points):  # the signal comes once the rows are in
        stored = write(run_id, points)
        send(signal.SIGTERM)
        return stored

    tracker.sink.write_metrics = write_then_signal  # type: ignore[method-assign]
    interrupts.install("job")
    with pytest.raises(JobInterrupted), interrupts.job(tmp_path):
        try:
            tracker.log_series("train/loss", 0, [1.0 / (i + 1) for i in range(50)])
            tracker.flush()
        except JobInterrupted:
            assert tracker.n_pending == 0  # the chunk was stored and marked sent before the interrupt
            tracker.finish("KILLED")
            raise
    run = client.get_run(tracker.run_id)
    assert run.info.status == "KILLED"
    assert sorted(m.step for m in client.get_metric_history(tracker.run_id, "train/loss")) == list(range(50))
