"""`tracking.weights`: every run (all), none, or only a run whose final test accuracy is the best so far among its
FINISHED siblings (best). Read back from a real SQLite store: each run's artifacts and its `weights` /
`weights.reason` tags; the key is validated (one line, exit 2, no run) and is not part of the config hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from descentlab.config import config_hash
from descentlab.config.identity import group_hash, run_params
from descentlab.tracking.best import GROUP_TAG, REASON_TAG, WEIGHTS_TAG, better_sibling, sibling_filter

SHORT = ("dataset=digits", "model=mlp_2x50", "training.iterations=60", "training.eval_every=20",
         "training.progress=false", "training.eval_test_subset=null")


def artifacts(store, run) -> set[str]:
    return {f.path for f in store.client().list_artifacts(run.info.run_id)}


def by_end(runs: list) -> list:
    return sorted(runs, key=lambda r: r.info.end_time)


@pytest.mark.parametrize(("mode", "stored", "reason"), [
    ("all", True, "tracking.weights=all"),
    ("none", False, "tracking.weights=none"),
])
def test_all_and_none_store_weights_or_not_and_say_so(store, mode: str, stored: bool, reason: str) -> None:
    result = store.train_in_process(*SHORT, f"tracking.weights={mode}")
    assert result.returncode == 0, result.stderr
    [run] = store.runs()
    assert run.info.status == "FINISHED"
    files = artifacts(store, run)
    assert {"config.yaml", "metrics.csv", "loss_curve.png"} <= files  # everything else as before
    assert ("weights.npz" in files) is stored
    assert run.data.tags[WEIGHTS_TAG] == ("stored" if stored else "skipped")
    assert run.data.tags[REASON_TAG] == reason
    saved = (Path(store.client().download_artifacts(run.info.run_id, "config.yaml", str(store.root)))).read_text()
    assert f"weights: {mode}" in saved  # the run's config.yaml says how it was stored


def test_best_in_a_sweep_keeps_the_weights_of_each_new_best_only(store) -> None:
    # Sequential jobs (basic launcher): lr 0.1 learns, lr 1e-5 barely moves (worse than its FINISHED sibling),
    # lr 0.3 learns more.
    result = store.train_in_process("-m", *SHORT, "optimizer=sgd", "optimizer.lr=0.1,0.00001,0.3",
                                    "tracking.weights=best")
    assert result.returncode == 0, result.stderr
    runs = store.runs()
    children = by_end([r for r in runs if "mlflow.parentRunId" in r.data.tags])
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    accs = [r.data.metrics["final/test_acc"] for r in children]
    best_so_far = float("-inf")
    for run, acc in zip(children, accs, strict=True):
        stored = acc >= best_so_far  # ties keep their weights
        assert ("weights.npz" in artifacts(store, run)) is stored, (accs, run.data.tags)
        assert run.data.tags[WEIGHTS_TAG] == ("stored" if stored else "skipped")
        if not stored:
            assert run.data.tags[REASON_TAG].startswith("not the best so far: run ")
        best_so_far = max(best_so_far, acc)
    assert accs[1] < accs[0]  # the test's premise: the second job is worse than the first, FINISHED one
    assert "weights.npz" not in artifacts(store, children[1])
    best = max(children, key=lambda r: r.data.metrics["final/test_acc"])
    assert "weights.npz" in artifacts(store, best)  # the sweep's best always has its weights


def test_best_outside_a_sweep_compares_the_same_config_with_other_seeds(store) -> None:
    # A better run of another config (lr) does not count; the same config with another seed does.
    common = (*SHORT, "optimizer=sgd", "tracking.weights=best")
    assert store.train_in_process(*common, "optimizer.lr=0.5", "seed=0").returncode == 0
    assert store.train_in_process(*common, "optimizer.lr=0.00001", "seed=0").returncode == 0
    assert store.train_in_process(*common, "optimizer.lr=0.00001", "seed=1").returncode == 0
    strong, weak0, weak1 = by_end(store.runs())
    assert strong.data.tags[GROUP_TAG] != weak0.data.tags[GROUP_TAG] == weak1.data.tags[GROUP_TAG]
    assert strong.data.metrics["final/test_acc"] > weak0.data.metrics["final/test_acc"]
    assert weak0.data.tags[WEIGHTS_TAG] == "stored"  # first of its group, though worse than the other config
    assert "weights.npz" in artifacts(store, weak0)
    stored1 = weak1.data.metrics["final/test_acc"] >= weak0.data.metrics["final/test_acc"]
    assert weak1.data.tags[WEIGHTS_TAG] == ("stored" if stored1 else "skipped")
    assert ("weights.npz" in artifacts(store, weak1)) is stored1


def check_better_sibling(client, exp: str) -> None:
    """One query, strictly better only, FINISHED only, the asking run's own group only, the best of the better."""

    def run(acc: float, status: str, group: str = "g") -> str:
        r = client.create_run(exp, tags={GROUP_TAG: group})
        client.log_metric(r.info.run_id, "final/test_acc", acc)
        client.set_terminated(r.info.run_id, status)
        return r.info.run_id

    run(0.99, "FAILED")
    run(0.98, "FINISHED", group="other")
    middle = run(0.80, "FINISHED")
    top = run(0.90, "FINISHED")
    running = client.create_run(exp, tags={GROUP_TAG: "g"})
    client.log_metric(running.info.run_id, "final/test_acc", 0.97)  # not FINISHED yet: not a sibling
    ask = {"parent_run_id": None, "group": "g"}
    assert better_sibling(client, exp, "final/test_acc", 0.95, **ask) is None
    assert better_sibling(client, exp, "final/test_acc", 0.90, **ask) is None  # a tie keeps
    better = better_sibling(client, exp, "final/test_acc", 0.85, **ask)
    assert better is not None and (better.run_id, better.value) == (top, 0.90)  # the best of those better
    lower = better_sibling(client, exp, "final/test_acc", 0.85, higher_is_better=False, **ask)
    assert lower is not None and lower.run_id == middle
    child = client.create_run(exp, tags={"mlflow.parentRunId": middle})  # a sweep: its parent decides, not the group
    client.log_metric(child.info.run_id, "final/test_acc", 0.5)
    client.set_terminated(child.info.run_id, "FINISHED")
    by_parent = better_sibling(client, exp, "final/test_acc", 0.4, parent_run_id=middle, group="g")
    assert by_parent is not None and by_parent.run_id == child.info.run_id
    assert better_sibling(client, exp, "final/test_acc", 0.6, parent_run_id=middle, group="g") is None


