#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/volume_store.h"
#include "common/units.h"
#include "kv/kv.h"
#include "meta/meta.h"
#include "object/compress_store.h"
#include "object/object_store.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera format [OPTIONS] META-URL NAME

Create a volume named NAME whose metadata lives in META-URL. Formatting an
existing volume again with the same name, storage, bucket, block size,
compression and RSA key file only updates the other settings; anything else
is refused.

Options:
  --storage TYPE      object storage type: file (default) or s3
  --bucket DIR|URL    where blocks are stored: for file a directory (default:
                      /var/lib/tessera/local for root, ~/.tessera/local for
                      other users); for s3 the bucket's URL, path-style
                      http[s]://HOST[:PORT]/BUCKET or virtual-hosted
                      https://BUCKET.s3.REGION.amazonaws.com
  --block-size SIZE   block size, a power of two from 64K to 16M (default 4M)
  --trash-days N      days deleted files stay in the trash (default 1, 0 = off)
  --capacity SIZE     space quota of the volume (default: unlimited)
  --inodes N          inode quota of the volume (default: unlimited)
  --compress ALGO     compress blocks with lz4 or zstd, or none (default none)
  --encrypt-rsa-key PEM
                      encrypt blocks (AES-256-GCM) with a random data key
                      wrapped by the RSA private key in the file PEM (make
                      one with 'openssl genrsa -aes256 -out key.pem 2048').
                      The PEM and the wrapped key are kept in the volume
                      settings; a protected key's passphrase is read from
                      TESSERA_RSA_PASSPHRASE here and at every mount. Keep
                      a copy of the key and its passphrase: without them
                      the data cannot be read by anyone
Compression happens before encryption. Neither can change once the volume
exists.

S3 options (--storage s3):
  --access-key KEY    access key id; with --secret-key, saved in the volume
                      settings for every mount (status shows it, not the
                      secret). Without them, format and every mount read
                      AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
                      AWS_SESSION_TOKEN from their environment instead
  --secret-key KEY    secret access key
  --session-token T   session token of temporary credentials
  --region REGION     signing region (default: from an AWS host name, else
                      us-east-1)
  --skip-tls-verify   do not check the server's TLS certificate (test
                      servers only; the CA bundle otherwise comes from
                      AWS_CA_BUNDLE, CURL_CA_BUNDLE or SSL_CERT_FILE, or the
                      system's)
Format writes, reads back and deletes a probe object: wrong keys, a missing
bucket or an unreachable endpoint are reported before anything is saved.

Examples:
  tessera format sqlite3://$HOME/.tessera/myvol.db myvol
  TESSERA_RSA_PASSPHRASE=... tessera format --compress zstd \
      --encrypt-rsa-key key.pem sqlite3://$HOME/.tessera/secret.db secretvol
  tessera format --storage s3 --bucket http://127.0.0.1:9000/data \
      --access-key AKIA... --secret-key ... sqlite3://$HOME/.tessera/s3vol.db s3vol
)";

std::string DefaultBucket() {
  if (geteuid() == 0) return "/var/lib/tessera/local";
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "/tmp") + "/.tessera/local";
}

// Writes, reads back and deletes a probe object, so a bucket that cannot be
// used is reported at format time rather than at the first write.
Status ProbeBucket(ObjectStore& store, const std::string& name) {
  const std::string key = name + "/.probe-" + std::to_string(getpid());
  RETURN_IF_ERROR(store.Put(key, "tessera"));
  auto back = store.Get(key);
  if (!back.ok()) return back.status();
  if (*back != "tessera") return IoError("object read back differs from what was written");
  return store.Delete(key);
}

// The S3 connection settings from the command line. Keys given on it are
// saved with the volume; otherwise each client uses its environment's.
Status S3Settings(const Args& args, VolumeSettings* s) {
  if (s->storage != "s3") {
    for (const char* option : {"access-key", "secret-key", "session-token", "region",
                               "skip-tls-verify"}) {
      if (args.Has(option)) return Invalid(std::string("--") + option + " is for --storage s3 only");
    }
    return Status::Ok();
  }
  if (!args.Has("bucket")) return Invalid("--storage s3 needs --bucket http[s]://HOST[:PORT]/BUCKET");
  if (args.Has("access-key") != args.Has("secret-key")) {
    return Invalid("give --access-key and --secret-key together");
  }
  if (args.Has("session-token") && !args.Has("access-key")) {
    return Invalid("--session-token goes with --access-key and --secret-key");
  }
  s->access_key = args.Get("access-key", "");
  s->secret_key = args.Get("secret-key", "");
  s->session_token = args.Get("session-token", "");
  s->region = args.Get("region", "");
  s->skip_tls_verify = args.Has("skip-tls-verify");
  if (args.Has("access-key") && (s->access_key.empty() || s->secret_key.empty())) {
    return Invalid("--access-key and --secret-key must not be empty");
  }
  const char* env_key = std::getenv("AWS_ACCESS_KEY_ID");
  const char* env_secret = std::getenv("AWS_SECRET_ACCESS_KEY");
  if (s->access_key.empty() && (env_key == nullptr || *env_key == '\0' || env_secret == nullptr ||
                                *env_secret == '\0')) {
    return Invalid("--storage s3 needs --access-key and --secret-key (or AWS_ACCESS_KEY_ID and "
                   "AWS_SECRET_ACCESS_KEY in the environment)");
  }
  return Status::Ok();
}

