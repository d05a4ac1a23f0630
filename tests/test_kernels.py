"""descentlab.kernels' layer kernels against NumPy references, and the MLP with and without them.

The optimizer kernels are checked bit for bit against the NumPy path in tests/test_optim.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from descentlab import kernels
from descentlab.nn import MLP, softmax_cross_entropy

pytest.importorskip("numba")
if not kernels.enabled():  # pragma: no cover - only under DESCENTLAB_NUMBA=0
    pytest.skip("compiled kernels disabled (DESCENTLAB_NUMBA=0)", allow_module_level=True)

DTYPES = [np.float32, np.float64]


def _data(dtype: type, shape: tuple[int, int] = (37, 13), seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    x[0, :3] = [0.0, -0.0, np.nan]  # edge values: signed zeros and a NaN
    return x


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_bias_relu_and_relu_backward_equal_numpy(dtype: type) -> None:
    x = _data(dtype)
    b = np.random.default_rng(1).standard_normal(x.shape[1]).astype(dtype)
    out = x.copy()
    kernels.kernel("add_bias")(out, b)
    np.testing.assert_array_equal(out, x + b)

    y = x.copy()
    kernels.kernel("relu")(y)
    np.testing.assert_array_equal(y, np.maximum(x, 0))  # NaN stays NaN (assert_array_equal matches NaNs)
    assert np.isnan(y[0, 2]) and not np.any(y < 0)

    d = _data(dtype, seed=2)
    expected = d * (y > 0)
    kernels.kernel("relu_backward")(d, y)
    np.testing.assert_array_equal(d, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_sum_equals_numpy_sum_over_rows(dtype: type) -> None:
    d = np.random.default_rng(3).standard_normal((128, 100)).astype(dtype)
    out = np.empty(100, dtype)
    kernels.kernel("column_sum")(d, out)
    np.testing.assert_array_equal(out, d.sum(axis=0))
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_softmax_cross_entropy_matches_the_numpy_head(dtype: type) -> None:
    rng = np.random.default_rng(4)
    scores = (5 * rng.standard_normal((50, 10))).astype(dtype)
    scores[0] = [1000.0, 0.0, -1000.0, *[0.0] * 7]  # stable for huge logits
    t = rng.integers(0, 10, 50)
    grad = np.empty_like(scores)
    loss = kernels.kernel("softmax_cross_entropy_grad")(scores, t, grad)
    losses, p = softmax_cross_entropy(scores.astype(np.float64), t)
    expected = p.copy()
    expected[np.arange(50), t] -= 1
    expected /= 50
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert loss == pytest.approx(losses.mean(), rel=tol)
    np.testing.assert_allclose(grad, expected, rtol=tol * 10, atol=tol / 10)
    assert grad.dtype == dtype


def test_fused_softmax_cross_entropy_rejects_out_of_range_labels() -> None:
    fused = kernels.kernel("softmax_cross_entropy_grad")
    scores = np.zeros((3, 4), np.float32)
    for bad in (4, -1):
        with pytest.raises(ValueError, match="labels must be integers in"):
            fused(scores, np.array([0, bad, 1]), np.empty_like(scores))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_step_with_and_without_kernels_agrees(dtype: type, monkeypatch) -> None:
    rng = np.random.default_rng(5)
    x, t = rng.random((64, 20), dtype=np.float32), rng.integers(0, 5, 64)

    def step(compiled: bool) -> tuple[float, np.ndarray]:
        with monkeypatch.context() as m:
            if not compiled:
                m.setattr(kernels, "kernel", lambda _name: None)
            model = MLP(20, [16, 16], 5, dtype=dtype, rng=6)
            losses = [model.loss_and_grad(x, t) for _ in range(2)]  # twice: reused buffers give the same
            assert losses[0] == losses[1]
            return losses[0], model.grads.copy()

    fast_loss, fast_grads = step(True)
    slow_loss, slow_grads = step(False)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert fast_loss == pytest.approx(slow_loss, rel=tol)
    np.testing.assert_allclose(fast_grads, slow_grads, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=tol)


def test_training_forward_returns_a_new_array_not_a_reused_buffer() -> None:
    rng = np.random.default_rng(7)
    model = MLP(6, [5], 3, rng=8)
    a, b = rng.random((4, 6)), rng.random((4, 6))
    first = model.forward(a, train=True)
    kept = first.copy()
    model.forward(b, train=True)
    model.loss_and_grad(b, np.array([0, 1, 2, 0]))
    np.testing.assert_array_equal(first, kept)
    np.testing.assert_array_equal(model.forward(a, train=True), kept)  # same input, same logits
    np.testing.assert_allclose(model.forward(a), kept, rtol=1e-6)  # inference path, fresh arrays


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_kernels_equal_the_separate_ones_bit_for_bit(dtype: type) -> None:
    x = _data(dtype, shape=(37, 13))
    b = np.random.default_rng(9).standard_normal(13).astype(dtype)
    fused, separate = x.copy(), x.copy()
    kernels.kernel("bias_relu")(fused, b)
    kernels.kernel("add_bias")(separate, b)
    kernels.kernel("relu")(separate)
    np.testing.assert_array_equal(fused, separate)
    assert np.array_equal(np.signbit(fused), np.signbit(separate))  # the same -0.0s too

    y = fused
    d1, d2 = _data(dtype, seed=10), _data(dtype, seed=10)
    db1, db2 = np.empty(13, dtype), np.empty(13, dtype)
    kernels.kernel("relu_backward_column_sum")(d1, y, db1)
    kernels.kernel("relu_backward")(d2, y)
    kernels.kernel("column_sum")(d2, db2)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(db1, db2)
    np.testing.assert_array_equal(db1, (_data(dtype, seed=10) * (y > 0)).sum(axis=0))  # NumPy's order


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_take_rows_equals_fancy_indexing(dtype: type) -> None:
    rng = np.random.default_rng(12)
    x = (100 * rng.random((40, 11))).astype(dtype)
    for n in (0, 1, 7, 8, 9, 128):
        idx = rng.integers(0, 40, n)
        out = np.full((n, 11), 99, dtype)
        kernels.kernel("take_rows")(x, idx, out)
        np.testing.assert_array_equal(out, x[idx])
    for bad in ([40], [-1], [0, 1, 2, 3, 4, 5, 6, 7, 41]):
        with pytest.raises(IndexError, match="row index out of range"):
            kernels.kernel("take_rows")(x, np.array(bad), np.empty((len(bad), 11), dtype))
