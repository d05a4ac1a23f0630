"""analyze.py streams: the same results as the full frames of every run's history, runs read by SQL or the client.

"The old way" below is the code `analyze.py` and `plots.curve_summary` ran before histories were streamed (one long
frame of every point; a pandas groupby over (group, step); `steps_to_target` over the frame), kept here verbatim as
the reference the streamed accumulators must match: summary.csv and the steps-to-target column exactly,
loss_curves.csv at the grid's steps to rtol 1e-9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import log_history_csv
from descentlab.analysis import curves, plots
from descentlab.analysis.groups import group_runs
from descentlab.analysis.runs import AnalysisError, _read_csv, iter_histories, load_history, load_runs
from descentlab.analysis.smoothing import get_smoother
from descentlab.analysis.stats import aggregate, first_step_at, steps_to_target
from test_analysis_groups import EXPERIMENT, JOBS, Store, analyze, build_store

METRICS = ("final/train_loss", "final/test_acc", "best/test_acc", "duration_s")


# -- the old way -------------------------------------------------------------------------------------------
def old_curve_summary(history: pd.DataFrame, runs: pd.DataFrame, by: list[str], smooth: str | None,
                      every: int = 1) -> pd.DataFrame:
    """`plots.curve_summary` before streaming (its body, errorbar ("ci", 95), finished runs)."""
    selected = runs[runs["outcome"].isin(["finished"])]
    h = history.loc[history["metric"] == "train/loss", ["run_id", "step", "value"]]
    h = h.merge(selected[["run_id", *by]], on="run_id", how="inner")
    h = h.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
    smoother = get_smoother(smooth)
    if smoother is not None:
        h["value"] = h.groupby("run_id", sort=False)["value"].transform(lambda v: smoother(v.to_numpy()))
    if every > 1:
        last = h.groupby("run_id", sort=False)["step"].transform("max")
        h = h[(h["step"] % every == 0) | (h["step"] == last)]
    agg = h.groupby([*by, "step"], dropna=False, sort=True)["value"].agg(["mean", "std", "count"]).reset_index()
    half = plots.half_width(("ci", 95), agg["std"], agg["count"])
    return agg.assign(lo=agg["mean"] - half, hi=agg["mean"] + half, n=agg["count"])[
        [*by, "step", "mean", "lo", "hi", "n"]]


def old_steps_to_target(history: pd.DataFrame, target: float, smooth_window: int) -> pd.Series:
    """`stats.steps_to_target`'s computation before it went per run: step per run_id (NaN: not reached)."""
    points = history[history["metric"] == "train/loss"].sort_values(["run_id", "step"], kind="stable")
    values = points["value"].astype(float)
    if smooth_window > 1:
        values = values.groupby(points["run_id"], sort=False).transform(
            lambda s: s.rolling(smooth_window, min_periods=smooth_window).mean())
    hit = values <= target
    first = points.loc[hit[hit].index].groupby("run_id", sort=False)["step"].min()
    return pd.Series(pd.unique(history["run_id"])).map(first).astype(float).set_axis(pd.unique(history["run_id"]))


