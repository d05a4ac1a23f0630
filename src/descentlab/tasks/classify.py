"""`task=classify`: train an MLP on a data set (the book's Figure 6-9 setting by default) and draw its loss curve."""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from descentlab.config.checks import ConfigError
from descentlab.config.settings import JobSettings
from descentlab.tasks import select_backend
from descentlab.tracking.best import GROUP_TAG

# The metric `tracking.weights=best` ranks a classification run by (higher is better): its last evaluation.
BEST_METRIC = "final/test_acc"


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


def carve_dataset(data: Any, train_subset: int | None, validation: float, seed: int) -> Any:
    """The job's training subset and validation set (`dataset.train_subset`, `dataset.validation`), read-only like
    the data set they come from; a split the data cannot give is a bad-input error."""
    from descentlab.data import carve

    try:
        carved = carve(data, train_subset=train_subset, validation=validation, seed=seed)
    except ValueError as exc:
        raise ConfigError(f"dataset: {exc}") from None
    for array in (carved.x_train, carved.y_train, carved.x_val, carved.y_val):
        if array is not None:
            array.flags.writeable = False
    return carved


class ClassifyTask:
    """Train an MLP on a data set; building it loads the data and checks the batch against it."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.error: str | None = None
        self.history: Any = None  # training.History once training completed
        self.model: Any = None
        self.summary: dict[str, float] = {}  # the final/* metrics, once training completed
        from descentlab.data import IDX_SPECS  # the sets that take a path (mnist, fashion_mnist)

        ds = settings.dataset
        path, download, cache_dir = None, True, None
        if ds.name in IDX_SPECS:
            path, download, cache_dir = ds.path, bool(ds.download), settings.paths.cache_dir
        elif ds.path is not None:
            raise ConfigError(f"dataset.path applies to mnist and fashion_mnist only, not {ds.name!r}")
        self.data = carve_dataset(load_dataset(ds.name, path, download, cache_dir), ds.train_subset,
                                  ds.validation, ds.validation_seed)
        self.backend = select_backend(settings.numerics.backend)
        n_train = self.data.info.n_train
        if settings.training.batch_size > n_train:
            raise ConfigError(f"training.batch_size must be at most the {n_train} training examples of "
                              f"{ds.name}, got {settings.training.batch_size}")

    def tags(self) -> dict[str, str]:
        info = self.data.info
        return {"dataset.checksum": info.checksum, "dataset.source": str(info.source),
                "dataset.n_train": str(info.n_train), "dataset.n_val": str(info.n_val),
                "dataset.n_test": str(info.n_test)}

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
        """After training completed: the summary metrics, the weights (as `tracking.weights` says) and the plot."""
        from descentlab.tasks.plots import loss_curve_png
        from descentlab.tracking.best import REASON_TAG, WEIGHTS_TAG

        history = self.history
        if history is None or self.model is None:
            return
        summary = self.summary = history.summary(window=100)
        tracker.log_metrics(summary, self.settings.training.iterations)
        if tracker.keeps_artifacts:
            store, reason = self.weights_decision(tracker, summary.get(BEST_METRIC))
            if store:
                weights = tmp / "weights.npz"
                np.savez(weights, **self.model.state_dict())
                tracker.log_artifact(str(weights))
            tracker.set_tags({WEIGHTS_TAG: "stored" if store else "skipped", REASON_TAG: reason})
            tracker.log_artifact(str(loss_curve_png(history.losses, history.evals, name, tmp / "loss_curve.png")))

    def weights_decision(self, tracker: Any, value: float | None) -> tuple[bool, str]:
        """Whether this run stores `weights.npz`, and why in words (its `weights.reason` tag).

        `best`: only when no FINISHED sibling (same sweep; outside a sweep, same config but the seed) has a higher
        final test accuracy; ties, a missing metric or a failed comparison keep the weights.
        """
        mode = self.settings.tracking.weights
        if mode != "best":
            return mode == "all", f"tracking.weights={mode}"
        if value is None or not math.isfinite(value):
            return True, f"tracking.weights=best, but no finite {BEST_METRIC} to compare: kept"
        from descentlab.tracking.best import better_sibling

        try:
            better = better_sibling(tracker.client, tracker.experiment_id, BEST_METRIC, value,
                                    parent_run_id=tracker.parent_run_id, group=tracker.tags.get(GROUP_TAG))
        except Exception as exc:  # a file too many rather than the best run's weights missing
            print(f"warning: {tracker.run_name}: weights kept, the best-so-far query failed: {exc}", file=sys.stderr)
            return True, f"tracking.weights=best, comparison failed ({type(exc).__name__}): kept"
        if better is None:
            return True, f"best so far: {BEST_METRIC} {value:.6g}"
        return False, (f"not the best so far: run {better.run_id} ({better.run_name}) has {BEST_METRIC} "
                       f"{better.value:.6g} > {value:.6g}")
