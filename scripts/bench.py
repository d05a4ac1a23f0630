#!/usr/bin/env python
"""Benchmark the Figure 6-9 workload: a book-style NumPy baseline, descentlab's core and PyTorch, interleaved.

    python scripts/bench.py                          # 2,000 iterations x 3 repeats, one BLAS thread
    python scripts/bench.py --quick                  # 300 iterations x 2 repeats
    python scripts/bench.py --write docs/benchmarks.md --json bench.json

Every implementation trains the same MLP 784-100-100-100-100-10 (ReLU, He init, batch 128) from the same
initial weights on the same minibatch indices (drawn with replacement from `mnist_5k`), for each optimizer at
the book's defaults. Runs are interleaved round-robin (implementation order rotated every round) in one process,
and each cell reports the median and the minimum over the repeats. The matmul floor times the same float32
matmuls alone (forward, dW, dX shapes, preallocated outputs). Results print as Markdown; `--write FILE`
replaces the section between `<!-- bench:core:start -->` and `<!-- bench:core:end -->` in FILE.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import inspect
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

REPO = Path(__file__).resolve().parent.parent
SIZES = (784, 100, 100, 100, 100, 10)
HIDDEN = list(SIZES[1:-1])
BATCH = 128
SEED = 0
BOOK_LR = {"sgd": 0.01, "momentum": 0.01, "adagrad": 0.01, "adam": 0.001}
START, END = "<!-- bench:core:start -->", "<!-- bench:core:end -->"
BACKEND = "auto"  # descentlab's numerics backend (--backend)

# Implementations, in table order: key -> label.
IMPLS = {
    "book_loss": "book-style float64, with the book's extra loss pass",
    "book": "book-style float64",
    "core": "descentlab core (`loss_and_grad` + `update`)",
    "core_layers": "descentlab core, layer by layer (numba kernels, no fused Affine/ReLU loop)",
    "core_numpy": "descentlab core, numpy backend (the reference rules and layers)",
    "fit": "descentlab `fit(eval_every=None)`",
    "fit_eval": "descentlab `fit` (config's eval settings)",
    "torch": "PyTorch, default optimizer (for-loop)",
    "torch_foreach": "PyTorch, `foreach=True`",
    "torch_fused": "PyTorch, `fused=True`",
    "floor": "matmul floor, float32 (no input gradient)",
    "floor64": "matmul floor, float64 with input gradient",
}
TORCH_IMPLS = ("torch", "torch_foreach", "torch_fused")
SEAM_IMPLS = ("core_layers", "core_numpy")  # the fast path's pieces switched off, side by side (a backend seam's tree)


# --------------------------------------------------------------------------------------------- FLOPs
def matmul_flops(sizes: Sequence[int] = SIZES, batch: int = BATCH) -> dict[str, float]:
    """FLOPs of one training iteration's matmuls: forward, dW and dX (2 per multiply-add)."""
    pairs = list(itertools.pairwise(sizes))
    forward = sum(2 * batch * i * o for i, o in pairs)
    dx_first = 2 * batch * pairs[0][0] * pairs[0][1]
    train = forward + forward + (forward - dx_first)  # forward, dW, dX of every layer but the first
    return {"forward": forward, "train": train, "train_with_input_grad": train + dx_first,
            "book_with_loss_pass": train + dx_first + forward}


FLOPS = matmul_flops()
IMPL_FLOPS = {
    "book_loss": FLOPS["book_with_loss_pass"], "book": FLOPS["train_with_input_grad"],
    "floor64": FLOPS["train_with_input_grad"],
    **{k: FLOPS["train"] for k in ("core", *SEAM_IMPLS, "fit", "fit_eval", *TORCH_IMPLS, "floor")},
}


# ------------------------------------------------------------------------------- shared workload
@dataclass
class Workload:
    """Data, initial weights and minibatch indices shared by every implementation."""

    data: Any
    weights: dict[str, np.ndarray]  # float32, as descentlab's MLP draws them from the seed
    idx: np.ndarray  # (iterations, BATCH) int64
    fit_kwargs: dict[str, Any]
    x64: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.x64 = self.data.x_train.astype(np.float64)  # the float64 matmul floor's input

    @property
    def iterations(self) -> int:
        return len(self.idx)


def batch_indices(n: int, iterations: int, seed: int = SEED) -> np.ndarray:
    """The minibatch indices `fit(sampling="replacement")` draws from the seed's batch stream."""
    from descentlab.rng import stream

    rng = stream(seed, "batches")
    return np.stack([rng.integers(0, n, size=BATCH) for _ in range(iterations)])


def has_backend_seam() -> bool:
    """Whether this tree chooses its numerics backend once (`descentlab.backend`); older trees do not."""
    import importlib.util

    return importlib.util.find_spec("descentlab.backend") is not None


def backend_kwargs(name: str | None = None) -> dict[str, Any]:
    """`backend=` for MLP and make_optimizer: `name`, else the --backend choice (a tree before the seam: none)."""
    if not has_backend_seam():
        return {}
    from descentlab.backend import select

    return {"backend": select(name or BACKEND)}


def new_mlp(weights: dict[str, np.ndarray] | None = None, backend: str | None = None) -> Any:
    from descentlab.nn import MLP
    from descentlab.rng import stream

    model = MLP(SIZES[0], HIDDEN, SIZES[-1], activation="relu", weight_init="he", rng=stream(SEED, "init"),
                **backend_kwargs(backend))
    if weights is not None:
        model.load_state_dict(weights)
    return model


def new_optimizer(opt: str, backend: str | None = None) -> Any:
    from descentlab.optim import make_optimizer

    return make_optimizer(opt, lr=BOOK_LR[opt], **backend_kwargs(backend))


