#!/usr/bin/env python3
"""Deleting, removing and cloning big trees on a Tessera volume, side by side
with the same work on the local disk, in one run.

Usage: bench/deletion.py [-n FILES] [--size BYTES] [--work DIR]

Each tree holds FILES files (default 100,000) of SIZE bytes (default 1 KiB,
so every file has a block object), 1,000 per directory. One volume: SQLite
metadata and a local-directory bucket, both under the work directory, which
also holds the local-disk trees (default: a directory under /var/tmp, on
the local disk). Phases:

- unlink: `os.unlink` of every file of a tree, one thread, through the
  mount (trash off); then how long until the background deletion emptied
  the bucket. The local disk does the same unlinks.
- rmr: `tessera rmr` of a tree (trash off), the blocks' deletion included
  (the command waits for it), against `rm -rf` of the same tree through the
  mount and on the local disk; and `tessera rmr` with the trash on (every
  entry moved into the trash).
- clone: `tessera clone` of a tree, against `cp -a` on the local disk. The
  bucket's object count before and after shows that no block moved.

Needs root (mounts) and the build (build/tessera).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from benchlib import (TESSERA, Mounts, interrupt_on_signals, machine_rows, print_header,
                      require_tessera, tessera_version)

PER_DIR = 1000


def make_tree(root, n, size):
    """n files of `size` bytes, PER_DIR per directory, written by 4 threads."""
    data = os.urandom(size)
    dirs = [os.path.join(root, f"d{i:04d}") for i in range((n + PER_DIR - 1) // PER_DIR)]
    os.makedirs(root, exist_ok=True)
    for d in dirs:
        os.mkdir(d)

    def fill(i):
        d = dirs[i]
        for j in range(min(PER_DIR, n - i * PER_DIR)):
            fd = os.open(os.path.join(d, f"f{j:04d}"), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(fill, range(len(dirs))))


def files_of(root):
    out = []
    for d in sorted(os.listdir(root)):
        out.extend(os.path.join(root, d, f) for f in sorted(os.listdir(os.path.join(root, d))))
    return out


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r.stdout


class Volume:
    def __init__(self, mounts, work, name):
        self.mounts = mounts
        self.db = os.path.join(work, f"{name}.db")
        self.url = "sqlite3://" + self.db
        self.bucket = mounts.dir(f"{name}-bucket")
        self.name = name
        self.mp = mounts.dir(f"{name}-mnt")
        self.log = os.path.join(work, f"{name}.log")
        self.live = None

    def format(self, trash_days):
        run([TESSERA, "format", "--trash-days", str(trash_days), "--bucket", self.bucket,
             self.url, self.name])

    def mount(self):
        # Housekeeping every second, so that leftovers are picked up quickly.
        self.live = self.mounts.tessera(self.url, self.mp, self.log, ("--heartbeat", "1"))

    def unmount(self):
        self.mounts.unmount(self.live)

    def objects(self):
        n = 0
        for _, _, files in os.walk(os.path.join(self.bucket, self.name, "chunks")):
            n += len(files)
        return n

    def wait_for_objects(self, want, timeout=1800):
        deadline = time.monotonic() + timeout
        while self.objects() > want and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.objects() == want

    def usage(self):
        return json.loads(run([TESSERA, "status", self.url]))["usage"]


def rate(n, seconds):
    return n / seconds if seconds > 0 else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="files per tree (default 100,000)")
    ap.add_argument("--size", type=int, default=1024, help="bytes per file (default 1024)")
    ap.add_argument("--work", default="/var/tmp", help="where the work directory goes")
    args = ap.parse_args()
    require_tessera()
    interrupt_on_signals()
    n = args.n
    work = tempfile.mkdtemp(prefix="tessera-deletion-", dir=args.work)
    mounts = Mounts(work)
    rows = []  # (phase, tessera files/s, local files/s, note)
    try:
        print_header("tessera deletion, rmr and clone benchmark", [
            ("version", tessera_version()),
            *machine_rows(),
            ("trees", f"{n:,} files of {args.size} B, {PER_DIR} per directory"),
            ("volume", "SQLite + local-directory bucket in " + work + "; mount defaults, "
                       "--heartbeat 1"),
        ])
        local = mounts.dir("local")
        vol = Volume(mounts, work, "vol")
        vol.format(0)
        vol.mount()

        # unlink, one file at a time.
        tree = os.path.join(vol.mp, "unlink")
        make_tree(tree, n, args.size)
        objects = vol.objects()
        paths = files_of(tree)
        t = timed(lambda: [os.unlink(p) for p in paths])
        drained = timed(lambda: vol.wait_for_objects(0))
        lt = os.path.join(local, "unlink")
        make_tree(lt, n, args.size)
        lpaths = files_of(lt)
        lt_s = timed(lambda: [os.unlink(p) for p in lpaths])
        rows.append(("unlink (one thread)", rate(n, t), rate(n, lt_s),
                     f"bucket emptied {drained:.1f} s after the last unlink "
                     f"({objects:,} objects, {rate(objects, t + drained):,.0f} objects/s overall)"))
        print(f"unlink: {rate(n, t):,.0f} files/s; bucket empty after +{drained:.1f} s", flush=True)

        # rmr with the trash off, against rm -rf through the mount and locally.
        tree = os.path.join(vol.mp, "rmr")
        make_tree(tree, n, args.size)
        t = timed(lambda: run([TESSERA, "rmr", tree]))
        left = vol.objects()
        tree = os.path.join(vol.mp, "rmrf")
        make_tree(tree, n, args.size)
        t_rm = timed(lambda: run(["rm", "-rf", tree]))
        vol.wait_for_objects(0)
        lt = os.path.join(local, "rmr")
        make_tree(lt, n, args.size)
        lt_s = timed(lambda: run(["rm", "-rf", lt]))
        rows.append(("tessera rmr, trash off", rate(n, t), rate(n, lt_s),
                     f"blocks deleted before it returns ({left} objects left); "
                     f"rm -rf through the mount: {rate(n, t_rm):,.0f} files/s"))
        print(f"rmr: {rate(n, t):,.0f} files/s; rm -rf through the mount {rate(n, t_rm):,.0f}",
              flush=True)
        vol.unmount()

        # rmr into the trash.
        vol.format(1)
        vol.mount()
        tree = os.path.join(vol.mp, "rmr-trash")
        make_tree(tree, n, args.size)
        t = timed(lambda: run([TESSERA, "rmr", tree]))
        trash = vol.usage().get("trash_files")
        rows.append(("tessera rmr, trash on", rate(n, t), rate(n, lt_s),
                     f"{trash:,} files in the trash afterwards"))
        print(f"rmr into the trash: {rate(n, t):,.0f} files/s", flush=True)

        # clone, against cp -a on the local disk.
        src = os.path.join(vol.mp, "src")
        make_tree(src, n, args.size)
        before = vol.objects()
        t = timed(lambda: run([TESSERA, "clone", src, os.path.join(vol.mp, "copy")]))
        after = vol.objects()
        lt = os.path.join(local, "src")
        make_tree(lt, n, args.size)
        lt_s = timed(lambda: run(["cp", "-a", lt, os.path.join(local, "copy")]))
        rows.append(("tessera clone", rate(n, t), rate(n, lt_s),
                     f"bucket objects {before:,} before, {after:,} after (cp -a on the local disk "
                     f"copies the data)"))
        print(f"clone: {rate(n, t):,.0f} files/s", flush=True)
        vol.unmount()
    finally:
        mounts.close()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"files/s, {n:,} files of {args.size} B")
    print(f"{'phase':<26}{'tessera':>12}{'local disk':>12}{'ratio':>8}  note")
    for phase, tess, loc, note in rows:
        ratio = tess / loc if loc else 0
        print(f"{phase:<26}{tess:>12,.0f}{loc:>12,.0f}{ratio:>8.2f}  {note}")


if __name__ == "__main__":
    sys.exit(main())
