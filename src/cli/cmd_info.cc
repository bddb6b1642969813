// tessera info: what the metadata says about paths inside a mount (inode,
// type, size, and for files the slice records of every chunk and the block
// objects behind them).
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/mounted_path.h"
#include "common/units.h"
#include "data/slice_store.h"
#include "kv/kv.h"
#include "meta/meta.h"

namespace tessera {
namespace {

constexpr const char* kHelp = R"(Usage: tessera info [--json] PATH...

Show what the volume's metadata holds for each PATH inside a mounted
Tessera volume: its inode, type and size; for a regular file every chunk
(64 MiB of the file) with its slice records in write order (slice id, slice
size, offset in the slice, length, position in the chunk; a hole reads as
zeros, newer records hide older ones where they overlap) and the object keys
of the blocks that hold each record's bytes; for a directory the number of
entries; for a symlink its target.

The volume is found through the mount (run as the user who mounted it).
Only committed data is shown: writes still buffered in a mount (a file open
for writing, not yet closed, flushed or fsync'ed) are not.

Options:
  --json   print a JSON array, one object per PATH, for scripts
)";

std::string TypeName(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char device";
    case S_IFBLK: return "block device";
    default: return "unknown";
  }
}

// The keys of the blocks holding bytes [off, off + len) of a slice.
std::vector<std::string> BlockKeys(const SliceStore& store, const SliceRecord& r) {
  std::vector<std::string> keys;
  if (r.id.value() == 0 || r.len == 0 || r.off >= r.size) return keys;
  const uint64_t bs = store.block_size();
  const uint64_t end = std::min<uint64_t>(uint64_t{r.off} + r.len, r.size);
  for (uint64_t i = r.off / bs; i * bs < end; ++i) {
    keys.push_back(store.BlockKey(r.id, i, std::min<uint64_t>(bs, r.size - i * bs)));
  }
  return keys;
}

// Everything about one path, as JSON (the text layout is printed from it).
Result<nlohmann::ordered_json> Describe(Meta& meta, const MountedPath& mp) {
  ASSIGN_OR_RETURN(Attr attr, meta.GetAttr(mp.inode));
  nlohmann::ordered_json j;
  j["path"] = mp.path;
  j["mount_point"] = mp.mount_point;
  j["inode"] = mp.inode.value();
  j["type"] = TypeName(attr.mode);
  // A directory's size is its entry count, below; its length means nothing.
  if (!attr.IsDir()) j["size"] = attr.length;
  if (attr.IsDir()) {
    uint64_t entries = 0;
    uint64_t cookie = 0;
    for (bool more = true; more;) {
      ASSIGN_OR_RETURN(DirPage page, meta.ReadDir(mp.inode, cookie, 1000, false));
      entries += page.items.size();
      if (!page.items.empty()) cookie = page.items.back().cookie;
      more = page.more && !page.items.empty();
    }
    j["entries"] = entries;
  } else if (S_ISLNK(attr.mode)) {
    ASSIGN_OR_RETURN(j["target"], meta.ReadLink(mp.inode));
  } else if (attr.IsFile()) {
    const VolumeSettings& s = meta.settings();
    // BlockKey only formats names: no object store is needed.
    const SliceStore store(s.name, s.block_size, nullptr);
    j["block_size"] = s.block_size;
    j["chunks"] = nlohmann::ordered_json::array();
    const uint64_t chunks = (attr.length + kChunkSize - 1) / kChunkSize;
    for (uint64_t index = 0; index < chunks; ++index) {
      ASSIGN_OR_RETURN(auto records, meta.ReadChunk(mp.inode, static_cast<uint32_t>(index)));
      if (records.empty()) continue;  // never written: reads as zeros
      nlohmann::ordered_json chunk;
      chunk["index"] = index;
      chunk["slices"] = nlohmann::ordered_json::array();
      for (const SliceRecord& r : records) {
        chunk["slices"].push_back({{"pos", r.pos},
                                   {"id", r.id.value()},
                                   {"size", r.size},
                                   {"offset", r.off},
                                   {"length", r.len},
                                   {"hole", r.id.value() == 0},
                                   {"blocks", BlockKeys(store, r)}});
      }
      j["chunks"].push_back(std::move(chunk));
    }
  }
  return j;
}

void PrintText(const nlohmann::ordered_json& j) {
  std::printf("%s\n", j["path"].get<std::string>().c_str());
  std::printf("  mount point  %s\n", j["mount_point"].get<std::string>().c_str());
  std::printf("  inode        %llu\n", static_cast<unsigned long long>(j["inode"].get<uint64_t>()));
  std::printf("  type         %s\n", j["type"].get<std::string>().c_str());
  if (j.contains("size")) {
    const uint64_t size = j["size"].get<uint64_t>();
    std::printf("  size         %llu (%s)\n", static_cast<unsigned long long>(size),
                FormatBytes(size).c_str());
  }
  if (j.contains("entries")) {
    std::printf("  entries      %llu\n",
                static_cast<unsigned long long>(j["entries"].get<uint64_t>()));
  }
  if (j.contains("target")) {
    std::printf("  target       %s\n", j["target"].get<std::string>().c_str());
  }
  if (!j.contains("chunks")) return;
  std::printf("  block size   %s\n", FormatBytes(j["block_size"].get<uint64_t>()).c_str());
  std::printf("  chunks       %zu with data (64 MiB each)\n", j["chunks"].size());
  for (const auto& chunk : j["chunks"]) {
    const uint64_t index = chunk["index"].get<uint64_t>();
    std::printf("  chunk %llu (file offset %llu): %zu slice records, oldest first\n",
                static_cast<unsigned long long>(index),
                static_cast<unsigned long long>(index * kChunkSize), chunk["slices"].size());
    std::printf("    %10s %10s %10s %10s %10s  %s\n", "pos", "slice", "size", "offset", "length",
                "blocks");
    for (const auto& s : chunk["slices"]) {
      const auto num = [&](const char* key) {
        return static_cast<unsigned long long>(s[key].get<uint64_t>());
      };
      if (s["hole"].get<bool>()) {
        std::printf("    %10llu %10s %10s %10s %10llu  (zeros)\n", num("pos"), "hole", "-", "-",
                    num("length"));
        continue;
      }
      std::printf("    %10llu %10llu %10llu %10llu %10llu ", num("pos"), num("id"), num("size"),
                  num("offset"), num("length"));
      bool first = true;
      for (const auto& key : s["blocks"]) {
        std::printf("%*s %s\n", first ? 0 : 59, "", key.get<std::string>().c_str());
        first = false;
      }
      if (first) std::printf("\n");
    }
  }
}

}  // namespace

