"""`hydra/sweeper=descentlab_optuna`: the search space grammar (unit), bad settings as one line (in-process), and
end to end (e2e tier): trials as tracked child runs of one parent, and a search killed mid-trial that the same
command finishes without repeating a finished trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from conftest import REPO
from hydra_plugins.descentlab_optuna_sweeper._space import SearchSpaceError, parse_space
from hydra_plugins.descentlab_optuna_sweeper._study import INTERRUPTED, PARENT_RUN, counted

TINY = ["dataset=digits", "training.iterations=30", "training.eval_every=10", "training.progress=false"]
SWEEPER = ["hydra/sweeper=descentlab_optuna", "hydra.sweeper.metric=final/test_acc",
           "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler=random"]
LR = "optimizer.lr=tag(log,interval(1e-3,1e-1))"


@pytest.mark.parametrize(("text", "expected"), [
    ("interval(0.1,0.5)", FloatDistribution(0.1, 0.5)),
    ("interval(1,10)", FloatDistribution(1.0, 10.0)),  # Hydra reads an interval's ends as floats
    ("tag(log,interval(1e-6,1e-2))", FloatDistribution(1e-6, 1e-2, log=True)),
    ("int(interval(1,10))", IntDistribution(1, 10)),
    ("tag(log,int(interval(1,100)))", IntDistribution(1, 100, log=True)),
    ("choice(sgd,adam)", CategoricalDistribution(["sgd", "adam"])),
    ("sgd,adam,0.5", CategoricalDistribution(["sgd", "adam", 0.5])),
    ("range(1,10,3)", IntDistribution(1, 7, step=3)),  # Hydra's range excludes its stop: 1, 4, 7
    ("range(0.5,2.0,0.5)", FloatDistribution(0.5, 1.5, step=0.5)),
    ("shuffle(range(3))", CategoricalDistribution([0, 1, 2])),
])
def test_each_grammar_form_gives_its_distribution(text: str, expected) -> None:
    space = parse_space(None, [f"k={text}"])
    assert space.dimensions["k"].distribution == expected and not space.fixed


def test_params_and_command_line_join_plain_values_are_fixed() -> None:
    space = parse_space({"optimizer.lr": "tag(log, interval(1e-6, 1e-2))", "seed": "0"},
                        ["model.weight_decay=tag(log,interval(1e-8,1e-4))", "dataset=digits", "seed=1,2", "+x=3"])
    assert set(space.dimensions) == {"optimizer.lr", "model.weight_decay", "seed"}  # the command line wins
    assert space.fixed == {"dataset": "dataset=digits", "x": "+x=3"}
    overrides = space.overrides({"optimizer.lr": 1e-3, "model.weight_decay": 2.5e-07, "seed": 2})
    assert overrides == ["dataset=digits", "+x=3", "optimizer.lr=0.001", "model.weight_decay=2.5e-07", "seed=2"]
    # the derived study name depends on the space and the fixed values, not on their order
    again = parse_space(None, ["+x=3", "dataset=digits", "seed=1,2", "model.weight_decay=tag(log,interval(1e-8,1e-4))",
                               "optimizer.lr=tag(log, interval(1e-6, 1e-2))"])
    assert again.digest("maximize") == space.digest("maximize") != space.digest("minimize")


@pytest.mark.parametrize(("text", "message"), [
    ("glob(*)", "glob has no Optuna distribution"),
    ("interval(2,1)", "start < end"),
    ("tag(log,interval(0,1))", "start > 0"),
    ("tag(cubic,interval(1,2))", "unknown tag"),
    ("interval(1", "search space 'k=interval(1'"),
])
def test_bad_grammar_is_named(text: str, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message.replace("(", r"\(")):
        parse_space(None, [f"k={text}"])


@pytest.mark.parametrize(("override", "message"), [
    ("hydra.sweeper.sampler=grid", "hydra.sweeper.sampler='grid' is not a sampler; allowed: tpe, random"),
    ("hydra.sweeper.direction=up", "hydra.sweeper.direction='up' is not a direction; allowed: minimize, maximize"),
    ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 must be an integer >= 1"),
    ("optimizer.lr=interval(0.1,0.01)", "an interval needs start < end"),
    ("hydra.sweeper.storage=nosuchdb://x", "hydra.sweeper.storage='nosuchdb://x' cannot be opened"),
])
def test_bad_settings_are_one_line_before_any_trial(store, override: str, message: str) -> None:
    result = store.train_in_process("-m", "hydra/sweeper=descentlab_optuna", LR, *TINY,
                                    f"hydra.sweeper.storage=sqlite:///{store.root}/optuna.db", override)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr[-2000:]
    assert store.runs() == []


def sweep_args(store, n_trials: int, *extra: str) -> list[str]:
    return ["-m", *SWEEPER, LR, *TINY, f"hydra.sweeper.n_trials={n_trials}", *extra]


def study_of(store) -> optuna.Study:
    return optuna.load_study(study_name=None, storage=f"sqlite:///{store.root / 'mlruns' / 'optuna.db'}")


@pytest.mark.e2e
def test_trials_are_tracked_child_runs_of_one_parent_and_the_metric_is_theirs(store) -> None:
    result = store.train(*sweep_args(store, 3))
    assert result.returncode == 0, result.stderr[-3000:]
    study = study_of(store)  # the default storage: optuna.db beside the tracking store's mlflow.db
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(study.trials) == 3 and len(trials) == 3
    runs = {r.info.run_id: r for r in store.runs()}
    children = [r for r in runs.values() if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3 and len({r.data.tags["mlflow.parentRunId"] for r in children}) == 1
    parent = runs[children[0].data.tags["mlflow.parentRunId"]]
    assert parent.data.tags["optuna.study"] == study.study_name and study.user_attrs[PARENT_RUN] == parent.info.run_id
    for trial in trials:
        run = runs[trial.user_attrs["run_id"]]
        assert trial.value == run.data.metrics["final/test_acc"]
        assert float(run.data.params["optimizer.lr"]) == trial.params["optimizer.lr"]
        assert run.data.tags["optuna.trial"] == str(trial.number)
        assert run.data.tags["optuna.study"] == study.study_name and run.info.run_name == trial.user_attrs["run_name"]
    assert f"optuna: study {study.study_name}: 3 complete, 0 failed; best trial" in result.stderr


@pytest.mark.e2e
def test_a_killed_search_resumes_without_repeating_finished_trials(store) -> None:
    """SIGKILL of the whole process group mid-trial, then the same command: 6 counted trials in all."""
    args = [sys.executable, str(REPO / "train.py"), *sweep_args(store, 6),
            f"hydra.sweep.dir={store.root}/multirun/killed", "training.iterations=50"]
    db = store.root / "mlruns" / "optuna.db"
    with (store.root / "killed.log").open("w") as log:
        proc = subprocess.Popen(args, cwd=store.root, env=store.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_for(proc, store.root / "killed.log", db, complete=2)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    before = study_at(db).get_trials()  # as the kill left them
    complete_before = {t.number: t.user_attrs["run_id"] for t in before if t.state == TrialState.COMPLETE}
    running = [t.number for t in before if t.state == TrialState.RUNNING]
    assert len(complete_before) >= 2 and len(running) == 1 and len(before) < 6

    result = store.train(*sweep_args(store, 6), "training.iterations=50")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"trial(s) {running} of a killed launch failed and re-enqueued" in result.stderr
    study = study_of(store)
    assert study.user_attrs[INTERRUPTED] == running
    done = counted(study)
    assert len(done) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in done)
    assert len(study.trials) == 6 + len(running)  # nothing else was added
    lrs = [t.params["optimizer.lr"] for t in done]
    assert len(set(lrs)) == 6  # no finished trial's params repeated (a restarted seeded sampler would repeat them)
    interrupted = study.trials[running[0]]
    rerun = [t for t in done if t.user_attrs.get("requeued_from") == running[0]]
    assert len(rerun) == 1 and rerun[0].params == interrupted.params  # the killed configuration ran again
    after = {t.number: t.user_attrs["run_id"] for t in done}
    assert all(after[n] == run_id for n, run_id in complete_before.items())  # earlier trials untouched
    runs = {r.info.run_id: r for r in store.runs()}
    parents = {runs[t.user_attrs["run_id"]].data.tags["mlflow.parentRunId"] for t in done}
    assert parents == {study.user_attrs[PARENT_RUN]}  # one parent for both launches
    assert runs[study.user_attrs[PARENT_RUN]].info.status == "FINISHED"
    for trial in done:
        if trial.state == TrialState.COMPLETE:
            assert trial.value == runs[trial.user_attrs["run_id"]].data.metrics["final/test_acc"]


def wait_for(proc: subprocess.Popen, log: Path, db: Path, complete: int, timeout: float = 120) -> list:
    """The study's trials once `complete` are COMPLETE while another is RUNNING (killed mid-trial). The database is
    read only after the sweeper said it opened the study: a reader would otherwise race it creating the schema."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the sweep ended before it could be killed: {log.read_text()[-2000:]}"
        if "optuna: study" in log.read_text():
            try:
                trials = study_at(db).get_trials(deepcopy=False)
            except Exception:  # no study yet, or the database busy for a moment
                trials = []
            states = [t.state for t in trials]
            if states.count(TrialState.COMPLETE) >= complete and TrialState.RUNNING in states:
                return trials
        time.sleep(0.05)
    raise AssertionError("no trial completed in time")


