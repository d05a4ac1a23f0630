"""The real `train.py`: sweeps tracked in MLflow, skipping, divergence, 2-D paths, parallel jobs (processes of their
own, the e2e tier); bad input and a sweep's rejected jobs (in this process, through the same `guarded_main`)."""

from __future__ import annotations

import numpy as np
import pytest

from descentlab.objectives import descend, get_objective
from descentlab.optim import Adam

HEADLINE = ("-m", "optimizer=sgd,momentum,adagrad,adam", "training.iterations=50", "training.eval_every=20")
ARTIFACTS = {"config.yaml", "hydra", "loss_curve.png", "metrics.csv", "weights.npz"}


def children(runs: list) -> list:
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def parents(runs: list) -> list:
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]


@pytest.mark.e2e
def test_headline_sweep_then_rerun_skips_then_force_reruns(store) -> None:
    result = store.train(*HEADLINE)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = store.runs()
    assert len(parents(runs)) == 1 and len(children(runs)) == 4
    parent = parents(runs)[0]
    parent_id = parent.info.run_id
    assert parent.info.status == "FINISHED"
    # The parent says what was swept: its name, the whole command line, the swept keys as params, one sweep.dir.
    assert parent.info.run_name == "sweep optimizer=sgd,momentum,adagrad,adam"
    assert parent.data.tags["hydra.overrides"] == " ".join(HEADLINE[1:])
    assert parent.data.params == {"optimizer": "sgd,momentum,adagrad,adam", "training.iterations": "50",
                                  "training.eval_every": "20"}
    assert parent.data.tags["sweep.n_jobs"] == "4" and parent.data.tags["sweep.n_finished"] == "4"
    assert parent.data.tags["sweep.dir"] == str(store.root / "multirun" / "1") and "sweep_dir" not in parent.data.tags
    client = store.client()
    names = set()
    for run in children(runs):
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        names.add(run.info.run_name)
        params = run.data.params
        assert params["model.hidden_sizes"] == "[100, 100, 100, 100]"
        assert params["dataset.name"] == "mnist_5k" and params["seed"] == "0"
        assert float(params["optimizer.lr"]) == {"sgd": 0.01, "momentum": 0.01, "adagrad": 0.01, "adam": 0.001}[
            params["optimizer.name"]]
        for tag in ("config_hash", "hydra.overrides", "hydra.job_num", "hydra.sweep_dir", "git.commit", "git.dirty",
                    "version.python", "version.numpy", "version.mlflow", "version.hydra"):
            assert run.data.tags.get(tag), tag
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(50))
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test/acc")] == [0, 20, 40, 50]
        for key in ("train/acc", "test/loss", "final/train_loss", "final/test_acc", "best/test_acc", "time/elapsed_s"):
            assert key in run.data.metrics, key
        assert run.data.metrics["final/train_loss"] == pytest.approx(np.mean([m.value for m in history]))
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS
        weights = np.load(client.download_artifacts(run.info.run_id, "weights.npz", str(store.root)),
                          allow_pickle=False)
        assert weights["W1"].shape == (784, 100) and weights["W5"].shape == (100, 10)
    assert names == {f"{o}-mlp_5x100-mnist_5k-s0" for o in ("sgd", "momentum", "adagrad", "adam")}

    again = store.train(*HEADLINE)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped ") == 4
    assert len(store.runs()) == 5  # no new child, no empty parent

    forced = store.train(*HEADLINE, "force=true")
    assert forced.returncode == 0, forced.stderr[-3000:]
    runs = store.runs()
    assert len(children(runs)) == 8 and len(parents(runs)) == 2


@pytest.mark.e2e
def test_fig6_8_paths_have_31_points_and_match_the_library(store) -> None:
    result = store.train("-m", "experiment=fig6_8", "optimizer=sgd,momentum,adagrad,adam")
    assert result.returncode == 0, result.stderr[-3000:]
    client = store.client()
    runs = children(store.runs("fig6_8"))
    assert len(runs) == 4
    for run in runs:
        assert run.info.status == "FINISHED"
        xs = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "path/x"))
        ys = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "path/y"))
        assert [s for s, _ in xs] == list(range(31))
        assert xs[0][1] == -7.0 and ys[0][1] == 2.0
        if run.data.params["optimizer.name"] == "adam":
            assert float(run.data.params["optimizer.lr"]) == 0.3
            expected = descend(get_objective("book"), Adam(lr=0.3), np.array([-7.0, 2.0]), 30)
            np.testing.assert_array_equal([v for _, v in xs], expected[:, 0])
            np.testing.assert_array_equal([v for _, v in ys], expected[:, 1])
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"path.png", "metrics.csv"}


