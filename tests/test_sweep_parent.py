"""One parent run per sweep where the jobs do not share the sweep folder (Ray, SLURM without shared storage).

The launching process creates the parent for a server or database store (`tracking.sweep_parent=auto`, or
`launcher`); a job whose folder holds no state file finds it in the store by its `sweep.dir` tag, the sweep folder
as the launching process names it (`hydra.runtime.cwd` + `hydra.sweep.dir`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline: telemetry once broke a request

from descentlab.data.idx_specs import cache_root
from descentlab.tracking.run import RunTracker
from descentlab.tracking.settings import SqliteSettings, TrackingSettings
from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store, resolve_tracking_uri
from descentlab.tracking.sweep import STATE_FILE, finish_parent, get_or_create_parent, read_sweep_state
from descentlab.tracking.sweep_description import SWEEP_DIR_TAG

REPO = Path(__file__).resolve().parents[1]
SQLITE = SqliteSettings(template_dir=str(cache_root()))


@pytest.fixture
def client_and_experiment(tmp_path: Path):
    uri = resolve_tracking_uri(None, tmp_path / "store")
    client = open_store(uri, SQLITE)
    return client, get_or_create_experiment(client, "parents", artifact_root_for(uri))


def test_a_job_whose_folder_holds_no_state_joins_the_parent_by_its_key(client_and_experiment, tmp_path: Path) -> None:
    client, exp = client_and_experiment
    key = str(tmp_path / "launcher" / "multirun" / "0")
    made = get_or_create_parent(client, exp, tmp_path / "launcher" / "multirun" / "0", key)
    other_node = tmp_path / "node2" / "multirun" / "0"  # the same sweep, another node's disk
    joined = get_or_create_parent(client, exp, other_node, key)
    assert joined == made
    assert read_sweep_state(other_node)["parent_run_id"] == made  # that node's next jobs read the file
    assert client.get_run(made).data.tags[SWEEP_DIR_TAG] == key
    parents = [r for r in client.search_runs([exp]) if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [made]


def test_another_sweeps_key_makes_another_parent(client_and_experiment, tmp_path: Path) -> None:
    client, exp = client_and_experiment
    first = get_or_create_parent(client, exp, tmp_path / "a", str(tmp_path / "sweep-a"))
    second = get_or_create_parent(client, exp, tmp_path / "b", str(tmp_path / "sweep-b"))
    assert first != second
    assert client.get_run(second).data.tags[SWEEP_DIR_TAG] == str(tmp_path / "sweep-b")


def test_an_eager_parent_no_job_joined_is_deleted_when_the_sweep_closes(client_and_experiment,
                                                                         tmp_path: Path) -> None:
    client, exp = client_and_experiment
    empty = get_or_create_parent(client, exp, tmp_path / "empty")
    assert finish_parent(client, tmp_path / "empty", drop_empty=True) is None
    assert client.get_run(empty).info.lifecycle_stage == "deleted"
    assert not (tmp_path / "empty" / STATE_FILE).exists()

    used = get_or_create_parent(client, exp, tmp_path / "used")
    child = RunTracker(client, exp, "child", tags={"config_hash": "h"}, parent_run_id=used).start()
    child.finish("FINISHED")
    summary = finish_parent(client, tmp_path / "used", drop_empty=True)
    assert summary is not None and summary["finished"] == 1 and summary["status"] == "FINISHED"
    assert client.get_run(used).info.status == "FINISHED"


def test_an_interrupted_eager_parent_is_kept_killed(client_and_experiment, tmp_path: Path) -> None:
    client, exp = client_and_experiment
    parent = get_or_create_parent(client, exp, tmp_path / "s")
    summary = finish_parent(client, tmp_path / "s", status="KILLED", drop_empty=True)
    assert summary is not None and summary["status"] == "KILLED"
    assert client.get_run(parent).info.status == "KILLED"


@pytest.mark.parametrize(("uri", "mode", "expected"), [
    ("sqlite:////tmp/x/mlflow.db", "auto", False),
    ("http://127.0.0.1:5000", "auto", True),
    ("postgresql+psycopg2://u@127.0.0.1:5432/mlflow", "auto", True),
    ("sqlite:////tmp/x/mlflow.db", "launcher", True),
    ("http://127.0.0.1:5000", "first_job", False),
])
def test_who_creates_the_parent(uri: str, mode: str, expected: bool) -> None:
    assert TrackingSettings(uri=uri, sweep_parent=mode).parent_by_launcher() is expected


def _compose(tmp_path: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from descentlab.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_the_launcher_makes_the_parent_and_a_job_elsewhere_joins_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole path in one process: the callback (launcher side) in folder L, a job whose working directory is
    another folder N (its own disk: no state file, no description), its run under the launcher's parent."""
    from hydra.core.hydra_config import HydraConfig

    from descentlab import app, callbacks

    launcher_dir, node_dir = tmp_path / "launcher", tmp_path / "node"
    launcher_dir.mkdir()
    node_dir.mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    overrides = [f"tracking.uri={uri}", "tracking.sweep_parent=launcher", "training.iterations=20",
                 "training.eval_every=10", "training.progress=false", "dataset=digits", "model=mlp_2x50",
                 "hydra.sweep.dir=multirun/s1"]
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.chdir(launcher_dir)
    cfg = _compose(tmp_path, overrides)
    callbacks.SweepCallback().on_multirun_start(cfg)
    state = read_sweep_state(launcher_dir / "multirun" / "s1")
    assert state is not None  # the parent exists before any job
    parent_id = state["parent_run_id"]

    monkeypatch.chdir(node_dir)  # another node: the same config, composed by the launching process
    with open_dict(cfg):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.job.num = 0
        cfg.hydra.runtime.output_dir = str(node_dir / "multirun" / "s1" / "0")
    HydraConfig.instance().set_config(cfg)
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        result = app.run(job_cfg)
        summary = callbacks.close_open_sweep()
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]
    assert result["status"] == "FINISHED"
    assert read_sweep_state(node_dir / "multirun" / "s1")["parent_run_id"] == parent_id
    client = open_store(uri, SQLITE)
    run = client.get_run(result["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert run.data.tags["hydra.sweep_dir"] == str(launcher_dir / "multirun" / "s1")  # as its parent names it
    assert summary is not None and summary["parent_run_id"] == parent_id and summary["finished"] == 1
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[SWEEP_DIR_TAG] == str(launcher_dir / "multirun" / "s1")


def test_a_failed_launch_never_leaves_a_finished_parent(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job lost before it could create its run (a worker killed by a scheduler) leaves no run to count: the
    parent must still end FAILED when the launch failed, not FINISHED from the runs that did finish."""
    from descentlab import app

    real = app.make_task

    def lost_for_adam(settings):
        if settings.optimizer.name == "adam":
            raise RuntimeError("worker lost")
        return real(settings)

    monkeypatch.setattr(app, "make_task", lost_for_adam)
    result = store.train_in_process("-m", "optimizer=sgd,adam", "training.iterations=10", "training.eval_every=5",
                                    "dataset=digits", "model=mlp_2x50", "training.progress=false")
    assert result.returncode != 0 and "worker lost" in result.stderr
    runs = store.runs()
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in children] == ["FINISHED"]
    assert [r.info.status for r in parents] == ["FAILED"]