int RunInfo(int argc, char** argv) {
  Args args;
  args.Flag("json");
  if (Status st = args.Parse(argc, argv, 2); !st.ok()) return Fail("info", st);
  if (args.help()) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (args.positional().empty()) return Fail("info", "expected at least one PATH (see --help)");
  const bool json = args.Has("json");

  std::map<std::string, std::unique_ptr<Meta>> volumes;  // by META-URL
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  size_t printed = 0;
  int rc = 0;
  for (const std::string& path : args.positional()) {
    auto mp = ResolveMountedPath(path);
    if (!mp.ok()) {
      rc = Fail("info", mp.status());
      continue;
    }
    auto& meta = volumes[mp->meta_url];
    if (meta == nullptr) {
      auto kv = OpenKv(mp->meta_url);
      if (!kv.ok()) {
        rc = Fail("info", kv.status().WithContext(path));
        volumes.erase(mp->meta_url);
        continue;
      }
      auto opened = Meta::Open(std::move(*kv));
      if (!opened.ok()) {
        rc = Fail("info", opened.status().WithContext(path));
        volumes.erase(mp->meta_url);
        continue;
      }
      meta = std::move(*opened);
    }
    auto described = Describe(*meta, *mp);
    if (!described.ok()) {
      rc = Fail("info", described.status().WithContext(path));
      continue;
    }
    if (json) {
      all.push_back(std::move(*described));
    } else {
      if (printed++ > 0) std::printf("\n");
      PrintText(*described);
    }
  }
  if (json) std::printf("%s\n", all.dump(2).c_str());
  return rc;
}

}  // namespace tessera
