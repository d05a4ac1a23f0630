"""The fair optimizer comparison: tune each optimizer's learning rate on a validation split with the same budget
(stage 1), then compare the optimizers at their chosen lrs over fresh seeds on the test set (stage 2).

Why two stages: the book's Figure 6-9 ranks optimizers at one default lr each, which measures the defaults as much
as the optimizers. Every optimizer here gets the same log grid around its own default and the same choice rule, on
data the test metrics never see; stage 2 then uses seeds the choice never saw, because the chosen lr's tuning run
is the luckiest of its grid (choosing on a seed and reporting that seed would flatter it). Every trial is a
tracked run of the MLflow experiment `fair_compare`; every table and figure is drawn from those runs.

`run(settings, launch, out, uri)` is the protocol (`scripts/compare.py` and `reproduce.py fair_compare` call it);
the tables and figures are `descentlab.analysis.fair` and `descentlab.analysis.fair_plots`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from descentlab.experiments import Launch, Options, Preset

EXPERIMENT = "fair_compare"
DEFAULT_OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
TUNING_SEED = 0
DONE = ("finished", "diverged")  # outcomes a rerun would only repeat: a diverged trial diverges again, same seed
_RTOL = 1e-9  # lrs logged as text and recomputed here compare equal to this


@dataclass(frozen=True)
class Settings:
    """What one comparison runs. The defaults are the issue's: 4 optimizers × 7 lrs (half-decade steps) on
    mlp_5x100 / mnist_5k, 5 stage-2 seeds, 2,000 iterations, 20% of the training set held out for validation."""

    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    models: tuple[str, ...] = ("mlp_5x100",)
    datasets: tuple[str, ...] = ("mnist_5k",)
    lrs: int = 7
    lr_step: float = 0.5  # decades between grid points
    seeds: int = 5  # stage 2: seeds 1..seeds (seed 0 tunes)
    iterations: int = 2000
    validation: float = 0.2
    confidence: float = 0.95
    alpha: float = 0.05  # a ranking's neighbours differ when their Holm-adjusted p <= alpha
    extra: tuple[str, ...] = field(default=())  # more train.py overrides for both stages (tests: eval_every)

    @property
    def cells(self) -> list[tuple[str, str]]:
        return [(m, d) for m in self.models for d in self.datasets]


QUICK = Settings(lrs=3, seeds=2, iterations=50, extra=("training.eval_every=25",))


def default_lrs(optimizers: Sequence[str]) -> dict[str, float]:
    """Each optimizer's class default lr, the centre of its grid."""
    from descentlab.optim import OPTIMIZERS

    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer {unknown[0]!r}; allowed: {', '.join(OPTIMIZERS)}")
    return {o: float(OPTIMIZERS[o]().hyperparams["lr"]) for o in optimizers}


def _num(x: float) -> str:
    return repr(float(x))  # round-trips exactly: the rerun's override resolves to the same lr, the same config hash


def _mapping(values: dict[str, float]) -> str:
    return "{" + ",".join(f"{k}:{_num(v)}" for k, v in values.items()) + "}"


def _common(s: Settings) -> list[str]:
    return [f"experiment={EXPERIMENT}", f"training.iterations={s.iterations}",
            f"dataset.validation={_num(s.validation)}", *s.extra]


def stage1_overrides(s: Settings) -> list[str]:
    """ONE cartesian sweep over optimizers × cells × lr factors at the tuning seed: the preset's
    `optimizer.lr: ${descentlab.mul:${task.lr_by_optimizer.${optimizer.name}},${task.lr_factor}}` turns the shared
    factors into each optimizer's own grid."""
    from descentlab.analysis.fair import lr_factors

    return [*_common(s), f"optimizer={','.join(s.optimizers)}", f"model={','.join(s.models)}",
            f"dataset={','.join(s.datasets)}", f"task.lr_by_optimizer={_mapping(default_lrs(s.optimizers))}",
            f"task.lr_factor={','.join(_num(f) for f in lr_factors(s.lrs, s.lr_step))}", f"seed={TUNING_SEED}"]


