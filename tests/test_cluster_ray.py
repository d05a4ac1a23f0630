"""`hydra/launcher=ray` for real: sweeps on a `ray start` cluster and on a local Ray, tracked by the project's
PostgreSQL-backed MLflow server (`scripts/server.py`), every run read back through that server.

Ray binds to the machine's external address whatever it is told, so everything runs inside a private network
namespace (`unshare -n -p -f --mount-proc`, loopback up): there every listener is 127.0.0.1, and leaving the
namespace ends every process started in it. One namespace script (`NAMESPACE_SCRIPT`) does all the work once per
module (server, cluster, sweeps, reads, stops) and prints one JSON object; the tests assert on it outside.
Without `unshare` (not root, no user namespaces) those tests are skipped with the reason. A few tests of the
launcher's own checks start no Ray and run in the default tier.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
ITERATIONS = 60
EVAL_EVERY = 20
COMMON = ["dataset=digits", "model=mlp_2x50", f"training.iterations={ITERATIONS}",
          f"training.eval_every={EVAL_EVERY}", "training.progress=false"]

NAMESPACE_SCRIPT = textwrap.dedent('''
    """Inside the namespace: server, cluster, two sweeps, read-back, stops; one JSON object on stdout."""
    import json, os, secrets, shutil, signal, subprocess, sys, tempfile, time

    work, repo, common = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    out = {"steps": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "RAY_"))}
    # The cluster's token (Ray turns token authentication on for `ray start`) in a file of our own, not the
    # shared ~/.ray/auth_token; RAY_AUTH_MODE stays unset, as a user's is: the launcher sends the token.
    token_path = os.path.join(work, "ray_auth_token")
    with open(token_path, "w") as token_file:
        token_file.write(secrets.token_hex(32))
    env.update(PYTHONPATH=os.path.join(repo, "src"), MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1",
               RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_TOKEN_PATH=token_path)
    # PostgreSQL runs as `postgres`, which must enter every parent of its folder: pytest's are root-only.
    server_data = f"/tmp/descentlab-ray-test-{os.getpid()}-{time.time_ns()}"
    launch_dir = os.path.join(work, "launch")
    os.makedirs(launch_dir)
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes


    def run(name, args, cwd=work, extra=None, timeout=300):
        started = time.monotonic()
        proc = subprocess.run(args, cwd=cwd, env={**env, **(extra or {})}, capture_output=True, text=True,
                              timeout=timeout)
        out["steps"].append({"name": name, "rc": proc.returncode, "s": round(time.monotonic() - started, 2),
                             "stdout": proc.stdout[-4000:], "stderr": proc.stderr[-8000:]})
        return proc


    def read_back(uri, experiment):
        """Every run of the experiment as the server returns it: status, tags, params, each metric's points,
        the points of its metrics.csv, its artifacts."""
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        runs = []
        for r in client.search_runs([exp.experiment_id], max_results=100) if exp else []:
            rid = r.info.run_id
            history = {key: sorted(m.step for m in client.get_metric_history(rid, key)) for key in r.data.metrics}
            csv_points = {}
            names = [f.path for f in client.list_artifacts(rid)]
            if "metrics.csv" in names:
                path = client.download_artifacts(rid, "metrics.csv", tempfile.mkdtemp(dir=work))
                for line in open(path).read().splitlines()[1:]:
                    step, key, _ = line.split(",", 2)
                    csv_points.setdefault(key, []).append(int(step))
            runs.append({"id": rid, "status": r.info.status, "name": r.info.run_name, "tags": r.data.tags,
                         "params": r.data.params, "history": history,
                         "csv": {k: sorted(v) for k, v in csv_points.items()}, "artifacts": names})
        return runs


    def ray_processes():
        import psutil

        return sorted({p.name() for p in psutil.process_iter(["name", "status"])
                       if p.info["name"] in ("raylet", "gcs_server") and p.info["status"] != psutil.STATUS_ZOMBIE})


    try:
        start = run("server start", [sys.executable, os.path.join(repo, "scripts", "server.py"), "start",
                                     "--data", server_data, "--port", "5077"], timeout=180)
        uri = start.stdout.strip().splitlines()[-1].split("=", 1)[1] if start.returncode == 0 else None
        out["uri"] = uri
        status = run("server status", [sys.executable, os.path.join(repo, "scripts", "server.py"), "status",
                                       "--data", server_data, "--json"])
        out["server"] = json.loads(status.stdout) if status.returncode == 0 else None
        # The cluster: started from another folder and without the tracking variables, as on another node.
        run("ray start", ["ray", "start", "--head", "--num-cpus=2", "--port=6379", "--include-dashboard=false",
                          "--disable-usage-stats", f"--temp-dir={ray_tmp}"], cwd="/")
        submitted = time.time()
        run("cluster sweep", [sys.executable, os.path.join(repo, "train.py"), "-m", "hydra/launcher=ray",
                              "hydra.launcher.address=127.0.0.1:6379", "tracking=server",
                              "tracking.experiment=ray-cluster", "optimizer=sgd,momentum,adagrad,adam", *common,
                              "hydra.sweep.dir=multirun/cluster"],
            cwd=launch_dir, extra={"MLFLOW_TRACKING_URI": uri or ""})
        out["cluster_submitted"] = submitted
        out["cluster_runs"] = read_back(uri, "ray-cluster")
        # Ctrl-C on the launching process once both jobs are training: their runs end KILLED with their points.
        launcher = subprocess.Popen(
            [sys.executable, os.path.join(repo, "train.py"), "-m", "hydra/launcher=ray",
             "hydra.launcher.address=127.0.0.1:6379", "tracking=server", "tracking.experiment=ray-interrupt",
             "optimizer=sgd,adam", *common, "training.iterations=400000", "training.eval_every=100000",
             "hydra.sweep.dir=multirun/interrupt"],
            cwd=launch_dir, env={**env, "MLFLOW_TRACKING_URI": uri or ""}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        from mlflow import MlflowClient

        client, deadline = MlflowClient(uri), time.monotonic() + 120
        while time.monotonic() < deadline and launcher.poll() is None:
            exp = client.get_experiment_by_name("ray-interrupt")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if sum(1 for r in runs if r.info.status == "RUNNING" and "train/loss" in r.data.metrics) == 2:
                break
            time.sleep(0.5)
        interrupted = time.monotonic()
        launcher.send_signal(signal.SIGINT)
        stdout, stderr = launcher.communicate(timeout=180)
        out["steps"].append({"name": "interrupted sweep", "rc": launcher.returncode,
                             "s": round(time.monotonic() - interrupted, 2), "stdout": stdout[-4000:],
                             "stderr": stderr[-8000:]})
        out["interrupted_runs"] = read_back(uri, "ray-interrupt")
        # A Ray worker killed mid-job: the sweep fails saying so; the next launch marks that run FAILED.
        crash = [sys.executable, os.path.join(repo, "train.py"), "-m", "hydra/launcher=ray",
                 "hydra.launcher.address=127.0.0.1:6379", "tracking=server", "tracking.experiment=ray-crash",
                 "optimizer=sgd", *common, "hydra.sweep.dir=multirun/crash"]
        launcher = subprocess.Popen([*crash, "training.iterations=400000", "training.eval_every=100000"],
                                    cwd=launch_dir, env={**env, "MLFLOW_TRACKING_URI": uri or ""},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline, victim = time.monotonic() + 120, None
        while victim is None and time.monotonic() < deadline and launcher.poll() is None:
            exp = client.get_experiment_by_name("ray-crash")
            for r in client.search_runs([exp.experiment_id]) if exp else []:
                if r.info.status == "RUNNING" and "train/loss" in r.data.metrics:
                    victim = int(r.data.tags["process.pid"])
            time.sleep(0.5)
        if victim is not None:
            os.kill(victim, signal.SIGKILL)
        stdout, stderr = launcher.communicate(timeout=180)
        out["steps"].append({"name": "crashed sweep", "rc": launcher.returncode, "stdout": stdout[-4000:],
                             "stderr": stderr[-8000:]})
        run("relaunched sweep", crash, cwd=launch_dir, extra={"MLFLOW_TRACKING_URI": uri or ""})
        out["crash_runs"] = read_back(uri, "ray-crash")
        run("ray stop", ["ray", "stop"], cwd="/")
        out["after_ray_stop"] = ray_processes()
        # A local Ray the launcher starts and stops itself; one job of the sweep has a bad learning rate.
        run("local sweep", [sys.executable, os.path.join(repo, "train.py"), "-m", "hydra/launcher=ray",
                            "hydra.launcher.num_cpus=2", f"+hydra.launcher.init._temp_dir={ray_tmp}",
                            "tracking=server", "tracking.experiment=ray-local", "optimizer=sgd",
                            "optimizer.lr=0.05,-1", *common, "hydra.sweep.dir=multirun/local"],
            cwd=launch_dir, extra={"MLFLOW_TRACKING_URI": uri or ""})
        out["local_runs"] = read_back(uri, "ray-local")
        out["after_local_sweep"] = ray_processes()
    except Exception as exc:
        out["error"] = repr(exc)
    finally:
        run("ray stop --force", ["ray", "stop", "--force"], cwd="/")
        run("server stop", [sys.executable, os.path.join(repo, "scripts", "server.py"), "stop", "--data", server_data])
        shutil.rmtree(server_data, ignore_errors=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        print(json.dumps(out))
''')


def _unshare_refused() -> str | None:
    """Why a private network namespace cannot be made here, or None."""
    for tool in ("unshare", "ip", "ray"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH"
    probe = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", "ip link set lo up"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"`unshare -n -p -f --mount-proc` is refused here: {probe.stderr.strip() or probe.returncode}"
    return None


# ---------------------------------------------------------------------------- the launcher's checks (no Ray)


def test_hydra_launcher_ray_composes_with_documented_defaults() -> None:
    from hydra import compose, initialize_config_dir

    from descentlab.config import register_schemas

    register_schemas()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=ray", "hydra.launcher.address=auto"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.descentlab_ray_launcher.ray_launcher.RayLauncher"
    assert launcher.address == "auto" and launcher.num_cpus_per_job == 1 and launcher.max_retries == 0
    assert "MLFLOW_TRACKING_URI" in launcher.env_vars and "DESCENTLAB_CACHE_DIR" in launcher.env_vars


def test_a_start_only_ray_option_with_an_address_is_refused_in_one_line() -> None:
    from descentlab.config import ConfigError
    from hydra_plugins.descentlab_ray_launcher.ray_launcher import RayLauncher

    launcher = RayLauncher(address="ray://head:10001", init={"object_store_memory": 10**9, "namespace": None})
    with pytest.raises(ConfigError, match=r"^hydra.launcher.init.object_store_memory=1000000000 applies only to a "
                                          r"Ray this launcher starts \(address=null\)"):
        launcher._init_ray()


def test_an_address_where_nothing_listens_is_refused_in_one_line() -> None:
    from descentlab.config import ConfigError
    from hydra_plugins.descentlab_ray_launcher.ray_launcher import RayLauncher

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match=rf"^hydra.launcher.address='127.0.0.1:{port}': nothing answers there"):
        RayLauncher(address=f"127.0.0.1:{port}")._init_ray()


def test_a_job_runs_in_the_launching_folder_or_else_in_a_new_one(tmp_path: Path, capsys) -> None:
    from hydra_plugins.descentlab_ray_launcher.ray_launcher import _working_folder

    before = os.getcwd()
    with _working_folder(str(tmp_path)):
        assert Path.cwd() == tmp_path
    assert os.getcwd() == before
    with _working_folder(str(tmp_path / "not-on-this-node")):
        elsewhere = Path.cwd()
    assert elsewhere.name.startswith("descentlab-ray-job-") and elsewhere.is_dir() and os.getcwd() == before
    assert "not-on-this-node' is not on this node" in capsys.readouterr().err
    elsewhere.rmdir()


# ------------------------------------------------------------- Ray for real, in a private network namespace


@pytest.fixture(scope="module")
def namespace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `NAMESPACE_SCRIPT` once in a private network namespace; its JSON report."""
    reason = _unshare_refused()
    if reason is not None:
        print(f"skipping the Ray tests: {reason}", file=sys.stderr)
        pytest.skip(f"Ray must run in a private network namespace: {reason}")
    work = tmp_path_factory.mktemp("ray")
    script = work / "namespace_script.py"
    script.write_text(NAMESPACE_SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_", "RAY_"))}
    # `; exit $?`: bash stays the namespace's PID 1 (a last plain command would be exec'ed) and reaps the daemons
    # `ray start` leaves to it, without which `ray stop` waits its full grace period for zombies.
    inner = f"ip link set lo up; {sys.executable} {script} {work} {REPO} '{json.dumps(COMMON)}'; exit $?"
    proc = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", inner], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["work"] = str(work)
    return report


def _step(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in report["steps"] if step["name"] == name)


def _children(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if "mlflow.parentRunId" in r["tags"]]


def _check_points(run: dict[str, Any]) -> None:
    """Every point of the run reached the server: its metrics.csv (the run's own record) and the server agree,
    and the loss has one point per step."""
    assert run["history"]["train/loss"] == list(range(ITERATIONS))
    assert run["csv"] == {key: run["history"][key] for key in run["csv"]}
    assert run["history"]["test/acc"] == list(range(0, ITERATIONS + 1, EVAL_EVERY))


@pytest.mark.e2e
def test_a_sweep_on_a_ray_cluster_reads_back_through_the_server(namespace: dict[str, Any]) -> None:
    assert "error" not in namespace, namespace.get("error")
    assert _step(namespace, "server start")["rc"] == 0, _step(namespace, "server start")["stderr"]
    assert namespace["server"]["backend"] == "postgresql"
    assert _step(namespace, "ray start")["rc"] == 0, _step(namespace, "ray start")["stderr"]
    sweep = _step(namespace, "cluster sweep")
    assert sweep["rc"] == 0, sweep["stderr"]
    assert "(descentlab_job pid=" in sweep["stderr"]  # the jobs' lines, forwarded from Ray workers

    runs = namespace["cluster_runs"]
    children = _children(runs)
    parents = [r for r in runs if r not in children]
    assert len(children) == 4 and len(parents) == 1
    assert {r["status"] for r in runs} == {"FINISHED"}
    assert {r["tags"]["mlflow.parentRunId"] for r in children} == {parents[0]["id"]}
    assert sorted(r["params"]["optimizer.name"] for r in children) == ["adagrad", "adam", "momentum", "sgd"]
    for run in children:
        assert run["params"]["training.iterations"] == str(ITERATIONS)
        assert {"config.yaml", "metrics.csv", "weights.npz", "hydra"} <= set(run["artifacts"])
        _check_points(run)
    # The relative sweep folder meant the launching folder in every job, not the folder `ray start` ran in.
    sweep_dir = Path(namespace["work"]) / "launch" / "multirun" / "cluster"
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1", "2", "3"]
    assert all((sweep_dir / str(n) / ".hydra" / "config.yaml").is_file() for n in range(4))
    assert namespace["after_ray_stop"] == []


@pytest.mark.e2e
def test_ctrl_c_on_the_launching_process_ends_the_ray_jobs_killed_with_their_points(namespace: dict[str, Any]) -> None:
    sweep = _step(namespace, "interrupted sweep")
    assert sweep["rc"] == 130, sweep["stderr"]
    assert sweep["s"] < 60, sweep["stderr"]  # the jobs stopped; they did not train to their end
    runs = namespace["interrupted_runs"]
    children = _children(runs)
    parents = [r for r in runs if r not in children]
    assert len(children) == 2 and len(parents) == 1 and parents[0]["status"] == "KILLED"
    for run in children:
        assert run["status"] == "KILLED" and run["tags"].get("interrupted_by") == "SIGINT"
        steps = run["history"]["train/loss"]
        assert 0 < len(steps) < 400000 and steps == list(range(len(steps)))
        assert run["csv"]["train/loss"] == steps  # its record was written after the signal, every point in it


@pytest.mark.e2e
def test_a_killed_ray_worker_fails_the_sweep_and_the_next_launch_marks_its_run_failed(
        namespace: dict[str, Any]) -> None:
    crashed = _step(namespace, "crashed sweep")
    assert crashed["rc"] == 1, crashed["stderr"]
    lost = [line for line in crashed["stderr"].splitlines() if "was lost by Ray: WorkerCrashedError" in line]
    assert lost and "optimizer=sgd" in lost[-1] and "next launch of the sweep marks it FAILED" in lost[-1]
    assert _step(namespace, "relaunched sweep")["rc"] == 0, _step(namespace, "relaunched sweep")["stderr"]
    by_iterations = {r["params"]["training.iterations"]: r for r in _children(namespace["crash_runs"])}
    assert by_iterations["400000"]["status"] == "FAILED"
    assert "is gone (killed or crashed)" in by_iterations["400000"]["tags"].get("error", "")
    assert by_iterations[str(ITERATIONS)]["status"] == "FINISHED"


@pytest.mark.e2e
def test_a_local_ray_sweep_with_a_bad_job_fails_and_keeps_the_others(namespace: dict[str, Any]) -> None:
    sweep = _step(namespace, "local sweep")
    assert sweep["rc"] != 0, sweep["stderr"]
    assert "Started a local Ray instance" in sweep["stderr"]
    assert "optimizer.lr" in sweep["stderr"]  # the rejected job's one-line reason

    runs = namespace["local_runs"]
    children = _children(runs)
    parents = [r for r in runs if r not in children]
    assert len(children) == 2 and len(parents) == 1
    by_lr = {r["params"].get("optimizer.lr"): r for r in children}
    assert by_lr["0.05"]["status"] == "FINISHED"
    rejected = by_lr["-1.0"]
    assert rejected["status"] == "FAILED" and rejected["tags"].get("rejected") == "true"
    assert "lr must be" in rejected["tags"]["error"]
    _check_points(by_lr["0.05"])
    assert parents[0]["status"] == "FAILED"
    assert namespace["after_local_sweep"] == []  # the launcher stopped the Ray it started
