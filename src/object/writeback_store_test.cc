// WritebackStore over a real temporary directory and the memory store. The
// conformance suite (object_store_test.cc) runs it too; these tests cover
// staging, delays, cancellation, restarts and failures.
#include "object/writeback_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <utime.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "object/memory_store.h"

namespace tessera {
namespace {

using std::chrono::milliseconds;
namespace fs = std::filesystem;

// What the tests steer and observe in the store under the writeback store.
struct Controls {
  std::atomic<bool> fail_puts{false};
  std::atomic<int> failed_puts{0};
  std::mutex mu;
  std::condition_variable cv;
  bool hold_puts = false;  // Puts wait here while true
  int held = 0;            // Puts waiting now
  std::map<std::string, int> puts;  // successful Puts per key

  void Hold() {
    std::lock_guard lock(mu);
    hold_puts = true;
  }
  void Release() {
    {
      std::lock_guard lock(mu);
      hold_puts = false;
    }
    cv.notify_all();
  }
  bool WaitHeld(int n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(5), [&] { return held >= n; });
  }
  int PutsOf(const std::string& key) {
    std::lock_guard lock(mu);
    return puts[key];
  }
};

class TestBackend : public ObjectStore {
 public:
  TestBackend(ObjectStore* inner, Controls* ctl) : inner_(inner), ctl_(ctl) {}
  std::string Describe() const override { return "test-backend"; }
  Status Put(std::string_view key, std::string_view data) override {
    {
      std::unique_lock lock(ctl_->mu);
      ++ctl_->held;
      ctl_->cv.notify_all();
      ctl_->cv.wait(lock, [&] { return !ctl_->hold_puts; });
      --ctl_->held;
    }
    if (ctl_->fail_puts) {
      ++ctl_->failed_puts;
      return Unavailable("injected: store down");
    }
    RETURN_IF_ERROR(inner_->Put(key, data));
    std::lock_guard lock(ctl_->mu);
    ctl_->puts[std::string(key)]++;
    return Status::Ok();
  }
  Result<std::string> Get(std::string_view key, uint64_t offset, int64_t length) override {
    return inner_->Get(key, offset, length);
  }
  Result<ObjectInfo> Head(std::string_view key) override { return inner_->Head(key); }
  Status Delete(std::string_view key) override { return inner_->Delete(key); }
  Result<ListPage> List(std::string_view p, std::string_view s, size_t l) override {
    return inner_->List(p, s, l);
  }

 private:
  ObjectStore* const inner_;
  Controls* const ctl_;
};

class WritebackStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/tessera-writeback-test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/staging";
  }
  void TearDown() override {
    ctl_.Release();
    store_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::unique_ptr<WritebackStore> Open(milliseconds delay, Status* error = nullptr) {
    WritebackOptions o;
    o.dir = dir_;
    o.upload_delay = delay;
    o.max_uploads = 2;
    o.first_retry_pause = milliseconds(20);
    o.max_retry_pause = milliseconds(50);
    auto store = WritebackStore::Open(std::make_unique<TestBackend>(&mem_, &ctl_), o);
    if (!store.ok()) {
      if (error != nullptr) *error = store.status();
      return nullptr;
    }
    return std::move(store).value();
  }

  bool Staged(std::string_view key) { return fs::exists(dir_ + "/" + WritebackStore::FileNameOf(key)); }
  bool InBackend(std::string_view key) { return mem_.Head(key).ok(); }
  // Files in the staging directory other than its lock file.
  std::set<std::string> StagingFiles() {
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.path().filename() != ".lock") out.insert(e.path().filename());
    }
    return out;
  }
  template <typename Pred>
  bool WaitFor(Pred pred, milliseconds limit = milliseconds(5000)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }

  std::string root_, dir_;
  MemoryStore mem_;
  Controls ctl_;
  std::unique_ptr<WritebackStore> store_;
};

const std::string kKey = "vol/chunks/0/0/17_0_4194304";

