#!/usr/bin/env python3
"""Metadata operations through a Tessera mount, side by side with the FUSE
floor (an in-memory FUSE file system), tmpfs and rclone mount of a local
directory, in one run.

Usage: bench/metadata.py [-n FILES] [--tools DIR] [--threads 1,4]

Needs root (mounts), the build (build/tessera), and the measuring tools
fusefloor.cc and mdbench.cc (default: ../shared/tools beside the repo).
rclone is installed from Debian when missing.
"""
import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ["create", "stat", "open_close", "readdir", "rename", "unlink", "mkdir", "rmdir"]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def wait_mounted(path, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.ismount(path):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not get mounted")


def build_tools(tools, out):
    os.makedirs(out, exist_ok=True)
    fuse = run(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.split()
    run(["g++", "-O2", "-std=c++20", os.path.join(tools, "fusefloor.cc"), *fuse, "-o",
         os.path.join(out, "fusefloor")])
    run(["g++", "-O2", "-std=c++20", "-pthread", os.path.join(tools, "mdbench.cc"), "-o",
         os.path.join(out, "mdbench")])


def mdbench(binary, directory, n, threads):
    res = subprocess.run([binary, directory, "-n", str(n), "-t", str(threads)], text=True,
                         capture_output=True, timeout=3600)
    figures = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in PHASES:
            figures[parts[0]] = float(parts[1])
        if parts and parts[0] == "errors" and parts[1] != "0":
            figures["errors"] = int(parts[1])
    if res.returncode != 0 and "errors" not in figures:
        raise RuntimeError(f"mdbench failed on {directory}: {res.stderr.strip()}")
    return figures


class Target:
    """A file system to measure: set up, give a directory, tear down."""

    def __init__(self, name):
        self.name = name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="files per thread (default 5000)")
    ap.add_argument("--threads", default="1,4", help="thread counts (default 1,4)")
    ap.add_argument("--tools", default=os.path.join(os.path.dirname(REPO), "shared", "tools"))
    ap.add_argument("--only", default="", help="comma list of targets to run")
    args = ap.parse_args()
    tessera = os.path.join(REPO, "build", "tessera")
    if not os.path.exists(tessera):
        sys.exit("bench: build/tessera is missing: run scripts/build.sh first")
    if not os.path.exists(os.path.join(args.tools, "mdbench.cc")):
        sys.exit(f"bench: measuring tools not found in {args.tools} (use --tools DIR)")
    if shutil.which("rclone") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "rclone"], check=True,
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    work = tempfile.mkdtemp(prefix="tessera-bench-")
    tools_bin = os.path.join(work, "tools")
    build_tools(args.tools, tools_bin)
    threads = [int(t) for t in args.threads.split(",")]
    version = run([tessera, "version"]).stdout.strip()

    print("tessera metadata benchmark")
    print(f"  version:   {version}")
    print(f"  date:      {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"  machine:   {os.cpu_count()} cores, kernel {platform.release()}")
    print(f"  tessera:   sqlite3 metadata on local disk, file store on local disk, 4 MiB blocks, default mount options")
    print(f"  rclone:    rclone mount of a local directory, --vfs-cache-mode full")
    print(f"  workload:  mdbench -n {args.n} (files per thread), threads {threads}, one directory per thread")
    print(f"  command:   {' '.join(sys.argv)}")
    print(flush=True)

    results = {}  # (target, threads) -> figures
    procs = []
    mounts = []

    def mount_point(name):
        p = os.path.join(work, name)
        os.makedirs(p, exist_ok=True)
        return p

    try:
        targets = []
        # The FUSE floor.
        mp = mount_point("fusefloor")
        procs.append(subprocess.Popen([os.path.join(tools_bin, "fusefloor"), mp],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_mounted(mp)
        mounts.append(("fusermount3", mp))
        targets.append(("fusefloor", mp))
        # tmpfs.
        mp = mount_point("tmpfs")
        run(["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", mp])
        mounts.append(("umount", mp))
        targets.append(("tmpfs", mp))
        # rclone mount of a local directory.
        mp = mount_point("rclone")
        src = mount_point("rclone-src")
        procs.append(subprocess.Popen(
            ["rclone", "mount", src, mp, "--vfs-cache-mode", "full", "--cache-dir",
             os.path.join(work, "rclone-cache"), "--config", "/dev/null"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_mounted(mp)
        mounts.append(("fusermount3", mp))
        targets.append(("rclone", mp))
        # Tessera on the embedded engine.
        mp = mount_point("tessera")
        meta = f"sqlite3://{work}/tessera.db"
        run([tessera, "format", "--trash-days", "0", "--bucket", os.path.join(work, "bucket"),
             meta, "bench"])
        run([tessera, "mount", "-d", "--log", os.path.join(work, "tessera.log"), meta, mp])
        mounts.append(("tessera", mp))
        targets.append(("tessera", mp))

        only = set(filter(None, args.only.split(",")))
        for name, path in targets:
            if only and name not in only:
                continue
            for t in threads:
                print(f"running {name} with {t} thread(s)...", file=sys.stderr, flush=True)
                results[(name, t)] = mdbench(os.path.join(tools_bin, "mdbench"), path, args.n, t)
    finally:
        for kind, mp in reversed(mounts):
            if kind == "tessera":
                subprocess.run([tessera, "umount", mp], capture_output=True)
            elif kind == "umount":
                subprocess.run(["umount", mp], capture_output=True)
            else:
                subprocess.run(["fusermount3", "-u", "-z", mp], capture_output=True)
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    names = []
    for name, _ in targets:
        if any(k[0] == name for k in results):
            names.append(name)
    for t in threads:
        print(f"ops/s, {t} thread(s), {args.n * t} files" + (" in " + str(t) + " directories" if t > 1 else ""))
        header = f"{'phase':<11}" + "".join(f"{n:>12}" for n in names)
        if "tessera" in names:
            header += f"{'vs floor':>10}{'vs rclone':>11}"
        print(header)
        for phase in PHASES:
            row = f"{phase:<11}"
            for n in names:
                v = results.get((n, t), {}).get(phase)
                row += f"{v:>12,.0f}" if v is not None else f"{'-':>12}"
            if "tessera" in names:
                ts = results.get(("tessera", t), {}).get(phase)
                fl = results.get(("fusefloor", t), {}).get(phase)
                rc = results.get(("rclone", t), {}).get(phase)
                row += f"{ts / fl:>10.2f}" if ts and fl else f"{'-':>10}"
                row += f"{ts / rc:>11.2f}" if ts and rc else f"{'-':>11}"
            print(row)
        errs = {n: results.get((n, t), {}).get("errors") for n in names}
        errs = {k: v for k, v in errs.items() if v}
        if errs:
            print(f"errors reported by mdbench: {errs}")
        print()


if __name__ == "__main__":
    main()
