"""Process-level behaviour of `train.py`: one readable line and a non-zero exit for bad input.

Hydra prints composition errors over several lines plus a hint; here the same error becomes a single
`error: ...` line (set HYDRA_FULL_ERROR=1 for the full traceback). A sweep whose parent run is still open
when the process fails is closed, so nothing is left RUNNING.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable

from descentlab import startup
from descentlab.errors import LaunchRefused, input_errors, one_line

# A full disk (or a file-size limit) mid-run: the run is already marked FAILED by its tracker; say so in one line.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def guarded_main(main: Callable[[], object]) -> None:
    """Run a `@hydra.main` function; turn known errors into one line and exit code 2."""
    startup.pause()  # no full collections while mlflow & co. load (~0.5 s); see descentlab.startup
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's multi-line report
    from descentlab import interrupts
    from descentlab.callbacks import close_open_sweep

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
        # The launch failed: the sweep did not finish, even when every run it recorded did (a job lost before it
        # could create its run, e.g. a worker killed by a scheduler, leaves no run to count).
        summary = close_open_sweep(status="FAILED")
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


def _interrupted(exc: BaseException) -> None:
    """SIGINT/SIGTERM ended the command: close the sweep's parent KILLED, leave no worker behind, exit 128 + signal."""
    from descentlab import interrupts
    from descentlab.callbacks import close_open_sweep

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

