// BufferedKvTxn: the part of a KV transaction every engine shares. Writes are
// kept in a sorted buffer until Commit; reads merge that buffer over the
// engine's snapshot reads, so an engine only has to provide a consistent
// snapshot (SnapshotGet/SnapshotScan) and an atomic, conflict-checked commit
// of a finished buffer (CommitWrites). Engine-neutral on purpose: every
// engine uses it. Point reads of the snapshot are remembered, so a caller may
// BatchGet the keys it is about to need (one round trip on a networked
// engine) and Get them one by one afterwards for free.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kv/kv.h"

namespace tessera {

class BufferedKvTxn : public KvTxn {
 public:
  // Key -> new value, or std::nullopt for a delete. Sorted by unsigned bytes
  // (std::string's order), like the key space.
  using WriteBuffer = std::map<std::string, std::optional<std::string>, std::less<>>;
  // Key -> delta of a counter the transaction adds to without reading it.
  using Increments = std::map<std::string, int64_t, std::less<>>;

  // KvTxn. Reads after Commit return kInternal (a caller bug).
  Result<std::optional<std::string>> Get(std::string_view key) final;
  Result<std::vector<std::optional<std::string>>> BatchGet(
      const std::vector<std::string>& keys) final;
  Result<ScanResult> Scan(std::string_view begin, std::string_view end, size_t limit) final;
  void Put(std::string_view key, std::string_view value) final;
  void Delete(std::string_view key) final;
  void Increment(std::string_view key, int64_t delta) final;
  // Hands the buffer to CommitWrites. A second call returns kInternal.
  Status Commit() final;
  Status Verify() final;

 protected:
  // Reads of the engine's snapshot, without this transaction's writes. The
  // engine records what they cover if it needs that for conflict checks.
  // Same errors as KvTxn reads.
  virtual Result<std::optional<std::string>> SnapshotGet(std::string_view key) = 0;
  // Default: SnapshotGet for each key.
  virtual Result<std::vector<std::optional<std::string>>> SnapshotBatchGet(
      const std::vector<std::string>& keys);
  // Same contract as KvTxn::Scan, and `more` must be exact: true only when at
  // least one more pair lies in [begin, end) after the returned ones. The
  // merge in Scan relies on that.
  virtual Result<ScanResult> SnapshotScan(std::string_view begin, std::string_view end,
                                          size_t limit) = 0;
  // Applies `writes` and `increments` atomically, or returns kConflict
  // (nothing applied) when something this transaction read changed after its
  // snapshot. Both may be empty: then the engine only ends the transaction.
  // Called at most once. `increments` is always empty unless the engine
  // applies them itself (AppliesIncrements); otherwise Commit turns each
  // into a read of the counter and a write.
  virtual Status CommitWrites(WriteBuffer writes, Increments increments) = 0;
  virtual bool AppliesIncrements() const { return false; }
  // KvTxn::Verify for a transaction not committed. Default: Ok (every read
  // came from one snapshot of the engine).
  virtual Status VerifyReads() { return Status::Ok(); }

 private:
  WriteBuffer writes_;
  Increments increments_;  // never holds a key that writes_ holds
  // Turns the pending increments of keys in [begin, end) ("" = no bound)
  // into ordinary writes of the value read plus the delta.
  Status FoldIncrements(std::string_view begin, std::string_view end);
  // Snapshot values already read by point reads (a snapshot never changes),
  // and the last snapshot scan with its arguments, whose pairs also answer
  // Gets (without copying a listing's pairs into reads_).
  WriteBuffer reads_;
  struct CachedScan {
    std::string begin, end;
    size_t limit = 0;
    ScanResult result;
  };
  std::optional<CachedScan> last_scan_;
  Result<ScanResult> SnapshotScanCached(std::string_view begin, std::string_view end, size_t limit);
  bool committed_ = false;
};

}  // namespace tessera
