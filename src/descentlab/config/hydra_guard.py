"""Hydra may instantiate only descentlab classes from a config: `check_targets` put in front of its callbacks."""

from __future__ import annotations

from descentlab import compat
from descentlab.config.checks import check_targets


def restrict_targets() -> None:
    """Make Hydra run `check_targets` before it instantiates the `hydra.callbacks` of a config.

    Hydra builds its callbacks before our job function runs and has no public hook there
    (`compat.check_hydra_callbacks_with`). Idempotent. The job's own config is also checked in `validate`, for
    per-job sweep overrides.
    """
    compat.check_hydra_callbacks_with(check_targets)
