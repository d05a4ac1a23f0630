"""Batch normalisation (the book's section 6.3, Figure 6-18): 784-100x5-10 on the first 1,000 training images,
with and without batch norm, from 16 initial weight scales (conf/experiment/batch_norm.yaml); the 4x4 grid of
training-accuracy curves and, per scale, who is ahead, from the tracked runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from descentlab.experiments import Launch, Options, Preset

SCALES: tuple[float, ...] = tuple(float(w) for w in np.logspace(0, -4, 16))  # the book's weight_scale_list
QUICK_SCALES = SCALES[::5]  # 1, 0.046, 0.0022, 0.0001: a 2x2 grid
SEEDS, DATASET, ITERATIONS, QUICK_ITERATIONS = 1, "mnist_5k", 200, 20  # 20 epochs of 10 iterations; quick: 2
TRAIN_SUBSET, BATCH = 1000, 100


def reproduce(options: Options, launch: Launch, out: Path, uri: str) -> list[Path]:
    """Run (or complete) the scales x batch_norm sweep, then the grid, its data and the per-scale summary."""
    from descentlab.analysis.chapter6_figures import (
        batch_norm_curves,
        batch_norm_summary,
        figure_batch_norm,
    )
    from descentlab.analysis.groups import latest_runs
    from descentlab.analysis.plots import save_figure
    from descentlab.analysis.runs import load_history, load_runs
    from descentlab.analysis.tables import print_table

    seeds, dataset, iterations = options.pick(SEEDS, DATASET, ITERATIONS, QUICK_ITERATIONS)
    scales = QUICK_SCALES if options.quick else SCALES
    overrides = ["experiment=batch_norm", "model.batch_norm=true,false",
                 f"model.weight_init={','.join(repr(w) for w in scales)}",
                 f"seed={','.join(str(s) for s in range(seeds))}", f"dataset={dataset}",
                 f"training.iterations={iterations}"]
    launch(overrides)
    out.mkdir(parents=True, exist_ok=True)

    runs = load_runs("batch_norm", tracking_uri=uri, params={
        "task.name": "classify", "dataset.name": dataset, "training.iterations": iterations,
        "dataset.train_subset": TRAIN_SUBSET, "model.name": "mlp_6x100"})
    w = runs["model.weight_init"].map(lambda v: float(v) if not isinstance(v, str) else np.nan)
    runs = runs[np.isclose(w.to_numpy()[:, None], np.array(scales)[None, :], rtol=1e-9).any(axis=1)
                & (runs["seed"] < seeds)]
    runs = latest_runs(runs, ["model.weight_init", "model.batch_norm", "seed"])
    history = load_history(runs, metrics=["train/acc"], tracking_uri=uri)
    curves = batch_norm_curves(history, runs, iterations_per_epoch=TRAIN_SUBSET / BATCH)
    curves.to_csv(out / "batch_norm_train_acc.csv", index=False)
    summary = batch_norm_summary(curves)
    summary.to_csv(out / "batch_norm_summary.csv", index=False)
    print_table(summary, title=f"Figure 6-18 on {dataset}: final and mean training accuracy per weight scale")
    ahead_final, ahead_mean = int(summary["bn_ahead_final"].sum()), int(summary["bn_ahead_mean"].sum())
    finding = (f"batch norm ahead at {ahead_final} of {len(summary)} weight scales in final training accuracy, "
               f"at {ahead_mean} of {len(summary)} in mean accuracy over the epochs (learning speed)")
    print(finding)
    (out / "batch_norm_finding.txt").write_text(finding + "\n")
    files = save_figure(figure_batch_norm(curves), out, "batch_norm")
    return [*files, out / "batch_norm_train_acc.csv", out / "batch_norm_summary.csv", out / "batch_norm_finding.txt"]


PRESET = Preset(name="batch_norm", experiment="batch_norm", reproduce=reproduce,
                description="batch norm vs none over 16 initial weight scales (Figure 6-18, 32 runs of 200 it)")
