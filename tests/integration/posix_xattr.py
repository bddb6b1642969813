#!/usr/bin/env python3
"""Tessera: extended attributes through a real FUSE mount.

Usage: python3 tests/integration/posix_xattr.py /path/to/tessera

1. format a volume (SQLite metadata file + file bucket, trash off) and mount -d;
2. on a file and a directory: set, get, list and remove user.* attributes
   (binary values with NUL bytes, empty values, many names), XATTR_CREATE /
   XATTR_REPLACE with EEXIST / ENODATA, ENODATA for absent names, the Linux
   limits (a 64 KiB value works, 65537 bytes is E2BIG, a 256-byte name is
   ERANGE, a name list past 64 KiB is E2BIG), system.* refused with
   EOPNOTSUPP, ctime moves, permissions (another user may read but not set
   the attributes of a 0644 file), symlinks refuse user.*;
3. remove a file and a directory that have attributes, and replace a
   directory by rename;
4. tessera umount, mount again: the attributes kept are all there with their
   values; unmount and look into the metadata file (white box): no xattr key
   is left for the removed inodes.
Runs in a few seconds.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, mounted_fstype  # noqa: E402

VOLUME = "xattr-vol"
NOBODY = 65534
XATTR_SIZE_MAX = 65536


def user_names(names: list[str]) -> list[str]:
    # The kernel or a security module may add names of its own (security.*).
    return sorted(n for n in names if n.startswith("user."))


class Xattr:
    def __init__(self, h: Harness):
        self.h = h
        self.db = os.path.join(h.tmp, "meta.db")
        self.url = "sqlite3://" + self.db
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt")
        os.mkdir(self.mnt)
        # What should survive a remount: path -> {name: value}.
        self.kept: dict[str, dict[str, bytes]] = {}
        self.removed_inodes: dict[str, int] = {}
        self.kept_inodes: dict[str, int] = {}

    def m(self, rel: str) -> str:
        return os.path.join(self.mnt, rel)

    def expect_errno(self, what: str, want: int, fn, *args, **kwargs):
        """Checks that fn(*args) fails with errno `want`."""
        try:
            fn(*args, **kwargs)
        except OSError as e:
            return self.h.check(e.errno == want, f"{what}: {errno.errorcode[want]}",
                                f"got errno {e.errno} ({errno.errorcode.get(e.errno, '?')}): {e}")
        return self.h.check(False, f"{what}: {errno.errorcode[want]}", "the call succeeded")

    # ---- mount / umount -------------------------------------------------------

    def mount(self, phase: str):
        h = self.h
        r = h.mount(self.url, self.mnt)
        h.require(r.returncode == 0, f"{phase}: tessera mount -d succeeds",
                  r.describe() + "\nlog:\n" + h.log_tail())
        h.require(mounted_fstype(self.mnt) == "fuse.tessera",
                  f"{phase}: the mount is in the mount table as fuse.tessera",
                  f"fstype {mounted_fstype(self.mnt)}")

    def umount(self, phase: str):
        h = self.h
        r = h.umount(self.mnt)
        h.require(r.returncode == 0, f"{phase}: tessera umount succeeds",
                  r.describe() + "\nlog:\n" + h.log_tail())
        h.require(mounted_fstype(self.mnt) is None, f"{phase}: the mount is gone")

    # ---- the cases ------------------------------------------------------------

    def basics(self, rel: str, kind: str):
        h = self.h
        p = self.m(rel)
        h.check(user_names(os.listxattr(p)) == [], f"{kind}: a new {kind} lists no user.* names",
                f"{os.listxattr(p)}")
        binary = b"a\0b\0\xff\x00z"
        os.setxattr(p, "user.plain", b"hello")
        os.setxattr(p, "user.binary", binary)
        os.setxattr(p, "user.empty", b"")
        h.check(os.getxattr(p, "user.plain") == b"hello", f"{kind}: get returns the value set")
        got = os.getxattr(p, "user.binary")
        h.check(got == binary, f"{kind}: a binary value with NUL bytes comes back intact",
                f"got {got!r}")
        h.check(os.getxattr(p, "user.empty") == b"", f"{kind}: an empty value comes back empty")
        names = user_names(os.listxattr(p))
        h.check(names == ["user.binary", "user.empty", "user.plain"],
                f"{kind}: list returns the three names", f"{names}")
        os.setxattr(p, "user.plain", b"again")
        h.check(os.getxattr(p, "user.plain") == b"again", f"{kind}: set without flags overwrites")

        self.expect_errno(f"{kind}: XATTR_CREATE on an existing name", errno.EEXIST,
                          os.setxattr, p, "user.plain", b"x", os.XATTR_CREATE)
        h.check(os.getxattr(p, "user.plain") == b"again",
                f"{kind}: a refused XATTR_CREATE leaves the value alone")
        self.expect_errno(f"{kind}: XATTR_REPLACE on an absent name", errno.ENODATA,
                          os.setxattr, p, "user.absent", b"x", os.XATTR_REPLACE)
        os.setxattr(p, "user.created", b"c1", os.XATTR_CREATE)
        os.setxattr(p, "user.created", b"c2", os.XATTR_REPLACE)
        h.check(os.getxattr(p, "user.created") == b"c2",
                f"{kind}: XATTR_CREATE then XATTR_REPLACE works")

        self.expect_errno(f"{kind}: get of an absent name", errno.ENODATA,
                          os.getxattr, p, "user.absent")
        os.removexattr(p, "user.created")
        self.expect_errno(f"{kind}: get after remove", errno.ENODATA,
                          os.getxattr, p, "user.created")
        self.expect_errno(f"{kind}: remove of an absent name", errno.ENODATA,
                          os.removexattr, p, "user.created")
        names = user_names(os.listxattr(p))
        h.check(names == ["user.binary", "user.empty", "user.plain"],
                f"{kind}: list after remove", f"{names}")
        self.kept[rel] = {"user.plain": b"again", "user.binary": binary, "user.empty": b""}

    def limits(self, rel: str):
        h = self.h
        p = self.m(rel)
        big = bytes((i * 7 + 3) % 256 for i in range(XATTR_SIZE_MAX))
        os.setxattr(p, "user.big", big)
        got = os.getxattr(p, "user.big")
        h.check(got == big, "a 64 KiB value (the Linux maximum) round-trips",
                f"got {len(got)} bytes")
        fd = os.open(p, os.O_RDONLY)
        try:
            h.check(os.getxattr(fd, "user.big") == big, "fgetxattr on an open fd reads it too")
        finally:
            os.close(fd)
        self.expect_errno("a 65537-byte value", errno.E2BIG,
                          os.setxattr, p, "user.big", big + b"x")
        h.check(os.getxattr(p, "user.big") == big, "the refused value left the old one alone")
        self.kept[rel]["user.big"] = big

        name255 = "user." + "n" * 250
        os.setxattr(p, name255, b"v")
        h.check(os.getxattr(p, name255) == b"v", "a 255-byte name works")
        self.kept[rel][name255] = b"v"
        name256 = "user." + "n" * 251
        self.expect_errno("set with a 256-byte name", errno.ERANGE, os.setxattr, p, name256, b"v")
        self.expect_errno("get with a 256-byte name", errno.ERANGE, os.getxattr, p, name256)

        self.expect_errno("set of a system.* name (not supported)", errno.EOPNOTSUPP,
                          os.setxattr, p, "system.tessera_test", b"v")
        # A minimal access ACL (user::rw-, group::r--, other::r--). An empty
        # one would be turned into a removexattr by the kernel.
        acl = struct.pack("<I", 2) + b"".join(
            struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in ((1, 6), (4, 4), (0x20, 4)))
        self.expect_errno("set of a POSIX ACL (not supported yet)", errno.EOPNOTSUPP,
                          os.setxattr, p, "system.posix_acl_access", acl)
        self.expect_errno("get of a POSIX ACL: there is none", errno.ENODATA,
                          os.getxattr, p, "system.posix_acl_access")

    def many_names(self, rel: str):
        """A list longer than Python's first 256-byte try, then one past 64 KiB."""
        h = self.h
        os.mkdir(self.m(rel))
        p = self.m(rel)
        want = [f"user.attr-{i:03d}" for i in range(60)]
        for n in want:
            os.setxattr(p, n, n.encode())
        names = user_names(os.listxattr(p))
        h.check(names == want, f"60 names ({sum(len(n) + 1 for n in want)} bytes of list) "
                "are all listed", f"got {len(names)}: {names[:5]}...")
        h.check(all(os.getxattr(p, n) == n.encode() for n in want), "each of the 60 has its value")
        # 270 names of 255 bytes: a list of 69120 bytes, more than XATTR_LIST_MAX.
        for i in range(270):
            os.setxattr(p, f"user.{i:03d}" + "L" * 246, b"")
        self.expect_errno("list of more than 64 KiB of names", errno.E2BIG, os.listxattr, p)
        h.check(os.getxattr(p, "user.attr-000") == b"user.attr-000",
                "get still works on an inode with a huge list")

    def ctime(self, rel: str):
        h = self.h
        p = self.m(rel)
        before = os.stat(p)
        time.sleep(0.02)
        os.setxattr(p, "user.ctime", b"1")
        after = os.stat(p)
        h.check(after.st_ctime_ns > before.st_ctime_ns, "setxattr moves ctime",
                f"ctime {before.st_ctime_ns} -> {after.st_ctime_ns}")
        h.check(after.st_mtime_ns == before.st_mtime_ns, "setxattr leaves mtime alone",
                f"mtime {before.st_mtime_ns} -> {after.st_mtime_ns}")
        time.sleep(0.02)
        os.removexattr(p, "user.ctime")
        last = os.stat(p)
        h.check(last.st_ctime_ns > after.st_ctime_ns, "removexattr moves ctime",
                f"ctime {after.st_ctime_ns} -> {last.st_ctime_ns}")

    def permissions(self, rel: str):
        """Another user reads the attributes of a 0644 file but may not change them."""
        h = self.h
        p = self.m(rel)
        os.chmod(p, 0o644)
        fd = os.open(p, os.O_RDONLY)  # the temp dir is 0700: hand the child an fd
        try:
            pid = os.fork()
            if pid == 0:  # child: report through the exit code, never return
                code = 0
                try:
                    os.setgroups([])
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                    if os.getxattr(fd, "user.plain") != b"again":
                        code |= 1
                    try:
                        os.setxattr(fd, "user.plain", b"nobody")
                        code |= 2
                    except OSError as e:
                        if e.errno != errno.EACCES:
                            code |= 4
                    try:
                        os.removexattr(fd, "user.plain")
                        code |= 8
                    except OSError as e:
                        if e.errno != errno.EACCES:
                            code |= 16
                except BaseException:
                    code |= 64
                os._exit(code)
            _, status = os.waitpid(pid, 0)
        finally:
            os.close(fd)
        code = os.waitstatus_to_exitcode(status)
        h.check(code & (1 | 64) == 0, "another user can read a 0644 file's attribute",
                f"child exit code {code}")
        h.check(code & (2 | 4 | 8 | 16) == 0,
                "another user gets EACCES setting or removing it", f"child exit code {code}")
        h.check(os.getxattr(p, "user.plain") == b"again", "the attribute is unchanged")

    def symlink(self):
        h = self.h
        os.symlink("file", self.m("link"))
        self.expect_errno("user.* on a symlink itself", errno.EPERM, os.setxattr,
                          self.m("link"), "user.x", b"v", follow_symlinks=False)
        h.check(os.getxattr(self.m("link"), "user.plain") == b"again",
                "getxattr through a symlink reads the target's attribute")

    def removals(self):
        h = self.h
        # A file, a directory, and a directory replaced by rename.
        for rel, mk in (("gone-file", "file"), ("gone-dir", "dir"), ("victim-dir", "dir")):
            p = self.m(rel)
            if mk == "file":
                with open(p, "wb") as f:
                    f.write(b"data")
            else:
                os.mkdir(p)
            os.setxattr(p, "user.a", b"1")
            os.setxattr(p, "user.b", b"2" * 1000)
            self.removed_inodes[rel] = os.stat(p).st_ino
        os.mkdir(self.m("mover"))
        os.setxattr(self.m("mover"), "user.mover", b"m")
        os.unlink(self.m("gone-file"))
        os.rmdir(self.m("gone-dir"))
        os.rename(self.m("mover"), self.m("victim-dir"))
        h.check(user_names(os.listxattr(self.m("victim-dir"))) == ["user.mover"],
                "a directory renamed over another keeps its own attributes, not the victim's",
                f"{os.listxattr(self.m('victim-dir'))}")
        self.kept["victim-dir"] = {"user.mover": b"m"}
        # A new file of the same name starts clean.
        with open(self.m("gone-file"), "wb"):
            pass
        h.check(user_names(os.listxattr(self.m("gone-file"))) == [],
                "a new file under a removed name has no attributes")

    def verify_kept(self, phase: str):
        h = self.h
        bad = []
        for rel, attrs in self.kept.items():
            p = self.m(rel)
            self.kept_inodes[rel] = os.stat(p).st_ino
            names = user_names(os.listxattr(p))
            if names != sorted(attrs):
                bad.append(f"{rel}: names {names}, want {sorted(attrs)}")
            for n, v in attrs.items():
                try:
                    got = os.getxattr(p, n)
                except OSError as e:
                    bad.append(f"{rel} {n[:20]}: {e}")
                    continue
                if got != v:
                    bad.append(f"{rel} {n[:20]}: {len(got)} bytes, want {len(v)}")
        h.check(not bad, f"{phase}: every attribute kept has its value "
                f"({sum(len(a) for a in self.kept.values())} in {len(self.kept)} inodes)",
                "\n".join(bad[:10]))

    def check_store(self):
        """White box: the metadata file holds no A<ino>X key of a removed inode."""
        h = self.h

        def xattr_keys(con, ino: int) -> int:
            prefix = b"A" + struct.pack(">Q", ino)
            return con.execute("SELECT count(*) FROM kv WHERE k >= ? AND k < ?",
                               (prefix + b"X", prefix + b"Y")).fetchone()[0]

        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            left = {rel: n for rel, ino in self.removed_inodes.items()
                    if (n := xattr_keys(con, ino))}
            kept = {rel: xattr_keys(con, ino) for rel, ino in self.kept_inodes.items()}
        finally:
            con.close()
        want = {rel: len(attrs) for rel, attrs in self.kept.items()}
        # The same query must find the attributes that were kept, or it proves nothing.
        h.check(kept == want, f"metadata: the kept inodes have one xattr key per attribute {want}",
                f"found {kept}")
        h.check(not left, "metadata: no xattr key left for the removed file, directory and "
                "renamed-over directory", f"left: {left}")

    # ---- the test -------------------------------------------------------------

    def run(self):
        h = self.h
        r = h.run("format", "--bucket", self.bucket, "--trash-days", "0", self.url, VOLUME)
        h.require(r.returncode == 0, "format a volume (sqlite3 + file bucket)", r.describe())
        self.mount("first mount")
        with open(self.m("file"), "wb") as f:
            f.write(b"some data")
        os.mkdir(self.m("dir"))
        self.basics("file", "file")
        self.basics("dir", "directory")
        self.limits("file")
        self.many_names("many")
        self.ctime("dir")
        self.permissions("file")
        self.symlink()
        self.removals()
        self.verify_kept("first mount")
        self.umount("first umount")
        self.mount("second mount")
        self.verify_kept("after remount")
        self.umount("second umount")
        self.check_store()


def main() -> int:
    h = Harness("posix_xattr", sys.argv)
    with h:
        Xattr(h).run()
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
