"""What a sweep's parent run says about the sweep: its name, command line, swept keys; no mlflow import.

The launching process alone sees the sweep's arguments. It describes the sweep (`describe`) and writes the
description into the sweep folder before any job starts (`write_description`); the job that creates the parent
reads it (`read_description`, `parent_identity`). Kept apart from `tracking.sweep` because the launching process
must not import mlflow (~2 s) for this.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DESCRIPTION_FILE", "SWEEP_DIR_TAG", "describe", "parent_identity", "read_description",
           "sweep_dir_key", "write_description", "write_json"]

DESCRIPTION_FILE = ".sweep.json"
SWEEP_DIR_TAG = "sweep.dir"
MAX_NAME = 100  # longer names list the swept keys with their numbers of values instead


def sweep_dir_key(sweep_dir: str | Path, cwd: str | Path | None = None) -> str:
    """The sweep folder as the launching process names it: absolute against its working directory (`cwd`; a job
    gets it as `hydra.runtime.cwd`, which Hydra composed there), normalised. The same string on every node: the
    parent run's `sweep.dir` tag, by which a job that does not share the folder finds it."""
    return os.path.normpath(os.path.join(os.getcwd() if cwd is None else str(cwd), str(sweep_dir)))


def write_json(sweep_dir: Path, state: Mapping[str, Any], name: str) -> None:
    """Write-then-rename, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=sweep_dir, prefix=name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(state), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, sweep_dir / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def describe(overrides: list[str], swept: Mapping[str, list[str]], fixed: Mapping[str, str],
             n_jobs: int | None) -> dict[str, Any]:
    """A sweep as its parent run shows it: `name`, the command line (`overrides`), `params`, `n_jobs`.

    `swept`: each swept key's values as typed; `fixed`: the other overrides. The name lists the swept keys and
    values (`sweep optimizer=sgd,adam seed=0,1,2`), or their numbers of values when that is too long.
    """
    listed = " ".join(f"{k}={','.join(v)}" for k, v in swept.items())
    if len(listed) > MAX_NAME:
        listed = " ".join(f"{k}×{len(v)}" for k, v in swept.items())
    name = f"sweep {listed or ' '.join(overrides) or '(no overrides)'}"
    if len(name) > MAX_NAME + 6:
        name = name[: MAX_NAME + 5] + "…"
    params = {**{k: ",".join(v) for k, v in swept.items()}, **dict(fixed)}
    return {"name": name, "overrides": " ".join(overrides), "params": params, "swept": list(swept),
            "n_jobs": n_jobs}


def write_description(sweep_dir: str | Path, description: Mapping[str, Any]) -> None:
    """Record the sweep's description (`describe`) where its jobs find it."""
    folder = Path(sweep_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder, description, DESCRIPTION_FILE)


def read_description(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The launching process's description of the sweep, or None (not written, or not on this filesystem)."""
    try:
        found = json.loads((Path(sweep_dir) / DESCRIPTION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and "name" in found else None


def parent_identity(sweep_dir: str | Path, description: Mapping[str, Any] | None
                    ) -> tuple[str, dict[str, str], dict[str, str]]:
    """Name, tags and params of the sweep's parent run (without a description: a name from the folder only)."""
    tags = {SWEEP_DIR_TAG: sweep_dir_key(sweep_dir)}
    if not description:
        return f"sweep {Path(sweep_dir).name}", tags, {}
    tags["hydra.overrides"] = str(description.get("overrides", ""))
    if description.get("swept"):
        tags["sweep.keys"] = ",".join(description["swept"])
    if description.get("n_jobs") is not None:
        tags["sweep.n_jobs"] = str(description["n_jobs"])
    params = {str(k): str(v) for k, v in dict(description.get("params") or {}).items()}
    return str(description["name"]), tags, params
