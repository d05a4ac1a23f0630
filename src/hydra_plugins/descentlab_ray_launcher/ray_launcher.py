"""`hydra/launcher=ray`: every job of a sweep is a Ray task, on a local Ray or on a running cluster.

Why our own plugin: hydra-ray-launcher 1.2.2 pins cloudpickle<3 and needs workarounds with current Ray (it passes
`object_store_memory` when connecting, and the launching process's environment never reaches the workers). The
core is Hydra's own model (hydra_ray_launcher's `_core.py`, hydra_joblib_launcher): per job
`ray.remote(wrapper).options(num_cpus=...).remote(hydra_context, sweep_config, task_function, singleton_state)`,
then `ray.get`, JobReturns in the jobs' order. Ray stays the engine; nothing here knows about tracking.

What a job needs besides its config reaches the worker explicitly: the environment variables named in `env_vars`
(a `ray start` worker has its own environment), the launching process's working folder (so that a relative
`hydra.sweep.dir` means the same folder), and SIGINT/SIGTERM, which Ray workers block (so that Ctrl-C and
`ray.cancel` end a job's run KILLED through descentlab's own handlers).

Hydra imports this module when it scans `hydra_plugins` (for `--info plugins` and before composing a config), so
`ray` is imported only when a sweep is launched: without the `[ray]` extra nothing breaks until it is used.
No `from __future__ import annotations`: Hydra's scanner runs this module before it is in `sys.modules`, where
`dataclasses` looks string annotations up.
"""

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

# What a job reads from its environment and a worker of a cluster started by `ray start` does not have: the
# tracking server and its credentials, and where downloads are cached. Only the ones set are sent.
DEFAULT_ENV_VARS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "DESCENTLAB_CACHE_DIR",
)

# `ray.init` arguments that size a Ray the call starts; Ray refuses them when it connects to a running cluster
# (there `ray start` sets them).
START_ONLY_INIT_KEYS = ("num_cpus", "num_gpus", "resources", "object_store_memory", "include_dashboard",
                        "dashboard_host", "dashboard_port", "_temp_dir", "_system_config")


@dataclass
class RayLauncherConf:
    """`hydra.launcher.*` of `hydra/launcher=ray` (Hydra checks names and types against this)."""

    _target_: str = "hydra_plugins.descentlab_ray_launcher.ray_launcher.RayLauncher"
    # null: start a local Ray for the sweep (num_cpus below) and stop it at the end;
    # "auto" (the cluster `ray start` left on this machine), "host:6379" or "ray://host:10001": a running cluster
    address: str | None = None
    # CPUs a local Ray offers (address=null): null = every core of this machine; a cluster's come from `ray start`
    num_cpus: int | None = None
    # CPUs Ray reserves per job, so that a node runs as many jobs at once as it has CPUs / this. Ray also sets
    # OMP_NUM_THREADS to it in the job's worker; training.blas_threads (1) is applied by the job itself.
    num_cpus_per_job: float = 1
    num_gpus_per_job: float = 0
    # Ray's memory reservation per job in bytes (null: none); a scheduling hint, not a limit
    memory_per_job: int | None = None
    # Ray re-runs a task whose worker died this many times; 0: a lost job fails the sweep, and the next launch
    # marks its run FAILED and redoes it (descentlab's repair), rather than Ray starting it again unseen
    max_retries: int = 0
    # names of environment variables copied from the launching process to every job (those that are set)
    env_vars: list[str] = field(default_factory=lambda: list(DEFAULT_ENV_VARS))
    # extra ray.init keyword arguments, added with a `+`: +hydra.launcher.init.namespace=sweeps,
    # +hydra.launcher.init.runtime_env={...}; null values are dropped; object_store_memory, num_gpus, ... only
    # without an address (a local Ray)
    init: dict[str, Any] = field(default_factory=dict)
    # on Ctrl-C/SIGTERM: seconds the cancelled jobs get to record their runs KILLED before they are killed
    cancel_grace_s: float = 60.0


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf,
                             provider="descentlab_ray_launcher")


class RayLauncherError(RuntimeError):
    """A job that Ray lost (its worker or node died) or cancelled behind the sweep's back."""


