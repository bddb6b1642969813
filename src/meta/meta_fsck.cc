#include "meta/meta_fsck.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "common/coding.h"
#include "common/thread_pool.h"
#include "common/units.h"
#include "meta/attr.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {

using meta_internal::AddCounter;
using meta_internal::GetCounter;
using meta_internal::LoadAttr;
using meta_internal::PutAttr;

std::string_view FsckKindName(FsckKind kind) {
  switch (kind) {
    case FsckKind::kLinkCount: return "link-count";
    case FsckKind::kDanglingEntry: return "dangling-entry";
    case FsckKind::kEntryType: return "entry-type";
    case FsckKind::kOrphan: return "orphan";
    case FsckKind::kUsedSpace: return "used-space";
    case FsckKind::kUsedInodes: return "used-inodes";
    case FsckKind::kBadSlice: return "bad-slice";
    case FsckKind::kSliceRefs: return "slice-refs";
    case FsckKind::kMissingObject: return "missing-object";
    case FsckKind::kCorruptRecord: return "corrupt-record";
  }
  return "unknown";
}

uint64_t FsckReport::repaired() const {
  uint64_t n = 0;
  for (const auto& f : findings) n += f.repaired ? 1 : 0;
  return n;
}

namespace {

constexpr uint8_t kHasAttr = 1;
constexpr uint8_t kHeld = 2;  // an SS or R key: open after its last unlink, or being deleted
constexpr uint8_t kScopeKnown = 4;
constexpr uint8_t kInScope = 8;
constexpr std::string_view kLostFound = "lost+found";
// Longest parent chain followed when making a path (a cycle is corruption).
constexpr int kMaxDepth = 4096;

// What the scan keeps per inode: small, since there may be tens of millions.
struct Node {
  uint64_t entry_dir = 0;   // the directory of the first entry that names it
  uint64_t entry_hash = 0;  // that entry's name hash: finds its name with one short scan
  int64_t ctime_ns = 0;     // every link count change sets ctime: tells a change since the scan
  uint32_t mode = 0;
  uint32_t nlink = 0;
  uint32_t refs = 0;     // entries naming it
  uint32_t subdirs = 0;  // directories: entries naming directories
  uint16_t entry_type = 0;  // S_IFMT bits >> 12 of the first entry
  uint8_t flags = 0;
};

// Entries past the first that name an inode (hard links; rare).
struct EntryLoc {
  uint64_t dir = 0;
  uint64_t hash = 0;
  uint32_t type = 0;
};

struct BadRecord {
  InodeId inode;
  uint32_t chunk = 0;
  SliceRecord record;
  std::string why;
};

struct MissingSlice {
  SliceRef slice;
  InodeId first_user;
  SliceObjects objects;
};

uint64_t HashOfEntryKey(const std::string& key) { return GetBig64(key.data() + 10); }

std::string EntriesWithHash(InodeId dir, uint64_t hash) {
  std::string k = keys::EntriesBegin(dir);
  PutBig64(&k, hash);
  return k;
}

std::string EncodeCounterValue(uint64_t v) {
  std::string s;
  PutBig64(&s, v);
  return s;
}

std::string TypeWord(uint32_t type_bits) {
  switch (type_bits & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symlink";
    case S_IFIFO: return "fifo";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "char device";
    case S_IFBLK: return "block device";
    default: return "type " + std::to_string(type_bits >> 12);
  }
}

// What a repair needs to find the thing again and re-check it.
struct Fix {
  uint64_t dir = 0, hash = 0;  // entries: where the entry is
  uint64_t slice = 0;          // slice-refs
  uint32_t size = 0;
  std::optional<std::string> k_before;  // slice-refs: the K value seen
  Node seen;                            // link counts and orphans: the inode as seen
  int64_t counter_seen = 0;             // counters
};

class Checker {
 public:
  Checker(KvStore& kv, const FsckOptions& options, const CheckSliceObjects& objects)
      : kv_(kv), opts_(options), objects_(objects) {
    if (opts_.page_size == 0) opts_.page_size = 4096;
    if (opts_.threads == 0) opts_.threads = 1;
  }

  Result<FsckReport> Run();

 private:
  // Visits every key in [from, end) in pages, one read transaction each;
  // `fn` runs outside the transactions.
  Status ScanRange(std::string from, const std::string& end,
                   const std::function<Status(const KeyValue&)>& fn);
  Status ReadCounters(int64_t* space, int64_t* inodes, int64_t* next_slice);
  Status ResolveScope();
  Status Visit(const KeyValue& kv);
  void VisitChunk(InodeId ino, uint32_t chunk, const std::string& value);
  uint32_t AddSliceUse(uint64_t id);
  uint32_t SliceUses(uint64_t id) const;
  bool InScope(uint64_t ino, int depth = 0);
  void SubmitObjectCheck(const SliceRef& slice, InodeId user);
  Status FinishObjectChecks();
  Status CheckObjectsInScope();

  // Analysis and re-verification, then repair.
  Status CheckTree();
  Status CheckEntries(uint64_t child, const Node& n);
  Status VerifyDirLinks(uint64_t ino);
  Status VerifyLinksAndOrphans(const std::vector<uint64_t>& suspects);
  Status CheckSlices();
  Status CheckSliceRefs();
  Status CheckCounters();
  Status VerifyMissing();

  Status Repair(FsckFinding* f);
  Status RepairDirLinks(FsckFinding* f);
  Status RepairFileLinks(FsckFinding* f, const Fix& fix);
  void NoteRecounted(std::optional<int64_t> space);
  Status RepairEntry(FsckFinding* f, const Fix& fix);
  Status RepairOrphan(FsckFinding* f, const Fix& fix);
  Status RepairSliceRefs(FsckFinding* f, const Fix& fix);
  Status RepairCounter(FsckFinding* f, const Fix& fix);
  Result<InodeId> LostAndFound();
  Result<bool> HeldInTxn(KvTxn& txn, InodeId ino);

  // Paths, resolved from the root with short scans of one name hash each.
  Result<std::string> NameAt(uint64_t dir, uint64_t hash, uint64_t child);
  Result<std::string> DirPath(uint64_t dir, int depth = 0);
  Result<std::vector<std::string>> PathsOf(uint64_t ino);
  std::vector<EntryLoc> Locations(uint64_t ino, const Node& n) const;

  void Add(FsckFinding f, Fix fix = {}) {
    report_.findings.push_back(std::move(f));
    fixes_.push_back(std::move(fix));
  }

  KvStore& kv_;
  FsckOptions opts_;
  const CheckSliceObjects& objects_;
  FsckReport report_;