@pytest.mark.e2e
def test_divergent_job_fails_with_its_step_and_the_sweep_goes_on(store) -> None:
    result = store.train("-m", "optimizer=sgd", "optimizer.lr=1e4,0.01", "training.iterations=30")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {r.data.params["optimizer.lr"]: r for r in children(store.runs())}
    bad, good = runs["10000.0"], runs["0.01"]
    assert bad.info.status == "FAILED"
    step = int(bad.data.tags["diverged_at_step"])
    assert 0 < step < 30 and "DivergedError" in bad.data.tags["error"]
    assert good.info.status == "FINISHED"
    assert parents(store.runs())[0].info.status == "FAILED"  # a sweep with a failed job is not FINISHED
    # The failed config is re-run next time; the finished one is skipped.
    again = store.train("-m", "optimizer=sgd", "optimizer.lr=1e4,0.01", "training.iterations=30")
    assert again.stderr.count("skipped ") == 1
    assert len([r for r in children(store.runs()) if r.data.params["optimizer.lr"] == "10000.0"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("optimizer=nope",), "Could not find 'optimizer/nope' Available options in 'optimizer': adagrad adam"),
        (("optimizer.lr=-1",), "optimizer: SGD: lr must be a finite number > 0, got -1.0"),
        (("training.batch_size=0",), "training.batch_size must be an integer >= 1, got 0"),
        (("model.hidden_sizes=[0]",), "model.hidden_sizes[0] must be an integer >= 1, got 0"),
        (("training.iteratons=5",), "Could not override 'training.iteratons': Key 'iteratons' not in 'TrainingConf'"),
        (("training.batch_size=4001",), "training.batch_size must be at most the 4000 training examples"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(store, args: tuple[str, ...], message: str) -> None:
    result = store.train_in_process(*args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert [r for r in store.runs() if r.info.status == "RUNNING"] == []
    assert children(store.runs()) == []


@pytest.mark.parametrize("launcher", ["basic", pytest.param("parallel", marks=pytest.mark.e2e)])
def test_rejected_jobs_of_a_sweep_are_recorded_counted_and_named(store, launcher: str) -> None:
    sweep = ("-m", f"hydra/launcher={launcher}", "optimizer=sgd,adam", "optimizer.lr=0.1,0", "training.iterations=30",
             "training.progress=false")
    # basic: the jobs run in the launching process, so in this one; parallel: worker processes, a real command
    result = store.train_in_process(*sweep) if launcher == "basic" else store.train(*sweep)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-2].startswith("sweep of 4 jobs: 2 finished, 2 failed (2 rejected), 0 killed (parent run ")
    assert lines[-2].endswith(": FAILED)")
    assert lines[-1] == ("sweep: 2 job(s) rejected: "
                         "[optimizer=sgd optimizer.lr=0] optimizer: SGD: lr must be a finite number > 0, got 0.0; "
                         "[optimizer=adam optimizer.lr=0] optimizer: Adam: lr must be a finite number > 0, got 0.0")
    runs = store.runs()
    (parent,) = parents(runs)
    jobs = {(r.data.params["optimizer.name"], r.data.params["optimizer.lr"]): r for r in children(runs)}
    assert set(jobs) == {("sgd", "0.1"), ("sgd", "0.0"), ("adam", "0.1"), ("adam", "0.0")}
    for (name, lr), run in jobs.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.data.tags["config_hash"]
        if lr == "0.1":
            assert run.info.status == "FINISHED" and "rejected" not in run.data.tags
            continue
        assert run.info.status == "FAILED" and run.data.tags["rejected"] == "true"
        assert run.data.tags["error"] == f"optimizer: {'SGD' if name == 'sgd' else 'Adam'}: lr must be a finite " \
                                         "number > 0, got 0.0"
        assert run.data.params["training.iterations"] == "30" and run.data.params["seed"] == "0"
    assert parent.info.status == "FAILED" and parent.info.run_name == "sweep optimizer=sgd,adam optimizer.lr=0.1,0"
    tags = parent.data.tags
    assert (tags["sweep.n_finished"], tags["sweep.n_failed"], tags["sweep.n_rejected"]) == ("2", "2", "2")
    assert tags["hydra.overrides"] == " ".join(sweep[2:])
    assert parent.data.params["optimizer.lr"] == "0.1,0" and parent.data.params["optimizer"] == "sgd,adam"


@pytest.mark.e2e
def test_parallel_preset_runs_four_jobs_into_one_store(store) -> None:
    result = store.train("-m", "hydra/launcher=parallel", "optimizer=sgd,momentum,adagrad,adam",
                         "training.iterations=40", "training.eval_every=20")
    assert result.returncode == 0, result.stderr[-3000:]
    client = store.client()
    runs = store.runs()
    assert len(parents(runs)) == 1 and len(children(runs)) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in children(runs):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == list(range(40))
        assert len(client.get_metric_history(run.info.run_id, "test/acc")) == 3


@pytest.mark.e2e
def test_tracking_none_trains_and_records_nothing(store) -> None:
    result = store.train("-m", "tracking=none", "optimizer=sgd,adam", "training.iterations=30")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("FINISHED (not tracked)") == 2
    assert "step 30/30" in result.stderr
    assert not (store.root / "mlruns").exists()  # no store was even created
