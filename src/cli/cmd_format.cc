#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/units.h"
#include "kv/kv.h"
#include "meta/meta.h"
#include "object/object_store.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera format [OPTIONS] META-URL NAME

Create a volume named NAME whose metadata lives in META-URL. Formatting an
existing volume again with the same name, storage, bucket and block size only
updates the other settings; anything else is refused.

Options:
  --storage TYPE      object storage type: file (default)
  --bucket DIR        where blocks are stored (default: /var/lib/tessera/local
                      for root, ~/.tessera/local for other users)
  --block-size SIZE   block size, a power of two from 64K to 16M (default 4M)
  --trash-days N      days deleted files stay in the trash (default 1, 0 = off)
  --capacity SIZE     space quota of the volume (default: unlimited)
  --inodes N          inode quota of the volume (default: unlimited)

Example:
  tessera format sqlite3://$HOME/.tessera/myvol.db myvol
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
  for (const char* v : {"storage", "bucket", "block-size", "trash-days", "capacity", "inodes"}) {
    args.Value(v);
  }
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
  if (s.storage != "file") return Fail("format", "unsupported storage '" + s.storage + "' (expected file)");
  s.bucket = args.Get("bucket", DefaultBucket());
  if (s.storage == "file") {
    std::error_code ec;
    auto abs = std::filesystem::absolute(s.bucket, ec);
    if (!ec) s.bucket = abs.lexically_normal().string();
    if (s.bucket.size() > 1 && s.bucket.back() == '/') s.bucket.pop_back();
  }
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
  s.uuid = NewUuid();

  auto store = OpenObjectStore(s.storage, s.bucket);
  if (!store.ok()) return Fail("format", store.status().WithContext("bucket " + s.bucket));
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
  std::printf("%s volume '%s' (uuid %s): metadata %s, data in %s %s, block size %s\n",
              created ? "Formatted" : "Updated", saved->name.c_str(), saved->uuid.c_str(),
              (*kv)->Url().c_str(), saved->storage.c_str(), saved->bucket.c_str(),
              FormatBytes(saved->block_size).c_str());
  return 0;
}

}  // namespace tessera