def study_at(db: Path) -> optuna.Study:
    return optuna.load_study(study_name=None, storage=f"sqlite:///{db}")


def test_a_metric_the_runs_do_not_have_is_one_line(store) -> None:
    result = store.train_in_process(*sweep_args(store, 2), "hydra.sweeper.metric=final/nope")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: hydra.sweeper.metric='final/nope' is not a summary metric of the runs; they "
                           "have: ") and "final/test_acc" in last
    trial, = study_of(store).trials  # told FAIL before the error, not left RUNNING
    assert trial.state == TrialState.FAIL and "without metric final/nope" in trial.user_attrs["fail_reason"]


def test_a_diverged_trial_fails_with_its_reason_and_the_search_goes_on(store) -> None:
    result = store.train_in_process(*sweep_args(store, 2), "optimizer.lr=interval(1e4,1e5)")
    assert result.returncode == 0, result.stderr[-2000:]
    trials = study_of(store).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    runs = {r.info.run_id: r for r in store.runs()}
    for trial in trials:
        assert trial.user_attrs["fail_reason"] == "run FAILED (diverged, or an error in training)"
        run = runs[trial.user_attrs["run_id"]]
        assert run.info.status == "FAILED" and "diverged_at_step" in run.data.tags


def test_the_derived_study_name_ignores_what_does_not_change_a_run() -> None:
    from hydra_plugins.descentlab_optuna_sweeper._study import StudySettings, derived_name

    settings = StudySettings("random", 0, "maximize", "final/val_acc", 6, 1, None, None)
    name = derived_name("e", parse_space(None, [LR, "dataset=digits"]), settings)
    assert name == derived_name("e", parse_space(None, [LR, "dataset=digits", "training.progress=false",
                                                        "tracking.uri=sqlite:///x.db"]), settings)
    assert name != derived_name("e", parse_space(None, [LR, "dataset=mnist_5k"]), settings)
    assert name.startswith("e-") and name != derived_name("f", parse_space(None, [LR, "dataset=digits"]), settings)