def test_better_sibling_is_one_query_that_ignores_running_failed_and_other_groups(tmp_path: Path) -> None:
    from descentlab.data.idx_specs import cache_root
    from descentlab.tracking.settings import SqliteSettings
    from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store, resolve_tracking_uri

    uri = resolve_tracking_uri(None, tmp_path / "store")
    client = open_store(uri, SqliteSettings(template_dir=str(cache_root())))  # the cached schema: no migrations
    check_better_sibling(client, get_or_create_experiment(client, "e", artifact_root_for(uri)))
    with pytest.raises(ValueError, match="no siblings"):
        sibling_filter(None, None)
    with pytest.raises(ValueError, match="quotes"):
        sibling_filter("x' or '1'='1", None)


@pytest.mark.e2e  # a real PostgreSQL cluster (the session's): run by `pytest --all-tiers`
def test_better_sibling_on_postgresql(postgres_cluster, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(postgres_cluster.create_database("weights_best"))  # MLflow's migrations run here
    check_better_sibling(client, client.create_experiment("e", artifact_location=str(tmp_path / "artifacts")))


def test_a_bad_value_is_one_line_exit_2_and_no_run(store) -> None:
    result = store.train_in_process(*SHORT, "tracking.weights=some")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: tracking.weights must be one of all, best, none, got 'some'"], result.stderr
    assert "Traceback" not in result.stderr
    assert store.runs() == []


def test_the_key_is_not_part_of_the_config_hash_and_the_group_leaves_out_the_seed() -> None:
    from hydra import compose, initialize_config_dir

    from descentlab.config import register_schemas

    register_schemas()
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        base, *others = (compose("config", overrides=list(o)) for o in (
            (), ("tracking.weights=best",), ("tracking.weights=none",), ("seed=7",), ("optimizer.lr=0.02",)))
    best, none, seed7, lr = others
    assert config_hash(best) == config_hash(none) == config_hash(base)
    groups = [group_hash(run_params(c)) for c in (base, best, none, seed7, lr)]
    assert groups[0] == groups[1] == groups[2] == groups[3] != groups[4]
    assert config_hash(seed7) != config_hash(base)
