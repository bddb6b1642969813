// flock and POSIX byte-range locks held in metadata, seen by two clients
// (two Meta objects with their own sessions over one store).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/units.h"
#include "kv/etcd_test_server.h"
#include "kv/pg_test_server.h"
#include "kv/redis_test_server.h"
#include "meta/keys.h"
#include "meta/meta.h"

namespace tessera {
namespace {

constexpr uint64_t kEof = UINT64_MAX;

class MetaLockTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const std::string test = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::string unique = std::to_string(getpid()) + "-" + test;
    std::replace(unique.begin(), unique.end(), '/', '-');
    if (GetParam() == "sqlite") {
      dir_ = std::filesystem::temp_directory_path() / ("tessera-lock-" + unique);
      std::filesystem::remove_all(dir_);
      std::filesystem::create_directories(dir_);
      url_ = "sqlite3://" + (dir_ / "meta.db").string();
    } else if (GetParam() == "redis") {
      Result<std::string> url = NewRedisTestUrl();
      ASSERT_TRUE(url.ok()) << url.status().ToString();
      url_ = *url;
    } else if (GetParam() == "postgres") {
      Result<std::string> url = NewPgTestDatabase();
      ASSERT_TRUE(url.ok()) << url.status().ToString();
      url_ = *url;
    } else if (GetParam() == "etcd") {
      Result<std::string> url = NewEtcdTestUrl();
      ASSERT_TRUE(url.ok()) << url.status().ToString();
      url_ = *url;
    } else {
      url_ = "mem://lock-test-" + unique + "-" + std::to_string(reinterpret_cast<uintptr_t>(this));
    }
    auto kv = OpenKv(url_, KvOptions{.create_if_missing = true});
    ASSERT_TRUE(kv.ok()) << kv.status().ToString();
    VolumeSettings s;
    s.name = "lock-vol";
    s.uuid = NewUuid();
    s.bucket = "/tmp/unused";
    s.trash_days = 0;  // unlink deletes, as the session cleanup below needs
    bool created = false;
    ASSERT_TRUE(Meta::Format(**kv, s, &created).ok());
    a_ = OpenClient();
    b_ = OpenClient();
    ASSERT_TRUE(a_ && b_);
    auto e = a_->Mknod(ctx_, kRootInode, "f", S_IFREG | 0644, 0);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    ino_ = e->inode;
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<Meta> OpenClient() {
    auto kv = OpenKv(url_);
    EXPECT_TRUE(kv.ok()) << kv.status().ToString();
    if (!kv.ok()) return nullptr;
    auto meta = Meta::Open(std::move(*kv));
    EXPECT_TRUE(meta.ok()) << meta.status().ToString();
    if (!meta.ok()) return nullptr;
    EXPECT_TRUE((*meta)->StartSession(SessionInfo{"host", 1, "/mnt", "test"}).ok());
    return std::move(*meta);
  }

  static StatusCode Code(const Status& st) { return st.code(); }

