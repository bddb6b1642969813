#include <fcntl.h>
#include <gtest/gtest.h>

#include <set>

#include "vfs/vfs.h"
#include "vfs/vfs_test_util.h"

namespace tessera {
namespace {

class VfsTest : public VfsFixture {
 protected:
  size_t CountObjects() {
    auto page = objects_->List("vfs-test/", "", 0);
    return page.ok() ? page->objects.size() : 0;
  }
};

// A directory this mount just changed answers GETATTR from memory; what it
// answers must be exactly what the engine holds.
TEST_F(VfsTest, DirectoryAttributesAfterOwnChangesMatchTheEngine) {
  auto d = vfs_->Mkdir(ctx_, kRootInode, "d", 0755);
  ASSERT_TRUE(d.ok());
  auto same_as_engine = [&](const std::string& after) {
    auto cached = vfs_->GetAttr(ctx_, d->inode);
    auto stored = meta_->GetAttr(d->inode);
    ASSERT_TRUE(cached.ok() && stored.ok()) << after;
    EXPECT_EQ(cached->nlink, stored->nlink) << after;
    EXPECT_EQ(cached->mtime_ns, stored->mtime_ns) << after;
    EXPECT_EQ(cached->ctime_ns, stored->ctime_ns) << after;
    EXPECT_EQ(cached->mode, stored->mode) << after;
  };
  uint64_t handle = 0;
  ASSERT_TRUE(vfs_->Create(ctx_, d->inode, "f", 0644, O_WRONLY, &handle).ok());
  same_as_engine("create");
  ASSERT_TRUE(vfs_->Mkdir(ctx_, d->inode, "sub", 0755).ok());
  same_as_engine("mkdir");
  EXPECT_EQ(vfs_->GetAttr(ctx_, d->inode)->nlink, 3u);
  ASSERT_TRUE(vfs_->Rename(ctx_, d->inode, "f", d->inode, "g", 0).ok());
  same_as_engine("rename");
  ASSERT_TRUE(vfs_->Rmdir(ctx_, d->inode, "sub").ok());
  same_as_engine("rmdir");
  EXPECT_EQ(vfs_->GetAttr(ctx_, d->inode)->nlink, 2u);
  SetAttrRequest chmod;
  chmod.mode = 0700;
  ASSERT_TRUE(vfs_->SetAttr(ctx_, d->inode, chmod).ok());
  same_as_engine("chmod");
  EXPECT_EQ(vfs_->GetAttr(ctx_, d->inode)->mode & 07777, 0700u);
  ASSERT_TRUE(vfs_->Unlink(ctx_, d->inode, "g").ok());
  same_as_engine("unlink");
}

TEST_F(VfsTest, ReadsSeeOwnWritesBeforeClose) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "f", 0644, O_RDWR, &h);
  ASSERT_TRUE(e.ok());
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, "hello").ok());
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 100, "world").ok());
  EXPECT_EQ(vfs_->GetAttr(ctx_, e->inode)->length, 105u);
  char buf[200];
  auto n = vfs_->Read(ctx_, e->inode, h, 0, sizeof(buf), buf);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 105u);
  EXPECT_EQ(std::string(buf, 5), "hello");
  EXPECT_EQ(std::string(buf + 5, 95), std::string(95, '\0'));
  EXPECT_EQ(std::string(buf + 100, 5), "world");
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
  EXPECT_EQ(meta_->GetAttr(e->inode)->length, 105u);
}

TEST_F(VfsTest, AppendWritesAtTheEnd) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "log", 0644, O_WRONLY, &h);
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, "first\n").ok());
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
  auto h2 = vfs_->Open(ctx_, e->inode, O_WRONLY | O_APPEND);
  ASSERT_TRUE(h2.ok());
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, *h2, 0, "second\n").ok());
  ASSERT_TRUE(vfs_->Release(e->inode, *h2).ok());
  auto h3 = vfs_->Open(ctx_, e->inode, O_RDONLY);
  char buf[64];
  auto n = vfs_->Read(ctx_, e->inode, *h3, 0, sizeof(buf), buf);
  EXPECT_EQ(std::string(buf, *n), "first\nsecond\n");
  EXPECT_EQ(vfs_->Write(ctx_, e->inode, *h3, 0, "x").status().code(), StatusCode::kBadHandle);
  ASSERT_TRUE(vfs_->Release(e->inode, *h3).ok());
}

TEST_F(VfsTest, TruncateFlushesPendingWritesFirst) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "t", 0644, O_RDWR, &h);
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, std::string(1000, 'a')).ok());
  SetAttrRequest req;
  req.size = 10;
  ASSERT_TRUE(vfs_->SetAttr(ctx_, e->inode, req).ok());
  req.size = 20;
  ASSERT_TRUE(vfs_->SetAttr(ctx_, e->inode, req).ok());
  char buf[64];
  auto n = vfs_->Read(ctx_, e->inode, h, 0, sizeof(buf), buf);
  ASSERT_EQ(*n, 20u);
  EXPECT_EQ(std::string(buf, 10), std::string(10, 'a'));
  EXPECT_EQ(std::string(buf + 10, 10), std::string(10, '\0'));
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
}

