#!/usr/bin/env python3
"""Tessera acceptance test: bytes written through a real FUSE mount come back.

Usage: python3 tests/integration/mount_roundtrip.py /path/to/tessera

1. format a volume (SQLite metadata file + file bucket, default 4M blocks,
   trash off so that used space is exactly what the tree holds) and mount -d;
2. write 200 files (0 B .. 150 MiB, ~300 MiB in all) in nested directories
   with several write patterns (buffered, odd-sized sequential, out-of-order
   pwrite), then for a good fraction of them overwrite ranges, write past the
   end (holes), truncate down and up, append; every operation is applied to a
   local model tree as well, and read-your-writes is checked on the open fd;
3. rename files and directories (also over an existing file), remove files
   and an empty directory;
4. check every file's size and sha256, the directory tree, statfs used space
   (sum of sizes rounded up to 4 KiB), `tessera status` usage and session;
5. tessera umount (mount gone, daemon gone, no session left), mount again and
   check everything once more from the object store;
6. check the bucket: only well-formed block objects of this volume, each
   object's size equal to the size in its key, blocks of a slice contiguous.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Fatal, Harness, human, mounted_fstype, pid_alive, round_up  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
CHUNK = 64 * MiB
BLOCK = 4 * MiB
VOLUME = "roundtrip-vol"
SEED = int(os.environ.get("TESSERA_TEST_SEED", "20240611"))  # override to vary the data
NFILES = 200
# Names the file system may show at its root besides user files (virtual
# control files, trash); they are ignored when comparing trees.
VIRTUAL_ROOT_NAMES = {".stats", ".accesslog", ".trash", ".config", ".control"}

DIRS = ["alpha", "alpha/beta", "alpha/beta/gamma", "delta", "epsilon", "epsilon/zeta",
        "theta", "theta/iota"]


def write_all(fd: int, data, off: int | None = None):
    view = memoryview(data)
    done = 0
    while done < len(view):
        if off is None:
            n = os.write(fd, view[done:])
        else:
            n = os.pwrite(fd, view[done:], off + done)
        if n <= 0:
            raise OSError(f"short write ({n}) at {done}/{len(view)}")
        done += n


def pread_all(fd: int, n: int, off: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        b = os.pread(fd, n - len(out), off + len(out))
        if not b:
            break
        out += b
    return bytes(out)


def sha256_file(path: str, drop_cache: bool = False) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        if drop_cache:
            # Drop the kernel's cached pages so that the bytes come from the
            # daemon, not from what this process wrote a moment ago.
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
            size += len(b)
    return size, h.hexdigest()


class Roundtrip:
    def __init__(self, h: Harness):
        self.h = h
        self.rng = random.Random(SEED)
        self.db = os.path.join(h.tmp, "meta.db")
        self.url = "sqlite3://" + self.db
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt")
        self.model = os.path.join(h.tmp, "model")
        self.daemon_pid: int | None = None
        self.rw_checks = 0
        self.rw_failures = 0
        self.bytes_written = 0
        os.mkdir(self.mnt)
        os.mkdir(self.model)

    # ---- paired operations: the mount and the local model -------------------

    def m(self, rel: str) -> str:
        return os.path.join(self.mnt, rel)

    def l(self, rel: str) -> str:
        return os.path.join(self.model, rel)

    def data(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def open_pair(self, rel: str, flags: int) -> tuple[int, int]:
        fm = os.open(self.m(rel), flags, 0o644)
        try:
            fl = os.open(self.l(rel), flags, 0o644)
        except BaseException:
            os.close(fm)
            raise
        return fm, fl

    def close_pair(self, pair: tuple[int, int]):
        os.close(pair[0])
        os.close(pair[1])

    def verify_range(self, rel: str, pair, off: int, n: int, what: str):
        """Read-your-writes on the open fd: size and the bytes around an operation."""
        self.rw_checks += 1
        fm, fl = pair
        size_m, size_l = os.fstat(fm).st_size, os.fstat(fl).st_size
        lo = max(0, off - 100)
        got = pread_all(fm, n + 200, lo)
        want = pread_all(fl, n + 200, lo)
        ok = size_m == size_l and got == want
        if not ok:
            self.rw_failures += 1
            diff = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), None)
            self.h.check(False, f"read-your-writes on {rel} after {what}",
                         f"size mount={size_m} model={size_l}; range [{lo}, +{n + 200}): "
                         f"got {len(got)} bytes, want {len(want)}, first difference at "
                         f"{None if diff is None else lo + diff}")
        else:
            self.h.check(True, f"read-your-writes on {rel} after {what}", quiet=True)

    def pwrite(self, rel, pair, off: int, n: int):
        d = self.data(n)
        write_all(pair[0], d, off)
        write_all(pair[1], d, off)
        self.bytes_written += n
        self.verify_range(rel, pair, off, n, f"pwrite({n} @ {off})")

    def ftruncate(self, rel, pair, size: int):
        os.ftruncate(pair[0], size)
        os.ftruncate(pair[1], size)
        self.verify_range(rel, pair, max(0, size - 4096), 8192, f"ftruncate({size})")

    def path_truncate(self, rel, size: int, pair=None):
        os.truncate(self.m(rel), size)
        os.truncate(self.l(rel), size)
        st_m, st_l = os.stat(self.m(rel)).st_size, os.stat(self.l(rel)).st_size
        self.rw_checks += 1
        if not self.h.check(st_m == st_l, f"size of {rel} after truncate({size}) by path",
                            f"mount {st_m}, model {st_l}", quiet=True):
            self.rw_failures += 1
        if pair is not None:
            self.verify_range(rel, pair, max(0, size - 4096), 8192, f"truncate({size}) by path")

    def append(self, rel, n: int):
        pair = self.open_pair(rel, os.O_WRONLY | os.O_APPEND)
        try:
            d = self.data(n)
            write_all(pair[0], d)
            write_all(pair[1], d)
            self.bytes_written += n
        finally:
            self.close_pair(pair)
        pair = self.open_pair(rel, os.O_RDONLY)
        try:
            end = os.fstat(pair[1]).st_size
            self.verify_range(rel, pair, end - n, n, f"append({n})")
        finally:
            self.close_pair(pair)

    # ---- phase 1: create files ----------------------------------------------

    def plan_files(self) -> list[tuple[str, int, int]]:
        """(relative path, size, write method) for the 200 files."""
        rng = self.rng
        big = [("alpha/beta/big-150m.bin", 150 * MiB, 1),
               ("delta/big-70m.bin", 70 * MiB + 12345, 2)]
        mids = [2 * MiB + 5, 4 * MiB, 4 * MiB + 1, 7 * MiB + 333, 8 * MiB, 13 * MiB + 777,
                20 * MiB - 3]
        special = [0, 0, 1, 2, 4095, 4096, 4097, 8191, 8192, 8193, 12288, 65535, 65536, 65537,
                   131075, 262144, 524287, 1048575, 1048576, 1048577]
        sizes = list(mids) + list(special)
        while len(sizes) + len(big) < NFILES:
            x = rng.random()
            if x < 0.35:
                sizes.append(rng.randint(3, 4095))
            elif x < 0.70:
                sizes.append(rng.randint(4096, 64 * KiB))
            elif x < 0.90:
                sizes.append(rng.randint(64 * KiB + 1, 300 * KiB))
            else:
                sizes.append(rng.randint(300 * KiB, 900 * KiB))
        plan = list(big)
        where = [""] + DIRS
        for i, size in enumerate(sizes):
            d = rng.choice(where)
            name = f"f{i:03d}-{size}.dat"
            plan.append((os.path.join(d, name) if d else name, size, i % 3))
        return plan

    def create_file(self, rel: str, size: int, method: int):
        if size == 0:
            if method == 0:
                open(self.m(rel), "wb").close()
                open(self.l(rel), "wb").close()
            else:
                self.close_pair(self.open_pair(rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            return
        rng = self.rng
        if method == 0:
            # Buffered Python file objects, 1 MiB pieces.
            with open(self.m(rel), "wb") as fm, open(self.l(rel), "wb") as fl:
                left = size
                while left:
                    d = self.data(min(MiB, left))
                    fm.write(d)
                    fl.write(d)
                    left -= len(d)
        elif method == 1:
            # Sequential os.write calls of odd sizes.
            pair = self.open_pair(rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                left = size
                piece = rng.choice([4095, 65537, 131071, MiB + 7, 3 * MiB - 1])
                while left:
                    d = self.data(min(piece, left))
                    write_all(pair[0], d)
                    write_all(pair[1], d)
                    left -= len(d)
            finally:
                self.close_pair(pair)
        else:
            # Pieces written out of order with pwrite (several slices per chunk).
            pieces = []
            off = 0
            # At most a few hundred pieces: a chunk written as thousands of
            # out-of-order slices is a stress test of its own, not this one.
            unit = max(1, size // 300, min(size // 3 + 1, rng.choice([1000, 40000, 2 * MiB + 512 * KiB])))
            while off < size:
                n = min(size - off, rng.randint(max(1, unit // 2), unit))
                pieces.append((off, n))
                off += n
            rng.shuffle(pieces)
            pair = self.open_pair(rel, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
            try:
                for off, n in pieces:
                    d = self.data(n)
                    write_all(pair[0], d, off)
                    write_all(pair[1], d, off)
            finally:
                self.close_pair(pair)
        self.bytes_written += size

    # ---- phase 2: modify ----------------------------------------------------

    def modify_big150(self, rel: str):
        pair = self.open_pair(rel, os.O_RDWR)
        try:
            self.pwrite(rel, pair, CHUNK - 300000, MiB + 17)        # across the chunk boundary
            self.pwrite(rel, pair, 3, 10)                           # small, unaligned, block 0
            self.pwrite(rel, pair, 2 * BLOCK - 5, 10)               # across a block boundary
            self.ftruncate(rel, pair, 100 * MiB + 4097)             # down
            self.pwrite(rel, pair, 120 * MiB, 4096)                 # hole 100M+4097 .. 120M
            self.ftruncate(rel, pair, 150 * MiB)                    # up: zero tail
            self.pwrite(rel, pair, 140 * MiB + 1, 2 * MiB)          # data inside the zero tail
            self.path_truncate(rel, 150 * MiB, pair)                # same size, by path
            # The truncated-away then re-extended ranges must read as zeros.
            zeros_ok = all(pread_all(pair[0], 64 * KiB, off) == bytes(64 * KiB)
                           for off in (100 * MiB + 4097, 110 * MiB, 120 * MiB + 4096,
                                       135 * MiB, 150 * MiB - 64 * KiB))
            self.h.check(zeros_ok, "150 MiB file: ranges cut by truncate and re-extended read as zeros")
        finally:
            self.close_pair(pair)

    def modify_big70(self, rel: str):
        pair = self.open_pair(rel, os.O_RDWR)
        try:
            self.ftruncate(rel, pair, 63 * MiB + 1)                 # below the chunk boundary
            self.pwrite(rel, pair, 68 * MiB, 3 * MiB)               # hole across 64 MiB
            self.pwrite(rel, pair, CHUNK - 50 * KiB, 100 * KiB)     # overwrite across 64 MiB
            self.pwrite(rel, pair, 5 * MiB - 1, 2)
        finally:
            self.close_pair(pair)
        self.path_truncate(rel, 70 * MiB + 12345)                   # down, by path, fd closed
        self.append(rel, 5000)
        pair = self.open_pair(rel, os.O_RDONLY)
        try:
            ok = pread_all(pair[0], 128 * KiB, 63 * MiB + 1) == bytes(128 * KiB) and \
                pread_all(pair[0], 64 * KiB, CHUNK + 50 * KiB) == bytes(64 * KiB)
            self.h.check(ok, "70 MiB file: hole across the 64 MiB chunk boundary reads as zeros")
        finally:
            self.close_pair(pair)

    def modify_random(self, rel: str, size: int):
        rng = self.rng
        cap = max(2 * MiB, size + size // 4)      # keep files from growing much
        scale = max(size, 8 * KiB)
        nops = rng.randint(3, 8)
        sessions = [nops] if rng.random() < 0.5 else [nops // 2, nops - nops // 2]
        for count in sessions:
            pair = self.open_pair(rel, os.O_RDWR)
            try:
                for _ in range(count):
                    cur = os.fstat(pair[1]).st_size
                    op = rng.choice(["overwrite", "overwrite", "hole", "down", "up",
                                     "path", "read"])
                    if op == "overwrite" and cur > 0:
                        off = rng.randint(0, cur - 1)
                        n = rng.randint(1, min(MiB, scale // 4 + 1))
                        self.pwrite(rel, pair, off, n)
                    elif op == "hole" and cur < cap:
                        off = cur + rng.randint(1, min(scale // 2, 3 * MiB) + 4096)
                        self.pwrite(rel, pair, off, rng.randint(1, min(scale // 8, 256 * KiB) + 1))
                    elif op == "down" and cur > 0:
                        self.ftruncate(rel, pair, rng.randint(0, cur - 1))
                    elif op == "up" and cur < cap:
                        self.ftruncate(rel, pair, cur + rng.randint(1, min(scale // 2, 3 * MiB) + 1))
                    elif op == "path":
                        self.path_truncate(rel, rng.randint(0, min(cap, cur + cur // 2 + 4096)), pair)
                    else:
                        off = rng.randint(0, cur) if cur else 0
                        self.verify_range(rel, pair, off, rng.randint(1, 256 * KiB), "random read")
            finally:
                self.close_pair(pair)
        if rng.random() < 0.3:
            self.append(rel, rng.randint(1, 70000))

    # ---- phase 3: namespace changes ------------------------------------------

    def rename(self, a: str, b: str):
        os.rename(self.m(a), self.m(b))
        os.rename(self.l(a), self.l(b))
        self.h.progress(f"renamed {a} -> {b}")

    def remove(self, rel: str):
        os.remove(self.m(rel))
        os.remove(self.l(rel))
        self.h.progress(f"removed {rel}")

    # ---- expected state and verification -------------------------------------

    def walk(self, root: str, skip_virtual: bool) -> dict[str, str]:
        """relative path -> 'd' or 'f' (anything else is reported as its mode)."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            if rel_dir == "." and skip_virtual:
                dirnames[:] = [d for d in dirnames if d not in VIRTUAL_ROOT_NAMES]
                filenames = [f for f in filenames if f not in VIRTUAL_ROOT_NAMES]
            for d in dirnames:
                out[os.path.normpath(os.path.join(rel_dir, d))] = "d"
            for f in filenames:
                p = os.path.join(dirpath, f)
                mode = os.lstat(p).st_mode
                kind = "f" if (mode & 0o170000) == 0o100000 else oct(mode)
                out[os.path.normpath(os.path.join(rel_dir, f))] = kind
        return out

    def expected_state(self):
        tree = self.walk(self.model, skip_virtual=False)
        files = {}
        for rel, kind in sorted(tree.items()):
            if kind == "f":
                files[rel] = sha256_file(self.l(rel))
        return tree, files

    def verify_mount(self, phase: str, tree: dict, files: dict):
        h = self.h
        got_tree = self.walk(self.mnt, skip_virtual=True)
        missing = sorted(set(tree) - set(got_tree))
        extra = sorted(set(got_tree) - set(tree))
        wrong = sorted(k for k in set(tree) & set(got_tree) if tree[k] != got_tree[k])
        h.check(not missing and not extra and not wrong,
                f"{phase}: directory tree matches the model ({len(tree)} entries)",
                f"missing {missing[:10]}, unexpected {extra[:10]}, wrong type {wrong[:10]}")
        bad = 0
        for rel, (size, digest) in files.items():
            p = self.m(rel)
            try:
                st_size = os.stat(p).st_size
                got_size, got_digest = sha256_file(p, drop_cache=True)
            except OSError as e:
                h.check(False, f"{phase}: read {rel}", repr(e))
                bad += 1
                continue
            ok = st_size == size and got_size == size and got_digest == digest
            if not ok:
                bad += 1
            h.check(ok, f"{phase}: size and sha256 of {rel}",
                    f"stat size {st_size}, read {got_size} bytes sha256 {got_digest[:16]}..., "
                    f"want {size} bytes sha256 {digest[:16]}...", quiet=ok)
        h.progress(f"{phase}: {len(files) - bad}/{len(files)} files have the right size and sha256")

    def expected_used(self, files: dict) -> int:
        return sum(round_up(size) for size, _ in files.values())

    def check_usage(self, phase: str, tree: dict, files: dict):
        h = self.h
        want = self.expected_used(files)
        want_inodes = len(tree)
        # Usage counters may be committed a little after the last close; give them a moment.
        deadline = time.monotonic() + 5
        while True:
            st = os.statvfs(self.mnt)
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            r, status = h.status(self.url)
            s_used = status["usage"]["used_space"] if status else None
            if (used == want and s_used == want) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        h.check(used == want, f"{phase}: statfs used space {human(used)} == sum of sizes rounded "
                f"up to 4 KiB {human(want)}", f"statfs used {used}, expected {want} "
                f"(difference {used - want})")
        h.check(st.f_files - st.f_ffree == want_inodes,
                f"{phase}: statfs used inodes == {want_inodes} files and directories",
                f"f_files {st.f_files} - f_ffree {st.f_ffree} = {st.f_files - st.f_ffree}")
        if not h.check(status is not None, f"{phase}: tessera status works", r.describe()):
            return None
        h.check(s_used == want, f"{phase}: status usage.used_space == {want}",
                f"status says {s_used}, expected {want}")
        h.check(status["usage"].get("used_inodes") == want_inodes,
                f"{phase}: status usage.used_inodes == {want_inodes}",
                f"status says {status['usage'].get('used_inodes')}")
        return status

    def check_session(self, phase: str, status):
        if status is None:
            return
        sessions = status.get("sessions", [])
        ok = (len(sessions) == 1 and sessions[0].get("mount_point") == self.mnt and
              sessions[0].get("pid") == self.daemon_pid)
        self.h.check(ok, f"{phase}: status shows exactly one session, this mount's",
                     f"sessions {sessions}, mount point {self.mnt}, daemon pid {self.daemon_pid}")

    def mount(self, phase: str):
        h = self.h
        r = h.mount(self.url, self.mnt)
        h.require(r.returncode == 0, f"{phase}: tessera mount -d succeeds",
                  r.describe() + "\nlog:\n" + h.log_tail())
        m = re.search(r"daemon pid (\d+)", r.stdout)
        self.daemon_pid = int(m.group(1)) if m else None
        h.require(mounted_fstype(self.mnt) == "fuse.tessera",
                  f"{phase}: the mount is in the mount table as fuse.tessera once mount -d returns",
                  f"fstype {mounted_fstype(self.mnt)}")
        h.check(os.stat(self.mnt).st_dev != os.stat(h.tmp).st_dev and os.path.isdir(self.mnt),
                f"{phase}: the mount point answers stat")

    def umount(self, phase: str, files: dict):
        h = self.h
        r = h.umount(self.mnt)
        h.require(r.returncode == 0, f"{phase}: tessera umount succeeds",
                  r.describe() + "\nlog:\n" + h.log_tail())
        h.check(mounted_fstype(self.mnt) is None, f"{phase}: the mount is gone after umount",
                f"fstype {mounted_fstype(self.mnt)}")
        # umount returns once the daemon has ended its session and flushed
        # everything; the process itself may take a moment more to go away.
        gone_at_once = self.daemon_pid is not None and not pid_alive(self.daemon_pid)
        deadline = time.monotonic() + 10
        while self.daemon_pid is not None and pid_alive(self.daemon_pid) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        h.check(self.daemon_pid is not None and not pid_alive(self.daemon_pid),
                f"{phase}: the daemon (pid {self.daemon_pid}) exits "
                f"({'at once' if gone_at_once else 'within 10 s of umount returning'})")
        r, status = h.status(self.url)
        if h.check(status is not None, f"{phase}: tessera status works after umount", r.describe()):
            h.check(status.get("sessions") == [], f"{phase}: no session left after umount",
                    f"sessions {status.get('sessions')}")
            want = self.expected_used(files)
            h.check(status["usage"]["used_space"] == want,
                    f"{phase}: used space unchanged after umount ({want})",
                    f"status says {status['usage']['used_space']}")

    # ---- phase 6: the bucket --------------------------------------------------

    def check_bucket(self, block_size: int, files: dict):
        h = self.h
        key_re = re.compile(rf"^{re.escape(VOLUME)}/chunks/(\d+)/(\d+)/(\d+)_(\d+)_(\d+)$")
        outside, malformed, inconsistent, wrong_size, too_big = [], [], [], [], []
        slices: dict[int, dict[int, int]] = collections.defaultdict(dict)
        dup = []
        total = 0
        nobj = 0
        for dirpath, _dirs, names in os.walk(self.bucket):
            for name in names:
                path = os.path.join(dirpath, name)
                key = os.path.relpath(path, self.bucket)
                nobj += 1
                size = os.lstat(path).st_size
                total += size
                if not key.startswith(VOLUME + "/chunks/"):
                    outside.append(key)
                    continue
                m = key_re.match(key)
                if not m or any(str(int(g)) != g for g in m.groups()):
                    malformed.append(key)
                    continue
                d1, d2, sid, idx, bsize = (int(g) for g in m.groups())
                if sid <= 0 or d1 != sid // 1000000 or d2 != sid // 1000:
                    inconsistent.append(key)
                if size != bsize:
                    wrong_size.append(f"{key} is {size} bytes")
                if bsize == 0 or bsize > block_size:
                    too_big.append(key)
                if idx in slices[sid]:
                    dup.append(key)
                slices[sid][idx] = bsize
        h.progress(f"bucket: {nobj} objects, {len(slices)} slices, {human(total)}")
        h.check(nobj > 0, "bucket: holds objects")
        h.check(not outside, f"bucket: no object outside {VOLUME}/chunks/", f"{outside[:10]}")
        h.check(not malformed, "bucket: every object key matches "
                "<name>/chunks/<id/1e6>/<id/1e3>/<id>_<index>_<size> (canonical decimals)",
                f"{malformed[:10]}")
        h.check(not inconsistent, "bucket: directory parts equal id // 1000000 and id // 1000",
                f"{inconsistent[:10]}")
        h.check(not wrong_size, "bucket: every object's size equals the size in its key",
                f"{wrong_size[:10]}")
        h.check(not too_big, f"bucket: no block is empty or larger than the block size {block_size}",
                f"{too_big[:10]}")
        h.check(not dup, "bucket: one object per (slice, block index)", f"{dup[:10]}")
        gaps = []
        for sid, blocks in slices.items():
            n = len(blocks)
            if sorted(blocks) != list(range(n)) or \
                    any(blocks[i] != block_size for i in range(n - 1)):
                gaps.append(f"slice {sid}: " + ", ".join(f"{i}:{blocks[i]}" for i in sorted(blocks)))
        h.check(not gaps, "bucket: each slice is blocks 0..n-1, all full but the last",
                "\n".join(gaps[:10]))
        largest = max(size for size, _ in files.values())
        h.check(total >= largest, f"bucket: total object bytes {human(total)} >= the largest "
                f"file {human(largest)}")

    # ---- the test -------------------------------------------------------------

    def run(self):
        h = self.h
        h.progress(f"seed {SEED} (set TESSERA_TEST_SEED to change it)")
        r = h.run("format", "--bucket", self.bucket, "--trash-days", "0", self.url, VOLUME)
        h.require(r.returncode == 0, "format a volume (sqlite3 + file bucket, 4M blocks)",
                  r.describe())
        r, status = h.status(self.url)
        h.require(status is not None, "tessera status of the new volume", r.describe())
        block_size = status["setting"].get("block_size")
        h.check(block_size == BLOCK and status["setting"].get("name") == VOLUME and
                status.get("sessions") == [] and status["usage"]["used_space"] == 0,
                "new volume: 4 MiB blocks, its name, no session, nothing used",
                f"{status}")
        block_size = block_size or BLOCK

        self.mount("first mount")
        for d in DIRS:
            os.mkdir(self.m(d))
            os.mkdir(self.l(d))
        plan = self.plan_files()
        h.progress(f"writing {len(plan)} files, {human(sum(s for _, s, _ in plan))}")
        for i, (rel, size, method) in enumerate(plan):
            self.create_file(rel, size, method)
            if size >= 10 * MiB or (i + 1) % 50 == 0:
                h.progress(f"  wrote {i + 1}/{len(plan)} ({rel}, {human(size)})")
        h.check(True, f"created {len(plan)} files and {len(DIRS)} directories")

        h.progress("modifying files: overwrites, holes, truncates, appends")
        self.modify_big150(plan[0][0])
        self.modify_big70(plan[1][0])
        chosen = plan[2:9] + [p for p in plan[9:] if self.rng.random() < 0.35]
        for rel, size, _ in chosen:
            self.modify_random(rel, size)
        h.progress(f"modified {len(chosen) + 2} files; {self.rw_checks} read-your-writes checks, "
                   f"{self.rw_failures} failed; {human(self.bytes_written)} written in all")

        # Namespace changes (all files closed).
        smalls = [rel for rel, size, _ in plan[9:] if size < MiB]
        self.rename(smalls[0], os.path.join(os.path.dirname(smalls[0]), "renamed-in-place.dat"))
        self.rename(smalls[1], "alpha/beta/gamma/moved-here.dat")
        self.rename(smalls[2], "theta/step1.dat")
        self.rename("theta/step1.dat", "epsilon/step2.dat")
        self.rename(smalls[3], smalls[4])                  # replaces an existing file
        self.rename(plan[8][0], "theta/iota/moved-20m.dat")  # the 20 MiB file
        for rel in smalls[5:9]:
            self.remove(rel)
        self.remove(plan[7][0])                            # the 13 MiB file
        os.mkdir(self.m("empty-dir"))
        os.mkdir(self.l("empty-dir"))
        os.mkdir(self.m("to-remove"))
        os.mkdir(self.l("to-remove"))
        os.rmdir(self.m("to-remove"))
        os.rmdir(self.l("to-remove"))
        self.rename("epsilon/zeta", "theta/zeta-moved")    # a directory with its files
        self.rename("delta", "delta-renamed")              # holds the 70 MiB file
        h.check(not os.path.exists(self.m(smalls[3])) and not os.path.exists(self.m("to-remove")),
                "renamed-away and removed names are gone")

        h.progress("computing the expected state from the model")
        tree, files = self.expected_state()
        h.progress(f"expect {len(files)} files, {len(tree) - len(files)} directories, "
                   f"{human(sum(s for s, _ in files.values()))}")

        self.verify_mount("first mount", tree, files)
        status = self.check_usage("first mount", tree, files)
        self.check_session("first mount", status)
        self.umount("first umount", files)

        self.mount("second mount")
        self.verify_mount("second mount", tree, files)
        status = self.check_usage("second mount", tree, files)
        self.check_session("second mount", status)
        self.umount("second umount", files)

        self.check_bucket(block_size, files)


def main() -> int:
    h = Harness("mount_roundtrip", sys.argv)
    with h:
        Roundtrip(h).run()
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
