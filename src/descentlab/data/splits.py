"""Seeded stratified splits: train/test for sources that ship without one (or sorted by class), and the training
subset and validation set a run carves out of a data set's training examples."""

from __future__ import annotations

import dataclasses

import numpy as np

from .dataset import Dataset


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


def carve(data: Dataset, *, train_subset: int | None = None, validation: float = 0.0, seed: int = 0) -> Dataset:
    """`data` trained on its first `train_subset` training examples (the book's "first 300 images"), with a fraction
    `validation` of those held out as a validation set (stratified per class, drawn with `seed`); the test set is
    untouched. Returns `data` itself when there is nothing to carve.

    The subset is a prefix because the book takes one; the validation rows are drawn per class so a small set keeps
    every class. The info's `n_train`/`n_val` count what the run trains and validates on; `checksum` still names
    the source data (the subset and split are recorded as the run's params).
    """
    n = len(data.y_train)
    if train_subset is not None and train_subset < 1:
        raise ValueError(f"train_subset must be an integer >= 1, got {train_subset!r}")
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation must be a fraction in [0, 1), got {validation!r}")
    keep = n if train_subset is None else min(train_subset, n)
    if keep == n and validation == 0.0:
        return data
    rows = np.arange(keep)
    notes = [] if keep == n else [f"first {keep} of {n} training examples"]
    val_rows = None
    if validation > 0.0:
        try:
            train_part, val_part = stratified_split(data.y_train[:keep], seed=seed, test_fraction=validation)
        except ValueError as exc:
            raise ValueError(f"cannot hold out validation={validation} of {keep} training examples: {exc}") from None
        rows, val_rows = np.sort(train_part), np.sort(val_part)  # training order kept: a prefix stays a prefix
        notes.append(f"{len(val_rows)} held out for validation (stratified, seed {seed})")
    info = dataclasses.replace(data.info, n_train=len(rows), n_val=0 if val_rows is None else len(val_rows),
                               split=f"{data.info.split}; {'; '.join(notes)}")
    return dataclasses.replace(
        data, x_train=data.x_train[rows], y_train=data.y_train[rows], train_index=data.train_index[rows], info=info,
        x_val=None if val_rows is None else data.x_train[val_rows],
        y_val=None if val_rows is None else data.y_train[val_rows],
        val_index=None if val_rows is None else data.train_index[val_rows])
