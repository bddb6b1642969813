// Links, rename exchange, fallocate and copy_file_range at the metadata API.
#include <linux/falloc.h>
#include <linux/fs.h>

#include "common/chunk_view.h"
#include "meta/keys.h"
#include "meta/meta_test_util.h"

namespace tessera {
namespace {

using MetaLinksTest = MetaFixture;

TEST_P(MetaLinksTest, HardLinksShareTheInodeAndCountLinks) {
  InodeId d = MakeDir(kRootInode, "d");
  InodeId f = MakeFile(kRootInode, "f");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, SliceId(9), 10, 0, 10}, 1).ok());
  auto l = meta_->Link(ctx_, f, d, "g");
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->inode, f);
  EXPECT_EQ(l->attr.nlink, 2u);
  EXPECT_EQ(meta_->Lookup(ctx_, d, "g")->inode, f);
  EXPECT_EQ(meta_->Link(ctx_, f, d, "g").status().code(), StatusCode::kExists);
  EXPECT_EQ(meta_->Link(ctx_, d, kRootInode, "d2").status().code(), StatusCode::kNotPermitted);
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "f").ok());
  EXPECT_EQ(meta_->GetAttr(f)->nlink, 1u);
  EXPECT_TRUE(freed_.empty());
  ASSERT_TRUE(meta_->Unlink(ctx_, d, "g").ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_EQ(meta_->GetAttr(f).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(freed_.size(), 1u);
}

TEST_P(MetaLinksTest, SymlinksKeepTheirTarget) {
  auto s = meta_->Symlink(ctx_, kRootInode, "s", "../some/where");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(S_ISLNK(s->attr.mode));
  EXPECT_EQ(s->attr.length, 13u);
  EXPECT_EQ(*meta_->ReadLink(s->inode), "../some/where");
  InodeId f = MakeFile(kRootInode, "f");
  EXPECT_EQ(meta_->ReadLink(f).status().code(), StatusCode::kInvalid);
  EXPECT_EQ(meta_->Symlink(ctx_, kRootInode, "long", std::string(4096, 'x')).status().code(),
            StatusCode::kNameTooLong);
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "s").ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_TRUE(Keys(keys::InodeBegin(s->inode), keys::InodeEnd(s->inode)).empty());
}

TEST_P(MetaLinksTest, RenameExchangeSwapsAcrossDirectories) {
  InodeId a = MakeDir(kRootInode, "a");
  InodeId b = MakeDir(kRootInode, "b");
  InodeId sub = MakeDir(a, "sub");
  InodeId f = MakeFile(b, "f");
  ASSERT_TRUE(meta_->Rename(ctx_, a, "sub", b, "f", RENAME_EXCHANGE).ok());
  EXPECT_EQ(meta_->Lookup(ctx_, a, "sub")->inode, f);
  EXPECT_EQ(meta_->Lookup(ctx_, b, "f")->inode, sub);
  EXPECT_EQ(meta_->GetAttr(sub)->parent, b);
  EXPECT_EQ(meta_->GetAttr(a)->nlink, 2u);
  EXPECT_EQ(meta_->GetAttr(b)->nlink, 3u);
  EXPECT_EQ(meta_->Rename(ctx_, a, "sub", b, "missing", RENAME_EXCHANGE).code(),
            StatusCode::kNotFound);
  // A directory cannot be swapped into its own subtree.
  InodeId inner = MakeDir(sub, "inner");
  MakeFile(inner, "x");
  EXPECT_EQ(meta_->Rename(ctx_, b, "f", inner, "x", RENAME_EXCHANGE).code(), StatusCode::kInvalid);
}