def stage2_overrides(s: Settings, cell: tuple[str, str], chosen: dict[str, float]) -> list[str]:
    """One sweep per cell: each optimizer at its chosen lr (factor 1), seeds 1..N."""
    return [*_common(s), f"optimizer={','.join(chosen)}", f"model={cell[0]}", f"dataset={cell[1]}",
            f"task.lr_by_optimizer={_mapping(chosen)}", "task.lr_factor=1.0",
            f"seed={','.join(str(k) for k in range(1, s.seeds + 1))}"]


def _load(s: Settings, uri: str, seeds: Sequence[int]) -> pd.DataFrame:
    """The experiment's job runs with this comparison's settings and seeds (empty when there are none yet)."""
    from descentlab.analysis.runs import AnalysisError, load_runs

    params = {"seed": set(seeds), "training.iterations": s.iterations, "dataset.validation": s.validation,
              "optimizer.name": set(s.optimizers), "model.name": set(s.models), "dataset.name": set(s.datasets)}
    try:
        return load_runs(EXPERIMENT, tracking_uri=uri, params=params)
    except AnalysisError:  # no store, experiment or matching run yet
        return pd.DataFrame(columns=["run_id", "outcome", "seed", "optimizer.name", "optimizer.lr", "model.name",
                                     "dataset.name", "start_time"])


def _at_lr(runs: pd.DataFrame, wanted: dict[tuple[str, str, str], list[float]]) -> pd.DataFrame:
    """The runs whose (model, dataset, optimizer) has `optimizer.lr` equal (to _RTOL) to one of the wanted lrs."""
    if runs.empty:
        return runs
    keep = []
    for row in runs[["model.name", "dataset.name", "optimizer.name", "optimizer.lr"]].itertuples(index=False):
        lrs = wanted.get((str(row[0]), str(row[1]), str(row[2])), [])
        lr = float(row[3]) if row[3] == row[3] else math.nan
        keep.append(any(math.isclose(lr, w, rel_tol=_RTOL) for w in lrs))
    return runs[np.array(keep, dtype=bool)]


def stage1_runs(s: Settings, uri: str) -> tuple[pd.DataFrame, int]:
    """(the tracked stage-1 trials, one per grid point, most complete run first; how many grid points lack a
    finished or diverged run)."""
    from descentlab.analysis.fair import CELL, LR, OPTIMIZER, dedupe, lr_factors

    defaults = default_lrs(s.optimizers)
    factors = lr_factors(s.lrs, s.lr_step)
    wanted = {(m, d, o): [defaults[o] * f for f in factors] for m, d in s.cells for o in s.optimizers}
    runs = dedupe(_at_lr(_load(s, uri, [TUNING_SEED]), wanted), [*CELL, OPTIMIZER, LR])
    return runs, len(wanted) * len(factors) - _done(runs)


def stage2_runs(s: Settings, uri: str, chosen: dict[tuple[str, str], dict[str, float]]) -> tuple[pd.DataFrame, int]:
    """(the tracked stage-2 runs at the chosen lrs, one per optimizer and seed; how many lack a finished or diverged
    run)."""
    from descentlab.analysis.fair import CELL, OPTIMIZER, dedupe

    wanted = {(m, d, o): [lr] for (m, d), lrs in chosen.items() for o, lr in lrs.items()}
    runs = dedupe(_at_lr(_load(s, uri, range(1, s.seeds + 1)), wanted), [*CELL, OPTIMIZER, "seed"])
    return runs, len(wanted) * s.seeds - _done(runs)


def _done(runs: pd.DataFrame, cell: tuple[str, str] | None = None) -> int:
    """How many of `runs` (of `cell` when given) are finished or diverged: what a rerun would not launch again."""
    if runs.empty:
        return 0
    done = runs["outcome"].isin(DONE)
    if cell is not None:
        done &= (runs["model.name"].astype(str) == cell[0]) & (runs["dataset.name"].astype(str) == cell[1])
    return int(done.sum())


