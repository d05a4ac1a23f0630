"""Tests for descentlab.optim: paths against independent scalar references, validation, dtype, state."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from descentlab.backend import numba_available, select
from descentlab.objectives import BOOK, descend
from descentlab.optim import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    AdamW,
    Momentum,
    Nesterov,
    RMSprop,
    make_optimizer,
    rules,
)

START = (-7.0, 2.0)
STEPS = 30
# Figure 6-8's learning rates, plus Nesterov and RMSprop at rates that give a sensible path.
BOOK_LR = {"sgd": 0.95, "momentum": 0.1, "nesterov": 0.1, "adagrad": 1.5, "rmsprop": 0.1, "adam": 0.3}


# --- independent scalar references: plain Python floats, one coordinate at a time ----------------------
# f(x, y) = x^2/20 + y^2 is separable, so each coordinate is its own 1-D problem with gradient c * z.


def _reference_coordinate(rule: str, lr: float, z: float, c: float, steps: int) -> list[float]:
    """Positions of one coordinate under ``rule`` with gradient ``c * z``, written from the formulas."""
    mu, rho, b1, b2, eps = 0.9, 0.99, 0.9, 0.999, 1e-7
    v = h = m = s = 0.0
    out = [z]
    for t in range(1, steps + 1):
        g = c * z
        if rule == "sgd":
            z = z - lr * g
        elif rule == "momentum":
            v = mu * v - lr * g
            z = z + v
        elif rule == "nesterov":
            z = z + mu * mu * v - (1 + mu) * lr * g
            v = mu * v - lr * g
        elif rule == "adagrad":
            h = h + g * g
            z = z - lr * g / (math.sqrt(h) + eps)
        elif rule == "rmsprop":
            h = rho * h + (1 - rho) * g * g
            z = z - lr * g / (math.sqrt(h) + eps)
        elif rule == "adam":
            # Kingma & Ba's form; the book's eps after sqrt(v) equals eps / sqrt(1 - b2^t) after sqrt(v_hat).
            m = b1 * m + (1 - b1) * g
            s = b2 * s + (1 - b2) * g * g
            m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
            z = z - lr * m_hat / (math.sqrt(s_hat) + eps / math.sqrt(1 - b2**t))
        else:
            raise AssertionError(rule)
        out.append(z)
    return out


def _reference_path(rule: str, lr: float) -> np.ndarray:
    xs = _reference_coordinate(rule, lr, START[0], 0.1, STEPS)
    ys = _reference_coordinate(rule, lr, START[1], 2.0, STEPS)
    return np.array([xs, ys]).T


@pytest.mark.parametrize(("rule", "lr"), BOOK_LR.items())
def test_book_path_matches_scalar_reference(rule: str, lr: float) -> None:
    path = descend(BOOK, make_optimizer(rule, lr=lr), START, STEPS)
    expected = _reference_path(rule, lr)
    assert path.shape == (STEPS + 1, 2)
    assert np.max(np.abs(path - expected)) <= 1e-10
    assert BOOK(path[-1]) < BOOK(START)  # sanity: the reference itself is not degenerate


@pytest.mark.parametrize(
    ("rule", "rows"),
    [
        # (-7, 2) -> (-7 + 0.95 * 0.7, 2 - 0.95 * 4) -> (x + 0.95 * 0.6335, y + 0.95 * 3.6)
        ("sgd", [(-6.335, -1.8), (-5.733175, 1.62)]),
        # v = -0.1 g = (0.07, -0.4); then v = 0.9 v - 0.1 (-0.693, 3.2) = (0.1323, -0.68)
        ("momentum", [(-6.93, 1.6), (-6.7977, 0.92)]),
        # first step with v = 0: p -= 1.9 * 0.1 * g
        ("nesterov", [(-6.867, 1.24)]),
    ],
)
def test_hand_computed_first_steps(rule: str, rows: list[tuple[float, float]]) -> None:
    path = descend(BOOK, make_optimizer(rule, lr=BOOK_LR[rule]), START, len(rows))
    np.testing.assert_allclose(path[1:], rows, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("rule", "first"),
    # The first adaptive step moves every coordinate by about k * lr against the gradient's sign
    # (k = 1 for AdaGrad and Adam, 1 / sqrt(1 - rho) = 10 for RMSprop), up to the eps term.
    [("adagrad", (-5.5, 0.5)), ("adam", (-6.7, 1.7)), ("rmsprop", (-6.0, 1.0))],
)
def test_first_adaptive_step_is_sign_step(rule: str, first: tuple[float, float]) -> None:
    path = descend(BOOK, make_optimizer(rule, lr=BOOK_LR[rule]), START, 1)
    np.testing.assert_allclose(path[1], first, rtol=0, atol=1e-5)


def test_sgd_book_path_closed_form() -> None:
    # x_{k+1} = (1 - 0.95/10) x_k and y_{k+1} = (1 - 0.95*2) y_k
    path = descend(BOOK, SGD(lr=0.95), START, STEPS)
    k = np.arange(STEPS + 1)
    np.testing.assert_allclose(path[:, 0], -7.0 * 0.905**k, rtol=1e-12)
    np.testing.assert_allclose(path[:, 1], 2.0 * (-0.9) ** k, rtol=1e-12)


# --- agreement with other published forms ------------------------------------------------------------


def _grad_sequence(n: int, size: int, dtype: type = np.float64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(size).astype(dtype) for _ in range(n)]


def test_nesterov_matches_torch_form() -> None:
    """torch.optim.SGD(momentum=mu, nesterov=True): b = mu b + g; p -= lr (g + mu b)."""
    lr, mu = 0.05, 0.8
    p = np.linspace(-1.0, 1.0, 7)
    q, b = p.copy(), np.zeros_like(p)
    opt = Nesterov(lr=lr, momentum=mu)
    for g in _grad_sequence(25, p.size):
        opt.update(p, g)
        b = mu * b + g
        q = q - lr * (g + mu * b)
    np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)


def test_momentum_matches_torch_form() -> None:
    """torch.optim.SGD(momentum=mu): b = mu b + g; p -= lr b (v = -lr b for a constant lr)."""
    lr, mu = 0.05, 0.8
    p = np.linspace(-1.0, 1.0, 7)
    q, b = p.copy(), np.zeros_like(p)
    opt = Momentum(lr=lr, momentum=mu)
    for g in _grad_sequence(25, p.size):
        opt.update(p, g)
        b = mu * b + g
        q = q - lr * b
    np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adamw_without_decay_equals_adam_exactly(dtype: type) -> None:
    p1 = np.linspace(-2.0, 2.0, 11).astype(dtype)
    p2 = p1.copy()
    adam, adamw = Adam(lr=0.01), AdamW(lr=0.01, weight_decay=0.0)
    for g in _grad_sequence(20, p1.size, dtype):
        adam.update(p1, g)
        adamw.update(p2, g)
    assert np.array_equal(p1, p2)


def test_adamw_decays_before_the_adam_step() -> None:
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-7
    p = np.linspace(-2.0, 2.0, 11)
    q, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    opt = AdamW(lr=lr, weight_decay=wd)
    for t, g in enumerate(_grad_sequence(20, p.size), start=1):
        opt.update(p, g)
        q = q - lr * wd * q
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        q = q - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
    np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
    undecayed, adam = np.linspace(-2.0, 2.0, 11), Adam(lr=lr)
    for g in _grad_sequence(20, p.size):
        adam.update(undecayed, g)
    assert np.max(np.abs(p - undecayed)) > 1e-4  # the decay term is really applied


# --- construction, registry, validation --------------------------------------------------------------

DEFAULTS = {
    "sgd": {"lr": 0.01},
    "momentum": {"lr": 0.01, "momentum": 0.9},
    "nesterov": {"lr": 0.01, "momentum": 0.9},
    "adagrad": {"lr": 0.01, "eps": 1e-7},
    "rmsprop": {"lr": 0.01, "decay_rate": 0.99, "eps": 1e-7},
    "adam": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
    "adamw": {"lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.01},
}


def test_registry_and_defaults() -> None:
    classes = [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW]
    assert list(OPTIMIZERS.items()) == list(zip(DEFAULTS, classes, strict=True))
    for name, cls in OPTIMIZERS.items():
        opt = cls()
        assert opt.name == name
        assert opt.hyperparams == DEFAULTS[name]


def test_every_hyperparameter_is_a_keyword_and_stored_as_float() -> None:
    opt = make_optimizer("AdamW", lr=np.float32(0.5), beta1=0, beta2=np.float64(0.5), eps=1, weight_decay=0)
    assert isinstance(opt, AdamW)
    assert opt.hyperparams == {"lr": 0.5, "beta1": 0.0, "beta2": 0.5, "eps": 1.0, "weight_decay": 0.0}
    assert all(type(value) is float for value in opt.hyperparams.values())
    assert RMSprop(decay_rate=0.5).decay_rate == 0.5
    assert Nesterov(momentum=0.0).momentum == 0.0


_RANGES = {
    "lr": ("a finite number > 0", [0, 0.0, -1.0, math.nan, math.inf, True, "0.1", None]),
    "eps": ("a finite number > 0", [0.0, -1e-8, math.inf, math.nan]),
    "weight_decay": ("a finite number >= 0", [-0.01, -math.inf, math.inf, math.nan, False]),
    **{
        key: ("a number in [0, 1)", [-0.1, 1, 1.0, 1.5, math.nan, math.inf, True, "0.9", np.bool_(False)])
        for key in ("momentum", "decay_rate", "beta1", "beta2")
    },
}
_BAD_CASES = [
    pytest.param(cls, key, bad, id=f"{name}-{key}-{bad!r}")
    for name, cls in OPTIMIZERS.items()
    for key in DEFAULTS[name]
    for bad in _RANGES[key][1]
]


@pytest.mark.parametrize(("cls", "key", "bad"), _BAD_CASES)
def test_validation_message_names_class_parameter_range_and_value(cls: type, key: str, bad: object) -> None:
    with pytest.raises(ValueError) as excinfo:
        cls(**{key: bad})
    assert str(excinfo.value) == f"{cls.__name__}: {key} must be {_RANGES[key][0]}, got {bad!r}"


def test_validation_example_from_the_spec() -> None:
    with pytest.raises(ValueError, match=r"^Adam: lr must be a finite number > 0, got -1\.0$"):
        Adam(lr=-1.0)


def test_unknown_optimizer_name_lists_allowed_names() -> None:
    with pytest.raises(ValueError) as excinfo:
        make_optimizer("adamax")
    message = str(excinfo.value)
    assert "'adamax'" in message
    assert all(name in message for name in OPTIMIZERS)
    with pytest.raises(ValueError, match="allowed"):
        make_optimizer(None)  # type: ignore[arg-type]


def test_unknown_hyperparameter_lists_allowed_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        make_optimizer("sgd", lr=0.1, momentum=0.9)
    assert str(excinfo.value) == "SGD: unknown hyperparameter(s) 'momentum'; allowed: lr"
    with pytest.raises(ValueError, match=r"'beta3'.*allowed: lr, beta1, beta2, eps$"):
        make_optimizer("adam", beta3=0.5)


# --- arrays: dtype, in-place, shape checks, allocation -----------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_stays_float32_and_updates_in_place(name: str) -> None:
    base = np.random.default_rng(1).standard_normal(60).astype(np.float32)
    params = base.reshape(3, 4, 5)  # any shape; a view, so in-place writes must reach ``base``
    before = params.copy()
    opt = make_optimizer(name)
    for g in _grad_sequence(3, 60, np.float32):
        opt.update(params, g.reshape(3, 4, 5))
    assert params.dtype == np.float32
    assert np.shares_memory(params, base)
    assert not np.array_equal(params, before)
    state = opt.state_dict()
    assert all(state[slot].dtype == np.float32 for slot in ("m", "v", "h") if slot in state)


def test_float32_arithmetic_is_float32_not_rounded_float64() -> None:
    """The book's expressions evaluated with float32 scalars give the same bits: nothing was upcast."""
    f32 = np.float32
    p = np.random.default_rng(2).standard_normal(1000).astype(f32)
    q, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    sgd_p, sgd_q = p.copy(), p.copy()
    adam, sgd = Adam(lr=0.3), SGD(lr=0.1)
    for t, g in enumerate(_grad_sequence(5, p.size, f32), start=1):
        adam.update(p, g)
        lr_t = f32(0.3 * math.sqrt(1.0 - 0.999**t) / (1.0 - 0.9**t))
        m += f32(1 - 0.9) * (g - m)
        v += f32(1 - 0.999) * (g * g - v)
        q -= lr_t * m / (np.sqrt(v) + f32(1e-7))
        sgd.update(sgd_p, g)
        sgd_q -= f32(0.1) * g
    assert q.dtype == np.float32
    assert np.array_equal(p, q)
    assert np.array_equal(sgd_p, sgd_q)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_no_full_size_allocation_after_first_update(name: str) -> None:
    """The numba backend's kernels allocate nothing per step (the numpy backend's book-form rules do)."""
    params = np.zeros(100_000, dtype=np.float32)  # 400 kB
    grads = np.full_like(params, 0.5)
    opt = make_optimizer(name, backend=select("numba"))
    opt.update(params, grads)
    tracemalloc.start()
    try:
        for _ in range(3):
            opt.update(params, grads)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_mismatched_arrays_are_rejected(name: str) -> None:
    opt = make_optimizer(name)
    p = np.zeros(4)
    with pytest.raises(ValueError, match=r"grads \(5,\) float64 do not match params \(4,\) float64"):
        opt.update(p, np.zeros(5))
    with pytest.raises(ValueError, match="float32 do not match"):
        opt.update(p, np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="floating dtype"):
        opt.update(np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="numpy arrays"):
        opt.update([0.0] * 4, [0.0] * 4)  # type: ignore[arg-type]
    opt.update(p, np.ones(4))
    with pytest.raises(ValueError, match=r"params changed from \(4,\) float64 to \(3,\) float64"):
        opt.update(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="params changed"):
        opt.update(np.zeros(4, dtype=np.float32), np.ones(4, dtype=np.float32))
    opt.reset()
    opt.update(np.zeros(3), np.ones(3))  # reset allows a new layout


