// The trash and the removal of trees, on every engine.
#include <gtest/gtest.h>

#include <algorithm>

#include "common/units.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/meta_fsck.h"
#include "meta/meta_test_util.h"

namespace tessera {
namespace {

constexpr int64_t kHourNs = 3600LL * 1'000'000'000;

class MetaTrashTest : public MetaFixture {
 protected:
  void SetUp() override {
    trash_days_ = 1;
    MetaFixture::SetUp();
  }
  std::vector<TrashItem> Trash() {
    std::vector<TrashItem> items;
    Status st = meta_->ListTrash([&](const TrashItem& item) {
      items.push_back(item);
      return Status::Ok();
    });
    EXPECT_TRUE(st.ok()) << st.ToString();
    return items;
  }
  void ExpectConsistent() {
    auto report = CheckVolume(meta_->kv(), FsckOptions{}, nullptr);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    std::string all;
    for (const auto& f : report->findings) all += f.detail + "\n";
    EXPECT_EQ(report->problems(), 0u) << all;
  }
  InodeId WriteFile(InodeId dir, const std::string& name, uint32_t len) {
    InodeId f = MakeFile(dir, name);
    SliceId s = *meta_->NewSlice();
    EXPECT_TRUE(meta_->WriteSlice(f, 0, {0, s, len, 0, len}, 1).ok());
    return f;
  }
};

TEST_P(MetaTrashTest, UnlinkMovesTheFileIntoTheTrashWithItsPath) {
  InodeId d = MakeDir(kRootInode, "d");
  InodeId f = WriteFile(d, "f", 5000);
  const auto before = *meta_->StatFs();
  ASSERT_TRUE(meta_->Unlink(ctx_, d, "f").ok());
  EXPECT_EQ(meta_->Lookup(ctx_, d, "f").status().code(), StatusCode::kNotFound);
  // Still there, with its data and its usage, under .trash/<hour>/.
  EXPECT_TRUE(freed_.empty());
  EXPECT_EQ(meta_->StatFs()->used_space, before.used_space);
  EXPECT_EQ(meta_->StatFs()->used_inodes, before.used_inodes);
  auto trash = meta_->Lookup(ctx_, kRootInode, kTrashName);
  ASSERT_TRUE(trash.ok()) << trash.status().ToString();
  EXPECT_EQ(trash->inode, kTrashInode);
  EXPECT_EQ(trash->attr.mode, S_IFDIR | 0555u);
  // Not listed in the root, and its name is reserved there.
  EXPECT_EQ(List(kRootInode), (std::vector<std::string>{"d"}));
  EXPECT_EQ(meta_->Mkdir(ctx_, kRootInode, kTrashName, 0755).status().code(),
            StatusCode::kNotPermitted);
  auto items = Trash();
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].inode, f);
  EXPECT_EQ(items[0].origin, "/d/f");
  EXPECT_EQ(items[0].name, std::to_string(d.value()) + "_" + std::to_string(f.value()) + "_f");
  EXPECT_EQ(items[0].attr.length, 5000u);
  EXPECT_EQ(List(kTrashInode), (std::vector<std::string>{items[0].hour}));
  auto hour = meta_->Lookup(ctx_, kTrashInode, items[0].hour);
  ASSERT_TRUE(hour.ok());
  EXPECT_EQ(List(hour->inode), (std::vector<std::string>{items[0].name}));
  ExpectConsistent();
}

