"""Every config composes and validates; value checks name the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from descentlab.config import ConfigError, config_hash, register_schemas, run_name, run_params, validate

CONF = Path(__file__).resolve().parent.parent / "conf"
register_schemas()


def make(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


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
    ],
)
def test_bad_values_fail_with_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(make(*override.split()))
    text = str(info.value)
    assert message in text and "\n" not in text
