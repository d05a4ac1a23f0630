"""The Optuna side of `hydra/sweeper=descentlab_optuna`: the study (its name, storage, sampler), resuming after a
killed launch, and how a job's return value becomes a trial's result. Imported only when the sweeper runs (Hydra's
plugin scan skips modules whose name starts with `_`): `import optuna` costs ~0.2 s that no plain train.py start
should pay.
"""

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.errors import HydraException
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from hydra_plugins.descentlab_optuna_sweeper._space import SearchSpace

SAMPLERS = ("tpe", "random")
DIRECTIONS = ("minimize", "maximize")
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
# Study user attributes (public Optuna API, kept in the study's storage):
INTERRUPTED = "interrupted_trials"  # numbers of trials a killed launch left behind (FAIL, params run again)
PARENT_RUN = "mlflow_parent_run_id"  # the MLflow parent run every trial of the study is a child of
# Trial user attributes:
RUN_ID, RUN_NAME, JOB_STATUS, FAIL_REASON, REQUEUED_FROM = "run_id", "run_name", "job_status", "fail_reason", \
    "requeued_from"


class SweeperConfigError(HydraException):
    """Bad sweeper settings (train.py prints one `error:` line and exits 2)."""


@dataclass(frozen=True)
class StudySettings:
    sampler: str
    seed: int
    direction: str
    metric: str
    n_trials: int
    n_jobs: int
    storage: str | None
    study_name: str | None

    def check(self) -> None:
        """One line naming the bad value and what is allowed."""
        if self.sampler not in SAMPLERS:
            raise SweeperConfigError(f"hydra.sweeper.sampler={self.sampler!r} is not a sampler; allowed: "
                                     f"{', '.join(SAMPLERS)}")
        if self.direction not in DIRECTIONS:
            raise SweeperConfigError(f"hydra.sweeper.direction={self.direction!r} is not a direction; allowed: "
                                     f"{', '.join(DIRECTIONS)}")
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise SweeperConfigError(f"hydra.sweeper.metric={self.metric!r}: name a summary metric of the runs, "
                                     "e.g. final/val_loss or final/val_acc")
        for key in ("n_trials", "n_jobs"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise SweeperConfigError(f"hydra.sweeper.{key}={value!r} must be an integer >= 1")


def default_storage(tracking_uri: str, store_dir: str) -> str:
    """`optuna.db` next to the tracking store: beside a SQLite tracking file (`sqlite:///.../mlflow.db`, also one
    named by $MLFLOW_TRACKING_URI), else in `tracking.store_dir`. With tracking=server that is this machine's
    `tracking.store_dir` (default `<checkout>/mlruns`): only the launching process opens the study, so the study
    stays where the sweeps are launched while the runs go to the server; name a shared database with
    `hydra.sweeper.storage` to launch one study from several machines."""
    folder = Path(os.path.expanduser(store_dir)).absolute()
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
        if path and path != ":memory:":
            folder = Path(path).absolute().parent  # sqlite:////abs/mlflow.db or sqlite:///relative/mlflow.db
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def derived_name(experiment: str, space: SearchSpace, settings: StudySettings) -> str:
    """The same command finds the same study: the experiment, the fixed overrides, the space, what is optimised.
    Overrides that do not change what a run computes (descentlab.config.identity's non-semantic keys:
    training.progress, tracking.*, paths.*, ...) are left out, as they are of a run's config_hash."""
    from descentlab.config.identity import is_semantic

    return f"{experiment}-{space.digest(settings.direction, settings.metric, keep=is_semantic)}"


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed) if name == "random" else optuna.samplers.TPESampler(seed=seed)


def open_study(settings: StudySettings, name: str, storage_url: str) -> optuna.Study:
    """Create or load the study; its sampler seeded with `seed + trials so far`.

    Why the offset: a relaunch builds a new sampler, and a seeded RandomSampler (or TPE's random start-up trials)
    would replay the first launch's proposals from the start; the offset gives every launch its own stream.
    """
    try:
        storage = optuna.storages.RDBStorage(storage_url)
    except Exception as exc:
        raise SweeperConfigError(f"hydra.sweeper.storage={storage_url!r} cannot be opened: "
                                 f"{str(exc).splitlines()[0]}") from None
    study = optuna.create_study(study_name=name, storage=storage, direction=settings.direction,
                                load_if_exists=True)
    if study.direction.name.lower() != settings.direction:
        raise SweeperConfigError(f"study {name!r} in {storage_url} was created to {study.direction.name.lower()}, "
                                 f"not {settings.direction}: name another study (hydra.sweeper.study_name)")
    n_before = len(study.get_trials(deepcopy=False))
    return optuna.load_study(study_name=name, storage=storage,
                             sampler=make_sampler(settings.sampler, settings.seed + n_before))


