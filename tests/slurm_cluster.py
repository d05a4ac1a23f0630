"""A real single-node SLURM cluster (Debian's slurm-wlm, munge, slurmdbd on MariaDB) in one folder, for tests and
benchmarks: started in the order the daemons need, on 127.0.0.1 and free ports only, and stopped completely.

Why a helper of our own: there is no systemd here and the packaged configuration listens on every interface. Every
daemon runs in the foreground as a child started here, so its pid is known from the start (written to
`<folder>/pids/`), and `stop()` can end all of them even when the start failed halfway. Keys, sockets, state, logs
and the accounting database live in the folder; /etc is only read. One exception: SLURM's clients (sacctmgr,
sbatch) ignore `AuthInfo=socket=` here and always use munge's default socket, /run/munge/munge.socket.2, so munged
listens there (with a key of our own, enough on one node); a munged already serving that socket is used as it is
and left running.

Use from Python (`with SlurmCluster(folder) as cluster: subprocess.run([...], env=cluster.env())`) or from a shell:

    python tests/slurm_cluster.py start /tmp/slurm   # prints `export SLURM_CONF=...` lines
    python tests/slurm_cluster.py stop /tmp/slurm

`unavailable()` says why a cluster cannot start here (not root, binaries missing), for a test's skip reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["BINARIES", "SlurmCluster", "unavailable"]

BINARIES = ("munged", "munge", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sacctmgr", "sinfo",
            "sbatch", "sacct", "scancel", "squeue", "runuser")
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
CLUSTER = "ci"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # the only one SLURM 22.05's clients use
ORDER = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")  # start order; stopped in reverse


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "a SLURM cluster needs root (munged and slurmd switch users)"
    missing = [name for name in BINARIES if which(name) is None]
    if missing:
        return ("SLURM is not installed (missing " + ", ".join(missing) + "): apt-get install -y "
                "--no-install-recommends slurm-wlm munge slurmdbd mariadb-server")
    for user in ("munge", "mysql"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no {user!r} system user (the munge and mariadb-server packages create it)"
    return None


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SlurmCluster:
    """One node (this host, at 127.0.0.1), one partition `debug`, accounting through slurmdbd so `sacct` reports
    COMPLETED, CANCELLED and FAILED jobs (submitit reads job states from it)."""

    def __init__(self, folder: str | os.PathLike[str], cpus: int | None = None, memory_mb: int = 4000) -> None:
        self.folder = Path(folder).absolute()
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self.host = socket.gethostname().split(".")[0]
        self.pids = self.folder / "pids"
        self.conf = self.folder / "etc" / "slurm.conf"
        self.munge_socket = MUNGE_SOCKET
        self.mysql_socket = self.folder / "mysql" / "mysqld.sock"
        self.timings: dict[str, float] = {}  # seconds per start step, and for stop()

    # -- what clients need --------------------------------------------------------------------------
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) plus what SLURM's clients (sbatch, sacct, submitit) need."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        path = env.get("PATH", "")
        env["PATH"] = os.pathsep.join([path, *[d for d in SBIN if d not in path.split(os.pathsep)]]).strip(os.pathsep)
        return env

    def __enter__(self) -> SlurmCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> dict[str, str]:
        """Start every daemon and wait until the node is idle; on any failure stop what started, then raise."""
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self.env()

    def _start(self, timeout: float) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)  # munge and mysql must reach their folders inside
        closed = [str(p) for p in self.folder.parents if not p.stat().st_mode & 0o001]
        if closed:
            raise RuntimeError(f"{self.folder} is not reachable by the munge and mysql users: {closed[0]} is not "
                               "searchable by others (chmod o+x it, or use a folder made with mode 755)")
        for sub in ("pids", "etc", "log", "state", "spool"):
            (self.folder / sub).mkdir(exist_ok=True)
        ctld_port, slurmd_port, dbd_port = free_ports(3)
        self._write_configs(ctld_port, slurmd_port, dbd_port)

        step = time.monotonic()
        self._start_munge()
        self._wait(lambda: self._ok(["munge", "-n"]), "munged", deadline)
        self._step("munged", step)

        step = time.monotonic()
        self._start_mariadb()
        self._wait(lambda: self.mysql_socket.exists(), "mariadbd", deadline)
        self._step("mariadbd", step)

        step = time.monotonic()
        self._spawn("slurmdbd", [which("slurmdbd"), "-D"])
        self._wait(lambda: self._ok(["sacctmgr", "-n", "list", "cluster"]), "slurmdbd", deadline)
        self._run(["sacctmgr", "-i", "add", "cluster", CLUSTER])
        self._step("slurmdbd", step)

        step = time.monotonic()
        self._spawn("slurmctld", [which("slurmctld"), "-D", "-i"])
        self._wait(lambda: self._ok(["sinfo", "-h"]), "slurmctld", deadline)
        self._step("slurmctld", step)

        step = time.monotonic()
        self._spawn("slurmd", [which("slurmd"), "-D"])
        self._wait(self._idle, "slurmd (node idle)", deadline)
        self._step("slurmd", step)
        self.timings["start"] = time.monotonic() - t0

    def _write_configs(self, ctld_port: int, slurmd_port: int, dbd_port: int) -> None:
        f = self.folder
        self.conf.write_text(f"""\
