"""Glue: a composed config -> typed settings (once) -> its task (`descentlab.tasks`) -> one tracked MLflow run.

Everything that can fail on bad input (values, data, the store) is checked before the run is created,
so bad input leaves no run behind (in a sweep the rejected job is recorded as a FAILED run, so that every job
is accounted for). Once the run exists, it always ends FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from descentlab import interrupts, startup
from descentlab.config import (
    JobIdentity,
    JobSettings,
    check_store,
    config_hash,
    job_settings,
    run_name,
    run_params,
    tracking_settings,
    validate,
)
from descentlab.errors import input_errors, one_line
from descentlab.tasks import Task, make_task

if TYPE_CHECKING:
    from descentlab.tracking.session import TrackingSession


@dataclass
class JobContext:
    """Where this job sits in Hydra: multirun or not, sweep folder, job number, overrides.

    `sweep_dir` is the sweep folder as this process reaches it (relative to its working directory); `sweep_key` the
    same folder as the launching process names it (absolute, from `hydra.runtime.cwd`, which Hydra composed there),
    the same string on every node: the sweep's parent run is found by it where the folder is not shared.
    """

    multirun: bool
    sweep_dir: str | None
    job_num: int | None
    overrides: list[str]
    output_dir: str | None
    sweep_key: str | None = None

    @classmethod
    def current(cls) -> JobContext:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from descentlab.tracking.sweep_description import sweep_dir_key

        if not HydraConfig.initialized():
            return cls(False, None, None, [], None)
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        return cls(
            multirun=multirun,
            sweep_dir=str(hc.sweep.dir) if multirun else None,
            job_num=int(hc.job.num) if multirun else None,
            overrides=list(hc.overrides.task),
            output_dir=hc.runtime.output_dir,
            sweep_key=sweep_dir_key(hc.sweep.dir, hc.runtime.cwd) if multirun else None,
        )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job: skip it if an identical FINISHED run exists, else train and track it.

    SIGINT/SIGTERM end the job's run KILLED with what it computed (`descentlab.interrupts`), in any process.
    """
    startup.pause()  # a sweep worker's first job loads mlflow & co. now (train.py's guarded_main paused it already)
    interrupts.install("job")  # a worker's handlers; train.py's process already has the launcher's
    job = JobContext.current()
    try:
        with interrupts.job(job.sweep_dir):
            return _run(cfg, job)
    finally:
        startup.after_first_job()


def _run(cfg: DictConfig, job: JobContext) -> dict[str, Any]:
    settings: JobSettings | None = None
    try:
        validate(cfg)
        settings, identity = job_settings(cfg)  # the config, resolved once; below, only typed settings
        if settings.tracking.enabled:
            check_store(settings.tracking)  # set-up: the store's folder is writable, with room (no run yet)
    except input_errors() as exc:
        _reject(cfg, job, exc, settings)
        raise
    name, chash = identity.name, identity.config_hash
    if not settings.tracking.enabled:
        return run_untracked(cfg, settings, identity)

    from descentlab.tracking.session import TrackingSession

    session = TrackingSession.open(settings.tracking)
    # In the jobs (the launcher of a sweep imports no mlflow): runs of killed jobs end FAILED, so they are redone.
    session.repair_stale()
    if not settings.force:
        done = session.find_finished(chash)
        if done is not None:
            print(f"skipped {name}: already FINISHED as run {done} (config_hash {chash}; force=true reruns it)",
                  file=sys.stderr)
            return {"status": "SKIPPED", "run_id": done, "name": name, "metrics": _metrics(session, done)}

    try:
        task = make_task(settings)  # loads data: may fail, before any run exists
    except input_errors() as exc:
        _reject(cfg, job, exc, settings, session)
        raise
    from descentlab.tracking.best import GROUP_TAG

    # config_group: the run's repeats (config without the seed), how tracking.weights=best finds a lone run's siblings
    tags = {**_job_tags(settings, job, chash), GROUP_TAG: identity.group_hash, **task.tags()}
    tracker = session.new_run(name, tags=tags, parent_run_id=_parent(session, job), spill_dir=job.output_dir,
                              write_guard=interrupts.deferred)
    status = execute(cfg, settings, identity, task, tracker, job.output_dir)
    print(f"{name}: {status} (run {tracker.run_id}, experiment {settings.tracking.experiment}, {session.uri})",
          file=sys.stderr)
    if not job.multirun:  # a sweep's launching process does it once, when the sweep ends
        session.refresh_statistics()
    return {"status": status, "run_id": tracker.run_id, "name": name, "metrics": _metrics(session, tracker.run_id)}


def _metrics(session: Any, run_id: str | None) -> dict[str, float]:
    """The run's latest value of every metric (its `final/*` summary among them): the job's return value, which
    Hydra hands to a sweeper (an Optuna study reads its objective from it). {} when they cannot be read."""
    if run_id is None:
        return {}
    try:
        return dict(session.client.get_run(run_id).data.metrics)
    except Exception as exc:  # the run is tracked whatever happens here; only a sweeper would miss the values
        print(f"warning: could not read back the metrics of run {run_id}: {exc}", file=sys.stderr)
        return {}


def _parent(session: TrackingSession, job: JobContext) -> str | None:
    """The sweep's parent run (created by its first job that records a run); None outside a sweep."""
    if not (job.multirun and job.sweep_dir):
        return None
    with interrupts.deferred():  # a parent run is created and recorded in the sweep folder, or not at all
        return session.parent_run(job.sweep_dir, job.sweep_key)


