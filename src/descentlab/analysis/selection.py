"""Which configurations a figure shows when an experiment holds too many to draw.

Why: a lab's store holds hundreds of configurations (250 learning rates per optimizer, say); a figure with a
curve per configuration is unreadable and took most of an hour to draw. A figure then shows, for each optimizer
(and each facet), its best configurations by a summary metric, and says so; the tables and loss_curves.csv keep
every configuration. No run is pooled: a shown curve is still the seeds of one configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from descentlab.analysis.groups import setting_keys

__all__ = ["Shown", "best_configurations"]


@dataclass(frozen=True)
class Shown:
    """The runs a figure draws, and the sentence saying what was left out (None when nothing was)."""

    runs: pd.DataFrame
    note: str | None


def best_configurations(runs: pd.DataFrame, config: Sequence[str], metric: str, limit: int, *,
                        share: str | None = None, facets: Sequence[str] = (), lower_is_better: bool = True) -> Shown:
    """The runs of at most about `limit` configurations (settings of `config`) per figure panel (setting of
    `facets`), the best by the mean `metric` of their finished runs, with an equal share for each value of `share`
    (e.g. optimizer.name; at least one configuration each). Everything when no panel has more than `limit`.

    Columns not in `runs` (or, for `share` and `facets`, not in `config`) are ignored. Configurations without a
    finished, finite value rank last.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    config = [c for c in config if c in runs.columns]
    if not config or metric not in runs.columns or runs.empty:
        return Shown(runs, None)
    facets = [c for c in facets if c in config]
    share = share if share in config else None
    none = pd.Series([()] * len(runs), index=runs.index, dtype=object)
    key = setting_keys(runs, config)
    panel = setting_keys(runs, facets) if facets else none
    side = setting_keys(runs, [share]) if share else none
    counts = pd.DataFrame({"panel": panel, "key": key}).groupby("panel")["key"].nunique()
    if counts.max() <= limit:
        return Shown(runs, None)
    finished = runs["outcome"].eq("finished") if "outcome" in runs.columns else pd.Series(True, index=runs.index)
    value = pd.to_numeric(runs[metric], errors="coerce").where(finished)
    value = value.where(np.isfinite(value))
    means = (pd.DataFrame({"panel": panel, "side": side, "key": key, "value": value})
             .groupby(["panel", "side", "key"], sort=False)["value"].mean().reset_index())
    means["rank"] = means["value"] if lower_is_better else -means["value"]
    keep: set[tuple[object, object]] = set()
    for name, rows in means.groupby("panel", sort=False):
        k = max(1, limit // rows["side"].nunique())
        best = rows.sort_values("rank", na_position="last", kind="stable").groupby("side", sort=False).head(k)
        keep |= {(name, configuration) for configuration in best["key"]}
    shown = runs[[(p, c) in keep for p, c in zip(panel, key, strict=True)]]
    n_shown = int(setting_keys(shown, config).nunique())
    each = f" per {share}" if share else ""
    note = (f"showing the best configurations{each} by mean {metric}: {n_shown} of {int(counts.sum())} "
            f"(at most {limit} a panel); the tables and loss_curves.csv have them all")
    return Shown(shown, note)
