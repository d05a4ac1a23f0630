"""The fair optimizer comparison: the choice rule and tables on synthetic frames (values known by construction), the
preset's config, and `scripts/compare.py --quick` end to end on a temporary store (files, the choice read back from
the tracked runs, stage-2 seeds, a rerun that launches nothing, a kill and resume)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, compose_config
from descentlab.analysis import fair
from descentlab.analysis.runs import AnalysisError
from descentlab.experiments import Options
from descentlab.experiments.fair_compare import (
    QUICK,
    Settings,
    choice_messages,
    default_lrs,
    settings_from_options,
    stage1_overrides,
    stage2_overrides,
    write_outputs,
)
from descentlab.optim import OPTIMIZERS

INF = math.inf


def trial(opt: str, lr: float, outcome: str = "finished", val: float = 1.0, cell: str = "mlp_5x100",
          t: int = 0) -> dict:
    return {"model.name": cell, "dataset.name": "mnist_5k", "optimizer.name": opt, "optimizer.lr": lr, "seed": 0,
            "outcome": outcome, "final/val_loss": val, "run_id": f"{opt}-{lr}-{t}", "start_time": t}


DEFAULTS = {"sgd": 0.01, "adam": 0.001, "adagrad": 0.01, "momentum": 0.01}


def test_lr_grid_is_centred_on_the_default() -> None:
    assert fair.lr_factors(7, 0.5) == pytest.approx([10 ** (k / 2) for k in range(-3, 4)], rel=1e-15)
    assert fair.lr_factors(1, 0.5) == [1.0]
    assert fair.lr_factors(2, 1.0) == pytest.approx([10 ** -0.5, 10 ** 0.5])
    with pytest.raises(AnalysisError, match="at least 1 point"):
        fair.lr_factors(0, 0.5)
    with pytest.raises(AnalysisError, match="must be > 0"):
        fair.lr_factors(3, 0.0)


def test_choice_rule_diverged_ties_edges_and_all_diverged() -> None:
    rows = [
        # sgd: the middle lr wins; the largest diverged (inf) and a finished NaN loss is inf too
        trial("sgd", 0.001, val=0.50), trial("sgd", 0.01, val=0.20), trial("sgd", 0.1, "diverged", float("nan")),
        trial("sgd", 0.0001, val=float("nan")),
        # adam: a tie (within 1e-9 relative) between 1e-3 and 1e-2 goes to the smaller lr; 1e-4 is worse
        trial("adam", 0.0001, val=0.3), trial("adam", 0.001, val=0.1), trial("adam", 0.01, val=0.1 * (1 + 1e-12)),
        # adagrad: the best is the largest lr (grid edge, high)
        trial("adagrad", 0.001, val=0.9), trial("adagrad", 0.01, val=0.5), trial("adagrad", 0.1, val=0.2),
        # momentum: every lr diverged or failed
        trial("momentum", 0.001, "diverged", float("nan")), trial("momentum", 0.01, "failed", float("nan")),
    ]
    trials = fair.tuning_table(pd.DataFrame(rows), DEFAULTS)
    assert len(trials) == len(rows)  # nothing dropped
    sgd = trials[trials["optimizer.name"] == "sgd"].set_index("optimizer.lr")["score"]
    assert sgd[0.1] == INF and sgd[0.0001] == INF and sgd[0.01] == pytest.approx(0.2)
    assert trials.loc[trials["optimizer.name"] == "adam", "lr_factor"].to_numpy() == pytest.approx([0.1, 1, 10])
    choices = fair.choose_lr(trials).set_index("optimizer.name")
    assert choices.loc["sgd", "chosen_lr"] == 0.01 and choices.loc["sgd", "diverged"] == 2
    assert choices.loc["sgd", "edge"] == "" and not choices.loc["sgd", "all_diverged"]
    assert choices.loc["adam", "chosen_lr"] == 0.001 and choices.loc["adam", "chosen_factor"] == pytest.approx(1.0)
    assert choices.loc["adagrad", "chosen_lr"] == 0.1 and choices.loc["adagrad", "edge"] == "high"
    assert choices.loc["momentum", "all_diverged"] and math.isnan(choices.loc["momentum", "chosen_lr"])
    assert choices.loc["momentum", "best_score"] == INF
    messages = choice_messages(choices.reset_index())
    assert any("momentum" in m and "diverged at every lr" in m and "left out of stage 2" in m for m in messages)
    assert any("adagrad" in m and "grid's largest" in m for m in messages)
    assert not any("sgd" in m or "adam on" in m for m in messages)
    # the smallest lr winning is the low edge; a strict tie that is not within rtol stays with the better value
    low = fair.choose_lr(fair.tuning_table(pd.DataFrame([trial("sgd", 0.001, val=0.1), trial("sgd", 0.01, val=0.2)]),
                                           DEFAULTS))
    assert low["edge"].iloc[0] == "low"
    near = fair.choose_lr(fair.tuning_table(pd.DataFrame([trial("sgd", 0.001, val=0.1 + 1e-6),
                                                          trial("sgd", 0.01, val=0.1)]), DEFAULTS))
    assert near["chosen_lr"].iloc[0] == 0.01


def test_dedupe_keeps_the_most_complete_run_of_a_config() -> None:
    nan = float("nan")
    runs = pd.DataFrame([trial("sgd", 0.01, "killed", nan, t=3), trial("sgd", 0.01, "finished", 0.2, t=1),
                         trial("sgd", 0.1, "killed", nan, t=1), trial("sgd", 0.1, "diverged", nan, t=2),
                         trial("adam", 0.001, "finished", 0.3, t=1), trial("adam", 0.001, "finished", 0.4, t=5)])
    kept = fair.dedupe(runs, ["model.name", "dataset.name", "optimizer.name", "optimizer.lr"])
    assert len(kept) == 3
    assert set(kept["outcome"]) == {"finished", "diverged"}
    assert kept.loc[kept["optimizer.name"] == "adam", "final/val_loss"].item() == 0.4  # the latest of two finished


def stage2_frame(accs: dict[str, list[float]], cell: str = "mlp_5x100") -> pd.DataFrame:
    rows = []
    for name, values in accs.items():
        for seed, acc in enumerate(values, start=1):
            rows.append({"model.name": cell, "dataset.name": "mnist_5k", "optimizer.name": name, "seed": seed,
                         "optimizer.lr": DEFAULTS[name], "outcome": "finished", "final/test_acc": acc,
                         "final/test_loss": 1 - acc, "final/train_loss": 0.1, "run_id": f"{cell}{name}{seed}",
                         "duration_s": 2.0})
    return pd.DataFrame(rows)


def test_ranking_marks_neighbours_that_do_not_differ() -> None:
    # adam and momentum: +0.001 +- noise apart (not significant at 3 seeds); both clearly above sgd
    runs = stage2_frame({"sgd": [0.80, 0.82, 0.81], "momentum": [0.950, 0.960, 0.955],
                         "adam": [0.953, 0.958, 0.959]})
    choices = pd.DataFrame([{"model.name": "mlp_5x100", "dataset.name": "mnist_5k", "optimizer.name": n,
                             "chosen_lr": DEFAULTS[n]} for n in ("sgd", "momentum", "adam")])
    summary = fair.stage2_summary(runs, choices)
    pairwise = fair.stage2_pairwise(runs, order=["sgd", "momentum", "adam"])
    rank = fair.ranking(summary, pairwise)
    assert rank["optimizer.name"].tolist() == ["adam", "momentum", "sgd"]
    assert rank["differs_from_next"].tolist()[:2] == [False, True]
    assert fair.ranking_text(rank) == {("mlp_5x100", "mnist_5k"): "adam (a) ≈ momentum (a) > sgd (b)"}
    row = summary[(summary["metric"] == "final/test_acc") & (summary["optimizer.name"] == "sgd")].iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.81) and row["optimizer.lr"] == 0.01


def test_ranking_letters_show_differences_between_non_neighbours() -> None:
    # the acceptance run's pattern: every neighbour pair n.s., but the first differs from the third and fourth
    cell = {"model.name": "m", "dataset.name": "d"}
    means = {"adagrad": 0.936, "adam": 0.933, "sgd": 0.921, "momentum": 0.920}
    summary = pd.DataFrame([{**cell, "optimizer.name": n, "metric": "final/test_acc", "n": 5, "mean": v,
                             "ci_low": v - 0.005, "ci_high": v + 0.005} for n, v in means.items()])
    p_holm = {("adagrad", "adam"): 0.6, ("adagrad", "sgd"): 0.016, ("adagrad", "momentum"): 0.008,
              ("adam", "sgd"): 0.098, ("adam", "momentum"): 0.098, ("sgd", "momentum"): 0.78}
    pairwise = pd.DataFrame([{**cell, "metric": "final/test_acc", "a": a, "b": b, "p_holm": p}
                             for (a, b), p in p_holm.items()])
    rank = fair.ranking(summary, pairwise)
    assert rank["group"].tolist() == ["a", "ab", "b", "b"]
    assert fair.ranking_text(rank)[("m", "d")] == "adagrad (a) ≈ adam (ab) ≈ sgd (b) ≈ momentum (b)"
    # all different: one letter each; none different: one letter for all
    rank = fair.ranking(summary, pairwise.assign(p_holm=0.001))
    assert rank["group"].tolist() == ["a", "b", "c", "d"]
    assert fair.ranking(summary, pairwise.assign(p_holm=0.9))["group"].tolist() == ["a"] * 4


def test_preset_config_and_overrides() -> None:
    preset = yaml.safe_load((REPO / "conf" / "experiment" / "fair_compare.yaml").read_text())
    # the yaml's centres are the optimizers' class defaults (stage 1 also passes them explicitly)
    assert preset["task"]["lr_by_optimizer"] == {n: OPTIMIZERS[n]().hyperparams["lr"] for n in OPTIMIZERS}
    assert preset["optimizer"]["lr"] == "${descentlab.mul:${task.lr_by_optimizer.${optimizer.name}},${task.lr_factor}}"
    assert preset["tracking"]["experiment"] == "fair_compare" and preset["dataset"]["validation"] == 0.2
    s = Settings(optimizers=("sgd", "adam"), lrs=3, lr_step=1.0, seeds=2)
    over = stage1_overrides(s)
    assert "task.lr_factor=0.1,1.0,10.0" in over and "seed=0" in over and "optimizer=sgd,adam" in over
    assert "task.lr_by_optimizer={sgd:0.01,adam:0.001}" in over and "dataset.validation=0.2" in over
    two = stage2_overrides(s, ("mlp_5x100", "mnist_5k"), {"sgd": 0.1, "adam": 0.0001})
    assert "seed=1,2" in two and "task.lr_factor=1.0" in two and "task.lr_by_optimizer={sgd:0.1,adam:0.0001}" in two
    assert settings_from_options(Options(quick=True)) == QUICK
    full = settings_from_options(Options(seeds=3, dataset="digits"))
    assert (full.seeds, full.datasets, full.lrs, full.iterations) == (3, ("digits",), 7, 2000)
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        default_lrs(["sgd", "lion"])


def test_preset_composes_each_optimizers_grid_and_hashes_the_resolved_lr() -> None:
    from descentlab.config import config_hash

    def make(*overrides: str):
        return compose_config("experiment=fair_compare", *overrides)

    s = Settings(optimizers=("sgd", "adam"), lrs=3, lr_step=1.0)
    table = next(o for o in stage1_overrides(s) if o.startswith("task.lr_by_optimizer="))
    trial_cfg = make("optimizer=adam", table, "task.lr_factor=0.1")
    lr = float(trial_cfg.optimizer.lr)
    assert lr == 0.001 * 0.1 and trial_cfg.dataset.validation == 0.2
    assert float(make("optimizer=sgd", table, "task.lr_factor=10.0").optimizer.lr) == 0.01 * 10.0
    # stage 2 asks for the chosen lr through the table (factor 1): the same lr, and a config that composes to the
    # same hash every time, so the same command finds its runs again
    chosen = next(o for o in stage2_overrides(s, ("mlp_5x100", "mnist_5k"), {"adam": lr}) if "lr_by" in o)
    again = make("optimizer=adam", chosen, "task.lr_factor=1.0", "seed=1")
    assert float(again.optimizer.lr) == lr
    assert config_hash(again) == config_hash(make("optimizer=adam", chosen, "task.lr_factor=1.0", "seed=1"))
    # the explicit stage-1 table merges into the preset's and changes nothing: stage-1 runs do not depend on which
    # optimizers a comparison includes
    assert config_hash(trial_cfg) == config_hash(make("optimizer=adam", "task.lr_factor=0.1"))


def test_outputs_from_synthetic_runs(tmp_path: Path) -> None:
    s = Settings(optimizers=("sgd", "adam"), models=("mlp_5x100", "mlp_2x50"), lrs=3, lr_step=1.0, seeds=3)
    rows = [trial(o, DEFAULTS[o] * f, val=v, cell=c) for c in s.models for o in s.optimizers
            for f, v in zip((0.1, 1, 10), (0.5, 0.2, 0.3), strict=True)]
    runs1 = pd.DataFrame(rows)
    trials = fair.tuning_table(runs1, DEFAULTS)
    choices = fair.choose_lr(trials)
    runs2 = pd.concat([stage2_frame({"sgd": [0.9, 0.91, 0.92], "adam": [0.95, 0.955, 0.97]}, c) for c in s.models])
    files = write_outputs(s, tmp_path, trials, choices, runs1, runs2, choice_messages(choices), {"stage 1 sweep": 1.0})
    names = {p.name for p in files}
    assert {"report.md", "stage1_trials.csv", "chosen_lr.csv", "stage2_summary.csv", "pairwise.csv", "ranking.csv",
            "summary.csv", "fair_compare_tuning.png", "fair_compare_test_acc.png", "fair_compare_pairwise.png",
            "fair_compare_profile.png", "performance_profile.csv"} <= names
    assert all(p.stat().st_size > 0 for p in files)
    report = (tmp_path / "report.md").read_text()
    assert "Holm" in report and "adam (a) > sgd (b)" in report and "3 trials × 2000 iterations" in report
    pairwise = pd.read_csv(tmp_path / "pairwise.csv")
    assert {"p", "p_holm", "ci_low", "ci_high"} <= set(pairwise.columns) and len(pairwise) == 4  # 2 cells × 2 metrics


@pytest.mark.parametrize(("args", "message"), [
    (("--optimizers", "sgd,lion"), "unknown optimizer 'lion'; allowed: sgd,"),
    (("--datasets", "cifar"), "unknown dataset 'cifar'; allowed: digits,"),
    (("--seeds", "0"), "--seeds must be >= 1, got 0"),
    (("--validation", "0"), "--validation must be in (0, 1)"),
])
def test_compare_bad_input_is_one_line(store, args: tuple[str, ...], message: str) -> None:
    result = store.script_in_process("compare.py", *args)
    assert result.returncode == 2 and message in result.stderr
    assert store.runs("fair_compare") == []  # nothing ran


# -- end to end: scripts/compare.py on a temporary store ----------------------------------------------------------
QUICK_ARGS = ("--optimizers", "sgd,adam", "--datasets", "digits", "--lrs", "3", "--lr-step", "1", "--seeds", "2")


def compare(store, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(compare_argv(store, *args), cwd=store.root, env=store.env(), capture_output=True, text=True,
                          timeout=300)


def compare_argv(store, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "compare.py"), "--quick", *QUICK_ARGS, "--out",
            str(store.root / "reports"), "--sweep-dir", str(store.root / "multirun"), *args]


def job_runs(store) -> list:
    return [r for r in store.runs("fair_compare") if "config_hash" in r.data.tags]


@pytest.mark.e2e
def test_compare_killed_resumes_then_reruns_nothing(store) -> None:
    """Killed (SIGINT) during stage 1, the same command finishes both stages without redoing a finished run; the
    outputs agree with the tracked runs; a third run launches no training run at all."""
    args = ("--iterations", "400", "--no-parallel")
    log = (store.root / "killed.log").open("w+")
    proc = subprocess.Popen(compare_argv(store, *args), cwd=store.root, env=store.env(), stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r.info.status == "FINISHED" for r in job_runs(store)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "compare.py ended before a run finished: nothing to interrupt"
    os.kill(proc.pid, signal.SIGINT)
    proc.wait(timeout=60)
    log.seek(0)
    text = log.read()
    assert proc.returncode == 128 + signal.SIGINT, text[-3000:]
    assert "run the same command to finish it" in text
    finished = {r.data.tags["config_hash"] for r in job_runs(store) if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < 6  # stopped inside stage 1 (6 trials)

    result = compare(store, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    done = [r for r in job_runs(store) if r.info.status == "FINISHED"]
    hashes = [r.data.tags["config_hash"] for r in done]
    assert len(hashes) == len(set(hashes)) == 10  # every config once: nothing finished was redone
    assert finished <= set(hashes)

    out = store.root / "reports" / "fair_compare"
    for name in ("report.md", "stage1_trials.csv", "chosen_lr.csv", "stage2_summary.csv", "pairwise.csv",
                 "ranking.csv", "fair_compare_tuning.png", "fair_compare_test_acc.png", "fair_compare_pairwise.png"):
        assert (out / name).stat().st_size > 0, name
    runs = done
    stage1 = [r for r in runs if r.data.params["seed"] == "0"]
    stage2 = [r for r in runs if r.data.params["seed"] != "0"]
    assert len(stage1) == 6 and len(stage2) == 4  # 2 optimizers × 3 lrs; 2 optimizers × seeds 1, 2
    assert all(r.data.params["dataset.validation"] == "0.2" for r in runs)
    chosen = pd.read_csv(out / "chosen_lr.csv").set_index("optimizer.name")
    for name in ("sgd", "adam"):
        # the choice is the argmin of the tracked runs' final/val_loss
        mine = [r for r in stage1 if r.data.params["optimizer.name"] == name]
        assert sorted(float(r.data.params["optimizer.lr"]) for r in mine) == pytest.approx(
            [DEFAULTS[name] * f for f in (0.1, 1, 10)], rel=1e-12)
        best = min(mine, key=lambda r: r.data.metrics["final/val_loss"])
        assert chosen.loc[name, "chosen_lr"] == pytest.approx(float(best.data.params["optimizer.lr"]), rel=1e-12)
        assert sorted(int(r.data.params["seed"]) for r in stage2 if r.data.params["optimizer.name"] == name) == [1, 2]
        lrs = {float(r.data.params["optimizer.lr"]) for r in stage2 if r.data.params["optimizer.name"] == name}
        assert len(lrs) == 1 and lrs.pop() == pytest.approx(chosen.loc[name, "chosen_lr"], rel=1e-12)
    summary = pd.read_csv(out / "stage2_summary.csv")
    acc = summary[summary["metric"] == "final/test_acc"].set_index("optimizer.name")
    assert acc.loc["sgd", "n"] == 2 and acc.loc["adam", "n"] == 2
    analysis = [r for r in store.runs("fair_compare") if r.info.run_name == "analysis-fair_compare"]
    assert len(analysis) == 1
    assert "report.md" in {a.path for a in store.client().list_artifacts(analysis[0].info.run_id)}

    count = len(job_runs(store))
    again = compare(store, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "running:" not in again.stdout and again.stdout.count("nothing to launch") == 2
    assert len(job_runs(store)) == count  # no new training run
