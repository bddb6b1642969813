// The volume check (meta_fsck.h) on every engine: a clean volume with every
// kind of inode reports nothing, and each kind of corruption, planted by
// writing raw keys, is found with the right path, repaired, and gone on the
// next check.
#include "meta/meta_fsck.h"

#include <algorithm>
#include <mutex>
#include <set>

#include "common/coding.h"
#include "meta/keys.h"
#include "meta/meta_test_util.h"
#include "meta/txn_util.h"

namespace tessera {
namespace {

class MetaFsckTest : public MetaFixture {
 protected:
  // Checks the volume; slices in missing_ have one of their two blocks missing.
  FsckReport Check(FsckOptions options = {}) {
    CheckSliceObjects objects = [this](const SliceRef& s) -> Result<SliceObjects> {
      std::lock_guard lock(mu_);
      looked_up_.insert(s.id.value());
      SliceObjects out;
      out.checked = 2;
      if (missing_.count(s.id.value())) out.missing.push_back("block-" + std::to_string(s.id.value()));
      return out;
    };
    auto r = CheckVolume(meta_->kv(), options, objects);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : FsckReport{};
  }
  FsckReport Repair() {
    FsckOptions o;
    o.repair = true;
    return Check(o);
  }
  static std::string Describe(const FsckReport& r) {
    std::string out;
    for (const auto& f : r.findings) {
      out += std::string(FsckKindName(f.kind)) + " inode " + std::to_string(f.inode.value()) + " [";
      for (const auto& p : f.paths) out += p + " ";
      out += "] " + f.detail + (f.repaired ? " (repaired)" : "") + "\n";
    }
    for (const auto& n : r.notes) out += "note: " + n + "\n";
    return out;
  }
  // The one finding of a report, after asserting there is exactly one.
  static FsckFinding Only(const FsckReport& r, FsckKind kind) {
    EXPECT_EQ(r.findings.size(), 1u) << Describe(r);
    if (r.findings.empty()) return {};
    EXPECT_EQ(r.findings[0].kind, kind) << Describe(r);
    return r.findings[0];
  }
  void Put(const std::string& key, const std::string& value) {
    ASSERT_TRUE(WithTransaction(meta_->kv(), [&](KvTxn& txn) {
                  txn.Put(key, value);
                  return Status::Ok();
                }).ok());
  }
  void Delete(const std::string& key) {
    ASSERT_TRUE(WithTransaction(meta_->kv(), [&](KvTxn& txn) {
                  txn.Delete(key);
                  return Status::Ok();
                }).ok());
  }
  void SetNlink(InodeId ino, uint32_t nlink) {
    Attr a = *meta_->GetAttr(ino);
    a.nlink = nlink;
    Put(keys::Attr(ino), EncodeAttr(a));
  }
  int64_t Counter(std::string_view name) {
    int64_t v = 0;
    EXPECT_TRUE(WithReadTransaction(meta_->kv(), [&](KvTxn& txn) -> Status {
                  ASSIGN_OR_RETURN(v, meta_internal::GetCounter(txn, name));
                  return Status::Ok();
                }).ok());
    return v;
  }
  void SetCounter(std::string_view name, int64_t v) {
    std::string s;
    PutBig64(&s, static_cast<uint64_t>(v));
    Put(keys::Counter(name), s);
  }
  // A file with `len` bytes in a new slice.
  InodeId MakeData(InodeId parent, const std::string& name, uint32_t len) {
    InodeId f = MakeFile(parent, name);
    SliceId id = *meta_->NewSlice();
    EXPECT_TRUE(meta_->WriteSlice(f, 0, {0, id, len, 0, len}, 1).ok());
    return f;
  }
  SliceId FirstSlice(InodeId f) { return (*meta_->ReadChunk(f, 0)).front().id; }

