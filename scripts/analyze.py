"""Compare the tracked runs of an experiment: tables across seeds, plots, a baseline comparison.

    python scripts/analyze.py optimizer-comparison [--by optimizer,lr] [--sweep ID] [--logy | --no-logy]
                              [--baseline sgd] [--out reports/NAME] [--max-curves 12]

Like with like: a row, a curve or a band holds the seeds of one configuration. Runs are grouped by every
config key that varies between them except the seed (keys that only say where or how a run is stored,
such as tracking.*, do not count); the table shows those keys as columns and states the ones every row
shares. --by groups by the given keys only (optimizer, model, dataset, lr, iterations or full names such
as training.batch_size); runs differing in other keys are then pooled, and the table, summary.md and every
figure say which keys were pooled over which values. A --by key with a single value is still a column.

Writes summary tables (Markdown, CSV, LaTeX; with the iterations each run needed to bring its 50-step mean
training loss under --loss-target), loss curves with 95% bands (and their data, loss_curves.csv), final-metric
point plots, a learning-rate sensitivity plot when `optimizer.lr` was swept, a performance profile when the
optimizers ran on several problems (settings of the other keys); prints the summary; logs everything as an
`analysis` run in the experiment. The y axes are logarithmic when the plotted values span more than two
decades (--logy / --no-logy force it).

Large experiments: runs are read in pages (bulk SQL on a store reached directly) and histories one run at a time
into per-configuration accumulators on a grid of at most ~500 steps (stated on the figure), so memory does not grow
with the runs' points; a panel of more than --max-curves configurations shows each optimizer's best ones; with more
than 200,000 configuration pairs the baseline comparison takes the baseline's best configuration per context.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

REPO = Path(__file__).resolve().parent.parent
SHORT = {"optimizer": "optimizer.name", "model": "model.name", "dataset": "dataset.name", "lr": "optimizer.lr",
         "iterations": "training.iterations"}
METRICS = ("final/train_loss", "final/test_acc", "best/test_acc", "duration_s")
OPTIMIZER = "optimizer.name"
LOSS = "train/loss"
SMOOTH = "kaiser"  # the book's smoothing of loss curves
PRINT_ROWS = 60  # summary rows printed; the files hold them all
MAX_PAIRS = 200_000  # baseline comparisons written in full up to this many pairs (1,000 configurations: ~190,000)
TARGET_WINDOW = 50  # steps to the loss target: the first step whose trailing 50-step mean reaches it


def _steps(runs: pd.DataFrame) -> int:
    """Steps of the longest run (training.iterations), for the curves' step grid; 1 when not logged."""
    if "training.iterations" in runs.columns:
        import pandas as pd

        longest = pd.to_numeric(runs["training.iterations"], errors="coerce").max()
        if longest == longest and longest >= 1:  # not NaN
            return int(longest)
    return 1


