#!/usr/bin/env python3
"""`tessera gc` on a bucket of 100,000 block objects: how fast it lists and
classifies them, and how fast `--delete` removes leaked ones.

Usage: bench/gc.py [--files 20000] [--leaked 80000] [--threads 10] [--binary PATH]

Setup (SQLite metadata, local-directory bucket, block size 4 MiB):
  - `--files` small files (100 B to 4 KiB, one block object each) are
    written through a mount by 4 writers: real files, chunks and slices;
  - the nextSlice counter is moved `--leaked` ids on (as writers that took
    slice ids and died before committing them leave it), and one block
    object per such id is written straight into the bucket: leaked objects
    of slices that were handed out but never committed;
  - every object's mtime is set two hours back, past gc's skip window.
Then, with the volume unmounted:
  1. `tessera gc --json` (report only) over all the objects;
  2. `tessera gc --delete --threads N --json`: the leaked ones are listed,
     re-checked against the metadata and deleted;
  3. `tessera gc --json` again over what is left.
For each run: objects listed, wall time, objects/s (listing and
classifying; deletion separately), and the peak resident memory.

Needs root (a mount) and the build (build/tessera, or --binary).
"""
import argparse
import json
import os
import random
import sqlite3
import struct
import sys
import tempfile
import threading
import time

import benchlib
from benchlib import Mounts, interrupt_on_signals, machine_rows, print_header

VOLUME = "gcbench"
AGE_S = 2 * 3600


def write_files(root, count, writers=4):
    """count small files under root, by several writer threads."""
    errors = []

    def work(w):
        rng = random.Random(w)
        d = os.path.join(root, f"w{w}")
        os.mkdir(d)
        try:
            for i in range(w, count, writers):
                with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
                    f.write(rng.randbytes(100 + (i * 131) % 4000))
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"writing files: {errors[0]}")


def counter(db, name):
    con = sqlite3.connect(db)
    try:
        (raw,) = con.execute("SELECT v FROM kv WHERE k = ?", (b"C" + name.encode(),)).fetchone()
    finally:
        con.close()
    return struct.unpack(">q", raw)[0]


def set_counter(db, name, value):
    con = sqlite3.connect(db)
    try:
        con.execute("UPDATE kv SET v = ? WHERE k = ?", (struct.pack(">q", value), b"C" + name.encode()))
        con.commit()
    finally:
        con.close()


