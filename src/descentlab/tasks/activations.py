"""`task=activations`: the hidden-layer activation histograms of the book's `weight_init_activation_histogram.py`
(section 6.2): random inputs through a stack of random layers, no training, to show how the weight scale makes
activations saturate (sigmoid at std 1), collapse (std 0.01) or stay spread (Xavier, He).

Inputs N(0, 1) of shape (n_inputs, hidden_sizes[0]) and then one weight matrix per hidden layer, N(0, 1) scaled by
`nn.mlp.init_std(model.weight_init, fan_in)`, all drawn from the seed's init stream; no bias, as the book. Computed
in float64 (the book's dtype) whatever `model.dtype` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from descentlab.config.checks import ConfigError
from descentlab.config.settings import ActivationsSettings, JobSettings

# The range each activation's histogram covers, as the book plots it (ReLU's: (0, 1) too, its large values cut).
HISTOGRAM_RANGES: dict[str, tuple[float, float]] = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, 1.0)}
SATURATION = 0.01  # sigmoid/tanh values within this of their bounds count as saturated (gradient ~0)


def histogram_edges(activation: str, bins: int) -> np.ndarray:
    """The `bins + 1` bin edges of the histograms of `activation` (what np.histogram uses with its range)."""
    lo, hi = HISTOGRAM_RANGES[activation]
    return np.linspace(lo, hi, bins + 1)


def layer_activations(hidden_sizes: Sequence[int], activation: str, weight_init: float | str, n_inputs: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
    """Each hidden layer's activations for random inputs: a = activation(a_prev @ W), W ~ N(0, 1) * init_std."""
    from descentlab.nn.layers import ACTIVATIONS
    from descentlab.nn.mlp import init_std

    a = rng.standard_normal((n_inputs, hidden_sizes[0]))
    fan_in = hidden_sizes[0]
    out = []
    for width in hidden_sizes:
        w = rng.standard_normal((fan_in, width)) * init_std(weight_init, fan_in)
        a = ACTIVATIONS[activation]().forward(a @ w)
        out.append(a)
        fan_in = width
    return out


@dataclass(frozen=True)
class LayerStats:
    """One layer's histogram over the activation's range and its summary numbers."""

    counts: np.ndarray  # per bin; values outside the range are not counted, as in the book's plt.hist
    edges: np.ndarray
    mean: float
    std: float
    share_name: str  # "saturated" (sigmoid, tanh: within SATURATION of a bound) or "zero" (ReLU: exactly 0)
    share: float


def layer_stats(a: np.ndarray, activation: str, bins: int) -> LayerStats:
    edges = histogram_edges(activation, bins)
    counts, _ = np.histogram(a.ravel(), bins=edges)
    if activation == "relu":
        name, share = "zero", float(np.mean(a == 0))
    else:
        lo, hi = HISTOGRAM_RANGES[activation]
        name, share = "saturated", float(np.mean((a <= lo + SATURATION) | (a >= hi - SATURATION)))
    return LayerStats(counts, edges, float(a.mean()), float(a.std()), name, share)


class ActivationsTask:
    """Histograms of each hidden layer's activations at initialisation; no data set is loaded, nothing trained.

    Metrics (step 0): `layer{i}/mean`, `layer{i}/std`, `layer{i}/saturated` (sigmoid, tanh) or `layer{i}/zero`
    (ReLU); `layer{i}/hist`: the count of bin b at step b (so figures read the histograms back from the store).
    Artifacts: `activations.csv` (layer, bin_lo, bin_hi, count) and `activations.png` (one histogram per layer).
    """

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.error: str | None = None
        m, t = settings.model, settings.task
        assert isinstance(t, ActivationsSettings)
        self.n_inputs, self.bins = t.n_inputs, t.bins
        if not m.hidden_sizes:
            raise ConfigError("task=activations needs at least one hidden layer in model.hidden_sizes, got []")
        if m.activation not in HISTOGRAM_RANGES:
            raise ConfigError(f"model.activation must be one of {sorted(HISTOGRAM_RANGES)}, got {m.activation!r}")
        for key, value in (("task.n_inputs", self.n_inputs), ("task.bins", self.bins)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key} must be an integer >= 1, got {value!r}")
        self.stats: list[LayerStats] | None = None

    def tags(self) -> dict[str, str]:
        lo, hi = HISTOGRAM_RANGES[self.settings.model.activation]
        return {"histogram.range": f"{lo:g},{hi:g}"}

    def execute(self, tracker: Any, name: str) -> str:
        from descentlab.rng import RandomStreams

        m = self.settings.model
        rng = RandomStreams.from_seed(self.settings.seed).init
        layers = layer_activations(list(m.hidden_sizes), m.activation, m.weight_init, self.n_inputs, rng)
        self.stats = [layer_stats(a, m.activation, self.bins) for a in layers]
        for i, s in enumerate(self.stats, start=1):
            tracker.log_metrics({f"layer{i}/mean": s.mean, f"layer{i}/std": s.std,
                                 f"layer{i}/{s.share_name}": s.share}, 0)
            tracker.log_series(f"layer{i}/hist", 0, s.counts.astype(np.float64))
        return "FINISHED"

    def log_results(self, tracker: Any, tmp: Path, name: str) -> None:
        if self.stats is None or not tracker.keeps_artifacts:
            return
        tracker.log_artifact(str(write_csv(self.stats, tmp / "activations.csv")))
        tracker.log_artifact(str(histograms_png(self.stats, name, tmp / "activations.png")))


def write_csv(stats: Sequence[LayerStats], path: Path) -> Path:
    """`layer, bin_lo, bin_hi, count`, one row per layer and bin (layers from 1)."""
    import pandas as pd

    frames = [pd.DataFrame({"layer": i, "bin_lo": s.edges[:-1], "bin_hi": s.edges[1:], "count": s.counts})
              for i, s in enumerate(stats, start=1)]
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    return path


def histograms_png(stats: Sequence[LayerStats], title: str, path: Path) -> Path:
    """The book's row of histograms: one panel per layer titled "<i>-layer", y ticks on the first only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.2 * len(stats), 2.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(stats), sharey=True, squeeze=False)[0]
    for i, (ax, s) in enumerate(zip(axes, stats, strict=True), start=1):
        ax.stairs(s.counts, s.edges, fill=True)
        ax.set_title(f"{i}-layer", fontsize=9)
        ax.set_xlim(s.edges[0], s.edges[-1])
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80)
    return path
