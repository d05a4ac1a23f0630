"""`task=activations` (the book's weight_init_activation_histogram.py): the numbers against a hand-written book-style
loop with the same weights, the metrics and files a run logs, and a tracked run read back from MLflow."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from descentlab.config.checks import ConfigError
from descentlab.config.settings import ActivationsSettings
from descentlab.rng import RandomStreams
from descentlab.tasks.activations import ActivationsTask, histogram_edges, layer_activations


def book_loop(seed: int, activation: str, std: str | float, n_inputs: int = 1000, node_num: int = 100,
              layers: int = 5, bins: int = 30) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The book's script, written out: its randn calls in the same order, from the seed's init stream."""
    rng = RandomStreams.from_seed(seed).init
    functions = {"sigmoid": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh, "relu": lambda x: np.maximum(0, x)}
    scale = {"xavier": 1 / np.sqrt(node_num), "he": np.sqrt(2 / node_num)}.get(std, std)  # type: ignore[call-overload]
    x = rng.standard_normal((n_inputs, node_num))
    activations, hists = [], []
    for _ in range(layers):
        w = rng.standard_normal((node_num, node_num)) * scale
        x = functions[activation](np.dot(x, w))
        activations.append(x)
        hists.append(np.histogram(x.flatten(), bins, range=(-1, 1) if activation == "tanh" else (0, 1))[0])
    return activations, hists


class Recorder:
    """A tracker that keeps what is logged (the task's side of the tracker interface)."""

    keeps_artifacts = True

    def __init__(self) -> None:
        self.metrics: dict[tuple[str, int], float] = {}
        self.artifacts: list[Path] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.update({(k, step): v for k, v in metrics.items()})

    def log_series(self, key: str, first_step: int, values: np.ndarray) -> None:
        self.metrics.update({(key, first_step + i): float(v) for i, v in enumerate(values)})

    def log_artifact(self, path: str) -> None:
        self.artifacts.append(Path(path))


def settings(activation: str = "sigmoid", weight_init: str | float = 1.0, hidden_sizes: tuple[int, ...] = (100,) * 5,
             n_inputs: int = 1000, bins: int = 30, seed: int = 0) -> SimpleNamespace:
    model = SimpleNamespace(hidden_sizes=hidden_sizes, activation=activation, weight_init=weight_init)
    return SimpleNamespace(model=model, task=ActivationsSettings(n_inputs=n_inputs, bins=bins), seed=seed)


@pytest.mark.parametrize("activation,std", [("sigmoid", 1.0), ("sigmoid", 0.01), ("sigmoid", "xavier"),
                                            ("tanh", "xavier"), ("relu", "he"), ("relu", 0.01)])
def test_activations_equal_the_book_loop_with_the_same_weights(activation: str, std: str | float) -> None:
    ours = layer_activations([100] * 5, activation, std, 1000, RandomStreams.from_seed(3).init)
    book, hists = book_loop(3, activation, std)
    assert [a.shape for a in ours] == [(1000, 100)] * 5
    for a, b in zip(ours, book, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)  # sigmoid is 0.5 (1 + tanh(x/2)) here
    task = ActivationsTask(settings(activation, std, seed=3))  # type: ignore[arg-type]
    tracker = Recorder()
    assert task.execute(tracker, "run") == "FINISHED"
    for i, (a, hist) in enumerate(zip(book, hists, strict=True), start=1):
        assert [tracker.metrics[(f"layer{i}/hist", b)] for b in range(30)] == hist.tolist()
        assert tracker.metrics[(f"layer{i}/mean", 0)] == pytest.approx(a.mean(), rel=1e-12)
        assert tracker.metrics[(f"layer{i}/std", 0)] == pytest.approx(a.std(), rel=1e-12)
        if activation == "relu":
            assert tracker.metrics[(f"layer{i}/zero", 0)] == np.mean(a == 0)
        else:
            saturated = np.mean((a <= (-1 if activation == "tanh" else 0) + 0.01) | (a >= 0.99))
            assert tracker.metrics[(f"layer{i}/saturated", 0)] == pytest.approx(saturated, abs=1e-3)


