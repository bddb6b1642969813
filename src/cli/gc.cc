#include "cli/gc.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "common/coding.h"
#include "common/thread_pool.h"
#include "common/units.h"
#include "data/slice_store.h"
#include "meta/attr.h"
#include "meta/keys.h"
#include "meta/txn_util.h"

namespace tessera {
namespace {

// A slice's entry in the table: its size in the low bits (slices live in a
// 64 MiB chunk, so 27 bits hold any size) and what the scan found.
constexpr uint32_t kSizeBits = 27;
constexpr uint32_t kSizeMask = (uint32_t{1} << kSizeBits) - 1;
constexpr uint32_t kReferenced = uint32_t{1} << 27;  // a chunk of a file with a link
constexpr uint32_t kOpenUse = uint32_t{1} << 28;     // a chunk of an unlinked file held open (SS)
constexpr uint32_t kReclaimUse = uint32_t{1} << 29;  // a chunk of an unlinked file (R)
constexpr uint32_t kToDelete = uint32_t{1} << 30;    // a deletion record (G or L)
constexpr uint32_t kCandidate = uint32_t{1} << 31;   // has leaked objects to delete
constexpr uint32_t kInChunk = kReferenced | kOpenUse | kReclaimUse;
constexpr uint32_t kUses = kInChunk | kToDelete;
// Deletion records of slices with these are never acted on: some file can
// still read them (the records are wrong, or the slice was freed after the
// scan and a mount deletes it). The chunks of R files go in this run.
constexpr uint32_t kReadable = kReferenced | kOpenUse;

// Slice ids kept in the dense table at most (4 bytes each); a larger
// counter is taken for corrupt and the ids past it go to a hash map.
constexpr uint64_t kMaxDense = uint64_t{1} << 30;
// Leaked keys shown in the report.
constexpr size_t kExamples = 5;
// Attributes of unlinked files read per transaction.
constexpr size_t kAttrBatch = 256;
// Freed and due slices read per page.
constexpr size_t kSlicePage = 1024;
constexpr size_t kDuePage = 256;
// Progress reports at most this often.
constexpr int64_t kProgressEveryNs = 200'000'000;

// What the scan knows of each slice id: a word per id below the nextSlice
// counter, and maps for the rare rest (ids past it, sizes that do not fit
// the word, a slice named with more than one size by corrupt records).
class SliceTable {
 public:
  void Reset(uint64_t dense) { dense_.assign(dense, 0); }

  // Notes a use of slice `id` of `size` bytes (flag: kReferenced...).
  void Note(uint64_t id, uint32_t size, uint32_t flag) {
    uint32_t& w = Slot(id);
    if (!sizes_.empty()) {
      auto it = sizes_.find(id);
      if (it != sizes_.end()) {
        w |= flag;
        if (std::find(it->second.begin(), it->second.end(), size) == it->second.end()) {
          it->second.push_back(size);
        }
        return;
      }
    }
    if ((w & kUses) == 0) {
      if (size <= kSizeMask) {
        w = (w & kCandidate) | size | flag;
      } else {
        w = (w & kCandidate) | flag;
        sizes_[id] = {size};
      }
      return;
    }
    w |= flag;
    if ((w & kSizeMask) != size) {
      sizes_[id] = {w & kSizeMask, size};
      w &= ~kSizeMask;
    }
  }

  uint32_t Flags(uint64_t id) const {
    if (id < dense_.size()) return dense_[id] & ~kSizeMask;
    auto it = sparse_.find(id);
    return it == sparse_.end() ? 0 : it->second & ~kSizeMask;
  }

  void SetFlag(uint64_t id, uint32_t flag) { Slot(id) |= flag; }

  // Whether a block `index` of `block_bytes` bytes belongs to the slice
  // (with blocks of `block_size`) under any size it was noted with.
  bool Fits(uint64_t id, uint64_t index, uint64_t block_bytes, uint64_t block_size) const {
    auto fits = [&](uint64_t size) {
      if (index >= (size + block_size - 1) / block_size) return false;
      return block_bytes == std::min(block_size, size - index * block_size);
    };
    if (!sizes_.empty()) {
      auto it = sizes_.find(id);
      if (it != sizes_.end()) return std::any_of(it->second.begin(), it->second.end(), fits);
    }
    uint32_t w = 0;
    if (id < dense_.size()) {
      w = dense_[id];
    } else if (auto it = sparse_.find(id); it != sparse_.end()) {
      w = it->second;
    }
    return fits(w & kSizeMask);
  }