def _launch_unless_done(missing: int, total: int, what: str, launch: Launch, overrides: list[str]) -> float:
    """Run the sweep unless every job already has a finished or diverged run (train.py would skip the finished ones
    but redo the diverged: same seed, same divergence). Returns the wall time spent."""
    if missing == 0:
        print(f"{what}: all {total} runs already tracked (finished or diverged); nothing to launch", flush=True)
        return 0.0
    print(f"{what}: {missing} of {total} runs to do", flush=True)
    start = time.perf_counter()
    launch(overrides)
    return time.perf_counter() - start


def run(s: Settings, launch: Launch, out: Path, uri: str) -> list[Path]:
    """The whole protocol: stage 1, the choice, stage 2, the tables, figures and report.md in `out`; returns the
    files written. Killed at any point, the same call finishes without redoing tracked runs."""
    from descentlab.analysis import fair
    from descentlab.analysis.runs import AnalysisError

    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    defaults = default_lrs(s.optimizers)
    total1 = len(s.cells) * len(s.optimizers) * s.lrs
    _, missing = stage1_runs(s, uri)
    timing["stage 1 sweep"] = _launch_unless_done(missing, total1, "stage 1 (tuning, seed 0)", launch,
                                                  stage1_overrides(s))
    start = time.perf_counter()
    runs1, missing = stage1_runs(s, uri)
    if missing:
        raise SystemExit(f"error: stage 1 left {missing} of {total1} trials without a finished or diverged run")
    trials = fair.tuning_table(runs1, defaults)
    choices = fair.choose_lr(trials)
    messages = choice_messages(choices)
    for line in messages:
        print(line, flush=True)
    chosen: dict[tuple[str, str], dict[str, float]] = {}
    usable = choices[~choices["all_diverged"]].set_index(["model.name", "dataset.name", "optimizer.name"])["chosen_lr"]
    for (m, d), name in ((cell, name) for cell in s.cells for name in s.optimizers):  # the user's order
        if (m, d, name) in usable.index:
            chosen.setdefault((m, d), {})[name] = float(usable[(m, d, name)])
    timing["reading stage 1 and the choice"] = time.perf_counter() - start

    tracked2, missing = stage2_runs(s, uri, chosen)  # read once: the cells' sweeps do not touch each other's runs
    total2 = sum(len(v) for v in chosen.values()) * s.seeds
    print(f"stage 2 (seeds 1..{s.seeds} at the chosen lrs): {missing} of {total2} runs to do", flush=True)
    start = time.perf_counter()
    for cell in s.cells:
        if cell not in chosen:
            print(f"stage 2, {cell[0]} / {cell[1]}: every optimizer diverged at every lr; nothing to compare",
                  flush=True)
            continue
        cell_total = len(chosen[cell]) * s.seeds
        _launch_unless_done(cell_total - _done(tracked2, cell), cell_total, f"stage 2, {cell[0]} / {cell[1]}",
                            launch, stage2_overrides(s, cell, chosen[cell]))
    timing["stage 2 sweeps"] = time.perf_counter() - start
    runs2, missing = stage2_runs(s, uri, chosen)
    if missing:
        raise SystemExit(f"error: stage 2 left {missing} of {total2} runs without a finished or diverged run")
    if runs2.empty:
        raise SystemExit("error: no optimizer has a usable lr in any cell; see the stage-1 table in report.md")

    start = time.perf_counter()
    try:
        files = write_outputs(s, out, trials, choices, runs1, runs2, messages, timing)
    except AnalysisError as exc:
        raise SystemExit(f"error: {exc}") from exc
    timing["tables, figures and report"] = time.perf_counter() - start
    print(f"wall time: {', '.join(f'{k} {v:.0f} s' for k, v in timing.items())}", flush=True)
    return files


def choice_messages(choices: pd.DataFrame) -> list[str]:
    """One line per chosen lr at the grid's edge and per optimizer that diverged at every lr."""
    lines = []
    for _, row in choices.iterrows():
        where = f"{row['optimizer.name']} on {row['model.name']} / {row['dataset.name']}"
        if row["all_diverged"]:
            lines.append(f"warning: {where} diverged at every lr of its grid "
                         f"({row['lr_min']:.3g}..{row['lr_max']:.3g}); it is left out of stage 2")
        elif row["edge"]:
            side = "smallest" if row["edge"] == "low" else "largest"
            lines.append(f"warning: {where}: the chosen lr {row['chosen_lr']:.3g} is the grid's {side}; the best lr "
                         "may lie outside the grid (widen it with --lrs or --lr-step)")
    return lines