  Context ctx_{1000, 1000, 1};
  std::filesystem::path dir_;
  std::string url_;
  std::unique_ptr<Meta> a_, b_;
  InodeId ino_;
};

constexpr StatusCode kOk = StatusCode::kOk;
constexpr StatusCode kBlock = StatusCode::kWouldBlock;

TEST_P(MetaLockTest, FlockSharedAndExclusive) {
  EXPECT_EQ(Code(a_->Flock(ino_, 1, F_RDLCK)), kOk);
  EXPECT_EQ(Code(b_->Flock(ino_, 1, F_RDLCK)), kOk);  // same owner number, other session
  EXPECT_EQ(Code(a_->Flock(ino_, 2, F_RDLCK)), kOk);
  EXPECT_EQ(Code(b_->Flock(ino_, 2, F_WRLCK)), kBlock);
  // An upgrade is refused while others share the file, and the shared lock stays.
  EXPECT_EQ(Code(a_->Flock(ino_, 1, F_WRLCK)), kBlock);
  EXPECT_EQ(Code(b_->Flock(ino_, 1, F_UNLCK)), kOk);
  EXPECT_EQ(Code(a_->Flock(ino_, 2, F_UNLCK)), kOk);
  EXPECT_EQ(Code(a_->Flock(ino_, 1, F_WRLCK)), kOk);  // now alone: upgrade
  EXPECT_EQ(Code(a_->Flock(ino_, 1, F_WRLCK)), kOk);  // again: no change
  EXPECT_EQ(Code(b_->Flock(ino_, 7, F_RDLCK)), kBlock);
  EXPECT_EQ(Code(a_->Flock(ino_, 3, F_RDLCK)), kBlock);  // another owner of the same client
  EXPECT_EQ(Code(a_->Flock(ino_, 1, F_RDLCK)), kOk);    // downgrade
  EXPECT_EQ(Code(b_->Flock(ino_, 7, F_RDLCK)), kOk);
  EXPECT_EQ(Code(b_->Flock(ino_, 7, F_UNLCK)), kOk);
  EXPECT_EQ(Code(a_->Flock(ino_, 1, F_UNLCK)), kOk);
  EXPECT_EQ(Code(a_->Flock(ino_, 1, F_UNLCK)), kOk);  // unlocking nothing is fine
  EXPECT_EQ(Code(b_->Flock(ino_, 7, F_WRLCK)), kOk);
  EXPECT_EQ(Code(a_->Flock(ino_, 1, 42)), StatusCode::kInvalid);
}

TEST_P(MetaLockTest, PosixRangesConflictOnlyWhenTheyOverlap) {
  EXPECT_EQ(Code(a_->SetLk(ino_, 1, 100, F_WRLCK, 0, 99)), kOk);
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 200, F_WRLCK, 100, 199)), kOk);  // disjoint
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 200, F_WRLCK, 50, 60)), kBlock);
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 200, F_RDLCK, 99, 99)), kBlock);
  EXPECT_EQ(Code(a_->SetLk(ino_, 2, 101, F_RDLCK, 0, 0)), kBlock);  // other owner, same client
  EXPECT_EQ(Code(a_->SetLk(ino_, 1, 100, F_WRLCK, 10, 20)), kOk);   // own lock: no conflict
  EXPECT_EQ(Code(a_->SetLk(ino_, 1, 100, F_RDLCK, 0, 99)), kOk);    // downgrade all of it
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 200, F_RDLCK, 0, 50)), kOk);    // shared with shared
  EXPECT_EQ(Code(b_->SetLk(ino_, 2, 201, F_WRLCK, 200, kEof)), kOk);
  EXPECT_EQ(Code(a_->SetLk(ino_, 1, 100, F_RDLCK, 1000000, kEof)), kBlock);
  EXPECT_EQ(Code(a_->SetLk(ino_, 1, 100, F_WRLCK, 5, 4)), StatusCode::kInvalid);
}

TEST_P(MetaLockTest, GetLkReportsTheConflictingLock) {
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 4242, F_WRLCK, 10, 19)), kOk);
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 4242, F_RDLCK, 100, kEof)), kOk);
  auto r = b_->GetLk(ino_, 9, F_RDLCK, 0, 15);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_WRLCK);
  EXPECT_EQ(r->start, 10u);
  EXPECT_EQ(r->end, 19u);
  EXPECT_EQ(r->pid, 4242u);
  r = b_->GetLk(ino_, 9, F_RDLCK, 20, kEof);  // shared/shared: nothing in the way
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_UNLCK);
  r = b_->GetLk(ino_, 9, F_WRLCK, 500, 600);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_RDLCK);
  EXPECT_EQ(r->start, 100u);
  EXPECT_EQ(r->end, kEof);
  r = a_->GetLk(ino_, 1, F_WRLCK, 0, kEof);  // the owner's own locks never conflict
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_UNLCK);
}

