"""Ctrl-C and SIGTERM stop a job or a whole sweep cleanly, whatever launcher runs the jobs.

Why here and not in a launcher: a terminal's Ctrl-C reaches every process of its group at once, a scheduler's
SIGTERM may reach only the launching process, and a process pool (joblib's loky, like others) kills its workers
as soon as the launching process raises KeyboardInterrupt — before they could close their runs. So:

- Every process that runs jobs handles SIGINT and SIGTERM itself. During a job the first signal raises
  `JobInterrupted` (a KeyboardInterrupt, so the run ends KILLED) in the main thread, unless inside `deferred()`,
  which holds it until the block ends (creating a run, writing a run's record). Later signals during the same job
  are ignored: its record is being written. Between jobs (a pool worker waiting for work) a signal is remembered
  and the next job refuses to start.
- The launching process (`install("launcher")`, from `train.py`) stops the sweep on the first signal: it writes
  `.jobs/stop` in the sweep folder, which every job checks before it starts, passes the signal on to the jobs
  that announced themselves there (`job(sweep_dir)` writes `.jobs/running/<host>-<pid>.json` while a job runs),
  waits up to `GRACE_S` for those on this host to end, then raises `JobInterrupted`. A second signal stops the
  wait at once; a third exits at once (runs left RUNNING are marked FAILED by the next launch, see
  `tracking.repair`).

Nothing here names a launcher: any launcher whose jobs run `app.run` in other processes (joblib, submitit's local
executor) gets the same guarantee; on other hosts (SLURM, Ray) the scheduler delivers its own signal to a job,
and the stop file (on a shared folder) keeps new jobs from starting.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from descentlab import compat

__all__ = [
    "GRACE_S",
    "SIGNALS",
    "JobInterrupted",
    "deferred",
    "exit_code",
    "exiting",
    "install",
    "job",
    "received",
    "run_child",
    "stop_workers",
    "watch_sweep",
]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 60.0  # how long a launcher waits for its running jobs to record their runs
POLL_S = 0.05
JOBS_DIR = ".jobs"
STOP_FILE = "stop"


class JobInterrupted(KeyboardInterrupt):
    """A job or sweep stopped by SIGINT or SIGTERM; a process exits with 128 + the signal's number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __reduce__(self) -> tuple[type[JobInterrupted], tuple[int]]:  # pickled back from pool workers
        return type(self), (self.signum,)


@dataclass
class _State:
    role: str | None = None  # "launcher" (train.py's process) or "job" (a worker), once installed
    received: int | None = None  # the first signal this process got
    count: int = 0  # signals received
    in_job: bool = False
    raised_in_job: bool = False
    deferred: int = 0  # depth of `deferred()` blocks
    pending: int | None = None  # a signal held by `deferred()`
    waiting: bool = False  # a launcher waiting for its jobs
    exiting: bool = False  # see `exiting()`
    sweep_dirs: list[Path] = field(default_factory=list)


_state = _State()


def install(role: str = "job") -> None:
    """Handle SIGINT and SIGTERM in this process from now on (main thread only; a launcher stays a launcher)."""
    if role not in ("launcher", "job"):
        raise ValueError(f"role must be 'launcher' or 'job', got {role!r}")
    if threading.current_thread() is not threading.main_thread() or _state.role in (role, "launcher"):
        return
    _state.role = role
    for signum in SIGNALS:
        signal.signal(signum, _handle)


def received() -> int | None:
    """The first SIGINT/SIGTERM this process received, if any."""
    return _state.received


def exit_code(exc: BaseException | None = None, default: int = 130) -> int:
    """128 + the signal that stopped this process (or that `exc` carries); `default` for a plain KeyboardInterrupt."""
    if _state.received is not None:
        return 128 + _state.received
    if isinstance(exc, JobInterrupted):
        return exc.exit_code
    return default


def watch_sweep(sweep_dir: str | os.PathLike[str]) -> None:
    """A launcher's sweep folder: on a signal it stops the sweep's jobs there. A stop left by an earlier,
    interrupted launch into the same folder is cleared."""
    path = Path(sweep_dir).absolute()
    with contextlib.suppress(FileNotFoundError):
        (path / JOBS_DIR / STOP_FILE).unlink()
    if path not in _state.sweep_dirs:
        _state.sweep_dirs.append(path)


