#!/usr/bin/env python3
"""Tessera: a volume whose blocks live in an S3 bucket (a real moto_server).

Usage: python3 tests/integration/s3_volume.py /path/to/tessera

1. moto_server on a free loopback port, checking signatures and keys of an
   IAM user made for the test; a bucket made with boto3;
2. format refused with one line and exit 1, nothing saved: wrong secret,
   unknown access key, missing bucket, unreachable endpoint, a bad URL,
   no keys at all;
3. format with keys; `tessera status` shows the access key, never the
   secret;
4. mount, write files of 0 B, 1 KiB, 5 MiB and 70 MiB (crossing a chunk),
   read them back; remount with an empty cache directory (so every block
   comes from the bucket), every sha256 right; boto3 lists the bucket: the
   block keys follow <volume>/chunks/<id/1e6>/<id/1e3>/<id>_<index>_<size>,
   hold exactly the files' bytes, and include every key `tessera info`
   names; unmount;
5. a volume whose keys come from the environment (not saved): mounts with
   them, and fails to mount with wrong ones;
6. a volume with --compress zstd and --encrypt-rsa-key (a passphrase-
   protected key made with openssl): files written, remounted with an empty
   cache and read back right; no object holds the plaintext and the text was
   stored compressed; a wrong passphrase refuses the mount in one line;
7. mount refused with one line and exit 1, nothing mounted: bucket deleted,
   access key revoked, endpoint down (moto stopped).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, drop_page_cache, mounted_fstype, sha  # noqa: E402

VOLUME = "s3vol"
BUCKET = "tessera-it"
KiB = 1 << 10
MiB = 1 << 20
BLOCK_KEY = re.compile(r"^" + VOLUME + r"/chunks/(\d+)/(\d+)/(\d+)_(\d+)_(\d+)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """moto_server in auth mode, started and stopped by this test."""

    def __init__(self, h: Harness):
        self.h = h
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
        self.log = open(os.path.join(h.tmp, "moto.log"), "w")
        self.proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto_server did not start on port {self.port} (see {self.log.name})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by pid
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class S3Volume:
    def __init__(self, h: Harness, moto: Moto):
        import boto3  # with AWS_CA_BUNDLE unset (see main)
        self.h = h
        self.moto = moto
        self.boto3 = boto3
        iam = boto3.client("iam", endpoint_url=moto.endpoint, region_name="us-east-1",
                           aws_access_key_id="AKIAINITIAL", aws_secret_access_key="initial")
        # The first three requests are not checked: they make the user.
        iam.create_user(UserName="tessera")
        key = iam.create_access_key(UserName="tessera")["AccessKey"]
        iam.put_user_policy(UserName="tessera", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.iam = self.client("iam")
        self.s3 = self.client("s3")
        self.s3.create_bucket(Bucket=BUCKET)
        self.bucket_url = f"{moto.endpoint}/{BUCKET}"
        self.url = "sqlite3://" + os.path.join(h.tmp, "meta.db")
        self.mnt = os.path.join(h.tmp, "mnt")
        os.mkdir(self.mnt)
        self.files: dict[str, str] = {}  # name -> sha256
        self.sizes: dict[str, int] = {}

    def client(self, service: str):
        return self.boto3.client(service, endpoint_url=self.moto.endpoint, region_name="us-east-1",
                                 aws_access_key_id=self.key_id,
                                 aws_secret_access_key=self.secret)

    def keys(self, *extra: str) -> list[str]:
        return ["--access-key", self.key_id, "--secret-key", self.secret, *extra]

    def one_line_failure(self, r, words: list[str], what: str, command: str):
        err = r.stderr.strip()
        if self.h.check(r.returncode == 1 and "\n" not in err and err.startswith(f"tessera {command}:")
                        and all(w in err for w in words), what, r.describe()):
            print(f"       {err}")

    def bucket_objects(self, bucket: str = BUCKET) -> dict[str, int]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = o["Size"]
        return out

    # ---- 2. format refusals ---------------------------------------------------

    def format_refusals(self):
        h = self.h
        url = "sqlite3://" + os.path.join(h.tmp, "refused.db")

        def fmt(*args):
            return h.run("format", "--storage", "s3", *args, url, VOLUME, timeout=60)

        r = fmt("--bucket", self.bucket_url, "--access-key", self.key_id, "--secret-key", "wrong")
        self.one_line_failure(r, ["SignatureDoesNotMatch", BUCKET], "format with a wrong secret", "format")
        r = fmt("--bucket", self.bucket_url, "--access-key", "AKIANOSUCHKEY0000000",
                "--secret-key", self.secret)
        self.one_line_failure(r, ["InvalidAccessKeyId"], "format with an unknown access key", "format")
        r = fmt("--bucket", f"{self.moto.endpoint}/no-such-bucket", *self.keys())
        self.one_line_failure(r, ["bucket 'no-such-bucket' does not exist"],
                              "format with a missing bucket", "format")
        dead = free_port()
        r = fmt("--bucket", f"http://127.0.0.1:{dead}/{BUCKET}", *self.keys())
        self.one_line_failure(r, [f"127.0.0.1:{dead}", "tried"], "format with an unreachable endpoint",
                              "format")
        h.check(r.seconds < 15, f"an unreachable endpoint is given up quickly ({r.seconds:.1f}s)")
        r = fmt("--bucket", "ftp://127.0.0.1/bucket", *self.keys())
        self.one_line_failure(r, ["invalid S3 bucket URL"], "format with a bad URL", "format")
        r = fmt("--bucket", self.bucket_url)
        self.one_line_failure(r, ["--access-key"], "format without any keys", "format")
        r = fmt("--bucket", self.bucket_url, "--access-key", self.key_id)
        self.one_line_failure(r, ["together"], "format with an access key and no secret", "format")
        r = h.run("format", "--bucket", os.path.join(h.tmp, "dir"), "--secret-key", "x", url, VOLUME)
        self.one_line_failure(r, ["--storage s3 only"], "S3 options refused for file storage", "format")
        r = h.run("status", url)
        h.check(r.returncode != 0, "nothing was saved by the refused formats", r.describe())
        h.check(self.bucket_objects() == {}, "refused formats left no object in the bucket")

    # ---- 3, 4. format, mount, files, bucket layout -------------------------

    def format_and_status(self):
        h = self.h
        r = h.run("format", "--storage", "s3", "--bucket", self.bucket_url + "/", *self.keys(),
                  self.url, VOLUME, timeout=60)
        h.require(r.returncode == 0, "format on S3", r.describe())
        r, data = h.status(self.url)
        h.require(data is not None, "status prints JSON", r.describe())
        setting = data["setting"]
        h.check(setting["storage"] == "s3" and setting["bucket"] == self.bucket_url,
                "status: storage s3, bucket URL without the trailing '/'", json.dumps(setting))
        h.check(setting.get("access_key") == self.key_id, "status shows the access key",
                json.dumps(setting))
        h.check(setting.get("secret_key") == "removed" and self.secret not in r.stdout,
                "status never shows the secret key", r.stdout)
        h.check(self.bucket_objects() == {}, "format's probe object is gone")

    def mount(self, cache: str, *extra: str):
        r = self.h.mount(self.url, self.mnt, "--cache-dir", os.path.join(self.h.tmp, cache), *extra)
        self.h.require(r.returncode == 0, f"mount (cache {cache})", r.describe() + "\n" + self.h.log_tail())

    def umount(self):
        r = self.h.umount(self.mnt)
        self.h.require(r.returncode == 0 and mounted_fstype(self.mnt) is None, "umount", r.describe())

    def write_files(self):
        rnd = random.Random(42)
        for name, size in (("empty", 0), ("one-k", KiB), ("five-m", 5 * MiB),
                           ("dir/seventy-m", 70 * MiB)):
            path = os.path.join(self.mnt, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            data = rnd.randbytes(size)
            t = time.monotonic()
            with open(path, "wb") as f:
                for off in range(0, size, MiB):
                    f.write(data[off:off + MiB])
            secs = time.monotonic() - t
            self.files[name] = hashlib.sha256(data).hexdigest()
            self.sizes[name] = size
            if size >= MiB:
                self.h.progress(f"wrote {name} ({size >> 20} MiB) in {secs:.2f}s")

    def verify_files(self, what: str):
        drop_page_cache()
        bad = []
        for name, digest in self.files.items():
            path = os.path.join(self.mnt, name)
            t = time.monotonic()
            got = sha(path)
            if self.sizes[name] >= MiB:
                self.h.progress(f"read {name} in {time.monotonic() - t:.2f}s")
            if got != digest or os.path.getsize(path) != self.sizes[name]:
                bad.append(name)
        self.h.check(not bad, f"{what}: every file reads back with its sha256", f"bad: {bad}")

    def check_bucket_layout(self):
        h = self.h
        objects = self.bucket_objects()
        blocks = {k: v for k, v in objects.items() if BLOCK_KEY.match(k)}
        h.check(blocks and len(blocks) == len(objects), "every object in the bucket is a block key",
                f"{sorted(objects)[:10]}")
        layout_ok = True
        for key, size in blocks.items():
            a, b, sid, _, bsize = (int(x) for x in BLOCK_KEY.match(key).groups())
            layout_ok &= a == sid // 1000000 and b == sid // 1000 and bsize == size and size > 0
        h.check(layout_ok, "block keys: <id/1e6>/<id/1e3>/<id>_<index>_<size>, size = object size")
        h.check(sum(blocks.values()) == sum(self.sizes.values()),
                f"the blocks hold exactly the files' bytes ({sum(blocks.values())} bytes)")
        r = h.run("info", "--json", os.path.join(self.mnt, "dir/seventy-m"))
        named = set(re.findall(r'"(' + VOLUME + r'/chunks/[0-9/_]+)"', r.stdout))
        h.check(r.returncode == 0 and len(named) >= 18 and named <= set(blocks),
                f"the {len(named)} block keys `tessera info` names for the 70 MiB file are in the bucket",
                r.describe()[:2000])

    # ---- 5. keys from the environment ----------------------------------------

    def env_keys(self):
        h = self.h
        url = "sqlite3://" + os.path.join(h.tmp, "envkeys.db")
        self.s3.create_bucket(Bucket="tessera-env")
        os.environ["AWS_ACCESS_KEY_ID"] = self.key_id
        os.environ["AWS_SECRET_ACCESS_KEY"] = self.secret
        try:
            r = h.run("format", "--storage", "s3", "--bucket", f"{self.moto.endpoint}/tessera-env",
                      url, "envvol", timeout=60)
            h.require(r.returncode == 0, "format with keys from the environment", r.describe())
            r, data = h.status(url)
            h.check(data is not None and "access_key" not in data["setting"]
                    and "secret_key" not in data["setting"],
                    "keys from the environment are not saved", r.stdout)
            mnt = os.path.join(h.tmp, "mnt-env")
            os.mkdir(mnt)
            r = h.mount(url, mnt, "--cache-dir", os.path.join(h.tmp, "cache-env"))
            h.check(r.returncode == 0, "mount with keys from the environment",
                    r.describe() + "\n" + h.log_tail())
            if r.returncode == 0:
                with open(os.path.join(mnt, "f"), "wb") as f:
                    f.write(b"from the environment")
                r = h.umount(mnt)
                h.check(r.returncode == 0, "umount", r.describe())
                h.check(any(k.startswith("envvol/chunks/") for k in self.bucket_objects("tessera-env")),
                        "the file's block is in its bucket")
            os.environ["AWS_SECRET_ACCESS_KEY"] = "wrong"
            r = h.mount(url, mnt, "--cache-dir", os.path.join(h.tmp, "cache-env"))
            self.one_line_failure(r, ["SignatureDoesNotMatch"], "mount with a wrong secret in the "
                                  "environment fails", "mount")
            h.check(mounted_fstype(mnt) is None, "nothing is mounted")
        finally:
            os.environ.pop("AWS_ACCESS_KEY_ID", None)
            os.environ.pop("AWS_SECRET_ACCESS_KEY", None)

    # ---- 5b. compressed and encrypted, on S3 ------------------------------------

    def sealed_volume(self):
        """zstd + AES-256-GCM blocks in a bucket: right bytes after a remount,
        no plaintext in any object, a wrong passphrase refused."""
        h = self.h
        phrase = b"the quick brown tessera jumps over the lazy bucket "
        passphrase = "s3 volume passphrase"
        key = os.path.join(h.tmp, "sealed.pem")
        r = subprocess.run(["openssl", "genrsa", "-aes256", "-passout", "pass:" + passphrase,
                            "-out", key, "2048"], capture_output=True, text=True)
        h.require(r.returncode == 0, "openssl makes a passphrase-protected RSA key", r.stderr)
        self.s3.create_bucket(Bucket="tessera-sealed")
        url = "sqlite3://" + os.path.join(h.tmp, "sealed.db")
        mnt = os.path.join(h.tmp, "mnt-sealed")
        os.mkdir(mnt)
        os.environ["TESSERA_RSA_PASSPHRASE"] = passphrase
        try:
            r = h.run("format", "--storage", "s3", "--bucket", f"{self.moto.endpoint}/tessera-sealed",
                      *self.keys(), "--compress", "zstd", "--encrypt-rsa-key", key, url, "sealedvol",
                      timeout=60)
            h.require(r.returncode == 0, "format on S3 with --compress zstd --encrypt-rsa-key",
                      r.describe())
            r = h.mount(url, mnt, "--cache-dir", os.path.join(h.tmp, "cache-sealed1"))
            h.require(r.returncode == 0, "mount the sealed volume", r.describe() + "\n" + h.log_tail())
            rnd = random.Random(7)
            files = {"text": phrase * 100000,  # 5 MiB of text: compresses well
                     "random": rnd.randbytes(6 * MiB), "small": phrase}
            for name, data in files.items():
                with open(os.path.join(mnt, name), "wb") as f:
                    f.write(data)
            r = h.umount(mnt)
            h.require(r.returncode == 0, "umount", r.describe())
            # An empty cache: every block comes back from the bucket.
            r = h.mount(url, mnt, "--cache-dir", os.path.join(h.tmp, "cache-sealed2"))
            h.require(r.returncode == 0, "remount the sealed volume", r.describe() + "\n" + h.log_tail())
            for name, data in files.items():
                with open(os.path.join(mnt, name), "rb") as f:
                    h.check(f.read() == data, f"sealed volume after a remount: {name} reads right")
            r = h.umount(mnt)
            h.require(r.returncode == 0, "umount", r.describe())
            objects = self.bucket_objects("tessera-sealed")
            stored = 0
            leaked = []
            for k in objects:
                body = self.s3.get_object(Bucket="tessera-sealed", Key=k)["Body"].read()
                stored += len(body)
                if phrase[:24] in body:
                    leaked.append(k)
            h.check(len(objects) > 0 and not leaked, "no object in the bucket holds the plaintext",
                    f"{len(objects)} objects, plaintext in {leaked}")
            h.check(stored < 6 * MiB + MiB, "the text was compressed before it was stored",
                    f"{stored} bytes stored for {sum(len(d) for d in files.values())}")
            os.environ["TESSERA_RSA_PASSPHRASE"] = "wrong passphrase"
            r = h.mount(url, mnt, "--cache-dir", os.path.join(h.tmp, "cache-sealed3"))
            self.one_line_failure(r, ["passphrase"], "mount with a wrong passphrase fails", "mount")
            h.check(mounted_fstype(mnt) is None, "nothing is mounted")
        finally:
            os.environ.pop("TESSERA_RSA_PASSPHRASE", None)

    # ---- 6. mount refusals ----------------------------------------------------

    def mount_refusals(self):
        h = self.h
        # A volume whose bucket is then deleted.
        self.s3.create_bucket(Bucket="tessera-gone")
        gone = "sqlite3://" + os.path.join(h.tmp, "gone.db")
        r = h.run("format", "--storage", "s3", "--bucket", f"{self.moto.endpoint}/tessera-gone",
                  *self.keys(), gone, "gonevol", timeout=60)
        h.require(r.returncode == 0, "format a second volume", r.describe())
        self.s3.delete_bucket(Bucket="tessera-gone")
        r = h.mount(gone, self.mnt)
        self.one_line_failure(r, ["bucket 'tessera-gone' does not exist"],
                              "mount of a volume whose bucket is gone fails", "mount")
        h.check(mounted_fstype(self.mnt) is None, "nothing is mounted")

        # The saved access key revoked.
        self.iam.delete_access_key(UserName="tessera", AccessKeyId=self.key_id)
        r = h.mount(self.url, self.mnt)
        self.one_line_failure(r, ["InvalidAccessKeyId"], "mount with a revoked access key fails",
                              "mount")
        h.check(mounted_fstype(self.mnt) is None, "nothing is mounted")

        # The endpoint down.
        self.moto.stop()
        r = h.mount(self.url, self.mnt)
        self.one_line_failure(r, [f"127.0.0.1:{self.moto.port}", "tried"],
                              "mount with the endpoint down fails", "mount")
        h.check(r.seconds < 20, f"and gives up quickly ({r.seconds:.1f}s)")
        h.check(mounted_fstype(self.mnt) is None, "nothing is mounted")


def main():
    h = Harness("s3_volume", sys.argv)
    # boto3 and awscli trip over the CA bundle this environment sets; the
    # tessera binary honours it (and talks plain HTTP here anyway).
    os.environ.pop("AWS_CA_BUNDLE", None)
    moto = None
    with h:
        try:
            moto = Moto(h)
        except (OSError, RuntimeError) as e:
            h.require(False, "moto_server starts (it comes with Python's moto package)", str(e))
        h.progress(f"moto_server on port {moto.port}")
        try:
            import boto3  # noqa: F401
        except ImportError as e:
            h.require(False, "boto3 is importable (it comes with Python's boto3 package)", str(e))
        v = S3Volume(h, moto)
        v.format_refusals()
        v.format_and_status()
        v.mount("cache1")
        v.write_files()
        v.verify_files("first mount")
        v.umount()
        v.mount("cache2")  # an empty cache: every block comes from the bucket
        v.verify_files("remount with an empty cache")
        v.check_bucket_layout()
        v.umount()
        v.env_keys()
        v.sealed_volume()
        v.mount_refusals()
    if moto is not None:
        moto.stop()
    sys.exit(h.exit_code())


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
