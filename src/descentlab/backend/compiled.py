"""The numba backend: compiled kernels for the optimizer update, a fused Affine/ReLU training step, the softmax
head and the minibatch row gather, each computing what the reference code computes (tests/test_conformance.py).

Small arrays stay on the reference path: an optimizer update of fewer than ``KERNEL_MIN_SIZE`` elements (a 2-D
objective's point) calls the rule itself, since a few ufunc calls cost microseconds there while the first
compiled call in a process costs ~1 s of numba start-up. Non-contiguous arrays take the reference path too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from descentlab.backend.kernels import kernel
from descentlab.nn.layers import Affine, ReLU, SoftmaxCrossEntropy, new_buffer
from descentlab.optim.rules import Rule, State

__all__ = ["KERNEL_MIN_SIZE", "FusedReluStep", "KernelSoftmaxCrossEntropy", "KernelUpdate", "NumbaBackend",
           "RowGather"]

KERNEL_MIN_SIZE = 4096

# Per rule: its kernel and the kernel's scalar arguments for update t, each cast with f (the params' scalar type).
_Scalars = Callable[[Any, int, Callable[[float], Any]], tuple[Any, ...]]
_OPTIMIZER_KERNELS: dict[str, tuple[str, _Scalars]] = {
    "sgd": ("sgd_step", lambda r, t, f: (f(r.lr),)),
    "momentum": ("momentum_step", lambda r, t, f: (f(r.momentum), f(r.lr))),
    "nesterov": ("nesterov_step", lambda r, t, f: (f(r.momentum * r.momentum), f((1 + r.momentum) * r.lr),
                                                    f(r.momentum), f(r.lr))),
    "adagrad": ("adagrad_step", lambda r, t, f: (f(r.lr), f(r.eps))),
    "rmsprop": ("rmsprop_step", lambda r, t, f: (f(r.decay_rate), f(1 - r.decay_rate), f(r.lr), f(r.eps))),
    # adam_step's first scalar is AdamW's decay factor; 1 for Adam, an exact no-op.
    "adam": ("adam_step", lambda r, t, f: (f(1.0), f(1 - r.beta1), f(1 - r.beta2), f(r.lr_t(t)), f(r.eps))),
    "adamw": ("adam_step", lambda r, t, f: (f(1 - r.lr * r.weight_decay), f(1 - r.beta1), f(1 - r.beta2),
                                            f(r.lr_t(t)), f(r.eps))),
}


class KernelUpdate:
    """``rule.update`` as one compiled loop over flat views; the rule itself for small or strided arrays.

    The flat views of the last call's arrays are remembered, so the same params, grads and state again (every
    training step) cost no reshaping.
    """

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.kernel_name, self.scalars = _OPTIMIZER_KERNELS[rule.name]
        self.kernel: Callable[..., None] | None = None  # compiled on the first call that uses it
        self._views: tuple[Any, ...] | None = None  # (params, grads, slots, flat views)

    def __call__(self, grads: np.ndarray, state: State, params: np.ndarray) -> State:
        views = self._views
        if views is None or params is not views[0] or grads is not views[1] or state.slots is not views[2]:
            arrays = (params, grads, *state.slots.values())
            if params.size < KERNEL_MIN_SIZE or not all(a.flags.c_contiguous for a in arrays):
                return self.rule.update(grads, state, params)
            views = self._views = (params, grads, state.slots, tuple(a.reshape(-1) for a in arrays))
            if self.kernel is None:
                self.kernel = kernel(self.kernel_name)
        t = state.t + 1
        self.kernel(*views[3], *self.scalars(self.rule, t, params.dtype.type))
        return State(t, state.slots)


class RowGather:
    """Minibatch rows of ``x``, as ``x.take(idx, axis=0)``, gathered into one buffer reused while the size holds.

    Why: ``kernels.take_rows`` copies eight scattered rows side by side, ~30 instead of ~40 µs for 128 MNIST
    rows, and nothing is allocated per step. The array returned is overwritten by the next call. For an ``x``
    that is not a 2-D C-contiguous numeric array it is ``x.take(idx, axis=0)`` (a new array each call).
    """

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        fits = x.ndim == 2 and x.flags.c_contiguous and x.dtype.kind in "fiu"
        self._kernel = kernel("take_rows") if fits else None
        self._out: np.ndarray | None = None

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        if self._kernel is None or idx.ndim != 1 or idx.dtype.kind not in "iu":
            return self.x.take(idx, axis=0)
        out = self._out
        if out is None or len(out) != len(idx):
            out = self._out = np.empty((len(idx), self.x.shape[1]), self.x.dtype)
        self._kernel(self.x, idx, out)
        return out


class KernelSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """The softmax head with loss and gradient in one compiled pass, into a buffer reused per batch shape.

    Agrees with the reference head to rounding (not bit for bit: exp and log come from another library).
    Inputs the kernel does not take (non-2-D scores, labels that are not a 1-D integer array of the right
    length) take the reference head.
    """

    def __init__(self) -> None:
        super().__init__()
        self._grad: np.ndarray | None = None
        self._ready: np.ndarray | None = None  # the finished gradient of the last forward, until backward

    def forward(self, scores: np.ndarray, t: np.ndarray) -> float:
        if (scores.ndim == 2 and scores.dtype.kind == "f" and scores.flags.c_contiguous and t.ndim == 1
                and t.dtype.kind in "iu" and len(t) == len(scores)):
            grad = self._grad = new_buffer(self._grad, scores.shape, scores.dtype)
            loss = kernel("softmax_cross_entropy_grad")(scores, t, grad)
            self._ready, self.p, self.t = grad, None, None
            return float(loss)
        self._ready = None
        return super().forward(scores, t)

    def backward(self) -> np.ndarray:
        if self._ready is not None:
            dx, self._ready = self._ready, None
            return dx
        return super().backward()


class FusedReluStep:
    """Forward and backward of Affine -> ReLU -> ... -> Affine -> softmax cross-entropy for one batch size.

    Why: on the Figure 6-9 network the matmuls take ~810 µs of a ~960 µs iteration; of the rest, ~85 µs went to
    per-layer Python work (method calls, buffer checks, separate bias/ReLU/mask/sum passes). Here the buffers,
    transposed views and kernels are resolved once per batch shape, the bias add and ReLU run as one kernel,
    and the ReLU mask of the backward pass runs with the next bias gradient's column sum as one kernel.

    It performs the floating-point operations of the layer objects (Affine.forward/backward, ReLU.forward/
    backward), in the same order: the same ``np.matmul`` calls on the same operands, and kernels computing what
    the layers' ufuncs compute. Holds its own activation and input-gradient buffers (valid until the next step)
    and writes the gradients into the same views of the flat gradient buffer as the ``Affine`` layers do.
    """

    def __init__(self, affines: Sequence[Affine], head: SoftmaxCrossEntropy, n: int, dtype: np.dtype) -> None:
        self.n, self.dtype, self.head = n, dtype, head
        self.W = [a.W for a in affines]
        self.WT = [a.W.T for a in affines]
        self.b = [a.b for a in affines]
        self.dW = [a.dW for a in affines]
        self.db = [a.db for a in affines]
        self.weight_decay = [a.weight_decay for a in affines]
        self.need_dx = affines[0].need_dx
        self.outs = [np.empty((n, a.W.shape[1]), dtype) for a in affines]
        self.outsT = [o.T for o in self.outs]
        # dx[k]: gradient with respect to layer k's input (none for the first layer unless it needs one).
        self.dx = [np.empty((n, a.W.shape[0]), dtype) for a in affines]
        self.grad = np.empty((n, affines[-1].W.shape[1]), dtype)
        self.matmul = np.matmul  # an attribute, so scripts/bench.py can time each call
        self.bias_relu, self.add_bias, self.column_sum = kernel("bias_relu"), kernel("add_bias"), kernel("column_sum")
        self.relu_backward_column_sum = kernel("relu_backward_column_sum")
        self.softmax = kernel("softmax_cross_entropy_grad")

    def __call__(self, x: np.ndarray, t: np.ndarray) -> float:
        """Loss of the batch (x, t); fills the gradient views. ``x`` is 2-D with n rows in the model's dtype."""
        matmul, W, b, outs, last = self.matmul, self.W, self.b, self.outs, len(self.W) - 1
        bias_relu = self.bias_relu
        h = x
        for k in range(last):  # Affine.forward then ReLU.forward, the bias add and the ReLU in one pass
            out = outs[k]
            matmul(h, W[k], out=out)
            bias_relu(out, b[k])
            h = out
        scores = outs[last]
        matmul(h, W[last], out=scores)
        self.add_bias(scores, b[last])

        if t.ndim == 1 and t.dtype.kind in "iu" and len(t) == self.n:
            d = self.grad
            loss = float(self.softmax(scores, t, d))
        else:  # labels the kernel does not take: exactly what the layer path does
            loss = self.head.forward(scores, t)
            d = self.head.backward()

        dW, db, dx, WT, decay = self.dW, self.db, self.dx, self.WT, self.weight_decay
        fused = self.relu_backward_column_sum
        for k in range(last, -1, -1):  # Affine.backward, then ReLU.backward with the next bias gradient
            matmul(self.outsT[k - 1] if k else x.T, d, out=dW[k])
            if decay[k]:
                dW[k] += decay[k] * W[k]
            if k == last:
                self.column_sum(d, db[k])
            if k == 0:
                if self.need_dx:
                    matmul(d, WT[0], out=dx[0])
                break
            g = dx[k]
            matmul(d, WT[k], out=g)
            fused(g, outs[k - 1], db[k - 1])
            d = g
        return loss


