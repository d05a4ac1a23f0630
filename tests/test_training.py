"""The training loop: reproducibility, common random numbers, sampling, callbacks, divergence, and the
book's comparison on the embedded MNIST digits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from descentlab.data import load_dataset
from descentlab.nn import MLP
from descentlab.optim import SGD, Adam, make_optimizer
from descentlab.rng import RandomStreams, stream
from descentlab.training import DivergedError, History, fit, minibatches


@dataclass
class Blobs:
    """Four well-separated Gaussian classes in 10-D: small enough for fast, exact loop tests."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="module")
def blobs() -> Blobs:
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(4, 10))
    y = rng.integers(0, 4, 600)
    x = (centers[y] + rng.normal(size=(600, 10))).astype(np.float32)
    return Blobs(x[:500], y[:500], x[500:], y[500:])


def train(data, optimizer_name: str, seed: int, iterations: int, **kwargs) -> tuple[MLP, History]:
    streams = RandomStreams.from_seed(seed)
    model = MLP(data.x_train.shape[1], kwargs.pop("hidden", [16, 16]), int(data.y_train.max()) + 1,
                rng=streams.init, dropout_rng=streams.dropout, dropout=kwargs.pop("dropout", 0.0))
    optimizer = make_optimizer(optimizer_name, **kwargs.pop("hyper", {}))
    history = fit(model, optimizer, data, iterations=iterations, rng=streams.batches, **kwargs)
    return model, history


def test_same_seed_twice_gives_bit_identical_losses(blobs: Blobs) -> None:
    _, a = train(blobs, "adam", seed=3, iterations=60, batch_size=32, dropout=0.2)
    _, b = train(blobs, "adam", seed=3, iterations=60, batch_size=32, dropout=0.2)
    np.testing.assert_array_equal(a.losses, b.losses)
    _, c = train(blobs, "adam", seed=4, iterations=60, batch_size=32, dropout=0.2)
    assert not np.array_equal(a.losses, c.losses)


def test_every_optimizer_starts_from_the_same_weights_and_sees_the_same_batches(blobs: Blobs) -> None:
    seen: dict[str, list[np.ndarray]] = {}
    starts: dict[str, np.ndarray] = {}
    for name in ("sgd", "momentum", "adagrad", "adam"):
        streams = RandomStreams.from_seed(7)
        model = MLP(10, [16], 4, rng=streams.init, dropout_rng=streams.dropout)
        starts[name] = model.params.copy()
        batches = minibatches(500, 32, streams.batches, "replacement")
        seen[name] = [next(batches) for _ in range(5)]
        fit(model, make_optimizer(name), blobs, iterations=5, batch_size=32, rng=stream(7, "batches"))
        assert not np.array_equal(model.params, starts[name])  # it did train
    for name in ("momentum", "adagrad", "adam"):
        np.testing.assert_array_equal(starts[name], starts["sgd"])
        for got, want in zip(seen[name], seen["sgd"], strict=True):
            np.testing.assert_array_equal(got, want)


def test_streams_are_independent_of_each_other() -> None:
    init, batches = stream(0, "init").random(5), stream(0, "batches").random(5)
    assert not np.array_equal(init, batches)
    np.testing.assert_array_equal(init, RandomStreams.from_seed(0).init.random(5))
    with pytest.raises(ValueError, match=r"unknown random stream 'weights'; allowed: \['batches', 'dropout', 'init'\]"):
        stream(0, "weights")
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        stream(-1, "init")


def test_callback_receives_every_loss_and_every_evaluation(blobs: Blobs) -> None:
    calls: list[tuple[int, dict]] = []
    _, history = train(blobs, "sgd", seed=0, iterations=25, batch_size=20, eval_every=10,
                       callback=lambda step, metrics: calls.append((step, dict(metrics))))
    losses = [(s, m["train/loss"]) for s, m in calls if "train/loss" in m]
    evals = [(s, m) for s, m in calls if "test/acc" in m]
    assert [s for s, _ in losses] == list(range(25))
    np.testing.assert_array_equal([v for _, v in losses], history.losses)
    assert [s for s, _ in evals] == [0, 10, 20, 25]
    assert set(evals[0][1]) == {"train/acc", "test/loss", "test/acc", "time/elapsed_s"}
    assert [e["step"] for e in history.evals] == [0, 10, 20, 25]


