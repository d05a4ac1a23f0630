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


def loss_curve_png(losses: np.ndarray, evals: Sequence[dict[str, float]], title: str, path: Path) -> Path:
    """Minibatch loss per iteration (log scale) with test loss at each evaluation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(np.arange(len(losses)), losses, lw=0.6, alpha=0.8, label="train/loss (minibatch)")
    if evals:
        ax.plot([e["step"] for e in evals], [e["test/loss"] for e in evals], "o-", ms=3, label="test/loss")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
