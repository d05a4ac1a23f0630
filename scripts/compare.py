"""A fair optimizer comparison in one command: each optimizer's lr tuned on a validation split with the same budget,
then every optimizer at its chosen lr over fresh seeds, compared on the test set with CIs and Holm-corrected
paired differences.

    python scripts/compare.py [--optimizers sgd,momentum,adagrad,adam] [--models mlp_5x100[,..]]
                              [--datasets mnist_5k[,..]] [--lrs 7] [--lr-step 0.5] [--seeds 5] [--iterations 2000]
                              [--validation 0.2] [--quick] [--out reports] [--no-parallel] [--sweep-dir DIR]

Stage 1: one sweep, lr = default × 10^(k·lr-step) per optimizer (k centred on 0), seed 0, chosen by the lowest
final validation loss (diverged = +inf, ties to the smaller lr). Stage 2: seeds 1..N at the chosen lrs, one sweep per
model × data set cell. Every trial is a tracked run of the MLflow experiment `fair_compare`; killed, the same
command finishes without redoing tracked runs. Writes report.md, CSVs and figures to <out>/fair_compare/ and logs
them as an `analysis` run. --quick: 3 lrs, 2 seeds, 50 iterations (flags given explicitly still win).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _names(text: str, what: str, allowed: list[str], parser: argparse.ArgumentParser) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [n for n in names if n not in allowed]
    if not names or bad:
        parser.error(f"unknown {what} {bad[0] if bad else text!r}; allowed: {', '.join(allowed)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", default="sgd,momentum,adagrad,adam")
    parser.add_argument("--models", default="mlp_5x100", help="comma-separated conf/model names")
    parser.add_argument("--datasets", default="mnist_5k", help="comma-separated conf/dataset names")
    parser.add_argument("--lrs", type=int, default=None, help="lr grid points per optimizer (default 7; quick 3)")
    parser.add_argument("--lr-step", type=float, default=0.5, help="decades between grid points (default 0.5)")
    parser.add_argument("--seeds", type=int, default=None, help="stage-2 seeds 1..N (default 5; quick 2)")
    parser.add_argument("--iterations", type=int, default=None, help="per run (default 2000; quick 50)")
    parser.add_argument("--validation", type=float, default=0.2, help="held-out share of the training set (0.2)")
    parser.add_argument("--quick", action="store_true", help="3 lrs, 2 seeds, 50 iterations: the shape in seconds")
    parser.add_argument("--out", type=Path, default=REPO / "reports", help="writes <out>/fair_compare/")
    parser.add_argument("--no-parallel", action="store_true", help="run each sweep's jobs one after another")
    parser.add_argument("--sweep-dir", type=Path, help="folder for the jobs' Hydra outputs (default: multirun/)")
    args = parser.parse_args(argv)

    from descentlab.optim import OPTIMIZERS

    optimizers = _names(args.optimizers, "optimizer", list(OPTIMIZERS), parser)
    models = _names(args.models, "model", sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")), parser)
    datasets = _names(args.datasets, "dataset", sorted(p.stem for p in (REPO / "conf" / "dataset").glob("*.yaml")),
                      parser)
    for flag, value in (("--lrs", args.lrs), ("--seeds", args.seeds), ("--iterations", args.iterations)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    if not args.lr_step > 0:
        parser.error(f"--lr-step must be > 0 (decades), got {args.lr_step}")
    if not 0 < args.validation < 1:
        parser.error(f"--validation must be in (0, 1): the choice needs a validation split, got {args.validation}")

    from dataclasses import replace

    from descentlab.analysis.report import log_analysis_run
    from descentlab.analysis.runs import default_tracking_uri
    from descentlab.experiments.fair_compare import EXPERIMENT, QUICK, Settings, run
    from descentlab.experiments.launch import train_sweep

    base = QUICK if args.quick else Settings()
    settings = replace(base, optimizers=optimizers, models=models, datasets=datasets, lr_step=args.lr_step,
                       validation=args.validation,
                       **{k: v for k, v in (("lrs", args.lrs), ("seeds", args.seeds),
                                            ("iterations", args.iterations)) if v is not None})
    start = time.perf_counter()

    def launch(overrides: list[str]) -> None:
        train_sweep(overrides, label=EXPERIMENT, parallel=not args.no_parallel, sweep_dir=args.sweep_dir)

    uri = default_tracking_uri()
    out = args.out / EXPERIMENT
    files = run(settings, launch, out, uri)
    params = {"optimizers": ",".join(optimizers), "models": ",".join(models), "datasets": ",".join(datasets),
              "lrs": settings.lrs, "lr_step": settings.lr_step, "seeds": settings.seeds,
              "iterations": settings.iterations, "validation": settings.validation, "quick": args.quick}
    run_id = log_analysis_run(EXPERIMENT, out, uri, name=f"analysis-{EXPERIMENT}", params=params)
    for path in files:
        print(f"wrote {path}")
    print(f"logged to MLflow run {run_id} (experiment {EXPERIMENT}); {time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
