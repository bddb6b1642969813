// SQLite-engine specifics: the file on disk, several stores (and processes)
// on one file, and the errors for bad paths.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/coding.h"
#include "kv/kv.h"
#include "kv/kv_test_util.h"

namespace tessera {
namespace {

class SqliteKvTest : public ::testing::Test {
 protected:
  std::string DbPath() const { return dir_.path() + "/meta.db"; }
  std::string Url() const { return "sqlite3://" + DbPath(); }

  static std::unique_ptr<KvStore> Open(const std::string& url, bool create = true) {
    KvOptions options;
    options.create_if_missing = create;
    auto store = OpenKv(url, options);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  static Status Put(KvStore& store, const std::string& key, const std::string& value) {
    return WithTransaction(store, [&](KvTxn& txn) {
      txn.Put(key, value);
      return Status::Ok();
    });
  }

  static std::optional<std::string> Get(KvStore& store, const std::string& key) {
    auto txn = store.Begin();
    EXPECT_TRUE(txn.ok());
    auto v = (*txn)->Get(key);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : std::nullopt;
  }

  static Status Increment(KvStore& store) {
    return WithTransaction(store, [](KvTxn& txn) {
      ASSIGN_OR_RETURN(std::optional<std::string> v, txn.Get("counter"));
      uint64_t n = v && v->size() == 8 ? GetBig64(v->data()) : 0;
      std::string next;
      PutBig64(&next, n + 1);
      txn.Put("counter", next);
      return Status::Ok();
    });
  }

  TempDir dir_;
};

TEST_F(SqliteKvTest, PersistsAcrossReopen) {
  {
    auto store = Open(Url());
    ASSERT_TRUE(store);
    EXPECT_EQ(store->Url(), Url());
    ASSERT_TRUE(Put(*store, "k", "v").ok());
  }
  auto store = Open(Url(), /*create=*/false);
  ASSERT_TRUE(store);
  EXPECT_EQ(Get(*store, "k"), "v");
}

TEST_F(SqliteKvTest, RelativePath) {
  char old_cwd[PATH_MAX];
  ASSERT_NE(getcwd(old_cwd, sizeof old_cwd), nullptr);
  ASSERT_EQ(chdir(dir_.path().c_str()), 0);
  {
    auto store = Open("sqlite3://rel.db");
    if (store) {
      EXPECT_TRUE(Put(*store, "k", "v").ok());
    }
  }
  ASSERT_EQ(chdir(old_cwd), 0);
  EXPECT_TRUE(std::filesystem::exists(dir_.path() + "/rel.db"));
}

TEST_F(SqliteKvTest, TwoStoresOnOneFileSeeEachOther) {
  auto a = Open(Url());
  auto b = Open(Url(), /*create=*/false);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(Put(*a, "from-a", "1").ok());
  EXPECT_EQ(Get(*b, "from-a"), "1");
  ASSERT_TRUE(Put(*b, "from-b", "2").ok());
  EXPECT_EQ(Get(*a, "from-b"), "2");

  // Conflicts are detected across stores too.
  auto ta = std::move(a->Begin()).value();
  ASSERT_EQ(*ta->Get("from-b"), "2");
  ASSERT_TRUE(Put(*b, "from-b", "3").ok());
  ta->Put("from-b", "stale");
  EXPECT_EQ(ta->Commit().code(), StatusCode::kConflict);
  EXPECT_EQ(Get(*a, "from-b"), "3");
}

// Two processes incrementing one counter: conflicts between processes come
// from SQLite's own locking (the in-process commit mutex does not apply).
TEST_F(SqliteKvTest, TwoProcessesIncrementOneCounter) {
  constexpr int kEach = 100;
  ASSERT_TRUE(Open(Url()));  // create the file before forking
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    KvOptions options;
    auto store = OpenKv(Url(), options);
    int code = store.ok() ? 0 : 2;
    for (int i = 0; i < kEach && code == 0; ++i) {
      if (!Increment(**store).ok()) code = 3;
    }
    _exit(code);
  }
  auto store = Open(Url(), /*create=*/false);
  ASSERT_TRUE(store);
  for (int i = 0; i < kEach; ++i) {
    Status s = Increment(*store);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  int wstatus = 0;
  ASSERT_EQ(waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  std::optional<std::string> v = Get(*store, "counter");
  ASSERT_TRUE(v && v->size() == 8);
  EXPECT_EQ(GetBig64(v->data()), uint64_t{2 * kEach});
}

TEST_F(SqliteKvTest, AbsentFileWithoutCreateIsNotFound) {
  auto store = OpenKv(Url());  // create_if_missing defaults to false
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store.status().message(),
            "database file '" + DbPath() + "' does not exist (run 'tessera format' first?)");
  EXPECT_FALSE(std::filesystem::exists(DbPath()));
}

TEST_F(SqliteKvTest, MissingDirectoryIsUnavailable) {
  std::string url = "sqlite3://" + dir_.path() + "/no/such/dir/meta.db";
  KvOptions options;
  options.create_if_missing = true;
  auto store = OpenKv(url, options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find(dir_.path() + "/no/such/dir"), std::string::npos)
      << store.status().message();
}

TEST_F(SqliteKvTest, ParentThatIsAFileIsUnavailable) {
  std::ofstream(dir_.path() + "/file") << "x";
  KvOptions options;
  options.create_if_missing = true;
  auto store = OpenKv("sqlite3://" + dir_.path() + "/file/meta.db", options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable) << store.status().ToString();
}

TEST_F(SqliteKvTest, UnwritableDirectoryIsUnavailable) {
  // Root may write any directory whatever its mode, but not /proc.
  std::string ro = dir_.path() + "/ro";
  if (geteuid() == 0) {
    ro = "/proc";
  } else {
    ASSERT_EQ(mkdir(ro.c_str(), 0500), 0);
  }
  KvOptions options;
  options.create_if_missing = true;
  auto store = OpenKv("sqlite3://" + ro + "/tessera-kv-test.db", options);
  if (geteuid() != 0) chmod(ro.c_str(), 0700);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find(ro), std::string::npos) << store.status().message();
}

TEST_F(SqliteKvTest, DirectoryIsNotADatabase) {
  auto store = OpenKv("sqlite3://" + dir_.path());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalid);
}

TEST_F(SqliteKvTest, GarbageFileIsAnIoErrorNamingTheUrl) {
  std::ofstream(DbPath()) << std::string(4096, 'g');
  auto store = OpenKv(Url());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kIo);
  EXPECT_NE(store.status().message().find(Url()), std::string::npos) << store.status().message();
}

}  // namespace
}  // namespace tessera