def new_gather(x: np.ndarray, backend_name: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The minibatch gather training.fit uses (the backend's; an older tree's training.RowGather)."""
    backend = backend_kwargs(backend_name).get("backend")
    if backend is not None:
        return backend.gather(x)
    from descentlab.training import RowGather

    return RowGather(x)


def fused_step(model: Any) -> Any:
    """The fused Affine/ReLU step MLP.loss_and_grad ran last (an older tree's nn/lean.py LeanStep), or None."""
    return getattr(model, "_step", None) or getattr(model, "_lean_step", None)


def takes_fused_step() -> bool:
    """Whether the benchmark's network trains through a fused step rather than the layer objects."""
    model = new_mlp()
    model.loss_and_grad(np.zeros((2, SIZES[0]), np.float32), np.zeros(2, np.int64))
    return fused_step(model) is not None


def config_fit_kwargs() -> dict[str, Any]:
    """`fit` keyword arguments that conf/config.yaml's `training:` block sets (eval_every, eval_train_subset, ...)."""
    from descentlab.training import fit

    try:
        from omegaconf import OmegaConf

        training = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "config.yaml").training)
    except Exception:  # fall back to fit's own defaults
        training = {}
    accepted = set(inspect.signature(fit).parameters) - {"iterations", "batch_size", "rng", "callback", "sampling"}
    return {k: v for k, v in dict(training).items() if k in accepted}


# ------------------------------------------------------------------- (a) the book-style baseline
class BookAffine:
    """The book's common/layers.py Affine: new arrays for out, dx, dW, db; the input reshaped to 2-D and back.

    The first layer's input is the float32 minibatch, so `np.dot` casts it to float64 in forward and backward.
    """

    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W, self.b = W, b
        self.x: np.ndarray | None = None
        self.original_x_shape: tuple[int, ...] | None = None
        self.dW: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.original_x_shape = x.shape
        x = x.reshape(x.shape[0], -1)
        self.x = x
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class BookRelu:
    """The book's Relu: a boolean mask, a copy, and boolean-mask assignment both ways."""

    def __init__(self) -> None:
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dout[self.mask] = 0
        return dout


class BookSoftmaxWithLoss:
    """The book's SoftmaxWithLoss with label indices: softmax with two exps, log(y + 1e-7)."""

    def __init__(self) -> None:
        self.y: np.ndarray | None = None
        self.t: np.ndarray | None = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        self.t = t
        x = x - np.max(x, axis=-1, keepdims=True)
        self.y = np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)
        n = self.y.shape[0]
        return -np.sum(np.log(self.y[np.arange(n), t] + 1e-7)) / n

    def backward(self, dout: float = 1) -> np.ndarray:
        n = self.t.shape[0]
        dx = self.y.copy()
        dx[np.arange(n), self.t] -= 1
        return dx / n


class BookNet:
    """The book's MultiLayerNet at its default weight_decay_lambda = 0, whose weight-decay terms it still computes.

    `loss` adds 0.5 * lambda * sum(W**2) for every W and `gradient` returns dW + lambda * W (new arrays), as the
    book's code does whatever lambda is.
    """

    def __init__(self, weights: dict[str, np.ndarray], weight_decay_lambda: float = 0) -> None:
        self.params = {k: np.array(v, dtype=np.float64) for k, v in weights.items()}
        self.weight_decay_lambda = weight_decay_lambda
        n_layers = len(SIZES) - 1
        self.layers: dict[str, Any] = {}
        for i in range(1, n_layers + 1):
            self.layers[f"Affine{i}"] = BookAffine(self.params[f"W{i}"], self.params[f"b{i}"])
            if i < n_layers:
                self.layers[f"Relu{i}"] = BookRelu()
        self.last_layer = BookSoftmaxWithLoss()
        self.n_layers = n_layers

    def predict(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x: np.ndarray, t: np.ndarray) -> float:
        y = self.predict(x)
        weight_decay = 0
        for i in range(1, self.n_layers + 1):
            W = self.params[f"W{i}"]
            weight_decay += 0.5 * self.weight_decay_lambda * np.sum(W**2)
        return self.last_layer.forward(y, t) + weight_decay

    def gradient(self, x: np.ndarray, t: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss = self.loss(x, t)  # the book discards it; the benchmark records it when there is no loss pass
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)  # includes the input-image gradient, as the book computes it
        grads = {}
        for i in range(1, self.n_layers + 1):
            affine = self.layers[f"Affine{i}"]
            grads[f"W{i}"] = affine.dW + self.weight_decay_lambda * affine.W
            grads[f"b{i}"] = affine.db
        return loss, grads


class BookSGD:
    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for key in params:
            params[key] -= self.lr * grads[key]


class BookMomentum:
    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr, self.momentum = lr, momentum
        self.v: dict[str, np.ndarray] | None = None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.v is None:
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class BookAdaGrad:
    def __init__(self, lr: float = 0.01) -> None:
        self.lr = lr
        self.h: dict[str, np.ndarray] | None = None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.h is None:
            self.h = {key: np.zeros_like(val) for key, val in params.items()}
        for key in params:
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class BookAdam:
    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter = 0
        self.m: dict[str, np.ndarray] | None = None
        self.v: dict[str, np.ndarray] | None = None

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.m is None:
            self.m = {key: np.zeros_like(val) for key, val in params.items()}
            self.v = {key: np.zeros_like(val) for key, val in params.items()}
        self.iter += 1
        lr_t = self.lr * np.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


BOOK_OPTIMIZERS: dict[str, Callable[[float], Any]] = {
    "sgd": BookSGD, "momentum": BookMomentum, "adagrad": BookAdaGrad, "adam": BookAdam,
}


# ------------------------------------------------------------------------------------ runners
class Runner:
    """One implementation x optimizer, built fresh (outside the timing) from the shared workload."""

    def train(self, iterations: int) -> np.ndarray:  # pragma: no cover - interface
        """Run `iterations` steps over the shared indices; return the recorded loss of each step."""
        raise NotImplementedError


