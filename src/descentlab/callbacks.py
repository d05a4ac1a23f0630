"""Hydra callback: prepare the MLflow store before a sweep's jobs start, close the sweep's parent after.

Parallel jobs race when they create the SQLite schema, so the launching process creates the store first
(a copy of a cached empty-schema template: no mlflow import, see `store.prepare_store`). Experiments are
created race-safely by whichever job comes first. For a SQLite file the parent run is created lazily by the
first job that really runs (see `tracking.sweep`), so a re-run whose jobs are all skipped leaves no empty parent
behind. For a tracking server or a database (`tracking.sweep_parent=auto`) this process creates the parent before
any job: jobs on nodes that do not share the sweep folder find it by its `sweep.dir` tag; an eager parent that no
job joined is deleted when the sweep closes.

Why the launching process avoids mlflow: `import mlflow` plus its SQL store cost ~2.3 s of one core. With
the parallel (joblib) launcher the jobs run in worker processes that import mlflow anyway, so the
launcher's own import would only delay the first job; the parent run is closed by one of those warm
workers instead. For the same reason runs of killed jobs are repaired (`tracking.repair`) by the jobs
(`TrackingSession.repair_stale`) before they look for a FINISHED run of their config, not here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from descentlab import compat, startup

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"

# The sweep this process launched and has not closed yet: (tracking URI, sweep dir, its description, whether this
# process created its parent run).
_open_sweep: tuple[str, Path, dict[str, Any], bool] | None = None


class SweepCallback(Callback):
    """Creates the store in the launching process; ends the sweep's parent run."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from descentlab import interrupts
        from descentlab.config import check_known_keys
        from descentlab.errors import LaunchRefused, input_errors

        interrupts.watch_sweep(str(config.hydra.sweep.dir))  # a signal waits for the jobs announced there
        try:
            check_known_keys(config)  # `+foo=1` fails here once, not in every job
            self._prepare(config)
        except input_errors() as exc:
            raise LaunchRefused(exc) from exc  # Hydra would only warn about an Exception and start the jobs
        finally:
            if OmegaConf.select(config, "hydra.launcher._target_") != compat.HYDRA_BASIC_LAUNCHER:
                startup.resume()  # the jobs run elsewhere: this process's start-up is over

    def _prepare(self, config: DictConfig) -> None:
        global _open_sweep
        if not config.tracking.enabled:
            return
        from descentlab.config import check_store, tracking_settings
        from descentlab.tracking.session import TrackingSession, prepare
        from descentlab.tracking.sweep_description import sweep_dir_key, write_description

        settings = tracking_settings(config.tracking, str(config.paths.cache_dir))
        check_store(settings)  # a malformed URI, a folder that is not writable or full: before any job
        made_parent = settings.parent_by_launcher()
        # Absent servers fail here, before any job. The parent needs the store open in this process; otherwise
        # `prepare` sets it up without importing mlflow (with a cached schema template).
        session = TrackingSession.open(settings) if made_parent else None
        uri = session.uri if session is not None else prepare(settings)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        description = describe_sweep(list(config.hydra.overrides.task), _config_sweep_params(config),
                                     OmegaConf.select(config, "hydra.sweeper.n_trials", default=None))
        write_description(sweep_dir, description)  # the parent is named and tagged from it
        if session is not None:  # jobs may run where the sweep folder is not: they find this parent by its tag
            session.parent_run(str(sweep_dir), sweep_dir_key(sweep_dir, config.hydra.runtime.cwd))
        _open_sweep = (uri, sweep_dir, description, made_parent)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        close_open_sweep(_joblib_kwargs(config))


def _config_sweep_params(config: DictConfig) -> dict[str, str]:
    """`hydra.sweeper.params`: sweep values a preset gives in its yaml (`experiment=batch_norm`), as override text."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    return {} if params is None else {str(k): str(v) for k, v in params.items()}


def describe_sweep(overrides: list[str], config_params: dict[str, str] | None = None,
                   n_trials: int | None = None) -> dict[str, Any]:
    """The sweep's description for its parent run (`tracking.sweep.describe`) from the command's overrides and the
    config's `hydra.sweeper.params` (`config_params`; a command-line override of the same key replaces it, as the
    sweepers do).

    The number of jobs is the product of the swept keys' numbers of values (Hydra's basic sweeper); a search's
    `n_trials` (the Optuna sweeper) when given; None when a sweep cannot be enumerated (an interval).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from descentlab.tracking.sweep_description import describe

    parser = OverridesParser.create()
    command = parser.parse_overrides(overrides)
    given = {override.key_or_group for override in command}
    from_config = [f"{key}={value}" for key, value in (config_params or {}).items() if key not in given]
    swept: dict[str, list[str]] = {}
    fixed: dict[str, str] = {}
    n_jobs: int | None = 1
    for override in [*parser.parse_overrides(from_config), *command]:
        key = override.key_or_group
        if not override.is_sweep_override():
            value = override.value()  # a string without Hydra's escapes (`sqlite\:///...` typed on the command line)
            fixed[key] = value if isinstance(value, str) else override.get_value_element_as_str()
            continue
        try:
            swept[key] = list(override.sweep_string_iterator())
        except HydraException:  # interval sweeps: no list of values, their text as typed
            swept[key] = [str(override.input_line).split("=", 1)[-1]]
            n_jobs = None
        else:
            n_jobs = n_jobs * len(swept[key]) if n_jobs is not None else None
    return describe(overrides, swept, fixed, n_trials if n_trials is not None else n_jobs)


