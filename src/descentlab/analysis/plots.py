"""Comparison figures over many tracked runs: loss curves with confidence bands, final metrics, lr sensitivity.

Inputs are the pandas frames `analysis.runs` builds (`runs`: one row per run with dotted param columns and
summary metrics; `history`: long `run_id, step, metric, value`), so nothing here talks to MLflow or Hydra.
A hue (or the x of the point plot) may be several columns: each setting of them is one curve, labelled
"Adam, lr=0.1, iterations=20", so runs of different configurations are never averaged together. Axis
labels are words (`labels.axis_label`); legends sit outside the axes; `logy=None` picks a log y axis when
the plotted values are positive and span more than `LOG_DECADES` decades (the adaptive optimizers' losses).
Figures are plain `matplotlib.figure.Figure`s on an Agg canvas (not registered with pyplot): they render
headless, never pop up a window and need no `plt.close` to free memory, wherever they are made.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from descentlab.analysis.curves import CurveStats, prepare_curve, run_series
from descentlab.analysis.groups import iter_groups, sort_key, value_text
from descentlab.analysis.labels import axis_label, setting_label
from descentlab.analysis.smoothing import Smoother, get_smoother

__all__ = [
    "LOG_DECADES",
    "OPTIMIZER_COLORS",
    "OPTIMIZER_LABELS",
    "OPTIMIZER_MARKERS",
    "OPTIMIZER_ORDER",
    "CurveLayout",
    "Levels",
    "Style",
    "add_note",
    "auto_logy",
    "curve_layout",
    "curve_summary",
    "draw_loss_curves",
    "final_metric_points",
    "group_levels",
    "half_width",
    "loss_curves",
    "lr_sensitivity",
    "new_figure",
    "optimizer_style",
    "performance_profile_plot",
    "plot_mean_band",
    "save_figure",
    "select_runs",
    "summarize_curves",
    "t_errorbar",
]

# One look per optimizer in every figure. The first four are matplotlib's default cycle in the order the book
# plots them (SGD, Momentum, AdaGrad, Adam), so Figure 6-9 keeps the book's colours; markers are the book's.
OPTIMIZER_ORDER: tuple[str, ...] = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
OPTIMIZER_COLORS: dict[str, str] = {
    "sgd": "#1f77b4",  # tab:blue
    "momentum": "#ff7f0e",  # tab:orange
    "nesterov": "#9467bd",  # tab:purple
    "adagrad": "#2ca02c",  # tab:green
    "rmsprop": "#8c564b",  # tab:brown
    "adam": "#d62728",  # tab:red
    "adamw": "#e377c2",  # tab:pink
}
OPTIMIZER_MARKERS: dict[str, str] = {
    "sgd": "o", "momentum": "x", "nesterov": "^", "adagrad": "s", "rmsprop": "v", "adam": "D", "adamw": "P",
}
OPTIMIZER_LABELS: dict[str, str] = {
    "sgd": "SGD", "momentum": "Momentum", "nesterov": "Nesterov", "adagrad": "AdaGrad", "rmsprop": "RMSprop",
    "adam": "Adam", "adamw": "AdamW",
}
_SPARE_COLORS = ("#7f7f7f", "#bcbd22", "#17becf")  # tab:gray/olive/cyan, unused by the seven above
OPTIMIZER_COLUMN = "optimizer.name"
# Runs whose summary metrics describe a complete run; others are left out of means and CIs and reported.
COMPLETE_OUTCOMES: tuple[str, ...] = ("finished",)
# logy=None: a log y axis when the plotted positive values span more than this many decades (max/min > 100).
LOG_DECADES = 2.0
_NOTE_GID = "descentlab-note"

Errorbar = tuple[str, float] | None


@dataclass(frozen=True)
class Style:
    """How one hue level is drawn: colour, marker (None for no marker) and legend label."""

    color: Any
    marker: str | None
    label: str


def optimizer_style(name: str) -> Style:
    """The fixed look of an optimizer (case-insensitive: "Adam" and "adam" match); unknown names get a
    spare colour chosen by a stable hash, so they too look the same in every figure."""
    key = str(name).lower()
    if key in OPTIMIZER_COLORS:
        return Style(OPTIMIZER_COLORS[key], OPTIMIZER_MARKERS[key], OPTIMIZER_LABELS[key])
    return Style(_SPARE_COLORS[zlib.crc32(key.encode()) % len(_SPARE_COLORS)], "*", str(name))


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on an Agg canvas, outside pyplot's registry (no display needed, nothing to leak)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, out_dir: str | Path, name: str) -> list[Path]:
    """Write `name`.png (150 dpi, for browsing) and `name`.pdf (vector, for papers); then close the figure.

    Accepts a Figure or anything holding one in `.figure` (a seaborn FacetGrid).
    """
    fig = getattr(fig, "figure", fig)
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"save_figure: name must be a plain file stem, got {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    import matplotlib.pyplot as plt  # only to release figures that pyplot does manage

    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------------------------- statistics


def _t_quantile(level: float, dof: np.ndarray | float) -> np.ndarray:
    from scipy import stats  # scipy comes with scikit-learn, a dependency

    return stats.t.ppf(0.5 + level / 200.0, dof)


def t_errorbar(level: float = 95) -> Callable[[Sequence[float]], tuple[float, float]]:
    """A seaborn `errorbar=` callable: the Student-t interval of the mean.

    Why not seaborn's ("ci", 95): that bootstraps, which with 3 seeds gives a too-narrow, random interval;
    the t interval is exact under normality, deterministic and the same one `loss_curves` draws.
    """

    def interval(values: Sequence[float]) -> tuple[float, float]:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            return (np.nan, np.nan)
        half = float(_t_quantile(level, len(v) - 1)) * v.std(ddof=1) / np.sqrt(len(v))
        return (v.mean() - half, v.mean() + half)

    return interval


def half_width(errorbar: Errorbar, std: pd.Series, n: pd.Series) -> np.ndarray:
    """Half-width of the band around a mean: ("ci", level) t interval (NaN for n < 2), ("se", k), ("sd", k), None."""
    std = std.to_numpy(dtype=float)
    n = n.to_numpy(dtype=float)
    if errorbar is None:
        return np.full_like(std, np.nan)
    kind, value = errorbar
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "ci":
            return np.where(n > 1, _t_quantile(value, np.maximum(n - 1, 1)) * std / np.sqrt(n), np.nan)
        if kind == "se":
            return value * std / np.sqrt(n)
        if kind == "sd":
            return value * std
    raise ValueError(f"errorbar must be ('ci', level), ('se', k), ('sd', k) or None, got {errorbar!r}")


def select_runs(runs: pd.DataFrame, outcomes: Collection[str] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split runs into the ones to aggregate and the rest (reported, never silently dropped)."""
    if outcomes is None or "outcome" not in runs.columns:
        return runs, runs.iloc[0:0]
    keep = runs["outcome"].isin(list(outcomes))
    return runs[keep], runs[~keep]