def plant_leaked(bucket, first_id, count):
    """One block object per slice id in [first_id, first_id + count)."""
    data = b"x" * 512
    made = set()
    for sid in range(first_id, first_id + count):
        d = os.path.join(bucket, VOLUME, "chunks", str(sid // 1000000), str(sid // 1000))
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        with open(os.path.join(d, f"{sid}_0_{len(data)}"), "wb") as f:
            f.write(data)


def age_objects(bucket):
    t = time.time() - AGE_S
    n = 0
    for d, _, names in os.walk(os.path.join(bucket, VOLUME, "chunks")):
        for name in names:
            os.utime(os.path.join(d, name), (t, t))
            n += 1
    return n


def run_gc(url, *args):
    """(report JSON, exit code, wall seconds, peak RSS in KiB) of one gc run."""
    argv = [benchlib.TESSERA, "gc", "--json", *args, url]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.monotonic()
        pid = os.posix_spawn(argv[0], argv, os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                                           (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
        _, status, usage = os.wait4(pid, 0)  # its own peak memory, not other children's
        wall = time.monotonic() - t
        rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if rc not in (0, 1):
        raise RuntimeError(f"tessera gc {' '.join(args)} failed ({rc}): {stderr.strip()}")
    return json.loads(stdout), rc, wall, usage.ru_maxrss


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000, help="files written through a mount")
    ap.add_argument("--leaked", type=int, default=80000, help="leaked block objects planted")
    ap.add_argument("--threads", type=int, default=10, help="gc --delete --threads (default 10)")
    ap.add_argument("--binary", default=benchlib.TESSERA, help="the tessera binary")
    args = ap.parse_args()
    benchlib.TESSERA = os.path.abspath(args.binary)
    if not os.path.exists(benchlib.TESSERA):
        sys.exit(f"bench: {benchlib.TESSERA} is missing: build it first")
    interrupt_on_signals()
    work = tempfile.mkdtemp(prefix="tessera-bench-")
    mounts = Mounts(work)
    runs = []
    try:
        db = os.path.join(work, "meta.db")
        url = "sqlite3://" + db
        bucket = mounts.dir("bucket")
        print_header("tessera gc benchmark", [
            ("version", benchlib.tessera_version()),
            *machine_rows(),
            ("volume", "SQLite metadata, local-directory bucket, 4 MiB blocks"),
            ("objects", f"{args.files:,} files of 100 B-4 KiB written through a mount (one "
                        f"block each) + {args.leaked:,} leaked blocks of uncommitted slice ids, "
                        f"all aged 2 h"),
            ("command", f"tessera gc --json; tessera gc --delete --threads {args.threads} "
                        f"--json; tessera gc --json (volume unmounted)"),
        ])
        mounts.tessera_format(url, bucket, VOLUME)
        mp = mounts.dir("mnt")
        m = mounts.tessera(url, mp, os.path.join(work, "mount.log"))
        t = time.monotonic()
        write_files(mp, args.files)
        print(f"setup: wrote {args.files:,} files in {time.monotonic() - t:.1f} s", flush=True)
        mounts.unmount(m)

        next_slice = counter(db, "nextSlice")
        set_counter(db, "nextSlice", next_slice + args.leaked + 1)
        t = time.monotonic()
        plant_leaked(bucket, next_slice, args.leaked)
        total = age_objects(bucket)
        print(f"setup: planted {args.leaked:,} leaked objects and aged {total:,} objects in "
              f"{time.monotonic() - t:.1f} s", flush=True)
        print(flush=True)

        for label, extra in (("gc (report)", ()),
                             ("gc --delete", ("--delete", "--threads", str(args.threads))),
                             ("gc after", ())):
            os.sync()
            report, rc, wall, rss = run_gc(url, *extra)
            runs.append((label, report, rc, wall, rss))
            print(f"{label}: exit {rc}, {report['listed']['count']:,} listed, "
                  f"{report['leaked']['count']:,} leaked, {wall:.2f} s", flush=True)
    finally:
        mounts.close()

    print()
    print(f"{'run':<14}{'listed':>10}{'valid':>9}{'leaked':>9}{'deleted':>9}{'wall s':>9}"
          f"{'scan s':>8}{'list s':>8}{'list obj/s':>12}{'del s':>8}{'del obj/s':>11}"
          f"{'peak RSS':>10}")
    for label, r, rc, wall, rss in runs:
        listed = r["listed"]["count"]
        deleted = r.get("deleted", {}).get("leaked", {}).get("count")
        del_s = r.get("delete_s")
        print(f"{label:<14}{listed:>10,}{r['valid']['count']:>9,}{r['leaked']['count']:>9,}"
              f"{'-' if deleted is None else f'{deleted:,}':>9}{wall:>9.2f}{r['scan_s']:>8.2f}"
              f"{r['list_s']:>8.2f}{listed / r['list_s'] if r['list_s'] else 0:>12,.0f}"
              f"{'-' if del_s is None else f'{del_s:.2f}':>8}"
              f"{f'{deleted / del_s:,.0f}' if deleted and del_s else '-':>11}"
              f"{'-' if rss is None else f'{rss / 1024:.0f} MiB':>10}")
    print("(scan: reading the metadata; list obj/s: listing and classifying the bucket; "
          "del obj/s: leaked objects deleted, re-check included; peak RSS of the gc process)")
    bad = [label for label, r, rc, *_ in runs if (rc != 0) != (label == "gc (report)")]
    if bad:
        sys.exit(f"bench: unexpected exit status of {', '.join(bad)}")


if __name__ == "__main__":
    main()
