"""Overfitting and its cures (the book's section 6.4, Figures 6-20, 6-21, 6-23): 784-100x6-10 on the first 300
training images, without regularisation, with weight decay λ = 0.1 and with dropout 0.2
(conf/experiment/overfit.yaml); train vs test accuracy per epoch and the final gap, from the tracked runs.

All three train 301 epochs (903 iterations), the book's dropout length, so the gaps compare at one budget (the
book stops weight decay at 201 epochs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from descentlab.experiments import Launch, Options, Preset

VARIANTS = ((0.0, 0.0), (0.1, 0.0), (0.0, 0.2))  # (weight decay, dropout)
SEEDS, DATASET, ITERATIONS, QUICK_ITERATIONS = 1, "mnist_5k", 903, 30  # 301 epochs of 3 iterations; quick: 10
TRAIN_SUBSET, BATCH = 300, 100


def reproduce(options: Options, launch: Launch, out: Path, uri: str) -> list[Path]:
    """Run (or complete) the two sweeps (weight decay 0 and 0.1; dropout 0.2), then the panels and the gap table."""
    from descentlab.analysis.chapter6_figures import figure_overfit, overfit_curves, overfit_summary
    from descentlab.analysis.groups import latest_runs
    from descentlab.analysis.plots import save_figure
    from descentlab.analysis.runs import load_history, load_runs
    from descentlab.analysis.tables import print_table

    seeds, dataset, iterations = options.pick(SEEDS, DATASET, ITERATIONS, QUICK_ITERATIONS)
    common = [f"seed={','.join(str(s) for s in range(seeds))}", f"dataset={dataset}",
              f"training.iterations={iterations}"]
    launch(["experiment=overfit", "model.weight_decay=0,0.1", *common])
    launch(["experiment=overfit", "model.dropout=0.2", *common])
    out.mkdir(parents=True, exist_ok=True)

    runs = load_runs("overfit", tracking_uri=uri, params={
        "task.name": "classify", "dataset.name": dataset, "training.iterations": iterations,
        "dataset.train_subset": TRAIN_SUBSET, "model.name": "mlp_7x100"})
    variant = list(zip(runs["model.weight_decay"].astype(float), runs["model.dropout"].astype(float), strict=True))
    runs = runs[np.array([v in VARIANTS for v in variant]) & (runs["seed"] < seeds).to_numpy()]
    runs = latest_runs(runs, ["model.weight_decay", "model.dropout", "seed"])
    history = load_history(runs, metrics=["train/acc", "test/acc"], tracking_uri=uri)
    curves = overfit_curves(history, runs, iterations_per_epoch=TRAIN_SUBSET / BATCH)
    curves.to_csv(out / "overfit_acc.csv", index=False)
    summary = overfit_summary(curves)
    summary.to_csv(out / "overfit_summary.csv", index=False)
    print_table(summary, title=f"overfitting on the first {TRAIN_SUBSET} images of {dataset}: "
                               f"{iterations} iterations ({iterations * BATCH / TRAIN_SUBSET:g} epochs)")
    files = save_figure(figure_overfit(curves), out, "overfit")
    return [*files, out / "overfit_acc.csv", out / "overfit_summary.csv"]


PRESET = Preset(name="overfit", experiment="overfit", reproduce=reproduce,
                description="overfitting on 300 images: none vs weight decay 0.1 vs dropout 0.2 (Figures 6-20/21/23)")
