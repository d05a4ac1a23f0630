"""Statistics over seeds: means with t intervals, steps to a loss target, Welch comparisons, performance profiles.

Why these: a handful of seeds per configuration is the norm here, so intervals use Student's t (not
a normal approximation), comparisons use Welch's test (no equal-variance assumption between
optimizers) or, when seeds are shared (same initial weights and minibatches per seed), paired differences with
Holm's correction over all pairs of a family (`pairwise_paired`), and the performance profile (Dolan & Moré 2002,
as in AlgoPerf) summarises many model/data set problems at once while counting a diverged optimizer
as failing the problem.

Groups are configurations: by default `aggregate` and `compare_to_baseline` group by every identity key
(config minus seed, `analysis.groups`) that varies, so no row or comparison mixes runs whose configs differ in
anything but the seed; an explicit `by` may pool, and the result's `attrs["grouping"].pooled` says what was.

Inputs are `load_runs` / `load_history` frames, but any frame with the named columns works; without
an `outcome` column every row counts as finished.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from descentlab.analysis.groups import Grouping, group_runs, iter_groups, setting_keys, value_text
from descentlab.analysis.labels import setting_label
from descentlab.analysis.runs import AnalysisError

__all__ = [
    "DEFAULT_METRICS",
    "OUTCOMES",
    "aggregate",
    "compare_to_baseline",
    "first_step_at",
    "grouping_for",
    "holm",
    "pairwise_paired",
    "performance_profile",
    "performance_ratios",
    "profile_block",
    "split_arms",
    "steps_to_target",
    "t_interval",
]

DEFAULT_METRICS = ("final/train_loss", "final/test_acc", "best/test_acc", "duration_s")
OUTCOMES = ("finished", "diverged", "failed", "killed", "running")  # `load_runs`' labels; they partition the runs


def _existing(frame: pd.DataFrame, names: Sequence[str] | str, what: str, *, required: bool) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    present = [n for n in names if n in frame.columns]
    if required and not present:
        raise AnalysisError(f"none of the {what} {', '.join(names) or '(none)'} is a column of the runs")
    return present


def _outcomes(frame: pd.DataFrame) -> pd.Series:
    if "outcome" in frame.columns:
        return frame["outcome"].astype(object)
    return pd.Series("finished", index=frame.index, dtype=object)


def _numeric(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95
               ) -> tuple[int, float, float, float, float]:
    """(n, mean, std ddof=1, ci_low, ci_high) of the finite values; Student-t interval, NaN bounds when n < 2."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if n == 1:
        return 1, mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return n, mean, std, mean - half, mean + half


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise AnalysisError(f"confidence must be in (0, 1), got {confidence}")


def grouping_for(runs: pd.DataFrame, by: Sequence[str] | None, exclude: Sequence[str] = ()) -> Grouping:
    """`group_runs` for a stats function: by=None is one configuration per group; given names that are not
    columns are ignored (none at all is an error)."""
    if by is None:
        return group_runs(runs, exclude=exclude)
    return group_runs(runs, _existing(runs, by, "grouping columns", required=True), exclude=exclude)


