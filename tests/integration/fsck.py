#!/usr/bin/env python3
"""Tessera: `tessera fsck` on a real volume (SQLite metadata + local bucket).

Usage: python3 tests/integration/fsck.py /path/to/tessera

1. format, mount, make a tree (directories, files of several sizes up to
   9 MiB, a hard link, a symlink, a rename); fsck while mounted and after
   unmounting finds 0 problems (text and --json agree on the counts);
2. one block object of /big is deleted from the bucket: fsck reports a
   missing object naming /big and that key, exits 1; --path /a (not using
   it) exits 0;
3. the usedSpace counter is overwritten and the entry of /c/empty deleted
   through sqlite3: fsck finds both (stored and expected values, an orphan
   inode), --repair fixes them (the orphan goes to /lost+found/<inode>) and
   only the missing object remains; with the block put back fsck exits 0,
   and the mount shows /lost+found/<inode>;
4. bad usage (unknown option, no URL) and an unreachable volume give one
   line on stderr and exit 2.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness  # noqa: E402

VOLUME = "fsckvol"
MiB = 1 << 20


def write_file(path: str, size: int, seed: int):
    block = bytes((seed + i) % 251 for i in range(MiB))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, MiB)
            f.write(block[:n])
            left -= n


class FsckTest:
    def __init__(self, h: Harness):
        self.h = h
        self.db = os.path.join(h.tmp, "meta.db")
        self.url = "sqlite3://" + self.db
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt")
        os.mkdir(self.mnt)

    def fsck(self, *args: str):
        return self.h.run("fsck", *args, self.url, timeout=120)

    def fsck_json(self, *args: str):
        r = self.fsck("--json", *args)
        try:
            return r, json.loads(r.stdout)
        except ValueError:
            return r, None

    def mount(self):
        r = self.h.mount(self.url, self.mnt)
        self.h.require(r.returncode == 0, "mount", r.describe() + "\n" + self.h.log_tail())

    def umount(self):
        r = self.h.umount(self.mnt)
        self.h.require(r.returncode == 0, "umount", r.describe())

    def build_tree(self):
        m = lambda rel: os.path.join(self.mnt, rel)  # noqa: E731
        os.makedirs(m("a/b"))
        os.mkdir(m("c"))
        write_file(m("a/small"), 100, 1)
        write_file(m("a/b/mid"), 300 * 1024, 2)
        write_file(m("big"), 9 * MiB, 3)
        write_file(m("a/five"), 5 * MiB, 4)
        open(m("c/empty"), "wb").close()
        os.link(m("a/small"), m("c/small-link"))
        os.symlink("../a/small", m("c/sym"))
        os.rename(m("a/b/mid"), m("c/mid-renamed"))

    def run(self):
        h = self.h
        r = h.run("format", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.mount()
        self.build_tree()
        # root, a, a/b, c; small (two links), mid-renamed, big, five, empty, sym
        inodes, dirs = 10, 4

        r = self.fsck()
        h.check(r.returncode == 0 and "problems found:    0" in r.stdout,
                "fsck while mounted: 0 problems, exit 0", r.describe())
        info = h.run("info", "--json", os.path.join(self.mnt, "big"))
        h.require(info.returncode == 0, "info --json /big", info.describe())
        big_blocks = [b for c in json.loads(info.stdout)[0]["chunks"] for s in c["slices"]
                      for b in s["blocks"]]
        h.require(len(big_blocks) >= 3, "/big has at least 3 block objects", str(big_blocks))
        self.umount()

        r = self.fsck()
        h.check(r.returncode == 0 and "problems found:    0" in r.stdout
                and "0 problems remain" in r.stdout and not r.stderr,
                "fsck of the unmounted volume: 0 problems, exit 0", r.describe())
        r, j = self.fsck_json()
        h.check(r.returncode == 0 and j is not None and j["findings"] == []
                and j["summary"]["inodes"] == inodes and j["summary"]["directories"] == dirs
                and j["summary"]["files"] == inodes - dirs
                and j["summary"]["objects_checked"] >= 6
                and j["summary"]["problems_found"] == 0,
                f"fsck --json: no findings, {inodes} inodes, {dirs} directories",
                r.describe())

        # 2. A block of /big goes missing.
        victim = big_blocks[1]
        victim_path = os.path.join(self.bucket, victim)
        h.require(os.path.isfile(victim_path), "the block object is a file in the bucket",
                  victim_path)
        with open(victim_path, "rb") as f:
            saved = f.read()
        os.remove(victim_path)
        r = self.fsck()
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("missing-object:")]
        h.check(r.returncode == 1 and len(lines) == 1 and lines[0].startswith("missing-object: /big:")
                and victim in lines[0] and "cannot be repaired" in lines[0]
                and "problems found:    1" in r.stdout,
                "a deleted block: one missing object naming /big and its key, exit 1",
                r.describe())
        r = self.fsck("--path", "/a")
        h.check(r.returncode == 0 and "problems found:    0" in r.stdout,
                "fsck --path /a does not look at /big: exit 0", r.describe())

        # 3. Metadata corrupted behind the file system's back.
        con = sqlite3.connect(self.db)
        (raw,) = con.execute("SELECT v FROM kv WHERE k = ?", (b"CusedSpace",)).fetchone()
        used = struct.unpack(">q", raw)[0]
        con.execute("UPDATE kv SET v = ? WHERE k = ?", (struct.pack(">q", 12345), b"CusedSpace"))
        entry = [k for (k,) in con.execute("SELECT k FROM kv WHERE substr(k, 1, 1) = X'41'")
                 if len(k) > 18 and k[9:10] == b"D" and k[18:] == b"empty"]
        h.require(len(entry) == 1, "found the entry key of /c/empty", str(entry))
        (value,) = con.execute("SELECT v FROM kv WHERE k = ?", (entry[0],)).fetchone()
        orphan = struct.unpack(">I Q", value)[1]
        con.execute("DELETE FROM kv WHERE k = ?", (entry[0],))
        con.commit()
        con.close()

        r, j = self.fsck_json()
        kinds = sorted(f["kind"] for f in (j or {}).get("findings", []))
        space = [f for f in (j or {}).get("findings", []) if f["kind"] == "used-space"]
        orphans = [f for f in (j or {}).get("findings", []) if f["kind"] == "orphan"]
        h.check(r.returncode == 1 and kinds == ["missing-object", "orphan", "used-space"]
                and space and space[0]["stored"] == 12345 and space[0]["expected"] == used
                and orphans and orphans[0]["inode"] == orphan
                and orphans[0]["paths"] == [f"<orphan inode {orphan}>"],
                f"fsck finds usedSpace 12345 (expected {used}) and orphan inode {orphan}",
                r.describe())

        r = self.fsck("--repair")
        h.check(r.returncode == 1 and "problems repaired: 2" in r.stdout
                and "used-space: -: counter usedSpace is 12345" in r.stdout
                and f"moved to /lost+found/{orphan} (repaired)" in r.stdout
                and "1 problems remain" in r.stdout,
                "--repair fixes the counter and the orphan; the missing object remains (exit 1)",
                r.describe())
        r, j = self.fsck_json()
        h.check(r.returncode == 1 and j is not None
                and [f["kind"] for f in j["findings"]] == ["missing-object"]
                and j["findings"][0]["paths"] == ["/big"]
                and j["findings"][0]["repairable"] is False,
                "after --repair only the missing object is reported", r.describe())
        con = sqlite3.connect(self.db)
        (raw,) = con.execute("SELECT v FROM kv WHERE k = ?", (b"CusedSpace",)).fetchone()
        con.close()
        h.check(struct.unpack(">q", raw)[0] == used, "usedSpace holds the recomputed value",
                f"{struct.unpack('>q', raw)[0]} != {used}")

        with open(victim_path, "wb") as f:
            f.write(saved)
        r = self.fsck()
        h.check(r.returncode == 0 and "problems found:    0" in r.stdout,
                "with the block back, fsck finds 0 problems", r.describe())
        self.mount()
        lf = os.path.join(self.mnt, "lost+found")
        h.check(os.path.isdir(lf) and os.listdir(lf) == [str(orphan)]
                and os.path.getsize(os.path.join(lf, str(orphan))) == 0
                and (os.stat(lf).st_mode & 0o777) == 0o700,
                "the orphan shows in /lost+found (mode 0700) in the mount",
                str(os.listdir(lf) if os.path.isdir(lf) else "no lost+found"))
        self.umount()

        # 4. Bad input.
        for what, args in (("unknown option", ("fsck", "--frobnicate", self.url)),
                           ("no META-URL", ("fsck",)),
                           ("bad --threads", ("fsck", "--threads", "0", self.url)),
                           ("unreachable volume",
                            ("fsck", "sqlite3://" + os.path.join(self.h.tmp, "nope", "x.db")))):
            r = h.run(*args)
            h.check(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
                    and r.stderr.startswith("tessera fsck: ") and r.stdout == "",
                    f"fsck with {what}: one line on stderr, exit 2", r.describe())
        r = h.run("fsck", "--help")
        h.check(r.returncode == 0 and "--repair" in r.stdout and "lost+found" in r.stdout
                and "Exit status" in r.stdout, "fsck --help describes the options", r.describe())


def main():
    h = Harness("fsck", sys.argv)
    with h:
        FsckTest(h).run()
    sys.exit(h.exit_code())


if __name__ == "__main__":
    main()
