#include "kv/memory_kv.h"

#include "common/coding.h"

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "kv/buffered_txn.h"

namespace tessera {
namespace {

// [begin, end) with an empty end meaning "to the end of the key space".
struct KeyRange {
  std::string begin;
  std::string end;
};

struct Version {
  uint64_t version;
  std::optional<std::string> value;  // nullopt: a tombstone
};

// The shared state behind one store name. Thread-safe.
class MemoryEngine {
 public:
  using Snapshot = std::multiset<uint64_t>::iterator;

  explicit MemoryEngine(std::string url) : url_(std::move(url)) {}

  const std::string& url() const { return url_; }

  // Registers a snapshot of everything committed so far. It holds back the
  // collection of the versions it can see until CloseSnapshot or Commit.
  Snapshot OpenSnapshot() {
    std::lock_guard lock(mu_);
    return active_.insert(committed_);
  }

  void CloseSnapshot(Snapshot snapshot) {
    std::lock_guard lock(mu_);
    active_.erase(snapshot);
  }

  std::optional<std::string> Get(std::string_view key, uint64_t at) {
    std::lock_guard lock(mu_);
    auto it = data_.find(key);
    if (it == data_.end()) return std::nullopt;
    const Version* v = Visible(it->second, at);
    return v ? v->value : std::nullopt;
  }

  // Scans the snapshot `at`; sets *covered to the part of the key space the
  // answer depends on (up to the last key when the limit stopped it).
  ScanResult Scan(std::string_view begin, std::string_view end, size_t limit, uint64_t at,
                  KeyRange* covered) {
    ScanResult out;
    {
      std::lock_guard lock(mu_);
      for (auto it = data_.lower_bound(begin);
           it != data_.end() && (end.empty() || it->first < end); ++it) {
        const Version* v = Visible(it->second, at);
        if (!v || !v->value) continue;
        if (limit != 0 && out.items.size() == limit) {
          out.more = true;
          break;
        }
        out.items.push_back(KeyValue{it->first, *v->value});
      }
    }
    covered->begin = std::string(begin);
    if (out.more) {
      covered->end = out.items.back().key;
      covered->end.push_back('\0');  // the smallest key after the last one
    } else {
      covered->end = std::string(end);
    }
    return out;
  }

  // Validates the reads of the transaction whose snapshot is `snapshot` and
  // applies `writes`; the snapshot is closed either way.
  Status Commit(Snapshot snapshot, const std::set<std::string, std::less<>>& reads,
                const std::vector<KeyRange>& ranges, BufferedKvTxn::WriteBuffer writes,
                const BufferedKvTxn::Increments& increments) {
    std::lock_guard lock(mu_);
    uint64_t start = *snapshot;
    // Closed before collecting below, but under the same lock as validation:
    // closing it earlier could let another commit collect a tombstone newer
    // than `start`, and this validation would then miss that delete.
    active_.erase(snapshot);
    if (writes.empty() && increments.empty()) return Status::Ok();  // a snapshot read

    for (const std::string& key : reads) {
      auto it = data_.find(key);
      if (it != data_.end() && it->second.back().version > start) return ConflictError();
    }
    for (const KeyRange& r : ranges) {
      for (auto it = data_.lower_bound(r.begin);
           it != data_.end() && (r.end.empty() || it->first < r.end); ++it) {
        if (it->second.back().version > start) return ConflictError();
      }
    }

    // Counters add to their newest value, whoever wrote it.
    for (const auto& [key, delta] : increments) {
      auto it = data_.find(key);
      uint64_t base = 0;
      if (it != data_.end() && it->second.back().value) {
        const std::string& v = *it->second.back().value;
        if (v.size() != 8) return Corrupt("counter in " + url_ + " is not 8 bytes long");
        base = GetBig64(v.data());
      }
      std::string sum;
      PutBig64(&sum, base + static_cast<uint64_t>(delta));
      writes.insert_or_assign(key, std::move(sum));
    }
    uint64_t version = ++committed_;
    for (auto& [key, value] : writes) {
      auto it = data_.find(key);
      bool absent = it == data_.end() || !it->second.back().value;
      if (!value && absent) continue;  // deleting nothing changes nothing
      if (it == data_.end()) it = data_.emplace(key, std::vector<Version>{}).first;
      bool tombstone = !value.has_value();
      it->second.push_back(Version{version, std::move(value)});
      if (it->second.size() > 1 || tombstone) collectable_.insert(key);
    }
    Collect();
    return Status::Ok();
  }

 private:
  // The newest version at or below `at`, or nullptr.
  static const Version* Visible(const std::vector<Version>& versions, uint64_t at) {
    for (auto it = versions.rbegin(); it != versions.rend(); ++it) {
      if (it->version <= at) return &*it;
    }
    return nullptr;
  }

