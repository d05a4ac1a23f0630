"""Every use of a library's private API, in one place (issue 16).

Each function here reaches into an internal of hydra, joblib/loky, mlflow or CPython that has no public
equivalent, says why, and has a test in tests/test_compat.py that fails when the library changes under it.
Nothing outside this module may touch a private attribute of those libraries.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

# ----------------------------------------------------------------------------------------------- hydra

# The `_target_` of hydra/launcher=basic: jobs run one after another in the launching process.
HYDRA_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def check_hydra_callbacks_with(check: Callable[[Any], None]) -> None:
    """Run `check(config)` before Hydra instantiates a config's `hydra.callbacks`.

    Hydra builds its callbacks (from `_target_` strings in the config) before any job function runs and offers
    no hook in front of that, so the check sits in front of `hydra._internal.callbacks.Callbacks.__init__`
    (Hydra 1.3). Idempotent.
    """
    from hydra._internal import callbacks

    init = callbacks.Callbacks.__init__
    if getattr(init, "descentlab_checked", False):
        return

    def checked_init(self: Any, config: Any = None) -> None:
        if config is not None:
            check(config)
        init(self, config)

    checked_init.descentlab_checked = True  # type: ignore[attr-defined]
    callbacks.Callbacks.__init__ = checked_init  # type: ignore[method-assign]


def joblib_launcher_kwargs(launcher: dict[str, Any]) -> dict[str, Any]:
    """The `joblib.Parallel` arguments hydra-joblib-launcher builds from its config (`hydra.launcher` minus
    `_target_`), so that work sent after the sweep reaches the same warm workers: joblib reuses its executor
    only for identical arguments. Mirrors `hydra_plugins.hydra_joblib_launcher._core.launch` (1.2).
    """
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    kwargs = {key: value for key, value in launcher.items() if key != "_target_"}
    kwargs["backend"] = "loky"  # what launch() passes besides the config
    process_joblib_cfg(kwargs)
    return kwargs

# ------------------------------------------------------------------------------------------ joblib/loky


def stop_idle_loky_workers() -> None:
    """Stop joblib's (loky's) reusable worker processes at once, if this process started any.

    Only for idle workers (the sweep has returned). loky's own exit handler asks each worker to finish and waits
    for its interpreter teardown; its module keeps the one reusable executor in a private global.
    """
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)

# ---------------------------------------------------------------------------------------------- mlflow

# --------------------------------------------------------------------------------------------- CPython


def exit_at_once(code: int) -> None:
    """Leave now, running nothing (`os._exit`): the third Ctrl-C, when waiting for the jobs is refused."""
    import os

    os._exit(code)
