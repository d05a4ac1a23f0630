"""Same config and seed, same bits: `train/loss` histories across two runs, across launchers, and after a resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from descentlab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from descentlab.data import load_dataset
from descentlab.nn import MLP
from descentlab.optim import make_optimizer
from descentlab.rng import RandomStreams
from descentlab.training import fit

SWEEP = ("-m", "optimizer=sgd,adam", "seed=3", "model=mlp_2x50", "training.iterations=60", "training.eval_every=20",
         "training.progress=false")


def losses_by_optimizer(store, client, runs: list) -> dict[str, tuple[list[float], list[float]]]:
    """optimizer -> (train/loss from metrics.csv, train/loss from MLflow's history), in step order."""
    out = {}
    for run in runs:
        path = client.download_artifacts(run.info.run_id, "metrics.csv", str(store.root / "dl" / run.info.run_id))
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["metric"] == "train/loss"]
        from_csv = [float(r["value"]) for r in sorted(rows, key=lambda r: int(r["step"]))]
        history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(60))
        out[run.data.params["optimizer.name"]] = (from_csv, [m.value for m in history])
    return out


@pytest.mark.e2e
def test_two_runs_and_basic_vs_parallel_launcher_are_bit_identical(store) -> None:
    sweeps = {}
    for label, extra in (("basic", ()), ("basic again", ("force=true",)),
                         ("parallel", ("force=true", "hydra/launcher=parallel"))):
        before = {r.info.run_id for r in store.runs()}
        result = store.train(*SWEEP, *extra)
        assert result.returncode == 0, result.stderr[-3000:]
        new = [r for r in store.runs() if r.info.run_id not in before and "mlflow.parentRunId" in r.data.tags]
        assert len(new) == 2 and all(r.info.status == "FINISHED" for r in new)
        sweeps[label] = losses_by_optimizer(store, store.client(), new)
    reference = sweeps["basic"]
    assert reference["sgd"][0] != reference["adam"][0]  # the comparison below can tell runs apart
    for label, got in sweeps.items():
        for optimizer, (from_csv, from_mlflow) in got.items():
            assert len(from_csv) == 60
            # Bit-identical: exact float equality, and MLflow's copy equals the CSV's.
            assert from_csv == reference[optimizer][0], (label, optimizer)
            assert from_mlflow == from_csv, (label, optimizer)


def _train(data, *, steps: int, optimizer: str, dropout: float, sampling: str, hidden: list[int],
           checkpoint: Path | None = None, resume_at: int | None = None):
    """`steps` iterations straight, or `resume_at` iterations, a checkpoint, fresh objects, and the rest."""
    def build():
        streams = RandomStreams.from_seed(7)
        model = MLP(data.info.n_features, hidden, data.info.n_classes, dropout=dropout, rng=streams.init,
                    dropout_rng=streams.dropout)
        return model, make_optimizer(optimizer), streams

    common = dict(batch_size=64, eval_every=250, sampling=sampling, eval_train_subset=200, eval_test_subset=200)
    model, opt, streams = build()
    if resume_at is None:
        return fit(model, opt, data, iterations=steps, rng=streams.batches, **common).losses, model
    first = fit(model, opt, data, iterations=resume_at, rng=streams.batches, **common).losses
    save_checkpoint(checkpoint, model, opt, resume_at)
    del model, opt, streams  # the second half starts from the file alone, as a new process would
    model, opt, streams = build()
    model.params[...] = 0.0  # prove the weights come from the checkpoint
    start = load_checkpoint(checkpoint, model, opt)
    assert start == resume_at
    second = fit(model, opt, data, iterations=steps, rng=streams.batches, start_step=start, **common)
    assert second.start_step == resume_at and len(second.losses) == steps - resume_at
    return np.concatenate([first, second.losses]), model


@pytest.fixture(scope="module")
def mnist_5k():
    return load_dataset("mnist_5k")


