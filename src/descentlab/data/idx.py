"""Strict reader and writer for IDX files (the MNIST container format), gzipped or not.

Strict because a silently misread file (a truncated download, a label file passed as images) would
otherwise surface only as a mysteriously bad training curve.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import IdxFormatError

# IDX type code -> big-endian dtype (the format's byte order).
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise IdxFormatError(f"{path}: corrupt gzip data ({exc or type(exc).__name__})") from None
    if path.suffix == ".gz":
        raise IdxFormatError(f"{path}: name ends in .gz but the file is not gzip data "
                             f"(first bytes {raw[:4].hex() or 'none: empty file'})")
    return raw


def read_idx(path: str | os.PathLike[str], ndim: int | None = None, role: str | None = None) -> np.ndarray:
    """Read an IDX file into an array with the file's dtype and shape (native byte order).

    ``ndim`` (e.g. 3 for images, 1 for labels) is checked when given; ``role`` only names it in messages.
    Raises :class:`IdxFormatError` naming the file for a bad magic number, an unsupported type code, a
    wrong number of dimensions, truncated data, trailing bytes or corrupt gzip data.
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise IdxFormatError(f"{path}: truncated: {len(buf)} bytes, too short for the 4-byte IDX magic number")
    if buf[0] != 0 or buf[1] != 0:
        raise IdxFormatError(f"{path}: wrong magic number {buf[:4].hex()}: an IDX file starts with two zero bytes")
    code, dims_n = buf[2], buf[3]
    if code not in _CODE_TO_DTYPE:
        raise IdxFormatError(f"{path}: wrong magic number {buf[:4].hex()}: unsupported type code 0x{code:02x} "
                             f"(supported: {', '.join(f'0x{c:02x}' for c in _CODE_TO_DTYPE)})")
    what = f"{role} " if role else ""
    if dims_n == 0:
        raise IdxFormatError(f"{path}: wrong number of dimensions: header says 0")
    if ndim is not None and dims_n != ndim:
        raise IdxFormatError(f"{path}: wrong number of dimensions for {what}: expected {ndim}-D, "
                             f"header says {dims_n}-D")
    header_len = 4 + 4 * dims_n
    if len(buf) < header_len:
        raise IdxFormatError(f"{path}: truncated header: {dims_n} dimensions need {header_len} bytes, "
                             f"file has {len(buf)}")
    shape = struct.unpack(f">{dims_n}I", buf[4:header_len])
    dtype = _CODE_TO_DTYPE[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(buf) - header_len
    if got < expected:
        raise IdxFormatError(f"{path}: truncated data: header shape {shape} promises {expected} bytes, "
                             f"file has {got}")
    if got > expected:
        raise IdxFormatError(f"{path}: {got - expected} trailing extra bytes after the {expected} bytes "
                             f"that header shape {shape} promises")
    arr = np.frombuffer(buf, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    return arr.reshape(shape).astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzipped when the name ends in ``.gz``; returns the path.

    Used to build fixtures and to export subsets in the format every MNIST tool reads.
    """
    path = Path(path)
    a = np.asarray(array)
    code = next((c for c, dt in _CODE_TO_DTYPE.items() if dt.kind == a.dtype.kind
                 and dt.itemsize == a.dtype.itemsize), None)
    if code is None:
        raise TypeError(f"write_idx: dtype {a.dtype} has no IDX type code (use uint8, int8, int16, int32, "
                        "float32 or float64)")
    if a.ndim == 0 or a.ndim > 255:
        raise ValueError(f"write_idx: cannot write a {a.ndim}-D array")
    header = bytes((0, 0, code, a.ndim)) + struct.pack(f">{a.ndim}I", *a.shape)
    payload = header + np.ascontiguousarray(a, dtype=_CODE_TO_DTYPE[code]).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    path.write_bytes(payload)
    return path