# --- state ---------------------------------------------------------------------------------------------

SLOTS = {"sgd": (), "momentum": ("v",), "nesterov": ("v",), "adagrad": ("h",), "rmsprop": ("h",)}
SLOTS |= {"adam": ("m", "v"), "adamw": ("m", "v")}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_keys_and_plain_types(name: str) -> None:
    opt = make_optimizer(name)
    assert set(opt.state_dict()) == {"name", "t", *DEFAULTS[name]}
    opt.update(np.zeros(3, dtype=np.float32), np.ones(3, dtype=np.float32))
    state = opt.state_dict()
    assert set(state) == {"name", "t", *DEFAULTS[name], *SLOTS[name]}
    assert state["name"] == name and state["t"] == 1 and type(state["t"]) is int
    for slot in SLOTS[name]:
        state[slot][:] = 123.0  # a copy: editing it must not touch the optimizer
        assert not np.any(opt.state_dict()[slot] == 123.0)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resume_through_npz_is_bit_identical(name: str, tmp_path) -> None:
    n_steps, k = 12, 5
    hyper = {"lr": 0.05} | ({"weight_decay": 0.1} if name == "adamw" else {})
    start = np.random.default_rng(3).standard_normal(257).astype(np.float32)
    grads = _grad_sequence(n_steps, start.size, np.float32, seed=4)

    straight, opt = start.copy(), make_optimizer(name, **hyper)
    for g in grads:
        opt.update(straight, g)

    resumed, first = start.copy(), make_optimizer(name, **hyper)
    for g in grads[:k]:
        first.update(resumed, g)
    np.savez(tmp_path / "opt.npz", **first.state_dict())
    del first
    with np.load(tmp_path / "opt.npz") as saved:
        second = make_optimizer(str(saved["name"]))  # defaults first: load must restore the hyperparameters
        second.load_state_dict(saved)
    assert second.hyperparams == opt.hyperparams and second.t == k
    for g in grads[k:]:
        second.update(resumed, g)

    assert resumed.dtype == np.float32
    assert resumed.tobytes() == straight.tobytes()
    assert second.t == opt.t == n_steps


