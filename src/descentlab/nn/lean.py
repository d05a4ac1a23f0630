"""The training step of a plain Affine/ReLU stack in one flat loop: what `MLP.loss_and_grad` runs when it can.

Why: on the Figure 6-9 network the matmuls take ~810 µs of a ~960 µs iteration; of the rest, ~85 µs went to
per-layer Python work (method calls, `_fast()` and buffer checks, separate bias/ReLU/mask/sum passes). Here the
buffers, transposed views and kernels are resolved once per batch shape, the bias add and ReLU run as one kernel,
and the ReLU mask of the backward pass runs with the next bias gradient's column sum as one kernel.

It performs the same floating-point operations as the layer objects, in the same order (the same `np.matmul`
calls on the same operands; kernels that compute exactly what the separate kernels or ufuncs compute), so
results are bit-identical to the general path with and without numba (tests/test_lean.py checks this). Networks
with batch norm, dropout or another activation keep the general layer path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from descentlab import kernels
from descentlab.nn.layers import Affine, SoftmaxCrossEntropy

__all__ = ["LeanStep"]


class LeanStep:
    """Forward and backward of Affine -> ReLU -> ... -> Affine -> softmax cross-entropy for one batch size.

    Holds its own activation and input-gradient buffers (valid until the next step) and writes the gradients
    into the same views of the flat gradient buffer as the `Affine` layers do.
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
        k = kernels.kernel
        self.bias_relu, self.add_bias, self.column_sum = k("bias_relu"), k("add_bias"), k("column_sum")
        self.relu_backward_column_sum, self.softmax = k("relu_backward_column_sum"), k("softmax_cross_entropy_grad")

    def run(self, x: np.ndarray, t: np.ndarray) -> float:
        """Loss of the batch (x, t); fills the gradient views. `x` is 2-D with n rows in the model's dtype."""
        matmul, W, b, outs, last = self.matmul, self.W, self.b, self.outs, len(self.W) - 1
        bias_relu = self.bias_relu
        h = x
        for k in range(last):
            out = outs[k]
            matmul(h, W[k], out=out)
            if bias_relu is not None:
                bias_relu(out, b[k])
            else:
                out += b[k]
                np.maximum(out, 0, out=out)
            h = out
        scores = outs[last]
        matmul(h, W[last], out=scores)
        if self.add_bias is not None:
            self.add_bias(scores, b[last])
        else:
            scores += b[last]

        softmax = self.softmax
        if softmax is not None and t.ndim == 1 and t.dtype.kind in "iu" and len(t) == self.n:
            d = self.grad
            loss = float(softmax(scores, t, d))
        else:  # the NumPy head, or labels the kernel does not take: exactly what the layer path does
            loss = self.head.forward(scores, t)
            d = self.head.backward()

        dW, db, dx, WT, decay = self.dW, self.db, self.dx, self.WT, self.weight_decay
        fused = self.relu_backward_column_sum
        for k in range(last, -1, -1):
            matmul(self.outsT[k - 1] if k else x.T, d, out=dW[k])
            if decay[k]:
                dW[k] += decay[k] * W[k]
            if k == last:
                if self.column_sum is not None and d.dtype == db[k].dtype:
                    self.column_sum(d, db[k])
                else:
                    np.sum(d, axis=0, out=db[k])
            if k == 0:
                if self.need_dx:
                    matmul(d, WT[0], out=dx[0])
                break
            g = dx[k]
            matmul(d, WT[k], out=g)
            y = outs[k - 1]
            if fused is not None:
                fused(g, y, db[k - 1])
            else:
                np.multiply(g, y > 0, out=g)
                np.sum(g, axis=0, out=db[k - 1])
            d = g
        return loss


def lean_step(layers: Sequence[Any], head: SoftmaxCrossEntropy, n: int, dtype: np.dtype) -> LeanStep:
    """A LeanStep for `layers` = [Affine, ReLU, Affine, ReLU, ..., Affine] (the caller checks the pattern)."""
    return LeanStep([layer for layer in layers if isinstance(layer, Affine)], head, n, dtype)