class BookRunner(Runner):
    def __init__(self, w: Workload, opt: str, loss_pass: bool) -> None:
        self.w, self.net, self.loss_pass = w, BookNet(w.weights), loss_pass
        self.opt = BOOK_OPTIMIZERS[opt](BOOK_LR[opt])
        self.t = w.data.y_train.astype(np.uint8)  # load_mnist's labels are uint8

    def train(self, iterations: int) -> np.ndarray:
        # float32 images, as the book's load_mnist(normalize=True) returns them
        x, t, idx, net, opt = self.w.data.x_train, self.t, self.w.idx, self.net, self.opt
        losses = np.empty(iterations)
        for i in range(iterations):
            mask = idx[i]
            x_batch, t_batch = x[mask], t[mask]
            loss, grads = net.gradient(x_batch, t_batch)
            opt.update(net.params, grads)
            if self.loss_pass:  # the book records the loss after the update with a second forward pass
                loss = net.loss(x_batch, t_batch)
            losses[i] = loss
        return losses


class CoreRunner(Runner):
    """`loss_and_grad` + `update` as `fit` runs them; `backend` and `fused` switch the fast path's pieces off."""

    def __init__(self, w: Workload, opt: str, backend: str | None = None, fused: bool = True) -> None:
        self.w, self.model, self.opt = w, new_mlp(w.weights, backend), new_optimizer(opt, backend)
        if not fused:
            self.model.fused = False  # the layer objects, one by one, with the backend's kernels
        self.gather = new_gather(w.data.x_train, backend)  # the minibatch gather training.fit uses

    def train(self, iterations: int) -> np.ndarray:
        gather, t, idx, model, opt = self.gather, self.w.data.y_train, self.w.idx, self.model, self.opt
        losses = np.empty(iterations)
        for i in range(iterations):
            b = idx[i]
            losses[i] = model.loss_and_grad(gather(b), t.take(b, axis=0))  # as training.fit gathers
            opt.update(model.params, model.grads)
        return losses


class FitRunner(Runner):
    """`descentlab.training.fit` on the same indices; `eval_seconds` is the time spent in `model.evaluate`."""

    def __init__(self, w: Workload, opt: str, evaluate: bool, data: Any = None) -> None:
        self.data = data if data is not None else w.data
        self.model, self.opt = new_mlp(w.weights), new_optimizer(opt)
        self.kwargs = dict(w.fit_kwargs) if evaluate else {**w.fit_kwargs, "eval_every": None}
        self.eval_seconds = 0.0
        inner = self.model.evaluate

        def timed_evaluate(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = inner(*args, **kwargs)
            self.eval_seconds += time.perf_counter() - t0
            return out

        self.model.evaluate = timed_evaluate

    def train(self, iterations: int) -> np.ndarray:
        from descentlab.rng import stream
        from descentlab.training import fit

        history = fit(self.model, self.opt, self.data, iterations=iterations, batch_size=BATCH,
                      rng=stream(SEED, "batches"), sampling="replacement", **self.kwargs)
        return np.asarray(history.losses)


TORCH_OPTIMIZERS = {"sgd": ("SGD", {}), "momentum": ("SGD", {"momentum": 0.9}), "adagrad": ("Adagrad", {"eps": 1e-7}),
                    "adam": ("Adam", {"betas": (0.9, 0.999), "eps": 1e-7})}


class TorchRunner(Runner):
    def __init__(self, w: Workload, opt: str, variant: str) -> None:
        import torch

        self.torch, self.w = torch, w
        layers: list[Any] = []
        for i in range(1, len(SIZES)):
            linear = torch.nn.Linear(SIZES[i - 1], SIZES[i])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.weights[f"W{i}"].T)))
                linear.bias.copy_(torch.from_numpy(w.weights[f"b{i}"]))
            layers.append(linear)
            if i < len(SIZES) - 1:
                layers.append(torch.nn.ReLU())
        self.model = torch.nn.Sequential(*layers)
        self.criterion = torch.nn.CrossEntropyLoss()
        name, kwargs = TORCH_OPTIMIZERS[opt]
        extra = {"torch": {}, "torch_foreach": {"foreach": True}, "torch_fused": {"fused": True}}[variant]
        self.opt = getattr(torch.optim, name)(self.model.parameters(), lr=BOOK_LR[opt], **kwargs, **extra)
        self.x = torch.from_numpy(w.data.x_train)
        self.t = torch.from_numpy(w.data.y_train)
        self.idx = torch.from_numpy(w.idx)

    def train(self, iterations: int) -> np.ndarray:
        x, t, idx, model, criterion, opt = self.x, self.t, self.idx, self.model, self.criterion, self.opt
        losses = np.empty(iterations)
        for i in range(iterations):
            b = idx[i]
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(x.index_select(0, b)), t.index_select(0, b))
            loss.backward()
            opt.step()
            losses[i] = loss.item()
        return losses