def old_report(uri: str, out: Path) -> None:
    """summary.csv, runs.csv and loss_curves.csv (every step) as analyze.py wrote them from full frames."""
    runs = load_runs(EXPERIMENT, tracking_uri=uri)
    shown = list(group_runs(runs, None).shown)
    history = load_history(runs, metrics=["train/loss"], tracking_uri=uri)
    reached = old_steps_to_target(history, 0.1, 50)
    runs["steps_to_loss_0.1"] = runs["run_id"].map(reached)
    summary = aggregate(runs, by=None, metrics=(*[m for m in METRICS if m in runs.columns], "steps_to_loss_0.1"))
    out.mkdir(parents=True)
    summary.to_csv(out / "summary.csv", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    old_curve_summary(history, runs, shown, "kaiser").to_csv(out / "loss_curves.csv", index=False)


def assert_same_report(new: Path, old: Path, grid_every: int) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(new / "summary.csv"), pd.read_csv(old / "summary.csv"),
                                  check_exact=True)
    new_runs, old_runs = pd.read_csv(new / "runs.csv"), pd.read_csv(old / "runs.csv")
    pd.testing.assert_series_equal(new_runs["steps_to_loss_0.1"], old_runs["steps_to_loss_0.1"], check_exact=True)
    pd.testing.assert_frame_equal(new_runs, old_runs, check_exact=True)
    new_curves, old_curves = pd.read_csv(new / "loss_curves.csv"), pd.read_csv(old / "loss_curves.csv")
    keys = list(new_curves.columns[: list(new_curves.columns).index("step")])
    last = old_curves.groupby(keys, dropna=False)["step"].transform("max")
    on_grid = old_curves[(old_curves["step"] % grid_every == 0) | (old_curves["step"] == last)]
    on_grid = on_grid.reset_index(drop=True)
    assert len(new_curves) == len(on_grid) and len(new_curves) > 0
    pd.testing.assert_frame_equal(new_curves[[*keys, "step", "n"]], on_grid[[*keys, "step", "n"]], check_exact=True)
    for column in ("mean", "lo", "hi"):
        np.testing.assert_allclose(new_curves[column], on_grid[column], rtol=1e-9)


# -- stores ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """test_analysis_groups' store: mixed configurations, a diverged run, an old run without a param, 200 steps."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield build_store(tmp_path_factory.mktemp("stream"))


LONG = 1201  # steps of the long store's runs: a grid of every 3rd step


@pytest.fixture(scope="module")
def long_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Four finished runs (sgd, adam x 2 seeds) of 1,201 noisy steps: more than the grid's 500 points."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("long")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
        rng = np.random.default_rng(7)
        steps = np.arange(LONG)
        for i, (opt, seed) in enumerate([("sgd", 0), ("sgd", 1), ("adam", 0), ("adam", 1)]):
            run = client.create_run(exp, start_time=1_767_261_600_000 + i, run_name=f"{opt}-s{seed}",
                                    tags={"config_hash": f"h{i}"})
            client.log_batch(run.info.run_id, params=[Param("optimizer.name", opt), Param("seed", str(seed)),
                                                      Param("training.iterations", str(LONG))])
            loss = 2.3 * np.exp(-steps / (300 if opt == "sgd" else 60)) + 0.05 + 0.05 * rng.random(LONG)
            points = [(int(s), "train/loss", float(v)) for s, v in zip(steps, loss, strict=True)]
            points.append((LONG, "final/train_loss", float(loss[-1])))
            client.log_batch(run.info.run_id, metrics=[Metric("final/train_loss", float(loss[-1]), 0, LONG)])
            log_history_csv(client, run.info.run_id, points, root / "tmp")
            client.set_terminated(run.info.run_id, "FINISHED", end_time=1_767_261_700_000 + i)
    return Store(root, uri)


# -- analyze.py: streamed == full frames -------------------------------------------------------------------
def test_analyze_streamed_equals_the_full_frames(store: Store) -> None:
    new, old = store.root / "new", store.root / "old"
    result = analyze(store, new)
    assert result.returncode == 0, result.stderr[-3000:]
    old_report(store.uri, old)
    assert_same_report(new, old, grid_every=1)  # 200-step runs: every step is on the grid
    assert f"read {len(JOBS) + 1} runs of experiment {EXPERIMENT}: {len(JOBS)} job runs" in result.stdout
    assert "- loss_curves.csv and loss_curves.png: every logged step, kaiser-smoothed" in (
        (new / "summary.md").read_text().splitlines())


def test_analyze_thins_long_curves_to_the_grid_and_says_so(long_store: Store) -> None:
    new, old = long_store.root / "new", long_store.root / "old"
    result = analyze(long_store, new)
    assert result.returncode == 0, result.stderr[-3000:]
    old_report(long_store.uri, old)
    assert curves.grid_every(LONG) == 3
    assert_same_report(new, old, grid_every=3)
    grid = pd.read_csv(new / "loss_curves.csv")
    assert list(grid.loc[grid["optimizer.name"] == "sgd", "step"]) == list(range(0, LONG, 3))  # 1200: last, on grid
    note = "kaiser-smoothed over all steps, then every 3rd step shown (and each run's last step)"
    assert f"- loss_curves.csv and loss_curves.png: {note}" in (new / "summary.md").read_text().splitlines()


