#!/usr/bin/env python
"""Benchmark 2 concurrent jobs logging to the PostgreSQL-backed tracking server vs the local SQLite store.

    python scripts/bench_tracking_server.py                         # jobs mode, 5 rounds, the three stores
    python scripts/bench_tracking_server.py --mode both --rounds 3 --json bench.json

Stores, measured side by side in one run, their order rotated each round: `sqlite` (the default local store,
sqlite:///TMP/mlflow.db, bulk SQL sink), `server` (scripts/server.py's MLflow's server on PostgreSQL, reached
over HTTP, MLflow's client calls) and `postgresql` (the same PostgreSQL reached directly,
postgresql+psycopg2://..., bulk SQL sink).
- `jobs`: 2 processes at once, each a typical run's tracking as train.py does it, without the training: the
  run's params, 2,000 `train/loss` points in blocks of 100 and the evaluation metrics every 100 steps, the
  summary metrics, a 480 KB weights artifact and metrics.csv, then the run's end. Per job: seconds from opening
  the store to the run's end (the process start and `import mlflow`, equal for all stores, are left out).
- `train`: `train.py -m hydra/launcher=parallel optimizer=sgd,adam training.iterations=2000 force=true` (two
  real jobs at once); the sweep's wall time, process start and training included.
The server and PostgreSQL are started in a temporary folder and stopped at the end. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STORES = ("sqlite", "server", "postgresql")
EVAL_KEYS = ("train/acc", "test/loss", "test/acc", "time/elapsed_s")


def job(uri: str, name: str, iterations: int, folder: Path) -> dict[str, float]:
    """One run's tracking as train.py does it: seconds from opening the store to the run's end (`seconds`), of
    which opening it and finding the experiment (`open`: MLflow's SQL store checks the schema's version in each
    new process) and logging the run (`write`)."""
    import numpy as np

    from descentlab.tracking.run import RunTracker
    from descentlab.tracking.store import artifact_root_for, get_or_create_experiment, open_store

    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    losses = (2.3 * np.exp(-np.arange(iterations) / 500) + 0.05 * rng.random(iterations)).tolist()
    weights = folder / f"{name}-weights.npz"
    np.savez(weights, w=rng.random(120_000).astype(np.float32))  # mlp_5x100's ~120k parameters
    params = {f"group{i // 10}.key{i}": i * 0.5 for i in range(40)}
    start = time.perf_counter()
    client = open_store(uri)
    experiment = get_or_create_experiment(client, "bench-tracking", artifact_root_for(uri))
    opened = time.perf_counter()
    with RunTracker(client, experiment, name) as run:
        run.log_params(params)
        for first in range(0, iterations, 100):
            run.log_metrics({key: 0.5 for key in EVAL_KEYS}, first)
            run.log_series("train/loss", first, losses[first : first + 100])
        run.log_metrics({"final/loss": losses[-1], "final/acc": 0.9}, iterations)
        run.log_artifact(str(weights))
        run.log_history()
    end = time.perf_counter()
    return {"seconds": end - start, "open": opened - start, "write": end - opened}


def two_jobs(uri: str, iterations: int, folder: Path, tag: str) -> list[dict[str, float]]:
    """Two job processes at once; each one's timings (`job`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", OPENBLAS_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, __file__, "_job", uri, f"{tag}-{i}", str(iterations), str(folder)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    seconds: list[dict[str, float]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"job failed ({proc.returncode}): {err[-2000:]}")
        seconds.append(json.loads(out.strip().splitlines()[-1]))
    return seconds


