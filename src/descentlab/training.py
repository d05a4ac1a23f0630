"""The training loop as a library function: no Hydra, no MLflow, just numbers and a callback.

Step numbering: a metric at step s describes the parameters after s updates. `train/loss` at
step s is the minibatch loss computed in the forward pass of update s+1 (the loss the gradient
belongs to), so recording it costs no extra forward pass. The book instead records the loss
after each update with a second pass; the two curves differ by one step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from descentlab.backend import Backend, select

SAMPLING = ("replacement", "epoch")

Callback = Callable[[int, Mapping[str, float]], object]
LossCallback = Callable[[int, np.ndarray], object]  # (first step, train/loss of consecutive steps)


class Model(Protocol):
    params: np.ndarray
    grads: np.ndarray

    def loss_and_grad(self, x: np.ndarray, t: np.ndarray) -> float: ...

    def evaluate(self, x: np.ndarray, t: np.ndarray) -> tuple[float, float]: ...


class Optimizer(Protocol):
    def update(self, params: np.ndarray, grads: np.ndarray) -> None: ...


class Data(Protocol):
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class History:
    """What one `fit` produced: every minibatch loss and every evaluation."""

    losses: np.ndarray
    evals: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0
    start_step: int = 0  # losses[i] is the loss at step start_step + i (0 unless resumed)

    def summary(self, window: int = 100) -> dict[str, float]:
        """Summary metrics: mean loss of the last `window` steps, final and best test accuracy."""
        out: dict[str, float] = {}
        if len(self.losses):
            out["final/train_loss"] = float(np.mean(self.losses[-window:]))
        if self.evals:
            out["final/test_acc"] = self.evals[-1]["test/acc"]
            out["best/test_acc"] = max(e["test/acc"] for e in self.evals)
            if "val/loss" in self.evals[-1]:
                out["final/val_loss"] = self.evals[-1]["val/loss"]
                out["final/val_acc"] = self.evals[-1]["val/acc"]
                out["best/val_acc"] = max(e["val/acc"] for e in self.evals)
        return out


class DivergedError(RuntimeError):
    """The loss became NaN or infinite: training stops and the run should end as failed."""

    def __init__(self, step: int, loss: float, history: History) -> None:
        super().__init__(f"loss diverged to {loss} at step {step}")
        self.step = step
        self.loss = loss
        self.history = history


def minibatches(n: int, batch_size: int, rng: np.random.Generator, sampling: str) -> Iterator[np.ndarray]:
    """Endless minibatch indices into a set of `n` examples.

    "replacement" draws each batch independently and uniformly, as the book does
    (`np.random.choice(n, batch_size)`); "epoch" walks a fresh permutation per epoch and drops the
    incomplete last batch (or uses the whole set when it is smaller than one batch).
    """
    if sampling == "replacement":
        while True:
            yield rng.integers(0, n, size=batch_size)
    elif sampling == "epoch":
        size = min(batch_size, n)
        while True:
            order = rng.permutation(n)
            for start in range(0, n - size + 1, size):
                yield order[start : start + size]
    else:
        raise ValueError(f"sampling must be one of {list(SAMPLING)}, got {sampling!r}")


def evaluate(model: Model, data: Data, train_subset: int | None, test_subset: int | None = None) -> dict[str, float]:
    """Accuracy on a fixed prefix of the training set, loss and accuracy on (a fixed prefix of) the test set, and on
    the whole validation set when the data has one (`x_val`: choices are made on it, so it is never subsampled)."""
    n_train = len(data.y_train) if train_subset is None else min(train_subset, len(data.y_train))
    n_test = len(data.y_test) if test_subset is None else min(test_subset, len(data.y_test))
    _, train_acc = model.evaluate(data.x_train[:n_train], data.y_train[:n_train])
    test_loss, test_acc = model.evaluate(data.x_test[:n_test], data.y_test[:n_test])
    metrics = {"train/acc": train_acc, "test/loss": test_loss, "test/acc": test_acc}
    x_val, y_val = getattr(data, "x_val", None), getattr(data, "y_val", None)
    if x_val is not None and y_val is not None and len(y_val):
        metrics["val/loss"], metrics["val/acc"] = model.evaluate(x_val, y_val)
    return metrics


def fit(
    model: Model,
    optimizer: Optimizer,
    data: Data,
    *,
    iterations: int,
    batch_size: int = 128,
    eval_every: int | None = 100,
    rng: np.random.Generator,
    sampling: str = "replacement",
    callback: Callback | None = None,
    eval_train_subset: int | None = 1_000,
    eval_test_subset: int | None = 1_000,
    start_step: int = 0,
    loss_callback: LossCallback | None = None,
    loss_block: int = 100,
    backend: Backend | None = None,
) -> History:
    """Train `model` with `optimizer` for `iterations` minibatch updates.

    `callback(step, metrics)` receives {"train/loss": ...} at every step and
    {"train/acc", "test/loss", "test/acc", "time/elapsed_s"} (and "val/loss", "val/acc" when `data` has a
    validation set) at step 0, every `eval_every`
    steps and after the last update (`eval_every=None`: only at the start and the end). `train/acc` is
    measured on the first `eval_train_subset` training examples; test metrics on the first
    `eval_test_subset` test examples during training and on the whole test set after the last update.
    A NaN or infinite loss raises `DivergedError` before the bad update is applied.

    `loss_callback(first_step, losses)` takes the `train/loss` values in blocks instead (then `callback`
    gets only the evaluations): every `loss_block` steps, before each evaluation and before `fit` returns
    or raises, so no per-step Python call is left on the hot path. `losses` is a view: copy to keep it.

    Resuming: `start_step=k` continues a run whose model and optimizer were restored after k updates (see
    `descentlab.checkpoint`); `rng` must be the minibatch generator *as the run started* (the same seed's
    `RandomStreams.batches`): the k batches already used are drawn again and dropped, which is exact for both
    samplings and costs microseconds. Steps k..iterations-1 then see the same batches as an unbroken run.

    The minibatch images passed to `model.loss_and_grad` may live in a buffer that the next step overwrites
    (the backend's `gather`): a model must not keep a reference to them beyond the call. `backend` gathers
    the minibatches; None: the model's (`model.backend`), else `select("auto")`.
    """
    _check_int("iterations", iterations, 1)
    _check_int("start_step", start_step, 0)
    if start_step >= iterations:
        raise ValueError(f"start_step must be < iterations ({iterations}), got {start_step}")
    _check_int("batch_size", batch_size, 1)
    if eval_every is not None:
        _check_int("eval_every", eval_every, 1)
    _check_int("loss_block", loss_block, 1)
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {list(SAMPLING)}, got {sampling!r}")
    x, y = data.x_train, data.y_train
    if len(y) == 0:
        raise ValueError("the training set is empty")

    history = History(losses=np.empty(iterations, dtype=np.float64))
    start = time.perf_counter()
    batches = minibatches(len(y), batch_size, rng, sampling)
    if backend is None:
        backend = getattr(model, "backend", None) or select()
    gather = backend.gather(x)  # the images of a minibatch, maybe in a buffer reused by the next step
    for _ in range(start_step):  # replay the draws of the updates already done (resume)
        next(batches)

    all_losses = history.losses  # indexed by step (history.losses is trimmed on the way out)
    delivered = start_step  # train/loss of steps before this one went to loss_callback

    def deliver(upto: int) -> None:
        nonlocal delivered
        if loss_callback is not None and upto > delivered:
            first, delivered = delivered, upto  # first: a callback that raises is not handed the block again
            loss_callback(first, all_losses[first:upto])

    def run_eval(step: int) -> None:
        deliver(step)
        # Evaluations during training use fixed prefixes (cheap, ~5% of a run); the last one the full test set.
        metrics = evaluate(model, data, eval_train_subset, None if step == iterations else eval_test_subset)
        metrics["time/elapsed_s"] = time.perf_counter() - start
        history.evals.append({"step": float(step), **metrics})
        if callback is not None:
            callback(step, metrics)

    # Overflow on the way to a NaN loss is reported once, as DivergedError, not as NumPy warnings.
    per_step = callback is not None and loss_callback is None
    done = start_step  # steps whose loss is recorded
    with np.errstate(over="ignore", invalid="ignore"), _deliver_on_exit(deliver, lambda: done):
        for step in range(start_step, iterations):
            if step == 0 or (eval_every is not None and step % eval_every == 0):
                run_eval(step)
            elif step - delivered >= loss_block:
                deliver(step)
            idx = next(batches)
            loss = model.loss_and_grad(gather(idx), y.take(idx, axis=0))
            if not math.isfinite(loss):
                history.losses = history.losses[start_step:step]
                history.start_step = start_step
                history.elapsed_s = time.perf_counter() - start
                raise DivergedError(step, loss, history)
            history.losses[step] = loss
            done = step + 1
            if per_step:
                callback(step, {"train/loss": loss})
            optimizer.update(model.params, model.grads)
        run_eval(iterations)
    history.losses, history.start_step = history.losses[start_step:], start_step
    history.elapsed_s = time.perf_counter() - start
    return history


@contextlib.contextmanager
def _deliver_on_exit(deliver: Callable[[int], None], done: Callable[[], int]) -> Iterator[None]:
    """On any exception (divergence, Ctrl-C) hand over the losses recorded so far, then re-raise."""
    try:
        yield
    except BaseException:
        deliver(done())
        raise


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
