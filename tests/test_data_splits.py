"""Seeded stratified splits: exact per-class counts, disjoint, complete, shuffled, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from descentlab.data import stratified_split

LABELS = np.repeat(np.arange(4), [10, 20, 7, 13])  # sorted by class, like mnist_5k.csv.gz


def test_fixed_count_per_class() -> None:
    train, test = stratified_split(LABELS, seed=1, n_test_per_class=3)
    assert np.bincount(LABELS[test]).tolist() == [3, 3, 3, 3]
    assert np.bincount(LABELS[train]).tolist() == [7, 17, 4, 10]
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted([*train.tolist(), *test.tolist()]) == list(range(len(LABELS)))


def test_fraction_rounds_half_up_per_class() -> None:
    _, test = stratified_split(LABELS, seed=1, test_fraction=0.5)
    # 7*0.5 = 3.5 -> 4 and 13*0.5 = 6.5 -> 7 (Python's round() would give 6)
    assert np.bincount(LABELS[test]).tolist() == [5, 10, 4, 7]


def test_splits_are_shuffled_and_deterministic() -> None:
    train_a, test_a = stratified_split(LABELS, seed=7, n_test_per_class=2)
    train_b, test_b = stratified_split(LABELS, seed=7, n_test_per_class=2)
    np.testing.assert_array_equal(train_a, train_b)
    np.testing.assert_array_equal(test_a, test_b)
    assert np.any(np.diff(LABELS[train_a]) < 0), "train split still sorted by class"
    train_c, _ = stratified_split(LABELS, seed=8, n_test_per_class=2)
    assert not np.array_equal(train_a, train_c)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_test_per_class": 7}, "class 2 has 7 rows, cannot put 7 in the test split"),
    ({"n_test_per_class": 0}, "class 0 has 10 rows, cannot put 0"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
    ({}, "exactly one of"),
    ({"n_test_per_class": 1, "test_fraction": 0.1}, "exactly one of"),
])
def test_rejects_impossible_requests(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        stratified_split(LABELS, seed=0, **kwargs)  # type: ignore[arg-type]
