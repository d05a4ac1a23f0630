"""Weight initialisation (the book's section 6.2): Figure 6-15, the 784-100x4-10 ReLU MLP trained from std 0.01,
Xavier and He initial weights (conf/experiment/weight_init.yaml), and the activation histograms of 5 random layers
of 100 for sigmoid, tanh and ReLU at four initialisations (conf/experiment/weight_init_activations.yaml,
`task=activations`). Both go to the MLflow experiment `weight_init`; every figure is drawn from its tracked runs.
"""

from __future__ import annotations

from pathlib import Path

from descentlab.experiments import Launch, Options, Preset

INITS = ("0.01", "xavier", "he")  # Figure 6-15's three lines
ACTIVATIONS = ("sigmoid", "tanh", "relu")
ACTIVATION_INITS = ("1.0", "0.01", "xavier", "he")  # the histograms' grid rows: activation x these
SEEDS, DATASET, ITERATIONS = 1, "mnist_5k", 2000  # the book: one run of 2,000 iterations
QUICK_ITERATIONS = 100


def reproduce(options: Options, launch: Launch, out: Path, uri: str) -> list[Path]:
    """Run (or complete) both sweeps, then Figure 6-15 and the histogram grid with their data and summaries."""
    from descentlab.analysis.chapter6_figures import (
        activation_histograms,
        activation_summary,
        figure_activation_grid,
        figure_weight_init,
        weight_init_curves,
        weight_init_summary,
    )
    from descentlab.analysis.groups import latest_runs
    from descentlab.analysis.plots import save_figure
    from descentlab.analysis.runs import load_history, load_runs
    from descentlab.analysis.tables import print_table

    seeds, dataset, iterations = options.pick(SEEDS, DATASET, ITERATIONS, QUICK_ITERATIONS)
    overrides = ["experiment=weight_init", f"model.weight_init={','.join(INITS)}",
                 f"seed={','.join(str(s) for s in range(seeds))}", f"dataset={dataset}",
                 f"training.iterations={iterations}"]
    launch(overrides)
    launch(["experiment=weight_init_activations", f"model.activation={','.join(ACTIVATIONS)}",
            f"model.weight_init={','.join(ACTIVATION_INITS)}", "seed=0"])  # the book's one draw
    out.mkdir(parents=True, exist_ok=True)

    runs = load_runs("weight_init", tracking_uri=uri, params={
        "task.name": "classify", "dataset.name": dataset, "training.iterations": iterations,
        "model.name": "mlp_5x100", "model.weight_init": set(INITS)})
    runs = latest_runs(runs[runs["seed"] < seeds], ["model.weight_init", "seed"])
    history = load_history(runs, metrics=["train/loss"], tracking_uri=uri)
    curves = weight_init_curves(history, runs)
    curves.to_csv(out / "weight_init_train_loss.csv", index=False)
    summary = weight_init_summary(runs)
    summary.to_csv(out / "weight_init_summary.csv", index=False)
    print_table(summary, title=f"Figure 6-15 on {dataset}: {iterations} SGD iterations, {len(runs)} runs")

    acts = load_runs("weight_init", tracking_uri=uri, params={
        "task.name": "activations", "model.activation": set(ACTIVATIONS),
        "model.weight_init": set(ACTIVATION_INITS), "seed": 0})
    acts = latest_runs(acts, ["model.activation", "model.weight_init"])
    act_history = load_history(acts, tracking_uri=uri)
    hists = activation_histograms(act_history, acts)
    hists.to_csv(out / "weight_init_activations.csv", index=False)
    act_summary = activation_summary(act_history, acts)
    act_summary.to_csv(out / "weight_init_activations_summary.csv", index=False)
    print_table(act_summary, title="activations at initialisation: std and saturated/zero share per layer")
    files = [*save_figure(figure_weight_init(curves), out, "weight_init"),
             *save_figure(figure_activation_grid(hists), out, "weight_init_activations")]
    return [*files, *(out / f for f in ("weight_init_train_loss.csv", "weight_init_summary.csv",
                                         "weight_init_activations.csv", "weight_init_activations_summary.csv"))]


PRESET = Preset(name="weight_init", experiment="weight_init", reproduce=reproduce,
                description="weight initialisation: std 0.01 vs Xavier vs He (Figure 6-15) and activation histograms")