def test_resume_1000_plus_1000_equals_2000_straight(mnist_5k, tmp_path: Path) -> None:
    """The book's Figure 6-9 network with Adam: the resumed loss history and weights equal the straight run's."""
    kwargs = dict(steps=2000, optimizer="adam", dropout=0.0, sampling="replacement", hidden=[100, 100, 100, 100])
    straight, model_a = _train(mnist_5k, **kwargs)
    resumed, model_b = _train(mnist_5k, checkpoint=tmp_path / "ckpt.npz", resume_at=1000, **kwargs)
    assert resumed.shape == (2000,)
    assert np.array_equal(straight, resumed)
    assert np.array_equal(model_a.params, model_b.params)


@pytest.mark.parametrize("sampling", ["epoch", "replacement"])
def test_resume_with_dropout_and_epoch_sampling(mnist_5k, tmp_path: Path, sampling: str) -> None:
    """Dropout's generator and a mid-epoch position are restored too (momentum keeps a velocity slot)."""
    kwargs = dict(steps=300, optimizer="momentum", dropout=0.2, sampling=sampling, hidden=[50, 50])
    straight, _ = _train(mnist_5k, **kwargs)
    resumed, _ = _train(mnist_5k, checkpoint=tmp_path / "ckpt.npz", resume_at=97, **kwargs)  # 97: mid-epoch
    assert np.array_equal(straight, resumed)


def test_resume_without_restoring_the_dropout_stream_differs(mnist_5k, tmp_path: Path) -> None:
    """The check above can fail: with the dropout generator left at its fresh state the losses diverge."""
    streams = RandomStreams.from_seed(7)
    model = MLP(784, [50, 50], 10, dropout=0.2, rng=streams.init, dropout_rng=streams.dropout)
    opt = make_optimizer("momentum")
    common = dict(batch_size=64, eval_every=None, eval_train_subset=200, eval_test_subset=200)
    fit(model, opt, mnist_5k, iterations=50, rng=streams.batches, **common)
    save_checkpoint(tmp_path / "c.npz", model, opt, 50)
    rest_a = fit(model, opt, mnist_5k, iterations=80, rng=RandomStreams.from_seed(7).batches, start_step=50,
                 **common).losses
    fresh = RandomStreams.from_seed(7)
    model_b = MLP(784, [50, 50], 10, dropout=0.2, rng=fresh.init, dropout_rng=fresh.dropout)
    opt_b = make_optimizer("momentum")
    load_checkpoint(tmp_path / "c.npz", model_b, opt_b)
    model_b.set_dropout_rng(RandomStreams.from_seed(7).dropout)  # undo the restored stream
    rest_b = fit(model_b, opt_b, mnist_5k, iterations=80, rng=fresh.batches, start_step=50, **common).losses
    assert not np.array_equal(rest_a, rest_b)


def test_checkpoint_for_another_model_is_one_clear_error(mnist_5k, tmp_path: Path) -> None:
    streams = RandomStreams.from_seed(0)
    model = MLP(784, [20], 10, rng=streams.init)
    save_checkpoint(tmp_path / "c.npz", model, make_optimizer("sgd"), 5)
    with pytest.raises(CheckpointError, match="does not fit this model/optimizer"):
        load_checkpoint(tmp_path / "c.npz", MLP(784, [30], 10, rng=streams.init), make_optimizer("sgd"))
    with pytest.raises(CheckpointError, match="state is for optimizer"):
        load_checkpoint(tmp_path / "c.npz", MLP(784, [20], 10, rng=streams.init), make_optimizer("adam"))


def test_start_step_must_be_below_iterations(mnist_5k) -> None:
    streams = RandomStreams.from_seed(0)
    model = MLP(784, [10], 10, rng=streams.init)
    with pytest.raises(ValueError, match=r"start_step must be < iterations \(10\), got 10"):
        fit(model, make_optimizer("sgd"), mnist_5k, iterations=10, rng=streams.batches, start_step=10)
