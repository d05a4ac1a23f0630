"""analysis.runs against a synthetic MLflow store with known values (written with MlflowClient, as app.run does).

The store: experiment "optimizer-comparison" with
- sweep 1 (parent P1): sgd seeds 0-2 and adam seeds 0-2 (FINISHED), sgd seed 3 diverged at step 57 (FAILED),
  adam seed 3 KILLED at step 20 (no metrics.csv: history falls back to the store);
- sweep 2 (parent P2): sgd on mlp_2x50 (FINISHED), momentum on mlp_2x50 (FAILED by an exception, no metrics);
- one single run (no parent): adam on mlp_2x50.
Finished runs log train/loss at steps 0..199 to metrics.csv but only every 10th step to the store
(tracking.store_every=10), so a full history proves the CSV was read.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from conftest import log_history_csv
from descentlab.analysis import runs as runs_mod
from descentlab.analysis.runs import (
    BASE_COLUMNS,
    AnalysisError,
    load_history,
    load_runs,
    normalize_param,
    parse_param,
)
from descentlab.analysis.stats import aggregate, compare_to_baseline, steps_to_target

EXPERIMENT = "optimizer-comparison"
SWEEP1 = "multirun/2026-01-01/10-00-00"
SWEEP2 = "multirun/2026-01-02/11-00-00"
T0 = 1_767_261_600_000  # 2026-01-01 10:00 UTC, ms
STEPS = 200


@dataclass
class Job:
    name: str
    optimizer: str
    lr: float
    seed: int
    model: str = "mlp_5x100"
    sweep: str | None = "1"
    status: str = "FINISHED"
    final_loss: float | None = None
    final_acc: float | None = None
    duration: float = 10.0
    steps: int = STEPS  # train/loss points logged
    csv: bool = True
    tags: dict[str, str] = field(default_factory=dict)


JOBS = [
    Job("sgd-s0", "sgd", 0.01, 0, final_loss=0.30, final_acc=0.90, duration=10.0),
    Job("sgd-s1", "sgd", 0.01, 1, final_loss=0.25, final_acc=0.91, duration=12.0),
    Job("sgd-s2", "sgd", 0.01, 2, final_loss=0.35, final_acc=0.89, duration=14.0),
    Job("adam-s0", "adam", 0.001, 0, final_loss=0.10, final_acc=0.95, duration=20.0),
    Job("adam-s1", "adam", 0.001, 1, final_loss=0.12, final_acc=0.96, duration=21.0),
    Job("adam-s2", "adam", 0.001, 2, final_loss=0.08, final_acc=0.97, duration=23.0),
    Job("sgd-s3-diverged", "sgd", 10.0, 3, status="FAILED", duration=1.0, steps=57,
        tags={"diverged_at_step": "57", "error": "DivergedError: loss is nan at step 57"}),
    Job("adam-s3-killed", "adam", 0.001, 3, status="KILLED", duration=2.0, steps=21, csv=False),
    Job("sgd-2x50", "sgd", 0.01, 0, model="mlp_2x50", sweep="2", final_loss=0.40, final_acc=0.85),
    Job("momentum-2x50-failed", "momentum", 0.01, 0, model="mlp_2x50", sweep="2", status="FAILED", steps=0,
        csv=False, tags={"error": "ValueError: boom"}),
    Job("adam-2x50-single", "adam", 0.001, 0, model="mlp_2x50", sweep=None, final_loss=0.20, final_acc=0.93),
    Job("adam-2x50-running", "adam", 0.001, 5, model="mlp_2x50", sweep="2", status="RUNNING", steps=30, csv=False),
]


def curve(job: Job) -> np.ndarray:
    """The train/loss a job logs: 2/(1 + k*step), k from the job's place in JOBS."""
    k = 0.01 * (1 + JOBS.index(job))
    return 2.0 / (1.0 + k * np.arange(job.steps))


@dataclass
class Store:
    uri: str
    ids: dict[str, str]  # job name / "P1" / "P2" -> run id


