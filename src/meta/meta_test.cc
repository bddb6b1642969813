#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "common/units.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/meta_fsck.h"
#include "meta/meta_test_util.h"

namespace tessera {
namespace {

using MetaTest = MetaFixture;

TEST_P(MetaTest, FormatTwiceKeepsLayoutAndRefusesChanges) {
  VolumeSettings same = meta_->settings();
  same.trash_days = 5;
  bool created = true;
  EXPECT_TRUE(Meta::Format(meta_->kv(), same, &created).ok());
  EXPECT_FALSE(created);
  auto loaded = Meta::LoadSettings(meta_->kv());
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->trash_days, 5u);
  EXPECT_EQ(loaded->uuid, meta_->settings().uuid);
  VolumeSettings other = same;
  other.block_size = 1 << 20;
  Status st = Meta::Format(meta_->kv(), other, &created);
  EXPECT_EQ(st.code(), StatusCode::kExists);
  EXPECT_NE(st.message().find("block size"), std::string::npos);
}

TEST_P(MetaTest, S3ConnectionSettingsAreKeptAndReplacedByReformat) {
  VolumeSettings s = meta_->settings();
  EXPECT_EQ(s.ToJson().find("secret_key"), std::string::npos);  // none for other storage
  s.storage = "s3";
  s.bucket = "http://127.0.0.1:9000/bkt";
  s.access_key = "AKIA1";
  s.secret_key = "secret/1";
  s.session_token = "token";
  s.region = "eu-west-1";
  s.skip_tls_verify = true;
  auto back = VolumeSettings::FromJson(s.ToJson());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->access_key, "AKIA1");
  EXPECT_EQ(back->secret_key, "secret/1");
  EXPECT_EQ(back->session_token, "token");
  EXPECT_EQ(back->region, "eu-west-1");
  EXPECT_TRUE(back->skip_tls_verify);

  auto kv = OpenKv("mem://s3-settings-" + std::to_string(NowNanos()));
  ASSERT_TRUE(kv.ok());
  bool created = false;
  ASSERT_TRUE(Meta::Format(**kv, s, &created).ok());
  VolumeSettings rotated = s;
  rotated.access_key = "AKIA2";
  rotated.secret_key = "secret/2";
  rotated.session_token = "";
  rotated.region = "";
  rotated.skip_tls_verify = false;
  ASSERT_TRUE(Meta::Format(**kv, rotated, &created).ok());
  EXPECT_FALSE(created);
  auto loaded = Meta::LoadSettings(**kv);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->access_key, "AKIA2");
  EXPECT_EQ(loaded->secret_key, "secret/2");
  EXPECT_EQ(loaded->session_token, "");
  EXPECT_EQ(loaded->region, "");
  EXPECT_FALSE(loaded->skip_tls_verify);
  EXPECT_EQ(loaded->uuid, s.uuid);
  VolumeSettings other_bucket = rotated;
  other_bucket.bucket = "http://127.0.0.1:9000/other";
  EXPECT_EQ(Meta::Format(**kv, other_bucket, &created).code(), StatusCode::kExists);
}

TEST_P(MetaTest, CompressionAndEncryptionAreLayoutSettings) {
  VolumeSettings s = meta_->settings();
  EXPECT_EQ(s.compression, "none");
  bool created = true;
  auto refused = [&](const VolumeSettings& other, const std::string& words) {
    Status st = Meta::Format(meta_->kv(), other, &created);
    EXPECT_EQ(st.code(), StatusCode::kExists) << words;
    EXPECT_NE(st.message().find(words), std::string::npos) << st.message();
  };
  VolumeSettings zstd = s;
  zstd.compression = "zstd";
  refused(zstd, "its compression is 'none', not 'zstd'");
  VolumeSettings encrypted = s;
  encrypted.encrypt_rsa_key = "PEM";
  encrypted.encrypt_data_key = "d3JhcHBlZA==";
  refused(encrypted, "it is not encrypted");

  // An encrypted volume keeps its data key when formatted again with the
  // same key file, and refuses another key or none.
  auto kv = OpenKv("mem://encrypted-layout-" + std::to_string(NowNanos()));
  ASSERT_TRUE(kv.ok()) << kv.status().ToString();
  ASSERT_TRUE(Meta::Format(**kv, encrypted, &created).ok());
  VolumeSettings again = encrypted;
  again.encrypt_data_key = "bmV3IGtleQ==";
  again.trash_days = 9;
  ASSERT_TRUE(Meta::Format(**kv, again, &created).ok());
  auto loaded = Meta::LoadSettings(**kv);
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->encrypt_rsa_key, "PEM");
  EXPECT_EQ(loaded->encrypt_data_key, "d3JhcHBlZA==");
  EXPECT_EQ(loaded->trash_days, 9u);
  EXPECT_EQ(VolumeSettings::FromJson(loaded->ToJson())->encrypt_data_key, "d3JhcHBlZA==");
  VolumeSettings other_key = encrypted;
  other_key.encrypt_rsa_key = "OTHER PEM";
  EXPECT_NE(Meta::Format(**kv, other_key, &created).message().find("another RSA key"),
            std::string::npos);
  EXPECT_NE(Meta::Format(**kv, s, &created).message().find("it is encrypted"), std::string::npos);
}