  // A volume with every kind of inode: dirs, files with data (one over two
  // chunks), a hard link, a symlink, a rename, a shared slice, and a file
  // still open after its last unlink.
  void BuildTree() {
    d_ = MakeDir(kRootInode, "d");
    InodeId sub = MakeDir(d_, "sub");
    f_ = MakeData(d_, "f", 5000);
    InodeId big = MakeFile(sub, "big");
    ASSERT_TRUE(meta_->WriteSlice(big, 0, {0, *meta_->NewSlice(), 1 << 20, 0, 1 << 20}, 1).ok());
    ASSERT_TRUE(meta_->WriteSlice(big, 1, {0, *meta_->NewSlice(), 4096, 0, 4096}, 1).ok());
    ASSERT_TRUE(meta_->Link(ctx_, f_, sub, "hard").ok());
    ASSERT_TRUE(meta_->Symlink(ctx_, d_, "link", "f").ok());
    InodeId moved = MakeData(kRootInode, "before", 10);
    ASSERT_TRUE(meta_->Rename(ctx_, kRootInode, "before", sub, "after", 0).ok());
    copy_ = MakeFile(kRootInode, "copy");
    ASSERT_EQ(*meta_->CopyFileRange(f_, 0, copy_, 0, 5000), 5000u);  // K key: 2 references
    (void)moved;
    InodeId open = MakeData(kRootInode, "open", 100);
    meta_->OnOpen(open);
    ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "open").ok());  // kept by an SS key
    ASSERT_TRUE(meta_->Mkdir(ctx_, sub, "empty", 0755).ok());
  }

  InodeId d_, f_, copy_;
  std::mutex mu_;
  std::set<uint64_t> missing_, looked_up_;
};

TEST_P(MetaFsckTest, CleanVolumeReportsNothing) {
  BuildTree();
  FsckReport r = Check();
  EXPECT_TRUE(r.findings.empty()) << Describe(r);
  EXPECT_TRUE(r.notes.empty()) << Describe(r);
  // root, d, sub, empty; f, big, link, after, copy, open.
  EXPECT_EQ(r.inodes, 10u);
  EXPECT_EQ(r.directories, 4u);
  EXPECT_EQ(r.files, 6u);
  EXPECT_EQ(r.slices, 5u);  // f's (shared with copy), big's two, after's, open's
  EXPECT_EQ(r.objects_checked, 10u);
  EXPECT_EQ(looked_up_.size(), 5u);

  // Pages of two keys resume correctly.
  FsckOptions small;
  small.page_size = 2;
  FsckReport paged = Check(small);
  EXPECT_TRUE(paged.findings.empty()) << Describe(paged);
  EXPECT_EQ(paged.inodes, 10u);
  EXPECT_EQ(paged.slices, 5u);
}

TEST_P(MetaFsckTest, WrongLinkCountsAreFoundAndRepaired) {
  BuildTree();
  SetNlink(f_, 5);  // two entries name it
  FsckFinding f = Only(Check(), FsckKind::kLinkCount);
  EXPECT_EQ(f.inode, f_);
  std::sort(f.paths.begin(), f.paths.end());
  EXPECT_EQ(f.paths, (std::vector<std::string>{"/d/f", "/d/sub/hard"}));
  EXPECT_EQ(f.expected, 2);
  EXPECT_EQ(f.stored, 5);

  SetNlink(d_, 7);  // d has one subdirectory
  FsckReport r = Repair();
  ASSERT_EQ(r.findings.size(), 2u) << Describe(r);
  EXPECT_EQ(r.repaired(), 2u) << Describe(r);
  for (const auto& finding : r.findings) {
    if (finding.inode == d_) {
      EXPECT_EQ(finding.paths, std::vector<std::string>{"/d"});
      EXPECT_EQ(finding.expected, 3);
    }
  }
  EXPECT_EQ(meta_->GetAttr(f_)->nlink, 2u);
  EXPECT_EQ(meta_->GetAttr(d_)->nlink, 3u);
  FsckReport again = Check();
  EXPECT_TRUE(again.findings.empty()) << Describe(again);
}