TEST_P(MetaLockTest, PartialUnlockSplitsAndAdjacentRangesMerge) {
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 10, F_WRLCK, 0, 99)), kOk);
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 10, F_UNLCK, 40, 59)), kOk);  // split in two
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 20, F_WRLCK, 40, 59)), kOk);
  EXPECT_EQ(Code(b_->SetLk(ino_, 2, 20, F_WRLCK, 39, 39)), kBlock);
  EXPECT_EQ(Code(b_->SetLk(ino_, 2, 20, F_WRLCK, 60, 60)), kBlock);
  auto r = b_->GetLk(ino_, 3, F_RDLCK, 60, kEof);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->start, 60u);
  EXPECT_EQ(r->end, 99u);
  ASSERT_EQ(Code(b_->SetLk(ino_, 1, 20, F_UNLCK, 0, kEof)), kOk);

  // Adjacent ranges of one type merge: [0,39] + [40,59] + [60,99] is one lock.
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 10, F_WRLCK, 40, 59)), kOk);
  r = b_->GetLk(ino_, 3, F_RDLCK, 50, 50);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->start, 0u);
  EXPECT_EQ(r->end, 99u);
  // A lock of another type over the middle splits it into three.
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 10, F_RDLCK, 30, 69)), kOk);
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 20, F_RDLCK, 30, 69)), kOk);
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 20, F_UNLCK, 30, 69)), kOk);
  r = b_->GetLk(ino_, 3, F_WRLCK, 0, kEof);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_WRLCK);
  EXPECT_EQ(r->start, 0u);
  EXPECT_EQ(r->end, 29u);
  r = b_->GetLk(ino_, 3, F_RDLCK, 30, kEof);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->start, 70u);
  EXPECT_EQ(r->end, 99u);
  // Unlocking in pieces leaves nothing behind: the key goes away.
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 10, F_UNLCK, 0, 50)), kOk);
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 10, F_UNLCK, 51, kEof)), kOk);
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 20, F_WRLCK, 0, kEof)), kOk);
  ASSERT_EQ(Code(b_->SetLk(ino_, 1, 20, F_UNLCK, 0, kEof)), kOk);
  auto txn = a_->kv().Begin();
  ASSERT_TRUE(txn.ok());
  auto v = (*txn)->Get(keys::PosixLocks(ino_));
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->has_value());
  v = (*txn)->Get(keys::SessionLock(a_->session(), ino_));
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->has_value());
}

TEST_P(MetaLockTest, ReleaseAllOfAnOwnerOrASession) {
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 10, F_WRLCK, 0, 9)), kOk);
  ASSERT_EQ(Code(a_->SetLk(ino_, 1, 10, F_WRLCK, 20, 29)), kOk);
  ASSERT_EQ(Code(a_->SetLk(ino_, 2, 11, F_WRLCK, 40, 49)), kOk);
  ASSERT_EQ(Code(a_->Flock(ino_, 1, F_WRLCK)), kOk);
  ASSERT_EQ(Code(a_->ReleasePosixLocks(ino_, 1)), kOk);
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 20, F_WRLCK, 0, 29)), kOk);
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 20, F_WRLCK, 40, 40)), kBlock);  // owner 2 keeps its lock
  EXPECT_EQ(Code(b_->Flock(ino_, 1, F_RDLCK)), kBlock);              // flock is separate
  ASSERT_EQ(Code(b_->SetLk(ino_, 1, 20, F_UNLCK, 0, kEof)), kOk);

  // Another file, then the whole session of client a goes.
  auto e = a_->Mknod(ctx_, kRootInode, "g", S_IFREG | 0644, 0);
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(Code(a_->SetLk(e->inode, 5, 12, F_RDLCK, 0, kEof)), kOk);
  ASSERT_EQ(Code(b_->SetLk(e->inode, 5, 21, F_RDLCK, 0, kEof)), kOk);
  ASSERT_EQ(Code(a_->ReleaseSessionLocks(a_->session())), kOk);
  EXPECT_EQ(Code(b_->Flock(ino_, 1, F_WRLCK)), kOk);
  EXPECT_EQ(Code(b_->SetLk(ino_, 1, 20, F_WRLCK, 0, kEof)), kOk);
  // b's own shared lock on g survives; a's is gone.
  auto r = b_->GetLk(e->inode, 5, F_WRLCK, 0, kEof);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_UNLCK);
  r = a_->GetLk(e->inode, 5, F_WRLCK, 0, kEof);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_RDLCK);
  EXPECT_EQ(r->pid, 21u);

  // Ending a session drops its locks too.
  ASSERT_EQ(Code(b_->EndSession()), kOk);
  EXPECT_EQ(Code(a_->Flock(ino_, 1, F_WRLCK)), kOk);
  EXPECT_EQ(Code(a_->SetLk(ino_, 1, 10, F_WRLCK, 0, kEof)), kOk);
  EXPECT_EQ(Code(a_->SetLk(e->inode, 1, 10, F_WRLCK, 0, kEof)), kOk);
}

