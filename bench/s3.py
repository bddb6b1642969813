#!/usr/bin/env python3
"""Tessera on an S3-compatible store, side by side with s3fs on the same
server, in one run.

Usage: bench/s3.py [--server s3rver|moto] [--big-file-size 256M] [--small-files 500]
                   [--small-file-size 16K] [--threads 1] [--objbench-threads 4]

1. starts an S3 server on 127.0.0.1 (s3rver from npm by default: it serves
   ranged GETs from its files, where moto rebuilds the whole object for
   every range; moto with --server moto) and makes two buckets;
2. `tessera objbench` against that server and against a local directory;
3. `tessera bench` (the same phases and sizes) on a Tessera volume stored in
   one bucket (SQLite metadata), mounted with default options and then with
   --writeback (close returns once blocks are staged on the local disk), and
   on s3fs mounted on the other bucket; a table of all three with Tessera's
   ratios to s3fs.

Targets: Tessera >= 10 x s3fs on small-file writes and on stat, and >= s3fs
on big-file throughput.

Needs root (mounts), the build (build/tessera), s3fs (installed from Debian
when missing) and, for s3rver, npm (s3rver is installed under the work
directory when missing). Python 3 standard library plus boto3 (preinstalled).
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

KEY, SECRET = "S3RVER", "S3RVER"  # what s3rver accepts; moto takes anything
PHASES = ["write big file", "read big file", "write small files", "read small files",
          "stat small files"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the S3 server did not listen on port {port}")


def start_server(kind, work):
    port = free_port()
    if kind == "moto":
        cmd = ["moto_server", "-H", "127.0.0.1", "-p", str(port)]
    else:
        prefix = os.path.join(work, "npm")
        binary = os.path.join(prefix, "node_modules", ".bin", "s3rver")
        if not os.path.exists(binary):
            subprocess.run(["npm", "install", "--silent", "--prefix", prefix, "s3rver"], check=True,
                           capture_output=True)
        data = os.path.join(work, "s3rver-data")
        os.makedirs(data, exist_ok=True)
        cmd = [binary, "-d", data, "-a", "127.0.0.1", "-p", str(port), "--silent"]
    # s3rver makes its list continuation tokens with a cipher that OpenSSL 3
    # keeps in its legacy provider; without it every listing fails.
    env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    wait_port(port, proc)
    return proc, port


def make_buckets(port, names):
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    os.environ.pop("AWS_CA_BUNDLE", None)
    import boto3
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY,
                      aws_secret_access_key=SECRET, region_name="us-east-1")
    for n in names:
        s3.create_bucket(Bucket=n)


def parse_bench(text):
    """{phase: (throughput, ms/op)} from a `tessera bench` table."""
    out = {}
    for line in text.splitlines():
        for phase in PHASES:
            if line.startswith(phase + " "):
                nums = re.findall(r"[\d.]+", line[len(phase):])
                # ops, time, throughput, ms/op
                out[phase] = (float(nums[2]), float(nums[3]))
    return out


def run_bench(tessera, path, args):
    cmd = [tessera, "bench", "--big-file-size", args.big_file_size, "--small-files",
           str(args.small_files), "--small-file-size", args.small_file_size, "--threads",
           str(args.threads), path]
    r = subprocess.run(cmd, text=True, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"tessera bench on {path} failed: {r.stderr.strip()}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=["s3rver", "moto"], default="s3rver")
    ap.add_argument("--big-file-size", default="256M")
    ap.add_argument("--small-files", type=int, default=500)
    ap.add_argument("--small-file-size", default="16K")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--objbench-threads", type=int, default=4)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (mounts)")
    tessera = benchlib.require_tessera()
    if shutil.which("s3fs") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "s3fs"], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    benchlib.interrupt_on_signals()
    work = tempfile.mkdtemp(prefix="tessera-bench-s3-", dir="/tmp")
    server = None
    mounted = []
    try:
        server, port = start_server(args.server, work)
        endpoint = f"http://127.0.0.1:{port}"
        make_buckets(port, ["tessera", "s3fs"])
        s3fs_version = subprocess.run(["s3fs", "--version"], text=True, capture_output=True).stdout.splitlines()[0]
        benchlib.print_header("Tessera on S3 next to s3fs", benchlib.machine_rows() + [
            ("tessera", benchlib.tessera_version()),
            ("server", f"{args.server} on {endpoint} (loopback)"),
            ("s3fs", s3fs_version),
            ("bench", f"tessera bench --big-file-size {args.big_file_size} --small-files "
                      f"{args.small_files} --small-file-size {args.small_file_size} --threads {args.threads}"),
        ])

        # 1. the stores themselves
        local_bucket = os.path.join(work, "local-objects")
        os.makedirs(local_bucket)
        for title, extra in (("objbench, S3 server", ["--storage", "s3", "--bucket", f"{endpoint}/tessera",
                                                       "--access-key", KEY, "--secret-key", SECRET]),
                             ("objbench, local directory", ["--storage", "file", "--bucket", local_bucket])):
            r = subprocess.run([tessera, "objbench", "--threads", str(args.objbench_threads), *extra],
                               text=True, capture_output=True)
            print(f"== {title}")
            print(r.stdout if r.returncode == 0 else f"failed: {r.stderr.strip()}")

        # 2. Tessera on the S3 bucket: default options, then --writeback
        mp_t = os.path.join(work, "tessera-mnt")
        os.makedirs(mp_t)
        meta = "sqlite3://" + os.path.join(work, "meta.db")
        subprocess.run([tessera, "format", "--storage", "s3", "--bucket", f"{endpoint}/tessera",
                        "--access-key", KEY, "--secret-key", SECRET, "--trash-days", "0", meta, "s3bench"],
                       check=True, capture_output=True, text=True)
        outputs = {}
        for variant, extra in (("tessera", []),
                               ("writeback", ["--writeback", "--cache-dir", os.path.join(work, "cache")])):
            subprocess.run([tessera, "mount", "-d", "--log", os.path.join(work, "tessera.log"), *extra,
                            meta, mp_t], check=True, capture_output=True, text=True)
            mounted.append(("tessera", mp_t))
            outputs[variant] = run_bench(tessera, mp_t, args)
            subprocess.run([tessera, "umount", mp_t], check=True, capture_output=True)
            mounted.pop()

        # 3. s3fs on the other bucket
        mp_s = os.path.join(work, "s3fs-mnt")
        os.makedirs(mp_s)
        passwd = os.path.join(work, "passwd-s3fs")
        with open(passwd, "w") as f:
            f.write(f"{KEY}:{SECRET}\n")
        os.chmod(passwd, 0o600)
        subprocess.run(["s3fs", "s3fs", mp_s, "-o", f"url={endpoint}", "-o", "use_path_request_style",
                        "-o", f"passwd_file={passwd}", "-o", "allow_other"], check=True,
                       capture_output=True, text=True)
        mounted.append(("s3fs", mp_s))
        benchlib.wait_mounted(mp_s)
        s3fs_out = run_bench(tessera, mp_s, args)

        t, w, s = (parse_bench(outputs["tessera"]), parse_bench(outputs["writeback"]),
                   parse_bench(s3fs_out))
        for title, out in (("Tessera, default options", outputs["tessera"]),
                           ("Tessera, --writeback", outputs["writeback"]), ("s3fs", s3fs_out)):
            print(f"== tessera bench on {title}")
            print(out)

        def value(table, phase):
            return table.get(phase, (None,))[0]

        print(f"{'phase':<20}{'tessera':>12}{'writeback':>12}{'s3fs':>12}{'vs s3fs':>10}"
              f"{'wb vs s3fs':>12}   unit")
        for phase in PHASES:
            unit = "MiB/s" if "big" in phase else "files/s"
            tv, wv, sv = value(t, phase), value(w, phase), value(s, phase)
            r, rw = benchlib.ratio(tv, sv), benchlib.ratio(wv, sv)
            print(f"{phase:<20}{tv or 0:>12,.1f}{wv or 0:>12,.1f}{sv or 0:>12,.1f}{(r or 0):>10.2f}"
                  f"{(rw or 0):>12.2f}   {unit}")
        for phase, want in (("write small files", 10), ("stat small files", 10),
                            ("write big file", 1), ("read big file", 1)):
            for name, table in (("tessera", t), ("tessera --writeback", w)):
                r = benchlib.ratio(value(table, phase), value(s, phase))
                ok = r is not None and r >= want
                print(f"target {phase}: {name} >= {want} x s3fs ({'met' if ok else 'MISSED'}, {r or 0:.2f})")
    finally:
        for kind, mp in reversed(mounted):
            if kind == "tessera":
                subprocess.run([tessera, "umount", mp], capture_output=True)
            else:
                subprocess.run(["fusermount3", "-u", mp], capture_output=True)
                subprocess.run(["umount", "-l", mp], capture_output=True)
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
