// SegmentedLru: the recency bookkeeping of a cache of variable-size entries,
// measured in bytes, with two segments (SLRU):
//
//   probation  new entries, and entries demoted from protected;
//   protected  entries the owner has Promote()d (re-referenced), at most
//              protected_capacity bytes; overflow is demoted, LRU first, to
//              the MRU end of probation.
//
// Victim() names the least valuable entry: the LRU end of probation, or of
// protected when probation is empty. With protected_capacity 0 and no
// Promote() calls this is a plain LRU by bytes (the memory tier uses it so).
// Which accesses count as re-references is the owner's decision, not this
// class's (see cache/README.md).
//
// Holds no locks and does no I/O: not thread-safe, the owner serialises all
// calls under its own mutex. Every operation is O(1) expected.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace tessera {

// Lets unordered maps keyed by std::string be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <typename V>
class SegmentedLru {
 public:
  explicit SegmentedLru(uint64_t protected_capacity = 0)
      : protected_capacity_(protected_capacity) {}
  SegmentedLru(const SegmentedLru&) = delete;
  SegmentedLru& operator=(const SegmentedLru&) = delete;

  // The value stored under `key`, or nullptr. Does not change recency.
  V* Find(std::string_view key) {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second.value;
  }
  bool IsProtected(std::string_view key) const {
    auto it = map_.find(key);
    return it != map_.end() && it->second.is_protected;
  }

  // Adds `key` (which must be absent; returns false otherwise) at the MRU end
  // of probation, charging `bytes`.
  bool Insert(std::string key, uint64_t bytes, V value) {
    auto [it, inserted] = map_.try_emplace(std::move(key));
    if (!inserted) return false;
    Node& n = it->second;
    n.value = std::move(value);
    n.bytes = bytes;
    n.is_protected = false;
    probation_.push_back(&it->first);
    n.pos = std::prev(probation_.end());
    bytes_ += bytes;
    return true;
  }

  // Moves `key` to the MRU end of the segment it is in. No-op when absent.
  void Touch(std::string_view key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    std::list<const std::string*>& seg = it->second.is_protected ? protected_ : probation_;
    seg.splice(seg.end(), seg, it->second.pos);
  }

  // Moves `key` to the MRU end of protected, demoting protected's LRU
  // entries to probation while protected holds more than its capacity. An
  // entry larger than the whole protected capacity stays in probation.
  void Promote(std::string_view key) {
    auto it = map_.find(key);
    if (it == map_.end()) return;
    Node& n = it->second;
    if (n.is_protected) {
      protected_.splice(protected_.end(), protected_, n.pos);
      return;
    }
    if (n.bytes > protected_capacity_) {
      probation_.splice(probation_.end(), probation_, n.pos);
      return;
    }
    protected_.splice(protected_.end(), probation_, n.pos);
    n.is_protected = true;
    protected_bytes_ += n.bytes;
    while (protected_bytes_ > protected_capacity_) {
      Node& lru = map_.find(*protected_.front())->second;
      probation_.splice(probation_.end(), protected_, lru.pos);
      lru.is_protected = false;
      protected_bytes_ -= lru.bytes;
    }
  }

  // Removes `key`; returns false when it was absent.
  bool Erase(std::string_view key) {
    auto it = map_.find(key);
    if (it == map_.end()) return false;
    Node& n = it->second;
    bytes_ -= n.bytes;
    if (n.is_protected) {
      protected_bytes_ -= n.bytes;
      protected_.erase(n.pos);
    } else {
      probation_.erase(n.pos);
    }
    map_.erase(it);
    return true;
  }

  // The key to evict next, or nullptr when empty. Valid until the next
  // mutating call.
  const std::string* Victim() const {
    if (!probation_.empty()) return probation_.front();
    if (!protected_.empty()) return protected_.front();
    return nullptr;
  }

  // Bytes charged for `key` (0 when absent).
  uint64_t BytesOf(std::string_view key) const {
    auto it = map_.find(key);
    return it == map_.end() ? 0 : it->second.bytes;
  }

  size_t size() const { return map_.size(); }
  uint64_t bytes() const { return bytes_; }
  uint64_t protected_bytes() const { return protected_bytes_; }

 private:
  struct Node {
    V value{};
    uint64_t bytes = 0;
    bool is_protected = false;
    // Position in its segment's list; the lists point at the map's keys,
    // which stay put (unordered_map nodes never move, even on rehash).
    std::list<const std::string*>::iterator pos;
  };

  const uint64_t protected_capacity_;
  std::unordered_map<std::string, Node, StringHash, std::equal_to<>> map_;
  std::list<const std::string*> probation_;  // front = LRU
  std::list<const std::string*> protected_;  // front = LRU
  uint64_t bytes_ = 0;
  uint64_t protected_bytes_ = 0;
};

}  // namespace tessera