def _print_summary(summary: dict[str, Any] | None, description: dict[str, Any]) -> dict[str, Any] | None:
    """The sweep's closing lines: its counts, then every job refused for bad input with its overrides and reason."""
    if not summary:
        return summary  # no job created a parent (all skipped, or none started)
    of = f" of {summary['n_jobs']} jobs" if summary.get("n_jobs") else ""
    failed = f"{summary['failed']} failed" + (f" ({summary['rejected']} rejected)" if summary.get("rejected") else "")
    print(f"sweep{of}: {summary['finished']} finished, {failed}, {summary['killed']} killed "
          f"(parent run {summary['parent_run_id']}: {summary['status']})", file=sys.stderr, flush=True)
    rejections = summary.get("rejections") or []
    if rejections:
        listed = "; ".join(f"[{_swept_only(overrides, description.get('swept'))}] {reason}"
                           for overrides, reason in rejections)
        print(f"sweep: {len(rejections)} job(s) rejected: {listed}", file=sys.stderr, flush=True)
    return summary


def _swept_only(overrides: str, swept: list[str] | None) -> str:
    """A job's overrides (`a=1 b=2 c=3`) cut to the swept keys, which tell the sweep's jobs apart."""
    if not swept:
        return overrides
    kept = [o for o in overrides.split(" ") if o.split("=", 1)[0].lstrip("+~") in swept]
    return " ".join(kept) or overrides


def _joblib_kwargs(config: DictConfig) -> dict[str, Any] | None:
    """The `joblib.Parallel` arguments Hydra's joblib launcher used, or None for other launchers."""
    launcher = OmegaConf.select(config, "hydra.launcher")
    if launcher is None or launcher.get("_target_") != JOBLIB_LAUNCHER:
        return None
    kwargs = OmegaConf.to_container(launcher, resolve=True)
    assert isinstance(kwargs, dict)
    return compat.joblib_launcher_kwargs(kwargs)


def _finish(uri: str, sweep_dir: Path, status: str | None = None,
            description: dict[str, Any] | None = None, drop_empty: bool = False) -> dict[str, Any] | None:
    from descentlab import compat
    from descentlab.tracking.store import open_store
    from descentlab.tracking.sweep import finish_parent
    from descentlab.tracking.upkeep import upkeep_quietly

    client = open_store(uri)
    try:
        return finish_parent(client, sweep_dir, status=status, description=description, drop_empty=drop_empty)
    finally:  # the sweep's runs are in: the planner's statistics follow (milliseconds; only warns)
        upkeep_quietly(uri, indexes=False, engine=compat.mlflow_engine(client))


def close_open_sweep(joblib_kwargs: dict[str, Any] | None = None, status: str | None = None) -> dict[str, Any] | None:
    """End the parent run of the sweep this process launched, if it has one still open, and print its summary.

    Called after the sweep, and by `cli.guarded_main` when the process fails or is interrupted mid-sweep
    (Hydra skips `on_multirun_end` then). The parent's status follows its children's, unless `status` (FAILED for a
    failed launch, KILLED for an interrupted sweep) says otherwise. With `joblib_kwargs` (a sweep that ran in
    joblib workers) and no mlflow in this process, the work is sent to the same, still warm, workers: joblib
    reuses its executor for identical arguments.
    """
    global _open_sweep
    if _open_sweep is None:
        return None
    from descentlab import interrupts

    with interrupts.deferred():  # a Ctrl-C now waits until the parent is closed, then stops the command
        return _close(_open_sweep, joblib_kwargs, status)


def _close(sweep: tuple[str, Path, dict[str, Any], bool], joblib_kwargs: dict[str, Any] | None,
           status: str | None) -> dict[str, Any] | None:
    global _open_sweep
    uri, sweep_dir, description, made_parent = sweep
    _open_sweep = None
    if joblib_kwargs is not None and "mlflow" not in sys.modules:
        try:
            from joblib import Parallel, delayed

            summary = Parallel(**joblib_kwargs)([delayed(_finish)(uri, sweep_dir, status, description,
                                                                  made_parent)])[0]
            return _print_summary(summary, description)
        except Exception as exc:  # a broken pool: do it here
            print(f"warning: closing the sweep's parent run in a worker failed ({exc!r}); closing it here",
                  file=sys.stderr)
    return _print_summary(_finish(uri, sweep_dir, status, description, made_parent), description)
