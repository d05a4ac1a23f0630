"""scripts/bench_store.py: a store of N runs copied from a tiny real sweep reads back like real runs, and the
measurements return their numbers (no timing is asserted: speed lives in docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_store

pytestmark = pytest.mark.e2e  # real train.py sweeps, analyze.py and MLflow's server as processes

EXPERIMENT = "optimizer-comparison"
N_RUNS = 30
SWEEP_SIZE = 10


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A real sweep of 4 short jobs (sgd, adam x seeds 0, 1; digits, 50 steps) under one parent."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        store = Store(tmp_path_factory.mktemp("source"))
        result = store.train_in_process("-m", "optimizer=sgd,adam", "seed=0,1", "dataset=digits",
                                        "training.iterations=50", "training.progress=false")
        assert result.returncode == 0, result.stderr[-2000:]
        yield store


@pytest.fixture(scope="module")
def built(source: Store, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("built") / "store"
    return bench_store.build(source.root / "mlruns", N_RUNS, out, seeds=3, sweep_size=SWEEP_SIZE,
                             say=lambda *a, **k: None)


def _children(client, experiment_id: str) -> list:
    runs = client.search_runs([experiment_id], max_results=1000)
    return [r for r in runs if "config_hash" in r.data.tags]


def test_build_copies_runs_that_read_back_like_real_ones(source: Store, built: dict) -> None:
    from mlflow.tracking import MlflowClient

    from descentlab.config.identity import params_hash

    originals = {r.info.run_id: r for r in source.runs() if "config_hash" in r.data.tags}
    assert len(originals) == 4
    client = MlflowClient(tracking_uri=built["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    children = _children(client, exp.experiment_id)
    assert len(children) == N_RUNS == built["runs"]
    assert built["copies"] == N_RUNS - 4 and built["rows"]["runs"] == 26 + 3  # 3 sweep parents of <= 10 copies
    assert len({r.info.run_id for r in children}) == N_RUNS
    hashes = [r.data.tags["config_hash"] for r in children]
    assert len(set(hashes)) == N_RUNS
    by_source_hash = {r.data.tags["config_hash"]: r for r in originals.values()}
    copies = [r for r in children if r.info.run_id not in originals]
    parents = {r.data.tags["mlflow.parentRunId"] for r in copies}
    assert len(parents) == 3
    for parent in parents:
        tags = client.get_run(parent).data.tags
        assert tags["sweep.dir"].startswith(built["out"]) and int(tags["sweep.n_jobs"]) <= SWEEP_SIZE
    for run in copies:
        params = run.data.params
        assert run.info.status == "FINISHED"
        assert run.data.tags["config_hash"] == params_hash({k: bench_store._typed(v) for k, v in params.items()})
        assert f"optimizer.lr={params['optimizer.lr']} seed={params['seed']}" in run.data.tags["hydra.overrides"]
        assert run.info.run_name.endswith(f"-s{params['seed']}")
        # its source: the original of the same optimizer and seed mod 2 (the same curve, another lr)
        source_run = next(o for o in originals.values() if o.data.params["optimizer.name"] == params["optimizer.name"]
                          and int(o.data.params["seed"]) == int(params["seed"]) % 2)
        assert float(params["optimizer.lr"]) != float(source_run.data.params["optimizer.lr"])
        assert run.data.metrics == source_run.data.metrics
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert [m.value for m in history] == [m.value for m in
                                               client.get_metric_history(source_run.info.run_id, "train/loss")]
        assert len(history) == 50
        assert run.info.start_time <= history[0].timestamp <= run.info.end_time
        folder = Path(run.info.artifact_uri.removeprefix("file://"))
        assert folder.is_relative_to(built["out"])
        for name in ("metrics.csv", "weights.npz", "config.yaml"):
            src = Path(source_run.info.artifact_uri.removeprefix("file://")) / name
            assert os.path.samefile(folder / name, src)  # a hard link, no copy
    assert set(by_source_hash) <= set(hashes)  # the originals are still there, untouched hashes


def test_history_none_keeps_latest_metrics_and_csv_only(source: Store, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    info = bench_store.build(source.root / "mlruns", 8, tmp_path / "lean", history=False, weights=False, seeds=2,
                             say=lambda *a, **k: None)
    assert "metrics" not in info["rows"]
    client = MlflowClient(tracking_uri=info["uri"])
    children = _children(client, client.get_experiment_by_name(EXPERIMENT).experiment_id)
    assert len(children) == 8
    for run in children:
        assert client.get_metric_history(run.info.run_id, "train/loss") == []
        assert run.data.metrics["final/test_acc"] > 0
        folder = Path(run.info.artifact_uri.removeprefix("file://"))
        assert (folder / "metrics.csv").is_file() and not (folder / "weights.npz").exists()


def test_bad_input_is_one_line_and_exit_2(source: Store, built: dict, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_store.main(["build", "--from", str(source.root / "mlruns"), "--runs", "50",
                             "--out", built["out"]]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {built['out']} is not empty; give a new or empty folder"
    assert bench_store.main(["build", "--from", str(tmp_path), "--runs", "50", "--out", str(tmp_path / "x")]) == 2
    assert "no mlflow.db there" in capsys.readouterr().err
    assert bench_store.main(["build", "--from", str(source.root / "mlruns"), "--runs", "3",
                             "--out", str(tmp_path / "y")]) == 2
    assert "the source already has 4 runs" in capsys.readouterr().err
    assert bench_store.main(["measure", "--store", str(tmp_path), "--only", "skip"]) == 2
    assert "no mlflow.db or bench_store.json" in capsys.readouterr().err
    assert bench_store.main(["measure", "--store", built["out"], "--only", "skip,speed"]) == 2
    assert "unknown part ['speed']" in capsys.readouterr().err


def test_measurements_return_their_numbers(built: dict) -> None:
    store = bench_store.resolve_store(built["out"])
    skip = bench_store.measure_skip_check(store.uri, EXPERIMENT, n=5)
    assert skip["hit_found"] == 5 and skip["miss_found"] == 0 and skip["runs"] == N_RUNS
    assert skip["hit_ms"] > 0 and skip["miss_ms"] > 0
    job = bench_store.measure_new_job(store.uri, rounds=1, iterations=50)
    assert set(job) >= {"store_s", "empty_s", "ratio", "skipped_s"} and job["store_s"] > 0
    analysis = bench_store.measure_analyze(store.uri, EXPERIMENT)
    assert analysis["seconds"] > 0 and analysis["peak_mb"] > 50
    chart = bench_store.measure_chart(store, EXPERIMENT, repeats=1)
    assert chart["runs"] == N_RUNS and chart["points"] == N_RUNS * 50  # 50 steps each, under the 320 asked
    text = bench_store.table({"store": store.label, "upkeep": "none", "skip": skip, "job": job,
                              "analyze": analysis, "chart": chart})
    assert f"| {chart['first_s']} / {chart['median_s']} ({N_RUNS * 50:,} points) |" in text


def test_upkeep_apply_needs_the_upkeep_module(built: dict) -> None:
    uri = bench_store.resolve_store(built["out"]).uri
    if importlib.util.find_spec("descentlab.tracking.upkeep") is None:
        with pytest.raises(bench_store.BenchInputError, match=r"--upkeep apply: descentlab\.tracking\.upkeep"):
            bench_store.apply_upkeep(uri)
    else:
        assert set(bench_store.apply_upkeep(uri)) == {"ensure_indexes_s", "refresh_statistics_s"}
