"""The composed config as typed, frozen objects, built once at the entry; the rest of the code receives these.

Why: a DictConfig passed down is re-read (and its interpolations re-resolved) at every layer, and nothing says
which keys a layer uses. `JobSettings.from_config` resolves the config once, after `validate`; tasks, the
tracking session and the numerics get the part they need. The run's identity (params, hash, name) is computed
from the same resolved config in the same step (`JobIdentity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from descentlab.config.checks import ConfigError, check_non_negative
from descentlab.config.identity import flatten, group_hash, params_hash, params_name, run_params
from descentlab.tracking.settings import SqliteSettings, TrackingSettings


@dataclass(frozen=True)
class OptimizerSettings:
    name: str
    hyperparams: dict[str, float]  # the keyword arguments of its class (`make_optimizer(name, **hyperparams)`)


@dataclass(frozen=True)
class ModelSettings:
    name: str
    hidden_sizes: tuple[int, ...]
    activation: str
    weight_init: str | float
    batch_norm: bool
    dropout: float
    weight_decay: float
    dtype: str


@dataclass(frozen=True)
class DatasetSettings:
    name: str
    path: str | None
    download: bool
    train_subset: int | None = None
    validation: float = 0.0
    validation_seed: int = 0


@dataclass(frozen=True)
class TrainingSettings:
    iterations: int
    batch_size: int
    eval_every: int
    sampling: str
    eval_train_subset: int | None
    eval_test_subset: int | None
    blas_threads: int | None
    progress: bool


@dataclass(frozen=True)
class ClassifySettings:
    name: str = "classify"


@dataclass(frozen=True)
class ActivationsSettings:
    n_inputs: int
    bins: int
    name: str = "activations"


@dataclass(frozen=True)
class Function2dSettings:
    objective: str
    start: tuple[float, float]
    steps: int
    name: str = "function2d"


@dataclass(frozen=True)
class NumericsSettings:
    backend: str  # auto | numpy | numba


@dataclass(frozen=True)
class PathsSettings:
    root: str  # the checkout (folder of train.py)
    cache_dir: str  # downloads, the store's schema template


@dataclass(frozen=True)
class JobSettings:
    """Everything one job reads, typed."""

    optimizer: OptimizerSettings
    model: ModelSettings
    dataset: DatasetSettings
    training: TrainingSettings
    task: ClassifySettings | Function2dSettings | ActivationsSettings
    tracking: TrackingSettings
    numerics: NumericsSettings
    paths: PathsSettings
    seed: int
    force: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> JobSettings:
        """The typed settings of a composed (and validated) config; interpolations are resolved here, once."""
        return cls.from_tree(resolved(cfg))

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> JobSettings:
        """The typed settings of a resolved config (`resolved`)."""
        t = tree["task"]
        task: ClassifySettings | Function2dSettings | ActivationsSettings = ClassifySettings()
        if t["name"] == "function2d":
            task = Function2dSettings(objective=t["objective"], start=tuple(t["start"]), steps=t["steps"])
        elif t["name"] == "activations":
            task = ActivationsSettings(n_inputs=t["n_inputs"], bins=t["bins"])
        m = tree["model"]
        paths = PathsSettings(**tree["paths"])
        return cls(
            optimizer=OptimizerSettings(tree["optimizer"]["name"],
                                        {k: v for k, v in tree["optimizer"].items() if k != "name"}),
            model=ModelSettings(**{**m, "hidden_sizes": tuple(m["hidden_sizes"])}),
            dataset=DatasetSettings(**tree["dataset"]),
            training=TrainingSettings(**tree["training"]),
            task=task,
            tracking=tracking_settings(tree["tracking"], paths.cache_dir),
            numerics=NumericsSettings(**tree["numerics"]),
            paths=paths,
            seed=tree["seed"],
            force=tree["force"],
        )


def tracking_settings(tracking: dict[str, Any] | DictConfig, cache_dir: str | None = None) -> TrackingSettings:
    """TrackingSettings from the `tracking` group; the schema template is kept in `cache_dir`."""
    tree = OmegaConf.to_container(tracking, resolve=True) if isinstance(tracking, DictConfig) else dict(tracking)
    assert isinstance(tree, dict)
    sqlite = SqliteSettings(**tree.pop("sqlite"), template_dir=cache_dir)
    return TrackingSettings(**tree, sqlite=sqlite)


@dataclass(frozen=True)
class JobIdentity:
    """What names a job's run: its flat params (logged), `config_hash` (skip-finished, grouping) and run name;
    `group_hash`: the config hash without the seed (the run's `config_group` tag: its repeats)."""

    name: str
    config_hash: str
    params: dict[str, Any]
    group_hash: str = ""

    @classmethod
    def from_config(cls, cfg: DictConfig) -> JobIdentity:
        return cls.from_tree(resolved(cfg))

    @classmethod
    def from_tree(cls, tree: dict[str, Any]) -> JobIdentity:
        """The identity of a resolved config (`resolved`)."""
        params = run_params(tree)
        return cls(name=params_name(flatten(tree)), config_hash=params_hash(params), params=params,
                   group_hash=group_hash(params))


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data, every interpolation resolved (the `paths.*` resolvers run here)."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(tree, dict)
    return tree  # type: ignore[return-value]


def job_settings(cfg: DictConfig) -> tuple[JobSettings, JobIdentity]:
    """A job's typed settings and identity from its composed, validated config, resolved once for both."""
    tree = resolved(cfg)
    return JobSettings.from_tree(tree), JobIdentity.from_tree(tree)


def check_store(tracking: TrackingSettings | DictConfig) -> None:
    """The tracking URI is well formed and a local store's folder is writable with room to spare.

    The job's set-up, not validation (it touches the disk): it runs right after `validate`, before any MLflow
    import or run, so a bad URI, a read-only folder or a full disk is one line, not a traceback or a run that
    cannot be closed. Store problems raise TrackingUnavailableError, a malformed URI ConfigError.
    """
    from descentlab.tracking.store import check_store_writable

    settings = tracking if isinstance(tracking, TrackingSettings) else tracking_settings(tracking)
    check_non_negative("tracking.min_free_mb", settings.min_free_mb)
    source = "tracking.uri" if settings.uri else "MLFLOW_TRACKING_URI"
    try:
        uri = settings.resolved_uri()  # resolved once: the job's session opens the same URI
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    check_store_writable(uri, settings.min_free_mb)
