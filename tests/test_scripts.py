"""The analysis scripts end to end (e2e tier): a small tracked sweep in, tables, figures and an `analysis` run out;
a script's bad input in-process (default tier)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import REPO


def script(store, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=store.root, env=store.env(),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
def test_analyze_writes_tables_and_plots_and_logs_an_analysis_run(store) -> None:
    sweep = store.train("-m", "optimizer=sgd,adam", "seed=0,1", "training.iterations=40", "training.eval_every=20")
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    # a trial run in the same experiment: no hidden layers (model.name stays mlp_5x100)
    trial = store.train("optimizer=adam", "model.hidden_sizes=[]", "training.iterations=40", "training.eval_every=20")
    assert trial.returncode == 0, trial.stderr[-2000:]
    result = script(store, "analyze.py", "optimizer-comparison", "--out", str(store.root / "report"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = store.root / "report"
    expected = {"summary.md", "summary.csv", "summary.tex", "runs.csv", "loss_curves.png", "loss_curves.pdf",
                "loss_curves.csv", "final_train_loss.png", "vs_sgd_final_train_loss.csv"}
    assert expected <= {p.name for p in out.iterdir()}
    summary = pd.read_csv(out / "summary.csv")
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 5
    loss = summary[summary["metric"] == "final/train_loss"].set_index(["optimizer.name", "model.hidden_sizes"])
    assert len(loss) == 3  # the trial is a configuration of its own, never pooled with the sweep's Adam runs
    sweep_adam = runs[(runs["optimizer.name"] == "adam") & (runs["model.hidden_sizes"] != "[]")]
    adam = loss.loc[("adam", "[100, 100, 100, 100]")]
    assert adam["n"] == 2 and adam["mean"] == sweep_adam["final/train_loss"].mean()
    assert loss.loc[("adam", "[]"), "n"] == 1 and "(n=1, no interval)" in result.stdout
    assert "steps_to_loss_0.1" in set(summary["metric"]) and "steps_to_loss_0.1" in runs.columns
    analysis = [r for r in store.runs() if r.info.run_name == "analysis"]
    assert len(analysis) == 1 and analysis[0].info.status == "FINISHED"
    assert "summary.md" in {a.path for a in store.client().list_artifacts(analysis[0].info.run_id)}


def test_analyze_unknown_experiment_is_one_line(store) -> None:
    trained = store.train_in_process("training.iterations=5", "training.progress=false")
    assert trained.returncode == 0, trained.stderr[-2000:]
    result = store.script_in_process("analyze.py", "no-such-experiment")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stdout == ""
    assert "no experiment named 'no-such-experiment'" in result.stderr and "optimizer-comparison" in result.stderr


@pytest.mark.e2e
def test_reproduce_figures_from_tracked_runs(store) -> None:
    out, jobs = store.root / "reports", store.root / "multirun"
    fig68 = script(store, "reproduce.py", "fig6_8", "--out", str(out), "--no-parallel", "--sweep-dir", str(jobs))
    assert fig68.returncode == 0, fig68.stderr[-2000:]
    assert {"fig6_8.png", "fig6_8.pdf", "fig6_8_paths.csv"} <= {p.name for p in (out / "fig6_8").iterdir()}
    paths = pd.read_csv(out / "fig6_8" / "fig6_8_paths.csv")
    assert paths.groupby("optimizer.name")["step"].nunique().to_dict() == {o: 31 for o in
                                                                           ("adagrad", "adam", "momentum", "sgd")}

    fig69 = script(store, "reproduce.py", "fig6_9", "--seeds", "2", "--iterations", "300", "--out", str(out),
                   "--sweep-dir", str(jobs))
    assert fig69.returncode == 0, fig69.stderr[-2000:]
    files = {p.name for p in (out / "fig6_9").iterdir()}
    assert {"fig6_9_book.png", "fig6_9_ours.png", "fig6_9_train_loss.csv", "fig6_9_summary.csv"} <= files
    summary = pd.read_csv(out / "fig6_9" / "fig6_9_summary.csv")
    loss = summary[summary["metric"] == "final/train_loss"].set_index("optimizer.name")["mean"]
    assert loss.idxmax() == "sgd"  # the book's finding: SGD learns slowest
    assert (summary.loc[summary["metric"] == "final/train_loss", "n"] == 2).all()
    again = script(store, "reproduce.py", "fig6_9", "--seeds", "2", "--iterations", "300", "--out", str(out),
                   "--sweep-dir", str(jobs))
    assert again.returncode == 0 and again.stderr.count("skipped ") == 8  # nothing trained twice
    # Every job's Hydra folder went where --sweep-dir said (4 + 8 + 8 jobs, three sweeps), not into the repository.
    assert len(list(jobs.glob("*/*/[0-9]*/.hydra"))) == 20 and len(list(jobs.glob("*/*/multirun.yaml"))) == 3


def test_reproduce_bad_input_is_one_line(store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A listed preset whose module is not in the checkout, a name not listed, a bad count: one line, non-zero."""
    import descentlab.experiments

    monkeypatch.setattr(descentlab.experiments, "PRESET_NAMES", (*descentlab.experiments.PRESET_NAMES, "not_yet"))
    missing = store.script_in_process("reproduce.py", "not_yet")
    assert missing.returncode != 0 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        "error: preset 'not_yet' is not available in this checkout (no module descentlab.experiments.not_yet); "
        "available: fig6_8, fig6_9, weight_init, batch_norm, overfit"
        + "".join(f", {n}" for n in ("hparam_search", "fair_compare")
                  if (REPO / "src" / "descentlab" / "experiments" / f"{n}.py").exists())]
    unknown = store.script_in_process("reproduce.py", "fig6_10")
    assert unknown.returncode == 2 and "invalid choice: 'fig6_10'" in unknown.stderr.strip().splitlines()[-1]
    for flag in ("--seeds", "--iterations"):
        bad = store.script_in_process("reproduce.py", "fig6_9", flag, "0")
        assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith(f"{flag} must be >= 1, got 0")
    assert not (store.root / "mlruns").exists()  # nothing ran
