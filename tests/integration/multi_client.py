#!/usr/bin/env python3
"""Tessera: three mounts of one volume, on one metadata engine.

Usage: python3 tests/integration/multi_client.py /path/to/tessera [ENGINE]
ENGINE: sqlite (default), redis, postgres or etcd; the server is started
privately on 127.0.0.1 (Redis with an append-only file and a replica).

1. one volume mounted three times, A, B and C, with --heartbeat 1 (a
   session is stale after 5 missed heartbeats) and --meta-timeout 5;
   `tessera status` lists the three sessions with host, pid, mount point,
   version and last heartbeat;
2. close-to-open: a file written and closed on one mount is read whole on
   the others after open; a directory made on one appears on the others
   within the entry-cache time;
3. churn: one process per mount creates, renames over each other and
   unlinks files and directories in one shared directory (thousands of
   operations at once); afterwards every mount lists the same names and
   `tessera fsck` finds the volume consistent;
4. (servers only) the metadata server is restarted while A writes files:
   the writer sees no error and every file reads back whole on B; then the
   server is stopped: an operation on B fails with EIO within the
   --meta-timeout (plus a margin), never hangs; once the server is back all
   mounts work again and none of them is cleaned up as stale by another;
5. A holds a flock and a POSIX lock and keeps an unlinked file open; B
   cannot take the locks; A's daemon is killed (kill -9): within about ten
   seconds a live mount cleans up A's session, B takes both locks, the
   unlinked file's blocks leave the bucket, and B answers all along.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metadata_servers import ENGINES, RedisServer, metadata_server  # noqa: E402
from tessera_testlib import Harness, mounted_fstype, pid_alive  # noqa: E402

VOLUME = "multi-vol"
MiB = 1 << 20
META_TIMEOUT = 5

# Holds a lock on a file until killed: flock or a POSIX (fcntl) lock.
HOLDER = r"""
import fcntl, sys, time
f = open(sys.argv[1], "r+b")
if sys.argv[2] == "flock":
    fcntl.flock(f, fcntl.LOCK_EX)
else:
    fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)
print("locked", flush=True)
time.sleep(3600)
"""

# Keeps a file open, unlinks it, and sleeps.
KEEPER = r"""
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
os.unlink(sys.argv[1])
print("kept", flush=True)
time.sleep(3600)
"""

# Churns one shared directory: creates its own files, renames them over
# names every mount uses, unlinks, makes and removes directories. Races
# with the other mounts give ENOENT/ENOTEMPTY/EEXIST, which are expected;
# anything else is printed and counted. Prints "ops errors".
CHURN = r"""
import errno, os, random, sys
root, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(tag)
ops = errors = 0
expected = (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST)
for i in range(rounds):
    mine = os.path.join(root, f"{tag}-{i}")
    try:
        with open(mine, "wb") as f:
            f.write(os.urandom(rng.randrange(0, 9000)))
        ops += 1
        r = rng.random()
        if r < 0.4:
            os.rename(mine, os.path.join(root, f"shared-{rng.randrange(40)}"))
        elif r < 0.6:
            os.unlink(mine)
        elif r < 0.7:
            os.link(mine, os.path.join(root, f"link-{tag}-{i}"))
        ops += 1
        if rng.random() < 0.3:
            os.unlink(os.path.join(root, f"shared-{rng.randrange(40)}"))
            ops += 1
        if rng.random() < 0.2:
            d = os.path.join(root, f"dir-{rng.randrange(10)}")
            os.mkdir(d)
            ops += 1
            if rng.random() < 0.5:
                os.rename(d, os.path.join(root, f"dir-{rng.randrange(10)}-moved"))
            else:
                os.rmdir(d)
            ops += 1
    except OSError as e:
        if e.errno not in expected:
            errors += 1
            print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
print(ops, errors, flush=True)
"""

# Writes files until told to stop (a line on stdin or EOF after `count`),
# verifying nothing; prints "files errors" and lists failures on stderr.
WRITER = r"""
import os, sys
root, count = sys.argv[1], int(sys.argv[2])
errors = 0
for i in range(count):
    try:
        with open(os.path.join(root, f"w-{i}"), "wb") as f:
            f.write(bytes([i % 251]) * (65536 + i))
    except OSError as e:
        errors += 1
        print(f"w-{i}: {e}", file=sys.stderr, flush=True)
