"""Gradient-descent update rules from *Deep Learning from Scratch*, chapter 6, for flat NumPy buffers.

Every optimizer updates ``params`` in place from ``grads``, so a network's flat float32 buffer is never upcast
or copied. With numba (see ``descentlab.kernels``) one compiled loop reads and writes each element once; without
it (or with ``DESCENTLAB_NUMBA=0``, for non-contiguous arrays, or under ``KERNEL_MIN_SIZE`` elements) a few
in-place ufuncs and scratch buffers allocated on first use do the same arithmetic. Both evaluate the formula in
the order of the book's code, in params' dtype, so they agree bit for bit and float64 results match the book.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any, ClassVar

import numpy as np

from descentlab import kernels

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "AdaGrad",
    "Adam",
    "AdamW",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "RMSprop",
    "make_optimizer",
]

# Smaller arrays (e.g. a 2-D objective's point) take the NumPy path: a few ufunc calls cost microseconds there,
# while the first compiled call in a process costs ~1 s of numba start-up.
KERNEL_MIN_SIZE = 4096

# A hyperparameter rule: the allowed range as the error message states it, and its test.
_Rule = tuple[str, Callable[[float], bool]]
_POSITIVE: _Rule = ("a finite number > 0", lambda x: 0.0 < x < math.inf)
_NON_NEGATIVE: _Rule = ("a finite number >= 0", lambda x: 0.0 <= x < math.inf)
_UNIT: _Rule = ("a number in [0, 1)", lambda x: 0.0 <= x < 1.0)


def _checked(owner: str, key: str, value: object, rule: _Rule) -> float:
    """Return ``value`` as a plain Python float, or raise a one-line ValueError naming owner, key and range.

    A plain float (not np.float64) keeps float32 arithmetic in float32 under NumPy's promotion rules.
    """
    allowed, ok = rule
    if isinstance(value, Real) and not isinstance(value, (bool, np.bool_)):
        number = float(value)
        if ok(number):
            return number
    raise ValueError(f"{owner}: {key} must be {allowed}, got {value!r}")


class Optimizer:
    """Shared plumbing: hyperparameter validation, lazy state allocation, argument checks, state dicts.

    A subclass declares ``name``, its hyperparameter ``_rules``, the names of its persistent per-element
    ``_slots`` and how many ``_scratch`` buffers it needs; ``_step(p, g, *slots, *scratch)`` then applies
    the formula with in-place ufuncs. ``_kernel`` names the compiled twin in ``descentlab.kernels``, called as
    ``kernel(p, g, *slots, *_kernel_scalars(dtype))`` on flat views. ``t`` counts completed updates.
    """

    name: ClassVar[str]
    _rules: ClassVar[dict[str, _Rule]]
    _slots: ClassVar[tuple[str, ...]] = ()
    _scratch: ClassVar[int] = 1
    _step: Callable[..., None]  # (p, g, *slots, *scratch) -> None, defined by each rule
    _kernel: ClassVar[str]
    lr: float

    def __init__(self, **hyperparams: float) -> None:
        for key, value in hyperparams.items():
            setattr(self, key, _checked(type(self).__name__, key, value, self._rules[key]))
        self.reset()

    @property
    def hyperparams(self) -> dict[str, float]:
        """Hyperparameters as plain floats, in declaration order (for logging and state dicts)."""
        return {key: getattr(self, key) for key in self._rules}

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.hyperparams.items())
        return f"{type(self).__name__}({args})"

    def reset(self) -> None:
        """Forget all accumulated state, as if freshly constructed (hyperparameters are kept)."""
        self.t = 0
        self._state: dict[str, np.ndarray] = {}
        self._buffers: tuple[np.ndarray, ...] = ()
        self._layout: tuple[tuple[int, ...], np.dtype] | None = None
        self._compiled: Callable[..., None] | None = None
        # The last compiled call's arrays: (params, grads, shape, dtype, flat views). The same two
        # arrays again skip the validation and view building (~4 us a step), as nothing they checked can differ.
        self._last: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A copy or pickle does not keep views as views: the copy rebuilds its own on its first update.
        return {**self.__dict__, "_last": None}

    def _kernel_scalars(self, f: Callable[[float], Any]) -> tuple[Any, ...]:  # pragma: no cover - interface
        """The kernel's scalar arguments for this step, each cast with ``f`` (the params' scalar type)."""
        raise NotImplementedError

    def update(self, params: np.ndarray, grads: np.ndarray) -> None:
        """Apply one update to ``params`` in place; ``grads`` must have the same shape and dtype."""
        last = self._last
        if (
            last is not None
            and params is last[0]
            and grads is last[1]
            and params.shape == last[2] == grads.shape
            and params.dtype == last[3] == grads.dtype
        ):
            self.t += 1
            self._compiled(*last[4], *self._kernel_scalars(last[3].type))  # type: ignore[misc]
            return
        owner = type(self).__name__
        if not isinstance(params, np.ndarray) or not isinstance(grads, np.ndarray):
            raise ValueError(
                f"{owner}.update: params and grads must be numpy arrays, "
                f"got {type(params).__name__} and {type(grads).__name__}"
            )
        if params.dtype.kind != "f":
            raise ValueError(f"{owner}.update: params must have a floating dtype, got {params.dtype}")
        if grads.shape != params.shape or grads.dtype != params.dtype:
            raise ValueError(
                f"{owner}.update: grads {grads.shape} {grads.dtype} do not match params {params.shape} {params.dtype}"
            )
        if self._layout is None:
            self._layout = (params.shape, params.dtype)
        elif self._layout != (params.shape, params.dtype):
            raise ValueError(
                f"{owner}.update: params changed from {self._layout[0]} {self._layout[1]} to "
                f"{params.shape} {params.dtype} between updates; call reset() first"
            )
        if not self._state and self._slots:  # first update, or first after reset
            self._state = {slot: np.zeros_like(params) for slot in self._slots}
        self.t += 1
        slots = self._state.values()
        if self._compiled is None and params.size >= KERNEL_MIN_SIZE:
            self._compiled = kernels.kernel(self._kernel)
        if (
            self._compiled is not None
            and params.size >= KERNEL_MIN_SIZE
            and params.flags.c_contiguous
            and grads.flags.c_contiguous
            and all(s.flags.c_contiguous for s in slots)
        ):
            views = (params.reshape(-1), grads.reshape(-1), *(s.reshape(-1) for s in slots))
            self._compiled(*views, *self._kernel_scalars(params.dtype.type))
            self._last = (params, grads, params.shape, params.dtype, views)
            return
        if not self._buffers:  # the NumPy path's scratch, allocated once
            self._buffers = tuple(np.empty_like(params) for _ in range(self._scratch))
        self._step(params, grads, *slots, *self._buffers)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically, as plain types (``np.savez(path, **sd)`` works).

        Keys: ``name``, ``t``, each hyperparameter, and each state array (copied; absent before the first
        update).
        """
        return {
            "name": self.name,
            "t": self.t,
            **self.hyperparams,
            **{slot: array.copy() for slot, array in self._state.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict`` (or ``np.load`` of one saved as ``.npz``) exactly, replacing all state."""
        owner = type(self).__name__
        name = np.asarray(state["name"]).item() if "name" in state else None
        if name != self.name:
            raise ValueError(f"{owner}.load_state_dict: state is for optimizer {name!r}, not {self.name!r}")
        t = np.asarray(state.get("t")).item()
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"{owner}.load_state_dict: t must be an int >= 0, got {t!r}")
        with_arrays = t > 0 and bool(self._slots)
        expected = {"name", "t", *self._rules, *(self._slots if with_arrays else ())}
        if set(state) != expected:
            raise ValueError(f"{owner}.load_state_dict: expected keys {sorted(expected)}, got {sorted(state)}")
        hyperparams = {
            key: _checked(owner, key, np.asarray(state[key]).item(), rule) for key, rule in self._rules.items()
        }
        arrays = {slot: np.array(state[slot], copy=True) for slot in self._slots if with_arrays}
        layouts = {(a.shape, a.dtype) for a in arrays.values()}
        if len(layouts) > 1 or any(dtype.kind != "f" for _, dtype in layouts):
            raise ValueError(f"{owner}.load_state_dict: state arrays must share one shape and a float dtype")
        self.reset()
        for key, value in hyperparams.items():
            setattr(self, key, value)
        self.t = t
        self._state = arrays
        self._layout = layouts.pop() if layouts else None


class SGD(Optimizer):
    """Plain gradient descent: p -= lr * g."""

    name = "sgd"
    _rules: ClassVar[dict[str, _Rule]] = {"lr": _POSITIVE}
    _kernel = "sgd_step"

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr=lr)

    def _step(self, p: np.ndarray, g: np.ndarray, buf: np.ndarray) -> None:
        p -= np.multiply(g, self.lr, out=buf)

    def _kernel_scalars(self, f: Callable[[float], Any]) -> tuple[Any, ...]:
        return (f(self.lr),)


class Momentum(Optimizer):
    """Heavy ball: v = momentum * v - lr * g; p += v."""

    name = "momentum"
    momentum: float
    _rules: ClassVar[dict[str, _Rule]] = {"lr": _POSITIVE, "momentum": _UNIT}
    _slots = ("v",)
    _kernel = "momentum_step"

    def __init__(self, lr: float = 0.01, *, momentum: float = 0.9) -> None:
        super().__init__(lr=lr, momentum=momentum)

    def _step(self, p: np.ndarray, g: np.ndarray, v: np.ndarray, buf: np.ndarray) -> None:
        v *= self.momentum
        v -= np.multiply(g, self.lr, out=buf)
        p += v

    def _kernel_scalars(self, f: Callable[[float], Any]) -> tuple[Any, ...]:
        return f(self.momentum), f(self.lr)


class Nesterov(Momentum):
    """Nesterov momentum in the book's form: p += mu^2 v - (1 + mu) lr g with the old v; then v = mu v - lr g.

    Algebraically identical to torch.optim.SGD(nesterov=True) with v = -lr * momentum_buffer. Same
    hyperparameters and state as Momentum; only the step differs.
    """

    name = "nesterov"
    _kernel = "nesterov_step"

    def _step(self, p: np.ndarray, g: np.ndarray, v: np.ndarray, buf: np.ndarray) -> None:
        mu, lr = self.momentum, self.lr
        p += np.multiply(v, mu * mu, out=buf)
        p -= np.multiply(g, (1.0 + mu) * lr, out=buf)
        v *= mu
        v -= np.multiply(g, lr, out=buf)

    def _kernel_scalars(self, f: Callable[[float], Any]) -> tuple[Any, ...]:
        mu, lr = self.momentum, self.lr
        return f(mu * mu), f((1.0 + mu) * lr), f(mu), f(lr)


class AdaGrad(Optimizer):
    """Per-element step shrinking with the summed squared gradient: h += g^2; p -= lr g / (sqrt(h) + eps)."""

    name = "adagrad"
    eps: float
    _rules: ClassVar[dict[str, _Rule]] = {"lr": _POSITIVE, "eps": _POSITIVE}
    _slots = ("h",)
    _scratch = 2
    _kernel = "adagrad_step"

    def __init__(self, lr: float = 0.01, *, eps: float = 1e-7) -> None:
        super().__init__(lr=lr, eps=eps)

    def _step(self, p: np.ndarray, g: np.ndarray, h: np.ndarray, denom: np.ndarray, num: np.ndarray) -> None:
        h += np.multiply(g, g, out=denom)
        np.sqrt(h, out=denom)
        denom += self.eps
        p -= np.divide(np.multiply(g, self.lr, out=num), denom, out=num)

    def _kernel_scalars(self, f: Callable[[float], Any]) -> tuple[Any, ...]:
        return f(self.lr), f(self.eps)


class RMSprop(Optimizer):
    """AdaGrad with a leaky average: h = rho h + (1 - rho) g^2; p -= lr g / (sqrt(h) + eps)."""

    name = "rmsprop"
    decay_rate: float
    eps: float
    _rules: ClassVar[dict[str, _Rule]] = {"lr": _POSITIVE, "decay_rate": _UNIT, "eps": _POSITIVE}
    _slots = ("h",)
    _scratch = 2
    _kernel = "rmsprop_step"

    def __init__(self, lr: float = 0.01, *, decay_rate: float = 0.99, eps: float = 1e-7) -> None:
        super().__init__(lr=lr, decay_rate=decay_rate, eps=eps)

    def _step(self, p: np.ndarray, g: np.ndarray, h: np.ndarray, denom: np.ndarray, num: np.ndarray) -> None:
        h *= self.decay_rate
        h += np.multiply(np.multiply(g, 1.0 - self.decay_rate, out=denom), g, out=denom)
        np.sqrt(h, out=denom)
        denom += self.eps
        p -= np.divide(np.multiply(g, self.lr, out=num), denom, out=num)

    def _kernel_scalars(self, f: Callable[[float], Any]) -> tuple[Any, ...]:
        return f(self.decay_rate), f(1.0 - self.decay_rate), f(self.lr), f(self.eps)


class Adam(Optimizer):
    """Adam with the bias correction folded into the step size (book form, eps added after the sqrt).

    lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t); m += (1 - beta1)(g - m); v += (1 - beta2)(g^2 - v);
    p -= lr_t m / (sqrt(v) + eps). lr_t is computed in Python floats, then applied in params' dtype.
    """

    name = "adam"
    beta1: float
    beta2: float
    eps: float
    _rules: ClassVar[dict[str, _Rule]] = {
        "lr": _POSITIVE,
        "beta1": _UNIT,
        "beta2": _UNIT,
        "eps": _POSITIVE,
    }
    _slots = ("m", "v")
    _scratch = 2
    _kernel = "adam_step"

    def __init__(self, lr: float = 0.001, *, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7) -> None:
        super().__init__(lr=lr, beta1=beta1, beta2=beta2, eps=eps)

    def _step(
        self, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, denom: np.ndarray, num: np.ndarray
    ) -> None:
        b1, b2 = self.beta1, self.beta2
        m += np.multiply(np.subtract(g, m, out=num), 1.0 - b1, out=num)
        v += np.multiply(np.subtract(np.multiply(g, g, out=num), v, out=num), 1.0 - b2, out=num)
        np.sqrt(v, out=denom)
        denom += self.eps
        p -= np.divide(np.multiply(m, self._lr_t(), out=num), denom, out=num)

    def _lr_t(self) -> float:
        """The step size with both bias corrections, in Python floats."""
        return self.lr * math.sqrt(1.0 - self.beta2**self.t) / (1.0 - self.beta1**self.t)

    def _decay(self) -> float:
        return 1.0

    def _kernel_scalars(self, f: Callable[[float], Any]) -> tuple[Any, ...]:
        return f(self._decay()), f(1.0 - self.beta1), f(1.0 - self.beta2), f(self._lr_t()), f(self.eps)


class AdamW(Adam):
    """Adam plus decoupled weight decay applied first, torch's convention: p *= 1 - lr * weight_decay."""

    name = "adamw"
    weight_decay: float
    _rules: ClassVar[dict[str, _Rule]] = {**Adam._rules, "weight_decay": _NON_NEGATIVE}

    def __init__(
        self,
        lr: float = 0.001,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-7,
        weight_decay: float = 0.01,
    ) -> None:
        Optimizer.__init__(self, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)

    def _step(
        self, p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, denom: np.ndarray, num: np.ndarray
    ) -> None:
        if self.weight_decay:
            p *= self._decay()
        super()._step(p, g, m, v, denom, num)

    def _decay(self) -> float:
        return 1.0 - self.lr * self.weight_decay


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW)
}


def make_optimizer(name: str, **hyperparams: float) -> Optimizer:
    """Build an optimizer from a config name (case-insensitive) and keyword hyperparameters."""
    key = name.lower() if isinstance(name, str) else None
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[key]
    unknown = [k for k in hyperparams if k not in cls._rules]
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown hyperparameter(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(cls._rules)}"
        )
    return cls(**hyperparams)
