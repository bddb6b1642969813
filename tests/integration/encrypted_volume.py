#!/usr/bin/env python3
"""Tessera: a compressed, encrypted volume through a real FUSE mount.

Usage: python3 tests/integration/encrypted_volume.py /path/to/tessera

1. an RSA key with a passphrase made by the openssl CLI; format with
   --compress zstd --encrypt-rsa-key: refused with one line without the
   passphrase, with a wrong one, with an EC key or a missing file; the
   settings keep the PEM as given (still protected) and the wrapped data
   key, which `tessera status` never prints; re-formats that change the
   compression or the encryption are refused;
2. mount with the passphrase, write text files of a known phrase and random
   files, remount, every sha256 right; no object in the bucket holds the
   phrase or a piece of a random file, every object starts with the
   encryption format byte, and the text compressed before encryption;
   `tessera compact` needs the passphrase too and writes encrypted blocks;
3. mounts with a wrong and with no passphrase: one line, exit 1, nothing
   mounted;
4. one bit flipped in one block object: reading that file fails with EIO,
   its other blocks and every other file still read right, the mount
   stays up;
5. with --writeback, blocks waiting in the staging directory are already
   compressed and encrypted, and read right after their upload;
6. `tessera objbench` on a local directory (with zstd and the RSA key) and
   on the volume prints its table and leaves no object behind; bad
   arguments give one line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tessera_testlib import Harness, drop_page_cache, mounted_fstype, sha  # noqa: E402

VOLUME = "cryptvol"
KiB = 1 << 10
MiB = 1 << 20
BLOCK = 1 * MiB
PASSPHRASE = "correct horse battery staple"
PHRASE = b"Tessera keeps this sentence private: purple elephants dance at midnight.\n"
ENV = "TESSERA_RSA_PASSPHRASE"
ENCRYPTED_FORMAT_BYTE = 0xE1
OPS = ["put", "get", "head", "list", "delete"]


def set_passphrase(value: str | None):
    """The passphrase the binary (and the mount daemons it forks) will see."""
    if value is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = value


def one_line_error(h: Harness, r, what: str, *mentions: str) -> bool:
    lines = r.stderr.strip().splitlines()
    return h.check(r.returncode == 1 and len(lines) == 1 and all(m in r.stderr for m in mentions)
                   and "Traceback" not in r.stderr, what, r.describe())


def objects_under(root: str) -> list[str]:
    out = []
    for d, _, names in os.walk(root):
        out += [os.path.join(d, n) for n in names]
    return sorted(out)


class EncryptedVolume:
    def __init__(self, h: Harness):
        self.h = h
        self.url = "sqlite3://" + os.path.join(h.tmp, "meta.db")
        self.bucket = os.path.join(h.tmp, "bucket")
        self.mnt = os.path.join(h.tmp, "mnt")
        self.key = os.path.join(h.tmp, "key.pem")
        os.mkdir(self.mnt)
        self.files: dict[str, bytes] = {}

    def openssl(self, *args: str):
        r = subprocess.run(["openssl", *args], cwd=self.h.tmp, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        self.h.require(r.returncode == 0, f"openssl {args[0]}", r.stderr)

    def format(self, *extra: str):
        return self.h.run("format", "--trash-days", "0", "--block-size", "1M", "--bucket",
                          self.bucket, *extra, self.url, VOLUME)

    def mount(self, *extra: str):
        return self.h.mount(self.url, self.mnt, *extra)

    def run(self):
        self.check_format()
        self.check_roundtrip()
        self.check_bucket()
        self.check_compact()
        self.check_bad_passphrases()
        self.check_flipped_bit()
        self.check_writeback_staging()
        self.check_objbench()

    # ---- 1. format -------------------------------------------------------------

    def check_format(self):
        h = self.h
        self.openssl("genrsa", "-aes256", "-passout", "pass:" + PASSPHRASE, "-out", self.key, "2048")
        self.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                     "-out", "ec.pem")
        with open(self.key, encoding="ascii") as f:
            pem = f.read()
        h.require("ENCRYPTED" in pem, "openssl wrote a passphrase-protected key", pem[:80])

        set_passphrase(None)
        one_line_error(h, self.format("--compress", "zstd", "--encrypt-rsa-key", self.key),
                       "format without the passphrase fails", ENV)
        set_passphrase("not the passphrase")
        one_line_error(h, self.format("--compress", "zstd", "--encrypt-rsa-key", self.key),
                       "format with a wrong passphrase fails", "wrong passphrase", ENV)
        one_line_error(h, self.format("--encrypt-rsa-key", os.path.join(h.tmp, "ec.pem")),
                       "format with an EC key fails", "not an RSA private key")
        one_line_error(h, self.format("--encrypt-rsa-key", os.path.join(h.tmp, "nope.pem")),
                       "format with a missing key file fails", "nope.pem")
        one_line_error(h, self.format("--compress", "gzip"), "format --compress gzip fails",
                       "gzip")
        h.check(not os.path.exists(os.path.join(h.tmp, "meta.db")) or
                self.settings_in_db() is None, "no volume was formatted by the failures")

        set_passphrase(PASSPHRASE)
        r = self.format("--compress", "zstd", "--encrypt-rsa-key", self.key)
        h.require(r.returncode == 0, "format --compress zstd --encrypt-rsa-key", r.describe())
        stored = self.settings_in_db()
        h.require(stored is not None, "the settings are in the database")
        h.check(stored.get("encrypt_rsa_key") == pem,
                "the settings keep the PEM as given, still passphrase-protected")
        wrapped = stored.get("encrypt_data_key", "")
        h.check(len(wrapped) == 344 and wrapped.endswith("="),
                "the settings keep the data key wrapped by RSA-2048, base64", wrapped)
        h.check(stored.get("compression") == "zstd", "compression zstd in the settings")

        r, status = h.status(self.url)
        h.require(status is not None, "status", r.describe())
        setting = status["setting"]
        body = pem.splitlines()[5]
        h.check("PRIVATE KEY" not in r.stdout and body not in r.stdout and wrapped not in r.stdout
                and wrapped[:40] not in r.stdout, "status prints neither the PEM nor the wrapped key")
        h.check("encrypt_rsa_key" not in setting and "encrypt_data_key" not in setting,
                "status has no key fields", json.dumps(setting))
        h.check(setting.get("encryption") == "aes-256-gcm, data key wrapped by rsa-2048, "
                "passphrase-protected", "status says how the volume is encrypted",
                str(setting.get("encryption")))
        h.check(setting.get("compression") == "zstd", "status shows the compression")

        one_line_error(h, self.format("--compress", "lz4", "--encrypt-rsa-key", self.key),
                       "re-format with another compression is refused", "compression")
        one_line_error(h, self.format("--compress", "zstd"),
                       "re-format without encryption is refused", "encrypted")
        r = self.format("--compress", "zstd", "--encrypt-rsa-key", self.key)
        h.check(r.returncode == 0 and "Updated" in r.stdout,
                "re-format with the same settings only updates", r.describe())
        h.check(self.settings_in_db().get("encrypt_data_key") == wrapped,
                "the re-format kept the data key")

    def settings_in_db(self) -> dict | None:
        db = sqlite3.connect(os.path.join(self.h.tmp, "meta.db"))
        try:
            row = db.execute("SELECT v FROM kv WHERE k = ?", (b"setting",)).fetchone()
        except sqlite3.Error:
            row = None
        finally:
            db.close()
        return json.loads(row[0]) if row else None

    # ---- 2. data round trip ----------------------------------------------------

    def check_roundtrip(self):
        h = self.h
        set_passphrase(PASSPHRASE)
        r = self.mount()
        h.require(r.returncode == 0, "mount with the passphrase", r.describe() + h.log_tail())
        rng = random.Random(42)
        for name, size in (("t0.txt", 100 * KiB), ("t1.txt", 1 * MiB + 512 * KiB),
                           ("t2.txt", 3 * MiB + 7)):
            text = PHRASE * (size // len(PHRASE) + 1)
            self.files[name] = text[:size]
        for name, size in (("r0.bin", 10 * KiB), ("r1.bin", 2 * MiB + 512 * KiB),
                           ("r2.bin", 4 * MiB + 321)):
            self.files[name] = rng.randbytes(size)
        for name, data in self.files.items():
            with open(os.path.join(self.mnt, name), "wb") as f:
                f.write(data)
        h.require(h.umount(self.mnt).returncode == 0, "umount")
        r = self.mount()
        h.require(r.returncode == 0, "remount", r.describe() + h.log_tail())
        drop_page_cache()
        bad = [n for n, d in self.files.items()
               if sha(os.path.join(self.mnt, n)) != hashlib.sha256(d).hexdigest()]
        h.check(not bad, f"all {len(self.files)} files read back right after a remount", str(bad))

    # ---- 2b. what the bucket holds ---------------------------------------------

    def check_bucket(self):
        h = self.h
        objects = objects_under(os.path.join(self.bucket, VOLUME, "chunks"))
        h.check(len(objects) >= 12, "the files are stored as block objects", str(len(objects)))
        piece = self.files["r1.bin"][MiB + 1000:MiB + 1064]
        stored_total, holding_phrase, holding_piece, bad_format = 0, [], [], []
        for path in objects:
            with open(path, "rb") as f:
                data = f.read()
            stored_total += len(data)
            if b"purple elephants" in data or PHRASE in data:
                holding_phrase.append(path)
            if piece in data:
                holding_piece.append(path)
            if not data or data[0] != ENCRYPTED_FORMAT_BYTE:
                bad_format.append(path)
        h.check(not holding_phrase, "no object holds the plaintext phrase", str(holding_phrase[:3]))
        h.check(not holding_piece, "no object holds a piece of a random file", str(holding_piece[:3]))
        h.check(not bad_format, "every object starts with the encryption format byte",
                str(bad_format[:3]))
        text = sum(len(d) for n, d in self.files.items() if n.endswith(".txt"))
        rand = sum(len(d) for n, d in self.files.items() if n.endswith(".bin"))
        h.check(stored_total < rand + text // 10,
                "the text was compressed before it was encrypted",
                f"stored {stored_total} bytes for {rand} random + {text} text")

    def check_compact(self):
        h = self.h
        path = os.path.join(self.mnt, "pieces.txt")
        data = bytearray(PHRASE * (600 * KiB // len(PHRASE)))
        with open(path, "wb") as f:
            f.write(data)
        for i in range(8):  # overlapping rewrites, a slice each
            piece = PHRASE.upper() * (i + 1)
            with open(path, "r+b") as f:
                f.seek(i * 50 * KiB)
                f.write(piece)
            data[i * 50 * KiB:i * 50 * KiB + len(piece)] = piece
        self.files["pieces.txt"] = bytes(data)
        set_passphrase(None)
        one_line_error(h, h.run("compact", path), "compact without the passphrase fails", ENV)
        set_passphrase(PASSPHRASE)
        r = h.run("compact", path)
        h.check(r.returncode == 0 and "9 slice records -> 1" in r.stdout,
                "compact with the passphrase merges the slices", r.describe())
        r = h.run("info", "--json", path)
        blocks = [k for c in json.loads(r.stdout)[0]["chunks"] for s in c["slices"]
                  for k in s["blocks"]] if r.returncode == 0 else []
        contents = []
        for k in blocks:
            with open(os.path.join(self.bucket, k), "rb") as f:
                contents.append(f.read())
        h.check(len(contents) == 1 and contents[0][0] == ENCRYPTED_FORMAT_BYTE
                and b"purple elephants" not in contents[0].lower(),
                "the merged block is compressed and encrypted", f"{blocks} {r.describe()}")
        drop_page_cache()
        h.check(sha(path) == hashlib.sha256(data).hexdigest(), "the compacted file reads right")

    # ---- 3. wrong passphrases --------------------------------------------------

    def check_bad_passphrases(self):
        h = self.h
        h.require(h.umount(self.mnt).returncode == 0, "umount before the bad passphrases")
        for label, value, words in (("a wrong passphrase", "wrong", ("wrong passphrase", ENV)),
                                    ("no passphrase", None, (ENV, "not set"))):
            set_passphrase(value)
            r = self.mount()
            one_line_error(h, r, f"mount with {label} fails with one line", *words)
            h.check(mounted_fstype(self.mnt) is None, f"nothing is mounted after {label}",
                    str(mounted_fstype(self.mnt)))
            r = h.run("objbench", "--small-objects", "1", "--big-objects", "0", self.url)
            one_line_error(h, r, f"objbench on the volume with {label} fails", ENV)
        set_passphrase(PASSPHRASE)

    # ---- 4. a damaged object ---------------------------------------------------

    def check_flipped_bit(self):
        h = self.h
        r = self.mount("--cache-dir", "none")
        h.require(r.returncode == 0, "mount without a disk cache", r.describe() + h.log_tail())
        r = h.run("info", "--json", os.path.join(self.mnt, "r1.bin"))
        h.require(r.returncode == 0, "info on r1.bin", r.describe())
        blocks = [k for c in json.loads(r.stdout)[0]["chunks"] for s in c["slices"]
                  for k in s["blocks"]]
        h.require(len(blocks) == 3, "r1.bin has three blocks", str(blocks))
        h.require(h.umount(self.mnt).returncode == 0, "umount before damaging an object")
        victim = os.path.join(self.bucket, blocks[0])
        with open(victim, "r+b") as f:
            f.seek(os.path.getsize(victim) // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0x01]))
        r = self.mount("--cache-dir", "none")
        h.require(r.returncode == 0, "remount", r.describe() + h.log_tail())
        drop_page_cache()
        path = os.path.join(self.mnt, "r1.bin")
        try:
            sha(path)
            h.check(False, "reading the file with a flipped bit fails")
        except OSError as e:
            h.check(e.errno == errno.EIO, "reading the file with a flipped bit gives EIO",
                    errno.errorcode.get(e.errno, str(e.errno)))
        fd = os.open(path, os.O_RDONLY)
        try:
            got = os.pread(fd, 4096, 2 * MiB + 100)
        except OSError as e:
            got = f"error {e}".encode()
        finally:
            os.close(fd)
        h.check(got == self.files["r1.bin"][2 * MiB + 100:2 * MiB + 100 + 4096],
                "the file's undamaged block still reads right")
        bad = [n for n, d in self.files.items() if n != "r1.bin"
               and sha(os.path.join(self.mnt, n)) != hashlib.sha256(d).hexdigest()]
        h.check(not bad, "every other file reads right", str(bad))
        h.check(mounted_fstype(self.mnt) == "fuse.tessera", "the mount is still up")
        h.check(sorted(os.listdir(self.mnt)) == sorted(self.files), "the mount still lists")
        h.require(h.umount(self.mnt).returncode == 0, "umount")

    # ---- 5. writeback staging ---------------------------------------------------

    def check_writeback_staging(self):
        h = self.h
        r = self.mount("--writeback", "--upload-delay", "3600")
        h.require(r.returncode == 0, "mount --writeback", r.describe() + h.log_tail())
        data = PHRASE * (2 * MiB // len(PHRASE))
        with open(os.path.join(self.mnt, "staged.txt"), "wb") as f:
            f.write(data)
        _, status = h.status(self.url)
        sessions = status["sessions"] if status else []
        staging = sessions[0].get("staging_dir", "") if len(sessions) == 1 else ""
        staged = [p for p in objects_under(staging) if not os.path.basename(p).startswith(".")]
        h.check(len(staged) >= 2, "the blocks wait in the staging directory", f"{staging}: {staged}")
        contents = []
        for p in staged:
            with open(p, "rb") as f:
                contents.append(f.read())
        h.check(all(c and c[0] == ENCRYPTED_FORMAT_BYTE and b"purple elephants" not in c
                    and len(c) < 100 * KiB for c in contents),
                "staged blocks are compressed and encrypted", str([len(c) for c in contents]))
        h.require(h.umount(self.mnt).returncode == 0, "umount uploads the staged blocks")
        r = self.mount("--cache-dir", "none")
        h.require(r.returncode == 0, "remount", r.describe() + h.log_tail())
        drop_page_cache()
        h.check(sha(os.path.join(self.mnt, "staged.txt")) == hashlib.sha256(data).hexdigest(),
                "the file written with --writeback reads right")
        h.require(h.umount(self.mnt).returncode == 0, "umount")

    # ---- 6. objbench -------------------------------------------------------------

    def table_rows(self, out: str) -> list[tuple[str, str]]:
        rows = []
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] in OPS and len(parts) == 9:
                rows.append((parts[0], parts[1] + " " + parts[2]))
        return rows

    def check_objbench(self):
        h = self.h
        d = os.path.join(h.tmp, "objdir")
        os.mkdir(d)
        r = h.run("objbench", "--storage", "file", "--bucket", d, "--compress", "zstd",
                  "--encrypt-rsa-key", self.key, "--small-objects", "200", "--big-objects", "8",
                  "--threads", "3", timeout=120)
        expected = [(op, size) for size in ("128.0 KiB", "4.0 MiB") for op in OPS]
        h.check(r.returncode == 0 and self.table_rows(r.stdout) == expected
                and "compression zstd" in r.stdout and "rsa-2048" in r.stdout
                and "operation" in r.stdout, "objbench on a local directory prints its table",
                r.describe())
        left = os.listdir(d)
        h.check(not left, "objbench leaves nothing in the directory", str(left[:5]))

        r = h.run("objbench", "--small-objects", "50", "--big-objects", "2", self.url, timeout=120)
        h.check(r.returncode == 0 and len(self.table_rows(r.stdout)) == 10
                and "volume:" in r.stdout, "objbench on the volume prints its table", r.describe())
        left = [p for p in os.listdir(os.path.join(self.bucket, VOLUME)) if p != "chunks"]
        h.check(not left, "objbench leaves nothing in the volume's bucket", str(left))

        for label, args, words in (
                ("no store", (), ("--storage",)),
                ("--storage without --bucket", ("--storage", "file"), ("--bucket",)),
                ("a missing bucket directory", ("--storage", "file", "--bucket",
                                                os.path.join(h.tmp, "nope")), ("does not exist",)),
                ("--threads 0", ("--threads", "0", "--storage", "file", "--bucket", d),
                 ("--threads",)),
                ("--small-size 0", ("--small-size", "0", "--storage", "file", "--bucket", d),
                 ("--small-size",)),
                ("--fill foo", ("--fill", "foo", "--storage", "file", "--bucket", d), ("--fill",)),
                ("--compress with a volume", ("--compress", "lz4", self.url), ("--compress",)),
                ("a store and a volume", ("--storage", "file", "--bucket", d, self.url),
                 ("either",))):
            one_line_error(h, h.run("objbench", *args), f"objbench with {label} fails", *words)
        h.check(not os.listdir(d), "the failed runs left nothing either")


def main() -> int:
    h = Harness("encrypted_volume", sys.argv)
    with h:
        try:
            EncryptedVolume(h).run()
        finally:
            set_passphrase(None)
    return h.exit_code()


if __name__ == "__main__":
    sys.exit(main())
