#!/usr/bin/env python
"""Per-job overhead of a sweep on SLURM: what a job costs besides its training, from SLURM's accounting and the runs'
own timestamps on the tracking server.

Needs a running cluster (SLURM_CONF) and a tracking server (MLFLOW_TRACKING_URI); on one machine, as root:

    python tests/slurm_cluster.py start /tmp/slurm            # prints: export SLURM_CONF=...
    python scripts/server.py start --data /tmp/server --port 5000
    export SLURM_CONF=/tmp/slurm/etc/slurm.conf MLFLOW_TRACKING_URI=http://127.0.0.1:5000
    python scripts/bench_slurm.py --jobs 4 --iterations 200

It runs `train.py -m hydra/launcher=slurm tracking=server seed=0,...,N-1` (digits) into a fresh experiment and
prints a markdown table, per job: queued (sbatch → the job starts), start → the run's first training step (Python,
imports, data, the run's creation), submit → first step (the sum), last step → run FINISHED (the run's closing:
artifacts, final evaluation) and run FINISHED → job end (sacct); for the sweep: launch → sbatch (the launching
process: Python, Hydra, submitit's pickles) and the last job's end → the sweep's exit (submitit polling sacct, the
parent run closed). sacct's times are whole seconds: the differences with them are ±1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ("queued", "start → first step", "submit → first step", "last step → run FINISHED",
           "run FINISHED → job end")


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def sacct(job_ids: list[str]) -> dict[str, dict[str, float]]:
    """Submit/Start/End (epoch seconds) of each array task of the given array jobs."""
    env = {**os.environ, "SLURM_TIME_FORMAT": "%s"}
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Submit,Start,End", "-j", ",".join(job_ids)],
                         env=env, capture_output=True, text=True, check=True, timeout=30).stdout
    rows = {}
    for line in out.splitlines():
        job, state, submit, start, end = line.split("|")
        if all(t.isdigit() for t in (submit, start, end)):  # a task slurmdbd has not fully recorded yet: not here
            rows[job] = {"state": state, "submit": float(submit), "start": float(start), "end": float(end)}
    return rows


def sacct_all(job_ids: list[str], expected: set[str], timeout_s: float = 60) -> dict[str, dict[str, float]]:
    """`sacct` once every expected array task is recorded with its end: slurmdbd receives a task's record a
    moment after the sweep has seen it end (measured: a task missing from the first query)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = sacct(job_ids)
        missing = expected - set(rows)
        if not missing:
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(f"sacct did not record {sorted(missing)} within {timeout_s:.0f} s")
        time.sleep(1)


def measure(jobs: int, iterations: int, parallel: int, root: Path) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Run the sweep; one row per job and the sweep's own times (seconds)."""
    from mlflow import MlflowClient

    experiment = f"bench-slurm-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep_dir = root / "sweep"
    args = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm", "tracking=server",
            f"tracking.experiment={experiment}", "dataset=digits", "training.progress=false",
            f"training.iterations={iterations}", f"training.eval_every={max(1, iterations // 2)}",
            f"hydra.launcher.array_parallelism={parallel}", f"seed={','.join(map(str, range(jobs)))}",
            f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OPENBLAS_NUM_THREADS": "1"}
    began = time.time()
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=3600)
    exited = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    ids = sorted({p.name.split("_")[0] for p in (sweep_dir / ".submitit").iterdir() if p.is_dir()})
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id]) if "config_hash" in r.data.tags]
    slurm = sacct_all(ids, {f"{ids[0]}_{r.data.tags['hydra.job_num']}" for r in runs})
    rows = []
    for run in sorted(runs, key=lambda r: int(r.data.tags["hydra.job_num"])):
        job = f"{ids[0]}_{run.data.tags['hydra.job_num']}"
        s = slurm[job]
        history = client.get_metric_history(run.info.run_id, "train/loss")
        first, last = min(m.timestamp for m in history) / 1000, max(m.timestamp for m in history) / 1000
        finished = run.info.end_time / 1000
        rows.append({"job": job, "queued": s["start"] - s["submit"], "start → first step": first - s["start"],
                     "submit → first step": first - s["submit"], "last step → run FINISHED": finished - last,
                     "run FINISHED → job end": s["end"] - finished})
    sweep = {"wall": exited - began, "launch → sbatch": min(s["submit"] for s in slurm.values()) - began,
             "last job end → sweep exit": exited - max(s["end"] for s in slurm.values())}
    return rows, sweep


def markdown(rows: list[dict[str, float]], sweep: dict[str, float], jobs: int, iterations: int, parallel: int) -> str:
    head = f"| job | {' | '.join(COLUMNS)} |\n|---|{'---:|' * len(COLUMNS)}\n"
    lines = [f"| {r['job']} | " + " | ".join(f"{r[c]:.1f}" for c in COLUMNS) + " |" for r in rows]
    median = "| median | " + " | ".join(f"{statistics.median(r[c] for r in rows):.1f}" for c in COLUMNS) + " |"
    return (f"{jobs} jobs (digits, {iterations} iterations, at most {parallel} at once; seconds): the sweep took "
            f"{sweep['wall']:.1f} s, launch → sbatch {sweep['launch → sbatch']:.1f} s, last job end → sweep exit "
            f"{sweep['last job end → sweep exit']:.1f} s\n\n" + head + "\n".join([*lines, median]) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs in the sweep (seeds 0..N-1; default 4)")
    parser.add_argument("--iterations", type=int, default=200, help="training iterations per job (default 200)")
    parser.add_argument("--parallel", type=int, default=2, help="at most this many jobs at once (default 2)")
    opts = parser.parse_args(argv)
    if opts.jobs < 1 or opts.iterations < 1 or opts.parallel < 1:
        return fail(f"--jobs, --iterations and --parallel must be positive, got {opts.jobs}, {opts.iterations}, "
                    f"{opts.parallel}")
    if not os.environ.get("SLURM_CONF"):
        return fail("SLURM_CONF is not set: start a cluster (python tests/slurm_cluster.py start /tmp/slurm) and "
                    "export what it prints")
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith("http"):
        return fail(f"MLFLOW_TRACKING_URI must be a tracking server's http URI, got {uri!r}: start one with "
                    "python scripts/server.py start --data /tmp/server and export what it prints")
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        rows, sweep = measure(opts.jobs, opts.iterations, opts.parallel, Path(tmp))
    print(markdown(rows, sweep, opts.jobs, opts.iterations, opts.parallel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
