"""A PostgreSQL cluster in a folder: found binaries, `initdb` once, `pg_ctl start/stop`, the `mlflow` database.

Why as another user: `initdb` and `postgres` refuse to run as root. Run as root, every PostgreSQL command runs as
the `postgres` system user (`runuser -u postgres`), which owns the cluster folder and the data folder (where its
Unix socket lives). The cluster listens on 127.0.0.1 only, with `trust` authentication: fine for loopback on a
machine whose users you trust; a shared server needs passwords and TLS (docs/scaling.md).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from descentlab.server.errors import ServerInputError, ServerStartError

__all__ = ["Cluster", "find_bin", "run_as_user"]

DATABASE = "mlflow"
SUPERUSER = "postgres"
TOOLS = ("initdb", "pg_ctl", "createdb", "psql", "postgres")
SOCKET_PATH_MAX = 107  # sun_path's limit on Linux, minus the terminating NUL


def find_bin() -> Path:
    """The folder holding initdb, pg_ctl, createdb, psql and postgres: $PG_BIN, else PATH, else Debian's newest
    /usr/lib/postgresql/N/bin. ServerInputError naming the places looked when there is none."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN"):
        candidates.append(Path(os.environ["PG_BIN"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                    if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += [Path(p) for p in debian]
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in TOOLS):
            return folder
    raise ServerInputError("PostgreSQL binaries not found (initdb, pg_ctl, createdb, psql, postgres searched in "
                           "$PG_BIN, on PATH and in /usr/lib/postgresql/*/bin); install PostgreSQL (Debian: "
                           "apt-get install postgresql) or use --backend sqlite")


def run_as_user() -> str | None:
    """The user PostgreSQL's commands run as: None (ourselves) unless we are root, then `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError:
        raise ServerInputError("running as root needs a 'postgres' system user to run PostgreSQL as (initdb and "
                               "postgres refuse root); create it (useradd --system postgres) or run as a "
                               "non-root user") from None
    return SUPERUSER


def _unreachable_parent(folder: Path, user: str) -> Path | None:
    """The first parent of `folder` that `user` may not enter (a 0700 folder of root's, like pytest's tmp)."""
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid} | {g for g in os.getgrouplist(user, entry.pw_gid)}
    for parent in reversed(folder.parents):
        st = parent.stat()
        bit = 0o100 if st.st_uid == entry.pw_uid else 0o010 if st.st_gid in groups else 0o001
        if not st.st_mode & bit:
            return parent
    return None


@dataclass
class Cluster:
    """The PostgreSQL cluster of a data folder: files in `data/postgres`, socket and log in `data`."""

    data: Path
    port: int
    bin: Path
    user: str | None

    @property
    def folder(self) -> Path:
        return self.data / "postgres"

    @property
    def log(self) -> Path:
        return self.data / "postgres.log"

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI of the `mlflow` database, the driver named (a bare postgresql:// means psycopg 3)."""
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _cmd(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / tool), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.data,
                                env={**os.environ, "LC_ALL": "C"})
        if check and result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            raise ServerStartError(f"{tool} failed (exit {result.returncode}): {detail[-1] if detail else ''}"
                                   f" (log: {self.log})")
        return result

    def check_reachable(self) -> None:
        """ServerInputError when the user PostgreSQL runs as cannot use the data folder (before anything starts)."""
        socket_path = self.data / f".s.PGSQL.{self.port}"
        if len(str(socket_path)) > SOCKET_PATH_MAX:
            raise ServerInputError(f"--data {self.data} is too long for PostgreSQL's Unix socket "
                                   f"({len(str(socket_path))} > {SOCKET_PATH_MAX} characters); use a shorter path")
        if self.user is None:
            return
        blocked = _unreachable_parent(self.data, self.user)
        if blocked is not None:
            raise ServerInputError(f"--data {self.data}: PostgreSQL runs as user {self.user!r}, which cannot enter "
                                   f"{blocked} (mode {blocked.stat().st_mode & 0o777:o}); use a folder whose "
                                   "parents it may enter (e.g. one made by `mktemp -d`)")

    def _own(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.folder / "PG_VERSION").is_file()

    def init(self) -> None:
        """`initdb` (UTF8, no locale, trust auth, superuser `postgres`); the folders owned by the user it runs as."""
        self.data.mkdir(parents=True, exist_ok=True)
        self._own(self.data)  # its socket and log live here
        self.folder.mkdir(mode=0o700, exist_ok=True)
        self._own(self.folder)
        self._cmd("initdb", "-D", str(self.folder), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale")

    def start(self) -> None:
        """`pg_ctl start -w`: listening on 127.0.0.1:port and on a Unix socket in the data folder."""
        self._own(self.data)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data}"
        self._cmd("pg_ctl", "-D", str(self.folder), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")

    def create_database(self) -> None:
        """The `mlflow` database, unless it exists (MLflow's migrations create its tables on first use)."""
        exists = self._cmd("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
                           "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", check=False)
        if exists.returncode == 0 and exists.stdout.strip() == "1":
            return
        self._cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE)

    def pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, when the file exists."""
        try:
            return int((self.folder / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        return self._cmd("pg_ctl", "-D", str(self.folder), "status", check=False).returncode == 0

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: open connections are closed, the cluster shuts down cleanly."""
        if self.folder.is_dir() and self.running():
            self._cmd("pg_ctl", "-D", str(self.folder), "-m", "fast", "-w", "-t", "60", "stop")