def _excluded_note(excluded: pd.DataFrame) -> str | None:
    """"left out: 2 diverged (adam ×2), 1 failed" for a figure footnote, or None."""
    if excluded.empty:
        return None
    parts = []
    for outcome, group in excluded.groupby("outcome", sort=True):
        detail = ""
        if OPTIMIZER_COLUMN in group.columns:
            counts = group[OPTIMIZER_COLUMN].value_counts()
            detail = " (" + ", ".join(f"{k} ×{v}" if v > 1 else str(k) for k, v in counts.items()) + ")"
        parts.append(f"{len(group)} {outcome}{detail}")
    return "left out of means and CIs: " + "; ".join(parts)


def add_note(fig: Figure, note: str | None) -> None:
    """A footnote under the figure (below the axes, so it covers nothing); further notes go on new lines."""
    if not note:
        return
    for text in fig.texts:
        if text.get_gid() == _NOTE_GID:
            text.set_text(f"{text.get_text()}\n{note}")
            return
    fig.text(0.01, 0.0, note, fontsize=7, color="0.35", ha="left", va="top", gid=_NOTE_GID, wrap=True)


def auto_logy(values: Iterable[float] | np.ndarray, decades: float = LOG_DECADES) -> bool:
    """True when the finite values are all positive and max/min exceeds 10**decades (log shows them better)."""
    v = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0 or (v <= 0).any():
        return False
    return bool(v.max() / v.min() > 10.0**decades)


def _optimizer_rank(value: Any) -> tuple[int, str]:
    known = {k: i for i, k in enumerate(OPTIMIZER_ORDER)}
    return (known.get(str(value).lower(), len(known)), str(value))


def _order(values: Iterable[Any], column: str | None) -> list[Any]:
    """Levels in a stable order: optimizers in the book's order, numbers ascending, other text sorted."""
    levels = list(pd.unique(pd.Series(list(values))))
    if column == OPTIMIZER_COLUMN:
        return sorted(levels, key=_optimizer_rank)
    try:
        return sorted(levels)
    except TypeError:
        return sorted(levels, key=str)