TEST_P(MetaTest, CreateLookupAndAttributes) {
  InodeId f = MakeFile(kRootInode, "a.txt");
  auto e = meta_->Lookup(ctx_, kRootInode, "a.txt");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->inode, f);
  EXPECT_TRUE(e->attr.IsFile());
  EXPECT_EQ(e->attr.mode & 07777, 0644u);
  EXPECT_EQ(e->attr.uid, 1000u);
  EXPECT_EQ(e->attr.nlink, 1u);
  EXPECT_EQ(meta_->Lookup(ctx_, kRootInode, "nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(meta_->Mknod(ctx_, kRootInode, "a.txt", S_IFREG | 0644, 0).status().code(),
            StatusCode::kExists);
  EXPECT_EQ(meta_->Mknod(ctx_, f, "x", S_IFREG | 0644, 0).status().code(), StatusCode::kNotDir);
  EXPECT_EQ(meta_->Mknod(ctx_, kRootInode, std::string(256, 'n'), S_IFREG, 0).status().code(),
            StatusCode::kNameTooLong);
  EXPECT_TRUE(meta_->Mknod(ctx_, kRootInode, std::string(255, 'n'), S_IFREG, 0).ok());

  SetAttrRequest req;
  req.mode = 0600;
  req.mtime_ns = 123456789;
  auto a = meta_->SetAttr(ctx_, f, req);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->mode, static_cast<uint32_t>(S_IFREG | 0600));
  EXPECT_EQ(meta_->GetAttr(f)->mtime_ns, 123456789);
}

TEST_P(MetaTest, DirectoriesCountLinksAndMustBeEmptyToRemove) {
  InodeId d = MakeDir(kRootInode, "d");
  EXPECT_EQ(meta_->GetAttr(kRootInode)->nlink, 3u);
  MakeFile(d, "f");
  EXPECT_EQ(meta_->Rmdir(ctx_, kRootInode, "d").code(), StatusCode::kNotEmpty);
  EXPECT_EQ(meta_->Unlink(ctx_, kRootInode, "d").code(), StatusCode::kIsDir);
  EXPECT_EQ(meta_->Rmdir(ctx_, d, "f").code(), StatusCode::kNotDir);
  ASSERT_TRUE(meta_->Unlink(ctx_, d, "f").ok());
  ASSERT_TRUE(meta_->Rmdir(ctx_, kRootInode, "d").ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_EQ(meta_->GetAttr(kRootInode)->nlink, 2u);
  EXPECT_EQ(meta_->GetAttr(d).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(meta_->StatFs()->used_inodes, 0u);
}

TEST_P(MetaTest, ReadDirPagesResumeFromAnyCookie) {
  std::vector<std::string> want;
  for (int i = 0; i < 20; ++i) {
    std::string name = "f" + std::to_string(100 + i);
    MakeFile(kRootInode, name);
    want.push_back(name);
  }
  EXPECT_EQ(List(kRootInode), want);
  auto all = meta_->ReadDir(kRootInode, 0, 0, false);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->items.size(), 20u);
  EXPECT_FALSE(all->more);
  for (size_t i = 1; i < all->items.size(); ++i) {
    EXPECT_LT(all->items[i - 1].cookie, all->items[i].cookie);
    EXPECT_GE(all->items[i].cookie, 3u);
  }
  // Resuming after entry 9 gives entry 10 on, whatever happened before.
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, all->items[3].name).ok());
  auto page = meta_->ReadDir(kRootInode, all->items[9].cookie, 2, true);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[0].name, all->items[10].name);
  EXPECT_TRUE(page->items[0].attr.IsFile());
  EXPECT_TRUE(page->more);
}

