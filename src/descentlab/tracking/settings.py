"""Every knob of tracking as a typed, frozen object, built once from the config at the entry (no env vars).

Why: the tracking code used to read `DESCENTLAB_*` variables at the point of use (heartbeat, staleness, retry
window, SQLite journal/sync, schema template), unvalidated and invisible in a run's `config.yaml`. Now the entry
builds a `TrackingSettings` from the `tracking` config group and passes it (or the one value a function needs)
down. No mlflow import here: the launching process of a sweep builds these without paying for mlflow.
`MLFLOW_TRACKING_URI` stays: it is the ecosystem's variable (read once, by `resolved_uri`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SWEEP_PARENT_MODES", "SYNCHRONOUS_MODES", "WEIGHTS_MODES", "SqliteSettings", "TrackingSettings"]

SYNCHRONOUS_MODES = ("normal", "full")
# Who creates a sweep's parent run: `launcher` (the launching process, before any job: jobs on other nodes find it
# in the store), `first_job` (the first job that records a run: no mlflow import in the launching process), or
# `auto`: the launcher for a database or server store, the first job for a SQLite file (the jobs share its disk).
SWEEP_PARENT_MODES = ("auto", "launcher", "first_job")
# Which runs store their trained weights (`weights.npz`, ~450 KB of a 2,000-step mlp_5x100 run's ~554 KB of
# artifacts): `all`, `best` (only a run whose final metric is the best so far among its FINISHED siblings:
# `tracking.best`), or `none`. How a run is stored, not what it computes: not part of the config hash.
WEIGHTS_MODES = ("all", "best", "none")
_FILE_SCHEMES = ("sqlite", "file")


@dataclass(frozen=True)
class SqliteSettings:
    """How a local SQLite store is set up; ignored for other stores."""

    wal: bool = True  # WAL journal: readers never block writers (off on network file systems)
    synchronous: str = "normal"  # "normal" | "full": fsync at checkpoints only (WAL) or at every commit
    schema_template: bool = True  # create a new store by copying a cached empty-schema file
    template_dir: str | None = None  # folder of that cached file; None: no template (MLflow's migrations run)

    @property
    def relaxed_sync(self) -> bool:
        """Whether commits skip their fsync (`PRAGMA synchronous=NORMAL`): only meaningful, and only done, in WAL."""
        return self.wal and self.synchronous == "normal"

    @property
    def template_folder(self) -> str | None:
        """The folder to keep the schema template in, or None when no template is to be used."""
        return self.template_dir if self.schema_template else None


@dataclass(frozen=True)
class TrackingSettings:
    """The `tracking` config group, typed (validated by `descentlab.config.checks`); `resolved_uri()` is the URI
    to open."""

    enabled: bool = True
    uri: str | None = None  # as configured (None: MLFLOW_TRACKING_URI, else sqlite under store_dir)
    experiment: str = "optimizer-comparison"
    store_dir: str = "mlruns"
    flush_every: int = 10_000  # pending points that trigger a write
    flush_seconds: float = 10.0  # the longest a point waits before it is written (checked when points arrive)
    store_every: int = 1  # send only steps divisible by this (and each key's last point); metrics.csv keeps all
    min_free_mb: float = 50.0  # a local store's folder must have this much room
    heartbeat_s: float = 30.0  # seconds between a run's heartbeat tags
    stale_after_s: float = 300.0  # a run without a heartbeat for this long is dead (tracking.repair)
    retry_s: float = 120.0  # how long a tracking call rides out a store that is away (0 = one attempt)
    sweep_parent: str = "auto"  # SWEEP_PARENT_MODES
    weights: str = "all"  # WEIGHTS_MODES
    sqlite: SqliteSettings = SqliteSettings()

    def parent_by_launcher(self) -> bool:
        """Whether the launching process creates the sweep's parent run (see SWEEP_PARENT_MODES)."""
        if self.sweep_parent != "auto":
            return self.sweep_parent == "launcher"
        from urllib.parse import urlsplit

        return urlsplit(self.resolved_uri()).scheme.lower() not in _FILE_SCHEMES

    def resolved_uri(self) -> str:
        """The tracking URI, resolved once: explicit `uri` > $MLFLOW_TRACKING_URI > sqlite:///<store_dir>/mlflow.db.

        Relative SQLite paths become absolute against the current directory (every job of a sweep then writes
        to the same file), so the first call fixes the answer for this object. ValueError for a malformed URI.
        """
        resolved = self.__dict__.get("_resolved_uri")  # not a field: asdict, repr and == ignore it
        if resolved is None:
            from descentlab.tracking.store import resolve_tracking_uri  # mlflow-free string helpers

            resolved = resolve_tracking_uri(self.uri, self.store_dir)
            object.__setattr__(self, "_resolved_uri", resolved)
        return resolved
