"""analysis.tables: Markdown, LaTeX, CSV, rich text and the "mean ± CI" summary, with and without optional helpers."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from descentlab.analysis.runs import AnalysisError
from descentlab.analysis.stats import aggregate
from descentlab.analysis.tables import (
    format_mean_ci,
    format_summary,
    print_table,
    render_rich,
    to_csv,
    to_latex,
    to_markdown,
    to_markdown_report,
)

TABLE = pd.DataFrame({
    "optimizer.name": ["sgd", "adam"],
    "final/train_loss": [0.123456789, 0.000123],
    "n": [3, 4],
    "note": ["a|b", None],
})


def runs_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "optimizer.name": ["sgd", "sgd", "sgd", "sgd", "adam", "adam", "adam"],
        "outcome": ["finished", "finished", "finished", "diverged", "finished", "killed", "finished"],
        "final/train_loss": [0.30, 0.25, 0.35, math.nan, 0.10, math.nan, 0.12],
        "final/test_acc": [0.90, 0.91, 0.89, math.nan, 0.95, math.nan, math.nan],
    })


@pytest.fixture
def no_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("rich", "rich.console", "rich.table"):
        monkeypatch.setitem(sys.modules, name, None)


def test_markdown_has_header_rule_and_rows() -> None:
    lines = to_markdown(TABLE).splitlines()
    assert len(lines) == 4
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["optimizer.name", "final/train_loss", "n", "note"]
    assert lines[1] == "|:-----------------|-------------------:|----:|:-------|"  # numbers right-aligned
    assert "| sgd" in lines[2] and "0.1235" in lines[2] and "a\\|b" in lines[2]
    assert "0.000123" in lines[3]
    assert "nan" not in lines[3] and "None" not in lines[3]  # missing cells are empty


def test_latex_is_an_escaped_booktabs_tabular() -> None:
    text = to_latex(TABLE.assign(ci=["0.12 ± 0.01", "1 ± 2"]), caption="Loss 100%", label="tab:loss")
    assert r"\begin{tabular}{lrrll}" in text and r"\end{tabular}" in text
    assert r"\toprule" in text and r"\bottomrule" in text
    assert r"final/train\_loss" in text and r"Loss 100\%" not in text  # caption is the caller's LaTeX
    assert r"\caption{Loss 100%}" in text and r"\label{tab:loss}" in text
    assert r"0.1235 & 3" in text and r"0.12 $\pm$ 0.01" in text
    assert "0.123456789" not in text
    assert r"\begin{table}" not in to_latex(TABLE)


def test_csv_round_trip(tmp_path: Path) -> None:
    path = to_csv(TABLE, tmp_path / "out" / "table.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == list(TABLE.columns)
    assert back["final/train_loss"].tolist() == TABLE["final/train_loss"].tolist()  # full precision
    assert back["n"].tolist() == [3, 4] and back["optimizer.name"].tolist() == ["sgd", "adam"]


def test_render_rich_is_plain_text_with_title_and_cells() -> None:
    pytest.importorskip("rich")
    text = render_rich(TABLE, "Losses", width=100)
    assert "Losses" in text and "optimizer.name" in text and "0.1235" in text and "adam" in text
    assert "\x1b[" not in text  # no colour codes
    assert any(ch in text for ch in "┃│|")


def test_render_and_print_without_rich(no_rich: None, capsys: pytest.CaptureFixture[str]) -> None:
    text = render_rich(TABLE, "Losses")
    assert text.splitlines()[0] == "Losses" and "0.1235" in text and "optimizer.name" in text
    print_table(TABLE, "Losses")
    assert capsys.readouterr().out.strip() == text.strip()


def test_print_table_with_rich(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rich")
    print_table(TABLE, "Losses")
    out = capsys.readouterr().out
    assert "Losses" in out and "sgd" in out


@pytest.mark.parametrize(("mean", "half", "text"), [
    (0.123456, 0.00234, "0.1235 ± 0.0023"),
    (0.123456, 0.05, "0.123 ± 0.050"),
    (0.00058321, 0.000123, "0.00058 ± 0.00012"),
    (123.456, 12.3, "123 ± 12"),
    (12345.6, 987.0, "12346 ± 987"),
    (0.5, math.nan, "0.5"),
    (0.123456789, math.nan, "0.1235"),
    (2.0, 0.0, "2 ± 0"),
    (0.95, 3.3e-16, "0.95 ± 0"),  # three equal values whose float std is not quite 0
    (3.2e-9, 1.1e-9, "3.2e-09 ± 1.1e-09"),
    (math.nan, math.nan, "n/a"),
])
def test_format_mean_ci(mean: float, half: float, text: str) -> None:
    assert format_mean_ci(mean, half) == text


def test_format_summary_is_one_row_per_group() -> None:
    agg = aggregate(runs_frame(), by=["optimizer.name"], metrics=["final/train_loss", "final/test_acc"])
    summary = format_summary(agg)
    assert list(summary.columns) == ["optimizer.name", "runs", "finished", "not finished",
                                     "final/train_loss", "final/test_acc"]
    rows = summary.set_index("optimizer.name")
    assert rows.loc["sgd", "runs"] == 4 and rows.loc["sgd", "finished"] == 3
    assert rows.loc["sgd", "not finished"] == "1 diverged" and rows.loc["adam", "not finished"] == "1 killed"
    sgd = agg[(agg["optimizer.name"] == "sgd") & (agg["metric"] == "final/train_loss")].iloc[0]
    assert rows.loc["sgd", "final/train_loss"] == format_mean_ci(0.30, (sgd["ci_high"] - sgd["ci_low"]) / 2)
    assert rows.loc["sgd", "final/train_loss"] == "0.30 ± 0.12"  # t(0.975, 2) * 0.05 / sqrt(3) = 0.124
    # one of two finished runs has the metric: a mean of one run, and the cell says there is no interval
    assert rows.loc["adam", "final/test_acc"] == "0.95 (n=1, no interval)"
    only = format_summary(agg, metrics=["final/test_acc"])
    assert list(only.columns)[-1] == "final/test_acc" and "final/train_loss" not in only.columns
    assert "0.30 $\\pm$ 0.12" in to_latex(summary)


def test_format_summary_errors() -> None:
    with pytest.raises(AnalysisError, match="output of aggregate"):
        format_summary(TABLE)
    agg = aggregate(runs_frame(), by=["optimizer.name"], metrics=["final/train_loss"])
    with pytest.raises(AnalysisError, match="metrics not in the aggregate: x"):
        format_summary(agg, metrics=["x"])


# -- the summary as analyze.py prints it --------------------------------------------------------------------
def wide_summary() -> pd.DataFrame:
    """A realistic summary: the varying keys, run counts, five metric columns (n = 1 cells are the widest)."""
    runs = pd.DataFrame({
        "optimizer.name": ["sgd"] * 3 + ["adam"] * 3 + ["adam", "adam"],
        "optimizer.lr": [0.01] * 3 + [0.001] * 3 + [0.1, 0.001],
        "model.hidden_sizes": ["[100, 100, 100, 100]"] * 7 + ["[]"],
        "training.iterations": [2000] * 8,
        "seed": [0, 1, 2, 0, 1, 2, 0, 0],
        "outcome": ["finished"] * 8,
        "final/train_loss": [0.11, 0.10, 0.12, 1e-4, 2e-4, 1.5e-4, 1.6, 0.6],
        "final/test_acc": [0.92, 0.93, 0.92, 0.95, 0.94, 0.95, 0.3, 0.86],
        "best/test_acc": [0.92, 0.93, 0.92, 0.95, 0.95, 0.95, 0.4, 0.86],
        "duration_s": [10.0, 11.0, 12.0, 13.0, 12.0, 14.0, 13.0, 5.0],
        "steps_to_loss_0.1": [1900.0, 1800.0, math.nan, 300.0, 320.0, 310.0, math.nan, math.nan],
    })
    metrics = ["final/train_loss", "final/test_acc", "best/test_acc", "duration_s", "steps_to_loss_0.1"]
    return format_summary(aggregate(runs, metrics=metrics))


@pytest.mark.parametrize("width", [100, 160])
def test_terminal_table_never_breaks_a_header(width: int) -> None:
    pytest.importorskip("rich")
    summary = wide_summary()
    text = render_rich(summary, "optimizer-comparison: 8 runs", width=width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for header in summary.columns:  # every header whole on one line (rich folded final/train_loss at 100)
        assert any(header in line for line in lines), header
    for value in ("[100, 100, 100, 100]", "0.6 (n=1, no interval)", "0.00015 ± 0.00012"):
        assert any(value in line for line in lines), value
    if width == 100:
        assert "(continued, 2/" in text  # too wide for 100 columns: parts that repeat the group columns
        assert sum("optimizer.lr" in line for line in lines) >= 2


def test_single_runs_say_there_is_no_interval() -> None:
    summary = wide_summary().set_index(["optimizer.name", "optimizer.lr", "model.hidden_sizes"])
    assert summary.loc[("adam", 0.1, "[100, 100, 100, 100]"), "final/train_loss"] == "1.6 (n=1, no interval)"
    assert summary.loc[("adam", 0.001, "[]"), "final/test_acc"] == "0.86 (n=1, no interval)"
    assert summary.loc[("adam", 0.001, "[100, 100, 100, 100]"), "final/train_loss"] == "0.00015 ± 0.00012"
    assert "no interval" not in summary.loc[("sgd", 0.01, "[100, 100, 100, 100]"), "duration_s"]
    assert summary.attrs["notes"][0].startswith("cells: mean ± half-width of the 95% Student-t interval")


def test_notes_say_what_was_pooled_in_terminal_and_markdown() -> None:
    runs = runs_frame().assign(**{"optimizer.lr": [0.01, 0.01, 0.1, 0.01, 0.001, 0.001, 0.001]})
    summary = format_summary(aggregate(runs, by=["optimizer.name"], metrics=["final/train_loss"]))
    pooled = "pooled over optimizer.lr (0.01, 0.1)"
    assert summary.attrs["notes"][0] == pooled
    assert pooled in render_rich(summary, "x", width=120).splitlines()
    report = to_markdown_report(summary, "Losses")
    assert report.startswith("# Losses\n\n- pooled over optimizer.lr (0.01, 0.1)\n- cells: ")
    assert "| optimizer.name" in report
    # default grouping: nothing pooled, the lr is a column
    default = format_summary(aggregate(runs, metrics=["final/train_loss"]))
    assert list(default.columns[:2]) == ["optimizer.name", "optimizer.lr"]
    assert not any(note.startswith("pooled") for note in default.attrs["notes"])
