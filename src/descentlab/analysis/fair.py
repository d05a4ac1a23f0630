"""The fair optimizer comparison's tables: stage-1 tuning trials, the learning-rate choice, stage-2 statistics and
the ranking (the protocol itself, which sweeps to run, is `descentlab.experiments.fair_compare`).

Why a fixed rule: a comparison is only fair when every optimizer gets the same tuning budget and the same,
stated, choice rule, applied to the validation split (never the test set). Diverged trials are part of the
evidence (how wide the usable lr range is), so they stay in every table as +inf instead of being dropped.
Inputs are `load_runs` frames (or any frame with the same columns), so everything here is testable on
synthetic frames without MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from descentlab.analysis.runs import AnalysisError
from descentlab.analysis.stats import aggregate, pairwise_paired, performance_profile

__all__ = [
    "CELL",
    "CHOICE_METRIC",
    "LR",
    "OPTIMIZER",
    "TEST_METRICS",
    "choose_lr",
    "dedupe",
    "lr_factors",
    "profile",
    "ranking",
    "ranking_text",
    "stage2_pairwise",
    "stage2_summary",
    "summary_table",
    "tuning_table",
]

CELL = ("model.name", "dataset.name")  # a problem of the comparison: one model on one data set
OPTIMIZER = "optimizer.name"
LR = "optimizer.lr"
CHOICE_METRIC = "final/val_loss"  # stage 1 chooses on the validation split
TEST_METRICS = ("final/test_acc", "final/test_loss", "final/train_loss")  # stage 2 reports these
TIE_RTOL = 1e-9  # scores this close (relative) are a tie, which goes to the smaller lr
# When one config ran several times (a killed run, then its rerun), the row that counts: the most complete one.
_OUTCOME_RANK = {"finished": 0, "diverged": 1, "failed": 2, "killed": 3, "running": 4}


def lr_factors(n: int, step: float) -> list[float]:
    """The multipliers of an optimizer's default lr: 10^(k*step) for n points centred on k = 0 (n = 7, step 0.5:
    10^-1.5 .. 10^1.5). An even n has no centre point; the grid stays symmetric around the default."""
    if n < 1:
        raise AnalysisError(f"the lr grid needs at least 1 point, got {n}")
    if not step > 0:
        raise AnalysisError(f"the lr grid step (decades) must be > 0, got {step}")
    return [float(10 ** ((i - (n - 1) / 2) * step)) for i in range(n)]


def dedupe(runs: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per `keys` setting: the most complete run (finished, then diverged, failed, killed), latest first.
    A config that was killed and then rerun counts once, as its rerun."""
    keys = [k for k in keys if k in runs.columns]
    if runs.empty:
        return runs
    rank = runs["outcome"].map(_OUTCOME_RANK).fillna(len(_OUTCOME_RANK)) if "outcome" in runs.columns else 0
    order = runs.assign(_rank=rank, _t=runs["start_time"] if "start_time" in runs.columns else 0)
    order = order.sort_values(["_rank", "_t"], ascending=[True, False], kind="stable")
    return order.drop_duplicates(keys, keep="first").drop(columns=["_rank", "_t"]).sort_index()


def tuning_table(runs: pd.DataFrame, defaults: Mapping[str, float], metric: str = CHOICE_METRIC) -> pd.DataFrame:
    """Stage-1 trials, one row each: cell, optimizer, lr, its factor of the default, outcome, the raw `metric`
    and the `score` the choice uses (+inf for a diverged/failed/unfinished trial or a non-finite value)."""
    for column in (OPTIMIZER, LR):
        if column not in runs.columns:
            raise AnalysisError(f"no column {column!r} in the stage-1 runs")
    frame = runs.copy()
    for column in CELL:
        if column not in frame.columns:
            frame[column] = "all"
    if metric not in frame.columns:
        frame[metric] = math.nan
    outcome = frame["outcome"] if "outcome" in frame.columns else pd.Series("finished", index=frame.index)
    raw = pd.to_numeric(frame[metric], errors="coerce").astype(float)
    score = raw.where((outcome == "finished") & np.isfinite(raw), math.inf)
    lr = pd.to_numeric(frame[LR], errors="coerce").astype(float)
    default = frame[OPTIMIZER].map(lambda n: defaults.get(str(n), math.nan)).astype(float)
    table = pd.DataFrame({
        **{c: frame[c] for c in CELL}, OPTIMIZER: frame[OPTIMIZER].astype(str), LR: lr,
        "lr_factor": lr / default, "seed": frame["seed"] if "seed" in frame.columns else 0,
        "outcome": outcome, "diverged_at_step": frame.get("diverged_at_step", pd.Series(math.nan, index=frame.index)),
        metric: raw, "score": score, "run_id": frame.get("run_id", pd.Series("", index=frame.index)),
    })
    table = table.sort_values([*CELL, OPTIMIZER, LR], kind="stable").reset_index(drop=True)
    table.attrs["metric"] = metric
    return table