def test_load_state_dict_rejects_foreign_or_incomplete_state() -> None:
    adam = Adam()
    adam.update(np.zeros(2), np.ones(2))
    state = adam.state_dict()
    with pytest.raises(ValueError, match="state is for optimizer 'adam', not 'adamw'"):
        AdamW().load_state_dict(state)
    with pytest.raises(ValueError, match="expected keys"):
        Adam().load_state_dict({k: v for k, v in state.items() if k != "v"})
    with pytest.raises(ValueError, match=r"Adam: beta1 must be a number in \[0, 1\), got 1\.5"):
        Adam().load_state_dict(state | {"beta1": 1.5})
    with pytest.raises(ValueError, match="one shape"):
        Adam().load_state_dict(state | {"v": np.zeros(3)})


def test_loaded_state_keeps_its_layout() -> None:
    src = Momentum()
    src.update(np.zeros(4, dtype=np.float32), np.ones(4, dtype=np.float32))
    dst = Momentum()
    dst.load_state_dict(src.state_dict())
    with pytest.raises(ValueError, match="params changed"):
        dst.update(np.zeros(4), np.ones(4))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_reset_gives_a_fresh_optimizer(name: str) -> None:
    grads = _grad_sequence(4, 5)
    p1, p2 = np.ones(5), np.ones(5)
    used = make_optimizer(name)
    for g in grads:
        used.update(np.ones(5), g)
    used.reset()
    assert used.t == 0 and set(used.state_dict()) == {"name", "t", *DEFAULTS[name]}
    fresh = make_optimizer(name)
    for g in grads:
        used.update(p1, g)
        fresh.update(p2, g)
    assert np.array_equal(p1, p2)


