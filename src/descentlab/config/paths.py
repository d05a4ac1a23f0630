"""The defaults of `paths.root` and `paths.cache_dir`.

`paths.root` is the checkout (the folder of train.py, where the default store `mlruns/` lives). Hydra tells
every job where its primary config folder is (`hydra.runtime.config_sources`, in the launching process and in
each joblib worker or submitit job alike), and `conf/` sits next to train.py, so the root is that folder's
parent: no environment variable has to carry it to the workers. `paths.cache_dir` is the data library's cache
root (`descentlab.data.cache_root`: `$DESCENTLAB_CACHE_DIR`, else `$XDG_CACHE_HOME/descentlab`, else
`~/.cache/descentlab`), the one descentlab variable still read, so that the data API used without a config
(`python -m descentlab`, scripts) and a job agree on where downloads live.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

_CHECKOUT = Path(__file__).resolve().parents[3]  # src/descentlab/config/paths.py -> the checkout


def default_root(config_sources: list[Any] | None = None) -> Path:
    """The folder above the primary config folder Hydra composed from; else the checkout holding this package
    (an editable install, tests composing `conf/`), else the current folder."""
    if config_sources is None:
        config_sources = _job_config_sources()
    for source in config_sources or []:
        if source.get("provider") == "main" and source.get("schema") == "file" and source.get("path"):
            return _parent_of(str(source["path"]))
    return _checkout() or Path.cwd()


@functools.lru_cache(maxsize=8)
def _parent_of(config_dir: str) -> Path:
    """Cached: a job's config is resolved several times (checks, settings, hash, config.yaml)."""
    return Path(config_dir).resolve().parent


@functools.cache
def _checkout() -> Path | None:
    return _CHECKOUT if (_CHECKOUT / "train.py").is_file() else None


def _job_config_sources() -> list[Any] | None:
    """`hydra.runtime.config_sources` of the running job (Hydra sets it before it calls the job), if any."""
    if "hydra.core.hydra_config" not in sys.modules:
        return None  # no Hydra loaded (analysis, scripts), so no running job: do not import it for nothing
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    sources = OmegaConf.select(HydraConfig.get(), "runtime.config_sources", default=None)
    return None if sources is None else list(OmegaConf.to_container(sources, resolve=False))


def default_cache_dir() -> Path:
    """The data library's cache root (read when called, so tests can redirect it)."""
    from descentlab.data.idx_specs import cache_root

    return cache_root()
