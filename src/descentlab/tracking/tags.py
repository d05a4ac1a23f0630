"""Tags that tie a run to the code and environment that produced it.

No mlflow or Hydra import: versions come from package metadata. Git is asked through a subprocess
with a short timeout, and its absence never fails a run.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["environment_tags", "git_state"]

GIT_TIMEOUT_S = 5.0
UNKNOWN = "unknown"


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # git missing, cwd missing, timeout
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(repo_dir: str | Path) -> tuple[str, str]:
    """(HEAD sha, "true"/"false" for uncommitted changes to tracked files); ("unknown", "unknown") outside a repo.

    Untracked files do not count as dirty: sweep outputs and stores usually live in the work tree.
    """
    repo = Path(repo_dir)
    sha = _git(repo, "rev-parse", "HEAD")
    if not sha or not sha.strip():
        return UNKNOWN, UNKNOWN
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    dirty = UNKNOWN if status is None else ("true" if status.strip() else "false")
    return sha.strip(), dirty


@functools.lru_cache(maxsize=8)
def _process_git_state(repo_dir: Path) -> tuple[str, str]:
    """git_state asked once per process and folder (two git calls, ~10 ms a job of a sweep worker).

    The code a process runs is the code it imported at its start, so that is the state worth recording.
    """
    return git_state(repo_dir)


def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


@functools.lru_cache(maxsize=1)
def _process_tags() -> tuple[tuple[str, str], ...]:
    """Versions and host, read once per process (package metadata lookups cost ~2 ms a job)."""
    from descentlab import __version__

    return (
        ("version.python", platform.python_version()),
        ("version.numpy", _version("numpy")),
        ("version.mlflow", _version("mlflow", "mlflow-skinny")),
        ("version.hydra", _version("hydra-core")),
        ("version.descentlab", __version__),
        ("host", socket.gethostname()),
    )


def environment_tags(repo_dir: str | Path | None = None) -> dict[str, str]:
    """git.commit, git.dirty, version.{python,numpy,mlflow,hydra,descentlab}, host.

    `repo_dir=None` asks git about the folder holding the descentlab package (the code that runs),
    not the current directory. Both are asked once per process and folder.
    """
    folder = Path(repo_dir) if repo_dir is not None else Path(__file__).parents[1]
    commit, dirty = _process_git_state(folder.resolve())
    return {"git.commit": commit, "git.dirty": dirty, **dict(_process_tags())}
