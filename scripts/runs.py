"""Look after the runs of an experiment when things went wrong.

    python scripts/runs.py list EXPERIMENT [--status RUNNING]   runs with status, name, pid/host, failure reason
    python scripts/runs.py repair EXPERIMENT [--timeout S] [--dry-run]
        mark RUNNING runs whose process is gone FAILED (pid dead on this host, or no heartbeat for S seconds;
        default 300, as tracking.stale_after_s); a sweep launch does this by itself
    python scripts/runs.py import-unsent FOLDER [--uri URI]
        send the metrics a run could not send (FOLDER holds unsent_run.json) and end the run

The store is $MLFLOW_TRACKING_URI, else <repo>/mlruns/mlflow.db (as for train.py); --uri overrides it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _client(uri: str | None) -> Any:
    from descentlab.analysis.runs import default_tracking_uri
    from descentlab.tracking.store import open_store

    return open_store(uri or default_tracking_uri())


def _experiment_id(client: Any, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise LookupError(f"no experiment {name!r} in {client.tracking_uri}; experiments: {', '.join(names) or 'none'}")
    return exp.experiment_id


def cmd_list(args: argparse.Namespace) -> int:
    from descentlab.tracking.liveness import HEARTBEAT_TAG, HOST_TAG, PID_TAG
    from descentlab.tracking.search import search_pages

    client = _client(args.uri)
    exp = _experiment_id(client, args.experiment)
    where = f"attributes.status = '{args.status}'" if args.status else ""
    count = 0
    for page in search_pages(client, exp, where, order_by=["attributes.start_time ASC"]):  # every run, page by page
        for run in page:
            tags = run.data.tags
            who = f"pid {tags[PID_TAG]}@{tags.get(HOST_TAG, '?')}" if PID_TAG in tags else "-"
            beat = f"heartbeat {tags[HEARTBEAT_TAG]}" if HEARTBEAT_TAG in tags else ""
            reason = tags.get("failure_reason") or tags.get("error") or ""
            line = f"{run.info.run_id}  {run.info.status:<8}  {run.info.run_name or '':<40}  {who}  {beat}  {reason}"
            print(line.rstrip())
        count += len(page)
    print(f"{count} runs", file=sys.stderr)
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from descentlab.tracking.repair import repair_experiment

    client = _client(args.uri)
    stale = repair_experiment(client, _experiment_id(client, args.experiment), timeout_s=args.timeout,
                              dry_run=args.dry_run)
    verb = "would mark" if args.dry_run else "marked"
    for s in stale:
        print(f"{verb} FAILED: {s.run_id} ({s.run_name}): {s.reason}")
    print(f"{len(stale)} stale runs {verb.split()[-1]} FAILED", file=sys.stderr)
    return 0


def cmd_import_unsent(args: argparse.Namespace) -> int:
    from descentlab.tracking.unsent import import_unsent

    done = import_unsent(args.folder, tracking_uri=args.uri)
    print(f"imported {done['n_points']} points into run {done['run_id']} "
          f"(was {done['previous_status']}, now {done['status']})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uri", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI or <repo>/mlruns)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="runs of an experiment")
    p.add_argument("experiment")
    p.add_argument("--status", choices=["RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED"], default=None)
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("repair", help="mark runs whose process is gone FAILED")
    p.add_argument("experiment")
    p.add_argument("--timeout", type=float, default=None, help="heartbeat timeout in seconds (default 300)")
    p.add_argument("--dry-run", action="store_true", help="only report what would be marked")
    p.set_defaults(func=cmd_repair)
    p = sub.add_parser("import-unsent", help="send metrics saved when the tracking store went away")
    p.add_argument("folder", type=Path, help="the job folder holding unsent_run.json")
    p.set_defaults(func=cmd_import_unsent)
    args = parser.parse_args(argv)
    if getattr(args, "timeout", None) is not None and not args.timeout > 0:
        parser.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    try:
        return args.func(args)
    except (LookupError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from descentlab.tracking.store import TrackingUnavailableError

        if isinstance(exc, TrackingUnavailableError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