def sweep(uri: str, iterations: int, folder: Path, tag: str) -> float:
    """`train.py -m hydra/launcher=parallel optimizer=sgd,adam`: its wall seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    tracking = "tracking=server" if uri.startswith("http") else "tracking=local"
    cmd = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=parallel", "optimizer=sgd,adam", tracking,
           f"training.iterations={iterations}", "training.progress=false", "force=true",
           f"hydra.sweep.dir={folder}/multirun/{tag}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return time.perf_counter() - start


def table(results: dict[str, dict[str, list[float]]], what: dict[str, str]) -> str:
    """Markdown: per measure, each store's median (min-max) seconds and its ratio to SQLite's median."""
    stores = list(next(iter(results.values())))
    head = " | ".join(f"{s} median s (min–max)" for s in stores)
    ratios = " | ".join(f"{s} / sqlite" for s in stores if s != "sqlite")
    lines = [f"| measure | n | {head} | {ratios} |", "|---|---:|" + "---:|" * (2 * len(stores) - 1)]
    for measure, per_store in results.items():
        base = statistics.median(per_store["sqlite"])
        cells = " | ".join(f"{statistics.median(v):.3f} ({min(v):.2f}–{max(v):.2f})" for v in per_store.values())
        ratio = " | ".join(f"{statistics.median(v) / base:.2f}x" for s, v in per_store.items() if s != "sqlite")
        lines.append(f"| {what[measure]} | {len(per_store['sqlite'])} | {cells} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("jobs", "train", "both"), default="jobs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--stores", default=",".join(STORES), help=f"comma-separated, from {', '.join(STORES)}")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    stores = args.stores.split(",")
    if "sqlite" not in stores or not set(stores) <= set(STORES):
        parser.error(f"--stores {args.stores!r}: allowed {', '.join(STORES)}, sqlite included (the reference)")
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: must be >= 1")
    modes = ("jobs", "train") if args.mode == "both" else (args.mode,)
    measures = [m for mode in modes for m in (("seconds", "open", "write") if mode == "jobs" else ("train",))]

    from descentlab.server import start, stop
    from descentlab.server.postgres import Cluster, find_bin, run_as_user

    folder = Path(tempfile.mkdtemp(prefix="descentlab-bench-server-"))
    folder.chmod(0o755)  # PostgreSQL runs as `postgres` (when we are root) and must enter it
    data = folder / "server"
    results: dict[str, dict[str, list[float]]] = {m: {s: [] for s in stores} for m in measures}
    try:
        st = start(data, port=_free_port())
        uris = {"sqlite": f"sqlite:///{folder / 'local' / 'mlflow.db'}", "server": st.tracking_uri,
                "postgresql": st.database_uri}
        direct = Cluster(data, int(st.database_uri.rsplit(":", 1)[1].split("/")[0]), find_bin(), run_as_user())
        uris["postgresql"] = direct.create_database("direct")  # its own database: MLflow's schema, no server's rows
        from descentlab.tracking.store import open_store

        for store in stores:  # the schema first, in this process (parallel jobs race creating it), then a warm-up
            if store != "server":
                open_store(uris[store])
            two_jobs(uris[store], 100, folder, f"warm-{store}")
        for r in range(args.rounds):
            order = stores[r % len(stores):] + stores[: r % len(stores)]
            for mode in modes:
                for store in order:
                    if mode == "jobs":
                        timings = two_jobs(uris[store], args.iterations, folder, f"r{r}-{store}")
                        for measure in ("seconds", "open", "write"):
                            results[measure][store] += [t[measure] for t in timings]
                        shown = results["seconds"][store][-2:]
                    else:
                        results["train"][store].append(sweep(uris[store], args.iterations, folder, f"r{r}-{store}"))
                        shown = results["train"][store][-1:]
                    print(f"round {r + 1}/{args.rounds} {mode} {store}: {', '.join(f'{v:.3f}' for v in shown)} s",
                          file=sys.stderr, flush=True)
    finally:
        stop(data)
        shutil.rmtree(folder, ignore_errors=True)
    what = {"seconds": f"one job's tracking, all ({args.iterations} points + evals, 2 jobs at once)",
            "open": "… of which: open the store, find the experiment",
            "write": "… of which: log the run (params, points, artifacts, end)",
            "train": f"sweep wall time (train.py, 2 jobs x {args.iterations} it, parallel launcher)"}
    cmd = "python scripts/bench_tracking_server.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"Command: `{cmd.strip()}` ({args.rounds} rounds, stores alternated; load {load}; {os.cpu_count()} cores)\n")
    print(table(results, what))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "rounds": args.rounds, "iterations": args.iterations},
                                        indent=2))
    return 0


def _free_port() -> int:
    from descentlab.server.net import free_port

    return free_port()


def _job_main(argv: list[str]) -> int:
    uri, name, iterations, folder = argv
    print(json.dumps(job(uri, name, int(iterations), Path(folder))))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_job"]:
        sys.exit(_job_main(sys.argv[2:]))
    sys.exit(main())
