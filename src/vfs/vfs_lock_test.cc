// Vfs lock calls: blocking waits, interruption, release on close.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "vfs/vfs.h"
#include "vfs/vfs_test_util.h"

namespace tessera {
namespace {

class VfsLockTest : public VfsFixture {
 protected:
  void SetUp() override {
    VfsFixture::SetUp();
    auto e = vfs_->Create(ctx_, kRootInode, "f", 0644, O_RDWR, &h1_);
    ASSERT_TRUE(e.ok());
    ino_ = e->inode;
    auto h2 = vfs_->Open(ctx_, ino_, O_RDWR);
    ASSERT_TRUE(h2.ok());
    h2_ = *h2;
  }

  static PosixLock Range(int type, uint64_t start, uint64_t end, uint32_t pid = 1) {
    return PosixLock{type, start, end, pid};
  }

  InodeId ino_;
  uint64_t h1_ = 0, h2_ = 0;
};

TEST_F(VfsLockTest, BlockingFlockWaitsForTheHolder) {
  ASSERT_TRUE(vfs_->Flock(ctx_, ino_, h1_, 1, LOCK_EX, false).ok());
  EXPECT_EQ(vfs_->Flock(ctx_, ino_, h2_, 2, LOCK_SH, false).code(), StatusCode::kWouldBlock);
  std::atomic<bool> granted{false};
  std::thread waiter([&] {
    EXPECT_TRUE(vfs_->Flock(ctx_, ino_, h2_, 2, LOCK_EX, true).ok());
    granted = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(granted);
  ASSERT_TRUE(vfs_->Flock(ctx_, ino_, h1_, 1, LOCK_UN, false).ok());
  waiter.join();
  EXPECT_TRUE(granted);
  EXPECT_EQ(vfs_->Flock(ctx_, ino_, h1_, 1, LOCK_SH, false).code(), StatusCode::kWouldBlock);
  // The last close of the description that holds it drops the flock.
  ASSERT_TRUE(vfs_->Release(ino_, h2_, 2).ok());
  EXPECT_TRUE(vfs_->Flock(ctx_, ino_, h1_, 1, LOCK_EX, false).ok());
}

TEST_F(VfsLockTest, InterruptedWaitGivesUp) {
  ASSERT_TRUE(vfs_->SetLk(ctx_, ino_, h1_, 1, Range(F_WRLCK, 0, 9), false).ok());
  int asked = 0;
  Status st = vfs_->SetLk(ctx_, ino_, h2_, 2, Range(F_RDLCK, 5, 5), true,
                          [&] { return ++asked == 3; });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(asked, 3);
  // It did not leave a lock behind.
  auto r = vfs_->GetLk(ctx_, ino_, h1_, 1, Range(F_WRLCK, 0, UINT64_MAX));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_UNLCK);
}

TEST_F(VfsLockTest, ClosingAnyFdDropsTheOwnersPosixLocks) {
  ASSERT_TRUE(vfs_->SetLk(ctx_, ino_, h1_, 1, Range(F_WRLCK, 0, 9, 11), false).ok());
  ASSERT_TRUE(vfs_->SetLk(ctx_, ino_, h1_, 2, Range(F_WRLCK, 20, 29, 22), false).ok());
  auto r = vfs_->GetLk(ctx_, ino_, h2_, 3, Range(F_RDLCK, 0, UINT64_MAX));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->pid, 11u);
  // Owner 1 closes its other descriptor: its locks go, owner 2's stay.
  ASSERT_TRUE(vfs_->Flush(ctx_, ino_, h2_, 1).ok());
  r = vfs_->GetLk(ctx_, ino_, h2_, 3, Range(F_RDLCK, 0, UINT64_MAX));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->type, F_WRLCK);
  EXPECT_EQ(r->start, 20u);
  EXPECT_EQ(r->pid, 22u);
  // A flush without an owner (fsync, tools) releases nothing.
  ASSERT_TRUE(vfs_->Flush(ctx_, ino_, h2_).ok());
  EXPECT_EQ(vfs_->SetLk(ctx_, ino_, h2_, 3, Range(F_WRLCK, 25, 25), false).code(),
            StatusCode::kWouldBlock);
  EXPECT_EQ(vfs_->SetLk(ctx_, ino_, 999, 3, Range(F_WRLCK, 25, 25), false).code(),
            StatusCode::kBadHandle);
}

}  // namespace
}  // namespace tessera
