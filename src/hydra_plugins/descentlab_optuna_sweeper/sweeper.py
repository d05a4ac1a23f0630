"""`hydra/sweeper=descentlab_optuna`: hyperparameter search with Optuna 4's ask/tell API, each trial a tracked run.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins optuna < 3, whose database storage fails under
SQLAlchemy 2 (which MLflow 3 needs), so a study could live only in memory and die with a killed launch. This
sweeper keeps hydra-optuna-sweeper's configuration and override grammar (see `_space.py`, credited there) on
Optuna 4, with the study in a database next to the tracking store, so a killed search resumes.

Per batch of `n_jobs` trials: `study.ask()`, each trial's params become overrides, Hydra's launcher runs the jobs
(basic, parallel, SLURM, Ray: any), and `study.tell()` gets each job's metric (`return_value["metrics"][metric]`,
see descentlab.app.run) or FAIL with the reason (diverged, no metric, the job raised). `n_trials` counts the
study's trials over all launches: a relaunch runs only the rest, after turning the trials a killed launch left
RUNNING into FAIL and enqueueing their params again. No `from __future__ import annotations`: Hydra's plugin
scanner runs this module before it is in `sys.modules`, where `dataclasses` looks string annotations up. Optuna
and MLflow are imported only when a sweep runs (modules `_study`, `_tracking`), not by every train.py start.
"""

import logging
import sys
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class DescentlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.descentlab_optuna_sweeper.sweeper.DescentlabOptunaSweeper"
    sampler: str = "tpe"  # tpe | random
    seed: int = 0  # the sampler's seed (offset by the study's number of trials at each launch)
    direction: str = "minimize"  # minimize | maximize
    metric: str = "final/val_loss"  # a key of the job's return_value["metrics"] (the run's summary metrics)
    n_trials: int = 20  # the study's trials over all launches (a relaunch runs the rest)
    n_jobs: int = 1  # trials asked and launched per batch (2 with hydra/launcher=parallel)
    storage: str | None = None  # null: sqlite:///<tracking.store_dir>/optuna.db
    study_name: str | None = None  # null: <tracking.experiment>-<hash of fixed overrides, space, direction, metric>
    params: dict[str, str] | None = None  # the search space, e.g. {optimizer.lr: "tag(log, interval(1e-6, 1e-2))"}


ConfigStore.instance().store(group="hydra/sweeper", name="descentlab_optuna", node=DescentlabOptunaSweeperConf,
                             provider="descentlab")


