#!/usr/bin/env python3
"""Tessera: `tessera gc` on a real volume (SQLite metadata + local bucket).

Usage: python3 tests/integration/gc.py /path/to/tessera

1. format and mount; a few files to keep (one written in three flushes,
   so that its chunk holds three slice records) and 1,000 small files;
   with every object aged past the skip window, gc reports them all valid,
   no leak, exit 0, nothing on stderr (not a terminal); --json agrees;
   gc --compact merges the fragmented chunk and the file reads back;
2. the 1,000 files are deleted and `gc --delete` run at once: soon the
   bucket holds only the kept files' objects and no G or R record remains;
3. a block of a deleted file is put back (a lost deletion) and aged, and a
   recent one planted: gc reports one leaked object naming it (exit 1) and
   skips the recent one; gc --delete removes the leaked one only (exit 0);
   the kept files read back byte for byte;
4. files are written and deleted while no block can be deleted (the
   bucket's chunks folder bind-mounted read-only), and the mount is killed
   (kill -9) right after: G records of the freed slices, R records of the
   last files and all their blocks are left; `gc` reports them as pending,
   not leaked, and `gc --delete` with the volume unmounted finishes them:
   none of their blocks and no G or R record remains, and the kept files
   are intact after a remount;
5. bad usage exits 2 with one line; --help describes the command.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, drop_page_cache, mounted_fstype, pid_alive, sha  # noqa: E402

VOLUME = "gcvol"
KiB = 1024
MiB = 1 << 20
TWO_HOURS = 2 * 3600


class GcTest:
    def __init__(self, h: Harness):
        self.h = h
        self.db = os.path.join(h.tmp, "meta.db")
        self.url = "sqlite3://" + self.db
        self.bucket = os.path.join(h.tmp, "bucket")
        self.chunks = os.path.join(self.bucket, VOLUME, "chunks")
        self.mnt = os.path.join(h.tmp, "mnt")
        os.mkdir(self.mnt)
        self.kept: dict[str, str] = {}  # path in the volume -> sha256
        self.pid = 0

    # ---- helpers ------------------------------------------------------------

    def gc(self, *args: str, timeout: float = 120):
        return self.h.run("gc", *args, self.url, timeout=timeout)

    def gc_json(self, *args: str):
        r = self.gc("--json", *args)
        try:
            return r, json.loads(r.stdout)
        except ValueError:
            return r, None

    def mount(self):
        r = self.h.mount(self.url, self.mnt)
        self.h.require(r.returncode == 0, "mount", r.describe() + "\n" + self.h.log_tail())
        m = re.search(r"daemon pid (\d+)", r.stdout)
        self.h.require(m is not None, "mount reports its daemon pid", r.describe())
        self.pid = int(m.group(1))

    def umount(self):
        r = self.h.umount(self.mnt)
        self.h.require(r.returncode == 0, "umount", r.describe())

    def objects(self) -> set[str]:
        """Keys of the block objects in the bucket."""
        out = set()
        for d, _, names in os.walk(self.chunks):
            for n in names:
                if not n.startswith("."):
                    out.add(os.path.relpath(os.path.join(d, n), self.bucket))
        return out

    def age_objects(self, seconds: int = TWO_HOURS):
        """Moves every object's mtime back, past gc's skip window."""
        t = time.time() - seconds
        for key in self.objects():
            try:
                os.utime(os.path.join(self.bucket, key), (t, t))
            except FileNotFoundError:
                pass

    def records(self, first: str) -> int:
        """How many metadata keys start with `first` (G: freed slices, R: files to delete)."""
        con = sqlite3.connect(self.db)
        try:
            (n,) = con.execute("SELECT count(*) FROM kv WHERE substr(k, 1, 1) = ?",
                               (first.encode(),)).fetchone()
        finally:
            con.close()
        return n

    def wait_for(self, what: str, pred, timeout: float = 20.0, detail=lambda: "") -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return self.h.check(True, what)
            time.sleep(0.2)
        return self.h.check(False, what, detail())

    def write(self, rel: str, data: bytes):
        path = os.path.join(self.mnt, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def live_blocks(self) -> set[str]:
        """The block keys the kept files use now (tessera info)."""
        r = self.h.run("info", "--json", *(os.path.join(self.mnt, rel) for rel in self.kept))
        self.h.require(r.returncode == 0, "info --json of the kept files", r.describe())
        return {b for f in json.loads(r.stdout) for c in f.get("chunks", []) for s in c["slices"]
                for b in s["blocks"]}

    def verify_kept(self, what: str):
        drop_page_cache()
        bad = []
        for rel, digest in self.kept.items():
            try:
                got = sha(os.path.join(self.mnt, rel))
            except OSError as e:
                got = f"error {e}"
            if got != digest:
                bad.append(f"{rel}: {got}")
        self.h.check(not bad, f"{what}: all {len(self.kept)} kept files read back byte for byte",
                     "\n".join(bad))

    # ---- steps --------------------------------------------------------------

    def build(self):
        h = self.h
        rng = random.Random(7)
        for rel, size in (("keep/one-byte", 1), ("keep/small.bin", 70 * KiB + 3),
                          ("keep/big.bin", 9 * MiB + 5)):
            data = rng.randbytes(size)
            self.write(rel, data)
            self.kept[rel] = hashlib.sha256(data).hexdigest()
        # Three flushes into one chunk: three slice records.
        path = os.path.join(self.mnt, "keep/fragmented.bin")
        content = bytearray(rng.randbytes(200 * KiB))
        with open(path, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
            for off in (10 * KiB, 150 * KiB):
                patch = rng.randbytes(20 * KiB)
                content[off:off + len(patch)] = patch
                f.seek(off)
                f.write(patch)
                f.flush()
                os.fsync(f.fileno())
        self.kept["keep/fragmented.bin"] = hashlib.sha256(bytes(content)).hexdigest()
        self.kept_objects = self.objects()

        os.mkdir(os.path.join(self.mnt, "many"))
        for i in range(1000):
            self.write(f"many/f{i:04d}", rng.randbytes(1 + (i * 37) % (8 * KiB)))
        h.progress("wrote 1000 files")
        self.many_objects = self.objects() - self.kept_objects
        h.require(len(self.many_objects) == 1000, "each of the 1000 files has one block object",
                  f"{len(self.many_objects)} new objects")

    def report_all_valid(self):
        h = self.h
        r = self.gc()
        h.check(r.returncode == 0 and "leaked objects:         0 objects" in r.stdout
                and "0 leaked objects remain" in r.stdout and r.stderr == "",
                "gc of fresh objects: no leak, exit 0, nothing on stderr", r.describe())
        h.check("skipped objects:        %d objects" % len(self.objects()) in r.stdout,
                "objects modified within the hour are skipped", r.describe())

        self.age_objects()
        total = len(self.objects())
        r, j = self.gc_json()
        h.check(r.returncode == 0 and j is not None and j["valid"]["count"] == total
                and j["leaked"]["count"] == 0 and j["skipped"]["count"] == 0
                and j["pending"]["count"] == 0 and j["leaked_remaining"] == 0
                and j["fragmented_chunks"] == 1 and "trash" not in j,
                f"gc --json: all {total} objects valid, one fragmented chunk", r.describe())
        r = self.gc()
        h.check(r.returncode == 0 and f"valid objects:          {total} objects" in r.stdout
                and "fragmented chunks:      1" in r.stdout,
                "the text report says the same", r.describe())

        r = self.gc("--compact")
        h.check(r.returncode == 0 and "compacted:              1 chunks, 3 slice records -> 1"
                in r.stdout, "gc --compact merges the fragmented chunk", r.describe())
        r, j = self.gc_json()
        h.check(j is not None and j["fragmented_chunks"] == 0
                and j["pending_deleted_slices"]["replaced_later"]["count"] == 3,
                "afterwards no chunk is fragmented and its 3 old slices wait for deletion",
                r.describe())
        self.verify_kept("after compaction")
        # The merged slices' blocks go a minute later (a mount's heartbeat or
        # a gc --delete), at any time during the rest of the test.
        self.kept_live = self.live_blocks()
        self.replaced = self.kept_objects - self.kept_live
        self.h.check(len(self.replaced) == 3, "compaction replaced 3 blocks", str(self.replaced))

    def delete_many(self):
        h = self.h
        for i in range(1000):
            os.unlink(os.path.join(self.mnt, f"many/f{i:04d}"))
        os.rmdir(os.path.join(self.mnt, "many"))
        r = self.gc("--delete")
        h.check(r.returncode == 0 and "0 leaked objects remain" in r.stdout,
                "gc --delete right after deleting 1000 files: exit 0", r.describe())
        self.wait_for("then the bucket holds only the kept files' objects",
                      lambda: self.objects() - self.replaced == self.kept_live,
                      detail=lambda: f"{len(self.objects() - self.replaced - self.kept_live)} extra, "
                                     f"{len(self.kept_live - self.objects())} missing")
        self.wait_for("and no G or R record remains",
                      lambda: self.records("G") == 0 and self.records("R") == 0,
                      detail=lambda: f"G {self.records('G')}, R {self.records('R')}")

    def leaked_object(self):
        h = self.h
        self.age_objects()
        leaked = sorted(self.many_objects)[500]  # a deleted file's block, back again
        fresh = sorted(self.many_objects)[501]
        for key, age in ((leaked, TWO_HOURS), (fresh, 0)):
            path = os.path.join(self.bucket, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(b"lost" * 100)
            t = time.time() - age
            os.utime(path, (t, t))
        r = self.gc()
        h.check(r.returncode == 1 and f"leaked object: {leaked}" in r.stdout
                and "leaked objects:         1 objects, 400 B" in r.stdout
                and "1 leaked objects remain (run with --delete" in r.stdout
                and fresh not in r.stdout,
                "gc reports the planted block as the one leaked object, exit 1", r.describe())
        r, j = self.gc_json()
        h.check(r.returncode == 1 and j is not None and j["leaked"]["count"] == 1
                and j["leaked"]["examples"] == [leaked] and j["skipped"]["recent"]["count"] == 1,
                "gc --json: one leaked, the recent one skipped", r.describe())
        r = self.gc("--delete")
        h.check(r.returncode == 0 and "1 leaked objects, 400 B" in r.stdout
                and "0 leaked objects remain" in r.stdout,
                "gc --delete removes it, exit 0", r.describe())
        objects = self.objects()
        h.check(leaked not in objects and fresh in objects,
                "the leaked block is gone, the recent one stays", str(objects - self.kept_live))
        h.check(self.kept_live <= objects, "every block of the kept files is still there",
                str(self.kept_live - objects))
        self.verify_kept("after gc --delete")
        os.remove(os.path.join(self.bucket, fresh))
        r = self.gc()
        h.check(r.returncode == 0 and "leaked objects:         0 objects" in r.stdout,
                "a second gc finds nothing leaked", r.describe())

    def crash_after_delete(self):
        h = self.h
        before = self.objects()
        rng = random.Random(3)
        os.mkdir(os.path.join(self.mnt, "crash"))
        for i in range(300):
            self.write(f"crash/c{i:03d}", rng.randbytes(2 * KiB + i))
        self.write("crash/big", rng.randbytes(9 * MiB))
        crash_objects = self.objects() - before
        h.require(len(crash_objects) == 303, "the files to crash on have 303 block objects",
                  str(len(crash_objects)))
        # From here on no block can be deleted (the chunks folder turns
        # read-only): the mount commits the deletions in the metadata, and
        # their freed slices keep their G records and blocks, as a crash
        # between the metadata delete and the object delete leaves them.
        subprocess.run(["mount", "--bind", self.chunks, self.chunks], check=True, timeout=20)
        h.other_mounts.append(self.chunks)
        subprocess.run(["mount", "-o", "remount,bind,ro", self.chunks], check=True, timeout=20)
        names = sorted(os.listdir(os.path.join(self.mnt, "crash")))
        for name in names[:150]:
            os.unlink(os.path.join(self.mnt, "crash", name))
        self.wait_for("the mount deletes half of the files' metadata; their slices keep G records",
                      lambda: self.records("R") == 0 and self.records("G") >= 150,
                      detail=lambda: f"G {self.records('G')}, R {self.records('R')}")
        # The other half is killed before the mount deletes them (R records).
        for name in names[150:]:
            os.unlink(os.path.join(self.mnt, "crash", name))
        os.kill(self.pid, signal.SIGKILL)  # our own mount daemon, by pid
        deadline = time.monotonic() + 10
        while pid_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        h.require(not pid_alive(self.pid), "the mount daemon is dead")
        subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True, timeout=20)
        h.require(mounted_fstype(self.mnt) is None, "the dead mount is cleared")
        subprocess.run(["umount", self.chunks], check=True, timeout=20)
        h.other_mounts.remove(self.chunks)
        left = crash_objects & self.objects()
        h.check(left == crash_objects and self.records("G") >= 150,
                f"the kill left {self.records('R')} R records, {self.records('G')} G records "
                f"and all {len(crash_objects)} blocks", str(len(left)))

        r, j = self.gc_json()
        h.check(r.returncode == 0 and j is not None and j["leaked"]["count"] == 0
                and j["pending_deleted_files"]["being_deleted"]["count"] == self.records("R")
                and j["pending_deleted_slices"]["freed"]["count"] == self.records("G"),
                "gc reports the unfinished deletions as pending, not leaked", r.describe())
        r = self.gc("--delete")
        h.check(r.returncode == 0 and "0 leaked objects remain" in r.stdout,
                "gc --delete after the crash: exit 0", r.describe())
        h.check(not (crash_objects & self.objects()), "no block of the deleted files remains",
                str(sorted(crash_objects & self.objects())[:5]))
        h.check(self.records("G") == 0 and self.records("R") == 0, "no G or R record remains",
                f"G {self.records('G')}, R {self.records('R')}")
        h.check(self.kept_live <= self.objects(), "the kept files' blocks are all there",
                str(self.kept_live - self.objects()))
        self.mount()
        self.verify_kept("after the crash and gc")
        h.check(not os.listdir(os.path.join(self.mnt, "crash")), "the crash directory is empty")
        self.umount()

    def bad_usage(self):
        h = self.h
        for what, args in (("unknown option", ("gc", "--frobnicate", self.url)),
                           ("no META-URL", ("gc",)),
                           ("bad --threads", ("gc", "--threads", "0", self.url)),
                           ("unreachable volume",
                            ("gc", "sqlite3://" + os.path.join(self.h.tmp, "nope", "x.db")))):
            r = h.run(*args)
            h.check(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
                    and r.stderr.startswith("tessera gc: ") and r.stdout == "",
                    f"gc with {what}: one line on stderr, exit 2", r.describe())
        r = h.run("gc", "--help")
        h.check(r.returncode == 0 and "Usage: tessera gc" in r.stdout and "--delete" in r.stdout
                and "Exit status" in r.stdout, "gc --help describes the command", r.describe())

    def run(self):
        h = self.h
        r = h.run("format", "--trash-days", "0", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.bad_usage()
        self.mount()
        self.build()
        self.report_all_valid()
        self.delete_many()
        self.leaked_object()
        self.crash_after_delete()


def main():
    h = Harness("gc", sys.argv)
    with h:
        GcTest(h).run()
    sys.exit(h.exit_code())


if __name__ == "__main__":
    main()
