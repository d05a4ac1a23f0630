"""Which runs may share a row, a curve or a band: those whose configs differ in nothing but the seed.

Why: an experiment collects trial runs (20 iterations, another lr, no hidden layers) next to the real sweep,
and a mean over "all Adam runs" mixes them into nonsense such as 13 ± 159. A run's identity is its flattened
config without the seed and without `descentlab.config.identity.NON_SEMANTIC_KEYS` (the keys the config hash leaves
out: where and how a run is stored, not what it computes). By default runs are grouped by every identity key
that varies in the selection, so a group holds the seeds of one configuration. Grouping by fewer keys (`by`)
pools configurations; `Grouping.pooled` then says which keys were pooled and over which values.

A param a run did not log (older runs) is a value of its own ("(not logged)"), never a wildcard. Values are
compared after `runs.normalize_param`, so 0.01 and "0.010", or 1 and 1.0, are one value.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Collection, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from descentlab.analysis.runs import BASE_COLUMNS, AnalysisError, normalize_param
from descentlab.config.identity import SEED_KEY, is_semantic

__all__ = [
    "NOT_LOGGED",
    "OPTIMIZER_COLUMN",
    "Grouping",
    "canonical",
    "group_runs",
    "identity_columns",
    "iter_groups",
    "latest_runs",
    "param_columns",
    "setting_keys",
    "sort_key",
    "value_text",
]

NOT_LOGGED = "(not logged)"  # how a param a run did not log is shown
OPTIMIZER_COLUMN = "optimizer.name"
_OPTIMIZER_GROUP = "optimizer."
# Keys shown first (in this order), then the others by config group, then alphabetically.
_FIRST = ("optimizer.name", "model.name", "dataset.name")
_GROUP_ORDER = ("optimizer", "model", "dataset", "training", "task")
_MISSING_KEY = "\x00missing"  # canonical form of a missing value: sorts apart from any normalised text
TRAINED_OUTCOMES = ("finished", "diverged")  # what training gave; killed and failed runs are redone by a rerun


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def canonical(values: pd.Series) -> pd.Series:
    """Each value as comparable text (`normalize_param`); missing values as one value of their own.

    Each distinct value is normalised once (keyed by type too: True, 1 and 1.0 normalise differently): a column of
    100,000 runs holds a handful of values."""
    cache: dict[tuple[type, object], str] = {}

    def one(v: object) -> str:
        if _is_missing(v):
            return _MISSING_KEY
        try:
            return cache[(type(v), v)]
        except KeyError:
            cache[(type(v), v)] = text = normalize_param(v)
            return text
        except TypeError:  # unhashable (a list)
            return normalize_param(v)

    return values.map(one).astype(object)


def value_text(value: object) -> str:
    """A param value as a table or note shows it: 0.001, 200, [100, 100], "(not logged)"."""
    if _is_missing(value):
        return NOT_LOGGED
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def sort_key(value: object) -> tuple[int, Any]:
    """Numbers ascending, then text, then missing: a total order over the mixed values of a column."""
    if _is_missing(value):
        return (2, "")
    if isinstance(value, bool):
        return (1, str(value))
    if isinstance(value, numbers.Real):
        return (0, float(value))
    return (1, str(value))


def param_columns(runs: pd.DataFrame) -> list[str]:
    """The param columns: `attrs["params"]` of a `load_runs` frame, else every column that is neither one of
    `runs.BASE_COLUMNS` nor a metric (a name with "/")."""
    listed = runs.attrs.get("params")
    if listed is not None:
        return [c for c in listed if c in runs.columns]
    return [c for c in runs.columns if c not in BASE_COLUMNS and "/" not in str(c)]


def identity_columns(runs: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Params that define what a run computes: all but the seed and the non-semantic keys (and `exclude`)."""
    drop = {SEED_KEY, *exclude}
    return [c for c in param_columns(runs) if c not in drop and is_semantic(c.removeprefix("param."))]


def _order_keys(keys: Sequence[str]) -> list[str]:
    def rank(key: str) -> tuple[int, int, str]:
        if key in _FIRST:
            return (0, _FIRST.index(key), key)
        group = key.split(".", 1)[0]
        return (1, _GROUP_ORDER.index(group) if group in _GROUP_ORDER else len(_GROUP_ORDER), key)

    return sorted(keys, key=rank)


def _varies(canon: pd.Series) -> bool:
    return canon.nunique() > 1


def _values(raw: pd.Series) -> tuple[Any, ...]:
    """The distinct values of a column (one per canonical form), sorted."""
    seen: dict[str, Any] = {}
    for key, value in zip(canonical(raw), raw, strict=True):
        seen.setdefault(key, value)
    return tuple(sorted(seen.values(), key=sort_key))


def _one_per_level(canon_key: pd.Series, canon_by: pd.Series) -> bool:
    """True when `canon_key` takes one value within each level of `canon_by`."""
    return bool((canon_key.groupby(canon_by, sort=False).nunique() <= 1).all())