# -- load_runs: SQL and the client give one frame --------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"sweep": "multirun/x"}, {"params": {"optimizer.name": "adam"}}])
def test_load_runs_by_sql_equals_the_client(store: Store, kwargs: dict) -> None:
    by_sql = load_runs(EXPERIMENT, tracking_uri=store.uri, via="sql", **kwargs)
    by_client = load_runs(EXPERIMENT, tracking_uri=store.uri, via="client", **kwargs)
    pd.testing.assert_frame_equal(by_sql, by_client, check_exact=True)
    assert by_sql.attrs == by_client.attrs
    assert (by_sql.attrs["runs_read"], by_sql.attrs["job_runs"]) == (len(JOBS) + 1, len(JOBS))


def test_load_runs_via_is_checked(store: Store) -> None:
    with pytest.raises(AnalysisError, match="via must be 'auto', 'sql' or 'client', got 'orm'"):
        load_runs(EXPERIMENT, tracking_uri=store.uri, via="orm")


# -- the pieces ----------------------------------------------------------------------------------------------
def random_history(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs of different lengths and groups (one group missing its key), NaN points, a step logged twice."""
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(9)],
                         "optimizer.name": ["sgd", "sgd", "sgd", "adam", "adam", "adam", None, None, "sgd"],
                         "optimizer.lr": [0.1, 0.1, 0.01, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
                         "outcome": ["finished"] * 8 + ["failed"]})
    parts = []
    for i, run_id in enumerate(runs["run_id"]):
        n = 700 + 37 * i
        values = 10 ** rng.normal(0, 1.5, n)
        values[rng.random(n) < 0.01] = np.nan
        part = pd.DataFrame({"run_id": run_id, "step": np.arange(n), "metric": "train/loss", "value": values})
        if i == 4:  # a step logged twice
            part = pd.concat([part, part.iloc[[10]].assign(value=3.0)])
        parts.append(part.sample(frac=1.0, random_state=i))  # unsorted
    return runs, pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("smooth", [None, "kaiser", "ema"])
@pytest.mark.parametrize("every", [1, 4])
def test_curve_summary_matches_the_groupby(smooth: str | None, every: int) -> None:
    runs, history = random_history(np.random.default_rng(3))
    by = ["optimizer.name", "optimizer.lr"]
    new = plots.curve_summary(history, runs, by=by, smooth=smooth, every=every)
    old = old_curve_summary(history, runs, by, smooth, every)
    pd.testing.assert_frame_equal(new[[*by, "step", "n"]].astype({"n": "int64"}),
                                  old[[*by, "step", "n"]].astype({"n": "int64"}), check_exact=True)
    for column in ("mean", "lo", "hi"):
        np.testing.assert_allclose(new[column], old[column], rtol=1e-9)


def test_streamed_curves_equal_curve_summary_in_any_run_order() -> None:
    runs, history = random_history(np.random.default_rng(5))
    smoother = get_smoother("kaiser")
    acc = curves.CurveStats(runs[runs["outcome"] == "finished"], ["optimizer.name"])
    for run_id in reversed(list(runs["run_id"])):
        steps, values = curves.run_series(history[history["run_id"] == run_id])
        acc.add(run_id, *curves.prepare_curve(steps, values, smoother, 4))
    assert acc.runs_added == 8  # the failed run is not one of the runs the accumulator counts
    streamed = plots.summarize_curves(acc)
    framed = plots.curve_summary(history, runs, by=["optimizer.name"], smooth="kaiser", every=4)
    pd.testing.assert_frame_equal(streamed[["optimizer.name", "step", "n"]], framed[["optimizer.name", "step", "n"]])
    np.testing.assert_allclose(streamed["mean"], framed["mean"], rtol=1e-12)


def test_first_step_at_equals_the_old_steps_to_target() -> None:
    runs, history = random_history(np.random.default_rng(11))
    reached = []
    for target, window in [(0.5, 1), (1.0, 50), (0.2, 50), (1e-9, 5)]:
        old = old_steps_to_target(history, target, window)
        new = steps_to_target(history, target, smooth_window=window).set_index("run_id")["step"]
        pd.testing.assert_series_equal(new, old.rename("step").rename_axis("run_id"), check_exact=True)
        for run_id in runs["run_id"]:
            steps, values = curves.run_series(history[history["run_id"] == run_id])
            assert first_step_at(steps, values, target, window) == pytest.approx(old[run_id], nan_ok=True, abs=0)
        reached.extend(old.notna())
    assert any(reached) and not all(reached)


def test_grid_every() -> None:
    assert [curves.grid_every(n) for n in (1, 200, 500, 501, 2000, 2001)] == [1, 1, 1, 2, 4, 5]
    with pytest.raises(ValueError, match="points must be >= 1"):
        curves.grid_every(10, points=0)


def test_history_csv_read_equals_pandas(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,metric,value\n0,train/loss,nan\n1,train/loss,inf\n2,test/acc,-inf\n"
                    "3,train/loss,1e-310\n4,train/loss,0.1\n5,test/acc,1.7976931348623157e+308\n"
                    "6,train/loss,0.30000000000000004\n")
    expected = pd.read_csv(path, dtype={"step": "int64", "metric": str, "value": "float64"})
    pd.testing.assert_frame_equal(_read_csv(path), expected, check_exact=True)
    only = expected[expected["metric"] == "train/loss"].reset_index(drop=True)
    pd.testing.assert_frame_equal(_read_csv(path, ["train/loss"]), only, check_exact=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("step,metric,value\nx,train/loss,1\n")
    with pytest.raises(ValueError):  # pandas' own error, as before
        _read_csv(bad)


def test_iter_histories_yields_what_load_history_holds(store: Store) -> None:
    runs = load_runs(EXPERIMENT, tracking_uri=store.uri)
    history = load_history(runs)
    seen = []
    for run_id, part in iter_histories(runs, max_workers=2):
        seen.append(run_id)
        expected = history[history["run_id"] == run_id].drop(columns="run_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(part, expected, check_exact=True)
    assert seen == list(runs["run_id"])


@pytest.mark.e2e
def test_load_runs_by_sql_equals_the_client_on_postgresql(postgres_cluster: object, tmp_path: Path) -> None:
    """The same on a PostgreSQL store: a parent, job runs with a NaN and an infinite metric, a deleted run, a run
    named only by its tag, a run in another experiment (none of the last three is read)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = postgres_cluster.create_database("analysis_stream")  # type: ignore[attr-defined]
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "a").as_uri())
    other = client.create_experiment("other", artifact_location=(tmp_path / "b").as_uri())
    parent = client.create_run(exp, start_time=1, run_name="sweep", tags={"sweep.dir": "multirun/y"})
    for i, value in enumerate([0.5, float("nan"), float("inf"), 0.25]):
        run = client.create_run(exp, start_time=10 + i // 2, run_name=f"job{i}" if i != 3 else None,
                                tags={"config_hash": f"h{i}", "mlflow.parentRunId": parent.info.run_id,
                                      **({"mlflow.runName": "tagged"} if i == 3 else {})})
        metrics = [Metric("final/train_loss", value, 0, 5), Metric("train/loss", 1, 0, 1)]
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param("optimizer.name", "adam" if i % 2 else "sgd"), Param("seed", str(i)),
                                 Param("optimizer.lr", "0.010")])
        client.set_terminated(run.info.run_id, "FINISHED" if i else "FAILED", end_time=20 + i)
    client.delete_run(client.create_run(exp, tags={"config_hash": "gone"}).info.run_id)
    client.create_run(other, tags={"config_hash": "elsewhere"})
    by_sql = load_runs(EXPERIMENT, tracking_uri=uri, via="sql")
    by_client = load_runs(EXPERIMENT, tracking_uri=uri, via="client")
    pd.testing.assert_frame_equal(by_sql, by_client, check_exact=True)
    assert by_sql.attrs == by_client.attrs and by_sql.attrs["runs_read"] == 5 and len(by_sql) == 4
    assert set(by_sql["sweep_dir"]) == {"multirun/y"} and "tagged" in set(by_sql["run_name"])