TEST_F(VfsTest, LongPendingUploadsAreCommittedPeriodically) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "long", 0644, O_RDWR, &h);
  ASSERT_TRUE(e.ok());
  // Two full blocks and a bit: the full blocks go up at once, uncommitted.
  const std::string data(2 * 64 * 1024 + 100, 'x');
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, data).ok());
  EXPECT_EQ(meta_->GetAttr(e->inode)->length, 0u);
  // Younger than the age given: left alone.
  ASSERT_TRUE(vfs_->FlushUploadedBefore(3600LL * 1'000'000'000).ok());
  EXPECT_EQ(meta_->GetAttr(e->inode)->length, 0u);
  ASSERT_TRUE(vfs_->FlushUploadedBefore(0).ok());
  EXPECT_EQ(meta_->GetAttr(e->inode)->length, data.size());
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
}

TEST_F(VfsTest, UnlinkedOpenFileStaysReadableThenIsReclaimed) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "u", 0644, O_RDWR, &h);
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, "still here").ok());
  ASSERT_TRUE(vfs_->Flush(ctx_, e->inode, h).ok());
  EXPECT_EQ(CountObjects(), 1u);
  ASSERT_TRUE(vfs_->Unlink(ctx_, kRootInode, "u").ok());
  char buf[32];
  auto n = vfs_->Read(ctx_, e->inode, h, 0, sizeof(buf), buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "still here");
  EXPECT_EQ(CountObjects(), 1u);
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
  // The blocks go in the background, and their record with them.
  ASSERT_TRUE(vfs_->DrainDeletes(10'000));
  EXPECT_EQ(CountObjects(), 0u);
  EXPECT_EQ(*meta_->CountFreedSlices(), 0u);
  EXPECT_EQ(meta_->GetAttr(e->inode).status().code(), StatusCode::kNotFound);
}

TEST_F(VfsTest, ReadDirResumesAndSeeksByOffset) {
  for (int i = 0; i < 2500; ++i) {
    ASSERT_TRUE(vfs_->Mknod(ctx_, kRootInode, "e" + std::to_string(10000 + i), S_IFREG | 0644, 0).ok());
  }
  auto h = vfs_->OpenDir(ctx_, kRootInode);
  ASSERT_TRUE(h.ok());
  std::vector<DirListing> all;
  uint64_t off = 0;
  while (true) {
    auto page = vfs_->ReadDir(ctx_, kRootInode, *h, off, 100, false);
    ASSERT_TRUE(page.ok());
    if (page->empty()) break;
    all.insert(all.end(), page->begin(), page->end());
    off = page->back().next_offset;
  }
  ASSERT_EQ(all.size(), 2502u);
  EXPECT_EQ(all[0].name, ".");
  EXPECT_EQ(all[1].name, "..");
  std::set<std::string> names;
  for (size_t i = 2; i < all.size(); ++i) names.insert(all[i].name);
  EXPECT_EQ(names.size(), 2500u);
  // A fresh stream sought to an offset handed out earlier resumes there.
  auto h2 = vfs_->OpenDir(ctx_, kRootInode);
  auto page = vfs_->ReadDir(ctx_, kRootInode, *h2, all[1800].next_offset, 3, true);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 3u);
  EXPECT_EQ((*page)[0].name, all[1801].name);
  EXPECT_TRUE((*page)[0].attr.IsFile());
  // And seeking back on the same stream works too.
  auto back = vfs_->ReadDir(ctx_, kRootInode, *h2, all[5].next_offset, 1, false);
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0].name, all[6].name);
  // Offsets stay valid while entries come and go.
  ASSERT_TRUE(vfs_->Unlink(ctx_, kRootInode, all[1000].name).ok());
  auto h3 = vfs_->OpenDir(ctx_, kRootInode);
  auto after = vfs_->ReadDir(ctx_, kRootInode, *h3, all[999].next_offset, 1, false);
  ASSERT_EQ(after->size(), 1u);
  EXPECT_EQ((*after)[0].name, all[1001].name);
  ASSERT_TRUE(vfs_->ReleaseDir(*h3).ok());
  ASSERT_TRUE(vfs_->ReleaseDir(*h).ok());
  ASSERT_TRUE(vfs_->ReleaseDir(*h2).ok());
}

TEST_F(VfsTest, StatFsCountsRoundedFileLengths) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "s", 0644, O_RDWR, &h);
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, std::string(5000, 's')).ok());
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
  auto st = vfs_->StatFs(ctx_);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->used_space, 8192u);
  EXPECT_EQ(st->used_inodes, 1u);
}

