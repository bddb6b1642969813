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
import os
import subprocess
import sys
import tempfile

from benchlib import (DEFAULT_TOOLS, Mounts, build_tools, ensure_rclone, interrupt_on_signals,
                      machine_rows, print_header, print_table, require_tessera, tessera_version)

PHASES = ["create", "stat", "open_close", "readdir", "rename", "unlink", "mkdir", "rmdir"]


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="files per thread (default 5000)")
    ap.add_argument("--threads", default="1,4", help="thread counts (default 1,4)")
    ap.add_argument("--tools", default=DEFAULT_TOOLS)
    ap.add_argument("--only", default="", help="comma list of targets to run")
    args = ap.parse_args()
    require_tessera()
    if not os.path.exists(os.path.join(args.tools, "mdbench.cc")):
        sys.exit(f"bench: measuring tools not found in {args.tools} (use --tools DIR)")
    ensure_rclone()
    interrupt_on_signals()
    work = tempfile.mkdtemp(prefix="tessera-bench-")
    mounts = Mounts(work)
    threads = [int(t) for t in args.threads.split(",")]
    results = {}  # (target, threads) -> figures
    targets = []
    try:
        tools_bin = os.path.join(work, "tools")
        build_tools(args.tools, tools_bin, ("fusefloor", "mdbench"))
        print_header("tessera metadata benchmark", [
            ("version", tessera_version()),
            *machine_rows(),
            ("tessera", "sqlite3 metadata on local disk, file store on local disk, 4 MiB blocks, "
                        "default mount options"),
            ("rclone", "rclone mount of a local directory, --vfs-cache-mode full"),
            ("workload", f"mdbench -n {args.n} (files per thread), threads {threads}, "
                         "one directory per thread"),
            ("command", " ".join(sys.argv)),
        ])

        # The FUSE floor.
        mp = mounts.dir("fusefloor")
        mounts.fusefloor(os.path.join(tools_bin, "fusefloor"), mp)
        targets.append(("fusefloor", mp))
        # tmpfs.
        mp = mounts.dir("tmpfs")
        mounts.tmpfs(mp)
        targets.append(("tmpfs", mp))
        # rclone mount of a local directory.
        mp = mounts.dir("rclone")
        mounts.rclone(mounts.dir("rclone-src"), mp, os.path.join(work, "rclone-cache"))
        targets.append(("rclone", mp))
        # Tessera on the embedded engine.
        mp = mounts.dir("tessera")
        meta = f"sqlite3://{work}/tessera.db"
        mounts.tessera_format(meta, os.path.join(work, "bucket"))
        mounts.tessera(meta, mp, os.path.join(work, "tessera.log"))
        targets.append(("tessera", mp))

        only = set(filter(None, args.only.split(",")))
        for name, path in targets:
            if only and name not in only:
                continue
            for t in threads:
                print(f"running {name} with {t} thread(s)...", file=sys.stderr, flush=True)
                results[(name, t)] = mdbench(os.path.join(tools_bin, "mdbench"), path, args.n, t)
    finally:
        mounts.close()

    names = []
    for name, _ in targets:
        if any(k[0] == name for k in results):
            names.append(name)
    for t in threads:
        rows = [(phase, {n: results.get((n, t), {}).get(phase) for n in names}) for phase in PHASES]
        print_table(f"ops/s, {t} thread(s), {args.n * t} files" +
                    (" in " + str(t) + " directories" if t > 1 else ""), "phase", names, rows)
        errs = {n: results.get((n, t), {}).get("errors") for n in names}
        errs = {k: v for k, v in errs.items() if v}
        if errs:
            print(f"errors reported by mdbench: {errs}")
        print()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("bench: interrupted; everything it mounted is unmounted and its files removed")