def _level_label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _styles(column: str | None, levels: Sequence[Any]) -> dict[Any, Style]:
    """Look per hue level: the fixed optimizer palette, a sequential palette for numbers, else seaborn's."""
    if column == OPTIMIZER_COLUMN:
        return {v: optimizer_style(v) for v in levels}
    import seaborn as sns

    numeric = len(levels) > 0 and all(isinstance(v, int | float | np.number) for v in levels)
    colors = sns.color_palette("viridis" if numeric else "deep", max(len(levels), 1))
    return {v: Style(colors[i], None, _level_label(v)) for i, v in enumerate(levels)}


def _columns(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return []
    return [spec] if isinstance(spec, str) else list(spec)


def _name(key: str, value: Any) -> str:
    """A value shown alone in a label: optimizers by their display name (Adam), others as they are."""
    if key == OPTIMIZER_COLUMN and isinstance(value, str):
        return optimizer_style(value).label
    return value_text(value)


@dataclass(frozen=True)
class Levels:
    """The settings of some columns: a label per row (`labels`, the frame's index), in order, a look each."""

    labels: pd.Series
    order: list[str]
    styles: dict[str, Style]


def _palette(n: int) -> list[Any]:
    import seaborn as sns

    return sns.color_palette("tab10" if n <= 10 else "husl", max(n, 1))


def group_levels(frame: pd.DataFrame, columns: str | Sequence[str], sep: str = ", ") -> Levels:
    """Each distinct setting of `columns` in `frame` as a labelled level ("Adam, lr=0.1").

    One column: the optimizer palette for optimizers, numbers ascending on viridis. Several: settings ordered by
    optimizer (the book's order), then the other values; optimizer colours and markers when each optimizer
    has one setting, else a qualitative palette with the optimizer's marker, so every level stays distinct.
    """
    cols = _columns(columns)
    missing = [c for c in cols if c not in frame.columns]
    if missing or not cols:
        raise ValueError(f"runs has no column(s) {missing or cols}")
    if len(cols) == 1:
        column = cols[0]
        levels = _order(frame[column].dropna(), column)
        by_value = _styles(column, levels)
        labels = frame[column].map(lambda v: value_text(v) if pd.isna(v) else by_value[v].label)
        order = [by_value[v].label for v in levels] + ([value_text(None)] if frame[column].isna().any() else [])
        styles = {by_value[v].label: by_value[v] for v in levels}
        styles.setdefault(value_text(None), Style("0.5", None, value_text(None)))
        return Levels(labels.astype(object), order, styles)

    def rank(values: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(_optimizer_rank(v) if c == OPTIMIZER_COLUMN else sort_key(v) for c, v in zip(cols, values,
                                                                                                  strict=True))

    settings = sorted(iter_groups(frame, cols), key=lambda item: rank(item[0]))
    labels = pd.Series(index=frame.index, dtype=object)
    order: list[str] = []
    for values, rows in settings:
        label = setting_label(zip(cols, values, strict=True), name_of=_name, sep=sep)
        labels[rows.index] = label
        order.append(label)
    optimizers = [dict(zip(cols, values, strict=True)).get(OPTIMIZER_COLUMN) for values, _ in settings]
    own_colours = OPTIMIZER_COLUMN in cols and len(set(map(str, optimizers))) == len(optimizers)
    colors = _palette(len(settings))
    styles = {}
    for i, (label, name) in enumerate(zip(order, optimizers, strict=True)):
        look = optimizer_style(name) if isinstance(name, str) else None
        styles[label] = Style(look.color if own_colours and look else colors[i], look.marker if look else None, label)
    return Levels(labels, order, styles)


def _legend_width(labels: Iterable[str], title: str = "") -> float:
    """Inches a one-column legend of these labels needs at 8 pt (marker, gap, text), so the figure can grow by it."""
    chars = max([len(str(label)) for label in labels] + [len(title)], default=1)
    return 0.7 + 0.065 * chars


def _legend_right(fig: Figure, handles: Sequence[Any], labels: Sequence[str], title: str | None) -> None:
    """A figure legend right of the axes, centred: it covers no curve and no title (constrained layout makes room;
    notes go under the figure, so they never meet it either)."""
    fig.legend(handles, labels, title=title, fontsize=8, title_fontsize=8, loc="outside right center",
               frameon=False)


def _legend_title(columns: Sequence[str]) -> str:
    return ", ".join(axis_label(c) for c in columns)


def _warn_pooled(runs: pd.DataFrame, by: Sequence[str]) -> None:
    """Warn when one group holds several runs of one seed: a mean over them pools other settings."""
    if "seed" not in runs.columns or runs.empty:
        return
    dup = runs.groupby([*by, "seed"], dropna=False).size()
    if (dup > 1).any():
        warnings.warn(
            f"some groups of {list(by) or 'all runs'} hold several runs with the same seed: the mean pools runs "
            "that differ in other params; filter `runs` or add a facet",
            stacklevel=3,
        )


def curve_summary(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    metric: str = "train/loss",
    by: Sequence[str] = (OPTIMIZER_COLUMN,),
    smooth: str | Smoother | None = None,
    errorbar: Errorbar = ("ci", 95),
    every: int = 1,
    outcomes: Collection[str] | None = COMPLETE_OUTCOMES,
    window: int = 11,
    alpha: float = 0.1,
) -> pd.DataFrame:
    """Mean of `metric` per (`by`..., step) over runs, with band limits: columns *by, step, mean, lo, hi, n.

    Each run is smoothed first (over its own full series), then steps are thinned to every `every`-th (the
    last step always kept), then means and t intervals are computed analytically: a bootstrap per step
    (seaborn's default) takes minutes on 2,000 steps and is noisy with 3 seeds. The runs go one at a time
    through `curves.CurveStats`, the accumulator `analyze.py` feeds while it streams histories.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    by = list(by)
    missing = [c for c in by if c not in runs.columns]
    if missing:
        raise ValueError(f"runs has no column(s) {missing}; columns: {sorted(runs.columns)}")
    selected, _ = select_runs(runs, outcomes)
    acc = CurveStats(selected, by)
    smoother = get_smoother(smooth, window=window, alpha=alpha)
    h = history.loc[history["metric"] == metric, ["run_id", "step", "value"]]
    h = h[h["run_id"].isin(selected["run_id"])]
    for run_id, points in h.groupby("run_id", sort=False):
        steps, values = run_series(points)
        acc.add(run_id, *prepare_curve(steps, values, smoother, every))
    return summarize_curves(acc, errorbar)


def summarize_curves(acc: CurveStats, errorbar: Errorbar = ("ci", 95)) -> pd.DataFrame:
    """The accumulated curves as `curve_summary` returns them: *by, step, mean, lo, hi, n."""
    agg = acc.frame()
    if agg.empty:
        return pd.DataFrame(columns=[*acc.by, "step", "mean", "lo", "hi", "n"])
    half = half_width(errorbar, agg["std"], agg["count"])
    return agg.assign(lo=agg["mean"] - half, hi=agg["mean"] + half, n=agg["count"])[
        [*acc.by, "step", "mean", "lo", "hi", "n"]
    ]


# ------------------------------------------------------------------------------------------------ figures


def _facet_var(runs: pd.DataFrame, column: str | None) -> str | None:
    """Facet on `column` only if it exists and takes more than one value (else a facet adds nothing)."""
    if column is None or column not in runs.columns:
        return None
    return column if runs[column].nunique(dropna=False) > 1 else None


def _band_label(errorbar: Errorbar) -> str:
    if errorbar is None:
        return "no band"
    kind, value = errorbar
    return {"ci": f"{value:g}% t-CI", "se": f"±{value:g} SE", "sd": f"±{value:g} SD"}.get(kind, str(errorbar))


def _n_text(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    return f"{lo} run{'s' if hi > 1 else ''}" if lo == hi else f"{lo}–{hi} runs"


def plot_mean_band(ax: Any, steps: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray, style: Style,
                   markevery: int | None = None, band_alpha: float = 0.2) -> None:
    """One mean curve and, where defined, its band (fill_between) in the level's colour."""
    ax.plot(steps, mean, color=style.color, label=style.label, lw=1.2,
            marker=style.marker if markevery else None, markevery=markevery, ms=4)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.fill_between(steps, lo, hi, where=ok, color=style.color, alpha=band_alpha, lw=0)


@dataclass(frozen=True)
class CurveLayout:
    """What `loss_curves` draws before any history is read: the runs averaged (`selected`, with a `_hue` column
    when there is a hue), the ones left out, and the grouping (`by`: row, column and hue variables)."""

    selected: pd.DataFrame
    excluded: pd.DataFrame
    by: list[str]
    hue_cols: list[str]
    levels: Levels | None
    row_var: str | None
    col_var: str | None


def curve_layout(
    runs: pd.DataFrame,
    hue: str | Sequence[str] | None = OPTIMIZER_COLUMN,
    col: str | None = "model.name",
    row: str | None = "dataset.name",
    outcomes: Collection[str] | None = COMPLETE_OUTCOMES,
) -> CurveLayout:
    """The facets and hue levels of `loss_curves` from the runs alone, so histories can be streamed into
    `curves.CurveStats(layout.selected, layout.by)` and drawn with `draw_loss_curves`."""
    selected, excluded = select_runs(runs, outcomes)
    row_var, col_var = _facet_var(selected, row), _facet_var(selected, col)
    hue_cols = [c for c in _columns(hue) if c not in (row_var, col_var)]
    missing = [c for c in hue_cols if c not in selected.columns]
    if missing:
        raise ValueError(f"runs has no hue column {missing[0]!r}")
    levels = group_levels(selected, hue_cols) if hue_cols and not selected.empty else None
    if levels is not None:
        selected = selected.assign(_hue=levels.labels)
    hue_var = "_hue" if levels is not None else None
    by = [v for v in (row_var, col_var, hue_var) if v is not None]
    _warn_pooled(selected, [v for v in (row_var, col_var, *hue_cols) if v is not None])
    return CurveLayout(selected, excluded, by, hue_cols, levels, row_var, col_var)


def loss_curves(
    history: pd.DataFrame,
    runs: pd.DataFrame,
    metric: str = "train/loss",
    hue: str | Sequence[str] | None = OPTIMIZER_COLUMN,
    col: str | None = "model.name",
    row: str | None = "dataset.name",
    smooth: str | Smoother | None = None,
    errorbar: Errorbar = ("ci", 95),
    every: int = 1,
    logy: bool | None = None,
    outcomes: Collection[str] | None = COMPLETE_OUTCOMES,
    height: float = 3.2,
    aspect: float = 1.5,
) -> Figure:
    """Mean `metric` over seeds per `hue` setting with a confidence band, faceted by `col`/`row` when they vary.

    One line and one band per hue setting and facet; `hue` may name several columns (one curve per setting
    of all of them). Runs whose outcome is not in `outcomes` are left out (a mean over runs that stopped
    early is biased towards the survivors) and counted in a footnote. `logy=None`: log y when the curves
    span more than `LOG_DECADES` decades. Warns when a curve holds several runs of one seed (pooled configs).
    """
    layout = curve_layout(runs, hue=hue, col=col, row=row, outcomes=outcomes)
    summary = curve_summary(history, layout.selected, metric, layout.by, smooth=smooth, errorbar=errorbar,
                            every=every, outcomes=None)
    return draw_loss_curves(summary, layout, metric=metric, smooth=smooth, errorbar=errorbar, logy=logy,
                            outcomes=outcomes, height=height, aspect=aspect)


def draw_loss_curves(
    summary: pd.DataFrame,
    layout: CurveLayout,
    metric: str = "train/loss",
    smooth: str | Smoother | None = None,
    errorbar: Errorbar = ("ci", 95),
    logy: bool | None = None,
    outcomes: Collection[str] | None = COMPLETE_OUTCOMES,
    height: float = 3.2,
    aspect: float = 1.5,
) -> Figure:
    """The `loss_curves` figure from a curve summary grouped by `layout.by` (`curve_summary` or
    `summarize_curves` of streamed `CurveStats`)."""
    row_var, col_var, levels, hue_cols, by = layout.row_var, layout.col_var, layout.levels, layout.hue_cols, layout.by
    if summary.empty:
        raise ValueError(f"no {metric!r} history for the selected runs (outcomes {outcomes})")
    hue_var = "_hue" if levels is not None else None

    row_levels = _order(summary[row_var], row_var) if row_var else [None]
    col_levels = _order(summary[col_var], col_var) if col_var else [None]
    hue_levels = [lv for lv in levels.order if lv in set(summary["_hue"])] if levels is not None else [None]
    styles = levels.styles if levels is not None else {None: Style("C0", None, axis_label(metric))}
    legend = _legend_width(hue_levels, _legend_title(hue_cols)) if hue_var else 0.0
    fig = new_figure((height * aspect * len(col_levels) + legend, height * len(row_levels)))
    axes = fig.subplots(len(row_levels), len(col_levels), sharex=True, sharey=True, squeeze=False)
    n_steps = summary.groupby(by, dropna=False)["step"].size().max() if by else len(summary)
    markevery = max(1, n_steps // 10) if OPTIMIZER_COLUMN in hue_cols else None
    log = auto_logy(summary["mean"]) if logy is None else logy

    for i, rv in enumerate(row_levels):
        for j, cv in enumerate(col_levels):
            ax = axes[i, j]
            facet = summary
            if row_var:
                facet = facet[facet[row_var] == rv]
            if col_var:
                facet = facet[facet[col_var] == cv]
            for level in hue_levels:
                part = facet[facet[hue_var] == level] if hue_var else facet
                if part.empty:
                    continue
                plot_mean_band(ax, part["step"].to_numpy(), part["mean"].to_numpy(), part["lo"].to_numpy(),
                               part["hi"].to_numpy(), styles[level], markevery=markevery)
            title = " | ".join(f"{axis_label(v)}: {_level_label(x)}" for v, x in ((row_var, rv), (col_var, cv)) if v)
            if title:
                ax.set_title(title, fontsize=9)
            if log:
                ax.set_yscale("log")
            if i == len(row_levels) - 1:
                ax.set_xlabel(axis_label("step"))
            if j == 0:
                ax.set_ylabel(axis_label(metric))
            ax.grid(True, alpha=0.3)
    if hue_var:
        handles = [Line2D([], [], color=styles[lv].color, marker=styles[lv].marker, label=lv) for lv in hue_levels]
        _legend_right(fig, handles, hue_levels, _legend_title(hue_cols))
    smoothing = f", {smooth}-smoothed" if isinstance(smooth, str) else ""
    band = f"band: {_band_label(errorbar)}" if summary["n"].max() > 1 else "no band"
    if summary["n"].max() > 1 and summary["n"].min() < 2:
        band += " (none where n=1)"
    fig.suptitle(f"{axis_label(metric)}: mean of {_n_text(summary['n'])} per curve, {band}{smoothing}", fontsize=10)
    add_note(fig, _excluded_note(layout.excluded))
    return fig


def _mark_excluded(ax: Any, x: np.ndarray, colors: Sequence[Any]) -> None:
    """Runs that did not finish, as × at the top edge of the axes: seen, but kept out of the statistics."""
    if len(x) == 0:
        return
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    ax.scatter(x, np.full(len(x), 0.97), transform=trans, marker="x", c=list(colors), s=40, lw=1.5,
               clip_on=False, zorder=5, label="not finished (left out)")


def _move_legend_right(fig: Figure, ax: Any, title: str | None) -> None:
    """The axes' legend (seaborn's) moved to the figure's right margin, see `_legend_right`."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if handles:
        _legend_right(fig, handles, labels, title)


def final_metric_points(
    runs: pd.DataFrame,
    metric: str = "final/train_loss",
    x: str | Sequence[str] = OPTIMIZER_COLUMN,
    hue: str | None = "model.name",
    level: float = 95,
    logy: bool | None = None,
    outcomes: Collection[str] | None = COMPLETE_OUTCOMES,
) -> Figure:
    """One summary metric per group: mean with a t interval across seeds (seaborn pointplot) over the runs
    themselves (stripplot), so 3 seeds are never mistaken for a tight estimate.

    `x` may name several columns: one category per setting of them, labelled on its tick ("Adam" over
    "lr=0.1"). Unfinished runs are kept out of the mean and CI; those with a value are drawn as × at the top
    edge. A `hue` column with a single value, or one of the `x` columns, is ignored. `logy=None`: log y when
    the runs' values span more than `LOG_DECADES` decades.
    """
    import seaborn as sns

    x_cols = _columns(x)
    for c in (*x_cols, metric):
        if c not in runs.columns:
            raise ValueError(f"runs has no column {c!r}")
    x_levels = group_levels(runs, x_cols, sep="\n")
    runs = runs.assign(_x=x_levels.labels)
    selected, excluded = select_runs(runs, outcomes)
    selected = selected[np.isfinite(selected[metric].astype(float))]
    if selected.empty:
        raise ValueError(f"no finished run has a finite {metric!r}")
    hue_var = _facet_var(selected, hue) if hue not in x_cols else None
    x_order = [lv for lv in x_levels.order if lv in set(selected["_x"])]
    data = selected
    if hue_var:
        hue_levels = group_levels(selected, hue_var)
        data = selected.assign(_hue=hue_levels.labels)
        hue_order, palette = hue_levels.order, {k: v.color for k, v in hue_levels.styles.items()}
        markers: Any = "o"
    else:  # colour by x (one legend-less colour per category: the optimizer palette)
        hue_order, palette = x_order, {k: x_levels.styles[k].color for k in x_order}
        markers = [x_levels.styles[k].marker or "o" for k in x_order]
    hue_col = "_hue" if hue_var else "_x"
    n_hue = len(hue_order) if hue_var else 1
    dodge = 0.8 * (n_hue - 1) / n_hue if n_hue > 1 else False  # pointplot offsets equal stripplot's

    lines = max(label.count("\n") + 1 for label in x_order)
    chars = max(len(part) for label in x_order for part in label.split("\n"))
    per_category = max(1.1, 0.45 + 0.065 * chars) * max(1, n_hue) ** 0.5  # tick labels at 8 pt side by side
    legend = _legend_width(hue_order, axis_label(hue_var)) if hue_var else 0.0
    fig = new_figure((max(4.0, per_category * len(x_order)) + legend, 3.6 + 0.15 * lines))
    ax = fig.subplots()
    sns.pointplot(data=data, x="_x", y=metric, hue=hue_col, order=x_order, hue_order=hue_order, palette=palette,
                  errorbar=t_errorbar(level), dodge=dodge, linestyle="none", capsize=0.1, markers=markers,
                  legend=bool(hue_var), ax=ax)
    sns.stripplot(data=data, x="_x", y=metric, hue=hue_col, order=x_order, hue_order=hue_order, palette=palette,
                  dodge=bool(dodge), jitter=0.12, alpha=0.8, size=3.5, linewidth=0.5, edgecolor="white",
                  legend=False, ax=ax)
    bad = excluded[excluded["_x"].isin(x_order)]
    if not bad.empty:
        pos = {v: i for i, v in enumerate(x_order)}
        offsets = dict(zip(hue_order, np.linspace(-dodge / 2, dodge / 2, n_hue), strict=True)) if hue_var else {}
        hue_of = group_levels(runs, hue_var).labels if hue_var else bad["_x"]
        xs = np.array([pos[v] + offsets.get(hue_of[i], 0.0) for i, v in bad["_x"].items()])
        _mark_excluded(ax, xs, ["0.3"] * len(xs))
    log = auto_logy(selected[metric].astype(float)) if logy is None else logy
    if log:
        ax.set_yscale("log")
    ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel(_legend_title(x_cols))
    ax.set_ylabel(axis_label(metric))
    ax.grid(True, axis="y", alpha=0.3)
    single = (data.groupby(["_x", "_hue"] if hue_var else ["_x"])[metric].count() < 2).any()
    ax.set_title(f"{axis_label(metric)}: mean and {level:g}% t-CI over runs"
                 + (" (none where n=1)" if single else "") + ", dots = runs", fontsize=10)
    if hue_var:
        _move_legend_right(fig, ax, axis_label(hue_var))
    add_note(fig, _excluded_note(excluded))
    return fig


def lr_sensitivity(
    runs: pd.DataFrame,
    metric: str = "final/train_loss",
    hue: str | Sequence[str] | None = OPTIMIZER_COLUMN,
    level: float = 95,
    logy: bool | None = None,
    outcomes: Collection[str] | None = COMPLETE_OUTCOMES,
    lr: str = "optimizer.lr",
) -> Figure:
    """`metric` against the learning rate (log x): mean and t interval per lr and hue setting, runs as dots.

    `hue` may name several columns (everything but the lr and the seed that varies): each setting is one
    line, so a line never pools runs that differ in anything but lr and seed. Unfinished runs (typically
    divergence at large lr, the point of such a sweep) are drawn as × at the top edge at their lr, kept out
    of the means. `logy=None`: log y when the values span more than `LOG_DECADES` decades.
    """
    import seaborn as sns

    for c in (lr, metric):
        if c not in runs.columns:
            raise ValueError(f"runs has no column {c!r}")
    n_lr = runs[lr].dropna().nunique()
    if n_lr < 2:
        raise ValueError(f"lr_sensitivity needs runs at more than one {lr}; these runs have {n_lr}")
    hue_cols = [c for c in _columns(hue) if c in runs.columns and c != lr]
    levels = group_levels(runs, hue_cols) if hue_cols else None
    if levels is not None:
        runs = runs.assign(_hue=levels.labels)
    selected, excluded = select_runs(runs, outcomes)
    selected = selected[np.isfinite(selected[metric].astype(float))]
    if selected.empty:
        raise ValueError(f"no finished run has a finite {metric!r}")
    fig = new_figure((5.0 + (_legend_width(levels.order, _legend_title(hue_cols)) if levels is not None else 0), 4.0))
    ax = fig.subplots()
    if levels is not None:
        order = [lv for lv in levels.order if lv in set(selected["_hue"])]
        palette = {lv: levels.styles[lv].color for lv in order}
        # seaborn's `style` cannot mix line-art and filled markers: Momentum's "x" becomes the filled "X"
        markers = {lv: {"x": "X", "+": "P"}.get(levels.styles[lv].marker or "o", levels.styles[lv].marker or "o")
                   for lv in order}
        sns.lineplot(data=selected, x=lr, y=metric, hue="_hue", hue_order=order, palette=palette,
                     style="_hue", style_order=order, markers=markers, dashes=False,
                     errorbar=t_errorbar(level), err_style="band", ax=ax)
        sns.scatterplot(data=selected, x=lr, y=metric, hue="_hue", hue_order=order, palette=palette,
                        alpha=0.4, s=14, legend=False, ax=ax)
        bad = excluded[excluded["_hue"].isin(order)]
        colors = [levels.styles[v].color for v in bad["_hue"]]
    else:
        sns.lineplot(data=selected, x=lr, y=metric, marker="o", errorbar=t_errorbar(level), ax=ax)
        sns.scatterplot(data=selected, x=lr, y=metric, alpha=0.4, s=14, ax=ax)
        bad = excluded
        colors = ["C0"] * len(bad)
    _mark_excluded(ax, bad[lr].to_numpy(dtype=float) if lr in bad.columns else np.array([]), colors)
    ax.set_xscale("log")
    log = auto_logy(selected[metric].astype(float)) if logy is None else logy
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(axis_label(lr))
    ax.set_ylabel(axis_label(metric))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{axis_label(metric)} vs {axis_label(lr)}: mean and {level:g}% t-CI", fontsize=10)
    if levels is not None:
        _move_legend_right(fig, ax, _legend_title(hue_cols))
    add_note(fig, _excluded_note(excluded))
    return fig


def _solver_styles(solvers: Sequence[str]) -> dict[str, Style]:
    """A look per solver label ("adam" or "adam, lr=0.1"): the optimizer's when each optimizer is one solver,
    else a palette; labels with the optimizer's display name ("Adam, lr=0.1")."""
    heads = [str(s).partition(", ")[0] for s in solvers]
    own = len(set(heads)) == len(heads) and all(h.lower() in OPTIMIZER_COLORS for h in heads)
    colors = _palette(len(solvers))
    styles = {}
    for i, (solver, head) in enumerate(zip(solvers, heads, strict=True)):
        look = optimizer_style(head)
        rest = str(solver)[len(head):]
        styles[solver] = Style(look.color if own else colors[i], look.marker, look.label + rest)
    return styles


def performance_profile_plot(profile: pd.DataFrame, logx: bool = True) -> Figure:
    """Dolan–Moré profiles: ρ(τ), the share of problems a solver solves within τ times the best, as steps.

    Higher and further left is better; ρ(1) is how often a solver is the best. Infinite τ (never solved)
    are not drawn: the curve simply stays below 1. Solvers that are settings ("adam, lr=0.1") get a palette.
    """
    for c in ("solver", "tau", "rho"):
        if c not in profile.columns:
            raise ValueError(f"profile needs columns solver, tau, rho; missing {c!r}")
    data = profile[np.isfinite(profile["tau"].astype(float))]
    if data.empty:
        raise ValueError("profile has no finite tau")
    solvers = sorted(pd.unique(data["solver"]), key=lambda s: (_optimizer_rank(str(s).partition(", ")[0]), str(s)))
    styles = _solver_styles(solvers)
    right = max(float(data["tau"].max()) * 1.05, 2.0)  # every curve runs to the same right edge
    fig = new_figure((5.0 + _legend_width([styles[s].label for s in solvers], "solver"), 4.0))
    ax = fig.subplots()
    for solver in solvers:
        part = data[data["solver"] == solver].sort_values(["tau", "rho"])
        tau, rho = part["tau"].to_numpy(dtype=float), part["rho"].to_numpy(dtype=float)
        style = styles[solver]
        ax.step(np.r_[tau, right], np.r_[rho, rho[-1]], where="post", color=style.color, label=style.label, lw=1.6)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlim(1, right)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("τ (ratio to the best solver)")
    ax.set_ylabel("ρ(τ): share of problems within τ")
    ax.grid(True, which="both", alpha=0.3)
    _move_legend_right(fig, ax, "solver")
    about = profile.attrs  # stats.performance_profile records what was compared
    detail = (f": {axis_label(about['metric'])} over {about['problems']} problems"
              if {"metric", "problems"} <= about.keys() else "")
    ax.set_title(f"performance profile{detail}", fontsize=10)
    return fig
