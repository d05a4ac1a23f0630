"""The book's hyperparameter search (section 6.5, Figure 6-24) as an Optuna study: random search over the learning
rate 10^U(-6,-2) and the weight decay 10^U(-8,-4), 100 trials of 784-100x6-10 on the first 500 training images
(20% held out for validation), ranked by final validation accuracy (conf/experiment/hparam_search.yaml).

The search runs through `hydra/sweeper=descentlab_optuna` (each trial a tracked run, the study in optuna.db next to
the store, resumable); the figures are drawn from the tracked runs: the best 20 trials' validation (solid) and
training (dashed) accuracy per epoch, every trial in the (lr, weight decay) plane, and a table of all trials.
"""

from __future__ import annotations

from pathlib import Path

from descentlab.experiments import Launch, Options, Preset

EXPERIMENT, DATASET = "hparam_search", "mnist_5k"
TRIALS, QUICK_TRIALS = 100, 6
ITERATIONS, QUICK_ITERATIONS = 200, 20  # 50 epochs of 4 batches; quick: 5 epochs
TRAIN_SUBSET, VALIDATION, BATCH = 500, 0.2, 100
ITERATIONS_PER_EPOCH = TRAIN_SUBSET * (1 - VALIDATION) / BATCH  # 400 training images, batch 100: 4
BEST = 20  # the book's figure: the best 20 trials, 5 a row


def command(options: Options) -> list[str]:
    """train.py's overrides: what conf/experiment/hparam_search.yaml's header says to type, plus what options change
    (the study's name derives from them: the same options find the same study again)."""
    overrides = ["experiment=hparam_search", "hydra/sweeper=descentlab_optuna",
                 f"hydra.sweeper.n_trials={QUICK_TRIALS if options.quick else TRIALS}"]
    _, dataset, iterations = options.pick(1, DATASET, ITERATIONS, QUICK_ITERATIONS)  # one seed: see reproduce
    if dataset != DATASET:
        overrides.append(f"dataset={dataset}")
    if iterations != ITERATIONS:
        overrides.append(f"training.iterations={iterations}")
    return overrides


def reproduce(options: Options, launch: Launch, out: Path, uri: str) -> list[Path]:
    """Run (or finish) the search, then the figures and the trial table from its tracked runs. `--seeds` does not
    apply: every trial trains with seed 0, as the book's search uses one run per configuration."""
    from descentlab.analysis.plots import save_figure
    from descentlab.analysis.runs import load_history, load_runs
    from descentlab.analysis.search_figures import best_curves, figure_best_trials, figure_search_scatter, trial_table
    from descentlab.analysis.tables import print_table

    _, dataset, iterations = options.pick(1, DATASET, ITERATIONS, QUICK_ITERATIONS)
    launch(command(options))
    out.mkdir(parents=True, exist_ok=True)

    runs = load_runs(EXPERIMENT, tracking_uri=uri, params={
        "task.name": "classify", "dataset.name": dataset, "training.iterations": iterations,
        "dataset.train_subset": TRAIN_SUBSET, "dataset.validation": VALIDATION, "training.batch_size": BATCH,
        "model.name": "mlp_7x100", "optimizer.name": "sgd"})
    table = trial_table(runs)
    table.to_csv(out / "hparam_search_trials.csv", index=False)
    best = table.dropna(subset=["rank"]).head(BEST)
    history = load_history(runs[runs["run_id"].isin(best["run_id"])], metrics=["val/acc", "train/acc"],
                           tracking_uri=uri)
    curves = best_curves(history, table, BEST, ITERATIONS_PER_EPOCH)
    curves.to_csv(out / "hparam_search_best_curves.csv", index=False)
    print_table(best[["rank", "lr", "weight_decay", "val_acc", "train_loss"]],
                title=f"hyperparameter search on {dataset}: the best {len(best)} of {len(table)} trials "
                      f"({iterations} iterations, {iterations / ITERATIONS_PER_EPOCH:g} epochs each)")
    files = [*save_figure(figure_best_trials(curves), out, "hparam_search"),
             *save_figure(figure_search_scatter(table), out, "hparam_search_scatter")]
    return [*files, out / "hparam_search_trials.csv", out / "hparam_search_best_curves.csv"]


PRESET = Preset(name="hparam_search", experiment=EXPERIMENT, reproduce=reproduce,
                description="random search of lr and weight decay, 100 Optuna trials; the best 20 (Figure 6-24)")
