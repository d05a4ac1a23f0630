"""Tables for reports and terminals: Markdown, LaTeX, CSV, rich text, and a readable "mean ± CI" summary.

Why wrappers: the optional helpers (`tabulate` for Markdown, `rich` for terminals) may be missing, and
each output has a small fallback so a report never fails on formatting; LaTeX escaping of metric
names such as `final/train_loss` is done once here.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from descentlab.analysis.runs import AnalysisError
from descentlab.analysis.stats import OUTCOMES

__all__ = [
    "format_mean_ci",
    "format_summary",
    "print_table",
    "render_rich",
    "to_csv",
    "to_latex",
    "to_markdown",
]

MISSING = "n/a"


def _cell(value: object, floatfmt: str) -> str:
    """One cell as text: floats with `floatfmt`, missing values as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, float | np.floating):
        return format(float(value), floatfmt)
    return str(value)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _plain_frame(df: pd.DataFrame, index: bool) -> pd.DataFrame:
    return df.reset_index() if index else df


def to_markdown(df: pd.DataFrame, *, index: bool = False, floatfmt: str = ".4g") -> str:
    """A GitHub/pipe Markdown table (pandas + tabulate); `|` inside text cells is escaped."""
    escaped = df.copy()
    for column in escaped.columns:
        if not _is_numeric(escaped[column]):
            escaped[column] = [_cell(v, floatfmt).replace("|", r"\|") for v in escaped[column]]
    return escaped.to_markdown(index=index, floatfmt=floatfmt)


def to_latex(
    df: pd.DataFrame,
    *,
    index: bool = False,
    caption: str | None = None,
    label: str | None = None,
    floatfmt: str = ".4g",
) -> str:
    """A booktabs `tabular` (in a `table` when caption/label are given); names and text are LaTeX-escaped."""
    frame = _plain_frame(df, index).reset_index(drop=True)
    numeric = {c: _is_numeric(frame[c]) for c in frame.columns}
    float_cols = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    styler = frame.style.format(
        {c: (lambda v, f=floatfmt: format(v, f)) for c in float_cols}, na_rep="", escape="latex"
    )
    styler = styler.format_index(escape="latex", axis=1).hide(axis="index")
    column_format = "".join("r" if numeric[c] else "l" for c in frame.columns)
    text = styler.to_latex(hrules=True, caption=caption, label=label, column_format=column_format,
                           position_float="centering" if caption or label else None)
    return text.replace("±", r"$\pm$")


def to_csv(df: pd.DataFrame, path: str | os.PathLike[str], *, index: bool = False) -> Path:
    """Write CSV (creating folders); floats keep full precision, so reading it back gives the same values."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=index)
    return path


def _rich_table(df: pd.DataFrame, title: str | None, floatfmt: str):  # -> rich.table.Table
    from rich.table import Table

    table = Table(title=title)
    for column in df.columns:
        table.add_column(str(column), justify="right" if _is_numeric(df[column]) else "left", overflow="fold")
    for row in df.itertuples(index=False):
        table.add_row(*(_cell(v, floatfmt) for v in row))
    return table


def _plain_text(df: pd.DataFrame, title: str | None, floatfmt: str) -> str:
    body = df.to_string(index=False, float_format=lambda v: format(v, floatfmt), na_rep="")
    return f"{title}\n{body}" if title else body


def render_rich(df: pd.DataFrame, title: str | None = None, *, width: int | None = None,
                floatfmt: str = ".4g") -> str:
    """The table as rich draws it, as plain text (no colour codes); pandas' text table if rich is missing.

    `width` defaults to the terminal's (120 when there is none).
    """
    width = width or shutil.get_terminal_size((120, 24)).columns
    try:
        from rich.console import Console
    except ImportError:
        return _plain_text(df, title, floatfmt)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    console.print(_rich_table(df, title, floatfmt))
    return buffer.getvalue().rstrip("\n")


def print_table(df: pd.DataFrame, title: str | None = None, *, floatfmt: str = ".4g") -> None:
    """Print to the terminal with rich (colours when it is a terminal), else as pandas text."""
    try:
        from rich.console import Console
    except ImportError:
        print(_plain_text(df, title, floatfmt))
        return
    # Off a terminal (logs, CI) rich assumes 80 columns and wraps every cell; give it room instead.
    width = None if sys.stdout.isatty() else 160
    Console(highlight=False, width=width).print(_rich_table(df, title, floatfmt))


def format_mean_ci(mean: float, half_width: float) -> str:
    """"mean ± half-width" with the half-width to 2 significant digits and the mean to the same decimals.

    Why: more digits than the interval supports suggest precision that is not there. No interval
    (n = 1): 4 significant digits. Tiny or huge values switch to scientific notation.
    """
    if mean is None or not math.isfinite(mean):
        return MISSING if mean is None or math.isnan(mean) else str(mean)
    if half_width is None or not math.isfinite(half_width):
        return format(mean, ".4g")
    if half_width == 0:
        return f"{mean:.4g} ± 0"
    decimals = 1 - math.floor(math.log10(half_width))
    if decimals > 6 or decimals < -3 or abs(mean) >= 1e7:
        return f"{mean:.3g} ± {half_width:.2g}"
    decimals = max(decimals, 0)
    return f"{mean:.{decimals}f} ± {half_width:.{decimals}f}"


def format_summary(agg: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The `aggregate` table made readable: one row per group, one "mean ± CI half-width" column per metric.

    Columns: the grouping columns, `runs`, `finished`, `not finished` ("1 diverged, 1 killed"), then
    one text column per metric. A metric whose n differs from the finished count shows it ("(n=2)").
    """
    if "metric" not in agg.columns or "mean" not in agg.columns:
        raise AnalysisError("format_summary expects the output of aggregate() (metric, mean, ci_low, ci_high, ...)")
    by = list(agg.columns[: list(agg.columns).index("metric")])
    wanted = list(dict.fromkeys(agg["metric"])) if metrics is None else list(metrics)
    unknown = [m for m in wanted if m not in set(agg["metric"])]
    if unknown:
        raise AnalysisError(f"metrics not in the aggregate: {', '.join(unknown)}")
    rows = []
    groups = agg.groupby(by, sort=False, dropna=False) if by else [((), agg)]
    for key, group in groups:
        first = group.iloc[0]
        row: dict[str, object] = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        finished = int(first["finished"]) if "finished" in group else None
        if "runs" in group:
            row["runs"] = int(first["runs"])
        if finished is not None:
            row["finished"] = finished
            issues = [f"{int(first[o])} {o}" for o in OUTCOMES[1:] if o in group and int(first[o])]
            row["not finished"] = ", ".join(issues)
        by_metric = group.set_index("metric")
        for metric in wanted:
            if metric not in by_metric.index:
                row[metric] = MISSING
                continue
            s = by_metric.loc[metric]
            text = format_mean_ci(float(s["mean"]), (float(s["ci_high"]) - float(s["ci_low"])) / 2)
            if finished is not None and int(s["n"]) != finished and text != MISSING:
                text += f" (n={int(s['n'])})"
            row[metric] = text
        rows.append(row)
    result = pd.DataFrame(rows)
    result.attrs.update(agg.attrs)
    return result
