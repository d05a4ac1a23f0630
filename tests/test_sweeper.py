"""The default sweeper (`hydra/sweeper=descentlab`): the configs and errors of Hydra's check, composed less often."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from descentlab import compat
from hydra_plugins.descentlab_sweeper.sweeper import (
    DescentlabSweeper,
    FastComposer,
    group_paths,
    is_value_override,
)

REPO = Path(__file__).resolve().parent.parent

JOBS = [
    ["optimizer=adam", "optimizer.lr=0.01", "seed=3"],
    ["optimizer=adam", "seed=4"],
    ["optimizer=sgd", "model=mlp_2x50", "training.iterations=7"],
    ["optimizer=momentum", "optimizer.momentum=0.5", "tracking.store_every=10"],
    ["experiment=fig6_9", "seed=2"],
    ["dataset=digits", "training.sampling=epoch", "force=true"],
]


@pytest.fixture(scope="module")
def hydra_loader() -> Iterator[tuple[Any, Any]]:
    """Hydra's config loader and a master config for conf/, as a sweep's launching process has them."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from descentlab.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield GlobalHydra.instance().config_loader(), compose("config", return_hydra_config=True)


def _without_hydra(config: Any) -> dict[str, Any]:
    content = OmegaConf.to_container(config, resolve=False)
    assert isinstance(content, dict)
    content.pop("hydra")
    return content


def test_group_paths_are_the_config_groups(hydra_loader) -> None:
    loader, _ = hydra_loader
    groups = group_paths(loader)
    assert {"optimizer", "model", "dataset", "task", "tracking", "experiment", "hydra/launcher",
            "hydra/sweeper"} <= groups
    assert "seed" not in groups and "optimizer.lr" not in groups


@pytest.mark.parametrize(("line", "value"), [
    ("seed=3", True), ("optimizer.lr=0.1", True), ("+training.extra=1", True), ("++seed=2", True),
    ("optimizer=adam", False), ("hydra/launcher=joblib", False), ("hydra.launcher.n_jobs=2", False),
    ("~tracking.uri", False), ("optimizer@foo=adam", False), ("experiment=fig6_9", False),
])
def test_value_overrides_are_told_from_group_overrides(hydra_loader, line: str, value: bool) -> None:
    loader, _ = hydra_loader
    (override,) = OverridesParser.create().parse_overrides([line])
    assert is_value_override(override, group_paths(loader)) is value


def test_every_job_composes_to_hydras_config(hydra_loader) -> None:
    """Job by job, the check's config equals Hydra's full composition (all but the hydra node)."""
    loader, master = hydra_loader
    composer = FastComposer(loader, master)
    for job in JOBS:
        assert _without_hydra(composer.compose(job)) == _without_hydra(loader.load_sweep_config(master, job)), job
    assert len(composer.composed) == 5  # adam twice: composed once


@pytest.mark.parametrize("bad", ["seed=abc", "optimizer.nope=1", "training.iterations=[1,2]", "+seed=1"])
def test_a_bad_job_fails_with_hydras_own_message(hydra_loader, bad: str) -> None:
    loader, master = hydra_loader
    with pytest.raises(ConfigCompositionException) as hydra_error:
        loader.load_sweep_config(master, ["optimizer=adam", bad])
    composer = FastComposer(loader, master)
    composer.compose(["optimizer=adam", "seed=1"])
    with pytest.raises(ConfigCompositionException) as ours:
        composer.compose(["optimizer=adam", bad])
    assert str(ours.value) == str(hydra_error.value)


def test_the_default_sweeper_is_descentlabs(hydra_loader) -> None:
    _, master = hydra_loader
    assert master.hydra.sweeper._target_ == f"{DescentlabSweeper.__module__}.DescentlabSweeper"


def test_compat_hydra_sweeper_and_override_application() -> None:
    """Fails when Hydra moves its BasicSweeper or its post-composition override code."""
    basic = compat.hydra_basic_sweeper()
    assert basic.__name__ == "BasicSweeper" and callable(basic.validate_batch_is_legal)
    config = OmegaConf.structured({"a": 1, "b": {"c": "x"}})
    OmegaConf.set_struct(config, True)
    compat.hydra_apply_value_overrides(OverridesParser.create().parse_overrides(["a=2", "b.c=y", "+b.d=3"]), config)
    assert OmegaConf.to_container(config) == {"a": 2, "b": {"c": "y", "d": 3}}
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'b\.e'"):
        compat.hydra_apply_value_overrides(OverridesParser.create().parse_overrides(["b.e=1"]), config)


def test_a_bad_value_stops_the_sweep_before_any_job(store) -> None:
    """Through train.py: the same one-line error and exit code as Hydra's basic sweeper, and no job ran."""
    results = {}
    for sweeper in ("descentlab", "basic"):
        result = store.train_in_process("-m", "seed=1,abc", "tracking=none", "dataset=digits", "training.iterations=5",
                                        f"hydra/sweeper={sweeper}")
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        results[sweeper] = (result.returncode, errors)
        assert not list((store.root / "multirun" / str(store.calls)).glob("0/.hydra")), sweeper  # job 0 never ran
    assert results["descentlab"] == results["basic"]
    code, errors = results["descentlab"]
    assert code != 0 and errors == ["error: Error merging override seed=abc: Value 'abc' of type 'str' could not "
                                    "be converted to Integer"]