class RayLauncher(Launcher):
    """Runs each job of a sweep as a Ray task (see `RayLauncherConf` for the keys)."""

    def __init__(self, **params: Any) -> None:
        plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                 for k, v in params.items() if k != "_target_"}
        self.params = RayLauncherConf(**plain)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit every job, then collect their JobReturns in order; a local Ray started here is stopped."""
        if self.params.address:
            _use_token_auth()  # before Ray is imported: it reads RAY_AUTH_MODE then
        import ray

        from descentlab import compat

        assert self.config is not None and self.task_function is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        started = self._init_ray()
        try:
            address = ray.get_runtime_context().gcs_address if not self.params.address else self.params.address
            log.info(f"Ray launcher ({address}) is launching {len(job_overrides)} jobs, sweep output dir: {sweep_dir}")
            job = ray.remote(_execute_job).options(**self._task_options())
            # What every job shares, stored in Ray once (not serialised again with each job's arguments).
            shared = [ray.put(self.hydra_context), ray.put(self.task_function), ray.put(compat.hydra_singleton_state())]
            refs: list[Any] = []
            configs: list[DictConfig] = []
            try:
                for offset, overrides in enumerate(job_overrides):
                    idx = initial_job_idx + offset
                    log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                    sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                    with open_dict(sweep_config):
                        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                        sweep_config.hydra.job.num = idx
                    configs.append(sweep_config)
                    refs.append(job.remote(shared[0], sweep_config, shared[1], shared[2]))
                return [self._collect(ref, config) for ref, config in zip(refs, configs, strict=True)]
            except BaseException:  # Ctrl-C/SIGTERM (descentlab's handler raised) or a broken connection
                self._cancel(refs)
                raise
        finally:
            if started:
                ray.shutdown()

    # -- the launching process's side ------------------------------------------------------------------------
    def _init_ray(self) -> bool:
        """Start a local Ray or connect to the cluster at `address`; False when Ray was running in this process."""
        import ray

        if ray.is_initialized():
            return False
        kwargs = {key: value for key, value in self.params.init.items() if value is not None}
        if self.params.num_cpus is not None:
            kwargs["num_cpus"] = self.params.num_cpus
        env_vars = {name: os.environ[name] for name in self.params.env_vars if name in os.environ}
        runtime_env = dict(kwargs.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**env_vars, **(runtime_env.get("env_vars") or {})}
        if self.params.address:
            refused = [key for key in START_ONLY_INIT_KEYS if key in kwargs]
            if refused:
                from descentlab.config import ConfigError

                key = "num_cpus" if refused[0] == "num_cpus" else f"init.{refused[0]}"
                raise ConfigError(f"hydra.launcher.{key}={kwargs[refused[0]]!r} applies only to a Ray "
                                  f"this launcher starts (address=null); the cluster at "
                                  f"{self.params.address!r} is sized by its `ray start` options")
            address = self.params.address
            _check_reachable(address)
        else:
            kwargs.setdefault("include_dashboard", False)  # a local Ray for one sweep: no web UI, no port
            address = "local"  # a new Ray, even when RAY_ADDRESS or a `ray start` cluster exists
        log.info(f"ray.init(address={address!r}), environment sent to the jobs: {sorted(runtime_env['env_vars'])}")
        try:
            ray.init(address=address, runtime_env=runtime_env, **kwargs)
        except ConnectionError as exc:  # bad input (a wrong address): one line, as for an unreachable store
            from descentlab.config import ConfigError

            raise ConfigError(
                f"hydra.launcher.address={address!r}: no Ray cluster answers there ({exc}); start one with `ray start "
                "--head`, or use address=null for a local Ray; a cluster with token authentication also needs its "
                "token here (RAY_AUTH_TOKEN, or the file of RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)") from exc
        return True

    def _task_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.params.num_cpus_per_job, "max_retries": self.params.max_retries,
                                   "name": "descentlab_job"}
        if self.params.num_gpus_per_job:
            options["num_gpus"] = self.params.num_gpus_per_job
        if self.params.memory_per_job:
            options["memory"] = self.params.memory_per_job
        return options

    def _collect(self, ref: Any, sweep_config: DictConfig) -> JobReturn:
        """The job's JobReturn; a task Ray cancelled or lost becomes a FAILED one whose error says what happened."""
        import ray
        from ray.exceptions import RayTaskError, TaskCancelledError

        overrides = " ".join(filter_overrides(list(sweep_config.hydra.overrides.task)))
        job = f"job #{sweep_config.hydra.job.num} ({overrides})"
        try:
            result = ray.get(ref)
        except TaskCancelledError as exc:  # by someone else (`ray job stop`, the dashboard): ours happen in _cancel
            return _failed(sweep_config, RayLauncherError(f"{job} was cancelled in Ray: {_first_line(exc)}"))
        except RayTaskError as exc:  # our wrapper raised (run_job itself catches the job's exceptions)
            return _failed(sweep_config, exc.cause if isinstance(exc.cause, BaseException) else exc)
        except ray.exceptions.RayError as exc:  # WorkerCrashedError, NodeDiedError, ObjectLostError, ...
            error = RayLauncherError(
                f"{job} was lost by Ray: {type(exc).__name__}: {_first_line(exc)}; its run, if it started, stays "
                "RUNNING until the next launch of the sweep marks it FAILED and runs the job again")
            print(f"error: {error}", file=sys.stderr, flush=True)
            return _failed(sweep_config, error)
        assert isinstance(result, JobReturn)
        return result

    def _cancel(self, refs: list[Any]) -> None:
        """Stop the sweep's jobs: queued ones never start; running ones get a KeyboardInterrupt (the SIGINT handler
        of descentlab's job ends the run KILLED) and `cancel_grace_s` to record it, then are killed."""
        import ray

        pending = [ref for ref in refs if not _done(ref)]
        if not pending:
            return
        print(f"cancelling {len(pending)} Ray job(s) of the sweep", file=sys.stderr, flush=True)
        for ref in pending:
            _quietly(ray.cancel, ref, force=False)
        try:
            _, left = ray.wait(pending, num_returns=len(pending), timeout=self.params.cancel_grace_s)
        except BaseException:  # another Ctrl-C: stop waiting
            left = pending
        for ref in left:
            _quietly(ray.cancel, ref, force=True)


