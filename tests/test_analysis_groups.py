"""Like with like: rows, comparisons, curves and bands never pool runs whose configs differ in more than the seed.

The store (written with MlflowClient, as app.run does) is the issue's situation: a sweep of SGD and Adam at the
default config (seeds 0-2, one Adam seed diverged), plus a user's trial runs in the same experiment: Adam for
20 iterations, Adam at lr 0.1 (seeds 0, 1), Adam with `model.hidden_sizes=[]` (model.name unchanged), and an
old SGD run that did not log `training.sampling`. Some default runs differ only in non-semantic keys
(tracking.uri, dataset.path, training.progress): they are the same configuration and must pool.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from conftest import CliResult, log_history_csv, run_in_process
from descentlab.analysis.groups import NOT_LOGGED, canonical, group_runs, identity_columns, iter_groups
from descentlab.analysis.runs import AnalysisError, load_history, load_runs
from descentlab.analysis.smoothing import smooth_kaiser
from descentlab.analysis.stats import aggregate, compare_to_baseline, profile_block
from descentlab.config.identity import NON_SEMANTIC_KEYS, SEED_KEY, is_semantic

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "optimizer-comparison"
T0 = 1_767_261_600_000
HIDDEN = "[100, 100, 100, 100]"


@dataclass
class Job:
    name: str
    seed: int
    params: dict[str, str] = field(default_factory=dict)  # overrides of BASE (None: not logged)
    status: str = "FINISHED"
    tags: dict[str, str] = field(default_factory=dict)


BASE = {
    "optimizer.name": "sgd", "optimizer.lr": "0.01", "model.name": "mlp_5x100", "model.hidden_sizes": HIDDEN,
    "model.activation": "relu", "dataset.name": "mnist_5k", "dataset.path": "None", "dataset.download": "True",
    "training.iterations": "200", "training.batch_size": "128", "training.sampling": "replacement",
    "training.progress": "True", "training.blas_threads": "1", "tracking.uri": "sqlite:///a/mlflow.db",
    "tracking.store_every": "1", "force": "False", "task.name": "classify",
}
ADAM = {"optimizer.name": "adam", "optimizer.lr": "0.001", "optimizer.beta1": "0.9", "optimizer.beta2": "0.999",
        "optimizer.eps": "1e-08"}
JOBS = [
    Job("sgd-s0", 0),
    Job("sgd-s1", 1, {"training.progress": "False"}),  # non-semantic: same configuration
    Job("sgd-s2", 2, {"tracking.uri": "sqlite:///b/mlflow.db", "dataset.path": "/data"}),
    Job("adam-s0", 0, ADAM),
    Job("adam-s1", 1, {**ADAM, "tracking.store_every": "10"}),
    Job("adam-s2", 2, ADAM),
    Job("adam-s3-diverged", 3, ADAM, status="FAILED",
        tags={"diverged_at_step": "57", "error": "DivergedError: loss is nan at step 57"}),
    Job("adam-20it-s0", 0, {**ADAM, "training.iterations": "20"}),
    Job("adam-lr0.1-s0", 0, {**ADAM, "optimizer.lr": "0.1"}),
    Job("adam-lr0.1-s1", 1, {**ADAM, "optimizer.lr": "0.1"}),
    Job("adam-flat-s0", 0, {**ADAM, "model.hidden_sizes": "[]"}),
    Job("sgd-old-s0", 0, {"training.sampling": None}),
]


def params(job: Job) -> dict[str, str]:
    merged = {**BASE, **job.params, "seed": str(job.seed)}
    return {k: v for k, v in merged.items() if v is not None}


def identity(job: Job) -> tuple:
    """The test's own reading of the issue: every logged param but the seed and the non-semantic keys."""
    return tuple(sorted((k, v) for k, v in params(job).items()
                        if k != "seed" and not any(k == s or k.startswith(s + ".") for s in NON_SEMANTIC_KEYS)))


def loss_curve(job: Job) -> np.ndarray:
    """train/loss per step: level and speed depend on the configuration, a small offset on the seed."""
    p = params(job)
    steps = np.arange(int(p["training.iterations"]) if job.status == "FINISHED" else 57)
    if p["optimizer.name"] == "sgd":
        base = 2.3 * np.exp(-steps / 150) + 0.3
    elif p["optimizer.lr"] == "0.1":
        base = 25.0 * np.exp(-steps / 5) + 1.6
    elif p["model.hidden_sizes"] == "[]":
        base = 2.3 * np.exp(-steps / 60) + 0.5
    else:
        base = 2.3 * np.exp(-steps / 20) + 0.01
    offset = 0.002 * job.seed if p["optimizer.name"] == "adam" and p["optimizer.lr"] == "0.001" else 0.01 * job.seed
    return base + offset + (0.05 if job.name.startswith("sgd-old") else 0.0)


