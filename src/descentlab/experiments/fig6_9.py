"""Figure 6-9: the four optimizers on the 784-100x4-10 MLP at their book defaults (conf/experiment/fig6_9.yaml),
as the book draws it (one seed) and over seeds (mean and 95% t band), from the tracked runs."""

from __future__ import annotations

from pathlib import Path

from descentlab.experiments import Launch, Options, Preset

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
SEEDS, DATASET, ITERATIONS = 3, "mnist_5k", 2000  # defaults; the book: one unseeded run of 2,000 iterations
QUICK_ITERATIONS = 200


def reproduce(options: Options, launch: Launch, out: Path, uri: str) -> list[Path]:
    """Run (or complete) the optimizers × seeds sweep, then the two figures, the plotted data and a summary."""
    from descentlab.analysis.book_figures import figure_6_9, figure_6_9_ours
    from descentlab.analysis.groups import latest_runs
    from descentlab.analysis.plots import save_figure
    from descentlab.analysis.runs import load_history, load_runs
    from descentlab.analysis.stats import aggregate
    from descentlab.analysis.tables import format_summary, print_table

    seeds, dataset, iterations = options.pick(SEEDS, DATASET, ITERATIONS, QUICK_ITERATIONS, quick_seeds=1)
    overrides = ["experiment=fig6_9", f"optimizer={','.join(OPTIMIZERS)}",
                 f"seed={','.join(str(s) for s in range(seeds))}", f"dataset={dataset}"]
    if iterations != ITERATIONS:  # the preset's own value stays implicit, as the yaml says
        overrides.append(f"training.iterations={iterations}")
    launch(overrides)
    out.mkdir(parents=True, exist_ok=True)

    runs = load_runs("fig6_9", tracking_uri=uri, params={"dataset.name": dataset, "training.iterations": iterations})
    runs = latest_runs(runs[runs["seed"] < seeds], ["optimizer.name", "seed"], outcomes=("finished",))
    history = load_history(runs, metrics=["train/loss"], tracking_uri=uri)
    data = history.merge(runs[["run_id", "optimizer.name", "seed"]], on="run_id")
    data.to_csv(out / "fig6_9_train_loss.csv", index=False)
    summary = aggregate(runs, by=("optimizer.name",), metrics=("final/train_loss", "final/test_acc"))
    summary.to_csv(out / "fig6_9_summary.csv", index=False)
    print_table(format_summary(summary), title=f"Figure 6-9 on {dataset}: {len(runs)} runs")
    files = [*save_figure(figure_6_9(history, runs), out, "fig6_9_book"),
             *save_figure(figure_6_9_ours(history, runs), out, "fig6_9_ours")]
    return [*files, out / "fig6_9_train_loss.csv", out / "fig6_9_summary.csv"]


PRESET = Preset(name="fig6_9", experiment="fig6_9", reproduce=reproduce,
                description="the book's Figure 6-9: SGD, Momentum, AdaGrad, Adam on MNIST (default 3 seeds x 2,000 it)")
