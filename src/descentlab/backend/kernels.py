"""Single-pass kernels for the training hot path, compiled with numba: the numba backend's building blocks.

Why: NumPy evaluates an update rule as a chain of ufuncs, each a full pass over memory (Adam: ~10 passes
over 110k floats, ~200 µs); one compiled loop reads and writes each element once (~50 µs). Layers gain the
same way on small elementwise work, where a ufunc's fixed cost (~3-7 µs) dominates.

Every kernel evaluates its formula in the same order and the same dtype as the reference code it replaces
(``descentlab.optim.rules``, ``descentlab.nn.layers``), so optimizer and layer kernels give bit-identical
results (tests/test_conformance.py checks this; the softmax head agrees to rounding). Scalars must be passed
already cast to the arrays' dtype (``p.dtype.type(x)``), as NumPy casts a Python float. No ``fastmath``: it
would reorder and contract arithmetic.

The functions here are plain Python; ``kernel(name)`` returns the compiled one, compiling it (or loading
numba's on-disk cache) on first use. numba is imported only then, so importing descentlab stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["kernel"]

_compiled: dict[str, Callable[..., Any]] = {}


def kernel(name: str) -> Callable[..., Any]:
    """The compiled kernel ``name`` (a function of this module); needs numba."""
    fn = _compiled.get(name)
    if fn is None:
        import numba

        fn = _compiled[name] = numba.njit(cache=True, error_model="numpy", nogil=True)(_SOURCES[name])
    return fn


# --------------------------------------------------------------------------------- optimizer kernels
# One loop over flat, contiguous arrays. Each line mirrors the statement order of optim/rules.py.


def sgd_step(p: np.ndarray, g: np.ndarray, lr: float) -> None:
    for i in range(p.size):
        p[i] -= g[i] * lr


def momentum_step(p: np.ndarray, g: np.ndarray, v: np.ndarray, mu: float, lr: float) -> None:
    for i in range(p.size):
        vi = v[i] * mu
        vi = vi - g[i] * lr
        v[i] = vi
        p[i] += vi


def nesterov_step(p: np.ndarray, g: np.ndarray, v: np.ndarray, mu2: float, c: float, mu: float, lr: float) -> None:
    for i in range(p.size):
        gi, vi = g[i], v[i]
        pi = p[i] + vi * mu2
        p[i] = pi - gi * c
        vi = vi * mu
        v[i] = vi - gi * lr


def adagrad_step(p: np.ndarray, g: np.ndarray, h: np.ndarray, lr: float, eps: float) -> None:
    for i in range(p.size):
        gi = g[i]
        hi = h[i] + gi * gi
        h[i] = hi
        p[i] -= (gi * lr) / (math.sqrt(hi) + eps)


def rmsprop_step(p: np.ndarray, g: np.ndarray, h: np.ndarray, rho: float, one_minus_rho: float, lr: float,
                 eps: float) -> None:
    for i in range(p.size):
        gi = g[i]
        hi = h[i] * rho
        hi = hi + (gi * one_minus_rho) * gi
        h[i] = hi
        p[i] -= (gi * lr) / (math.sqrt(hi) + eps)


def adam_step(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, decay: float, b1c: float, b2c: float,
              lr_t: float, eps: float) -> None:
    """Adam (and AdamW: ``decay`` = 1 - lr * weight_decay, applied first; 1 for Adam, which is exact)."""
    for i in range(p.size):
        gi = g[i]
        mi = m[i]
        mi = mi + (gi - mi) * b1c
        m[i] = mi
        vi = v[i]
        vi = vi + (gi * gi - vi) * b2c
        v[i] = vi
        pi = p[i] * decay
        p[i] = pi - (mi * lr_t) / (math.sqrt(vi) + eps)


# ------------------------------------------------------------------------------------ layer kernels
# 2-D C-contiguous (rows = examples) arrays, modified in place.


def add_bias(out: np.ndarray, b: np.ndarray) -> None:
    """out += b (row-broadcast)."""
    n, k = out.shape
    for i in range(n):
        for j in range(k):
            out[i, j] += b[j]


def relu(x: np.ndarray) -> None:
    """x = max(x, 0) in place, as x * (x > 0): branch-free, so it vectorizes (a branch is 5x slower).

    Equal to np.maximum(x, 0) element for element (negatives become -0.0, which compares equal to 0 and
    multiplies the same way downstream); NaN stays NaN.
    """
    n, k = x.shape
    for i in range(n):
        for j in range(k):
            v = x[i, j]
            x[i, j] = v * (v > 0)


def relu_backward(d: np.ndarray, y: np.ndarray) -> None:
    """d *= (y > 0) in place, exactly NumPy's np.multiply(d, y > 0)."""
    n, k = d.shape
    for i in range(n):
        for j in range(k):
            d[i, j] *= y[i, j] > 0