TEST_F(WritebackStoreTest, PutStagesDurablyAndReadsComeFromStaging) {
  store_ = Open(std::chrono::hours(1));
  ASSERT_NE(store_, nullptr);
  const std::string data(100000, 'x');
  ASSERT_TRUE(store_->Put(kKey, data).ok());
  ASSERT_TRUE(store_->Put("vol/chunks/0/0/18_0_3", "abc").ok());

  EXPECT_FALSE(InBackend(kKey));
  EXPECT_TRUE(Staged(kKey));
  EXPECT_EQ(StagingFiles().size(), 2u);  // no temporary file left behind
  PendingUploads p = store_->Pending();
  EXPECT_EQ(p.objects, 2u);
  EXPECT_EQ(p.bytes, data.size() + 3);

  auto got = store_->Get(kKey);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data);
  auto range = store_->Get("vol/chunks/0/0/18_0_3", 1, 5);
  ASSERT_TRUE(range.ok());
  EXPECT_EQ(*range, "bc");
  auto head = store_->Head(kKey);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->size, data.size());
  auto page = store_->List("vol/", "", 0);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->objects.size(), 2u);
  EXPECT_EQ(page->objects[0].key, kKey);

  // Drain ignores the delay.
  ASSERT_TRUE(store_->Drain(milliseconds(5000)).ok());
  EXPECT_EQ(*mem_.Get(kKey), data);
  EXPECT_EQ(*mem_.Get("vol/chunks/0/0/18_0_3"), "abc");
  EXPECT_EQ(store_->Pending().objects, 0u);
  EXPECT_EQ(store_->Pending().bytes, 0u);
  EXPECT_TRUE(StagingFiles().empty());
  EXPECT_EQ(*store_->Get(kKey), data);  // now from the store
}

TEST_F(WritebackStoreTest, UploadWaitsForTheDelay) {
  store_ = Open(milliseconds(300));
  ASSERT_NE(store_, nullptr);
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(store_->Put(kKey, "data").ok());
  EXPECT_FALSE(InBackend(kKey));
  ASSERT_TRUE(WaitFor([&] { return InBackend(kKey); }));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(300));
  ASSERT_TRUE(WaitFor([&] { return !Staged(kKey); }));
  EXPECT_EQ(store_->Pending().objects, 0u);
}

TEST_F(WritebackStoreTest, DeleteCancelsAQueuedUpload) {
  store_ = Open(milliseconds(200));
  ASSERT_NE(store_, nullptr);
  ASSERT_TRUE(store_->Put(kKey, "short-lived").ok());
  ASSERT_TRUE(store_->Delete(kKey).ok());
  EXPECT_FALSE(Staged(kKey));
  EXPECT_EQ(store_->Pending().objects, 0u);
  EXPECT_EQ(store_->Get(kKey).status().code(), StatusCode::kNotFound);
  std::this_thread::sleep_for(milliseconds(500));  // past the delay
  EXPECT_EQ(ctl_.PutsOf(kKey), 0);
  EXPECT_FALSE(InBackend(kKey));
  EXPECT_TRUE(store_->Drain(milliseconds(1000)).ok());
  EXPECT_EQ(ctl_.PutsOf(kKey), 0);
}

TEST_F(WritebackStoreTest, DeleteDuringAnUploadLeavesNoObject) {
  store_ = Open(milliseconds(0));
  ASSERT_NE(store_, nullptr);
  ctl_.Hold();
  ASSERT_TRUE(store_->Put(kKey, "racing").ok());
  ASSERT_TRUE(ctl_.WaitHeld(1));  // the upload is inside the store's Put
  std::atomic<bool> deleted{false};
  std::thread del([&] {
    EXPECT_TRUE(store_->Delete(kKey).ok());
    deleted = true;
  });
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_FALSE(deleted.load());  // it waits for the upload it cannot recall
  ctl_.Release();
  del.join();
  EXPECT_EQ(ctl_.PutsOf(kKey), 1);  // the upload landed...
  EXPECT_FALSE(InBackend(kKey));    // ...and did not survive the Delete
  EXPECT_FALSE(Staged(kKey));
  EXPECT_EQ(store_->Pending().objects, 0u);
  EXPECT_EQ(store_->Get(kKey).status().code(), StatusCode::kNotFound);
}