class FloorRunner(Runner):
    """The workload's matmuls alone, into preallocated outputs: forward, dW of every layer, dX (see `input_grad`)."""

    def __init__(self, w: Workload, dtype: type, input_grad: bool) -> None:
        rng = np.random.default_rng(1)
        pairs = list(itertools.pairwise(SIZES))
        x0 = (w.x64 if dtype is np.float64 else w.data.x_train)[w.idx[0]]
        self.acts = [np.ascontiguousarray(x0, dtype=dtype)] + [np.empty((BATCH, o), dtype) for _, o in pairs]
        self.W = [np.asarray(w.weights[f"W{k + 1}"], dtype=dtype) for k in range(len(pairs))]
        self.dW = [np.empty((i, o), dtype) for i, o in pairs]
        self.dx = [np.empty((BATCH, i), dtype) for i, _ in pairs]  # dx[k]: gradient w.r.t. layer k's input
        self.dout = (0.01 * rng.standard_normal((BATCH, SIZES[-1]))).astype(dtype)
        self.first = 0 if input_grad else 1

    def ops(self) -> list[tuple[str, Callable[[], Any]]]:
        """(piece name, call) for every matmul of one iteration, in execution order."""
        acts, W, dW, dx, n = self.acts, self.W, self.dW, self.dx, len(self.W)
        out: list[tuple[str, Callable[[], Any]]] = []
        for k in range(n):
            out.append((f"Affine{k + 1}.forward", lambda k=k: np.matmul(acts[k], W[k], out=acts[k + 1])))
        for k in reversed(range(n)):
            grad = self.dout if k == n - 1 else dx[k + 1]
            out.append((f"Affine{k + 1}.backward", lambda k=k, g=grad: np.matmul(acts[k].T, g, out=dW[k])))
            if k >= self.first:
                out.append((f"Affine{k + 1}.backward", lambda k=k, g=grad: np.matmul(g, W[k].T, out=dx[k])))
        return out

    def train(self, iterations: int) -> np.ndarray:
        acts, W, dW, dx, dout, first, n = self.acts, self.W, self.dW, self.dx, self.dout, self.first, len(self.W)
        matmul = np.matmul
        for _ in range(iterations):
            for k in range(n):
                matmul(acts[k], W[k], out=acts[k + 1])
            g = dout
            for k in range(n - 1, -1, -1):
                matmul(acts[k].T, g, out=dW[k])
                if k >= first:
                    matmul(g, W[k].T, out=dx[k])
                g = dx[k]
        return np.full(iterations, np.nan)


def make_runner(impl: str, w: Workload, opt: str) -> Runner:
    if impl in ("book", "book_loss"):
        return BookRunner(w, opt, loss_pass=impl == "book_loss")
    if impl == "core":
        return CoreRunner(w, opt)
    if impl == "core_layers":
        return CoreRunner(w, opt, fused=False)
    if impl == "core_numpy":
        return CoreRunner(w, opt, backend="numpy")
    if impl in ("fit", "fit_eval"):
        return FitRunner(w, opt, evaluate=impl == "fit_eval")
    if impl in TORCH_IMPLS:
        return TorchRunner(w, opt, impl)
    if impl == "floor":
        return FloorRunner(w, np.float32, input_grad=False)
    if impl == "floor64":
        return FloorRunner(w, np.float64, input_grad=True)
    raise ValueError(f"unknown implementation {impl!r}")


