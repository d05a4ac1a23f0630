"""Like with like: rows, comparisons, curves and bands never pool runs whose configs differ in more than the seed.

The store (written with MlflowClient, as app.run does) is the issue's situation: a sweep of SGD and Adam at the
default config (seeds 0-2, one Adam seed diverged), plus a user's trial runs in the same experiment: Adam for
20 iterations, Adam at lr 0.1 (seeds 0, 1), Adam with `model.hidden_sizes=[]` (model.name unchanged), and an
old SGD run that did not log `training.sampling`. Some default runs differ only in non-semantic keys
(tracking.uri, dataset.path, training.progress): they are the same configuration and must pool.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from descentlab.analysis.groups import NOT_LOGGED, canonical, group_runs, identity_columns, iter_groups
from descentlab.analysis.runs import AnalysisError, load_runs
from descentlab.analysis.stats import aggregate, compare_to_baseline
from descentlab.identity import NON_SEMANTIC_KEYS, SEED_KEY, is_semantic

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
        path = root / "tmp" / run_id / "metrics.csv"
        path.parent.mkdir(parents=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "metric", "value"])
            writer.writerows((s, k, repr(v)) for s, k, v in points)
        client.log_artifact(run_id, str(path))
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


def test_config_and_analysis_share_one_list_of_non_semantic_keys() -> None:
    from descentlab import config

    assert config.NON_SEMANTIC_KEYS is NON_SEMANTIC_KEYS


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
