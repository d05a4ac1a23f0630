"""Small per-run figures logged as artifacts: the loss curve of a training run, the path of a 2-D run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


class _LossFigure:
    """One figure per process, redrawn for each run: building axes and ticks costs more than drawing them.

    Tick labels are plain text (`1e-02`, not mathtext, whose parser alone took ~40 ms a figure) and the
    margins are fixed (no `tight_layout` pass): ~50 ms a run instead of ~200 ms.
    """

    def __init__(self) -> None:
        _pyplot()
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import LogFormatter, NullLocator

        self.fig = Figure(figsize=(6, 3.6), dpi=100)
        FigureCanvasAgg(self.fig)
        ax = self.ax = self.fig.add_subplot()
        (self.train,) = ax.plot([], [], lw=0.6, alpha=0.8, label="train/loss (minibatch)")
        (self.test,) = ax.plot([], [], "o-", ms=3, label="test/loss")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        self.title = ax.set_title("", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
        self.fig.subplots_adjust(left=0.13, right=0.97, bottom=0.14, top=0.91)

    def save(self, losses: np.ndarray, evals: Sequence[dict[str, float]], title: str, path: Path) -> Path:
        self.train.set_data(np.arange(len(losses)), losses)
        self.test.set_data([e["step"] for e in evals], [e["test/loss"] for e in evals])
        self.test.set_visible(bool(evals))
        self.title.set_text(title)
        self.ax.relim(visible_only=True)
        self.ax.autoscale_view()
        self.fig.savefig(path, pil_kwargs={"compress_level": 1})
        return path


_loss_figure: _LossFigure | None = None


def loss_curve_png(losses: np.ndarray, evals: Sequence[dict[str, float]], title: str, path: Path) -> Path:
    """Minibatch loss per iteration (log scale) with test loss at each evaluation."""
    global _loss_figure
    if _loss_figure is None:
        _loss_figure = _LossFigure()
    return _loss_figure.save(np.asarray(losses), evals, title, path)


def path_png(objective, path_xy: np.ndarray, title: str, out: Path) -> Path:
    """The optimizer's path over the objective's contours, as in the book's Figure 6-8."""
    plt = _pyplot()
    (x0, x1), (y0, y1) = objective.xlim, objective.ylim
    xs, ys = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
    zs = objective.value(np.stack([xs, ys], axis=-1))
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.contour(xs, ys, zs, levels=20, linewidths=0.6)
    ax.plot(path_xy[:, 0], path_xy[:, 1], "o-", color="red", ms=3, lw=1)
    ax.plot(*objective.minimum, "+", color="black", ms=10)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