  // Calls fn(id) for each id with `flag`, in ascending order.
  template <typename Fn>
  void ForEach(uint32_t flag, Fn fn) const {
    for (uint64_t id = 0; id < dense_.size(); ++id) {
      if (dense_[id] & flag) fn(id);
    }
    std::vector<uint64_t> rest;
    for (const auto& [id, w] : sparse_) {
      if (w & flag) rest.push_back(id);
    }
    std::sort(rest.begin(), rest.end());
    for (uint64_t id : rest) fn(id);
  }

 private:
  uint32_t& Slot(uint64_t id) { return id < dense_.size() ? dense_[id] : sparse_[id]; }

  std::vector<uint32_t> dense_;
  std::unordered_map<uint64_t, uint32_t> sparse_;
  std::unordered_map<uint64_t, std::vector<uint32_t>> sizes_;
};

// A decimal number as SliceStore writes it: digits, no leading zero, no sign.
bool ParseNumber(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19 || (s.size() > 1 && s[0] == '0')) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

struct BlockName {
  uint64_t id = 0;
  uint64_t index = 0;
  uint64_t bytes = 0;
};

// "<id / 1000000>/<id / 1000>/<id>_<index>_<bytes>": the part of a block key
// after "<volume>/chunks/". Anything else (or a block in the wrong folder,
// where no reader would look for it) is not a block name.
bool ParseBlockName(std::string_view rest, BlockName* out) {
  const size_t s1 = rest.find('/');
  if (s1 == std::string_view::npos) return false;
  const size_t s2 = rest.find('/', s1 + 1);
  if (s2 == std::string_view::npos) return false;
  std::string_view name = rest.substr(s2 + 1);
  const size_t u1 = name.find('_');
  if (u1 == std::string_view::npos) return false;
  const size_t u2 = name.find('_', u1 + 1);
  if (u2 == std::string_view::npos) return false;
  uint64_t top = 0, mid = 0;
  if (!ParseNumber(rest.substr(0, s1), &top) || !ParseNumber(rest.substr(s1 + 1, s2 - s1 - 1), &mid) ||
      !ParseNumber(name.substr(0, u1), &out->id) ||
      !ParseNumber(name.substr(u1 + 1, u2 - u1 - 1), &out->index) ||
      !ParseNumber(name.substr(u2 + 1), &out->bytes)) {
    return false;
  }
  return top == out->id / 1000000 && mid == out->id / 1000;
}

enum class Kind { kValid, kPending, kLeaked, kLeakedInUse, kRecent, kNewSlice, kNotBlock };

// Runs tasks on a pool with a bounded number queued or running, so that a
// long listing never piles up work in memory.
class BoundedPool {
 public:
  explicit BoundedPool(size_t threads) : limit_(threads * 4), pool_(threads) {}
  ~BoundedPool() { Wait(); }

  void Run(std::function<void()> task) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return in_flight_ < limit_; });
      in_flight_++;
    }
    pool_.Submit([this, task = std::move(task)] {
      task();
      std::lock_guard lock(mu_);
      in_flight_--;
      cv_.notify_all();
    });
  }
  void Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return in_flight_ == 0; });
  }

 private:
  const size_t limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t in_flight_ = 0;  // guarded by mu_
  ThreadPool pool_;       // last: its tasks use the members above
};

class Collector {
 public:
  Collector(Meta& meta, ObjectStore& store, const GcOptions& options)
      : meta_(meta),
        store_(store),
        opts_(options),
        block_size_(meta.settings().block_size),
        prefix_(meta.settings().name + "/chunks/"),
        names_(meta.settings().name, meta.settings().block_size, &store) {
    if (opts_.threads == 0) opts_.threads = 1;
    if (opts_.meta_page == 0) opts_.meta_page = 4096;
    if (opts_.list_page == 0) opts_.list_page = 1000;
  }

  Result<GcReport> Run();

 private:
  Status ScanRange(std::string from, const std::string& end,
                   const std::function<Status(const KeyValue&)>& fn);
  Status ScanMetadata();
  Status ReadUnlinkedAttrs();
  Status VisitChunk(const KeyValue& kv);
  Status ListObjects();
  Kind Classify(const ObjectInfo& o, BlockName* name) const;

