"""Process-level behaviour of `train.py`: one readable line and a non-zero exit for bad input.

Hydra prints composition errors over several lines plus a hint; here the same error becomes a single
`error: ...` line (set HYDRA_FULL_ERROR=1 for the full traceback). A sweep whose parent run is still open
when the process fails is closed, so nothing is left RUNNING.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from descentlab import startup
from descentlab.errors import LaunchRefused, input_errors, one_line

# A full disk (or a file-size limit) mid-run: the run is already marked FAILED by its tracker; say so in one line.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def guarded_main(main: Callable[[], object], entry_file: str) -> None:
    """Run a `@hydra.main` function; turn known errors into one line and exit code 2."""
    startup.pause()  # no full collections while mlflow & co. load (~0.5 s); see descentlab.startup
    # The store defaults to <repo>/mlruns, the folder of train.py, whatever the working directory.
    os.environ.setdefault("DESCENTLAB_ROOT", str(Path(entry_file).resolve().parent))
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    from descentlab import interrupts
    from descentlab.tracking.callbacks import close_open_sweep

    interrupts.install("launcher")  # SIGINT/SIGTERM: jobs end KILLED with their points, then the sweep stops
    try:
        main()
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    except SystemExit:
        interrupts.exiting()
        close_open_sweep()
        raise
    except BaseException as raised:
        if interrupts.received() is not None:  # e.g. a pool reporting a worker that the signal stopped
            _interrupted(raised)
        interrupts.exiting()
        exc = raised.error if isinstance(raised, LaunchRefused) else raised
        summary = close_open_sweep()
        if full_error or not (isinstance(exc, input_errors()) or _storage_error(exc)):
            if exc is raised:
                raise
            raise exc from None  # what a Hydra callback refused (LaunchRefused only carried it past Hydra)
        if summary and summary.get("rejections") and not _storage_error(exc):
            sys.exit(2)  # the closing `sweep:` line named every rejected job and why
        if _storage_error(exc):
            print(f"error: out of disk space or over the file-size limit: {one_line(exc)}; free space and run "
                  "the command again (FINISHED runs are skipped)", file=sys.stderr)
            sys.exit(2)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    if os.environ.get("DESCENTLAB_FAST_EXIT", "1").strip().lower() not in ("0", "false", "no", "off"):
        exit_now(0)


def _interrupted(exc: BaseException) -> None:
    """SIGINT/SIGTERM ended the command: close the sweep's parent KILLED, leave no worker behind, exit 128 + signal."""
    from descentlab import interrupts
    from descentlab.tracking.callbacks import close_open_sweep

    code = interrupts.exit_code(exc)
    interrupts.exiting()
    try:
        close_open_sweep(status="KILLED")
    finally:
        killed = interrupts.stop_workers()
        name = signal.Signals(code - 128).name
        extra = f"; {len(killed)} leftover worker process(es) killed" if killed else ""
        print(f"interrupted ({name}){extra}", file=sys.stderr, flush=True)
    sys.exit(code)


def exit_now(code: int) -> None:
    """Exit without the interpreter's module teardown: ~1 s once mlflow's ~2,300 modules are loaded.

    Everything a normal exit does that matters still happens, in the same order: non-daemon threads are
    joined and thread-exit hooks run (loky stops its workers there), then `atexit` handlers (logging,
    MLflow's own), then the standard streams are flushed. Only garbage collection of module globals is
    skipped; every file and store write of descentlab is complete and committed by then.
    """
    t0 = time.perf_counter()
    stop_idle_workers()
    shutdown_threads = getattr(threading, "_shutdown", None)  # what Py_FinalizeEx calls first
    if shutdown_threads is None:
        sys.exit(code)
    shutdown_threads()
    t1 = time.perf_counter()
    atexit._run_exitfuncs()
    if os.environ.get("DESCENTLAB_TRACE_EXIT"):
        print(f"exit: workers and threads {t1 - t0:.3f} s, atexit {time.perf_counter() - t1:.3f} s", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def stop_idle_workers() -> None:
    """Stop joblib's (loky's) reusable worker processes at once, if this process started any.

    Called only after the sweep returned, so the workers are idle: every job and the parent run's
    closing have returned their results. loky's own exit handler asks each worker to finish and waits
    for its interpreter teardown (~2.5 s for two workers with mlflow loaded); killing idle workers
    loses nothing.
    """
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