def final_loss(job: Job) -> float:
    return float(loss_curve(job)[-1])


@dataclass
class Store:
    root: Path
    uri: str


def build_store(root: Path) -> Store:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir()
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, start_time=T0, run_name="sweep", tags={"sweep_dir": "multirun/x"})  # not a row
    for i, job in enumerate(JOBS):
        start = T0 + 60_000 * (i + 1)
        tags = {"config_hash": f"hash{i:02d}", "mlflow.parentRunId": parent.info.run_id, **job.tags}
        run = client.create_run(exp, start_time=start, run_name=job.name, tags=tags)
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in params(job).items()])
        loss = loss_curve(job)
        points = [(s, "train/loss", float(v)) for s, v in enumerate(loss)]
        if job.status == "FINISHED":
            end, value = len(loss), final_loss(job)
            points += [(end, "final/train_loss", value), (end, "final/test_acc", 0.9 - value / 10)]
        client.log_batch(run_id, metrics=[Metric(k, v, start, s) for s, k, v in points[-50:]])
        log_history_csv(client, run_id, points, root / "tmp")
        client.set_terminated(run_id, job.status, end_time=start + 5_000)
    client.set_terminated(parent.info.run_id, "FINISHED")
    return Store(root, uri)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        yield build_store(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="module")
def runs(store: Store) -> pd.DataFrame:
    return load_runs(EXPERIMENT, store.uri)


def jobs_by_identity() -> dict[tuple, list[Job]]:
    out: dict[tuple, list[Job]] = {}
    for job in JOBS:
        out.setdefault(identity(job), []).append(job)
    return out


def matches(frame: pd.DataFrame, row: pd.Series, columns: list[str]) -> pd.Series:
    """Rows of `frame` whose `columns` equal those of `row` (missing equals missing)."""
    keep = pd.Series(True, index=frame.index)
    for c in columns:
        keep &= canonical(frame[c]) == canonical(pd.Series([row[c]]))[0]
    return keep


def run_names(runs: pd.DataFrame, row: pd.Series, columns: list[str]) -> set[str]:
    return set(runs.loc[matches(runs, row, columns), "run_name"])


# -- the identity of a run -----------------------------------------------------------------------------
def test_identity_is_the_config_minus_seed_and_non_semantic_keys(runs: pd.DataFrame) -> None:
    ident = identity_columns(runs)
    assert SEED_KEY not in ident
    assert not [c for c in ident if not is_semantic(c)]
    for key in ("tracking.uri", "tracking.store_every", "dataset.path", "training.progress", "force"):
        assert key in runs.columns and key not in ident
    assert {"optimizer.lr", "model.hidden_sizes", "training.iterations", "training.sampling"} <= set(ident)
    runs = runs.copy()
    runs["steps_to_loss_0.1"] = 1.0  # a derived column of a load_runs frame is not a param (attrs["params"])
    assert "steps_to_loss_0.1" not in identity_columns(runs)


def test_analysis_groups_by_exactly_the_keys_the_config_hash_covers_but_the_seed() -> None:
    """Runs the store holds as one configuration (one config hash, seeds apart) are one row of a report: the
    analysis' identity columns are the hashed keys of a real config, the seed aside, whatever keys are added."""
    from hydra import compose, initialize_config_dir

    from descentlab.analysis.runs import BASE_COLUMNS
    from descentlab.config import register_schemas, run_params, semantic_config

    register_schemas()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["optimizer=adam"])
    params = run_params(cfg)
    assert set(NON_SEMANTIC_KEYS) & {k.split(".")[0] for k in params}  # the config has keys the hash leaves out
    frame = pd.DataFrame([{f"param.{k}" if k in BASE_COLUMNS else k: str(v) for k, v in params.items()}] * 2)
    hashed = {k for k in semantic_config(cfg) if k != SEED_KEY}
    assert {c.removeprefix("param.") for c in identity_columns(frame)} == hashed


