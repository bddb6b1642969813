// A test fixture with a freshly formatted volume, run once per engine:
// the memory engine, a real SQLite file and a private PostgreSQL server.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "kv/etcd_test_server.h"
#include "kv/pg_test_server.h"
#include "kv/redis_test_server.h"
#include "meta/meta.h"

namespace tessera {

// The running test's name, usable in a file name ("Suite/Name/1" has slashes).
inline std::string SafeTestName() {
  std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  for (char& c : name) {
    if (c == '/') c = '-';
  }
  return name;
}

class MetaFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string url = GetParam();
    if (url == "sqlite") {
      dir_ = std::filesystem::temp_directory_path() /
             ("tessera-meta-" + std::to_string(getpid()) + "-" + SafeTestName());
      std::filesystem::remove_all(dir_);
      std::filesystem::create_directories(dir_);
      url = "sqlite3://" + (dir_ / "meta.db").string();
    } else if (url == "postgres") {
      Result<std::string> pg = NewPgTestDatabase();
      ASSERT_TRUE(pg.ok()) << pg.status().ToString();
      url = *pg;
    } else if (url == "redis") {
      Result<std::string> redis = NewRedisTestUrl();
      ASSERT_TRUE(redis.ok()) << redis.status().ToString();
      url = *redis;
    }
    if (url == "etcd") {
      Result<std::string> etcd = NewEtcdTestUrl();
      ASSERT_TRUE(etcd.ok()) << etcd.status().ToString();
      url = *etcd;
    }
    auto kv = OpenKv(url, KvOptions{.create_if_missing = true});
    ASSERT_TRUE(kv.ok()) << kv.status().ToString();
    VolumeSettings s;
    s.name = "test-vol";
    s.uuid = NewUuid();
    s.bucket = "/tmp/unused";
    s.capacity = capacity_;
    // Deleting for good unless a test turns the trash on.
    s.trash_days = trash_days_;
    bool created = false;
    ASSERT_TRUE(Meta::Format(**kv, s, &created).ok());
    ASSERT_TRUE(created);
    auto meta = Meta::Open(std::move(*kv));
    ASSERT_TRUE(meta.ok());
    meta_ = std::move(*meta);
    meta_->SetSliceDeleter([this](const std::vector<SliceRef>& s) {
      freed_.insert(freed_.end(), s.begin(), s.end());
    });
  }
  void TearDown() override {
    meta_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  InodeId MakeFile(InodeId parent, const std::string& name) {
    auto e = meta_->Mknod(ctx_, parent, name, S_IFREG | 0644, 0);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? e->inode : InodeId();
  }
  InodeId MakeDir(InodeId parent, const std::string& name) {
    auto e = meta_->Mkdir(ctx_, parent, name, 0755);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? e->inode : InodeId();
  }
  // Names in a directory, sorted.
  std::vector<std::string> List(InodeId dir) {
    std::vector<std::string> names;
    uint64_t after = 0;
    while (true) {
      auto page = meta_->ReadDir(dir, after, 3, true);
      EXPECT_TRUE(page.ok());
      if (!page.ok()) break;
      for (auto& item : page->items) names.push_back(item.name);
      if (!page->more) break;
      after = page->items.back().cookie;
    }
    std::sort(names.begin(), names.end());
    return names;
  }
  // Every key in the store between two keys, to check what operations leave.
  std::vector<std::string> Keys(const std::string& begin, const std::string& end) {
    std::vector<std::string> out;
    Status st = WithTransaction(meta_->kv(), [&](KvTxn& txn) -> Status {
      out.clear();
      ASSIGN_OR_RETURN(ScanResult page, txn.Scan(begin, end, 0));
      for (auto& kv : page.items) out.push_back(kv.key);
      return Status::Ok();
    });
    EXPECT_TRUE(st.ok());
    return out;
  }

  Context ctx_{1000, 1000, 1};
  uint64_t capacity_ = 0;
  uint32_t trash_days_ = 0;
  std::filesystem::path dir_;
  std::unique_ptr<Meta> meta_;
  std::vector<SliceRef> freed_;
};

}  // namespace tessera
