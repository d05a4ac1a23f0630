"""Reproduce one of the book's figures or studies (a preset) from tracked runs, running its sweeps first if needed.

    python scripts/reproduce.py fig6_8
    python scripts/reproduce.py fig6_9 --seeds 3 [--dataset mnist_5k] [--iterations 2000] [--out reports]
    python scripts/reproduce.py weight_init|batch_norm|overfit [--quick] [--seeds N]

Each preset is `conf/experiment/<name>.yaml` plus `descentlab.experiments.<name>`; its runs come from
`python train.py -m experiment=<name> ...`, and jobs already tracked as FINISHED are skipped, so running this
again only redraws. Figures (PNG, PDF), the plotted data (CSV) and summaries go to `<out>/<name>/` and are logged
as artifacts of an `analysis` run in the preset's MLflow experiment. --quick: a few iterations (the figure's shape
in seconds, what CI runs); --seeds, --dataset, --iterations: None keeps the preset's own default.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from descentlab.experiments import PRESET_NAMES, Options, Preset, get_preset

REPO = Path(__file__).resolve().parent.parent


def load_preset(name: str) -> Preset:
    """The preset `name`; one that is listed but whose module is not there yet is a one-line error."""
    try:
        return get_preset(name)
    except ModuleNotFoundError as exc:
        if exc.name != f"descentlab.experiments.{name}":
            raise
        raise SystemExit(f"error: preset {name!r} is not available in this checkout (no module "
                         f"descentlab.experiments.{name}); available: {', '.join(available())}") from None


def available() -> list[str]:
    """The listed presets whose module exists."""
    import importlib.util

    return [n for n in PRESET_NAMES if importlib.util.find_spec(f"descentlab.experiments.{n}") is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=PRESET_NAMES, metavar="NAME", help=f"one of: {', '.join(PRESET_NAMES)}")
    parser.add_argument("--quick", action="store_true", help="a few iterations and runs: the figure's shape (CI)")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the preset's)")
    parser.add_argument("--dataset", help="the data set (default: the preset's, mostly mnist_5k)")
    parser.add_argument("--iterations", type=int, help="training iterations (default: the preset's, the book's)")
    parser.add_argument("--out", type=Path, default=REPO / "reports", help="figures go to OUT/NAME (default reports/)")
    parser.add_argument("--no-parallel", action="store_true", help="run the sweep's jobs one after another")
    parser.add_argument("--sweep-dir", type=Path, help="folder for the jobs' Hydra outputs (default: multirun/)")
    args = parser.parse_args(argv)
    for flag, value in (("--seeds", args.seeds), ("--iterations", args.iterations)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    preset = load_preset(args.name)

    from descentlab.analysis.report import log_analysis_run
    from descentlab.analysis.runs import default_tracking_uri
    from descentlab.experiments.launch import train_sweep

    def launch(overrides: Sequence[str]) -> None:
        train_sweep(overrides, label=args.name, parallel=not args.no_parallel, sweep_dir=args.sweep_dir)

    start = time.perf_counter()
    options = Options(quick=args.quick, seeds=args.seeds, dataset=args.dataset, iterations=args.iterations)
    uri = default_tracking_uri()
    out = args.out / args.name
    files = preset.reproduce(options, launch, out, uri)
    params = {"preset": args.name, "quick": args.quick, "seeds": args.seeds, "dataset": args.dataset,
              "iterations": args.iterations}
    run_id = log_analysis_run(preset.experiment, out, uri, name=f"analysis-{args.name}",
                              params={k: v for k, v in params.items() if v is not None})
    for path in files:
        print(f"wrote {path}")
    print(f"logged to MLflow run {run_id} (experiment {preset.experiment}); "
          f"{time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
