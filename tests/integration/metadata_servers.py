"""Private metadata servers on 127.0.0.1 for integration tests and benchmarks.

Each server lives in its own temporary directory, listens on a free loopback
port, and is stopped (and its directory removed) by stop(). restart() keeps
the data: Redis runs with an append-only file and PostgreSQL keeps its data
directory; etcd is a three-member cluster whose restart() stops one member
and starts it again. Python 3.11 standard library only.

    with metadata_server("redis") as server:
        url = server.url          # redis://127.0.0.1:PORT/1
        server.restart()          # stops and starts it on the same port
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ENGINES = ("sqlite", "redis", "postgres", "etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


class Server:
    """One server process; subclasses say how to start it."""

    name = ""
    # The signal for a clean, quick shutdown.
    stop_signal = signal.SIGTERM

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix=f"tessera-{self.name}-")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(self.dir, "server.log")

    def argv(self) -> list[str]:
        raise NotImplementedError

    def preexec(self):
        return None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, cwd=self.dir,
                                         preexec_fn=self.preexec(), start_new_session=True)
        if not wait_port(self.port, 30, self.proc) or not self.ready():
            raise RuntimeError(f"{self.name} server did not start:\n{self.log_tail()}")

    def ready(self) -> bool:
        return True

    def stop(self, graceful: bool = True):
        """Stops the process; its data stays for restart()."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal if graceful else signal.SIGKILL)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    @property
    def url(self) -> str:
        raise NotImplementedError


class RedisServer(Server):
    name = "redis"

    def __init__(self, replica_of: "RedisServer | None" = None):
        super().__init__()
        self.replica_of = replica_of

    def argv(self) -> list[str]:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--appendonly", "yes",
                "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of.port)]
        return argv

    def cli(self, *args: str) -> str:
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                           text=True, timeout=30)
        return r.stdout.strip()

    def ready(self) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.cli("PING") == "PONG":
                return True
            time.sleep(0.05)
        return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/1"


def _postgres_bin() -> str:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    if not dirs:
        raise RuntimeError("PostgreSQL not found under /usr/lib/postgresql (scripts/install-deps.sh)")
    return dirs[-1]


class PostgresServer(Server):
    name = "postgres"
    # "Fast" shutdown: SIGTERM would wait for every client to disconnect.
    stop_signal = signal.SIGINT

    def __init__(self):
        super().__init__()
        self.bin = _postgres_bin()
        self.data = os.path.join(self.dir, "data")
        self.uid = self.gid = None
        if os.geteuid() == 0:  # postgres refuses to run as root
            pw = pwd.getpwnam("postgres")
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            os.chown(self.dir, self.uid, self.gid)
        with open(self.log, "ab") as log:
            subprocess.run([self.bin + "/initdb", "-D", self.data, "-U", "tessera", "-A", "trust",
                            "--no-sync", "-E", "UTF8", "--no-locale"], stdout=log, stderr=log,
                           check=True, preexec_fn=self.preexec(), timeout=120)

    def preexec(self):
        if self.uid is None:
            return None
        uid, gid = self.uid, self.gid

        def drop():
            os.setgid(gid)
            os.setuid(uid)
        return drop

    def argv(self) -> list[str]:
        # Durable commits: a restart must not lose what was acknowledged.
        return [self.bin + "/postgres", "-D", self.data, "-p", str(self.port), "-k", self.dir,
                "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"]

    def ready(self) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "tessera",
                                "-d", "postgres", "-Atc", "select 1"], capture_output=True,
                               text=True)
            if r.stdout.strip() == "1":
                return True
            time.sleep(0.1)
        return False

    @property
    def url(self) -> str:
        return f"postgres://tessera@127.0.0.1:{self.port}/postgres?sslmode=disable"


class EtcdMember(Server):
    name = "etcd"

    def __init__(self, index: int):
        self.index = index
        super().__init__()
        self.peer_port = free_port()
        self.cluster = ""

    def argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        name = f"m{self.index}"
        return ["etcd", "--name", name, "--data-dir", os.path.join(self.dir, name),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "tessera-test",
                # A lost member is noticed quickly; a metadata change may
                # write more keys than the default 128 (docs/operations.md).
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--max-txn-ops", "10000"]


class EtcdCluster:
    """Three etcd members on loopback; restart() stops and restarts one."""

    name = "etcd"

    def __init__(self, members: int = 3):
        self.members = [EtcdMember(i) for i in range(members)]
        cluster = ",".join(f"m{m.index}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        for m in self.members:
            m.cluster = cluster

    def start(self):
        # Members wait for each other to form the cluster: start all first.
        for m in self.members:
            with open(m.log, "ab") as log:
                m.proc = subprocess.Popen(m.argv(), stdout=log, stderr=log, cwd=m.dir,
                                          start_new_session=True)
        for m in self.members:
            if not wait_port(m.port, 30, m.proc):
                raise RuntimeError(f"etcd member {m.index} did not start:\n{m.log_tail()}")
        if not self._healthy():
            raise RuntimeError("etcd cluster has no leader:\n" + self.members[0].log_tail())

    def _healthy(self) -> bool:
        import urllib.request
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for m in self.members:
                if m.proc is None:
                    continue
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/health", timeout=1) as r:
                        if b'"true"' in r.read():
                            return True
                except OSError:
                    pass
            time.sleep(0.1)
        return False

    def stop(self, graceful: bool = True):
        for m in self.members:
            m.stop(graceful)

    def stop_member(self, index: int):
        self.members[index].stop()

    def start_member(self, index: int):
        self.members[index].start()

    def restart(self):
        """One member (the one clients try first) goes away and comes back."""
        self.stop_member(0)
        time.sleep(2)
        self.start_member(0)

    def close(self):
        for m in self.members:
            m.close()

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(f"127.0.0.1:{m.port}" for m in self.members) + "/tessera"


class SqliteFile:
    """The embedded engine, for tests that run on every engine."""

    name = "sqlite"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="tessera-sqlite-")

    def start(self):
        pass

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def url(self) -> str:
        return "sqlite3://" + os.path.join(self.dir, "meta.db")


@contextlib.contextmanager
def metadata_server(engine: str):
    """A started server (or SQLite file) for `engine`, closed on exit."""
    classes = {"sqlite": SqliteFile, "redis": RedisServer, "postgres": PostgresServer,
               "etcd": EtcdCluster}
    if engine not in classes:
        raise ValueError(f"unknown engine '{engine}' (expected one of {', '.join(ENGINES)})")
    server = classes[engine]()
    try:
        server.start()
        yield server
    finally:
        server.close()
