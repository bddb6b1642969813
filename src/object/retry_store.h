// RetryStore wraps an object store and repeats a call that failed in a way
// a retry may cure (unavailable, busy, I/O errors) with growing, jittered
// pauses. A call that still fails returns the last error, so a block that
// cannot be read fails that read only. Thread-safe as the store it wraps.
#pragma once

#include <chrono>
#include <memory>

#include "object/object_store.h"

namespace tessera {

struct RetryPolicy {
  int max_attempts = 6;                                    // first try included
  std::chrono::milliseconds first_pause{20};               // doubles each retry
  std::chrono::milliseconds max_pause{2000};
};

class RetryStore : public ObjectStore {
 public:
  RetryStore(std::unique_ptr<ObjectStore> inner, RetryPolicy policy = {});

  std::string Describe() const override { return inner_->Describe(); }
  Status Put(std::string_view key, std::string_view data) override;
  Result<std::string> Get(std::string_view key, uint64_t offset, int64_t length) override;
  Result<ObjectInfo> Head(std::string_view key) override;
  Status Delete(std::string_view key) override;
  Result<ListPage> List(std::string_view prefix, std::string_view start_after,
                        size_t limit) override;

 private:
  // Runs call() until it succeeds, fails for good, or attempts run out.
  template <typename Call>
  auto Retry(Call call) -> decltype(call());

  std::unique_ptr<ObjectStore> inner_;
  const RetryPolicy policy_;
};

}  // namespace tessera