def timed(runner: Runner, iterations: int) -> tuple[float, np.ndarray]:
    """Seconds for `iterations` steps (garbage collector off, as timeit does) and the recorded losses."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        losses = runner.train(iterations)
        return time.perf_counter() - start, losses
    finally:
        gc.enable()


# ------------------------------------------------------------------------------------ profile
def profile_core(w: Workload, opt: str, iterations: int) -> dict[str, float]:
    """Seconds per piece over `iterations` descentlab steps: gather, each layer's forward/backward, head, update.

    What MLP.loss_and_grad calls is wrapped on the instances: the fused step's matmuls and kernels
    (`wrap_lean_step`) or, for a network that takes the layer path, the layer methods; so the profile follows
    the library as it changes. Time in loss_and_grad outside the wrapped calls is reported as `other`.
    """
    runner = CoreRunner(w, opt)
    runner.train(min(20, iterations))
    model, optimizer = runner.model, runner.opt
    acc: dict[str, float] = defaultdict(float)
    perf = time.perf_counter

    def wrap(obj: Any, method: str, key: str) -> None:
        fn = getattr(obj, method)

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            t0 = perf()
            out = fn(*args, **kwargs)
            acc[key] += perf() - t0
            return out

        setattr(obj, method, timed_call)

    step = fused_step(model)
    if step is not None:  # MLP.loss_and_grad runs the backend's fused loop, not the layer objects
        wrap_lean_step(step, acc)
    counts: dict[str, int] = defaultdict(int)
    for layer in [*getattr(model, "layers", []), getattr(model, "head", None)] if step is None else []:
        if layer is None:
            continue
        kind = type(layer).__name__
        counts[kind] += 1
        name = f"{kind}{counts[kind]}" if kind != "SoftmaxCrossEntropy" else kind
        for method in ("forward", "backward"):
            if callable(getattr(layer, method, None)):
                wrap(layer, method, f"{name}.{method}")
    gather, t, idx = runner.gather, w.data.y_train, w.idx
    gc.collect()
    gc.disable()
    try:
        start = perf()
        for i in range(iterations):
            t0 = perf()
            b = idx[i % len(idx)]
            xb, tb = gather(b), t.take(b, axis=0)
            t1 = perf()
            model.loss_and_grad(xb, tb)
            t2 = perf()
            optimizer.update(model.params, model.grads)
            t3 = perf()
            acc["gather"] += t1 - t0
            acc["loss_and_grad"] += t2 - t1
            acc["update"] += t3 - t2
        acc["total"] = perf() - start
    finally:
        gc.enable()
    layers = sum(v for k, v in acc.items() if "." in k)
    acc["other"] = acc["loss_and_grad"] - layers
    return {k: v / iterations for k, v in acc.items()}


def wrap_lean_step(step: Any, acc: dict[str, float]) -> None:
    """Time a fused step's calls (`descentlab.backend.compiled.FusedReluStep`) under the layer path's piece names.

    `AffineK.forward`/`.backward` are that layer's matmul calls (so `matmul alone` compares like with like), plus
    the last layer's bias add (forward) and bias gradient (backward); `ReLUK.forward` is the fused bias add +
    ReLU after AffineK, `ReLUK.backward` the fused ReLU mask + AffineK's bias gradient.
    """
    perf = time.perf_counter
    last = len(step.W)
    piece = {id(out): f"Affine{k + 1}.forward" for k, out in enumerate(step.outs)}
    piece.update({id(g): f"Affine{k + 1}.backward" for k, g in enumerate(step.dW)})
    piece.update({id(g): f"Affine{k + 1}.backward" for k, g in enumerate(step.dx)})
    piece.update({id(g): f"Affine{last}.backward" for g in step.db[-1:]})
    relu_fwd = {id(out): f"ReLU{k + 1}.forward" for k, out in enumerate(step.outs[:-1])}
    relu_bwd = {id(g): f"ReLU{k}.backward" for k, g in enumerate(step.dx) if k}

    def timed(fn: Callable[..., Any], key: Callable[[tuple[Any, ...], dict[str, Any]], str]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = perf()
            out = fn(*args, **kwargs)
            acc[key(args, kwargs)] += perf() - t0
            return out

        return call

    step.matmul = timed(step.matmul, lambda a, kw: piece[id(kw["out"])])
    kernels = {"bias_relu": lambda a, kw: relu_fwd[id(a[0])], "add_bias": lambda a, kw: f"Affine{last}.forward",
               "column_sum": lambda a, kw: piece[id(a[1])],
               "relu_backward_column_sum": lambda a, kw: relu_bwd[id(a[0])],
               "softmax": lambda a, kw: "SoftmaxCrossEntropy.forward"}
    for attr, key in kernels.items():
        if getattr(step, attr) is not None:
            setattr(step, attr, timed(getattr(step, attr), key))


def profile_floor(w: Workload, iterations: int) -> dict[str, float]:
    """Seconds per iteration of each float32 matmul piece alone (summed per layer and direction)."""
    floor = FloorRunner(w, np.float32, input_grad=False)
    ops = floor.ops()
    acc: dict[str, float] = defaultdict(float)
    perf = time.perf_counter
    for _ in range(min(20, iterations)):
        for _, op in ops:
            op()
    for _ in range(iterations):
        for key, op in ops:
            t0 = perf()
            op()
            acc[key] += perf() - t0
    return {k: v / iterations for k, v in acc.items()}


# ------------------------------------------------------------------------------------- machine
def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo (`default` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, cores, versions, BLAS kernels and threads (inside the thread limit), load, date, git state."""
    cpu = cpu_model()
    blas = [{k: lib.get(k) for k in ("internal_api", "architecture", "version", "num_threads", "threading_layer",
                                      "prefix")} for lib in threadpool_info()]
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
        "torch_threads": None,
        "threads": threads,
        "blas": blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "loadavg_start": _loadavg(),
        "git": _git_state(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"], info["torch_threads"] = torch.__version__, torch.get_num_threads()
    return info


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}" if head else "unknown"


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------- run
def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build the workload, warm up, time every implementation x optimizer interleaved, profile; return the report."""
    from descentlab.data import load_dataset

    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [o for o in optimizers if o not in BOOK_LR]
    if unknown:
        raise SystemExit(f"error: unknown optimizer(s) {unknown}; allowed: {', '.join(BOOK_LR)}")
    notes: list[str] = []
    impls = [k for k in IMPLS if k not in ("floor", "floor64")]
    if not has_backend_seam():
        impls = [k for k in impls if k not in SEAM_IMPLS]
    have_torch = not args.no_torch and torch_available()
    if have_torch:
        import torch

        torch.manual_seed(SEED)
        torch.set_num_threads(args.threads)
    else:
        impls = [k for k in impls if k not in TORCH_IMPLS]
        notes.append("PyTorch skipped: " + ("--no-torch" if args.no_torch else
                                            "torch is not importable (install the `bench` extra)"))

    data = load_dataset("mnist_5k")
    weights = new_mlp().state_dict()
    w = Workload(data, weights, batch_indices(len(data.y_train), args.iterations), config_fit_kwargs())
    report: dict[str, Any] = {"machine": machine_info(args.threads), "notes": notes,
                              "settings": {"iterations": args.iterations, "repeats": args.repeats,
                                           "optimizers": optimizers, "threads": args.threads,
                                           "batch": BATCH, "sizes": list(SIZES), "seed": SEED,
                                           "fit_kwargs": w.fit_kwargs},
                              "flops": FLOPS, "impl_flops": {}, "labels": {}}

    # Warm-up, first losses and which variants this torch supports.
    supported: dict[tuple[str, str], bool] = {}
    first_loss: dict[str, dict[str, float]] = defaultdict(dict)
    warm = min(20, args.iterations)
    for opt in optimizers:
        for impl in impls:
            try:
                losses = make_runner(impl, w, opt).train(warm)
            except (RuntimeError, ValueError, TypeError) as exc:
                supported[impl, opt] = False
                notes.append(f"{IMPLS[impl]} with {opt}: not supported here ({type(exc).__name__}: {exc})")
                continue
            supported[impl, opt] = True
            first_loss[impl][opt] = float(losses[0])
    report["first_loss"] = first_loss

    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    final_loss: dict[str, dict[str, float]] = defaultdict(dict)
    eval_share: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    n = args.iterations
    for rep in range(args.repeats):
        floor64 = make_runner("floor64", w, "")
        timed(floor64, warm)
        times["floor64"]["all"].append(timed(floor64, n)[0])
        for oi, opt in enumerate(optimizers):
            cells = [*impls, "floor"]
            shift = (rep * len(optimizers) + oi) % len(cells)
            for impl in cells[shift:] + cells[:shift]:
                if impl != "floor" and not supported.get((impl, opt), False):
                    continue
                runner = make_runner(impl, w, opt)
                seconds, losses = timed(runner, n)
                times[impl][opt].append(seconds)
                if isinstance(runner, FitRunner):
                    eval_share[impl][opt].append(runner.eval_seconds / seconds)
                if impl != "floor":
                    final_loss[impl][opt] = float(np.mean(losses[-min(100, n):]))
            print(f"  repeat {rep + 1}/{args.repeats} {opt}: done", file=sys.stderr, flush=True)
    profile = {opt: profile_core(w, opt, min(n, 500)) for opt in optimizers} if not args.no_profile else {}
    floor_pieces = profile_floor(w, min(n, 500)) if not args.no_profile else {}
    report["machine"]["loadavg_end"] = _loadavg()
    report["final_loss"] = final_loss
    report["times"] = {impl: dict(v) for impl, v in times.items()}
    report["profile"] = profile
    report["floor_pieces"] = floor_pieces
    report["profile_lean"] = takes_fused_step()  # MLP.loss_and_grad takes the backend's fused loop
    report["results"] = summarize(times, n)
    report["impl_flops"] = {k: IMPL_FLOPS[k] for k in report["results"]}
    report["labels"] = {k: IMPLS[k] for k in report["results"]}
    report["ratios"] = ratios(report["results"], optimizers)
    report["evaluation"] = evaluation_report(eval_share, args, w)
    return report


def summarize(times: dict[str, dict[str, list[float]]], iterations: int) -> dict[str, dict[str, dict[str, float]]]:
    """Per implementation and optimizer: median and min seconds per 1,000 iterations, spread, GFLOP/s."""
    per_k = 1000.0 / iterations
    out: dict[str, dict[str, dict[str, float]]] = {}
    for impl in IMPLS:
        if impl not in times:
            continue
        cells = dict(times[impl])
        if impl == "floor":  # optimizer-independent: also pool every round
            cells["all"] = [s for v in times[impl].values() for s in v]
        out[impl] = {}
        for opt, samples in cells.items():
            med, low = statistics.median(samples), min(samples)
            out[impl][opt] = {"median": med * per_k, "min": low * per_k, "spread": max(samples) / low - 1,
                              "n": len(samples), "gflops": IMPL_FLOPS[impl] * iterations / med / 1e9}
    return out


def ratios(results: dict[str, Any], optimizers: Sequence[str]) -> dict[str, dict[str, float]]:
    """Ratios of medians per optimizer: baseline/descentlab, torch/descentlab, descentlab/floor, fit/core."""
    pairs = {"book / core": ("book", "core"), "book+loss pass / core": ("book_loss", "core"),
             "torch default / core": ("torch", "core"), "torch foreach / core": ("torch_foreach", "core"),
             "torch fused / core": ("torch_fused", "core"), "core / floor": ("core", "floor"),
             "layer by layer / core (the fused loop's gain)": ("core_layers", "core"),
             "numpy backend / core (numba's gain)": ("core_numpy", "core"),
             "book / floor (bound on any float32 speed-up)": ("book", "floor"),
             "torch default / floor": ("torch", "floor"),
             "fit(eval_every=None) / core": ("fit", "core"), "fit(eval) / fit(eval_every=None)": ("fit_eval", "fit")}
    out: dict[str, dict[str, float]] = {}
    for label, (a, b) in pairs.items():
        row = {}
        for opt in optimizers:
            if opt in results.get(a, {}) and opt in results.get(b, {}):
                row[opt] = results[a][opt]["median"] / results[b][opt]["median"]
        if row:
            out[label] = row
    return out


def evaluation_report(shares: dict[str, dict[str, list[float]]], args: argparse.Namespace,
                      w: Workload) -> dict[str, Any]:
    """Share of `fit` time spent in `model.evaluate` at the config's evaluation settings.

    mnist_5k: from the interleaved `fit` runs (every optimizer); each of `--eval-datasets`: Adam runs of `fit` on
    that data set's full training set, `--repeats` times.
    """
    out: dict[str, Any] = {}
    if "fit_eval" in shares:
        out["mnist_5k"] = {opt: statistics.median(v) for opt, v in shares["fit_eval"].items()}
    for name in [d for d in args.eval_datasets.split(",") if d and d != "none"]:
        from descentlab.data import load_dataset

        try:
            data = load_dataset(name, download=False) if name in ("mnist", "fashion_mnist") else load_dataset(name)
        except Exception as exc:  # report and go on
            out[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
            continue
        if data.x_train.shape[1] != SIZES[0] or data.info.n_classes != SIZES[-1]:
            out[name] = {"error": f"not a {SIZES[0]}-feature, {SIZES[-1]}-class data set"}
            continue
        dw = Workload(data, w.weights, w.idx[:1], w.fit_kwargs)
        samples, seconds = [], []
        for _ in range(args.repeats):
            runner = FitRunner(dw, "adam", evaluate=True, data=data)
            total, _ = timed(runner, args.iterations)
            samples.append(runner.eval_seconds / total)
            seconds.append(total)
        out[name] = {"adam": statistics.median(samples), "fit_s": statistics.median(seconds),
                     "n_train": int(data.info.n_train), "n_test": int(data.info.n_test)}
    return out


# ------------------------------------------------------------------------------------ output
def fmt(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, settings, timing and GFLOP/s tables, ratios, floor, profile, checks."""
    m, s, res = report["machine"], report["settings"], report["results"]
    opts = s["optimizers"]
    lines: list[str] = []
    blas = "; ".join(f"{b['internal_api']} {b.get('version') or ''} {b.get('architecture') or ''} "
                     f"({b['num_threads']} thread{'s' if b['num_threads'] != 1 else ''})".replace("  ", " ")
                     for b in m["blas"])
    torch_text = f"PyTorch {m['torch']} ({m['torch_threads']} intra-op thread(s))" if m["torch"] else "no PyTorch"
    lines += [
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable); Python {m['python']}, "
        f"NumPy {m['numpy']}, {torch_text}; {m['date']}; "
        f"descentlab at {m['git']}.",
        f"BLAS (threadpoolctl, inside the limit): {blas}. OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE'] or 'unset'}. "
        f"Load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}.",
        "",
        f"Settings: MLP {'-'.join(map(str, s['sizes']))}, batch {s['batch']}, {s['iterations']} iterations per "
        f"timed run, {s['repeats']} repeats interleaved round-robin, {s['threads']} BLAS thread(s), seed {s['seed']}; "
        f"the book's learning rates (SGD/Momentum/AdaGrad 0.01, Adam 0.001).",
        "",
        "**Seconds per 1,000 iterations, median (min)**",
        "",
        "| implementation | MFLOP/it | " + " | ".join(opts) + " |",
        "|---|---:|" + "---:|" * len(opts),
    ]
    for impl, cells in res.items():
        if impl in ("floor", "floor64"):
            continue
        row = [f"{fmt(cells[o]['median'])} ({fmt(cells[o]['min'])})" if o in cells else "n/a" for o in opts]
        lines.append(f"| {IMPLS[impl]} | {IMPL_FLOPS[impl] / 1e6:.1f} | " + " | ".join(row) + " |")
    for impl in ("floor", "floor64"):
        if impl in res:
            c = res[impl]["all"]
            lines.append(f"| {IMPLS[impl]} | {IMPL_FLOPS[impl] / 1e6:.1f} | "
                         + " | ".join([f"{fmt(c['median'])} ({fmt(c['min'])})"] * len(opts)) + " |")
    lines += ["", "**Achieved GFLOP/s (matmul FLOPs / median time)**", "",
              "| implementation | " + " | ".join(opts) + " |", "|---|" + "---:|" * len(opts)]
    for impl, cells in res.items():
        key = (lambda o: "all") if impl in ("floor", "floor64") else (lambda o: o)
        row = [fmt(cells[key(o)]["gflops"], 1) if key(o) in cells else "n/a" for o in opts]
        lines.append(f"| {IMPLS[impl]} | " + " | ".join(row) + " |")
    lines += ["", "**Ratios of medians** (> 1: the first is slower)", "",
              "| ratio | " + " | ".join(opts) + " |", "|---|" + "---:|" * len(opts)]
    for label, row in report["ratios"].items():
        lines.append(f"| {label} | " + " | ".join(fmt(row.get(o, math.nan)) for o in opts) + " |")
    f = report["flops"]
    lines += ["", f"FLOPs per iteration (matmuls only, 2 per multiply-add): forward {f['forward'] / 1e6:.2f} M, "
              f"training {f['train'] / 1e6:.2f} M without the input-image gradient, "
              f"{f['train_with_input_grad'] / 1e6:.2f} M with it, {f['book_with_loss_pass'] / 1e6:.2f} M with the "
              "book's extra loss pass. Elementwise work (bias, ReLU, softmax, the update) adds at most ~2% "
              "(Adam's update: ~1.3 MFLOP)."]
    spread = [(c["spread"], impl, o) for impl, cells in res.items() for o, c in cells.items() if c["n"] > 1]
    if spread:
        worst = max(spread)
        lines.append(f"Largest spread between repeats (max/min − 1): {worst[0]:.0%} ({IMPLS[worst[1]]}, {worst[2]}); "
                     "median spread "
                     f"{statistics.median(x[0] for x in spread):.0%}.")
    fl = report["first_loss"]
    if "core" in fl:
        checks = []
        for impl in ("book", *TORCH_IMPLS):
            diffs = [abs(fl[impl][o] / fl["core"][o] - 1) for o in opts if o in fl.get(impl, {}) and o in fl["core"]]
            if diffs:
                checks.append(f"{impl} {max(diffs):.1e}")
        loss0 = next(iter(fl["core"].values()))
        lines.append(f"First minibatch loss from the same weights: descentlab {loss0:.6f}; largest relative "
                     f"difference to it: {', '.join(checks)}.")
    final = report.get("final_loss", {})
    if final:
        lines.append("Mean loss of the last 100 recorded steps: " + "; ".join(
            f"{impl} " + "/".join(f"{final[impl][o]:.3g}" for o in opts if o in final[impl])
            for impl in ("book", "core", "torch") if impl in final) + f" ({'/'.join(opts)}).")
    lines += targets_markdown(report)
    lines += profile_markdown(report)
    ev = report.get("evaluation") or {}
    if ev:
        lines += ["", f"**Evaluation share of `fit`** (time in `model.evaluate` / `fit` time, median; fit's settings "
                  f"from conf/config.yaml: {s['fit_kwargs']})", ""]
        for name, v in ev.items():
            if "error" in v:
                lines.append(f"- {name}: not measured ({v['error']})")
            else:
                extra = (f" ({v['n_train']:,} training / {v['n_test']:,} test images; fit {v['fit_s']:.2f} s)"
                         if "fit_s" in v else "")
                lines.append(f"- {name}: " + ", ".join(f"{o} {v[o]:.1%}" for o in BOOK_LR if o in v) + extra)
    if report["notes"]:
        lines += ["", "Notes: " + " ".join(f"{n.rstrip('.')}." for n in report["notes"])]
    return "\n".join(lines) + "\n"


