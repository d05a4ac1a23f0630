"""Figures of many configurations show each optimizer's best ones, and say so; nothing is pooled."""

from __future__ import annotations

import pandas as pd
import pytest

from descentlab.analysis.selection import best_configurations


def runs_of(configs: list[tuple[str, float, float]], seeds: int = 3) -> pd.DataFrame:
    """(optimizer, lr, loss) configurations with `seeds` runs each; a run's loss is the configuration's + seed/100."""
    rows = [(name, lr, loss + s / 100, s, "finished") for name, lr, loss in configs for s in range(seeds)]
    return pd.DataFrame(rows, columns=["optimizer.name", "optimizer.lr", "final/train_loss", "seed", "outcome"])


def configs(shown: pd.DataFrame) -> set[tuple[str, float]]:
    return set(zip(shown["optimizer.name"], shown["optimizer.lr"], strict=True))


def test_few_configurations_are_all_shown_without_a_note() -> None:
    runs = runs_of([("sgd", 0.1, 1.0), ("adam", 0.001, 0.5)])
    drawn = best_configurations(runs, ["optimizer.name", "optimizer.lr"], "final/train_loss", 2, share="optimizer.name")
    assert drawn.note is None and drawn.runs.equals(runs)


def test_each_optimizer_keeps_its_best_configurations_with_every_seed() -> None:
    runs = runs_of([("sgd", lr, loss) for lr, loss in ((0.1, 0.3), (0.01, 0.9), (1.0, 0.2), (0.5, 0.6))]
                   + [("adam", lr, loss) for lr, loss in ((1e-3, 0.5), (1e-4, 0.1), (1e-2, 0.7))])
    runs.loc[(runs["optimizer.name"] == "sgd") & (runs["optimizer.lr"] == 1.0) & (runs["seed"] == 0),
             "outcome"] = "diverged"  # ranked by its finished seeds only: still 0.215
    drawn = best_configurations(runs, ["optimizer.name", "optimizer.lr"], "final/train_loss", 4,
                                share="optimizer.name")
    assert configs(drawn.runs) == {("sgd", 1.0), ("sgd", 0.1), ("adam", 1e-4), ("adam", 1e-3)}
    assert len(drawn.runs) == 4 * 3  # every seed of a shown configuration, the diverged one too
    assert drawn.note == ("showing the best configurations per optimizer.name by mean final/train_loss: 4 of 7 "
                          "(at most 4 a panel); the tables and loss_curves.csv have them all")


def test_panels_choose_separately_and_unfinished_configurations_rank_last() -> None:
    runs = pd.concat([runs_of([("sgd", 0.1, 0.2), ("sgd", 0.2, 0.4), ("sgd", 0.3, 0.3)]).assign(**{"model.name": m})
                      for m in ("a", "b")], ignore_index=True)
    runs.loc[(runs["model.name"] == "b") & (runs["optimizer.lr"] == 0.1), "outcome"] = "failed"
    drawn = best_configurations(runs, ["model.name", "optimizer.name", "optimizer.lr"], "final/train_loss", 1,
                                share="optimizer.name", facets=["model.name"])
    assert set(zip(drawn.runs["model.name"], drawn.runs["optimizer.lr"], strict=True)) == {("a", 0.1), ("b", 0.3)}


def test_a_higher_is_better_metric_and_a_bad_limit() -> None:
    runs = runs_of([("sgd", 0.1, 0.9), ("sgd", 0.2, 0.8), ("sgd", 0.3, 0.7)])
    drawn = best_configurations(runs, ["optimizer.lr"], "final/train_loss", 1, lower_is_better=False)
    assert configs(drawn.runs) == {("sgd", 0.1)}
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        best_configurations(runs, ["optimizer.lr"], "final/train_loss", 0)
