// Background deletion of files whose last link went (see Meta::ReclaimUnlinked).
// An unlink only marks the file (nlink 0 and an R<ino> record) in its one
// commit: deleting the file's keys needs a scan of everything under the inode
// and, with data, freeing slices, which would cost a networked engine a
// round trip or more inside every unlink. A thread of the client that
// unlinked does it instead, a batch of files per transaction, soon after.
#include <algorithm>
#include <chrono>
#include <unordered_map>

#include "common/coding.h"
#include "common/log.h"
#include "meta/attr.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/txn_util.h"

namespace tessera {
namespace {

// Files deleted per transaction.
constexpr size_t kReclaimBatch = 64;
// A queued file waits this long for others to join its batch, so that a
// burst of unlinks is not slowed down by deletions running beside it.
constexpr auto kReclaimGather = std::chrono::milliseconds(50);
// Inode numbers at most this far apart are read with one scan.
constexpr uint64_t kReclaimRunGap = 8;

}  // namespace

void Meta::ScheduleReclaim(InodeId ino) {
  if (ino.value() == 0) return;
  {
    std::lock_guard lock(reclaim_mu_);
    reclaim_queue_.push_back(ino);
    if (!reclaimer_.joinable() && !reclaim_stop_) reclaimer_ = std::thread([this] { ReclaimLoop(); });
  }
  reclaim_cv_.notify_all();
}

void Meta::ReclaimLoop() {
  std::unique_lock lock(reclaim_mu_);
  while (true) {
    reclaim_cv_.wait(lock, [&] { return reclaim_stop_ || !reclaim_queue_.empty(); });
    if (reclaim_queue_.empty()) return;  // stopping
    if (!reclaim_stop_ && reclaim_queue_.size() < kReclaimBatch) {
      reclaim_cv_.wait_for(lock, kReclaimGather, [&] {
        return reclaim_stop_ || reclaim_drains_ > 0 || reclaim_queue_.size() >= kReclaimBatch;
      });
    }
    std::vector<InodeId> batch;
    while (!reclaim_queue_.empty() && batch.size() < kReclaimBatch) {
      batch.push_back(reclaim_queue_.front());
      reclaim_queue_.pop_front();
    }
    reclaim_busy_ = true;
    lock.unlock();
    // On failure the R records stay: the housekeeping of any client
    // (ReclaimUnlinked) finishes them later.
    if (Result<size_t> n = ReclaimFiles(batch); !n.ok()) {
      LogWarn("deleting unlinked files: " + n.status().ToString());
    }
    lock.lock();
    reclaim_busy_ = false;
    reclaim_cv_.notify_all();
  }
}

void Meta::DrainReclaims(int64_t timeout_ms) {
  std::unique_lock lock(reclaim_mu_);
  reclaim_drains_++;
  reclaim_cv_.notify_all();
  reclaim_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                       [&] { return reclaim_queue_.empty() && !reclaim_busy_; });
  reclaim_drains_--;
}

Result<size_t> Meta::ReclaimFiles(const std::vector<InodeId>& inodes) {
  std::vector<InodeId> sorted = inodes;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  // Files made together have neighbouring inode numbers: one scan reads the
  // keys of a run of them (and of the few files between, left alone).
  std::vector<std::pair<InodeId, InodeId>> runs;  // first, last
  for (InodeId ino : sorted) {
    if (!runs.empty() && ino.value() - runs.back().second.value() <= kReclaimRunGap) {
      runs.back().second = ino;
    } else {
      runs.emplace_back(ino, ino);
    }
  }
  std::vector<SliceRef> freed;
  size_t deleted = 0;
  RETURN_IF_ERROR(WithTransaction(*kv_, [&](KvTxn& txn) -> Status {
    freed.clear();
    deleted = 0;
    std::vector<std::string> marks;
    for (InodeId ino : sorted) marks.push_back(keys::Reclaim(ino));
    ASSIGN_OR_RETURN(auto present, txn.BatchGet(marks));
    std::unordered_map<uint64_t, std::vector<KeyValue>> keys_of;
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (!present[i]) continue;  // another client got there first
      txn.Delete(marks[i]);
      keys_of[sorted[i].value()];
    }
    if (keys_of.empty()) return Status::Ok();
    for (const auto& [first, last] : runs) {
      std::string from = keys::InodeBegin(first);
      const std::string end = keys::InodeEnd(last);
      while (true) {
        ASSIGN_OR_RETURN(ScanResult page, txn.Scan(from, end, 1024));
        for (KeyValue& kv : page.items) {
          auto it = keys_of.find(GetBig64(kv.key.data() + 1));
          if (it != keys_of.end()) it->second.push_back(std::move(kv));
        }
        if (!page.more || page.items.empty()) break;
        from = page.items.back().key + '\0';
      }
    }
    for (auto& [ino_value, items] : keys_of) {
      const InodeId ino(ino_value);
      auto attr = std::find_if(items.begin(), items.end(),
                               [&](const KeyValue& kv) { return kv.key == keys::Attr(ino); });
      if (attr == items.end()) continue;  // gone already
      ASSIGN_OR_RETURN(Attr a, DecodeAttr(attr->value));
      // Only files with no link come here (Link refuses them).
      if (a.nlink != 0 || a.IsDir()) continue;
      for (const KeyValue& kv : items) {
        RETURN_IF_ERROR(meta_internal::DeleteInodeKey(txn, ino, kv, &freed));
      }
      // The unlink took it out of the usage counters already.
      txn.Delete(keys::Attr(ino));
      deleted++;
    }
    return Status::Ok();
  }));
  FreeSlices(freed);
  return deleted;
}

Result<size_t> Meta::ReclaimUnlinked(size_t limit) {
  size_t total = 0, seen = 0;
  std::string from = keys::ReclaimBegin();
  while (seen < limit) {
    std::vector<InodeId> batch;
    bool more = false;
    RETURN_IF_ERROR(WithReadTransaction(*kv_, [&](KvTxn& txn) -> Status {
      batch.clear();
      ASSIGN_OR_RETURN(ScanResult page,
                       txn.Scan(from, keys::ReclaimEnd(), std::min(kReclaimBatch, limit - seen)));
      for (const KeyValue& kv : page.items) {
        if (kv.key.size() == 9) batch.push_back(InodeId(GetBig64(kv.key.data() + 1)));
      }
      if (!page.items.empty()) from = page.items.back().key + '\0';
      more = page.more;
      return Status::Ok();
    }));
    if (batch.empty()) break;
    ASSIGN_OR_RETURN(size_t n, ReclaimFiles(batch));
    total += n;
    seen += batch.size();
    if (!more) break;
  }
  return total;
}

}  // namespace tessera
