"""What the launching process of a sweep does without mlflow: the store from a schema template, a fast exit."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # each test starts a fresh interpreter (what it imports is the point): --all-tiers

REPO = Path(__file__).resolve().parent.parent


def _python(code: str, tmp_path: Path, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "DESCENTLAB_"))}
    full_env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DESCENTLAB_CACHE_DIR": str(tmp_path / "cache"), **env})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd or tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose cache holds the schema template (built once, by MLflow, as prepare_store does)."""
    root = tmp_path_factory.mktemp("startup")
    (root / "elsewhere").mkdir()  # MLflow's defaults depend on the cwd: build the template from another one
    proc = _python(f"""
        from descentlab.tracking.settings import SqliteSettings
        from descentlab.tracking.store import prepare_store
        prepare_store("sqlite:///{root}/first/mlflow.db", SqliteSettings(template_dir="{root / 'cache'}"))
    """, root, cwd=root / "elsewhere")
    assert proc.returncode == 0, proc.stderr
    assert len(list((root / "cache").glob("mlflow-empty-*.db"))) == 1
    return root


def test_prepare_store_copies_the_template_without_importing_mlflow(cache: Path) -> None:
    proc = _python(f"""
        import sys
        from descentlab.tracking.settings import SqliteSettings
        from descentlab.tracking.store import needs_schema_creation, prepare_store
        prepare_store("sqlite:///second/mlflow.db", SqliteSettings(template_dir="{cache / 'cache'}"))
        assert not needs_schema_creation("sqlite:///second/mlflow.db")
        print("mlflow imported:", "mlflow" in sys.modules)
    """, cache)
    assert proc.returncode == 0, proc.stderr
    assert "mlflow imported: False" in proc.stdout
    db = cache / "second" / "mlflow.db"
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT count(*) FROM experiments").fetchone()[0] == 0  # MLflow adds Default itself
    finally:
        con.close()


def test_a_store_made_from_the_template_is_one_mlflow_accepts(cache: Path) -> None:
    """MLflow checks the schema revision when it opens a store: a stale template would fail here."""
    proc = _python(f"""
        from descentlab.tracking.settings import SqliteSettings
        from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store
        uri = "sqlite:///third/mlflow.db"
        client = open_store(uri, SqliteSettings(template_dir="{cache / 'cache'}"))
        default = client.get_experiment("0")
        exp = get_or_create_experiment(client, "e", artifact_root_for(uri))
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "train/loss", 0.5, step=3)
        client.set_terminated(run.info.run_id)
        print(default.name, default.artifact_location)
        print(client.get_run(run.info.run_id).data.metrics)
    """, cache)
    assert proc.returncode == 0, proc.stderr
    assert "Creating initial MLflow database tables" not in proc.stderr  # no migrations ran: the copy was used
    default_line, metrics_line = proc.stdout.strip().splitlines()
    assert default_line == f"Default {cache}/mlruns/0"  # MLflow's own default, not the template builder's
    assert metrics_line == "{'train/loss': 0.5}"


def test_without_the_template_mlflow_builds_the_schema(tmp_path: Path) -> None:
    """tracking.sqlite.schema_template=false: no template is built or used, MLflow's migrations make the schema."""
    proc = _python(f"""
        from descentlab.tracking.settings import SqliteSettings
        from descentlab.tracking.store import needs_schema_creation, open_store, prepare_store
        sqlite = SqliteSettings(schema_template=False, template_dir="{tmp_path / 'cache'}")
        prepare_store("sqlite:///s/mlflow.db", sqlite)
        assert needs_schema_creation("sqlite:///s/mlflow.db")
        open_store("sqlite:///s/mlflow.db", sqlite).search_experiments()
        assert not needs_schema_creation("sqlite:///s/mlflow.db")
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "cache").exists()
    assert "Creating initial MLflow database tables" in proc.stderr


def test_sweep_callback_prepares_the_store_without_mlflow(cache: Path) -> None:
    proc = _python(f"""
        import sys
        from hydra import compose, initialize_config_dir
        from descentlab.config import register_schemas
        from descentlab import callbacks
        register_schemas()
        with initialize_config_dir(config_dir="{REPO / 'conf'}", version_base="1.3"):
            cfg = compose("config", overrides=["tracking.uri=sqlite:///cb/mlflow.db"], return_hydra_config=True)
        callbacks.SweepCallback().on_multirun_start(cfg)
        print("mlflow imported:", "mlflow" in sys.modules)
        print(callbacks.close_open_sweep(None))  # no job ran: no parent to close
    """, cache)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["mlflow imported: False", "None"]
    assert (cache / "cb" / "mlflow.db").is_file()