  uint64_t scope_root_ = 0;  // 0: the whole volume
  bool scope_is_dir_ = true;
  std::unordered_map<uint64_t, Node> nodes_;
  std::unordered_map<uint64_t, std::vector<EntryLoc>> extra_entries_;
  std::vector<std::pair<uint64_t, std::string>> corrupt_;  // inode, what
  std::vector<BadRecord> bad_records_;
  // Chunks referencing each slice id: a byte per id below nextSlice,
  // saturating into the map (which also holds ids at or past nextSlice).
  std::vector<uint8_t> slice_uses_;
  std::unordered_map<uint64_t, uint32_t> slice_uses_big_;
  // K<id><size> keys as read: (size, value).
  std::unordered_map<uint64_t, std::pair<uint32_t, std::string>> k_keys_;
  int64_t space_seen_ = 0, inodes_seen_ = 0, next_slice_ = 0;
  uint64_t space_sum_ = 0, inode_count_ = 0;

  // Object checks, run on a pool with a bounded number in flight.
  std::unique_ptr<ThreadPool> pool_;
  std::mutex obj_mu_;
  std::condition_variable obj_cv_;
  size_t in_flight_ = 0;         // guarded by obj_mu_
  Status obj_error_;             // guarded by obj_mu_
  std::vector<MissingSlice> missing_;  // guarded by obj_mu_
  uint64_t objects_checked_ = 0;       // guarded by obj_mu_

  std::unordered_map<uint64_t, std::string> dir_paths_;
  InodeId lost_found_;
  // Counted by repairs (lost+found, files given back a name), for the
  // counter repair.
  int64_t inodes_added_ = 0, space_added_ = 0;
  std::vector<Fix> fixes_;  // parallel to report_.findings
};

Status Checker::ScanRange(std::string from, const std::string& end,
                          const std::function<Status(const KeyValue&)>& fn) {
  while (true) {
    ScanResult page;
    RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
      ASSIGN_OR_RETURN(page, txn.Scan(from, end, opts_.page_size));
      return Status::Ok();
    }));
    for (const KeyValue& item : page.items) RETURN_IF_ERROR(fn(item));
    if (!page.more || page.items.empty()) return Status::Ok();
    from = page.items.back().key + '\0';
  }
}

Status Checker::ReadCounters(int64_t* space, int64_t* inodes, int64_t* next_slice) {
  return WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(*space, GetCounter(txn, keys::kUsedSpace));
    ASSIGN_OR_RETURN(*inodes, GetCounter(txn, keys::kUsedInodes));
    ASSIGN_OR_RETURN(*next_slice, GetCounter(txn, keys::kNextSlice));
    return Status::Ok();
  });
}

Status Checker::ResolveScope() {
  std::string_view rest = opts_.path;
  InodeId cur = kRootInode;
  uint32_t mode = S_IFDIR;
  RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
    rest = opts_.path;
    cur = kRootInode;
    mode = S_IFDIR;
    while (!rest.empty()) {
      const size_t slash = rest.find('/');
      std::string_view name = rest.substr(0, slash);
      rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
      if (name.empty() || name == ".") continue;
      if (!S_ISDIR(mode)) return NotFound(opts_.path + ": not a directory on the way");
      if (name == "..") return Invalid(opts_.path + ": '..' is not allowed in --path");
      ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Entry(cur, name)));
      if (!raw) return NotFound(opts_.path + " does not exist in the volume");
      ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(*raw));
      cur = e.inode;
      Attr a;
      RETURN_IF_ERROR(LoadAttr(txn, cur, &a).WithContext(opts_.path));
      mode = a.mode;
    }
    return Status::Ok();
  }));
  if (cur != kRootInode) {
    scope_root_ = cur.value();
    scope_is_dir_ = S_ISDIR(mode);
  }
  return Status::Ok();
}

uint32_t Checker::AddSliceUse(uint64_t id) {
  if (id < slice_uses_.size() && slice_uses_[id] < 255) {
    if (++slice_uses_[id] < 255) return slice_uses_[id];
    slice_uses_big_[id] = 255;
    return 255;
  }
  return ++slice_uses_big_[id];
}

uint32_t Checker::SliceUses(uint64_t id) const {
  if (id < slice_uses_.size() && slice_uses_[id] < 255) return slice_uses_[id];
  auto it = slice_uses_big_.find(id);
  return it == slice_uses_big_.end() ? 0 : it->second;
}

void Checker::VisitChunk(InodeId ino, uint32_t chunk, const std::string& value) {
  auto records = DecodeChunk(value);
  if (!records.ok()) {
    corrupt_.emplace_back(ino.value(), "chunk " + std::to_string(chunk) + ": " +
                                           records.status().message());
    return;
  }
  for (const SliceRecord& r : *records) {
    std::string why;
    if (uint64_t{r.pos} + r.len > kChunkSize) {
      why = "ends past its chunk (pos " + std::to_string(r.pos) + " + len " +
            std::to_string(r.len) + ")";
    } else if (r.id.value() != 0 && uint64_t{r.off} + r.len > r.size) {
      why = "reads past its slice (off " + std::to_string(r.off) + " + len " +
            std::to_string(r.len) + " > size " + std::to_string(r.size) + ")";
    } else if (r.id.value() != 0 && static_cast<int64_t>(r.id.value()) >= next_slice_) {
      why = "names slice " + std::to_string(r.id.value()) +
            ", at or past the nextSlice counter";
    }
    if (!why.empty()) bad_records_.push_back({ino, chunk, r, why});
  }
  // A chunk holds one reference to each distinct slice it names.
  for (const SliceRef& s : meta_internal::DistinctSlices(*records)) {
    if (AddSliceUse(s.id.value()) == 1 && scope_root_ == 0 && objects_) {
      SubmitObjectCheck(s, ino);
    }
  }
}