TEST_F(WritebackStoreTest, PutDuringAnUploadOfTheSameKeyUploadsTheNewVersion) {
  store_ = Open(milliseconds(0));
  ASSERT_NE(store_, nullptr);
  ctl_.Hold();
  ASSERT_TRUE(store_->Put(kKey, "old").ok());
  ASSERT_TRUE(ctl_.WaitHeld(1));
  ASSERT_TRUE(store_->Put(kKey, "new!").ok());  // staging does not wait for the upload
  EXPECT_EQ(*store_->Get(kKey), "new!");
  ctl_.Release();
  ASSERT_TRUE(store_->Drain(milliseconds(5000)).ok());
  EXPECT_EQ(*mem_.Get(kKey), "new!");
  EXPECT_EQ(ctl_.PutsOf(kKey), 2);
  EXPECT_TRUE(StagingFiles().empty());
}

TEST_F(WritebackStoreTest, ANewStoreOverTheSameDirectoryUploadsLeftovers) {
  store_ = Open(std::chrono::hours(1));
  ASSERT_NE(store_, nullptr);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(store_->Put("vol/chunks/0/0/" + std::to_string(i) + "_0_5", "blk-" + std::to_string(i)).ok());
  }
  store_.reset();  // like a killed process: nothing was uploaded
  EXPECT_TRUE(mem_.List("", "", 0)->objects.empty());
  // A crash mid-Put leaves a temporary file; a file the store never makes is
  // neither uploaded nor removed.
  std::ofstream(dir_ + "/.tmp.0123456789abcdef") << "partial";
  std::ofstream(dir_ + "/notes.txt") << "not mine";

  // Still staged and readable after a restart with the delay.
  store_ = Open(std::chrono::hours(1));
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(store_->Pending().objects, 3u);
  EXPECT_EQ(store_->Pending().bytes, 15u);
  EXPECT_EQ(*store_->Get("vol/chunks/0/0/1_0_5"), "blk-1");
  EXPECT_FALSE(fs::exists(dir_ + "/.tmp.0123456789abcdef"));
  store_.reset();

  // Without a delay, a new store uploads them by itself.
  store_ = Open(milliseconds(0));
  ASSERT_NE(store_, nullptr);
  ASSERT_TRUE(WaitFor([&] { return store_->Pending().objects == 0; }));
  for (int i = 0; i < 3; ++i) {
    auto got = mem_.Get("vol/chunks/0/0/" + std::to_string(i) + "_0_5");
    ASSERT_TRUE(got.ok()) << i;
    EXPECT_EQ(*got, "blk-" + std::to_string(i));
  }
  EXPECT_EQ(StagingFiles(), std::set<std::string>{"notes.txt"});
}

TEST_F(WritebackStoreTest, TheDelayCountsFromWhenAnObjectWasStaged) {
  store_ = Open(std::chrono::hours(1));
  ASSERT_NE(store_, nullptr);
  ASSERT_TRUE(store_->Put("old", "staged two hours ago").ok());
  ASSERT_TRUE(store_->Put("new", "staged now").ok());
  store_.reset();
  struct utimbuf two_hours_ago;
  two_hours_ago.actime = two_hours_ago.modtime = time(nullptr) - 7200;
  ASSERT_EQ(utime((dir_ + "/old").c_str(), &two_hours_ago), 0);
  store_ = Open(std::chrono::hours(1));
  ASSERT_NE(store_, nullptr);
  ASSERT_TRUE(WaitFor([&] { return InBackend("old"); }));
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_FALSE(InBackend("new"));
  EXPECT_EQ(store_->Pending().objects, 1u);
}

TEST_F(WritebackStoreTest, OneStorePerDirectory) {
  store_ = Open(milliseconds(0));
  ASSERT_NE(store_, nullptr);
  Status error;
  EXPECT_EQ(Open(milliseconds(0), &error), nullptr);
  EXPECT_EQ(error.code(), StatusCode::kBusy);
  EXPECT_NE(error.message().find(dir_ + "/.lock"), std::string::npos) << error.message();
  store_.reset();
  EXPECT_NE(Open(milliseconds(0)), nullptr);  // free again
}

