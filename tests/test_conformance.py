"""Every fast path of the numba backend against its reference twin (descentlab.optim.rules, descentlab.nn.layers).

Bit for bit (exact equality, same dtype): each optimizer kernel against its rule, the bias, ReLU, mask and
column-sum kernels (separate and fused) against the layers' NumPy operations, the row gather against
``x.take``, and the fused Affine/ReLU training step against the layer-by-layer path, for every optimizer of
conf/optimizer/, float32 and float64. To rounding only: the compiled softmax head (exp and log from another
library) against the reference head, and so the numba backend's training step against the numpy backend's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from descentlab.backend import numba_available, select
from descentlab.nn import MLP, ReLU, SoftmaxCrossEntropy, softmax_cross_entropy
from descentlab.optim import OPTIMIZERS, make_optimizer

if not numba_available():  # pragma: no cover - numba is a dependency; without it there is nothing to compare
    pytest.skip("numba is not installed", allow_module_level=True)

from descentlab.backend.compiled import KERNEL_MIN_SIZE, FusedReluStep, KernelSoftmaxCrossEntropy, RowGather
from descentlab.backend.kernels import kernel

NUMBA, NUMPY = select("numba"), select("numpy")
CONF_OPTIMIZERS = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "optimizer").glob("*.yaml"))
DTYPES = [np.float32, np.float64]
SLOTS = {"sgd": (), "momentum": ("v",), "nesterov": ("v",), "adagrad": ("h",), "rmsprop": ("h",),
         "adam": ("m", "v"), "adamw": ("m", "v")}


def test_every_configured_optimizer_has_a_kernel_and_a_rule() -> None:
    assert sorted(OPTIMIZERS) == CONF_OPTIMIZERS == sorted(SLOTS)


# --- optimizer kernels against the rules ------------------------------------------------------------------


def _optimizer_run(name: str, backend, dtype: type, steps: int = 6) -> tuple[np.ndarray, dict, object]:
    hyper = {"lr": 0.03} | ({"weight_decay": 0.1} if name == "adamw" else {})
    p = np.random.default_rng(7).standard_normal(4099).astype(dtype)  # odd size: vector loop + remainder
    opt = make_optimizer(name, backend=backend, **hyper)
    rng = np.random.default_rng(8)
    for _ in range(steps):
        opt.update(p, rng.standard_normal(p.size).astype(dtype))
    return p, opt.state_dict(), opt


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", CONF_OPTIMIZERS)
def test_optimizer_kernel_equals_the_rule_bit_for_bit(name: str, dtype: type) -> None:
    fast_p, fast_state, fast = _optimizer_run(name, NUMBA, dtype)
    slow_p, slow_state, slow = _optimizer_run(name, NUMPY, dtype)
    assert fast._step.kernel is not None and fast._step._views is not None  # the kernel really ran
    assert slow._step == slow.rule.update
    assert fast_p.dtype == dtype and fast_p.tobytes() == slow_p.tobytes()
    assert fast_state["t"] == slow_state["t"] == 6
    for slot in SLOTS[name]:
        assert fast_state[slot].tobytes() == slow_state[slot].tobytes(), slot


def test_small_or_strided_arrays_take_the_rule_and_stay_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    import descentlab.backend.compiled as compiled

    calls: list[str] = []

    def spy(name: str):
        fn = kernel(name)
        return lambda *args: (calls.append(name), fn(*args))

    monkeypatch.setattr(compiled, "kernel", spy)
    n = KERNEL_MIN_SIZE
    opt = make_optimizer("adam", backend=NUMBA)
    opt.update(np.ones(n, np.float32), np.full(n, 0.5, np.float32))
    assert calls == ["adam_step"]
    # A strided view must still be updated in place (by the rule), not through a flattened copy.
    base = np.ones(2 * n, dtype=np.float32)
    make_optimizer("sgd", lr=0.5, backend=NUMBA).update(base[::2], np.ones(n, dtype=np.float32))
    np.testing.assert_array_equal(base[::2], 0.5)
    np.testing.assert_array_equal(base[1::2], 1.0)
    # Small arrays (a 2-D objective's point) never start numba.
    make_optimizer("adam", backend=NUMBA).update(np.ones(n - 1, np.float32), np.ones(n - 1, np.float32))
    assert calls == ["adam_step"]


def test_repeated_kernel_updates_see_new_hyperparameters_reset_and_loaded_state() -> None:
    """The same arrays again take a shortcut past the checks and the view building; it must not freeze
    scalars or state."""
    f32, n = np.float32, KERNEL_MIN_SIZE
    p, g = np.ones(n, f32), np.full(n, 0.5, f32)
    sgd = make_optimizer("sgd", lr=0.5, backend=NUMBA)
    sgd.update(p, g)
    sgd.update(p, g)
    sgd.lr = 0.25  # a schedule changing lr between steps
    sgd.update(p, g)
    np.testing.assert_array_equal(p, f32(1) - f32(0.25) - f32(0.25) - f32(0.125))
    assert sgd.t == 3
    with pytest.raises(ValueError, match="do not match params"):
        sgd.update(p, np.ones(n + 1, f32))
    q = np.ones(n, f32)
    sgd.update(q, g)  # other arrays are updated, not the last ones
    np.testing.assert_array_equal(q, f32(1) - f32(0.125))
    np.testing.assert_array_equal(p, f32(0.375))

    mom, p = make_optimizer("momentum", lr=0.1, momentum=0.9, backend=NUMBA), np.ones(n, f32)
    g = np.ones(n, f32)
    mom.update(p, g)
    saved = mom.state_dict()
    mom.update(p, g)
    v2 = f32(0.9) * -f32(0.1) - f32(0.1)
    np.testing.assert_array_equal(p, f32(1) - f32(0.1) + v2)
    mom.reset()  # velocity forgotten although the arrays are the same
    mom.update(p, g)
    np.testing.assert_array_equal(mom.state_dict()["v"], -f32(0.1))
    mom.load_state_dict(saved)  # and a loaded velocity is the one the next update uses
    mom.update(p, g)
    np.testing.assert_array_equal(mom.state_dict()["v"], v2)


def test_a_copy_of_arrays_and_optimizer_updates_the_copied_arrays() -> None:
    """Copies do not keep views as views: the remembered flat views must not survive a deepcopy or pickle."""
    import copy
    import pickle

    n = KERNEL_MIN_SIZE
    for clone in (copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))):
        p, g = np.ones(n, np.float32), np.full(n, 0.5, np.float32)
        opt = make_optimizer("momentum", lr=0.1, backend=NUMBA)
        opt.update(p, g)
        p2, g2, opt2 = clone((p, g, opt))
        opt2.update(p2, g2)
        opt.update(p, g)
        np.testing.assert_array_equal(p2, p)  # the copy moved its own parameters, exactly as the original did
        assert opt2.t == opt.t == 2 and opt2.backend.name == "numba"


# --- layer kernels against the layers' NumPy operations ---------------------------------------------------


def _data(dtype: type, shape: tuple[int, int] = (37, 13), seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    x[0, :3] = [0.0, -0.0, np.nan]  # edge values: signed zeros and a NaN
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_bias_relu_and_relu_mask_kernels_equal_the_layers(dtype: type) -> None:
    x = _data(dtype)
    b = np.random.default_rng(1).standard_normal(x.shape[1]).astype(dtype)
    out = x.copy()
    kernel("add_bias")(out, b)
    np.testing.assert_array_equal(out, x + b)  # Affine.forward's `out += b`

    y = x.copy()
    kernel("relu")(y)
    reference = ReLU(inplace=False)
    np.testing.assert_array_equal(y, reference.forward(x))  # NaN stays NaN (assert_array_equal matches NaNs)
    assert np.isnan(y[0, 2]) and not np.any(y < 0)

    d = _data(dtype, seed=2)
    expected = reference.backward(d.copy())
    kernel("relu_backward")(d, y)
    np.testing.assert_array_equal(d, expected)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_column_sum_kernel_equals_numpy_sum_over_rows(dtype: type) -> None:
    d = np.random.default_rng(3).standard_normal((128, 100)).astype(dtype)
    out = np.empty(100, dtype)
    kernel("column_sum")(d, out)
    np.testing.assert_array_equal(out, d.sum(axis=0))  # Affine.backward's bias gradient
    assert out.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_kernels_equal_the_separate_ones_bit_for_bit(dtype: type) -> None:
    x = _data(dtype, shape=(37, 13))
    b = np.random.default_rng(9).standard_normal(13).astype(dtype)
    fused, separate = x.copy(), x.copy()
    kernel("bias_relu")(fused, b)
    kernel("add_bias")(separate, b)
    kernel("relu")(separate)
    np.testing.assert_array_equal(fused, separate)
    assert np.array_equal(np.signbit(fused), np.signbit(separate))  # the same -0.0s too

    y = fused
    d1, d2 = _data(dtype, seed=10), _data(dtype, seed=10)
    db1, db2 = np.empty(13, dtype), np.empty(13, dtype)
    kernel("relu_backward_column_sum")(d1, y, db1)
    kernel("relu_backward")(d2, y)
    kernel("column_sum")(d2, db2)
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(db1, db2)
    np.testing.assert_array_equal(db1, (_data(dtype, seed=10) * (y > 0)).sum(axis=0))  # NumPy's order


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_softmax_head_kernel_matches_the_reference_head_to_rounding(dtype: type) -> None:
    rng = np.random.default_rng(4)
    scores = (5 * rng.standard_normal((50, 10))).astype(dtype)
    scores[0] = [1000.0, 0.0, -1000.0, *[0.0] * 7]  # stable for huge logits
    t = rng.integers(0, 10, 50)
    head, reference = KernelSoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    loss, grad = head.forward(scores, t), head.backward()
    expected_loss = reference.forward(scores.astype(np.float64), t)
    expected = reference.backward()
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert loss == pytest.approx(expected_loss, rel=tol)
    np.testing.assert_allclose(grad, expected, rtol=tol * 10, atol=tol / 10)
    assert grad.dtype == dtype
    losses, _ = softmax_cross_entropy(scores.astype(np.float64), t)
    assert expected_loss == pytest.approx(float(losses.mean()), rel=1e-15)


def test_softmax_head_kernel_rejects_out_of_range_labels() -> None:
    fused = kernel("softmax_cross_entropy_grad")
    scores = np.zeros((3, 4), np.float32)
    for bad in (4, -1):
        with pytest.raises(ValueError, match="labels must be integers in"):
            fused(scores, np.array([0, bad, 1]), np.empty_like(scores))


# --- the row gather against x.take ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_take_rows_kernel_equals_fancy_indexing(dtype: type) -> None:
    rng = np.random.default_rng(12)
    x = (100 * rng.random((40, 11))).astype(dtype)
    for n in (0, 1, 7, 8, 9, 128):
        idx = rng.integers(0, 40, n)
        out = np.full((n, 11), 99, dtype)
        kernel("take_rows")(x, idx, out)
        np.testing.assert_array_equal(out, x[idx])
    for bad in ([40], [-1], [0, 1, 2, 3, 4, 5, 6, 7, 41]):
        with pytest.raises(IndexError, match="row index out of range"):
            kernel("take_rows")(x, np.array(bad), np.empty((len(bad), 11), dtype))


@pytest.mark.parametrize("backend", [NUMBA, NUMPY], ids=["numba", "numpy"])
def test_backend_gather_equals_take(backend) -> None:
    rng = np.random.default_rng(4)
    x = rng.random((50, 13), dtype=np.float32)
    gather = backend.gather(x)
    assert isinstance(gather, RowGather) == (backend is NUMBA)
    first = None
    for n in (17, 17, 8, 3, 1, 50):  # sizes around the 8-row groups; a size change reallocates
        idx = rng.integers(0, 50, n)
        got = gather(idx)
        np.testing.assert_array_equal(got, x.take(idx, axis=0))
        assert got.dtype == x.dtype and got.shape == (n, 13)
        first = got if first is None else first
    if backend is NUMBA:  # one buffer per batch size, reused
        assert first is not gather(rng.integers(0, 50, 50)) and gather(np.arange(50)) is gather(np.arange(50))
    perm = rng.permutation(50)[10:30]  # an epoch-sampling slice
    np.testing.assert_array_equal(gather(perm), x[perm])
    with pytest.raises(IndexError):
        gather(np.array([0, 50]))
    if backend is NUMBA:  # negatives do not wrap around in the kernel
        with pytest.raises(IndexError):
            gather(np.array([-1, 0]))


def test_row_gather_falls_back_to_take_for_other_arrays() -> None:
    rng = np.random.default_rng(5)
    for x in (rng.random((20, 6))[:, ::2], rng.random(20), rng.random((20, 2, 3))):
        gather = RowGather(x)
        assert gather._kernel is None
        idx = rng.integers(0, 20, 9)
        np.testing.assert_array_equal(gather(idx), x.take(idx, axis=0))


# --- the fused Affine/ReLU training step against the layer-by-layer path ------------------------------------


def _train(fused: bool, optimizer: str, dtype: type, *, backend=NUMBA, steps: int = 4, weight_decay: float = 0.0,
           hidden: tuple[int, ...] = (24, 16, 12), batches: tuple[int, ...] = (32,)) -> tuple[list[float], MLP]:
    """`steps` updates per batch size in `batches`, on fixed random data; the model built from one seed."""
    rng = np.random.default_rng(11)
    x, t = rng.random((200, 30), dtype=np.float32), rng.integers(0, 7, 200)
    model = MLP(30, list(hidden), 7, dtype=dtype, weight_decay=weight_decay, rng=12, backend=backend)
    model.fused = fused
    opt = make_optimizer(optimizer, backend=backend)
    losses = []
    for n in batches:
        for _ in range(steps):
            idx = rng.integers(0, len(t), n)
            losses.append(model.loss_and_grad(x[idx], t[idx]))
            opt.update(model.params, model.grads)
    assert isinstance(model._step, FusedReluStep) == fused  # the path under test really ran
    return losses, model


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("optimizer", CONF_OPTIMIZERS)
def test_fused_step_is_bit_identical_to_the_layer_path(optimizer: str, dtype: type) -> None:
    fused_losses, fused = _train(True, optimizer, dtype)
    layer_losses, layer = _train(False, optimizer, dtype)
    assert fused_losses == layer_losses  # exact float equality
    np.testing.assert_array_equal(fused.params, layer.params)
    np.testing.assert_array_equal(fused.grads, layer.grads)
    assert fused.params.dtype == dtype and len(set(fused_losses)) == len(fused_losses)  # training moved


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_step_with_weight_decay_batch_size_changes_and_one_hidden_layer(dtype: type) -> None:
    for hidden in ((20,), (), (9, 9, 9, 9)):
        kwargs = dict(weight_decay=0.05, hidden=hidden, batches=(32, 7, 1, 32), steps=2)
        fused_losses, fused = _train(True, "momentum", dtype, **kwargs)
        layer_losses, layer = _train(False, "momentum", dtype, **kwargs)
        assert fused_losses == layer_losses, hidden
        np.testing.assert_array_equal(fused.params, layer.params)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_numba_backend_step_agrees_with_the_numpy_backend_to_rounding(dtype: type) -> None:
    """Only the softmax head differs between the two (to rounding); losses and gradients agree closely."""
    rng = np.random.default_rng(5)
    x, t = rng.random((64, 20), dtype=np.float32), rng.integers(0, 5, 64)
    results = {}
    for backend in (NUMBA, NUMPY):
        model = MLP(20, [16, 16], 5, dtype=dtype, rng=6, backend=backend)
        losses = [model.loss_and_grad(x, t) for _ in range(2)]  # twice: reused buffers give the same
        assert losses[0] == losses[1]
        results[backend.name] = losses[0], model.grads.copy()
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert results["numba"][0] == pytest.approx(results["numpy"][0], rel=tol)
    np.testing.assert_allclose(results["numba"][1], results["numpy"][1], rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=tol)


@pytest.mark.parametrize("labels", ["list", "uint8", "int32"])
def test_fused_step_takes_labels_the_kernel_does_not_and_rejects_bad_ones(labels: str) -> None:
    rng = np.random.default_rng(3)
    x, t = rng.random((16, 10)), rng.integers(0, 4, 16)
    given = {"list": t.tolist(), "uint8": t.astype(np.uint8), "int32": t.astype(np.int32)}[labels]
    fused, layer = MLP(10, [8], 4, rng=1, backend=NUMBA), MLP(10, [8], 4, rng=1, backend=NUMBA)
    layer.fused = False
    assert fused.loss_and_grad(x, given) == layer.loss_and_grad(x, given)
    np.testing.assert_array_equal(fused.grads, layer.grads)
    out_of_range = t.copy()
    out_of_range[3] = 4
    for bad in (out_of_range, t[:15]):  # the second is the head's NumPy branch (the kernel needs one label a row)
        for model in (fused, layer):
            with pytest.raises((ValueError, IndexError)):
                model.loss_and_grad(x, bad)


def test_only_plain_relu_stacks_take_the_fused_step() -> None:
    for kwargs in ({}, {"weight_decay": 0.1}):
        model = MLP(5, [4, 4], 3, rng=0, backend=NUMBA, **kwargs)
        model.loss_and_grad(np.ones((6, 5)), np.zeros(6, dtype=np.int64))
        assert isinstance(model._step, FusedReluStep)
    for kwargs in ({"batch_norm": True}, {"dropout": 0.2}, {"activation": "tanh"}, {"activation": "sigmoid"}):
        model = MLP(5, [4, 4], 3, rng=0, backend=NUMBA, **kwargs)
        model.loss_and_grad(np.ones((6, 5)), np.zeros(6, dtype=np.int64))
        assert model._step is None, kwargs
    model = MLP(5, [4, 4], 3, rng=0, backend=NUMPY)  # the numpy backend: always the layers
    model.loss_and_grad(np.ones((6, 5)), np.zeros(6, dtype=np.int64))
    assert model._step is None and type(model.head) is SoftmaxCrossEntropy


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_inference_forward_equals_the_layer_path_and_evaluate_agrees(dtype: type) -> None:
    """What `evaluate` runs every eval_every steps: scores equal to the layers' train=False forward, bit for bit."""
    from descentlab.backend.compiled import FusedReluForward

    _, model = _train(True, "adam", dtype)  # trained a little: weights and biases of both signs
    x, t = np.random.default_rng(5).normal(size=(257, 30)).astype(dtype), np.arange(257) % 7
    fused_scores, fused_eval = model.forward(x), model.evaluate(x, t, chunk_size=100)
    assert isinstance(model._infer, FusedReluForward)  # the fused forward really ran
    model.fused = False
    layer_scores, layer_eval = model.forward(x), model.evaluate(x, t, chunk_size=100)
    assert fused_scores.dtype == layer_scores.dtype == dtype
    np.testing.assert_array_equal(fused_scores, layer_scores)
    assert fused_eval == layer_eval
    for kwargs in ({"batch_norm": True}, {"dropout": 0.2}, {"activation": "tanh"}):  # the layer path only
        other = MLP(30, [8, 8], 7, rng=0, backend=NUMBA, **kwargs)
        other.evaluate(x, t)
        assert other._infer is None, kwargs


def test_fused_step_gradient_matches_numerical_differences() -> None:
    """Backprop of the fused step against centered differences in float64 (as tests/test_gradients.py does)."""
    rng = np.random.default_rng(8)
    x, t = rng.normal(size=(9, 6)), rng.integers(0, 4, 9)
    model = MLP(6, [7, 5], 4, dtype=np.float64, weight_decay=0.03, rng=9, backend=NUMBA)
    model.loss_and_grad(x, t)
    assert isinstance(model._step, FusedReluStep)
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