def targets_markdown(report: dict[str, Any]) -> list[str]:
    """Issue 5's per-iteration targets, per optimizer, from this run's ratios of medians."""
    opts, r = report["settings"]["optimizers"], report["ratios"]
    ev = (report.get("evaluation") or {}).get("mnist_5k", {})

    def cells(values: dict[str, float], ok: Callable[[float], bool], text: Callable[[float], str]) -> str:
        return " | ".join(f"{text(values[o])} {'yes' if ok(values[o]) else '**no**'}" if o in values else "n/a"
                          for o in opts)

    rows = []
    if "core / floor" in r:
        rows.append(("descentlab ≤ 1.3× the matmul floor", cells(r["core / floor"], lambda x: x <= 1.3,
                                                                  lambda x: f"{x:.2f}×")))
    for key, label in (("book / core", "≥ 3.5× faster than book-style float64"),
                       ("book+loss pass / core", "… with the book's extra loss pass")):
        if key in r:
            rows.append((label, cells(r[key], lambda x: x >= 3.5, lambda x: f"{x:.2f}×")))
    if "torch default / core" in r:
        rows.append(("≥ 1.8× faster than PyTorch, default optimizers",
                     cells(r["torch default / core"], lambda x: x >= 1.8, lambda x: f"{x:.2f}×")))
    if "torch fused / core" in r:
        rows.append(("faster than PyTorch, fused optimizers", cells(r["torch fused / core"], lambda x: x > 1.0,
                                                                    lambda x: f"{x:.2f}×")))
    if ev:
        rows.append(("evaluation ≤ 8% of `fit` (mnist_5k)", cells(ev, lambda x: x <= 0.08, lambda x: f"{x:.1%}")))
    if not rows:
        return []
    return ["", "**Targets of issue 5** (ratios of medians from this run)", "",
            "| target | " + " | ".join(opts) + " |", "|---|" + "---:|" * len(opts),
            *[f"| {label} | {row} |" for label, row in rows]]


