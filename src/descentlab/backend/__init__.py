"""The one place that decides between NumPy and compiled code: a ``Backend`` chosen once, passed to its users.

Why: the reference rules and layers (``descentlab.optim.rules``, ``descentlab.nn.layers``) are the spec, written
for a reader; speed comes from numba kernels that compute the same bits (``backend/kernels.py``, checked by
tests/test_conformance.py). Keeping the choice here means no other module asks whether numba is there.

``select(name)`` with name in ``auto`` (numba when importable, else numpy), ``numpy`` or ``numba``; the config
key ``numerics.backend`` feeds it. Optimizers (``make_optimizer(..., backend=)``), models (``MLP(..., backend=)``)
and ``training.fit`` receive the result; None means ``select("auto")``.

A backend provides four things:

- ``optimizer_step(rule)``: a function ``(grads, state, params) -> state`` applying ``rule`` in place;
- ``gather(x)``: a function ``idx -> x.take(idx, axis=0)`` (possibly into a buffer reused by the next call);
- ``train_step(layers, head, n, dtype)``: a fused forward+backward ``(x, t) -> loss`` for ``n`` rows, or None
  when the layer-by-layer path is to run;
- ``loss_head()``: the softmax cross-entropy layer a model ends with;
- ``inference(layers)``: a fused forward ``x -> scores`` (new arrays) for evaluation, or None for the layer path.

The numba backend (``backend/compiled.py``) leaves arrays under ``KERNEL_MIN_SIZE`` (4096) elements, such as a
2-D objective's point, to the reference rule: numba is then never imported for them.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from descentlab.nn.layers import SoftmaxCrossEntropy
    from descentlab.optim.rules import Rule, State

__all__ = ["BACKENDS", "Backend", "NumpyBackend", "numba_available", "select"]

BACKENDS = ("auto", "numpy", "numba")

OptimizerStep = Callable[[np.ndarray, "State", np.ndarray], "State"]


class Backend(Protocol):
    """What a backend provides (see the module docstring)."""

    name: str

    def optimizer_step(self, rule: Rule) -> OptimizerStep: ...

    def gather(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]: ...

    def train_step(
        self, layers: Sequence[Any], head: SoftmaxCrossEntropy, n: int, dtype: np.dtype
    ) -> Callable[[np.ndarray, np.ndarray], float] | None: ...

    def loss_head(self) -> SoftmaxCrossEntropy: ...

    def inference(self, layers: Sequence[Any]) -> Callable[[np.ndarray], np.ndarray] | None: ...


class NumpyBackend:
    """The reference code itself: the rules' ``update``, the layers one by one, ``x.take``."""

    name = "numpy"

    def optimizer_step(self, rule: Rule) -> OptimizerStep:
        return rule.update

    def gather(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        return functools.partial(np.take, x, axis=0)

    def train_step(
        self, layers: Sequence[Any], head: SoftmaxCrossEntropy, n: int, dtype: np.dtype
    ) -> Callable[[np.ndarray, np.ndarray], float] | None:
        return None

    def loss_head(self) -> SoftmaxCrossEntropy:
        from descentlab.nn.layers import SoftmaxCrossEntropy

        return SoftmaxCrossEntropy()

    def inference(self, layers: Sequence[Any]) -> Callable[[np.ndarray], np.ndarray] | None:
        return None

    def __repr__(self) -> str:
        return "<backend numpy>"


@functools.cache
def numba_available() -> bool:
    """True when numba is installed. It is imported only by the first compiled call, so choosing the numba
    backend costs nothing until a kernel runs (a 2-D objective's small arrays never start it)."""
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _backend(name: str) -> Backend:
    if name == "numba":
        from descentlab.backend.compiled import NumbaBackend

        return NumbaBackend()
    return NumpyBackend()


def select(name: str = "auto") -> Backend:
    """The backend ``name`` (``auto``, ``numpy`` or ``numba``); one shared instance per backend.

    ``auto`` is numba when it is importable, else numpy. A bad name, or ``numba`` without numba installed, is a
    one-line ValueError naming the value and the allowed ones.
    """
    if name not in BACKENDS:
        raise ValueError(f"numerics.backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        name = "numba" if numba_available() else "numpy"
    elif name == "numba" and not numba_available():
        raise ValueError(
            f"numerics.backend={name!r} needs numba, which is not installed; allowed: auto, numpy "
            "(or install numba)"
        )
    return _backend(name)
