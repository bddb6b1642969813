#!/usr/bin/env python3
"""The data path through a Tessera mount, side by side with the FUSE floor
(an in-memory FUSE file system) and rclone mount of a local directory with
--vfs-cache-mode full, in one run.

Usage: bench/data.py [--size 1G] [--request 1M] [--seconds 10 | --ops N] [--files 2000]
                     [--file-size 16K] [--tools DIR] [--only fusefloor,rclone,tessera]

Phases, each run on every target before the next phase starts:
  seq write    one file of --size in 1 MiB write()s, fsync, close: MB/s
  seq read     the same file after drop_caches, 1 MiB read()s: MB/s (cold)
  rand 4K      os.preadv of 4 KiB at distinct random 4 KiB-aligned offsets
               of that file (no offset twice in a pass) for --seconds or
               until every one was read, after drop_caches on a new handle
               (cold), then the same offsets again on another new handle
               without dropping caches (warm): IOPS
  rand 128K    the same with 128 KiB requests, 128 KiB-aligned
  small write  --files files of --file-size: create+write+close, files/s
  small read   the same files after drop_caches: open+read+close, files/s
and the peak resident memory (VmHWM) of each mount process in each phase.

rclone and Tessera are mounted afresh (a new process) for every phase, so
every peak is that phase's own and every cold phase starts without any cache
of the file system; rclone gets a new, empty --cache-dir each time. The
floor keeps its data in its own memory, so it is mounted once for the four
phases on the big file and once for the two small-file phases.

Needs root (mounts, drop_caches), the build (build/tessera) and fusefloor.cc
(default: ../shared/tools beside the repo). rclone is installed from Debian
when missing. Python 3 standard library only.
"""
import argparse
import array
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import (DEFAULT_TOOLS, TESSERA, Mounts, build_tools, drop_caches, ensure_rclone,
                      interrupt_on_signals, machine_rows, print_header, print_table, ratio,
                      require_tessera, tessera_version, vm_hwm_kib)

TARGETS = ["fusefloor", "rclone", "tessera"]
BUFFER_MIB = 300  # tessera's default --buffer-size
MB = 1e6  # throughput in decimal MB/s, as dd prints it


def parse_size(text):
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in "KMG" else ""
    return int(float(t[:len(t) - len(unit)]) * units[unit])


def human(n):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------- workloads

def stamp(buf, i):
    """Makes each request's data unique (no store can deduplicate it) and checkable."""
    struct.pack_into("<Q", buf, 0, i)