TEST_P(MetaTest, RenameMovesReplacesAndRefusesLoops) {
  InodeId a = MakeDir(kRootInode, "a");
  InodeId b = MakeDir(a, "b");
  InodeId f = MakeFile(kRootInode, "f");
  InodeId g = MakeFile(kRootInode, "g");
  EXPECT_EQ(meta_->Rename(ctx_, kRootInode, "a", b, "a2", 0).code(), StatusCode::kInvalid);
  EXPECT_EQ(meta_->Rename(ctx_, kRootInode, "f", kRootInode, "g", RENAME_NOREPLACE).code(),
            StatusCode::kExists);
  // Over an existing file: the target's data is released.
  auto length = meta_->WriteSlice(g, 0, {0, SliceId(77), 10, 0, 10}, 1);
  ASSERT_TRUE(length.ok());
  ASSERT_TRUE(meta_->Rename(ctx_, kRootInode, "f", kRootInode, "g", 0).ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_EQ(meta_->Lookup(ctx_, kRootInode, "g")->inode, f);
  EXPECT_EQ(meta_->GetAttr(g).status().code(), StatusCode::kNotFound);
  ASSERT_EQ(freed_.size(), 1u);
  EXPECT_EQ(freed_[0].id, SliceId(77));
  // A directory into another one: parents' link counts follow.
  ASSERT_TRUE(meta_->Rename(ctx_, a, "b", kRootInode, "b", 0).ok());
  EXPECT_EQ(meta_->GetAttr(b)->parent, kRootInode);
  EXPECT_EQ(meta_->GetAttr(a)->nlink, 2u);
  EXPECT_EQ(meta_->GetAttr(kRootInode)->nlink, 4u);
  // Over an empty directory, not over a non-empty one.
  MakeFile(b, "x");
  EXPECT_EQ(meta_->Rename(ctx_, kRootInode, "a", kRootInode, "b", 0).code(), StatusCode::kNotEmpty);
  ASSERT_TRUE(meta_->Rename(ctx_, kRootInode, "b", kRootInode, "a", 0).ok());
  EXPECT_EQ(meta_->GetAttr(kRootInode)->nlink, 3u);
  EXPECT_EQ(List(kRootInode), (std::vector<std::string>{"a", "g"}));
}

TEST_P(MetaTest, SlicesExtendLengthAndCountSpace) {
  InodeId f = MakeFile(kRootInode, "f");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, SliceId(1), 5000, 0, 5000}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(f, 1, {10, SliceId(2), 100, 0, 100}, 2).ok());
  auto a = meta_->GetAttr(f);
  EXPECT_EQ(a->length, kChunkSize + 110);
  EXPECT_EQ(a->mtime_ns, 2);
  EXPECT_EQ(meta_->StatFs()->used_space, SpaceOf(kChunkSize + 110));
  auto chunk = meta_->ReadChunk(f, 1);
  ASSERT_TRUE(chunk.ok());
  ASSERT_EQ(chunk->size(), 1u);
  EXPECT_EQ((*chunk)[0], (SliceRecord{10, SliceId(2), 100, 0, 100}));
}

TEST_P(MetaTest, TruncateFreesWholeChunksAndHidesTheTail) {
  InodeId f = MakeFile(kRootInode, "f");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, SliceId(1), 5000, 0, 5000}, 1).ok());
  ASSERT_TRUE(meta_->WriteSlice(f, 1, {0, SliceId(2), 100, 0, 100}, 1).ok());
  SetAttrRequest req;
  req.size = 1000;
  ASSERT_TRUE(meta_->SetAttr(ctx_, f, req).ok());
  EXPECT_EQ(meta_->GetAttr(f)->length, 1000u);
  ASSERT_EQ(freed_.size(), 1u);
  EXPECT_EQ(freed_[0].id, SliceId(2));
  auto chunk = meta_->ReadChunk(f, 0);
  ASSERT_EQ(chunk->size(), 2u);
  EXPECT_EQ((*chunk)[1].id, SliceId(0));
  EXPECT_EQ((*chunk)[1].pos, 1000u);
  EXPECT_TRUE(meta_->ReadChunk(f, 1)->empty());
  EXPECT_EQ(meta_->StatFs()->used_space, 4096u);
}

TEST_P(MetaTest, UnlinkedOpenFileLivesUntilLastClose) {
  InodeId f = MakeFile(kRootInode, "f");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, SliceId(5), 10, 0, 10}, 1).ok());
  meta_->OnOpen(f);
  meta_->OnOpen(f);
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "f").ok());
  EXPECT_EQ(meta_->Lookup(ctx_, kRootInode, "f").status().code(), StatusCode::kNotFound);
  auto a = meta_->GetAttr(f);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->nlink, 0u);
  EXPECT_TRUE(freed_.empty());
  // Out of the usage counters with its last name, as the kernel may send
  // the release of a closed file after the unlink that follows the close.
  EXPECT_EQ(meta_->StatFs()->used_space, 0u);
  EXPECT_EQ(meta_->StatFs()->used_inodes, 0u);
  // Writes through the handles still open do not count either.
  ASSERT_TRUE(meta_->WriteSlice(f, 1, {0, SliceId(6), 100, 0, 100}, 1).ok());
  EXPECT_EQ(meta_->GetAttr(f)->length, kChunkSize + 100);
  EXPECT_EQ(meta_->StatFs()->used_space, 0u);
  ASSERT_TRUE(meta_->OnClose(f).ok());
  EXPECT_TRUE(meta_->GetAttr(f).ok());
  ASSERT_TRUE(meta_->OnClose(f).ok());
  EXPECT_EQ(meta_->GetAttr(f).status().code(), StatusCode::kNotFound);
  ASSERT_EQ(freed_.size(), 2u);
  EXPECT_EQ(meta_->StatFs()->used_space, 0u);
  EXPECT_EQ(meta_->StatFs()->used_inodes, 0u);
}

