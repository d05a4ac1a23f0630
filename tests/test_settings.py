"""Every runtime knob is a config key: its default, an override on the command line, a bad value refused in one
line naming key, value and what is allowed, its place in the typed settings and in the run's `config.yaml`; and
the config hash of today's configs does not move (skip-finished and analysis depend on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from descentlab import app
from descentlab.backend import select
from descentlab.config import ConfigError, JobIdentity, JobSettings, config_hash, register_schemas, validate
from descentlab.config.paths import default_cache_dir
from descentlab.tasks import make_task
from descentlab.tracking.null import NullTracker

CONF = Path(__file__).resolve().parent.parent / "conf"
CHECKOUT = CONF.parent
register_schemas()


def make(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# key, default, an override (command-line text), its typed value, a bad value, the one-line message it gets
KNOBS: list[tuple[str, Any, str, Any, str, str]] = [
    ("tracking.heartbeat_s", 30.0, "5", 5.0, "0", "tracking.heartbeat_s must be a finite number > 0, got 0.0"),
    ("tracking.stale_after_s", 300.0, "60", 60.0, "-1", "tracking.stale_after_s must be a finite number > 0, got -1.0"),
    ("tracking.retry_s", 120.0, "0", 0.0, "-5", "tracking.retry_s must be a finite number >= 0, got -5.0"),
    ("tracking.sqlite.synchronous", "normal", "full", "full", "off",
     "tracking.sqlite.synchronous must be one of normal, full, got 'off'"),
    ("tracking.weights", "all", "none", "none", "some", "tracking.weights must be one of all, best, none, got 'some'"),
    ("paths.root", str(CHECKOUT), "/tmp/elsewhere", "/tmp/elsewhere", "''",
     "paths.root must be a folder (a non-empty path), got ''"),
    ("paths.cache_dir", None, "/tmp/cache", "/tmp/cache", "''",
     "paths.cache_dir must be a folder (a non-empty path), got ''"),
    ("numerics.backend", "auto", "numpy", "numpy", "cuda",
     "numerics.backend must be one of auto, numpy, numba, got 'cuda'"),
]
FLAGS = ["tracking.sqlite.wal", "tracking.sqlite.schema_template"]  # booleans, true by default


def typed(settings: JobSettings, key: str) -> Any:
    """The value of dotted `key` in the typed settings."""
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("key", "default", "override", "value", "bad", "message"), KNOBS)
def test_a_knob_has_a_default_an_override_and_a_one_line_refusal(key: str, default: Any, override: str, value: Any,
                                                                 bad: str, message: str) -> None:
    cfg = make()
    validate(cfg)
    expected = str(default_cache_dir()) if default is None else default
    assert typed(JobSettings.from_config(cfg), key) == expected
    changed = make(f"{key}={override}")
    validate(changed)
    assert typed(JobSettings.from_config(changed), key) == value
    with pytest.raises(ConfigError) as info:
        validate(make(f"{key}={bad}"))
    assert str(info.value) == message


@pytest.mark.parametrize("key", FLAGS)
def test_a_flag_defaults_to_true_and_takes_only_booleans(key: str) -> None:
    assert typed(JobSettings.from_config(make()), key) is True
    assert typed(JobSettings.from_config(make(f"{key}=false")), key) is False
    with pytest.raises(Exception, match=key.rsplit(".", 1)[1]) as info:
        make(f"{key}=maybe")  # the schema's type refuses it while composing
    assert "maybe" in str(info.value)


def test_the_store_and_the_schema_template_follow_the_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DESCENTLAB_CACHE_DIR", str(tmp_path / "cache"))
    settings = JobSettings.from_config(make())
    assert settings.paths.cache_dir == str(tmp_path / "cache") == settings.tracking.sqlite.template_dir
    assert settings.tracking.store_dir == f"{CHECKOUT}/mlruns"
    moved = JobSettings.from_config(make(f"paths.root={tmp_path}", f"paths.cache_dir={tmp_path / 'c2'}"))
    assert moved.tracking.store_dir == f"{tmp_path}/mlruns"
    assert moved.tracking.sqlite.template_dir == str(tmp_path / "c2")
    for preset in ("local", "none", "server"):  # every preset shares the schema's knobs and the root's store
        tracking = JobSettings.from_config(make(f"tracking={preset}", f"paths.root={tmp_path}")).tracking
        assert (tracking.store_dir, tracking.heartbeat_s, tracking.retry_s) == (f"{tmp_path}/mlruns", 30.0, 120.0)


class RecordingTracker(NullTracker):
    """Keeps the texts a run logs (its `config.yaml`)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text