TEST_F(VfsTest, RelatimeUpdatesAtimeOnlyWhenStale) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "a", 0644, O_RDWR, &h);
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, "data").ok());
  ASSERT_TRUE(vfs_->Flush(ctx_, e->inode, h).ok());
  SetAttrRequest old;
  old.atime_ns = 1000;  // older than mtime: the next read must move it
  ASSERT_TRUE(vfs_->SetAttr(ctx_, e->inode, old).ok());
  const int64_t ctime = meta_->GetAttr(e->inode)->ctime_ns;
  char buf[8];
  ASSERT_TRUE(vfs_->Read(ctx_, e->inode, h, 0, sizeof(buf), buf).ok());
  auto first = meta_->GetAttr(e->inode);
  EXPECT_GT(first->atime_ns, first->mtime_ns);
  EXPECT_EQ(first->ctime_ns, ctime);
  // Newer than mtime and ctime and less than a day old: left alone.
  ASSERT_TRUE(vfs_->Read(ctx_, e->inode, h, 0, sizeof(buf), buf).ok());
  EXPECT_EQ(meta_->GetAttr(e->inode)->atime_ns, first->atime_ns);
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
}

TEST_F(VfsTest, NoatimeNeverTouchesAtime) {
  VfsOptions o;
  o.atime_mode = AtimeMode::kNoAtime;
  vfs_ = std::make_unique<Vfs>(meta_.get(), slices_.get(), o);
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "n", 0644, O_RDWR, &h);
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, "data").ok());
  SetAttrRequest old;
  old.atime_ns = 1000;
  ASSERT_TRUE(vfs_->SetAttr(ctx_, e->inode, old).ok());
  char buf[8];
  ASSERT_TRUE(vfs_->Read(ctx_, e->inode, h, 0, sizeof(buf), buf).ok());
  EXPECT_EQ(meta_->GetAttr(e->inode)->atime_ns, 1000);
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
}

TEST_F(VfsTest, KernelCacheIsKeptOnlyForUnchangedFiles) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "k", 0644, O_RDWR, &h);
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, "v1").ok());
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
  auto first = vfs_->Open(ctx_, e->inode, O_RDONLY);
  EXPECT_FALSE(vfs_->KeepCache(*first));  // never seen before
  ASSERT_TRUE(vfs_->Release(e->inode, *first).ok());
  auto second = vfs_->Open(ctx_, e->inode, O_RDONLY);
  EXPECT_TRUE(vfs_->KeepCache(*second));
  ASSERT_TRUE(vfs_->Release(e->inode, *second).ok());
  // Written here since: the pages may not match.
  auto w = vfs_->Open(ctx_, e->inode, O_WRONLY);
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, *w, 0, "v2").ok());
  ASSERT_TRUE(vfs_->Release(e->inode, *w).ok());
  auto third = vfs_->Open(ctx_, e->inode, O_RDONLY);
  EXPECT_FALSE(vfs_->KeepCache(*third));
  ASSERT_TRUE(vfs_->Release(e->inode, *third).ok());
  // Changed by someone else (another mount): mtime moved.
  SetAttrRequest touch;
  touch.mtime_ns = 42;
  ASSERT_TRUE(meta_->SetAttr(ctx_, e->inode, touch).ok());
  auto fourth = vfs_->Open(ctx_, e->inode, O_RDONLY);
  EXPECT_FALSE(vfs_->KeepCache(*fourth));
  ASSERT_TRUE(vfs_->Release(e->inode, *fourth).ok());
}

// Random reads fetch only what they ask for, unless the volume's blocks are
// decoded whole anyway (compressed or encrypted): then the block is cached.
TEST_F(VfsTest, WholeBlockReadsCacheTheBlocksOfRandomReaders) {
  uint64_t h = 0;
  auto e = vfs_->Create(ctx_, kRootInode, "r", 0644, O_RDWR, &h);
  ASSERT_TRUE(e.ok());
  std::string data(1 << 20, 'q');
  ASSERT_TRUE(vfs_->Write(ctx_, e->inode, h, 0, data).ok());
  ASSERT_TRUE(vfs_->Release(e->inode, h).ok());
  for (bool whole : {false, true}) {
    CacheOptions co;
    co.memory_bytes = 8 << 20;
    auto cache = MakeBlockCache(co);
    ASSERT_TRUE(cache.ok());
    VfsOptions options;
    options.whole_block_reads = whole;
    Vfs vfs(meta_.get(), slices_.get(), options, cache->get());
    auto r = vfs.Open(ctx_, e->inode, O_RDONLY);
    ASSERT_TRUE(r.ok());
    char buf[4096];
    // Far from offset 0, so that the first read is not taken as sequential.
    auto n = vfs.Read(ctx_, e->inode, *r, 700 * 1024, sizeof(buf), buf);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(std::string(buf, *n), data.substr(700 * 1024, 4096));
    EXPECT_EQ((*cache)->Stats().entries, whole ? 1u : 0u) << "whole_block_reads " << whole;
    ASSERT_TRUE(vfs.Release(e->inode, *r).ok());
  }
}

}  // namespace
}  // namespace tessera