TEST_P(MetaTest, SessionsAreListedAndRemoved) {
  ASSERT_TRUE(meta_->StartSession({"host1", 42, "/mnt/x", "0.1.0"}).ok());
  ASSERT_TRUE(meta_->Heartbeat().ok());
  auto list = Meta::ListSessions(meta_->kv());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].info.mount_point, "/mnt/x");
  EXPECT_EQ((*list)[0].info.pid, 42u);
  EXPECT_EQ((*list)[0].info.pending_uploads, 0u);
  // A mount with --writeback reports what it still has to upload.
  SessionInfo info{"host1", 42, "/mnt/x", "0.1.0"};
  info.staging_dir = "/var/cache/x-staging";
  info.pending_uploads = 7;
  info.pending_upload_bytes = 7u << 20;
  const int64_t before = (*list)[0].heartbeat_ns;
  ASSERT_TRUE(meta_->UpdateSession(info).ok());
  list = Meta::ListSessions(meta_->kv());
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].info.pending_uploads, 7u);
  EXPECT_EQ((*list)[0].info.pending_upload_bytes, 7u << 20);
  EXPECT_EQ((*list)[0].info.staging_dir, "/var/cache/x-staging");
  EXPECT_EQ((*list)[0].info.mount_point, "/mnt/x");
  EXPECT_GE((*list)[0].heartbeat_ns, before);
  ASSERT_TRUE(meta_->Heartbeat().ok());  // keeps the counts
  EXPECT_EQ((*Meta::ListSessions(meta_->kv()))[0].info.pending_uploads, 7u);
  ASSERT_TRUE(meta_->EndSession().ok());
  EXPECT_TRUE(Meta::ListSessions(meta_->kv())->empty());
}

TEST_P(MetaTest, IdsAreNeverReused) {
  std::set<uint64_t> seen;
  for (int i = 0; i < 3000; ++i) {
    auto id = meta_->NewSlice();
    ASSERT_TRUE(id.ok());
    EXPECT_TRUE(seen.insert(id->value()).second);
  }
}

// ---- extended attributes ----

// How many A<ino>X keys the store holds for an inode.
size_t XattrKeys(KvStore& kv, InodeId ino) {
  auto txn = kv.Begin();
  EXPECT_TRUE(txn.ok());
  if (!txn.ok()) return 0;
  auto page = (*txn)->Scan(keys::XattrsBegin(ino), keys::XattrsEnd(ino), 0);
  EXPECT_TRUE(page.ok());
  return page.ok() ? page->items.size() : 0;
}

