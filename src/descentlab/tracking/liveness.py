"""Who runs a run, and is it still alive: pid/host/start tags and a heartbeat tag refreshed off the training path.

A job killed with SIGKILL (OOM killer, a scheduler, a lost node) cannot close its run, which then stays
RUNNING forever. Each run therefore carries `process.pid`, `process.host`, `process.started_ms` and
`heartbeat_ms`; a daemon thread refreshes `heartbeat_ms` every `tracking.heartbeat_s` seconds (30 by
default: one small write per 30 s, nothing per iteration). `tracking.repair` reads them to tell a dead
run from a live one. No mlflow import here.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

__all__ = [
    "HEARTBEAT_TAG",
    "HOST_TAG",
    "PID_TAG",
    "STARTED_TAG",
    "Heartbeat",
    "liveness_tags",
    "process_alive",
]

_log = logging.getLogger(__name__)

PID_TAG = "process.pid"
HOST_TAG = "process.host"
STARTED_TAG = "process.started_ms"
HEARTBEAT_TAG = "heartbeat_ms"
DEFAULT_HEARTBEAT_S = 30.0
START_SLACK_S = 5.0  # a pid whose process started this long after the run did is a reused pid


def now_ms() -> int:
    return int(time.time() * 1000)


def liveness_tags() -> dict[str, str]:
    """The tags a run is created with: this process's pid, host and start time, and a first heartbeat."""
    now = str(now_ms())
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(), STARTED_TAG: now, HEARTBEAT_TAG: now}


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses


def _process_start_s(fields: list[str]) -> float | None:
    """When the process started (epoch seconds), from its stat fields and /proc/stat; None if unknown."""
    try:
        ticks = int(fields[19])  # field 22 of the line: start time in clock ticks after boot
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def process_alive(pid: int, started_ms: int | None = None) -> bool:
    """Whether process `pid` on this host still exists and is the one that started the run at `started_ms`.

    A zombie counts as dead; so does a live process that started after the run did (the pid was reused).
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    fields = _stat_fields(pid)
    if not fields:  # no /proc: existence is all we can tell
        return True
    if fields[0] in ("Z", "X"):  # a zombie
        return False
    if started_ms is not None:
        start = _process_start_s(fields)
        if start is not None and start > started_ms / 1000 + START_SLACK_S:
            return False
    return True


class Heartbeat:
    """A daemon thread that sets the run's heartbeat tag every `interval_s`; `stop()` before ending the run.

    Uses the plain client (no retries): a missed beat is harmless, the next one comes `interval_s` later.
    """

    def __init__(self, client: Any, run_id: str, interval_s: float = DEFAULT_HEARTBEAT_S) -> None:
        if not interval_s > 0:
            raise ValueError(f"tracking.heartbeat_s must be > 0 seconds, got {interval_s!r}")
        self.client = client
        self.run_id = run_id
        self.interval_s = float(interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id[:8]}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(now_ms()))
            except Exception as exc:  # the store is away: the tracker's own calls will report it
                _log.debug("heartbeat for run %s failed: %s", self.run_id, exc)

    def stop(self) -> None:
        """Stop beating and wait for a beat in flight, so no write follows the run's end."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