# --- property ------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    curvature=st.lists(st.floats(0.1, 10.0), min_size=1, max_size=8),
    fraction=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
)
def test_sgd_decreases_a_convex_quadratic_below_the_stability_limit(
    curvature: list[float], fraction: float, seed: int
) -> None:
    """For f = sum a_i x_i^2 / 2 and lr <= 1 / max(a), each SGD step lowers f (unless already at 0)."""
    a = np.array(curvature)
    x = np.random.default_rng(seed).uniform(-5, 5, a.size)
    opt = SGD(lr=fraction / a.max())
    f = float(0.5 * a @ x**2)
    for _ in range(5):
        opt.update(x, a * x)
        f_new = float(0.5 * a @ x**2)
        assert f_new < f or f == 0.0
        f = f_new


# --- backends: chosen once, by name; the rules behave the same under each (tests/test_conformance.py) ---------


def test_select_names_and_the_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import descentlab.backend as backend

    assert select("numpy").name == "numpy" and select("numpy") is select("numpy")
    assert select().name == ("numba" if backend.numba_available() else "numpy") == select("auto").name
    for bad in ("x", "NumPy", "", None):
        with pytest.raises(ValueError) as excinfo:
            select(bad)  # type: ignore[arg-type]
        assert str(excinfo.value) == f"numerics.backend must be one of auto, numpy, numba, got {bad!r}"
    monkeypatch.setattr(backend, "numba_available", lambda: False)
    assert select("auto").name == "numpy"  # auto falls back
    with pytest.raises(ValueError, match=r"^numerics.backend='numba' needs numba, which is not installed; "
                                         r"allowed: auto, numpy"):
        select("numba")


def test_no_environment_variable_chooses_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESCENTLAB_NUMBA", "0")  # the switch this replaced is ignored
    assert select("auto").name == select().name == make_optimizer("sgd").backend.name
    assert make_optimizer("adam", backend=select("numpy")).backend.name == "numpy"


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_numpy_backend_runs_the_rule_itself(name: str) -> None:
    """The rule's `update` is the code that runs: a rule written wrongly would fail every test here."""
    opt = make_optimizer(name, backend=select("numpy"))
    assert opt._step == opt.rule.update and isinstance(opt.rule, rules.RULES[name])
    p, g = np.ones(5000, np.float32), np.full(5000, 0.5, np.float32)
    opt.update(p, g)
    state = opt.rule.init(np.ones(5000, np.float32))
    q = np.ones(5000, np.float32)
    state = opt.rule.update(g, state, q)
    assert state.t == opt.t == 1 and np.array_equal(p, q) and not np.array_equal(p, 1.0)
