"""Safety: no pickle on load, verified downloads, `_target_` limited to descentlab, servers on 127.0.0.1 only."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose_config
from descentlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from descentlab.config import ConfigError, check_targets, register_schemas
from descentlab.data.download import ChecksumMismatchError, fetch_verified
from descentlab.nn import MLP
from descentlab.optim import make_optimizer
from descentlab.rng import RandomStreams

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
register_schemas()


# ---------------------------------------------------------------- no pickle


def _python_files() -> list[Path]:
    return [*(REPO / "src").rglob("*.py"), *(REPO / "scripts").rglob("*.py"), REPO / "train.py"]


def test_every_np_load_in_the_code_refuses_pickles() -> None:
    """Every `np.load(...)` call in src/, scripts/ and train.py passes allow_pickle=False explicitly."""
    calls = 0
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("np.load", "numpy.load"):
                calls += 1
                flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert flags.get("allow_pickle") == "False", f"{path}:{node.lineno}: {ast.unparse(node)}"
    assert calls >= 1  # the checkpoint loader at least: the scan sees the code
    text = "\n".join(p.read_text() for p in _python_files())
    assert not re.search(r"^\s*(import pickle|from pickle|import cloudpickle|import joblib)", text, re.M)


def _model_and_optimizer() -> tuple[MLP, object]:
    streams = RandomStreams.from_seed(0)
    return MLP(16, [8], 3, dropout=0.1, rng=streams.init, dropout_rng=streams.dropout), make_optimizer("adam")


def test_checkpoint_round_trip_holds_no_object_arrays(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer()
    path = save_checkpoint(tmp_path / "c.npz", model, opt, 3)
    with np.load(path, allow_pickle=False) as npz:  # would raise on any pickled member
        assert all(npz[k].dtype != object for k in npz.files)
    other, opt2 = _model_and_optimizer()
    other.params[...] = 0
    assert load_checkpoint(path, other, opt2) == 3
    assert np.array_equal(other.params, model.params)


def test_a_pickled_object_array_in_a_checkpoint_is_rejected(tmp_path: Path) -> None:
    model, opt = _model_and_optimizer()
    good = save_checkpoint(tmp_path / "good.npz", model, opt, 3)
    with np.load(good, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    marker = tmp_path / "pwned"
    # An object array is stored as a pickle: loading it with pickles allowed would call os.system.
    arrays["model/W1"] = np.array([_Exploit(str(marker))], dtype=object)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match="pickled data is never loaded"):
        load_checkpoint(tmp_path / "bad.npz", *_model_and_optimizer())
    assert not marker.exists()


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return os.system, (f"touch {self.marker}",)


# ---------------------------------------------------------------- verified downloads


def test_download_with_a_wrong_sha256_is_rejected_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "upstream.bin"
    source.write_bytes(b"the real bytes" * 1000)
    cache = tmp_path / "cache"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumMismatchError, match=f"expected {wrong}"):
        fetch_verified(source.as_uri(), cache / "file.bin", wrong, progress=False)
    assert list(cache.iterdir()) == []  # neither the file nor its temporary part
    right = hashlib.sha256(source.read_bytes()).hexdigest()
    assert fetch_verified(source.as_uri(), cache / "file.bin", right, progress=False).read_bytes() == \
        source.read_bytes()
    assert [p.name for p in cache.iterdir()] == ["file.bin"]


# ---------------------------------------------------------------- _target_ only for descentlab


def _compose(*overrides: str):
    return compose_config(*overrides, hydra=True)


@pytest.mark.parametrize("overrides", [(), ("hydra/launcher=parallel",), ("experiment=fig6_9",),
                                       ("experiment=hparam_search", "hydra/sweeper=descentlab_optuna"),
                                       ("experiment=fair_compare",), ("experiment=batch_norm",)])
def test_the_projects_own_configs_pass_the_target_check(overrides: tuple[str, ...]) -> None:
    cfg = _compose(*overrides)
    assert OmegaConf.select(cfg, "hydra.callbacks.mlflow_sweep._target_").startswith("descentlab.")
    check_targets(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+_target_=os.system", "_target_ is not allowed"),
        ("+model._target_=os.system", "model._target_ is not allowed"),  # `+` adds keys past the schema
        ("+hydra.callbacks.evil._target_=builtins.eval", "must name a class in descentlab"),
        ("+hydra.callbacks.evil._target_=descentlab_evil.x", "must name a class in descentlab"),
        ("hydra.callbacks.mlflow_sweep._target_=subprocess.Popen", "got 'subprocess.Popen'"),
    ],
)
def test_foreign_targets_are_rejected(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_targets(_compose(override))
    assert message in str(info.value)


def test_restrict_targets_guards_hydras_callback_instantiation(tmp_path: Path) -> None:
    from hydra._internal.callbacks import Callbacks

    from descentlab.config import restrict_targets

    restrict_targets()
    restrict_targets()  # idempotent: wrapped once
    marker = tmp_path / "ran"
    cfg = _compose("+hydra.callbacks.evil._target_=pathlib.Path.touch", f"+hydra.callbacks.evil._args_=[{marker}]")
    with pytest.raises(ConfigError, match=r"pathlib\.Path\.touch"):
        Callbacks(cfg)
    assert not marker.exists()
    assert len(Callbacks(_compose()).callbacks) == 1  # our own SweepCallback still loads


# ---------------------------------------------------------------- servers bind 127.0.0.1


def _documented_server_commands() -> list[tuple[Path, str]]:
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *CONF.rglob("*.yaml"), *(REPO / "scripts").rglob("*")]
    found = []
    for path in files:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if re.search(r"\bmlflow (ui|server)\b", line):
                    found.append((path, line))
    return found


def test_every_documented_ui_or_server_command_binds_localhost() -> None:
    commands = _documented_server_commands()
    assert len(commands) >= 3
    for path, line in commands:
        for command in re.findall(r"mlflow (?:ui|server)\b[^`|]*", line):
            assert "--host 127.0.0.1" in command, f"{path.relative_to(REPO)}: {command}"
            assert "0.0.0.0" not in command


def test_readme_server_commands_use_only_options_and_variables_mlflow_has() -> None:
    """The safe-sharing section's commands must run: every flag is one of `mlflow ui`/`mlflow server`'s own options,
    every MLFLOW_* variable one MLflow reads, the basic-auth app name one MLflow registers, and each server binds
    to 127.0.0.1."""
    import re
    from importlib.metadata import entry_points

    import click
    import mlflow.environment_variables as mlflow_env
    from mlflow.cli import cli

    readme = (REPO / "README.md").read_text()
    section = readme.split("### Sharing a tracking server safely", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in section.splitlines() if line.startswith(("mlflow server ", "mlflow ui "))]
    assert len(commands) >= 3
    options = {name: {o for p in cli.get_command(click.Context(cli), name).params for o in p.opts}
               for name in ("server", "ui")}
    for line in commands:
        words = line.split()
        unknown = [w for w in words[2:] if w.startswith("--") and w not in options[words[1]]]
        assert not unknown, f"{line}: {unknown}"
        assert words[words.index("--host") + 1] == "127.0.0.1", line
    variables = set(re.findall(r"\bMLFLOW_[A-Z_]+", section)) - {"MLFLOW_TRACKING_URI", "MLFLOW_AUTH_CONFIG_PATH"}
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= variables
    assert all(hasattr(mlflow_env, name) for name in variables), sorted(v for v in variables
                                                                       if not hasattr(mlflow_env, v))
    apps = {ep.name for ep in entry_points(group="mlflow.app")}
    assert "basic-auth" in apps and "--app-name basic-auth" in section