def test_default_grouping_is_one_configuration_per_group(runs: pd.DataFrame) -> None:
    grouping = group_runs(runs)
    # the keys that vary, optimizer first; the betas only Adam has are grouped by but not shown
    assert grouping.by[0] == "optimizer.name"
    assert set(grouping.shown) == {"optimizer.name", "optimizer.lr", "model.hidden_sizes", "training.iterations",
                                   "training.sampling"}
    assert {"optimizer.beta1", "optimizer.beta2", "optimizer.eps"} <= set(grouping.by) - set(grouping.shown)
    assert grouping.per_optimizer == {"adam": {"optimizer.beta1": 0.9, "optimizer.beta2": 0.999,
                                               "optimizer.eps": 1e-08}}
    assert grouping.pooled == {} and grouping.pooled_text() is None
    assert grouping.constant["model.name"] == "mlp_5x100" and grouping.constant["training.batch_size"] == 128
    groups = [set(rows["run_name"]) for _, rows in iter_groups(runs, grouping.by)]
    expected = [{j.name for j in jobs} for jobs in jobs_by_identity().values()]
    assert sorted(map(sorted, groups)) == sorted(map(sorted, expected))


def test_coarser_grouping_says_what_it_pooled(runs: pd.DataFrame) -> None:
    grouping = group_runs(runs, ["optimizer.name"])
    assert grouping.by == grouping.shown == ("optimizer.name",)
    assert list(grouping.pooled) == ["model.hidden_sizes", "optimizer.lr", "training.iterations", "training.sampling"]
    assert grouping.pooled["optimizer.lr"] == (0.001, 0.1)  # within the adam group; sgd ran at 0.01 only
    assert grouping.pooled_text() == ("pooled over model.hidden_sizes ([100, 100, 100, 100], []), optimizer.lr "
                                      "(0.001, 0.1), training.iterations (20, 200), training.sampling "
                                      f"(replacement, {NOT_LOGGED})")
    # a figure with the lr on its x axis does not pool over it
    assert "optimizer.lr" not in grouping.pooled_text(exclude=["optimizer.lr"])
    # a --by key with one value is a column that splits and pools nothing
    same = group_runs(runs, ["optimizer.name", "model.name"])
    assert same.shown == ("optimizer.name", "model.name") and same.pooled == grouping.pooled
    with pytest.raises(AnalysisError, match=r"no column optimizer\.nme \(did you mean optimizer\.name"):
        group_runs(runs, ["optimizer.nme"])


def test_values_compare_normalised_and_missing_is_its_own_value() -> None:
    frame = pd.DataFrame({"optimizer.lr": [0.01, "0.010", "1e-2", None, math.nan],
                          "model.hidden_sizes": ["[1,2]", "[1, 2]", "[1, 2]", "[1, 2]", "[1, 2]"]})
    groups = [(key, list(rows.index)) for key, rows in iter_groups(frame, ["optimizer.lr", "model.hidden_sizes"])]
    assert [idx for _, idx in groups] == [[0, 1, 2], [3, 4]]  # one lr, then "not logged"


# -- tables and comparisons ------------------------------------------------------------------------------
def test_each_row_of_aggregate_is_one_configuration(runs: pd.DataFrame) -> None:
    agg = aggregate(runs, metrics=["final/train_loss"])
    by = list(agg.attrs["grouping"].by)
    assert len(agg) == len(jobs_by_identity()) == 6
    for _, row in agg.iterrows():
        names = run_names(runs, row, by)
        assert len({identity(j) for j in JOBS if j.name in names}) == 1, names
        assert row["runs"] == len(names)


