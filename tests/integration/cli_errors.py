#!/usr/bin/env python3
"""Tessera CLI: bad input gives a clear one-line error, never a crash or a hang.

Usage: python3 tests/integration/cli_errors.py /path/to/tessera

Every error case must: exit with a code > 0 (not killed by a signal), print
exactly one line on stderr that starts with "tessera", print no traceback,
abort or exception text, and finish within 20 s. Some cases also check that
the message names what was wrong, and that nothing was changed (no volume
formatted, nothing mounted or unmounted). --help of every command exits 0
and prints "Usage".
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, mounted_fstype, pid_alive  # noqa: E402

CRASH_WORDS = ("Traceback", "terminate called", "Aborted", "Segmentation fault", "core dumped",
               "what():", "AddressSanitizer", "runtime error:", "panic", "Assertion")


class CliErrors:
    def __init__(self, h: Harness):
        self.h = h
        self.t = h.tmp
        self.log = os.path.join(h.tmp, "mount.log")
        self.url = "sqlite3://" + os.path.join(h.tmp, "good.db")
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = h.register_mount_point(os.path.join(h.tmp, "mnt"))
        os.mkdir(self.mnt)

    def path(self, *parts: str) -> str:
        return os.path.join(self.t, *parts)

    # ---- the two kinds of case ------------------------------------------------

    def error(self, what: str, *args: str, mentions: tuple[str, ...] = (), timeout: float = 20):
        """A case that must fail with one clean line on stderr."""
        h = self.h
        was_mounted = mounted_fstype(self.mnt) is not None
        r = h.run(*args, timeout=timeout)
        lines = r.stderr.splitlines()
        problems = []
        if r.timed_out:
            problems.append(f"did not finish within {timeout:.0f}s")
        elif r.returncode < 0:
            problems.append(f"killed by signal {-r.returncode}")
        elif r.returncode == 0:
            problems.append("exit code 0")
        elif r.returncode >= 128:
            problems.append(f"exit code {r.returncode} looks like a crash")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr, want exactly 1")
        if lines and not lines[0].startswith("tessera"):
            problems.append("stderr does not start with 'tessera'")
        crash = [w for w in CRASH_WORDS if w in r.stderr or w in r.stdout]
        if crash:
            problems.append(f"crash output {crash}")
        missing = [m for m in mentions if m.lower() not in r.stderr.lower()]
        if missing:
            problems.append(f"the message does not mention {missing}")
        if not was_mounted and mounted_fstype(self.mnt) is not None:
            # The command should have failed but mounted something: undo it.
            problems.append(f"{self.mnt} got mounted")
            h.run("umount", self.mnt, timeout=60)
        ok = h.check(not problems, f"{what}: " + (lines[0] if len(lines) == 1 and not problems
                                                  else "; ".join(problems)),
                     "" if not problems else r.describe())
        return ok, r

    def success(self, what: str, *args: str, timeout: float = 20):
        r = self.h.run(*args, timeout=timeout)
        ok = r.returncode == 0 and not any(w in r.stderr for w in CRASH_WORDS)
        self.h.check(ok, what, r.describe())
        return ok, r

    def settings(self, url: str):
        r, status = self.h.status(url)
        return status["setting"] if status else None

    # ---- the cases --------------------------------------------------------------

    def run(self):
        h = self.h
        t = self.path
        with open(t("afile0"), "w") as f:
            f.write("a regular file\n")

        # --help and usage
        for cmd in ("format", "mount", "umount", "status"):
            for flag in ("--help", "-h"):
                r = h.run(cmd, flag)
                h.check(r.returncode == 0 and "Usage" in r.stdout and r.stderr == "",
                        f"tessera {cmd} {flag}: exit 0 and prints Usage", r.describe())
        r = h.run("--help")
        h.check(r.returncode == 0 and "Usage" in r.stdout, "tessera --help: exit 0 and prints Usage",
                r.describe())
        r = h.run("version")
        h.check(r.returncode == 0 and r.stdout.startswith("tessera"), "tessera version works",
                r.describe())
        r = h.run()
        h.check(r.returncode is not None and r.returncode > 0 and "Usage" in r.stdout + r.stderr,
                "tessera without a command: non-zero exit and the usage", r.describe())

        # A good volume for the cases that need one.
        h.require(self.success("format a good volume", "format", "--bucket", self.bucket,
                               self.url, "goodvol")[0], "a good volume to test against")
        good = self.settings(self.url)
        h.require(good is not None, "status of the good volume")

        # Unknown command, unknown options, missing and extra arguments.
        self.error("unknown command", "frobnicate", mentions=("frobnicate",))
        self.error("unknown command that looks like an option", "--frobnicate")
        self.error("format: unknown option", "format", "--frobnicate", self.url, "goodvol",
                   mentions=("--frobnicate",))
        self.error("format: unknown short option", "format", "-q", self.url, "goodvol",
                   mentions=("-q",))
        self.error("mount: unknown option", "mount", "--nope", self.url, self.mnt,
                   mentions=("--nope",))
        self.error("umount: unknown option", "umount", "--bogus", self.mnt, mentions=("--bogus",))
        self.error("status: unknown option", "status", "-x", self.url, mentions=("-x",))
        self.error("format: option without its value", "format", self.url, "goodvol",
                   "--block-size", mentions=("block-size",))
        self.error("mount: flag given a value", "mount", "--background=yes", self.url, self.mnt)
        self.error("format: no arguments", "format")
        self.error("format: no NAME", "format", self.url)
        self.error("format: too many arguments", "format", self.url, "goodvol", "extra")
        self.error("mount: no arguments", "mount")
        self.error("mount: no MOUNTPOINT", "mount", self.url)
        self.error("mount -d: no MOUNTPOINT", "mount", "-d", "--log", self.log, self.url)
        self.error("mount: too many arguments", "mount", self.url, self.mnt, "extra")
        self.error("umount: no MOUNTPOINT", "umount")
        self.error("umount: too many arguments", "umount", self.mnt, "extra")
        self.error("status: no META-URL", "status")
        self.error("status: too many arguments", "status", self.url, "extra")

        # Malformed META-URLs, for every command that takes one.
        before = set(os.listdir(self.t)) | {"b-url", "mount.log"}
        for bad in ("nonsense", "foo://bar", "sqlite3://", "", "redis:/x", "sqlite3:/x.db"):
            self.error(f"format with META-URL {bad!r}", "format", "--bucket", t("b-url"), bad,
                       "urlvol")
            self.error(f"mount with META-URL {bad!r}", "mount", bad, self.mnt)
            self.error(f"mount -d with META-URL {bad!r}", "mount", "-d", "--log", self.log, bad,
                       self.mnt)
            self.error(f"status with META-URL {bad!r}", "status", bad)
        strays = sorted(set(os.listdir(self.t)) - before)
        h.check(not strays, "malformed URLs created nothing in the working directory "
                "(besides the bucket format may probe)", f"{strays}")

        # A META-URL whose directory does not exist: nothing may be created.
        for db in ("/nonexistent-dir/x.db", t("no-such-dir", "x.db")):
            parent = os.path.dirname(db)
            if os.path.exists(parent):
                h.check(False, f"{parent} must not exist for this test")
                continue
            self.error(f"status of sqlite3://{db} (no such directory)", "status",
                       "sqlite3://" + db, mentions=(db,))
            self.error(f"mount of sqlite3://{db} (no such directory)", "mount",
                       "sqlite3://" + db, self.mnt, mentions=(db,))
            self.error(f"mount -d of sqlite3://{db} (no such directory)", "mount", "-d",
                       "--log", self.log, "sqlite3://" + db, self.mnt, mentions=(db,))
            h.check(not os.path.exists(parent), f"status/mount did not create {parent}")
        # A missing database file in an existing directory is not created either.
        missing_db = t("missing.db")
        self.error("status of a database file that does not exist", "status",
                   "sqlite3://" + missing_db)
        self.error("mount of a database file that does not exist", "mount",
                   "sqlite3://" + missing_db, self.mnt)
        h.check(not os.path.exists(missing_db), "status/mount did not create a missing database")

        # A database path that cannot be created, or that is a directory.
        self.error("format with a database under a regular file", "format", "--bucket",
                   t("b-db"), "sqlite3://" + t("afile0", "x.db"), "dbvol")
        self.error("status of a directory as database", "status", "sqlite3://" + self.t)
        self.error("mount of a directory as database", "mount", "sqlite3://" + self.t, self.mnt)

        # Existing but unformatted databases.
        empty = t("empty.db")
        open(empty, "wb").close()
        other = t("other.db")
        con = sqlite3.connect(other)
        con.execute("CREATE TABLE unrelated (k TEXT PRIMARY KEY, v BLOB)")
        con.execute("INSERT INTO unrelated VALUES ('a', x'00')")
        con.commit()
        con.close()
        garbage = t("garbage.db")
        with open(garbage, "wb") as f:
            f.write(b"this is not an sqlite database\n" * 100)
        for label, db in (("an empty file", empty), ("an unrelated SQLite database", other),
                          ("a file that is not SQLite", garbage)):
            url = "sqlite3://" + db
            self.error(f"status of {label}", "status", url)
            self.error(f"mount of {label}", "mount", url, self.mnt)
            self.error(f"mount -d of {label}", "mount", "-d", "--log", self.log, url, self.mnt)
            self.error(f"status of {label} again (still unformatted)", "status", url)
        with open(garbage, "rb") as f:
            h.check(f.read() == b"this is not an sqlite database\n" * 100,
                    "a non-SQLite file given as META-URL is left unchanged")
        h.check(os.path.getsize(empty) == 0 or self.settings("sqlite3://" + empty) is None,
                "mount/status did not format the empty database")

        # Mount points.
        self.error("mount on a missing mount point", "mount", self.url, t("no-such-mp"),
                   mentions=("no-such-mp",))
        self.error("mount -d on a missing mount point", "mount", "-d", "--log", self.log,
                   self.url, t("no-such-mp"), mentions=("no-such-mp",))
        afile = t("afile")
        with open(afile, "w") as f:
            f.write("a regular file\n")
        h.register_mount_point(afile)
        self.error("mount on a regular file", "mount", self.url, afile, mentions=("afile",))
        self.error("mount -d on a regular file", "mount", "-d", "--log", self.log, self.url, afile,
                   mentions=("afile",))
        self.error("mount on a path under a regular file", "mount", self.url, t("afile", "sub"))
        h.check(mounted_fstype(afile) is None and mounted_fstype(self.mnt) is None,
                "failed mounts left nothing mounted")

        # Bad mount options.
        for opt, val in (("--attr-cache", "abc"), ("--attr-cache", "-1"), ("--entry-cache", "1x"),
                         ("--dir-entry-cache", ""), ("--attr-cache", "nan"),
                         ("--max-threads", "0"), ("--max-threads", "lots"),
                         ("--max-threads", "99999999999999999999"), ("--heartbeat", "0"),
                         ("--heartbeat", "-3"),
                         # Beyond what the daemon can represent: must be refused, not
                         # wrapped around to 0 or a negative interval (a busy loop).
                         ("--heartbeat", "2147483648"), ("--heartbeat", "4294967296")):
            self.error(f"mount -d {opt} {val!r}", "mount", "-d", "--log", self.log, opt, val,
                       self.url, self.mnt, mentions=(opt.lstrip("-"),))
        h.check(mounted_fstype(self.mnt) is None, "bad mount options mounted nothing")

        # Buckets that cannot be used.
        for label, bucket in (("under a regular file", t("afile", "bucket")),
                              ("that is a regular file", afile)):
            db = t(f"bucket-{len(label)}.db")
            self.error(f"format with a bucket {label}", "format", "--bucket", bucket,
                       "sqlite3://" + db, "bucketvol", mentions=("afile",))
            r, status = h.status("sqlite3://" + db)
            h.check(status is None, f"no usable volume left behind by the failed format "
                    f"(bucket {label})", r.describe())
        with open(afile) as f:
            h.check(f.read() == "a regular file\n", "the regular file is left unchanged")
        self.error("format with an unsupported storage", "format", "--storage", "floppy",
                   "--bucket", t("b2"), "sqlite3://" + t("storage.db"), "storagevol",
                   mentions=("floppy",))

        # Bad sizes and numbers.
        for bs in ("3M", "1K", "abc", "32M", "0", "", "4Q", "-1", "4M4", "99999999999999999999"):
            self.error(f"format --block-size {bs!r}", "format", "--block-size", bs, "--bucket",
                       t("b3"), "sqlite3://" + t("bs.db"), "bsvol", mentions=("block",)
                       if bs in ("3M", "1K", "32M", "0") else ())
        h.check(self.settings("sqlite3://" + t("bs.db")) is None,
                "no volume was formatted by the bad block sizes")
        for opt, val in (("--trash-days", "abc"), ("--trash-days", "-1"),
                         ("--trash-days", "4294967297"),  # must not wrap around to 1
                         ("--capacity", "lots"), ("--capacity", "10X"),
                         ("--capacity", "99999999999T"), ("--inodes", "1e6"),
                         ("--inodes", "-5"), ("--inodes", "99999999999999999999")):
            self.error(f"format {opt} {val!r}", "format", opt, val, "--bucket", t("b4"),
                       "sqlite3://" + t("opts.db"), "optsvol")
        h.check(self.settings("sqlite3://" + t("opts.db")) is None,
                "no volume was formatted by the bad option values")

        # Bad volume names.
        for name in ("UPPER", "a", "ab", "has_underscore", "trail-", "with space", "dot.ted",
                     "x" * 64, "caf\u00e9", ""):
            self.error(f"format with volume name {name!r}", "format", "--bucket", t("b5"),
                       "sqlite3://" + t("names.db"), name)
        h.check(self.settings("sqlite3://" + t("names.db")) is None,
                "no volume was formatted by the bad names")
        self.success("format with a 63-character name", "format", "--bucket", t("b6"),
                     "sqlite3://" + t("long.db"), "a" + "-" * 61 + "z")

        # Re-format: identical is fine, a different layout is refused.
        base = ("--bucket", self.bucket, self.url)
        self.success("re-format with identical arguments", "format", *base, "goodvol")
        self.success("re-format with an identical block size given explicitly", "format",
                     "--block-size", "4M", *base, "goodvol")
        self.error("re-format with another block size", "format", "--block-size", "1M", *base,
                   "goodvol")
        self.error("re-format with another bucket", "format", "--bucket", t("other-bucket"),
                   self.url, "goodvol")
        self.error("re-format with another name", "format", *base, "othervol")
        now = self.settings(self.url)
        h.check(now == good, "refused re-formats changed no setting", f"before {good}\nafter {now}")
        self.success("re-format changing only --trash-days", "format", "--trash-days", "3",
                     *base, "goodvol")
        now = self.settings(self.url) or {}
        h.check(now.get("trash_days") == 3 and now.get("uuid") == good["uuid"] and
                now.get("block_size") == good["block_size"],
                "re-format updated trash days and kept uuid and block size", f"{now}")

        # umount of things that are not tessera mounts.
        plain = t("plain-dir")
        os.mkdir(plain)
        self.error("umount of a directory that is not a mount", "umount", plain,
                   mentions=("plain-dir",))
        self.error("umount of a path that does not exist", "umount", t("no-such-dir"),
                   mentions=("no-such-dir",))
        self.error("umount of a regular file", "umount", afile)
        tmpfs = t("tmpfs")
        os.mkdir(tmpfs)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tessera-test", tmpfs],
                           capture_output=True, text=True)
        if r.returncode == 0:
            h.other_mounts.append(tmpfs)
            self.error("umount of a tmpfs (not a tessera mount)", "umount", tmpfs,
                       mentions=("tmpfs",))
            h.check(mounted_fstype(tmpfs) == "tmpfs", "the tmpfs is still mounted")
            subprocess.run(["umount", tmpfs], capture_output=True)
        else:
            print(f"skip - cannot mount a tmpfs here: {r.stderr.strip()}")

        # Mounting twice at the same mount point.
        ok, r = self.success("mount -d the good volume", "mount", "-d", "--log", self.log,
                             self.url, self.mnt, timeout=60)
        if ok:
            with open(os.path.join(self.mnt, "hello"), "w") as f:
                f.write("hello\n")
            self.error("mount again at the same mount point", "mount", self.url, self.mnt,
                       mentions=("mnt",))
            self.error("mount -d again at the same mount point", "mount", "-d", "--log",
                       self.log, self.url, self.mnt, mentions=("mnt",))
            self.error("mount again at the same mount point, given with a trailing slash",
                       "mount", "-d", "--log", self.log, self.url, self.mnt + "/")
            with open(os.path.join(self.mnt, "hello")) as f:
                h.check(f.read() == "hello\n", "the first mount still works after the refusals")
            r2, status = h.status(self.url)
            h.check(status is not None and len(status["sessions"]) == 1,
                    "still exactly one session after the refused mounts",
                    f"{status['sessions'] if status else r2.describe()}")
            self.error("format of a mounted volume with another block size", "format",
                       "--block-size", "1M", *base, "goodvol")
            self.error("umount --timeout with a value that is not a number", "umount",
                       "--timeout", "abc", self.mnt, mentions=("timeout",))
            if not h.check(mounted_fstype(self.mnt) is not None,
                           "a umount with a bad --timeout did not unmount"):
                # Go on with a fresh mount once the old daemon is gone.
                m = re.search(r"daemon pid (\d+)", r.stdout)
                deadline = time.monotonic() + 10
                while m and pid_alive(int(m.group(1))) and time.monotonic() < deadline:
                    time.sleep(0.05)
                ok, r = self.success("mount -d the good volume again", "mount", "-d", "--log",
                                     self.log, self.url, self.mnt, timeout=60)
                if not ok:
                    return
            # An open file keeps a plain umount from working: one clear line.
            with open(os.path.join(self.mnt, "hello")) as f:
                self.error("umount while a file is open", "umount", self.mnt, mentions=("busy",))
            self.success("umount after the file is closed (mount point given with a "
                         "trailing slash)", "umount", self.mnt + "/", timeout=60)
            h.check(mounted_fstype(self.mnt) is None, "the mount is gone")
            self.error("umount of what was just unmounted", "umount", self.mnt)


def main() -> int:
    h = Harness("cli_errors", sys.argv)
    with h:
        CliErrors(h).run()
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
