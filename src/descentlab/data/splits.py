"""Seeded stratified train/test splits, for sources that ship without one (or sorted by class)."""

from __future__ import annotations

import numpy as np


def per_class_test_counts(labels: np.ndarray, test_fraction: float) -> dict[int, int]:
    """Test examples per class: ``floor(n_c * test_fraction + 0.5)`` (round half up, no banker's rounding)."""
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): int(np.floor(n * test_fraction + 0.5)) for c, n in zip(classes, counts, strict=True)}


def stratified_split(
    labels: np.ndarray,
    *,
    seed: int,
    n_test_per_class: int | None = None,
    test_fraction: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)`` holding, per class, ``n_test_per_class`` (or a rounded
    ``test_fraction``) test rows and the rest for training.

    Which rows go to test is drawn with ``np.random.default_rng(seed)``; each split is then shuffled with
    the same generator so its order interleaves classes (a prefix such as "the first 1,000 training
    images" is then a stratified-looking sample, never a single class). Deterministic for a given seed.
    """
    if (n_test_per_class is None) == (test_fraction is None):
        raise ValueError("give exactly one of n_test_per_class and test_fraction")
    labels = np.asarray(labels)
    if test_fraction is not None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        wanted = per_class_test_counts(labels, test_fraction)
    else:
        wanted = {int(c): int(n_test_per_class) for c in np.unique(labels)}  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for c, k in sorted(wanted.items()):
        rows = np.flatnonzero(labels == c)
        if not 0 < k < len(rows):
            raise ValueError(f"class {c} has {len(rows)} rows, cannot put {k} in the test split")
        rows = rng.permutation(rows)
        test_parts.append(rows[:k])
        train_parts.append(rows[k:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return train, test