Status Checker::Visit(const KeyValue& kv) {
  const std::string& key = kv.key;
  if (key.size() >= 10 && key[0] == 'A') {
    const uint64_t ino = GetBig64(key.data() + 1);
    const char tag = key[9];
    if (tag == 'I' && key.size() == 10) {
      auto a = DecodeAttr(kv.value);
      if (!a.ok()) {
        corrupt_.emplace_back(ino, "attributes: " + a.status().message());
        return Status::Ok();
      }
      Node& n = nodes_[ino];
      n.flags |= kHasAttr;
      n.mode = a->mode;
      n.nlink = a->nlink;
      n.ctime_ns = a->ctime_ns;
      report_.inodes++;
      if (a->IsDir()) {
        report_.directories++;
      } else {
        report_.files++;
      }
      // What meta counts: every inode but the root that still has a name,
      // and the rounded length of every such regular file. The unlink of a
      // file's last name takes it out at once, whether it is deleted in the
      // background or still open somewhere.
      if (a->nlink > 0 || a->IsDir()) {
        if (a->IsFile()) space_sum_ += SpaceOf(a->length);
        // The trash's own directories are not counted either.
        if (ino != kRootInode.value() && !IsTrashDir(InodeId(ino))) inode_count_++;
      }
    } else if (tag == 'D' && key.size() >= 18) {
      auto e = DecodeEntry(kv.value);
      if (!e.ok()) {
        corrupt_.emplace_back(ino, "entry '" + key.substr(18) + "': " + e.status().message());
        return Status::Ok();
      }
      Node& child = nodes_[e->inode.value()];
      if (++child.refs == 1) {
        child.entry_dir = ino;
        child.entry_hash = HashOfEntryKey(key);
        child.entry_type = static_cast<uint16_t>((e->type & S_IFMT) >> 12);
      } else {
        extra_entries_[e->inode.value()].push_back({ino, HashOfEntryKey(key), e->type & S_IFMT});
      }
    } else if (tag == 'C' && key.size() == 14) {
      VisitChunk(InodeId(ino), GetBig32(key.data() + 10), kv.value);
    }
  } else if (key.size() == 13 && key[0] == 'K') {
    k_keys_[GetBig64(key.data() + 1)] = {GetBig32(key.data() + 9), kv.value};
  } else if (key.size() == 18 && key[0] == 'S' && key[1] == 'S') {
    auto it = nodes_.find(GetBig64(key.data() + 10));
    if (it != nodes_.end()) it->second.flags |= kHeld;
  } else if (key.size() == 9 && key[0] == 'R') {
    // Unlinked, waiting for background deletion: like a file held open.
    auto it = nodes_.find(GetBig64(key.data() + 1));
    if (it != nodes_.end()) it->second.flags |= kHeld;
  }
  return Status::Ok();
}

bool Checker::InScope(uint64_t ino, int depth) {
  if (scope_root_ == 0 || ino == scope_root_) return true;
  if (ino == kRootInode.value() || depth > kMaxDepth) return false;
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return false;
  if (it->second.flags & kScopeKnown) return it->second.flags & kInScope;
  it->second.flags |= kScopeKnown;  // provisionally out: a cycle ends here
  const Node n = it->second;
  bool in = n.entry_dir != 0 && InScope(n.entry_dir, depth + 1);
  if (!in && n.refs > 1) {
    auto extra = extra_entries_.find(ino);
    if (extra != extra_entries_.end()) {
      for (const EntryLoc& loc : extra->second) {
        if ((in = InScope(loc.dir, depth + 1))) break;
      }
    }
  }
  if (in) nodes_[ino].flags |= kInScope;
  return in;
}

void Checker::SubmitObjectCheck(const SliceRef& slice, InodeId user) {
  if (!pool_) pool_ = std::make_unique<ThreadPool>(opts_.threads);
  {
    // Bounded: the scan waits instead of queueing every slice of the volume.
    std::unique_lock lock(obj_mu_);
    obj_cv_.wait(lock, [&] { return in_flight_ < opts_.threads * 4; });
    in_flight_++;
  }
  pool_->Submit([this, slice, user] {
    auto r = objects_(slice);
    std::lock_guard lock(obj_mu_);
    if (!r.ok()) {
      if (obj_error_.ok()) obj_error_ = r.status();
    } else {
      objects_checked_ += r->checked;
      if (!r->missing.empty()) missing_.push_back({slice, user, std::move(*r)});
    }
    in_flight_--;
    obj_cv_.notify_all();
  });
}

Status Checker::FinishObjectChecks() {
  pool_.reset();  // runs what is queued, then joins
  std::lock_guard lock(obj_mu_);
  report_.objects_checked = objects_checked_;
  return obj_error_;
}

// With a scope, which files are in it is known only after the whole scan:
// their chunks are read again.
Status Checker::CheckObjectsInScope() {
  std::unordered_set<uint64_t> checked;
  return ScanRange("A", "B", [&](const KeyValue& kv) -> Status {
    if (kv.key.size() != 14 || kv.key[9] != 'C') return Status::Ok();
    const uint64_t ino = GetBig64(kv.key.data() + 1);
    if (!InScope(ino)) return Status::Ok();
    auto records = DecodeChunk(kv.value);
    if (!records.ok()) return Status::Ok();  // reported by the scan
    for (const SliceRef& s : meta_internal::DistinctSlices(*records)) {
      if (checked.insert(s.id.value()).second) SubmitObjectCheck(s, InodeId(ino));
    }
    return Status::Ok();
  });
}

std::vector<EntryLoc> Checker::Locations(uint64_t ino, const Node& n) const {
  std::vector<EntryLoc> out;
  if (n.refs == 0) return out;
  out.push_back({n.entry_dir, n.entry_hash, static_cast<uint32_t>(n.entry_type) << 12});
  auto it = extra_entries_.find(ino);
  if (it != extra_entries_.end()) out.insert(out.end(), it->second.begin(), it->second.end());
  return out;
}

Result<std::string> Checker::NameAt(uint64_t dir, uint64_t hash, uint64_t child) {
  std::string name = "?";
  RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(EntriesWithHash(InodeId(dir), hash),
                                               EntriesWithHash(InodeId(dir), hash + 1), 16));
    for (const KeyValue& item : page.items) {
      auto e = DecodeEntry(item.value);
      if (e.ok() && e->inode.value() == child) name = item.key.substr(18);
    }
    return Status::Ok();
  }));
  return name;
}

Result<std::string> Checker::DirPath(uint64_t dir, int depth) {
  if (dir == kRootInode.value()) return std::string();
  if (dir == kTrashInode.value()) return "/" + std::string(kTrashName);
  auto cached = dir_paths_.find(dir);
  if (cached != dir_paths_.end()) return cached->second;
  std::string path;
  auto it = nodes_.find(dir);
  if (depth > kMaxDepth) {
    path = "<unreachable inode " + std::to_string(dir) + ">";
  } else if (it == nodes_.end() || it->second.refs == 0) {
    path = "<orphan inode " + std::to_string(dir) + ">";
  } else {
    const Node n = it->second;
    ASSIGN_OR_RETURN(std::string parent, DirPath(n.entry_dir, depth + 1));
    ASSIGN_OR_RETURN(std::string name, NameAt(n.entry_dir, n.entry_hash, dir));
    path = parent + "/" + name;
  }
  dir_paths_[dir] = path;
  return path;
}

