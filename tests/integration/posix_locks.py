#!/usr/bin/env python3
"""Tessera acceptance test: flock and fcntl locks work across two mounts.

Usage: python3 tests/integration/posix_locks.py /path/to/tessera

One volume (SQLite metadata file + file bucket) is mounted twice, at A and B,
by two daemons with their own sessions. Separate processes ("actors", small
Python programs driven line by line over a pipe) open the same file through
either mount and check:
1. flock: LOCK_EX on A makes LOCK_EX|LOCK_NB and LOCK_SH|LOCK_NB on B fail
   with EWOULDBLOCK; LOCK_SH on both works; an exclusive lock also stops
   another process on the same mount; unlock and close release it;
2. a blocking LOCK_EX on B waits until A unlocks; a process killed while it
   waits dies at once and does not get the lock later;
3. fcntl byte ranges: overlapping exclusive ranges conflict across mounts,
   disjoint ones do not, lockf works too, F_GETLK names the holder's range
   and pid, a blocking F_SETLKW waits for the holder;
4. release: a lock goes when its holder is killed (flock and fcntl), and
   (POSIX semantics) when the holder closes any other fd of the same file;
5. a third mount C with only 2 FUSE threads: 4 blocked waiters do not
   starve the holder's unlock, and each waiter gets the lock in turn;
6. the mounts unmount cleanly and leave no lock records behind.
Every wait is bounded, so a broken lock fails the test instead of hanging it.
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Fatal, Harness, mounted_fstype  # noqa: E402

VOLUME = "locks-vol"
REPLY_TIMEOUT = 10.0  # no single lock call should take longer
WAIT = 0.6            # how long a blocked waiter must stay blocked

# An actor: reads commands ("<op> <args>") on stdin, answers one line each:
# "ok [values]" or "err <ERRNO NAME>".
ACTOR = r"""
import errno, fcntl, os, struct, sys
fds = {}
FMT = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid
TYPES = {"rd": fcntl.F_RDLCK, "wr": fcntl.F_WRLCK, "un": fcntl.F_UNLCK}
NAMES = {v: k for k, v in TYPES.items()}
FLOCK = {"sh": fcntl.LOCK_SH, "ex": fcntl.LOCK_EX, "un": fcntl.LOCK_UN}
LOCKF = {"sh": fcntl.LOCK_SH, "ex": fcntl.LOCK_EX, "un": fcntl.LOCK_UN}
print("ok", os.getpid(), flush=True)
for line in sys.stdin:
    a = line.split()
    try:
        out = ""
        if a[0] == "open":                       # open NAME PATH
            fds[a[1]] = os.open(a[2], os.O_RDWR)
        elif a[0] == "close":                    # close NAME
            os.close(fds.pop(a[1]))
        elif a[0] == "flock":                    # flock NAME sh|ex|un [nb]
            fcntl.flock(fds[a[1]], FLOCK[a[2]] | (fcntl.LOCK_NB if "nb" in a[3:] else 0))
        elif a[0] == "lockf":                    # lockf NAME sh|ex|un START LEN [nb]
            fcntl.lockf(fds[a[1]], LOCKF[a[2]] | (fcntl.LOCK_NB if "nb" in a[5:] else 0),
                        int(a[4]), int(a[3]))
        elif a[0] in ("setlk", "setlkw"):        # setlk NAME rd|wr|un START LEN
            cmd = fcntl.F_SETLK if a[0] == "setlk" else fcntl.F_SETLKW
            fcntl.fcntl(fds[a[1]], cmd, struct.pack(FMT, TYPES[a[2]], os.SEEK_SET,
                                                    int(a[3]), int(a[4]), 0))
        elif a[0] == "getlk":                    # getlk NAME rd|wr START LEN
            r = fcntl.fcntl(fds[a[1]], fcntl.F_GETLK,
                            struct.pack(FMT, TYPES[a[2]], os.SEEK_SET, int(a[3]), int(a[4]), 0))
            t, _, start, length, pid = struct.unpack(FMT, r)
            out = f" {NAMES[t]} {start} {length} {pid}"
        else:
            raise ValueError("unknown command " + a[0])
        print("ok" + out, flush=True)
    except OSError as e:
        print("err", errno.errorcode.get(e.errno, str(e.errno)), flush=True)