def profile_markdown(report: dict[str, Any]) -> list[str]:
    prof, floor = report.get("profile") or {}, report.get("floor_pieces") or {}
    if not prof:
        return []
    opts = list(prof)
    pieces = sorted({k for p in prof.values() for k in p if "." in k}, key=_piece_order)
    mean = {k: statistics.mean(p.get(k, 0.0) for p in prof.values()) for k in pieces}
    total_layers = sum(mean.values())
    lines = ["", "**Where descentlab's time goes** (µs per iteration, mean over the optimizers' profile runs; "
             "`matmul alone` is the same matmuls timed in isolation)", "",
             "| piece | µs/it | matmul alone | overhead |", "|---|---:|---:|---:|"]
    if report.get("profile_lean"):
        lines[2:2] = ["", "`loss_and_grad` runs the fused Affine/ReLU loop (the numba backend's `FusedReluStep`): "
                      "an `AffineK` row is that layer's matmul calls (the last layer's also its bias add and bias "
                      "gradient); "
                      "`ReLUK.forward` is AffineK's bias add fused with the ReLU, `ReLUK.backward` the ReLU mask fused "
                      "with AffineK's bias gradient."]
    for k in pieces:
        alone = floor.get(k)
        lines.append(f"| {k} | {mean[k] * 1e6:.0f} | {fmt(alone * 1e6 if alone else math.nan, 0)} | "
                     f"{fmt((mean[k] - alone) * 1e6 if alone else math.nan, 0)} |")
    other = statistics.mean(p["other"] for p in prof.values())
    lines.append(f"| other inside loss_and_grad | {other * 1e6:.0f} | | |")
    lines.append(f"| all layers | {total_layers * 1e6:.0f} | {sum(floor.values()) * 1e6:.0f} | "
                 f"{(total_layers - sum(floor.values())) * 1e6:.0f} |")
    lines += ["", "| per optimizer (µs/it) | " + " | ".join(opts) + " |", "|---|" + "---:|" * len(opts)]
    for key, label in (("gather", "minibatch gather (`RowGather`, as `fit`)"), ("loss_and_grad", "loss_and_grad"),
                       ("update", "optimizer update"), ("total", "total (profiled)")):
        lines.append(f"| {label} | " + " | ".join(f"{prof[o][key] * 1e6:.0f}" for o in opts) + " |")
    lines.append("| update share of total | " + " | ".join(f"{prof[o]['update'] / prof[o]['total']:.0%}"
                                                           for o in opts) + " |")
    return lines


