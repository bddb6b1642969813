// Garbage collection (cli/gc.h) on the memory and SQLite engines with a
// memory object store: every kind of object is classified as it should be,
// --delete removes leaked objects and finishes pending deletions without
// touching a block that a file uses, and a slice committed after the
// listing keeps its objects.
#include "cli/gc.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "common/units.h"
#include "data/block_reader.h"
#include "data/compactor.h"
#include "data/slice_store.h"
#include "kv/kv.h"
#include "meta/keys.h"
#include "object/memory_store.h"
#include "vfs/meta_chunks.h"

namespace tessera {
namespace {

constexpr uint64_t kBlock = 4096;
constexpr int64_t kHour = int64_t{3600} * 1'000'000'000;

class GcTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string url = GetParam();
    if (url == "sqlite") {
      std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
      for (char& c : name) c = c == '/' ? '-' : c;
      dir_ = std::filesystem::temp_directory_path() /
             ("tessera-gc-" + std::to_string(getpid()) + "-" + name);
      std::filesystem::remove_all(dir_);
      std::filesystem::create_directories(dir_);
      url = "sqlite3://" + (dir_ / "meta.db").string();
    }
    auto kv = OpenKv(url, KvOptions{.create_if_missing = true});
    ASSERT_TRUE(kv.ok()) << kv.status().ToString();
    VolumeSettings s;
    s.name = "vol";
    s.uuid = NewUuid();
    s.storage = "mem";
    s.bucket = "unused";
    s.block_size = kBlock;
    bool created = false;
    ASSERT_TRUE(Meta::Format(**kv, s, &created).ok());
    auto meta = Meta::Open(std::move(*kv));
    ASSERT_TRUE(meta.ok()) << meta.status().ToString();
    meta_ = std::move(*meta);
    slices_ = std::make_unique<SliceStore>("vol", kBlock, &store_);
  }
  void TearDown() override {
    meta_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  InodeId File(const std::string& name) {
    auto e = meta_->Mknod(ctx_, kRootInode, name, S_IFREG | 0644, 0);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    return e.ok() ? e->inode : InodeId();
  }
  // A new slice of `size` bytes with its blocks stored; committed at `pos`
  // of the chunk when `ino` is not 0.
  SliceRef Slice(uint32_t size, InodeId ino = InodeId(), uint32_t chunk = 0, uint32_t pos = 0) {
    auto id = meta_->NewSlice();
    EXPECT_TRUE(id.ok());
    std::string data(size, static_cast<char>('a' + id->value() % 26));
    for (uint64_t i = 0; i * kBlock < size; ++i) {
      EXPECT_TRUE(slices_->PutBlock(*id, i, data.substr(i * kBlock, kBlock)).ok());
    }
    if (ino.value() != 0) {
      EXPECT_TRUE(meta_->WriteSlice(ino, chunk, SliceRecord{pos, *id, size, 0, size}, NowNanos()).ok());
    }
    return SliceRef{*id, size};
  }
  void Put(const std::string& key, const std::string& value) {
    ASSERT_TRUE(WithTransaction(meta_->kv(), [&](KvTxn& txn) {
                  txn.Put(key, value);
                  return Status::Ok();
                }).ok());
  }
  // Takes the file's name and link away as an unlink would, leaving its
  // data and a record of the given key (R or SS), as a crash right after
  // the unlink does.
  void Unlinked(const std::string& name, InodeId ino, const std::string& record) {
    ASSERT_TRUE(WithTransaction(meta_->kv(), [&](KvTxn& txn) -> Status {
                  txn.Delete(keys::Entry(kRootInode, name));
                  ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Attr(ino)));
                  ASSIGN_OR_RETURN(Attr a, DecodeAttr(*raw));
                  a.nlink = 0;
                  txn.Put(keys::Attr(ino), EncodeAttr(a));
                  txn.Put(record, "");
                  return Status::Ok();
                }).ok());
  }
  std::set<std::string> Objects() {
    std::set<std::string> out;
    auto page = store_.List("", "", 100000);
    EXPECT_TRUE(page.ok());
    for (const auto& o : page->objects) out.insert(o.key);
    return out;
  }
  std::set<std::string> Keys(const SliceRef& s) {
    std::set<std::string> out;
    for (uint64_t i = 0; i * kBlock < s.size; ++i) {
      out.insert(slices_->BlockKey(s.id, i, std::min<uint64_t>(kBlock, s.size - i * kBlock)));
    }
    return out;
  }
  bool HasAll(const SliceRef& s) {
    const auto all = Objects();
    for (const auto& k : Keys(s)) {
      if (!all.count(k)) return false;
    }
    return true;
  }
  bool HasNone(const SliceRef& s) {
    const auto all = Objects();
    for (const auto& k : Keys(s)) {
      if (all.count(k)) return false;
    }
    return true;
  }
  // Every object counts as older than the skip window unless `real_time`.
  GcReport Gc(GcOptions o = {}, bool real_time = false) {
    if (!real_time && o.now_ns == 0) o.now_ns = NowNanos() + 2 * kHour;
    auto r = CollectGarbage(*meta_, store_, o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : GcReport{};
  }
  GcReport Delete(GcOptions o = {}) {
    o.delete_garbage = true;
    return Gc(o);
  }

  Context ctx_{0, 0, 1};
  std::filesystem::path dir_;
  std::unique_ptr<Meta> meta_;
  MemoryStore store_;
  std::unique_ptr<SliceStore> slices_;
};