  Status ConflictError() const {
    return Conflict("transaction conflict on " + url_ +
                    ": another transaction changed what this one read");
  }

  // Drops versions no open or future snapshot can see. A snapshot at s needs
  // the newest version <= s, so for the oldest snapshot m only the newest
  // version <= m and later ones matter; a lone tombstone <= m is invisible
  // and cannot fail any validation (all starts are >= m), so it goes too.
  void Collect() {
    uint64_t oldest = active_.empty() ? committed_ : *active_.begin();
    for (auto k = collectable_.begin(); k != collectable_.end();) {
      auto it = data_.find(*k);
      if (it == data_.end()) {
        k = collectable_.erase(k);
        continue;
      }
      std::vector<Version>& versions = it->second;
      size_t keep_from = 0;
      for (size_t i = 0; i < versions.size(); ++i) {
        if (versions[i].version <= oldest) keep_from = i;
      }
      versions.erase(versions.begin(), versions.begin() + static_cast<ptrdiff_t>(keep_from));
      if (versions.size() == 1 && !versions[0].value && versions[0].version <= oldest) {
        data_.erase(it);
        k = collectable_.erase(k);
      } else if (versions.size() == 1 && versions[0].value) {
        k = collectable_.erase(k);
      } else {
        ++k;
      }
    }
  }

  const std::string url_;
  std::mutex mu_;
  // Versions of each key, oldest first; never empty.
  std::map<std::string, std::vector<Version>, std::less<>> data_;  // guarded by mu_
  uint64_t committed_ = 0;                                          // guarded by mu_
  // Start versions of open transactions.
  std::multiset<uint64_t> active_;  // guarded by mu_
  // Keys with more than one version or a tombstone: the work for Collect.
  std::set<std::string, std::less<>> collectable_;  // guarded by mu_
};

class MemoryTxn final : public BufferedKvTxn {
 public:
  explicit MemoryTxn(std::shared_ptr<MemoryEngine> engine)
      : engine_(std::move(engine)), snapshot_(engine_->OpenSnapshot()), start_(*snapshot_) {}

  ~MemoryTxn() override {
    if (open_) engine_->CloseSnapshot(snapshot_);
  }

 protected:
  Result<std::optional<std::string>> SnapshotGet(std::string_view key) override {
    reads_.emplace(key);
    return engine_->Get(key, start_);
  }

  Result<ScanResult> SnapshotScan(std::string_view begin, std::string_view end,
                                  size_t limit) override {
    KeyRange covered;
    ScanResult result = engine_->Scan(begin, end, limit, start_, &covered);
    ranges_.push_back(std::move(covered));
    return result;
  }

  bool AppliesIncrements() const override { return true; }

  Status CommitWrites(WriteBuffer writes, Increments increments) override {
    open_ = false;
    return engine_->Commit(snapshot_, reads_, ranges_, std::move(writes), increments);
  }

 private:
  std::shared_ptr<MemoryEngine> engine_;
  MemoryEngine::Snapshot snapshot_;
  uint64_t start_;
  bool open_ = true;
  std::set<std::string, std::less<>> reads_;
  std::vector<KeyRange> ranges_;
};

class MemoryKvStore final : public KvStore {
 public:
  explicit MemoryKvStore(std::shared_ptr<MemoryEngine> engine) : engine_(std::move(engine)) {}

  std::string Url() const override { return engine_->url(); }

  Result<std::unique_ptr<KvTxn>> Begin() override {
    return std::unique_ptr<KvTxn>(std::make_unique<MemoryTxn>(engine_));
  }

 private:
  std::shared_ptr<MemoryEngine> engine_;
};

// Named engines live until the process exits (never destroyed, so no
// destruction-order trouble with stores still open at exit).
struct Registry {
  std::mutex mu;
  std::map<std::string, std::shared_ptr<MemoryEngine>, std::less<>> engines;
};

Registry& GetRegistry() {
  static Registry* registry = new Registry;
  return *registry;
}

}  // namespace

Result<std::unique_ptr<KvStore>> OpenMemoryKv(std::string_view name) {
  std::string url = "mem://" + std::string(name);
  std::shared_ptr<MemoryEngine> engine;
  if (name.empty()) {
    engine = std::make_shared<MemoryEngine>(std::move(url));
  } else {
    Registry& registry = GetRegistry();
    std::lock_guard lock(registry.mu);
    std::shared_ptr<MemoryEngine>& slot = registry.engines[std::string(name)];
    if (!slot) slot = std::make_shared<MemoryEngine>(std::move(url));
    engine = slot;
  }
  return std::unique_ptr<KvStore>(std::make_unique<MemoryKvStore>(std::move(engine)));
}

}  // namespace tessera
