#!/usr/bin/env python3
"""Tessera: two mounts of one volume, and one of them killed.

Usage: python3 tests/integration/multi_client.py /path/to/tessera

1. one volume (SQLite metadata + local bucket) mounted twice, A and B, with
   --heartbeat 1 (a session is stale after 5 missed heartbeats);
2. close-to-open: a file written and closed on one mount is read whole on
   the other after open, both ways; a directory made on one appears on the
   other within the entry-cache time;
3. A holds a flock and a POSIX lock (through helper processes) and keeps a
   file open after unlinking it; B cannot take the locks;
4. A's daemon is killed (kill -9) and its mount cleared; within about ten
   seconds B's heartbeat finds A's session stale and cleans it up: A's
   session leaves `tessera status`, B takes both locks, and the unlinked
   file's blocks leave the bucket. B answers all along (its slowest stat
   while waiting is well under a second).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, mounted_fstype, pid_alive  # noqa: E402

VOLUME = "multi-vol"
MiB = 1 << 20

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


def pid_file(mp: str) -> str:
    return "/run/tessera/" + mp.replace("%", "%25").replace("/", "%2F") + ".pid"


class MultiClient:
    def __init__(self, h: Harness):
        self.h = h
        self.url = "sqlite3://" + os.path.join(h.tmp, "meta.db")
        self.bucket = os.path.join(h.tmp, "bucket")
        self.a = os.path.join(h.tmp, "a")
        self.b = os.path.join(h.tmp, "b")
        os.mkdir(self.a)
        os.mkdir(self.b)
        self.children: list[subprocess.Popen] = []

    def mount(self, mp: str, name: str):
        r = self.h.mount(self.url, mp, "--heartbeat", "1", "--cache-dir",
                         os.path.join(self.h.tmp, "cache-" + name))
        self.h.require(r.returncode == 0, f"mount {name}", r.describe() + self.h.log_tail())

    def spawn(self, script: str, *args: str, expect: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.children.append(p)
        line = p.stdout.readline().strip()
        self.h.require(line == expect, f"helper process: {expect}", line + p.stderr.read() if line != expect else "")
        return p

    def blocks(self) -> set[str]:
        out = set()
        for root, _, files in os.walk(self.bucket):
            out.update(os.path.join(root, f) for f in files)
        return out

    def close_to_open(self):
        h = self.h
        data = os.urandom(5 * MiB + 123)
        with open(os.path.join(self.a, "from-a"), "wb") as f:
            f.write(data)
        with open(os.path.join(self.b, "from-a"), "rb") as f:
            h.check(f.read() == data, "a file closed on A is read whole on B")
        data2 = os.urandom(300000)
        with open(os.path.join(self.b, "from-b"), "wb") as f:
            f.write(data2)
        with open(os.path.join(self.a, "from-b"), "rb") as f:
            h.check(f.read() == data2, "a file closed on B is read whole on A")
        # Rewritten on B: A sees the new content at its next open.
        data3 = os.urandom(5 * MiB)
        with open(os.path.join(self.b, "from-a"), "wb") as f:
            f.write(data3)
        with open(os.path.join(self.a, "from-a"), "rb") as f:
            h.check(f.read() == data3, "a file rewritten on B is read anew on A")
        os.mkdir(os.path.join(self.a, "made-on-a"))
        deadline = time.monotonic() + 3
        seen = False
        while time.monotonic() < deadline and not seen:
            seen = os.path.isdir(os.path.join(self.b, "made-on-a"))
            time.sleep(0.1)
        h.check(seen, "a directory made on A appears on B within the entry-cache time")

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

    def run(self):
        h = self.h
        r = h.run("format", "--trash-days", "0", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.mount(self.a, "A")
        self.mount(self.b, "B")
        self.close_to_open()
        self.kill_a()
        r = h.umount(self.b)
        h.check(r.returncode == 0, "umount B", r.describe())

    def cleanup(self):
        for p in self.children:
            p.kill()
            p.wait()


def main() -> int:
    h = Harness("multi_client", sys.argv)
    with h:
        t = MultiClient(h)
        try:
            t.run()
        finally:
            t.cleanup()
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