TEST_F(WritebackStoreTest, FailedUploadsKeepTheObjectStagedAndRetry) {
  store_ = Open(milliseconds(0));
  ASSERT_NE(store_, nullptr);
  ctl_.fail_puts = true;
  ASSERT_TRUE(store_->Put(kKey, "precious").ok());
  ASSERT_TRUE(WaitFor([&] { return ctl_.failed_puts >= 3; }));  // retried
  EXPECT_TRUE(Staged(kKey));
  EXPECT_FALSE(InBackend(kKey));
  EXPECT_EQ(store_->Pending().objects, 1u);
  EXPECT_EQ(*store_->Get(kKey), "precious");

  Status drained = store_->Drain(milliseconds(200));
  EXPECT_EQ(drained.code(), StatusCode::kUnavailable);
  EXPECT_NE(drained.message().find(dir_), std::string::npos) << drained.message();
  EXPECT_TRUE(Staged(kKey));

  ctl_.fail_puts = false;
  ASSERT_TRUE(store_->Drain(milliseconds(5000)).ok());
  EXPECT_EQ(*mem_.Get(kKey), "precious");
  EXPECT_FALSE(Staged(kKey));
}

TEST_F(WritebackStoreTest, AnUnusableStagingDirectoryFallsBackToDirectUploads) {
  store_ = Open(std::chrono::hours(1));
  ASSERT_NE(store_, nullptr);
  ASSERT_TRUE(store_->Put("before", "staged").ok());
  EXPECT_FALSE(InBackend("before"));
  // A file where the directory was: every staging call fails (ENOTDIR),
  // even for root.
  fs::rename(dir_, dir_ + ".moved");
  std::ofstream(dir_) << "in the way";
  ASSERT_TRUE(store_->Put(kKey, "direct").ok());
  EXPECT_EQ(*mem_.Get(kKey), "direct");  // uploaded at once, despite the delay
  EXPECT_EQ(*store_->Get(kKey), "direct");
  EXPECT_EQ(store_->Pending().objects, 1u);  // "before" only
  // Once the directory is back, objects are staged again.
  fs::remove(dir_);
  fs::rename(dir_ + ".moved", dir_);
  ASSERT_TRUE(store_->Put("after", "staged again").ok());
  EXPECT_FALSE(InBackend("after"));
  EXPECT_TRUE(Staged("after"));
  EXPECT_EQ(store_->Pending().objects, 2u);
}

TEST_F(WritebackStoreTest, KeysTooLongForAFileNameAreUploadedDirectly) {
  store_ = Open(std::chrono::hours(1));
  ASSERT_NE(store_, nullptr);
  const std::string key(200, '/');  // 600 bytes once escaped
  EXPECT_EQ(WritebackStore::FileNameOf(key), "");
  ASSERT_TRUE(store_->Put(key, "v").ok());
  EXPECT_TRUE(InBackend(key));
  EXPECT_EQ(store_->Pending().objects, 0u);
}

TEST_F(WritebackStoreTest, StagingFileNamesAreEscapedKeys) {
  EXPECT_EQ(WritebackStore::FileNameOf("vol/chunks/0/1/1234_0_4194304"),
            "vol%2Fchunks%2F0%2F1%2F1234_0_4194304");
  EXPECT_EQ(WritebackStore::FileNameOf(".a%"), "%2Ea%25");
  EXPECT_EQ(WritebackStore::FileNameOf(""), "");
}

TEST_F(WritebackStoreTest, ListMergesStagedAndUploadedKeysAcrossPages) {
  store_ = Open(std::chrono::hours(1));
  ASSERT_NE(store_, nullptr);
  // Even keys in the store, odd ones staged.
  std::vector<std::string> all;
  for (int i = 0; i < 50; ++i) {
    char key[16];
    std::snprintf(key, sizeof(key), "k/%02d", i);
    all.push_back(key);
    if (i % 2 == 0) {
      ASSERT_TRUE(mem_.Put(key, "s").ok());
    } else {
      ASSERT_TRUE(store_->Put(key, "staged").ok());
    }
  }
  std::vector<std::string> listed;
  std::string after;
  int pages = 0;
  while (true) {
    auto page = store_->List("k/", after, 7);
    ASSERT_TRUE(page.ok());
    ++pages;
    for (const ObjectInfo& o : page->objects) listed.push_back(o.key);
    if (!page->more) break;
    ASSERT_EQ(page->objects.size(), 7u);
    after = page->objects.back().key;
  }
  EXPECT_EQ(listed, all);
  EXPECT_EQ(pages, 8);
}

}  // namespace
}  // namespace tessera
