"""Figures of a hyperparameter search from its tracked trial runs: the book's Figure 6-24 (the best trials' validation
and training accuracy per epoch, one panel each) and where the trials fell in the (lr, weight decay) plane.

Why from the runs and not from the Optuna study: every trial is a tracked run with its whole history (the study
keeps only the final value), and a figure drawn from the runs checks what was really trained.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from descentlab.analysis.plots import new_figure

__all__ = ["COLUMNS", "best_curves", "figure_best_trials", "figure_search_scatter", "trial_table"]

COLUMNS = 5  # the book's grid: 5 panels a row (20 trials: 4 rows)


def trial_table(runs: pd.DataFrame, metric: str = "final/val_acc", lr: str = "optimizer.lr",
                weight_decay: str = "model.weight_decay") -> pd.DataFrame:
    """One row per trial configuration (`config_hash`): a configuration run again after a killed launch counts once,
    by its finished run if it has one, else its latest. Ranked by `metric` (best first); `rank` is NA for trials
    without a finite value (diverged, failed, killed), which keep their `status` (the run's outcome)."""
    runs = runs.copy()
    runs["_finished"] = runs["outcome"].eq("finished")
    runs = runs.sort_values(["_finished", "start_time"]).drop_duplicates("config_hash", keep="last")
    value = pd.to_numeric(runs.get(metric, np.nan), errors="coerce")
    table = pd.DataFrame({
        "run_id": runs["run_id"],
        "lr": runs[lr].astype(float),
        "weight_decay": runs[weight_decay].astype(float),
        "val_acc": value,
        "train_loss": runs.get("final/train_loss", np.nan),
        "test_acc": runs.get("final/test_acc", np.nan),
        "status": runs["outcome"],
    })
    usable = table["status"].eq("finished") & np.isfinite(table["val_acc"].astype(float))
    table = pd.concat([table[usable].sort_values("val_acc", ascending=False, kind="stable"), table[~usable]])
    table.insert(0, "rank", pd.array([*range(1, int(usable.sum()) + 1), *[pd.NA] * int((~usable).sum())],
                                     dtype="Int64"))
    return table.reset_index(drop=True)


def best_curves(history: pd.DataFrame, table: pd.DataFrame, k: int, iterations_per_epoch: float) -> pd.DataFrame:
    """The `k` best trials' `val/acc` and `train/acc` per epoch (step / iterations per epoch): a long table
    `rank, run_id, val_acc_final, step, epoch, metric, value`, what Figure 6-24 draws."""
    best = table.dropna(subset=["rank"]).head(k)[["rank", "run_id", "val_acc"]]
    points = history[history["metric"].isin(["val/acc", "train/acc"]) & history["run_id"].isin(best["run_id"])]
    curves = best.rename(columns={"val_acc": "val_acc_final"}).merge(points, on="run_id", validate="one_to_many")
    curves["epoch"] = curves["step"] / iterations_per_epoch
    curves = curves.sort_values(["rank", "metric", "step"], kind="stable")
    return curves[["rank", "run_id", "val_acc_final", "step", "epoch", "metric", "value"]].reset_index(drop=True)


def figure_best_trials(curves: pd.DataFrame) -> Figure:
    """Figure 6-24: one panel per trial, best first, `COLUMNS` a row; validation accuracy solid, training accuracy
    dashed, y from 0 to 1, titled "Best-k (val acc x.xx)" as the book prints them."""
    ranks = list(dict.fromkeys(curves["rank"].tolist()))
    rows = max(1, math.ceil(len(ranks) / COLUMNS))
    fig = new_figure((2.4 * COLUMNS, 2.0 * rows))
    flat = list(fig.subplots(rows, COLUMNS, sharex=True, sharey=True, squeeze=False).ravel())
    for ax in flat[len(ranks):]:
        fig.delaxes(ax)
    for ax, rank in zip(flat, ranks, strict=False):
        trial = curves[curves["rank"] == rank]
        val, train = trial[trial["metric"] == "val/acc"], trial[trial["metric"] == "train/acc"]
        ax.plot(val["epoch"], val["value"], "-", color="C0", label="validation")
        ax.plot(train["epoch"], train["value"], "--", color="C1", label="training")
        ax.set_title(f"Best-{rank} (val acc {trial['val_acc_final'].iloc[0]:.2f})", fontsize=9)
        ax.set_ylim(0, 1)
    if ranks:
        flat[0].legend(fontsize=7, loc="lower right")
    fig.supxlabel("epoch")
    fig.supylabel("accuracy")
    return fig


def figure_search_scatter(table: pd.DataFrame) -> Figure:
    """Every trial in the (learning rate, weight decay) plane, log axes, coloured by final validation accuracy;
    trials without one (diverged, failed) as grey crosses, so none is hidden."""
    fig = new_figure((6.4, 4.8))
    ax = fig.subplots()
    ok = table["rank"].notna()
    points = ax.scatter(table.loc[ok, "lr"], table.loc[ok, "weight_decay"], c=table.loc[ok, "val_acc"],
                        cmap="viridis", vmin=0, vmax=1, s=36, edgecolors="k", linewidths=0.3)
    if (~ok).any():
        ax.scatter(table.loc[~ok, "lr"], table.loc[~ok, "weight_decay"], marker="x", color="grey",
                   label=f"no validation accuracy ({int((~ok).sum())}: diverged or failed)")
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("weight decay")
    ax.set_title(f"random search: {int(ok.sum())} trials with a final validation accuracy")
    fig.colorbar(points, ax=ax, label="final validation accuracy")
    return fig
