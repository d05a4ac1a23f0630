"""Verified, atomic downloads: a file appears in the cache complete and with the expected SHA-256, or not at all."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

DOWNLOAD_TIMEOUT_S = 30.0  # per connect/read, not for the whole file
_CHUNK = 1 << 20


class ChecksumMismatchError(OSError):
    """The downloaded bytes do not have the expected SHA-256 (the temp file has been deleted)."""


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    """A tqdm bar on an interactive terminal, a silent stand-in otherwise (logs and CI stay clean)."""
    if enabled:
        from tqdm import tqdm  # imported lazily: only a download needs it

        return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)
    return _NoBar()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def fetch_verified(url: str, dest: Path, sha256: str, *, timeout: float = DOWNLOAD_TIMEOUT_S,
                   progress: bool | None = None) -> Path:
    """Stream ``url`` into ``dest``, hashing while writing; publish with ``os.replace`` only if the
    SHA-256 matches. The temp file lives in ``dest``'s folder (same file system, so the rename is atomic)
    and is deleted on any failure, including KeyboardInterrupt.

    Raises :class:`ChecksumMismatchError` naming the file, the expected and the received hash, or the
    ``OSError``/``urllib.error.URLError`` of the transfer.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if progress is None:
        progress = sys.stderr.isatty()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            bar = _progress(int(length) if length else None, dest.name, progress)
            try:
                while chunk := resp.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256.lower():
            raise ChecksumMismatchError(f"{dest.name}: SHA-256 mismatch: expected {sha256.lower()}, got {got}")
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return dest