// Creates the directory of an SQLite database so that the quick start works
// on a fresh machine.
void PrepareSqlitePath(const std::string& url) {
  const std::string scheme = "sqlite3://";
  if (url.rfind(scheme, 0) != 0) return;
  std::filesystem::path path(url.substr(scheme.size()));
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
}

}  // namespace

int RunFormat(int argc, char** argv) {
  Args args;
  for (const char* v : {"storage", "bucket", "block-size", "trash-days", "capacity", "inodes",
                        "compress", "encrypt-rsa-key", "access-key", "secret-key",
                        "session-token", "region"}) {
    args.Value(v);
  }
  args.Flag("skip-tls-verify");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("format", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().size() != 2) return Fail("format", "expected META-URL and NAME (see --help)");
  const std::string& url = args.positional()[0];
  VolumeSettings s;
  s.name = args.positional()[1];
  if (Status st = ValidateVolumeName(s.name); !st.ok()) return Fail("format", st);
  s.storage = args.Get("storage", "file");
  if (s.storage != "file" && s.storage != "s3") {
    return Fail("format", "unsupported storage '" + s.storage + "' (expected file or s3)");
  }
  if (Status st = S3Settings(args, &s); !st.ok()) return Fail("format", st);
  s.bucket = args.Get("bucket", s.storage == "s3" ? "" : DefaultBucket());
  if (s.storage == "file") {
    std::error_code ec;
    auto abs = std::filesystem::absolute(s.bucket, ec);
    if (!ec) s.bucket = abs.lexically_normal().string();
    if (s.bucket.size() > 1 && s.bucket.back() == '/') s.bucket.pop_back();
  }
  while (s.storage == "s3" && s.bucket.ends_with("/")) s.bucket.pop_back();
  auto block = ParseSize(args.Get("block-size", "4M"));
  if (!block.ok()) return Fail("format", block.status());
  if (*block < (64u << 10) || *block > (16u << 20) || (*block & (*block - 1)) != 0) {
    return Fail("format", "block size must be a power of two from 64K to 16M, not " +
                              args.Get("block-size", ""));
  }
  s.block_size = *block;
  auto trash = ParseUint(args.Get("trash-days", "1"), "trash days");
  if (!trash.ok()) return Fail("format", trash.status());
  if (*trash > 36500) return Fail("format", "--trash-days must be 0 to 36500, not " + args.Get("trash-days", ""));
  s.trash_days = static_cast<uint32_t>(*trash);
  if (auto cap = args.Get("capacity")) {
    auto v = ParseSize(*cap);
    if (!v.ok()) return Fail("format", v.status());
    s.capacity = *v;
  }
  if (auto inodes = args.Get("inodes")) {
    auto v = ParseUint(*inodes, "inode quota");
    if (!v.ok()) return Fail("format", v.status());
    s.inodes = *v;
  }
  auto compression = ParseCompression(args.Get("compress", "none"));
  if (!compression.ok()) return Fail("format", compression.status());
  s.compression = CompressionName(*compression);
  if (auto key = args.Get("encrypt-rsa-key")) {
    if (Status st = SetUpEncryption(*key, &s); !st.ok()) return Fail("format", st);
  }
  s.uuid = NewUuid();

  // Through the transforms too: a key that cannot unwrap fails here.
  auto store = OpenVolumeStore(s);
  if (!store.ok()) return Fail("format", store.status());
  if (Status st = ProbeBucket(**store, s.name); !st.ok()) {
    return Fail("format", st.WithContext("bucket " + s.bucket + " is not usable"));
  }
  PrepareSqlitePath(url);
  auto kv = OpenKv(url, KvOptions{.create_if_missing = true});
  if (!kv.ok()) return Fail("format", kv.status());
  bool created = false;
  if (Status st = Meta::Format(**kv, s, &created); !st.ok()) return Fail("format", st);
  auto saved = Meta::LoadSettings(**kv);
  if (!saved.ok()) return Fail("format", saved.status());
  std::printf("%s volume '%s' (uuid %s): metadata %s, data in %s %s, block size %s, "
              "compression %s, encryption %s\n",
              created ? "Formatted" : "Updated", saved->name.c_str(), saved->uuid.c_str(),
              (*kv)->Url().c_str(), saved->storage.c_str(), saved->bucket.c_str(),
              FormatBytes(saved->block_size).c_str(), saved->compression.c_str(),
              DescribeEncryption(*saved).c_str());
  return 0;
}

}  // namespace tessera
