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
    # A zombie is not alive for our purposes, once all its threads are gone:
    # the leader turns zombie first, and the files (and locks) of the
    # process are released only when the last thread exits.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state != "Z":
            return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except (OSError, IndexError):
        return False


def pid_is_tessera(pid: int, binary: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(argv0) == os.path.basename(binary) or argv0 == binary


def drop_page_cache():
    """Writes back and drops the kernel's page cache (root)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def sha(path: str) -> str:
    """The sha256 of a file's content, hex."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


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
        if "--cache-dir" not in extra:  # keep test caches out of the system's
            extra = ("--cache-dir", os.path.join(self.tmp, "cache"), *extra)
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


# ---- POSIX helpers shared by the file system tests ----------------------------
#
# Everything below is opt-in: nothing above calls it.

import ctypes  # noqa: E402
import errno as _errno  # noqa: E402
import json as _json  # noqa: E402
import threading as _threading  # noqa: E402

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
AT_SYMLINK_NOFOLLOW = 0x100


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _raise_errno(what, path=None):
    e = ctypes.get_errno()
    raise OSError(e, os.strerror(e), path) if path is not None else OSError(e, os.strerror(e))


def renameat2(old, new, flags: int):
    """renameat2(2) relative to the current directory; raises OSError."""
    f = _libc.renameat2
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    f.restype = ctypes.c_int
    if f(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        _raise_errno("renameat2", old)


def fallocate(fd: int, mode: int, offset: int, length: int):
    """fallocate(2) with any mode; raises OSError."""
    f = _libc.fallocate
    f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    f.restype = ctypes.c_int
    if f(fd, mode, offset, length) != 0:
        _raise_errno("fallocate")


def utimensat(path, atime: tuple[int, int], mtime: tuple[int, int], flags: int = 0):
    """utimensat(2) with (sec, nsec) pairs, so UTIME_NOW / UTIME_OMIT can be passed."""
    f = _libc.utimensat
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
    f.restype = ctypes.c_int
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    if f(AT_FDCWD, os.fsencode(path), times, flags) != 0:
        _raise_errno("utimensat", path)


def errno_of(fn, *args, **kwargs) -> int:
    """0 when fn(*args) succeeds, else the errno of the OSError it raised."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return e.errno or -1
    return 0


def errno_name(n) -> str:
    if n is None:
        return "None"
    if isinstance(n, (tuple, list, set, frozenset)):
        return "/".join(errno_name(x) for x in n)
    return "success" if n == 0 else _errno.errorcode.get(n, str(n))


def tree_bytes(root: str) -> tuple[int, set[str]]:
    """(total size, set of relative paths) of the regular files under root."""
    total, keys = 0, set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            p = os.path.join(dirpath, name)
            try:
                total += os.lstat(p).st_size
            except FileNotFoundError:  # deleted under us by a background job
                continue
            keys.add(os.path.relpath(p, root))
    return total, keys


# A tiny interpreter run as another user: a list of [op, args...] in, one
# ["ok", value] or ["err", errno] per op out, as JSON on the last stdout line.
_AS_USER_CHILD = r'''
import json, os, sys
out = []
for op in json.loads(sys.argv[1]):
    name, a = op[0], op[1:]
    try:
        r = None
        if name == "umask": os.umask(a[0])
        elif name == "read":
            with open(a[0], "rb") as f: r = f.read().hex()
        elif name == "write":        # path, hex bytes, offset or None for the end
            fd = os.open(a[0], os.O_WRONLY)
            try:
                if a[2] is None: os.lseek(fd, 0, os.SEEK_END); os.write(fd, bytes.fromhex(a[1]))
                else: os.pwrite(fd, bytes.fromhex(a[1]), a[2])
            finally: os.close(fd)
        elif name == "create":
            os.close(os.open(a[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, a[1]))
        elif name == "truncate": os.truncate(a[0], a[1])
        elif name == "mkdir": os.mkdir(a[0], a[1])
        elif name == "rmdir": os.rmdir(a[0])
        elif name == "unlink": os.unlink(a[0])
        elif name == "rename": os.rename(a[0], a[1])
        elif name == "chmod": os.chmod(a[0], a[1])
        elif name == "chown": os.chown(a[0], a[1], a[2])
        elif name == "utime":
            if a[1] is None: os.utime(a[0])
            else: os.utime(a[0], ns=tuple(a[1]))
        elif name == "access": r = os.access(a[0], a[1])
        elif name == "listdir": r = sorted(os.listdir(a[0]))
        elif name == "stat":
            st = os.lstat(a[0]); r = [st.st_mode, st.st_uid, st.st_gid, st.st_size]
        else: raise ValueError("unknown op " + name)
        out.append(["ok", r])
    except OSError as e:
        out.append(["err", e.errno])
print(json.dumps(out))
'''


def _usable_by_others(path: str) -> bool:
    """Whether a user with no special rights can execute `path`."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & 0o001:
            return False
        d = os.path.dirname(path)
        while True:
            if not os.stat(d).st_mode & 0o001:
                return False
            if d == "/":
                return True
            d = os.path.dirname(d)
    except OSError:
        return False


def python_for_other_users() -> str:
    """A Python 3 interpreter that other users can run (sys.executable may live
    under /root)."""
    for c in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if c and _usable_by_others(c):
            return c
    raise RuntimeError("no python3 interpreter is executable by other users")


def run_as_user(uid: int, gid: int, ops: list, timeout: float = 20.0) -> list:
    """Runs ops (see _AS_USER_CHILD) in a child process with that uid/gid and no
    supplementary groups; returns one [\"ok\", value] or [\"err\", errno] per op.
    Raises RuntimeError if the child does not answer."""
    p = subprocess.run([python_for_other_users(), "-S", "-c", _AS_USER_CHILD, _json.dumps(ops)],
                       user=uid, group=gid, extra_groups=[], cwd="/", stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"child as uid {uid} failed: rc={p.returncode} stderr={p.stderr!r}")
    return _json.loads(lines[-1])


def start_watchdog(h: "Harness", seconds: float, grace: float = 20.0):
    """If the test is still running after `seconds`, count a failure and kill the
    mount daemons it started: every FUSE request stuck in the kernel then fails,
    so the main thread goes on (its checks fail fast) and cleans up. If it is
    still running `grace` seconds later, SIGTERM this process so that the
    harness cleans up and prints its summary."""
    def fire():
        msg = f"{h.name}: still running after {seconds:.0f}s; killing the mount daemons"
        h.failed += 1
        h.failures.append(msg)
        print(f"FAIL - {msg}")
        for pid in sorted(h.daemons):
            if pid_alive(pid) and pid_is_tessera(pid, h.binary):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(grace)
        print(f"{h.name}: still running {grace:.0f}s after that; sending SIGTERM to itself")
        os.kill(os.getpid(), signal.SIGTERM)
    t = _threading.Thread(target=lambda: (time.sleep(seconds), fire()), daemon=True)
    t.start()
    return t
