"""IDX reader/writer: round trips, and every kind of corruption rejected with a message naming file and problem."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from descentlab.data import IdxFormatError, read_idx, write_idx

IMAGES = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_round_trip_uint8_images(tmp_path: Path, name: str) -> None:
    path = write_idx(tmp_path / name, IMAGES)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    if not name.endswith(".gz"):
        assert raw[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28])
        assert len(raw) == 16 + IMAGES.size
    back = read_idx(path, ndim=3)
    assert back.dtype == np.uint8
    assert back.shape == (3, 28, 28)
    np.testing.assert_array_equal(back, IMAGES)
    back[0, 0, 0] = 7  # a writable copy, not a view of the file's bytes


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip_every_type_code(tmp_path: Path, dtype: type) -> None:
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    back = read_idx(write_idx(tmp_path / "a.gz", a))
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, a)


def test_labels_round_trip_raw(tmp_path: Path) -> None:
    labels = np.array([5, 0, 4, 1, 9], dtype=np.uint8)
    path = write_idx(tmp_path / "labels", labels)
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 5, 5, 0, 4, 1, 9])
    np.testing.assert_array_equal(read_idx(path, ndim=1), labels)


def test_gzip_detected_by_magic_bytes_not_name(tmp_path: Path) -> None:
    gz = write_idx(tmp_path / "x.gz", IMAGES)
    renamed = gz.rename(tmp_path / "x-no-suffix")
    np.testing.assert_array_equal(read_idx(renamed), IMAGES)


def test_gzip_output_is_deterministic(tmp_path: Path) -> None:
    """mtime=0: fixtures written twice have the same bytes, hence the same SHA-256."""
    assert write_idx(tmp_path / "a.gz", IMAGES).read_bytes() == write_idx(tmp_path / "b.gz", IMAGES).read_bytes()


def test_write_rejects_dtype_without_type_code(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="uint16 has no IDX type code"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.uint16))


def _raw(tmp_path: Path, array: np.ndarray = IMAGES) -> tuple[Path, bytes]:
    path = write_idx(tmp_path / "images-idx3-ubyte", array)
    return path, path.read_bytes()


def _expect(path: Path, match: str, **kwargs: object) -> str:
    with pytest.raises(IdxFormatError, match=match) as info:
        read_idx(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


def test_a_bad_idx_file_is_bad_input_that_train_py_reports_in_one_line(tmp_path: Path) -> None:
    """Not a bug: `guarded_main` prints input errors as one `error:` line (no traceback), and callers that catch
    ValueError (bad input in general) catch this one too."""
    from descentlab.errors import input_errors, one_line

    path, raw = _raw(tmp_path)
    path.write_bytes(raw[:-5])
    with pytest.raises(input_errors()) as info:
        read_idx(path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, IdxFormatError)
    assert one_line(info.value) == str(info.value) and str(info.value).startswith(f"{path}: truncated data")


def test_wrong_magic_nonzero_first_bytes(tmp_path: Path) -> None:
    path, raw = _raw(tmp_path)
    path.write_bytes(b"\x01\x02" + raw[2:])
    _expect(path, r"wrong magic number 01020803: an IDX file starts with two zero bytes")


def test_wrong_magic_unsupported_type_code(tmp_path: Path) -> None:
    path, raw = _raw(tmp_path)
    path.write_bytes(raw[:2] + b"\x07" + raw[3:])
    _expect(path, r"wrong magic number 00000703: unsupported type code 0x07")


def test_wrong_dimensions_for_role(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    _expect(labels, r"wrong number of dimensions for images : expected 3-D, header says 1-D", ndim=3,
            role="images")
    images, _ = _raw(tmp_path)
    _expect(images, r"expected 1-D, header says 3-D", ndim=1)


def test_zero_dimensions(tmp_path: Path) -> None:
    path = tmp_path / "zero-d"
    path.write_bytes(bytes([0, 0, 8, 0]))
    _expect(path, r"wrong number of dimensions: header says 0")


def test_truncated_data(tmp_path: Path) -> None:
    path, raw = _raw(tmp_path)
    path.write_bytes(raw[:-5])
    _expect(path, r"truncated data: header shape \(3, 28, 28\) promises 2352 bytes, file has 2347")


def test_truncated_header(tmp_path: Path) -> None:
    path, raw = _raw(tmp_path)
    path.write_bytes(raw[:10])
    _expect(path, r"truncated header: 3 dimensions need 16 bytes, file has 10")
    path.write_bytes(b"\x00\x00")
    _expect(path, r"truncated: 2 bytes, too short")


def test_trailing_extra_bytes(tmp_path: Path) -> None:
    path, raw = _raw(tmp_path)
    path.write_bytes(raw + b"abc")
    _expect(path, r"3 trailing extra bytes after the 2352 bytes that header shape \(3, 28, 28\) promises")


def test_truncated_data_inside_gzip(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(_raw(tmp_path)[1][:-1]))
    _expect(path, r"truncated data: .* promises 2352 bytes, file has 2351")


def test_corrupt_gzip_cut_short(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images.gz", IMAGES)
    path.write_bytes(path.read_bytes()[:40])
    _expect(path, r"corrupt gzip data")


def test_corrupt_gzip_flipped_bytes(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images.gz", np.random.default_rng(0).integers(0, 256, (4, 28, 28), np.uint8))
    raw = bytearray(path.read_bytes())
    for i in range(40, 60):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    _expect(path, r"corrupt gzip data")


def test_gz_name_without_gzip_content(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(_raw(tmp_path)[1])
    _expect(path, r"name ends in \.gz but the file is not gzip data \(first bytes 00000803\)")
