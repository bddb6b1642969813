#!/usr/bin/env python3
"""Tessera: random writes, overwrites and compaction through a real FUSE mount.

Usage: python3 tests/integration/random_writes.py /path/to/tessera

1. random-write workload: the same operations (pwrite at random offsets in
   and around the first two chunks, writes through a second descriptor,
   O_APPEND writes, ftruncate down and up, punched holes, fsync, reads of
   what was just written) go to a file in the mount and to a local file; the
   two are compared byte for byte along the way, after close and after a
   remount. Many commits land in the same chunks, so the mount compacts them
   in the background: `tessera info` shows far fewer slice records than
   commits were made;
2. overwrite-heavy file: one 256 KiB region rewritten 400 times with an
   fsync each time, compared with the local copy;
3. reads during compaction: reader threads read random ranges (page cache
   dropped before each read) and compare with the expected bytes while
   `tessera compact` merges the file again and again and new slices holding
   the same bytes keep arriving; afterwards every chunk is one slice, and
   `tessera status` counts the replaced slices waiting for deletion.
About 20-40 s.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, fallocate, sha  # noqa: E402

VOLUME = "random-vol"
MiB = 1 << 20
CHUNK = 64 * MiB
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def first_difference(a: str, b: str) -> str:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if x != y:
                for i in range(min(len(x), len(y))):
                    if x[i] != y[i]:
                        return f"first difference at byte {off + i}"
                return f"sizes differ: {os.path.getsize(a)} vs {os.path.getsize(b)}"
            if not x:
                return "no difference"
            off += len(x)


class RandomWrites:
    def __init__(self, h: Harness):
        self.h = h
        self.url = "sqlite3://" + os.path.join(h.tmp, "meta.db")
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt")
        self.local = os.path.join(h.tmp, "local")
        os.mkdir(self.mnt)
        os.mkdir(self.local)

    def m(self, name: str) -> str:
        return os.path.join(self.mnt, name)

    def mount(self, what: str):
        r = self.h.mount(self.url, self.mnt)
        self.h.require(r.returncode == 0, what, r.describe() + self.h.log_tail())

    def umount(self, what: str):
        r = self.h.umount(self.mnt)
        self.h.require(r.returncode == 0, what, r.describe())

    def info(self, path: str) -> dict | None:
        r = self.h.run("info", "--json", path)
        try:
            return json.loads(r.stdout)[0]
        except (ValueError, IndexError, KeyError):
            self.h.check(False, f"tessera info --json {path}", r.describe())
            return None

    def records(self, path: str) -> list[int]:
        """Slice records per chunk of a file, from `tessera info`."""
        info = self.info(path)
        return [len(c["slices"]) for c in info["chunks"]] if info else []

    def same(self, name: str, what: str) -> bool:
        a, b = self.m(name), os.path.join(self.local, name)
        ok = os.path.getsize(a) == os.path.getsize(b) and sha(a) == sha(b)
        return self.h.check(ok, what, "" if ok else first_difference(a, b))

    # ---- 1. random writes -------------------------------------------------

    def random_workload(self):
        h = self.h
        rng = random.Random(20261123)
        name = "random.bin"
        paths = [self.m(name), os.path.join(self.local, name)]
        fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in paths]
        second = [os.open(p, os.O_RDWR) for p in paths]
        appends = [os.open(p, os.O_WRONLY | os.O_APPEND) for p in paths]
        # Offsets mostly in a 12 MiB region, some near the end of the first
        # chunk so that writes cross into the second.
        regions = [(0, 12 * MiB), (CHUNK - 2 * MiB, CHUNK + 2 * MiB)]
        fsyncs = 0
        read_mismatch = 0
        for i in range(3000):
            op = rng.random()
            lo, hi = regions[0] if rng.random() < 0.8 else regions[1]
            if op < 0.70:
                off = rng.randrange(lo, hi)
                n = rng.choice([1, 100, 1000, 4096, 5000, 65536, 200000])
                data = rng.randbytes(n)
                target = fds if rng.random() < 0.8 else second
                for fd in target:
                    os.pwrite(fd, data, off)
                if rng.random() < 0.3:
                    got = os.pread(target[0], n, off)
                    if got != data:
                        read_mismatch += 1
            elif op < 0.78:
                data = rng.randbytes(rng.choice([10, 3000, 70000]))
                for fd in appends:
                    os.write(fd, data)
            elif op < 0.82:
                size = rng.randrange(0, 14 * MiB) if rng.random() < 0.7 else rng.randrange(CHUNK, CHUNK + 3 * MiB)
                for fd in fds:
                    os.ftruncate(fd, size)
            elif op < 0.86:
                off = rng.randrange(lo, hi)
                n = rng.randrange(1, 300000)
                for fd in fds:
                    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, n)
            else:
                os.fsync(fds[0])
                fsyncs += 1
            if i % 500 == 499:
                self.same(name, f"after {i + 1} operations the file matches the local copy")
        h.check(read_mismatch == 0, "reads right after writes return the bytes written",
                f"{read_mismatch} mismatches")
        for fd in fds + second + appends:
            os.close(fd)
        self.same(name, "after close the file matches the local copy")
        records = self.records(self.m(name))
        h.check(bool(records) and max(records) < 200,
                "background compaction keeps the slice records of each chunk low",
                f"records per chunk {records} after {fsyncs} fsyncs and 3000 operations")
        self.umount("umount after random writes")
        self.mount("remount after random writes")
        self.same(name, "after a remount the file matches the local copy")

    # ---- 2. overwrites ----------------------------------------------------

    def overwrite_workload(self):
        h = self.h
        rng = random.Random(7)
        name = "overwrite.bin"
        paths = [self.m(name), os.path.join(self.local, name)]
        fds = [os.open(p, os.O_RDWR | os.O_CREAT, 0o644) for p in paths]
        base = rng.randbytes(MiB)
        for fd in fds:
            os.pwrite(fd, base, 0)
        for i in range(400):
            data = rng.randbytes(256 * 1024)
            off = 300 * 1024 + rng.randrange(0, 4096)
            for fd in fds:
                os.pwrite(fd, data, off)
            os.fsync(fds[0])
        for fd in fds:
            os.close(fd)
        self.same(name, "a region rewritten 400 times matches the local copy")
        records = self.records(self.m(name))
        h.check(bool(records) and records[0] < 200, "its slice records were compacted",
                f"records per chunk {records} after 400 commits")

    # ---- 3. reads during compaction ---------------------------------------

    def reads_during_compaction(self):
        h = self.h
        rng = random.Random(99)
        name = self.m("compacted.bin")
        size = 8 * MiB + 12345
        expected = bytearray(rng.randbytes(size))
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, expected)
        # 80 small commits: below the background threshold.
        for _ in range(80):
            off, n = rng.randrange(0, size - 5000), rng.randrange(1, 5000)
            data = rng.randbytes(n)
            expected[off:off + n] = data
            os.pwrite(fd, data, off)
            os.fsync(fd)
        expected = bytes(expected)
        before = self.records(name)
        h.check(bool(before) and before[0] > 50, "the file starts with many slice records", str(before))

        stop = threading.Event()
        counts = {"reads": 0, "bad": 0, "errors": 0}
        lock = threading.Lock()

        def reader(seed: int):
            r = random.Random(seed)
            rfd = os.open(name, os.O_RDONLY)
            try:
                while not stop.is_set():
                    off = r.randrange(0, size)
                    n = r.randrange(1, 600000)
                    os.posix_fadvise(rfd, 0, 0, os.POSIX_FADV_DONTNEED)
                    try:
                        got = os.pread(rfd, n, off)
                        bad = got != expected[off:off + n]
                        err = False
                    except OSError:
                        bad, err = False, True
                    with lock:
                        counts["reads"] += 1
                        counts["bad"] += int(bad)
                        counts["errors"] += int(err)
            finally:
                os.close(rfd)

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        compact_ok = True
        for round_ in range(6):
            # New slices with the bytes already there: the content stays, the records churn.
            for _ in range(20):
                off, n = rng.randrange(0, size - 100000), rng.randrange(1, 100000)
                os.pwrite(fd, expected[off:off + n], off)
                os.fsync(fd)
            r = h.run("compact", "--threads", "2", self.mnt)
            compact_ok &= h.check(r.returncode == 0 and "compacted" in r.stdout,
                                  f"tessera compact round {round_ + 1}", r.describe(), quiet=True)
        stop.set()
        for t in threads:
            t.join()
        os.close(fd)
        h.check(compact_ok, "tessera compact succeeded in every round")
        h.check(counts["reads"] > 20, "readers kept reading during compaction", str(counts))
        h.check(counts["bad"] == 0 and counts["errors"] == 0,
                "every read during compaction returned the right bytes", str(counts))
        after = self.records(name)
        h.check(after == [1], "after tessera compact the chunk is one slice", str(after))
        with open(name, "rb") as f:
            h.check(f.read() == expected, "the compacted file holds the expected bytes")
        _, status = h.status(self.url)
        pending = (status or {}).get("usage", {}).get("pending_deleted_slices", 0)
        h.check(pending > 0, "replaced slices wait for their grace period before deletion",
                f"pending_deleted_slices = {pending}")
        r = h.run("compact", os.path.join(self.h.tmp, "local"))
        h.check(r.returncode != 0 and r.stderr.count("\n") == 1 and "not inside a Tessera mount" in r.stderr,
                "compact outside a mount fails with one line", r.describe())
        r = h.run("compact", "--threads", "0", self.mnt)
        h.check(r.returncode != 0 and r.stderr.count("\n") == 1, "compact --threads 0 fails with one line",
                r.describe())

    def run(self):
        h = self.h
        r = h.run("format", "--trash-days", "0", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.mount("mount")
        self.random_workload()
        self.overwrite_workload()
        self.reads_during_compaction()
        self.umount("final umount")


def main() -> int:
    h = Harness("random_writes", sys.argv)
    with h:
        RandomWrites(h).run()
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
