#!/usr/bin/env python3
"""Tessera: --writeback mounts through a real FUSE mount.

Usage: python3 tests/integration/writeback.py /path/to/tessera

1. bad combinations of flags fail with one line;
2. a mount with --writeback --upload-delay 3600: files written and closed
   are staged on the cache disk, not in the bucket; `tessera status` counts
   them per session and in total; they read back through the mount; a file
   deleted while staged never reaches the bucket; a second --writeback
   mount of the volume with the same cache directory is refused;
3. the mount daemon is killed (kill -9) and the dead mount cleared; a
   --writeback remount without delay uploads everything that was staged,
   status drops to 0, every file reads back with the same sha256;
4. a clean unmount with blocks still staged uploads them before it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, drop_page_cache, sha, mounted_fstype, pid_alive  # noqa: E402

VOLUME = "wb-vol"
MiB = 1 << 20


def files_under(root: str, marker: str) -> dict[str, int]:
    """name -> size of the files under root whose relative path contains marker."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            rel = os.path.relpath(os.path.join(d, n), root)
            if marker in rel:
                try:
                    out[rel] = os.path.getsize(os.path.join(d, n))
                except FileNotFoundError:
                    pass
    return out


class Writeback:
    def __init__(self, h: Harness):
        self.h = h
        self.url = "sqlite3://" + os.path.join(h.tmp, "meta.db")
        self.bucket = os.path.join(h.tmp, "bucket")
        self.cache = os.path.join(h.tmp, "cache")
        self.mnt = os.path.join(h.tmp, "mnt")
        self.mnt2 = os.path.join(h.tmp, "mnt2")
        os.mkdir(self.mnt)
        os.mkdir(self.mnt2)
        self.files: dict[str, str] = {}  # name -> sha256
        self.staging = ""

    # ---- helpers ------------------------------------------------------------

    def mount(self, *extra: str, mp: str | None = None):
        r = self.h.mount(self.url, mp or self.mnt, "--cache-dir", self.cache, *extra)
        self.h.require(r.returncode == 0, f"mount {' '.join(extra)}", r.describe() + "\n" + self.h.log_tail())
        m = re.search(r"daemon pid (\d+)", r.stdout)
        self.h.require(m is not None, "mount reports its daemon pid", r.describe())
        return int(m.group(1))

    def status(self) -> dict:
        r, data = self.h.status(self.url)
        if data is None:
            self.h.require(False, "status prints JSON", r.describe())
        return data

    def pending(self) -> tuple[int, int]:
        usage = self.status()["usage"]
        return usage.get("blocks_pending_upload", -1), usage.get("bytes_pending_upload", -1)

    def bucket_blocks(self) -> dict[str, int]:
        return files_under(self.bucket, "/chunks/")

    def staged_files(self) -> dict[str, int]:
        if not os.path.isdir(self.staging):
            return {}
        return {n: os.path.getsize(os.path.join(self.staging, n))
                for n in os.listdir(self.staging) if not n.startswith(".")}

    def wait_for(self, what: str, pred, timeout: float = 60.0, detail=lambda: "") -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return self.h.check(True, what)
            time.sleep(0.2)
        return self.h.check(False, what, detail())

    def write_file(self, name: str, size: int, rng: random.Random) -> int:
        data = rng.randbytes(size)
        with open(os.path.join(self.mnt, name), "wb") as f:
            f.write(data)
        self.files[name] = hashlib.sha256(data).hexdigest()
        return size

    def verify_files(self, what: str):
        drop_page_cache()
        bad = []
        for name, digest in self.files.items():
            try:
                got = sha(os.path.join(self.mnt, name))
            except OSError as e:
                got = f"error {e}"
            if got != digest:
                bad.append(f"{name}: {got}")
        self.h.check(not bad, f"{what}: all {len(self.files)} files have their sha256", "\n".join(bad))

    # ---- steps --------------------------------------------------------------

    def bad_flags(self):
        h = self.h
        for args, words in [
            (["--writeback", "--cache-dir", "none"], "cache-dir none"),
            (["--upload-delay", "5"], "needs --writeback"),
            (["--writeback", "--upload-delay", "soon"], "--upload-delay"),
        ]:
            r = h.run("mount", *args, self.url, self.mnt)
            lines = r.stderr.strip().splitlines()
            h.check(r.returncode == 1 and len(lines) == 1 and words in r.stderr,
                    f"mount {' '.join(args)} fails with one line naming the problem", r.describe())
        h.check(mounted_fstype(self.mnt) is None, "nothing got mounted by the bad flags")

    def staged_then_killed(self):
        h = self.h
        pid = self.mount("--writeback", "--upload-delay", "3600")
        uuid = self.status()["setting"]["uuid"]
        self.staging = os.path.join(self.cache, uuid + "-staging")
        rng = random.Random(11)
        total = 0
        for name, size in [("big10m.bin", 10 * MiB), ("odd9m.bin", 9 * MiB + 123),
                           ("s1.txt", 1), ("s2.bin", 4096), ("s3.bin", 70 * 1024 + 3),
                           ("s4.bin", 300 * 1024), ("exact4m.bin", 4 * MiB)]:
            total += self.write_file(name, size, rng)
        os.makedirs(os.path.join(self.mnt, "dir"))
        total += self.write_file("dir/nested.bin", 5 * MiB + 7, rng)

        staged = self.staged_files()
        h.check(staged and sum(staged.values()) == total,
                f"every written byte is staged in {os.path.basename(self.staging)} "
                f"({len(staged)} blocks, {total} bytes)",
                f"staged: {len(staged)} files, {sum(staged.values())} bytes; expected {total} bytes")
        h.check(not self.bucket_blocks(), "the bucket holds no block objects yet",
                str(sorted(self.bucket_blocks())[:5]))
        self.wait_for("status counts the staged blocks (total and per session)",
                      lambda: self.pending() == (len(staged), total),
                      timeout=10, detail=lambda: f"status {self.pending()}, staged {len(staged)}/{total}")
        sessions = self.status()["sessions"]
        mine = [s for s in sessions if s.get("pid") == pid]
        h.check(len(mine) == 1 and mine[0].get("blocks_pending_upload") == len(staged)
                and mine[0].get("bytes_pending_upload") == total
                and mine[0].get("staging_dir") == self.staging,
                "the mount's session shows its staging directory and pending blocks",
                json.dumps(sessions, indent=1))

        # Reads of staged blocks come from the staging files.
        self.verify_files("while staged")

        # A file deleted while staged costs no upload: its staging files go.
        rng2 = random.Random(5)
        data = rng2.randbytes(6 * MiB)
        path = os.path.join(self.mnt, "short-lived.bin")
        with open(path, "wb") as f:
            f.write(data)
        after_write = self.staged_files()
        h.check(len(after_write) == len(staged) + 2, "a 6 MiB file adds two staged blocks",
                f"{len(staged)} -> {len(after_write)}")
        os.unlink(path)
        # The mount deletes an unlinked file's data in the background.
        self.wait_for("deleting it removes its staged blocks (within 5 s)",
                      lambda: self.staged_files() == staged, timeout=5,
                      detail=lambda: str(set(self.staged_files()) ^ set(staged)))
        self.wait_for("status is back to the earlier count",
                      lambda: self.pending() == (len(staged), total), timeout=10,
                      detail=lambda: str(self.pending()))

        # The staging directory belongs to one mount.
        r = h.mount(self.url, self.mnt2, "--cache-dir", self.cache, "--writeback")
        h.check(r.returncode == 1 and "in use" in r.stderr and self.staging in r.stderr
                and len(r.stderr.strip().splitlines()) == 1,
                "a second --writeback mount with the same cache directory is refused in one line",
                r.describe())
        h.check(mounted_fstype(self.mnt2) is None, "and it did not mount")

        # kill -9: nothing gets uploaded, nothing is lost.
        pid_file = "/run/tessera/" + self.mnt.replace("%", "%25").replace("/", "%2F") + ".pid"
        try:
            with open(pid_file) as f:
                h.check(int(f.read().strip()) == pid, "the pid file names the daemon")
        except OSError as e:
            h.check(False, "the pid file names the daemon", str(e))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        h.require(not pid_alive(pid), "the mount daemon is dead")
        subprocess.run(["fusermount3", "-u", "-z", self.mnt], capture_output=True, timeout=20)
        h.require(mounted_fstype(self.mnt) is None, "the dead mount is cleared")
        h.check(self.staged_files() == staged, "the staged blocks survived the kill")
        h.check(not self.bucket_blocks(), "and none of them was uploaded")
        self.staged = staged
        self.total = total
        self.dead_pid = pid

    def remount_uploads(self):
        h = self.h
        pid = self.mount("--writeback")
        self.wait_for("after the remount, status drops to 0 pending",
                      lambda: self.pending() == (0, 0), timeout=60,
                      detail=lambda: f"{self.pending()}\n{self.h.log_tail()}")
        blocks = self.bucket_blocks()
        h.check(len(blocks) == len(self.staged) and sum(blocks.values()) == self.total,
                f"the bucket holds all {len(self.staged)} blocks ({self.total} bytes)",
                f"{len(blocks)} objects, {sum(blocks.values())} bytes")
        h.check(not self.staged_files(), "the staging directory is empty",
                str(sorted(self.staged_files())[:5]))
        sessions = self.status()["sessions"]
        dead = [s for s in sessions if s.get("pid") == self.dead_pid]
        mine = [s for s in sessions if s.get("pid") == pid]
        h.check(len(dead) == 1 and len(mine) == 1
                and dead[0].get("staging_taken_over_by") == mine[0]["sid"]
                and "blocks_pending_upload" not in dead[0],
                "the killed mount's session no longer counts: the new one took its staging over",
                json.dumps(sessions, indent=1))
        self.verify_files("after the upload")
        r = self.h.umount(self.mnt)
        h.require(r.returncode == 0, "umount", r.describe())

    def clean_unmount_uploads(self):
        h = self.h
        before = self.bucket_blocks()
        self.mount("--writeback", "--upload-delay", "3600")
        rng = random.Random(23)
        total = self.write_file("late-big.bin", 6 * MiB + 5, rng)
        total += self.write_file("late-small.bin", 1000, rng)
        h.check(self.bucket_blocks() == before, "new blocks are staged, not uploaded",
                str(set(self.bucket_blocks()) ^ set(before)))
        h.check(sum(self.staged_files().values()) == total, "they are in the staging directory")
        r = self.h.umount(self.mnt)
        h.require(r.returncode == 0, "umount with staged blocks", r.describe())
        new = {k: v for k, v in self.bucket_blocks().items() if k not in before}
        h.check(len(new) == 3 and sum(new.values()) == total,
                "umount returned after uploading them (3 blocks)",
                f"{len(new)} new objects, {sum(new.values())} bytes\n{self.h.log_tail()}")
        h.check(not self.staged_files(), "the staging directory is empty after umount")
        h.check("all staged objects uploaded" in self.h.log_tail(60), "the log reports the upload")
        # Without writeback, the data comes from the bucket alone.
        self.mount()
        self.verify_files("mounted without writeback")
        r = self.h.umount(self.mnt)
        h.check(r.returncode == 0, "final umount", r.describe())

    def run(self):
        h = self.h
        r = h.run("format", "--trash-days", "0", "--bucket", self.bucket, self.url, VOLUME)
        h.require(r.returncode == 0, "format", r.describe())
        self.bad_flags()
        self.staged_then_killed()
        self.remount_uploads()
        self.clean_unmount_uploads()


def main():
    h = Harness("writeback", sys.argv)
    with h:
        Writeback(h).run()
    sys.exit(h.exit_code())


if __name__ == "__main__":
    main()
