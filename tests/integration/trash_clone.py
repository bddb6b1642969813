#!/usr/bin/env python3
"""Tessera: the trash, `tessera rmr` and `tessera clone` through a real mount
(SQLite metadata + local bucket).

Usage: python3 tests/integration/trash_clone.py /path/to/tessera

1. trash on (default, 1 day): rm of a file and rm -r of a tree move them into
   /.trash/<hour>/<parent>_<inode>_<name>; the root listing does not show
   .trash; the trash is read-only for users (and nothing can be created in
   it even by root); df keeps counting trashed files; `tessera trash list`
   shows their paths, `tessera trash restore PATTERN` puts them back byte for
   byte, parents first;
2. `tessera rmr` moves a 300-entry tree into the trash, `trash restore`
   brings it back whole; rm inside the trash deletes for good;
3. `tessera clone`: a tree clone appears complete, moves no block (the
   bucket's object count is unchanged), diverges on write, and stays intact
   byte for byte after its source is overwritten and deleted;
4. a mount of the volume re-formatted with --trash-days 0 empties the
   trash in the background and the blocks of what was in it go; then
   `tessera rmr` deletes for good and waits for the blocks;
5. bad usage of the commands: one line on stderr, non-zero exit.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, run_as_user, sha  # noqa: E402

VOLUME = "trashvol"
KiB = 1 << 10


def write(path: str, size: int, seed: int):
    data = bytes((seed * 7 + i) % 251 for i in range(size))
    with open(path, "wb") as f:
        f.write(data)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class TrashCloneTest:
    def __init__(self, h: Harness):
        self.h = h
        self.db = os.path.join(h.tmp, "meta.db")
        self.url = "sqlite3://" + self.db
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt")
        os.mkdir(self.mnt)

    def m(self, rel: str) -> str:
        return os.path.join(self.mnt, rel)

    def mount(self, *extra: str):
        r = self.h.mount(self.url, self.mnt, *extra)
        self.h.require(r.returncode == 0, "mount", r.describe() + "\n" + self.h.log_tail())

    def umount(self):
        r = self.h.umount(self.mnt)
        self.h.require(r.returncode == 0, "umount", r.describe())

    def objects(self) -> int:
        n = 0
        for _, _, files in os.walk(os.path.join(self.bucket, VOLUME, "chunks")):
            n += len(files)
        return n

    def usage(self) -> dict:
        _, status = self.h.status(self.url)
        return (status or {}).get("usage", {})

    def trash_list(self, pattern: str | None = None) -> list[str]:
        r = self.h.run("trash", "list", self.url, *([pattern] if pattern else []))
        self.h.check(r.returncode == 0, "trash list", r.describe())
        return [line.split()[-1] for line in r.stdout.splitlines()[:-1]]

    def run(self):
        h = self.h
        r = h.run("format", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.mount()

        # 1. rm into the trash, and back.
        os.makedirs(self.m("data/run1"))
        write(self.m("data/run1/a.bin"), 300 * KiB, 1)
        write(self.m("data/run1/b.bin"), 5 * KiB, 2)
        write(self.m("data/keep.txt"), 100, 3)
        want = {p: sha(self.m(p)) for p in ("data/run1/a.bin", "data/run1/b.bin")}
        used_before = self.usage().get("used_space")
        os.unlink(self.m("data/run1/a.bin"))
        h.check(not os.path.exists(self.m("data/run1/a.bin")), "rm removes the name")
        h.check(".trash" not in os.listdir(self.mnt), "the root listing does not show .trash",
                str(os.listdir(self.mnt)))
        hours = os.listdir(self.m(".trash"))
        h.check(len(hours) == 1 and len(hours[0]) == 13 and hours[0][4] == "-",
                "the trash holds one YYYY-MM-DD-HH directory", str(hours))
        inside = os.listdir(self.m(".trash/" + hours[0])) if hours else []
        h.check(len(inside) == 1 and inside[0].endswith("_a.bin"),
                "the file is in it as <parent>_<inode>_<name>", str(inside))
        if inside:
            trashed = self.m(f".trash/{hours[0]}/{inside[0]}")
            h.check(sha(trashed) == want["data/run1/a.bin"], "the trashed file reads back")
            h.check(os.stat(self.m(".trash")).st_mode & 0o777 == 0o555,
                    "the trash is mode 0555", oct(os.stat(self.m(".trash")).st_mode))
            res = run_as_user(65534, 65534, [["unlink", trashed],
                                             ["create", self.m(f".trash/{hours[0]}/x"), 0o644]])
            h.check(all(x[0] == "err" for x in res), "users can delete nothing from the trash",
                    str(res))
        try:
            open(self.m(".trash/new"), "w").close()
            created = True
        except PermissionError:
            created = False
        h.check(not created, "even root creates nothing in the trash")
        h.check(self.usage().get("used_space") == used_before,
                "a trashed file keeps counting in the usage", str(self.usage()))
        os.unlink(self.m("data/run1/b.bin"))
        os.rmdir(self.m("data/run1"))
        listed = self.trash_list()
        h.check(sorted(listed) == ["/data/run1", "/data/run1/a.bin", "/data/run1/b.bin"],
                "trash list shows the paths the entries had", str(listed))
        h.check(self.trash_list("*.bin") == ["/data/run1/a.bin", "/data/run1/b.bin"]
                or sorted(self.trash_list("*.bin")) == ["/data/run1/a.bin", "/data/run1/b.bin"],
                "trash list takes a pattern")
        usage = self.usage()
        h.check(usage.get("trash_entries") == 3 and usage.get("trash_files") == 2
                and usage.get("trash_bytes") == 305 * KiB,
                "status counts the trash", json.dumps(usage))
        r = h.run("trash", "restore", self.url, "/data/*")
        h.check(r.returncode == 0 and r.stdout.count("restored /data") == 3,
                "trash restore puts the three entries back", r.describe())
        time.sleep(1.2)  # the mount's entry cache
        h.check(all(os.path.exists(self.m(p)) and sha(self.m(p)) == d for p, d in want.items()),
                "the restored files read back byte for byte")
        h.check(self.trash_list() == [], "the trash is empty again")

        # 2. rmr of a tree into the trash, and back; rm inside the trash.
        tree = {}
        for d in range(10):
            os.makedirs(self.m(f"tree/d{d}"))
            for f in range(29):
                p = f"tree/d{d}/f{f}"
                write(self.m(p), 1000 + f, d * 100 + f)
                tree[p] = sha(self.m(p))
        r = h.run("rmr", self.m("tree"))
        h.check(r.returncode == 0 and "301 entries moved to the trash" in r.stdout,
                "rmr moves the tree into the trash", r.describe())
        time.sleep(1.2)
        h.check(not os.path.exists(self.m("tree")), "rmr removed the tree from the mount")
        r = h.run("trash", "restore", self.url, "/tree*")
        h.check(r.returncode == 0 and "301 restored" in r.stdout, "the whole tree is restored",
                r.describe())
        time.sleep(1.2)
        h.check(all(sha(self.m(p)) == d for p, d in tree.items()),
                "the restored tree reads back byte for byte")
        os.unlink(self.m("data/keep.txt"))
        hour = os.listdir(self.m(".trash"))[0]
        name = [n for n in os.listdir(self.m(".trash/" + hour)) if n.endswith("_keep.txt")]
        h.check(len(name) == 1, "keep.txt is in the trash", str(name))
        if name:
            os.unlink(self.m(f".trash/{hour}/{name[0]}"))
            h.check(self.trash_list() == [], "rm in the trash deletes for good")

        # 3. clone: no block moves, diverges, survives its source.
        objects = self.objects()
        r = h.run("clone", self.m("tree"), self.m("tree2"))
        h.check(r.returncode == 0 and "301 entries cloned" in r.stdout, "clone copies the tree",
                r.describe())
        h.check(self.objects() == objects, "the clone moved no block",
                f"{objects} -> {self.objects()}")
        time.sleep(1.2)
        h.check(all(sha(self.m(p.replace("tree/", "tree2/", 1))) == d for p, d in tree.items()),
                "the clone reads like its source")
        write(self.m("tree/d3/f7"), 5000, 999)
        h.check(sha(self.m("tree2/d3/f7")) == tree["tree/d3/f7"],
                "overwriting the source leaves the clone as it was")
        with open(self.m("tree2/d4/f1"), "r+b") as f:
            f.write(b"clone side")
        h.check(sha(self.m("tree/d4/f1")) == tree["tree/d4/f1"],
                "writing the clone leaves the source as it was")
        r = h.run("clone", self.m("tree"), self.m("tree2"))
        h.check(r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1,
                "clone onto an existing name fails in one line", r.describe())
        r = h.run("clone", self.m("data"), self.m("data/inside"))
        h.check(r.returncode == 0, "a directory clones into itself (the copy is named last)",
                r.describe())
        time.sleep(1.2)
        h.check(sorted(os.listdir(self.m("data/inside"))) == ["run1"],
                "and holds the source as it was", str(os.listdir(self.m("data/inside"))))
        # Left in the trash for the next step.
        r = h.run("rmr", self.m("data/run1"))
        h.check(r.returncode == 0 and len(self.trash_list()) == 3, "data/run1 is in the trash",
                r.describe())
        self.umount()

        # 4. Trash off: the next mount empties the trash, rmr deletes.
        r = h.run("format", "--trash-days", "0", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "re-format with --trash-days 0", r.describe())
        self.mount("--heartbeat", "1")
        r = h.run("rmr", self.m("tree"))
        h.check(r.returncode == 0 and "301 entries removed" in r.stdout, "rmr deletes the tree",
                r.describe())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (self.trash_list() or self.usage().get(
                "pending_deleted_slices")):
            time.sleep(0.5)
        h.check(self.trash_list() == [], "the mount emptied the trash in the background")
        time.sleep(1.2)
        h.check(all(sha(self.m(p.replace("tree/", "tree2/", 1))) == d
                    for p, d in tree.items() if p not in ("tree/d4/f1",)),
                "the clone is intact byte for byte after its source went")
        h.check(not os.path.exists(self.m("data/run1")) and sha(self.m("data/inside/run1/a.bin"))
                == want["data/run1/a.bin"], "the clone of data/run1 outlives it in the trash")
        usage = self.usage()
        h.check(usage.get("pending_deleted_files") == 0 and usage.get("pending_deleted_slices") == 0,
                "nothing waits for deletion", json.dumps(usage))
        r = h.run("fsck", self.url)
        h.check(r.returncode == 0, "fsck finds the volume consistent", r.describe())
        self.umount()
        r = h.run("gc", self.url)
        h.check(r.returncode == 0, "gc finds no leaked object", r.describe())

        # 5. Bad usage.
        for args in (("trash",), ("trash", "list"), ("trash", "frob", self.url), ("rmr",),
                     ("clone", self.m("x")), ("rmr", "/tmp"),
                     ("trash", "list", "sqlite3://" + os.path.join(h.tmp, "no", "x.db"))):
            r = h.run(*args)
            h.check(r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1,
                    f"tessera {' '.join(args[:2])}: one line on stderr, non-zero exit",
                    r.describe())
        for cmd in ("trash", "rmr", "clone"):
            r = h.run(cmd, "--help")
            h.check(r.returncode == 0 and "Usage: tessera " + cmd in r.stdout, f"{cmd} --help",
                    r.describe())


def main():
    h = Harness("trash_clone", sys.argv)
    with h:
        TrashCloneTest(h).run()
    sys.exit(h.exit_code())


if __name__ == "__main__":
    main()
