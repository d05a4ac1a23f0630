"""Riding out a tracking store that is briefly away: retries with exponential backoff and jitter, bounded in time.

Two faults are transient: a tracking server that restarts (connection refused, 5xx) and a SQLite file
locked by other writers ("database is locked", which MLflow reports as TEMPORARILY_UNAVAILABLE).
`RetryingClient` wraps an `MlflowClient`: each call is retried until `tracking.retry_s`
seconds (120 by default) have passed. Once a call has given up, later calls get a single attempt until
one succeeds, so a run whose server stays away fails in one retry window, not one per call.

MLflow's REST client retries by itself for ~4 minutes per call (7 retries, backoff factor 2), which would
swamp that bound: `bound_mlflow_http_retries` lowers its defaults (2 retries, factor 1, 30 s timeout)
unless the MLFLOW_HTTP_REQUEST_* variables are already set.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["RetryPolicy", "RetryingClient", "bound_mlflow_http_retries", "is_transient", "retry_call"]

_log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_RETRY_S = 120.0
# MLflow error codes worth retrying: server/database trouble, not a bad request.
TRANSIENT_CODES = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED",
                             "DEADLINE_EXCEEDED", "ABORTED", "SERVICE_UNAVAILABLE"})
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def bound_mlflow_http_retries() -> None:
    """Cap MLflow's own per-request retries (~4 min by default) so our time bound holds; user settings win."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


@dataclass(frozen=True)
class RetryPolicy:
    """Retry for `deadline_s` seconds in all, waiting first_wait_s, 2x, 4x, ... up to max_wait_s, each ±50% jitter."""

    deadline_s: float = DEFAULT_RETRY_S
    first_wait_s: float = 0.5
    max_wait_s: float = 10.0

    def waits(self) -> Any:
        wait = self.first_wait_s
        while True:
            yield wait * random.uniform(0.5, 1.5)  # jitter: parallel writers do not retry in lockstep
            wait = min(wait * 2, self.max_wait_s)


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or an exception it wraps) says the store is away or busy, not that the request is wrong."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionError | TimeoutError | sqlite3.OperationalError):
            return True
        module = type(cur).__module__
        if module.startswith(("requests", "urllib3")) or type(cur).__name__ == "OperationalError":
            return True
        code = getattr(cur, "error_code", None)
        if module.startswith("mlflow") and code is not None:
            return code in TRANSIENT_CODES
        cur = cur.__cause__ or cur.__context__
    return False


def retry_call(fn: Callable[[], T], policy: RetryPolicy, what: str = "tracking call") -> T:
    """`fn()`, retried on transient errors until `policy.deadline_s` has passed; the last error is raised."""
    deadline = time.monotonic() + policy.deadline_s
    waits = policy.waits()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            wait = min(next(waits), left)
            _log.warning("%s failed (attempt %d: %s); retrying in %.1f s", what, attempt,
                         str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__, wait)
            time.sleep(wait)


class RetryingClient:
    """An MlflowClient whose methods retry transient failures (see the module doc); attributes pass through."""

    def __init__(self, client: Any, policy: RetryPolicy | None = None) -> None:
        self.client = client
        self.policy = policy or RetryPolicy()
        self.outage_since: float | None = None  # monotonic time the last call gave up; None when the store answers

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.retrying(lambda: attr(*args, **kwargs), f"MLflow {name}")

        return call

    def retrying(self, fn: Callable[[], T], what: str) -> T:
        """`fn()` under this client's policy (no waiting once an outage has been declared)."""
        policy = self.policy if self.outage_since is None else RetryPolicy(deadline_s=0.0)
        try:
            result = retry_call(fn, policy, what)
        except Exception as exc:
            if is_transient(exc) and self.outage_since is None:
                self.outage_since = time.monotonic()
            raise
        self.outage_since = None
        return result

    @property
    def raw(self) -> Any:
        """The wrapped client, for calls that must not wait (the heartbeat)."""
        return self.client
