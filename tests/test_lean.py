"""The lean Affine/ReLU training loop (descentlab.nn.lean) against the layer path, bit for bit, and RowGather.

Every optimizer of conf/optimizer/, float32 and float64, with and without compiled kernels: the same losses and
the same parameters after several steps, whichever path `MLP.loss_and_grad` takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from descentlab import kernels
from descentlab.nn import MLP
from descentlab.optim import OPTIMIZERS, make_optimizer
from descentlab.training import RowGather

CONF_OPTIMIZERS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "optimizer").glob("*.yaml"))
DTYPES = [np.float32, np.float64]


def _numba(compiled: bool) -> None:
    if compiled and not kernels.enabled():
        pytest.skip("compiled kernels unavailable (numba missing or DESCENTLAB_NUMBA=0)")


def _train(lean: bool, optimizer: str, dtype: type, *, steps: int = 4, weight_decay: float = 0.0,
           hidden: tuple[int, ...] = (24, 16, 12), batches: tuple[int, ...] = (32,)) -> tuple[list[float], MLP]:
    """`steps` updates per batch size in `batches`, on fixed random data; the model built from one seed."""
    rng = np.random.default_rng(11)
    x, t = rng.random((200, 30), dtype=np.float32), rng.integers(0, 7, 200)
    model = MLP(30, list(hidden), 7, dtype=dtype, weight_decay=weight_decay, rng=12)
    model.lean = lean
    opt = make_optimizer(optimizer)
    losses = []
    for n in batches:
        for _ in range(steps):
            idx = rng.integers(0, len(t), n)
            losses.append(model.loss_and_grad(x[idx], t[idx]))
            opt.update(model.params, model.grads)
    assert (model._lean_step is not None) == lean  # the path under test really ran
    return losses, model


def test_conf_lists_every_optimizer() -> None:
    assert sorted(OPTIMIZERS) == CONF_OPTIMIZERS


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("optimizer", CONF_OPTIMIZERS)
def test_lean_path_is_bit_identical_to_the_layer_path(optimizer: str, dtype: type, compiled: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _numba(compiled)
    if not compiled:
        monkeypatch.setattr(kernels, "kernel", lambda _name: None)
    lean_losses, lean = _train(True, optimizer, dtype)
    layer_losses, layer = _train(False, optimizer, dtype)
    assert lean_losses == layer_losses  # exact float equality
    np.testing.assert_array_equal(lean.params, layer.params)
    np.testing.assert_array_equal(lean.grads, layer.grads)
    assert lean.params.dtype == dtype and len(set(lean_losses)) == len(lean_losses)  # training moved


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_lean_path_with_weight_decay_batch_size_changes_and_one_hidden_layer(dtype: type, compiled: bool,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _numba(compiled)
    if not compiled:
        monkeypatch.setattr(kernels, "kernel", lambda _name: None)
    for hidden in ((20,), (), (9, 9, 9, 9)):
        kwargs = dict(weight_decay=0.05, hidden=hidden, batches=(32, 7, 1, 32), steps=2)
        lean_losses, lean = _train(True, "momentum", dtype, **kwargs)
        layer_losses, layer = _train(False, "momentum", dtype, **kwargs)
        assert lean_losses == layer_losses, hidden
        np.testing.assert_array_equal(lean.params, layer.params)


@pytest.mark.parametrize("labels", ["list", "uint8", "int32"])
def test_lean_path_takes_labels_the_kernel_does_not_and_rejects_bad_ones(labels: str) -> None:
    rng = np.random.default_rng(3)
    x, t = rng.random((16, 10)), rng.integers(0, 4, 16)
    given = {"list": t.tolist(), "uint8": t.astype(np.uint8), "int32": t.astype(np.int32)}[labels]
    lean, layer = MLP(10, [8], 4, rng=1), MLP(10, [8], 4, rng=1)
    layer.lean = False
    assert lean.loss_and_grad(x, given) == layer.loss_and_grad(x, given)
    np.testing.assert_array_equal(lean.grads, layer.grads)
    out_of_range = t.copy()
    out_of_range[3] = 4
    for bad in (out_of_range, t[:15]):  # the second is the head's NumPy branch (the kernel needs one label a row)
        for model in (lean, layer):
            with pytest.raises((ValueError, IndexError)):
                model.loss_and_grad(x, bad)


def test_only_plain_relu_stacks_take_the_lean_path() -> None:
    assert MLP(5, [4, 4], 3, rng=0).lean
    assert MLP(5, [4, 4], 3, weight_decay=0.1, rng=0).lean
    for kwargs in ({"batch_norm": True}, {"dropout": 0.2}, {"activation": "tanh"}, {"activation": "sigmoid"}):
        model = MLP(5, [4, 4], 3, rng=0, **kwargs)
        assert not model.lean, kwargs
        model.loss_and_grad(np.ones((6, 5)), np.zeros(6, dtype=np.int64))
        assert model._lean_step is None


def test_lean_gradient_matches_numerical_differences() -> None:
    """Backprop of the lean loop against centered differences in float64 (as tests/test_gradients.py does)."""
    rng = np.random.default_rng(8)
    x, t = rng.normal(size=(9, 6)), rng.integers(0, 4, 9)
    model = MLP(6, [7, 5], 4, dtype=np.float64, weight_decay=0.03, rng=9)
    model.loss_and_grad(x, t)
    assert model._lean_step is not None
    analytic = model.grads.copy()
    numeric = np.zeros_like(analytic)
    p, h = model.params, 1e-5
    for i in range(p.size):
        old = p[i]
        p[i] = old + h
        up = model.loss(x, t, train=True)
        p[i] = old - h
        down = model.loss(x, t, train=True)
        p[i] = old
        numeric[i] = (up - down) / (2 * h)
    for name, part in model.flat.slices.items():
        a, n = analytic[part], numeric[part]
        assert np.linalg.norm(a - n) / max(np.linalg.norm(a), np.linalg.norm(n)) < 1e-6, name


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
def test_row_gather_equals_take(compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    _numba(compiled)
    if not compiled:
        monkeypatch.setattr(kernels, "kernel", lambda _name: None)
    rng = np.random.default_rng(4)
    x = rng.random((50, 13), dtype=np.float32)
    gather = RowGather(x)
    assert (gather._kernel is not None) == compiled
    first = None
    for n in (17, 17, 8, 3, 1, 50):  # sizes around the 8-row groups; a size change reallocates
        idx = rng.integers(0, 50, n)
        got = gather(idx)
        np.testing.assert_array_equal(got, x.take(idx, axis=0))
        assert got.dtype == x.dtype and got.shape == (n, 13)
        first = got if first is None else first
    if compiled:
        assert first is not gather(rng.integers(0, 50, 50)) and gather(np.arange(50)) is gather(np.arange(50))
    perm = rng.permutation(50)[10:30]  # an epoch-sampling slice
    np.testing.assert_array_equal(gather(perm), x[perm])
    with pytest.raises(IndexError):
        gather(np.array([0, 50]))
    if compiled:  # negatives do not wrap around in the kernel
        with pytest.raises(IndexError):
            gather(np.array([-1, 0]))


def test_row_gather_falls_back_to_take_for_other_arrays() -> None:
    rng = np.random.default_rng(5)
    for x in (rng.random((20, 6))[:, ::2], rng.random(20), rng.random((20, 2, 3))):
        gather = RowGather(x)
        assert gather._kernel is None
        idx = rng.integers(0, 20, 9)
        np.testing.assert_array_equal(gather(idx), x.take(idx, axis=0))