def test_the_book_findings_show_in_the_numbers() -> None:
    """Sigmoid at std 1 piles up at 0 and 1; at std 0.01 it collapses onto 0.5; Xavier keeps it spread."""
    def run(activation: str, std: str | float) -> dict[tuple[str, int], float]:
        tracker = Recorder()
        ActivationsTask(settings(activation, std)).execute(tracker, "run")  # type: ignore[arg-type]
        return tracker.metrics

    wide, narrow, xavier = run("sigmoid", 1.0), run("sigmoid", 0.01), run("sigmoid", "xavier")
    assert wide[("layer5/saturated", 0)] > 0.4 and narrow[("layer5/saturated", 0)] == 0
    assert narrow[("layer5/std", 0)] < 0.02 < 0.1 < xavier[("layer5/std", 0)] < wide[("layer5/std", 0)]
    relu_small, relu_he = run("relu", 0.01), run("relu", "he")
    assert relu_small[("layer5/std", 0)] < 1e-4 < 0.1 < relu_he[("layer5/std", 0)]  # std 0.01 vanishes


def test_files_hold_the_histograms(tmp_path: Path) -> None:
    task = ActivationsTask(settings("tanh", "xavier", hidden_sizes=(100, 50, 20), n_inputs=200, bins=12))  # type: ignore[arg-type]
    tracker = Recorder()
    task.execute(tracker, "run")
    task.log_results(tracker, tmp_path, "run")
    assert [p.name for p in tracker.artifacts] == ["activations.csv", "activations.png"]
    table = pd.read_csv(tmp_path / "activations.csv")
    assert list(table.columns) == ["layer", "bin_lo", "bin_hi", "count"] and len(table) == 3 * 12
    edges = histogram_edges("tanh", 12)
    layers = layer_activations([100, 50, 20], "tanh", "xavier", 200, RandomStreams.from_seed(0).init)
    for i, a in enumerate(layers, start=1):
        rows = table[table["layer"] == i]
        np.testing.assert_allclose(rows["bin_lo"], edges[:-1])
        np.testing.assert_allclose(rows["bin_hi"], edges[1:])
        assert rows["count"].tolist() == np.histogram(a, bins=edges)[0].tolist()
        assert rows["count"].sum() == a.size  # tanh stays inside (-1, 1): every value counted
    assert (tmp_path / "activations.png").stat().st_size > 1000


@pytest.mark.parametrize("change,message", [
    ({"hidden_sizes": ()}, "at least one hidden layer"),
    ({"n_inputs": 0}, "task.n_inputs must be an integer >= 1, got 0"),
    ({"bins": math.pi}, "task.bins must be an integer >= 1"),
])
def test_bad_settings_are_one_line(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ActivationsTask(settings(**change))  # type: ignore[arg-type]


def test_a_tracked_run_holds_the_histograms(store) -> None:
    """`python train.py task=activations ...`: the run in MLflow has each layer's histogram, stats and files."""
    result = store.train_in_process("task=activations", "model.hidden_sizes=[100,100,100]", "model.activation=tanh",
                                    "model.weight_init=xavier", "task.bins=20", "seed=4")
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = [r for r in store.runs() if "config_hash" in r.data.tags]
    assert run.info.status == "FINISHED" and run.data.params["task.name"] == "activations"
    client = store.client()
    layers = layer_activations([100] * 3, "tanh", "xavier", 1000, RandomStreams.from_seed(4).init)
    edges = histogram_edges("tanh", 20)
    for i, a in enumerate(layers, start=1):
        counts = [m.value for m in sorted(client.get_metric_history(run.info.run_id, f"layer{i}/hist"),
                                          key=lambda m: m.step)]
        assert counts == np.histogram(a, bins=edges)[0].tolist()
        assert run.data.metrics[f"layer{i}/std"] == pytest.approx(a.std(), rel=1e-12)
    assert {"activations.csv", "activations.png"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
