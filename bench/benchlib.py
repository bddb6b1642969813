"""Helpers shared by the benchmark scripts in bench/: building the measuring
tools, mounting the targets side by side (fusefloor, tmpfs, rclone, Tessera),
cleaning up whatever was mounted, and printing side-by-side tables.

Python 3 standard library only.
"""
import datetime
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESSERA = os.path.join(REPO, "build", "tessera")
DEFAULT_TOOLS = os.path.join(os.path.dirname(REPO), "shared", "tools")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def wait_mounted(path, timeout=20, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.ismount(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{path}: the mount process exited with status {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not get mounted")


def require_tessera():
    if not os.path.exists(TESSERA):
        sys.exit("bench: build/tessera is missing: run scripts/build.sh first")
    return TESSERA


def tessera_version():
    return run([TESSERA, "version"]).stdout.strip()


def ensure_rclone():
    """Installs rclone from Debian when it is missing."""
    if shutil.which("rclone") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "rclone"], check=True,
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return run(["rclone", "version"]).stdout.splitlines()[0].strip()


def build_tools(tools, out, names=("fusefloor",)):
    """Compiles the measuring tools named (fusefloor, mdbench) from `tools` into `out`."""
    for name in names:
        if not os.path.exists(os.path.join(tools, name + ".cc")):
            sys.exit(f"bench: measuring tools not found in {tools} (use --tools DIR)")
    os.makedirs(out, exist_ok=True)
    if "fusefloor" in names:
        fuse = run(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.split()
        run(["g++", "-O2", "-std=c++20", os.path.join(tools, "fusefloor.cc"), *fuse, "-o",
             os.path.join(out, "fusefloor")])
    if "mdbench" in names:
        run(["g++", "-O2", "-std=c++20", "-pthread", os.path.join(tools, "mdbench.cc"), "-o",
             os.path.join(out, "mdbench")])


def interrupt_on_signals():
    """Makes SIGINT (even when inherited as ignored, as by `cmd &` in a
    script) and SIGTERM raise KeyboardInterrupt, so that `finally` cleans up."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def vm_hwm_kib(pid):
    """Peak resident memory (VmHWM) of a process in KiB, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def drop_caches():
    """Writes back dirty pages and empties the page cache (root only)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


class Mount:
    """One mounted file system: where, how to unmount, the serving process."""

    def __init__(self, kind, path, pid=None, proc=None):
        self.kind = kind  # "fuse", "tessera" or "umount"
        self.path = path
        self.pid = pid
        self.proc = proc


class Mounts:
    """Mounts targets under a work directory and tears them all down, even
    after errors or Ctrl-C (call close() in finally)."""

    def __init__(self, work):
        self.work = work
        self.live = []
        self.counter = 0

    def dir(self, name):
        p = os.path.join(self.work, name)
        os.makedirs(p, exist_ok=True)
        return p

    def _popen(self, cmd):
        # A session of its own: Ctrl-C in the terminal reaches only this
        # script, whose cleanup then unmounts in order.
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def fusefloor(self, binary, mp):
        """The in-memory FUSE floor, in the foreground so its pid is known."""
        proc = self._popen([binary, "-f", mp])
        m = Mount("fuse", mp, proc.pid, proc)
        self.live.append(m)
        wait_mounted(mp, proc=proc)
        return m

    def tmpfs(self, mp, size="4g"):
        run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mp])
        m = Mount("umount", mp)
        self.live.append(m)
        return m

    def rclone(self, src, mp, cache_dir, extra=()):
        proc = self._popen(["rclone", "mount", src, mp, "--vfs-cache-mode", "full", "--cache-dir",
                            cache_dir, "--config", "/dev/null", *extra])
        m = Mount("fuse", mp, proc.pid, proc)
        self.live.append(m)
        wait_mounted(mp, proc=proc)
        return m

    def tessera_format(self, meta, bucket, name="bench"):
        run([TESSERA, "format", "--trash-days", "0", "--bucket", bucket, meta, name])

    def tessera(self, meta, mp, log, options=()):
        out = run([TESSERA, "mount", "-d", "--log", log, *options, meta, mp]).stdout
        match = re.search(r"daemon pid (\d+)", out)
        pid = int(match.group(1)) if match else None
        if pid is None:
            name = mp.replace("%", "%25").replace("/", "%2F")
            with open(f"/run/tessera/{name}.pid") as f:
                pid = int(f.read().split()[0])
        m = Mount("tessera", mp, pid)
        self.live.append(m)
        return m

    def unmount(self, m):
        """Unmounts one target and waits for its process to end."""
        if m in self.live:
            self.live.remove(m)
        if m.kind == "tessera":
            r = subprocess.run([TESSERA, "umount", m.path], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", m.path], capture_output=True)
        elif m.kind == "umount":
            subprocess.run(["umount", m.path], capture_output=True)
        else:
            r = subprocess.run(["fusermount3", "-u", m.path], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", m.path], capture_output=True)
        if m.proc is not None:
            try:
                m.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                m.proc.terminate()
                try:
                    m.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()
        elif m.pid is not None:
            # A daemon that is not our child: wait for it to go, then end it.
            deadline = time.time() + 30
            while time.time() < deadline and os.path.exists(f"/proc/{m.pid}"):
                time.sleep(0.05)
            if os.path.exists(f"/proc/{m.pid}"):
                try:
                    os.kill(m.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self):
        """Unmounts everything still mounted and removes the work directory.
        A second Ctrl-C does not interrupt this."""
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._close()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _close(self):
        for m in reversed(list(self.live)):
            try:
                self.unmount(m)
            except Exception as e:  # keep cleaning up the others
                print(f"bench: cannot unmount {m.path}: {e}", file=sys.stderr)
        # Never recurse into a mount that is somehow still there.
        still = [line.split()[1] for line in open("/proc/mounts")
                 if line.split()[1].startswith(self.work + "/")]
        if still:
            print(f"bench: still mounted, leaving {self.work}: {still}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def print_header(title, rows):
    """The setup header: title, then `label: value` lines, then a blank line."""
    print(title)
    width = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        print(f"  {k + ':':<{width}} {v}")
    print(flush=True)


def machine_rows():
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("date", datetime.datetime.now().isoformat(timespec="seconds")),
        ("machine", f"{os.cpu_count()} cores, kernel {platform.release()}, "
                    f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB RAM"),
        ("load", f"{load} (1, 5, 15 min) at start"),
    ]


def ratio(a, b):
    return a / b if a and b else None


def print_table(title, first, names, rows, fmt="{:,.0f}", ratios=True, width=12):
    """One side-by-side table: a row label, a column per target, and (when
    Tessera is among them) its ratios to the floor and to rclone.
    rows: list of (label, {target: value})."""
    print(title)
    label_w = max([len(first)] + [len(r[0]) for r in rows]) + 1
    header = f"{first:<{label_w}}" + "".join(f"{n:>{width}}" for n in names)
    show_ratios = ratios and "tessera" in names
    if show_ratios:
        header += f"{'vs floor':>10}{'vs rclone':>11}"
    print(header)
    for label, values in rows:
        line = f"{label:<{label_w}}"
        for n in names:
            v = values.get(n)
            line += f"{fmt.format(v):>{width}}" if v is not None else f"{'-':>{width}}"
        if show_ratios:
            ts = values.get("tessera")
            for other, w in (("fusefloor", 10), ("rclone", 11)):
                r = ratio(ts, values.get(other))
                line += f"{r:>{w}.2f}" if r is not None else f"{'-':>{w}}"
        print(line)
