"""scripts/bench_sweep.py's report: the ratios and target verdicts it prints come from the measurements given."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_sweep


def report() -> dict:
    return {
        "machine": {"cpu": "cpu", "cores": 2, "date": "d", "git": "g", "loadavg_start": [1.0], "loadavg_end": [1.0]},
        "settings": {"repeats": 3, "tracking_repeats": 5},
        "launchers": {"basic": [18.0, 17.0, 16.0], "parallel": [10.0, 9.0, 9.5]},
        "launchers_12": {"basic": [50.0, 52.0], "parallel": [27.0, 29.0]},
        "tracking": {"default (store_every=1)": {"wall": [7.0, 7.2], "train": [2.5, 2.6]},
                     "tracking=none": {"wall": [4.0, 4.2], "train": [2.45, 2.55]}},
        "tracking_warm": {"local": [2.5, 2.6, 2.55], "none": [2.45, 2.5, 2.5],
                          "local_train": [2.42, 2.5, 2.47], "none_train": [2.42, 2.46, 2.48]},
        "startup": {"first_step": {"tracking=local": [3.5, 3.6], "tracking=none": [1.3, 1.4]},
                    "wall": {"tracking=local": [4.4, 4.5], "tracking=none": [2.0, 2.1]},
                    "imports": {"pass": 0.02, "import mlflow": 1.9}, "importtime_top": [("mlflow", 2.1)]},
    }


def test_report_ratios_and_verdicts() -> None:
    text = bench_sweep.markdown(report())
    assert "Speed-up of `hydra/launcher=parallel`: **1.79x**" in text  # 17.0 / 9.5
    assert "speed-up **1.82x**" in text  # 51 / 28
    assert "| parallel sweep ≥ 1.8× faster than basic | 1.79× | **no** |" in text
    assert "0.050 s = 2.0% by medians" in text  # medians 2.55 vs 2.5
    assert "| … per job in a warm process (sweep worker) | 2.0% | yes |" in text
    # outside training: tracked 0.08/0.10/0.08 -> 0.08, untracked 0.03/0.04/0.02 -> 0.03; 0.05 / 2.55
    assert "tracked 0.080 s, untracked 0.030 s (medians): tracking costs 0.050 s = 2.0% of a tracked job" in text
    assert "| … the same, from the time outside training | 2.0% | yes |" in text
    older = report()
    for key in ("local_train", "none_train"):
        del older["tracking_warm"][key]  # a report from before these were recorded: no such line
    assert "outside training" not in bench_sweep.markdown(older)
    assert "| start-up < 3 s (tracking=local) | 3.55 s | **no** |" in text
    assert "| start-up < 3 s (tracking=none) | 1.35 s | yes |" in text
