"""The hparam_search preset in its quick form, end to end: PRESET.reproduce launches the Optuna search through
train.py into a temporary store, then draws from the tracked runs. Checked: the files, Figure 6-24's panels and
lines, and that every plotted and tabled value is the tracked metric (read back with MLflow's own client)."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose_config
from descentlab.experiments import Options, get_preset
from descentlab.experiments.hparam_search import ITERATIONS_PER_EPOCH, QUICK_ITERATIONS, QUICK_TRIALS, command
from descentlab.experiments.launch import train_sweep


def compose_preset(name: str, *overrides: str):
    """The job config `train.py experiment=NAME` composes (the preset's values over conf/config.yaml's)."""
    return compose_config(f"experiment={name}", *overrides)


def test_the_preset_is_the_books_search() -> None:
    conf = OmegaConf.load(REPO / "conf" / "experiment" / "hparam_search.yaml")
    sweeper = conf.hydra.sweeper
    assert (sweeper.sampler, sweeper.direction, sweeper.metric, sweeper.n_trials) == ("random", "maximize",
                                                                                      "final/val_acc", 100)
    assert sweeper.params["optimizer.lr"] == "tag(log, interval(1e-6, 1e-2))"
    assert sweeper.params["model.weight_decay"] == "tag(log, interval(1e-8, 1e-4))"
    assert (conf.dataset.train_subset, conf.dataset.validation) == (500, 0.2)
    composed = compose_preset("hparam_search", "hydra/sweeper=descentlab_optuna")
    t = composed.training
    assert (t.iterations, t.batch_size, t.eval_every, t.eval_train_subset) == (200, 100, 4, None)
    assert composed.model.name == "mlp_7x100" and composed.dataset.validation == 0.2
    assert command(Options()) == ["experiment=hparam_search", "hydra/sweeper=descentlab_optuna",
                                  "hydra.sweeper.n_trials=100"]
    assert command(Options(quick=True))[-2:] == [f"hydra.sweeper.n_trials={QUICK_TRIALS}",
                                                 f"training.iterations={QUICK_ITERATIONS}"]


@pytest.mark.e2e
def test_quick_search_draws_figure_6_24_from_the_tracked_runs(store, monkeypatch) -> None:
    for key, value in store.env().items():
        monkeypatch.setenv(key, value)
    out = store.root / "reports" / "hparam_search"
    preset = get_preset("hparam_search")
    files = preset.reproduce(Options(quick=True),
                             lambda overrides: train_sweep([*overrides, "training.progress=false"],
                                                           label="hparam_search", parallel=False,
                                                           sweep_dir=store.root / "multirun"),
                             out, store.uri)
    assert all(f.exists() for f in files)
    assert {"hparam_search.png", "hparam_search.pdf", "hparam_search_scatter.png", "hparam_search_trials.csv",
            "hparam_search_best_curves.csv"} <= {p.name for p in out.iterdir()}

    client = store.client()
    runs = {r.info.run_id: r for r in store.runs("hparam_search") if "config_hash" in r.data.tags}
    assert len(runs) == QUICK_TRIALS
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{store.root / 'mlruns' / 'optuna.db'}")
    assert len(study.trials) == QUICK_TRIALS and {t.user_attrs["run_id"] for t in study.trials} == set(runs)

    trials = pd.read_csv(out / "hparam_search_trials.csv")
    assert len(trials) == QUICK_TRIALS and set(trials["run_id"]) == set(runs)
    for row in trials.itertuples():
        run = runs[row.run_id]
        assert row.lr == float(run.data.params["optimizer.lr"])
        assert row.weight_decay == float(run.data.params["model.weight_decay"])
        if row.status == "finished":
            assert row.val_acc == run.data.metrics["final/val_acc"]
    ranked = trials.dropna(subset=["rank"])
    assert list(ranked["val_acc"]) == sorted(ranked["val_acc"], reverse=True)

    from descentlab.analysis.search_figures import figure_best_trials

    curves = pd.read_csv(out / "hparam_search_best_curves.csv")
    fig = figure_best_trials(curves)
    assert len(fig.axes) == len(ranked) == curves["rank"].nunique()  # one panel per finished trial (<= 20)
    for ax, row in zip(fig.axes, ranked.itertuples(), strict=True):
        assert ax.get_title() == f"Best-{row.rank} (val acc {row.val_acc:.2f})"
        assert len(ax.lines) == 2
        val, train = ax.lines
        assert val.get_linestyle() == "-" and train.get_linestyle() == "--"
        for line, metric in ((val, "val/acc"), (train, "train/acc")):
            points = sorted((m.step, m.value) for m in client.get_metric_history(row.run_id, metric))
            steps = np.array([s for s, _ in points])
            assert len(points) == QUICK_ITERATIONS // 4 + 1  # every epoch, and step 0
            np.testing.assert_array_equal(line.get_xdata(), steps / ITERATIONS_PER_EPOCH)
            np.testing.assert_array_equal(line.get_ydata(), [v for _, v in points])
