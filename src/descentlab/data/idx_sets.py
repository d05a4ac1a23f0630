"""Find, cache, download and read the four-file IDX data sets (MNIST, Fashion-MNIST).

Search order: an explicit ``path`` folder; the cache folder; the spec's extra local folders (Debian's
``/usr/share/datasets/fashion-mnist``); then, if ``download``, the mirrors, into the cache.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import urllib.error
from pathlib import Path

import numpy as np

from .dataset import Dataset, build_dataset
from .download import fetch_verified
from .errors import DatasetNotFoundError, IdxFormatError
from .idx import read_idx
from .idx_specs import ROLES, IdxSpec, cache_folder

log = logging.getLogger(__name__)


def _find_file(folder: Path, gz_name: str) -> Path | None:
    """``folder/name.gz`` or, failing that, the uncompressed ``folder/name``."""
    for candidate in (folder / gz_name, folder / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _scan(folder: Path, spec: IdxSpec) -> tuple[dict[str, Path], list[str]]:
    """(found files by role, missing file names) in one folder."""
    found, missing = {}, []
    for role in ROLES:
        hit = _find_file(folder, spec.files[role])
        if hit is None:
            missing.append(spec.files[role])
        else:
            found[role] = hit
    return found, missing


def _describe(folder: Path, missing: list[str]) -> str:
    if not folder.exists():
        return f"{folder} (no such folder)"
    if not folder.is_dir():
        return f"{folder} (not a folder)"
    return f"{folder} (missing {', '.join(missing)})"


def _download_missing(spec: IdxSpec, folder: Path, found: dict[str, Path], looked: list[str]) -> set[str]:
    """Download every role not in ``found`` into the cache ``folder``; returns the mirror URLs used.

    Stops at the first file that no mirror delivers (appending each mirror's error to ``looked``) and
    raises :class:`DatasetNotFoundError` then; files already verified stay in the cache for next time.
    """
    used: set[str] = set()
    created = not folder.exists()
    for role in ROLES:
        if role in found:
            continue
        name = spec.files[role]
        errors = []
        for base in spec.mirrors:
            url = base + name
            try:
                found[role] = fetch_verified(url, folder / name, spec.sha256[name])
                used.add(base)
                break
            except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                errors.append(f"{url} ({reason})")
        else:
            looked.extend(errors or ["no mirrors configured"])
            if created:  # leave no empty cache folder behind a failed first download
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise DatasetNotFoundError(_not_found_message(spec, folder, looked))
    return used


def _not_found_message(spec: IdxSpec, cache: Path, looked: list[str]) -> str:
    """One line: every place looked, and how to provide the files."""
    files = ", ".join(spec.files[r] for r in ROLES)
    fixes = [f"pass path=DIR (Hydra: dataset.path=DIR) to a folder holding {files} (or the uncompressed "
             "files)", f"copy those files into {cache}"]
    if spec.apt_package:
        fixes.append(f"`sudo apt-get install {spec.apt_package}`")
    return (f"{spec.name}: IDX files not found; looked in: {'; '.join(looked)}. "
            f"To fix: {', or '.join(fixes)}.")


def locate_idx_files(
    spec: IdxSpec,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> tuple[dict[str, Path], str]:
    """Paths of the four files by role, and a description of the source (a folder, or mirror URLs)."""
    looked: list[str] = []
    if path is None:
        looked.append("path=None (not given)")
    else:
        folder = Path(path).expanduser()
        found, missing = _scan(folder, spec)
        if not missing:
            return found, str(folder)
        looked.append(f"path={_describe(folder, missing)}")
        log.warning("%s: %s is incomplete (missing %s); searching the cache and mirrors",
                    spec.name, folder, ", ".join(missing))
    cache = cache_folder(spec, cache_dir)
    cache_found, cache_missing = _scan(cache, spec)
    if not cache_missing:
        return cache_found, str(cache)
    looked.append(f"cache {_describe(cache, cache_missing)}")
    for extra in spec.local_dirs:
        folder = Path(extra)
        found, missing = _scan(folder, spec)
        if not missing:
            return found, str(folder)
        looked.append(_describe(folder, missing))
    if not download:
        looked.append(f"download=False (mirrors not tried: {', '.join(spec.mirrors) or 'none'})")
        raise DatasetNotFoundError(_not_found_message(spec, cache, looked))
    used = _download_missing(spec, cache, cache_found, looked)
    log.info("%s: downloaded from %s into %s", spec.name, ", ".join(sorted(used)), cache)
    return cache_found, ", ".join(sorted(used))


def _read_pair(spec: IdxSpec, images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, H, W) and labels (n,) as uint8, checked against each other and the spec."""
    images = read_idx(images_path, ndim=3, role="images")
    labels = read_idx(labels_path, ndim=1, role="labels")
    for p, a, what in ((images_path, images, "images"), (labels_path, labels, "labels")):
        if a.dtype != np.uint8:
            # Float pixels could hold NaN or values outside 0..255; say so when they do, it is the likelier bug.
            nan = int(np.isnan(a).sum()) if a.dtype.kind == "f" else 0
            detail = f" with {nan} NaN values" if nan else ""
            raise IdxFormatError(f"{p}: {what} must be unsigned bytes 0..255 (IDX type code 0x08), "
                                 f"got {a.dtype}{detail}")
    if images.shape[1:] != spec.image_shape:
        raise IdxFormatError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, "
                             f"{spec.name} expects {spec.image_shape[0]}x{spec.image_shape[1]}")
    if len(labels) != len(images):
        raise IdxFormatError(f"label count {len(labels)} in {labels_path} != image count {len(images)} "
                             f"in {images_path}")
    bad = labels >= spec.n_classes
    if bad.any():
        raise IdxFormatError(f"{labels_path}: {int(bad.sum())} labels outside 0..{spec.n_classes - 1} "
                             f"(e.g. {int(labels[bad][0])} at index {int(np.flatnonzero(bad)[0])})")
    return images, labels


def load_idx_dataset(
    spec: IdxSpec,
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Dataset:
    """Load an IDX data set (official split), searching ``path``, the cache, local folders, then mirrors.

    Local files are trusted without the upstream gz checksum (recompressed copies are fine) but parsed
    strictly; downloads are verified. ``info.checksum`` identifies the data either way.
    """
    files, source = locate_idx_files(spec, path=path, cache_dir=cache_dir, download=download)
    x_train, y_train = _read_pair(spec, files["train_images"], files["train_labels"])
    x_test, y_test = _read_pair(spec, files["test_images"], files["test_labels"])
    return build_dataset(
        name=spec.name,
        source=source,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        max_value=255,
        n_classes=spec.n_classes,
        split=spec.split,
        class_names=spec.class_names,
    )