TEST_P(MetaFsckTest, DanglingAndMistypedEntriesAreFoundAndRepaired) {
  BuildTree();
  Put(keys::Entry(d_, "ghost"), EncodeEntry({S_IFREG, InodeId(99999)}));
  FsckFinding f = Only(Check(), FsckKind::kDanglingEntry);
  EXPECT_EQ(f.paths, std::vector<std::string>{"/d/ghost"});
  EXPECT_EQ(f.inode, InodeId(99999));

  Put(keys::Entry(kRootInode, "copy"), EncodeEntry({S_IFDIR, copy_}));  // a file said to be a dir
  FsckReport r = Repair();
  ASSERT_EQ(r.findings.size(), 2u) << Describe(r);
  EXPECT_EQ(r.repaired(), 2u) << Describe(r);
  EXPECT_EQ(meta_->Lookup(ctx_, d_, "ghost").status().code(), StatusCode::kNotFound);
  auto page = meta_->ReadDir(kRootInode, 0, 100, false);
  ASSERT_TRUE(page.ok());
  for (const auto& item : page->items) {
    if (item.name == "copy") {
      EXPECT_EQ(item.type, static_cast<uint32_t>(S_IFREG));
    }
  }
  FsckReport again = Check();
  EXPECT_TRUE(again.findings.empty()) << Describe(again);
}

TEST_P(MetaFsckTest, OrphansMoveToLostAndFound) {
  BuildTree();
  // A file with data and a directory that no entry names: their inode
  // counts and space are in the counters, as if their entries were lost.
  Attr file;
  file.mode = S_IFREG | 0644;
  file.nlink = 1;
  file.length = 3000;
  file.parent = d_;
  Put(keys::Attr(InodeId(50000)), EncodeAttr(file));
  Attr dir;
  dir.mode = S_IFDIR | 0755;
  dir.nlink = 2;
  dir.parent = d_;
  Put(keys::Attr(InodeId(50001)), EncodeAttr(dir));
  SetCounter(keys::kUsedInodes, Counter(keys::kUsedInodes) + 2);
  SetCounter(keys::kUsedSpace, Counter(keys::kUsedSpace) + 4096);

  FsckReport r = Check();
  ASSERT_EQ(r.findings.size(), 2u) << Describe(r);
  for (const auto& f : r.findings) {
    EXPECT_EQ(f.kind, FsckKind::kOrphan);
    EXPECT_EQ(f.paths, std::vector<std::string>{"<orphan inode " + std::to_string(f.inode.value()) + ">"});
  }
  const uint64_t inodes_before = Counter(keys::kUsedInodes);

  r = Repair();
  EXPECT_EQ(r.repaired(), 2u) << Describe(r);
  auto lf = meta_->Lookup(ctx_, kRootInode, "lost+found");
  ASSERT_TRUE(lf.ok()) << lf.status().ToString();
  EXPECT_EQ(lf->attr.mode, static_cast<uint32_t>(S_IFDIR | 0700));
  EXPECT_EQ(List(lf->inode), (std::vector<std::string>{"50000", "50001"}));
  EXPECT_EQ(meta_->Lookup(ctx_, lf->inode, "50000")->attr.length, 3000u);
  EXPECT_EQ(meta_->GetAttr(InodeId(50001))->parent, lf->inode);
  EXPECT_EQ(lf->attr.nlink, 3u);  // 2 + the moved directory
  EXPECT_EQ(Counter(keys::kUsedInodes), static_cast<int64_t>(inodes_before + 1));
  FsckReport again = Check();
  EXPECT_TRUE(again.findings.empty()) << Describe(again);
  // A second repair reuses lost+found.
  Put(keys::Attr(InodeId(50002)), EncodeAttr(file));
  SetCounter(keys::kUsedInodes, Counter(keys::kUsedInodes) + 1);
  SetCounter(keys::kUsedSpace, Counter(keys::kUsedSpace) + 4096);
  EXPECT_EQ(Repair().repaired(), 1u);
  EXPECT_EQ(List(lf->inode).size(), 3u);
  EXPECT_TRUE(Check().findings.empty());
}