def test_the_study_sits_next_to_the_tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_plugins.descentlab_optuna_sweeper._study import default_storage

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mlruns"
    assert default_storage(f"sqlite:///{tmp_path}/a/mlflow.db", str(store)) == f"sqlite:///{tmp_path}/a/optuna.db"
    assert default_storage("sqlite:///b/mlflow.db", str(store)) == f"sqlite:///{tmp_path}/b/optuna.db"  # relative
    assert default_storage("http://127.0.0.1:5000", str(store)) == f"sqlite:///{store}/optuna.db"


def test_an_interrupted_trial_fails_is_not_counted_and_its_params_run_again() -> None:
    from hydra_plugins.descentlab_optuna_sweeper._study import REQUEUED_FROM, interrupt, recover

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    done = study.ask()
    done.suggest_float("x", 0.0, 1.0)
    study.tell(done, 0.5)
    killed, left = study.ask(), study.ask()  # one batch: a job KILLED, the other left RUNNING by a dying launch
    x, y = killed.suggest_float("x", 0.0, 1.0), left.suggest_float("x", 0.0, 1.0)
    interrupt(study, killed)
    assert recover(study) == [left.number]  # the next launch's start

    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[killed.number] == states[left.number] == TrialState.FAIL
    assert study.user_attrs[INTERRUPTED] == [killed.number, left.number]
    assert [t.number for t in counted(study)] == [done.number]
    again = [study.ask() for _ in range(2)]
    assert [t.suggest_float("x", 0.0, 1.0) for t in again] == [x, y]  # enqueued: the same points, in order
    assert [t.user_attrs[REQUEUED_FROM] for t in again] == [killed.number, left.number]
