"""Redraw the book's Figure 6-8 or 6-9 from tracked runs, running the experiment first if needed.

    python scripts/reproduce.py fig6_8
    python scripts/reproduce.py fig6_9 --seeds 3 [--dataset mnist_5k] [--iterations 2000] [--out reports]

The runs come from `python train.py -m experiment=<figure> ...`; jobs already tracked as FINISHED are skipped,
so running this again only redraws. Figures (PNG, PDF) and the plotted data (CSV) go to `<out>/<figure>/` and
are logged as artifacts of an `analysis` run in the figure's MLflow experiment.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from descentlab.interrupts import run_child

REPO = Path(__file__).resolve().parent.parent
OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")


def run_sweep(figure: str, seeds: int, dataset: str, parallel: bool, iterations: int | None,
              sweep_dir: Path | None = None) -> None:
    """Launch (or complete) the figure's sweep through train.py; finished jobs are skipped."""
    args = [sys.executable, str(REPO / "train.py"), "-m", f"experiment={figure}", f"optimizer={','.join(OPTIMIZERS)}"]
    if sweep_dir is not None:  # Hydra's job folders; by default multirun/ of the repository
        args.append(f"hydra.sweep.dir={sweep_dir.resolve()}/${{now:%Y-%m-%d}}/${{now:%H-%M-%S.%f}}")
    if figure == "fig6_9":
        args += [f"seed={','.join(str(s) for s in range(seeds))}", f"dataset={dataset}"]
        if iterations is not None:
            args.append(f"training.iterations={iterations}")
    if parallel:
        args.append("hydra/launcher=parallel")
    print("running:", " ".join(args[1:]), flush=True)
    # Ctrl-C or SIGTERM reach train.py once, through us: its jobs end KILLED with their points, and we exit as it did.
    code = run_child(args, cwd=REPO)
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        print(f"interrupted: the {figure} sweep stopped (exit {code}); run the same command to finish it",
              file=sys.stderr)
        raise SystemExit(code)
    if code != 0:
        raise SystemExit(f"error: the {figure} sweep failed (exit {code})")


def reproduce_fig6_8(out: Path, uri: str) -> list[Path]:
    import numpy as np

    from descentlab.analysis.book_figures import figure_6_8
    from descentlab.analysis.plots import save_figure
    from descentlab.analysis.runs import load_history, load_runs

    runs = load_runs("fig6_8", tracking_uri=uri, params={"task.objective": "book"})
    runs = runs[runs["outcome"] == "finished"].sort_values("start_time").drop_duplicates("optimizer.name", keep="last")
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


def reproduce_fig6_9(out: Path, uri: str, seeds: int, dataset: str, iterations: int) -> list[Path]:
    from descentlab.analysis.book_figures import figure_6_9, figure_6_9_ours
    from descentlab.analysis.plots import save_figure
    from descentlab.analysis.runs import load_history, load_runs
    from descentlab.analysis.stats import aggregate
    from descentlab.analysis.tables import format_summary, print_table

    runs = load_runs("fig6_9", tracking_uri=uri, params={"dataset.name": dataset, "training.iterations": iterations})
    runs = runs[(runs["outcome"] == "finished") & (runs["seed"] < seeds)]
    runs = runs.sort_values("start_time").drop_duplicates(["optimizer.name", "seed"], keep="last")
    history = load_history(runs, metrics=["train/loss"], tracking_uri=uri)
    data = history.merge(runs[["run_id", "optimizer.name", "seed"]], on="run_id")
    data.to_csv(out / "fig6_9_train_loss.csv", index=False)
    summary = aggregate(runs, by=("optimizer.name",), metrics=("final/train_loss", "final/test_acc"))
    summary.to_csv(out / "fig6_9_summary.csv", index=False)
    print_table(format_summary(summary), title=f"Figure 6-9 on {dataset}: {len(runs)} runs")
    files = [*save_figure(figure_6_9(history, runs), out, "fig6_9_book"),
             *save_figure(figure_6_9_ours(history, runs), out, "fig6_9_ours")]
    return [*files, out / "fig6_9_train_loss.csv", out / "fig6_9_summary.csv"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figure", choices=("fig6_8", "fig6_9"))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (fig6_9 only; default 3)")
    parser.add_argument("--dataset", default="mnist_5k", help="fig6_9 only (default mnist_5k)")
    parser.add_argument("--iterations", type=int, default=2000, help="fig6_9 only (default: the book's 2000)")
    parser.add_argument("--out", type=Path, default=REPO / "reports")
    parser.add_argument("--no-parallel", action="store_true", help="run the sweep's jobs one after another")
    parser.add_argument("--sweep-dir", type=Path, help="folder for the jobs' Hydra outputs (default: multirun/)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.iterations < 1:
        parser.error(f"--seeds and --iterations must be >= 1, got {args.seeds} and {args.iterations}")

    from descentlab.analysis.report import log_analysis_run
    from descentlab.analysis.runs import default_tracking_uri

    start = time.perf_counter()
    run_sweep(args.figure, args.seeds, args.dataset, parallel=not args.no_parallel,
              iterations=None if args.iterations == 2000 else args.iterations, sweep_dir=args.sweep_dir)
    uri = default_tracking_uri()
    out = args.out / args.figure
    out.mkdir(parents=True, exist_ok=True)
    if args.figure == "fig6_8":
        files = reproduce_fig6_8(out, uri)
    else:
        files = reproduce_fig6_9(out, uri, args.seeds, args.dataset, args.iterations)
    run_id = log_analysis_run(args.figure, out, uri, name=f"analysis-{args.figure}",
                              params={"figure": args.figure, "seeds": args.seeds, "dataset": args.dataset,
                                      "iterations": args.iterations})
    for path in files:
        print(f"wrote {path}")
    print(f"logged to MLflow run {run_id} (experiment {args.figure}); {time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
