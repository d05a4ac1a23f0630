"""Compare two checkouts of descentlab side by side: each one's own `bench.py` and `bench_sweep.py`, alternated.

Why: a redesign must keep the speed it had. Numbers taken hours apart on a shared machine differ by more than
the change under test, so both trees run in one call, in turn (A B, then B A, ...), and the report quotes each
tree's medians and their ratio. Each tree is run with its own `src/` on PYTHONPATH and its own scripts, so the
old tree is measured exactly as it was.

    python scripts/bench_trees.py --base ../old-checkout --write docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MARK_BEGIN, MARK_END = "<!-- bench:trees:begin -->", "<!-- bench:trees:end -->"
CORE_RATIOS = ("core / floor", "torch default / core", "book / core",
               "layer by layer / core (the fused loop's gain)", "numpy backend / core (numba's gain)")


def git_head(tree: Path) -> str:
    proc = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or "?"


def run_json(tree: Path, script: str, args: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """Run `tree`'s own `scripts/<script>` with its own package; its `--json` report."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    cmd = [sys.executable, str(tree / "scripts" / script), *args, "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def core_numbers(report: dict[str, Any]) -> dict[str, float]:
    """`bench.py`'s ratios of medians, per optimizer, under flat names."""
    return {f"{label} [{opt}]": value for label in CORE_RATIOS
            for opt, value in report.get("ratios", {}).get(label, {}).items()}


def sweep_numbers(report: dict[str, Any]) -> dict[str, float]:
    """`bench_sweep.py`'s per-job tracking cost in a warm worker and the tracked start-up to the first step."""
    out: dict[str, float] = {}
    warm = report.get("tracking_warm")
    if warm:
        out["tracking per warm job, s"] = statistics.median(warm["local"]) - statistics.median(warm["none"])
        out["tracked warm job, s"] = statistics.median(warm["local"])
    first = (report.get("startup") or {}).get("first_step", {})
    for mode, values in first.items():
        out[f"start-up to first step ({mode}), s"] = statistics.median(values)
    return out


def measure(trees: dict[str, Path], rounds: int, iterations: int, tracking_repeats: int) -> dict[str, Any]:
    """Every round runs both trees, the order swapped each round; values per tree and metric, one per round."""
    values: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in trees}
    names = list(trees)
    with tempfile.TemporaryDirectory(prefix="bench-trees-") as tmp:
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                tree = trees[name]
                t0 = time.perf_counter()
                core = run_json(tree, "bench.py", ["--iterations", str(iterations), "--repeats", "1", "--no-profile",
                                                   "--eval-datasets", "none"], Path(tmp) / f"core-{name}-{r}.json",
                                timeout=3600)
                sweep = run_json(tree, "bench_sweep.py", ["--only", "tracking,startup", "--repeats", "1",
                                                          "--tracking-repeats", str(tracking_repeats)],
                                 Path(tmp) / f"sweep-{name}-{r}.json", timeout=3600)
                for key, value in {**core_numbers(core), **sweep_numbers(sweep)}.items():
                    values[name][key].append(value)
                print(f"round {r + 1}/{rounds}: {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                      flush=True)
    return {"trees": {name: {"path": str(tree), "git": git_head(tree)} for name, tree in trees.items()},
            "settings": {"rounds": rounds, "iterations": iterations, "tracking_repeats": tracking_repeats},
            "loadavg": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "values": {name: dict(v) for name, v in values.items()}}


def markdown(report: dict[str, Any]) -> str:
    """One table: each metric's median per tree and the ratio new/base."""
    trees, s = report["trees"], report["settings"]
    base, new = "base", "new"
    lines = [f"Both trees in one call, alternated ({s['rounds']} rounds; `bench.py --iterations {s['iterations']} "
             f"--repeats 1 --no-profile`, `bench_sweep.py --only tracking,startup --tracking-repeats "
             f"{s['tracking_repeats']}` per round); {report['date']}; load average at the end "
             f"{', '.join(f'{x:.2f}' for x in report['loadavg'])}. base = {trees[base]['git']}, "
             f"new = {trees[new]['git']}.", "",
             "| metric | base (median) | new (median) | new / base |", "|---|---:|---:|---:|"]
    vb, vn = report["values"][base], report["values"][new]
    for key in dict.fromkeys([*vb, *vn]):
        if key in vb and key in vn:
            b, n = statistics.median(vb[key]), statistics.median(vn[key])
            lines.append(f"| {key} | {b:.3f} | {n:.3f} | {n / b:.3f} |")
        else:  # a piece only one tree can switch off
            cells = [f"{statistics.median(v[key]):.3f}" if key in v else "–" for v in (vb, vn)]
            lines.append(f"| {key} | {cells[0]} | {cells[1]} | – |")
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the text between the markers in `path` (appended with a heading the first time)."""
    doc = path.read_text() if path.exists() else ""
    block = f"{MARK_BEGIN}\n{text}\n{MARK_END}"
    if MARK_BEGIN in doc and MARK_END in doc:
        head, rest = doc.split(MARK_BEGIN, 1)
        doc = head + block + rest.split(MARK_END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n## Two trees side by side\n\n" + block + "\n"
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", type=Path, required=True, help="the other checkout (e.g. a git worktree of the old "
                   "commit)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running both trees (default 3)")
    p.add_argument("--iterations", type=int, default=1000, help="bench.py iterations per timed run (default 1000)")
    p.add_argument("--tracking-repeats", type=int, default=3, help="bench_sweep.py tracking repeats (default 3)")
    p.add_argument("--write", type=Path, help="replace the bench:trees section of this Markdown file")
    p.add_argument("--json", type=Path, help="also write the raw values as JSON here")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="pool the rounds of an earlier --json report of the same two trees (repeatable)")
    args = p.parse_args(argv)
    if not (args.base / "scripts" / "bench.py").is_file():
        p.error(f"--base must be a descentlab checkout with scripts/bench.py, got {str(args.base)!r}")
    report = measure({"base": args.base.resolve(), "new": REPO}, args.rounds, args.iterations,
                     args.tracking_repeats)
    for earlier in args.also:  # more rounds of the same comparison, measured in an earlier call
        old = json.loads(earlier.read_text())
        report["settings"]["rounds"] += old["settings"]["rounds"]
        for tree, values in old["values"].items():
            for key, rounds in values.items():
                report["values"][tree].setdefault(key, []).extend(rounds)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.write:
        write_section(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
