"""A tracking server for many jobs: `mlflow server` with proxied artifacts on a PostgreSQL cluster (or a SQLite
file) kept in one data folder. `scripts/server.py` is its command line.

    from descentlab.server import start, status, stop
    st = start(Path("mlruns/server"))        # ServerStatus; st.tracking_uri is what jobs use
    stop(Path("mlruns/server"))
"""

from descentlab.server.control import BACKENDS, ServerStatus, start, status, stop
from descentlab.server.errors import ServerInputError, ServerStartError

__all__ = ["BACKENDS", "ServerInputError", "ServerStartError", "ServerStatus", "start", "status", "stop"]
