"""tracking.settings and tracking.session: typed knobs (validated by the config: tests/test_settings.py), and the
facade a job uses (open the store, skip finished work, find the sweep's parent, start a run with the settings'
policy)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from descentlab.data.idx_specs import cache_root
from descentlab.tracking.session import TrackingSession
from descentlab.tracking.settings import SqliteSettings, TrackingSettings

SQLITE = SqliteSettings(template_dir=str(cache_root()))


def test_defaults_match_the_documented_values() -> None:
    settings = TrackingSettings()
    assert (settings.heartbeat_s, settings.stale_after_s, settings.retry_s) == (30.0, 300.0, 120.0)
    assert (settings.sqlite.wal, settings.sqlite.synchronous, settings.sqlite.template_folder) == (True, "normal", None)
    assert SqliteSettings(template_dir="/c", schema_template=False).template_folder is None


def test_uri_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit > MLFLOW_TRACKING_URI > sqlite under store_dir; a later change of cwd or variable changes nothing."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    default = TrackingSettings(store_dir="runs")
    assert default.resolved_uri() == f"sqlite:///{tmp_path}/runs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example.org")
    monkeypatch.chdir(tmp_path.parent)
    assert default.resolved_uri() == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert TrackingSettings().resolved_uri() == "http://tracking.example.org"
    assert TrackingSettings(uri="sqlite:///x.db").resolved_uri() == f"sqlite:///{tmp_path.parent}/x.db"


def test_settings_import_no_mlflow() -> None:
    src = Path(__file__).resolve().parent.parent / "src"
    code = "import sys, descentlab.tracking.settings as s; s.TrackingSettings(); print('mlflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_session_opens_skips_parents_and_starts_runs_with_its_settings(tmp_path: Path) -> None:
    settings = TrackingSettings(uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", experiment="session",
                                flush_every=7, flush_seconds=3.0, store_every=2, heartbeat_s=5.0, retry_s=0.0,
                                sqlite=SQLITE)
    session = TrackingSession.open(settings)
    assert session.uri == settings.resolved_uri()
    assert session.client.get_experiment(session.experiment_id).name == "session"
    assert TrackingSession.open(settings).experiment_id == session.experiment_id  # found, not created again
    assert session.find_finished("abc") is None

    parent = session.parent_run(str(tmp_path / "sweep"))
    assert session.parent_run(str(tmp_path / "sweep")) == parent  # one per sweep folder
    run = session.new_run("job", tags={"config_hash": "abc"}, parent_run_id=parent, spill_dir=str(tmp_path / "job"))
    assert (run.flush_every, run.flush_seconds, run.store_every, run.heartbeat_s) == (7, 3.0, 2, 5.0)
    assert run.client.policy.deadline_s == 0.0 and run.spill_dir == str(tmp_path / "job")
    with run:
        run.log_series("train/loss", 0, [1.0, 0.5, 0.25])
    stored = session.client.get_run(run.run_id)
    assert stored.data.tags["mlflow.parentRunId"] == parent and stored.info.status == "FINISHED"
    assert sorted(m.step for m in session.client.get_metric_history(run.run_id, "train/loss")) == [0, 2]  # store_every
    assert session.find_finished("abc") == run.run_id
