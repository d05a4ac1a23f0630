"""The update rules of *Deep Learning from Scratch*, chapter 6, each written once, as the spec.

Each rule reads line by line like the book's ``common/optimizer.py``, with the state made explicit in optax's
style: ``init(params) -> State`` and ``update(grads, state, params) -> State``. As in the book, ``update``
changes ``params`` (and the state's slot arrays) in place; the returned State carries the new step count ``t``.

This is what the numpy backend runs. The numba backend's kernels (``descentlab.backend.kernels``) evaluate the
same operations in the same order and dtype, and tests/test_conformance.py checks them bit for bit against these.

Arithmetic notes, kept where the book's literal form would change bits:

- A Python float scalar times a float32 array stays float32 (NumPy casts the scalar), so hyperparameters are
  plain floats. The book's ``np.sqrt`` on the bias correction would make ``lr_t`` an ``np.float64`` and upcast
  a float32 network, so Adam computes it with ``math.sqrt``.
- ``x * y`` and ``y * x`` round identically, and so do ``g**2`` and ``g * g``; grouping is the book's.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import ClassVar, NamedTuple

import numpy as np

__all__ = ["RULES", "SGD", "AdaGrad", "Adam", "AdamW", "Momentum", "Nesterov", "RMSprop", "Rule", "State"]

# A hyperparameter check: the allowed range as the error message states it, and its test.
Check = tuple[str, Callable[[float], bool]]
POSITIVE: Check = ("a finite number > 0", lambda x: 0.0 < x < math.inf)
NON_NEGATIVE: Check = ("a finite number >= 0", lambda x: 0.0 <= x < math.inf)
UNIT: Check = ("a number in [0, 1)", lambda x: 0.0 <= x < 1.0)


def checked(owner: str, key: str, value: object, check: Check) -> float:
    """``value`` as a plain Python float, or a one-line ValueError naming owner, key, allowed range and value.

    A plain float (not np.float64) keeps float32 arithmetic in float32 under NumPy's promotion rules.
    """
    allowed, ok = check
    if isinstance(value, Real) and not isinstance(value, (bool, np.bool_)):
        number = float(value)
        if ok(number):
            return number
    raise ValueError(f"{owner}: {key} must be {allowed}, got {value!r}")


class State(NamedTuple):
    """An optimizer's state: ``t`` completed updates and the per-element slot arrays (``v``, ``h``, ``m``...)."""

    t: int
    slots: dict[str, np.ndarray]


@dataclass(frozen=True)
class Rule:
    """Hyperparameters (dataclass fields, validated on construction) and the update they define."""

    name: ClassVar[str]
    checks: ClassVar[dict[str, Check]]
    slots: ClassVar[tuple[str, ...]] = ()
    lr: float

    def __post_init__(self) -> None:
        for key, check in self.checks.items():
            object.__setattr__(self, key, checked(type(self).__name__, key, getattr(self, key), check))

    @property
    def hyperparams(self) -> dict[str, float]:
        """Hyperparameters by name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def init(self, params: np.ndarray) -> State:
        """The state before the first update: t = 0 and zeroed slots shaped like ``params``."""
        return State(0, {slot: np.zeros_like(params) for slot in self.slots})

    def update(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class SGD(Rule):
    """Plain gradient descent."""

    name: ClassVar[str] = "sgd"
    checks: ClassVar[dict[str, Check]] = {"lr": POSITIVE}
    lr: float = 0.01

    def update(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:
        params -= self.lr * grads
        return State(state.t + 1, state.slots)


@dataclass(frozen=True)
class Momentum(Rule):
    """Heavy ball: the velocity ``v`` accumulates the gradient steps."""

    name: ClassVar[str] = "momentum"
    checks: ClassVar[dict[str, Check]] = {"lr": POSITIVE, "momentum": UNIT}
    slots: ClassVar[tuple[str, ...]] = ("v",)
    lr: float = 0.01
    momentum: float = 0.9

    def update(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:
        v = state.slots["v"]
        v *= self.momentum  # book: self.v[key] = self.momentum*self.v[key] - self.lr*grads[key]
        v -= self.lr * grads
        params += v
        return State(state.t + 1, state.slots)


@dataclass(frozen=True)
class Nesterov(Momentum):
    """Nesterov's accelerated gradient in the book's form: ``params`` moves with the old ``v`` first.

    Algebraically torch.optim.SGD(nesterov=True) with v = -lr * momentum_buffer.
    """

    name: ClassVar[str] = "nesterov"

    def update(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:
        v = state.slots["v"]
        params += self.momentum * self.momentum * v
        params -= (1 + self.momentum) * self.lr * grads
        v *= self.momentum
        v -= self.lr * grads
        return State(state.t + 1, state.slots)


@dataclass(frozen=True)
class AdaGrad(Rule):
    """Per-element steps that shrink with the summed squared gradient ``h``."""

    name: ClassVar[str] = "adagrad"
    checks: ClassVar[dict[str, Check]] = {"lr": POSITIVE, "eps": POSITIVE}
    slots: ClassVar[tuple[str, ...]] = ("h",)
    lr: float = 0.01
    eps: float = 1e-7

    def update(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:
        h = state.slots["h"]
        h += grads * grads
        params -= self.lr * grads / (np.sqrt(h) + self.eps)
        return State(state.t + 1, state.slots)


@dataclass(frozen=True)
class RMSprop(Rule):
    """AdaGrad with a leaky average of the squared gradient."""

    name: ClassVar[str] = "rmsprop"
    checks: ClassVar[dict[str, Check]] = {"lr": POSITIVE, "decay_rate": UNIT, "eps": POSITIVE}
    slots: ClassVar[tuple[str, ...]] = ("h",)
    lr: float = 0.01
    decay_rate: float = 0.99
    eps: float = 1e-7

    def update(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:
        h = state.slots["h"]
        h *= self.decay_rate
        h += (1 - self.decay_rate) * grads * grads
        params -= self.lr * grads / (np.sqrt(h) + self.eps)
        return State(state.t + 1, state.slots)


@dataclass(frozen=True)
class Adam(Rule):
    """Adam with the bias correction folded into the step size, eps added after the sqrt (the book's form)."""

    name: ClassVar[str] = "adam"
    checks: ClassVar[dict[str, Check]] = {"lr": POSITIVE, "beta1": UNIT, "beta2": UNIT, "eps": POSITIVE}
    slots: ClassVar[tuple[str, ...]] = ("m", "v")
    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7

    def lr_t(self, t: int) -> float:
        """The step size of update ``t`` (1-based) with both bias corrections, in Python floats.

        book: lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        """
        return self.lr * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)

    def update(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:
        t = state.t + 1
        m, v = state.slots["m"], state.slots["v"]
        lr_t = self.lr_t(t)
        m += (1 - self.beta1) * (grads - m)
        v += (1 - self.beta2) * (grads**2 - v)
        params -= lr_t * m / (np.sqrt(v) + self.eps)
        return State(t, state.slots)


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam plus decoupled weight decay applied first (torch's convention): p *= 1 - lr * weight_decay."""

    name: ClassVar[str] = "adamw"
    checks: ClassVar[dict[str, Check]] = {**Adam.checks, "weight_decay": NON_NEGATIVE}
    weight_decay: float = 0.01

    def update(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:
        if self.weight_decay:
            params *= 1 - self.lr * self.weight_decay
        return super().update(grads, state, params)


RULES: dict[str, type[Rule]] = {rule.name: rule for rule in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW)}