TEST_P(MetaTrashTest, TheTrashIsReadOnlyButDeletesForGood) {
  InodeId f = WriteFile(kRootInode, "f", 100);
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "f").ok());
  TrashItem item = Trash().at(0);
  EXPECT_EQ(meta_->Mknod(ctx_, item.hour_dir, "x", S_IFREG | 0644, 0).status().code(),
            StatusCode::kNotPermitted);
  EXPECT_EQ(meta_->Mkdir(ctx_, kTrashInode, "x", 0755).status().code(), StatusCode::kNotPermitted);
  InodeId g = MakeFile(kRootInode, "g");
  EXPECT_EQ(meta_->Rename(ctx_, kRootInode, "g", item.hour_dir, "g", 0).code(),
            StatusCode::kNotPermitted);
  EXPECT_EQ(meta_->Link(ctx_, g, item.hour_dir, "g").status().code(), StatusCode::kNotPermitted);
  // Root may move an entry out by hand; the hour directory stays usable.
  ASSERT_TRUE(meta_->Rmdir(ctx_, kRootInode, "gone").code() == StatusCode::kNotFound);
  InodeId dir = MakeDir(kRootInode, "dir");
  ASSERT_TRUE(meta_->Rmdir(ctx_, kRootInode, "dir").ok());
  std::vector<TrashItem> now = Trash();
  auto dir_item = std::find_if(now.begin(), now.end(), [&](const TrashItem& i) { return i.inode == dir; });
  ASSERT_NE(dir_item, now.end());
  ASSERT_TRUE(meta_->Rename(ctx_, dir_item->hour_dir, dir_item->name, kRootInode, "back", 0).ok());
  EXPECT_EQ(meta_->GetAttr(dir_item->hour_dir)->nlink, 1u);
  ExpectConsistent();
  // An unlink in the trash deletes the file and frees its space.
  ASSERT_TRUE(meta_->Unlink(ctx_, item.hour_dir, item.name).ok());
  meta_->DrainReclaims(10'000);
  EXPECT_EQ(meta_->GetAttr(f).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(freed_.size(), 1u);
  EXPECT_TRUE(Trash().empty());
  EXPECT_EQ(meta_->StatFs()->used_inodes, 2u);  // g and back
  EXPECT_EQ(meta_->StatFs()->used_space, 0u);
  ExpectConsistent();
}

TEST_P(MetaTrashTest, RestorePutsEntriesBackAndMakesMissingDirectories) {
  InodeId a = MakeDir(kRootInode, "a");
  InodeId b = MakeDir(a, "b");
  InodeId f = WriteFile(b, "f", 10);
  ASSERT_TRUE(meta_->Unlink(ctx_, b, "f").ok());
  ASSERT_TRUE(meta_->Rmdir(ctx_, a, "b").ok());
  ASSERT_TRUE(meta_->Rmdir(ctx_, kRootInode, "a").ok());
  auto items = Trash();
  ASSERT_EQ(items.size(), 3u);
  ExpectConsistent();
  // The file alone: its directories are made again.
  auto file = std::find_if(items.begin(), items.end(), [&](const TrashItem& i) { return i.inode == f; });
  ASSERT_NE(file, items.end());
  EXPECT_EQ(file->origin, "/a/b/f");
  std::string to;
  ASSERT_TRUE(meta_->RestoreFromTrash(ctx_, *file, &to).ok());
  EXPECT_EQ(to, "/a/b/f");
  auto back = meta_->Lookup(ctx_, kRootInode, "a");
  ASSERT_TRUE(back.ok());
  EXPECT_NE(back->inode, a);  // a new directory
  auto again = meta_->Lookup(ctx_, meta_->Lookup(ctx_, back->inode, "b")->inode, "f");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->inode, f);
  EXPECT_EQ(again->attr.length, 10u);
  // Restored once only; a taken name is refused.
  EXPECT_EQ(meta_->RestoreFromTrash(ctx_, *file, &to).code(), StatusCode::kNotFound);
  auto dir_b = std::find_if(items.begin(), items.end(), [&](const TrashItem& i) { return i.inode == b; });
  EXPECT_EQ(meta_->RestoreFromTrash(ctx_, *dir_b, &to).code(), StatusCode::kExists);
  ExpectConsistent();
}

