"""The same sweep on a real SLURM cluster (one node, 127.0.0.1), tracked by the project's PostgreSQL-backed MLflow
server: `hydra/launcher=slurm tracking=server`. Everything is read back through the server, and `sacct` (slurmdbd)
says what SLURM saw. One cluster and one server for the module (~15 s to start both)."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO
from descentlab.server.net import free_port
from slurm_cluster import SlurmCluster, unavailable

pytestmark = pytest.mark.e2e  # daemons, a server and train.py as processes: run by `pytest --all-tiers`

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
SMALL = ("dataset=digits", "training.progress=false")


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A folder the munge, mysql and postgres users can reach (pytest's tmp_path is root's alone)."""
    reason = unavailable()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="descentlab-slurm-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(workspace: Path) -> Iterator[SlurmCluster]:
    with SlurmCluster(workspace / "cluster") as started:
        yield started


@pytest.fixture(scope="module")
def server(workspace: Path) -> Iterator[str]:
    """`scripts/server.py` on PostgreSQL; its tracking URI."""
    data = workspace / "server"
    script = [sys.executable, str(REPO / "scripts" / "server.py")]
    started = subprocess.run([*script, "start", "--data", str(data), "--port", str(free_port())],
                             capture_output=True, text=True, timeout=180, env=clean_env())
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        last = started.stdout.strip().splitlines()[-1]
        assert last.startswith("MLFLOW_TRACKING_URI=http://127.0.0.1:"), started.stdout
        yield last.split("=", 1)[1]
    finally:
        subprocess.run([*script, "stop", "--data", str(data)], capture_output=True, timeout=120, env=clean_env())


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "SLURM_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra})
    return env


@dataclass
class Sweep:
    """`python train.py -m hydra/launcher=slurm tracking=server ...` in `workspace`, one experiment per test."""

    cluster: SlurmCluster
    uri: str
    root: Path
    experiment: str
    calls: int = 0

    def args(self, *overrides: str) -> list[str]:
        self.calls += 1
        self.sweep_dir = self.root / f"{self.experiment}-{self.calls}"
        return [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm", "tracking=server",
                f"tracking.experiment={self.experiment}", *SMALL, *overrides, f"hydra.sweep.dir={self.sweep_dir}"]

    def env(self) -> dict[str, str]:
        return self.cluster.env(clean_env(MLFLOW_TRACKING_URI=self.uri))

    def run(self, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(*overrides), cwd=self.root, env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def runs(self) -> list:
        client = self.client()
        experiment = client.get_experiment_by_name(self.experiment)
        return [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1000)

    def slurm_jobs(self, sweep_dir: Path) -> dict[str, str]:
        """SLURM's state of each job of a sweep, from `sacct` (its array job ids are submitit's folder names)."""
        ids = sorted({p.name.split("_")[0] for p in (sweep_dir / ".submitit").iterdir() if p.is_dir()})
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                             env=self.env(), capture_output=True, text=True, timeout=30, check=True).stdout
        return dict(line.split("|", 1) for line in out.splitlines() if line)  # "CANCELLED by 0"


@pytest.fixture
def sweep(cluster: SlurmCluster, server: str, workspace: Path, request: pytest.FixtureRequest) -> Sweep:
    return Sweep(cluster, server, workspace, experiment=request.node.name.removeprefix("test_")[:40])