def seq_write(path, size, req):
    buf = bytearray(os.urandom(req))
    view = memoryview(buf)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(size // req):
            stamp(buf, i)
            done = 0
            while done < req:
                done += os.write(fd, view[done:])
        os.fsync(fd)
    finally:
        os.close(fd)
    return size / (time.perf_counter() - start) / MB


def seq_read(path, size, req):
    buf = bytearray(req)
    views = [buf]
    total = 0
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        i = 0
        while True:
            n = os.readv(fd, views)
            if n == 0:
                break
            if n != req or struct.unpack_from("<Q", buf, 0)[0] != i:
                raise RuntimeError(f"{path}: request {i} read {n} bytes or wrong data")
            total += n
            i += 1
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    if total != size:
        raise RuntimeError(f"{path}: read {total} bytes, wrote {size}")
    return size / elapsed / MB


def make_offsets(size, req, count, seed):
    """Up to `count` distinct aligned offsets in random order: a pass never
    reads a place twice, so what one pass brought into a cache cannot answer
    a later request of the same pass."""
    rng = random.Random(seed)
    slots = size // req
    return array.array("q", (s * req for s in rng.sample(range(slots), min(count, slots))))


def rand_pass(path, offsets, req, seconds=None):
    """preadv at each offset in order on a new handle, for `seconds` when given
    (then it stops early), else all of them. Returns (ops done, seconds)."""
    buf = bytearray(req)
    views = [buf]
    preadv = os.preadv
    clock = time.perf_counter
    done = len(offsets)
    fd = os.open(path, os.O_RDONLY)
    try:
        start = clock()
        if seconds is None:
            for off in offsets:
                if preadv(fd, views, off) != req:
                    raise RuntimeError(f"{path}: short read at {off}")
        else:
            deadline = start + seconds
            for i, off in enumerate(offsets):
                if preadv(fd, views, off) != req:
                    raise RuntimeError(f"{path}: short read at {off}")
                if i & 31 == 31 and clock() >= deadline:
                    done = i + 1
                    break
        elapsed = clock() - start
    finally:
        os.close(fd)
    return done, elapsed


def small_write(directory, count, size):
    os.makedirs(directory, exist_ok=True)
    buf = bytearray(os.urandom(size))
    start = time.perf_counter()
    for i in range(count):
        stamp(buf, i)
        fd = os.open(os.path.join(directory, f"f{i:06d}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                     0o644)
        try:
            os.write(fd, buf)
        finally:
            os.close(fd)
    return count / (time.perf_counter() - start)


def small_read(directory, count, size):
    buf = bytearray(size + 1)
    views = [buf]
    start = time.perf_counter()
    for i in range(count):
        fd = os.open(os.path.join(directory, f"f{i:06d}"), os.O_RDONLY)
        try:
            n = os.readv(fd, views)
        finally:
            os.close(fd)
        if n != size or struct.unpack_from("<Q", buf, 0)[0] != i:
            raise RuntimeError(f"{directory}/f{i:06d}: read {n} bytes or wrong data")
    return count / (time.perf_counter() - start)


# ------------------------------------------------------------------ targets

class Target:
    """A file system under test. mount() gives a fresh mount process, except
    for the floor, which keeps its data in memory and is only mounted afresh
    when asked to (new=True)."""

    def __init__(self, name, mounts):
        self.name = name
        self.mounts = mounts
        self.mp = mounts.dir("mnt-" + name)
        self.current = None

    def mount(self, new):
        raise NotImplementedError

    def settle(self, expected):
        """Waits until written data has left the mount process's hands."""

    def release(self, keep=False):
        if self.current is not None and not keep:
            self.mounts.unmount(self.current)
            self.current = None

    def peak_mib(self):
        kib = vm_hwm_kib(self.current.pid) if self.current else None
        return kib / 1024 if kib is not None else None


class Floor(Target):
    def __init__(self, mounts, binary):
        super().__init__("fusefloor", mounts)
        self.binary = binary
        self.command = f"{binary} -f MOUNTPOINT"

    def mount(self, new):
        if self.current is not None and new:
            self.release()
        if self.current is None:
            self.current = self.mounts.fusefloor(self.binary, self.mp)
        return self.mp


class Rclone(Target):
    def __init__(self, mounts):
        super().__init__("rclone", mounts)
        self.src = mounts.dir("rclone-src")
        self.caches = 0
        self.cache = None
        self.command = (f"rclone mount {self.src} MOUNTPOINT --vfs-cache-mode full "
                        f"--cache-dir {mounts.work}/rclone-cache-N (new for every mount) "
                        "--config /dev/null")

    def mount(self, new):
        self.release()
        self.caches += 1
        self.cache = os.path.join(self.mounts.work, f"rclone-cache-{self.caches}")
        self.current = self.mounts.rclone(self.src, self.mp, self.cache)
        return self.mp

    def settle(self, expected, timeout=900):
        """rclone uploads a closed file from its cache to the remote (here the
        local directory) some seconds later (--vfs-write-back 5s): wait for
        every file to be there in full before unmounting."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if all(os.path.getsize(os.path.join(self.src, rel)) == size
                       for rel, size in expected):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("rclone did not upload the written files in time")

    def release(self, keep=False):
        super().release(keep)
        # Its cache is of no use to the next (fresh) mount: free the disk.
        if self.current is None and self.cache:
            shutil.rmtree(self.cache, ignore_errors=True)
            self.cache = None


class Tessera(Target):
    def __init__(self, mounts, options=()):
        super().__init__("tessera", mounts)
        work = mounts.work
        self.meta = f"sqlite3://{work}/tessera.db"
        self.bucket = os.path.join(work, "bucket")
        self.log = os.path.join(work, "tessera.log")
        self.options = list(options)
        mounts.tessera_format(self.meta, self.bucket)
        status = json.loads(subprocess.run([TESSERA, "status", self.meta], check=True,
                                           capture_output=True, text=True).stdout)
        self.block_size = status["setting"]["block_size"]
        self.command = " ".join([TESSERA, "mount", "-d", "--log", self.log, *self.options,
                                 self.meta, "MOUNTPOINT"])

    def mount(self, new):
        self.release()
        self.current = self.mounts.tessera(self.meta, self.mp, self.log, self.options)
        return self.mp


# ---------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="big file size (default 1G)")
    ap.add_argument("--request", default="1M", help="sequential request size (default 1M)")
    ap.add_argument("--seconds", type=float, default=10,
                    help="length of each cold random-read pass (default 10)")
    ap.add_argument("--ops", type=int, default=0,
                    help="instead of --seconds: random reads per pass")
    ap.add_argument("--files", type=int, default=2000, help="small files (default 2000)")
    ap.add_argument("--file-size", default="16K", help="small file size (default 16K)")
    ap.add_argument("--tools", default=DEFAULT_TOOLS, help="where fusefloor.cc is")
    ap.add_argument("--only", default="", help="comma list of targets to run")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random offsets")
    args = ap.parse_args()
    size = parse_size(args.size)
    req = parse_size(args.request)
    fsize = parse_size(args.file_size)
    if size % req or size < 128 * 1024:
        sys.exit("bench: --size must be a multiple of --request and at least 128K")
    if os.geteuid() != 0:
        sys.exit("bench: needs root (mounts, /proc/sys/vm/drop_caches)")
    only = [t for t in args.only.split(",") if t] or TARGETS
    for t in only:
        if t not in TARGETS:
            sys.exit(f"bench: unknown target {t} (known: {', '.join(TARGETS)})")
    require_tessera()
    rclone_version = ensure_rclone()
    interrupt_on_signals()

    work = tempfile.mkdtemp(prefix="tessera-bench-")
    mounts = Mounts(work)
    names = [t for t in TARGETS if t in only]
    perf = {}  # (row, target) -> figure
    peak = {}  # (phase, target) -> MiB
    rand_sizes = [4096, 128 * 1024]
    max_ops = args.ops or 2_000_000
    try:
        tools_bin = os.path.join(work, "tools")
        build_tools(args.tools, tools_bin, ("fusefloor",))
        targets = []
        if "fusefloor" in names:
            targets.append(Floor(mounts, os.path.join(tools_bin, "fusefloor")))
        if "rclone" in names:
            targets.append(Rclone(mounts))
        if "tessera" in names:
            targets.append(Tessera(mounts))
        tess = next((t for t in targets if t.name == "tessera"), None)
        tmp_fs = next((line.split() for line in reversed(open("/proc/mounts").read().splitlines())
                       if work.startswith(line.split()[1].rstrip("/") + "/")), ["?", "?", "?"])
        rand_what = (f"{args.ops:,} ops" if args.ops else f"{args.seconds:g} s") + \
            " or until every aligned place was read once"
        print_header("tessera data path benchmark", [
            ("version", tessera_version()),
            *machine_rows(),
            ("temp dir", f"{work} on {tmp_fs[2]} ({tmp_fs[0]})"),
            ("engine", "sqlite3 metadata, file in the temp dir"),
            ("store", "file: blocks in a local directory in the temp dir"),
            ("block size", human(tess.block_size) if tess else "-"),
            ("tessera", "fresh volume, default mount options: attr/entry cache 1 s, "
                        f"--buffer-size {BUFFER_MIB} MiB, --memory-cache 64 MiB, no disk cache "
                        "(file store), --prefetch 3, --max-uploads 20, --max-downloads 16"),
            ("  mount", tess.command if tess else "-"),
            ("rclone", f"{rclone_version}, a local directory, --vfs-cache-mode full, "
                       "otherwise defaults"),
            ("  mount", next((t.command for t in targets if t.name == "rclone"), "-")),
            ("fusefloor", "in-memory FUSE file system (keep_cache on open), "
                          + next((t.command for t in targets if t.name == "fusefloor"), "-")),
            ("workloads", f"{human(size)} file, {human(req)} sequential requests, fsync at the end; "
                          f"random reads of 4 KiB and 128 KiB at distinct aligned offsets, "
                          f"{rand_what}, per cold pass; "
                          f"{args.files:,} files of {human(fsize)}"),
            ("cold", "after sync + drop_caches, a new mount process (rclone: empty cache dir), "
                     "a new file handle"),
            ("warm", "the same offsets again right after the cold pass, on a new file handle, "
                     "caches kept (see docs/benchmarks.md)"),
            ("command", " ".join(sys.argv)),
        ])

        def phase(label, fn, new_floor=False, keep_floor=True, settle=None):
            for t in targets:
                print(f"{label}: {t.name}...", file=sys.stderr, flush=True)
                drop_caches()
                root = t.mount(new_floor)
                fn(t, root)
                if settle:
                    t.settle(settle)
                peak[(label, t.name)] = t.peak_mib()
                t.release(keep=isinstance(t, Floor) and keep_floor)

        big = "big"

        def do_seq_write(t, root):
            perf[("write+fsync, MB/s", t.name)] = seq_write(os.path.join(root, big), size, req)

        def do_seq_read(t, root):
            drop_caches()
            perf[("read cold, MB/s", t.name)] = seq_read(os.path.join(root, big), size, req)

        def do_rand(rsize):
            offsets = make_offsets(size, rsize, max_ops, args.seed)

            def fn(t, root):
                path = os.path.join(root, big)
                drop_caches()
                n, took = rand_pass(path, offsets, rsize, None if args.ops else args.seconds)
                perf[(f"{human(rsize)} cold, IOPS", t.name)] = n / took
                n2, took2 = rand_pass(path, offsets[:n], rsize)
                perf[(f"{human(rsize)} warm, IOPS", t.name)] = n2 / took2
                perf[(f"{human(rsize)} ops per pass", t.name)] = n
            return fn

        def do_small_write(t, root):
            perf[("write, files/s", t.name)] = small_write(os.path.join(root, "small"), args.files,
                                                           fsize)

        def do_small_read(t, root):
            drop_caches()
            perf[("read cold, files/s", t.name)] = small_read(os.path.join(root, "small"),
                                                               args.files, fsize)

        phase("seq write", do_seq_write, new_floor=True, settle=[(big, size)])
        phase("seq read", do_seq_read)
        for rsize in rand_sizes:
            phase(f"rand {human(rsize).replace(' KiB', 'K')}", do_rand(rsize),
                  keep_floor=rsize != rand_sizes[-1])
        phase("small write", do_small_write, new_floor=True,
              settle=[(f"small/f{i:06d}", fsize) for i in range(args.files)])
        phase("small read", do_small_read, keep_floor=False)
        end_load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except Exception:
        if os.path.exists(os.path.join(work, "tessera.log")):
            with open(os.path.join(work, "tessera.log")) as f:
                tail = f.readlines()[-20:]
            if tail:
                print("bench: last lines of the tessera log:\n" + "".join(tail), file=sys.stderr)
        raise
    finally:
        mounts.close()

    def rows(labels):
        return [(label, {n: perf.get((label, n)) for n in names}) for label in labels]

    def verdict(ok):
        return "met" if ok else "MISSED"

    def get(label, name):
        return perf.get((label, name))

    print(f"load average at the end: {end_load}")
    print()
    print_table(f"sequential, one {human(size)} file, {human(req)} requests", "MB/s", names,
                rows(["write+fsync, MB/s", "read cold, MB/s"]))
    for label in ("write+fsync, MB/s", "read cold, MB/s"):
        tf, ff, rf = get(label, "tessera"), get(label, "fusefloor"), get(label, "rclone")
        parts = []
        if ratio(tf, ff) is not None:
            parts.append(f">= 0.70 x floor ({verdict(ratio(tf, ff) >= 0.70)})")
        if ratio(tf, rf) is not None:
            parts.append(f">= rclone ({verdict(ratio(tf, rf) >= 1.0)})")
        if parts:
            print(f"target {label.split(',')[0]}: tessera " + " and ".join(parts))
    print()
    labels = []
    for rsize in rand_sizes:
        labels += [f"{human(rsize)} cold, IOPS", f"{human(rsize)} warm, IOPS"]
    print_table(f"random reads in the {human(size)} file, distinct aligned offsets, one handle per "
                "pass, " + (f"up to {args.ops:,} ops per pass" if args.ops else
                            f"cold pass up to {args.seconds:g} s, ")
                + "warm pass replays its offsets", "IOPS", names, rows(labels))
    print("ops per cold pass: " + "; ".join(
        f"{human(r)}: " + ", ".join(f"{n} {get(f'{human(r)} ops per pass', n) or 0:,.0f}" for n in names)
        for r in rand_sizes))
    print("fusefloor cold: one FUSE round trip per read (its data is in its memory); fusefloor warm: "
          "the kernel page cache (keep_cache), no round trip.\nrclone warm: a round trip per read "
          "(no keep_cache); tessera warm: the kernel page cache, kept because the file is unchanged")
    for rsize in rand_sizes:
        v = ratio(get(f"{human(rsize)} warm, IOPS", "tessera"), get(f"{human(rsize)} warm, IOPS", "rclone"))
        if v is not None:
            print(f"target {human(rsize)} warm: tessera >= 2 x rclone ({verdict(v >= 2)})")
    print()
    print_table(f"small files, {args.files:,} files of {human(fsize)}", "files/s", names,
                rows(["write, files/s", "read cold, files/s"]))
    for label in ("write, files/s", "read cold, files/s"):
        v = ratio(get(label, "tessera"), get(label, "rclone"))
        if v is not None:
            print(f"target small {label.split(',')[0]}: tessera >= 3 x rclone ({verdict(v >= 3)})")
    print()
    phases = ["seq write", "seq read", "rand 4K", "rand 128K", "small write", "small read"]
    print_table("peak resident memory (VmHWM) of the mount process, MiB; fusefloor: cumulative "
                "over the big-file phases and over the small-file phases, and it holds the data",
                "MiB", names, [(p, {n: peak.get((p, n)) for n in names}) for p in phases],
                ratios=False)
    limit = BUFFER_MIB + 150
    tpeaks = [peak.get((p, "tessera")) for p in phases if peak.get((p, "tessera")) is not None]
    if tpeaks:
        print(f"target: tessera peak <= {BUFFER_MIB} MiB buffer + 150 MiB = {limit} MiB in every "
              f"phase ({verdict(max(tpeaks) <= limit)}, highest {max(tpeaks):,.0f} MiB)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; everything it mounted is unmounted and its files removed")