Result<std::vector<std::string>> Checker::PathsOf(uint64_t ino) {
  std::vector<std::string> out;
  if (ino == kRootInode.value()) return std::vector<std::string>{"/"};
  auto it = nodes_.find(ino);
  if (it == nodes_.end() || it->second.refs == 0) {
    out.push_back("<orphan inode " + std::to_string(ino) + ">");
    return out;
  }
  for (const EntryLoc& loc : Locations(ino, it->second)) {
    ASSIGN_OR_RETURN(std::string parent, DirPath(loc.dir));
    ASSIGN_OR_RETURN(std::string name, NameAt(loc.dir, loc.hash, ino));
    out.push_back(parent + "/" + name);
  }
  return out;
}

// The subdirectories of `dir` in one transaction, counted from the
// children's own types (entries can lie about theirs).
Result<uint32_t> CountSubdirs(KvTxn& txn, InodeId dir, size_t page_size) {
  uint32_t subdirs = 0;
  std::string from = keys::EntriesBegin(dir);
  const std::string end = keys::EntriesEnd(dir);
  while (true) {
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, page_size));
    std::vector<std::string> attr_keys;
    for (const KeyValue& item : page.items) {
      auto e = DecodeEntry(item.value);
      if (e.ok()) attr_keys.push_back(keys::Attr(e->inode));
    }
    if (!attr_keys.empty()) {
      ASSIGN_OR_RETURN(auto attrs, txn.BatchGet(attr_keys));
      for (const auto& raw : attrs) {
        if (!raw) continue;
        auto child = DecodeAttr(*raw);
        if (child.ok() && child->IsDir()) subdirs++;
      }
    }
    if (!page.more || page.items.empty()) break;
    from = page.items.back().key + '\0';
  }
  return subdirs;
}

// Counts a directory's subdirectories by their own attributes, in one
// transaction, and compares with its nlink there: exact even while mounted.
Status Checker::VerifyDirLinks(uint64_t ino) {
  Attr a;
  uint32_t subdirs = 0;
  bool exists = true;
  RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
    subdirs = 0;
    exists = true;
    Status st = LoadAttr(txn, InodeId(ino), &a);
    if (st.Is(StatusCode::kNotFound)) {
      exists = false;
      return Status::Ok();
    }
    RETURN_IF_ERROR(st);
    ASSIGN_OR_RETURN(subdirs, CountSubdirs(txn, InodeId(ino), opts_.page_size));
    return Status::Ok();
  }));
  if (!exists || !a.IsDir() || a.nlink == 2 + subdirs) return Status::Ok();
  FsckFinding f;
  f.kind = FsckKind::kLinkCount;
  f.inode = InodeId(ino);
  ASSIGN_OR_RETURN(f.paths, PathsOf(ino));
  f.expected = 2 + subdirs;
  f.stored = a.nlink;
  f.detail = "directory nlink is " + std::to_string(a.nlink) + ", expected " +
             std::to_string(2 + subdirs) + " (2 + " + std::to_string(subdirs) +
             " subdirectories)";
  f.repairable = true;
  Fix fix;
  fix.seen.mode = a.mode;
  Add(std::move(f), fix);
  return Status::Ok();
}

Status Checker::CheckEntries(uint64_t child, const Node& n) {
  for (const EntryLoc& loc : Locations(child, n)) {
    if (!InScope(loc.dir)) continue;
    const bool dangling = !(n.flags & kHasAttr);
    if (!dangling && loc.type == (n.mode & S_IFMT)) continue;
    // Again in a fresh transaction: the entry as it is now, and its inode.
    std::string name;
    bool still = false;
    uint32_t type = 0, mode = 0;
    RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
      still = false;
      ASSIGN_OR_RETURN(ScanResult page,
                       txn.Scan(EntriesWithHash(InodeId(loc.dir), loc.hash),
                                EntriesWithHash(InodeId(loc.dir), loc.hash + 1), 16));
      for (const KeyValue& item : page.items) {
        auto e = DecodeEntry(item.value);
        if (!e.ok() || e->inode.value() != child) continue;
        name = item.key.substr(18);
        type = e->type & S_IFMT;
        ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Attr(InodeId(child))));
        if (dangling) {
          still = !raw;
        } else if (raw) {
          ASSIGN_OR_RETURN(Attr a, DecodeAttr(*raw));
          mode = a.mode & S_IFMT;
          still = type != mode;
        }
      }
      return Status::Ok();
    }));
    if (!still) continue;
    FsckFinding f;
    f.kind = dangling ? FsckKind::kDanglingEntry : FsckKind::kEntryType;
    f.inode = InodeId(child);
    ASSIGN_OR_RETURN(std::string parent, DirPath(loc.dir));
    f.paths = {parent + "/" + name};
    f.detail = dangling ? "entry names inode " + std::to_string(child) + ", which does not exist"
                        : "entry says " + TypeWord(type) + ", inode " + std::to_string(child) +
                              " is a " + TypeWord(mode);
    f.repairable = true;
    Fix fix;
    fix.dir = loc.dir;
    fix.hash = loc.hash;
    Add(std::move(f), fix);
  }
  return Status::Ok();
}

// Link counts of non-directories and orphans depend on entries anywhere in
// the volume: the suspects' entries are counted again by a second scan, and
// a suspect is reported only when that count and its attributes (ctime
// changes with every link count change) are what the first scan saw.
Status Checker::VerifyLinksAndOrphans(const std::vector<uint64_t>& suspects) {
  if (suspects.empty()) return Status::Ok();
  std::unordered_map<uint64_t, uint32_t> recount;
  for (uint64_t ino : suspects) recount[ino] = 0;
  RETURN_IF_ERROR(ScanRange("A", "B", [&](const KeyValue& kv) -> Status {
    if (kv.key.size() < 18 || kv.key[9] != 'D') return Status::Ok();
    auto e = DecodeEntry(kv.value);
    if (!e.ok()) return Status::Ok();
    auto it = recount.find(e->inode.value());
    if (it != recount.end()) it->second++;
    return Status::Ok();
  }));
  for (uint64_t ino : suspects) {
    const Node& n = nodes_[ino];
    Attr a;
    bool same = false, held = false;
    RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
      same = false;
      Status st = LoadAttr(txn, InodeId(ino), &a);
      if (st.Is(StatusCode::kNotFound)) return Status::Ok();
      RETURN_IF_ERROR(st);
      ASSIGN_OR_RETURN(held, HeldInTxn(txn, InodeId(ino)));
      same = a.ctime_ns == n.ctime_ns && a.nlink == n.nlink && a.mode == n.mode &&
             held == ((n.flags & kHeld) != 0);
      return Status::Ok();
    }));
    if (!same || recount[ino] != n.refs) continue;
    FsckFinding f;
    f.inode = InodeId(ino);
    f.repairable = true;
    ASSIGN_OR_RETURN(f.paths, PathsOf(ino));
    if (n.refs == 0 && !held) {
      f.kind = FsckKind::kOrphan;
      f.detail = TypeWord(n.mode) + " with nlink " + std::to_string(n.nlink) +
                 " that no entry names and no session holds open";
    } else {
      f.kind = FsckKind::kLinkCount;
      f.expected = n.refs;
      f.stored = n.nlink;
      f.detail = "nlink is " + std::to_string(n.nlink) + ", expected " + std::to_string(n.refs) +
                 (n.refs == 1 ? " entry" : " entries") + (held ? " (open after unlink)" : "");
    }
    Fix fix;
    fix.seen = n;
    Add(std::move(f), fix);
  }
  return Status::Ok();
}

