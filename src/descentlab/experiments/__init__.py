"""Experiment presets: each reproduces one figure or study from tracked runs, running its sweeps first if needed.

A preset pairs a `conf/experiment/<name>.yaml` (the settings) with a module here (which sweeps to run through
train.py, then which tables and figures to draw from the tracked runs). `scripts/reproduce.py NAME` runs one;
finished jobs are skipped, so running it again only redraws. Drawing code lives in `descentlab.analysis`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Every preset, in the order --help lists them; each is the module descentlab.experiments.<name> with a PRESET.
PRESET_NAMES: tuple[str, ...] = (
    "fig6_8", "fig6_9", "weight_init", "batch_norm", "overfit", "hparam_search", "fair_compare",
)

# Runs `python train.py -m <overrides>` (launcher and job folder chosen by the caller); raises SystemExit when the
# sweep fails or is interrupted (see descentlab.experiments.launch.train_sweep).
Launch = Callable[[Sequence[str]], None]


@dataclass(frozen=True)
class Options:
    """What the reproduce command line may change; None means the preset's own default."""

    quick: bool = False  # a few iterations and trials: the figure's shape in seconds (CI runs this)
    seeds: int | None = None
    dataset: str | None = None
    iterations: int | None = None

    def pick(self, seeds: int, dataset: str, iterations: int, quick_iterations: int,
             quick_seeds: int | None = None) -> tuple[int, str, int]:
        """(seeds, data set, iterations) to run: the command line's where given, else the preset's full or quick."""
        default_seeds = quick_seeds if self.quick and quick_seeds is not None else seeds
        return (self.seeds or default_seeds, self.dataset or dataset,
                self.iterations or (quick_iterations if self.quick else iterations))


@dataclass(frozen=True)
class Preset:
    name: str
    experiment: str  # the MLflow experiment its runs (and the analysis run with its figures) go to
    description: str  # one line for --help
    # (options, launch, out folder, tracking URI) -> the files written into the out folder
    reproduce: Callable[[Options, Launch, Path, str], list[Path]]


def get_preset(name: str) -> Preset:
    """The preset `name`, imported on demand (each pulls in its own plotting code)."""
    if name not in PRESET_NAMES:
        raise ValueError(f"unknown preset {name!r}; allowed: {', '.join(PRESET_NAMES)}")
    return importlib.import_module(f"descentlab.experiments.{name}").PRESET
