"""The MLflow side of `hydra/sweeper=descentlab_optuna`: trials' runs tagged with their study and trial number, and
one sweep parent run per study across relaunches.

Why here and not in the jobs: the job (train.py) knows nothing of Optuna; the sweeper alone knows which trial a run
belongs to. Only public MLflow client calls, through descentlab.tracking's helpers (the store opened as every job
opens it).

One parent across relaunches: a job finds its sweep's parent in the sweep folder's state file
(`descentlab.tracking.sweep`), and a relaunch gets a new, timestamped folder. The study remembers its parent
(`mlflow_parent_run_id`, a study user attribute) and, before the relaunch's first job, the sweeper writes that
parent into the new folder's state file: the jobs join it (it is set back to RUNNING), and the sweep's closing
callback (`SweepCallback.on_multirun_end`) summarises all of the study's children on it and ends it again.
With a tracking server the launching process makes an eager parent before the sweeper runs
(`tracking.sweep_parent=auto`); that empty parent is deleted and replaced by the study's.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig

from hydra_plugins.descentlab_optuna_sweeper._study import PARENT_RUN, Outcome

log = logging.getLogger(__name__)

STUDY_TAG, TRIAL_TAG, STORAGE_TAG = "optuna.study", "optuna.trial", "optuna.storage"


class TrialRuns:
    """Opened lazily, once, in the launching process (importing mlflow costs ~2 s)."""

    def __init__(self, config: DictConfig, sweep_dir: str) -> None:
        self.enabled = bool(config.tracking.enabled)
        self.config = config
        self.sweep_dir = Path(sweep_dir).absolute()
        self._session: Any = None

    def session(self) -> Any:
        if self._session is None:
            from descentlab.config import tracking_settings
            from descentlab.tracking.session import TrackingSession

            settings = tracking_settings(self.config.tracking, str(self.config.paths.cache_dir))
            self._session = TrackingSession.open(settings)
        return self._session

    def join_study_parent(self, study: optuna.Study) -> None:
        """Before a relaunch's first job: point this sweep folder at the study's parent run, if it still exists."""
        parent = study.user_attrs.get(PARENT_RUN)
        if not (self.enabled and parent):
            return
        from descentlab.tracking.sweep import adopt_parent

        session = self.session()
        if not adopt_parent(session.client, session.experiment_id, self.sweep_dir, parent):
            log.warning("study %s: its parent run %s is gone or in another experiment; this launch starts a new "
                        "one", study.study_name, parent)
            return
        log.info("study %s: trials join its parent run %s", study.study_name, parent)

    def record(self, study: optuna.Study, trials: Sequence[optuna.trial.Trial], outcomes: Sequence[Outcome],
               storage: str) -> None:
        """Tag each trial's run with the study and trial number; remember the sweep's parent run on the study."""
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        from descentlab.tracking.store import redact
        from descentlab.tracking.sweep import read_sweep_state

        client = self.session().client
        for trial, outcome in zip(trials, outcomes, strict=True):
            if outcome.run_id:
                client.log_batch(outcome.run_id, tags=[RunTag(STUDY_TAG, study.study_name),
                                                       RunTag(TRIAL_TAG, str(trial.number))], synchronous=True)
        state = read_sweep_state(self.sweep_dir)
        if state is not None and study.user_attrs.get(PARENT_RUN) != state["parent_run_id"]:
            study.set_user_attr(PARENT_RUN, state["parent_run_id"])
            client.log_batch(state["parent_run_id"], tags=[RunTag(STUDY_TAG, study.study_name),
                                                           RunTag(STORAGE_TAG, redact(storage))], synchronous=True)


__all__ = ["STORAGE_TAG", "STUDY_TAG", "TRIAL_TAG", "TrialRuns"]
