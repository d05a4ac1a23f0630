"""Run a sweep through train.py in a child process, as a user would, so presets reuse every guarantee of a sweep
(skip FINISHED configs, Ctrl-C ends jobs as KILLED with their points, a parent run per sweep)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from descentlab.interrupts import run_child

REPO = Path(__file__).resolve().parents[3]  # src/descentlab/experiments/launch.py -> the checkout with train.py


def train_sweep(overrides: Sequence[str], *, label: str, parallel: bool = True,
                sweep_dir: Path | None = None) -> None:
    """`python train.py -m <overrides>`; exits as the sweep did when it was interrupted, with an error if it failed.

    `parallel`: Hydra's joblib launcher with 2 workers (`hydra/launcher=parallel`). `sweep_dir`: the folder for
    the jobs' Hydra outputs (default: multirun/ of the checkout).
    """
    args = [sys.executable, str(REPO / "train.py"), "-m", *overrides]
    if sweep_dir is not None:
        args.append(f"hydra.sweep.dir={Path(sweep_dir).resolve()}/${{now:%Y-%m-%d}}/${{now:%H-%M-%S.%f}}")
    if parallel:
        args.append("hydra/launcher=parallel")
    print("running:", " ".join(args[1:]), flush=True)
    # Ctrl-C or SIGTERM reach train.py once, through us: its jobs end KILLED with their points, and we exit as it did.
    code = run_child(args, cwd=REPO)
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        print(f"interrupted: the {label} sweep stopped (exit {code}); run the same command to finish it",
              file=sys.stderr)
        raise SystemExit(code)
    if code != 0:
        raise SystemExit(f"error: the {label} sweep failed (exit {code})")