def _piece_order(key: str) -> tuple[int, int, str]:
    name, method = key.rsplit(".", 1)
    digits = "".join(ch for ch in name if ch.isdigit())
    num = int(digits) if digits else 99
    return (0, num, name) if method == "forward" else (1, -num, name)


def write_section(path: Path, text: str, start: str = START, end: str = END) -> None:
    """Replace the text between the `start` and `end` markers in `path` (append the markers when absent)."""
    old = path.read_text() if path.exists() else ""
    block = f"{start}\n{text.rstrip()}\n{end}"
    if start in old and end in old and old.index(start) < old.index(end):
        new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def publish(script: str, argv: Sequence[str] | None, body: str, report: dict[str, Any], args: argparse.Namespace,
            start: str, end: str) -> None:
    """Print the report under the command that made it; `--json` and `--write` (the section between the markers)."""
    cmd = f"python scripts/{script} " + shown_args(argv if argv is not None else sys.argv[1:])
    text = f"Command: `{cmd.strip()}`\n\n{body}"
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    if args.write:
        write_section(args.write, text, start, end)
        section = start.removeprefix("<!-- ").split(":start")[0]
        print(f"wrote the {section} section of {args.write}", file=sys.stderr)


def shown_args(argv: Sequence[str]) -> str:
    """The command-line arguments that shape the numbers: `--write`/`--json` and their values left out."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--write", "--json"):
            skip = True
        elif not arg.startswith(("--write=", "--json=")):
            out.append(arg)
    return " ".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=None, help="iterations per timed run (default 2000)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3)")
    p.add_argument("--optimizers", default="sgd,momentum,adagrad,adam", help="comma-separated (default: all four)")
    p.add_argument("--threads", type=int, default=1, help="BLAS and torch intra-op threads (default 1)")
    p.add_argument("--quick", action="store_true", help="300 iterations x 2 repeats unless given")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--no-profile", action="store_true", help="skip the per-piece profile of descentlab")
    p.add_argument("--eval-datasets", default="fashion_mnist",
                   help="data sets whose evaluation cost is measured alone ('none' to skip)")
    p.add_argument("--write", type=Path, help="replace the bench:core section of this Markdown file")
    p.add_argument("--json", type=Path, help="also write the full report as JSON here")
    p.add_argument("--backend", default="auto", choices=("auto", "numpy", "numba"),
                   help="descentlab's numerics backend (default auto: numba when installed)")
    args = p.parse_args(argv)
    args.iterations = args.iterations or (300 if args.quick else 2000)
    args.repeats = args.repeats or (2 if args.quick else 3)
    if args.iterations < 1 or args.repeats < 1 or args.threads < 1:
        p.error("--iterations, --repeats and --threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    global BACKEND
    args = parse_args(argv)
    BACKEND = args.backend
    if not args.no_torch:
        torch_available()  # load torch's OpenMP runtime before the limit, so threadpoolctl limits it too
    with threadpool_limits(limits=args.threads):
        report = run_benchmark(args)
    publish("bench.py", argv, markdown(report), report, args, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
