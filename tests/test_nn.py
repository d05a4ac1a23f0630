"""The MLP's structure: one flat buffer, views into it, dtypes, init scales and state round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from descentlab.nn import MLP, FlatParameters, init_std


def test_parameters_are_views_into_one_flat_buffer() -> None:
    model = MLP(784, [100, 100, 100, 100], 10, rng=0)
    assert model.num_params == 784 * 100 + 3 * 100 * 100 + 100 * 10 + 4 * 100 + 10
    assert model.params.shape == (model.num_params,) and model.params.flags.c_contiguous
    assert model.grads.shape == model.params.shape
    for name in model.flat:
        assert np.shares_memory(model.flat[name], model.params), name
        assert np.shares_memory(model.flat.grad_of(name), model.grads), name
    # An in-place update of the flat buffer is seen by the layers: the loss changes.
    rng = np.random.default_rng(0)
    x, t = rng.random((16, 784), dtype=np.float32), rng.integers(0, 10, 16)
    before = model.loss(x, t)
    model.params[:] = 0
    assert model.flat["W1"].sum() == 0
    assert model.loss(x, t) == pytest.approx(np.log(10), rel=1e-6)
    assert before != pytest.approx(np.log(10), rel=1e-3)


def test_loss_and_grad_fills_the_flat_gradient_buffer_and_keeps_dtype() -> None:
    rng = np.random.default_rng(1)
    x, t = rng.random((32, 20), dtype=np.float32), rng.integers(0, 3, 32)
    for dtype in (np.float32, np.float64):
        model = MLP(20, [8, 8], 3, batch_norm=True, dropout=0.1, dtype=dtype, rng=2)
        loss = model.loss_and_grad(x, t)
        assert model.grads.dtype == dtype and model.params.dtype == dtype
        assert model.forward(x).dtype == dtype
        assert np.isfinite(loss) and loss > 0
        assert np.count_nonzero(model.grads) > 0.5 * model.num_params


def test_float32_and_float64_models_from_one_seed_start_from_the_same_weights() -> None:
    a = MLP(30, [10], 4, dtype=np.float32, rng=5)
    b = MLP(30, [10], 4, dtype=np.float64, rng=5)
    np.testing.assert_array_equal(a.params, b.params.astype(np.float32))


@pytest.mark.parametrize(("weight_init", "expected"), [("he", np.sqrt(2 / 784)), ("xavier", np.sqrt(1 / 784)),
                                                       (0.01, 0.01)])
def test_weight_init_scales(weight_init, expected: float) -> None:
    model = MLP(784, [400], 10, weight_init=weight_init, rng=0)
    assert init_std(weight_init, 784) == pytest.approx(expected)
    assert model.flat["W1"].std() == pytest.approx(expected, rel=0.02)
    assert np.all(model.flat["b1"] == 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_init": "glorot"}, "weight_init must be a positive float, 'xavier' or 'he', got 'glorot'"),
        ({"weight_init": -0.1}, "weight_init must be a positive float"),
        ({"activation": "gelu"}, "activation must be one of ['relu', 'sigmoid', 'tanh'], got 'gelu'"),
        ({"hidden_sizes": [10, 0]}, "hidden_sizes[1] must be an integer >= 1, got 0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0, got -1.0"),
        ({"dtype": "float16"}, "dtype must be float32 or float64, got float16"),
    ],
)
def test_bad_model_arguments_name_the_value_and_what_is_allowed(kwargs: dict, message: str) -> None:
    args = {"input_size": 4, "hidden_sizes": [3], "output_size": 2, **kwargs}
    with pytest.raises(ValueError) as info:
        MLP(**args)
    assert message in str(info.value)


def test_state_dict_round_trip_includes_batch_norm_running_statistics() -> None:
    rng = np.random.default_rng(3)
    x, t = rng.random((64, 12), dtype=np.float32), rng.integers(0, 3, 64)
    model = MLP(12, [6, 6], 3, batch_norm=True, rng=4)
    for _ in range(3):
        model.loss_and_grad(x, t)
        model.params[:] -= 0.1 * model.grads
    state = model.state_dict()
    assert {"W1", "b1", "gamma1", "beta1", "running_mean1", "running_var2", "W3", "b3"} <= set(state)
    assert not np.all(state["running_mean1"] == 0)  # training moved the running statistics

    other = MLP(12, [6, 6], 3, batch_norm=True, rng=99)
    assert not np.array_equal(other.forward(x), model.forward(x))
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.forward(x), model.forward(x))
    with pytest.raises(ValueError, match="missing"):
        other.load_state_dict({k: v for k, v in state.items() if k != "W2"})


def test_flat_parameters_reject_a_wrong_shape() -> None:
    flat = FlatParameters({"a": (2, 3), "b": (3,)}, np.float64)
    assert flat.size == 9
    flat.load_dict({"a": np.ones((2, 3)), "b": np.arange(3.0)})
    np.testing.assert_array_equal(flat.data, [1, 1, 1, 1, 1, 1, 0, 1, 2])
    with pytest.raises(ValueError, match=r"parameter 'b' has shape \(4,\), expected \(3,\)"):
        flat.load_dict({"a": np.ones((2, 3)), "b": np.ones(4)})


def test_evaluate_is_one_chunked_pass_matching_the_unchunked_loss() -> None:
    rng = np.random.default_rng(6)
    x, t = rng.random((1000, 16), dtype=np.float32), rng.integers(0, 4, 1000)
    model = MLP(16, [12], 4, dtype=np.float64, rng=7)
    loss, acc = model.evaluate(x, t, chunk_size=300)
    assert loss == pytest.approx(model.loss(x, t), rel=1e-12)
    assert acc == pytest.approx(np.mean(model.predict(x) == t))


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


def test_the_model_carries_its_backend_and_the_default_is_shared() -> None:
    from descentlab.backend import select

    numpy_backend = select("numpy")
    model = MLP(6, [5], 3, rng=8, backend=numpy_backend)
    assert model.backend is numpy_backend and type(model.head).__name__ == "SoftmaxCrossEntropy"
    assert MLP(6, [5], 3, rng=8).backend is select("auto") is MLP(6, [5], 3, rng=9).backend