def choose_lr(trials: pd.DataFrame, rtol: float = TIE_RTOL) -> pd.DataFrame:
    """Per cell and optimizer: the lr with the lowest score (a `tuning_table`); ties within `rtol` (relative) go to
    the smaller lr. Columns: cell, optimizer, trials, diverged (not finished or non-finite), chosen_lr,
    chosen_factor, best_score, run_id, edge ("low"/"high" when the choice is the grid's smallest/largest lr: the
    optimum may lie outside the grid; "" otherwise) and all_diverged (no usable trial: chosen_lr NaN, the optimizer
    leaves stage 2)."""
    metric = trials.attrs.get("metric", CHOICE_METRIC)
    rows = []
    for key, part in trials.groupby([*CELL, OPTIMIZER], sort=True):
        part = part.sort_values(LR, kind="stable")
        lrs = part[LR].to_numpy(dtype=float)
        score = part["score"].to_numpy(dtype=float)
        bad = int((~np.isfinite(score)).sum())
        row = dict(zip([*CELL, OPTIMIZER], key, strict=True))
        row.update(trials=len(part), diverged=bad, lr_min=float(lrs.min()), lr_max=float(lrs.max()))
        if bad == len(part):
            row.update(chosen_lr=math.nan, chosen_factor=math.nan, best_score=math.inf, run_id="", edge="",
                       all_diverged=True)
        else:
            best = float(np.min(score))
            tied = np.flatnonzero(score <= best + rtol * abs(best))
            i = int(tied[0])  # sorted by lr: the smallest tied lr
            edge = "low" if len(part) > 1 and i == 0 else "high" if len(part) > 1 and i == len(part) - 1 else ""
            row.update(chosen_lr=float(lrs[i]), chosen_factor=float(part["lr_factor"].iloc[i]), best_score=best,
                       run_id=str(part["run_id"].iloc[i]), edge=edge, all_diverged=False)
        rows.append(row)
    columns = [*CELL, OPTIMIZER, "trials", "diverged", "lr_min", "lr_max", "chosen_lr", "chosen_factor", "best_score",
               "run_id", "edge", "all_diverged"]
    result = pd.DataFrame(rows, columns=columns)
    result.attrs["metric"] = metric
    return result


