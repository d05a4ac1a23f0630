"""The state file `DIR/server.json`: what was started in a data folder, so `status` and `stop` find it later.

Why a file: the start command exits while the servers keep running, and a later command (another shell, a test's
teardown) must find their pids. Each pid is stored with its process's start time, so a pid reused by an unrelated
process after a reboot is never taken for ours (and never signalled).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

STATE_NAME = "server.json"
LOCK_NAME = "server.lock"


@dataclass
class Proc:
    """A process we started: its pid and its start time (psutil's `create_time`), to tell it from a reused pid."""

    pid: int
    started: float

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    def alive(self) -> bool:
        """The same process still exists and is not a zombie (our parent may not reap it)."""
        try:
            proc = psutil.Process(self.pid)
            return abs(proc.create_time() - self.started) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


@dataclass
class State:
    """What a data folder's servers are (or were last) configured as; pids only while they run."""

    backend: str = "postgresql"
    host: str = "127.0.0.1"
    port: int = 5000
    db_port: int | None = None
    postgres: Proc | None = None
    mlflow: Proc | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> State:
        procs = {k: Proc(**v) if isinstance(v, dict) else None for k, v in raw.items() if k in ("postgres", "mlflow")}
        plain = {k: v for k, v in raw.items() if k in ("backend", "host", "port", "db_port", "extra")}
        return cls(**plain, **procs)  # type: ignore[arg-type]


def load(data: Path) -> State | None:
    """The folder's state, or None when no server was ever started there (or the file is unreadable)."""
    try:
        return State.from_dict(json.loads((data / STATE_NAME).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def save(data: Path, state: State) -> None:
    """Write atomically: a reader never sees half a file."""
    tmp = data / f".{STATE_NAME}.{os.getpid()}.tmp"
    tmp.write_text(state.to_json())
    os.replace(tmp, data / STATE_NAME)


@contextlib.contextmanager
def locked(data: Path) -> Iterator[None]:
    """One start/stop at a time per data folder (two starts at once would both initialise PostgreSQL)."""
    data.mkdir(parents=True, exist_ok=True)
    with open(data / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
