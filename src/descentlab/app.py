"""Glue: a composed config -> data, model, optimizer -> training or a 2-D descent -> one tracked MLflow run.

Everything that can fail on bad input (values, data, the store) is checked before the run is created,
so bad input leaves no run behind (in a sweep the rejected job is recorded as a FAILED run, so that every job
is accounted for). Once the run exists, it always ends FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from descentlab import interrupts, startup
from descentlab.config import ConfigError, config_hash, optimizer_hyperparams, run_name, run_params, validate
from descentlab.errors import input_errors, one_line
from descentlab.optim import make_optimizer
from descentlab.tracking.callbacks import repair_stale, store_for


@dataclass
class JobContext:
    """Where this job sits in Hydra: multirun or not, sweep folder, job number, overrides."""

    multirun: bool
    sweep_dir: str | None
    job_num: int | None
    overrides: list[str]
    output_dir: str | None

    @classmethod
    def current(cls) -> JobContext:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

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
    try:
        validate(cfg)
    except input_errors() as exc:
        _reject(cfg, job, exc)
        raise
    name = run_name(cfg)
    chash = config_hash(cfg)
    if not cfg.tracking.enabled:
        return run_untracked(cfg, name)
    uri, client, experiment_id = store_for(cfg)

    from descentlab.tracking import RunTracker, find_finished_run

    # In the jobs (the launcher of a sweep imports no mlflow): runs of killed jobs end FAILED, so they are redone.
    repair_stale(client, experiment_id)
    if not cfg.force:
        done = find_finished_run(client, experiment_id, chash)
        if done is not None:
            print(f"skipped {name}: already FINISHED as run {done} (config_hash {chash}; force=true reruns it)",
                  file=sys.stderr)
            return {"status": "SKIPPED", "run_id": done, "name": name}

    try:
        task = make_task(cfg)  # loads data: may fail, before any run exists
    except input_errors() as exc:
        _reject(cfg, job, exc, (client, experiment_id))
        raise
    tags = {**_job_tags(cfg, job, chash), **task.tags()}
    tracker = RunTracker(client, experiment_id, name, tags=tags, parent_run_id=_parent(client, experiment_id, job),
                         flush_every=cfg.tracking.flush_every, flush_seconds=cfg.tracking.flush_seconds,
                         store_every=cfg.tracking.store_every, spill_dir=job.output_dir)
    status = execute(cfg, task, tracker, job.output_dir, name)
    print(f"{name}: {status} (run {tracker.run_id}, experiment {cfg.tracking.experiment}, {uri})", file=sys.stderr)
    return {"status": status, "run_id": tracker.run_id, "name": name}


def _parent(client: Any, experiment_id: str, job: JobContext) -> str | None:
    """The sweep's parent run (created by its first job that records a run); None outside a sweep."""
    if not (job.multirun and job.sweep_dir):
        return None
    from descentlab.tracking import get_or_create_parent

    with interrupts.deferred():  # a parent run is created and recorded in the sweep folder, or not at all
        return get_or_create_parent(client, experiment_id, job.sweep_dir)


def _job_tags(cfg: DictConfig, job: JobContext, chash: str | None) -> dict[str, str]:
    """What a job's run is tagged with besides the task's own tags: its identity, where it ran, the code's state."""
    from descentlab.tracking import environment_tags

    tags = {"task": str(cfg.task.name), "hydra.overrides": " ".join(job.overrides),
            **environment_tags(os.environ.get("DESCENTLAB_ROOT"))}
    if chash:
        tags["config_hash"] = chash
    if job.multirun:
        tags.update({"hydra.job_num": str(job.job_num), "hydra.sweep_dir": str(job.sweep_dir)})
    if job.output_dir:
        tags["hydra.output_dir"] = job.output_dir
    return tags


def _reject(cfg: DictConfig, job: JobContext, exc: BaseException, store: tuple[Any, str] | None = None) -> None:
    """A sweep's job refused for bad input still counts: a FAILED child run of the sweep's parent, with the
    job's config as params, the one-line reason as its `error` tag and `rejected=true`.

    Outside a sweep (one run, one `error:` line) or without a usable store nothing is recorded; recording must
    never hide the reason, so its own failure is a warning.
    """
    from descentlab.tracking.store import TrackingUnavailableError

    if not (job.multirun and job.sweep_dir and cfg.tracking.enabled) or isinstance(exc, TrackingUnavailableError):
        return
    try:
        from descentlab.tracking import RunTracker
        from descentlab.tracking.sweep import REJECTED_TAG

        client, experiment_id = store if store is not None else store_for(cfg)[1:]
        name, chash = _try(run_name, cfg) or f"job-{job.job_num}", _try(config_hash, cfg)
        tags = {**_job_tags(cfg, job, chash), REJECTED_TAG: "true"}
        tracker = RunTracker(client, experiment_id, name, tags=tags, parent_run_id=_parent(client, experiment_id, job))
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


