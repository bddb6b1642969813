// The consistency check behind `tessera fsck`: reads every key of a volume's
// metadata in pages (many short read transactions, so it may run while the
// volume is mounted) and reports what breaks the rules in README.md: link
// counts, entries without an inode or with the wrong type, inodes nothing
// names, usage counters, slice records and reference counts, and (through a
// callback, since this layer knows no object store) missing block objects.
//
// Every finding is checked again in a fresh transaction before it is
// reported, so that files created, linked or removed during the scan do not
// show as problems. With `repair`, what can be fixed is fixed, each fix in
// its own transaction that first re-checks the condition.
//
// Memory: one small record per inode (a hash map keyed by inode number) and
// one byte per slice id below the nextSlice counter.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/slice.h"
#include "common/status.h"
#include "common/types.h"
#include "kv/kv.h"

namespace tessera {

enum class FsckKind {
  kLinkCount,      // nlink differs from what the entries say
  kDanglingEntry,  // an entry whose inode has no attributes
  kEntryType,      // an entry whose type differs from its inode's
  kOrphan,         // an inode no entry names and no session holds open
  kUsedSpace,      // the usedSpace counter
  kUsedInodes,     // the usedInodes counter
  kBadSlice,       // a slice record outside its slice or chunk, or an id never handed out
  kSliceRefs,      // a K<slice><size> reference count
  kMissingObject,  // a block object of a referenced slice is not in the object store
  kCorruptRecord,  // a record that cannot be decoded
};
// "link-count", "dangling-entry", ... as printed and in JSON.
std::string_view FsckKindName(FsckKind kind);

struct FsckFinding {
  FsckKind kind = FsckKind::kLinkCount;
  InodeId inode;                   // 0 for volume-wide findings (counters)
  std::vector<std::string> paths;  // "/a/b", or "<orphan inode N>" for what has no path
  std::string detail;
  std::optional<int64_t> expected;  // for counts: what the volume says it should be
  std::optional<int64_t> stored;    // and what is stored
  bool repairable = false;
  bool repaired = false;
};

struct FsckReport {
  std::vector<FsckFinding> findings;
  // Things the check could not decide, e.g. counters that changed during the scan.
  std::vector<std::string> notes;
  uint64_t inodes = 0;
  uint64_t directories = 0;
  uint64_t files = 0;  // every inode that is not a directory
  uint64_t slices = 0;
  uint64_t objects_checked = 0;
  double elapsed_s = 0;

  uint64_t problems() const { return findings.size(); }
  uint64_t repaired() const;
};

// What the object store holds of one slice: how many block objects were
// looked at, and the keys of those that are missing.
struct SliceObjects {
  uint64_t checked = 0;
  std::vector<std::string> missing;
};
// Looks up the blocks of a slice; called from several threads at once.
// Errors other than "missing" (an unreachable store) stop the check.
using CheckSliceObjects = std::function<Result<SliceObjects>(const SliceRef&)>;

struct FsckOptions {
  // Limits link count, entry and object checks to the subtree at this path
  // ("" or "/": the whole volume). Volume-wide checks (usage counters, slice
  // reference counts, orphans) are skipped then.
  std::string path;
  bool repair = false;
  // Object lookups in flight at once.
  size_t threads = 8;
  // Keys per read transaction of the scan.
  size_t page_size = 4096;
};

// Checks the volume in `kv`; `objects` may be null (blocks are not checked).
// Errors: kNotFound for a --path that does not exist, kNotFound when `kv`
// holds no volume, the engine's or the object callback's errors.
Result<FsckReport> CheckVolume(KvStore& kv, const FsckOptions& options,
                               const CheckSliceObjects& objects);

}  // namespace tessera