class FusedReluForward:
    """Inference forward of Affine -> ReLU -> ... -> Affine (what ``MLP.evaluate`` runs every ``eval_every`` steps).

    Why: the layer path makes a bias-add pass and a ReLU pass per layer; here they are one kernel, as in
    ``FusedReluStep`` (evaluation of 1,000 rows: ~1.8 ms layer by layer, ~1.5 ms fused). Same operations in the same
    order as ``Affine.forward``/``ReLU.forward`` with ``train=False``: ``x @ W`` into a new array, then the bias
    and ReLU kernels (a negative becomes -0.0 instead of 0.0, which multiplies the same way downstream).
    """

    def __init__(self, affines: Sequence[Affine]) -> None:
        self.W = [a.W for a in affines]
        self.b = [a.b for a in affines]
        self.bias_relu, self.add_bias = kernel("bias_relu"), kernel("add_bias")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        W, b, last = self.W, self.b, len(self.W) - 1
        h = x
        for k in range(last):
            h = h @ W[k]
            self.bias_relu(h, b[k])
        scores = h @ W[last]
        self.add_bias(scores, b[last])
        return scores


def _is_relu_stack(layers: Sequence[Any]) -> bool:
    """[Affine, ReLU, Affine, ..., Affine]: the pattern FusedReluStep computes."""
    return all(isinstance(layer, Affine if i % 2 == 0 else ReLU) for i, layer in enumerate(layers))


class NumbaBackend:
    """The compiled backend (see ``descentlab.backend``)."""

    name = "numba"

    def optimizer_step(self, rule: Rule) -> Callable[[np.ndarray, State, np.ndarray], State]:
        return KernelUpdate(rule)

    def gather(self, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        return RowGather(x)

    def train_step(
        self, layers: Sequence[Any], head: SoftmaxCrossEntropy, n: int, dtype: np.dtype
    ) -> Callable[[np.ndarray, np.ndarray], float] | None:
        if not _is_relu_stack(layers):
            return None
        return FusedReluStep([layer for layer in layers if isinstance(layer, Affine)], head, n, dtype)

    def loss_head(self) -> SoftmaxCrossEntropy:
        return KernelSoftmaxCrossEntropy()

    def inference(self, layers: Sequence[Any]) -> Callable[[np.ndarray], np.ndarray] | None:
        if not _is_relu_stack(layers):
            return None
        return FusedReluForward([layer for layer in layers if isinstance(layer, Affine)])

    def __repr__(self) -> str:
        return "<backend numba>"
