#!/usr/bin/env python
"""Benchmark whole processes: the headline sweep per launcher, what tracking costs a run, and process start-up.

    python scripts/bench_sweep.py                      # 3 repeats of each, alternated
    python scripts/bench_sweep.py --repeats 2 --write docs/benchmarks.md --json sweep.json

(1) `train.py -m optimizer=sgd,momentum,adagrad,adam training.progress=false` with the basic launcher and with
`hydra/launcher=parallel`, each against a fresh temporary store (MLFLOW_TRACKING_URI=sqlite:///TMP/mlflow.db,
hydra.sweep.dir in TMP), the two alternated; then the same with `seed=0,1,2` (12 jobs).
(2) `train.py optimizer=adam force=true` with `tracking.store_every=1`, with a huge store_every (only each
metric's last point stored) and, when conf/tracking/none.yaml exists, with `tracking=none`, alternated against
one warmed-up temporary store: the run's own training time (from its `[name] step N/N ... (R it/s)` line) and
the process wall time; and the same job run again and again in one warm process (as a sweep worker runs its
second and later jobs), tracked vs `tracking=none` alternated.
(3) Start-up: process start to the `step 0/` line printed just before the first training step, and `import
mlflow` (and others) alone. `--write FILE` replaces the `<!-- bench:sweep:start/end -->` section of FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import _loadavg, machine_info, publish  # the sibling script

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "train.py"
SWEEP = "optimizer=sgd,momentum,adagrad,adam"
START, END = "<!-- bench:sweep:start -->", "<!-- bench:sweep:end -->"
RATE = re.compile(r"\] step (\d+)/(\d+) .*\((\d+(?:\.\d+)?) it/s\)")
HUGE = 10**9


def clean_env(tmp: Path) -> dict[str, str]:
    """The environment with a temporary store; MLflow/Hydra variables dropped; OPENBLAS_* left as they are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HYDRA_"))}
    env.update({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONUNBUFFERED": "1"})
    return env


def run_train(args: Sequence[str], tmp: Path, timeout: float = 900) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and the finished process of `python train.py ARGS` with its outputs in `tmp`."""
    cmd = [sys.executable, str(TRAIN), *args, f"hydra.run.dir={tmp}/outputs/{time.time_ns()}",
           f"hydra.sweep.dir={tmp}/multirun/{time.time_ns()}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=clean_env(tmp), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc


def train_seconds(stderr: str) -> float | None:
    """The run's training time from its last progress line: N iterations / (N it/s)."""
    found = RATE.findall(stderr)
    if not found:
        return None
    step, _, rate = found[-1]
    return int(step) / float(rate) if float(rate) > 0 else None


def bench_launchers(repeats: int, extra: Sequence[str] = (), jobs: int = 4) -> dict[str, list[float]]:
    """Wall time of the four-optimizer sweep (times `extra`'s values) per launcher, alternated, a fresh store each."""
    walls: dict[str, list[float]] = defaultdict(list)
    launchers = {"basic": [], "parallel": ["hydra/launcher=parallel"]}
    for rep in range(repeats):
        order = list(launchers) if rep % 2 == 0 else list(reversed(launchers))
        for name in order:
            with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
                wall, proc = run_train(["-m", SWEEP, *extra, "training.progress=false", *launchers[name]], Path(tmp))
                if f"{jobs} finished" not in proc.stderr:
                    raise RuntimeError(f"the {name} sweep did not finish {jobs} runs:\n{proc.stderr[-2000:]}")
            walls[name].append(wall)
            print(f"  sweep ({jobs} jobs) {name} {rep + 1}/{repeats}: {wall:.1f} s", file=sys.stderr, flush=True)
    return dict(walls)


def tracking_modes() -> dict[str, list[str]]:
    """Tracking variants of one run: the config's default, store_every=1 if that differs, huge, tracking=none."""
    default = 1
    conf = REPO / "conf" / "tracking" / "local.yaml"
    match = re.search(r"^store_every:\s*(\d+)", conf.read_text(), re.M) if conf.exists() else None
    if match:
        default = int(match.group(1))
    modes = {f"default (store_every={default})": []}
    if default != 1:
        modes["store_every=1"] = ["tracking.store_every=1"]
    modes["store_every=huge (last point only)"] = [f"tracking.store_every={HUGE}"]
    if (REPO / "conf" / "tracking" / "none.yaml").exists():
        modes["tracking=none"] = ["tracking=none"]
    return modes


def bench_tracking(repeats: int) -> dict[str, dict[str, list[float]]]:
    """Training time and wall time of one Adam run per tracking mode, alternated, against one warmed-up store."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    modes = tracking_modes()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        run_train(["optimizer=adam", "training.iterations=10", "force=true"], Path(tmp))  # creates the store
        for rep in range(repeats):
            names = list(modes)
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                wall, proc = run_train(["optimizer=adam", "force=true", *modes[name]], Path(tmp))
                out[name]["wall"].append(wall)
                seconds = train_seconds(proc.stderr)
                if seconds is not None:
                    out[name]["train"].append(seconds)
                print(f"  tracking {name} {rep + 1}/{repeats}: wall {wall:.2f} s, train {seconds} s",
                      file=sys.stderr, flush=True)
    return {k: dict(v) for k, v in out.items()}


# One worker process of a sweep: Hydra composes the job config once, then `app.run` runs one job after
# another in the same (warm) process, tracked and untracked alternated; prints the seconds of each job and of
# its training (the time in `fit` less the tracker calls `fit`'s callbacks made, which belong to tracking).
WARM_JOBS = r"""
import json, sys, time
from hydra import compose, initialize_config_dir
from descentlab.config import register_schemas
register_schemas()
from descentlab import app, training
from descentlab.tracking.null import NullTracker
from descentlab.tracking.run import RunTracker
repeats, conf = int(sys.argv[1]), sys.argv[2]
clock = {"fit": 0.0, "calls": 0.0, "in_fit": False}

def timed_fit(*args, _fit=training.fit, **kwargs):
    clock["in_fit"], start = True, time.perf_counter()
    try:
        return _fit(*args, **kwargs)
    finally:
        clock["fit"] += time.perf_counter() - start
        clock["in_fit"] = False

def timed_call(method):
    def call(*args, **kwargs):
        if not clock["in_fit"]:
            return method(*args, **kwargs)
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            clock["calls"] += time.perf_counter() - start
    return call

training.fit = timed_fit  # app's task imports fit from the module at each job
for cls in (RunTracker, NullTracker):
    for name in ("log_series", "log_metrics"):
        setattr(cls, name, timed_call(getattr(cls, name)))
with initialize_config_dir(config_dir=conf, version_base="1.3"):
    cfgs = {k: compose("config", overrides=["optimizer=adam", "force=true", "training.progress=false", f"tracking={k}"])
            for k in ("local", "none")}
for k in ("local", "none"):
    app.run(cfgs[k])  # warm-up: imports, first plot, the store's first connection
out = {"local": [], "none": [], "local_train": [], "none_train": []}
for i in range(repeats):
    for k in (("local", "none") if i % 2 else ("none", "local")):
        clock.update(fit=0.0, calls=0.0)
        t = time.perf_counter()
        app.run(cfgs[k])
        out[k].append(time.perf_counter() - t)
        out[k + "_train"].append(clock["fit"] - clock["calls"])
print("WARM " + json.dumps(out))
"""


def bench_tracking_warm(repeats: int) -> dict[str, list[float]]:
    """Seconds per job of a warm process (a sweep's worker after its first job), tracked vs `tracking=none`."""
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        # paths.root is the folder above the composed conf/ (this checkout): runs record its git state, as jobs do.
        env = {**clean_env(Path(tmp)), "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.run([sys.executable, "-c", WARM_JOBS, str(repeats), str(REPO / "conf")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=1800)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WARM ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"warm tracking benchmark failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    out = json.loads(line[5:])
    print(f"  warm jobs: tracked {med(out['local']):.3f} s, untracked {med(out['none']):.3f} s",
          file=sys.stderr, flush=True)
    return out


def time_to_first_step(args: Sequence[str], tmp: Path) -> tuple[float, float]:
    """(seconds from process start to the `step 0/` line, process wall seconds) of a 1-iteration run."""
    cmd = [sys.executable, str(TRAIN), *args, "training.iterations=1", "force=true",
           f"hydra.run.dir={tmp}/outputs/{time.time_ns()}"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=clean_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    first: float | None = None
    assert proc.stderr is not None
    tail: list[str] = []
    for line in proc.stderr:
        if first is None and "] step 0/" in line:
            first = time.perf_counter() - start
        tail = [*tail[-20:], line]
    proc.wait(timeout=300)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or first is None:
        raise RuntimeError(f"start-up run failed ({proc.returncode}):\n{''.join(tail)}")
    return first, wall


def import_seconds(statement: str, repeats: int) -> float:
    """Median wall seconds of `python -c STATEMENT` (interpreter start included)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], cwd=REPO, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def importtime_top(tmp: Path, n: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time (-X importtime) in a 1-iteration tracked run."""
    cmd = [sys.executable, "-X", "importtime", str(TRAIN), "optimizer=adam", "training.iterations=1", "force=true",
           f"hydra.run.dir={tmp}/outputs/{time.time_ns()}"]
    proc = subprocess.run(cmd, cwd=REPO, env=clean_env(tmp), capture_output=True, text=True, timeout=300)
    totals: dict[str, float] = defaultdict(float)
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # top level: imported directly, not by another module
            totals[m.group(3).split(".")[0]] += int(m.group(1)) / 1e6
    return [(k, v) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:n] if v >= 0.005]


def bench_startup(repeats: int) -> dict[str, Any]:
    """Time to the first training step (tracked and untracked) and bare import times."""
    out: dict[str, Any] = {"first_step": defaultdict(list), "wall": defaultdict(list)}
    modes = {"tracking=local": []}
    if (REPO / "conf" / "tracking" / "none.yaml").exists():
        modes["tracking=none"] = ["tracking=none"]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        time_to_first_step(["optimizer=adam"], Path(tmp))  # creates the store: later runs find it
        for _ in range(repeats):
            for name, extra in modes.items():
                first, wall = time_to_first_step(["optimizer=adam", *extra], Path(tmp))
                out["first_step"][name].append(first)
                out["wall"][name].append(wall)
        out["importtime_top"] = importtime_top(Path(tmp))
    out["imports"] = {stmt: import_seconds(stmt, repeats) for stmt in
                      ("pass", "import numpy", "import mlflow", "import hydra, omegaconf", "import descentlab.app")}
    out["first_step"], out["wall"] = dict(out["first_step"]), dict(out["wall"])
    return out


def warm_outside_training(warm: dict[str, list[float]]) -> tuple[float, float] | None:
    """Median seconds per job outside the training loop (tracked, untracked), when the run recorded it."""
    if not warm.get("local_train") or not warm.get("none_train"):
        return None
    def outside(kind: str) -> float:
        return med([job - train for job, train in zip(warm[kind], warm[kind + "_train"], strict=True)])

    return outside("local"), outside("none")


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown(report: dict[str, Any]) -> str:
    """The sweep, tracking and start-up results as Markdown tables."""
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; {m['date']}; descentlab at {m['git']}; "
             f"load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')}; "
             f"{report['settings']['repeats']} repeats ({report['settings']['tracking_repeats']} for tracking), "
             "alternated.", ""]
    sweep = report.get("launchers")
    if sweep:
        lines += ["**Four-optimizer sweep** (`python train.py -m optimizer=sgd,momentum,adagrad,adam "
                  "training.progress=false`, a fresh store each time)", "",
                  "| launcher | median wall s | min | runs |", "|---|---:|---:|---:|"]
        for name, walls in sweep.items():
            lines.append(f"| {name} | {med(walls):.1f} | {min(walls):.1f} | {len(walls)} |")
        if "basic" in sweep and "parallel" in sweep:
            speedup = med(sweep["basic"]) / med(sweep["parallel"])
            lines += ["", f"Speed-up of `hydra/launcher=parallel`: **{speedup:.2f}x** (ratio of medians)."]
    long = report.get("launchers_12")
    if long and "basic" in long and "parallel" in long:
        lines += ["", "The same with three seeds, 12 jobs (`... seed=0,1,2`; a process's fixed cost is spread over "
                  "more jobs): " + ", ".join(f"{name} {med(w):.1f} s (min {min(w):.1f})" for name, w in long.items())
                  + f"; speed-up **{med(long['basic']) / med(long['parallel']):.2f}x**."]
    tracking = report.get("tracking")
    if tracking:
        ref = tracking.get("tracking=none")
        lines += ["", "**Tracking cost of one run** (`python train.py optimizer=adam force=true` against a warmed-up "
                  "store; training = the run's own `N/N (R it/s)` line)", "",
                  "| tracking | training s, median (min) | process wall s, median (min) | wall vs tracking=none |",
                  "|---|---:|---:|---:|"]
        for name, v in tracking.items():
            rel = f"+{med(v['wall']) - med(ref['wall']):.2f} s ({med(v['wall']) / med(ref['wall']) - 1:+.0%})" \
                if ref and name != "tracking=none" else "–"
            train = v.get("train") or [float("nan")]
            wall = v["wall"]
            cells = f"{med(train):.2f} ({min(train):.2f}) | {med(wall):.2f} ({min(wall):.2f})"
            lines.append(f"| {name} | {cells} | {rel} |")
        default = next((v for k, v in tracking.items() if k.startswith("default")), None)
        if ref and default and default.get("train") and ref.get("train"):
            lines += ["", "Tracking's share of the default run (1 − untracked/tracked): "
                      f"training time {1 - med(ref['train']) / med(default['train']):.1%} by medians, "
                      f"{1 - min(ref['train']) / min(default['train']):.1%} by minima; process wall time "
                      f"{1 - med(ref['wall']) / med(default['wall']):.1%} (the mlflow import, store connection, "
                      "params, metric writes and artifacts)."]
    warm = report.get("tracking_warm")
    if warm:
        t, n = med(warm["local"]), med(warm["none"])
        lines += ["", f"**Tracking cost per job in a warm process** (a sweep worker after its first job: `app.run` of "
                  f"the Adam job, {len(warm['local'])} tracked and {len(warm['none'])} untracked, alternated; "
                  "imports and the store connection are paid once per process, see start-up; `paths.root` "
                  "is the checkout, as under train.py)", "",
                  "| job | median s | min s |", "|---|---:|---:|",
                  f"| tracked (tracking=local) | {t:.3f} | {min(warm['local']):.3f} |",
                  f"| untracked (tracking=none) | {n:.3f} | {min(warm['none']):.3f} |", "",
                  f"Tracking's share of a tracked job: {t - n:.3f} s = {1 - n / t:.1%} by medians "
                  f"({1 - min(warm['none']) / min(warm['local']):.1%} by minima)."]
        outside = warm_outside_training(warm)
        if outside:
            tracked, untracked = outside
            lines += [f"Each job's time outside training (the job less its training loop; what tracking adds is "
                      f"there, and the loop's run-to-run spread is not): tracked {tracked:.3f} s, untracked "
                      f"{untracked:.3f} s (medians): tracking costs {tracked - untracked:.3f} s = "
                      f"{(tracked - untracked) / t:.1%} of a tracked job."]
    start = report.get("startup")
    if start:
        lines += ["", "**Start-up** (process start to the `step 0/` line printed just before the first training "
                  "step, 1-iteration run, existing store)", "", "| run | to first step s | process wall s |",
                  "|---|---:|---:|"]
        for name, firsts in start["first_step"].items():
            lines.append(f"| `train.py optimizer=adam {name}` | {med(firsts):.2f} | {med(start['wall'][name]):.2f} |")
        imports = start["imports"]
        base = imports.get("pass", 0.0)
        lines += ["", "Bare `python -c` wall times: " + ", ".join(
            f"`{stmt}` {sec:.2f} s" + (f" (+{sec - base:.2f})" if stmt != "pass" else "")
            for stmt, sec in imports.items()) + "."]
        if start.get("importtime_top"):
            lines.append("Largest top-level imports of a tracked run (`-X importtime`, cumulative): " + ", ".join(
                f"{name} {sec:.2f} s" for name, sec in start["importtime_top"]) + ".")
    lines += targets_markdown(report)
    return "\n".join(lines) + "\n"


def targets_markdown(report: dict[str, Any]) -> list[str]:
    """Issue 5's process-level targets from this run's medians."""
    rows: list[tuple[str, str, bool]] = []
    sweep = report.get("launchers") or {}
    if "basic" in sweep and "parallel" in sweep:
        x = med(sweep["basic"]) / med(sweep["parallel"])
        rows.append(("parallel sweep ≥ 1.8× faster than basic", f"{x:.2f}×", x >= 1.8))
    tracking = report.get("tracking") or {}
    ref = tracking.get("tracking=none")
    default = next((v for k, v in tracking.items() if k.startswith("default")), None)
    if ref and default:
        x = 1 - med(ref["wall"]) / med(default["wall"])
        rows.append(("tracking ≤ 3% of a run's wall time", f"{x:.1%}", x <= 0.03))
        if ref.get("train") and default.get("train"):
            x = 1 - med(ref["train"]) / med(default["train"])
            rows.append(("… of the run's training time only", f"{x:.1%}", x <= 0.03))
    warm = report.get("tracking_warm")
    if warm:
        x = 1 - med(warm["none"]) / med(warm["local"])
        rows.append(("… per job in a warm process (sweep worker)", f"{x:.1%}", x <= 0.03))
        outside = warm_outside_training(warm)
        if outside:
            x = (outside[0] - outside[1]) / med(warm["local"])
            rows.append(("… the same, from the time outside training", f"{x:.1%}", x <= 0.03))
    start = (report.get("startup") or {}).get("first_step", {})
    for name, firsts in start.items():
        rows.append((f"start-up < 3 s ({name})", f"{med(firsts):.2f} s", med(firsts) < 3.0))
    if not rows:
        return []
    return ["", "**Targets of issue 5** (medians from this run)", "", "| target | measured | met |", "|---|---:|---|",
            *[f"| {label} | {value} | {'yes' if ok else '**no**'} |" for label, value, ok in rows]]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="repeats of each measurement (default 3)")
    p.add_argument("--tracking-repeats", type=int, default=5, help="repeats of the tracking comparison (default 5)")
    p.add_argument("--only", default="launchers,launchers12,tracking,startup",
                   help="comma-separated parts to run: launchers, launchers12 (the 12-job sweep), tracking, startup")
    p.add_argument("--write", type=Path, help="replace the bench:sweep section of this Markdown file")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.tracking_repeats < 1:
        p.error("--repeats and --tracking-repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parts = {x.strip() for x in args.only.split(",") if x.strip()}
    if shutil.which("git") is None:
        print("note: git not found; the commit is not recorded", file=sys.stderr)
    report: dict[str, Any] = {"machine": machine_info(1), "settings": {"repeats": args.repeats, "parts": sorted(parts),
                                                                       "tracking_repeats": args.tracking_repeats}}
    if "launchers" in parts:
        report["launchers"] = bench_launchers(args.repeats)
    if "launchers12" in parts:
        report["launchers_12"] = bench_launchers(max(1, args.repeats - 1), ["seed=0,1,2"], jobs=12)
    if "tracking" in parts:
        report["tracking"] = bench_tracking(args.tracking_repeats)
        report["tracking_warm"] = bench_tracking_warm(2 * args.tracking_repeats)
    if "startup" in parts:
        report["startup"] = bench_startup(args.repeats)
    report["machine"]["loadavg_end"] = _loadavg()
    publish("bench_sweep.py", argv, markdown(report), report, args, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