def read_csv(client, run_id: str) -> dict[str, list[int]]:
    """Steps per metric in the run's metrics.csv artifact, downloaded through the server."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setenv(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false")  # no progress bar in the test's output
        path = client.download_artifacts(run_id, "metrics.csv", tmp)
        steps: dict[str, list[int]] = {}
        for row in csv.DictReader(io.StringIO(Path(path).read_text())):
            steps.setdefault(row["metric"], []).append(int(row["step"]))
    return steps


def test_a_four_job_sweep_on_slurm_is_read_back_through_the_server_under_one_parent(sweep: Sweep) -> None:
    iterations = 60
    result = sweep.run(f"optimizer={','.join(OPTIMIZERS)}", f"training.iterations={iterations}",
                       "training.eval_every=20")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sweep of 4 jobs: 4 finished" in result.stderr, result.stderr[-3000:]

    runs = sweep.runs()
    parents = [r for r in runs if "config_hash" not in r.data.tags]
    children = [r for r in runs if "config_hash" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.params["optimizer.name"] for r in children) == sorted(OPTIMIZERS)
    client = sweep.client()
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.params["training.iterations"] == str(iterations)
        assert run.data.params["dataset.name"] == "digits"
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"weights.npz", "metrics.csv", "config.yaml"} <= files, files
        computed = read_csv(client, run.info.run_id)
        assert computed["train/loss"] == list(range(iterations))
        for key, steps in computed.items():  # every point computed, through the server
            stored = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert stored == sorted(steps), key

    states = sweep.slurm_jobs(sweep.sweep_dir)
    assert len(states) == 4 and set(states.values()) == {"COMPLETED"}, states


def test_a_scancelled_job_ends_killed_fails_the_sweep_and_is_redone_by_the_next_launch(sweep: Sweep) -> None:
    overrides = ("optimizer=sgd,adam", "training.iterations=4000", "training.eval_every=1000",
                 "tracking.flush_seconds=1")
    proc = subprocess.Popen(sweep.args(*overrides), cwd=sweep.root, env=sweep.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    first_dir = sweep.sweep_dir
    try:
        # Job 0: the launcher waits for the jobs in order, so it exits while job 1 still runs (the harder case).
        victim = wait_for_a_training_run(sweep, proc, job_num="0")
        job_num = victim.data.tags["hydra.job_num"]
        job_id = next(j for j in squeue(sweep) if j.endswith(f"_{job_num}"))
        subprocess.run(["scancel", job_id], env=sweep.env(), check=True, timeout=30)
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, stderr[-3000:]
    assert "CANCELLED" in stderr, stderr[-3000:]
    # The launcher stops at the first job that did not complete; the sweep's other jobs run on, as SLURM's jobs do.
    wait_until_no_job(sweep)

    # SIGTERM (scancel) reached the job and descentlab's handler, not submitit's: the run ended KILLED, its points
    # recorded, before SLURM's SIGKILL.
    killed = sweep.client().get_run(victim.info.run_id)
    assert killed.info.status == "KILLED", killed.info.status
    assert killed.data.tags.get("interrupted_by") == "SIGTERM"
    assert read_csv(sweep.client(), victim.info.run_id)["train/loss"]
    states = sweep.slurm_jobs(first_dir)
    assert states[job_id].startswith("CANCELLED") and list(states.values()).count("COMPLETED") == 1, states

    children_before = [r for r in sweep.runs() if "config_hash" in r.data.tags]
    again = sweep.run(*overrides)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = sweep.runs()
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if "config_hash" in r.data.tags]
    new = [r for r in children if r.info.run_id not in {c.info.run_id for c in children_before}]
    # Exactly the cancelled config was redone (a new FINISHED run); the finished one was skipped.
    assert [(r.data.tags["config_hash"], r.info.status) for r in new] == [(victim.data.tags["config_hash"],
                                                                          "FINISHED")]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert sorted(r.data.params["optimizer.name"] for r in finished) == ["adam", "sgd"]
    assert set(sweep.slurm_jobs(sweep.sweep_dir).values()) == {"COMPLETED"}


def squeue(sweep: Sweep) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], env=sweep.env(), capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return out.split()


def wait_until_no_job(sweep: Sweep, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while squeue(sweep):
        assert time.monotonic() < deadline, f"jobs still queued or running: {squeue(sweep)}"
        time.sleep(0.5)


def wait_for_a_training_run(sweep: Sweep, proc: subprocess.Popen, job_num: str, timeout: float = 120):
    """Until the run of job `job_num` is RUNNING on the server with a training point stored: that run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        client = sweep.client()
        for run in sweep.runs():
            if (run.info.status == "RUNNING" and run.data.tags.get("hydra.job_num") == job_num
                    and client.get_metric_history(run.info.run_id, "train/loss")):
                return run
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"no run training in time (sweep exited {proc.poll()})")