class DescentlabOptunaSweeper(Sweeper):
    """Optuna's ask/tell loop around Hydra's launcher (see the module's docstring)."""

    def __init__(self, sampler: str = "tpe", seed: int = 0, direction: str = "minimize",
                 metric: str = "final/val_loss", n_trials: int = 20, n_jobs: int = 1, storage: str | None = None,
                 study_name: str | None = None, params: Any = None) -> None:
        from hydra_plugins.descentlab_optuna_sweeper._study import StudySettings

        self.settings = StudySettings(sampler=sampler, seed=seed, direction=direction, metric=metric,
                                      n_trials=n_trials, n_jobs=n_jobs, storage=storage, study_name=study_name)
        self.params = dict(OmegaConf.to_container(params) if isinstance(params, DictConfig) else params or {})
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> list[Any]:
        from hydra_plugins.descentlab_optuna_sweeper import _study as st
        from hydra_plugins.descentlab_optuna_sweeper._space import parse_space
        from hydra_plugins.descentlab_optuna_sweeper._tracking import TrialRuns

        assert self.config is not None and self.launcher is not None
        settings = self.settings
        settings.check()
        space = parse_space(self.params, arguments)
        if not space.dimensions:
            raise st.SweeperConfigError("the search space is empty: give hydra.sweeper.params or an override "
                                        "such as optimizer.lr=tag(log,interval(1e-4,1e-1))")
        storage = settings.storage or st.default_storage(self._tracking_uri(), str(self.config.tracking.store_dir))
        name = settings.study_name or st.derived_name(str(self.config.tracking.experiment), space, settings)
        study = st.open_study(settings, name, storage)
        recovered = st.recover(study)
        done = len(st.counted(study))
        print(f"optuna: study {name} in {storage}: {done} of {settings.n_trials} trials done"
              + (f"; trial(s) {recovered} of a killed launch failed and re-enqueued" if recovered else ""),
              file=sys.stderr, flush=True)
        runs = TrialRuns(self.config, str(self.config.hydra.sweep.dir))
        if done < settings.n_trials:
            runs.join_study_parent(study)
        returns: list[Any] = []
        while (remaining := settings.n_trials - len(st.counted(study))) > 0:
            trials = [study.ask() for _ in range(min(settings.n_jobs, remaining))]
            batch = [space.overrides(st.suggest(trial, space)) for trial in trials]
            try:
                self.validate_batch_is_legal(batch)
            except Exception as exc:
                for trial in trials:
                    trial.set_user_attr(st.FAIL_REASON, f"config does not compose: {str(exc).splitlines()[0]}")
                    study.tell(trial, state=st.TrialState.FAIL)
                raise
            rets = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            returns.extend(rets)
            outcomes = [st.judge(ret, settings.metric) for ret in rets]
            for trial, outcome in zip(trials, outcomes, strict=True):
                self._tell(study, trial, outcome)
            runs.record(study, trials, outcomes, storage)
            st.check_metric(outcomes, settings.metric)
            self._progress(study)
            if any(o.interrupted for o in outcomes):
                break  # a signal stopped the jobs: the command ends (train.py's interrupt handling) and resumes later
        self._summary(study)
        return returns

    def _tracking_uri(self) -> str:
        """The tracking URI the jobs will use (explicit, else $MLFLOW_TRACKING_URI, else under store_dir)."""
        from descentlab.tracking.store import resolve_tracking_uri

        assert self.config is not None
        uri = OmegaConf.select(self.config, "tracking.uri")
        return resolve_tracking_uri(uri, str(self.config.tracking.store_dir))

    def _tell(self, study: Any, trial: Any, outcome: Any) -> None:
        from hydra_plugins.descentlab_optuna_sweeper import _study as st

        for key, value in ((st.RUN_ID, outcome.run_id), (st.RUN_NAME, outcome.run_name),
                           (st.JOB_STATUS, outcome.status)):
            if value is not None:
                trial.set_user_attr(key, value)
        if outcome.interrupted:
            st.interrupt(study, trial)
        elif outcome.value is None:
            trial.set_user_attr(st.FAIL_REASON, outcome.reason)
            study.tell(trial, state=st.TrialState.FAIL)
            print(f"optuna: trial {trial.number} FAIL: {outcome.reason}", file=sys.stderr, flush=True)
        else:
            study.tell(trial, outcome.value)

    def _progress(self, study: Any) -> None:
        """One line a batch: how far the study is and its best value so far."""
        from hydra_plugins.descentlab_optuna_sweeper import _study as st

        done = st.counted(study)
        complete = [t for t in done if t.state == st.TrialState.COMPLETE]
        best = ""
        if complete:
            trial = study.best_trial
            best = f", best {self.settings.metric}={trial.value:.4g} (trial {trial.number})"
        print(f"optuna: {len(done)}/{self.settings.n_trials} trials done{best}", file=sys.stderr, flush=True)

    def _summary(self, study: Any) -> None:
        from hydra_plugins.descentlab_optuna_sweeper import _study as st

        done = st.counted(study)
        complete = [t for t in done if t.state == st.TrialState.COMPLETE]
        line = f"optuna: study {study.study_name}: {len(complete)} complete, {len(done) - len(complete)} failed"
        if complete:
            best = study.best_trial
            params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
            line += (f"; best trial {best.number}: {self.settings.metric}={best.value:.4g} ({params}, run "
                     f"{best.user_attrs.get(st.RUN_ID)})")
        print(line, file=sys.stderr, flush=True)


__all__ = ["DescentlabOptunaSweeper", "DescentlabOptunaSweeperConf"]