def execute(cfg: DictConfig, task: ClassifyTask | Function2dTask, tracker: Any, output_dir: str | None,
            name: str) -> str:
    """Run the task inside the tracker's run and log the run's files; returns the terminal status.

    However training ends (finished, diverged, an error, SIGINT/SIGTERM), the run keeps what it computed: its
    metrics, `config.yaml`, Hydra's folder and `metrics.csv` are written before it ends FINISHED, FAILED or
    KILLED. A signal that arrives while the run is created, or once training is over, waits until the run
    has ended: a run whose training completed ends FINISHED with all its files.
    """
    from threadpoolctl import threadpool_limits

    startup.resume()  # modules, store and data are loaded: freeze them; the job's own garbage is collected
    with interrupts.deferred():
        tracker.start()
    with tracker, threadpool_limits(limits=cfg.training.blas_threads), tempfile.TemporaryDirectory() as tmp:
        try:
            tracker.log_params(run_params(cfg))
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
    """The run's `config.yaml`, Hydra's folder (as `hydra/`) and `metrics.csv` (every point: what analysis reads)."""
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    if output_dir and (Path(output_dir) / ".hydra").is_dir():
        tracker.log_artifacts(str(Path(output_dir) / ".hydra"), "hydra")
    tracker.log_history()


def run_untracked(cfg: DictConfig, name: str) -> dict[str, Any]:
    """`tracking=none`: the same work with a tracker that records nothing (no store, no skipping)."""
    from descentlab.tracking.null import NullTracker

    task = make_task(cfg)
    status = execute(cfg, task, NullTracker(), None, name)
    print(f"{name}: {status} (not tracked)", file=sys.stderr)
    return {"status": status, "run_id": None, "name": name}


@functools.lru_cache(maxsize=1)
def _load_dataset(name: str, path: str | None, download: bool) -> Any:
    """The data set, loaded once per process: the jobs of a sweep in one worker mostly share it.

    Parsing mnist_5k's CSV costs ~0.12 s a job. The arrays are made read-only, so no job can change
    what the next one trains on.
    """
    from descentlab.data import load_dataset

    data = load_dataset(name, path=path, download=download)  # path is None for the embedded sets
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        array.flags.writeable = False
    return data