def columns(spec: str) -> tuple[str, ...]:
    return tuple(SHORT.get(part.strip(), part.strip()) for part in spec.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment")
    parser.add_argument("--by", default=None,
                        help="group by these keys only, pooling whatever else differs, e.g. optimizer,lr "
                             "(default: every config key that varies, except the seed)")
    parser.add_argument("--sweep", default=None, help="only this sweep: parent run id or sweep folder name")
    parser.add_argument("--baseline", default="sgd", help="optimizer the others are compared with (default sgd)")
    parser.add_argument("--loss-target", type=float, default=0.1,
                        help="report iterations until the 50-step mean train/loss reaches this (default 0.1)")
    parser.add_argument("--logy", action=argparse.BooleanOptionalAction, default=None,
                        help="log y axes (default: log when the plotted values span more than two decades)")
    parser.add_argument("--out", type=Path, default=None, help="default reports/<experiment>")
    parser.add_argument("--no-log", action="store_true", help="do not log the outputs to MLflow")
    parser.add_argument("--max-curves", type=int, default=12,
                        help="configurations a loss-curve or final-loss panel shows at most: with more, each "
                             "optimizer's best by mean final/train_loss, said on the figure (default 12)")
    args = parser.parse_args(argv)
    if args.max_curves < 1:
        parser.error(f"--max-curves must be >= 1, got {args.max_curves}")

    from descentlab.analysis import curves, plots, stats, tables
    from descentlab.analysis.groups import group_runs, setting_keys
    from descentlab.analysis.report import log_analysis_run
    from descentlab.analysis.runs import AnalysisError, default_tracking_uri, iter_histories, load_runs
    from descentlab.analysis.selection import best_configurations
    from descentlab.analysis.smoothing import get_smoother

    uri = default_tracking_uri()
    by = columns(args.by) if args.by else None
    try:
        runs = load_runs(args.experiment, tracking_uri=uri, sweep=args.sweep, progress=True)
        grouping = group_runs(runs, by)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"read {runs.attrs['runs_read']} runs of experiment {args.experiment}: {runs.attrs['job_runs']} job runs, "
          f"{len(runs)} analysed")
    out = args.out or REPO / "reports" / args.experiment
    out.mkdir(parents=True, exist_ok=True)

    pooled = grouping.pooled_text()
    shown = list(grouping.shown) or ([OPTIMIZER] if OPTIMIZER in runs.columns else [])
    col = "model.name" if "model.name" in shown else None
    row = "dataset.name" if "dataset.name" in shown else None
    hue = [c for c in shown if c not in (col, row)] or None
    every = curves.grid_every(_steps(runs))
    # A figure with hundreds of configurations is unreadable (and slow to draw): each panel shows each optimizer's
    # best ones and says so; the tables and loss_curves.csv keep every configuration.
    drawn = best_configurations(runs, shown, "final/train_loss", args.max_curves,
                                share=OPTIMIZER if OPTIMIZER in shown else None, facets=[c for c in (row, col) if c])
    with warnings.catch_warnings():
        if pooled:  # the user asked to pool; every output says so instead of a warning per figure
            warnings.simplefilter("ignore", UserWarning)
        layout = plots.curve_layout(drawn.runs, hue=hue, col=col, row=row)
    # One pass over the histories, one run at a time: steps to the loss target, and each run's smoothed curve on
    # the step grid added into the figure's and the CSV's per-group accumulators. Nothing else of a run is kept.
    figure_curves = curves.CurveStats(layout.selected, layout.by)
    csv_curves = curves.CurveStats(plots.select_runs(runs, plots.COMPLETE_OUTCOMES)[0], shown)
    smoother = get_smoother(SMOOTH)
    reached: dict[str, float] = {}
    for run_id, history in iter_histories(runs, metrics=[LOSS], tracking_uri=uri, progress=True):
        if history.empty:
            continue
        steps, values = curves.run_series(history)
        reached[run_id] = stats.first_step_at(steps, values, args.loss_target, smooth_window=TARGET_WINDOW)
        if run_id in figure_curves or run_id in csv_curves:
            grid_steps, grid_values = curves.prepare_curve(steps, values, smoother, every)
            figure_curves.add(run_id, grid_steps, grid_values)
            csv_curves.add(run_id, grid_steps, grid_values)
    target_col = f"steps_to_loss_{args.loss_target:g}"
    if reached:
        runs[target_col] = runs["run_id"].map(reached).astype(float)  # map keeps attrs["params"]
    metrics = tuple(m for m in (*METRICS, target_col) if m in runs.columns)
    summary = stats.aggregate(runs, by=by, metrics=metrics)
    wide = tables.format_summary(summary)
    note = f"loss_curves.csv and loss_curves.png: {curves.grid_note(every, SMOOTH)}"
    if reached:
        wide.attrs["notes"] = [*wide.attrs["notes"], note]
    unit = "configurations" if by is None else "groups"
    title = f"{args.experiment}: {len(runs)} runs in {len(wide)} {unit}"
    tables.print_table(wide.head(PRINT_ROWS), title=title)  # a terminal of 10,000 rows helps nobody
    if len(wide) > PRINT_ROWS:
        print(f"... {len(wide) - PRINT_ROWS:,} more rows in {out / 'summary.md'} and summary.csv")
    (out / "summary.md").write_text(tables.to_markdown_report(wide, title))
    (out / "summary.tex").write_text("".join(f"% {note}\n" for note in wide.attrs["notes"]) + tables.to_latex(wide))
    tables.to_csv(summary, out / "summary.csv")
    runs.to_csv(out / "runs.csv", index=False)

    if OPTIMIZER in runs.columns and args.baseline in set(runs[OPTIMIZER].astype(str)):
        # Every configuration against every baseline configuration of its context is quadratic: with more than
        # MAX_PAIRS pairs, each is compared with the baseline's best configuration only (and the output says so).
        is_base = runs[OPTIMIZER].astype(str) == args.baseline
        configs = setting_keys(runs, shown)
        n_base, n_other = max(1, configs[is_base].nunique()), max(1, configs[~is_base].nunique())
        against = "every" if n_base * n_other <= MAX_PAIRS else "best"
        if against == "best":
            print(f"vs_{args.baseline}_*.csv: each of {n_other:,} configurations against the best of the "
                  f"{n_base:,} {args.baseline} configurations of its context ({n_other * n_base:,} pairs would be "
                  "too many)")
        for metric in ("final/train_loss", "final/test_acc"):
            if metric in runs.columns:
                comparison = stats.compare_to_baseline(runs, args.baseline, metric, by=by, against=against,
                                                       lower_is_better=metric != "final/test_acc")
                tables.to_csv(comparison, out / f"vs_{args.baseline}_{metric.replace('/', '_')}.csv")

    with warnings.catch_warnings():
        if pooled:
            warnings.simplefilter("ignore", UserWarning)
        if reached:
            fig = plots.draw_loss_curves(plots.summarize_curves(figure_curves), layout, metric=LOSS, smooth=SMOOTH,
                                         logy=args.logy)
            plots.add_note(fig, f"curves: {curves.grid_note(every, SMOOTH)}")
            plots.add_note(fig, drawn.note)
            plots.add_note(fig, pooled)
            plots.save_figure(fig, out, "loss_curves")
            tables.to_csv(plots.summarize_curves(csv_curves), out / "loss_curves.csv")
        if "final/train_loss" in runs.columns and shown:
            fig = plots.final_metric_points(drawn.runs, metric="final/train_loss", x=shown, hue=None, logy=args.logy)
            plots.add_note(fig, drawn.note)
            plots.add_note(fig, pooled)
            plots.save_figure(fig, out, "final_train_loss")
        lr = "optimizer.lr"
        if lr in runs.columns and "final/train_loss" in runs.columns:
            others = [c for c in shown if c != lr]
            per_line = runs.groupby([runs[c].astype(str) for c in others])[lr].nunique() if others else None
            if (per_line.max() if per_line is not None else runs[lr].nunique()) > 1:
                fig = plots.lr_sensitivity(runs, metric="final/train_loss", hue=others or None, logy=args.logy)
                plots.add_note(fig, grouping.pooled_text(exclude=[lr]))  # lr is the x axis, not pooled
                plots.save_figure(fig, out, "lr_sensitivity")
        problem, solver = stats.split_arms(shown) if OPTIMIZER in shown else (shown, [OPTIMIZER])
        if problem and OPTIMIZER in runs.columns and "final/train_loss" in runs.columns:
            kept, left_out = stats.profile_block(runs, problem, solver)
            if len(kept) and kept[problem].astype(str).drop_duplicates().shape[0] > 1:
                profile = stats.performance_profile(kept, "final/train_loss", problem=problem, solver=solver)
                tables.to_csv(profile, out / "performance_profile.csv")
                fig = plots.performance_profile_plot(profile)
                plots.add_note(fig, left_out)
                plots.add_note(fig, pooled)
                plots.save_figure(fig, out, "performance_profile")

    print(f"wrote {len(list(out.iterdir()))} files to {out}")
    if not args.no_log:
        params = {"by": args.by or "configuration (every varying key but the seed)", "sweep": args.sweep,
                  "pooled": pooled or "nothing"}
        run_id = log_analysis_run(args.experiment, out, uri, params=params)
        print(f"logged to MLflow run {run_id} (experiment {args.experiment})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