TEST_P(MetaTest, XattrSetGetListRemove) {
  InodeId f = MakeFile(kRootInode, "f");
  const std::string binary("a\0b\0\xff\x00z", 7);
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.b", binary, 0).ok());
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.a", "one", 0).ok());
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.empty", "", 0).ok());
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "trusted.t", "t", 0).ok());
  EXPECT_EQ(*meta_->GetXattr(f, "user.a"), "one");
  EXPECT_EQ(*meta_->GetXattr(f, "user.b"), binary);
  auto empty = meta_->GetXattr(f, "user.empty");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_EQ(*empty, "");
  EXPECT_EQ(*meta_->ListXattr(f),
            (std::vector<std::string>{"trusted.t", "user.a", "user.b", "user.empty"}));
  // Overwrite without flags.
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.a", "two", 0).ok());
  EXPECT_EQ(*meta_->GetXattr(f, "user.a"), "two");
  ASSERT_TRUE(meta_->RemoveXattr(ctx_, f, "user.a").ok());
  EXPECT_EQ(meta_->GetXattr(f, "user.a").status().code(), StatusCode::kNoData);
  EXPECT_EQ(meta_->RemoveXattr(ctx_, f, "user.a").code(), StatusCode::kNoData);
  EXPECT_EQ(meta_->GetXattr(f, "user.never").status().code(), StatusCode::kNoData);
  EXPECT_EQ(*meta_->ListXattr(f),
            (std::vector<std::string>{"trusted.t", "user.b", "user.empty"}));
  // Directories have them too; other inodes' are separate.
  InodeId d = MakeDir(kRootInode, "d");
  EXPECT_TRUE(meta_->ListXattr(d)->empty());
  ASSERT_TRUE(meta_->SetXattr(ctx_, d, "user.a", "dir", 0).ok());
  EXPECT_EQ(*meta_->GetXattr(d, "user.a"), "dir");
  EXPECT_EQ(meta_->GetXattr(f, "user.a").status().code(), StatusCode::kNoData);
  // A missing inode is ENOENT, not ENODATA.
  InodeId gone(999999);
  EXPECT_EQ(meta_->GetXattr(gone, "user.a").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(meta_->ListXattr(gone).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(meta_->SetXattr(ctx_, gone, "user.a", "x", 0).code(), StatusCode::kNotFound);
  EXPECT_EQ(meta_->RemoveXattr(ctx_, gone, "user.a").code(), StatusCode::kNotFound);
}

TEST_P(MetaTest, XattrCreateAndReplaceFlags) {
  InodeId f = MakeFile(kRootInode, "f");
  EXPECT_EQ(meta_->SetXattr(ctx_, f, "user.x", "1", XATTR_REPLACE).code(), StatusCode::kNoData);
  EXPECT_EQ(meta_->GetXattr(f, "user.x").status().code(), StatusCode::kNoData);
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.x", "1", XATTR_CREATE).ok());
  EXPECT_EQ(meta_->SetXattr(ctx_, f, "user.x", "2", XATTR_CREATE).code(), StatusCode::kExists);
  EXPECT_EQ(*meta_->GetXattr(f, "user.x"), "1");
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.x", "3", XATTR_REPLACE).ok());
  EXPECT_EQ(*meta_->GetXattr(f, "user.x"), "3");
  EXPECT_EQ(meta_->SetXattr(ctx_, f, "user.x", "4", 0x100).code(), StatusCode::kInvalid);
}

TEST_P(MetaTest, XattrLimitsAndSystemNamespace) {
  InodeId f = MakeFile(kRootInode, "f");
  const std::string long_name = "user." + std::string(251, 'n');  // 256 bytes
  EXPECT_EQ(meta_->SetXattr(ctx_, f, "", "v", 0).code(), StatusCode::kRange);
  EXPECT_EQ(meta_->SetXattr(ctx_, f, long_name, "v", 0).code(), StatusCode::kRange);
  EXPECT_EQ(meta_->GetXattr(f, long_name).status().code(), StatusCode::kRange);
  EXPECT_EQ(meta_->GetXattr(f, "").status().code(), StatusCode::kRange);
  EXPECT_EQ(meta_->RemoveXattr(ctx_, f, long_name).code(), StatusCode::kRange);
  const std::string max_name = long_name.substr(1);  // 255 bytes
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, max_name, "v", 0).ok());
  EXPECT_EQ(*meta_->GetXattr(f, max_name), "v");

  std::string big(65536, 'v');
  big[100] = '\0';
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.big", big, 0).ok());
  EXPECT_EQ(*meta_->GetXattr(f, "user.big"), big);
  EXPECT_EQ(meta_->SetXattr(ctx_, f, "user.big", big + "x", 0).code(),
            StatusCode::kValueTooLarge);
  EXPECT_EQ(*meta_->GetXattr(f, "user.big"), big);

  EXPECT_EQ(meta_->SetXattr(ctx_, f, "system.posix_acl_access", "x", 0).code(),
            StatusCode::kNotSupported);
  EXPECT_EQ(meta_->GetXattr(f, "system.posix_acl_access").status().code(), StatusCode::kNoData);
  EXPECT_EQ(*meta_->ListXattr(f), (std::vector<std::string>{max_name, "user.big"}));
}

TEST_P(MetaTest, XattrChangesMoveCtimeOnly) {
  InodeId f = MakeFile(kRootInode, "f");
  SetAttrRequest req;
  req.mtime_ns = 1000;
  req.atime_ns = 2000;
  ASSERT_TRUE(meta_->SetAttr(ctx_, f, req).ok());
  const int64_t before = meta_->GetAttr(f)->ctime_ns;
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.a", "1", 0).ok());
  auto a = meta_->GetAttr(f);
  EXPECT_GT(a->ctime_ns, before);
  EXPECT_EQ(a->mtime_ns, 1000);
  EXPECT_EQ(a->atime_ns, 2000);
  // Reads and failed changes leave it alone.
  const int64_t after_set = a->ctime_ns;
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(meta_->GetXattr(f, "user.a").ok());
  ASSERT_TRUE(meta_->ListXattr(f).ok());
  EXPECT_EQ(meta_->SetXattr(ctx_, f, "user.a", "2", XATTR_CREATE).code(), StatusCode::kExists);
  EXPECT_EQ(meta_->RemoveXattr(ctx_, f, "user.none").code(), StatusCode::kNoData);
  EXPECT_EQ(meta_->GetAttr(f)->ctime_ns, after_set);
  ASSERT_TRUE(meta_->RemoveXattr(ctx_, f, "user.a").ok());
  EXPECT_GT(meta_->GetAttr(f)->ctime_ns, after_set);
  EXPECT_EQ(meta_->GetAttr(f)->mtime_ns, 1000);
}

