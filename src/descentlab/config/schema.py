"""The structured configs: every key a job reads, with its type and default, registered in Hydra's ConfigStore.

A misspelled key or a wrong type fails when the config is composed; `config.validate` then checks values.
Optimizer schemas are generated from `descentlab.optim`, so their defaults have one source of truth. The
runtime knobs (tracking's heartbeat, staleness, retries and SQLite settings, the folders, the numerics
backend) are keys here too, so they are validated, saved in each run's `config.yaml` and overridable on the
command line like the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from typing import Any

from omegaconf import MISSING, OmegaConf

from descentlab.backend import BACKENDS
from descentlab.config.paths import default_cache_dir, default_root
from descentlab.optim import OPTIMIZERS
from descentlab.tracking.settings import SWEEP_PARENT_MODES, SYNCHRONOUS_MODES, WEIGHTS_MODES

TASKS = ("classify", "function2d", "activations")
DTYPES = ("float32", "float64")
NUMERICS_BACKENDS = BACKENDS  # auto | numpy | numba: descentlab.backend.select takes these
SQLITE_SYNCHRONOUS = SYNCHRONOUS_MODES  # tracking.settings says which modes its store set-up knows
SWEEP_PARENT = SWEEP_PARENT_MODES
WEIGHTS = WEIGHTS_MODES
ROOT_RESOLVER = "descentlab.root"
CACHE_DIR_RESOLVER = "descentlab.cache_dir"
MUL_RESOLVER = "descentlab.mul"


@dataclass
class ModelConf:
    name: str = MISSING
    hidden_sizes: list[int] = MISSING
    activation: str = "relu"
    weight_init: Any = "he"  # "he", "xavier" or a float std (a Union the schema cannot express)
    batch_norm: bool = False
    dropout: float = 0.0
    weight_decay: float = 0.0
    dtype: str = "float32"


@dataclass
class DatasetConf:
    name: str = MISSING
    path: str | None = None
    download: bool = True
    # The book's smaller studies train on "the first N training images" (300, 500, 1,000): null keeps them all.
    train_subset: int | None = None
    # A validation set held out of the (subset) training set, stratified per class, for choices (learning rates,
    # searches) that must never look at the test set; 0: none. Its own seed keeps the split fixed across runs.
    validation: float = 0.0
    validation_seed: int = 0


@dataclass
class ClassifyTaskConf:
    name: str = "classify"
    # A lookup table a preset may interpolate into optimizer.lr, with a factor:
    #   optimizer.lr: ${descentlab.mul:${task.lr_by_optimizer.${optimizer.name}},${task.lr_factor}}
    # so one cartesian sweep gives each optimizer its own learning rates. Recorded (and hashed) only when set: at
    # {} and 1.0 they are left out of a run's params (identity.NEUTRAL_VALUES), so older runs keep their hashes.
    lr_by_optimizer: dict[str, float] = field(default_factory=dict)
    lr_factor: float = 1.0


@dataclass
class ActivationsTaskConf:
    """The book's activation histograms: random inputs through a stack of layers at their initial weights."""

    name: str = "activations"
    n_inputs: int = 1000  # rows of N(0, 1) inputs, as wide as the first hidden layer
    bins: int = 30


@dataclass
class Function2dTaskConf:
    name: str = "function2d"
    objective: str = "book"
    start: list[float] = field(default_factory=lambda: [-7.0, 2.0])
    steps: int = 30
    # Per-optimizer learning rates a preset may interpolate into optimizer.lr (Figure 6-8 uses four).
    lr_by_optimizer: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainingConf:
    iterations: int = 2000
    batch_size: int = 128
    eval_every: int = 100
    sampling: str = "replacement"
    eval_train_subset: int | None = 1_000
    eval_test_subset: int | None = 1_000
    blas_threads: int | None = 1  # 1: fastest on these small matrices, same bits under every launcher
    progress: bool = True


@dataclass
class SqliteConf:
    """How a local SQLite store is set up (`tracking.store`)."""

    wal: bool = True  # WAL journal: readers never block writers; false on network file systems (no shared memory)
    synchronous: str = "normal"  # normal: a WAL commit skips its fsync (a power cut may lose the last ones) | full
    schema_template: bool = True  # copy a cached empty-schema store instead of MLflow's ~1.2 s of migrations


@dataclass
class TrackingConf:
    enabled: bool = True  # false (tracking=none): train without recording anything
    uri: str | None = None
    experiment: str = "optimizer-comparison"
    store_dir: str = "${paths.root}/mlruns"
    flush_every: int = 10_000  # metric points buffered per write ...
    flush_seconds: float = 10.0  # ... or seconds the oldest waits: a 2,000-step run writes once, at its end
    store_every: int = 1
    # Free space the store's folder must have before a run starts: a full disk found mid-run can leave a
    # run that cannot even be marked FAILED. 0 turns the check off.
    min_free_mb: float = 50.0
    heartbeat_s: float = 30.0  # a running job's liveness stamp is refreshed this often
    stale_after_s: float = 300.0  # a RUNNING run whose stamp is older (and whose process is unseen) is repaired
    retry_s: float = 120.0  # how long a store call is retried while the server is away; 0: one attempt
    # Who creates a sweep's parent run: auto (the launching process for a server or database, whose jobs may run
    # on nodes that do not share the sweep folder; the first job for a SQLite file) | launcher | first_job
    sweep_parent: str = "auto"
    # Which runs keep their trained weights (weights.npz, ~80% of a classification run's artifacts): all | best
    # (only a run whose final metric beats every FINISHED sibling so far: its sweep's, else its seeds') | none
    weights: str = "all"
    sqlite: SqliteConf = field(default_factory=SqliteConf)


