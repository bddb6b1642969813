#!/usr/bin/env python3
"""Tessera: `tessera mdtest`, the metadata engine benchmark, on a SQLite volume.

Usage: python3 tests/integration/mdtest.py /path/to/tessera

1. format a volume and put a few files in it through a mount;
2. mdtest --json (1 and 2 threads) reports every phase, in order, with the
   expected operation counts and positive rates and latencies; the text
   output has the table and a footer naming the engine;
3. while it runs, `tessera status` lists its session (mount point
   "(mdtest)"); SIGINT stops it with one line on stderr and the scratch
   directory removed;
4. afterwards no session is left, fsck finds 0 problems (so the counters
   are back to what the files say), and the mount shows the root and the
   files exactly as before;
5. bad input (unknown option, --files 0, --threads 0, no META-URL, an
   absent or unformatted SQLite database) gives one line on stderr, no
   output and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, sha  # noqa: E402

VOLUME = "mdvol"
PHASES = ["mkdir", "create", "lookup", "getattr", "setattr", "readdir", "rename", "unlink",
          "rmdir"]
LISTINGS = 20  # full listings per thread in the readdir phase


class MdtestTest:
    def __init__(self, h: Harness):
        self.h = h
        self.db = os.path.join(h.tmp, "meta.db")
        self.url = "sqlite3://" + self.db
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt")
        os.mkdir(self.mnt)

    def mount(self):
        r = self.h.mount(self.url, self.mnt)
        self.h.require(r.returncode == 0, "mount", r.describe() + "\n" + self.h.log_tail())

    def umount(self):
        r = self.h.umount(self.mnt)
        self.h.require(r.returncode == 0, "umount", r.describe())

    def snapshot(self) -> dict:
        """Every path under the mount with its type, mode, size and content hash."""
        out = {}
        for dirpath, dirs, files in os.walk(self.mnt):
            for name in dirs + files:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                out[os.path.relpath(p, self.mnt)] = (
                    st.st_mode, st.st_size, sha(p) if os.path.isfile(p) else None)
        return out

    def sessions(self) -> list:
        r, data = self.h.status(self.url)
        if data is None:
            self.h.require(False, "tessera status", r.describe())
        return data["sessions"]

    def check_report(self, what: str, threads: int, files: int, dir_size: int):
        h = self.h
        args = ["mdtest", self.url, "--files", str(files), "--dir-size", str(dir_size), "--json"]
        if threads != 1:
            args += ["--threads", str(threads)]
        r = h.run(*args, timeout=300)
        h.require(r.returncode == 0 and r.stderr == "", f"{what}: exit 0, nothing on stderr",
                  r.describe())
        try:
            j = json.loads(r.stdout)
        except ValueError:
            h.require(False, f"{what}: stdout is JSON", r.describe())
        h.check(j["engine"] == self.url and j["volume"] == VOLUME and j["threads"] == threads
                and j["files_per_thread"] == files and j["dir_size"] == dir_size,
                f"{what}: the report names the engine, volume and parameters", r.stdout[:400])
        names = [p["name"] for p in j["phases"]]
        h.check(names == PHASES, f"{what}: every phase, in order", str(names))
        bad = []
        for p in j["phases"]:
            want = threads * (LISTINGS if p["name"] == "readdir" else files)
            if not (p["ops"] == want and p["seconds"] > 0 and p["ops_per_second"] > 0
                    and p["mean_us"] > 0 and 0 < p["p50_us"] <= p["p99_us"]):
                bad.append(f"{p['name']} (want {want} ops): {json.dumps(p)}")
        h.check(not bad, f"{what}: each phase has its operation count, positive rate and "
                "latencies", "\n".join(bad))
        rd = next((p for p in j["phases"] if p["name"] == "readdir"), None)
        pages_per_listing = (dir_size + j["page_size"] - 1) // j["page_size"]
        h.check(rd is not None and "page" in rd
                and threads * LISTINGS * pages_per_listing <= rd["page"]["ops"]
                <= threads * LISTINGS * (pages_per_listing + 1)
                and 0 < rd["page"]["mean_us"] <= rd["mean_us"],
                f"{what}: readdir reports its pages ({pages_per_listing} per listing)",
                json.dumps(rd))

    def run(self):
        h = self.h
        os.mkdir(self.bucket)
        r = h.run("format", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.mount()
        os.makedirs(os.path.join(self.mnt, "keep", "sub"))
        with open(os.path.join(self.mnt, "keep", "data.bin"), "wb") as f:
            f.write(os.urandom(300 * 1024))
        with open(os.path.join(self.mnt, "top.txt"), "w") as f:
            f.write("left alone by mdtest\n")
        os.chmod(os.path.join(self.mnt, "top.txt"), 0o640)
        before = self.snapshot()
        self.umount()

        # 2. Reports.
        self.check_report("mdtest --json", 1, 200, 300)
        self.check_report("mdtest --threads 2 --json", 2, 100, 1500)

        r = h.run("mdtest", self.url, "--files", "50", "--dir-size", "20", timeout=120)
        h.check(r.returncode == 0 and r.stderr == ""
                and "tessera mdtest " in r.stdout and "ops/s" in r.stdout
                and all(f"\n{p} " in r.stdout for p in PHASES)
                and "readdir page" in r.stdout
                and "no FUSE" in r.stdout and f"Engine: {self.url}" in r.stdout,
                "mdtest text output: header, a row per phase, footer naming the engine",
                r.describe())

        # 3. A session while it runs; SIGINT cleans up.
        self.interrupt()

        # 4. Nothing left behind.
        h.check(not any(s["mount_point"] == "(mdtest)" for s in self.sessions()),
                "no mdtest session is left", json.dumps(self.sessions()))
        r = h.run("fsck", self.url, timeout=120)
        h.check(r.returncode == 0 and "problems found:    0" in r.stdout,
                "fsck after mdtest: 0 problems (counters and link counts right)", r.describe())
        self.mount()
        h.check(not any(n.startswith(".mdtest") for n in os.listdir(self.mnt)),
                "no scratch directory is left in the root", str(os.listdir(self.mnt)))
        after = self.snapshot()
        h.check(after == before, "the volume's own files are untouched",
                f"before {before}\nafter {after}")
        self.umount()

        # 5. Bad input.
        empty_db = os.path.join(h.tmp, "empty.db")
        sqlite3.connect(empty_db).close()
        with sqlite3.connect(empty_db) as c:
            c.execute("CREATE TABLE unrelated (x)")
        for what, args in (("an unknown option", ("mdtest", "--frobnicate", self.url)),
                           ("--files 0", ("mdtest", "--files", "0", self.url)),
                           ("--threads 0", ("mdtest", "--threads", "0", self.url)),
                           ("--dir-size 2000000", ("mdtest", "--dir-size", "2000000", self.url)),
                           ("no META-URL", ("mdtest",)),
                           ("an absent database",
                            ("mdtest", "sqlite3://" + os.path.join(h.tmp, "nope.db"))),
                           ("an unformatted database", ("mdtest", "sqlite3://" + empty_db))):
            r = h.run(*args)
            h.check(r.returncode not in (0, None) and len(r.stderr.strip().splitlines()) == 1
                    and r.stderr.startswith("tessera mdtest: ") and r.stdout == "",
                    f"mdtest with {what}: one line on stderr, non-zero exit", r.describe())
        r = h.run("mdtest", "--help")
        h.check(r.returncode == 0 and "--dir-size" in r.stdout and "readdir" in r.stdout,
                "mdtest --help describes the options", r.describe())
        r = h.run("--help")
        h.check("mdtest" in r.stdout, "tessera --help lists mdtest", r.describe())

    def interrupt(self):
        h = self.h
        argv = [h.binary, "mdtest", self.url, "--files", "1000000"]
        proc = subprocess.Popen(argv, cwd=h.tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            seen = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                seen = [s for s in self.sessions() if s["mount_point"] == "(mdtest)"]
                if seen:
                    break
                time.sleep(0.1)
            h.check(bool(seen) and seen[0]["pid"] == proc.pid,
                    "tessera status lists the running mdtest's session", str(seen))
            time.sleep(1)  # well into the mkdir phase
            proc.send_signal(signal.SIGINT)  # our own child, by pid
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        h.check(proc.returncode == 1 and len(err.strip().splitlines()) == 1
                and "interrupted" in err and "may be left" not in err,
                "SIGINT: one line on stderr, exit 1, the tree removed",
                f"rc={proc.returncode}\nstdout: {out}\nstderr: {err}")


def main():
    h = Harness("mdtest", sys.argv)
    with h:
        MdtestTest(h).run()
    sys.exit(h.exit_code())


if __name__ == "__main__":
    main()
