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
    assert rows.loc["adam", "final/test_acc"] == "0.95 (n=1)"  # one of two finished runs has the metric
    only = format_summary(agg, metrics=["final/test_acc"])
    assert list(only.columns)[-1] == "final/test_acc" and "final/train_loss" not in only.columns
    assert "0.30 $\\pm$ 0.12" in to_latex(summary)


def test_format_summary_errors() -> None:
    with pytest.raises(AnalysisError, match="output of aggregate"):
        format_summary(TABLE)
    agg = aggregate(runs_frame(), by=["optimizer.name"], metrics=["final/train_loss"])
    with pytest.raises(AnalysisError, match="metrics not in the aggregate: x"):
        format_summary(agg, metrics=["x"])
