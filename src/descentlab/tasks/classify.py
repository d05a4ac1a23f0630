"""`task=classify`: train an MLP on a data set (the book's Figure 6-9 setting by default) and draw its loss curve."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import numpy as np

from descentlab.config.checks import ConfigError
from descentlab.config.settings import JobSettings
from descentlab.tasks import select_backend


@functools.lru_cache(maxsize=1)
def load_dataset(name: str, path: str | None, download: bool, cache_dir: str | None = None) -> Any:
    """The data set, loaded once per process: the jobs of a sweep in one worker mostly share it.

    Parsing mnist_5k's CSV costs ~0.12 s a job. The arrays are made read-only, so no job can change
    what the next one trains on.
    """
    from descentlab.data import load_dataset as load

    data = load(name, path=path, cache_dir=cache_dir, download=download)  # path is None for the embedded sets
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        array.flags.writeable = False
    return data


class ClassifyTask:
    """Train an MLP on a data set; building it loads the data and checks the batch against it."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.error: str | None = None
        self.history: Any = None  # training.History once training completed
        self.model: Any = None
        from descentlab.data import IDX_SPECS  # the sets that take a path (mnist, fashion_mnist)

        ds = settings.dataset
        path, download, cache_dir = None, True, None
        if ds.name in IDX_SPECS:
            path, download, cache_dir = ds.path, bool(ds.download), settings.paths.cache_dir
        elif ds.path is not None:
            raise ConfigError(f"dataset.path applies to mnist and fashion_mnist only, not {ds.name!r}")
        self.data = load_dataset(ds.name, path, download, cache_dir)
        self.backend = select_backend(settings.numerics.backend)
        n_train = self.data.info.n_train
        if settings.training.batch_size > n_train:
            raise ConfigError(f"training.batch_size must be at most the {n_train} training examples of "
                              f"{ds.name}, got {settings.training.batch_size}")

    def tags(self) -> dict[str, str]:
        info = self.data.info
        return {"dataset.checksum": info.checksum, "dataset.source": str(info.source),
                "dataset.n_train": str(info.n_train), "dataset.n_test": str(info.n_test)}

    def execute(self, tracker: Any, name: str) -> str:
        """Train, streaming the metrics to the tracker; FINISHED, or FAILED if the loss diverged."""
        from descentlab.nn import MLP
        from descentlab.optim import make_optimizer
        from descentlab.progress import Progress
        from descentlab.rng import RandomStreams
        from descentlab.training import DivergedError, fit

        s, info = self.settings, self.data.info
        streams = RandomStreams.from_seed(s.seed)
        m = s.model
        model = MLP(info.n_features, list(m.hidden_sizes), info.n_classes, activation=m.activation,
                    weight_init=m.weight_init, batch_norm=m.batch_norm, dropout=m.dropout,
                    weight_decay=m.weight_decay, dtype=m.dtype, rng=streams.init, dropout_rng=streams.dropout,
                    backend=self.backend)
        optimizer = make_optimizer(s.optimizer.name, backend=self.backend, **s.optimizer.hyperparams)
        t = s.training
        progress = Progress(name, t.iterations, enabled=t.progress)

        def callback(step: int, metrics: Any) -> None:
            tracker.log_metrics(metrics, step)
            progress(step, metrics)

        def loss_callback(first_step: int, losses: Any) -> None:  # blocks: no per-step call on the hot path
            tracker.log_series("train/loss", first_step, losses)
            progress.losses(first_step, losses)

        try:
            self.history = fit(model, optimizer, self.data, iterations=t.iterations, batch_size=t.batch_size,
                               eval_every=t.eval_every, rng=streams.batches, sampling=t.sampling,
                               callback=callback, loss_callback=loss_callback,
                               eval_train_subset=t.eval_train_subset, eval_test_subset=t.eval_test_subset,
                               backend=self.backend)
        except DivergedError as exc:
            tracker.set_tag("diverged_at_step", str(exc.step))
            self.error = f"DivergedError: {exc}"
            print(f"{name}: diverged at step {exc.step} (loss {exc.loss})", file=sys.stderr)
            return "FAILED"
        finally:
            progress.close()
        self.model = model
        return "FINISHED"

    def log_results(self, tracker: Any, tmp: Path, name: str) -> None:
        """After training completed: the summary metrics, the weights and the loss-curve plot."""
        from descentlab.tasks.plots import loss_curve_png

        history = self.history
        if history is None or self.model is None:
            return
        tracker.log_metrics(history.summary(window=100), self.settings.training.iterations)
        if tracker.keeps_artifacts:
            weights = tmp / "weights.npz"
            np.savez(weights, **self.model.state_dict())
            tracker.log_artifact(str(weights))
            tracker.log_artifact(str(loss_curve_png(history.losses, history.evals, name, tmp / "loss_curve.png")))