TEST_P(MetaTrashTest, RenameOverAFilePutsTheOldOneInTheTrash) {
  InodeId old = WriteFile(kRootInode, "f", 10);
  MakeFile(kRootInode, "g");
  ASSERT_TRUE(meta_->Rename(ctx_, kRootInode, "g", kRootInode, "f", 0).ok());
  auto items = Trash();
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].inode, old);
  EXPECT_EQ(items[0].origin, "/f");
  EXPECT_TRUE(freed_.empty());
  ExpectConsistent();
}

TEST_P(MetaTrashTest, ExpiredHoursAreEmptiedByOneClientAtATime) {
  InodeId d = MakeDir(kRootInode, "d");
  for (int i = 0; i < 5; ++i) WriteFile(d, "f" + std::to_string(i), 4096);
  ASSERT_TRUE(meta_->Rmdir(ctx_, kRootInode, "d").code() == StatusCode::kNotEmpty);
  ASSERT_EQ(*meta_->RemoveTree(ctx_, kRootInode, "d"), 6u);
  EXPECT_EQ(Trash().size(), 6u);
  EXPECT_EQ(meta_->StatFs()->used_space, 5u * 4096);
  // Within the trash days nothing goes.
  EXPECT_EQ(*meta_->EmptyTrash(NowNanos(), 0), 0u);
  EXPECT_EQ(Trash().size(), 6u);
  // Another client holds the lease: this one leaves it to that one.
  const int64_t later = NowNanos() + 26 * kHourNs;
  std::string lease;
  PutBig64(&lease, meta_->session().value() + 1000);
  PutBig64(&lease, static_cast<uint64_t>(later + kHourNs));
  ASSERT_TRUE(WithTransaction(meta_->kv(), [&](KvTxn& txn) {
                txn.Put(keys::Lease("trash"), lease);
                return Status::Ok();
              }).ok());
  EXPECT_EQ(*meta_->EmptyTrash(later, 0), 0u);
  // Once the lease ran out, a budget bounds each call.
  EXPECT_EQ(*meta_->EmptyTrash(later + 2 * kHourNs, 4), 4u);
  EXPECT_EQ(*meta_->EmptyTrash(later + 2 * kHourNs, 0), 2u);
  EXPECT_TRUE(Trash().empty());
  EXPECT_TRUE(List(kTrashInode).empty());
  meta_->DrainReclaims(10'000);
  EXPECT_EQ(freed_.size(), 5u);
  EXPECT_EQ(meta_->StatFs()->used_space, 0u);
  EXPECT_EQ(meta_->StatFs()->used_inodes, 0u);
  ExpectConsistent();
}

TEST_P(MetaTrashTest, RemovedTreeComesBackWhole) {
  InodeId top = MakeDir(kRootInode, "top");
  for (int i = 0; i < 3; ++i) {
    InodeId sub = MakeDir(top, "sub" + std::to_string(i));
    for (int j = 0; j < 4; ++j) WriteFile(sub, "f" + std::to_string(j), 100);
  }
  uint64_t told = 0;
  auto n = meta_->RemoveTree(ctx_, kRootInode, "top", [&](uint64_t k) { told = k; });
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 16u);
  EXPECT_EQ(told, 16u);
  EXPECT_EQ(meta_->Lookup(ctx_, kRootInode, "top").status().code(), StatusCode::kNotFound);
  ExpectConsistent();
  // Parents first, as `tessera trash restore` orders them.
  auto items = Trash();
  ASSERT_EQ(items.size(), 16u);
  std::sort(items.begin(), items.end(),
            [](const TrashItem& a, const TrashItem& b) { return a.origin.size() < b.origin.size(); });
  for (const TrashItem& item : items) {
    std::string to;
    ASSERT_TRUE(meta_->RestoreFromTrash(ctx_, item, &to).ok()) << item.origin;
  }
  auto back = meta_->Lookup(ctx_, kRootInode, "top");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(List(back->inode), (std::vector<std::string>{"sub0", "sub1", "sub2"}));
  EXPECT_EQ(List(meta_->Lookup(ctx_, back->inode, "sub1")->inode),
            (std::vector<std::string>{"f0", "f1", "f2", "f3"}));
  EXPECT_EQ(back->attr.nlink, 5u);
  ExpectConsistent();
}

