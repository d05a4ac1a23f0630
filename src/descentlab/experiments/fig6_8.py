"""Figure 6-8: the four optimizers' paths on f(x, y) = x²/20 + y² from (-7, 2), 30 steps, at the book's learning
rates (conf/experiment/fig6_8.yaml), redrawn from the tracked runs."""

from __future__ import annotations

from pathlib import Path

from descentlab.experiments import Launch, Options, Preset

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")


def reproduce(options: Options, launch: Launch, out: Path, uri: str) -> list[Path]:
    """Run (or complete) the 4-job sweep, then draw the paths; `options` change nothing (30 steps are instant)."""
    import numpy as np

    from descentlab.analysis.book_figures import figure_6_8
    from descentlab.analysis.groups import latest_runs
    from descentlab.analysis.plots import save_figure
    from descentlab.analysis.runs import load_history, load_runs

    launch(["experiment=fig6_8", f"optimizer={','.join(OPTIMIZERS)}"])
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs("fig6_8", tracking_uri=uri, params={"task.objective": "book"})
    runs = latest_runs(runs, ["optimizer.name"], outcomes=("finished",))
    history = load_history(runs, metrics=["path/x", "path/y"], tracking_uri=uri)
    paths = {}
    for name in OPTIMIZERS:
        row = runs[runs["optimizer.name"] == name]
        if row.empty:
            raise SystemExit(f"error: no FINISHED fig6_8 run for optimizer {name!r}")
        h = history[history["run_id"] == row["run_id"].iloc[0]]
        wide = h.pivot_table(index="step", columns="metric", values="value").sort_index()
        paths[name] = np.column_stack([wide["path/x"].to_numpy(), wide["path/y"].to_numpy()])
    data = history.merge(runs[["run_id", "optimizer.name", "optimizer.lr"]], on="run_id")
    data.to_csv(out / "fig6_8_paths.csv", index=False)
    return [*save_figure(figure_6_8(paths), out, "fig6_8"), out / "fig6_8_paths.csv"]


PRESET = Preset(name="fig6_8", experiment="fig6_8", reproduce=reproduce,
                description="the book's Figure 6-8: optimizer paths on x²/20 + y² (4 runs of 30 steps)")
