"""Experiment tags for MLflow's UI: descentlab's experiments are model training, with a runs-table view.

Why a module of its own: everything here relies on what MLflow's JavaScript UI (not its Python API)
reads from an experiment's tags. The keys and value formats below were read in the UI bundle shipped
with MLflow (`mlflow/server/js/build/static/js/`); `tests/test_tracking_ui.py` fails when the installed
bundle stops containing them.

- `mlflow.experimentKind` = `custom_model_development`: the experiment's kind, which MLflow 3.x UIs up
  to the sidebar's "GenAI / Model training" switch (e.g. 3.5) read to open the runs table. MLflow 3.17
  opens an experiment in the mode of that switch instead (the URL's `workflowType`, else the browser's
  localStorage `mlflow.workflowType_v1`, default GenAI); the tag still records the kind for MLflow's UIs.
- `mlflow.sharedViewState.descentlab`: a saved view of the runs table (MLflow 3.17's "Views" menu above the table,
  or `?viewStateShareKey=descentlab`) with the columns that compare optimizers.

Only missing tags are added, so a kind or view a user changed in the UI is kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

__all__ = ["EXPERIMENT_KIND_TAG", "MODEL_TRAINING", "VIEW_COLUMNS", "VIEW_ID", "VIEW_TAG", "experiment_tags",
           "missing_tags", "saved_view_value"]

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"

SAVED_VIEW_PREFIX = "mlflow.sharedViewState."  # + the view's id; the UI lists every such tag as a view
VIEW_ID = "descentlab"
VIEW_TAG = SAVED_VIEW_PREFIX + VIEW_ID
VIEW_SHARE_PARAM = "viewStateShareKey"  # the URL parameter that opens a saved view
# Column keys as the UI writes them: "<metrics|params|tags|attributes>.`<name>`".
VIEW_COLUMNS = (
    "metrics.`train/loss`",
    "metrics.`final/test_acc`",
    "metrics.`final/train_loss`",
    "params.`optimizer.name`",
    "params.`optimizer.lr`",
    "params.`model.name`",
    "params.`seed`",
)
SHOW_ALL_RUNS = "SHOW_ALL"  # runsHiddenMode: charts draw every run, not the UI's default first 10

# Not tags, but what README.md tells the user: the sidebar switch's mode, kept in the URL or localStorage.
WORKFLOW_PARAM = "workflowType"
WORKFLOW_STORAGE_KEY = "mlflow.workflowType"  # stored as "mlflow.workflowType_v1"
MACHINE_LEARNING = "machine_learning"
MODEL_TRAINING_LABEL = "Model training"


def saved_view_value(now_ms: int | None = None) -> str:
    """The saved view's tag value: the UI's envelope (name, times, state as a JSON string)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    state = {"selectedColumns": list(VIEW_COLUMNS), "runsHiddenMode": SHOW_ALL_RUNS}
    return json.dumps({"name": VIEW_ID, "createdAt": now, "updatedAt": now, "state": json.dumps(state)})


def experiment_tags(now_ms: int | None = None) -> dict[str, str]:
    """The tags descentlab gives an experiment it creates."""
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING, VIEW_TAG: saved_view_value(now_ms)}


def missing_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Those of `experiment_tags()` whose key an existing experiment lacks (its own values win)."""
    if EXPERIMENT_KIND_TAG in tags and VIEW_TAG in tags:  # the common case, without building the view
        return {}
    return {key: value for key, value in experiment_tags().items() if key not in tags}