TEST_P(MetaTrashTest, PendingWorkIsCounted) {
  InodeId a = WriteFile(kRootInode, "a", 3000);
  WriteFile(kRootInode, "b", 5000);
  InodeId c = MakeFile(kRootInode, "c");
  SliceId s1 = *meta_->NewSlice(), s2 = *meta_->NewSlice();
  ASSERT_TRUE(meta_->WriteSlice(c, 0, {0, s1, 100, 0, 100}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(c, 0, {50, s2, 100, 0, 100}, 1).ok());
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "b").ok());  // into the trash
  meta_->OnOpen(a);
  // Deleted for good from the trash while open here: pending until closed.
  auto items = Trash();
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "a").ok());
  items = Trash();
  ASSERT_EQ(items.size(), 2u);
  auto it = std::find_if(items.begin(), items.end(), [&](const TrashItem& i) { return i.inode == a; });
  ASSERT_TRUE(meta_->Unlink(ctx_, it->hour_dir, it->name).ok());
  auto pending = meta_->CountPending(true);
  ASSERT_TRUE(pending.ok()) << pending.status().ToString();
  EXPECT_EQ(pending->trash_entries, 1u);
  EXPECT_EQ(pending->trash_files, 1u);
  EXPECT_EQ(pending->trash_bytes, 5000u);
  EXPECT_EQ(pending->deleted_files, 1u);
  EXPECT_EQ(pending->deleted_file_bytes, 3000u);
  EXPECT_EQ(pending->fragmented_chunks, 1u);
  EXPECT_EQ(pending->fragmented_records, 2u);
  EXPECT_EQ(pending->freed_slices, 0u);
  ASSERT_TRUE(meta_->OnClose(a).ok());
  pending = meta_->CountPending(false);
  EXPECT_EQ(pending->deleted_files, 0u);
  EXPECT_EQ(pending->freed_slices, 1u);  // a's slice, until a deleter drops it
  EXPECT_EQ(pending->fragmented_chunks, 0u);  // not scanned
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaTrashTest,
                         ::testing::Values("mem://", "sqlite", "postgres", "redis", "etcd"));

using MetaTreeTest = MetaFixture;

TEST_P(MetaTreeTest, RemoveTreeWithoutTrashDeletesEverything) {
  InodeId top = MakeDir(kRootInode, "top");
  InodeId keep = MakeDir(kRootInode, "keep");
  InodeId linked = MakeFile(keep, "linked");
  for (int i = 0; i < 300; ++i) {
    InodeId f = MakeFile(i % 2 ? top : MakeDir(top, "d" + std::to_string(i)), "f" + std::to_string(i));
    SliceId s = *meta_->NewSlice();
    ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, s, 10, 0, 10}, 1).ok());
  }
  ASSERT_TRUE(meta_->Link(ctx_, linked, top, "link").ok());
  auto n = meta_->RemoveTree(ctx_, kRootInode, "top");
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 300u + 150u + 1u + 1u);
  meta_->DrainReclaims(10'000);
  EXPECT_EQ(freed_.size(), 300u);
  EXPECT_EQ(meta_->GetAttr(linked)->nlink, 1u);  // its other name stays
  EXPECT_EQ(meta_->StatFs()->used_inodes, 2u);
  EXPECT_EQ(meta_->StatFs()->used_space, 0u);
  EXPECT_EQ(List(kRootInode), (std::vector<std::string>{"keep"}));
  auto report = CheckVolume(meta_->kv(), FsckOptions{}, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->problems(), 0u) << (report->findings.empty() ? "" : report->findings[0].detail);
}