TEST_P(MetaTest, UnlinkedFilesGoInTheBackgroundAndAfterACrash) {
  const SliceId first = *meta_->NewSlice(), second = *meta_->NewSlice();
  InodeId f = MakeFile(kRootInode, "f");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, first, 10, 0, 10}, 1).ok());
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "f").ok());
  EXPECT_EQ(meta_->Lookup(ctx_, kRootInode, "f").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(meta_->StatFs()->used_inodes, 0u);  // freed by the unlink itself
  EXPECT_EQ(meta_->StatFs()->used_space, 0u);
  meta_->DrainReclaims(10'000);
  EXPECT_TRUE(Keys(keys::InodeBegin(f), keys::InodeEnd(f)).empty());
  EXPECT_TRUE(Keys(keys::ReclaimBegin(), keys::ReclaimEnd()).empty());
  ASSERT_EQ(freed_.size(), 1u);
  EXPECT_EQ(freed_[0].id, first);
  EXPECT_EQ(meta_->StatFs()->used_inodes, 0u);
  EXPECT_EQ(meta_->StatFs()->used_space, 0u);

  // A client that committed an unlink and died before deleting the file:
  // the volume is consistent meanwhile, and any client finishes the job.
  InodeId g = MakeFile(kRootInode, "g");
  ASSERT_TRUE(meta_->WriteSlice(g, 0, {0, second, 10, 0, 10}, 1).ok());
  ASSERT_TRUE(WithTransaction(meta_->kv(), [&](KvTxn& txn) -> Status {
                ASSIGN_OR_RETURN(auto raw, txn.Get(keys::Attr(g)));
                if (!raw) return NotFound("g");
                ASSIGN_OR_RETURN(Attr a, DecodeAttr(*raw));
                a.nlink = 0;
                txn.Put(keys::Attr(g), EncodeAttr(a));
                txn.Delete(keys::Entry(kRootInode, "g"));
                txn.Put(keys::Reclaim(g), "");
                txn.Increment(keys::Counter(keys::kUsedInodes), -1);
                txn.Increment(keys::Counter(keys::kUsedSpace), -static_cast<int64_t>(SpaceOf(a.length)));
                return Status::Ok();
              }).ok());
  auto report = CheckVolume(meta_->kv(), FsckOptions{}, nullptr);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->problems(), 0u) << (report->findings.empty() ? "" : report->findings[0].detail);
  EXPECT_EQ(meta_->StatFs()->used_inodes, 0u);  // free for others at once
  freed_.clear();
  EXPECT_EQ(*meta_->ReclaimUnlinked(100), 1u);
  EXPECT_TRUE(Keys(keys::InodeBegin(g), keys::InodeEnd(g)).empty());
  EXPECT_TRUE(Keys(keys::ReclaimBegin(), keys::ReclaimEnd()).empty());
  ASSERT_EQ(freed_.size(), 1u);
  EXPECT_EQ(freed_[0].id, second);
  EXPECT_EQ(meta_->StatFs()->used_inodes, 0u);
  EXPECT_EQ(*meta_->ReclaimUnlinked(100), 0u);
  report = CheckVolume(meta_->kv(), FsckOptions{}, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->problems(), 0u);
}

