"""Mean curves over runs without holding the runs' histories: per-group running count/mean/M2 per step.

Why: `analyze.py` over 10,000 runs of 2,000 steps held every point of every run (~0.7 MB a run, 7 GB).
Here each run's series is smoothed over its full length, thinned to a step grid (every k-th step and its
last), and added into its group's accumulator (Welford's update, numerically stable: no sums of squares),
then dropped. `plots.curve_summary` on a frame feeds the same accumulator, so the streamed and the
in-memory results cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from descentlab.analysis.smoothing import Smoother

__all__ = ["GRID_POINTS", "CurveStats", "grid_every", "grid_note", "prepare_curve", "run_series"]

# At most about this many points per curve on a figure and in loss_curves.csv (plus each run's last step).
GRID_POINTS = 500


def grid_every(n_steps: int, points: int = GRID_POINTS) -> int:
    """The stride k of a grid of at most `points` steps (plus the last) over `n_steps` steps: ceil(n/points)."""
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    return max(1, math.ceil(int(n_steps) / points))


def grid_note(every: int, smooth: str | None = None) -> str:
    """What figures and reports say about the step grid, e.g. "kaiser-smoothed over all steps, then every 4th step
    shown (and each run's last step)"."""
    if every <= 1:
        return "every logged step" + (f", {smooth}-smoothed" if smooth else "")
    smoothed = f"{smooth}-smoothed over all steps, then " if smooth else ""
    return f"{smoothed}every {_ordinal(every)} step shown (and each run's last step)"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def run_series(history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one run's points of one metric, sorted by step (stable: logging order within a step)."""
    steps = history["step"].to_numpy(dtype=np.int64)
    values = history["value"].to_numpy(dtype=float)
    if len(steps) > 1 and (np.diff(steps) < 0).any():
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
    return steps, values


def prepare_curve(steps: np.ndarray, values: np.ndarray, smoother: Smoother | None,
                  every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One run's curve as it is averaged: smoothed over the full (step-sorted) series, then every `every`-th step
    and the run's last step kept."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if smoother is not None and len(values):
        values = np.asarray(smoother(values), dtype=float)
    if every > 1 and len(steps):
        keep = (steps % every == 0) | (steps == steps.max())
        steps, values = steps[keep], values[keep]
    return steps, values


@dataclass
class _Acc:
    """Running count, mean and M2 (sum of squared deviations) per step of one group; steps sorted, unique."""

    steps: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    n: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    mean: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=float))
    m2: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=float))

    def _index(self, steps: np.ndarray) -> np.ndarray:
        """Positions of `steps` (unique) in the grid, growing it when a run brings steps not seen yet."""
        idx = np.searchsorted(self.steps, steps)
        if len(idx) and (idx.max() >= len(self.steps) or (self.steps[np.minimum(idx, len(self.steps) - 1)]
                                                            != steps).any()):
            union = np.union1d(self.steps, steps)
            where = np.searchsorted(union, self.steps)
            for name, dtype in (("n", np.int64), ("mean", float), ("m2", float)):
                grown = np.zeros(len(union), dtype=dtype)
                grown[where] = getattr(self, name)
                setattr(self, name, grown)
            self.steps = union
            idx = np.searchsorted(self.steps, steps)
        return idx

    def add(self, steps: np.ndarray, values: np.ndarray) -> None:
        while len(steps):  # a step logged twice in one run counts twice (as a groupby over points does)
            unique, first = np.unique(steps, return_index=True)
            if len(unique) == len(steps):
                self._update(steps, values)
                return
            self._update(steps[first], values[first])
            rest = np.ones(len(steps), dtype=bool)
            rest[first] = False
            steps, values = steps[rest], values[rest]

    def _update(self, steps: np.ndarray, values: np.ndarray) -> None:
        idx = self._index(steps)
        ok = ~np.isnan(values)  # NaN points are not counted (pandas' mean/std/count skip them)
        idx, x = idx[ok], values[ok]
        n = self.n[idx] + 1
        delta = x - self.mean[idx]
        mean = self.mean[idx] + delta / n
        self.m2[idx] += delta * (x - mean)
        self.mean[idx] = mean
        self.n[idx] = n


class CurveStats:
    """Mean, std and count per (group of `by`, step) over runs added one at a time.

    `runs` fixes which runs count and their group (the values of `by` in their row; missing values form a
    group of their own); `add` ignores runs not in `runs`. Memory: one accumulator per group of the grid's size.
    """

    def __init__(self, runs: pd.DataFrame, by: Sequence[str]) -> None:
        self.by = list(by)
        missing = [c for c in self.by if c not in runs.columns]
        if missing:
            raise ValueError(f"runs has no column(s) {missing}; columns: {sorted(runs.columns)}")
        if self.by:
            codes = runs.groupby(self.by, dropna=False, sort=False).ngroup().to_numpy()
        else:
            codes = np.zeros(len(runs), dtype=np.int64)
        self._group_of: dict[Hashable, int] = dict(zip(runs["run_id"], codes.tolist(), strict=True))
        firsts = pd.Series(np.arange(len(runs))).groupby(codes, sort=True).first()
        # One row per group (its first run's values), in group order: keeps the columns' dtypes for the output.
        self._keys = runs[self.by].iloc[firsts.to_numpy()].reset_index(drop=True)
        self._accs: dict[int, _Acc] = {}
        self.runs_added = 0

    def __contains__(self, run_id: Hashable) -> bool:
        return run_id in self._group_of

    def add(self, run_id: Hashable, steps: np.ndarray, values: np.ndarray) -> bool:
        """Add one run's prepared curve (`prepare_curve`); False if the run is not one of `runs`."""
        group = self._group_of.get(run_id)
        if group is None:
            return False
        if len(steps):
            self._accs.setdefault(group, _Acc()).add(np.asarray(steps, dtype=np.int64), np.asarray(values, float))
            self.runs_added += 1
        return True

    def frame(self) -> pd.DataFrame:
        """Columns *by, step, mean, std, count, ordered by group values, then step (as a sorted groupby)."""
        groups, parts = [], []
        for group, acc in self._accs.items():
            n = acc.n.astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(acc.n > 0, acc.mean, np.nan)
                std = np.where(acc.n > 1, np.sqrt(np.maximum(acc.m2, 0.0) / (n - 1)), np.nan)
            groups.append(np.full(len(acc.steps), group))
            parts.append(pd.DataFrame({"step": acc.steps, "mean": mean, "std": std, "count": acc.n}))
        columns = [*self.by, "step", "mean", "std", "count"]
        if not parts:
            return pd.DataFrame(columns=columns)
        keys = self._keys.iloc[np.concatenate(groups)].reset_index(drop=True)
        out = pd.concat([keys, pd.concat(parts, ignore_index=True)], axis=1)[columns]
        return out.sort_values([*self.by, "step"], kind="stable", na_position="last").reset_index(drop=True)
