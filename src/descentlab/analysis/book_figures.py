"""The book's Figures 6-8 (2-D paths) and 6-9 (MNIST loss curves), drawn as the book draws them, plus a
seed-aware Figure 6-9 (mean and t band over seeds) for claims the book's single unseeded run cannot support.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from descentlab.analysis.plots import (
    COMPLETE_OUTCOMES,
    OPTIMIZER_COLUMN,
    _excluded_note,
    _order,
    add_note,
    curve_summary,
    new_figure,
    optimizer_style,
    plot_mean_band,
    select_runs,
)
from descentlab.analysis.smoothing import smooth_kaiser

__all__ = ["book_objective", "figure_6_8", "figure_6_9", "figure_6_9_ours"]

BOOK_MARK_EVERY = 100  # the book's markevery, in iterations


def book_objective(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """f(x, y) = x²/20 + y², the elongated bowl of Figure 6-8 (minimum at the origin)."""
    return x**2 / 20.0 + y**2


def figure_6_8(paths: Mapping[str, np.ndarray], grid_step: float = 0.02) -> Figure:
    """One panel per optimizer (in the mapping's order): its path in red over the contours of f.

    As `optimizer_compare_naive.py`: values above 7 set to 0 before `contour` (so all levels crowd onto the
    f = 7 ellipse, the book's thick outer ring), '+' at the minimum, both axes (-10, 10). A 2×2 grid for up to
    4 paths (unused panels removed), a larger near-square grid beyond. `grid_step` 0.02 draws the same lines
    as the book's 0.01 in a fifth of the time.
    """
    if not paths:
        raise ValueError("figure_6_8 needs at least one path")
    arrays = {}
    for name, path in paths.items():
        a = np.asarray(path, dtype=float)
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"figure_6_8: path {name!r} must have shape (n, 2), got {a.shape}")
        arrays[name] = a
    n = len(arrays)
    ncols = 2 if n <= 4 else math.ceil(math.sqrt(n))
    nrows = 2 if n <= 4 else math.ceil(n / ncols)

    grid = np.arange(-10, 10, grid_step)
    x_grid, y_grid = np.meshgrid(grid, grid)
    z = book_objective(x_grid, y_grid)
    z[z > 7] = 0  # the book's mask

    fig = new_figure((4.0 * ncols, 3.4 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, a) in zip(axes, arrays.items(), strict=False):
        ax.plot(a[:, 0], a[:, 1], "o-", color="red", ms=4, lw=1)
        ax.contour(x_grid, y_grid, z)
        ax.plot(0, 0, "+", color="black", ms=10, mew=1.5)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_title(optimizer_style(name).label)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig


def _one_run_per(selected: pd.DataFrame, keys: list[str], what: str) -> None:
    """Fail, naming the params that differ, when a group meant to be one run (or one per seed) holds more."""
    counts = selected.groupby(keys, dropna=False).size()
    if (counts > 1).any():
        first = counts[counts > 1].index[0]
        group = selected.set_index(keys).loc[[first]] if len(keys) > 1 else selected[selected[keys[0]] == first]
        params = [c for c in group.columns if "." in c and "/" not in c and group[c].nunique(dropna=False) > 1]
        raise ValueError(
            f"{what} needs one run per {' and '.join(keys)}; {first} has {int(counts[first])}"
            + (f" differing in {params}" if params else "")
            + ": filter `runs` first"
        )


def _markevery(steps: np.ndarray, every_iterations: int = BOOK_MARK_EVERY) -> int:
    """Points between markers so they fall every 100 iterations even on thinned histories (store_every)."""
    spacing = float(np.median(np.diff(steps))) if len(steps) > 1 else 1.0
    return max(1, round(every_iterations / max(spacing, 1e-12)))


def _book_axes(ax, metric: str) -> None:
    ax.set_xlabel("iterations")
    ax.set_ylabel("loss" if metric.endswith("loss") else metric)
    ax.set_ylim(0, 1)
    ax.legend()


def _select_for_book(runs: pd.DataFrame, outcomes: Collection[str] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    for c in (OPTIMIZER_COLUMN, "seed"):
        if c not in runs.columns:
            raise ValueError(f"runs has no column {c!r}")
    return select_runs(runs, outcomes)


def figure_6_9(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    metric: str = "train/loss",
    seed: int | None = None,
    outcomes: Collection[str] | None = COMPLETE_OUTCOMES,
) -> Figure:
    """The book's Figure 6-9 for one seed (the smallest unless given): each optimizer's loss smoothed with the
    book's Kaiser window, markers every 100 iterations, y from 0 to 1."""
    selected, excluded = _select_for_book(runs, outcomes)
    h = history[history["metric"] == metric]
    selected = selected[selected["run_id"].isin(h["run_id"])]
    if selected.empty:
        raise ValueError(f"no {metric!r} history for the selected runs (outcomes {outcomes})")
    if seed is None:
        seed = selected["seed"].min()
    elif seed not in set(selected["seed"]):
        raise ValueError(f"no run with seed {seed}; seeds: {sorted(selected['seed'].unique())}")
    chosen = selected[selected["seed"] == seed]
    _one_run_per(chosen, [OPTIMIZER_COLUMN], "figure_6_9")

    fig = new_figure((6.4, 4.8))
    ax = fig.subplots()
    for name in _order(chosen[OPTIMIZER_COLUMN], OPTIMIZER_COLUMN):
        run_id = chosen.loc[chosen[OPTIMIZER_COLUMN] == name, "run_id"].iloc[0]
        curve = h[h["run_id"] == run_id].sort_values("step")
        steps = curve["step"].to_numpy()
        style = optimizer_style(name)
        ax.plot(steps, smooth_kaiser(curve["value"].to_numpy()), color=style.color, marker=style.marker,
                markevery=_markevery(steps), label=style.label)
    _book_axes(ax, metric)
    ax.set_title(f"seed {seed}", fontsize=9)
    add_note(fig, _excluded_note(excluded[excluded["seed"] == seed]))
    return fig


def figure_6_9_ours(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    metric: str = "train/loss",
    level: float = 95,
    outcomes: Collection[str] | None = COMPLETE_OUTCOMES,
) -> Figure:
    """Figure 6-9 over seeds: each run Kaiser-smoothed as the book does, then the mean per optimizer with a
    `level`% t band, on the book's axes. Unfinished runs are left out of the mean and named in a footnote."""
    selected, excluded = _select_for_book(runs, outcomes)
    _one_run_per(selected, [OPTIMIZER_COLUMN, "seed"], "figure_6_9_ours")
    summary = curve_summary(history, selected, metric, [OPTIMIZER_COLUMN], smooth="kaiser",
                            errorbar=("ci", level), outcomes=None)
    if summary.empty:
        raise ValueError(f"no {metric!r} history for the selected runs (outcomes {outcomes})")
    fig = new_figure((6.4, 4.8))
    ax = fig.subplots()
    for name in _order(summary[OPTIMIZER_COLUMN], OPTIMIZER_COLUMN):
        part = summary[summary[OPTIMIZER_COLUMN] == name]
        steps = part["step"].to_numpy()
        plot_mean_band(ax, steps, part["mean"].to_numpy(), part["lo"].to_numpy(), part["hi"].to_numpy(),
                       optimizer_style(name), markevery=_markevery(steps))
    _book_axes(ax, metric)
    lo, hi = int(summary["n"].min()), int(summary["n"].max())
    seeds = f"{lo} seeds" if lo == hi else f"{lo}–{hi} seeds"
    ax.set_title(f"mean of {seeds} (each Kaiser-smoothed), {level:g}% t-band", fontsize=10)
    add_note(fig, _excluded_note(excluded))
    return fig