TEST_P(MetaTest, FreedSlicesAreRecordedUntilTheirBlocksAreGone) {
  const SliceId kept = *meta_->NewSlice(), lost = *meta_->NewSlice();
  InodeId f = MakeFile(kRootInode, "f");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, kept, 10, 0, 10}, 1).ok());
  InodeId g = MakeFile(kRootInode, "g");
  ASSERT_TRUE(meta_->WriteSlice(g, 0, {0, lost, 20, 0, 20}, 1).ok());
  // A clone of f's data: f's slice stays referenced by g2.
  InodeId g2 = MakeFile(kRootInode, "g2");
  ASSERT_EQ(*meta_->CopyFileRange(f, 0, g2, 0, 10), 10u);
  EXPECT_TRUE(meta_->FreedSlices(10)->empty());
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "f").ok());
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "g").ok());
  meta_->DrainReclaims(10'000);
  // The record is committed with the release; the deleter is told after.
  auto freed = meta_->FreedSlices(10);
  ASSERT_TRUE(freed.ok());
  ASSERT_EQ(freed->size(), 1u);
  EXPECT_EQ((*freed)[0], (SliceRef{lost, 20}));
  ASSERT_EQ(freed_.size(), 1u);
  EXPECT_EQ(freed_[0], (SliceRef{lost, 20}));
  EXPECT_EQ(*meta_->CountFreedSlices(), 1u);
  // Pages continue after a slice id.
  EXPECT_TRUE(meta_->FreedSlices(10, lost)->empty());
  ASSERT_TRUE(meta_->DropFreedSlices(*freed).ok());
  EXPECT_EQ(*meta_->CountFreedSlices(), 0u);
  // The last reference goes: now the shared slice is freed.
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "g2").ok());
  meta_->DrainReclaims(10'000);
  freed = meta_->FreedSlices(10);
  ASSERT_EQ(freed->size(), 1u);
  EXPECT_EQ((*freed)[0], (SliceRef{kept, 10}));
  auto report = CheckVolume(meta_->kv(), FsckOptions{}, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->problems(), 0u);
}

TEST_P(MetaTest, XattrsGoWithTheInode) {
  // More attributes than one scan page, on a file removed by unlink.
  InodeId f = MakeFile(kRootInode, "f");
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE(meta_->SetXattr(ctx_, f, "user.k" + std::to_string(i), "v", 0).ok());
  }
  EXPECT_EQ(meta_->ListXattr(f)->size(), 300u);
  EXPECT_EQ(XattrKeys(meta_->kv(), f), 300u);
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "f").ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_EQ(XattrKeys(meta_->kv(), f), 0u);

  // A hard link keeps them; the last link takes them.
  InodeId g = MakeFile(kRootInode, "g");
  ASSERT_TRUE(meta_->SetXattr(ctx_, g, "user.a", "1", 0).ok());
  ASSERT_TRUE(meta_->Link(ctx_, g, kRootInode, "g2").ok());
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "g").ok());
  EXPECT_EQ(*meta_->GetXattr(g, "user.a"), "1");
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "g2").ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_EQ(XattrKeys(meta_->kv(), g), 0u);

  // Unlinked while open: they stay until the last close.
  InodeId h = MakeFile(kRootInode, "h");
  ASSERT_TRUE(meta_->SetXattr(ctx_, h, "user.a", "1", 0).ok());
  meta_->OnOpen(h);
  ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "h").ok());
  EXPECT_EQ(*meta_->GetXattr(h, "user.a"), "1");
  ASSERT_TRUE(meta_->OnClose(h).ok());
  EXPECT_EQ(XattrKeys(meta_->kv(), h), 0u);

  // A file replaced by rename.
  InodeId victim = MakeFile(kRootInode, "victim");
  MakeFile(kRootInode, "src");
  ASSERT_TRUE(meta_->SetXattr(ctx_, victim, "user.a", "1", 0).ok());
  ASSERT_TRUE(meta_->Rename(ctx_, kRootInode, "src", kRootInode, "victim", 0).ok());
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_EQ(XattrKeys(meta_->kv(), victim), 0u);

  // A directory removed by rmdir, and one replaced by rename.
  InodeId d = MakeDir(kRootInode, "d");
  ASSERT_TRUE(meta_->SetXattr(ctx_, d, "user.a", "1", 0).ok());
  ASSERT_TRUE(meta_->SetXattr(ctx_, d, "user.b", "2", 0).ok());
  ASSERT_TRUE(meta_->Rmdir(ctx_, kRootInode, "d").ok());
  EXPECT_EQ(XattrKeys(meta_->kv(), d), 0u);
  InodeId e = MakeDir(kRootInode, "e");
  InodeId e2 = MakeDir(kRootInode, "e2");
  ASSERT_TRUE(meta_->SetXattr(ctx_, e, "user.a", "1", 0).ok());
  ASSERT_TRUE(meta_->SetXattr(ctx_, e2, "user.mine", "2", 0).ok());
  ASSERT_TRUE(meta_->Rename(ctx_, kRootInode, "e2", kRootInode, "e", 0).ok());
  EXPECT_EQ(XattrKeys(meta_->kv(), e), 0u);
  // The moved directory keeps its own.
  meta_->DrainReclaims(10'000);  // unlinked files go in the background
  EXPECT_EQ(*meta_->GetXattr(e2, "user.mine"), "2");
  EXPECT_EQ(meta_->StatFs()->used_inodes, 2u);  // src (now "victim") and e2 (now "e")
}