Result<bool> Checker::HeldInTxn(KvTxn& txn, InodeId ino) {
  ASSIGN_OR_RETURN(auto reclaim, txn.Get(keys::Reclaim(ino)));
  if (reclaim) return true;
  // SS keys are ordered by session first: they are few, read them all.
  std::string from = "SS";
  while (true) {
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, "ST", opts_.page_size));
    for (const KeyValue& item : page.items) {
      if (item.key.size() == 18 && GetBig64(item.key.data() + 10) == ino.value()) return true;
    }
    if (!page.more || page.items.empty()) return false;
    from = page.items.back().key + '\0';
  }
}

Status Checker::CheckTree() {
  // Subdirectories by the children's own type; entries without an inode
  // do not count.
  for (const auto& [ino, n] : nodes_) {
    if (!(n.flags & kHasAttr) || !S_ISDIR(n.mode)) continue;
    for (const EntryLoc& loc : Locations(ino, n)) {
      auto dir = nodes_.find(loc.dir);
      if (dir != nodes_.end()) dir->second.subdirs++;
    }
  }
  std::vector<uint64_t> dirs, suspects;
  std::vector<uint64_t> entry_problems;
  for (const auto& [ino, n] : nodes_) {
    if (n.refs > 0) {
      bool bad = !(n.flags & kHasAttr);
      for (const EntryLoc& loc : Locations(ino, n)) bad |= loc.type != (n.mode & S_IFMT);
      if (bad) entry_problems.push_back(ino);
    }
    if (!(n.flags & kHasAttr)) continue;
    // The trash is named by the root without an entry; its directories keep
    // nlink 1 (see meta_trash.cc).
    const bool root = ino == kRootInode.value() || ino == kTrashInode.value();
    if (S_ISDIR(n.mode)) {
      if (n.nlink != 2 + n.subdirs && !IsTrashDir(InodeId(ino)) && InScope(ino)) dirs.push_back(ino);
      if (!root && n.refs == 0 && scope_root_ == 0) suspects.push_back(ino);
    } else if (n.refs == 0) {
      if (n.flags & kHeld) {
        if (n.nlink != 0 && scope_root_ == 0) suspects.push_back(ino);
      } else if (scope_root_ == 0) {
        suspects.push_back(ino);
      }
    } else if (n.nlink != n.refs && InScope(ino)) {
      suspects.push_back(ino);
    }
  }
  for (uint64_t ino : entry_problems) RETURN_IF_ERROR(CheckEntries(ino, nodes_[ino]));
  for (uint64_t ino : dirs) RETURN_IF_ERROR(VerifyDirLinks(ino));
  return VerifyLinksAndOrphans(suspects);
}

Status Checker::CheckSlices() {
  for (const BadRecord& b : bad_records_) {
    if (!InScope(b.inode.value())) continue;
    bool still = false;
    int64_t next_slice = 0;
    RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
      still = false;
      ASSIGN_OR_RETURN(next_slice, GetCounter(txn, keys::kNextSlice));
      ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Chunk(b.inode, b.chunk)));
      if (!raw) return Status::Ok();
      ASSIGN_OR_RETURN(auto records, DecodeChunk(*raw));
      for (const SliceRecord& r : records) still |= r == b.record;
      return Status::Ok();
    }));
    // An id past the counter at the start may have been handed out since.
    const SliceRecord& r = b.record;
    if (!still || (r.pos + uint64_t{r.len} <= kChunkSize && uint64_t{r.off} + r.len <= r.size &&
                   static_cast<int64_t>(r.id.value()) < next_slice)) {
      continue;
    }
    FsckFinding f;
    f.kind = FsckKind::kBadSlice;
    f.inode = b.inode;
    ASSIGN_OR_RETURN(f.paths, PathsOf(b.inode.value()));
    f.detail = "chunk " + std::to_string(b.chunk) + ": slice record (id " +
               std::to_string(r.id.value()) + ", size " + std::to_string(r.size) + ") " + b.why;
    Add(std::move(f));
  }
  for (const auto& [ino, what] : corrupt_) {
    if (!InScope(ino)) continue;
    FsckFinding f;
    f.kind = FsckKind::kCorruptRecord;
    f.inode = InodeId(ino);
    ASSIGN_OR_RETURN(f.paths, PathsOf(ino));
    f.detail = what;
    Add(std::move(f));
  }
  return Status::Ok();
}