def _job_tags(settings: JobSettings | None, job: JobContext, chash: str | None, task_name: str | None = None,
              ) -> dict[str, str]:
    """What a job's run is tagged with besides the task's own tags: its identity, where it ran, the code's state."""
    from descentlab.tracking import environment_tags

    root = settings.paths.root if settings is not None else None
    task = settings.task.name if settings is not None else task_name
    tags = {"task": str(task), "hydra.overrides": " ".join(job.overrides), **environment_tags(root)}
    if chash:
        tags["config_hash"] = chash
    if job.multirun:
        tags.update({"hydra.job_num": str(job.job_num), "hydra.sweep_dir": str(job.sweep_key or job.sweep_dir)})
    if job.output_dir:
        tags["hydra.output_dir"] = job.output_dir
    return tags


def _reject(cfg: DictConfig, job: JobContext, exc: BaseException, settings: JobSettings | None,
            session: TrackingSession | None = None) -> None:
    """A sweep's job refused for bad input still counts: a FAILED child run of the sweep's parent, with the
    job's config as params, the one-line reason as its `error` tag and `rejected=true`.

    Outside a sweep (one run, one `error:` line) or without a usable store nothing is recorded; recording must
    never hide the reason, so its own failure is a warning. `settings` is None when the config did not validate:
    the store's settings are then read from the config's `tracking` group alone.
    """
    from descentlab.tracking.store import TrackingUnavailableError

    if not (job.multirun and job.sweep_dir and cfg.tracking.enabled) or isinstance(exc, TrackingUnavailableError):
        return
    try:
        from descentlab.tracking.session import TrackingSession
        from descentlab.tracking.sweep import REJECTED_TAG

        if session is None:
            tracking = settings.tracking if settings is not None else tracking_settings(
                cfg.tracking, _try(lambda c: str(c.paths.cache_dir), cfg))
            session = TrackingSession.open(tracking)
        name, chash = _try(run_name, cfg) or f"job-{job.job_num}", _try(config_hash, cfg)
        tags = {**_job_tags(settings, job, chash, _try(lambda c: c.task.name, cfg)), REJECTED_TAG: "true"}
        tracker = session.new_run(name, tags=tags, parent_run_id=_parent(session, job), write_guard=interrupts.deferred)
        with interrupts.deferred():
            tracker.start()
            try:
                tracker.log_params(_try(run_params, cfg) or {})
            finally:
                tracker.finish("FAILED", error=one_line(exc))
    except Exception as problem:
        print(f"warning: the rejected job {' '.join(job.overrides)} could not be recorded: {one_line(problem)}",
              file=sys.stderr)


def _try(function: Any, cfg: DictConfig) -> Any:
    """`function(cfg)`, or None for a config too broken for it (an interpolation that does not resolve)."""
    try:
        return function(cfg)
    except Exception:
        return None


def execute(cfg: DictConfig, settings: JobSettings, identity: JobIdentity, task: Task, tracker: Any,
            output_dir: str | None) -> str:
    """Run the task inside the tracker's run and log the run's files; returns the terminal status.

    However training ends (finished, diverged, an error, SIGINT/SIGTERM), the run keeps what it computed: its
    metrics, `config.yaml`, Hydra's folder and `metrics.csv` are written before it ends FINISHED, FAILED or
    KILLED. A signal that arrives while the run is created, or once training is over, waits until the run
    has ended: a run whose training completed ends FINISHED with all its files.
    """
    from threadpoolctl import threadpool_limits

    name = identity.name
    startup.resume()  # modules, store and data are loaded: freeze them; the job's own garbage is collected
    with interrupts.deferred():
        tracker.start()
    with tracker, threadpool_limits(limits=settings.training.blas_threads), tempfile.TemporaryDirectory() as tmp:
        try:
            tracker.log_params(identity.params)
            status = task.execute(tracker, name)
        except BaseException as exc:  # SIGINT/SIGTERM (interrupts.JobInterrupted) end it KILLED, errors FAILED
            with interrupts.deferred():
                _log_record_after(exc, cfg, tracker, output_dir)
            raise
        with interrupts.deferred():  # training is over: its results, the run's record and its end, signal or not
            task.log_results(tracker, Path(tmp), name)
            _log_record(cfg, tracker, output_dir)
            tracker.finish(status, error=task.error)
    return status


def _log_record_after(exc: BaseException, cfg: DictConfig, tracker: Any, output_dir: str | None) -> None:
    """The record of a run that training left with `exc`; a failure here must not hide `exc`."""
    try:
        if isinstance(exc, KeyboardInterrupt):
            tracker.set_tag("interrupted_by", str(exc) or "SIGINT")
        _log_record(cfg, tracker, output_dir)
    except Exception as problem:
        print(f"warning: the record of run {tracker.run_id} is incomplete: {problem!r}", file=sys.stderr)


def _log_record(cfg: DictConfig, tracker: Any, output_dir: str | None) -> None:
    """The run's `config.yaml` (resolved: every knob's value), Hydra's folder (as `hydra/`) and `metrics.csv`
    (every point: what analysis reads)."""
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    if output_dir and (Path(output_dir) / ".hydra").is_dir():
        tracker.log_artifacts(str(Path(output_dir) / ".hydra"), "hydra")
    tracker.log_history()


def run_untracked(cfg: DictConfig, settings: JobSettings, identity: JobIdentity) -> dict[str, Any]:
    """`tracking=none`: the same work with a tracker that records nothing (no store, no skipping)."""
    from descentlab.tracking.null import NullTracker

    task = make_task(settings)
    status = execute(cfg, settings, identity, task, NullTracker(), None)
    print(f"{identity.name}: {status} (not tracked)", file=sys.stderr)
    return {"status": status, "run_id": None, "name": identity.name, "metrics": dict(getattr(task, "summary", {}))}