def _check_reachable(address: str) -> None:
    """A `host:port` or `ray://host:port` address answers a TCP connection, else one line (ConfigError).

    Why: `ray.init` retries an address where nothing listens for a long time (measured: still waiting after
    10 min); "auto" is left to Ray, which fails at once when no cluster runs here.
    """
    from descentlab.config import ConfigError

    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigError(f"hydra.launcher.address={address!r}: nothing answers there ({exc.strerror or exc}); "
                          "start the cluster with `ray start --head` (its GCS port, 6379 by default, or the Ray "
                          "Client's ray://host:10001), or use address=null for a local Ray") from None


def _use_token_auth() -> None:
    """Send the cluster's token when this process has one and RAY_AUTH_MODE is unset.

    Why: Ray 2.60's `ray start --head` turns token authentication on by default, but a process that connects to
    it sends no token unless RAY_AUTH_MODE=token (measured: it retries "Authentication token is missing" until it
    gives up, even with address=auto); a token sent to a cluster without authentication is ignored. Ray reads the
    variable when it is imported, so this runs before.
    """
    if os.environ.get("RAY_AUTH_MODE"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(path):
        os.environ["RAY_AUTH_MODE"] = "token"
        log.info("RAY_AUTH_MODE=token: the cluster's token is sent (set RAY_AUTH_MODE=disabled to send none)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _done(ref: Any) -> bool:
    import ray

    try:
        ready, _ = ray.wait([ref], timeout=0)
    except Exception:
        return True
    return bool(ready)


def _quietly(function: Any, *args: Any, **kwargs: Any) -> None:
    try:
        function(*args, **kwargs)
    except Exception as exc:
        log.debug(f"{function.__name__} failed: {exc!r}")


def _failed(sweep_config: DictConfig, error: BaseException) -> JobReturn:
    """A JobReturn for a job that returned none: Hydra's sweeper raises `error` when it reads its value."""
    ret = JobReturn(overrides=list(sweep_config.hydra.overrides.task), task_name=str(sweep_config.hydra.job.name),
                    status=JobStatus.FAILED)
    ret.return_value = error
    return ret


# -- the worker's side ---------------------------------------------------------------------------------------
def _execute_job(hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction,
                 singleton_state: dict[str, Any]) -> JobReturn:
    """One job in a Ray worker: Hydra's state of the launching process, its working folder, then `run_job`."""
    from descentlab import compat

    setup_globals()
    compat.hydra_set_singleton_state(singleton_state)
    cwd = str(OmegaConf.select(sweep_config, "hydra.runtime.cwd", default="") or "")
    with _job_signal_handlers(), _working_folder(cwd):
        HydraConfig.instance().set_config(sweep_config)
        try:
            return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                           job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        except KeyboardInterrupt as exc:  # the job ended KILLED (run_job catches only Exception)
            return _failed(sweep_config, exc)


# The SIGINT/SIGTERM handlers the job installed in this worker (descentlab's, which end a run KILLED), kept
# between jobs while Ray's own are back.
_job_handlers: dict[int, Any] = {}


@contextmanager
def _job_signal_handlers() -> Iterator[None]:
    """SIGINT and SIGTERM reach the job: unblocked, with the job's handlers; Ray's mask and handlers between jobs.

    Why: a Ray worker blocks SIGINT (measured: `pthread_sigmask` lists it in the task's thread), so the SIGINT that
    a launcher sends to a job it stops (descentlab's interrupts, on Ctrl-C) would stay pending and the job would
    run to its end. Between jobs Ray's handlers come back: the job's only remember a signal (so that a stopped
    sweep starts no further job in that process), and an idle worker would outlive the SIGTERM of `ray stop` or of
    Ray's own worker management until its SIGKILL.
    """
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover - Ray runs tasks there
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    ray_handlers = {signum: signal.getsignal(signum) for signum in signals}
    for signum, handler in _job_handlers.items():
        signal.signal(signum, handler)
    ray_mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, ray_mask)
        for signum, ray_handler in ray_handlers.items():
            current = signal.getsignal(signum)
            if current is not ray_handler:
                _job_handlers[signum] = current
            signal.signal(signum, ray_handler)


@contextmanager
def _working_folder(cwd: str) -> Iterator[None]:
    """The launching process's working folder when this node has it (a relative `hydra.sweep.dir` then means the
    same folder as there); else a new temporary folder, which stays: the job's outputs remain on this node."""
    previous, launching = os.getcwd(), cwd
    if not (cwd and Path(cwd).is_dir()):
        cwd = tempfile.mkdtemp(prefix="descentlab-ray-job-")
        print(f"warning: the launching folder {launching!r} is not on this node: the job runs in {cwd} (its outputs "
              "stay there; its run goes to the tracking store)", file=sys.stderr, flush=True)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(previous)