  Status ReclaimFiles();
  Status DeleteFreedSlices();
  Status DeleteDueSlices();
  Status RecheckCandidates();
  Status DeleteLeaked();
  void Compact();

  void StartPhase(const char* phase, const char* unit) {
    phase_ = phase;
    unit_ = unit;
    phase_start_ns_ = MonoNanos();
    last_tick_ns_ = 0;
    Tick(0);
  }
  void Tick(uint64_t done) {
    if (!opts_.progress) return;
    const int64_t now = MonoNanos();
    if (last_tick_ns_ != 0 && now - last_tick_ns_ < kProgressEveryNs) return;
    last_tick_ns_ = now;
    const double s = static_cast<double>(now - phase_start_ns_) / 1e9;
    opts_.progress(GcProgress{phase_, unit_, done, s > 0 ? static_cast<double>(done) / s : 0});
  }
  void NoteFailure(const std::string& what, const Status& st) {
    std::lock_guard lock(mu_);
    report_.delete_failures++;
    if (first_failure_.empty()) first_failure_ = what + ": " + st.ToString();
  }

  Meta& meta_;
  ObjectStore& store_;
  GcOptions opts_;
  const uint64_t block_size_;
  const std::string prefix_;
  SliceStore names_;  // block keys, and deleting a slice's blocks

  int64_t start_ns_ = 0;   // the scan's start (wall clock)
  int64_t cutoff_ns_ = 0;  // objects modified after this are skipped
  uint64_t next_slice_ = 0;
  SliceTable table_;
  // Files whose last link went: true for R (being deleted), false for SS
  // (held open by a mount); their lengths once their attributes are read.
  std::unordered_map<uint64_t, std::pair<bool, uint64_t>> unlinked_;
  // Chunk records that could not be decoded: the slices they name are
  // unknown, so no leaked object may be deleted.
  uint64_t corrupt_chunks_ = 0;
  std::vector<std::pair<uint64_t, uint32_t>> to_compact_;
  bool rechecking_ = false;
  uint64_t keys_scanned_ = 0;

  const char* phase_ = "";
  const char* unit_ = "";
  int64_t phase_start_ns_ = 0;
  int64_t last_tick_ns_ = 0;

  std::mutex mu_;
  GcReport report_;            // counts updated by pool tasks: guarded by mu_ while they run
  std::string first_failure_;  // guarded by mu_
};

Status Collector::ScanRange(std::string from, const std::string& end,
                            const std::function<Status(const KeyValue&)>& fn) {
  while (true) {
    ScanResult page;
    RETURN_IF_ERROR(WithReadTransaction(meta_.kv(), [&](KvTxn& txn) -> Status {
      ASSIGN_OR_RETURN(page, txn.Scan(from, end, opts_.meta_page));
      return Status::Ok();
    }));
    for (const KeyValue& item : page.items) RETURN_IF_ERROR(fn(item));
    keys_scanned_ += page.items.size();
    Tick(keys_scanned_);
    if (!page.more || page.items.empty()) return Status::Ok();
    from = page.items.back().key + '\0';
  }
}

Status Collector::VisitChunk(const KeyValue& kv) {
  const uint64_t ino = GetBig64(kv.key.data() + 1);
  auto records = DecodeChunk(kv.value);
  if (!records.ok()) {
    corrupt_chunks_++;
    return Status::Ok();
  }
  if (rechecking_) {
    // Slices committed since the listing are no longer leaked.
    for (const SliceRecord& r : *records) {
      if (r.id.value() != 0 && (table_.Flags(r.id.value()) & kCandidate)) {
        table_.Note(r.id.value(), r.size, kReferenced);
      }
    }
    return Status::Ok();
  }
  uint32_t flag = kReferenced;
  if (!unlinked_.empty()) {
    auto it = unlinked_.find(ino);
    if (it != unlinked_.end()) flag = it->second.first ? kReclaimUse : kOpenUse;
  }
  const bool unlinked = flag != kReferenced;
  for (const SliceRecord& r : *records) {
    if (r.id.value() != 0) table_.Note(r.id.value(), r.size, flag);
  }
  if (!unlinked && records->size() > 1) {
    report_.fragmented_chunks++;
    if (opts_.compact) to_compact_.emplace_back(ino, GetBig32(kv.key.data() + 10));
  }
  return Status::Ok();
}