def _params(job: Job) -> dict[str, str]:
    hidden = "[100, 100, 100, 100]" if job.model == "mlp_5x100" else "[50, 50]"
    return {"optimizer.name": job.optimizer, "optimizer.lr": str(job.lr), "model.name": job.model,
            "model.hidden_sizes": hidden, "model.batch_norm": "False", "dataset.name": "mnist_5k",
            "dataset.path": "None", "seed": str(job.seed), "training.iterations": str(STEPS), "task.name": "classify"}


def build_store(root: Path) -> Store:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts" / EXPERIMENT).as_uri())
    empty = client.create_experiment("empty", artifact_location=(root / "artifacts" / "empty").as_uri())
    client.create_experiment("nothing", artifact_location=(root / "artifacts" / "nothing").as_uri())
    ids: dict[str, str] = {}
    # Sweep 1's parent as older versions tagged it, sweep 2's as today (its jobs name no folder: the parent does).
    for key, tag, sweep_dir, start in (("P1", "sweep_dir", SWEEP1, T0), ("P2", "sweep.dir", SWEEP2, T0 + 3_600_000)):
        run = client.create_run(exp, start_time=start, run_name=f"sweep-{key}", tags={tag: sweep_dir})
        ids[key] = run.info.run_id
    parent_only = client.create_run(empty, start_time=T0, run_name="sweep-x", tags={"sweep_dir": "multirun/x"})
    client.set_terminated(parent_only.info.run_id, "FINISHED")

    for i, job in enumerate(JOBS):
        start = T0 + 60_000 * (i + 1)
        tags = {"config_hash": f"hash{i:02d}", "task": "classify", **job.tags}
        if job.sweep:
            tags.update({"mlflow.parentRunId": ids[f"P{job.sweep}"], "hydra.job_num": str(i)})
            if job.sweep == "1":
                tags["hydra.sweep_dir"] = SWEEP1
        run = client.create_run(exp, start_time=start, run_name=job.name, tags=tags)
        run_id = ids[job.name] = run.info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in _params(job).items()])
        loss = curve(job)
        points = [(s, "train/loss", float(v)) for s, v in enumerate(loss)]
        if job.status == "FINISHED":
            points += [(s, "test/acc", job.final_acc - 0.1 * (s < STEPS)) for s in (0, 100, STEPS)]
            points += [(STEPS, "final/train_loss", job.final_loss), (STEPS, "final/test_acc", job.final_acc),
                       (STEPS, "best/test_acc", job.final_acc), (STEPS, "time/elapsed_s", job.duration - 0.5)]
        # Like tracking.store_every=10 for finished runs: the store gets every 10th step and each key's last point.
        last = {key: s for s, key, _ in points}
        stored = [p for p in points if job.status != "FINISHED" or p[0] % 10 == 0 or last[p[1]] == p[0]]
        for chunk in range(0, len(stored), 1000):
            client.log_batch(run_id, metrics=[Metric(k, v, start, s) for s, k, v in stored[chunk:chunk + 1000]])
        if job.csv:
            log_history_csv(client, run_id, points, root / "tmp")
        if job.status != "RUNNING":
            client.set_terminated(run_id, job.status, end_time=start + int(job.duration * 1000))
    for key in ("P1", "P2"):
        client.set_terminated(ids[key], "FAILED")
    return Store(uri, ids)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield build_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def runs(store: Store) -> pd.DataFrame:
    return load_runs(EXPERIMENT, store.uri)


