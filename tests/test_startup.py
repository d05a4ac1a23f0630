"""The collector during a process's start-up: paused while modules load, resumed (and frozen) for the work."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from descentlab import startup

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process as if it had not run a job yet; the collector's state restored afterwards."""
    monkeypatch.setattr(startup, "_first_job_done", False)
    monkeypatch.setattr(startup, "_paused", False)
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_pause_then_resume_freezes_what_is_alive_and_collects_again(fresh: None) -> None:
    startup.pause()
    assert not gc.isenabled()
    startup.pause()  # twice: still one pause
    startup.resume()
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    assert frozen > 1_000
    startup.resume()  # nothing to resume: no second freeze
    assert gc.get_freeze_count() <= frozen


def test_resume_never_turns_on_a_collector_someone_else_turned_off(fresh: None) -> None:
    gc.disable()
    startup.pause()
    startup.resume()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_after_the_first_job_nothing_pauses_the_collector_again(fresh: None) -> None:
    startup.pause()
    startup.after_first_job()
    assert gc.isenabled() and gc.get_freeze_count() > 1_000
    frozen = gc.get_freeze_count()
    startup.pause()
    assert gc.isenabled()
    startup.after_first_job()
    assert gc.get_freeze_count() <= frozen


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "DESCENTLAB_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DESCENTLAB_CACHE_DIR": str(tmp_path / "cache")})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)


def test_the_entry_point_pauses_the_collector_before_the_job(tmp_path: Path) -> None:
    proc = _python("""
        import gc
        from descentlab.cli import guarded_main
        guarded_main(lambda: print("collecting:", gc.isenabled()))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["collecting: False"]


@pytest.mark.parametrize(("launcher", "resumed"), [("basic", False), ("parallel", True)])
def test_a_sweep_launcher_resumes_collection_unless_it_runs_the_jobs_itself(tmp_path: Path, launcher: str,
                                                                           resumed: bool) -> None:
    proc = _python(f"""
        import gc
        from hydra import compose, initialize_config_dir
        from descentlab import startup
        from descentlab.config import register_schemas
        from descentlab import callbacks
        register_schemas()
        with initialize_config_dir(config_dir="{REPO / 'conf'}", version_base="1.3"):
            cfg = compose("config", overrides=["hydra/launcher={launcher}", "tracking=none"],
                          return_hydra_config=True)
        startup.pause()
        callbacks.SweepCallback().on_multirun_start(cfg)
        print("collecting:", gc.isenabled(), "frozen:", gc.get_freeze_count() > 1000)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"collecting: {resumed} frozen: {resumed}"]
