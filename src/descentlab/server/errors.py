"""The two ways a server command fails: bad input (exit 2) and a start that did not come up (exit 1)."""

from __future__ import annotations


class ServerInputError(ValueError):
    """Bad input or a missing prerequisite (a port taken, no PostgreSQL binaries): one line, exit 2, nothing started."""


class ServerStartError(RuntimeError):
    """A server process did not come up; whatever was started for it has been stopped again."""
