"""What the IDX data sets are and where they live: names, upstream checksums, mirrors, local folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV_VAR = "DESCENTLAB_CACHE_DIR"
ROLES = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class IdxSpec:
    """One IDX data set. Frozen so tests and users derive variants with ``dataclasses.replace``.

    ``files`` maps each role in :data:`ROLES` to the gzipped file name; ``sha256`` maps those names to the
    SHA-256 of the upstream ``.gz`` files, checked on download only (local copies, e.g. Debian's
    recompressed ones, have other gz bytes but the same data). ``mirrors`` are base URLs ending in ``/``.
    """

    name: str
    files: dict[str, str]
    sha256: dict[str, str]
    mirrors: tuple[str, ...]
    local_dirs: tuple[str, ...] = ()
    image_shape: tuple[int, int] = (28, 28)
    n_classes: int = 10
    class_names: tuple[str, ...] = ()
    apt_package: str | None = None
    split: str = "official train/test files"


_STANDARD_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# SHA-256 of the upstream .gz files as listed by tensorflow_datasets (url_checksums/mnist.txt,
# cvdf mirror) and used by other loaders for the ossci mirror and yann.lecun.com (identical files).
MNIST_SPEC = IdxSpec(
    name="mnist",
    files=dict(_STANDARD_FILES),
    sha256={
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    class_names=tuple(str(d) for d in range(10)),
)

# SHA-256 as listed by tensorflow_datasets (url_checksums/fashion_mnist.txt) and Keras
# (keras/src/datasets/fashion_mnist.py FILE_HASHES, for the tf-keras-datasets mirror): same values.
FASHION_MNIST_SPEC = IdxSpec(
    name="fashion_mnist",
    files=dict(_STANDARD_FILES),
    sha256={
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    local_dirs=("/usr/share/datasets/fashion-mnist",),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    apt_package="dataset-fashion-mnist",
)

IDX_SPECS: dict[str, IdxSpec] = {s.name: s for s in (MNIST_SPEC, FASHION_MNIST_SPEC)}


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Root of the download cache: ``cache_dir``, else ``$DESCENTLAB_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/descentlab``, else ``~/.cache/descentlab``. Read at call time, so tests can redirect it.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "descentlab"


def cache_folder(spec: IdxSpec, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<cache root>/<spec.name>``: where downloads land and where users may copy the files."""
    return cache_root(cache_dir) / spec.name