// K<id><size> holds the number of chunks referencing a slice when that is
// two or more (txn_util AddSliceRef/ReleaseSlice); absent means one.
Status Checker::CheckSliceRefs() {
  auto stored_refs = [](const std::string& v) -> int64_t {
    return v.size() == 8 ? static_cast<int64_t>(GetBig64(v.data())) : -1;
  };
  std::unordered_map<uint64_t, uint32_t> suspects;  // id -> size
  for (const auto& [id, k] : k_keys_) {
    const uint32_t uses = SliceUses(id);
    if (uses == 0 || stored_refs(k.second) != std::max<int64_t>(uses, 1)) suspects[id] = k.first;
  }
  auto check_id = [&](uint64_t id, uint32_t uses) {
    if (uses >= 2 && !k_keys_.count(id)) suspects[id] = 0;
  };
  for (uint64_t id = 0; id < slice_uses_.size(); ++id) {
    if (slice_uses_[id] >= 2 && slice_uses_[id] < 255) check_id(id, slice_uses_[id]);
  }
  for (const auto& [id, uses] : slice_uses_big_) check_id(id, uses);
  if (suspects.empty()) return Status::Ok();

  // Count again, then compare with the K key as it is now.
  std::unordered_map<uint64_t, uint32_t> recount;
  std::unordered_map<uint64_t, uint64_t> user;  // a file holding it, for the path
  for (const auto& [id, size] : suspects) recount[id] = 0;
  RETURN_IF_ERROR(ScanRange("A", "B", [&](const KeyValue& kv) -> Status {
    if (kv.key.size() != 14 || kv.key[9] != 'C') return Status::Ok();
    auto records = DecodeChunk(kv.value);
    if (!records.ok()) return Status::Ok();
    for (const SliceRef& s : meta_internal::DistinctSlices(*records)) {
      auto it = recount.find(s.id.value());
      if (it == recount.end()) continue;
      it->second++;
      user.emplace(s.id.value(), GetBig64(kv.key.data() + 1));
      if (suspects[s.id.value()] == 0) suspects[s.id.value()] = s.size;
    }
    return Status::Ok();
  }));
  for (const auto& [id, size] : suspects) {
    const uint32_t uses = SliceUses(id);
    if (recount[id] != uses) continue;  // changed during the scan
    std::optional<std::string> now;
    RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
      ASSIGN_OR_RETURN(now, txn.Get(keys::SliceRefs(SliceId(id), size)));
      return Status::Ok();
    }));
    auto k = k_keys_.find(id);
    const std::optional<std::string> before =
        k == k_keys_.end() ? std::nullopt : std::optional<std::string>(k->second.second);
    if (now != before) continue;
    const int64_t stored = before ? stored_refs(*before) : 1;
    FsckFinding f;
    f.kind = FsckKind::kSliceRefs;
    if (user.count(id)) {
      f.inode = InodeId(user[id]);
      ASSIGN_OR_RETURN(f.paths, PathsOf(user[id]));
    }
    f.expected = uses;
    f.stored = stored;
    f.detail = "slice " + std::to_string(id) + " (size " + std::to_string(size) + ") is named by " +
               std::to_string(uses) + (uses == 1 ? " chunk" : " chunks") + ", its reference count " +
               (before ? "key says " + std::to_string(stored) : std::string("key is absent (1)"));
    f.repairable = true;
    Fix fix;
    fix.slice = id;
    fix.size = size;
    fix.k_before = before;
    Add(std::move(f), fix);
  }
  return Status::Ok();
}

// The counters move with every create, remove and size change, so they are
// compared only when they did not move between the start and the end of the
// scan (then the scan's sums are what they should hold).
Status Checker::CheckCounters() {
  int64_t space = 0, inodes = 0, next_slice = 0;
  RETURN_IF_ERROR(ReadCounters(&space, &inodes, &next_slice));
  if (space != space_seen_ || inodes != inodes_seen_) {
    report_.notes.push_back(
        "the usage counters changed during the scan (the volume is in use): not checked");
    return Status::Ok();
  }
  const struct {
    FsckKind kind;
    int64_t stored, expected;
    const char* what;
  } counters[] = {
      {FsckKind::kUsedSpace, space, static_cast<int64_t>(space_sum_), "usedSpace"},
      {FsckKind::kUsedInodes, inodes, static_cast<int64_t>(inode_count_), "usedInodes"},
  };
  for (const auto& c : counters) {
    if (c.stored == c.expected) continue;
    FsckFinding f;
    f.kind = c.kind;
    f.expected = c.expected;
    f.stored = c.stored;
    f.detail = std::string("counter ") + c.what + " is " + std::to_string(c.stored) +
               ", expected " + std::to_string(c.expected);
    f.repairable = true;
    Fix fix;
    fix.counter_seen = c.stored;
    Add(std::move(f), fix);
  }
  return Status::Ok();
}

// A missing block counts only if some file still names its slice (a file
// removed during the scan has its blocks deleted) and it is still missing.
Status Checker::VerifyMissing() {
  if (missing_.empty()) return Status::Ok();
  std::unordered_map<uint64_t, std::vector<uint64_t>> users;
  bool shared = false;
  for (const MissingSlice& m : missing_) {
    users[m.slice.id.value()].push_back(m.first_user.value());
    shared |= SliceUses(m.slice.id.value()) > 1;
  }
  if (shared) {
    // Every file naming a shared slice loses data with it.
    RETURN_IF_ERROR(ScanRange("A", "B", [&](const KeyValue& kv) -> Status {
      if (kv.key.size() != 14 || kv.key[9] != 'C') return Status::Ok();
      const uint64_t ino = GetBig64(kv.key.data() + 1);
      auto records = DecodeChunk(kv.value);
      if (!records.ok()) return Status::Ok();
      for (const SliceRef& s : meta_internal::DistinctSlices(*records)) {
        auto it = users.find(s.id.value());
        if (it == users.end()) continue;
        if (std::find(it->second.begin(), it->second.end(), ino) == it->second.end()) {
          it->second.push_back(ino);
        }
      }
      return Status::Ok();
    }));
  }
  for (const MissingSlice& m : missing_) {
    std::vector<uint64_t> still;
    for (uint64_t ino : users[m.slice.id.value()]) {
      bool names = false;
      RETURN_IF_ERROR(WithReadTransaction(kv_, [&](KvTxn& txn) -> Status {
        names = false;
        std::string from = keys::ChunksBegin(InodeId(ino));
        const std::string end = keys::ChunksEnd(InodeId(ino));
        while (!names) {
          ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 256));
          for (const KeyValue& item : page.items) {
            auto records = DecodeChunk(item.value);
            if (!records.ok()) continue;
            for (const SliceRecord& r : *records) names |= r.id == m.slice.id;
          }
          if (!page.more || page.items.empty()) break;
          from = page.items.back().key + '\0';
        }
        return Status::Ok();
      }));
      if (names) still.push_back(ino);
    }
    if (still.empty()) continue;
    ASSIGN_OR_RETURN(SliceObjects now, objects_(m.slice));
    if (now.missing.empty()) continue;
    FsckFinding f;
    f.kind = FsckKind::kMissingObject;
    f.inode = InodeId(still.front());
    for (uint64_t ino : still) {
      ASSIGN_OR_RETURN(auto paths, PathsOf(ino));
      f.paths.insert(f.paths.end(), paths.begin(), paths.end());
    }
    f.detail = "slice " + std::to_string(m.slice.id.value()) + ": " +
               std::to_string(now.missing.size()) + " of " + std::to_string(now.checked) +
               " block objects missing:";
    constexpr size_t kListed = 4;
    for (size_t i = 0; i < now.missing.size() && i < kListed; ++i) f.detail += " " + now.missing[i];
    if (now.missing.size() > kListed) {
      f.detail += " and " + std::to_string(now.missing.size() - kListed) + " more";
    }
    Add(std::move(f));
  }
  return Status::Ok();
}