def by_name(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("run_name")


# -- load_runs -----------------------------------------------------------------------------------
def test_one_row_per_job_run_with_outcomes(runs: pd.DataFrame) -> None:
    assert list(runs["run_name"]) == [j.name for j in JOBS]  # sorted by start time; parents left out
    outcome = by_name(runs)["outcome"]
    assert outcome["sgd-s0"] == "finished"
    assert outcome["sgd-s3-diverged"] == "diverged"
    assert outcome["adam-s3-killed"] == "killed"
    assert outcome["momentum-2x50-failed"] == "failed"
    assert outcome["adam-2x50-running"] == "running"
    assert by_name(runs)["status"]["sgd-s3-diverged"] == "FAILED"
    assert list(runs.columns[: len(BASE_COLUMNS)]) == list(BASE_COLUMNS)
    assert runs.attrs["experiment"] == EXPERIMENT


def test_columns_hold_tags_durations_and_parsed_params(runs: pd.DataFrame, store: Store) -> None:
    r = by_name(runs)
    assert r.loc["sgd-s3-diverged", "diverged_at_step"] == 57
    assert pd.isna(r.loc["sgd-s0", "diverged_at_step"])
    assert r.loc["sgd-s3-diverged", "error"] == "DivergedError: loss is nan at step 57"
    assert r.loc["momentum-2x50-failed", "error"] == "ValueError: boom"
    assert r.loc["sgd-s1", "duration_s"] == 12.0
    assert r.loc["adam-s3-killed", "duration_s"] == 2.0
    assert math.isnan(r.loc["adam-2x50-running", "duration_s"])
    assert r.loc["sgd-s0", "start_time"] == pd.Timestamp(T0 + 60_000, unit="ms", tz="UTC")
    assert r.loc["sgd-s0", "parent_run_id"] == store.ids["P1"]
    assert r.loc["sgd-2x50", "sweep_dir"] == SWEEP2
    assert pd.isna(r.loc["adam-2x50-single", "parent_run_id"]) and pd.isna(r.loc["sgd-s0", "error"])
    assert r.loc["sgd-s0", "config_hash"] == "hash00"
    assert r.loc["sgd-s0", "artifact_uri"].startswith("file://")
    # params: numbers, bools and None parsed; lists stay text
    assert r.loc["sgd-s0", "optimizer.lr"] == 0.01 and runs["optimizer.lr"].dtype == np.float64
    assert r.loc["sgd-s2", "seed"] == 2 and runs["seed"].dtype == np.int64
    assert r.loc["sgd-s0", "model.hidden_sizes"] == "[100, 100, 100, 100]"
    assert runs["model.batch_norm"].dtype == bool and not runs["model.batch_norm"].any()
    assert r.loc["sgd-s0", "dataset.path"] is None
    assert r.loc["sgd-s0", "optimizer.name"] == "sgd"


def test_summary_metrics_are_latest_values_and_missing_where_not_logged(runs: pd.DataFrame) -> None:
    r = by_name(runs)
    for job in JOBS:
        if job.status == "FINISHED":
            assert r.loc[job.name, "final/train_loss"] == job.final_loss
            assert r.loc[job.name, "best/test_acc"] == job.final_acc
            assert r.loc[job.name, "time/elapsed_s"] == job.duration - 0.5
        else:
            assert math.isnan(r.loc[job.name, "final/train_loss"])
    assert "train/loss" not in runs.columns and "test/acc" not in runs.columns


@pytest.mark.parametrize("sweep", ["P1", SWEEP1, "10-00-00", "2026-01-01/10-00-00", "/abs/work/" + SWEEP1 + "/"])
def test_sweep_filter(store: Store, sweep: str) -> None:
    frame = load_runs(EXPERIMENT, store.uri, sweep=store.ids.get(sweep, sweep))
    assert sorted(frame["run_name"]) == sorted(j.name for j in JOBS if j.sweep == "1")


def test_sweep_filter_second_sweep_and_unknown(store: Store) -> None:
    assert sorted(load_runs(EXPERIMENT, store.uri, sweep="11-00-00")["run_name"]) == [
        "adam-2x50-running", "momentum-2x50-failed", "sgd-2x50"]
    with pytest.raises(AnalysisError, match="no runs of sweep"):  # same last component, other day
        load_runs(EXPERIMENT, store.uri, sweep="2026-01-09/10-00-00")
    with pytest.raises(AnalysisError, match=r"^no runs of sweep '09-00-00' in experiment 'optimizer-comparison'; "
                                            r"sweeps: 10-00-00 \(\w+\), 11-00-00 \(\w+\)$"):
        load_runs(EXPERIMENT, store.uri, sweep="09-00-00")


@pytest.mark.parametrize(("params", "expected"), [
    ({"optimizer.lr": 0.01}, ["sgd-s0", "sgd-s1", "sgd-s2", "sgd-2x50", "momentum-2x50-failed"]),
    ({"optimizer.lr": "1e-2", "model.name": "mlp_5x100"}, ["sgd-s0", "sgd-s1", "sgd-s2"]),
    ({"optimizer.lr": 10}, ["sgd-s3-diverged"]),
    ({"seed": 1.0}, ["sgd-s1", "adam-s1"]),
    ({"seed": "3"}, ["sgd-s3-diverged", "adam-s3-killed"]),
    ({"model.hidden_sizes": [50, 50]}, ["sgd-2x50", "momentum-2x50-failed", "adam-2x50-single", "adam-2x50-running"]),
    ({"model.batch_norm": False, "optimizer.name": {"adam", "momentum"}, "model.name": "mlp_2x50", "seed": 0},
     ["momentum-2x50-failed", "adam-2x50-single"]),
    ({"dataset.path": None, "optimizer.name": "adam", "seed": np.int64(2)}, ["adam-s2"]),
])
def test_param_filter(store: Store, params: dict, expected: list[str]) -> None:
    assert sorted(load_runs(EXPERIMENT, store.uri, params=params)["run_name"]) == sorted(expected)


def test_param_filter_combines_with_sweep(store: Store) -> None:
    frame = load_runs(EXPERIMENT, store.uri, sweep="11-00-00", params={"optimizer.name": "sgd"})
    assert list(frame["run_name"]) == ["sgd-2x50"]


def test_param_filter_errors_are_one_line(store: Store) -> None:
    with pytest.raises(AnalysisError, match=r"^no param 'optimizer.nam' in experiment 'optimizer-comparison'; "
                                            r"did you mean optimizer.name"):
        load_runs(EXPERIMENT, store.uri, params={"optimizer.nam": "sgd"})
    with pytest.raises(AnalysisError) as info:
        load_runs(EXPERIMENT, store.uri, params={"optimizer.name": "rmsprop"})
    assert str(info.value) == ("no runs with optimizer.name='rmsprop' in experiment 'optimizer-comparison'; "
                               "optimizer.name values: adam, momentum, sgd")


def test_unknown_and_empty_experiments_raise_one_line(store: Store) -> None:
    with pytest.raises(AnalysisError) as info:
        load_runs("optimiser-comparison", store.uri)
    assert str(info.value) == (f"no experiment named 'optimiser-comparison' in {store.uri}; "
                               "experiments: Default, empty, nothing, optimizer-comparison")
    assert isinstance(info.value, ValueError)
    for name in ("empty", "nothing"):  # only a parent run / no run at all
        with pytest.raises(AnalysisError, match=rf"^experiment '{name}' has no runs$"):
            load_runs(name, store.uri)


def test_missing_store_file_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    db = tmp_path / "absent" / "mlflow.db"
    with pytest.raises(AnalysisError, match=r"^no MLflow store at .*absent/mlflow\.db"):
        load_runs(EXPERIMENT, f"sqlite:///{db}")
    assert not db.exists()


def test_tracking_uri_defaults_to_the_environment(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    assert len(load_runs(EXPERIMENT)) == len(JOBS)


def test_default_store_is_the_repository_mlruns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import descentlab

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # not the current folder: the checkout holding the package (paths.root's default)
    checkout = Path(descentlab.__file__).resolve().parents[2]
    assert runs_mod.default_tracking_uri() == f"sqlite:///{checkout}/mlruns/mlflow.db"


def test_parse_and_normalize_param() -> None:
    assert parse_param("3") == 3 and isinstance(parse_param("3"), int)
    assert parse_param("1e-07") == 1e-7
    assert parse_param("-0.5") == -0.5
    assert parse_param("True") is True and parse_param("False") is False
    assert parse_param("None") is None
    assert parse_param("[100, 100]") == "[100, 100]"
    assert parse_param("1_000") == "1_000"  # float() would accept it; a param like that is text
    assert parse_param("adam") == "adam"
    assert normalize_param(0.01) == normalize_param("0.010") == normalize_param("1e-2")
    assert normalize_param(1) == normalize_param("1.0")
    assert normalize_param([100, 100]) == normalize_param("[100,100]") == normalize_param((100, 100))
    assert normalize_param(True) == "True" != normalize_param(1)
    assert normalize_param(None) == "None"


# -- load_history --------------------------------------------------------------------------------
def test_history_reads_every_point_from_the_csv(runs: pd.DataFrame) -> None:
    history = load_history(runs, metrics=["train/loss"])
    assert list(history.columns) == ["run_id", "step", "metric", "value"]
    r = by_name(runs)
    for job in JOBS:
        got = history[history["run_id"] == r.loc[job.name, "run_id"]]
        assert list(got["step"]) == list(range(job.steps))  # 200 steps though the store kept every 10th
        np.testing.assert_array_equal(got["value"].to_numpy(), curve(job))  # exact: repr round-trips
    assert set(history["metric"]) == {"train/loss"}
    assert history["step"].dtype == np.int64 and history["value"].dtype == np.float64


def test_history_all_metrics_order_and_merged_columns(runs: pd.DataFrame) -> None:
    finished = runs[runs["run_name"] == "adam-s1"]
    history = load_history(finished, columns=["optimizer.name", "seed"])
    assert sorted(set(history["metric"])) == ["best/test_acc", "final/test_acc", "final/train_loss",
                                              "test/acc", "time/elapsed_s", "train/loss"]
    acc = history[history["metric"] == "test/acc"]
    assert list(acc["step"]) == [0, 100, STEPS]
    np.testing.assert_allclose(acc["value"], [0.86, 0.86, 0.96])
    assert (history["optimizer.name"] == "adam").all() and (history["seed"] == 1).all()
    metric_order = list(dict.fromkeys(history["metric"]))
    assert metric_order == sorted(metric_order)


def test_history_falls_back_to_the_store_without_csv(runs: pd.DataFrame) -> None:
    killed = runs[runs["run_name"].isin(["adam-s3-killed", "momentum-2x50-failed"])]
    history = load_history(killed)
    job = next(j for j in JOBS if j.name == "adam-s3-killed")
    assert set(history["run_id"]) == {killed["run_id"].iloc[0]}  # the failed run logged nothing
    assert list(history["step"]) == list(range(21))
    np.testing.assert_array_equal(history["value"].to_numpy(), curve(job))


def test_history_downloads_when_the_store_is_not_local(runs: pd.DataFrame, store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs_mod, "_local_dir", lambda uri: None)  # as for s3:// or mlflow-artifacts:
    ids = list(runs["run_id"][runs["run_name"].isin(["sgd-s0", "adam-s3-killed"])])
    history = load_history(ids, metrics=["train/loss"], tracking_uri=store.uri)
    counts = history.groupby("run_id")["step"].count()
    assert counts[ids[0]] == STEPS and counts[ids[1]] == 21


def test_history_errors(runs: pd.DataFrame) -> None:
    with pytest.raises(AnalysisError, match="columns not in runs: nope"):
        load_history(runs, columns=["nope"])
    with pytest.raises(AnalysisError, match="run_id column"):
        load_history(pd.DataFrame({"x": [1]}))


# -- end to end: store -> stats -------------------------------------------------------------------
def test_aggregate_over_the_store(runs: pd.DataFrame) -> None:
    agg = aggregate(runs)
    # one row per configuration: what varies (model.hidden_sizes goes with model.name; the diverged sgd run
    # had lr 10) are the group columns; the params every run shares are not
    assert list(agg.columns[:4]) == ["optimizer.name", "model.name", "optimizer.lr", "model.hidden_sizes"]
    agg = agg.set_index(["optimizer.name", "model.name", "optimizer.lr", "metric"])
    diverged = agg.loc[("sgd", "mlp_5x100", 10.0, "final/train_loss")]  # counted in its own configuration's row
    assert (diverged["runs"], diverged["finished"], diverged["diverged"], diverged["n"]) == (1, 0, 1, 0)
    sgd = agg.loc[("sgd", "mlp_5x100", 0.01, "final/train_loss")]
    x = np.array([0.30, 0.25, 0.35])
    half = sps.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert sgd["n"] == 3
    assert sgd["mean"] == pytest.approx(0.30, abs=1e-15)
    assert sgd["std"] == pytest.approx(0.05, rel=1e-12)
    assert (sgd["ci_low"], sgd["ci_high"]) == pytest.approx((0.30 - half, 0.30 + half), rel=1e-12)
    assert (sgd["runs"], sgd["finished"], sgd["diverged"], sgd["failed"], sgd["killed"]) == (3, 3, 0, 0, 0)
    adam = agg.loc[("adam", "mlp_5x100", 0.001, "duration_s")]
    assert (adam["n"], adam["mean"]) == (3, pytest.approx(64 / 3))  # the killed run's 2 s is not a duration
    assert (adam["runs"], adam["finished"], adam["killed"]) == (4, 3, 1)
    single = agg.loc[("adam", "mlp_2x50", 0.001, "final/train_loss")]
    assert single["n"] == 1 and single["mean"] == 0.20 and math.isnan(single["ci_low"])
    assert (single["runs"], single["finished"], single["running"]) == (2, 1, 1)
    momentum = agg.loc[("momentum", "mlp_2x50", 0.01, "final/train_loss")]
    assert momentum["n"] == 0 and momentum["failed"] == 1 and math.isnan(momentum["mean"])


def test_compare_and_steps_to_target_over_the_store(runs: pd.DataFrame) -> None:
    cmp = compare_to_baseline(runs, "sgd", "final/train_loss")
    adam_5x100 = cmp[(cmp["model.name"] == "mlp_5x100") & (cmp["optimizer.name"] == "adam")]
    # sgd ran at two learning rates on this model: adam is compared with each, never with both pooled
    assert sorted(adam_5x100["baseline optimizer.lr"]) == [0.01, 10.0]
    assert adam_5x100.set_index("baseline optimizer.lr").loc[10.0, "n_baseline"] == 0  # that sgd run diverged
    row = adam_5x100.set_index("baseline optimizer.lr").loc[0.01]
    adam, sgd = np.array([0.10, 0.12, 0.08]), np.array([0.30, 0.25, 0.35])
    ref = sps.ttest_ind(adam, sgd, equal_var=False)
    assert row["diff"] == pytest.approx(-0.20)
    assert (row["t"], row["p"]) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    assert row["paired_diff"] == pytest.approx(-0.20) and row["n_pairs"] == 3

    history = load_history(runs, metrics=["train/loss"], columns=["optimizer.name"])
    reached = steps_to_target(history, target=1.0).set_index("run_id")
    assert len(reached) == len(JOBS) - 1  # the run that logged nothing has no history
    for job in (j for j in JOBS if j.steps):
        loss = curve(job)
        expected = float(np.argmax(loss <= 1.0)) if (loss <= 1.0).any() else math.nan
        assert reached.loc[by_name(runs).loc[job.name, "run_id"], "step"] == expected, job.name
    assert reached["reached"].all()
    assert list(reached.loc[by_name(runs).loc[["sgd-s0", "adam-s0"], "run_id"], "optimizer.name"]) == ["sgd", "adam"]


def test_analysis_imports_no_hydra_app_or_mlflow() -> None:
    code = ("import sys; import descentlab.analysis.runs, descentlab.analysis.stats, descentlab.analysis.tables; "
            "bad = [m for m in ('hydra', 'omegaconf', 'descentlab.app', 'mlflow') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