// The lengths of the files whose last link went. A record whose inode
// still has a link (or is not a file) is wrong: that file's chunks count
// as any other's, so that nothing of it is ever deleted here.
Status Collector::ReadUnlinkedAttrs() {
  std::vector<uint64_t> inodes;
  for (const auto& [ino, state] : unlinked_) inodes.push_back(ino);
  for (size_t first = 0; first < inodes.size(); first += kAttrBatch) {
    const size_t n = std::min(kAttrBatch, inodes.size() - first);
    std::vector<std::string> attr_keys;
    for (size_t i = 0; i < n; ++i) attr_keys.push_back(keys::Attr(InodeId(inodes[first + i])));
    std::vector<std::optional<std::string>> values;
    RETURN_IF_ERROR(WithReadTransaction(meta_.kv(), [&](KvTxn& txn) -> Status {
      ASSIGN_OR_RETURN(values, txn.BatchGet(attr_keys));
      return Status::Ok();
    }));
    for (size_t i = 0; i < n; ++i) {
      if (!values[i]) continue;  // deleted already, but for the record
      auto a = DecodeAttr(*values[i]);
      if (a.ok() && a->nlink == 0 && a->IsFile()) {
        unlinked_[inodes[first + i]].second = a->length;
      } else {
        unlinked_.erase(inodes[first + i]);
      }
    }
  }
  return Status::Ok();
}

Status Collector::ScanMetadata() {
  StartPhase("scanning metadata", "keys");
  int64_t next = 0;
  RETURN_IF_ERROR(WithReadTransaction(meta_.kv(), [&](KvTxn& txn) -> Status {
    ASSIGN_OR_RETURN(next, meta_internal::GetCounter(txn, keys::kNextSlice));
    return Status::Ok();
  }));
  next_slice_ = static_cast<uint64_t>(std::max<int64_t>(next, 0));
  table_.Reset(std::min(next_slice_, kMaxDense));

  // Files whose last link went, first: their chunks count as pending.
  RETURN_IF_ERROR(ScanRange(keys::ReclaimBegin(), keys::ReclaimEnd(), [&](const KeyValue& kv) {
    if (kv.key.size() == 9) unlinked_[GetBig64(kv.key.data() + 1)] = {true, 0};
    return Status::Ok();
  }));
  RETURN_IF_ERROR(ScanRange("SS", "ST", [&](const KeyValue& kv) {
    if (kv.key.size() == 18) unlinked_.try_emplace(GetBig64(kv.key.data() + 10), false, 0);
    return Status::Ok();
  }));
  RETURN_IF_ERROR(ReadUnlinkedAttrs());
  RETURN_IF_ERROR(ScanRange("A", "B", [&](const KeyValue& kv) -> Status {
    if (kv.key.size() == 14 && kv.key[9] == 'C') return VisitChunk(kv);
    return Status::Ok();
  }));
  RETURN_IF_ERROR(ScanRange(keys::FreedSlicesBegin(), keys::FreedSlicesEnd(), [&](const KeyValue& kv) {
    if (kv.key.size() != 1 + 8 + 4) return Status::Ok();
    const uint32_t size = GetBig32(kv.key.data() + 9);
    table_.Note(GetBig64(kv.key.data() + 1), size, kToDelete);
    report_.freed_slices.Add(size);
    return Status::Ok();
  }));
  RETURN_IF_ERROR(
      ScanRange(keys::DelayedSlicesBegin(), keys::DelayedSlicesEnd(), [&](const KeyValue& kv) {
        if (kv.key.size() != 1 + 8 + 8 + 4) return Status::Ok();
        const auto due = static_cast<int64_t>(GetBig64(kv.key.data() + 1));
        const uint32_t size = GetBig32(kv.key.data() + 17);
        table_.Note(GetBig64(kv.key.data() + 9), size, kToDelete);
        (due <= start_ns_ ? report_.delayed_slices_due : report_.delayed_slices_later).Add(size);
        return Status::Ok();
      }));
  for (const auto& [ino, state] : unlinked_) {
    (state.first ? report_.unlinked_files : report_.open_unlinked_files).Add(state.second);
  }
  // Files in the trash: valid data (their chunks hold their slices) that
  // comes back once the trash lets them go.
  GcCount trash;
  RETURN_IF_ERROR(meta_.ListTrash([&](const TrashItem& item) {
    if (item.attr.IsFile()) trash.Add(item.attr.length);
    return Status::Ok();
  }));
  if (trash.count > 0 || meta_.settings().trash_days > 0) report_.trash = trash;
  table_.ForEach(kInChunk, [&](uint64_t) { report_.slices++; });
  if (corrupt_chunks_ > 0) {
    report_.notes.push_back(std::to_string(corrupt_chunks_) +
                            " chunk records cannot be decoded (run tessera fsck): the slices "
                            "they name are unknown, so no leaked object is deleted");
  }
  return Status::Ok();
}