print(count, errors, flush=True)
"""


def pid_file(mp: str) -> str:
    return "/run/tessera/" + mp.replace("%", "%25").replace("/", "%2F") + ".pid"


def wait_until(cond, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


class MultiClient:
    def __init__(self, h: Harness, engine: str, server):
        self.h = h
        self.engine = engine
        self.server = server
        self.url = server.url
        self.bucket = os.path.join(h.tmp, "bucket")
        self.a = os.path.join(h.tmp, "a")
        self.b = os.path.join(h.tmp, "b")
        self.c = os.path.join(h.tmp, "c")
        for mp in (self.a, self.b, self.c):
            os.mkdir(mp)
        self.children: list[subprocess.Popen] = []

    def mount(self, mp: str, name: str):
        r = self.h.mount(self.url, mp, "--heartbeat", "1", "--meta-timeout", str(META_TIMEOUT),
                         "--cache-dir", os.path.join(self.h.tmp, "cache-" + name))
        self.h.require(r.returncode == 0, f"mount {name}", r.describe() + self.h.log_tail())

    def spawn(self, script: str, *args: str, expect: str | None = None) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.children.append(p)
        if expect is not None:
            line = p.stdout.readline().strip()
            self.h.require(line == expect, f"helper process: {expect}",
                           line + p.stderr.read() if line != expect else "")
        return p

    def finish(self, p: subprocess.Popen, timeout: float) -> tuple[list[int], str]:
        """Waits for a helper that prints numbers on one line."""
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            err = "(timed out) " + err
        self.children.remove(p)
        try:
            return [int(x) for x in out.split()], err
        except ValueError:
            return [], out + err

    def blocks(self) -> set[str]:
        out = set()
        for root, _, files in os.walk(self.bucket):
            out.update(os.path.join(root, f) for f in files)
        return out

    def sessions(self) -> list[dict] | None:
        _, status = self.h.status(self.url)
        return None if status is None else status.get("sessions", [])

    def check_sessions(self):
        h = self.h
        sessions = self.sessions() or []
        points = sorted(s.get("mount_point", "") for s in sessions)
        h.check(points == sorted([self.a, self.b, self.c]),
                "tessera status lists the three mounts' sessions", json.dumps(sessions))
        fields = ("host", "pid", "mount_point", "version", "heartbeat")
        missing = [f for s in sessions for f in fields if not any(k.startswith(f) for k in s)]
        h.check(not missing, "each session shows host, pid, mount point, version, last heartbeat",
                f"missing {missing} in {json.dumps(sessions[:1])}")

    def close_to_open(self):
        h = self.h
        data = os.urandom(5 * MiB + 123)
        with open(os.path.join(self.a, "from-a"), "wb") as f:
            f.write(data)
        for mp in (self.b, self.c):
            with open(os.path.join(mp, "from-a"), "rb") as f:
                h.check(f.read() == data, f"a file closed on A is read whole on {mp[-1].upper()}")
        data2 = os.urandom(300000)
        with open(os.path.join(self.b, "from-b"), "wb") as f:
            f.write(data2)
        with open(os.path.join(self.a, "from-b"), "rb") as f:
            h.check(f.read() == data2, "a file closed on B is read whole on A")
        # Rewritten on C: A sees the new content at its next open.
        data3 = os.urandom(5 * MiB)
        with open(os.path.join(self.c, "from-a"), "wb") as f:
            f.write(data3)
        with open(os.path.join(self.a, "from-a"), "rb") as f:
            h.check(f.read() == data3, "a file rewritten on C is read anew on A")
        os.mkdir(os.path.join(self.a, "made-on-a"))
        for mp in (self.b, self.c):
            seen = wait_until(lambda: os.path.isdir(os.path.join(mp, "made-on-a")), 3)
            h.check(seen, f"a directory made on A appears on {mp[-1].upper()} within the "
                    "entry-cache time")

    def churn(self, rounds: int):
        h = self.h
        os.mkdir(os.path.join(self.a, "churn"))
        wait_until(lambda: all(os.path.isdir(os.path.join(mp, "churn"))
                               for mp in (self.b, self.c)), 3)
        t = time.monotonic()
        procs = [self.spawn(CHURN, os.path.join(mp, "churn"), mp[-1], str(rounds))
                 for mp in (self.a, self.b, self.c)]
        total_ops = total_errors = 0
        for p in procs:
            nums, err = self.finish(p, 600)
            if len(nums) != 2:
                h.check(False, "a churn process finished", err[-2000:])
                continue
            total_ops += nums[0]
            total_errors += nums[1]
            h.check(nums[1] == 0, "churn saw only the errors races explain",
                    err[-2000:] + ("\nmount log:\n" + h.log_tail() if nums[1] else ""))
        took = time.monotonic() - t
        h.check(total_ops >= 3 * rounds, f"{total_ops} operations from three mounts at once "
                f"({total_ops / took:.0f} ops/s)")
        # Past the entry-cache time every mount lists the same names.
        time.sleep(1.5)
        listings = [sorted(os.listdir(os.path.join(mp, "churn"))) for mp in (self.a, self.b, self.c)]
        h.check(listings[0] == listings[1] == listings[2] and len(listings[0]) > 0,
                f"all mounts list the same {len(listings[0])} names")
        # Link counts seen through the mounts agree with the names.
        names = set(listings[0])
        bad = []
        for name in names:
            st = os.lstat(os.path.join(self.b, "churn", name))
            if name.startswith("dir-") and st.st_nlink != 2:
                bad.append(f"{name}: nlink {st.st_nlink}")
        h.check(not bad, "empty directories have nlink 2", ", ".join(bad[:5]))
        self.fsck("after the churn")

    def fsck(self, when: str):
        r = self.h.run("fsck", self.url, timeout=300)
        self.h.check(r.returncode == 0, f"tessera fsck finds the volume consistent {when}",
                     r.describe())

    def restart_server(self):
        """The server restarts while A writes: retries, no errors, no loss."""
        h = self.h
        os.mkdir(os.path.join(self.a, "during-restart"))
        count = 300
        writer = self.spawn(WRITER, os.path.join(self.a, "during-restart"), str(count))
        time.sleep(0.5)
        t = time.monotonic()
        self.server.restart()
        h.progress(f"{self.engine} server restarted in {time.monotonic() - t:.1f}s")
        nums, err = self.finish(writer, 300)
        h.check(nums == [count, 0], "a writer across the server restart sees no error",
                err[-2000:])
        bad = []
        for i in range(count):
            try:
                with open(os.path.join(self.b, "during-restart", f"w-{i}"), "rb") as f:
                    if f.read() != bytes([i % 251]) * (65536 + i):
                        bad.append(f"w-{i}: content")
            except OSError as e:
                bad.append(f"w-{i}: {e}")
        h.check(not bad, f"all {count} files written across the restart read back whole on B",
                ", ".join(bad[:5]))

    def server_down(self):
        """A server that stays down gives EIO in bounded time, then recovers."""
        h = self.h
        self.server.stop()
        t = time.monotonic()
        try:
            with open(os.path.join(self.b, "while-down"), "wb"):
                pass
            err = 0
        except OSError as e:
            err = e.errno
        took = time.monotonic() - t
        h.check(err == errno.EIO, "creating a file while the server is down fails with EIO",
                os.strerror(err) if err else "it succeeded")
        h.check(took < META_TIMEOUT + 10,
                f"... after a bounded time ({took:.1f}s, --meta-timeout {META_TIMEOUT})")
        # Down long enough that every session missed its expiry.
        time.sleep(max(0.0, 6 - took))
        self.server.start()
        ok = []
        for mp in (self.a, self.b, self.c):
            try:
                with open(os.path.join(mp, "after-down-" + mp[-1]), "wb") as f:
                    f.write(b"back")
                ok.append(mp)
            except OSError as e:
                h.check(False, f"{mp[-1].upper()} works once the server is back", str(e))
        h.check(len(ok) == 3, "all mounts work once the server is back")
        # Each mount heartbeats again; none removes another's session.
        time.sleep(7)
        sessions = self.sessions() or []
        h.check(len(sessions) == 3, "no mount cleaned up another after the outage",
                json.dumps(sessions))
        for mp in (self.a, self.b, self.c):
            h.check(os.path.exists(os.path.join(mp, "after-down-a")),
                    f"{mp[-1].upper()} sees A's file made after the outage")

    def kill_a(self):
        h = self.h
        target = os.path.join(self.a, "locked")
        with open(target, "wb") as f:
            f.write(b"x" * 100)
        kept_data = os.urandom(3 * MiB)
        with open(os.path.join(self.a, "kept"), "wb") as f:
            f.write(kept_data)
        before = self.blocks()
        self.spawn(HOLDER, target, "flock", expect="locked")
        self.spawn(HOLDER, target, "posix", expect="locked")
        self.spawn(KEEPER, os.path.join(self.a, "kept"), expect="kept")
        h.check(not os.path.exists(os.path.join(self.b, "kept")), "the kept file is unlinked")
        h.check(self.blocks() == before, "its blocks stay while it is open")

        with open(os.path.join(self.b, "locked"), "r+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except OSError:
                got = False
            h.check(not got, "B cannot take the flock A holds")
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
                got = True
            except OSError:
                got = False
            h.check(not got, "B cannot take the POSIX lock A holds")

        with open(pid_file(self.a)) as f:
            pid = int(f.read().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        h.require(not pid_alive(pid), "A's daemon is dead")
        for p in self.children:
            p.kill()
            p.wait()
        self.children.clear()
        subprocess.run(["fusermount3", "-uz", self.a], capture_output=True)
        h.check(mounted_fstype(self.a) is None, "A's dead mount is cleared")

        # B keeps working while A's session goes stale, and cleans it up.
        killed_at = time.monotonic()
        slowest = 0.0
        cleaned = False
        while time.monotonic() - killed_at < 20 and not cleaned:
            t = time.monotonic()
            os.stat(os.path.join(self.b, "from-b"))
            os.listdir(self.b)
            slowest = max(slowest, time.monotonic() - t)
            _, status = h.status(self.url)
            sessions = (status or {}).get("sessions", [])
            cleaned = status is not None and all(s["pid"] != pid for s in sessions)
            time.sleep(0.2)
        took = time.monotonic() - killed_at
        h.check(cleaned, "A's session is cleaned up by B", f"after {took:.1f}s")
        h.check(took < 15, f"within the heartbeat expiry and a few heartbeats ({took:.1f}s)")
        h.check(slowest < 1.0, f"B answered all along (slowest stat+list {slowest * 1000:.0f} ms)")
        with open(os.path.join(self.b, "locked"), "r+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
                got = True
            except OSError as e:
                got = False
                detail = str(e)
            h.check(got, "B takes both locks the killed mount held", "" if got else detail)
        gone = before - self.blocks()
        h.check(len(gone) >= 1 and not (self.blocks() - before),
                "the unlinked file A kept open is reclaimed: its blocks left the bucket",
                f"{len(gone)} blocks gone")

    def check_replica(self, replica: RedisServer):
        h = self.h
        self.server.cli("WAIT", "1", "10000")
        same = wait_until(lambda: replica.cli("DBSIZE") == self.server.cli("DBSIZE"), 20, 0.2)
        h.check(same, "the Redis replica holds as many keys as the primary",
                f"{replica.cli('DBSIZE')} vs {self.server.cli('DBSIZE')}")

    def run(self):
        h = self.h
        r = h.run("format", "--trash-days", "0", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        replica = None
        if self.engine == "redis":
            replica = RedisServer(replica_of=self.server)
            replica.start()
        try:
            self.mount(self.a, "A")
            self.mount(self.b, "B")
            self.mount(self.c, "C")
            self.check_sessions()
            self.close_to_open()
            self.churn(rounds=700)
            if self.engine != "sqlite":
                self.restart_server()
                self.server_down()
            self.kill_a()
            if replica is not None:
                self.check_replica(replica)
            for mp in (self.b, self.c):
                r = h.umount(mp)
                h.check(r.returncode == 0, f"umount {mp[-1].upper()}", r.describe())
            self.fsck("after the mounts are gone")
        finally:
            if replica is not None:
                replica.close()

    def cleanup(self):
        for p in self.children:
            p.kill()
            p.wait()


def main() -> int:
    engine = sys.argv[2] if len(sys.argv) > 2 else "sqlite"
    if engine not in ENGINES:
        print(f"unknown engine '{engine}' (expected one of {', '.join(ENGINES)})", file=sys.stderr)
        return 2
    h = Harness("multi_client." + engine, sys.argv[:2])
    with h:
        with metadata_server(engine) as server:
            t = MultiClient(h, engine, server)
            try:
                t.run()
            finally:
                t.cleanup()
                for mp in (t.a, t.b, t.c):  # unmount before the server goes
                    if mounted_fstype(mp) is not None:
                        h.umount(mp)
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
