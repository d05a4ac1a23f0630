"""tracking.tags (git state, versions, host) and the cheap import of descentlab.tracking."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from descentlab.tracking.tags import environment_tags, git_state

KEYS = {"git.commit", "git.dirty", "version.python", "version.numpy", "version.mlflow", "version.hydra",
        "version.descentlab", "host"}
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def test_keys_and_versions_outside_a_repo(tmp_path: Path) -> None:
    tags = environment_tags(tmp_path)
    assert set(tags) == KEYS and all(isinstance(v, str) and v for v in tags.values())
    assert tags["git.commit"] == "unknown" and tags["git.dirty"] == "unknown"
    assert tags["version.mlflow"] == metadata.version("mlflow")
    assert tags["version.hydra"] == metadata.version("hydra-core")
    assert tags["version.python"] == ".".join(map(str, sys.version_info[:3]))


def test_missing_git_never_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH
    assert git_state(tmp_path) == ("unknown", "unknown")
    assert git_state(tmp_path / "does-not-exist") == ("unknown", "unknown")


@needs_git
def test_commit_and_dirty_in_a_repo(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    sha = git("rev-parse", "HEAD")
    (tmp_path / "untracked.txt").write_text("outputs do not make the tree dirty")
    assert git_state(tmp_path) == (sha, "false")
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (sha, "true")
    assert environment_tags(tmp_path)["git.commit"] == sha


def test_default_repo_is_the_package_source() -> None:
    tags = environment_tags(None)
    assert set(tags) == KEYS
    assert tags["git.commit"] == "unknown" or len(tags["git.commit"]) == 40


def test_import_is_cheap_and_hydra_free() -> None:
    """`import descentlab.tracking` and its URI/tag helpers must not pull in mlflow (~2 s) or Hydra."""
    code = (
        "import sys, descentlab.tracking as t\n"
        "t.resolve_tracking_uri(None, 'x'); t.artifact_root_for('sqlite:////x/m.db'); t.environment_tags(None)\n"
        "print(sorted(m for m in ('mlflow', 'hydra', 'omegaconf', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_git_is_asked_once_per_process_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep worker's jobs share one answer (two git subprocesses cost ~10 ms a job)."""
    from descentlab.tracking import tags as tags_module

    calls: list[tuple[object, ...]] = []
    real = tags_module._git
    monkeypatch.setattr(tags_module, "_git", lambda *args: calls.append(args) or real(*args))
    first = environment_tags(tmp_path)
    assert environment_tags(tmp_path) == first and environment_tags(str(tmp_path)) == first
    assert len(calls) == 1  # outside a repository only `rev-parse` runs, and only the first time
    environment_tags(tmp_path / "elsewhere")
    assert len(calls) == 2  # another folder is asked on its own