TEST_P(MetaLinksTest, FallocateExtendsPunchesAndZeroes) {
  InodeId f = MakeFile(kRootInode, "f");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, SliceId(3), 10000, 0, 10000}, 1).ok());
  ASSERT_TRUE(meta_->Fallocate(f, FALLOC_FL_KEEP_SIZE, 0, 1 << 20).ok());
  EXPECT_EQ(meta_->GetAttr(f)->length, 10000u);
  ASSERT_TRUE(meta_->Fallocate(f, 0, 0, 20000).ok());
  EXPECT_EQ(meta_->GetAttr(f)->length, 20000u);
  EXPECT_EQ(meta_->StatFs()->used_space, SpaceOf(20000));
  ASSERT_TRUE(meta_->Fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 50).ok());
  auto view = BuildChunkView(*meta_->ReadChunk(f, 0));
  ASSERT_EQ(view.size(), 3u);
  EXPECT_EQ(view[1], (SliceRecord{100, SliceId(0), 0, 0, 50}));
  EXPECT_EQ(view[2].off, 150u);
  ASSERT_TRUE(meta_->Fallocate(f, FALLOC_FL_ZERO_RANGE, 15000, 10000).ok());
  EXPECT_EQ(meta_->GetAttr(f)->length, 25000u);
  EXPECT_EQ(meta_->Fallocate(f, FALLOC_FL_COLLAPSE_RANGE, 0, 4096).status().code(),
            StatusCode::kNotSupported);
}

TEST_P(MetaLinksTest, CopyFileRangeSharesSlicesWithReferenceCounts) {
  InodeId src = MakeFile(kRootInode, "src");
  InodeId dst = MakeFile(kRootInode, "dst");
  // src: slice 5 over [0, 100000) and slice 6 over [40000, 41000).
  ASSERT_TRUE(meta_->WriteSlice(src, 0, {0, SliceId(5), 100000, 0, 100000}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(src, 0, {40000, SliceId(6), 1000, 0, 1000}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(dst, 0, {0, SliceId(7), 500, 0, 500}, 1).ok());
  auto n = meta_->CopyFileRange(src, 39000, dst, 100, 5000);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 5000u);
  EXPECT_EQ(meta_->GetAttr(dst)->length, 5100u);
  auto view = BuildChunkView(*meta_->ReadChunk(dst, 0));
  // dst: slice 7 [0,100), slice 5 @39000 [100,1100), slice 6 [1100,2100), slice 5 @41000 [2100,5100)
  ASSERT_EQ(view.size(), 4u);
  EXPECT_EQ(view[0], (SliceRecord{0, SliceId(7), 500, 0, 100}));
  EXPECT_EQ(view[1], (SliceRecord{100, SliceId(5), 100000, 39000, 1000}));
  EXPECT_EQ(view[2], (SliceRecord{1100, SliceId(6), 1000, 0, 1000}));
  EXPECT_EQ(view[3], (SliceRecord{2100, SliceId(5), 100000, 41000, 3000}));
  // Past the end of the source nothing is copied.
  EXPECT_EQ(*meta_->CopyFileRange(src, 200000, dst, 0, 10), 0u);
  EXPECT_EQ(meta_->CopyFileRange(src, 0, src, 10, 100).status().code(), StatusCode::kInvalid);
  // Shared slices outlive the source and go with the last reference.
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "src").ok());
  EXPECT_TRUE(freed_.empty());
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "dst").ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  ASSERT_EQ(freed_.size(), 3u);
  EXPECT_TRUE(Keys("K", "L").empty());
}

TEST_P(MetaLinksTest, CopyAcrossChunkBoundaries) {
  InodeId src = MakeFile(kRootInode, "src");
  InodeId dst = MakeFile(kRootInode, "dst");
  const uint32_t size = 1 << 20;
  ASSERT_TRUE(meta_->WriteSlice(src, 0, {static_cast<uint32_t>(kChunkSize - size), SliceId(1), size, 0, size}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(src, 1, {0, SliceId(2), size, 0, size}, 1).ok());
  auto n = meta_->CopyFileRange(src, kChunkSize - size, dst, 100, 2 * size);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u * size);
  auto c0 = BuildChunkView(*meta_->ReadChunk(dst, 0));
  ASSERT_EQ(c0.size(), 2u);
  EXPECT_EQ(c0[0], (SliceRecord{100, SliceId(1), size, 0, size}));
  EXPECT_EQ(c0[1], (SliceRecord{100 + size, SliceId(2), size, 0, size}));
  // Truncating the copy releases one reference; the source still reads.
  SetAttrRequest req;
  req.size = 0;
  ASSERT_TRUE(meta_->SetAttr(ctx_, dst, req).ok());
  EXPECT_TRUE(freed_.empty());
  EXPECT_EQ(meta_->ReadChunk(src, 0)->size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaLinksTest, ::testing::Values("mem://", "sqlite", "postgres", "redis", "etcd"));

}  // namespace
}  // namespace tessera
