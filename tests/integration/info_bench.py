#!/usr/bin/env python3
"""Tessera acceptance test: `tessera info` and `tessera bench` through a real mount.

Usage: python3 tests/integration/info_bench.py /path/to/tessera

1. format a volume (SQLite + file bucket, 1 MiB blocks) and mount it with a
   relative META-URL at a mount point whose name holds a space (escaped as
   \\040 in mountinfo); the daemon's runtime file holds the META-URL made
   absolute, mode 0600;
2. write a file in three separate runs (a slice each, the last overwriting
   part of the first), truncate a hole into it, then `tessera info --json`
   on it: inode == st_ino, the size, >= 2 slices, every listed block key is
   the documented key of its slice range and exists in the bucket with that
   size, and the bytes rebuilt from those objects by overlaying the records
   equal the file; the text layout shows the same;
3. info on a directory (entry count), the mount root, a symlink, a relative
   path; info on paths outside any mount or missing: one line, exit 1;
4. `tessera bench` on the mount: exit 0, every phase printed, the root left
   as it was; on a local directory with two threads; bad arguments fail
   with one line;
5. after umount the runtime file is gone and info on the old path fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, mounted_fstype  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
CHUNK = 64 * MiB
BLOCK = 1 * MiB
VOLUME = "infovol"
PHASES = ["write big file", "read big file", "write small files", "read small files",
          "stat small files"]


def block_key(slice_id: int, index: int, size: int) -> str:
    return f"{VOLUME}/chunks/{slice_id // 1000000}/{slice_id // 1000}/{slice_id}_{index}_{size}"


def expected_blocks(rec: dict) -> list[str]:
    """The documented keys of the blocks holding [offset, offset + length) of the slice."""
    if rec["hole"] or rec["length"] == 0:
        return []
    keys, i = [], rec["offset"] // BLOCK
    end = rec["offset"] + rec["length"]
    while i * BLOCK < end:
        keys.append(block_key(rec["id"], i, min(BLOCK, rec["size"] - i * BLOCK)))
        i += 1
    return keys


def runtime_file(mp: str, ext: str) -> str:
    name = mp.replace("%", "%25").replace("/", "%2F")
    return f"/run/tessera/{name}.{ext}"


def one_line_error(h: Harness, r, what: str, mentions: str):
    lines = r.stderr.strip().splitlines()
    h.check(r.returncode == 1 and len(lines) == 1 and mentions in r.stderr
            and "Traceback" not in r.stderr, what, r.describe())


class InfoBench:
    def __init__(self, h: Harness):
        self.h = h
        self.url = "sqlite3://" + os.path.join(h.tmp, "meta.db")
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt point")
        os.mkdir(self.mnt)

    def info(self, *paths: str):
        """(Result, parsed JSON list or None)."""
        r = self.h.run("info", "--json", *paths)
        try:
            return r, json.loads(r.stdout)
        except ValueError:
            return r, None

    def read_object(self, key: str, off: int, n: int) -> bytes:
        with open(os.path.join(self.bucket, key), "rb") as f:
            f.seek(off)
            return f.read(n)

    def rebuild(self, info: dict) -> bytes:
        """The file's bytes from the bucket, overlaying info's records newest on top."""
        out = bytearray(info["size"])
        for chunk in info["chunks"]:
            base = chunk["index"] * CHUNK
            for rec in chunk["slices"]:
                start = base + rec["pos"]
                if rec["hole"]:
                    data = bytes(rec["length"])
                else:
                    data = bytearray()
                    off, end = rec["offset"], rec["offset"] + rec["length"]
                    while off < end:
                        i = off // BLOCK
                        size = min(BLOCK, rec["size"] - i * BLOCK)
                        n = min(end - off, (i + 1) * BLOCK - off)
                        data += self.read_object(block_key(rec["id"], i, size), off - i * BLOCK, n)
                        off += n
                stop = min(start + len(data), len(out))
                out[start:stop] = data[:stop - start]
        return bytes(out)

    def run(self):
        h = self.h
        r = h.run("format", "--trash-days", "0", "--block-size", "1M", "--bucket", self.bucket,
                  self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        # A relative URL (h.run works in h.tmp): the daemon records it absolute.
        r = h.mount("sqlite3://meta.db", self.mnt)
        h.require(r.returncode == 0, "mount at a path with a space", r.describe() + h.log_tail())
        h.require(mounted_fstype(self.mnt) == "fuse.tessera", "mounted", str(mounted_fstype(self.mnt)))

        url_file = runtime_file(self.mnt, "url")
        if os.geteuid() == 0:
            try:
                st = os.stat(url_file)
                with open(url_file, encoding="utf-8") as f:
                    content = f.read()
            except OSError as e:
                st, content = None, str(e)
            h.check(st is not None and stat.S_IMODE(st.st_mode) == 0o600,
                    "the runtime META-URL file is mode 0600",
                    f"{url_file}: {oct(st.st_mode) if st else content}")
            h.check(content == self.url + "\n", "it holds the META-URL, made absolute",
                    repr(content))

        self.check_file_info()
        self.check_other_info()
        self.check_bench()

        r = h.umount(self.mnt)
        h.require(r.returncode == 0, "umount", r.describe())
        if os.geteuid() == 0:
            h.check(not os.path.exists(url_file), "umount removed the runtime META-URL file",
                    url_file)
        r, _ = self.info(self.mnt)
        one_line_error(h, r, "info on the old mount point after umount fails",
                       "is not inside a Tessera mount")

    def check_file_info(self):
        h = self.h
        d = os.path.join(self.mnt, "dir")
        os.mkdir(d)
        path = os.path.join(d, "data.bin")
        rnd = __import__("random").Random(11)
        first, second = rnd.randbytes(3 * MiB + 100), rnd.randbytes(2 * MiB)
        with open(path, "wb") as f:  # first run: one slice
            f.write(first)
        with open(path, "ab") as f:  # second run, after close: another slice
            f.write(second)
        with open(path, "r+b") as f:  # third run overwrites a range inside the first
            f.seek(1000)
            f.write(b"x" * 5000)
        expected = bytearray(first + second)
        expected[1000:6000] = b"x" * 5000
        st = os.stat(path)

        r, data = self.info(path)
        h.require(r.returncode == 0 and isinstance(data, list) and len(data) == 1,
                  "info --json on a file", r.describe())
        info = data[0]
        h.check(info["inode"] == st.st_ino, "info's inode is st_ino",
                f"{info['inode']} vs {st.st_ino}")
        h.check(info["type"] == "file" and info["size"] == len(expected) == st.st_size,
                "info's type and size", f"{info['type']} {info['size']} vs {len(expected)}")
        h.check(info["mount_point"] == self.mnt and info["block_size"] == BLOCK,
                "info's mount point and block size", f"{info['mount_point']!r} {info['block_size']}")
        records = [rec for c in info["chunks"] for rec in c["slices"]]
        ids = {rec["id"] for rec in records if not rec["hole"]}
        h.check(len(info["chunks"]) == 1 and len(ids) >= 3,
                "one chunk with a slice per write run", json.dumps(info["chunks"])[:2000])
        h.check(any(rec["pos"] == 0 and rec["length"] == 3 * MiB + 100 for rec in records)
                and any(rec["pos"] == 3 * MiB + 100 and rec["length"] == 2 * MiB for rec in records)
                and any(rec["pos"] == 1000 and rec["length"] == 5000 for rec in records),
                "the records' positions and lengths are the write runs", json.dumps(records)[:2000])
        keys = [k for rec in records for k in rec["blocks"]]
        h.check(all(rec["blocks"] == expected_blocks(rec) for rec in records) and len(keys) >= 6,
                "every record lists the keys of the blocks of its range",
                json.dumps(records)[:2000])
        missing = [k for k in keys if not os.path.isfile(os.path.join(self.bucket, k))]
        wrong = [k for k in keys if k not in missing
                 and os.path.getsize(os.path.join(self.bucket, k)) != int(k.rsplit("_", 1)[1])]
        h.check(not missing and not wrong, "every listed object exists in the bucket, full size",
                f"missing {missing[:5]}, wrong size {wrong[:5]}")
        if not missing and not wrong:
            rebuilt = self.rebuild(info)
            h.check(hashlib.sha256(rebuilt).digest() == hashlib.sha256(expected).digest(),
                    "the bytes rebuilt from info's records and objects are the file's")

        r = h.run("info", path)
        h.check(r.returncode == 0 and re.search(rf"inode\s+{st.st_ino}\n", r.stdout)
                and re.search(rf"size\s+{len(expected)} ", r.stdout)
                and all(k in r.stdout for k in keys) and "hole" not in r.stdout,
                "the text layout shows inode, size and every block key", r.describe())
        # A hole from a truncation shows as a hole.
        os.truncate(path, 4 * MiB)
        os.truncate(path, 5 * MiB)
        r, data = self.info(path)
        holes = [rec for c in (data or [{}])[0].get("chunks", []) for rec in c["slices"]
                 if rec["hole"]]
        h.check(r.returncode == 0 and len(holes) >= 1 and all(rec["blocks"] == [] for rec in holes)
                and data[0]["size"] == 5 * MiB, "a truncated range is listed as a hole",
                r.describe()[:3000])
        r = h.run("info", path)
        h.check(r.returncode == 0 and "hole" in r.stdout, "holes in the text layout", r.describe())

    def check_other_info(self):
        h = self.h
        d = os.path.join(self.mnt, "dir")
        for name in ("a", "b"):
            with open(os.path.join(d, name), "w") as f:
                f.write(name)
        os.symlink("data.bin", os.path.join(d, "link"))
        r, data = self.info(d, self.mnt, os.path.join(d, "link"))
        h.require(r.returncode == 0 and isinstance(data, list) and len(data) == 3,
                  "info --json on a directory, the root and a symlink", r.describe())
        h.check(data[0]["type"] == "directory" and data[0]["entries"] == 4 and "size" not in data[0]
                and data[0]["inode"] == os.stat(d).st_ino, "a directory: inode, type, entries",
                json.dumps(data[0]))
        h.check(data[1]["type"] == "directory" and data[1]["inode"] == 1 == os.stat(self.mnt).st_ino
                and data[1]["entries"] == 1, "the mount root is inode 1 with one entry",
                json.dumps(data[1]))
        lst = os.lstat(os.path.join(d, "link"))
        h.check(data[2]["type"] == "symlink" and data[2]["inode"] == lst.st_ino
                and data[2]["target"] == "data.bin", "a symlink is described, not followed",
                json.dumps(data[2]))
        r = h.run("info", d)
        h.check(r.returncode == 0 and re.search(r"entries\s+4\n", r.stdout)
                and "directory" in r.stdout, "the text layout of a directory", r.describe())
        # h.run works in h.tmp: a relative path inside the mount.
        r, data = self.info(os.path.join("mnt point", "dir", "a"))
        h.check(r.returncode == 0 and data and data[0]["size"] == 1
                and data[0]["inode"] == os.stat(os.path.join(d, "a")).st_ino,
                "info on a relative path", r.describe())

        outside = os.path.join(h.tmp, "outside.txt")
        with open(outside, "w") as f:
            f.write("x")
        r, _ = self.info(outside)
        one_line_error(h, r, "info outside any mount: one line, exit 1",
                       f"{outside} is not inside a Tessera mount")
        h.check(r.stdout.strip() in ("", "[]"), "nothing on stdout for it", r.stdout)
        r = h.run("info", os.path.join(d, "missing"))
        one_line_error(h, r, "info on a missing path: one line, exit 1", "missing")
        r, data = self.info(outside, os.path.join(d, "a"))
        h.check(r.returncode == 1 and data and len(data) == 1 and data[0]["size"] == 1
                and len(r.stderr.strip().splitlines()) == 1,
                "one bad path among good ones: the good ones shown, exit 1", r.describe())
        r = h.run("info")
        one_line_error(h, r, "info without a path", "PATH")
        r = h.run("info", "--bogus", d)
        one_line_error(h, r, "info with an unknown option", "--bogus")
        r = h.run("info", "--help")
        h.check(r.returncode == 0 and "--json" in r.stdout and "buffered" in r.stdout,
                "info --help mentions --json and buffered data", r.describe())

    def check_bench(self):
        h = self.h
        before = sorted(os.listdir(self.mnt))
        r = h.run("bench", "--big-file-size", "8M", "--small-files", "20", "--small-file-size",
                  "16K", self.mnt, timeout=600)
        h.check(r.returncode == 0, "bench on the mount exits 0", r.describe())
        for phase in PHASES:
            h.check(re.search(rf"^{phase}\s+\d+\s+\d+\.\d+\s+\d+\.\d+ (MiB|files)/s\s+\d+\.\d+$",
                              r.stdout, re.M) is not None, f"bench prints '{phase}'", r.stdout)
        h.check(re.search(r"^write big file\s+8\s", r.stdout, re.M) is not None
                and re.search(r"^stat small files\s+20\s", r.stdout, re.M) is not None,
                "bench counts 8 requests of 1 MiB and 20 stats", r.stdout)
        h.check("caches below the file system" in r.stdout, "bench says reads may hit caches",
                r.stdout)
        h.check(sorted(os.listdir(self.mnt)) == before, "bench leaves the mount's root as it was",
                f"{before} -> {sorted(os.listdir(self.mnt))}")

        local = os.path.join(h.tmp, "local")
        os.mkdir(local)
        r = h.run("bench", "--threads", "2", "--big-file-size", "3M", "--small-files", "5",
                  "--small-file-size", "1000", local, timeout=300)
        h.check(r.returncode == 0 and re.search(r"^write big file\s+6\s", r.stdout, re.M)
                and re.search(r"^read small files\s+5\s", r.stdout, re.M)
                and os.listdir(local) == [],
                "bench on a local directory with two threads, nothing left", r.describe())

        f = os.path.join(h.tmp, "outside.txt")
        for args, what, mentions in (
                ([os.path.join(h.tmp, "nope")], "a missing PATH", "nope"),
                ([f], "a PATH that is a file", "is not a directory"),
                (["--big-file-size", "12Q", local], "a bad size", "12Q"),
                (["--small-file-size", "-1", local], "a negative size", "-1"),
                (["--small-files", "many", local], "a bad count", "many"),
                (["--threads", "0", local], "zero threads", "--threads"),
                ([], "no PATH", "PATH")):
            r = h.run("bench", *args)
            one_line_error(h, r, f"bench with {what}: one line, exit 1", mentions)
        h.check(os.listdir(local) == [], "failed benches created nothing", str(os.listdir(local)))


def main():
    h = Harness("info_bench", sys.argv)
    with h:
        InfoBench(h).run()
    sys.exit(h.exit_code())


if __name__ == "__main__":
    main()