TEST_P(MetaLockTest, StaleSessionsAreCleanedUpByAnotherClient) {
  // a holds a flock, a POSIX lock, and a file it keeps open after unlink.
  ASSERT_EQ(Code(a_->Flock(ino_, 7, F_WRLCK)), kOk);
  ASSERT_EQ(Code(a_->SetLk(ino_, 8, 100, F_WRLCK, 0, 10)), kOk);
  auto g = a_->Mknod(ctx_, kRootInode, "g", S_IFREG | 0644, 0);
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(a_->WriteSlice(g->inode, 0, {0, SliceId(99), 10, 0, 10}, 1).ok());
  a_->OnOpen(g->inode);
  ASSERT_EQ(Code(a_->Unlink(ctx_, kRootInode, "g")), kOk);
  std::vector<SliceRef> freed;
  b_->SetSliceDeleter([&](const std::vector<SliceRef>& s) { freed.insert(freed.end(), s.begin(), s.end()); });
  ASSERT_EQ(Code(b_->Flock(ino_, 9, F_WRLCK)), kBlock);

  // Within their heartbeat expiry nothing happens.
  auto n = b_->CleanupStaleSessions(NowNanos());
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(Meta::ListSessions(b_->kv())->size(), 2u);

  // An hour later a has not heartbeaten (b's own session is never cleaned).
  n = b_->CleanupStaleSessions(NowNanos() + 3600ll * 1'000'000'000);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1u);
  auto sessions = Meta::ListSessions(b_->kv());
  ASSERT_EQ(sessions->size(), 1u);
  EXPECT_EQ((*sessions)[0].id, b_->session());
  EXPECT_EQ(Code(b_->Flock(ino_, 9, F_WRLCK)), kOk);
  EXPECT_EQ(b_->GetLk(ino_, 9, F_WRLCK, 0, 10)->type, F_UNLCK);
  EXPECT_EQ(b_->GetAttr(g->inode).status().code(), StatusCode::kNotFound);
  ASSERT_EQ(freed.size(), 1u);
  EXPECT_EQ(freed[0].id, SliceId(99));
  b_->SetSliceDeleter(nullptr);
}

TEST_P(MetaLockTest, StalenessFollowsEachSessionsOwnHeartbeat) {
  SessionRecord r;
  r.heartbeat_ns = 0;
  r.info.heartbeat_s = 1;
  EXPECT_FALSE(Meta::IsStale(r, 4'000'000'000));
  EXPECT_TRUE(Meta::IsStale(r, 6'000'000'000));
  r.info.heartbeat_s = 0;  // the default, 12 s
  EXPECT_FALSE(Meta::IsStale(r, 59'000'000'000));
  EXPECT_TRUE(Meta::IsStale(r, 61'000'000'000));
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaLockTest, ::testing::Values("mem", "sqlite", "redis", "postgres", "etcd"));

}  // namespace
}  // namespace tessera
