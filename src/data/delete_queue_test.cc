#include "data/delete_queue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "object/object_store.h"

namespace tessera {
namespace {

// Deletes slowly, counting how many run at once; fails deletes of keys
// containing `fail_`.
class SlowDeleteStore : public ObjectStore {
 public:
  explicit SlowDeleteStore(ObjectStore* inner) : inner_(inner) {}
  std::string Describe() const override { return inner_->Describe(); }
  Status Put(std::string_view key, std::string_view data) override { return inner_->Put(key, data); }
  Result<std::string> Get(std::string_view key, uint64_t offset, int64_t length) override {
    return inner_->Get(key, offset, length);
  }
  Result<ObjectInfo> Head(std::string_view key) override { return inner_->Head(key); }
  Status Delete(std::string_view key) override {
    int now = ++running;
    int seen = peak.load();
    while (now > seen && !peak.compare_exchange_weak(seen, now)) {
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    --running;
    if (!fail.empty() && key.find(fail) != std::string_view::npos) return IoError("refused");
    return inner_->Delete(key);
  }
  Result<ListPage> List(std::string_view prefix, std::string_view start_after, size_t limit) override {
    return inner_->List(prefix, start_after, limit);
  }
  std::atomic<int> running{0}, peak{0};
  std::string fail;

 private:
  ObjectStore* inner_;
};

class DeleteQueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Stores of one name are shared within the process: one per test.
    auto s = OpenObjectStore("mem", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(s.ok());
    mem_ = std::move(s).value();
    store_ = std::make_unique<SlowDeleteStore>(mem_.get());
    slices_ = std::make_unique<SliceStore>("vol", 4096, store_.get());
  }
  // A slice of two blocks.
  SliceRef Make(uint64_t id) {
    SliceRef s{SliceId(id), 6000};
    EXPECT_TRUE(slices_->PutBlock(s.id, 0, std::string(4096, 'a')).ok());
    EXPECT_TRUE(slices_->PutBlock(s.id, 1, std::string(1904, 'b')).ok());
    return s;
  }
  size_t Objects() {
    auto page = mem_->List("vol/", "", 100000);
    return page.ok() ? page->objects.size() : 0;
  }
  std::unique_ptr<ObjectStore> mem_;
  std::unique_ptr<SlowDeleteStore> store_;
  std::unique_ptr<SliceStore> slices_;
  std::mutex mu_;
  std::vector<SliceRef> done_;
  DeleteQueue::DoneFn Collect() {
    return [this](const std::vector<SliceRef>& batch) {
      std::lock_guard lock(mu_);
      done_.insert(done_.end(), batch.begin(), batch.end());
    };
  }
};

TEST_F(DeleteQueueTest, DeletesEveryBlockWithBoundedConcurrencyAndReportsThem) {
  std::vector<SliceRef> slices;
  for (uint64_t id = 1; id <= 40; ++id) slices.push_back(Make(id));
  ASSERT_EQ(Objects(), 80u);
  DeleteQueue queue(slices_.get(), 3, 1000, Collect());
  EXPECT_EQ(queue.Add(slices), 40u);
  EXPECT_EQ(queue.Add({slices[39]}), 0u);  // queued already: taken once
  ASSERT_TRUE(queue.Drain(10'000));
  EXPECT_EQ(Objects(), 0u);
  EXPECT_LE(store_->peak.load(), 3);
  EXPECT_GE(store_->peak.load(), 2);
  std::lock_guard lock(mu_);
  ASSERT_EQ(done_.size(), 40u);
  auto by_id = [](const SliceRef& a, const SliceRef& b) { return a.id.value() < b.id.value(); };
  std::sort(done_.begin(), done_.end(), by_id);
  EXPECT_EQ(done_, slices);
  EXPECT_EQ(queue.stats().deleted, 40u);
}

TEST_F(DeleteQueueTest, FailedAndOverflowingSlicesAreNotReported) {
  SliceRef ok = Make(1), bad = Make(2);
  store_->fail = "/2_";
  DeleteQueue queue(slices_.get(), 1, 2, Collect());
  // Room for two: the third is left to a later pass over the records.
  EXPECT_EQ(queue.Add({ok, bad, Make(3)}), 2u);
  ASSERT_TRUE(queue.Drain(10'000));
  {
    std::lock_guard lock(mu_);
    ASSERT_EQ(done_.size(), 1u);
    EXPECT_EQ(done_[0], ok);
  }
  EXPECT_EQ(queue.stats().failed, 1u);
  EXPECT_EQ(queue.stats().dropped, 1u);
  // A later pass takes both again; the failed one now goes.
  store_->fail.clear();
  EXPECT_EQ(queue.Add({bad, SliceRef{SliceId(3), 6000}}), 2u);
  ASSERT_TRUE(queue.Drain(10'000));
  EXPECT_EQ(Objects(), 0u);
  std::lock_guard lock(mu_);
  EXPECT_EQ(done_.size(), 3u);
}

TEST_F(DeleteQueueTest, StoppingLeavesWaitingSlicesUnreported) {
  std::vector<SliceRef> slices;
  for (uint64_t id = 1; id <= 50; ++id) slices.push_back(Make(id));
  {
    DeleteQueue queue(slices_.get(), 1, 1000, Collect());
    queue.Add(slices);
  }
  // What was deleted was reported; the rest keeps its blocks (and would keep
  // its records), never the other way round.
  std::lock_guard lock(mu_);
  EXPECT_LT(done_.size(), 50u);
  EXPECT_EQ(Objects(), 2 * (50 - done_.size()));
}

}  // namespace
}  // namespace tessera