def test_loss_callback_gets_every_loss_in_blocks_before_each_evaluation(blobs: Blobs) -> None:
    events: list[tuple] = []
    _, history = train(blobs, "sgd", seed=0, iterations=57, batch_size=20, eval_every=20, loss_block=7,
                       callback=lambda step, metrics: events.append(("eval", step, dict(metrics))),
                       loss_callback=lambda first, losses: events.append(("losses", first, losses.copy())))
    blocks = [(first, losses) for kind, first, losses in events if kind == "losses"]
    assert all("train/loss" not in e[2] for e in events if e[0] == "eval")  # no per-step calls any more
    assert [first for first, _ in blocks] == sorted(first for first, _ in blocks)
    assert all(0 < len(losses) <= 7 for _, losses in blocks)
    np.testing.assert_array_equal(np.concatenate([losses for _, losses in blocks]), history.losses)
    assert [first + len(losses) for first, losses in blocks][-1] == 57
    # Before each evaluation at step s, exactly the losses of steps < s have been handed over.
    for i, event in enumerate(events):
        if event[0] == "eval":
            seen = sum(len(e[2]) for e in events[:i] if e[0] == "losses")
            assert seen == event[1], event[1]
    # The same losses as without blocks (the per-step path).
    _, plain = train(blobs, "sgd", seed=0, iterations=57, batch_size=20, eval_every=20)
    np.testing.assert_array_equal(plain.losses, history.losses)


def test_loss_callback_gets_the_losses_before_fit_raises(blobs: Blobs) -> None:
    got: list[np.ndarray] = []
    with pytest.raises(DivergedError) as info:
        train(blobs, "sgd", seed=0, iterations=200, batch_size=32, hyper={"lr": 1e4}, eval_every=None,
              loss_callback=lambda first, losses: got.append(losses.copy()))
    np.testing.assert_array_equal(np.concatenate(got), info.value.history.losses)

    class Interrupting(MLP):
        def loss_and_grad(self, x, t):
            if self.calls == 13:
                raise KeyboardInterrupt
            self.calls += 1
            return super().loss_and_grad(x, t)

    model = Interrupting(10, [8], 4, rng=0)
    model.calls = 0
    blocks: list[tuple[int, int]] = []
    with pytest.raises(KeyboardInterrupt):
        fit(model, SGD(), blobs, iterations=50, batch_size=8, eval_every=None, loss_block=5,
            rng=np.random.default_rng(0), loss_callback=lambda first, losses: blocks.append((first, len(losses))))
    assert blocks == [(0, 5), (5, 5), (10, 3)]  # steps 0..12, each once


def test_a_failing_loss_callback_is_not_handed_the_block_twice(blobs: Blobs) -> None:
    calls: list[int] = []

    def broken(first: int, losses: np.ndarray) -> None:
        calls.append(first)
        raise OSError("store gone")

    with pytest.raises(OSError, match="store gone"):
        train(blobs, "sgd", seed=0, iterations=30, batch_size=8, eval_every=None, loss_block=10,
              loss_callback=broken)
    assert calls == [0]


def test_training_separates_the_blobs_and_summarises(blobs: Blobs) -> None:
    model, history = train(blobs, "adam", seed=1, iterations=300, batch_size=32, hyper={"lr": 0.01})
    assert history.losses[-50:].mean() < 0.1 < history.losses[:10].mean()
    summary = history.summary(window=100)
    assert summary["final/train_loss"] == pytest.approx(history.losses[-100:].mean())
    assert summary["final/test_acc"] == history.evals[-1]["test/acc"] > 0.95
    assert summary["best/test_acc"] >= summary["final/test_acc"]
    loss, acc = model.evaluate(blobs.x_test, blobs.y_test)
    assert acc == summary["final/test_acc"] and loss == history.evals[-1]["test/loss"]


def test_epoch_sampling_visits_every_example_once_per_epoch() -> None:
    batches = minibatches(10, 3, np.random.default_rng(0), "epoch")
    epoch1 = np.concatenate([next(batches) for _ in range(3)])
    assert len(set(epoch1.tolist())) == 9  # 3 full batches of a permutation; the last odd one is dropped
    small = minibatches(5, 8, np.random.default_rng(0), "epoch")
    assert sorted(next(small).tolist()) == [0, 1, 2, 3, 4]
    with_replacement = next(minibatches(10, 1000, np.random.default_rng(0), "replacement"))
    assert with_replacement.shape == (1000,) and len(set(with_replacement.tolist())) == 10


