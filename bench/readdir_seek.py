#!/usr/bin/env python3
"""Listing deep inside a huge directory costs the same as listing its start.

Creates N entries in one directory of a fresh Tessera mount, then times
(median of several rounds):
  first:  a new directory stream reading its first 1,000 entries;
  deep:   a new directory stream moved with seekdir() to the position that
          telldir() returned at entry N/2 in an earlier stream (as an NFS
          re-export does), reading 1,000 entries from there.

Usage: bench/readdir_seek.py [-n 1000000] [--rounds 7]   (root, after scripts/build.sh)
"""
import argparse
import ctypes
import ctypes.util
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.opendir.restype = ctypes.c_void_p
libc.opendir.argtypes = [ctypes.c_char_p]
libc.readdir64.restype = ctypes.c_void_p
libc.readdir64.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]


def read_entries(d, count):
    got = 0
    while got < count and libc.readdir64(d):
        got += 1
    return got


def time_first(path, count):
    start = time.perf_counter()
    d = libc.opendir(path.encode())
    got = read_entries(d, count)
    elapsed = time.perf_counter() - start
    libc.closedir(d)
    assert got == count, f"read {got} entries, wanted {count}"
    return elapsed


def cookie_at(path, index):
    d = libc.opendir(path.encode())
    assert read_entries(d, index) == index
    pos = libc.telldir(d)
    libc.closedir(d)
    return pos


def time_deep(path, pos, count):
    start = time.perf_counter()
    d = libc.opendir(path.encode())
    libc.seekdir(d, pos)
    got = read_entries(d, count)
    elapsed = time.perf_counter() - start
    libc.closedir(d)
    assert got == count, f"read {got} entries after seekdir, wanted {count}"
    return elapsed


def populate(path, n, threads=4):
    def work(t):
        for i in range(t, n, threads):
            os.close(os.open(os.path.join(path, f"entry-{i:08d}"), os.O_CREAT | os.O_WRONLY, 0o644))
    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--page", type=int, default=1000)
    args = ap.parse_args()
    tessera = os.path.join(REPO, "build", "tessera")
    work = tempfile.mkdtemp(prefix="tessera-readdir-")
    mp = os.path.join(work, "mnt")
    os.makedirs(mp)
    meta = f"sqlite3://{work}/meta.db"
    print("tessera readdir seek benchmark")
    print(f"  version:  {subprocess.run([tessera, 'version'], capture_output=True, text=True).stdout.strip()}")
    print(f"  date:     {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"  machine:  {os.cpu_count()} cores, kernel {platform.release()}")
    print(f"  setup:    sqlite3 metadata + file store on local disk, one directory of {args.n:,} entries")
    print(f"  command:  {' '.join(sys.argv)}")
    try:
        subprocess.run([tessera, "format", "--trash-days", "0", "--bucket", f"{work}/bucket", meta, "readdir"],
                       check=True, capture_output=True)
        subprocess.run([tessera, "mount", "-d", "--log", f"{work}/log", meta, mp], check=True,
                       capture_output=True)
        big = os.path.join(mp, "big")
        os.mkdir(big)
        start = time.perf_counter()
        populate(big, args.n)
        took = time.perf_counter() - start
        print(f"  created {args.n:,} entries in {took:.0f} s ({args.n / took:,.0f}/s)")
        pos = cookie_at(big, args.n // 2)
        first = [time_first(big, args.page) for _ in range(args.rounds)]
        deep = [time_deep(big, pos, args.page) for _ in range(args.rounds)]
        f, d = statistics.median(first), statistics.median(deep)
        print()
        print(f"{'listing':<44}{'median ms':>10}")
        print(f"{'first ' + str(args.page) + ' entries, new stream':<44}{f * 1000:>10.2f}")
        print(f"{str(args.page) + ' entries after seekdir to entry ' + format(args.n // 2, ','):<44}{d * 1000:>10.2f}")
        print(f"ratio deep/first: {d / f:.2f} (target <= 2)")
    finally:
        subprocess.run([tessera, "umount", mp], capture_output=True)
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
