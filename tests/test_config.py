"""Every config composes and validates; value checks name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from conftest import compose_config
from descentlab.config import (
    ConfigError,
    check_known_keys,
    config_hash,
    mlp_name,
    register_schemas,
    run_name,
    run_params,
    validate,
)

CONF = Path(__file__).resolve().parent.parent / "conf"
register_schemas()


def make(*overrides: str) -> DictConfig:
    return compose_config(*overrides)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("optimizer", options("optimizer"))
@pytest.mark.parametrize("model", options("model"))
def test_every_optimizer_and_model_composes_and_validates(optimizer: str, model: str) -> None:
    cfg = make(f"optimizer={optimizer}", f"model={model}")
    validate(cfg)
    assert cfg.optimizer.name == optimizer and cfg.model.name == model
    assert run_name(cfg) == f"{optimizer}-{model}-mnist_5k-s0"


@pytest.mark.parametrize("dataset", options("dataset"))
def test_every_dataset_and_tracking_preset_composes(dataset: str) -> None:
    for tracking in options("tracking"):
        cfg = make(f"dataset={dataset}", f"tracking={tracking}")
        validate(cfg)
        assert cfg.dataset.name == dataset


def test_book_defaults_reach_the_config() -> None:
    cfg = make()
    assert (cfg.optimizer.name, cfg.optimizer.lr) == ("sgd", 0.01)
    assert list(cfg.model.hidden_sizes) == [100, 100, 100, 100]
    assert (cfg.model.activation, cfg.model.weight_init) == ("relu", "he")
    assert (cfg.training.iterations, cfg.training.batch_size, cfg.training.eval_every) == (2000, 128, 100)
    assert cfg.tracking.experiment == "optimizer-comparison" and cfg.seed == 0
    adam = make("optimizer=adam").optimizer
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps) == (0.001, 0.9, 0.999, 1e-7)


@pytest.mark.parametrize(("optimizer", "lr"), [("sgd", 0.95), ("momentum", 0.1), ("adagrad", 1.5), ("adam", 0.3)])
def test_fig6_8_preset_sets_the_books_learning_rate_per_optimizer(optimizer: str, lr: float) -> None:
    cfg = make("experiment=fig6_8", f"optimizer={optimizer}")
    validate(cfg)
    assert cfg.task.name == "function2d" and cfg.optimizer.lr == lr
    assert list(cfg.task.start) == [-7.0, 2.0] and cfg.task.steps == 30
    assert cfg.tracking.experiment == "fig6_8"
    assert make("experiment=fig6_8", f"optimizer={optimizer}", "optimizer.lr=0.5").optimizer.lr == 0.5
    params = run_params(cfg)
    assert params["optimizer.lr"] == lr and not any(k.startswith("model.") for k in params)


def test_fig6_9_preset() -> None:
    cfg = make("experiment=fig6_9", "optimizer=adam")
    assert cfg.tracking.experiment == "fig6_9" and cfg.model.name == "mlp_5x100"
    assert (cfg.training.iterations, cfg.training.batch_size) == (2000, 128)


def test_params_are_the_flat_resolved_config() -> None:
    params = run_params(make("optimizer=momentum", "seed=3"))
    assert params["optimizer.name"] == "momentum" and params["optimizer.momentum"] == 0.9
    assert params["model.hidden_sizes"] == [100, 100, 100, 100]
    assert params["dataset.name"] == "mnist_5k" and params["seed"] == 3
    assert params["training.iterations"] == 2000


def test_config_hash_ignores_how_and_where_but_not_what() -> None:
    base = config_hash(make())
    assert config_hash(make()) == base
    for same in ("force=true", "tracking.uri=sqlite:////tmp/x.db", "training.blas_threads=1", "training.progress=false",
                 "tracking.experiment=other"):
        assert config_hash(make(same)) == base, same
    for different in ("seed=1", "optimizer.lr=0.02", "model=mlp_2x50", "training.iterations=10", "dataset=digits"):
        assert config_hash(make(different)) != base, different


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-1", "optimizer: SGD: lr must be a finite number > 0, got -1.0"),
        ("optimizer=momentum optimizer.momentum=1.0", "Momentum: momentum must be a number in [0, 1), got 1.0"),
        ("training.batch_size=0", "training.batch_size must be an integer >= 1, got 0"),
        ("training.iterations=0", "training.iterations must be an integer >= 1, got 0"),
        ("training.eval_every=0", "training.eval_every must be an integer >= 1, got 0"),
        ("model.hidden_sizes=[100,0]", "model.hidden_sizes[1] must be an integer >= 1, got 0"),
        ("model.activation=gelu", "model.activation must be one of relu, sigmoid, tanh, got 'gelu'"),
        ("model.weight_init=glorot", "model.weight_init must be a positive float, 'xavier' or 'he', got 'glorot'"),
        ("model.dropout=1.5", "model.dropout must be in [0, 1), got 1.5"),
        ("training.sampling=shuffle", "training.sampling must be one of replacement, epoch, got 'shuffle'"),
        ("task=function2d task.objective=himmelblau", "task.objective must be one of book, rosenbrock, beale"),
        ("seed=-1", "seed must be an integer >= 0, got -1"),
        ("tracking.flush_every=0", "tracking.flush_every must be an integer >= 1, got 0"),
        ("tracking.flush_seconds=-1", "tracking.flush_seconds must be a finite number >= 0, got -1.0"),
        ("tracking.flush_seconds=inf", "tracking.flush_seconds must be a finite number >= 0, got inf"),
        ("tracking.store_every=0", "tracking.store_every must be an integer >= 1, got 0"),
        ("tracking.min_free_mb=-1", "tracking.min_free_mb must be a finite number >= 0, got -1.0"),
        ("tracking.retry_s=inf", "tracking.retry_s must be a finite number >= 0, got inf"),
        ("tracking.stale_after_s=nan", "tracking.stale_after_s must be a finite number > 0, got nan"),
    ],
)
def test_bad_values_fail_with_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(make(*override.split()))
    text = str(info.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize(("sizes", "name"), [([100, 100, 100, 100], "mlp_5x100"), ([50], "mlp_2x50"),
                                             ([200, 100], "mlp_3x200-100"), ([], "linear")])
def test_a_model_is_named_by_its_hidden_sizes(sizes: list[int], name: str) -> None:
    assert mlp_name(sizes) == name
    cfg = make("model=mlp_5x100", f"model.hidden_sizes=[{','.join(map(str, sizes))}]", "optimizer=adam")
    validate(cfg)
    # The run, its model.name param and everything grouped by them say what actually ran.
    assert cfg.model.name == name and run_params(cfg)["model.name"] == name
    assert run_name(cfg) == f"adam-{name}-mnist_5k-s0"


def test_a_model_name_that_contradicts_its_sizes_is_rejected_and_a_label_of_ones_own_is_kept() -> None:
    with pytest.raises(ConfigError, match=r"model.name='mlp_5x100' names another architecture than "
                                          r"model.hidden_sizes=\[\] \('linear'\)"):
        validate(make("model.name=mlp_5x100", "model.hidden_sizes=[]"))
    cfg = make("model.name=wide", "model.hidden_sizes=[400]")
    validate(cfg)
    assert run_name(cfg) == "sgd-wide-mnist_5k-s0"


@pytest.mark.parametrize(("overrides", "message"), [
    (("+foo=1",), "unknown key 'foo' (added with + or ++): not in 'Config', whose keys are optimizer, model"),
    (("++model.extra=3",), "unknown key 'model.extra' (added with + or ++): not in 'ModelConf'"),
    (("optimizer=adam", "+optimizer.beta3=0.9"), "unknown key 'optimizer.beta3' (added with + or ++): not in "
                                                 "'AdamConf', whose keys are name, lr, beta1, beta2, eps"),
    (("+training.epochs=3",), "unknown key 'training.epochs'"),
    (("optimizer=adam", "optimizer.name=sgd"), "optimizer.name='sgd' does not match the optimizer settings in use "
                                               "('adam', with keys lr, beta1, beta2, eps); choose it with "
                                               "optimizer=sgd instead"),
    (("task.name=function2d",), "choose it with task=function2d instead"),
])
def test_keys_and_names_the_schema_does_not_know_are_rejected(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(make(*overrides))
    assert message in str(caught.value)


def test_free_keys_stay_free_and_hydras_own_config_is_not_checked() -> None:
    cfg = make("experiment=fig6_8", "+task.lr_by_optimizer.mine=0.5", "optimizer=sgd")
    validate(cfg)  # lr_by_optimizer is a dict of the user's names
    check_known_keys(make())


@pytest.mark.e2e
def test_help_lists_only_the_groups_a_user_chooses_from() -> None:
    import re
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(CONF.parent / "train.py"), "--help"], capture_output=True, text=True,
                         timeout=60, cwd=CONF.parent).stdout
    groups = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {line.split(":")[0] for line in groups.splitlines() if ": " in line}
    assert listed == {"dataset", "experiment", "model", "optimizer", "task", "tracking"}
    assert not re.search(r"schema_(model|dataset|task|optimizer)", out)  # the stored schemas stay hidden
    assert "hydra/launcher=...: basic (the default" in out


def test_a_presets_values_win_over_the_primary_config_and_the_command_line_over_both(tmp_path: Path) -> None:
    """`_self_` comes before `experiment` in conf/config.yaml: a preset that sets training.iterations gets it."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "probe.yaml").write_text(
        "# @package _global_\ntraining:\n  iterations: 903\n  batch_size: 100\nseed: 4\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path}]"
    cfg = make(searchpath, "experiment=probe")
    assert (cfg.training.iterations, cfg.training.batch_size, cfg.seed) == (903, 100, 4)
    assert cfg.training.eval_every == 100  # what the preset leaves alone keeps the primary config's value
    cfg = make(searchpath, "experiment=probe", "training.iterations=7")
    assert cfg.training.iterations == 7


@pytest.mark.parametrize(("overrides", "name"), [
    (("optimizer=adam",), "adam-mlp_5x100-mnist_5k-s0"),
    (("optimizer=sgd", "optimizer.lr=0.0316227766", "seed=2"), "sgd-mlp_5x100-mnist_5k-lr0.0316-s2"),
    (("model.weight_init=0.01",), "sgd-mlp_5x100-mnist_5k-w0.01-s0"),
    (("model.weight_init=xavier", "model.batch_norm=true"), "sgd-mlp_5x100-mnist_5k-xavier-bn-s0"),
    (("model.dropout=0.2", "model.weight_decay=0.1"), "sgd-mlp_5x100-mnist_5k-dropout0.2-wd0.1-s0"),
])
def test_a_run_name_marks_what_sets_it_apart_from_the_defaults(overrides: tuple[str, ...], name: str) -> None:
    """The jobs of an lr grid or a batch-norm sweep differ in the UI by name, not only by params."""
    assert run_name(make(*overrides)) == name
