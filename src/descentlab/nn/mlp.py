"""A multi-layer perceptron: [Affine -> (BatchNorm) -> activation -> (Dropout)] x k -> Affine -> softmax.

The book's `MultiLayerNetExtend`, with all parameters in one flat buffer (`model.params`) and all
gradients in another (`model.grads`), which is what an optimizer's `update(params, grads)` takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from descentlab.backend import Backend, select
from descentlab.nn.layers import ACTIVATIONS, Affine, BatchNorm, Dropout, softmax_cross_entropy
from descentlab.nn.params import FlatParameters

WEIGHT_INITS = ("he", "xavier")


def init_std(weight_init: float | str, fan_in: int) -> float:
    """Standard deviation of the initial weights: a fixed float, Xavier sqrt(1/n) or He sqrt(2/n)."""
    if isinstance(weight_init, str):
        key = weight_init.lower()
        if key == "he":
            return math.sqrt(2.0 / fan_in)
        if key == "xavier":
            return math.sqrt(1.0 / fan_in)
        raise ValueError(f"weight_init must be a positive float, 'xavier' or 'he', got {weight_init!r}")
    if isinstance(weight_init, bool) or not isinstance(weight_init, (int, float)):
        raise ValueError(f"weight_init must be a positive float, 'xavier' or 'he', got {weight_init!r}")
    if not (math.isfinite(weight_init) and weight_init > 0):
        raise ValueError(f"weight_init must be a positive float, 'xavier' or 'he', got {weight_init!r}")
    return float(weight_init)


class MLP:
    """Fully connected classifier with hand-written backprop over flat parameter buffers.

    Parameters are named W1, b1, (gamma1, beta1), W2, ... in layer order. Weights are drawn from
    `rng` in float64 and then cast, so float32 and float64 models built from one seed start from
    the same (rounded) weights.

    `backend` (`descentlab.backend.select(...)`; None: `select("auto")`) may train it through a fused step
    (the numba backend does for a plain Affine/ReLU stack) and supplies the softmax head; the layers are the
    reference either way. `fused = False` forces the layer-by-layer path (tests compare the two).
    """

    def __init__(
        self,
        input_size: int,
        hidden_sizes: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init: float | str = "he",
        batch_norm: bool = False,
        dropout: float = 0.0,
        weight_decay: float = 0.0,
        dtype: np.dtype | type | str = np.float32,
        rng: np.random.Generator | int | None = None,
        dropout_rng: np.random.Generator | None = None,
        backend: Backend | None = None,
    ) -> None:
        sizes = [input_size, *hidden_sizes, output_size]
        for name, value in (("input_size", input_size), ("output_size", output_size)):
            _check_size(name, value)
        for i, h in enumerate(hidden_sizes):
            _check_size(f"hidden_sizes[{i}]", h)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")

        self.config: dict[str, Any] = {
            "input_size": int(input_size),
            "hidden_sizes": [int(h) for h in hidden_sizes],
            "output_size": int(output_size),
            "activation": activation,
            "weight_init": weight_init,
            "batch_norm": bool(batch_norm),
            "dropout": float(dropout),
            "weight_decay": float(weight_decay),
            "dtype": dtype.name,
        }
        self.dtype = dtype
        self.weight_decay = float(weight_decay)
        n_layers = len(sizes) - 1
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(1, n_layers + 1):
            shapes[f"W{i}"] = (sizes[i - 1], sizes[i])
            shapes[f"b{i}"] = (sizes[i],)
            if batch_norm and i < n_layers:
                shapes[f"gamma{i}"] = (sizes[i],)
                shapes[f"beta{i}"] = (sizes[i],)
        self.flat = FlatParameters(shapes, dtype)
        # Running statistics are state, not parameters: the optimizer must not touch them.
        self.buffers: dict[str, np.ndarray] = {}

        init_rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        # Without an explicit stream, derive one from the init stream: still reproducible from one seed.
        drop_rng = dropout_rng if dropout_rng is not None else init_rng.spawn(1)[0]
        for i in range(1, n_layers + 1):
            std = init_std(weight_init, sizes[i - 1])
            self.flat[f"W{i}"][...] = std * init_rng.standard_normal(shapes[f"W{i}"])
            if f"gamma{i}" in self.flat:
                self.flat[f"gamma{i}"][...] = 1.0

        activation_cls = ACTIVATIONS[activation]
        self.layers: list[Any] = []
        self.dropouts: list[Dropout] = []
        for i in range(1, n_layers + 1):
            self.layers.append(
                Affine(
                    self.flat[f"W{i}"],
                    self.flat[f"b{i}"],
                    self.flat.grad_of(f"W{i}"),
                    self.flat.grad_of(f"b{i}"),
                    weight_decay=weight_decay,
                    need_dx=i > 1,
                )
            )
            if i == n_layers:
                break
            if batch_norm:
                mean = self.buffers[f"running_mean{i}"] = np.zeros(sizes[i], dtype)
                var = self.buffers[f"running_var{i}"] = np.ones(sizes[i], dtype)
                self.layers.append(
                    BatchNorm(
                        self.flat[f"gamma{i}"],
                        self.flat[f"beta{i}"],
                        self.flat.grad_of(f"gamma{i}"),
                        self.flat.grad_of(f"beta{i}"),
                        mean,
                        var,
                    )
                )
            # In place is safe: the input is a fresh array made by the Affine or BatchNorm before it.
            self.layers.append(activation_cls(inplace=True))
            if dropout > 0:
                layer = Dropout(dropout, drop_rng)
                self.dropouts.append(layer)
                self.layers.append(layer)
        self.backend = backend if backend is not None else select()
        self.head = self.backend.loss_head()
        self._weight_names = [f"W{i}" for i in range(1, n_layers + 1)]
        self.fused = True
        # The backend's fused training step for the last batch size (None: the layer path), and that size.
        self._step: Callable[[np.ndarray, np.ndarray], float] | None = None
        self._step_rows = -1
        # The backend's fused forward for evaluation (None: the layer path), built on the first evaluation.
        self._infer: Callable[[np.ndarray], np.ndarray] | None = None
        self._infer_built = False

    @property
    def params(self) -> np.ndarray:
        """All parameters as one flat array (layers hold views into it)."""
        return self.flat.data

    @property
    def grads(self) -> np.ndarray:
        """All gradients as one flat array, filled by `loss_and_grad`."""
        return self.flat.grad

    @property
    def num_params(self) -> int:
        return self.flat.size

    def set_dropout_rng(self, rng: np.random.Generator) -> None:
        """Point every dropout layer at `rng` (e.g. to replay an identical mask)."""
        for layer in self.dropouts:
            layer.rng = rng

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Class scores (logits) for a batch `x` of shape (n, input_size), as a new array."""
        out = self._forward(x, train)
        return out.copy() if train else out

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        """Logits; in training mode they live in the last layer's buffer, overwritten by the next pass."""
        out = np.asarray(x, dtype=self.dtype)
        if not train and self.fused and out.ndim == 2:
            if not self._infer_built:
                self._infer, self._infer_built = self.backend.inference(self.layers), True
            if self._infer is not None:
                return self._infer(out)
        for layer in self.layers:
            out = layer.forward(out, train)
        return out

    def penalty(self) -> float:
        """The L2 weight-decay term 0.5 * lambda * sum ||W||^2 added to the training loss."""
        if not self.weight_decay:
            return 0.0
        total = sum(float(np.vdot(self.flat[n], self.flat[n])) for n in self._weight_names)
        return 0.5 * self.weight_decay * total

    def loss(self, x: np.ndarray, t: np.ndarray, train: bool = False) -> float:
        """Mean cross-entropy plus the weight-decay penalty, without touching the gradients."""
        losses, _ = softmax_cross_entropy(self._forward(x, train), np.asarray(t))
        return float(losses.mean()) + self.penalty()

    def loss_and_grad(self, x: np.ndarray, t: np.ndarray) -> float:
        """One training forward and backward pass: returns the loss, fills `self.grads`.

        The loss is the one the gradient belongs to (before the update), so a training step
        never needs a second forward pass just to record it.
        """
        t = np.asarray(t)
        if self.fused:
            xa = np.asarray(x, dtype=self.dtype)
            if xa.ndim == 2:
                if self._step_rows != len(xa):
                    self._step = self.backend.train_step(self.layers, self.head, len(xa), self.dtype)
                    self._step_rows = len(xa)
                if self._step is not None:
                    return self._step(xa, t) + self.penalty()
        loss = self.head.forward(self._forward(x, train=True), t)
        dout: np.ndarray | None = self.head.backward()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return loss + self.penalty()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class labels (inference mode)."""
        return np.argmax(self.forward(x), axis=1)

    def evaluate(self, x: np.ndarray, t: np.ndarray, chunk_size: int = 2048) -> tuple[float, float]:
        """Mean cross-entropy (without the penalty) and accuracy in one inference pass, chunked."""
        n = len(t)
        if n == 0:
            raise ValueError("cannot evaluate on an empty set")
        total_loss = 0.0
        correct = 0
        for start in range(0, n, chunk_size):
            scores = self.forward(x[start : start + chunk_size])
            labels = t[start : start + chunk_size]
            losses, _ = softmax_cross_entropy(scores, labels)
            total_loss += float(losses.sum(dtype=np.float64))
            correct += int(np.count_nonzero(np.argmax(scores, axis=1) == labels))
        return total_loss / n, correct / n

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and running statistic by name: plain arrays for `np.savez`."""
        state = self.flat.as_dict()
        state.update({name: buf.copy() for name, buf in self.buffers.items()})
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what `state_dict` returned (names and shapes must match)."""
        self.flat.load_dict({k: v for k, v in state.items() if k not in self.buffers})
        for name, buf in self.buffers.items():
            if name not in state:
                raise ValueError(f"state is missing the running statistic {name!r}")
            buf[...] = state[name]


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