def _durations(runs: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(runs.get("duration_s", pd.Series(dtype=float)), errors="coerce").dropna()


def write_outputs(s: Settings, out: Path, trials: pd.DataFrame, choices: pd.DataFrame, runs1: pd.DataFrame,
                  runs2: pd.DataFrame, messages: list[str], timing: dict[str, float]) -> list[Path]:
    """CSVs, figures and report.md from the two stages' tracked runs."""
    from descentlab.analysis import fair, fair_plots, tables
    from descentlab.analysis.plots import performance_profile_plot, save_figure

    order = [o for o in s.optimizers if o in set(runs2["optimizer.name"].astype(str))]
    summary = fair.stage2_summary(runs2, choices, s.confidence)
    pairwise = fair.stage2_pairwise(runs2, order=order, confidence=s.confidence)
    rank = fair.ranking(summary, pairwise, alpha=s.alpha)
    overall = fair.summary_table(choices, summary, rank)
    files = [tables.to_csv(trials, out / "stage1_trials.csv"), tables.to_csv(choices, out / "chosen_lr.csv"),
             tables.to_csv(summary, out / "stage2_summary.csv"), tables.to_csv(pairwise, out / "pairwise.csv"),
             tables.to_csv(rank, out / "ranking.csv"), tables.to_csv(overall, out / "summary.csv")]
    keep = ["run_id", "model.name", "dataset.name", "optimizer.name", "optimizer.lr", "seed", "outcome",
            "duration_s", *fair.TEST_METRICS]
    files.append(tables.to_csv(runs2[[c for c in keep if c in runs2.columns]], out / "stage2_runs.csv"))
    files += save_figure(fair_plots.tuning_curves(trials, choices), out, "fair_compare_tuning")
    files += save_figure(fair_plots.metric_ci(summary, "final/test_acc"), out, "fair_compare_test_acc")
    files += save_figure(fair_plots.pairwise_ci(pairwise, "final/test_acc"), out, "fair_compare_pairwise")
    profile = None
    if len(s.cells) > 1:
        profile = fair.profile(runs2)
        files.append(tables.to_csv(profile, out / "performance_profile.csv"))
        files += save_figure(performance_profile_plot(profile), out, "fair_compare_profile")
    report = report_text(s, trials, choices, summary, pairwise, rank, overall, runs1, runs2, messages, timing)
    (out / "report.md").write_text(report)
    files.append(out / "report.md")
    return files


def _ci(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return "—"
    if not np.isfinite(low):
        return f"{mean:.4f} (n<2, no interval)"
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def report_text(s: Settings, trials: pd.DataFrame, choices: pd.DataFrame, summary: pd.DataFrame,
                pairwise: pd.DataFrame, rank: pd.DataFrame, overall: pd.DataFrame, runs1: pd.DataFrame,
                runs2: pd.DataFrame, messages: list[str], timing: dict[str, float]) -> str:
    """report.md: the protocol, the budget, both stages' tables, the ranking and the wall time."""
    from descentlab.analysis import fair, tables

    defaults = default_lrs(s.optimizers)
    factors = fair.lr_factors(s.lrs, s.lr_step)
    level = f"{100 * s.confidence:g}%"
    lines = [
        "# Fair optimizer comparison", "",
        f"Optimizers {', '.join(s.optimizers)}; cells (model / data set): "
        + "; ".join(f"{m} / {d}" for m, d in s.cells) + f"; {s.iterations} iterations per run.", "",
        "## Protocol", "",
        f"- **Validation split**: `dataset.validation={s.validation:g}`: {100 * s.validation:g}% of the training set "
        "held out, stratified per class, seeded by `dataset.validation_seed` (0, fixed across runs), recorded as "
        "params and part of each run's config hash. Both stages train on the remaining training examples. The test "
        "set is never used for a choice.",
        f"- **Stage 1 (tuning)**: per optimizer and cell, the lr on a log grid centred on the optimizer's class "
        f"default: default × 10^(k·{s.lr_step:g}), {s.lrs} points (factors "
        + ", ".join(f"{f:.3g}" for f in factors) + "); defaults "
        + ", ".join(f"{o} {v:g}" for o, v in defaults.items())
        + f". One cartesian sweep over optimizers × cells × factors, seed {TUNING_SEED} (the tuning seed).",
        f"- **Choice rule**: the lowest `{fair.CHOICE_METRIC}` (whole validation split, at the end of training). A "
        "diverged trial (FAILED, tag `diverged_at_step`) or a non-finite loss counts as +inf: it stays in the "
        f"tables and the tuning curve (▲ on the top edge), it is never dropped. Ties (equal to {fair.TIE_RTOL:g} "
        "relative) go to the smaller lr. A choice at the grid's edge gets a warning (the optimum may lie outside). "
        "An optimizer that diverged at every lr is reported and left out of stage 2.",
        f"- **Stage 2 (evaluation)**: per cell, each optimizer at its chosen lr, seeds 1..{s.seeds}: fresh seeds, "
        "because the chosen lr won on seed 0, so seed 0's result at that lr is biased in its favour (the winner of "
        "a noisy selection). Test metrics: `final/test_acc` and `final/test_loss` (the evaluation after the last "
        "update, on the whole test set), `final/train_loss` (mean minibatch loss of the last 100 iterations); n, "
        f"mean and {level} Student-t interval over the finished runs.",
        "- **Pairwise differences**: a seed fixes the initial weights and the minibatches, and every optimizer runs "
        f"the same seeds, so differences are paired per seed: mean difference, {level} t interval and paired t "
        "test (scipy.stats.ttest_rel), p-values Holm-corrected over all pairs of a cell (one family per cell and "
        "metric).",
        f"- **Ranking**: by mean test accuracy; `>` between neighbours whose difference has Holm p ≤ {s.alpha:g}, "
        "`≈` where it does not (not significantly different: the order between them is not established). Letters "
        "(a compact letter display): optimizers that share a letter are not significantly different, neighbours "
        "or not.",
        "- **Across cells**: the same per cell, a summary table and (with more than one cell) a Dolan–Moré "
        "performance profile of the test error (1 − test accuracy; a diverged seed fails the cell).", "",
        "## Budget", "",
        f"Per optimizer and cell: stage 1 {s.lrs} trials × {s.iterations} iterations = "
        f"{s.lrs * s.iterations:,} iterations; stage 2 {s.seeds} seeds × {s.iterations} iterations = "
        f"{s.seeds * s.iterations:,} iterations. In all: {len(runs1)} stage-1 and {len(runs2)} stage-2 runs.", "",
    ]
    d1, d2 = _durations(runs1), _durations(runs2)
    lines += ["Wall time of this invocation so far (a rerun skips tracked runs, so its stage times are ~0): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in timing.items()) + ". Training time per run (tracked "
              f"duration): stage 1 mean {d1.mean():.1f} s (sum {d1.sum():.0f} s), stage 2 mean {d2.mean():.1f} s "
              f"(sum {d2.sum():.0f} s).", ""]
    lines += ["## Stage 1: chosen learning rates", ""]
    if messages:
        lines += [f"- {m}" for m in messages] + [""]
    show = choices[["model.name", "dataset.name", "optimizer.name", "trials", "diverged", "chosen_lr", "chosen_factor",
                    "best_score", "edge"]].rename(columns={"best_score": f"best {fair.CHOICE_METRIC}",
                                                           "chosen_factor": "× default"})
    lines += [tables.to_markdown(show), "", "All trials (score = the choice metric, inf = diverged or non-finite):", ""]
    lines += [tables.to_markdown(trials.drop(columns=["run_id"])), ""]
    lines += ["## Stage 2: test metrics at the chosen lrs", ""]
    rows = []
    for (cell_opt), part in summary.groupby(["model.name", "dataset.name", "optimizer.name"], sort=False):
        row = dict(zip(["model.name", "dataset.name", "optimizer.name"], cell_opt, strict=True))
        row["lr"] = part["optimizer.lr"].iloc[0]
        row["n"] = int(part["n"].max())
        row["runs (diverged)"] = f"{int(part['runs'].iloc[0])} ({int(part['diverged'].iloc[0])})"
        for _, m in part.iterrows():
            row[m["metric"]] = _ci(m["mean"], m["ci_low"], m["ci_high"])
        rows.append(row)
    lines += [tables.to_markdown(pd.DataFrame(rows)), "", f"Cells: mean [{level} t-CI] over the finished seeds.", ""]
    lines += ["## Pairwise differences (a − b, paired over seeds, Holm-corrected per cell and metric)", ""]
    show = pairwise[["metric", "model.name", "dataset.name", "a", "b", "n_pairs", "diff", "ci_low", "ci_high", "p",
                     "p_holm"]]
    lines += [tables.to_markdown(show), ""]
    lines += ["## Ranking by mean test accuracy", ""]
    for (m, d), text in fair.ranking_text(rank).items():
        lines.append(f"- {m} / {d}: **{text}**")
    lines += ["", tables.to_markdown(rank), ""]
    if len(s.cells) > 1:
        shown = pd.DataFrame({
            "model.name": overall["model.name"], "dataset.name": overall["dataset.name"],
            "optimizer.name": overall["optimizer.name"],
            "chosen lr": [f"{lr:.3g}" + (f" ({edge} edge)" if edge else "") if np.isfinite(lr) else "all diverged"
                          for lr, edge in zip(overall["chosen_lr"], overall["edge"], strict=True)],
            "stage 1 diverged": [f"{d}/{t}" for d, t in zip(overall["stage1_diverged"], overall["stage1_trials"],
                                                            strict=True)],
            "n": overall.get("n", pd.Series(0, index=overall.index)).fillna(0).astype(int),
            **{metric: [_ci(*(row.get(f"{metric} {k}", math.nan) for k in ("mean", "ci_low", "ci_high")))
                        for _, row in overall.iterrows()] for metric in ("final/test_acc", "final/test_loss")},
            "rank": overall["rank"]})
        lines += ["## Across cells", "", tables.to_markdown(shown), "",
                  "Performance profile: `fair_compare_profile.png` (test error ratios to the best per cell).", ""]
    lines += ["## Files", "",
              "`stage1_trials.csv` (every trial, diverged included), `chosen_lr.csv`, `stage2_summary.csv` (n, mean, "
              "std, CI per metric), `stage2_runs.csv`, `pairwise.csv` (raw and Holm p), `ranking.csv`, `summary.csv`; "
              "figures `fair_compare_tuning` (tuning curves), `fair_compare_test_acc` (test accuracy with CIs), "
              "`fair_compare_pairwise` (paired differences)"
              + (", `fair_compare_profile` (performance profile)" if len(s.cells) > 1 else "") + " as PNG and PDF.", ""]
    return "\n".join(lines)


def settings_from_options(options: Options) -> Settings:
    """reproduce.py's options: --quick is `QUICK` (3 lrs, 2 seeds, 50 iterations); --seeds, --dataset and
    --iterations override either."""
    base = QUICK if options.quick else Settings()
    changes: dict[str, object] = {}
    if options.seeds is not None:
        changes["seeds"] = options.seeds
    if options.dataset is not None:
        changes["datasets"] = (options.dataset,)
    if options.iterations is not None:
        changes["iterations"] = options.iterations
    return replace(base, **changes)


def reproduce(options: Options, launch: Launch, out: Path, uri: str) -> list[Path]:
    return run(settings_from_options(options), launch, out, uri)


PRESET = Preset(
    name=EXPERIMENT,
    experiment=EXPERIMENT,
    description="fair optimizer comparison: lr tuned per optimizer on a validation split, then seeds 1..N on test",
    reproduce=reproduce,
)
