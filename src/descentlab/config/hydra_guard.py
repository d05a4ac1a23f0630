"""Hydra may instantiate only descentlab classes from a config: `check_targets` put in front of its callbacks."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from descentlab.config.checks import check_targets


def restrict_targets() -> None:
    """Make Hydra check `check_targets` before it instantiates the `hydra.callbacks` of a config.

    Hydra builds its callbacks before our job function runs, so the check has to sit in front of
    `hydra._internal.callbacks.Callbacks` (Hydra 1.3). Idempotent. The job's own config is also checked
    in `validate`, for per-job sweep overrides.
    """
    from hydra._internal import callbacks

    init = callbacks.Callbacks.__init__
    if getattr(init, "descentlab_checked", False):
        return

    def checked_init(self: Any, config: DictConfig | None = None) -> None:
        if config is not None:
            check_targets(config)
        init(self, config)

    checked_init.descentlab_checked = True  # type: ignore[attr-defined]
    callbacks.Callbacks.__init__ = checked_init  # type: ignore[method-assign]


