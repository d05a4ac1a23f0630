"""Tables for reports and terminals: Markdown, LaTeX, CSV, rich text, and a readable "mean ± CI" summary.

Why wrappers: the optional helpers (`tabulate` for Markdown, `rich` for terminals) may be missing, and
each output has a small fallback so a report never fails on formatting; LaTeX escaping of metric
names such as `final/train_loss` is done once here. A table wider than the terminal is printed in parts
that repeat the group columns (as pandas does), so no header such as `final/train_loss` is ever folded.
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

from descentlab.analysis.groups import NOT_LOGGED, iter_groups
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
    "to_markdown_report",
]

MISSING = "n/a"
NO_INTERVAL = "n=1, no interval"  # a group with one finished run: a mean, no interval


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


def to_markdown_report(df: pd.DataFrame, title: str | None = None, *, floatfmt: str = ".4g") -> str:
    """A Markdown section: `# title`, the table's notes (`attrs["notes"]`: what was pooled...) as a list, the table."""
    head = [f"# {title}", ""] if title else []
    notes = [f"- {note}" for note in df.attrs.get("notes", ())]
    return "\n".join([*head, *notes, *([""] if notes else []), to_markdown(df, floatfmt=floatfmt)]) + "\n"


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


def _key_count(df: pd.DataFrame) -> int:
    """How many leading columns name a row (repeated in every part): those before `runs`, else the first."""
    columns = list(df.columns)
    return columns.index("runs") if "runs" in columns and columns.index("runs") > 0 else min(1, len(columns))


def _parts(df: pd.DataFrame, width: int, floatfmt: str) -> list[list[str]]:
    """Column lists that each fit in `width` cells: the key columns in every part, the others in order."""
    from rich.cells import cell_len

    def need(column: object) -> int:  # widest cell or header, plus rich's padding (2) and a border (1)
        return max([cell_len(str(column)), *(cell_len(_cell(v, floatfmt)) for v in df[column])]) + 3

    columns = list(df.columns)
    keys, rest = columns[: _key_count(df)], columns[_key_count(df):]
    base = 1 + sum(need(c) for c in keys)
    parts: list[list[str]] = []
    current: list[str] = []
    used = base
    for column in rest:
        if current and used + need(column) > width:
            parts.append(current)
            current, used = [], base
        current.append(column)
        used += need(column)
    parts.append(current)
    return [[*keys, *part] for part in parts]


def _rich_tables(df: pd.DataFrame, title: str | None, floatfmt: str, width: int) -> list:  # -> list[rich Table]
    """The table as rich Tables that fit `width`; headers are never narrower than their text (min_width)."""
    from rich.cells import cell_len
    from rich.table import Table

    parts = _parts(df, width, floatfmt) if len(df.columns) else [[]]
    tables = []
    for i, columns in enumerate(parts):
        name = title if i == 0 else f"{title or 'table'} (continued, {i + 1}/{len(parts)})"
        table = Table(title=name if title or i else None)
        for column in columns:
            table.add_column(str(column), justify="right" if _is_numeric(df[column]) else "left", overflow="fold",
                             min_width=cell_len(str(column)))
        for row in df[columns].itertuples(index=False):
            table.add_row(*(_cell(v, floatfmt) for v in row))
        tables.append(table)
    return tables


def _plain_text(df: pd.DataFrame, title: str | None, floatfmt: str) -> str:
    body = df.to_string(index=False, float_format=lambda v: format(v, floatfmt), na_rep="")
    notes = list(df.attrs.get("notes", ()))
    return "\n".join([*([title] if title else []), body, *notes])


def render_rich(df: pd.DataFrame, title: str | None = None, *, width: int | None = None,
                floatfmt: str = ".4g") -> str:
    """The table as rich draws it, as plain text (no colour codes); pandas' text table if rich is missing.

    `width` defaults to the terminal's (120 when there is none). Notes (`attrs["notes"]`) follow the table.
    """
    width = width or shutil.get_terminal_size((120, 24)).columns
    try:
        from rich.console import Console
    except ImportError:
        return _plain_text(df, title, floatfmt)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    _print_rich(console, df, title, floatfmt)
    return buffer.getvalue().rstrip("\n")


