"""Optimizers for flat NumPy buffers: the chapter-6 update rules (``optim/rules.py``) with their state and backend.

``rules.py`` is the spec: each rule once, in the book's form, with explicit ``init``/``update`` state. An
``Optimizer`` here is the stateful object training uses: it holds a rule, its ``State`` and the backend that
runs it (``descentlab.backend``: the numpy backend calls the rule itself, the numba backend a compiled kernel
that gives the same bits), and adds the argument checks, ``state_dict``/``load_state_dict`` and ``reset``.
Every update changes ``params`` in place, so a network's flat float32 buffer is never upcast or copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from descentlab.backend import Backend, select
from descentlab.optim import rules
from descentlab.optim.rules import State

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
    "State",
    "make_optimizer",
    "rules",
]


class Optimizer:
    """A rule, its state and a backend: ``update(params, grads)`` applies one step in place.

    Hyperparameters read and write as attributes (``opt.lr = 0.1`` between steps validates and takes effect
    on the next update). ``t`` counts completed updates. The state is allocated on the first update, shaped
    like that update's params; later updates must keep that shape and dtype until ``reset()``.
    """

    rule_type: ClassVar[type[rules.Rule]]

    def __init__(self, lr: float | None = None, *, backend: Backend | None = None, **hyperparams: float) -> None:
        if lr is not None:
            hyperparams["lr"] = lr
        allowed = self.rule_type.checks
        unknown = [k for k in hyperparams if k not in allowed]
        if unknown:
            raise ValueError(
                f"{type(self).__name__}: unknown hyperparameter(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(allowed)}"
            )
        object.__setattr__(self, "rule", self.rule_type(**hyperparams))
        self.backend = backend if backend is not None else select()
        self.reset()

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def hyperparams(self) -> dict[str, float]:
        """Hyperparameters as plain floats, in declaration order (for logging and state dicts)."""
        return self.rule.hyperparams

    @property
    def t(self) -> int:
        return 0 if self.state is None else self.state.t

    def __getattr__(self, key: str) -> Any:
        if key in type(self).rule_type.checks:
            return getattr(self.__dict__["rule"], key)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key in type(self).rule_type.checks:  # a new rule (validated) and the backend's step for it
            object.__setattr__(self, "rule", dataclasses.replace(self.rule, **{key: value}))
            object.__setattr__(self, "_step", self.backend.optimizer_step(self.rule))
        else:
            object.__setattr__(self, key, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.hyperparams.items())
        return f"{type(self).__name__}({args})"

    def reset(self) -> None:
        """Forget all accumulated state, as if freshly constructed (hyperparameters and backend are kept)."""
        self.state: State | None = None
        self._layout: tuple[tuple[int, ...], np.dtype] | None = None
        self._step = self.backend.optimizer_step(self.rule)
        # The last update's arrays: the same two again skip the argument checks (~4 us a step).
        self._last: tuple[Any, ...] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A copy or pickle must not keep the backend's remembered views of the original arrays.
        return {**self.__dict__, "_last": None, "_step": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__["_step"] = self.backend.optimizer_step(self.rule)

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
            self.state = self._step(grads, self.state, params)
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
        if self.state is None:  # first update, or first after reset or loading a state of t = 0
            self.state = self.rule.init(params)
        self.state = self._step(grads, self.state, params)
        self._last = (params, grads, params.shape, params.dtype)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically, as plain types (``np.savez(path, **sd)`` works).

        Keys: ``name``, ``t``, each hyperparameter, and each state array (copied; absent before the first
        update).
        """
        slots = {} if self.state is None else self.state.slots
        return {
            "name": self.name,
            "t": self.t,
            **self.hyperparams,
            **{slot: array.copy() for slot, array in slots.items()},
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
        slots = self.rule_type.slots
        with_arrays = t > 0 and bool(slots)
        expected = {"name", "t", *self.rule_type.checks, *(slots if with_arrays else ())}
        if set(state) != expected:
            raise ValueError(f"{owner}.load_state_dict: expected keys {sorted(expected)}, got {sorted(state)}")
        rule = self.rule_type(**{key: np.asarray(state[key]).item() for key in self.rule_type.checks})
        arrays = {slot: np.array(state[slot], copy=True) for slot in slots if with_arrays}
        layouts = {(a.shape, a.dtype) for a in arrays.values()}
        if len(layouts) > 1 or any(dtype.kind != "f" for _, dtype in layouts):
            raise ValueError(f"{owner}.load_state_dict: state arrays must share one shape and a float dtype")
        object.__setattr__(self, "rule", rule)
        self.reset()
        self.state = State(t, arrays) if t > 0 else None
        self._layout = layouts.pop() if layouts else None


class SGD(Optimizer):
    """Plain gradient descent: p -= lr * g (rules.SGD)."""

    rule_type = rules.SGD


class Momentum(Optimizer):
    """Heavy ball: v = momentum * v - lr * g; p += v (rules.Momentum)."""

    rule_type = rules.Momentum


class Nesterov(Optimizer):
    """Nesterov momentum in the book's form (rules.Nesterov)."""

    rule_type = rules.Nesterov


class AdaGrad(Optimizer):
    """h += g^2; p -= lr g / (sqrt(h) + eps) (rules.AdaGrad)."""

    rule_type = rules.AdaGrad


class RMSprop(Optimizer):
    """h = rho h + (1 - rho) g^2; p -= lr g / (sqrt(h) + eps) (rules.RMSprop)."""

    rule_type = rules.RMSprop


class Adam(Optimizer):
    """Adam with the bias correction folded into the step size (rules.Adam)."""

    rule_type = rules.Adam


class AdamW(Optimizer):
    """Adam plus decoupled weight decay applied first (rules.AdamW)."""

    rule_type = rules.AdamW


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.rule_type.name: cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW)
}


def make_optimizer(name: str, *, backend: Backend | None = None, **hyperparams: float) -> Optimizer:
    """Build an optimizer from a config name (case-insensitive) and keyword hyperparameters.

    ``backend`` (``descentlab.backend.select(...)``) runs the updates; None means ``select("auto")``.
    """
    key = name.lower() if isinstance(name, str) else None
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[key](backend=backend, **hyperparams)