def test_the_default_adam_row_averages_only_its_own_seeds(runs: pd.DataFrame) -> None:
    agg = aggregate(runs, metrics=["final/train_loss"])
    adam = agg[(agg["optimizer.name"] == "adam") & (agg["optimizer.lr"] == 0.001)
               & (agg["training.iterations"] == 200) & (agg["model.hidden_sizes"] == HIDDEN)]
    assert len(adam) == 1
    adam = adam.iloc[0]
    own = [final_loss(j) for j in JOBS if j.name in ("adam-s0", "adam-s1", "adam-s2")]
    low, high = sps.t.interval(0.95, 2, loc=np.mean(own), scale=np.std(own, ddof=1) / np.sqrt(3))
    assert adam["n"] == 3 and adam["mean"] == pytest.approx(np.mean(own), rel=1e-12)
    assert (adam["ci_low"], adam["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    # the diverged seed is still counted, in its own configuration's row, and left out of the mean
    assert (adam["runs"], adam["finished"], adam["diverged"]) == (4, 3, 1)


def test_baseline_comparison_is_within_one_context(runs: pd.DataFrame) -> None:
    cmp = compare_to_baseline(runs, "sgd", "final/train_loss")
    assert {"optimizer.name", "optimizer.lr", "baseline", "baseline optimizer.lr", "training.iterations",
            "model.hidden_sizes", "training.sampling"} <= set(cmp.columns)
    default = cmp[(cmp["optimizer.lr"] == 0.001) & (cmp["training.iterations"] == 200)
                  & (cmp["model.hidden_sizes"] == HIDDEN) & (cmp["training.sampling"] == "replacement")].iloc[0]
    adam = np.array([final_loss(j) for j in JOBS if j.name in ("adam-s0", "adam-s1", "adam-s2")])
    sgd = np.array([final_loss(j) for j in JOBS if j.name in ("sgd-s0", "sgd-s1", "sgd-s2")])  # not sgd-old
    assert (default["n"], default["n_baseline"], default["baseline optimizer.lr"]) == (3, 3, 0.01)
    assert default["diff"] == pytest.approx(adam.mean() - sgd.mean(), rel=1e-12)
    assert default["p"] == pytest.approx(sps.ttest_ind(adam, sgd, equal_var=False).pvalue, rel=1e-9)
    lr = cmp[(cmp["optimizer.lr"] == 0.1)].iloc[0]  # another adam setting, same context: its own row
    assert (lr["n"], lr["n_baseline"]) == (2, 3)
    trial = cmp[cmp["training.iterations"] == 20].iloc[0]  # no sgd run for 20 iterations: nothing to compare
    assert (trial["n"], trial["n_baseline"]) == (1, 0) and math.isnan(trial["diff"])
    assert cmp.attrs["grouping"].pooled == {}
    pooled = compare_to_baseline(runs, "sgd", "final/train_loss", by=())  # asked to pool: it says what
    assert pooled.attrs["grouping"].pooled_text().startswith("pooled over model.hidden_sizes")


# -- the analyze.py report ---------------------------------------------------------------------------------
def analyze(store: Store, out: Path, *args: str) -> CliResult:
    """`scripts/analyze.py` on the store, in this process (its `main`, as its `__main__` runs it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({"MLFLOW_TRACKING_URI": store.uri, "MLFLOW_DISABLE_TELEMETRY": "true", "COLUMNS": "160"})
    return run_in_process(REPO / "scripts" / "analyze.py", [EXPERIMENT, "--out", str(out), "--no-log", *args], env,
                          store.root)


@pytest.fixture(scope="module")
def report(store: Store) -> tuple[Path, str]:
    out = store.root / "report"
    result = analyze(store, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_report_rows_are_configurations(report: tuple[Path, str], runs: pd.DataFrame) -> None:
    out, stdout = report
    summary = pd.read_csv(out / "summary.csv")
    loss = summary[summary["metric"] == "final/train_loss"]
    key_columns = list(summary.columns[: list(summary.columns).index("metric")])
    assert {"optimizer.name", "optimizer.lr", "training.iterations", "model.hidden_sizes"} <= set(key_columns)
    assert len(loss) == 6
    for _, row in loss.iterrows():
        names = run_names(runs, row, key_columns)
        assert len({identity(j) for j in JOBS if j.name in names}) == 1, names
        finished = [final_loss(j) for j in JOBS if j.name in names and j.status == "FINISHED"]
        assert row["runs"] == len(names) and row["n"] == len(finished)
        assert row["mean"] == pytest.approx(np.mean(finished), rel=1e-9)
    adam = loss[(loss["optimizer.name"] == "adam") & (loss["optimizer.lr"] == 0.001)
                & (loss["training.iterations"] == 200) & (loss["model.hidden_sizes"] == HIDDEN)].iloc[0]
    assert (adam["n"], adam["runs"], adam["diverged"]) == (3, 4, 1)
    # the printed table: the varying keys as columns, single runs say so, nothing pooled
    assert "optimizer.lr" in stdout and "training.iterations" in stdout
    assert "(n=1, no interval)" in stdout and "pooled over" not in stdout
    assert f"{len(JOBS)} runs in 6 configurations" in stdout
    markdown = (out / "summary.md").read_text().splitlines()
    header = next(line for line in markdown if line.startswith("| optimizer.name"))
    assert [c.strip() for c in header.strip("|").split("|")][:5] == [
        "optimizer.name", "optimizer.lr", "model.hidden_sizes", "training.iterations", "training.sampling"]
    assert "- adam: optimizer.beta1=0.9, optimizer.beta2=0.999, optimizer.eps=1e-08" in markdown
    assert any(line.startswith("- same in every row: ") and "model.name=mlp_5x100" in line for line in markdown)


def test_report_curves_band_only_their_own_seeds(report: tuple[Path, str], runs: pd.DataFrame) -> None:
    out, _ = report
    curves = pd.read_csv(out / "loss_curves.csv")
    assert (curves["lo"].dropna() > 0).all()  # the issue: a band over pooled configs went below zero
    key_columns = list(curves.columns[: list(curves.columns).index("step")])
    history = load_history(runs, metrics=["train/loss"])
    finished = runs[runs["outcome"] == "finished"]
    for _, rows in iter_groups(curves, key_columns):
        row = rows.iloc[0]
        members = finished.loc[matches(finished, row, key_columns), "run_id"]
        names = set(runs.loc[runs["run_id"].isin(members), "run_name"])
        assert len({identity(j) for j in JOBS if j.name in names}) == 1
        values = np.array([smooth_kaiser(history.loc[history["run_id"] == r, "value"].to_numpy()) for r in members])
        assert list(rows["n"].unique()) == [len(members)]
        np.testing.assert_allclose(rows["mean"], values.mean(axis=0), rtol=1e-9)
        if len(members) > 1:
            half = sps.t.ppf(0.975, len(members) - 1) * values.std(axis=0, ddof=1) / np.sqrt(len(members))
            np.testing.assert_allclose(rows["hi"], values.mean(axis=0) + half, rtol=1e-9)
        else:
            assert rows["lo"].isna().all()


def test_by_optimizer_pools_and_says_so(store: Store) -> None:
    out = store.root / "report-by"
    result = analyze(store, out, "--by", "optimizer")
    assert result.returncode == 0, result.stderr[-3000:]
    pooled = ("pooled over model.hidden_sizes ([100, 100, 100, 100], []), optimizer.lr (0.001, 0.1), "
              f"training.iterations (20, 200), training.sampling (replacement, {NOT_LOGGED})")
    assert pooled in " ".join(result.stdout.split())  # the terminal may wrap the note
    assert pooled in (out / "summary.md").read_text()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:2]) == ["optimizer.name", "metric"]
    adam = summary[(summary["optimizer.name"] == "adam") & (summary["metric"] == "final/train_loss")]
    assert adam["runs"].item() == 8


def test_by_with_an_unknown_key_is_one_line(store: Store) -> None:
    result = analyze(store, store.root / "report-bad", "--by", "optimizer.nme")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "did you mean optimizer.name" in result.stderr


def test_performance_profile_compares_solvers_on_the_problems_they_all_ran() -> None:
    frame = pd.DataFrame({"model.name": ["P1", "P1", "P2", "P2", "P3", "P3", "P1"],
                          "optimizer.name": ["A", "B", "A", "B", "A", "C", "A"],
                          "optimizer.lr": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01]})
    block, note = profile_block(frame, ["model.name"], ["optimizer.name", "optimizer.lr"])
    # A at lr 0.1 and B ran on P1 and P2; C (P3 only) and A at lr 0.01 (P1 only) would fail problems they never tried
    assert sorted(block.index) == [0, 1, 2, 3]
    assert note == "left out, not run on every problem: 1 problem(s), 2 solver(s)"
    lonely, note = profile_block(frame[frame["optimizer.name"] != "B"], ["model.name"], ["optimizer.name"])
    assert lonely.empty and note is None  # one solver on several problems: nothing to compare


def test_report_has_no_profile_without_two_solvers_on_two_problems(report: tuple[Path, str]) -> None:
    out, _ = report
    # sgd ran on the default config and the old run's; adam (lr 0.001) on the default and two trials: one shared
    assert not (out / "performance_profile.png").exists()
    assert {"loss_curves.png", "final_train_loss.png", "lr_sensitivity.png"} <= {p.name for p in out.iterdir()}
