#!/usr/bin/env python3
"""Tessera: damaged caches and damaged objects through a real FUSE mount.

Usage: python3 tests/integration/data_faults.py /path/to/tessera

1. a volume mounted with a disk cache: files read sequentially land in the
   cache; after a remount (memory cache empty) every cached block file gets
   one byte flipped or is truncated; reading the files again through the
   mount returns the right bytes, and the damaged cache files are dropped;
2. a block object deleted from the bucket, and another one cut short: reads
   of those files fail with EIO, other files still read, the mount stays up.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, drop_page_cache, sha, mounted_fstype  # noqa: E402

VOLUME = "faults-vol"
MiB = 1 << 20


def cache_files(root: str) -> list[str]:
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            if not n.startswith(".") and "%2Fchunks%2F" in n:
                out.append(os.path.join(d, n))
    return sorted(out)


class Faults:
    def __init__(self, h: Harness):
        self.h = h
        self.url = "sqlite3://" + os.path.join(h.tmp, "meta.db")
        self.bucket = os.path.join(h.tmp, "bucket")
        self.cache = os.path.join(h.tmp, "cache")
        self.mnt = os.path.join(h.tmp, "mnt")
        os.mkdir(self.mnt)
        self.files: dict[str, str] = {}  # name -> sha256

    def mount(self):
        r = self.h.mount(self.url, self.mnt, "--cache-dir", self.cache)
        self.h.require(r.returncode == 0, "mount with a disk cache", r.describe())

    def run(self):
        h = self.h
        r = h.run("format", "--trash-days", "0", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.mount()
        rng = random.Random(7)
        for i, size in enumerate([9 * MiB + 123, 5 * MiB, 300 * 1024, 4 * MiB]):
            data = rng.randbytes(size)
            name = f"f{i}.bin"
            with open(os.path.join(self.mnt, name), "wb") as f:
                f.write(data)
            self.files[name] = hashlib.sha256(data).hexdigest()
        drop_page_cache()
        for name, digest in self.files.items():
            h.check(sha(os.path.join(self.mnt, name)) == digest, f"first read of {name}")
        # The disk tier writes in the background: give it a moment.
        deadline = time.time() + 10
        while time.time() < deadline and len(cache_files(self.cache)) < 6:
            time.sleep(0.1)
        h.require(h.umount(self.mnt).returncode == 0, "umount")
        cached = cache_files(self.cache)
        h.check(len(cached) >= 6, "sequential reads filled the disk cache", f"{len(cached)} files")
        for i, path in enumerate(cached):
            size = os.path.getsize(path)
            if i % 2 == 0:
                with open(path, "r+b") as f:  # flip a byte in the data part
                    f.seek(size - 1 - (i * 7919) % min(size - 200, 100000))
                    b = f.read(1)
                    f.seek(-1, os.SEEK_CUR)
                    f.write(bytes([b[0] ^ 0xFF]))
            else:
                os.truncate(path, size // 2)
        damaged = {path: sha(path) for path in cached}
        self.mount()
        drop_page_cache()
        for name, digest in self.files.items():
            h.check(sha(os.path.join(self.mnt, name)) == digest,
                    f"{name} reads right over damaged cache files")
        # A damaged file is dropped; the block fetched again may be cached
        # anew under the same name, but never with the damaged content.
        time.sleep(0.5)
        left = [p for p, digest in damaged.items() if os.path.exists(p) and sha(p) == digest]
        h.check(not left, "every damaged cache file was dropped", f"{len(left)} left")

        # Damaged objects in the bucket: EIO for those files only.
        objects = []
        for d, _, names in os.walk(os.path.join(self.bucket, VOLUME, "chunks")):
            objects += [os.path.join(d, n) for n in names]
        objects.sort(key=os.path.getsize)
        small = [o for o in objects if os.path.getsize(o) == 300 * 1024]
        h.require(len(small) == 1, "the 300 KiB file is one object", str(len(small)))
        os.unlink(small[0])
        biggest = objects[-1]
        os.truncate(biggest, 1000)
        h.require(h.umount(self.mnt).returncode == 0, "umount before reading damaged objects")
        shutil_rmtree(self.cache)
        self.mount()
        drop_page_cache()
        try:
            sha(os.path.join(self.mnt, "f2.bin"))
            h.check(False, "reading a file whose object is missing fails")
        except OSError as e:
            h.check(e.errno == errno.EIO, "a missing object gives EIO", errno.errorcode.get(e.errno, ""))
        eio_files = 0
        for name in ("f0.bin", "f1.bin", "f3.bin"):
            try:
                ok = sha(os.path.join(self.mnt, name)) == self.files[name]
                h.check(ok, f"{name} is intact or fails")
            except OSError as e:
                h.check(e.errno == errno.EIO, f"{name}: a short object gives EIO")
                eio_files += 1
        h.check(eio_files == 1, "exactly the file with the short object fails", str(eio_files))
        h.check(mounted_fstype(self.mnt) == "fuse.tessera", "the mount is still up")
        h.check(os.listdir(self.mnt) != [], "the mount still lists")
        h.require(h.umount(self.mnt).returncode == 0, "final umount")


def shutil_rmtree(path: str):
    import shutil
    shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    h = Harness("data_faults", sys.argv)
    with h:
        Faults(h).run()
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
