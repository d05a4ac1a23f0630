"""The chapter-6 presets (weight_init, batch_norm, overfit) end to end in their --quick form: reproduce.py runs the
sweeps through train.py into a temporary store, then draws from the tracked runs. Checked: the files, the
figure's panels and lines, and that every plotted value is the tracked metric (read back from MLflow itself)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config
from descentlab.analysis.chapter6_figures import (
    figure_activation_grid,
    figure_batch_norm,
    figure_overfit,
    figure_weight_init,
    init_label,
)
from descentlab.analysis.smoothing import smooth_kaiser


def reproduce(store, name: str, *args: str):
    out = store.root / "reports"
    result = store.script_in_process("reproduce.py", name, "--quick", "--no-parallel", "--out", str(out),
                                     "--sweep-dir", str(store.root / "multirun"), *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / name, result


def tracked(store, experiment: str, task: str = "classify") -> dict[str, object]:
    """The experiment's job runs of `task`, by run id (MLflow's own search, not the analysis code)."""
    return {r.info.run_id: r for r in store.runs(experiment)
            if r.data.params.get("task.name") == task and "config_hash" in r.data.tags}


def history(store, run_id: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    points = sorted((m.step, m.value) for m in store.client().get_metric_history(run_id, metric))
    return np.array([s for s, _ in points]), np.array([v for _, v in points])


def test_the_yaml_sweeps_are_the_presets_grids() -> None:
    """`python train.py -m experiment=NAME` alone runs the grid the preset module runs."""
    from descentlab.experiments import batch_norm, weight_init

    def params(name: str) -> dict[str, str]:
        return dict(OmegaConf.load(REPO / "conf" / "experiment" / f"{name}.yaml").hydra.sweeper.params)

    assert [float(w) for w in params("batch_norm")["model.weight_init"].split(",")] == list(batch_norm.SCALES)
    assert list(batch_norm.SCALES) == list(np.logspace(0, -4, 16))
    assert params("weight_init")["model.weight_init"].split(",") == list(weight_init.INITS)
    grid = params("weight_init_activations")
    assert grid["model.activation"].split(",") == list(weight_init.ACTIVATIONS)
    assert grid["model.weight_init"].split(",") == list(weight_init.ACTIVATION_INITS)


@pytest.mark.parametrize(("name", "expected"), [
    ("batch_norm", {"model.name": "mlp_6x100", "dataset.train_subset": 1000, "training.iterations": 200,
                    "training.batch_size": 100, "training.eval_every": 10, "training.eval_train_subset": None,
                    "optimizer.name": "sgd", "optimizer.lr": 0.01}),
    ("overfit", {"model.name": "mlp_7x100", "dataset.train_subset": 300, "training.iterations": 903,
                 "training.batch_size": 100, "training.eval_every": 3, "training.eval_train_subset": None,
                 "training.eval_test_subset": None, "optimizer.lr": 0.01}),
    ("weight_init", {"model.name": "mlp_5x100", "model.activation": "relu", "training.iterations": 2000,
                     "training.batch_size": 128, "optimizer.name": "sgd", "optimizer.lr": 0.01}),
])
def test_each_preset_composes_to_the_books_settings(name: str, expected: dict[str, object]) -> None:
    """What `train.py -m experiment=NAME` runs: the preset's values win over conf/config.yaml's own."""
    cfg = compose_config(f"experiment={name}")
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected


@pytest.mark.e2e
def test_weight_init_quick(store) -> None:
    out, result = reproduce(store, "weight_init")
    files = {p.name for p in out.iterdir()}
    assert {"weight_init.png", "weight_init.pdf", "weight_init_activations.png", "weight_init_train_loss.csv",
            "weight_init_summary.csv", "weight_init_activations.csv", "weight_init_activations_summary.csv"} <= files
    runs = tracked(store, "weight_init")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs.values())

    curves = pd.read_csv(out / "weight_init_train_loss.csv")
    fig = figure_weight_init(curves)
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["std=0.01", "Xavier", "He"]
    for line in ax.lines:
        run_id = curves.loc[curves["init"] == line.get_label(), "run_id"].iloc[0]
        steps, values = history(store, run_id, "train/loss")
        assert len(steps) == 100 and np.array_equal(line.get_xdata(), steps)
        np.testing.assert_allclose(line.get_ydata(), smooth_kaiser(values), rtol=1e-12)
    assert "std=0.01" in result.stdout  # the summary table

    hists = pd.read_csv(out / "weight_init_activations.csv")
    grid = figure_activation_grid(hists)
    assert len(grid.axes) == 12 * 5  # rows sigmoid/tanh/relu x std 1, std 0.01, Xavier, He; columns layers 1..5
    labels = [ax.get_ylabel() for ax in grid.axes[::5]]
    assert labels[:4] == [f"sigmoid\n{init_label(v)}" for v in (1.0, 0.01, "xavier", "he")]
    acts = tracked(store, "weight_init", "activations")
    assert len(acts) == 12
    by_cell = {(r.data.params["model.activation"], init_label(_init(r.data.params["model.weight_init"]))): rid
               for rid, r in acts.items()}
    for r, label in enumerate(labels):
        act, init = label.split("\n")
        for layer in range(1, 6):
            (patch,) = grid.axes[5 * r + layer - 1].patches
            _, counts = history(store, by_cell[(act, init)], f"layer{layer}/hist")
            assert np.array_equal(patch.get_data().values, counts) and counts.sum() > 0
    sigmoid_wide = hists[(hists["activation"] == "sigmoid") & (hists["init"] == "std=1") & (hists["layer"] == 5)]
    counts = sigmoid_wide.sort_values("bin")["count"].to_numpy()
    assert counts[0] + counts[-1] > counts[1:-1].sum()  # the book's Figure 6-10: piled up at 0 and 1


def _init(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text


@pytest.mark.e2e
def test_batch_norm_quick(store) -> None:
    out, result = reproduce(store, "batch_norm")
    assert {"batch_norm.png", "batch_norm.pdf", "batch_norm_train_acc.csv", "batch_norm_summary.csv",
            "batch_norm_finding.txt"} <= {p.name for p in out.iterdir()}
    runs = tracked(store, "batch_norm")
    assert len(runs) == 8  # 4 scales x with/without
    assert {r.data.params["dataset.train_subset"] for r in runs.values()} == {"1000"}

    curves = pd.read_csv(out / "batch_norm_train_acc.csv")
    fig = figure_batch_norm(curves)
    assert len(fig.axes) == 4  # a 2x2 grid for the quick run's 4 scales
    assert [ax.get_title() for ax in fig.axes] == ["W:1", "W:0.0464159", "W:0.00215443", "W:0.0001"]
    for ax in fig.axes:
        assert [line.get_label() for line in ax.lines] == ["Batch Normalization", "Normal (without BatchNorm)"]
        w = float(ax.get_title().removeprefix("W:"))
        for line, bn in zip(ax.lines, ("True", "False"), strict=True):
            (run_id,) = [rid for rid, r in runs.items() if r.data.params["model.batch_norm"] == bn
                         and np.isclose(float(r.data.params["model.weight_init"]), w, rtol=1e-5)]
            steps, values = history(store, run_id, "train/acc")
            np.testing.assert_array_equal(line.get_ydata(), values)
            np.testing.assert_array_equal(line.get_xdata(), steps / 10)  # epochs of 10 iterations
            if runs[run_id].info.status == "FINISHED":
                assert list(steps) == [0, 10, 20]
    summary = pd.read_csv(out / "batch_norm_summary.csv")
    assert len(summary) == 4 and f"at {summary['bn_ahead_final'].sum()} of 4 weight scales" in result.stdout


@pytest.mark.e2e
def test_overfit_quick(store) -> None:
    out, result = reproduce(store, "overfit")
    assert {"overfit.png", "overfit.pdf", "overfit_acc.csv", "overfit_summary.csv"} <= {p.name for p in out.iterdir()}
    runs = tracked(store, "overfit")
    assert len(runs) == 3 and {r.data.params["dataset.train_subset"] for r in runs.values()} == {"300"}

    curves = pd.read_csv(out / "overfit_acc.csv")
    fig = figure_overfit(curves)
    assert [ax.get_title() for ax in fig.axes] == ["no regularisation", "weight decay λ=0.1", "dropout 0.2"]
    for ax in fig.axes:
        assert [line.get_label() for line in ax.lines] == ["train", "test"]
        (run_id,) = curves.loc[curves["variant"] == ax.get_title(), "run_id"].unique()
        for line, metric in zip(ax.lines, ("train/acc", "test/acc"), strict=True):
            steps, values = history(store, run_id, metric)
            assert list(steps) == list(range(0, 31, 3))  # every epoch of 3 iterations, 10 epochs
            np.testing.assert_array_equal(line.get_ydata(), values)
    summary = pd.read_csv(out / "overfit_summary.csv").set_index("variant")
    for variant, row in summary.iterrows():
        (run_id,) = curves.loc[curves["variant"] == variant, "run_id"].unique()
        train, test = history(store, run_id, "train/acc")[1][-1], history(store, run_id, "test/acc")[1][-1]
        assert (row["final_train_acc"], row["final_test_acc"]) == (train, test)
        assert row["gap"] == pytest.approx(train - test)
    assert "no regularisation" in result.stdout


@pytest.mark.parametrize(("options", "expected"), [
    ({}, (3, "mnist_5k", 2000)),
    ({"quick": True}, (1, "mnist_5k", 20)),
    ({"quick": True, "seeds": 2, "dataset": "fashion_mnist", "iterations": 7}, (2, "fashion_mnist", 7)),
])
def test_options_pick_prefers_the_command_line_then_the_quick_or_full_default(options, expected) -> None:
    from descentlab.experiments import Options

    assert Options(**options).pick(3, "mnist_5k", 2000, 20, quick_seeds=1) == expected
    assert Options(quick=True).pick(3, "mnist_5k", 2000, 20) == (3, "mnist_5k", 20)  # no quick seeds: the full ones
