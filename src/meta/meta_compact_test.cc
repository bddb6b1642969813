// Compaction of chunk records and the delayed deletion of replaced slices.
#include "common/chunk_view.h"
#include "meta/keys.h"
#include "meta/meta_test_util.h"

namespace tessera {
namespace {

using MetaCompactTest = MetaFixture;

TEST_P(MetaCompactTest, WriteSlicesCommitsInOrderAndCountsRecords) {
  InodeId f = MakeFile(kRootInode, "f");
  std::vector<std::pair<uint32_t, size_t>> counts;
  auto a = meta_->WriteSlices(f,
                              {{0, {0, SliceId(1), 100, 0, 100}},
                               {0, {50, SliceId(2), 10, 0, 10}},
                               {1, {0, SliceId(3), 10, 0, 10}}},
                              7, &counts);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->length, kChunkSize + 10);
  EXPECT_EQ(a->mtime_ns, 7);
  ASSERT_EQ(counts.size(), 2u);
  EXPECT_EQ(counts[0], (std::pair<uint32_t, size_t>{0, 2}));
  EXPECT_EQ(counts[1], (std::pair<uint32_t, size_t>{1, 1}));
  auto view = BuildChunkView(*meta_->ReadChunk(f, 0));
  ASSERT_EQ(view.size(), 3u);
  EXPECT_EQ(view[1], (SliceRecord{50, SliceId(2), 10, 0, 10}));
}

TEST_P(MetaCompactTest, ReplacesRecordsAndDelaysDeletion) {
  InodeId f = MakeFile(kRootInode, "f");
  const std::vector<SliceRecord> old = {{0, SliceId(1), 100, 0, 100}, {10, SliceId(2), 5, 0, 5}};
  for (const auto& r : old) ASSERT_TRUE(meta_->WriteSlice(f, 0, r, 1).ok());
  // Written after the compaction read the chunk: stays on top.
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {20, SliceId(3), 5, 0, 5}, 1).ok());
  const std::vector<SliceRecord> merged = {{0, SliceId(4), 100, 0, 100}};
  ASSERT_TRUE(meta_->CompactChunk(f, 0, 0, old, merged, 1000).ok());
  auto records = *meta_->ReadChunk(f, 0);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], merged[0]);
  EXPECT_EQ(records[1], (SliceRecord{20, SliceId(3), 5, 0, 5}));
  // Slices 1 and 2 are queued, not freed.
  EXPECT_TRUE(freed_.empty());
  EXPECT_EQ(*meta_->CountDelayedSlices(), 2u);
  EXPECT_TRUE(meta_->DueSlices(999, 10)->empty());
  auto due = *meta_->DueSlices(1000, 10);
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].slice, (SliceRef{SliceId(1), 100}));
  EXPECT_EQ(due[1].slice, (SliceRef{SliceId(2), 5}));
  EXPECT_EQ(due[0].due_ns, 1000);
  EXPECT_EQ(meta_->DueSlices(5000, 1)->size(), 1u);
  ASSERT_TRUE(meta_->DropDueSlice(due[0]).ok());
  EXPECT_EQ(*meta_->CountDelayedSlices(), 1u);
  // The chunk changed: the same compaction again is refused.
  EXPECT_EQ(meta_->CompactChunk(f, 0, 0, old, merged, 1000).code(), StatusCode::kBusy);
  // The merged slice belongs to the file like any other.
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "f").ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_EQ(freed_.size(), 2u);
}

TEST_P(MetaCompactTest, KeepsRecordsBelowTheWindowAndSharedSlices) {
  InodeId f = MakeFile(kRootInode, "f");
  InodeId g = MakeFile(kRootInode, "g");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, SliceId(1), 1000, 0, 1000}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {1000, SliceId(2), 10, 0, 10}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {1010, SliceId(3), 10, 0, 10}, 1).ok());
  // g shares slice 2: replacing it in f must not queue it.
  ASSERT_TRUE(meta_->CopyFileRange(f, 1000, g, 0, 10).ok());
  auto records = *meta_->ReadChunk(f, 0);
  const std::vector<SliceRecord> window(records.begin() + 1, records.end());
  EXPECT_EQ(meta_->CompactChunk(f, 0, 2, window, {}, 5).code(), StatusCode::kBusy);
  ASSERT_TRUE(meta_->CompactChunk(f, 0, 1, window, {{1000, SliceId(9), 20, 0, 20}}, 5).ok());
  records = *meta_->ReadChunk(f, 0);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].id, SliceId(1));
  EXPECT_EQ(records[1].id, SliceId(9));
  auto due = *meta_->DueSlices(5, 10);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].slice.id, SliceId(3));
  // A chunk merged into nothing (only zeros) is removed.
  InodeId h = MakeFile(kRootInode, "h");
  ASSERT_TRUE(meta_->WriteSlice(h, 0, {0, SliceId(0), 0, 0, 10}, 1).ok());
  ASSERT_TRUE(meta_->CompactChunk(h, 0, 0, *meta_->ReadChunk(h, 0), {}, 5).ok());
  EXPECT_TRUE(meta_->ReadChunk(h, 0)->empty());
  EXPECT_EQ(meta_->CompactChunk(h, 0, 0, {{0, SliceId(0), 0, 0, 10}}, {}, 5).code(),
            StatusCode::kBusy);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaCompactTest, ::testing::Values("mem://", "sqlite", "postgres", "redis", "etcd"));

}  // namespace
}  // namespace tessera