TEST_P(MetaTreeTest, ClonesShareSlicesAndDivergeOnWrite) {
  InodeId src = MakeDir(kRootInode, "src");
  InodeId sub = MakeDir(src, "sub");
  std::vector<InodeId> files;
  for (int i = 0; i < 150; ++i) {  // more than one batch
    InodeId f = MakeFile(i % 3 ? src : sub, "f" + std::to_string(i));
    SliceId s = *meta_->NewSlice();
    ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, s, 5000, 0, 5000}, 1).ok());
    files.push_back(f);
  }
  ASSERT_TRUE(meta_->Symlink(ctx_, sub, "link", "../f1").ok());
  ASSERT_TRUE(meta_->SetXattr(ctx_, files[0], "user.k", "v", 0).ok());
  const auto before = *meta_->StatFs();

  // A name that exists is refused, leaving nothing behind.
  MakeFile(kRootInode, "taken");
  EXPECT_EQ(meta_->Clone(ctx_, src, kRootInode, "taken").status().code(), StatusCode::kExists);
  uint64_t told = 0;
  auto n = meta_->Clone(ctx_, src, kRootInode, "copy", [&](uint64_t k) { told = k; });
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1u + 1u + 150u + 1u);
  EXPECT_EQ(told, *n);
  auto copy = meta_->Lookup(ctx_, kRootInode, "copy");
  ASSERT_TRUE(copy.ok());
  EXPECT_EQ(copy->attr.nlink, 3u);
  EXPECT_EQ(List(copy->inode), List(src));
  auto copy_sub = meta_->Lookup(ctx_, copy->inode, "sub");
  EXPECT_EQ(List(copy_sub->inode), List(sub));
  EXPECT_EQ(*meta_->ReadLink(meta_->Lookup(ctx_, copy_sub->inode, "link")->inode), "../f1");
  auto copy_f0 = meta_->Lookup(ctx_, copy_sub->inode, "f0");
  ASSERT_TRUE(copy_f0.ok());
  EXPECT_NE(copy_f0->inode, files[0]);
  EXPECT_EQ(copy_f0->attr.length, 5000u);
  EXPECT_EQ(*meta_->GetXattr(copy_f0->inode, "user.k"), "v");
  EXPECT_EQ(*meta_->ReadChunk(copy_f0->inode, 0), *meta_->ReadChunk(files[0], 0));
  EXPECT_EQ(meta_->StatFs()->used_inodes, 2 * before.used_inodes + 1);  // + "taken"
  EXPECT_EQ(meta_->StatFs()->used_space, 2 * before.used_space);
  auto report = CheckVolume(meta_->kv(), FsckOptions{}, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->problems(), 0u) << (report->findings.empty() ? "" : report->findings[0].detail);

  // The copy diverges on write; the source stays as it was.
  const auto original = *meta_->ReadChunk(files[0], 0);
  SliceId fresh = *meta_->NewSlice();
  ASSERT_TRUE(meta_->WriteSlice(copy_f0->inode, 0, {0, fresh, 10, 0, 10}, 2).ok());
  EXPECT_EQ(*meta_->ReadChunk(files[0], 0), original);
  EXPECT_EQ(meta_->ReadChunk(copy_f0->inode, 0)->size(), 2u);
  // Deleting the source frees nothing the copy uses.
  ASSERT_TRUE(meta_->RemoveTree(ctx_, kRootInode, "src").ok());
  meta_->DrainReclaims(10'000);
  EXPECT_TRUE(freed_.empty());
  EXPECT_EQ(*meta_->ReadChunk(copy_f0->inode, 0), (std::vector<SliceRecord>{original[0], {0, fresh, 10, 0, 10}}));
  // Deleting the copy too frees every slice once.
  ASSERT_TRUE(meta_->RemoveTree(ctx_, kRootInode, "copy").ok());
  meta_->DrainReclaims(10'000);
  EXPECT_EQ(freed_.size(), 151u);
  report = CheckVolume(meta_->kv(), FsckOptions{}, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->problems(), 0u) << (report->findings.empty() ? "" : report->findings[0].detail);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaTreeTest,
                         ::testing::Values("mem://", "sqlite", "postgres", "redis", "etcd"));

}  // namespace
}  // namespace tessera