// Commits that apply but whose answer is lost, as across a server restart.
class LosingStore : public KvStore {
 public:
  explicit LosingStore(std::unique_ptr<KvStore> inner) : inner_(std::move(inner)) {
    set_unavailable_retry_ms(5'000);
  }
  std::string Url() const override { return inner_->Url(); }
  Result<std::unique_ptr<KvTxn>> Begin() override { return inner_->Begin(); }
  Result<std::unique_ptr<KvTxn>> BeginExclusive() override {
    ASSIGN_OR_RETURN(auto txn, inner_->BeginExclusive());
    return std::unique_ptr<KvTxn>(new Txn(std::move(txn), this));
  }
  std::atomic<int> lose{0};  // next commits to report lost after applying

 private:
  class Txn : public KvTxn {
   public:
    Txn(std::unique_ptr<KvTxn> inner, LosingStore* store) : inner_(std::move(inner)), store_(store) {}
    Result<std::optional<std::string>> Get(std::string_view key) override { return inner_->Get(key); }
    Result<std::vector<std::optional<std::string>>> BatchGet(const std::vector<std::string>& keys) override {
      return inner_->BatchGet(keys);
    }
    Result<ScanResult> Scan(std::string_view begin, std::string_view end, size_t limit) override {
      return inner_->Scan(begin, end, limit);
    }
    void Put(std::string_view key, std::string_view value) override { inner_->Put(key, value); }
    void Delete(std::string_view key) override { inner_->Delete(key); }
    void Increment(std::string_view key, int64_t delta) override { inner_->Increment(key, delta); }
    Status Commit() override {
      RETURN_IF_ERROR(inner_->Commit());
      if (store_->lose.load() > 0 && store_->lose.fetch_sub(1) > 0) {
        return Unavailable("connection lost before the answer");
      }
      return Status::Ok();
    }
    Status Verify() override { return inner_->Verify(); }

   private:
    std::unique_ptr<KvTxn> inner_;
    LosingStore* store_;
  };
  std::unique_ptr<KvStore> inner_;
};

TEST(MetaLostAnswerTest, ACreateWhoseAnswerWasLostSucceeds) {
  auto kv = OpenKv("mem://lost-answer", KvOptions{.create_if_missing = true});
  ASSERT_TRUE(kv.ok());
  VolumeSettings s;
  s.name = "vol";
  s.uuid = NewUuid();
  bool created = false;
  ASSERT_TRUE(Meta::Format(**kv, s, &created).ok());
  auto losing = std::make_unique<LosingStore>(std::move(*kv));
  LosingStore* store = losing.get();
  auto meta = Meta::Open(std::move(losing));
  ASSERT_TRUE(meta.ok());
  Context ctx{1000, 1000, 1};
  // The first create also takes a batch of inode numbers; the second one's
  // own commit is the one whose answer goes.
  ASSERT_TRUE((*meta)->Mknod(ctx, kRootInode, "first", S_IFREG | 0644, 0).ok());
  store->lose = 1;
  auto made = (*meta)->Mknod(ctx, kRootInode, "f", S_IFREG | 0644, 0);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(store->lose.load(), 0);
  EXPECT_EQ((*meta)->Lookup(ctx, kRootInode, "f")->inode, made->inode);
  EXPECT_EQ((*meta)->StatFs()->used_inodes, 2u);
  // Someone else's file of that name is still EEXIST.
  EXPECT_EQ((*meta)->Mknod(ctx, kRootInode, "f", S_IFREG | 0644, 0).status().code(),
            StatusCode::kExists);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaTest, ::testing::Values("mem://", "sqlite", "postgres", "redis", "etcd"));

class MetaQuotaTest : public MetaTest {
 protected:
  void SetUp() override {
    capacity_ = 8192;
    MetaTest::SetUp();
  }
};

TEST_P(MetaQuotaTest, CapacityIsEnforcedWithoutPartialChanges) {
  InodeId f = MakeFile(kRootInode, "f");
  ASSERT_TRUE(meta_->WriteSlice(f, 0, {0, SliceId(1), 8000, 0, 8000}, 1).ok());
  auto over = meta_->WriteSlice(f, 0, {8000, SliceId(2), 5000, 0, 5000}, 1);
  EXPECT_EQ(over.status().code(), StatusCode::kNoSpace);
  EXPECT_EQ(meta_->GetAttr(f)->length, 8000u);
  EXPECT_EQ(meta_->ReadChunk(f, 0)->size(), 1u);
  EXPECT_EQ(meta_->StatFs()->total_space, 8192u);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaQuotaTest, ::testing::Values("mem://", "sqlite", "postgres", "redis", "etcd"));

}  // namespace
}  // namespace tessera