// ---- repairs: each its own transaction, re-checking what it fixes ----

Status Checker::RepairDirLinks(FsckFinding* f) {
  const InodeId ino = f->inode;
  return WithTransaction(kv_, [&](KvTxn& txn) -> Status {
    f->repaired = false;
    Attr a;
    RETURN_IF_ERROR(LoadAttr(txn, ino, &a));
    ASSIGN_OR_RETURN(uint32_t subdirs, CountSubdirs(txn, ino, opts_.page_size));
    if (a.nlink != 2 + subdirs) {
      a.nlink = 2 + subdirs;
      PutAttr(txn, ino, a);
    }
    f->repaired = true;
    return Status::Ok();
  });
}

// A file with no link is out of the usage counters; one that a repair names
// again is put back in. Returns the space it adds.
int64_t Recount(KvTxn& txn, const Attr& a) {
  const int64_t space = a.IsFile() ? static_cast<int64_t>(SpaceOf(a.length)) : 0;
  meta_internal::IncrementCounter(txn, keys::kUsedInodes, 1);
  if (space != 0) meta_internal::IncrementCounter(txn, keys::kUsedSpace, space);
  return space;
}

void Checker::NoteRecounted(std::optional<int64_t> space) {
  if (!space) return;
  inodes_added_++;
  space_added_ += *space;
}

Status Checker::RepairFileLinks(FsckFinding* f, const Fix& fix) {
  std::optional<int64_t> recounted;
  RETURN_IF_ERROR(WithTransaction(kv_, [&](KvTxn& txn) -> Status {
    f->repaired = false;
    recounted.reset();
    Attr a;
    Status st = LoadAttr(txn, f->inode, &a);
    if (st.Is(StatusCode::kNotFound)) return Status::Ok();
    RETURN_IF_ERROR(st);
    // Unchanged since it was verified: the count found then still holds.
    if (a.ctime_ns != fix.seen.ctime_ns || a.nlink != fix.seen.nlink) return Status::Ok();
    if (a.nlink == 0 && *f->expected > 0) recounted = Recount(txn, a);
    a.nlink = static_cast<uint32_t>(*f->expected);
    PutAttr(txn, f->inode, a);
    f->repaired = true;
    return Status::Ok();
  }));
  NoteRecounted(recounted);
  return Status::Ok();
}

Status Checker::RepairEntry(FsckFinding* f, const Fix& fix) {
  const bool remove = f->kind == FsckKind::kDanglingEntry;
  return WithTransaction(kv_, [&](KvTxn& txn) -> Status {
    f->repaired = false;
    ASSIGN_OR_RETURN(ScanResult page,
                     txn.Scan(EntriesWithHash(InodeId(fix.dir), fix.hash),
                              EntriesWithHash(InodeId(fix.dir), fix.hash + 1), 16));
    for (const KeyValue& item : page.items) {
      auto e = DecodeEntry(item.value);
      if (!e.ok() || e->inode != f->inode) continue;
      ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Attr(f->inode)));
      if (remove) {
        if (raw) return Status::Ok();  // the inode is back
        txn.Delete(item.key);
      } else {
        if (!raw) return Status::Ok();
        ASSIGN_OR_RETURN(Attr a, DecodeAttr(*raw));
        if ((a.mode & S_IFMT) == e->type) return Status::Ok();
        txn.Put(item.key, EncodeEntry({a.mode & S_IFMT, f->inode}));
      }
      f->repaired = true;
    }
    return Status::Ok();
  });
}

Result<InodeId> Checker::LostAndFound() {
  if (lost_found_.value() != 0) return lost_found_;
  bool created = false;
  InodeId ino;
  RETURN_IF_ERROR(WithTransaction(kv_, [&](KvTxn& txn) -> Status {
    created = false;
    ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Entry(kRootInode, kLostFound)));
    if (raw) {
      ASSIGN_OR_RETURN(DirEntryValue e, DecodeEntry(*raw));
      Attr a;
      RETURN_IF_ERROR(LoadAttr(txn, e.inode, &a));
      if (!a.IsDir()) return Status(StatusCode::kNotDir, "/lost+found is not a directory");
      ino = e.inode;
      return Status::Ok();
    }
    // Clients take inode numbers from this counter in batches: the next
    // number is free.
    ASSIGN_OR_RETURN(int64_t next, AddCounter(txn, keys::kNextInode, 1));
    ino = InodeId(static_cast<uint64_t>(next - 1));
    Attr root;
    RETURN_IF_ERROR(LoadAttr(txn, kRootInode, &root));
    const int64_t now = NowNanos();
    Attr a;
    a.mode = S_IFDIR | 0700;
    a.atime_ns = a.mtime_ns = a.ctime_ns = now;
    a.nlink = 2;
    a.parent = kRootInode;
    PutAttr(txn, ino, a);
    txn.Put(keys::Entry(kRootInode, kLostFound), EncodeEntry({S_IFDIR, ino}));
    root.nlink++;
    root.mtime_ns = root.ctime_ns = now;
    PutAttr(txn, kRootInode, root);
    ASSIGN_OR_RETURN(int64_t used, AddCounter(txn, keys::kUsedInodes, 1));
    (void)used;
    created = true;
    return Status::Ok();
  }));
  if (created) inodes_added_++;
  lost_found_ = ino;
  return ino;
}

