#include "kv/buffered_txn.h"

#include <algorithm>
#include <utility>

namespace tessera {
namespace {

Status UsedAfterCommit() { return Internal("KV transaction used after Commit"); }

std::string EncodeCounter(int64_t v) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i, v = static_cast<int64_t>(static_cast<uint64_t>(v) >> 8)) {
    s[i] = static_cast<char>(v & 0xff);
  }
  return s;
}

Result<int64_t> DecodeCounter(std::string_view key, const std::optional<std::string>& value) {
  if (!value) return int64_t{0};
  if (value->size() != 8) {
    return Corrupt("KV counter at key of " + std::to_string(key.size()) + " bytes is " +
                   std::to_string(value->size()) + " bytes long, not 8");
  }
  uint64_t v = 0;
  for (unsigned char c : *value) v = (v << 8) | c;
  return static_cast<int64_t>(v);
}

}  // namespace

Result<std::optional<std::string>> BufferedKvTxn::Get(std::string_view key) {
  if (committed_) return UsedAfterCommit();
  if (increments_.count(key)) RETURN_IF_ERROR(FoldIncrements(key, std::string(key) + '\0'));
  auto it = writes_.find(key);
  if (it != writes_.end()) return it->second;
  auto read = reads_.find(key);
  if (read != reads_.end()) return read->second;
  if (last_scan_) {
    // A pair the last scan returned (absent keys there are not known:
    // a limited scan may have stopped before them).
    const auto& items = last_scan_->result.items;
    auto it = std::lower_bound(items.begin(), items.end(), key,
                               [](const KeyValue& kv, std::string_view k) { return kv.key < k; });
    if (it != items.end() && it->key == key) return std::optional<std::string>(it->value);
  }
  ASSIGN_OR_RETURN(std::optional<std::string> value, SnapshotGet(key));
  reads_.emplace(std::string(key), value);
  return value;
}

Result<std::vector<std::optional<std::string>>> BufferedKvTxn::BatchGet(
    const std::vector<std::string>& keys) {
  if (committed_) return UsedAfterCommit();
  for (const std::string& key : keys) {
    if (increments_.count(key)) RETURN_IF_ERROR(FoldIncrements(key, key + '\0'));
  }
  std::vector<std::optional<std::string>> values(keys.size());
  // Only the keys this transaction has not written go to the engine.
  std::vector<std::string> missing;
  std::vector<size_t> missing_at;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto it = writes_.find(keys[i]);
    auto read = it == writes_.end() ? reads_.find(keys[i]) : reads_.end();
    if (it != writes_.end()) {
      values[i] = it->second;
    } else if (read != reads_.end()) {
      values[i] = read->second;
    } else {
      missing.push_back(keys[i]);
      missing_at.push_back(i);
    }
  }
  if (!missing.empty()) {
    ASSIGN_OR_RETURN(std::vector<std::optional<std::string>> got, SnapshotBatchGet(missing));
    if (got.size() != missing.size()) {
      return Internal("KV engine returned " + std::to_string(got.size()) + " values for " +
                      std::to_string(missing.size()) + " keys");
    }
    for (size_t j = 0; j < got.size(); ++j) {
      reads_.insert_or_assign(missing[j], got[j]);
      values[missing_at[j]] = std::move(got[j]);
    }
  }
  return values;
}

Result<ScanResult> BufferedKvTxn::Scan(std::string_view begin, std::string_view end,
                                       size_t limit) {
  if (committed_) return UsedAfterCommit();
  if (!end.empty() && begin >= end) return ScanResult{};
  RETURN_IF_ERROR(FoldIncrements(begin, end));
  auto lo = writes_.lower_bound(begin);
  auto hi = end.empty() ? writes_.end() : writes_.lower_bound(end);
  if (lo == hi) return SnapshotScanCached(begin, end, limit);

  // Each buffered delete can hide at most one snapshot pair, so asking the
  // snapshot for `limit + deletes` pairs always leaves at least `limit`
  // merged pairs at or below the last key it returned.
  size_t deletes = 0;
  for (auto it = lo; it != hi; ++it) {
    if (!it->second) ++deletes;
  }
  size_t ask = limit == 0 ? 0 : limit + deletes;
  ASSIGN_OR_RETURN(ScanResult snap, SnapshotScanCached(begin, end, ask));
  if (snap.more) {
    if (snap.items.empty()) return Internal("KV engine scan reported more without items");
    // Past the snapshot's last key, the snapshot is unknown: merging buffered
    // puts from there could skip snapshot pairs that belong before them.
    hi = writes_.upper_bound(snap.items.back().key);
  }

  ScanResult out;
  auto s = snap.items.begin();
  auto b = lo;
  while (s != snap.items.end() || b != hi) {
    KeyValue next;
    if (b == hi || (s != snap.items.end() && s->key < b->first)) {
      next = std::move(*s++);
    } else {
      if (s != snap.items.end() && s->key == b->first) ++s;  // the buffer wins
      const auto& [key, value] = *b++;
      if (!value) continue;
      next = KeyValue{key, *value};
    }
    if (limit != 0 && out.items.size() == limit) {
      out.more = true;
      break;
    }
    out.items.push_back(std::move(next));
  }
  // When the snapshot stopped early there is a pair beyond its last key that
  // no buffered delete hides: with exactly `limit` merged pairs at or below
  // that key, all `deletes` were spent there (see above).
  if (snap.more) out.more = true;
  return out;
}