TEST_P(MetaFsckTest, UnlinkedFileWithoutSessionHoldIsAnOrphan) {
  InodeId f = MakeData(kRootInode, "f", 100);
  meta_->OnOpen(f);
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "f").ok());
  EXPECT_TRUE(Check().findings.empty());  // held open: legal
  Delete(keys::SustainedInode(meta_->session(), f));
  FsckFinding o = Only(Check(), FsckKind::kOrphan);
  EXPECT_EQ(o.inode, f);
  EXPECT_EQ(Repair().repaired(), 1u);
  auto lf = meta_->Lookup(ctx_, kRootInode, "lost+found");
  ASSERT_TRUE(lf.ok());
  auto found = meta_->Lookup(ctx_, lf->inode, std::to_string(f.value()));
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->attr.nlink, 1u);
  EXPECT_TRUE(Check().findings.empty());
}

TEST_P(MetaFsckTest, WrongCountersAreFoundAndRepaired) {
  BuildTree();
  const int64_t space = Counter(keys::kUsedSpace);
  const int64_t inodes = Counter(keys::kUsedInodes);
  // What meta counts: 4 KiB-rounded lengths of every file with a name.
  // f 5000, big 64 MiB + 4096, after 10, copy 5000; not "open" (unlinked,
  // still open), whose unlink took it out of the counters.
  EXPECT_EQ(space, 8192 + ((64 << 20) + 4096) + 4096 + 8192);
  EXPECT_EQ(inodes, 8);
  SetCounter(keys::kUsedSpace, 12345);
  SetCounter(keys::kUsedInodes, 77);
  FsckReport r = Check();
  ASSERT_EQ(r.findings.size(), 2u) << Describe(r);
  for (const auto& f : r.findings) {
    if (f.kind == FsckKind::kUsedSpace) {
      EXPECT_EQ(f.stored, 12345);
      EXPECT_EQ(f.expected, space);
    } else {
      EXPECT_EQ(f.kind, FsckKind::kUsedInodes);
      EXPECT_EQ(f.stored, 77);
      EXPECT_EQ(f.expected, 8);
    }
  }
  EXPECT_EQ(Repair().repaired(), 2u);
  EXPECT_EQ(Counter(keys::kUsedSpace), space);
  EXPECT_EQ(Counter(keys::kUsedInodes), 8);
  EXPECT_TRUE(Check().findings.empty());
}

TEST_P(MetaFsckTest, SliceReferenceCountsAreFoundAndRepaired) {
  BuildTree();
  const SliceId shared = FirstSlice(f_);
  const std::string key = keys::SliceRefs(shared, 5000);
  std::string five;
  PutBig64(&five, 5);
  Put(key, five);
  FsckFinding f = Only(Check(), FsckKind::kSliceRefs);
  EXPECT_EQ(f.expected, 2);
  EXPECT_EQ(f.stored, 5);
  EXPECT_FALSE(f.paths.empty());
  EXPECT_EQ(Repair().repaired(), 1u);
  auto value = [&]() -> std::optional<std::string> {
    std::optional<std::string> v;
    EXPECT_TRUE(WithReadTransaction(meta_->kv(), [&](KvTxn& txn) -> Status {
                  ASSIGN_OR_RETURN(v, txn.Get(key));
                  return Status::Ok();
                }).ok());
    return v;
  };
  ASSERT_TRUE(value().has_value());
  EXPECT_EQ(GetBig64(value()->data()), 2u);

  // A missing key means one reference, and a key for a slice no chunk names is stale.
  Delete(key);
  FsckFinding absent = Only(Check(), FsckKind::kSliceRefs);
  EXPECT_EQ(absent.stored, 1);
  EXPECT_EQ(absent.expected, 2);
  Put(keys::SliceRefs(SliceId(3), 77), five);
  FsckReport r = Repair();
  EXPECT_EQ(r.findings.size(), 2u) << Describe(r);
  EXPECT_EQ(r.repaired(), 2u) << Describe(r);
  EXPECT_EQ(GetBig64(value()->data()), 2u);
  EXPECT_TRUE(Keys(keys::SliceRefs(SliceId(3), 0), keys::SliceRefs(SliceId(4), 0)).empty());
  EXPECT_TRUE(Check().findings.empty());
}

