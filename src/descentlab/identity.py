"""Which config keys make a run's identity: the one list of keys that do not change what a run computes.

Stdlib only, so `descentlab.config` (which hashes configs) and `descentlab.analysis` (which groups tracked
runs, without Hydra) read the same list: two runs that differ only in these keys are the same configuration.
"""

from __future__ import annotations

# Keys that change how a run is executed or stored, not what it computes: left out of the config hash,
# so moving the data folder or the store, or changing thread counts, does not re-run finished work.
NON_SEMANTIC_KEYS = (
    "force",
    "tracking",
    "dataset.path",
    "dataset.download",
    "training.blas_threads",
    "training.progress",
)
# The key whose runs are repeats of one configuration: analysis pools over it and nothing else.
SEED_KEY = "seed"


def is_semantic(key: str) -> bool:
    """True unless `key` is one of NON_SEMANTIC_KEYS or lies under one (`tracking.uri` under `tracking`)."""
    return not any(key == skip or key.startswith(f"{skip}.") for skip in NON_SEMANTIC_KEYS)