def _print_rich(console, df: pd.DataFrame, title: str | None, floatfmt: str) -> None:
    for table in _rich_tables(df, title, floatfmt, console.width):
        console.print(table)
    for note in df.attrs.get("notes", ()):
        console.print(note, markup=False, highlight=False)


def print_table(df: pd.DataFrame, title: str | None = None, *, floatfmt: str = ".4g") -> None:
    """Print to the terminal with rich (colours when it is a terminal), else as pandas text; notes follow."""
    try:
        from rich.console import Console
    except ImportError:
        print(_plain_text(df, title, floatfmt))
        return
    # Off a terminal (logs, CI) rich assumes 80 columns and wraps every cell; give it room instead.
    width = None if sys.stdout.isatty() else 160
    _print_rich(Console(highlight=False, width=width), df, title, floatfmt)


def format_mean_ci(mean: float, half_width: float) -> str:
    """"mean ± half-width" with the half-width to 2 significant digits and the mean to the same decimals.

    Why: more digits than the interval supports suggest precision that is not there. No interval
    (n = 1): 4 significant digits. Tiny or huge values switch to scientific notation.
    """
    if mean is None or not math.isfinite(mean):
        return MISSING if mean is None or math.isnan(mean) else str(mean)
    if half_width is None or not math.isfinite(half_width):
        return format(mean, ".4g")
    if half_width <= 1e-12 * abs(mean):  # equal values up to rounding (0.95 three times): no spread
        return f"{mean:.4g} ± 0"
    decimals = 1 - math.floor(math.log10(half_width))
    if decimals > 6 or decimals < -3 or abs(mean) >= 1e7:
        return f"{mean:.3g} ± {half_width:.2g}"
    decimals = max(decimals, 0)
    return f"{mean:.{decimals}f} ± {half_width:.{decimals}f}"


def format_summary(agg: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """The `aggregate` table made readable: one row per group, one "mean ± CI half-width" column per metric.

    Columns: the grouping columns `attrs["grouping"].shown` says to show (all of them without it; a param a
    run did not log reads "(not logged)"), `runs`, `finished`, `not finished` ("1 diverged, 1 killed"),
    then one text column per metric. A metric whose n differs from the finished count shows it ("(n=2)");
    a mean over one run says so instead of showing a bare number: "0.5 (n=1, no interval)".
    `attrs["notes"]`: what the cells mean, what was pooled, what every row shares (`Grouping.notes`).
    """
    if "metric" not in agg.columns or "mean" not in agg.columns:
        raise AnalysisError("format_summary expects the output of aggregate() (metric, mean, ci_low, ci_high, ...)")
    by = list(agg.columns[: list(agg.columns).index("metric")])
    grouping = agg.attrs.get("grouping")
    shown = [c for c in by if grouping is None or c in grouping.shown]
    wanted = list(dict.fromkeys(agg["metric"])) if metrics is None else list(metrics)
    unknown = [m for m in wanted if m not in set(agg["metric"])]
    if unknown:
        raise AnalysisError(f"metrics not in the aggregate: {', '.join(unknown)}")
    rows = []
    single = False
    for key, group in iter_groups(agg, by):
        first = group.iloc[0]
        row: dict[str, object] = {c: NOT_LOGGED if pd.isna(v) else v
                                  for c, v in zip(by, key, strict=True) if c in shown}
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
            n = int(s["n"])
            text = format_mean_ci(float(s["mean"]), (float(s["ci_high"]) - float(s["ci_low"])) / 2)
            if n == 1 and text != MISSING:
                text += f" ({NO_INTERVAL})"
                single = True
            elif finished is not None and n != finished and text != MISSING:
                text += f" (n={n})"
            row[metric] = text
        rows.append(row)
    result = pd.DataFrame(rows)
    result.attrs.update(agg.attrs)
    level = f"{100 * agg.attrs.get('confidence', 0.95):g}%"
    cells = (f"cells: mean ± half-width of the {level} Student-t interval over the finished runs (seeds)"
             + (f"; {NO_INTERVAL}: a single run" if single else ""))
    notes = grouping.notes() if grouping is not None else []
    pooled = notes[:1] if grouping is not None and grouping.pooled else []  # the first thing a reader must know
    result.attrs["notes"] = [*pooled, cells, *notes[len(pooled):]]
    return result