@dataclass
class PathsConf:
    root: str = f"${{{ROOT_RESOLVER}:}}"  # the checkout: the folder of train.py (the default store lives there)
    cache_dir: str = f"${{{CACHE_DIR_RESOLVER}:}}"  # downloads and the store's schema template


@dataclass
class NumericsConf:
    backend: str = "auto"  # auto (numba when importable) | numpy | numba: the same bits, numba is faster


@dataclass
class Config:
    optimizer: Any = MISSING
    model: ModelConf = MISSING
    dataset: DatasetConf = MISSING
    task: Any = MISSING
    training: TrainingConf = field(default_factory=TrainingConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    paths: PathsConf = field(default_factory=PathsConf)
    numerics: NumericsConf = field(default_factory=NumericsConf)
    seed: int = 0
    force: bool = False


def optimizer_schema(name: str) -> type:
    """A dataclass with `name` and every hyperparameter of optimizer `name`, defaults from its class."""
    defaults = OPTIMIZERS[name]().hyperparams
    fields: list[tuple[str, type, Any]] = [("name", str, field(default=name))]
    fields += [(key, float, field(default=value)) for key, value in defaults.items()]
    return make_dataclass(f"{OPTIMIZERS[name].__name__}Conf", fields)


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore, where the YAML files extend them (`/schema_model_mlp@_here_`).

    They are stored outside any config group, so `--help` and Hydra's "available options" list only the groups a
    user picks from. The resolvers (`mlp_name`, the default folders) are registered at import of this module.
    """
    from hydra.core.config_store import ConfigStore

    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(name="schema_model_mlp", node=ModelConf)
    cs.store(name="schema_dataset_dataset", node=DatasetConf)
    cs.store(name="schema_task_classify", node=ClassifyTaskConf)
    cs.store(name="schema_task_function2d", node=Function2dTaskConf)
    cs.store(name="schema_task_activations", node=ActivationsTaskConf)
    for name in OPTIMIZERS:
        cs.store(name=f"schema_optimizer_{name}", node=optimizer_schema(name))


def register_resolvers() -> None:
    """`mlp_name` (model presets name themselves with it), `descentlab.mul` (a product, for per-optimizer learning-rate
    grids) and the default folders `paths.root`, `paths.cache_dir`.

    Registered when this module is imported, so any process that resolves a job's config (the launcher, a
    joblib worker, a submitit job: each imports descentlab.config before it reads the config) has them.
    """
    OmegaConf.register_new_resolver("mlp_name", lambda sizes: mlp_name(list(sizes)), replace=True)
    OmegaConf.register_new_resolver(MUL_RESOLVER, _mul, replace=True)
    OmegaConf.register_new_resolver(ROOT_RESOLVER, _root_resolver, replace=True)
    OmegaConf.register_new_resolver(CACHE_DIR_RESOLVER, lambda: str(default_cache_dir()), replace=True)


def _mul(a: Any, b: Any) -> float:
    """`${descentlab.mul:A,B}`: A*B as a float; a clear error for anything but two numbers."""
    for value in (a, b):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"descentlab.mul takes two numbers, got {a!r} and {b!r}")
    return float(a) * float(b)


def _root_resolver(*, _root_: Any) -> str:
    """The checkout: the folder above the primary config folder (`conf/` next to train.py)."""
    sources = OmegaConf.select(_root_, "hydra.runtime.config_sources", default=None) if "hydra" in _root_ else None
    return str(default_root(None if sources is None else OmegaConf.to_container(sources, resolve=False)))


def mlp_name(hidden_sizes: list[int]) -> str:
    """The name of an MLP from its hidden sizes: `mlp_5x100` (5 affine layers, all hidden of width 100),
    `mlp_3x200-100` (widths differ), `linear` (no hidden layer). Presets use it, so names never lie."""
    if not hidden_sizes:
        return "linear"
    widths = [str(w) for w in hidden_sizes]
    width = widths[0] if len(set(widths)) == 1 else "-".join(widths)
    return f"mlp_{len(widths) + 1}x{width}"



def optimizer_hyperparams(opt: Any) -> dict[str, float]:
    """The optimizer group without its `name`: the keyword arguments of its class."""
    return {k: v for k, v in OmegaConf.to_container(opt, resolve=True).items() if k != "name"}


register_resolvers()
