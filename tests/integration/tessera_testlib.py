"""Shared helpers for Tessera's integration tests (Python 3.11 standard library only).

A test script does:

    h = Harness("mount_roundtrip", sys.argv)
    with h:                      # installs signal handlers; cleans up on exit
        h.check(cond, "what was checked", "detail shown on failure")
        ...
    sys.exit(h.exit_code())     # printed "N passed, M failed" already

Everything a test creates lives in one temporary directory under /tmp.
Every mount point a test uses is registered, and cleanup unmounts whatever is
still mounted there (tessera umount, then fusermount3 -u -z, then umount -l),
kills the mount daemons the test started (by pid, never by name) and removes
the temporary directory.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

DEFAULT_TIMEOUT = 20.0


def _unescape_mountinfo(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_fstype(path: str) -> str | None:
    """The file system type mounted at `path` (the top mount), or None."""
    path = os.path.normpath(os.path.abspath(path))
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5:
                    continue
                if _unescape_mountinfo(fields[4]) == path:
                    found = right.split()[0] if right.split() else "?"
    except OSError:
        return None
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def pid_is_tessera(pid: int, binary: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(argv0) == os.path.basename(binary) or argv0 == binary


def round_up(n: int, unit: int = 4096) -> int:
    return (n + unit - 1) // unit * unit


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


class Result:
    """What a command did: argv, returncode (None on timeout), stdout, stderr, seconds."""

    def __init__(self, argv, returncode, stdout, stderr, seconds, timed_out):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        self.timed_out = timed_out

    def describe(self) -> str:
        rc = "TIMEOUT" if self.timed_out else self.returncode
        return (f"$ {' '.join(self.argv)}\n  rc={rc} ({self.seconds:.2f}s)\n"
                f"  stdout: {self.stdout!r}\n  stderr: {self.stderr!r}")


class Fatal(Exception):
    """A failure after which the test cannot go on."""


class Harness:
    def __init__(self, name: str, argv: list[str]):
        sys.stdout.reconfigure(line_buffering=True)
        if len(argv) != 2:
            print(f"usage: {argv[0]} /path/to/tessera", file=sys.stderr)
            sys.exit(2)
        self.name = name
        self.binary = os.path.abspath(argv[1])
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            print(f"{name}: {self.binary} is not an executable file", file=sys.stderr)
            sys.exit(2)
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []
        self.tmp = tempfile.mkdtemp(prefix=f"tessera-{name}-", dir="/tmp")
        self.mount_points: list[str] = []
        self.daemons: set[int] = set()
        self.other_mounts: list[str] = []  # non-tessera mounts the test made (tmpfs)
        self.t0 = time.monotonic()
        self._cleaned = False
        self._summary_printed = False
        atexit.register(self.cleanup)
        print(f"== {name}: binary {self.binary}, temp dir {self.tmp}")

    # ---- context: signals, exceptions, summary --------------------------------

    def __enter__(self):
        def on_signal(signum, _frame):
            raise SystemExit(f"{self.name}: interrupted by signal {signum}")
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, on_signal)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, Fatal):
            print(f"stopping: the test cannot go on after: {exc}")  # already counted
        elif exc_type is not None and not issubclass(exc_type, SystemExit):
            self.failed += 1
            msg = f"aborted: {exc_type.__name__}: {exc}"
            self.failures.append(msg)
            print(f"FAIL - {msg}")
            traceback.print_exception(exc_type, exc, tb, file=sys.stdout)
        elif exc_type is not None:
            self.failed += 1
            self.failures.append(str(exc))
            print(f"FAIL - {exc}")
        try:
            self.cleanup()
        except Exception as e:  # cleanup problems are failures too
            self.failed += 1
            self.failures.append(f"cleanup: {e}")
            print(f"FAIL - cleanup: {e}")
        self.print_summary()
        return True  # the exit code says what happened

    def print_summary(self):
        if self._summary_printed:
            return
        self._summary_printed = True
        elapsed = time.monotonic() - self.t0
        if self.failures:
            print(f"-- {self.name}: failures:")
            for f in self.failures:
                print(f"   * {f.splitlines()[0] if f else f}")
        print(f"-- {self.name} took {elapsed:.1f}s")
        print(f"{self.passed} passed, {self.failed} failed")

    def exit_code(self) -> int:
        return 0 if self.failed == 0 and self.passed > 0 else 1

    # ---- checks -------------------------------------------------------------

    def check(self, cond: bool, what: str, detail: str = "", quiet: bool = False) -> bool:
        if cond:
            self.passed += 1
            if not quiet:
                print(f"ok   - {what}")
        else:
            self.failed += 1
            self.failures.append(what)
            print(f"FAIL - {what}")
            if detail:
                for line in str(detail).splitlines():
                    print(f"       {line}")
        return bool(cond)

    def require(self, cond: bool, what: str, detail: str = ""):
        """A check whose failure ends the test."""
        if not self.check(cond, what, detail):
            raise Fatal(what)

    def progress(self, msg: str):
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}")

    # ---- running the binary -------------------------------------------------

    def run(self, *args: str, timeout: float = DEFAULT_TIMEOUT, stdin=subprocess.DEVNULL) -> Result:
        """Runs the binary (in the temp dir, so that stray relative paths land there)."""
        argv = [self.binary, *args]
        t = time.monotonic()
        proc = subprocess.Popen(argv, cwd=self.tmp, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()  # our own child, by pid
            out, err = proc.communicate()
        res = Result(argv, None if timed_out else proc.returncode, out, err,
                     time.monotonic() - t, timed_out)
        # A mount -d that worked says which daemon it started; remember it.
        for m in re.finditer(r"daemon pid (\d+)", out or ""):
            self.daemons.add(int(m.group(1)))
        return res

    def register_mount_point(self, mp: str) -> str:
        mp = os.path.normpath(os.path.abspath(mp))
        if mp not in self.mount_points:
            self.mount_points.append(mp)
        return mp

    def mount(self, meta_url: str, mp: str, *extra: str, timeout: float = 60) -> Result:
        """tessera mount -d (logging into the temp dir); the mount point is cleaned up later."""
        mp = self.register_mount_point(mp)
        log = os.path.join(self.tmp, "mount.log")
        return self.run("mount", "-d", "--log", log, *extra, meta_url, mp, timeout=timeout)

    def umount(self, mp: str, timeout: float = 90) -> Result:
        return self.run("umount", mp, timeout=timeout)

    def status(self, meta_url: str):
        """(Result, parsed JSON or None)."""
        import json
        r = self.run("status", meta_url)
        data = None
        if r.returncode == 0:
            try:
                data = json.loads(r.stdout)
            except ValueError:
                data = None
        return r, data

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(os.path.join(self.tmp, "mount.log"), encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no mount log)"

    # ---- cleanup ------------------------------------------------------------

    def _force_unmount(self, mp: str):
        if mounted_fstype(mp) is None:
            return
        print(f"cleanup: {mp} is still mounted; unmounting")
        if mounted_fstype(mp) == "fuse.tessera":
            try:
                subprocess.run([self.binary, "umount", "--timeout", "20", mp],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                pass
        for cmd in (["fusermount3", "-u", "-z", mp], ["umount", "-l", mp]):
            if mounted_fstype(mp) is None:
                break
            try:
                subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
            except (subprocess.TimeoutExpired, OSError):
                pass

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        problems = []
        for mp in reversed(self.mount_points + self.other_mounts):
            self._force_unmount(mp)
            if mounted_fstype(mp) is not None:
                problems.append(f"{mp} is still mounted")
        # Daemons whose mount is gone finish their shutdown on their own;
        # give them a moment before killing what is left.
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in self.daemons) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in sorted(self.daemons):
            if not pid_alive(pid) or not pid_is_tessera(pid, self.binary):
                continue
            print(f"cleanup: killing leftover daemon pid {pid}")
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if problems:
            # Never rm -rf through a live mount; leave the directory for a human.
            print(f"cleanup: NOT removing {self.tmp}: " + "; ".join(problems))
            raise RuntimeError("; ".join(problems))
        shutil.rmtree(self.tmp, ignore_errors=True)