Kind Collector::Classify(const ObjectInfo& o, BlockName* name) const {
  if (!ParseBlockName(std::string_view(o.key).substr(prefix_.size()), name)) return Kind::kNotBlock;
  if (o.mtime_ns > cutoff_ns_) return Kind::kRecent;
  if (name->id >= next_slice_) return Kind::kNewSlice;
  const uint32_t flags = table_.Flags(name->id);
  const bool fits = table_.Fits(name->id, name->index, name->bytes, block_size_);
  if (flags & kInChunk) {
    if (!fits) return Kind::kLeakedInUse;
    return (flags & kReferenced) ? Kind::kValid : Kind::kPending;
  }
  if ((flags & kToDelete) && fits) return Kind::kPending;
  return Kind::kLeaked;
}

Status Collector::ListObjects() {
  StartPhase("listing objects", "objects");
  const int64_t t0 = MonoNanos();
  std::string after;
  while (true) {
    ASSIGN_OR_RETURN(ListPage page, store_.List(prefix_, after, opts_.list_page));
    for (const ObjectInfo& o : page.objects) {
      report_.listed.Add(o.size);
      BlockName name;
      const Kind kind = Classify(o, &name);
      switch (kind) {
        case Kind::kValid: report_.valid.Add(o.size); break;
        case Kind::kPending: report_.pending.Add(o.size); break;
        case Kind::kLeaked:
        case Kind::kLeakedInUse:
          report_.leaked.Add(o.size);
          if (report_.leaked_examples.size() < kExamples) report_.leaked_examples.push_back(o.key);
          // Only slices no chunk names may lose objects.
          if (kind == Kind::kLeakedInUse) {
            report_.leaked_in_use.Add(o.size);
          } else {
            table_.SetFlag(name.id, kCandidate);
          }
          break;
        case Kind::kRecent:
          report_.skipped.Add(o.size);
          report_.skipped_recent.Add(o.size);
          break;
        case Kind::kNewSlice:
          report_.skipped.Add(o.size);
          report_.skipped_new_slice.Add(o.size);
          break;
        case Kind::kNotBlock:
          report_.skipped.Add(o.size);
          report_.skipped_not_block.Add(o.size);
          break;
      }
    }
    Tick(report_.listed.count);
    if (!page.more || page.objects.empty()) break;
    after = page.objects.back().key;
  }
  report_.list_s = static_cast<double>(MonoNanos() - t0) / 1e9;
  return Status::Ok();
}

Status Collector::ReclaimFiles() {
  StartPhase("deleting unlinked files", "files");
  // Trash hours past the trash days first (unless a mount is at it): their
  // files join the files to delete.
  ASSIGN_OR_RETURN(report_.trash_emptied, meta_.EmptyTrash(NowNanos(), 0));
  // Their slices get G records, deleted next.
  ASSIGN_OR_RETURN(report_.files_reclaimed, meta_.ReclaimUnlinked(std::numeric_limits<size_t>::max()));
  return Status::Ok();
}

Status Collector::DeleteFreedSlices() {
  StartPhase("deleting freed slices", "slices");
  SliceId after(0);
  BoundedPool pool(opts_.threads);
  while (true) {
    ASSIGN_OR_RETURN(std::vector<SliceRef> page, meta_.FreedSlices(kSlicePage, after));
    std::vector<SliceRef> done;
    for (const SliceRef& s : page) {
      if (table_.Flags(s.id.value()) & kReadable) {
        report_.freed_slices_in_use++;
        continue;
      }
      pool.Run([this, s, &done] {
        Status st = names_.Delete(s);
        if (!st.ok()) return NoteFailure("deleting slice " + std::to_string(s.id.value()), st);
        std::lock_guard lock(mu_);
        done.push_back(s);
      });
    }
    pool.Wait();
    RETURN_IF_ERROR(meta_.DropFreedSlices(done));
    report_.freed_slices_deleted += done.size();
    Tick(report_.freed_slices_deleted);
    if (page.size() < kSlicePage) return Status::Ok();
    after = page.back().id;
  }
}