class ClassifyTask:
    """Train an MLP on a data set (the book's Figure 6-9 setting by default)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.error: str | None = None
        self.history: Any = None  # training.History once training completed
        self.model: Any = None
        from descentlab.data import IDX_SPECS  # the sets that take a path (mnist, fashion_mnist)

        path, download = None, True
        if cfg.dataset.name in IDX_SPECS:
            path, download = cfg.dataset.path, bool(cfg.dataset.download)
        elif cfg.dataset.path is not None:
            raise ConfigError(f"dataset.path applies to mnist and fashion_mnist only, not {cfg.dataset.name!r}")
        self.data = _load_dataset(cfg.dataset.name, path, download)
        n_train = self.data.info.n_train
        if cfg.training.batch_size > n_train:
            raise ConfigError(f"training.batch_size must be at most the {n_train} training examples of "
                              f"{cfg.dataset.name}, got {cfg.training.batch_size}")

    def tags(self) -> dict[str, str]:
        info = self.data.info
        return {"dataset.checksum": info.checksum, "dataset.source": str(info.source),
                "dataset.n_train": str(info.n_train), "dataset.n_test": str(info.n_test)}

    def execute(self, tracker: Any, name: str) -> str:
        """Train, streaming the metrics to the tracker; FINISHED, or FAILED if the loss diverged."""
        from descentlab.nn import MLP
        from descentlab.progress import Progress
        from descentlab.rng import RandomStreams
        from descentlab.training import DivergedError, fit

        cfg, info = self.cfg, self.data.info
        streams = RandomStreams.from_seed(cfg.seed)
        m = cfg.model
        model = MLP(info.n_features, list(m.hidden_sizes), info.n_classes, activation=m.activation,
                    weight_init=m.weight_init, batch_norm=m.batch_norm, dropout=m.dropout,
                    weight_decay=m.weight_decay, dtype=m.dtype, rng=streams.init, dropout_rng=streams.dropout)
        optimizer = make_optimizer(cfg.optimizer.name, **optimizer_hyperparams(cfg.optimizer))
        t = cfg.training
        progress = Progress(name, t.iterations, enabled=t.progress)

        def callback(step: int, metrics: Any) -> None:
            tracker.log_metrics(metrics, step)
            progress(step, metrics)

        def loss_callback(first_step: int, losses: Any) -> None:  # blocks: no per-step call on the hot path
            tracker.log_series("train/loss", first_step, losses)
            progress.losses(first_step, losses)

        try:
            self.history = fit(model, optimizer, self.data, iterations=t.iterations, batch_size=t.batch_size,
                               eval_every=t.eval_every, rng=streams.batches, sampling=t.sampling,
                               callback=callback, loss_callback=loss_callback,
                               eval_train_subset=t.eval_train_subset, eval_test_subset=t.eval_test_subset)
        except DivergedError as exc:
            tracker.set_tag("diverged_at_step", str(exc.step))
            self.error = f"DivergedError: {exc}"
            print(f"{name}: diverged at step {exc.step} (loss {exc.loss})", file=sys.stderr)
            return "FAILED"
        finally:
            progress.close()
        self.model = model
        return "FINISHED"

    def log_results(self, tracker: Any, tmp: Path, name: str) -> None:
        """After training completed: the summary metrics, the weights and the loss-curve plot."""
        from descentlab.analysis.run_plots import loss_curve_png

        history = self.history
        if history is None or self.model is None:
            return
        tracker.log_metrics(history.summary(window=100), self.cfg.training.iterations)
        if tracker.keeps_artifacts:
            weights = tmp / "weights.npz"
            np.savez(weights, **self.model.state_dict())
            tracker.log_artifact(str(weights))
            tracker.log_artifact(str(loss_curve_png(history.losses, history.evals, name, tmp / "loss_curve.png")))


class Function2dTask:
    """Run the optimizer on a 2-D objective from a start point (the book's Figure 6-8), in float64."""

    def __init__(self, cfg: DictConfig) -> None:
        from descentlab.objectives import get_objective

        self.cfg = cfg
        self.error: str | None = None
        self.objective = get_objective(cfg.task.objective)
        self.path: np.ndarray | None = None  # the descent's points once it stayed finite
        self.values: np.ndarray | None = None

    def tags(self) -> dict[str, str]:
        return {"objective": self.objective.name}

    def execute(self, tracker: Any, name: str) -> str:
        """Descend and log the path; FINISHED, or FAILED if it left the finite numbers."""
        from descentlab.objectives import descend

        cfg = self.cfg
        optimizer = make_optimizer(cfg.optimizer.name, **optimizer_hyperparams(cfg.optimizer))
        with np.errstate(over="ignore", invalid="ignore"):
            path = descend(self.objective, optimizer, np.array(cfg.task.start, dtype=np.float64), cfg.task.steps)
            values = np.asarray(self.objective.value(path), dtype=np.float64)
        finite = np.isfinite(path).all(axis=1) & np.isfinite(values)
        last = len(path) if finite.all() else int(np.argmin(finite))
        for step in range(last):
            tracker.log_metrics({"path/x": float(path[step, 0]), "path/y": float(path[step, 1]),
                                 "path/f": float(values[step])}, step)
        if last < len(path):
            tracker.set_tag("diverged_at_step", str(last))
            self.error = f"DivergedError: the path left the finite numbers at step {last}"
            return "FAILED"
        self.path, self.values = path, values
        return "FINISHED"

    def log_results(self, tracker: Any, tmp: Path, name: str) -> None:
        """After a finite descent: the final value and distance to the minimum, and the path plot."""
        from descentlab.analysis.run_plots import path_png

        if self.path is None:
            return
        distance = float(np.hypot(*(self.path[-1] - np.asarray(self.objective.minimum))))
        tracker.log_metrics({"final/f": float(self.values[-1]), "final/distance_to_min": distance},
                            self.cfg.task.steps)
        if tracker.keeps_artifacts:
            tracker.log_artifact(str(path_png(self.objective, self.path, name, tmp / "path.png")))


def make_task(cfg: DictConfig) -> ClassifyTask | Function2dTask:
    """The task object for `task.name` (validated before this is called)."""
    return ClassifyTask(cfg) if cfg.task.name == "classify" else Function2dTask(cfg)