def stage2_summary(runs: pd.DataFrame, choices: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per cell, optimizer and test metric: n, mean, std, t interval (finished runs only) and the run counts by
    outcome, with the chosen lr."""
    present = [m for m in TEST_METRICS if m in runs.columns]
    summary = aggregate(runs, by=[*CELL, OPTIMIZER], metrics=present, confidence=confidence)
    lr = choices.set_index([*CELL, OPTIMIZER])["chosen_lr"]
    summary.insert(3, LR, [lr.get(tuple(k), math.nan) for k in summary[[*CELL, OPTIMIZER]].itertuples(index=False)])
    return summary


def stage2_pairwise(runs: pd.DataFrame, order: Sequence[str] | None = None, confidence: float = 0.95,
                    metrics: Sequence[str] = ("final/test_acc", "final/test_loss")) -> pd.DataFrame:
    """Paired differences (a − b over shared seeds) per cell and metric, Holm-corrected within each cell and
    metric; a long frame with a `metric` column."""
    parts = []
    for metric in metrics:
        if metric in runs.columns:
            part = pairwise_paired(runs, metric, on=OPTIMIZER, by=list(CELL), order=order, confidence=confidence)
            part.insert(0, "metric", metric)
            parts.append(part)
    if not parts:
        raise AnalysisError(f"the stage-2 runs have none of the metrics {', '.join(metrics)}")
    return pd.concat(parts, ignore_index=True)


def ranking(summary: pd.DataFrame, pairwise: pd.DataFrame, metric: str = "final/test_acc", alpha: float = 0.05,
            higher_is_better: bool = True) -> pd.DataFrame:
    """Per cell, optimizers ranked by mean `metric`, each with the Holm p of the difference to the next one down
    and `differs_from_next` (Holm p <= alpha), and `group`: letters of a compact letter display (optimizers that
    share a letter are not significantly different). Neighbours that do not differ are not a real order:
    `ranking_text` joins them with "≈". Optimizers with no finished run are ranked last, mean NaN."""
    rows = []
    mine = summary[summary["metric"] == metric]
    pairs = pairwise[pairwise["metric"] == metric] if "metric" in pairwise.columns else pairwise
    for key, part in mine.groupby(list(CELL), sort=True):
        part = part.sort_values("mean", ascending=not higher_is_better, na_position="last", kind="stable")
        cell_pairs = pairs
        for column, value in zip(CELL, key, strict=True):
            cell_pairs = cell_pairs[cell_pairs[column] == value]
        names = part[OPTIMIZER].astype(str).tolist()
        letters = _letters(names, cell_pairs, alpha)
        for i, (_, row) in enumerate(part.iterrows()):
            last = i + 1 == len(names)
            p = math.nan if last else _holm_p(cell_pairs, names[i], names[i + 1])
            rows.append({**dict(zip(CELL, key, strict=True)), "rank": i + 1, OPTIMIZER: names[i], "n": row["n"],
                         "mean": row["mean"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                         "next": "" if last else names[i + 1], "p_holm_vs_next": p,
                         "differs_from_next": pd.NA if last else bool(p <= alpha), "group": letters[i]})
    columns = [*CELL, "rank", OPTIMIZER, "n", "mean", "ci_low", "ci_high", "next", "p_holm_vs_next",
               "differs_from_next", "group"]
    result = pd.DataFrame(rows, columns=columns)
    result.attrs.update({"metric": metric, "alpha": alpha})
    return result


def _holm_p(pairs: pd.DataFrame, a: str, b: str) -> float:
    """The Holm-adjusted p of the pair (a, b), in either order; NaN when it was not tested."""
    hit = pairs[((pairs["a"] == a) & (pairs["b"] == b)) | ((pairs["a"] == b) & (pairs["b"] == a))]
    return float(hit["p_holm"].iloc[0]) if len(hit) else math.nan


def _letters(names: list[str], pairs: pd.DataFrame, alpha: float) -> list[str]:
    """A compact letter display over the ranked `names` (the "underline" method): each maximal run of consecutive
    ranks whose every pair has Holm p > alpha (or no test) gets a letter; names sharing a letter are not
    significantly different. Neighbour marks alone can mislead: a ≈ b ≈ c while a and c do differ."""
    def differ(a: str, b: str) -> bool:
        return _holm_p(pairs, a, b) <= alpha  # NaN (not tested): no difference

    spans: list[tuple[int, int]] = []
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and not any(differ(names[k], names[j + 1]) for k in range(i, j + 1)):
            j += 1
        if not spans or j > spans[-1][1]:
            spans.append((i, j))
    letters = [""] * len(names)
    for index, (i, j) in enumerate(spans):
        for k in range(i, j + 1):
            letters[k] += chr(ord("a") + index % 26)
    return letters


def ranking_text(rank: pd.DataFrame) -> dict[tuple[str, ...], str]:
    """Per cell, "adam (a) ≈ momentum (a) > adagrad (b) > sgd (c)": ">" where the neighbours differ at the
    ranking's alpha (Holm), "≈" where they do not (or could not be tested); the letters are `ranking`'s groups
    (a shared letter: not significantly different, also between non-neighbours)."""
    texts = {}
    for key, part in rank.groupby(list(CELL), sort=True):
        part = part.sort_values("rank")
        text = ""
        for _, row in part.iterrows():
            text += str(row[OPTIMIZER]) + (f" ({row['group']})" if row.get("group") else "")
            if row["next"]:
                text += " > " if row["differs_from_next"] is True else " ≈ "
        texts[tuple(key)] = text
    return texts


def summary_table(choices: pd.DataFrame, summary: pd.DataFrame, rank: pd.DataFrame) -> pd.DataFrame:
    """One row per cell and optimizer: chosen lr (and edge warning), stage-1 trials/diverged, stage-2 n, test
    accuracy and test loss as mean [CI], and the rank."""
    rows = []
    for _, choice in choices.iterrows():
        key = tuple(choice[c] for c in (*CELL, OPTIMIZER))
        row = {**dict(zip((*CELL, OPTIMIZER), key, strict=True)), "chosen_lr": choice["chosen_lr"],
               "edge": choice["edge"], "stage1_trials": choice["trials"], "stage1_diverged": choice["diverged"]}
        for metric in ("final/test_acc", "final/test_loss"):
            hit = summary[(summary["metric"] == metric) & (summary[CELL[0]] == key[0])
                          & (summary[CELL[1]] == key[1]) & (summary[OPTIMIZER].astype(str) == key[2])]
            if len(hit):
                h = hit.iloc[0]
                row["n"] = int(h["n"])
                row[f"{metric} mean"] = h["mean"]
                row[f"{metric} ci_low"], row[f"{metric} ci_high"] = h["ci_low"], h["ci_high"]
        r = rank[(rank[CELL[0]] == key[0]) & (rank[CELL[1]] == key[1]) & (rank[OPTIMIZER] == key[2])]
        row["rank"] = int(r["rank"].iloc[0]) if len(r) else pd.NA
        rows.append(row)
    return pd.DataFrame(rows)


def profile(runs: pd.DataFrame) -> pd.DataFrame:
    """Dolan–Moré profile over the cells on the test error (1 − final/test_acc; a diverged seed fails the cell)."""
    frame = runs.assign(**{"final/test_error": 1.0 - pd.to_numeric(runs["final/test_acc"], errors="coerce")})
    frame["final/test_error"] = frame["final/test_error"].clip(lower=1e-12)  # a perfect score stays positive
    return performance_profile(frame, "final/test_error", problem=CELL, solver=OPTIMIZER)
