"""Compare the tracked runs of an experiment: tables across seeds, plots, a baseline comparison.

    python scripts/analyze.py optimizer-comparison [--by optimizer,model] [--sweep ID] [--out reports/NAME]

Writes summary tables (Markdown, CSV, LaTeX; with the iterations each run needed to bring its 50-step mean
training loss under --loss-target), loss curves with 95% bands, final-metric point plots, a
learning-rate sensitivity plot when `optimizer.lr` was swept and a performance profile when several
models or data sets are present; prints the summary; logs everything as an `analysis` run in the experiment.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHORT = {"optimizer": "optimizer.name", "model": "model.name", "dataset": "dataset.name", "lr": "optimizer.lr"}
METRICS = ("final/train_loss", "final/test_acc", "best/test_acc", "duration_s")


def columns(spec: str) -> tuple[str, ...]:
    return tuple(SHORT.get(part.strip(), part.strip()) for part in spec.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment")
    parser.add_argument("--by", default="optimizer,model,dataset", help="group columns (default: %(default)s)")
    parser.add_argument("--sweep", default=None, help="only this sweep: parent run id or sweep folder name")
    parser.add_argument("--baseline", default="sgd", help="optimizer the others are compared with (default sgd)")
    parser.add_argument("--loss-target", type=float, default=0.1,
                        help="report iterations until the 50-step mean train/loss reaches this (default 0.1)")
    parser.add_argument("--out", type=Path, default=None, help="default reports/<experiment>")
    parser.add_argument("--no-log", action="store_true", help="do not log the outputs to MLflow")
    args = parser.parse_args(argv)

    from descentlab.analysis import plots, stats, tables
    from descentlab.analysis.report import log_analysis_run
    from descentlab.analysis.runs import AnalysisError, default_tracking_uri, load_history, load_runs

    uri = default_tracking_uri()
    try:
        runs = load_runs(args.experiment, tracking_uri=uri, sweep=args.sweep)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    by = tuple(c for c in columns(args.by) if c in runs.columns and runs[c].nunique(dropna=True) > 0)
    out = args.out or REPO / "reports" / args.experiment
    out.mkdir(parents=True, exist_ok=True)

    history = load_history(runs, metrics=["train/loss"], tracking_uri=uri)
    target_col = f"steps_to_loss_{args.loss_target:g}"
    if not history.empty:
        reached = stats.steps_to_target(history, args.loss_target, metric="train/loss", smooth_window=50)
        runs = runs.merge(reached[["run_id", "step"]].rename(columns={"step": target_col}), on="run_id", how="left")
    metrics = tuple(m for m in (*METRICS, target_col) if m in runs.columns)
    summary = stats.aggregate(runs, by=by, metrics=metrics)
    wide = tables.format_summary(summary)
    tables.print_table(wide, title=f"{args.experiment}: {len(runs)} runs")
    (out / "summary.md").write_text(tables.to_markdown(wide))
    (out / "summary.tex").write_text(tables.to_latex(wide))
    tables.to_csv(summary, out / "summary.csv")
    runs.to_csv(out / "runs.csv", index=False)

    group = tuple(c for c in by if c != "optimizer.name")
    if "optimizer.name" in runs.columns and args.baseline in set(runs["optimizer.name"]):
        for metric in ("final/train_loss", "final/test_acc"):
            if metric in runs.columns:
                comparison = stats.compare_to_baseline(runs, args.baseline, metric, by=group)
                tables.to_csv(comparison, out / f"vs_{args.baseline}_{metric.replace('/', '_')}.csv")

    if not history.empty:
        col = "model.name" if "model.name" in by else None
        row = "dataset.name" if "dataset.name" in by else None
        grid = plots.loss_curves(history, runs, metric="train/loss", col=col, row=row, smooth="kaiser")
        plots.save_figure(getattr(grid, "figure", grid), out, "loss_curves")
    if "final/train_loss" in runs.columns and "optimizer.name" in runs.columns:
        plots.save_figure(plots.final_metric_points(runs, metric="final/train_loss"), out, "final_train_loss")
    if "optimizer.lr" in runs.columns and runs.groupby("optimizer.name")["optimizer.lr"].nunique().max() > 1:
        plots.save_figure(plots.lr_sensitivity(runs, metric="final/train_loss"), out, "lr_sensitivity")
    problems = [c for c in ("model.name", "dataset.name") if c in runs.columns]
    if problems and runs[problems].drop_duplicates().shape[0] > 1 and "final/train_loss" in runs.columns:
        profile = stats.performance_profile(runs, "final/train_loss", problem=tuple(problems))
        tables.to_csv(profile, out / "performance_profile.csv")
        plots.save_figure(plots.performance_profile_plot(profile), out, "performance_profile")

    print(f"wrote {len(list(out.iterdir()))} files to {out}")
    if not args.no_log:
        run_id = log_analysis_run(args.experiment, out, uri, params={"by": ",".join(by), "sweep": args.sweep})
        print(f"logged to MLflow run {run_id} (experiment {args.experiment})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
