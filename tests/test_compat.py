"""The private library APIs descentlab.compat relies on still exist and behave as it assumes."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from descentlab import compat

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120)


# ----------------------------------------------------------------------------------------------- hydra


def test_basic_launcher_target_is_what_hydra_launcher_basic_names() -> None:
    from hydra import compose, initialize_config_dir

    from descentlab.config import register_schemas

    register_schemas()
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=basic"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == compat.HYDRA_BASIC_LAUNCHER
    module, name = compat.HYDRA_BASIC_LAUNCHER.rsplit(".", 1)
    assert isinstance(getattr(importlib.import_module(module), name), type)


def test_callbacks_check_runs_before_hydra_builds_callbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra._internal import callbacks

    monkeypatch.setattr(callbacks.Callbacks, "__init__", callbacks.Callbacks.__init__)  # undone after the test
    seen: list[object] = []

    def refuse(config: object) -> None:
        seen.append(config)
        raise ValueError("refused")

    compat.check_hydra_callbacks_with(refuse)
    compat.check_hydra_callbacks_with(refuse)  # idempotent: wrapped once
    config = OmegaConf.create({"hydra": {"callbacks": {}}})
    with pytest.raises(ValueError, match="refused"):
        callbacks.Callbacks(config)
    assert seen == [config]


def test_joblib_launcher_kwargs_are_what_the_plugin_passes_to_parallel() -> None:
    import inspect

    from hydra_plugins.hydra_joblib_launcher import _core

    kwargs = compat.joblib_launcher_kwargs({"_target_": "x", "n_jobs": 2, "backend": None, "prefer": "processes",
                                            "require": None, "verbose": 0, "timeout": None,
                                            "pre_dispatch": "2*n_jobs", "batch_size": "auto",
                                            "temp_folder": None, "max_nbytes": None, "mmap_mode": "r"})
    assert kwargs["backend"] == "loky" and kwargs["n_jobs"] == 2 and "_target_" not in kwargs
    source = inspect.getsource(_core.launch)  # the plugin still builds Parallel's arguments this way
    assert "process_joblib_cfg(joblib_cfg)" in source
    assert 'joblib_cfg["backend"] = "loky"' in source

# ------------------------------------------------------------------------------------------ joblib/loky


def test_stop_idle_loky_workers_ends_the_reusable_executors_processes() -> None:
    result = _python("""
        import psutil
        from joblib import Parallel, delayed
        from joblib.externals.loky import reusable_executor
        from descentlab import compat
        import os
        pids = set(Parallel(n_jobs=2, backend="loky")(delayed(os.getpid)() for _ in range(4)))
        assert reusable_executor._executor is not None
        compat.stop_idle_loky_workers()
        print(len(pids), sum(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids))
    """)
    assert result.returncode == 0, result.stderr
    n_workers, alive = map(int, result.stdout.split())
    assert n_workers >= 1 and alive == 0

# ---------------------------------------------------------------------------------------------- mlflow

# --------------------------------------------------------------------------------------------- CPython


def test_exit_at_once_skips_atexit() -> None:
    result = _python("""
        import atexit
        from descentlab import compat
        atexit.register(lambda: print("atexit ran"))
        compat.exit_at_once(130)
    """)
    assert result.returncode == 130 and "atexit ran" not in result.stdout