def test_divergence_stops_before_the_bad_update(blobs: Blobs) -> None:
    with pytest.raises(DivergedError) as info:
        train(blobs, "sgd", seed=0, iterations=200, batch_size=32, hyper={"lr": 1e4})
    err = info.value
    assert 0 < err.step < 200 and not np.isfinite(err.loss)
    assert len(err.history.losses) == err.step and np.all(np.isfinite(err.history.losses))
    assert f"at step {err.step}" in str(err)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 0}, "iterations must be an integer >= 1, got 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"eval_every": -5}, "eval_every must be an integer >= 1, got -5"),
        ({"sampling": "stratified"}, "sampling must be one of ['replacement', 'epoch'], got 'stratified'"),
        ({"loss_block": 0}, "loss_block must be an integer >= 1, got 0"),
    ],
)
def test_bad_loop_arguments(blobs: Blobs, kwargs: dict, message: str) -> None:
    args = {"iterations": 10, "batch_size": 8, **kwargs}
    with pytest.raises(ValueError) as info:
        fit(MLP(10, [4], 4, rng=0), SGD(), blobs, rng=np.random.default_rng(0), **args)
    assert message in str(info.value)


@pytest.mark.slow
def test_book_network_on_mnist_5k_adam_beats_sgd() -> None:
    """Figure 6-9's network and batch on the embedded digits, 500 iterations, one seed."""
    data = load_dataset("mnist_5k")
    final: dict[str, float] = {}
    start_weights = []
    for name, optimizer in (("sgd", SGD(lr=0.01)), ("adam", Adam())):
        streams = RandomStreams.from_seed(0)
        model = MLP(784, [100, 100, 100, 100], 10, activation="relu", weight_init="he", rng=streams.init)
        start_weights.append(model.params.copy())
        history = fit(model, optimizer, data, iterations=500, batch_size=128, eval_every=100, rng=streams.batches)
        assert history.losses.shape == (500,)
        final[name] = float(history.losses[-50:].mean())
    np.testing.assert_array_equal(start_weights[0], start_weights[1])
    assert final["adam"] < 0.3
    assert final["sgd"] > final["adam"]


def test_evaluations_use_fixed_prefixes_and_the_last_one_the_whole_test_set(blobs: Blobs) -> None:
    calls: list[tuple[int, dict]] = []
    model, _ = train(blobs, "adam", seed=2, iterations=20, batch_size=16, eval_every=10,
                     eval_train_subset=30, eval_test_subset=8,
                     callback=lambda step, metrics: calls.append((step, dict(metrics))))
    evals = {step: m for step, m in calls if "test/acc" in m}
    assert sorted(evals) == [0, 10, 20]
    for step in (0, 10):
        assert (evals[step]["test/acc"] * 8) == pytest.approx(round(evals[step]["test/acc"] * 8))  # k/8 correct
        assert (evals[step]["train/acc"] * 30) == pytest.approx(round(evals[step]["train/acc"] * 30))
    full_loss, full_acc = model.evaluate(blobs.x_test, blobs.y_test)
    assert evals[20]["test/acc"] == full_acc and evals[20]["test/loss"] == full_loss  # all 100 test examples
    part_loss, _ = model.evaluate(blobs.x_test[:8], blobs.y_test[:8])
    assert part_loss != full_loss


def test_fit_gathers_with_the_models_backend_or_the_one_given(blobs: Blobs) -> None:
    """The gather is exact under every backend, so the backend fit gathers with does not change the losses."""
    from descentlab.backend import select

    seen: list[str] = []

    class Spy:
        def __init__(self, backend) -> None:
            self.backend, self.name = backend, backend.name

        def __getattr__(self, key: str):
            return getattr(self.backend, key)

        def gather(self, x: np.ndarray):
            seen.append(self.name)
            return self.backend.gather(x)

    def run(**kwargs) -> np.ndarray:
        streams = RandomStreams.from_seed(4)
        model = MLP(10, [8], 4, rng=streams.init, backend=kwargs.pop("model_backend", select("numpy")))
        return fit(model, make_optimizer("sgd", backend=select("numpy")), blobs, iterations=12, batch_size=16,
                   eval_every=None, rng=streams.batches, **kwargs).losses

    numpy_gather = run(model_backend=Spy(select("numpy")))
    auto_gather = run(backend=Spy(select("auto")))
    assert seen == ["numpy", select("auto").name]
    np.testing.assert_array_equal(numpy_gather, auto_gather)
    assert len(set(numpy_gather.tolist())) > 1
