"""IDX data sets: local folders, search order, downloads from a local HTTP server, errors, real Fashion-MNIST."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from descentlab.data import (
    FASHION_MNIST_SPEC,
    MNIST_SPEC,
    DatasetNotFoundError,
    IdxFormatError,
    IdxSpec,
    data_checksum,
    load_dataset,
    load_idx_dataset,
    write_idx,
)
from descentlab.data.download import fetch_verified

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real cache; reach the test server directly, whatever proxy is configured."""
    monkeypatch.setenv("DESCENTLAB_CACHE_DIR", str(tmp_path / "env-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


def fake_set(seed: int = 0, n_train: int = 50, n_test: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.permutation(np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.permutation(np.arange(n_test) % 10).astype(np.uint8),
    }


def write_set(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> dict[str, str]:
    """Write the four files; returns {file name: sha256 of the written bytes}."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for role, a in arrays.items():
        name = NAMES[role] if gz else NAMES[role].removesuffix(".gz")
        sums[NAMES[role]] = hashlib.sha256(write_idx(folder / name, a).read_bytes()).hexdigest()
    return sums


def spec_for(**changes: object) -> IdxSpec:
    return dataclasses.replace(MNIST_SPEC, **changes)  # type: ignore[arg-type]


def assert_is(ds_arrays: object, arrays: dict[str, np.ndarray]) -> None:
    ds = ds_arrays
    np.testing.assert_array_equal(ds.x_train, arrays["train_images"].reshape(-1, 784) / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.x_test, arrays["test_images"].reshape(-1, 784) / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.info.checksum == data_checksum(*(arrays[r].reshape(len(arrays[r]), -1) if "images" in r
                                               else arrays[r] for r in NAMES))


# ---------------------------------------------------------------- local folders


@pytest.mark.parametrize("gz", [True, False])
def test_local_folder(tmp_path: Path, gz: bool) -> None:
    arrays = fake_set()
    write_set(tmp_path / "mnist", arrays, gz=gz)
    ds = load_dataset("mnist", path=tmp_path / "mnist", download=False)
    assert_is(ds, arrays)
    assert ds.x_train.dtype == np.float32
    assert ds.x_train.flags.c_contiguous
    assert ds.y_train.dtype == np.int64
    info = ds.info
    assert (info.name, info.source, info.n_train, info.n_test) == ("mnist", str(tmp_path / "mnist"), 50, 20)
    assert (info.n_features, info.n_classes, info.image_shape) == (784, 10, (28, 28))
    assert info.split == "official train/test files"
    np.testing.assert_array_equal(ds.train_index, np.arange(50))


def test_local_files_need_no_upstream_checksum_and_checksum_ignores_compression(tmp_path: Path) -> None:
    arrays = fake_set()
    write_set(tmp_path / "gz", arrays, gz=True)
    write_set(tmp_path / "raw", arrays, gz=False)
    a = load_idx_dataset(MNIST_SPEC, path=tmp_path / "gz", download=False)
    b = load_idx_dataset(MNIST_SPEC, path=tmp_path / "raw", download=False)
    assert a.info.checksum == b.info.checksum
    other = fake_set(seed=1)
    write_set(tmp_path / "other", other)
    assert load_idx_dataset(MNIST_SPEC, path=tmp_path / "other").info.checksum != a.info.checksum


def test_explicit_path_wins_over_cache(tmp_path: Path) -> None:
    mine, cached = fake_set(seed=1), fake_set(seed=2)
    write_set(tmp_path / "mine", mine)
    write_set(tmp_path / "cache" / "mnist", cached)
    assert_is(load_dataset("mnist", path=tmp_path / "mine", cache_dir=tmp_path / "cache"), mine)
    ds = load_dataset("mnist", cache_dir=tmp_path / "cache")
    assert_is(ds, cached)
    assert ds.info.source == str(tmp_path / "cache" / "mnist")


def test_cache_root_from_env_var(tmp_path: Path) -> None:
    arrays = fake_set()
    write_set(tmp_path / "env-cache" / "mnist", arrays)
    ds = load_dataset("mnist", download=False)
    assert ds.info.source == str(tmp_path / "env-cache" / "mnist")


def test_incomplete_path_falls_back_to_cache_with_warning(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    write_set(tmp_path / "partial", fake_set(seed=1))
    (tmp_path / "partial" / NAMES["test_labels"]).unlink()
    cached = fake_set(seed=2)
    write_set(tmp_path / "cache" / "mnist", cached)
    with caplog.at_level(logging.WARNING, logger="descentlab.data"):
        ds = load_dataset("mnist", path=tmp_path / "partial", cache_dir=tmp_path / "cache", download=False)
    assert_is(ds, cached)
    assert "missing t10k-labels-idx1-ubyte.gz" in caplog.text


def test_label_count_mismatch_names_both_files_and_counts(tmp_path: Path) -> None:
    arrays = fake_set()
    arrays["train_labels"] = arrays["train_labels"][:49]
    write_set(tmp_path, arrays)
    with pytest.raises(IdxFormatError) as info:
        load_idx_dataset(MNIST_SPEC, path=tmp_path)
    assert str(info.value) == (f"label count 49 in {tmp_path / NAMES['train_labels']} != image count 50 "
                               f"in {tmp_path / NAMES['train_images']}")


def test_labels_outside_0_9(tmp_path: Path) -> None:
    arrays = fake_set()
    arrays["test_labels"][[3, 7]] = [10, 255]
    write_set(tmp_path, arrays)
    with pytest.raises(IdxFormatError) as info:
        load_idx_dataset(MNIST_SPEC, path=tmp_path)
    assert str(info.value) == (f"{tmp_path / NAMES['test_labels']}: 2 labels outside 0..9 "
                               "(e.g. 10 at index 3)")


@pytest.mark.parametrize(("role", "array", "match"), [
    ("train_images", np.zeros((50, 784), np.uint8), r"train-images-idx3-ubyte\.gz: wrong number of dimensions "
                                                    r"for images : expected 3-D, header says 2-D"),
    ("train_labels", np.zeros((50, 1), np.uint8), r"train-labels-idx1-ubyte\.gz: .*expected 1-D, header says 2-D"),
    ("test_images", np.zeros((20, 28, 28), np.int16), r"images must be unsigned bytes .* got int16"),
    ("test_images", np.zeros((20, 14, 14), np.uint8), r"images are 14x14, mnist expects 28x28"),
])
def test_wrong_file_for_role(tmp_path: Path, role: str, array: np.ndarray, match: str) -> None:
    arrays = fake_set()
    arrays[role] = array
    write_set(tmp_path, arrays)
    with pytest.raises(IdxFormatError, match=match):
        load_idx_dataset(MNIST_SPEC, path=tmp_path)


def test_corrupt_cached_file_is_an_error_not_a_silent_redownload(tmp_path: Path) -> None:
    write_set(tmp_path / "mnist", fake_set())
    bad = tmp_path / "mnist" / NAMES["train_images"]
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(IdxFormatError, match=f"{bad}: corrupt gzip data"):
        load_dataset("mnist", cache_dir=tmp_path)


# ---------------------------------------------------------------- not found


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_not_found_names_every_place_looked(tmp_path: Path) -> None:
    mirror = closed_port_url()
    spec = dataclasses.replace(FASHION_MNIST_SPEC, mirrors=(mirror,),
                               local_dirs=(str(tmp_path / "debian"),))
    (tmp_path / "given").mkdir()
    write_idx(tmp_path / "given" / NAMES["train_labels"], np.zeros(3, np.uint8))
    with pytest.raises(DatasetNotFoundError) as info:
        load_idx_dataset(spec, path=tmp_path / "given", cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in msg
    cache = tmp_path / "cache" / "fashion_mnist"
    for part in (
        "fashion_mnist: IDX files not found; looked in: ",
        f"path={tmp_path / 'given'} (missing train-images-idx3-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz)",
        f"cache {cache} (no such folder)",
        f"{tmp_path / 'debian'} (no such folder)",
        f"{mirror}train-images-idx3-ubyte.gz (",
        "refused",
        "pass path=DIR (Hydra: dataset.path=DIR)",
        f"copy those files into {cache}",
        "apt-get install dataset-fashion-mnist",
    ):
        assert part in msg, f"{part!r} not in {msg!r}"
    assert not cache.exists()  # a failed first download leaves no empty cache folder either


def test_not_found_without_download_and_without_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", download=False)
    msg = str(info.value)
    assert "path=None (not given)" in msg
    assert f"cache {tmp_path / 'env-cache' / 'mnist'} (no such folder)" in msg
    assert "download=False (mirrors not tried: https://ossci-datasets.s3.amazonaws.com/mnist/, " in msg
    assert "apt-get" not in msg  # MNIST has no Debian package


# ---------------------------------------------------------------- downloads


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "served"
    root.mkdir()
    srv = _Server(root)
    yield srv
    srv.stop()
    assert not srv.thread.is_alive()


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_caches_and_is_not_repeated(tmp_path: Path, server: _Server) -> None:
    arrays = fake_set()
    sums = write_set(server.root / "good", arrays)
    spec = spec_for(mirrors=(server.url + "good/",), sha256=sums)
    ds = load_idx_dataset(spec, cache_dir=tmp_path / "c")
    assert_is(ds, arrays)
    assert ds.info.source == server.url + "good/"
    cache = tmp_path / "c" / "mnist"
    assert files_in(cache) == sorted(NAMES.values())  # no temp or partial files left
    for name, digest in sums.items():
        assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == digest
    assert sorted(server.requests) == sorted(f"/good/{n}" for n in NAMES.values())

    again = load_idx_dataset(spec, cache_dir=tmp_path / "c")
    assert len(server.requests) == 4, "second load must come from the cache"
    assert again.info.source == str(cache)
    assert again.info.checksum == ds.info.checksum


def test_checksum_mismatch_rejected_and_leaves_nothing(tmp_path: Path, server: _Server) -> None:
    sums = write_set(server.root, fake_set())
    good = sums["train-images-idx3-ubyte.gz"]
    wrong = "0" * 64
    spec = spec_for(mirrors=(server.url,), sha256={**sums, "train-images-idx3-ubyte.gz": wrong})
    with pytest.raises(DatasetNotFoundError) as info:
        load_idx_dataset(spec, cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert (f"{server.url}train-images-idx3-ubyte.gz (train-images-idx3-ubyte.gz: SHA-256 mismatch: "
            f"expected {wrong}, got {good})") in msg
    assert files_in(tmp_path / "c" / "mnist") == []


def test_bad_file_mid_set_keeps_verified_files_only_then_resumes(tmp_path: Path, server: _Server) -> None:
    arrays = fake_set()
    sums = write_set(server.root, arrays)
    spec = spec_for(mirrors=(server.url,), sha256={**sums, "t10k-labels-idx1-ubyte.gz": "f" * 64})
    with pytest.raises(DatasetNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz: SHA-256 mismatch"):
        load_idx_dataset(spec, cache_dir=tmp_path / "c")
    assert files_in(tmp_path / "c" / "mnist") == sorted(set(NAMES.values()) - {"t10k-labels-idx1-ubyte.gz"})
    server.requests.clear()
    assert_is(load_idx_dataset(spec_for(mirrors=(server.url,), sha256=sums), cache_dir=tmp_path / "c"), arrays)
    assert server.requests == ["/t10k-labels-idx1-ubyte.gz"]


def test_next_mirror_after_missing_and_bad_ones(tmp_path: Path, server: _Server) -> None:
    arrays = fake_set()
    sums = write_set(server.root / "good", arrays)
    write_set(server.root / "bad", fake_set(seed=9))  # same names, other bytes
    mirrors = (server.url + "missing/", server.url + "bad/", server.url + "good/")
    ds = load_idx_dataset(spec_for(mirrors=mirrors, sha256=sums), cache_dir=tmp_path / "c")
    assert_is(ds, arrays)
    assert ds.info.source == server.url + "good/"
    assert files_in(tmp_path / "c" / "mnist") == sorted(NAMES.values())
    assert len(server.requests) == 12


def test_all_mirrors_failing_lists_each_error(tmp_path: Path, server: _Server) -> None:
    sums = write_set(server.root / "bad", fake_set(seed=9))
    mirrors = (server.url + "missing/", server.url + "bad/")
    with pytest.raises(DatasetNotFoundError) as info:
        load_idx_dataset(spec_for(mirrors=mirrors, sha256={k: "a" * 64 for k in sums}), cache_dir=tmp_path / "c")
    msg = str(info.value)
    assert f"{server.url}missing/train-images-idx3-ubyte.gz (File not found)" in msg
    assert f"{server.url}bad/train-images-idx3-ubyte.gz (train-images-idx3-ubyte.gz: SHA-256 mismatch" in msg
    assert files_in(tmp_path / "c" / "mnist") == []


def test_progress_bar_when_asked(tmp_path: Path, server: _Server, capsys: pytest.CaptureFixture[str]) -> None:
    payload = os.urandom(3000)
    (server.root / "blob").write_bytes(payload)
    dest = fetch_verified(server.url + "blob", tmp_path / "blob", hashlib.sha256(payload).hexdigest(),
                          progress=True)
    assert dest.read_bytes() == payload
    assert "blob" in capsys.readouterr().err


# ---------------------------------------------------------------- the real Fashion-MNIST (Debian package)

# Identity of the uncompressed Fashion-MNIST data (independent of Debian's recompression).
FASHION_MNIST_CHECKSUM = "93692c0709ef63bb65af98c0c33dfac6e827b34204e3349bf09d2c72e12079f6"


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_debian(tmp_path: Path) -> None:
    ds = load_dataset("fashion_mnist", cache_dir=tmp_path)
    assert ds.info.source == str(DEBIAN_FASHION)
    assert ds.x_train.shape == (60000, 784)
    assert ds.x_test.shape == (10000, 784)
    assert ds.x_train.dtype == np.float32
    assert ds.x_train.min() == 0.0
    assert ds.x_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.info.class_names[9] == "Ankle boot"
    assert ds.info.checksum == FASHION_MNIST_CHECKSUM
    assert files_in(tmp_path) == []  # nothing copied or downloaded