Status Collector::DeleteDueSlices() {
  StartPhase("deleting replaced slices", "slices");
  BoundedPool pool(opts_.threads);
  while (true) {
    ASSIGN_OR_RETURN(auto due, meta_.DueSlices(start_ns_, kDuePage));
    std::vector<Meta::DelayedSlice> done;
    for (const Meta::DelayedSlice& d : due) {
      if (table_.Flags(d.slice.id.value()) & kReadable) continue;
      pool.Run([this, d, &done] {
        Status st = names_.Delete(d.slice);
        if (!st.ok()) return NoteFailure("deleting slice " + std::to_string(d.slice.id.value()), st);
        std::lock_guard lock(mu_);
        done.push_back(d);
      });
    }
    pool.Wait();
    // Blocks first: a crash in between leaves the record to retry, never a leak.
    for (const Meta::DelayedSlice& d : done) RETURN_IF_ERROR(meta_.DropDueSlice(d));
    report_.delayed_slices_deleted += done.size();
    Tick(report_.delayed_slices_deleted);
    // The records left (in use, failed) come first again: stop when a page
    // brought nothing new.
    if (due.size() < kDuePage || done.empty()) return Status::Ok();
  }
}

// Reads every chunk and deletion record once more: a slice with leaked
// objects that something names now (committed by a slow writer after the
// scan, say) keeps its objects.
Status Collector::RecheckCandidates() {
  StartPhase("re-checking metadata", "keys");
  keys_scanned_ = 0;
  rechecking_ = true;
  const uint64_t corrupt_before = corrupt_chunks_;
  RETURN_IF_ERROR(ScanRange("A", "B", [&](const KeyValue& kv) -> Status {
    if (kv.key.size() == 14 && kv.key[9] == 'C') return VisitChunk(kv);
    return Status::Ok();
  }));
  RETURN_IF_ERROR(ScanRange(keys::FreedSlicesBegin(), keys::FreedSlicesEnd(), [&](const KeyValue& kv) {
    const uint64_t id = kv.key.size() == 13 ? GetBig64(kv.key.data() + 1) : 0;
    if (table_.Flags(id) & kCandidate) table_.Note(id, GetBig32(kv.key.data() + 9), kToDelete);
    return Status::Ok();
  }));
  RETURN_IF_ERROR(
      ScanRange(keys::DelayedSlicesBegin(), keys::DelayedSlicesEnd(), [&](const KeyValue& kv) {
        const uint64_t id = kv.key.size() == 21 ? GetBig64(kv.key.data() + 9) : 0;
        if (table_.Flags(id) & kCandidate) table_.Note(id, GetBig32(kv.key.data() + 17), kToDelete);
        return Status::Ok();
      }));
  rechecking_ = false;
  if (corrupt_chunks_ > corrupt_before) {
    report_.notes.push_back("chunk records that cannot be decoded appeared during the run: "
                            "no leaked object is deleted");
  }
  return Status::Ok();
}

