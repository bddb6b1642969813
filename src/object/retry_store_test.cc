#include "object/retry_store.h"

#include <gtest/gtest.h>

#include <atomic>

namespace tessera {
namespace {

// Fails the first `failures` calls with `code`, then passes them through.
class FlakyStore : public ObjectStore {
 public:
  FlakyStore(std::unique_ptr<ObjectStore> inner, int failures, StatusCode code)
      : inner_(std::move(inner)), failures_(failures), code_(code) {}
  std::string Describe() const override { return "flaky"; }
  Status Put(std::string_view key, std::string_view data) override {
    if (Fail()) return Status(code_, "injected");
    return inner_->Put(key, data);
  }
  Result<std::string> Get(std::string_view key, uint64_t offset, int64_t length) override {
    if (Fail()) return Status(code_, "injected");
    return inner_->Get(key, offset, length);
  }
  Result<ObjectInfo> Head(std::string_view key) override {
    if (Fail()) return Status(code_, "injected");
    return inner_->Head(key);
  }
  Status Delete(std::string_view key) override {
    if (Fail()) return Status(code_, "injected");
    return inner_->Delete(key);
  }
  Result<ListPage> List(std::string_view p, std::string_view s, size_t l) override {
    if (Fail()) return Status(code_, "injected");
    return inner_->List(p, s, l);
  }
  std::atomic<int> calls{0};

 private:
  bool Fail() { return calls++ < failures_; }
  std::unique_ptr<ObjectStore> inner_;
  const int failures_;
  const StatusCode code_;
};

RetryPolicy Fast() {
  RetryPolicy p;
  p.max_attempts = 4;
  p.first_pause = std::chrono::milliseconds(1);
  return p;
}

TEST(RetryStoreTest, TransientFailuresAreRetriedUntilTheyPass) {
  auto mem = OpenObjectStore("mem", "");
  ASSERT_TRUE((*mem)->Put("k", "value").ok());
  auto flaky = std::make_unique<FlakyStore>(std::move(*mem), 3, StatusCode::kUnavailable);
  FlakyStore* raw = flaky.get();
  RetryStore store(std::move(flaky), Fast());
  auto v = store.Get("k", 0, -1);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, "value");
  EXPECT_EQ(raw->calls.load(), 4);
}

TEST(RetryStoreTest, PersistentFailuresReturnTheLastError) {
  auto mem = OpenObjectStore("mem", "");
  auto flaky = std::make_unique<FlakyStore>(std::move(*mem), 100, StatusCode::kIo);
  FlakyStore* raw = flaky.get();
  RetryStore store(std::move(flaky), Fast());
  Status st = store.Put("k", "v");
  EXPECT_EQ(st.code(), StatusCode::kIo);
  EXPECT_EQ(raw->calls.load(), 4);
}

TEST(RetryStoreTest, DefinitiveAnswersAreNotRetried) {
  auto mem = OpenObjectStore("mem", "");
  auto flaky = std::make_unique<FlakyStore>(std::move(*mem), 0, StatusCode::kOk);
  FlakyStore* raw = flaky.get();
  RetryStore store(std::move(flaky), Fast());
  EXPECT_EQ(store.Get("missing", 0, -1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(raw->calls.load(), 1);
}

}  // namespace
}  // namespace tessera