ClusterName={CLUSTER}
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldPidFile={f}/state/slurmctld.pid
SlurmdPidFile={f}/spool/slurmd.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SrunPortRange=60001-60100
KillWait=10
MinJobAge=300
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
""")
        dbd = self.conf.with_name("slurmdbd.conf")
        dbd.write_text(f"""\
AuthType=auth/munge
DbdHost={self.host}
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
CommunicationParameters=NoInAddrAny
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile={f}/log/slurmdbd.log
PidFile={f}/state/slurmdbd.pid
""")
        dbd.chmod(0o600)  # slurmdbd refuses a readable one

    def _start_munge(self) -> None:
        if self._ok(["munge", "-n"]):
            return  # a munged serves the default socket already (the system's, or another cluster's): use it
        folder = self.folder / "munge"
        folder.mkdir(exist_ok=True)
        key = folder / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        munge = pwd.getpwnam("munge")
        for path in (folder, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        folder.chmod(0o700)
        run = self.munge_socket.parent
        run.mkdir(mode=0o755, exist_ok=True)
        os.chown(run, munge.pw_uid, munge.pw_gid)
        self._spawn("munged", ["runuser", "-u", "munge", "--", which("munged"), "--foreground", "--force",
                               f"--key-file={key}", f"--socket={self.munge_socket}",
                               f"--pid-file={folder}/munged.pid", f"--log-file={self.folder}/log/munged.log",
                               f"--seed-file={folder}/munged.seed"])

    def _start_mariadb(self) -> None:
        data, folder = self.folder / "mysql" / "data", self.mysql_socket.parent
        folder.mkdir(exist_ok=True)
        mysql = pwd.getpwnam("mysql")
        os.chown(folder, mysql.pw_uid, mysql.pw_gid)
        if not data.exists():
            self._run([which("mariadb-install-db"), "--no-defaults", "--user=mysql", f"--datadir={data}",
                       "--auth-root-authentication-method=socket", "--skip-test-db"], timeout=120)
        self._spawn("mariadbd", [which("mariadbd"), "--no-defaults", "--user=mysql", f"--datadir={data}",
                                 f"--socket={self.mysql_socket}", f"--pid-file={folder}/mariadbd.pid",
                                 "--skip-networking", f"--log-error={self.folder}/log/mariadbd.log",
                                 "--innodb-buffer-pool-size=32M"])

    def _spawn(self, name: str, args: list[str | None]) -> None:
        env = self.env()
        env["MYSQL_UNIX_PORT"] = str(self.mysql_socket)  # where slurmdbd's MariaDB client finds the server
        with open(self.folder / "log" / f"{name}.out", "ab") as out:
            proc = subprocess.Popen([str(a) for a in args], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        (self.pids / f"{name}.pid").write_text(str(proc.pid))
        self._procs = {**getattr(self, "_procs", {}), name: proc}

    # -- state ---------------------------------------------------------------------------------------
    def _ok(self, args: list[str]) -> bool:
        return subprocess.run(args, env=self.env(), capture_output=True, timeout=30).returncode == 0

    def _run(self, args: list[str | None], timeout: float = 60) -> str:
        proc = subprocess.run([str(a) for a in args], env=self.env(), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
        return proc.stdout

    def _idle(self) -> bool:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env(), capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and proc.stdout.strip() == "idle"

    def _wait(self, ready, name: str, deadline: float) -> None:
        while not ready():
            proc = getattr(self, "_procs", {}).get(name.split()[0])
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name.split()[0])}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in time: {self.log_tail(name.split()[0])}")
            time.sleep(0.2)

    def _step(self, name: str, since: float) -> None:
        self.timings[name] = time.monotonic() - since

    def log_tail(self, name: str, chars: int = 1500) -> str:
        """The end of a daemon's logs (its own log file and its captured output)."""
        text = ""
        for path in (self.folder / "log" / f"{name}.log", self.folder / "log" / f"{name}.out"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")[-chars:]
        return text.strip() or "(no log)"

    # -- stop ----------------------------------------------------------------------------------------
    def stop(self, grace_s: float = 15) -> None:
        """Cancel every job, then stop each daemon that has a pid file here (newest first): SIGTERM, then SIGKILL
        after `grace_s`, with the processes it started (slurmstepd, jobs)."""
        import psutil

        t0 = time.monotonic()
        if (self.pids / "slurmctld.pid").exists():
            with contextlib.suppress(Exception):
                subprocess.run(["scancel", "--full", "--user=root"], env=self.env(), capture_output=True, timeout=10)
        for name in reversed(ORDER):
            pid_file = self.pids / f"{name}.pid"
            try:
                pid = int(pid_file.read_text())
                proc = psutil.Process(pid)
                family = [proc, *proc.children(recursive=True)]
            except (OSError, ValueError, psutil.Error):
                pid_file.unlink(missing_ok=True)
                continue
            if name == "slurmd":  # job steps (slurmstepd) leave slurmd's tree: take every one of this cluster's
                family += [p for p in psutil.process_iter(["name", "environ"])
                           if p.info["name"] == "slurmstepd" and p.pid not in {q.pid for q in family}
                           and (p.info["environ"] or {}).get("SLURM_CONF") == str(self.conf)]
            for p in family:
                with contextlib.suppress(psutil.Error):
                    p.send_signal(signal.SIGTERM)
            alive = wait_gone(family, grace_s)
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            wait_gone(alive, 5)
            with contextlib.suppress(Exception):
                self._procs[name].wait(timeout=1)  # reap our child
            pid_file.unlink(missing_ok=True)
        self.timings["stop"] = time.monotonic() - t0


def wait_gone(procs: list, timeout: float) -> list:
    """Wait until none of `procs` (psutil processes) runs; the ones still running. A zombie counts as gone: after
    the process that started the cluster exited, the daemons' parent is an init that may never reap them."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    """`start FOLDER` (prints the exports to use) or `stop FOLDER`."""
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/slurm_cluster.py start|stop FOLDER", file=sys.stderr)
        return 2
    cluster = SlurmCluster(argv[1])
    if argv[0] == "stop":
        cluster.stop()
        return 0
    try:
        cluster.start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"started in {cluster.timings['start']:.1f} s; stop with: python {sys.argv[0]} stop {cluster.folder}",
          file=sys.stderr)
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