// Lists the folders that hold leaked objects again and deletes those still
// leaked, classified as in the first listing with what the re-check found.
Status Collector::DeleteLeaked() {
  StartPhase("deleting leaked objects", "objects");
  std::vector<uint64_t> folders;  // id / 1000 of the candidates, ascending
  table_.ForEach(kCandidate, [&](uint64_t id) {
    if (folders.empty() || folders.back() != id / 1000) folders.push_back(id / 1000);
  });
  uint64_t kept = 0, failed_before = report_.delete_failures;
  {
    BoundedPool pool(opts_.threads);
    for (uint64_t folder : folders) {
      const std::string prefix =
          prefix_ + std::to_string(folder / 1000) + "/" + std::to_string(folder) + "/";
      std::string after;
      while (true) {
        ASSIGN_OR_RETURN(ListPage page, store_.List(prefix, after, opts_.list_page));
        for (const ObjectInfo& o : page.objects) {
          BlockName name;
          const Kind kind = Classify(o, &name);
          if (kind == Kind::kNotBlock || !(table_.Flags(name.id) & kCandidate)) continue;
          if (kind == Kind::kLeakedInUse) kept++;
          if (kind != Kind::kLeaked) {
            if (kind != Kind::kLeakedInUse) report_.leaked_now_used++;
            continue;
          }
          pool.Run([this, o] {
            Status st = store_.Delete(o.key);
            if (!st.ok()) return NoteFailure("deleting " + o.key, st);
            std::lock_guard lock(mu_);
            report_.leaked_deleted.Add(o.size);
          });
        }
        uint64_t deleted = 0;
        {
          std::lock_guard lock(mu_);
          deleted = report_.leaked_deleted.count;
        }
        Tick(deleted);
        if (!page.more || page.objects.empty()) break;
        after = page.objects.back().key;
      }
    }
  }
  report_.leaked_remaining =
      report_.leaked_in_use.count + kept + (report_.delete_failures - failed_before);
  return Status::Ok();
}

void Collector::Compact() {
  StartPhase("compacting chunks", "chunks");
  BoundedPool pool(opts_.threads);
  uint64_t done = 0;
  for (const auto& [ino, chunk] : to_compact_) {
    pool.Run([this, ino = ino, chunk = chunk] {
      auto r = opts_.compact(InodeId(ino), chunk);
      std::lock_guard lock(mu_);
      if (!r.ok()) {
        if (report_.compact_failures++ == 0) {
          report_.notes.push_back("compacting chunk " + std::to_string(chunk) + " of inode " +
                                  std::to_string(ino) + ": " + r.status().ToString());
        }
        return;
      }
      if (!r->merged) return;
      report_.chunks_compacted++;
      report_.records_before += r->records_before;
      report_.records_after += r->records_after;
    });
    Tick(++done);
  }
}

Result<GcReport> Collector::Run() {
  const int64_t t0 = MonoNanos();
  start_ns_ = opts_.now_ns != 0 ? opts_.now_ns : NowNanos();
  cutoff_ns_ = start_ns_ - opts_.skip_window_ns;
  RETURN_IF_ERROR(ScanMetadata());
  report_.scan_s = static_cast<double>(MonoNanos() - t0) / 1e9;
  RETURN_IF_ERROR(ListObjects());
  report_.leaked_remaining = report_.leaked.count;

  if (opts_.delete_garbage) {
    const int64_t d0 = MonoNanos();
    report_.deleted = true;
    RETURN_IF_ERROR(ReclaimFiles());
    RETURN_IF_ERROR(DeleteFreedSlices());
    RETURN_IF_ERROR(DeleteDueSlices());
    if (report_.leaked.count > report_.leaked_in_use.count && corrupt_chunks_ == 0) {
      RETURN_IF_ERROR(RecheckCandidates());
      if (corrupt_chunks_ == 0) RETURN_IF_ERROR(DeleteLeaked());
    } else if (corrupt_chunks_ == 0) {
      report_.leaked_remaining = report_.leaked_in_use.count;
    }
    if (report_.leaked_in_use.count > 0) {
      report_.notes.push_back(std::to_string(report_.leaked_in_use.count) +
                              " leaked objects are blocks of slices that files use (an index "
                              "or size that does not fit the slice): they are never deleted");
    }
    if (report_.freed_slices_in_use > 0) {
      report_.notes.push_back(std::to_string(report_.freed_slices_in_use) +
                              " slices have a deletion record but a chunk named them during "
                              "the scan: left alone (run tessera fsck if this persists)");
    }
    if (!first_failure_.empty()) {
      report_.notes.push_back(std::to_string(report_.delete_failures) +
                              " deletions failed and are left for the next run; the first: " +
                              first_failure_);
    }
    report_.delete_s = static_cast<double>(MonoNanos() - d0) / 1e9;
  }
  if (opts_.compact) {
    report_.compacted = true;
    Compact();
  }
  report_.elapsed_s = static_cast<double>(MonoNanos() - t0) / 1e9;
  return std::move(report_);
}

}  // namespace

Result<GcReport> CollectGarbage(Meta& meta, ObjectStore& store, const GcOptions& options) {
  Collector collector(meta, store, options);
  return collector.Run();
}

}  // namespace tessera
