"""Layers with hand-written forward and backward passes (Deep Learning from Scratch, ch. 5-6).

Every layer has `forward(x, train)` and `backward(dout)`. Trainable layers write their
gradients straight into views of the network's flat gradient buffer (`out=`), so no
gradient is ever copied. Activations may work in place on arrays the network owns.

In training mode (`train=True`, and in every `backward`) an Affine layer writes its output and its input
gradient into buffers it owns and reuses while the batch size stays the same, so a training step allocates
nothing: such an array is valid until the layer's next training pass.

These layers are the reference: plain NumPy, whatever the backend. A backend may replace a whole training
step of a network of them (`descentlab.backend`: the numba backend's fused Affine/ReLU step) or the head, with
code checked against these layers by tests/test_conformance.py.
"""

from __future__ import annotations

import numpy as np


def new_buffer(buf: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """`buf` if it already has this shape and dtype, else a new C-contiguous array."""
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        return np.empty(shape, dtype)
    return buf


class Affine:
    """y = x W + b. `need_dx=False` on the first layer skips the input-image gradient (~24% of FLOPs)."""

    def __init__(
        self,
        W: np.ndarray,
        b: np.ndarray,
        dW: np.ndarray,
        db: np.ndarray,
        *,
        weight_decay: float = 0.0,
        need_dx: bool = True,
    ) -> None:
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.weight_decay = float(weight_decay)
        self.need_dx = need_dx
        self.x: np.ndarray | None = None
        self._out: np.ndarray | None = None  # training output, reused while the batch size stays the same
        self._dx: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self.x = x
        if not (train and x.ndim == 2 and x.dtype == self.W.dtype):
            out = x @ self.W
            out += self.b
            return out
        out = self._out = new_buffer(self._out, (x.shape[0], self.W.shape[1]), self.W.dtype)
        np.matmul(x, self.W, out=out)
        out += self.b
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        assert self.x is not None, "backward() called before forward()"
        np.matmul(self.x.T, dout, out=self.dW)
        if self.weight_decay:
            # d/dW of the L2 penalty 0.5 * lambda * ||W||^2, the book's weight decay.
            self.dW += self.weight_decay * self.W
        np.sum(dout, axis=0, out=self.db)
        if not self.need_dx:
            return None
        dx = self._dx = new_buffer(self._dx, (dout.shape[0], self.W.shape[0]), np.result_type(dout, self.W))
        return np.matmul(dout, self.W.T, out=dx)


class ReLU:
    """max(x, 0); backward multiplies by the mask `y > 0` (4x faster than boolean assignment)."""

    def __init__(self, inplace: bool = False) -> None:
        self.inplace = inplace
        self.y: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self.y = np.maximum(x, 0, out=x if self.inplace else None)
        return self.y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.y is not None, "backward() called before forward()"
        return np.multiply(dout, self.y > 0, out=dout if self.inplace else None)


class Sigmoid:
    """1 / (1 + exp(-x)), computed as 0.5 (1 + tanh(x / 2)) so large |x| cannot overflow."""

    def __init__(self, inplace: bool = False) -> None:
        self.inplace = inplace
        self.y: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        y = np.multiply(x, 0.5, out=x if self.inplace else None)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5
        self.y = y
        return y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.y is not None, "backward() called before forward()"
        return dout * self.y * (1 - self.y)


class Tanh:
    """tanh(x); derivative 1 - y^2."""

    def __init__(self, inplace: bool = False) -> None:
        self.inplace = inplace
        self.y: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self.y = np.tanh(x, out=x if self.inplace else None)
        return self.y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.y is not None, "backward() called before forward()"
        return dout * (1 - self.y * self.y)


ACTIVATIONS: dict[str, type[ReLU] | type[Sigmoid] | type[Tanh]] = {
    "relu": ReLU,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
}


class BatchNorm:
    """Batch normalization (Ioffe & Szegedy 2015) with running statistics for inference.

    Training normalizes with the minibatch mean and variance and updates the running
    averages (`momentum` as in the book, 0.9); inference uses the running averages.
    """

    def __init__(
        self,
        gamma: np.ndarray,
        beta: np.ndarray,
        dgamma: np.ndarray,
        dbeta: np.ndarray,
        running_mean: np.ndarray,
        running_var: np.ndarray,
        *,
        momentum: float = 0.9,
        eps: float = 1e-6,
    ) -> None:
        self.gamma, self.beta, self.dgamma, self.dbeta = gamma, beta, dgamma, dbeta
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps
        self.xn: np.ndarray | None = None
        self.inv_std: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if train:
            mean = x.mean(axis=0)
            xc = x - mean
            var = np.mean(xc * xc, axis=0)
            self.inv_std = 1.0 / np.sqrt(var + self.eps)
            self.xn = xc * self.inv_std
            m = self.momentum
            self.running_mean *= m
            self.running_mean += (1 - m) * mean
            self.running_var *= m
            self.running_var += (1 - m) * var
            xn = self.xn
        else:
            xn = (x - self.running_mean) / np.sqrt(self.running_var + self.eps)
        return self.gamma * xn + self.beta

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.xn is not None and self.inv_std is not None, "backward() needs a forward(train=True)"
        xn = self.xn
        np.sum(dout, axis=0, out=self.dbeta)
        np.sum(xn * dout, axis=0, out=self.dgamma)
        dxn = dout * self.gamma
        n = dout.shape[0]
        # dx = (1/n) inv_std (n dxn - sum(dxn) - xn sum(dxn xn)): the book's chain of steps, collapsed.
        dx = n * dxn
        dx -= dxn.sum(axis=0)
        dx -= xn * np.sum(dxn * xn, axis=0)
        dx *= self.inv_std / n
        return dx


class Dropout:
    """Inverted dropout: zero each unit with probability `ratio` and scale survivors by 1/(1-ratio).

    Inference is then the identity. The mask comes from `rng`, the run's dropout stream, so it is
    reproducible and independent of weight init and minibatch order.
    """

    def __init__(self, ratio: float, rng: np.random.Generator) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"dropout ratio must be in [0, 1), got {ratio}")
        self.ratio = float(ratio)
        self.rng = rng
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if not train or self.ratio == 0.0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.ratio
        self.mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.ratio))
        return x * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout if self.mask is None else dout * self.mask


class SoftmaxCrossEntropy:
    """Softmax and mean cross-entropy with integer labels, fused for stability and speed.

    The book's SoftmaxWithLoss. The loss uses log-sum-exp (no epsilon inside the log), so the gradient
    (p - onehot) / n is exactly the derivative of the reported loss.
    """

    def __init__(self) -> None:
        self.p: np.ndarray | None = None
        self.t: np.ndarray | None = None

    def forward(self, scores: np.ndarray, t: np.ndarray) -> float:
        losses, self.p = softmax_cross_entropy(scores, t)
        self.t = t
        return float(losses.mean())

    def backward(self) -> np.ndarray:
        assert self.p is not None and self.t is not None, "backward() called before forward()"
        dx = self.p
        n = dx.shape[0]
        dx[np.arange(n), self.t] -= 1
        dx /= n
        self.p = None
        return dx


def softmax_cross_entropy(scores: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row cross-entropy losses and softmax probabilities for integer labels `t`."""
    z = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(z)
    total = p.sum(axis=1, keepdims=True)
    p /= total
    rows = np.arange(z.shape[0])
    losses = np.log(total[:, 0]) - z[rows, t]
    return losses, p