@contextlib.contextmanager
def job(sweep_dir: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """One job's lifetime in this process: it refuses to start after a stop, and is announced in `sweep_dir`.

    Inside, the first SIGINT/SIGTERM raises `JobInterrupted` (held while `deferred()`).
    """
    if _state.received is not None:
        raise JobInterrupted(_state.received)
    stopped = _stopped(Path(sweep_dir)) if sweep_dir else None
    if stopped is not None:  # the launcher was interrupted: no new job, in this process or any other
        raise JobInterrupted(stopped)
    marker = _announce(Path(sweep_dir)) if sweep_dir else None
    _state.in_job, _state.raised_in_job, _state.pending = True, False, None
    try:
        yield
    finally:
        _state.in_job = False
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold an interruption until the block ends: what starts in it (a run's creation, its record, the closing of
    a sweep's parent) completes."""
    _state.deferred += 1
    try:
        yield
    finally:
        _state.deferred -= 1
    # Reached only when the block ended normally; with an exception in flight that exception goes on, and the
    # signal stays remembered in `received`, so the next job of this process does not start.
    if _state.deferred == 0 and _state.pending is not None:
        signum, _state.pending = _state.pending, None
        raise JobInterrupted(signum)


def _handle(signum: int, frame: object) -> None:
    if _state.received is None:
        _state.received = signum
    _state.count += 1
    if _state.role == "launcher" and _state.count >= 3:
        compat.exit_at_once(128 + signum)
    if _state.exiting or (_state.in_job and _state.raised_in_job):
        return  # on the way out already, or the job is writing its run's record
    if _state.deferred:
        _state.pending = _state.pending or signum
        return
    if _state.in_job:
        _state.raised_in_job = True
        raise JobInterrupted(signum)
    if _state.role != "launcher":
        return  # a worker between jobs: `job()` refuses the next one
    if _state.waiting:
        _state.waiting = False
        print("interrupted again: not waiting for the running jobs", file=sys.stderr, flush=True)
        raise JobInterrupted(signum)
    _forward(signum)
    _wait_for_jobs(GRACE_S)
    raise JobInterrupted(signum)


def exiting() -> None:
    """This process is on its way out (closing the sweep, exiting): later signals are not raised (a launcher's
    third one still exits at once)."""
    _state.exiting = True


# -- the launcher's side ------------------------------------------------------------------------------
def _announce(sweep_dir: Path) -> Path:
    """Mark this process as running a job of the sweep (`running/`, until the job ends) and as one of its
    workers (`workers/`, for good)."""
    host, pid = socket.gethostname(), os.getpid()
    entry = json.dumps({"host": host, "pid": pid})
    for kind in ("workers", "running"):
        folder = sweep_dir / JOBS_DIR / kind
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / f"{host}-{pid}.json"
        if kind == "running" or not marker.exists():
            marker.write_text(entry, encoding="utf-8")
    return marker


def _announced_here(kind: str = "running") -> list[int]:
    """Pids announced in the watched sweep folders (`running` jobs or `workers`) on this host that are alive."""
    from descentlab.tracking.liveness import process_alive  # stdlib only: the check `tracking.repair` makes

    host, pids = socket.gethostname(), []
    for folder in _state.sweep_dirs:
        for marker in (folder / JOBS_DIR / kind).glob("*.json"):
            try:
                entry = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # removed meanwhile, or half written: its job is starting or gone
            pid = entry.get("pid")
            if entry.get("host") == host and isinstance(pid, int) and pid != os.getpid() and process_alive(pid):
                pids.append(pid)
    return pids


def _stopped(sweep_dir: Path) -> int | None:
    """The signal that stopped the sweep in `sweep_dir` (its launcher wrote `.jobs/stop`), or None."""
    try:
        entry = json.loads((sweep_dir / JOBS_DIR / STOP_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return signal.SIGINT  # being written: a stop all the same
    signum = entry.get("signal") if isinstance(entry, dict) else None
    return signum if signum in SIGNALS else signal.SIGINT


def _forward(signum: int) -> None:
    """Stop the sweep: no worker starts another job (`.jobs/stop`, which every job checks before it starts), and
    the running jobs announced on this host get the signal.

    Only those: other processes of the command (a pool's idle workers, submitit's local controller) either got it
    from the terminal already or must not get it twice (submitit's controller kills its tasks 1 s after a SIGINT).
    """
    for folder in _state.sweep_dirs:
        with contextlib.suppress(OSError):
            (folder / JOBS_DIR).mkdir(parents=True, exist_ok=True)
            (folder / JOBS_DIR / STOP_FILE).write_text(json.dumps({"signal": int(signum), "pid": os.getpid(),
                                                                   "host": socket.gethostname()}), encoding="utf-8")
    for pid in _announced_here():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _wait_for_jobs(timeout: float) -> None:
    """Until no announced job on this host is alive (they are closing their runs), or `timeout` s."""
    deadline = time.monotonic() + timeout
    running = _announced_here()
    if running:
        name = signal.Signals(_state.received or signal.SIGINT).name
        print(f"interrupted ({name}): waiting up to {timeout:.0f} s for {len(running)} running job(s) to record "
              "their runs (press Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)
    _state.waiting = True
    try:
        while running and time.monotonic() < deadline:
            time.sleep(POLL_S)
            running = _announced_here()
    finally:
        _state.waiting = False


def stop_workers(grace_s: float = 5.0) -> list[int]:
    """Kill the sweep's workers that are still alive after `grace_s` s; returns the pids that had to be killed.

    Called on the way out of an interrupted sweep, so that no worker outlives it: the child processes (of any
    depth) that ran one of its jobs. Helpers of a pool that never ran a job (loky's resource tracker) end with
    this process and are left alone.
    """
    import psutil

    announced = set(_announced_here("workers"))  # alive ones: a pool's dead workers are its own to reap
    workers = [p for p in psutil.Process().children(recursive=True) if p.pid in announced]
    _, alive = psutil.wait_procs(workers, timeout=grace_s) if workers else ([], [])
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if alive:
        psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in alive]


# -- a process that starts train.py ------------------------------------------------------------------
def run_child(args: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> int:
    """Run a command in its own session, pass each SIGINT/SIGTERM on to it, and return its exit code.

    Why its own session: a terminal's Ctrl-C would reach it directly *and* through us, and a second Ctrl-C tells
    a launcher to stop waiting for its jobs. Python's `subprocess.run` kills the child 0.25 s after a Ctrl-C.
    """
    import subprocess

    proc = subprocess.Popen(list(args), cwd=cwd, start_new_session=True)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