def test_every_knob_is_saved_in_the_runs_config_yaml(tmp_path: Path) -> None:
    overrides = ["task=function2d", "task.steps=3", "tracking.heartbeat_s=5", "tracking.stale_after_s=60",
                 "tracking.retry_s=0", "tracking.sqlite.wal=false", "tracking.sqlite.synchronous=full",
                 "tracking.sqlite.schema_template=false", f"paths.root={tmp_path}",
                 f"paths.cache_dir={tmp_path / 'cache'}", "numerics.backend=numpy"]
    cfg = make(*overrides)
    validate(cfg)
    settings = JobSettings.from_config(cfg)
    tracker = RecordingTracker()
    task = make_task(settings)
    assert task.backend is select("numpy")  # numerics.backend reaches the task's optimizer
    assert app.execute(cfg, settings, JobIdentity.from_config(cfg), task, tracker, None) == "FINISHED"
    saved = yaml.safe_load(tracker.texts["config.yaml"])
    assert saved["tracking"]["heartbeat_s"] == 5.0 and saved["tracking"]["stale_after_s"] == 60.0
    assert saved["tracking"]["retry_s"] == 0.0
    assert saved["tracking"]["sqlite"] == {"wal": False, "synchronous": "full", "schema_template": False}
    assert saved["paths"] == {"root": str(tmp_path), "cache_dir": str(tmp_path / "cache")}
    assert saved["numerics"] == {"backend": "numpy"}
    assert saved["tracking"]["store_dir"] == f"{tmp_path}/mlruns"  # resolved: the folder, not the interpolation


# config_hash of today's configs, computed with the code before the config package (git 02da701).
RECORDED_HASHES = [
    ((), "431b1e097857422a"),
    (("optimizer=adam", "seed=3"), "43b60c3883ed9e3e"),
    (("model=mlp_2x50", "dataset=digits", "training.iterations=10"), "197af096e47f40d0"),
    (("experiment=fig6_8", "optimizer=momentum"), "621409c54a5b9fe2"),
    (("optimizer=adamw", "model.dropout=0.2", "tracking=none"), "5b5df93b7b02ef1e"),
    (("experiment=fig6_9", "optimizer=rmsprop", "force=true", "training.progress=false"), "0c7a2e0c73556b4d"),
]


@pytest.mark.parametrize(("overrides", "expected"), RECORDED_HASHES)
def test_config_hashes_of_todays_configs_do_not_move(overrides: tuple[str, ...], expected: str) -> None:
    assert config_hash(make(*overrides)) == expected


def test_the_new_knobs_are_not_part_of_a_configs_identity(tmp_path: Path) -> None:
    base = config_hash(make())
    for knob in ("tracking.heartbeat_s=5", "tracking.retry_s=0", "tracking.sqlite.wal=false",
                 f"paths.root={tmp_path}", f"paths.cache_dir={tmp_path}", "numerics.backend=numpy"):
        assert config_hash(make(knob)) == base, knob
    assert config_hash(make("optimizer.lr=0.02")) != base


def test_the_root_is_the_folder_above_the_primary_config_folder(tmp_path: Path) -> None:
    from descentlab.config.paths import default_root

    sources = [{"path": "hydra.conf", "schema": "pkg", "provider": "hydra"},
               {"path": str(tmp_path / "conf"), "schema": "file", "provider": "main"},
               {"path": "", "schema": "structured", "provider": "schema"}]
    assert default_root(sources) == tmp_path  # what every job of a launcher reads from hydra.runtime
    assert default_root([]) == CHECKOUT  # no Hydra job (compose, analysis): the checkout holding the package
