"""`tracking.weights=best`: is this run's final metric the best so far among its FINISHED siblings?

Why: a run's trained weights (`weights.npz`) are ~80% of its artifacts, and a sweep of thousands of runs rarely
needs more than its best networks. Asked once, when a run's training is over and before it ends, with one search
through MLflow's public client API: "is there a FINISHED sibling whose metric is strictly better?". Ties keep the
weights, a failed or missing comparison keeps them too (a file too many, never the best one missing).

Siblings: the other runs of the same sweep (same `mlflow.parentRunId`): the sweep's final best always has its
weights, and in random order about ln(N) of N runs store them (the k-th run is a record with probability 1/k).
A run outside a sweep compares with the FINISHED runs of its experiment that differ from it only in the seed: its
`config_group` tag (`descentlab.config.identity.group_hash`, the config hash without the seed), set on every job's
run when it is created, so those are the repeats of one configuration, as the analysis groups them.

No mlflow import here: the caller passes its (retrying) client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from descentlab.tracking.repair import PARENT_TAG  # MLflow's documented system tag of a nested run

__all__ = [
    "GROUP_TAG",
    "REASON_TAG",
    "WEIGHTS_TAG",
    "BetterRun",
    "better_sibling",
    "sibling_filter",
]

GROUP_TAG = "config_group"  # the config hash without the seed: a run's repeats outside a sweep
WEIGHTS_TAG = "weights"  # stored | skipped
REASON_TAG = "weights.reason"  # why, in words: which setting, or which sibling was better


@dataclass(frozen=True)
class BetterRun:
    """A FINISHED sibling whose metric beats the run's: the reason a run under `best` stores no weights."""

    run_id: str
    run_name: str
    value: float


def _quoted(value: str) -> str:
    """A filter string literal; ids, hashes and tag values here never hold quotes, but a stray one must not
    change the query."""
    if "'" in value or "\\" in value:
        raise ValueError(f"a sibling filter value must not contain quotes or backslashes, got {value!r}")
    return f"'{value}'"


def sibling_filter(parent_run_id: str | None, group: str | None) -> str:
    """The search filter of a run's FINISHED siblings: same parent run, else (outside a sweep) same config group.

    ValueError when the run has neither (nothing to compare with: the caller keeps the weights).
    """
    if parent_run_id:
        scope = f"tags.`{PARENT_TAG}` = {_quoted(parent_run_id)}"
    elif group:
        scope = f"tags.`{GROUP_TAG}` = {_quoted(group)}"
    else:
        raise ValueError("a run with neither a parent run nor a config group has no siblings to compare with")
    return f"{scope} and attributes.status = 'FINISHED'"


def better_sibling(client: Any, experiment_id: str, metric: str, value: float, *, parent_run_id: str | None,
                   group: str | None, higher_is_better: bool = True) -> BetterRun | None:
    """The best FINISHED sibling whose `metric` is strictly better than `value`, or None (this run is the best so
    far; ties count as best). One `search_runs` call, ordered by the metric, one result.

    `client`: an MlflowClient (or tracking.retry.RetryingClient). The run itself is still RUNNING when asked, so it
    is not its own sibling. A sibling that never logged `metric` does not match the comparison.
    """
    op, order = (">", "DESC") if higher_is_better else ("<", "ASC")
    key = f"metrics.`{metric}`"
    runs = client.search_runs(
        [str(experiment_id)],
        filter_string=f"{sibling_filter(parent_run_id, group)} and {key} {op} {float(value)!r}",
        max_results=1,
        order_by=[f"{key} {order}"],
    )
    if not runs:
        return None
    run = runs[0]
    return BetterRun(run.info.run_id, run.info.run_name or "", float(run.data.metrics[metric]))