// Moves an orphan to /lost+found/<inode>, so that nothing is deleted.
Status Checker::RepairOrphan(FsckFinding* f, const Fix& fix) {
  ASSIGN_OR_RETURN(InodeId lf, LostAndFound());
  const std::string name = std::to_string(f->inode.value());
  std::optional<int64_t> recounted;
  RETURN_IF_ERROR(WithTransaction(kv_, [&](KvTxn& txn) -> Status {
    f->repaired = false;
    recounted.reset();
    Attr a, dir;
    Status st = LoadAttr(txn, f->inode, &a);
    if (st.Is(StatusCode::kNotFound)) return Status::Ok();
    RETURN_IF_ERROR(st);
    if (a.ctime_ns != fix.seen.ctime_ns || a.nlink != fix.seen.nlink) return Status::Ok();
    ASSIGN_OR_RETURN(bool held, HeldInTxn(txn, f->inode));
    if (held) return Status::Ok();
    RETURN_IF_ERROR(LoadAttr(txn, lf, &dir));
    ASSIGN_OR_RETURN(auto existing, txn.Get(keys::Entry(lf, name)));
    if (existing) return Exists("/lost+found/" + name + " exists already");
    const int64_t now = NowNanos();
    txn.Put(keys::Entry(lf, name), EncodeEntry({a.mode & S_IFMT, f->inode}));
    if (a.IsDir()) {
      a.parent = lf;
      dir.nlink++;
    } else {
      if (a.nlink == 0) recounted = Recount(txn, a);
      a.nlink = 1;
    }
    a.ctime_ns = now;
    PutAttr(txn, f->inode, a);
    dir.mtime_ns = dir.ctime_ns = now;
    PutAttr(txn, lf, dir);
    f->repaired = true;
    return Status::Ok();
  }));
  NoteRecounted(recounted);
  if (f->repaired) f->detail += "; moved to /lost+found/" + name;
  return Status::Ok();
}

Status Checker::RepairSliceRefs(FsckFinding* f, const Fix& fix) {
  return WithTransaction(kv_, [&](KvTxn& txn) -> Status {
    f->repaired = false;
    const std::string key = keys::SliceRefs(SliceId(fix.slice), fix.size);
    ASSIGN_OR_RETURN(auto now, txn.Get(key));
    if (now != fix.k_before) return Status::Ok();  // changed since: leave it to the next run
    if (*f->expected >= 2) {
      txn.Put(key, EncodeCounterValue(static_cast<uint64_t>(*f->expected)));
    } else {
      txn.Delete(key);  // one reference is implicit; none is a stale key
    }
    f->repaired = true;
    return Status::Ok();
  });
}

Status Checker::RepairCounter(FsckFinding* f, const Fix& fix) {
  const std::string_view name =
      f->kind == FsckKind::kUsedSpace ? keys::kUsedSpace : keys::kUsedInodes;
  const int64_t ours = f->kind == FsckKind::kUsedInodes ? inodes_added_ : space_added_;
  return WithTransaction(kv_, [&](KvTxn& txn) -> Status {
    f->repaired = false;
    ASSIGN_OR_RETURN(int64_t now, GetCounter(txn, name));
    if (now != fix.counter_seen + ours) return Status::Ok();  // in use: moved meanwhile
    txn.Put(keys::Counter(name), EncodeCounterValue(static_cast<uint64_t>(*f->expected + ours)));
    f->repaired = true;
    return Status::Ok();
  });
}

Status Checker::Repair(FsckFinding* f) {
  const Fix& fix = fixes_[static_cast<size_t>(f - report_.findings.data())];
  switch (f->kind) {
    case FsckKind::kLinkCount:
      return S_ISDIR(fix.seen.mode) ? RepairDirLinks(f) : RepairFileLinks(f, fix);
    case FsckKind::kDanglingEntry:
    case FsckKind::kEntryType: return RepairEntry(f, fix);
    case FsckKind::kOrphan: return RepairOrphan(f, fix);
    case FsckKind::kSliceRefs: return RepairSliceRefs(f, fix);
    case FsckKind::kUsedSpace:
    case FsckKind::kUsedInodes: return RepairCounter(f, fix);
    default: return Status::Ok();
  }
}

Result<FsckReport> Checker::Run() {
  const auto start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(Meta::LoadSettings(kv_).status());
  RETURN_IF_ERROR(ResolveScope());
  RETURN_IF_ERROR(ReadCounters(&space_seen_, &inodes_seen_, &next_slice_));
  // One byte per slice id handed out; a corrupt counter must not make it huge.
  constexpr int64_t kMaxDense = int64_t{1} << 32;
  slice_uses_.assign(static_cast<size_t>(std::clamp<int64_t>(next_slice_, 0, kMaxDense)), 0);

  Status scan = ScanRange("", "", [&](const KeyValue& kv) { return Visit(kv); });
  if (scan.ok() && objects_ && scope_root_ != 0) scan = CheckObjectsInScope();
  Status objects = FinishObjectChecks();  // always: the pool must stop before returning
  RETURN_IF_ERROR(scan);
  RETURN_IF_ERROR(objects);
  for (uint64_t id = 0; id < slice_uses_.size(); ++id) report_.slices += slice_uses_[id] ? 1 : 0;
  for (const auto& [id, uses] : slice_uses_big_) {
    if (id >= slice_uses_.size()) report_.slices++;
  }
  if (scope_root_ == 0) {
    RETURN_IF_ERROR(CheckCounters());
  } else {
    report_.notes.push_back(
        "with --path, the usage counters, slice reference counts and orphans (volume-wide) "
        "are not checked");
  }
  RETURN_IF_ERROR(CheckTree());
  RETURN_IF_ERROR(CheckSlices());
  if (scope_root_ == 0) RETURN_IF_ERROR(CheckSliceRefs());
  RETURN_IF_ERROR(VerifyMissing());

  bool writeback_pending = false;
  if (!missing_.empty()) {
    ASSIGN_OR_RETURN(auto sessions, Meta::ListSessions(kv_));
    for (const SessionRecord& r : sessions) writeback_pending |= r.info.pending_uploads > 0;
  }
  for (auto& f : report_.findings) {
    if (f.kind == FsckKind::kMissingObject && writeback_pending) {
      f.detail += " (a --writeback mount has blocks waiting for upload: they may be among them)";
    }
  }

  if (opts_.repair) {
    // Entries first, then link counts (which count entries), orphans,
    // reference counts, and the counters last (lost+found adds an inode).
    const FsckKind order[] = {FsckKind::kDanglingEntry, FsckKind::kEntryType,
                              FsckKind::kLinkCount,     FsckKind::kOrphan,
                              FsckKind::kSliceRefs,     FsckKind::kUsedSpace,
                              FsckKind::kUsedInodes};
    for (FsckKind kind : order) {
      for (FsckFinding& f : report_.findings) {
        if (f.kind != kind || !f.repairable) continue;
        Status st = Repair(&f);
        if (!st.ok()) {
          report_.notes.push_back("could not repair " + std::string(FsckKindName(f.kind)) +
                                  " of inode " + std::to_string(f.inode.value()) + ": " +
                                  st.ToString());
        }
      }
    }
  }
  report_.elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return std::move(report_);
}

}  // namespace

Result<FsckReport> CheckVolume(KvStore& kv, const FsckOptions& options,
                               const CheckSliceObjects& objects) {
  Checker checker(kv, options, objects);
  return checker.Run();
}

}  // namespace tessera
