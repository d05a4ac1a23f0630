"""Training gives today's bits: loss histories and final weights recorded before the numerics restructuring.

tests/data/reference_histories.npz was recorded from commit 02da701 (the code before the reference rules and
the backend seam) by tests/data/record_reference_histories.py, run as
``PYTHONPATH=<checkout of 02da701>/src python tests/data/record_reference_histories.py <out.npz>``: that tree
was run once per backend, with ``DESCENTLAB_NUMBA=0`` (numpy) and without (numba). Here the same function
recomputes every series with the current code under each backend and compares exactly (``np.array_equal``;
the weights by SHA-256 of their bytes): the seven optimizers on the Figure 6-9 network (mlp_5x100, mnist_5k,
batch 128, seed 0, 200 updates, float32), Adam in float64, Adam with batch norm and dropout (the layer path),
and Figure 6-8's path on the book objective from (-7, 2) for every optimizer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from descentlab.backend import numba_available

DATA = Path(__file__).resolve().parent / "data"


def _recorder():
    spec = importlib.util.spec_from_file_location("record_reference_histories", DATA / "record_reference_histories.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_histories_equal_the_recorded_ones_bit_for_bit(backend: str) -> None:
    if backend == "numba" and not numba_available():
        pytest.skip("numba is not installed")
    with np.load(DATA / "reference_histories.npz") as npz:
        expected = {k: npz[k] for k in npz.files if k.startswith(f"{backend}/")}
    got = _recorder().histories(backend)
    assert len(expected) == 2 * 9 + 7 and set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert np.array_equal(got[key], value), key
