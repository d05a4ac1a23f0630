"""Figures of the fair optimizer comparison: tuning curves (stage 1), test accuracy with CIs and paired differences
(stage 2). One panel per cell (model × data set), optimizers in their fixed colours (`plots.optimizer_style`).

Diverged trials are drawn, not hidden: a ▲ on the panel's top edge at their lr (not ×, Momentum's marker in the
book), because where an optimizer stops working is part of its tuning curve.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from descentlab.analysis.fair import CELL, LR, OPTIMIZER
from descentlab.analysis.labels import axis_label
from descentlab.analysis.plots import OPTIMIZER_ORDER, new_figure, optimizer_style

__all__ = ["metric_ci", "pairwise_ci", "tuning_curves"]


def _cells(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return sorted({(str(a), str(b)) for a, b in frame[list(CELL)].itertuples(index=False)})


def _in_cell(frame: pd.DataFrame, cell: tuple[str, str]) -> pd.DataFrame:
    return frame[(frame[CELL[0]].astype(str) == cell[0]) & (frame[CELL[1]].astype(str) == cell[1])]


def _grid(n: int, width: float, height: float) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = new_figure((width * cols + 1.6, height * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _ordered(names: pd.Series) -> list[str]:
    rank = {n: i for i, n in enumerate(OPTIMIZER_ORDER)}
    return sorted({str(n) for n in names}, key=lambda n: (rank.get(n, len(rank)), n))


def tuning_curves(trials: pd.DataFrame, choices: pd.DataFrame) -> Figure:
    """Stage 1: the choice metric (final validation loss) against the lr, log-log, one line per optimizer; the chosen
    lr ringed, diverged or non-finite trials as ▲ on the top edge, a choice at the grid's edge labelled."""
    metric = trials.attrs.get("metric", "final/val_loss")
    cells = _cells(trials)
    fig, axes = _grid(len(cells), 4.6, 3.6)
    handles: dict[str, object] = {}
    for ax, cell in zip(axes, cells, strict=True):
        part, chosen = _in_cell(trials, cell), _in_cell(choices, cell)
        top = blended_transform_factory(ax.transData, ax.transAxes)
        for name in _ordered(part[OPTIMIZER]):
            style = optimizer_style(name)
            rows = part[part[OPTIMIZER] == name].sort_values(LR)
            ok = rows[np.isfinite(rows["score"].astype(float))]
            bad = rows[~np.isfinite(rows["score"].astype(float))]
            (line,) = ax.plot(ok[LR], ok["score"], color=style.color, marker=style.marker or "o", ms=4, lw=1.4,
                              label=style.label)
            handles.setdefault(style.label, line)
            if len(bad):
                ax.scatter(bad[LR], np.full(len(bad), 0.97), marker="^", s=40, color=style.color, transform=top,
                           clip_on=False, zorder=3)
            pick = chosen[chosen[OPTIMIZER] == name]
            if len(pick) and np.isfinite(float(pick["chosen_lr"].iloc[0])):
                x, y = float(pick["chosen_lr"].iloc[0]), float(pick["best_score"].iloc[0])
                ax.scatter([x], [y], s=160, facecolors="none", edgecolors=style.color, linewidths=2, zorder=4)
                if pick["edge"].iloc[0]:
                    ax.annotate("grid edge", (x, y), textcoords="offset points", xytext=(4, 8), fontsize=7,
                                color=style.color)
        ax.set_xscale("log")
        if len(part) and (part["score"][np.isfinite(part["score"])] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel(axis_label(LR))
        ax.set_ylabel(axis_label(metric))
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{cell[0]} / {cell[1]}", fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="outside right center", title="optimizer")
    fig.suptitle("Stage 1: tuning curves (seed 0; ○ chosen lr, ▲ on the top edge: diverged)", fontsize=10)
    return fig


def metric_ci(summary: pd.DataFrame, metric: str = "final/test_acc") -> Figure:
    """Stage 2: mean `metric` with its t interval per optimizer (and n), one panel per cell."""
    data = summary[summary["metric"] == metric]
    cells = _cells(data)
    fig, axes = _grid(len(cells), 4.2, 0.5 * max(3, data[OPTIMIZER].nunique()) + 1.2)
    for ax, cell in zip(axes, cells, strict=True):
        part = _in_cell(data, cell)
        names = _ordered(part[OPTIMIZER])
        for y, name in enumerate(names):
            row = part[part[OPTIMIZER].astype(str) == name].iloc[0]
            style = optimizer_style(name)
            mean, low, high = float(row["mean"]), float(row["ci_low"]), float(row["ci_high"])
            err = [[mean - low], [high - mean]] if np.isfinite(low) else None
            ax.errorbar([mean], [y], xerr=err, fmt=style.marker or "o", color=style.color, capsize=4, ms=6)
            ax.annotate(f"n={int(row['n'])}", (mean, y), textcoords="offset points", xytext=(0, 7), fontsize=7,
                        ha="center")
        _forest_axes(ax, [optimizer_style(n).label for n in names], f"{axis_label(metric)} (mean, 95% t-CI)", cell)
    fig.suptitle(f"Stage 2: {axis_label(metric)} at the chosen lr, fresh seeds", fontsize=10)
    return fig


def pairwise_ci(pairwise: pd.DataFrame, metric: str = "final/test_acc") -> Figure:
    """Stage 2: every pair's paired difference (a − b) with its 95% t interval, Holm p on the right; the zero line
    marks no difference."""
    data = pairwise[pairwise["metric"] == metric] if "metric" in pairwise.columns else pairwise
    cells = _cells(data)
    fig, axes = _grid(len(cells), 5.0, 0.45 * max(3, data.groupby(list(CELL)).size().max()) + 1.2)
    for ax, cell in zip(axes, cells, strict=True):
        part = _in_cell(data, cell).reset_index(drop=True)
        labels = []
        for y, row in part.iterrows():
            diff, low, high = float(row["diff"]), float(row["ci_low"]), float(row["ci_high"])
            significant = np.isfinite(row["p_holm"]) and row["p_holm"] <= 0.05
            err = [[diff - low], [high - diff]] if np.isfinite(low) else None
            ax.errorbar([diff], [y], xerr=err, fmt="o", color="C3" if significant else "0.4", capsize=4, ms=5)
            p = row["p_holm"]
            labels.append(f"{optimizer_style(row['a']).label} − {optimizer_style(row['b']).label}"
                          f"  (Holm p={p:.2g})" if np.isfinite(p) else
                          f"{optimizer_style(row['a']).label} − {optimizer_style(row['b']).label}  (p n/a)")
        ax.axvline(0, color="k", lw=0.8)
        _forest_axes(ax, labels, f"paired difference in {axis_label(metric)} (95% t-CI, not adjusted; p: Holm)", cell,
                     fontsize=8)
    fig.suptitle("Stage 2: pairwise differences over shared seeds (red: Holm p ≤ 0.05)", fontsize=10)
    return fig


def _forest_axes(ax: Axes, labels: list[str], xlabel: str, cell: tuple[str, str],
                 fontsize: float | None = None) -> None:
    """One row per label, top to bottom, a few x ticks, the cell as the title: the interval plots' common frame."""
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(f"{cell[0]} / {cell[1]}", fontsize=10)