"""


class Actor:
    """A child process that takes locks on command; killed at the end by its pid."""

    def __init__(self, h: Harness, name: str):
        self.h = h
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-u", "-c", ACTOR], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buf = b""
        first = self.reply()
        if first is None or not first.startswith("ok "):
            raise Fatal(f"actor {name} did not start: {first!r}")
        self.pid = int(first.split()[1])

    def send(self, line: str):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def reply(self, timeout: float = REPLY_TIMEOUT) -> str | None:
        """The next answer line, or None when none came within `timeout`."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None  # the actor died
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def do(self, line: str, timeout: float = REPLY_TIMEOUT) -> str | None:
        self.send(line)
        return self.reply(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by pid
        try:
            self.proc.wait(timeout=REPLY_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass

    def alive(self) -> bool:
        return self.proc.poll() is None


BLOCKED = ("err EAGAIN", "err EWOULDBLOCK", "err EACCES")  # EACCES: allowed for F_SETLK


class Locks:
    def __init__(self, h: Harness):
        self.h = h
        self.db = os.path.join(h.tmp, "meta.db")
        self.url = "sqlite3://" + self.db
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt_a = os.path.join(h.tmp, "mnt-a")
        self.mnt_b = os.path.join(h.tmp, "mnt-b")
        self.mnt_c = os.path.join(h.tmp, "mnt-c")
        for mp in (self.mnt_a, self.mnt_b, self.mnt_c):
            os.mkdir(mp)
        self.actors: list[Actor] = []

    def actor(self, name: str) -> Actor:
        a = Actor(self.h, name)
        self.actors.append(a)
        return a

    def expect(self, actor: Actor, line: str, want, what: str, timeout: float = REPLY_TIMEOUT):
        """Runs a command; `want` is an answer or a tuple of acceptable answers."""
        got = actor.do(line, timeout)
        ok = got in want if isinstance(want, tuple) else got == want
        self.h.check(ok, what, f"{actor.name}: {line!r} answered {got!r}, expected {want!r}")
        return got

    def wait_until(self, fn, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fn():
                return True
            time.sleep(0.05)
        return fn()

    def mount(self, mp: str, label: str, *extra: str):
        h = self.h
        r = h.mount(self.url, mp, *extra)
        h.require(r.returncode == 0, f"mount {label}: tessera mount -d succeeds",
                  r.describe() + "\nlog:\n" + h.log_tail())
        h.require(mounted_fstype(mp) == "fuse.tessera", f"mount {label} is a fuse.tessera mount",
                  f"fstype {mounted_fstype(mp)}")

    # ---- the cases --------------------------------------------------------------

    def flock_cases(self, fa: str, fb: str):
        h = self.h
        a, b, a2 = self.actor("A"), self.actor("B"), self.actor("A2")
        for actor, path in ((a, fa), (b, fb), (a2, fa)):
            h.require(actor.do(f"open f {path}") == "ok", f"actor {actor.name} opens the file")

        self.expect(a, "flock f ex nb", "ok", "flock: LOCK_EX on mount A")
        self.expect(b, "flock f ex nb", BLOCKED, "flock: LOCK_EX|LOCK_NB on mount B fails (EWOULDBLOCK)")
        self.expect(b, "flock f sh nb", BLOCKED, "flock: LOCK_SH|LOCK_NB on mount B fails too")
        self.expect(a2, "flock f ex nb", BLOCKED,
                    "flock: another process on mount A is refused as well")
        self.expect(a, "flock f un", "ok", "flock: unlock on A")
        self.expect(a, "flock f sh nb", "ok", "flock: LOCK_SH on A")
        self.expect(b, "flock f sh nb", "ok", "flock: LOCK_SH on B at the same time")
        self.expect(a2, "flock f ex nb", BLOCKED, "flock: LOCK_EX is refused while both share it")
        self.expect(b, "flock f un", "ok", "flock: B unlocks")
        self.expect(a, "flock f ex nb", "ok", "flock: A upgrades to LOCK_EX once alone")

        # Closing the descriptor releases the flock. The kernel sends FUSE's
        # RELEASE after close() has returned, so the lock goes a moment later.
        self.expect(a, "close f", "ok", "flock: A closes its file")
        t0 = time.monotonic()
        ok = self.wait_until(lambda: b.do("flock f ex nb") == "ok")
        h.check(ok, "flock: closing the file released the lock; LOCK_EX on B works")
        h.progress(f"flock released {(time.monotonic() - t0) * 1000:.0f} ms after close")

        # A blocking LOCK_EX waits until the holder unlocks.
        h.require(a.do(f"open f {fa}") == "ok", "actor A opens the file again")
        a.send("flock f ex")
        first = a.reply(WAIT)
        h.check(first is None, "flock: a blocking LOCK_EX on A waits while B holds the lock",
                f"answered {first!r} at once")
        t0 = time.monotonic()
        self.expect(b, "flock f un", "ok", "flock: B unlocks")
        got = a.reply(REPLY_TIMEOUT) if first is None else first
        waited = time.monotonic() - t0
        h.check(got == "ok", "flock: the blocked LOCK_EX is granted once B unlocks",
                f"answered {got!r} after {waited:.2f}s")
        h.progress(f"blocked flock granted {waited * 1000:.0f} ms after the unlock")

        # A waiter that is killed leaves at once and never gets the lock.
        b.send("flock f ex")
        h.check(b.reply(WAIT) is None, "flock: a blocking LOCK_EX on B waits while A holds it")
        t0 = time.monotonic()
        b.kill()
        h.check(not b.alive() and time.monotonic() - t0 < 5,
                "flock: a process killed while waiting for a lock exits at once",
                f"alive={b.alive()} after {time.monotonic() - t0:.1f}s")
        self.expect(a, "flock f un", "ok", "flock: A unlocks")
        self.expect(a2, "flock f ex nb", "ok", "flock: the killed waiter did not take the lock")

        # The holder is killed: its lock goes when the kernel closes its files.
        b2 = self.actor("B2")
        h.require(b2.do(f"open f {fb}") == "ok", "actor B2 opens the file")
        self.expect(b2, "flock f ex nb", BLOCKED, "flock: B2 is refused while A2 holds it")
        a2.kill()
        ok = self.wait_until(lambda: b2.do("flock f ex nb") == "ok")
        h.check(ok, "flock: killing the holder (kill -9) releases its lock")
        for actor in (a, b2):
            actor.kill()

    def posix_cases(self, fa: str, fb: str):
        h = self.h
        a, b = self.actor("PA"), self.actor("PB")
        h.require(a.do(f"open f {fa}") == "ok", "actor PA opens the file")
        h.require(b.do(f"open f {fb}") == "ok", "actor PB opens the file")

        self.expect(a, "setlk f wr 0 100", "ok", "fcntl: F_SETLK F_WRLCK [0,100) on mount A")
        self.expect(b, "setlk f wr 50 10", BLOCKED, "fcntl: an overlapping F_WRLCK on B fails (EAGAIN)")
        self.expect(b, "setlk f rd 99 1", BLOCKED, "fcntl: an overlapping F_RDLCK on B fails too")
        self.expect(b, "setlk f wr 100 100", "ok", "fcntl: a disjoint range [100,200) on B is granted")
        self.expect(b, "lockf f ex 0 10 nb", BLOCKED, "lockf: LOCK_EX|LOCK_NB over A's range fails")
        self.expect(b, "lockf f ex 300 0 nb", "ok", "lockf: LOCK_EX from 300 to EOF on B works")
        self.expect(b, "getlk f wr 20 5", f"ok wr 0 100 {a.pid}",
                    "fcntl: F_GETLK on B reports A's range and pid")
        self.expect(a, "getlk f rd 150 1", f"ok wr 100 100 {b.pid}",
                    "fcntl: F_GETLK on A reports B's range and pid")
        self.expect(a, "getlk f rd 1000 0", f"ok wr 300 0 {b.pid}",
                    "fcntl: F_GETLK reports a lock to EOF with length 0")
        self.expect(b, "getlk f rd 200 100", ("ok un 200 100 0", "ok un 0 0 0"), "fcntl: F_GETLK on a free range is F_UNLCK")
        self.expect(a, "setlk f wr 0 50", "ok", "fcntl: a process may relock its own range")

        # Partial unlock splits A's lock: [0,40) and [60,100) stay locked.
        self.expect(a, "setlk f un 40 20", "ok", "fcntl: A unlocks the middle of its range")
        self.expect(b, "setlk f wr 40 20", "ok", "fcntl: B locks the freed middle")
        self.expect(b, "getlk f wr 0 200", f"ok wr 0 40 {a.pid}",
                    "fcntl: A still holds the head of its range")
        self.expect(b, "setlk f un 0 0", "ok", "fcntl: B unlocks everything")

        # A blocking F_SETLKW waits for the holder.
        b.send("setlkw f wr 10 10")
        first = b.reply(WAIT)
        h.check(first is None, "fcntl: F_SETLKW on B waits while A holds the range",
                f"answered {first!r} at once")
        self.expect(a, "setlk f un 0 0", "ok", "fcntl: A unlocks everything")
        got = b.reply(REPLY_TIMEOUT) if first is None else first
        h.check(got == "ok", "fcntl: the waiting F_SETLKW is granted once A unlocks", f"{got!r}")
        self.expect(a, "setlk f rd 10 1", BLOCKED, "fcntl: and B now holds it")
        self.expect(b, "setlk f un 0 0", "ok", "fcntl: B unlocks")

        # POSIX: closing ANY fd of the file drops all of the process's locks on it.
        h.require(a.do(f"open g {fa}") == "ok", "actor PA opens the file a second time")
        self.expect(a, "setlk f wr 0 0", "ok", "fcntl: A locks the whole file through its first fd")
        self.expect(b, "setlk f wr 5 1", BLOCKED, "fcntl: B is refused")
        self.expect(a, "close g", "ok", "fcntl: A closes its second fd")
        self.expect(b, "setlk f wr 5 1", "ok",
                    "fcntl: closing another fd of the file released A's locks (POSIX)")
        self.expect(b, "setlk f un 0 0", "ok", "fcntl: B unlocks")

        # A killed holder loses its locks.
        self.expect(a, "setlk f wr 0 0", "ok", "fcntl: A locks the whole file again")
        self.expect(b, "setlk f rd 7 1", BLOCKED, "fcntl: B is refused before A dies")
        a.kill()
        ok = self.wait_until(lambda: b.do("setlk f wr 0 0") == "ok")
        h.check(ok, "fcntl: killing the holder (kill -9) releases its locks")
        self.expect(b, "close f", "ok", "fcntl: B closes")
        b.kill()

    def many_waiters(self, path: str):
        """More blocked waiters than the mount has FUSE threads: none may starve the holder."""
        h = self.h
        holder = self.actor("H")
        waiters = [self.actor(f"W{i}") for i in range(4)]
        for actor in [holder] + waiters:
            h.require(actor.do(f"open f {path}") == "ok", f"actor {actor.name} opens the file on C")
        self.expect(holder, "flock f ex nb", "ok", "waiters: H takes LOCK_EX on mount C (2 threads)")
        for w in waiters:
            w.send("flock f ex")
        time.sleep(0.3)
        self.expect(holder, "flock f un", "ok",
                    "waiters: H can unlock while 4 blocked waiters outnumber the threads", timeout=5)
        granted, deadline = 0, time.monotonic() + 10
        pending = list(waiters)
        while pending and time.monotonic() < deadline:
            for w in list(pending):
                got = w.reply(0.05)
                if got is None:
                    continue
                pending.remove(w)
                if got == "ok" and w.do("flock f un") == "ok":
                    granted += 1
        h.check(granted == len(waiters), "waiters: every blocked waiter is granted the lock in turn",
                f"{granted} of {len(waiters)} granted")
        for actor in [holder] + waiters:
            actor.kill()

    def lock_records(self) -> int:
        """Lock keys left in the metadata (A<ino>F, A<ino>P, SL...)."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            n = 0
            for (k,) in con.execute("SELECT k FROM kv"):
                k = bytes(k)
                if (len(k) == 10 and k[:1] == b"A" and k[9:] in (b"F", b"P")) or \
                        (len(k) == 18 and k[:2] == b"SL"):
                    n += 1
            return n
        finally:
            con.close()

    def run(self):
        h = self.h
        r = h.run("format", "--bucket", self.bucket, "--trash-days", "0", self.url, VOLUME)
        h.require(r.returncode == 0, "format a volume (sqlite3 + file bucket)", r.describe())
        self.mount(self.mnt_a, "A")
        self.mount(self.mnt_b, "B")
        fa = os.path.join(self.mnt_a, "lockfile")
        fb = os.path.join(self.mnt_b, "lockfile")
        with open(fa, "wb") as f:
            f.write(b"x" * 4096)
        h.require(self.wait_until(lambda: os.path.exists(fb)), "mount B sees the file made on A")
        try:
            self.flock_cases(fa, fb)
            self.posix_cases(fa, fb)
            self.mount(self.mnt_c, "C", "--max-threads", "2")
            self.many_waiters(os.path.join(self.mnt_c, "lockfile"))
        finally:
            for actor in self.actors:
                actor.kill()
        for mp, label in ((self.mnt_a, "A"), (self.mnt_b, "B"), (self.mnt_c, "C")):
            r = h.umount(mp)
            h.check(r.returncode == 0 and mounted_fstype(mp) is None, f"umount {label}",
                    r.describe() + "\nlog:\n" + h.log_tail())
        left = self.lock_records()
        h.check(left == 0, "no lock records are left in the metadata after the unmounts",
                f"{left} lock keys remain")


def main() -> int:
    h = Harness("posix_locks", sys.argv)
    with h:
        Locks(h).run()
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