def recover(study: optuna.Study) -> list[int]:
    """Trials a killed launch left RUNNING become FAIL (listed in the study's `interrupted_trials`) and their params
    are enqueued again, so that configuration runs (train.py skips it if its run had finished). Assumes one launch
    of a study at a time: a RUNNING trial at start-up belongs to no living launch."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if stale:
        _requeue(study, [(t.number, t.params) for t in stale])
    return [t.number for t in stale]


def interrupt(study: optuna.Study, trial: Trial) -> None:
    """A trial whose job was interrupted (its run KILLED): FAIL, listed as interrupted, its params enqueued again."""
    trial.set_user_attr(FAIL_REASON, "interrupted: its job was stopped by a signal")
    _requeue(study, [(trial.number, trial.params)])


def _requeue(study: optuna.Study, trials: list[tuple[int, dict[str, Any]]]) -> None:
    """What an interrupted trial becomes: FAIL, listed in the study's `interrupted_trials` (so `counted` skips it)
    and its (number, params) enqueued again, so its configuration runs in a later trial."""
    for number, params in trials:
        study.tell(number, state=TrialState.FAIL)
        study.enqueue_trial(dict(params), user_attrs={REQUEUED_FROM: number})
    study.set_user_attr(INTERRUPTED, [*study.user_attrs.get(INTERRUPTED, []), *(n for n, _ in trials)])


def counted(study: optuna.Study) -> list[FrozenTrial]:
    """The trials n_trials counts: finished ones, less those interrupted (their configuration is run again)."""
    skip = set(study.user_attrs.get(INTERRUPTED, []))
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.number not in skip]


def suggest(trial: Trial, space: SearchSpace) -> dict[str, Any]:
    """The trial's params through Optuna's public suggest API (an enqueued trial gets its fixed params back)."""
    params: dict[str, Any] = {}
    for name, dim in space.dimensions.items():
        dist = dim.distribution
        if isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
        else:
            assert isinstance(dist, CategoricalDistribution)
            params[name] = trial.suggest_categorical(name, dist.choices)
    return params


@dataclass(frozen=True)
class Outcome:
    """What a job's return value means for its trial."""

    value: float | None  # the objective, or None: the trial FAILs
    reason: str | None  # why it failed (a trial user attribute)
    status: str  # the job's status: FINISHED | FAILED | KILLED | SKIPPED | EXCEPTION
    run_id: str | None = None
    run_name: str | None = None
    metrics: Mapping[str, float] | None = None

    @property
    def interrupted(self) -> bool:
        return self.status == "KILLED"


def judge(ret: JobReturn, metric: str) -> Outcome:
    """The trial's result from `JobReturn.return_value` (`{"status", "run_id", "name", "metrics"}`, see
    descentlab.app.run): the metric if the run has a finite one; else a FAIL with the reason."""
    try:
        value = ret.return_value  # a job that raised: Hydra raises its exception again here
    except Exception as error:
        text = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
        return Outcome(None, f"job raised {type(error).__name__}: {text}", "EXCEPTION")
    if not isinstance(value, Mapping):
        return Outcome(None, f"job returned {type(value).__name__}, not descentlab's run summary", "EXCEPTION")
    status, run_id, name = str(value.get("status")), value.get("run_id"), value.get("name")
    metrics = value.get("metrics") or {}
    common = {"status": status, "run_id": run_id, "run_name": name, "metrics": metrics}
    if status == "KILLED":
        return Outcome(None, "interrupted", **common)
    if status == "FAILED":
        return Outcome(None, "run FAILED (diverged, or an error in training)", **common)
    if metric not in metrics:
        return Outcome(None, f"run {status} without metric {metric}", **common)
    number = float(metrics[metric])
    if not math.isfinite(number):
        return Outcome(None, f"metric {metric} is {number} (not finite)", **common)
    return Outcome(number, None, **common)


def check_metric(outcomes: list[Outcome], metric: str) -> None:
    """A run that finished with summary metrics but not this one: the metric's name is wrong, not the run."""
    for outcome in outcomes:
        if outcome.status in ("FINISHED", "SKIPPED") and outcome.metrics and metric not in outcome.metrics:
            summary = sorted(k for k in outcome.metrics if k.startswith(("final/", "best/"))) or sorted(outcome.metrics)
            raise SweeperConfigError(f"hydra.sweeper.metric={metric!r} is not a summary metric of the runs; they "
                                     f"have: {', '.join(summary)}")


__all__ = ["DIRECTIONS", "INTERRUPTED", "PARENT_RUN", "SAMPLERS", "Outcome", "StudySettings", "SweeperConfigError",
           "check_metric", "counted", "default_storage", "derived_name", "interrupt", "judge", "make_sampler",
           "open_study", "recover", "suggest"]