// The same scan twice (an operation that looks at an inode's keys, then
// deletes them) costs one engine read; its pairs also answer later Gets.
Result<ScanResult> BufferedKvTxn::SnapshotScanCached(std::string_view begin, std::string_view end,
                                                     size_t limit) {
  if (last_scan_ && last_scan_->begin == begin && last_scan_->end == end &&
      last_scan_->limit == limit) {
    return last_scan_->result;
  }
  ASSIGN_OR_RETURN(ScanResult result, SnapshotScan(begin, end, limit));
  last_scan_ = CachedScan{std::string(begin), std::string(end), limit, result};
  return result;
}

void BufferedKvTxn::Put(std::string_view key, std::string_view value) {
  if (auto it = increments_.find(key); it != increments_.end()) increments_.erase(it);
  writes_.insert_or_assign(std::string(key), std::optional<std::string>(value));
}

void BufferedKvTxn::Delete(std::string_view key) {
  if (auto it = increments_.find(key); it != increments_.end()) increments_.erase(it);
  writes_.insert_or_assign(std::string(key), std::nullopt);
}

void BufferedKvTxn::Increment(std::string_view key, int64_t delta) {
  if (delta == 0) return;
  auto it = writes_.find(key);
  if (it == writes_.end()) {
    increments_[std::string(key)] += delta;
    return;
  }
  // A value this transaction wrote itself is known: add to it. A malformed
  // one is left for the reader of the counter to report.
  Result<int64_t> base = DecodeCounter(key, it->second);
  if (base.ok()) it->second = EncodeCounter(*base + delta);
}

Status BufferedKvTxn::FoldIncrements(std::string_view begin, std::string_view end) {
  auto lo = increments_.lower_bound(begin);
  auto hi = end.empty() ? increments_.end() : increments_.lower_bound(end);
  if (lo == hi) return Status::Ok();
  Increments folding(lo, hi);
  increments_.erase(lo, hi);
  for (const auto& [key, delta] : folding) {
    ASSIGN_OR_RETURN(std::optional<std::string> value, Get(key));
    ASSIGN_OR_RETURN(int64_t base, DecodeCounter(key, value));
    writes_.insert_or_assign(key, std::optional<std::string>(EncodeCounter(base + delta)));
  }
  return Status::Ok();
}

Status BufferedKvTxn::Commit() {
  if (committed_) return Internal("KV transaction committed twice");
  if (!AppliesIncrements()) {
    Status folded = FoldIncrements("", "");
    if (!folded.ok()) {
      committed_ = true;
      return folded;
    }
  }
  committed_ = true;
  WriteBuffer writes = std::move(writes_);
  writes_.clear();
  Increments increments = std::move(increments_);
  increments_.clear();
  return CommitWrites(std::move(writes), std::move(increments));
}

Status BufferedKvTxn::Verify() {
  if (committed_) return Status::Ok();
  return VerifyReads();
}

Result<std::vector<std::optional<std::string>>> BufferedKvTxn::SnapshotBatchGet(
    const std::vector<std::string>& keys) {
  std::vector<std::optional<std::string>> values;
  values.reserve(keys.size());
  for (const std::string& key : keys) {
    ASSIGN_OR_RETURN(std::optional<std::string> value, SnapshotGet(key));
    values.push_back(std::move(value));
  }
  return values;
}

}  // namespace tessera
