#include "object/memory_store.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "common/units.h"

namespace tessera {

struct MemoryStore::Shared {
  struct Object {
    // Immutable once stored, so readers copy it without holding mu.
    std::shared_ptr<const std::string> data;
    int64_t mtime_ns = 0;
  };
  std::mutex mu;
  std::map<std::string, Object, std::less<>> objects;  // guarded by mu
};

MemoryStore::MemoryStore() : MemoryStore(std::string(), std::make_shared<Shared>()) {}

MemoryStore::MemoryStore(std::string name, std::shared_ptr<Shared> shared)
    : name_(std::move(name)), shared_(std::move(shared)) {}

std::unique_ptr<MemoryStore> MemoryStore::Open(std::string_view name) {
  if (name.empty()) return std::make_unique<MemoryStore>();
  // Named stores live until the process exits, so a name can be reopened
  // after every store using it was closed. Leaked on purpose: no destructor
  // runs at exit while other static destructors might still use a store.
  struct Registry {
    std::mutex mu;
    std::map<std::string, std::shared_ptr<Shared>, std::less<>> stores;  // guarded by mu
  };
  static Registry& registry = *new Registry;
  std::shared_ptr<Shared> shared;
  {
    std::lock_guard<std::mutex> lock(registry.mu);
    auto it = registry.stores.find(name);
    if (it == registry.stores.end()) {
      it = registry.stores.emplace(std::string(name), std::make_shared<Shared>()).first;
    }
    shared = it->second;
  }
  return std::unique_ptr<MemoryStore>(new MemoryStore(std::string(name), std::move(shared)));
}

std::string MemoryStore::Describe() const {
  return name_.empty() ? "mem://(private)" : "mem://" + name_;
}

Status MemoryStore::NotFoundError(std::string_view key) const {
  return NotFound("object '" + std::string(key) + "' not found in " + Describe());
}

Status MemoryStore::Put(std::string_view key, std::string_view data) {
  if (key.empty()) return Invalid("empty object key for " + Describe());
  // Copy before taking the lock: large objects must not stall other callers.
  auto copy = std::make_shared<const std::string>(data);
  Shared::Object object{std::move(copy), NowNanos()};
  std::lock_guard<std::mutex> lock(shared_->mu);
  auto it = shared_->objects.find(key);
  if (it == shared_->objects.end()) {
    shared_->objects.emplace(std::string(key), std::move(object));
  } else {
    // The old data is released after the lock, via `object`.
    std::swap(it->second, object);
  }
  return Status::Ok();
}

Result<std::string> MemoryStore::Get(std::string_view key, uint64_t offset, int64_t length) {
  if (key.empty()) return Invalid("empty object key for " + Describe());
  std::shared_ptr<const std::string> data;
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    auto it = shared_->objects.find(key);
    if (it == shared_->objects.end()) return NotFoundError(key);
    data = it->second.data;
  }
  if (offset >= data->size()) return std::string();
  uint64_t want = data->size() - offset;
  if (length >= 0) want = std::min(want, static_cast<uint64_t>(length));
  return data->substr(offset, want);
}

Result<ObjectInfo> MemoryStore::Head(std::string_view key) {
  if (key.empty()) return Invalid("empty object key for " + Describe());
  std::lock_guard<std::mutex> lock(shared_->mu);
  auto it = shared_->objects.find(key);
  if (it == shared_->objects.end()) return NotFoundError(key);
  return ObjectInfo{it->first, it->second.data->size(), it->second.mtime_ns};
}

Status MemoryStore::Delete(std::string_view key) {
  if (key.empty()) return Invalid("empty object key for " + Describe());
  std::shared_ptr<const std::string> old;  // freed after the lock is released
  std::lock_guard<std::mutex> lock(shared_->mu);
  auto it = shared_->objects.find(key);
  if (it != shared_->objects.end()) {
    old = std::move(it->second.data);
    shared_->objects.erase(it);
  }
  return Status::Ok();
}

Result<ListPage> MemoryStore::List(std::string_view prefix, std::string_view start_after,
                                   size_t limit) {
  if (limit == 0) limit = 1000;
  ListPage page;
  std::lock_guard<std::mutex> lock(shared_->mu);
  auto it = start_after < prefix ? shared_->objects.lower_bound(prefix)
                                 : shared_->objects.upper_bound(start_after);
  for (; it != shared_->objects.end() && it->first.starts_with(prefix); ++it) {
    if (page.objects.size() == limit) {
      page.more = true;
      break;
    }
    page.objects.push_back(ObjectInfo{it->first, it->second.data->size(), it->second.mtime_ns});
  }
  return page;
}

}  // namespace tessera