@dataclass(frozen=True)
class Grouping:
    """How runs are grouped: `by` (the group columns) and what that leaves out.

    `shown`: the columns a table or legend needs (`by` without keys fixed by the optimizer, see `per_optimizer`).
    `constant`: identity keys with one value in every run. `per_optimizer`: `optimizer.*` keys in `by` that
    only some optimizers have, with one value per optimizer (Adam's betas): not shown, since `optimizer.name`
    already tells those rows apart. `pooled`: identity keys that vary inside some group (only when `by` was
    given), with their values.
    """

    by: tuple[str, ...]
    shown: tuple[str, ...]
    constant: dict[str, Any] = field(default_factory=dict)
    per_optimizer: dict[str, dict[str, Any]] = field(default_factory=dict)
    pooled: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def pooled_text(self, exclude: Sequence[str] = ()) -> str | None:
        """"pooled over optimizer.lr (0.001, 0.1), training.iterations (20, 200)", or None if nothing was.

        `exclude`: keys a figure shows on an axis (the lr of an lr-sensitivity plot), so not pooled there."""
        parts = [f"{key} ({', '.join(value_text(v) for v in values)})" for key, values in self.pooled.items()
                 if key not in exclude]
        return "pooled over " + ", ".join(parts) if parts else None

    def notes(self) -> list[str]:
        """Lines for a report: what was pooled, what every row shares, what each optimizer fixes."""
        notes = [text] if (text := self.pooled_text()) else []
        if self.constant:
            notes.append("same in every row: " + ", ".join(f"{k}={value_text(v)}" for k, v in self.constant.items()))
        for name, keys in self.per_optimizer.items():
            notes.append(f"{name}: " + ", ".join(f"{k}={value_text(v)}" for k, v in keys.items()))
        return notes


def _check_by(runs: pd.DataFrame, by: Sequence[str]) -> list[str]:
    by = list(dict.fromkeys(by))
    unknown = [c for c in by if c not in runs.columns]
    if unknown:
        known = param_columns(runs)
        hints = [f"{c} (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(c, known, n=3))
                 else c for c in unknown]
        raise AnalysisError(f"no column {', '.join(hints)} in the runs; params: {', '.join(known) or '(none)'}")
    return by


def group_runs(runs: pd.DataFrame, by: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> Grouping:
    """The grouping of `runs`: by default every identity key that varies (one configuration per group).

    `by` groups by exactly those columns instead (they must exist; a key with one value is still a column
    and splits nothing); identity keys outside `by` that vary within a group are reported in `pooled`.
    `exclude` names columns that are not params (metrics of a frame without `attrs["params"]`).
    """
    ident = identity_columns(runs, exclude)
    canon = {c: canonical(runs[c]) for c in ident}
    varying = [c for c in ident if _varies(canon[c])]
    per_optimizer: dict[str, dict[str, Any]] = {}
    pooled: dict[str, tuple[Any, ...]] = {}
    if by is None:
        by_cols = _order_keys(varying)
        hidden = []
        if OPTIMIZER_COLUMN in by_cols:
            opt = canon[OPTIMIZER_COLUMN]
            hidden = [c for c in by_cols if c.startswith(_OPTIMIZER_GROUP) and c != OPTIMIZER_COLUMN
                      and (canon[c] == _MISSING_KEY).any() and _one_per_level(canon[c], opt)]
            for _, rows in runs.groupby(opt, sort=False):
                first = rows.iloc[0]
                fixed = {c: first[c] for c in hidden if not _is_missing(first[c])}
                if fixed:
                    per_optimizer[value_text(first[OPTIMIZER_COLUMN])] = fixed
        shown = [c for c in by_cols if c not in hidden]
    else:
        by_cols = _check_by(runs, by)
        shown = list(by_cols)
        if by_cols:
            keys = [canonical(runs[c]) for c in by_cols]
            for c in varying:
                if c in by_cols:
                    continue
                spread = canon[c].groupby(keys, sort=False).transform("nunique")
                if (spread > 1).any():
                    pooled[c] = _values(runs.loc[spread > 1, c])
        else:
            pooled = {c: _values(runs[c]) for c in varying}
    constant = {c: runs[c].iloc[0] for c in ident if c not in varying and c not in by_cols and len(runs)}
    per_optimizer = dict(sorted(per_optimizer.items()))
    return Grouping(tuple(by_cols), tuple(shown), constant, per_optimizer, pooled)


def setting_keys(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Per row, a hashable key of its setting of `columns` (canonical values, so NaN keys compare equal)."""
    canon = [canonical(frame[c]) for c in columns]
    return pd.Series(list(zip(*canon, strict=True)) if canon else [()] * len(frame), index=frame.index, dtype=object)


def iter_groups(frame: pd.DataFrame, by: Sequence[str]) -> Iterator[tuple[tuple[Hashable, ...], pd.DataFrame]]:
    """(values, rows) per group of `by`, values compared canonically, missing values a group of their own;
    groups sorted (numbers ascending, then text, then missing); one group of all rows when `by` is empty."""
    by = list(by)
    if not by:
        yield (), frame
        return
    keys = [canonical(frame[c]) for c in by]
    groups = []
    for _, rows in frame.groupby(keys, sort=False):
        first = rows.iloc[0]
        groups.append((tuple(first[c] for c in by), rows))
    groups.sort(key=lambda item: tuple(sort_key(v) for v in item[0]))
    yield from groups


def latest_runs(runs: pd.DataFrame, keys: Sequence[str], outcomes: Collection[str] = TRAINED_OUTCOMES) -> pd.DataFrame:
    """The runs whose outcome is in `outcomes` (default finished or diverged: what training gave), the latest per
    `keys`: a setting run again (after a kill, or to redraw a figure) counts once, as its latest run."""
    chosen = runs[runs["outcome"].isin(outcomes)].sort_values("start_time")
    return chosen.drop_duplicates(list(keys), keep="last").reset_index(drop=True)