def aggregate(
    runs: pd.DataFrame,
    by: Sequence[str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    confidence: float = 0.95,
    *,
    only_finished: bool = True,
) -> pd.DataFrame:
    """Per group and metric: n, mean, std (ddof=1), Student-t ci_low/ci_high, and the group's run counts.

    Long format, one row per (group, metric): columns `*by, metric, n, mean, std, ci_low, ci_high,
    runs, finished, diverged, failed, killed, running` (the last five partition `runs`; `failed`
    excludes diverged runs). Metric statistics use FINISHED runs only by default — a killed run's
    duration or a running run's best accuracy so far would bias them; runs missing the metric are
    left out of n. Non-finite values (inf, NaN) are left out too. n = 1 gives NaN std and bounds.

    `by=None` groups by every identity key that varies (`groups.group_runs`): a row is one configuration,
    its n the seeds that finished. A given `by` groups by those columns (names that are not columns are
    ignored, none at all is an error) and may pool configurations. `attrs["grouping"]` (a `Grouping`)
    says which columns to show, what every row shares and what was pooled.
    """
    _check_confidence(confidence)
    runs = runs.reset_index(drop=True)
    metric_cols = _existing(runs, metrics, "metrics", required=True)
    grouping = grouping_for(runs, by, exclude=metric_cols)
    by_cols = list(grouping.by)
    outcome = _outcomes(runs)
    rows = []
    for key, group in iter_groups(runs, by_cols):
        out = outcome.loc[group.index]
        counts = {o: int((out == o).sum()) for o in OUTCOMES}
        used = group[out == "finished"] if only_finished else group
        for metric in metric_cols:
            n, mean, std, low, high = t_interval(_numeric(used[metric]), confidence)
            rows.append({**dict(zip(by_cols, key, strict=True)), "metric": metric, "n": n, "mean": mean, "std": std,
                         "ci_low": low, "ci_high": high, "runs": len(group), **counts})
    columns = [*by_cols, "metric", "n", "mean", "std", "ci_low", "ci_high", "runs", *OUTCOMES]
    result = pd.DataFrame(rows, columns=columns)
    result.attrs.update({"confidence": confidence, "grouping": grouping})
    return result


def first_step_at(steps: np.ndarray, values: np.ndarray, target: float, smooth_window: int = 1, *,
                  lower_is_better: bool = True) -> float:
    """One run's `steps_to_target`: the first step (of `steps`, sorted) whose trailing `smooth_window`-point mean
    reaches `target`; NaN if none. `analyze.py` calls it per streamed run, `steps_to_target` per run of a frame."""
    if smooth_window < 1:
        raise AnalysisError(f"smooth_window must be >= 1, got {smooth_window}")
    series = pd.Series(np.asarray(values, dtype=float))
    if smooth_window > 1:
        series = series.rolling(smooth_window, min_periods=smooth_window).mean()
    hit = (series <= target if lower_is_better else series >= target).to_numpy()
    return float(np.asarray(steps)[hit].min()) if hit.any() else math.nan


def steps_to_target(
    history: pd.DataFrame,
    target: float,
    metric: str = "train/loss",
    smooth_window: int = 1,
    *,
    lower_is_better: bool = True,
) -> pd.DataFrame:
    """Per run, the first logged step at which the metric reaches `target` (<=; >= if not lower_is_better).

    `smooth_window` > 1 uses a trailing moving average over that many points (full windows only),
    because a single lucky minibatch should not count as reaching the target. Runs in `history`
    without such a step (or without the metric) get NaN and `reached` False. Columns: run_id, step,
    reached, plus any other column of `history` that is constant per run (merged params such as
    optimizer.name), so the result can go straight into `aggregate(..., metrics=["step"])`.
    """
    if smooth_window < 1:
        raise AnalysisError(f"smooth_window must be >= 1, got {smooth_window}")
    missing = [c for c in ("run_id", "step", "metric", "value") if c not in history.columns]
    if missing:
        raise AnalysisError(f"history lacks columns {', '.join(missing)} (use load_history)")
    run_ids = pd.unique(history["run_id"])
    points = history[history["metric"] == metric].sort_values(["run_id", "step"], kind="stable")
    first = {run_id: first_step_at(part["step"].to_numpy(), part["value"].to_numpy(dtype=float), target,
                                   smooth_window, lower_is_better=lower_is_better)
             for run_id, part in points.groupby("run_id", sort=False)}
    result = pd.DataFrame({"run_id": run_ids})
    result["step"] = result["run_id"].map(first).astype(float)
    result["reached"] = result["step"].notna()
    extra = [c for c in history.columns if c not in ("run_id", "step", "metric", "value")]
    if extra:
        per_run = history[["run_id", *extra]].drop_duplicates("run_id")
        constant = [c for c in extra if history.groupby("run_id", sort=False)[c].nunique(dropna=False).max() <= 1]
        result = result.merge(per_run[["run_id", *constant]], on="run_id", how="left")
    result.attrs.update({"target": target, "metric": metric, "smooth_window": smooth_window})
    return result


@dataclass(frozen=True)
class _Arm:
    """One side of a comparison: its finite metric values' n, mean and variance and, when each `pair_on` value has
    one run, the value per seed (for the paired test); computed once per arm, not once per pair."""

    n: int
    mean: float
    var: float
    by_seed: dict[Any, float] | None

    @classmethod
    def of(cls, rows: pd.DataFrame, metric: str, pair_on: str | None) -> _Arm:
        values = rows[metric].to_numpy(dtype=float)
        n = len(values)
        mean = float(values.mean()) if n else math.nan
        var = float(values.var(ddof=1)) if n > 1 else math.nan
        if pair_on is None or pair_on not in rows.columns:
            return cls(n, mean, var, None)
        kept = rows[[pair_on, metric]].dropna()
        if kept[pair_on].duplicated().any():
            return cls(n, mean, var, None)  # several runs per seed: pairing is ambiguous
        return cls(n, mean, var, dict(zip(kept[pair_on], kept[metric].astype(float), strict=True)))


_NO_ARM = _Arm(0, math.nan, math.nan, None)


def _pair(other: _Arm, base: _Arm) -> tuple[int, float, float]:
    """(n_pairs, mean, std ddof=1) of the differences over the seeds both arms have (a handful of values: plain
    Python is faster than NumPy here, and this runs once per pair)."""
    if other.by_seed is None or base.by_seed is None:
        return 0, math.nan, math.nan
    d = [v - base.by_seed[k] for k, v in other.by_seed.items() if k in base.by_seed]
    n = len(d)
    if not n:
        return 0, math.nan, math.nan
    mean = math.fsum(d) / n
    return n, mean, math.sqrt(math.fsum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else math.nan


def _welch_columns(n_o: np.ndarray, m_o: np.ndarray, v_o: np.ndarray, n_b: np.ndarray, m_b: np.ndarray,
                   v_b: np.ndarray, confidence: float) -> dict[str, np.ndarray]:
    """Welch's test and interval for many pairs at once, with scipy.stats.ttest_ind(equal_var=False)'s formulas
    (and its df = 1 when both variances are 0); NaN unless both sides have >= 2 runs. One vectorised call instead of
    one scipy call per pair: an experiment of 1,000 configurations compares ~190,000 pairs."""
    with np.errstate(all="ignore"):
        diff = np.where((n_o > 0) & (n_b > 0), m_o - m_b, np.nan)
        vn_o, vn_b = v_o / n_o, v_b / n_b
        df = (vn_o + vn_b) ** 2 / (vn_o**2 / (n_o - 1) + vn_b**2 / (n_b - 1))
        df = np.where(np.isnan(df), 1.0, df)
        se = np.sqrt(vn_o + vn_b)
        t = diff / se
        p = 2 * sps.t.sf(np.abs(t), df)
        half = sps.t.ppf(0.5 + confidence / 2, df) * se
    ok = (n_o >= 2) & (n_b >= 2)
    return {"diff": diff, "ci_low": np.where(ok, diff - half, np.nan), "ci_high": np.where(ok, diff + half, np.nan),
            "t": np.where(ok, t, np.nan), "df": np.where(ok, df, np.nan), "p": np.where(ok, p, np.nan)}


def _paired_columns(n: np.ndarray, mean: np.ndarray, std: np.ndarray, confidence: float) -> dict[str, np.ndarray]:
    """The paired t test and interval (scipy.stats.ttest_rel's formulas) for many pairs at once; NaN below 2 pairs."""
    with np.errstate(all="ignore"):
        se = std / np.sqrt(n)
        df = n - 1.0
        p = 2 * sps.t.sf(np.abs(mean / se), df)
        half = sps.t.ppf(0.5 + confidence / 2, df) * se
    ok = n >= 2
    return {"n_pairs": n.astype(int), "paired_diff": np.where(n >= 1, mean, np.nan),
            "paired_ci_low": np.where(ok, mean - half, np.nan), "paired_ci_high": np.where(ok, mean + half, np.nan),
            "paired_p": np.where(ok, p, np.nan)}


def split_arms(columns: Sequence[str], on: str = "optimizer.name") -> tuple[list[str], list[str]]:
    """(context, arms): `on` and the other keys of its config group (`optimizer.*`) are the arms compared;
    the rest is the context both sides must share."""
    prefix = on.rsplit(".", 1)[0] + "." if "." in on else None
    arms = [on, *(c for c in columns if c != on and prefix is not None and c.startswith(prefix))]
    return [c for c in columns if c not in arms], arms


def compare_to_baseline(
    runs: pd.DataFrame,
    baseline: str,
    metric: str,
    by: Sequence[str] | None = None,
    on: str = "optimizer.name",
    *,
    confidence: float = 0.95,
    pair_on: str | None = "seed",
    only_finished: bool = True,
    against: str = "every",
    lower_is_better: bool = True,
) -> pd.DataFrame:
    """Each other `on` setting against the `baseline` ones of the same context: difference of means (other − baseline).

    `against="best"`: only against the baseline's best arm of each context (lowest mean `metric`, or highest when not
    `lower_is_better`), for experiments with so many arms that every pair is too many (1,000 configurations per
    optimizer make a million pairs).

    Like with like: an Adam and an SGD run always differ in `optimizer.*`, so the unit compared (an arm)
    is a setting of `on` and the other keys of its group that vary (e.g. `optimizer.lr`), and both sides
    must share the context, everything else but the seed. `by=None` takes the context from the runs (every
    varying identity key outside the optimizer group); a given `by` is the context (optimizer-group keys in
    it become arms) and may pool: `attrs["grouping"].pooled` says what. Each other arm gets one row per
    baseline arm of its context, or one row with n_baseline 0 (NaN statistics) when the context has none.

    Columns: `*context, *arms, baseline, baseline <arm key>..., n, n_baseline, mean, mean_baseline, diff,
    ci_low, ci_high, t, df, p` — Welch's interval and test (scipy.stats.ttest_ind(equal_var=False)), NaN
    unless both sides have ≥ 2 runs — and `n_pairs, paired_diff, paired_ci_low, paired_ci_high, paired_p`:
    the paired t test (ttest_rel) over the `pair_on` values (seeds) both sides share, which is sharper when
    seeds are common random numbers (same init and batches); NaN when a side has several runs per seed.
    Only finished runs with a finite metric are used by default.
    """
    _check_confidence(confidence)
    if against not in ("every", "best"):
        raise AnalysisError(f"against must be 'every' or 'best', got {against!r}")
    for column in (on, metric):
        if column not in runs.columns:
            raise AnalysisError(f"no column {column!r} in the runs")
    runs = runs.reset_index(drop=True)
    values = sorted({str(v) for v in runs[on].dropna()})
    if baseline not in values:
        raise AnalysisError(f"baseline {baseline!r} is not a value of {on}; values: {', '.join(values)}")
    if by is None:
        grouping = group_runs(runs, exclude=[metric])
        columns = list(grouping.shown)
    else:
        columns = [*_existing(runs, by, "grouping columns", required=False), on]
        grouping = group_runs(runs, list(dict.fromkeys(columns)), exclude=[metric])
    context, arms = split_arms(list(dict.fromkeys(columns)), on)
    runs = runs.copy(deep=False)
    runs.attrs = {}  # pandas deep-copies attrs into every slice: ~2 s of the ~15,000 slices of a large experiment
    used = runs[_outcomes(runs) == "finished"] if only_finished else runs
    used = used[np.isfinite(_numeric(used[metric]))].copy()
    used[metric] = _numeric(used[metric])
    rows = []
    sides: list[tuple[_Arm, _Arm]] = []
    for key, group in iter_groups(runs, context):
        in_group = used.loc[used.index.intersection(group.index)]
        settings = [(dict(zip(arms, arm, strict=True)),
                     _Arm.of(in_group.loc[in_group.index.intersection(arm_rows.index)], metric, pair_on))
                    for arm, arm_rows in iter_groups(group, arms)]
        bases = [(arm, side) for arm, side in settings if str(arm[on]) == baseline] or [(None, _NO_ARM)]
        if against == "best" and len(bases) > 1:
            sign = 1.0 if lower_is_better else -1.0
            bases = [min(bases, key=lambda b: sign * b[1].mean if b[1].n else math.inf)]
        for arm, other in settings:
            if str(arm[on]) == baseline or pd.isna(arm[on]):
                continue
            for base_arm, base in bases:
                rows.append({**dict(zip(context, key, strict=True)), **arm, "baseline": baseline,
                             **{f"baseline {k}": (base_arm or {}).get(k, math.nan) for k in arms[1:]}})
                sides.append((other, base))
    n_o, m_o, v_o, n_b, m_b, v_b = (np.array(column, dtype=float).reshape(-1) for column in
                                    zip(*((o.n, o.mean, o.var, b.n, b.mean, b.var) for o, b in sides), strict=True)) \
        if sides else (np.empty(0),) * 6
    paired = np.array([_pair(o, b) for o, b in sides], dtype=float).reshape(-1, 3)
    stats_frame = pd.DataFrame({"n": n_o.astype(int), "n_baseline": n_b.astype(int), "mean": m_o, "mean_baseline": m_b,
                                **_welch_columns(n_o, m_o, v_o, n_b, m_b, v_b, confidence),
                                **_paired_columns(paired[:, 0], paired[:, 1], paired[:, 2], confidence)})
    columns = [*context, *arms, "baseline", *(f"baseline {k}" for k in arms[1:]), "n", "n_baseline", "mean",
               "mean_baseline", "diff", "ci_low", "ci_high", "t", "df", "p", "n_pairs", "paired_diff",
               "paired_ci_low", "paired_ci_high", "paired_p"]
    result = pd.concat([pd.DataFrame(rows, columns=columns[: -len(stats_frame.columns)]), stats_frame], axis=1)
    result.attrs.update({"metric": metric, "confidence": confidence, "grouping": grouping})
    return result


def profile_block(runs: pd.DataFrame, problem: Sequence[str], solver: Sequence[str]
                  ) -> tuple[pd.DataFrame, str | None]:
    """The runs a performance profile can compare fairly, and a note on what it leaves out.

    A solver that never ran on a problem would count as failing it, so the profile keeps the solvers that
    ran on at least two problems and the problems all of them ran on (any outcome: a diverged run still fails);
    with fewer than two such solvers there is nothing to compare (an empty frame).
    """
    p, s = setting_keys(runs, list(problem)), setting_keys(runs, list(solver))
    pairs = runs.assign(_p=p, _s=s)[["_p", "_s"]].drop_duplicates()
    per_solver = pairs.groupby("_s")["_p"].nunique()
    chosen = set(per_solver[per_solver >= 2].index)
    if len(chosen) < 2:
        return runs.iloc[0:0], None
    per_problem = pairs[pairs["_s"].isin(chosen)].groupby("_p")["_s"].nunique()
    kept = set(per_problem[per_problem == len(chosen)].index)
    left = [f"{n} {what}" for n, what in ((pairs["_p"].nunique() - len(kept), "problem(s)"),
                                          (len(per_solver) - len(chosen), "solver(s)")) if n]
    block = runs[p.isin(kept) & s.isin(chosen)]
    return block, ("left out, not run on every problem: " + ", ".join(left)) if left else None


def performance_ratios(
    runs: pd.DataFrame,
    metric: str,
    problem: Sequence[str] = ("model.name", "dataset.name"),
    solver: str | Sequence[str] = "optimizer.name",
    lower_is_better: bool = True,
) -> pd.DataFrame:
    """Problems × solvers table of r = performance / best performance on the problem (≥ 1; inf = failed).

    A solver's performance on a problem is the mean metric of its runs there. Diverged and failed runs
    count as infinitely bad, so one diverged seed makes the solver fail the problem; a solver with no
    runs on a problem fails it too. Killed and running runs, and finished runs without the metric, are
    ignored. Values must be positive (ratios of losses, times, accuracies); the problem columns that
    exist are used (none: a single problem). Several `solver` columns make each of their settings a
    solver, labelled "adam, lr=0.1" (`labels.setting_label`), so runs at different learning rates are
    never averaged into one solver.
    """
    solver_cols = [solver] if isinstance(solver, str) else list(solver)
    for column in (*solver_cols, metric):
        if column not in runs.columns:
            raise AnalysisError(f"no column {column!r} in the runs")
    labels = _solver_labels(runs, solver_cols)
    problem_cols = _existing(runs, problem, "problem columns", required=False)
    outcome = _outcomes(runs)
    value = pd.Series(_numeric(runs[metric]), index=runs.index)
    bad = math.inf if lower_is_better else -math.inf
    value[outcome.isin(["diverged", "failed"])] = bad
    keep = (outcome.isin(["finished", "diverged", "failed"]) & value.notna()).to_numpy()
    cells = runs.loc[keep, problem_cols].copy()
    cells["_solver"] = labels[keep]
    cells["_value"] = value[keep]
    finite = cells["_value"][np.isfinite(cells["_value"])]
    if (finite <= 0).any():
        raise AnalysisError(f"performance ratios need positive values; {metric} has {finite.min():g}")
    if problem_cols:
        cells["_problem"] = [" / ".join(value_text(v) for v in row)
                             for row in cells[problem_cols].itertuples(index=False, name=None)]
    else:
        cells["_problem"] = "all"
    solvers = sorted(labels.dropna().unique())
    perf = cells.pivot_table(index="_problem", columns="_solver", values="_value", aggfunc="mean")
    perf = perf.reindex(columns=solvers).fillna(bad)
    best = perf.min(axis=1) if lower_is_better else perf.max(axis=1)
    with np.errstate(all="ignore"):
        ratio = perf.div(best, axis=0) if lower_is_better else 1.0 / perf.div(best, axis=0)
    ratio = ratio.where(np.isfinite(perf) & np.isfinite(best).to_numpy()[:, None], math.inf)
    ratio.index.name, ratio.columns.name = "problem", "solver"
    return ratio


def _solver_labels(runs: pd.DataFrame, columns: list[str]) -> pd.Series:
    if len(columns) == 1:
        return runs[columns[0]].map(lambda v: v if pd.isna(v) else str(v))
    return pd.Series([setting_label(zip(columns, row, strict=True))
                      for row in runs[columns].itertuples(index=False, name=None)], index=runs.index, dtype=object)


def performance_profile(
    runs: pd.DataFrame,
    metric: str,
    problem: Sequence[str] = ("model.name", "dataset.name"),
    solver: str | Sequence[str] = "optimizer.name",
    taus: Sequence[float] | np.ndarray | None = None,
    lower_is_better: bool = True,
) -> pd.DataFrame:
    """Dolan–Moré profile ρ_s(τ) = share of problems on which solver s is within a factor τ of the best.

    Columns: solver, tau, rho (sorted by solver, then tau). `taus` defaults to 1 and every finite
    ratio, the points where the step function changes (plot with drawstyle="steps-post"). Ratios
    come from `performance_ratios` (failed/diverged runs are infinitely bad, so ρ may stay < 1).
    """
    ratio = performance_ratios(runs, metric, problem, solver, lower_is_better)
    if taus is None:
        finite = ratio.to_numpy()[np.isfinite(ratio.to_numpy())]
        grid = np.unique(np.concatenate([[1.0], finite]))
    else:
        grid = np.unique(np.asarray(taus, dtype=float))
    r = ratio.to_numpy()  # problems × solvers
    rho = (r[:, :, None] <= grid[None, None, :]).mean(axis=0)  # solvers × taus
    result = pd.DataFrame({
        "solver": np.repeat(ratio.columns.to_numpy(dtype=object), len(grid)),
        "tau": np.tile(grid, len(ratio.columns)),
        "rho": rho.reshape(-1),
    })
    result.attrs.update({"metric": metric, "problems": len(ratio)})
    return result


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control without independence assumptions).

    Sorted ascending, p_(i) becomes max_{j<=i} min(1, (m - j + 1) p_(j)) with m the number of finite p-values;
    NaN stays NaN and is not counted in m (an untestable pair neither spends nor gains any of the error rate).
    Reject at level alpha where the adjusted value is <= alpha. statsmodels' multipletests(method="holm") gives the
    same numbers; it is not a dependency.
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if finite.size == 0:
        return out
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise AnalysisError(f"p-values must be in [0, 1], got {p[finite].min():g}..{p[finite].max():g}")
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def pairwise_paired(
    runs: pd.DataFrame,
    metric: str,
    on: str = "optimizer.name",
    by: Sequence[str] = (),
    *,
    pair_on: str = "seed",
    order: Sequence[str] | None = None,
    confidence: float = 0.95,
    only_finished: bool = True,
) -> pd.DataFrame:
    """Every pair of `on` settings per `by` group: the mean paired difference (a − b) over the shared `pair_on`
    values (seeds), its Student-t interval and the paired t test (scipy.stats.ttest_rel), Holm-corrected over the
    pairs of the group (one family per group and metric).

    Why paired: when every setting runs with the same seeds and a seed fixes the initial weights and minibatches,
    the seed-to-seed spread cancels in the differences, so intervals are much tighter than Welch's. Columns:
    `*by, a, b, n_a, n_b, n_pairs, mean_a, mean_b, diff, ci_low, ci_high, t, df, p, p_holm`. Pairs follow `order`
    (default: sorted values; a before b). Only finished runs with a finite metric count by default; fewer than 2
    shared seeds, or differences that are all equal, give NaN t, p and bounds (NaN p is left out of Holm's m).
    Several runs of one setting and seed are an error: the pairing would be ambiguous.
    """
    _check_confidence(confidence)
    by = list(by)
    for column in (on, metric, pair_on, *by):
        if column not in runs.columns:
            raise AnalysisError(f"no column {column!r} in the runs")
    runs = runs.reset_index(drop=True)  # groups are matched by index: a concatenated frame repeats labels
    used = runs[_outcomes(runs) == "finished"] if only_finished else runs
    used = used.assign(_v=_numeric(used[metric]))
    used = used[np.isfinite(used["_v"]) & used[on].notna()]
    rows: list[dict[str, Any]] = []
    for key, group in iter_groups(runs, by):
        part = used.loc[used.index.intersection(group.index)]
        dup = part[[on, pair_on]].astype(str).duplicated()
        if dup.any():
            first = part[dup].iloc[0]
            raise AnalysisError(f"several runs of {on}={first[on]} with {pair_on}={first[pair_on]}: pairing is "
                                "ambiguous (keep one run per setting and seed)")
        names = [str(v) for v in group[on].dropna().unique()]
        names = [n for n in order if n in names] if order is not None else sorted(names)
        values = {n: dict(zip(part.loc[part[on].astype(str) == n, pair_on],
                              part.loc[part[on].astype(str) == n, "_v"], strict=True)) for n in names}
        family = []
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = [k for k in values[a] if k in values[b]]
                d = np.array([values[a][k] - values[b][k] for k in shared], dtype=float)
                row = {**dict(zip(by, key, strict=True)), "a": a, "b": b,
                       "n_a": len(values[a]), "n_b": len(values[b]), "n_pairs": len(d),
                       "mean_a": float(np.mean(list(values[a].values()))) if values[a] else math.nan,
                       "mean_b": float(np.mean(list(values[b].values()))) if values[b] else math.nan,
                       "diff": float(d.mean()) if len(d) else math.nan,
                       "ci_low": math.nan, "ci_high": math.nan, "t": math.nan, "df": math.nan, "p": math.nan}
                if len(d) >= 2 and np.ptp(d) > 0:
                    x = np.array([values[a][k] for k in shared])
                    y = np.array([values[b][k] for k in shared])
                    test = sps.ttest_rel(x, y)
                    ci = test.confidence_interval(confidence)
                    row.update(t=float(test.statistic), df=float(test.df), p=float(test.pvalue),
                               ci_low=float(ci.low), ci_high=float(ci.high))
                family.append(row)
        for row, adjusted in zip(family, holm([r["p"] for r in family]), strict=True):
            row["p_holm"] = float(adjusted)
        rows.extend(family)
    columns = [*by, "a", "b", "n_a", "n_b", "n_pairs", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "t", "df",
               "p", "p_holm"]
    result = pd.DataFrame(rows, columns=columns)
    result.attrs.update({"metric": metric, "confidence": confidence, "pair_on": pair_on})
    return result