TEST_P(MetaFsckTest, BrokenSliceRecordsAreReported) {
  BuildTree();
  InodeId g = MakeFile(d_, "g");
  // An id the counter never handed out, and a record reading past its slice.
  ASSERT_TRUE(meta_->WriteSlice(g, 0, {0, SliceId(1ull << 40), 100, 0, 100}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(g, 1, {0, *meta_->NewSlice(), 100, 50, 100}, 1).ok());
  FsckReport r = Check();
  ASSERT_EQ(r.findings.size(), 2u) << Describe(r);
  for (const auto& f : r.findings) {
    EXPECT_EQ(f.kind, FsckKind::kBadSlice);
    EXPECT_EQ(f.paths, std::vector<std::string>{"/d/g"});
    EXPECT_FALSE(f.repairable);
  }
  EXPECT_NE(r.findings[0].detail + r.findings[1].detail, "");
  const std::string all = Describe(r);
  EXPECT_NE(all.find("nextSlice"), std::string::npos) << all;
  EXPECT_NE(all.find("past its slice"), std::string::npos) << all;
  // Not repairable: still there after --repair.
  EXPECT_EQ(Repair().repaired(), 0u);
  EXPECT_EQ(Check().findings.size(), 2u);
}

TEST_P(MetaFsckTest, MissingObjectsNameEveryFileUsingThem) {
  BuildTree();
  missing_.insert(FirstSlice(f_).value());  // shared by f (two links) and copy
  FsckFinding f = Only(Check(), FsckKind::kMissingObject);
  std::sort(f.paths.begin(), f.paths.end());
  EXPECT_EQ(f.paths, (std::vector<std::string>{"/copy", "/d/f", "/d/sub/hard"}));
  EXPECT_NE(f.detail.find("block-" + std::to_string(FirstSlice(f_).value())), std::string::npos);
  EXPECT_FALSE(f.repairable);
  FsckReport r = Repair();
  EXPECT_EQ(r.problems(), 1u);
  EXPECT_EQ(r.repaired(), 0u);
}

TEST_P(MetaFsckTest, PathLimitsTheScope) {
  BuildTree();
  InodeId other = MakeDir(kRootInode, "other");
  InodeId x = MakeData(other, "x", 10);
  SetNlink(x, 3);
  SetNlink(f_, 9);
  missing_.insert(FirstSlice(x).value());
  FsckOptions o;
  o.path = "/d";
  FsckReport r = Check(o);
  FsckFinding f = Only(r, FsckKind::kLinkCount);
  EXPECT_EQ(f.inode, f_);
  EXPECT_EQ(looked_up_.count(FirstSlice(x).value()), 0u);  // outside /d: not looked up
  EXPECT_FALSE(r.notes.empty());
  o.path = "/other";
  r = Check(o);
  EXPECT_EQ(r.findings.size(), 2u) << Describe(r);
  o.path = "/nope";
  EXPECT_EQ(CheckVolume(meta_->kv(), o, nullptr).status().code(), StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaFsckTest,
                         ::testing::Values("mem://", "sqlite", "postgres", "redis", "etcd"));

}  // namespace
}  // namespace tessera
