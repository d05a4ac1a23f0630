"""app.run in one process, as a sweep worker runs its jobs: the data set is loaded once and cannot be changed
by a job, an untracked job builds no files, and a tracked job stores every loss the loop handed over."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from descentlab import app
from descentlab.config import register_schemas
from descentlab.tasks import classify, plots

CONF = Path(__file__).resolve().parent.parent / "conf"


def job_config(tmp_path: Path, *overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=["optimizer=adam", "training.iterations=250", "training.eval_every=100",
                                            "training.progress=false", "force=true",
                                            f"tracking.store_dir={tmp_path / 'mlruns'}", *overrides])


def test_jobs_of_one_process_share_a_read_only_data_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    classify.load_dataset.cache_clear()
    cfg = job_config(tmp_path, "tracking=none")

    def no_plot(*args, **kwargs):
        raise AssertionError("an untracked job must not draw a plot nobody keeps")

    monkeypatch.setattr(plots, "loss_curve_png", no_plot)
    assert app.run(cfg)["status"] == "FINISHED"
    assert app.run(job_config(tmp_path, "tracking=none", "optimizer=sgd"))["status"] == "FINISHED"
    info = classify.load_dataset.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    data = classify.load_dataset("mnist_5k", None, True, None)
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        data.x_train[0, 0] = 1.0
    assert not (tmp_path / "mlruns").exists()  # tracking=none: no store either


def test_the_first_job_loads_without_full_collections_and_trains_with_them(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from descentlab import startup

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(startup, "_first_job_done", False)  # as in a fresh worker process
    monkeypatch.setattr(startup, "_paused", False)
    gc.unfreeze()
    seen: list[tuple[bool, int]] = []
    execute = classify.ClassifyTask.execute

    def spy(self, *args, **kwargs):
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return execute(self, *args, **kwargs)

    monkeypatch.setattr(classify.ClassifyTask, "execute", spy)
    run = app._run

    def spy_run(cfg, job):
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        return run(cfg, job)

    monkeypatch.setattr(app, "_run", spy_run)
    try:
        assert app.run(job_config(tmp_path, "tracking=none"))["status"] == "FINISHED"
        after_first = gc.get_freeze_count()
        assert app.run(job_config(tmp_path, "tracking=none", "optimizer=sgd"))["status"] == "FINISHED"
        after_second = gc.get_freeze_count()
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
    (loading_collects, _), (training_collects, frozen_at_training), (second_loading, _), (second_training, _) = seen
    assert not loading_collects and training_collects  # paused while loading; collecting once the work starts
    assert frozen_at_training > 10_000  # what start-up loaded is frozen, out of later scans
    assert after_first >= frozen_at_training  # and what the first job loaded lazily (loky's gc.collect per task)
    assert second_loading and second_training  # a process's later jobs never pause the collector
    assert after_second <= after_first  # frozen once per process (frozen objects may still be freed)


def test_a_tracked_job_stores_every_loss_and_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = app.run(job_config(tmp_path))
    assert result["status"] == "FINISHED"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    history = client.get_metric_history(result["run_id"], "train/loss")
    assert sorted(m.step for m in history) == list(range(250))
    stamps = [m.timestamp for m in sorted(history, key=lambda m: m.step)]
    assert stamps == sorted(stamps)  # spread over each block, never backwards
    artifacts = {f.path for f in client.list_artifacts(result["run_id"])}
    assert {"loss_curve.png", "weights.npz", "metrics.csv", "config.yaml"} <= artifacts
    png = Path(client.download_artifacts(result["run_id"], "loss_curve.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics_csv = Path(client.download_artifacts(result["run_id"], "metrics.csv", str(tmp_path)))
    rows = [line.split(",") for line in metrics_csv.read_text().splitlines()[1:]]
    losses = {int(step): float(value) for step, key, value in rows if key == "train/loss"}
    stored = {m.step: m.value for m in history}
    assert losses == stored and np.all(np.isfinite(list(losses.values())))
