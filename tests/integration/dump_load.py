#!/usr/bin/env python3
"""Tessera: `tessera dump` and `tessera load` across engines, through real mounts.

Usage: python3 tests/integration/dump_load.py /path/to/tessera

1. a volume with SQLite metadata and a local-directory bucket is mounted and
   filled: a directory tree, files of several sizes (one of 9 MiB, over
   three chunks of the 4 MiB blocks), an empty file, a hard link, a
   symlink, extended attributes (a binary value), a name that is not
   UTF-8, a file deleted into the trash; the tree is recorded (content hashes, stat fields, link targets,
   attributes); a dump taken while mounted is valid JSON;
2. unmounted: `tessera dump` to a file (mode 0600) and to standard output
   give the same bytes; `tessera load` writes it into an empty Redis
   database (a private redis-server); the dump of the Redis volume is
   byte-identical; fsck of the Redis volume finds 0 problems; mounted
   (same bucket, another cache directory), it shows the same tree, every
   file byte for byte;
3. the Redis dump loads into a fresh SQLite file: its dump is identical
   again and its mount shows the same tree;
4. refusals: load into the non-empty Redis database, a truncated dump and a
   dump with a bad record exit 1 with one line on stderr naming the
   problem, and leave the target as it was (a new SQLite file is not even
   created); bad usage exits 2; --help describes both commands.
Runs in a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metadata_servers import metadata_server  # noqa: E402
from tessera_testlib import Harness  # noqa: E402

VOLUME = "dumpvol"
MiB = 1 << 20
ODD_NAME = b"caf\xe9-latin1"  # not UTF-8


def write_file(path, size: int, seed: int):
    block = bytes((seed * 7 + i) % 251 for i in range(MiB))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, MiB)
            f.write(block[:n])
            left -= n


def tree(root: str) -> dict:
    """Everything a load must keep, by path (bytes), except access times."""
    out = {}
    broot = os.fsencode(root)
    for dirpath, dirs, files in os.walk(broot):
        for name in sorted(dirs) + sorted(files):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rec = {"ino": st.st_ino, "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                   "nlink": st.st_nlink, "size": st.st_size, "mtime": st.st_mtime_ns,
                   "ctime": st.st_ctime_ns}
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            else:
                rec["xattrs"] = {n: os.getxattr(p, n) for n in sorted(os.listxattr(p))
                                 if n.startswith("user.")}
            if stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while chunk := f.read(MiB):
                        h.update(chunk)
                rec["sha256"] = h.hexdigest()
            out[os.path.relpath(p, broot)] = rec
    return out


def diff(a: dict, b: dict) -> str:
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            lines.append(f"{k!r}: {a.get(k)} != {b.get(k)}")
    return "\n".join(lines[:20])


class DumpLoadTest:
    def __init__(self, h: Harness, redis_url: str):
        self.h = h
        self.redis = redis_url
        self.sqlite = "sqlite3://" + os.path.join(h.tmp, "meta.db")
        self.sqlite2 = "sqlite3://" + os.path.join(h.tmp, "meta2.db")
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt")
        os.mkdir(self.mnt)

    def mount(self, url: str, cache: str):
        r = self.h.mount(url, self.mnt, "--cache-dir", os.path.join(self.h.tmp, cache))
        self.h.require(r.returncode == 0, f"mount {url}", r.describe() + "\n" + self.h.log_tail())

    def umount(self):
        r = self.h.umount(self.mnt)
        self.h.require(r.returncode == 0, "umount", r.describe())

    def dump(self, url: str, name: str) -> bytes:
        path = os.path.join(self.h.tmp, name)
        r = self.h.run("dump", url, path, timeout=60)
        self.h.require(r.returncode == 0 and r.stdout.startswith("dumped ") and not r.stderr,
                       f"tessera dump {url} {name}", r.describe())
        with open(path, "rb") as f:
            return f.read()

    def load(self, url: str, name: str):
        r = self.h.run("load", url, os.path.join(self.h.tmp, name), timeout=60)
        self.h.require(r.returncode == 0 and f"loaded volume '{VOLUME}'" in r.stdout
                       and not r.stderr, f"tessera load {url} {name}", r.describe())

    def build_tree(self):
        m = lambda rel: os.path.join(self.mnt, rel)  # noqa: E731
        os.makedirs(m("a/b/c"))
        os.mkdir(m("empty-dir"))
        write_file(m("big"), 9 * MiB + 12345, 1)
        write_file(m("a/mid"), 300 * 1024, 2)
        write_file(m("a/b/small"), 100, 3)
        with open(m("a/b/c/random"), "wb") as f:
            f.write(os.urandom(2 * MiB + 7))
        open(m("empty"), "wb").close()
        os.link(m("a/b/small"), m("small-link"))
        os.symlink("a/b/small", m("sym"))
        os.setxattr(m("a/mid"), "user.comment", b"hello")
        os.setxattr(m("a/mid"), "user.binary", b"\x00\x01\xff")
        os.setxattr(m("a"), "user.dir", b"")
        with open(os.path.join(os.fsencode(self.mnt), ODD_NAME), "wb") as f:
            f.write(b"odd name\n")
        os.chmod(m("a/b"), 0o750)
        # Into the trash: an entry there keeps its data and its origin path.
        write_file(m("a/deleted"), 5000, 4)
        os.remove(m("a/deleted"))

    def run(self):
        h = self.h
        r = h.run("format", "--bucket", self.bucket, self.sqlite, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.mount(self.sqlite, "cache1")
        self.build_tree()
        before = tree(self.mnt)
        h.check(len(before) == 12 and before[b"big"]["size"] == 9 * MiB + 12345
                and before[b"small-link"]["ino"] == before[b"a/b/small"]["ino"]
                and before[b"a/mid"]["xattrs"]["user.binary"] == b"\x00\x01\xff"
                and ODD_NAME in before,
                "the tree is built (12 entries, a hard link, a binary xattr, a non-UTF-8 name)",
                str(sorted(before)))
        r = h.run("dump", self.sqlite, timeout=60)
        try:
            live = json.loads(r.stdout)
        except ValueError:
            live = None
        h.check(r.returncode == 0 and live is not None and live["format"] == "tessera-dump"
                and len(live["inodes"]) >= 12,
                "dump while mounted: one consistent JSON document", r.describe()[:2000])
        self.umount()

        # 2. SQLite -> Redis.
        first = self.dump(self.sqlite, "sqlite.json")
        mode = os.stat(os.path.join(h.tmp, "sqlite.json")).st_mode & 0o777
        h.check(mode == 0o600, "the dump file has mode 0600", oct(mode))
        r = h.run("dump", self.sqlite, "-", timeout=60)
        h.check(r.returncode == 0 and r.stdout.encode() == first and not r.stderr,
                "dump to standard output gives the same bytes", r.describe()[:2000])
        lines = first.decode().splitlines()
        # The root, the tree (hard links share an inode), the trash.
        inode_lines = [ln for ln in lines if ln.startswith('{"inode":')]
        h.check(lines[0] == '{"format":"tessera-dump","version":1,'
                and len(inode_lines) >= len({rec["ino"] for rec in before.values()}) + 1
                and sum(1 for ln in inode_lines if '"trash_origin":"/a/deleted"' in ln) == 1
                and b'"key_hex"' not in first,
                "the dump has a header line and one line per inode, all readable",
                "\n".join(lines[:5]))

        self.load(self.redis, "sqlite.json")
        second = self.dump(self.redis, "redis.json")
        h.check(second == first, "the dump of the Redis volume is byte-identical",
                f"{len(first)} vs {len(second)} bytes")
        r = h.run("fsck", self.redis, timeout=120)
        h.check(r.returncode == 0 and "problems found:    0" in r.stdout,
                "fsck of the loaded Redis volume: 0 problems (block objects included)",
                r.describe())
        self.mount(self.redis, "cache2")
        after = tree(self.mnt)
        h.check(after == before, "the Redis volume shows the same tree, byte for byte",
                diff(before, after))
        self.umount()

        # 3. Redis -> a fresh SQLite file.
        self.load(self.sqlite2, "redis.json")
        third = self.dump(self.sqlite2, "sqlite2.json")
        h.check(third == first, "the dump of the volume loaded back into SQLite is identical",
                f"{len(first)} vs {len(third)} bytes")
        self.mount(self.sqlite2, "cache3")
        again = tree(self.mnt)
        h.check(again == before, "the SQLite volume loaded back shows the same tree",
                diff(before, again))
        self.umount()

        # 4. Refusals.
        mounted_once = self.dump(self.redis, "redis-mounted.json")  # the mount changed it
        r = h.run("load", self.redis, os.path.join(h.tmp, "sqlite.json"))
        h.check(r.returncode == 1 and "not empty" in r.stderr
                and len(r.stderr.strip().splitlines()) == 1 and r.stdout == "",
                "load into the non-empty Redis database: one line, exit 1", r.describe())
        h.check(self.dump(self.redis, "redis-again.json") == mounted_once,
                "the refused load left the Redis volume as it was")
        bad_inputs = {
            "truncated.json": (first[: len(first) // 2], "ends early (truncated?)"),
            "bad-record.json": (first.replace(b'"type":"dir"', b'"type":"dyr"', 1),
                                'inodes[0] (inode 1).attr: "type" must be one of'),
            "not-a-dump.json": (b'{"name":"x"}', "not a tessera dump"),
        }
        for name, (content, says) in bad_inputs.items():
            path = os.path.join(h.tmp, name)
            with open(path, "wb") as f:
                f.write(content)
            target = os.path.join(h.tmp, "never.db")
            r = h.run("load", "sqlite3://" + target, path)
            h.check(r.returncode == 1 and says in r.stderr and name in r.stderr
                    and r.stderr.startswith("tessera load: ")
                    and len(r.stderr.strip().splitlines()) == 1 and not os.path.exists(target),
                    f"load of {name}: one line naming the problem, exit 1, nothing created",
                    r.describe())
        for what, args in (("no META-URL", ("dump",)),
                           ("too many arguments", ("dump", self.sqlite, "a", "b")),
                           ("no FILE", ("load", self.sqlite2)),
                           ("unknown option", ("load", "--frobnicate", self.sqlite2, "x")),
                           ("bad --batch", ("load", "--batch", "0", self.sqlite2, "x"))):
            r = h.run(*args)
            h.check(r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
                    and r.stderr.startswith(f"tessera {args[0]}: ") and r.stdout == "",
                    f"{args[0]} with {what}: one line on stderr, exit 2", r.describe())
        r = h.run("dump", "sqlite3://" + os.path.join(h.tmp, "absent.db"))
        h.check(r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1,
                "dump of a volume that does not exist: one line, exit 1", r.describe())
        r = h.run("dump", "--help")
        h.check(r.returncode == 0 and "consistent" in r.stdout and "left out" in r.stdout,
                "dump --help describes the command", r.describe())
        r = h.run("load", "--help")
        h.check(r.returncode == 0 and "--batch" in r.stdout and "empty" in r.stdout,
                "load --help describes the command", r.describe())
        r = h.run("--help")
        h.check(r.returncode == 0 and "  dump " in r.stdout and "  load " in r.stdout,
                "tessera --help lists dump and load", r.describe())


def main():
    h = Harness("dump_load", sys.argv)
    with h:
        with metadata_server("redis") as server:
            DumpLoadTest(h, server.url).run()
    sys.exit(h.exit_code())


if __name__ == "__main__":
    main()
