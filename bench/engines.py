#!/usr/bin/env python3
"""Metadata operations through Tessera mounts on each metadata engine, with
1, 2 and 4 mounts of one volume at once, in one run; then each engine's own
per-operation latency (`tessera mdtest`).

Usage: bench/engines.py [-n FILES] [--rounds R]
                        [--engines sqlite,redis,postgres,postgres-async,etcd]
                        [--mounts 1,2,4] [--tools DIR]

Every engine's server is private, on 127.0.0.1 (started as the integration
tests do: Redis with an append-only file fsynced every second, PostgreSQL
with durable commits, etcd as a three-member cluster); the bucket is a
local directory, so the figures are the metadata path. `postgres-async` is
the same PostgreSQL server with `synchronous_commit=off` in the volume's
URL: commits no longer wait for their WAL fsync, the durability of the
SQLite and Redis setups (neither fsyncs each commit). With M mounts, M
copies of mdbench (one per mount, each in its own directory, started
together) run the same phases, and the table shows the sum of their rates;
with R rounds, the median of the rounds.

Needs root (mounts), the build (build/tessera) and the measuring tool
mdbench.cc (default: ../shared/tools beside the repo).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchlib import (DEFAULT_TOOLS, REPO, TESSERA, Mounts, build_tools, interrupt_on_signals,
                      machine_rows, print_header, require_tessera, tessera_version)

sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from metadata_servers import metadata_server  # noqa: E402

PHASES = ["create", "stat", "open_close", "readdir", "rename", "unlink", "mkdir", "rmdir"]
ENGINES = "sqlite,redis,postgres,postgres-async,etcd"
# Engine variants: (server to start, what to add to its URL).
VARIANTS = {"postgres-async": ("postgres", "&options=-c%20synchronous_commit%3Doff")}


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def run_mdbench(binary, dirs, n):
    """mdbench in every directory at once; the sum of the rates per phase."""
    procs = [subprocess.Popen([binary, d, "-n", str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for d in dirs]
    total = {}
    for p in procs:
        out, err = p.communicate(timeout=3600)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in PHASES:
                total[parts[0]] = total.get(parts[0], 0.0) + float(parts[1])
            if parts and parts[0] == "errors" and parts[1] != "0":
                raise RuntimeError(f"mdbench reported {parts[1]} errors in {dirs}")
        if p.returncode != 0:
            raise RuntimeError(f"mdbench failed in {dirs}: {err.strip()}")
    return total


def run_mdtest(url):
    r = subprocess.run([TESSERA, "mdtest", url, "--files", "1000", "--json"], text=True,
                       capture_output=True, timeout=3600)
    if r.returncode != 0:
        print(f"  (tessera mdtest failed: {r.stderr.strip()})", flush=True)
        return None
    return json.loads(r.stdout)


def fmt_rate(v):
    return "-" if v is None else f"{v:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="files per mount (default 2000)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs per engine and mount count; the table shows medians (default 3)")
    ap.add_argument("--engines", default=ENGINES)
    ap.add_argument("--mounts", default="1,2,4",
                    help="mount counts (default 1,2,4; empty: engine latency only)")
    ap.add_argument("--tools", default=DEFAULT_TOOLS)
    args = ap.parse_args()
    require_tessera()
    interrupt_on_signals()
    engines = args.engines.split(",")
    if args.rounds < 1:
        sys.exit("engines.py: --rounds must be at least 1")
    counts = [int(c) for c in args.mounts.split(",") if c]  # "" : engine latency only
    work = tempfile.mkdtemp(prefix="tessera-bench-")
    mounts = Mounts(work)
    results = {}   # (engine, mounts) -> {phase: ops/s}
    latency = {}   # engine -> mdtest JSON
    try:
        tools_bin = os.path.join(work, "tools")
        build_tools(args.tools, tools_bin, ("mdbench",))
        mdbench = os.path.join(tools_bin, "mdbench")
        print_header("tessera metadata engines benchmark", [
            ("version", tessera_version()),
            *machine_rows(),
            ("workload", f"mdbench -n {args.n} on each mount at once; the sum of the rates, "
                         f"median of {args.rounds} rounds"),
            ("mounts", "tessera mount -d (defaults: 1 s attribute/entry cache), local-directory "
                       "bucket"),
        ])
        for engine in engines:
            kind, url_extra = VARIANTS.get(engine, (engine, ""))
            with metadata_server(kind) as server:
                url = server.url + url_extra
                bucket = mounts.dir(f"bucket-{engine}")
                mounts.tessera_format(url, bucket)
                for count in counts:
                    live = []
                    for i in range(count):
                        mp = mounts.dir(f"{engine}-{count}-{i}")
                        live.append(mounts.tessera(url, mp, os.path.join(work, f"{engine}.log")))
                    rounds = []
                    for r in range(args.rounds):
                        # mdbench works in a fresh directory of its own under each mount.
                        dirs = [os.path.join(m.path, f"mount{i}-round{r}")
                                for i, m in enumerate(live)]
                        for d in dirs:
                            os.mkdir(d)
                        rounds.append(run_mdbench(mdbench, dirs, args.n))
                        for d in dirs:
                            os.rmdir(d)
                    figures = {p: median([f.get(p, 0.0) for f in rounds]) for p in PHASES}
                    results[(engine, count)] = figures
                    print(f"{engine} x{count}: " + ", ".join(
                        f"{p} {figures.get(p, 0):,.0f}" for p in PHASES), flush=True)
                    for m in live:
                        mounts.unmount(m)
                latency[engine] = run_mdtest(url)
    finally:
        mounts.close()

    print()
    print("ops/s through the mounts (sum over the mounts)")
    label_w = 20
    print(f"{'engine':<{label_w}}" + "".join(f"{p:>11}" for p in PHASES))
    for engine in engines:
        for count in counts:
            f = results.get((engine, count), {})
            print(f"{f'{engine} x{count}':<{label_w}}" +
                  "".join(f"{fmt_rate(f.get(p)):>11}" for p in PHASES))
    print()
    base = results.get(("sqlite", 1))
    if base:
        print("one mount, as a share of the embedded engine (SQLite); and scaling with mounts")
        print(f"{'engine':<{label_w}}{'create':>9}{'stat':>9}{'unlink':>9}"
              + "".join(f"{f'x{c}/x1':>9}" for c in counts if c != 1))
        for engine in engines:
            one = results.get((engine, 1), {})
            row = f"{engine:<{label_w}}"
            for p in ("create", "stat", "unlink"):
                row += f"{one.get(p, 0) / base[p] * 100:>8.0f}%" if base.get(p) else f"{'-':>9}"
            for c in counts:
                if c == 1:
                    continue
                many = results.get((engine, c), {})
                # Scaling of the write path: create, rename and unlink together.
                w1 = sum(one.get(p, 0) for p in ("create", "rename", "unlink"))
                wc = sum(many.get(p, 0) for p in ("create", "rename", "unlink"))
                row += f"{wc / w1:>8.2f}x" if w1 else f"{'-':>9}"
            print(row)
        print("(scaling: create+rename+unlink ops/s with N mounts over one mount)")
        print()
    if any(latency.values()):
        print("engine latency without FUSE (tessera mdtest, one thread): mean ms per operation")
        ops = ["lookup", "getattr", "create", "readdir"]
        print(f"{'engine':<{label_w}}" + "".join(f"{o:>11}" for o in ops))
        for engine in engines:
            data = latency.get(engine) or {}
            phases = {p.get("name"): p for p in data.get("phases", [])}
            cells = []
            for o in ops:
                p = phases.get(o)
                v = None if p is None else p.get("mean_us")
                cells.append("-" if v is None else f"{v / 1000:.3f}")
            print(f"{engine:<{label_w}}" + "".join(f"{c:>11}" for c in cells))
        print("(readdir: one full listing of a 1,000-entry directory)")


if __name__ == "__main__":
    main()
