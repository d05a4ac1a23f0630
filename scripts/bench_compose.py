#!/usr/bin/env python
"""What composing a sweep's configs costs before and while it runs, and what the faster pre-launch check saves.

    python scripts/bench_compose.py                         # 400 jobs, 3 rounds
    python scripts/bench_compose.py --jobs 1000 --rounds 3 --write docs/benchmarks.md

Hydra composes a job's config twice: the sweeper checks every job in the launching process before launching any
(Hydra's BasicSweeper composes each one; `hydra/sweeper=descentlab` composes once per set of group choices and
applies each job's value overrides to a copy), then the launcher composes each job where it runs (basic and Ray:
the launching process; joblib: its workers; submitit/SLURM: the job itself).
(1) In one process, alternated per round: Hydra's full composition of one job (`load_sweep_config`, what each
launcher pays per job and the basic sweeper's check pays per job) vs the descentlab sweeper's check, per job, for a
sweep `optimizer=sgd,momentum,adagrad,adam seed=range(0,N/4)`.
(2) Whole processes: `train.py -m` with that sweep and the joblib launcher, from start until Hydra logs that the
launcher starts the jobs (the process is then stopped), with `hydra/sweeper=basic` and `hydra/sweeper=descentlab`,
alternated, and the same with one job, so that the difference is the check's cost for N-1 jobs.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import machine_info, publish  # the sibling script

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:compose:start -->", "<!-- bench:compose:end -->"
OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam")
LAUNCHING = "is launching"  # hydra-joblib-launcher's log line once the sweeper has checked every job


def job_overrides(n: int) -> list[list[str]]:
    """n jobs of `optimizer=sgd,momentum,adagrad,adam seed=0,1,...` as the sweeper expands them."""
    return [[f"optimizer={OPTIMIZERS[i % 4]}", f"seed={i // 4}"] for i in range(n)]


def in_process(n: int, rounds: int) -> dict[str, Any]:
    """Per-job milliseconds of Hydra's composition and of the descentlab sweeper's check, alternated."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from descentlab.config import register_schemas
    from hydra_plugins.descentlab_sweeper.sweeper import FastComposer

    register_schemas()
    jobs = job_overrides(n)
    full: list[float] = []
    fast: list[float] = []
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = compose("config", return_hydra_config=True)
        full_jobs = jobs[: max(8, n // 10)]  # the full composition is slow: a tenth of the jobs gives its rate
        for _ in range(rounds):
            tic = time.perf_counter()
            for overrides in full_jobs:
                loader.load_sweep_config(master, overrides)
            full.append((time.perf_counter() - tic) / len(full_jobs) * 1000)
            tic = time.perf_counter()
            composer = FastComposer(loader, master)
            for overrides in jobs:
                composer.compose(overrides)
            fast.append((time.perf_counter() - tic) / len(jobs) * 1000)
    return {"full_ms": full, "fast_ms": fast, "compositions": len(composer.composed), "jobs": n}


def time_to_launch(n: int, sweeper: str, tmp: Path) -> float:
    """Seconds from `python train.py -m ...` to the launcher's first log line about starting the jobs."""
    sweep = [f"optimizer={','.join(OPTIMIZERS)}" if n > 1 else "optimizer=sgd", f"seed=range(0,{max(1, n // 4)})"]
    cmd = [sys.executable, str(REPO / "train.py"), "-m", *sweep, "tracking=none", "dataset=digits",
           "training.iterations=1", "hydra/launcher=joblib", f"hydra/sweeper={sweeper}",
           f"hydra.sweep.dir={tmp}/{sweeper}-{n}-{time.time_ns()}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    tic = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if LAUNCHING in line:
                return time.perf_counter() - tic
        raise RuntimeError(f"{sweeper}: the sweep ended without launching (exit {proc.wait()})")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def whole_process(n: int, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {f"{s}-{k}": [] for s in ("basic", "descentlab") for k in (1, n)}
    with tempfile.TemporaryDirectory(prefix="bench-compose-") as tmp:
        for _ in range(rounds):
            for sweeper in ("basic", "descentlab"):
                for k in (1, n):
                    times[f"{sweeper}-{k}"].append(time_to_launch(k, sweeper, Path(tmp)))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=400, help="jobs in the sweep (default 400)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None, help="replace the compose section of this file")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.jobs < 8 or args.rounds < 1:
        parser.error(f"--jobs must be >= 8 and --rounds >= 1, got {args.jobs} and {args.rounds}")
    inproc = in_process(args.jobs, args.rounds)
    procs = whole_process(args.jobs, args.rounds)
    med = statistics.median
    full, fast = med(inproc["full_ms"]), med(inproc["fast_ms"])
    per_job = {s: (med(procs[f"{s}-{args.jobs}"]) - med(procs[f"{s}-1"])) / (args.jobs - 1) * 1000
               for s in ("basic", "descentlab")}
    info = machine_info(1)
    rows = [
        "| | Hydra's basic sweeper | `hydra/sweeper=descentlab` | ratio |",
        "|---|---|---|---|",
        f"| pre-launch check, ms a job (in one process, median of {args.rounds}) | {full:.1f} | {fast:.1f} | "
        f"{full / fast:.1f}x |",
        f"| start → jobs launched, 1 job, s | {med(procs['basic-1']):.2f} | {med(procs['descentlab-1']):.2f} | |",
        f"| start → jobs launched, {args.jobs} jobs, s | {med(procs[f'basic-{args.jobs}']):.2f} | "
        f"{med(procs[f'descentlab-{args.jobs}']):.2f} | "
        f"{med(procs[f'basic-{args.jobs}']) / med(procs[f'descentlab-{args.jobs}']):.1f}x |",
        f"| added per job before launch, ms | {per_job['basic']:.1f} | {per_job['descentlab']:.1f} | |",
        f"| projected for 10,000 jobs, s | {per_job['basic'] * 10:.0f} | {per_job['descentlab'] * 10:.0f} | |",
    ]
    body = "\n".join([
        f"Machine: {info.get('cpu', '?')}, {os.cpu_count()} cores, Python {sys.version.split()[0]}; load average "
        f"{os.getloadavg()[0]:.2f}. Sweep: optimizer=sgd,momentum,adagrad,adam × seeds, {args.jobs} jobs "
        f"({inproc['compositions']} distinct group choices). Each launcher also composes every job once where it "
        f"runs: Hydra's full composition, {full:.0f} ms a job (basic and Ray launchers: in the launching process, "
        "between jobs; joblib: in its workers; SLURM: in the job).", "", *rows, ""])
    report = {"in_process": inproc, "whole_process": procs, "per_job_ms": per_job, "machine": info}
    publish("bench_compose.py", argv, body, report, args, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