TEST_P(GcTest, CleanVolumeHasOnlyValidObjects) {
  InodeId a = File("a"), b = File("b");
  Slice(3 * kBlock + 100, a);
  Slice(kBlock, b);
  Slice(10, b, 1);
  GcReport r = Gc();
  EXPECT_EQ(r.valid.count, 6u);
  EXPECT_EQ(r.valid.bytes, 4 * kBlock + 110);
  EXPECT_EQ(r.listed.count, 6u);
  EXPECT_EQ(r.leaked.count, 0u);
  EXPECT_EQ(r.pending.count, 0u);
  EXPECT_EQ(r.skipped.count, 0u);
  EXPECT_EQ(r.slices, 3u);
  EXPECT_EQ(r.fragmented_chunks, 0u);
  EXPECT_EQ(r.leaked_remaining, 0u);
  // The volume has the trash on (the default), with nothing in it.
  ASSERT_TRUE(r.trash.has_value());
  EXPECT_EQ(r.trash->count, 0u);

  r = Delete();
  EXPECT_EQ(r.leaked_deleted.count, 0u);
  EXPECT_EQ(Objects().size(), 6u);
}

TEST_P(GcTest, LeakedObjectsAreFoundAndDeleted) {
  InodeId a = File("a");
  const SliceRef used = Slice(2 * kBlock + 1, a);
  const SliceRef never_committed = Slice(3 * kBlock);  // a writer died before its commit
  // A block past the end of a used slice, and one with the wrong size.
  ASSERT_TRUE(store_.Put(slices_->BlockKey(used.id, 7, kBlock), "x").ok());
  ASSERT_TRUE(store_.Put(slices_->BlockKey(used.id, 2, 2), "xy").ok());
  // Not judged: names that are not blocks, a block in the wrong folder, a
  // slice id not handed out yet.
  ASSERT_TRUE(store_.Put("vol/chunks/junk", "j").ok());
  ASSERT_TRUE(store_.Put("vol/chunks/0/0/5_0_100x", "j").ok());
  ASSERT_TRUE(store_.Put("vol/chunks/0/1/" + std::to_string(never_committed.id.value()) + "_0_4096", "j").ok());
  ASSERT_TRUE(store_.Put(slices_->BlockKey(SliceId(1'000'000'000), 0, 5), "hello").ok());
  ASSERT_TRUE(store_.Put("other/chunks/0/0/1_0_1", "outside the volume").ok());

  GcReport r = Gc();
  EXPECT_EQ(r.valid.count, 3u);
  EXPECT_EQ(r.leaked.count, 5u);
  EXPECT_EQ(r.leaked.bytes, 3 * kBlock + 3);
  EXPECT_EQ(r.leaked_in_use.count, 2u);
  EXPECT_EQ(r.skipped.count, 4u);
  EXPECT_EQ(r.skipped_not_block.count, 3u);
  EXPECT_EQ(r.skipped_new_slice.count, 1u);
  EXPECT_EQ(r.leaked_remaining, 5u);
  EXPECT_EQ(r.leaked_examples.size(), 5u);

  r = Delete();
  EXPECT_EQ(r.leaked_deleted.count, 3u);
  EXPECT_EQ(r.leaked_deleted.bytes, 3 * kBlock);
  // Blocks of a slice a file uses are never deleted, even misnamed ones.
  EXPECT_EQ(r.leaked_remaining, 2u);
  EXPECT_TRUE(HasNone(never_committed));
  EXPECT_TRUE(HasAll(used));
  EXPECT_TRUE(Objects().count(slices_->BlockKey(used.id, 7, kBlock)));
  EXPECT_EQ(Objects().size(), 3u + 2 + 5);
  std::string back(used.size, '\0');
  EXPECT_TRUE(slices_->Read(used.id, used.size, 0, used.size, back.data()).ok());
  EXPECT_EQ(back, std::string(used.size, static_cast<char>('a' + used.id.value() % 26)));

  r = Gc();
  EXPECT_EQ(r.leaked.count, 2u);
  EXPECT_EQ(r.leaked_in_use.count, 2u);
}

TEST_P(GcTest, RecentObjectsAreSkipped) {
  InodeId a = File("a");
  Slice(kBlock, a);
  const SliceRef uploading = Slice(2 * kBlock);  // its commit may still come
  GcOptions o;
  o.delete_garbage = true;
  GcReport r = Gc(o, true);
  EXPECT_EQ(r.skipped.count, 3u);
  EXPECT_EQ(r.skipped_recent.count, 3u);
  EXPECT_EQ(r.leaked.count, 0u);
  EXPECT_EQ(r.valid.count, 0u);
  EXPECT_TRUE(HasAll(uploading));
  // An hour later it counts.
  o.now_ns = NowNanos() + kHour + 1'000'000'000;
  o.delete_garbage = false;
  r = Gc(o);
  EXPECT_EQ(r.leaked.count, 2u);
  EXPECT_EQ(r.valid.count, 1u);
}

TEST_P(GcTest, PendingDeletionsAreReportedAndFinished) {
  const int64_t now = NowNanos();
  // Being deleted (R), with two slices; held open by a mount (SS).
  InodeId gone = File("gone"), open = File("open"), kept = File("kept");
  const SliceRef gone1 = Slice(2 * kBlock, gone), gone2 = Slice(100, gone, 1);
  const SliceRef open1 = Slice(kBlock, open);
  const SliceRef kept1 = Slice(kBlock + 1, kept);
  Unlinked("gone", gone, keys::Reclaim(gone));
  Unlinked("open", open, keys::SustainedInode(SessionId(77), open));
  // Freed (G) and replaced by compaction (L), due and not yet.
  const SliceRef freed = Slice(3 * kBlock);
  Put(keys::FreedSlice(freed.id, freed.size), "");
  const SliceRef due = Slice(kBlock);
  Put(keys::DelayedSlice(now - 1000, due.id, due.size), "");
  const SliceRef later = Slice(2 * kBlock);
  Put(keys::DelayedSlice(now + 10 * kHour, later.id, later.size), "");

  GcReport r = Gc();
  EXPECT_EQ(r.unlinked_files.count, 1u);
  EXPECT_EQ(r.unlinked_files.bytes, 64ull * 1024 * 1024 + 100);  // its length
  EXPECT_EQ(r.open_unlinked_files.count, 1u);
  EXPECT_EQ(r.open_unlinked_files.bytes, kBlock);
  EXPECT_EQ(r.freed_slices.count, 1u);
  EXPECT_EQ(r.freed_slices.bytes, 3 * kBlock);
  EXPECT_EQ(r.delayed_slices_due.count, 1u);
  EXPECT_EQ(r.delayed_slices_later.count, 1u);
  EXPECT_EQ(r.delayed_slices_later.bytes, 2 * kBlock);
  EXPECT_EQ(r.valid.count, 2u);
  EXPECT_EQ(r.pending.count, 2u + 1 + 1 + 3 + 1 + 2);
  EXPECT_EQ(r.leaked.count, 0u);

  r = Delete();
  EXPECT_EQ(r.files_reclaimed, 1u);
  EXPECT_EQ(r.freed_slices_deleted, 3u);  // the G slice and the two of the file
  EXPECT_EQ(r.delayed_slices_deleted, 1u);
  EXPECT_EQ(r.delete_failures, 0u);
  EXPECT_TRUE(HasNone(gone1));
  EXPECT_TRUE(HasNone(gone2));
  EXPECT_TRUE(HasNone(freed));
  EXPECT_TRUE(HasNone(due));
  EXPECT_TRUE(HasAll(later));
  EXPECT_TRUE(HasAll(open1));  // deleted at its last close, not here
  EXPECT_TRUE(HasAll(kept1));
  auto count = meta_->CountFreedSlices();
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, 0u);
  auto attr = meta_->GetAttr(gone);
  EXPECT_FALSE(attr.ok());

  r = Gc();
  EXPECT_EQ(r.unlinked_files.count, 0u);
  EXPECT_EQ(r.open_unlinked_files.count, 1u);
  EXPECT_EQ(r.freed_slices.count, 0u);
  EXPECT_EQ(r.delayed_slices_due.count, 0u);
  EXPECT_EQ(r.delayed_slices_later.count, 1u);
  EXPECT_EQ(r.pending.count, 3u);
  EXPECT_EQ(r.valid.count, 2u);
}

TEST_P(GcTest, WrongReclaimRecordsDoNotDeleteLinkedFiles) {
  // An R record for a file that still has its name and link.
  InodeId a = File("a");
  const SliceRef used = Slice(kBlock, a);
  Put(keys::Reclaim(a), "");
  Put(keys::FreedSlice(used.id, used.size), "");
  GcReport r = Gc();
  EXPECT_EQ(r.unlinked_files.count, 0u);
  EXPECT_EQ(r.valid.count, 1u);
  r = Delete();
  EXPECT_EQ(r.files_reclaimed, 0u);
  EXPECT_EQ(r.freed_slices_deleted, 0u);
  EXPECT_TRUE(HasAll(used));
  EXPECT_TRUE(meta_->GetAttr(a).ok());
}

TEST_P(GcTest, DeletionRecordsOfUsedSlicesAreLeftAlone) {
  // A wrong reference count freed a slice that a file still uses.
  InodeId a = File("a");
  const SliceRef used = Slice(2 * kBlock, a);
  Put(keys::FreedSlice(used.id, used.size), "");
  Put(keys::DelayedSlice(NowNanos() - 1000, used.id, used.size), "");
  GcReport r = Delete();
  EXPECT_EQ(r.freed_slices_deleted, 0u);
  EXPECT_EQ(r.delayed_slices_deleted, 0u);
  EXPECT_EQ(r.freed_slices_in_use, 1u);
  EXPECT_TRUE(HasAll(used));
}

TEST_P(GcTest, SliceCommittedAfterTheListingKeepsItsObjects) {
  InodeId a = File("a");
  const SliceRef slow = Slice(2 * kBlock + 5);  // uploaded long ago, not committed yet
  const SliceRef lost = Slice(kBlock);
  GcOptions o;
  bool committed = false;
  // The deletions start after the listing: commit the slice then.
  o.progress = [&](const GcProgress& p) {
    if (committed || std::string(p.phase) != "deleting unlinked files") return;
    committed = true;
    ASSERT_TRUE(meta_->WriteSlice(a, 0, SliceRecord{0, slow.id, slow.size, 0, slow.size}, NowNanos()).ok());
  };
  GcReport r = Delete(o);
  EXPECT_TRUE(committed);
  EXPECT_EQ(r.leaked.count, 4u);
  EXPECT_EQ(r.leaked_deleted.count, 1u);
  EXPECT_EQ(r.leaked_now_used, 3u);
  EXPECT_EQ(r.leaked_remaining, 0u);
  EXPECT_TRUE(HasAll(slow));
  EXPECT_TRUE(HasNone(lost));
}

TEST_P(GcTest, CorruptChunkRecordsStopLeakedDeletion) {
  InodeId a = File("a");
  Slice(kBlock, a);
  const SliceRef unknown = Slice(kBlock);
  Put(keys::Chunk(a, 3), "not a chunk record");
  GcReport r = Delete();
  EXPECT_EQ(r.leaked.count, 1u);
  EXPECT_EQ(r.leaked_deleted.count, 0u);
  EXPECT_EQ(r.leaked_remaining, 1u);
  EXPECT_TRUE(HasAll(unknown));
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("fsck"), std::string::npos);
}

TEST_P(GcTest, SmallPagesGiveTheSameFigures) {
  std::vector<SliceRef> lost;
  for (int i = 0; i < 12; ++i) {
    InodeId f = File("f" + std::to_string(i));
    Slice(kBlock * (1 + i % 3), f);
    lost.push_back(Slice(kBlock + 7));
  }
  GcOptions o;
  o.meta_page = 3;
  o.list_page = 2;
  o.threads = 3;
  GcReport r = Gc(o);
  EXPECT_EQ(r.valid.count, 24u);
  EXPECT_EQ(r.leaked.count, 24u);
  r = Delete(o);
  EXPECT_EQ(r.leaked_deleted.count, 24u);
  EXPECT_EQ(r.leaked_remaining, 0u);
  for (const auto& s : lost) EXPECT_TRUE(HasNone(s));
  EXPECT_EQ(Objects().size(), 24u);
}

TEST_P(GcTest, CompactMergesFragmentedChunks) {
  InodeId a = File("a"), b = File("b");
  Slice(3 * kBlock, a);
  Slice(kBlock, a, 0, 100);
  Slice(10, a, 0, 5000);
  Slice(kBlock, b);
  GcReport r = Gc();
  EXPECT_EQ(r.fragmented_chunks, 1u);

  BlockReader reader(slices_.get(), nullptr, 2);
  MetaChunks chunks(meta_.get());
  Compactor compactor(&chunks, &reader, CompactOptions{});
  GcOptions o;
  o.compact = [&](InodeId ino, uint32_t chunk) { return compactor.CompactChunk(ino, chunk, true); };
  r = Gc(o);
  EXPECT_TRUE(r.compacted);
  EXPECT_EQ(r.chunks_compacted, 1u);
  EXPECT_EQ(r.records_before, 3u);
  EXPECT_EQ(r.records_after, 1u);
  auto records = meta_->ReadChunk(a, 0);
  ASSERT_TRUE(records.ok());
  EXPECT_EQ(records->size(), 1u);
  r = Gc({}, true);
  EXPECT_EQ(r.fragmented_chunks, 0u);
  EXPECT_EQ(r.delayed_slices_later.count, 3u);  // replaced, deleted after the grace
}

INSTANTIATE_TEST_SUITE_P(Engines, GcTest, ::testing::Values("mem://", "sqlite"));

}  // namespace
}  // namespace tessera
