"""The training subset and validation set a run carves out (`dataset.train_subset`, `dataset.validation`), the
validation metrics, the knobs' place in a run's identity, and the metrics a job hands back to a sweeper."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from conftest import compose_config
from descentlab import app
from descentlab.config import ConfigError, validate
from descentlab.config.identity import config_hash, run_params
from descentlab.data import carve, load_dataset
from descentlab.nn import MLP
from descentlab.training import History, evaluate

make = compose_config


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_carve_takes_a_prefix_and_holds_out_a_stratified_validation_set(digits) -> None:
    out = carve(digits, train_subset=500, validation=0.2, seed=3)
    assert out.info.n_train + out.info.n_val == 500 and out.info.n_val == len(out.y_val) == len(out.x_val)
    first = digits.train_index[:500]
    # every one of the first 500 rows lands in exactly one part; nothing comes from beyond them
    assert sorted(np.concatenate([out.train_index, out.val_index]).tolist()) == sorted(first.tolist())
    assert np.intersect1d(out.train_index, out.val_index).size == 0
    # stratified: per class, the rounded fifth of that class's rows in the prefix
    labels = digits.y_train[:500]
    for c in range(10):
        assert np.count_nonzero(out.y_val == c) == int(np.floor(np.count_nonzero(labels == c) * 0.2 + 0.5))
    # the training part keeps the source's order; the images travel with their labels
    position = {int(row): i for i, row in enumerate(first)}
    assert np.all(np.diff([position[int(row)] for row in out.train_index]) > 0)
    row = int(out.val_index[0])
    np.testing.assert_array_equal(out.x_val[0], digits.x_train[np.flatnonzero(digits.train_index == row)[0]])
    assert out.x_test is digits.x_test and "held out for validation" in out.info.split
    again = carve(digits, train_subset=500, validation=0.2, seed=3)
    np.testing.assert_array_equal(again.val_index, out.val_index)
    other = carve(digits, train_subset=500, validation=0.2, seed=4)
    assert not np.array_equal(other.val_index, out.val_index)


def test_carve_without_a_subset_or_validation_changes_nothing(digits) -> None:
    assert carve(digits) is digits
    subset = carve(digits, train_subset=100)
    assert subset.info.n_train == 100 and subset.x_val is None and subset.info.n_val == 0
    np.testing.assert_array_equal(subset.x_train, digits.x_train[:100])
    with pytest.raises(ValueError, match="validation must be a fraction in"):
        carve(digits, validation=1.0)
    with pytest.raises(ValueError, match=r"cannot hold out validation=0\.01 of 30 training examples: .*class 0 has 5"):
        carve(digits, train_subset=30, validation=0.01)


def test_evaluations_and_the_summary_report_the_whole_validation_set(digits) -> None:
    data = carve(digits, validation=0.25, seed=0)
    model = MLP(64, [20], 10, rng=np.random.default_rng(0))
    metrics = evaluate(model, data, 100, 50)
    loss, acc = model.evaluate(data.x_val, data.y_val)
    assert (metrics["val/loss"], metrics["val/acc"]) == (loss, acc)
    assert "val/loss" not in evaluate(model, digits, 100, 50)
    evals = [{"step": 0.0, "test/acc": 0.1, "test/loss": 2.1, "val/loss": 2.0, "val/acc": 0.3},
             {"step": 1.0, "test/acc": 0.2, "test/loss": 1.4, "val/loss": 1.5, "val/acc": 0.2}]
    history = History(losses=np.ones(3), evals=evals)
    summary = history.summary()
    assert (summary["final/val_loss"], summary["final/val_acc"], summary["best/val_acc"]) == (1.5, 0.2, 0.3)
    assert (summary["final/test_loss"], summary["final/test_acc"]) == (1.4, 0.2)


def test_new_knobs_at_their_neutral_values_keep_a_configs_identity() -> None:
    base = make()
    assert config_hash(make("dataset.validation=0.0", "dataset.validation_seed=7", "dataset.train_subset=null",
                            "task.lr_factor=1.0")) == config_hash(base)
    assert not any(k.startswith(("dataset.validation", "dataset.train_subset", "task.lr_"))
                   for k in run_params(base))
    split = make("dataset.validation=0.2")
    assert config_hash(split) != config_hash(base)
    assert run_params(split)["dataset.validation_seed"] == 0
    assert config_hash(make("dataset.validation=0.2", "dataset.validation_seed=1")) != config_hash(split)
    assert config_hash(make("dataset.train_subset=300")) != config_hash(base)


def test_a_per_optimizer_learning_rate_table_resolves_into_optimizer_lr() -> None:
    lr = "optimizer.lr='${descentlab.mul:${task.lr_by_optimizer.${optimizer.name}},${task.lr_factor}}'"
    table = "++task.lr_by_optimizer={sgd:0.02,adam:0.003}"  # ++: the table is empty (no key to override) by default
    sgd = make("optimizer=sgd", table, "task.lr_factor=10", lr)
    adam = make("optimizer=adam", table, "task.lr_factor=10", lr)
    assert run_params(sgd)["optimizer.lr"] == pytest.approx(0.2) and run_params(adam)["optimizer.lr"] == 0.03
    assert run_params(sgd)["task.lr_by_optimizer.adam"] == 0.003  # the table is part of what the run records
    with pytest.raises(Exception, match=r"descentlab\.mul takes two numbers"):
        run_params(make("optimizer=sgd", "task.lr_factor=2", "optimizer.lr='${descentlab.mul:abc,${task.lr_factor}}'"))


@pytest.mark.parametrize(("override", "message"), [
    ("dataset.validation=1.0", "dataset.validation must be a fraction in [0, 1) of the training set (0: no "
                               "validation set), got 1.0"),
    ("dataset.validation=-0.1", "dataset.validation must be a fraction in [0, 1)"),
    ("dataset.train_subset=0", "dataset.train_subset must be an integer >= 1, got 0"),
    ("dataset.validation_seed=-1", "dataset.validation_seed must be an integer >= 0, got -1"),
])
def test_bad_split_values_get_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(make(override))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_job_returns_its_tracked_metrics_also_when_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = ["dataset=digits", "dataset.train_subset=600", "dataset.validation=0.2", "training.iterations=30",
                 "training.eval_every=10", "training.progress=false", f"tracking.store_dir={tmp_path / 'mlruns'}"]
    first = app.run(make(*overrides))
    assert first["status"] == "FINISHED"
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").get_run(first["run_id"])
    assert first["metrics"] == run.data.metrics and 0.0 <= first["metrics"]["final/val_acc"] <= 1.0
    carved = carve(load_dataset("digits"), train_subset=600, validation=0.2, seed=0).info
    tags = run.data.tags
    assert (tags["dataset.n_train"], tags["dataset.n_val"]) == (str(carved.n_train), str(carved.n_val))
    assert carved.n_train + carved.n_val == 600 and 110 <= carved.n_val <= 130
    assert run.data.params["dataset.validation"] == "0.2"
    again = app.run(make(*overrides))
    assert again["status"] == "SKIPPED" and again["run_id"] == first["run_id"]
    assert again["metrics"] == first["metrics"]
    untracked = app.run(make(*overrides, "tracking=none"))
    assert untracked["metrics"]["final/val_loss"] == pytest.approx(first["metrics"]["final/val_loss"], rel=1e-6)
