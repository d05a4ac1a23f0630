"""Per-run figures logged as artifacts by the tasks: the loss curve of a training run, the path of a 2-D run."""

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
    """One figure per process, redrawn for each run: laying out axes, ticks and text costs more than the curves.

    Tick labels are plain text (`1e-02`, not mathtext, whose parser alone took ~40 ms a figure) and the
    margins are fixed (no `tight_layout` pass). The axes' limits are rounded (x: the run's steps plus matplotlib's
    default 5% margins; y: whole decades), so runs of a sweep mostly share them: the figure without the run's
    own artists (curves, spines, title) is drawn once per pair of limits and kept as pixels, and a run
    restores them and draws only its own artists on top, in the order a full draw uses, which gives the same
    pixels (tests/test_run_plots.py): ~14 ms a run instead of ~50 (text rendering was half of it). The
    legend, the same for every run, lies under the curves so that it is part of the kept pixels (drawing it
    was ~8 ms a run).
    """

    MAX_BACKGROUNDS = 16  # pairs of limits kept (~0.9 MB of pixels each)

    def __init__(self) -> None:
        _pyplot()
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import LogFormatter, NullLocator

        self.fig = Figure(figsize=(6, 3.6), dpi=100)
        self.canvas = FigureCanvasAgg(self.fig)
        ax = self.ax = self.fig.add_subplot()
        (self.train,) = ax.plot([], [], lw=0.6, alpha=0.8, label="train/loss (minibatch)")
        (self.test,) = ax.plot([], [], "o-", ms=3, label="test/loss")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter())
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        # A plain text where the title goes: Axes.draw moves a real title at each draw, this one stays put.
        self.title = ax.text(0.5, 1.02, "", fontsize=10, ha="center", va="baseline", transform=ax.transAxes)
        ax.legend(fontsize=8, loc="upper right").set_zorder(1.5)  # under the lines (2): kept with the axes
        self.fig.subplots_adjust(left=0.13, right=0.97, bottom=0.14, top=0.91)
        # The run's own artists, in the order Axes.draw draws them (by zorder: lines 2, spines 2.5, text 3).
        self.own = [self.train, self.test, *ax.spines.values(), self.title]
        self.backgrounds: dict[tuple[tuple[float, float], tuple[float, float]], object] = {}

    def save(self, losses: np.ndarray, evals: Sequence[dict[str, float]], title: str, path: Path) -> Path:
        steps = [e["step"] for e in evals]
        test = [e["test/loss"] for e in evals]
        self.train.set_data(np.arange(len(losses)), losses)
        self.test.set_data(steps, test)
        self.test.set_visible(bool(evals))
        self.title.set_text(title)
        limits = (_step_limits(max(len(losses) - 1, 0, *steps)), _decade_limits([losses, test]))
        self.ax.set_xlim(limits[0])
        self.ax.set_ylim(limits[1])
        background = self.backgrounds.get(limits)
        if background is None:
            shown = [artist.get_visible() for artist in self.own]
            for artist in self.own:
                artist.set_visible(False)
            self.canvas.draw()
            for artist, visible in zip(self.own, shown, strict=True):
                artist.set_visible(visible)
            if len(self.backgrounds) >= self.MAX_BACKGROUNDS:
                self.backgrounds.clear()
            self.backgrounds[limits] = self.canvas.copy_from_bbox(self.fig.bbox)
        else:
            self.canvas.restore_region(background)
        renderer = self.canvas.get_renderer()
        for artist in self.own:
            artist.draw(renderer)  # a hidden artist draws nothing
        from matplotlib.image import imsave

        imsave(path, np.asarray(self.canvas.buffer_rgba()), format="png", pil_kwargs={"compress_level": 1})
        return path


def _step_limits(last_step: int) -> tuple[float, float]:
    """x limits for steps 0..last_step with matplotlib's default 5% margins."""
    span = max(last_step, 1)
    return (-0.05 * span, last_step + 0.05 * span)


def _decade_limits(series: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Whole decades around the positive finite values (a log axis), (1e-3, 10) when there are none."""
    values = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in series])
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return (1e-3, 10.0)
    low = float(np.floor(np.log10(values.min())))
    high = max(float(np.ceil(np.log10(values.max()))), low + 1)
    return (10.0**low, 10.0**high)


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