def bias_relu(out: np.ndarray, b: np.ndarray) -> None:
    """out = max(out + b, 0) in place: add_bias then relu in one pass, the same two roundings per element."""
    n, k = out.shape
    for i in range(n):
        for j in range(k):
            v = out[i, j] + b[j]
            out[i, j] = v * (v > 0)


def relu_backward_column_sum(d: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """relu_backward(d, y) then column_sum(d, out) in one pass: d *= (y > 0); out = d.sum(axis=0), rows in order."""
    n, k = d.shape
    for j in range(k):
        v = d[0, j] * (y[0, j] > 0)
        d[0, j] = v
        out[j] = v
    for i in range(1, n):
        for j in range(k):
            v = d[i, j] * (y[i, j] > 0)
            d[i, j] = v
            out[j] += v


def take_rows(x: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    """out[i] = x[idx[i]] for a 2-D ``x``: np.take(x, idx, axis=0) into a reused buffer.

    Eight rows are copied side by side, so eight streams of cache misses overlap (a minibatch's rows are
    scattered over a data set larger than L2; ~30 instead of ~40 µs for 128 MNIST rows). An index outside
    [0, len(x)) raises IndexError (negatives do not wrap around).
    """
    n, k = x.shape
    m = idx.shape[0]
    for i in range(m):
        if idx[i] < 0 or idx[i] >= n:
            raise IndexError("row index out of range")
    i = 0
    while i + 8 <= m:
        r0, r1, r2, r3 = idx[i], idx[i + 1], idx[i + 2], idx[i + 3]
        r4, r5, r6, r7 = idx[i + 4], idx[i + 5], idx[i + 6], idx[i + 7]
        for j in range(k):
            out[i, j] = x[r0, j]
            out[i + 1, j] = x[r1, j]
            out[i + 2, j] = x[r2, j]
            out[i + 3, j] = x[r3, j]
            out[i + 4, j] = x[r4, j]
            out[i + 5, j] = x[r5, j]
            out[i + 6, j] = x[r6, j]
            out[i + 7, j] = x[r7, j]
        i += 8
    while i < m:
        r = idx[i]
        for j in range(k):
            out[i, j] = x[r, j]
        i += 1


def column_sum(d: np.ndarray, out: np.ndarray) -> None:
    """out = d.sum(axis=0), rows added in order (NumPy's order for axis 0 of a C-contiguous array)."""
    n, k = d.shape
    for j in range(k):
        out[j] = d[0, j]
    for i in range(1, n):
        for j in range(k):
            out[j] += d[i, j]


def softmax_cross_entropy_grad(scores: np.ndarray, t: np.ndarray, grad: np.ndarray) -> float:
    """Mean cross-entropy of softmax(scores) for labels ``t``; ``grad`` = (softmax - onehot) / n.

    Per row: z = s - max(s), loss = log(sum(exp(z))) - z[t], in the scores' dtype; the mean in float64.
    A label outside [0, classes) raises ValueError.
    """
    n, k = scores.shape
    total = 0.0
    for i in range(n):
        label = t[i]
        if label < 0 or label >= k:
            raise ValueError("labels must be integers in [0, number of classes)")
        mx = scores[i, 0]
        for j in range(1, k):
            if scores[i, j] > mx:
                mx = scores[i, j]
        s = scores[i, 0] - scores[i, 0]  # a zero of the scores' dtype
        for j in range(k):
            e = math.exp(scores[i, j] - mx)
            grad[i, j] = e
            s += e
        total += math.log(s) - (scores[i, label] - mx)
        for j in range(k):
            grad[i, j] /= s
        grad[i, label] -= 1
        for j in range(k):
            grad[i, j] /= n
    return total / n


_SOURCES: dict[str, Callable[..., Any]] = {
    fn.__name__: fn
    for fn in (
        sgd_step,
        momentum_step,
        nesterov_step,
        adagrad_step,
        rmsprop_step,
        adam_step,
        add_bias,
        relu,
        relu_backward,
        bias_relu,
        relu_backward_column_sum,
        take_rows,
        column_sum,
        softmax_cross_entropy_grad,
    )
}
