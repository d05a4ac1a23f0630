"""A tracking server for sweeps on many machines: PostgreSQL (or SQLite) behind MLflow's server, in one folder.

    python scripts/server.py start [--data DIR] [--port 5000] [--host 127.0.0.1] [--backend postgresql|sqlite]
                                   [--db-port N]
        initialise (first start) and start PostgreSQL in DIR/postgres (127.0.0.1 only, its socket in DIR), then
        MLflow's server on it with proxied artifacts in DIR/artifacts; the last stdout line is
        MLFLOW_TRACKING_URI=http://HOST:PORT. Options not given keep the values of the folder's last start.
    python scripts/server.py status [--data DIR] [--json]      exit 0 when running, 3 when not
    python scripts/server.py stop [--data DIR]                 MLflow server, then PostgreSQL

DIR defaults to <repo>/mlruns/server. Bad input: one `error:` line, exit 2, nothing left running.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "mlruns" / "server"


def cmd_start(args: argparse.Namespace) -> int:
    from descentlab.server import start

    st = start(args.data, port=args.port, host=args.host, backend=args.backend, db_port=args.db_port)
    print(f"MLFLOW_TRACKING_URI={st.tracking_uri}", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from descentlab.server import status

    st = status(args.data)
    if args.json:
        print(json.dumps(st.to_dict()))
    else:
        pids = ", ".join(f"{name} {pid}" for name, pid in st.pids.items() if pid) or "none"
        print(f"{'running' if st.running else 'not running'} ({st.backend}) in {st.data}")
        print(f"tracking URI: {st.tracking_uri}")
        print(f"database URI: {st.database_uri or '(not started yet)'}")
        print(f"pids: {pids}")
    return 0 if st.running else 3


def cmd_stop(args: argparse.Namespace) -> int:
    from descentlab.server import stop

    if stop(args.data):
        print(f"stopped the server in {args.data}", file=sys.stderr)
    else:
        print(f"already stopped: nothing runs in {args.data}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="server.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"data folder (default {DEFAULT_DATA})")
    start = sub.add_parser("start", parents=[data], help="start PostgreSQL and MLflow server")
    start.add_argument("--port", type=int, help="MLflow server's port (default: the folder's last, else 5000)")
    start.add_argument("--host", help="address to bind (default: the folder's last, else 127.0.0.1; anything "
                                      "else has no authentication)")
    start.add_argument("--backend", help="postgresql or sqlite (default: the folder's last, else postgresql)")
    start.add_argument("--db-port", type=int, help="PostgreSQL's port (default: a free one, chosen at first start)")
    start.set_defaults(func=cmd_start)
    status = sub.add_parser("status", parents=[data], help="exit 0 when running, 3 when not")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=cmd_status)
    sub.add_parser("stop", parents=[data], help="stop MLflow server, then PostgreSQL").set_defaults(func=cmd_stop)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from descentlab.server import ServerInputError, ServerStartError

    try:
        return int(args.func(args))
    except ServerInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
