// Dump and load (meta_dump.h) on every engine: a volume with every kind of
// record, built through Meta, is dumped, loaded into engines of other
// types and dumped again; the dumps are byte-identical, the loaded keys are
// exactly the volume's (session state left out), and the loaded volume
// checks clean and reads the same. Records the dump does not understand
// come back as they were; bad input and non-empty targets are refused with
// one clear line.
#include "meta/meta_dump.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/coding.h"
#include "common/units.h"
#include "kv/etcd_test_server.h"
#include "kv/pg_test_server.h"
#include "kv/redis_test_server.h"
#include "meta/keys.h"
#include "meta/meta.h"
#include "meta/meta_fsck.h"

namespace tessera {
namespace {

using KeyMap = std::map<std::string, std::string>;

std::string Big64(uint64_t v) {
  std::string s;
  PutBig64(&s, v);
  return s;
}

std::string Hex(std::string_view in) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : in) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

KeyMap AllKeys(KvStore& kv) {
  KeyMap out;
  Status st = WithReadTransaction(kv, [&](KvTxn& txn) -> Status {
    out.clear();
    ASSIGN_OR_RETURN(ScanResult page, txn.Scan("", "", 0));
    for (KeyValue& item : page.items) out.emplace(std::move(item.key), std::move(item.value));
    return Status::Ok();
  });
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

// What a load of `source` must hold: every key but the session state, and
// the files sessions hold open after unlink as pending deletions.
KeyMap Expected(const KeyMap& source) {
  KeyMap out;
  for (const auto& [key, value] : source) {
    const bool locks = key.size() == 10 && key[0] == 'A' && (key[9] == 'F' || key[9] == 'P');
    if (locks || key.rfind("SE", 0) == 0 || key.rfind("SL", 0) == 0) continue;
    if (key.rfind("SS", 0) == 0 && key.size() == 18) {
      out[keys::Reclaim(InodeId(GetBig64(key.data() + 10)))] = "";
      continue;
    }
    out[key] = value;
  }
  return out;
}

std::string Dump(KvStore& kv, DumpOptions options = {}, DumpStats* stats = nullptr) {
  std::ostringstream out;
  Status st = DumpVolume(kv, out, options, stats);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out.str();
}

Status Load(KvStore& kv, const std::string& text, LoadOptions options = {},
            LoadStats* stats = nullptr) {
  std::istringstream in(text);
  return LoadVolume(kv, in, options, stats);
}

void Put(KvStore& kv, const std::string& key, const std::string& value) {
  ASSERT_TRUE(WithTransaction(kv, [&](KvTxn& txn) {
                txn.Put(key, value);
                return Status::Ok();
              }).ok());
}

std::string DescribeFindings(const FsckReport& r) {
  std::string out;
  for (const auto& f : r.findings) {
    out += std::string(FsckKindName(f.kind)) + " inode " + std::to_string(f.inode.value()) + ": " +
           f.detail + "\n";
  }
  for (const auto& n : r.notes) out += "note: " + n + "\n";
  return out;
}

class DumpFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char& c : name) c = c == '/' ? '-' : c;
    dir_ = std::filesystem::temp_directory_path() /
           ("tessera-dump-" + std::to_string(getpid()) + "-" + name);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    meta_.reset();
    std::filesystem::remove_all(dir_);
  }

  // A new, empty store of an engine: mem, sqlite, redis, postgres or etcd.
  std::string NewUrl(const std::string& engine) {
    static std::atomic<int> n{0};
    const std::string id = std::to_string(getpid()) + "-" + std::to_string(n++);
    Result<std::string> url = "mem://dump-" + id;
    if (engine == "sqlite") url = "sqlite3://" + (dir_ / ("meta-" + id + ".db")).string();
    if (engine == "redis") url = NewRedisTestUrl();
    if (engine == "postgres") url = NewPgTestDatabase();
    if (engine == "etcd") url = NewEtcdTestUrl();
    EXPECT_TRUE(url.ok()) << url.status().ToString();
    return url.ok() ? *url : "";
  }
  std::unique_ptr<KvStore> Open(const std::string& url) {
    auto kv = OpenKv(url, KvOptions{.create_if_missing = true});
    EXPECT_TRUE(kv.ok()) << kv.status().ToString();
    return kv.ok() ? std::move(*kv) : nullptr;
  }
  // Formats a volume (no trash: a removed file goes at once) and opens it
  // as meta_ with a session.
  void MakeVolume(const std::string& engine) {
    source_url_ = NewUrl(engine);
    auto kv = Open(source_url_);
    ASSERT_TRUE(kv);
    VolumeSettings s;
    s.name = "dump-vol";
    s.uuid = NewUuid();
    s.bucket = "/tmp/unused";
    s.trash_days = 0;
    bool created = false;
    ASSERT_TRUE(Meta::Format(*kv, s, &created).ok());
    auto meta = Meta::Open(std::move(kv));
    ASSERT_TRUE(meta.ok()) << meta.status().ToString();
    meta_ = std::move(*meta);
    meta_->SetSliceDeleter([](const std::vector<SliceRef>&) {});
    SessionInfo info;
    info.host = "host";
    info.pid = 1;
    ASSERT_TRUE(meta_->StartSession(info).ok());
  }

  InodeId Make(InodeId parent, const std::string& name, uint32_t mode, uint32_t rdev = 0) {
    auto e = S_ISDIR(mode) ? meta_->Mkdir(ctx_, parent, name, mode & 07777)
                           : meta_->Mknod(ctx_, parent, name, mode, rdev);
    EXPECT_TRUE(e.ok()) << name << ": " << e.status().ToString();
    return e.ok() ? e->inode : InodeId();
  }
  SliceRecord NewSlice(uint32_t pos, uint32_t size, uint32_t off, uint32_t len) {
    auto id = meta_->NewSlice();
    EXPECT_TRUE(id.ok());
    return SliceRecord{pos, id.ok() ? *id : SliceId(), size, off, len};
  }

  // Every kind of record: directories, files with data in several chunks
  // (a hole, overlapping slices, a compacted chunk with delayed slices, a
  // clone sharing a slice), hard links, symlinks, device nodes, FIFOs,
  // extended attributes, names that are not UTF-8, a file held open after
  // its last unlink, locks and a session (left out of the dump).
  void BuildTree() {
    d_ = Make(kRootInode, "dir", S_IFDIR | 0755);
    InodeId sub = Make(d_, "sub", S_IFDIR | 0700);
    Make(sub, "empty", S_IFDIR | 0755);
    big_ = Make(d_, "big", S_IFREG | 0644);
    std::vector<ChunkSlice> slices = {{0, NewSlice(0, 1 << 20, 0, 1 << 20)},
                                      {0, NewSlice(4096, 100, 10, 50)},
                                      {1, NewSlice(0, 5000, 0, 5000)},
                                      {3, NewSlice(100, 70, 0, 70)}};
    ASSERT_TRUE(meta_->WriteSlices(big_, slices, 123456789).ok());
    small_ = Make(kRootInode, "small", S_IFREG | 0600);
    ASSERT_TRUE(meta_->WriteSlice(small_, 0, NewSlice(0, 300, 0, 300), 5).ok());
    ASSERT_TRUE(meta_->Link(ctx_, small_, sub, "hard-link").ok());
    copy_ = Make(kRootInode, "copy", S_IFREG | 0644);
    ASSERT_EQ(*meta_->CopyFileRange(small_, 0, copy_, 0, 300), 300u);  // a K record
    // Compaction: chunk 0 of big in one new slice, the old ones delayed.
    auto old = meta_->ReadChunk(big_, 0);
    ASSERT_TRUE(old.ok());
    ASSERT_TRUE(meta_->CompactChunk(big_, 0, 0, *old, {NewSlice(0, 1 << 20, 0, 1 << 20)},
                                    NowNanos() + 3'600'000'000'000)
                    .ok());
    ASSERT_TRUE(meta_->Symlink(ctx_, d_, "link", "big").ok());
    ASSERT_TRUE(meta_->Symlink(ctx_, d_, "odd-link", std::string("\xff\xfe-target", 9)).ok());
    Make(d_, "fifo", S_IFIFO | 0644);
    Make(d_, "socket", S_IFSOCK | 0755);
    Make(d_, "tty", S_IFCHR | 0620, makedev(4, 1));
    Make(d_, "disk", S_IFBLK | 0660, makedev(8, 0));
    Make(d_, "\xc3\x28not-utf8", S_IFREG | 0644);
    Make(d_, "ünïcødé ✓", S_IFREG | 0644);
    Make(d_, "q\"u\\o\nte\t", S_IFREG | 0644);
    ASSERT_TRUE(meta_->SetXattr(ctx_, small_, "user.text", "hello", 0).ok());
    ASSERT_TRUE(meta_->SetXattr(ctx_, small_, "user.bin", std::string("\0\x01\xff", 3), 0).ok());
    ASSERT_TRUE(meta_->SetXattr(ctx_, d_, std::string("user.\xff", 6), "", 0).ok());
    // Held open after its last unlink: an SS record.
    open_ = Make(kRootInode, "open", S_IFREG | 0644);
    ASSERT_TRUE(meta_->WriteSlice(open_, 0, NewSlice(0, 100, 0, 100), 9).ok());
    meta_->OnOpen(open_);
    ASSERT_TRUE(meta_->Unlink(ctx_, kRootInode, "open").ok());
    // Locks: A<ino>F, A<ino>P and SL records.
    ASSERT_TRUE(meta_->Flock(small_, 7, F_WRLCK).ok());
    ASSERT_TRUE(meta_->SetLk(big_, 8, 1234, F_RDLCK, 0, 99).ok());
    // A freed slice whose blocks are not deleted yet.
    Put(meta_->kv(), keys::FreedSlice(SliceId(4242), 4096), "");
    // The origin record of an entry in the trash.
    Put(meta_->kv(), keys::TrashOrigin(copy_), "/was/here");
  }

  Context ctx_{1000, 1000, 1};
  std::filesystem::path dir_;
  std::string source_url_;
  std::unique_ptr<Meta> meta_;
  InodeId d_, big_, small_, open_, copy_;
};

class MetaDumpTest : public DumpFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  // Where the dump of each source engine is loaded, then loaded again.
  std::pair<std::string, std::string> Targets() const {
    const std::string& e = GetParam();
    if (e == "mem") return {"redis", "sqlite"};
    if (e == "sqlite") return {"mem", "redis"};
    if (e == "redis") return {"sqlite", "mem"};
    if (e == "postgres") return {"mem", "sqlite"};
    return {"sqlite", "mem"};
  }
};

TEST_P(MetaDumpTest, RoundTripAcrossEnginesIsLosslessAndIdentical) {
  MakeVolume(GetParam());
  BuildTree();
  const KeyMap source = AllKeys(meta_->kv());
  {
    auto clean = CheckVolume(meta_->kv(), FsckOptions{}, nullptr);
    ASSERT_TRUE(clean.ok()) << clean.status().ToString();
    ASSERT_TRUE(clean->findings.empty()) << DescribeFindings(*clean);
  }
  DumpStats stats;
  const std::string first = Dump(meta_->kv(), {}, &stats);
  EXPECT_EQ(stats.attempts, 1);
  EXPECT_EQ(stats.raw, 0u) << first;
  EXPECT_EQ(stats.keys, Expected(source).size());
  // Pages of any size give the same bytes (inodes across page boundaries,
  // attributes read ahead of their page).
  for (size_t page : {1, 2, 3, 7}) {
    DumpOptions o;
    o.page_size = page;
    EXPECT_EQ(Dump(meta_->kv(), o), first) << "page size " << page;
  }

  const auto [engine1, engine2] = Targets();
  std::string url = NewUrl(engine1);
  auto target = Open(url);
  ASSERT_TRUE(target);
  LoadStats loaded;
  LoadOptions small_batches;
  small_batches.batch_keys = 5;
  Status st = Load(*target, first, small_batches, &loaded);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(loaded.keys, stats.keys);
  EXPECT_EQ(loaded.inodes, stats.inodes);
  EXPECT_GE(loaded.transactions, loaded.keys / 5);
  EXPECT_EQ(AllKeys(*target), Expected(source));
  const std::string second = Dump(*target);
  EXPECT_EQ(second, first);

  auto again = Open(NewUrl(engine2));
  ASSERT_TRUE(again);
  ASSERT_TRUE(Load(*again, second).ok());
  EXPECT_EQ(Dump(*again), first);
  EXPECT_EQ(AllKeys(*again), Expected(source));

  auto report = CheckVolume(*target, FsckOptions{}, nullptr);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->findings.empty()) << DescribeFindings(*report);
  EXPECT_EQ(report->inodes, stats.inodes);

  // The loaded volume reads the same, and deletes the file that was open.
  auto loaded_meta = Meta::Open(std::move(target));
  ASSERT_TRUE(loaded_meta.ok()) << loaded_meta.status().ToString();
  Meta& m = **loaded_meta;
  EXPECT_EQ(m.settings().name, "dump-vol");
  for (uint32_t chunk : {0u, 1u, 2u, 3u}) {
    EXPECT_EQ(*m.ReadChunk(big_, chunk), *meta_->ReadChunk(big_, chunk)) << chunk;
  }
  EXPECT_EQ(*m.GetXattr(small_, "user.bin"), std::string("\0\x01\xff", 3));
  auto link = m.Lookup(ctx_, d_, "odd-link");
  ASSERT_TRUE(link.ok());
  EXPECT_EQ(*m.ReadLink(link->inode), std::string("\xff\xfe-target", 9));
  auto tty = m.Lookup(ctx_, d_, "tty");
  ASSERT_TRUE(tty.ok());
  EXPECT_EQ(tty->attr.rdev, makedev(4, 1));
  EXPECT_EQ(tty->attr, meta_->GetAttr(tty->inode).value());
  EXPECT_TRUE(m.GetAttr(open_).ok());
  auto reclaimed = m.ReclaimUnlinked(100);
  ASSERT_TRUE(reclaimed.ok()) << reclaimed.status().ToString();
  EXPECT_EQ(*reclaimed, 1u);
  EXPECT_EQ(m.GetAttr(open_).status().code(), StatusCode::kNotFound);
}

TEST_P(MetaDumpTest, FormatIsReadableOneInodePerLine) {
  MakeVolume(GetParam());
  BuildTree();
  const std::string text = Dump(meta_->kv());
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_GE(lines.size(), 5u);
  EXPECT_EQ(lines[0], R"({"format":"tessera-dump","version":1,)");
  EXPECT_EQ(lines[1].rfind(R"("settings":{"name":"dump-vol",)", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind(R"("counters":{"nextInode":)", 0), 0u) << lines[2];
  EXPECT_EQ(lines[3], R"("inodes":[)");
  EXPECT_EQ(lines.back(), "}");

  auto j = nlohmann::json::parse(text);
  // The root directory, with every attribute field.
  const auto& root = j["inodes"][0];
  EXPECT_EQ(root["inode"], 1);
  for (const char* field : {"type", "mode", "uid", "gid", "atime_ns", "mtime_ns", "ctime_ns",
                            "nlink", "length", "rdev", "parent"}) {
    EXPECT_TRUE(root["attr"].contains(field)) << field;
  }
  EXPECT_EQ(root["attr"]["type"], "dir");
  EXPECT_EQ(root["attr"]["mode"], 0777);
  // One line per inode.
  size_t inode_lines = 0;
  for (const std::string& line : lines) inode_lines += line.rfind("{\"inode\":", 0) == 0 ? 1 : 0;
  EXPECT_EQ(inode_lines, j["inodes"].size());

  nlohmann::json big;
  for (const auto& ino : j["inodes"]) {
    if (ino["inode"] == big_.value()) big = ino;
  }
  ASSERT_TRUE(big.is_object());
  EXPECT_EQ(big["attr"]["type"], "file");
  EXPECT_EQ(big["attr"]["length"], 3 * (64ull << 20) + 170);
  ASSERT_EQ(big["chunks"].size(), 3u);  // 0, 1 and 3
  EXPECT_EQ(big["chunks"][2]["index"], 3);
  EXPECT_EQ(big["chunks"][2]["slices"][0],
            nlohmann::json::parse(R"({"pos":100,"id":4,"size":70,"off":0,"len":70})"));
  EXPECT_NE(text.find(R"("name":"ünïcødé ✓","inode":)"), std::string::npos);
  EXPECT_NE(text.find(R"("name":"q\"u\\o\nte\t","inode":)"), std::string::npos);
  EXPECT_NE(text.find(R"("name_b64":"wyhub3QtdXRmOA==","inode":)"), std::string::npos);
  EXPECT_NE(text.find(R"("symlink_b64":"//4tdGFyZ2V0")"), std::string::npos);
  EXPECT_NE(text.find(R"("symlink":"big")"), std::string::npos);
  EXPECT_NE(text.find(R"("trash_origin":"/was/here")"), std::string::npos);
  EXPECT_NE(text.find(R"({"name":"user.bin","value_b64":"AAH/"})"), std::string::npos);
  EXPECT_NE(text.find(R"({"name":"user.text","value":"hello"})"), std::string::npos);
  EXPECT_NE(text.find(R"({"name_b64":"dXNlci7/","value":""})"), std::string::npos);
  for (const char* type : {"fifo", "socket", "chardev", "blockdev", "symlink"}) {
    EXPECT_NE(text.find(std::string("\"type\":\"") + type + "\""), std::string::npos) << type;
  }
  EXPECT_EQ(j["slice_refs"].size(), 1u);
  EXPECT_EQ(j["slice_refs"][0]["refs"], 2);
  EXPECT_EQ(j["delayed_slices"].size(), 2u);
  EXPECT_EQ(j["freed_slices"], nlohmann::json::parse(R"([{"id":4242,"size":4096}])"));
  EXPECT_EQ(j["pending_deletions"], nlohmann::json::array({open_.value()}));
  EXPECT_EQ(j["other"], nlohmann::json::array());
  // Session state is not in the file.
  EXPECT_EQ(text.find("heartbeat"), std::string::npos);
}

// A file held open after unlink that also has an R record is listed once.
TEST_P(MetaDumpTest, PendingDeletionsMergeSessionFilesAndReclaimRecords) {
  MakeVolume(GetParam());
  BuildTree();
  Put(meta_->kv(), keys::Reclaim(open_), "");
  Put(meta_->kv(), keys::Reclaim(InodeId(2)), "");
  Put(meta_->kv(), keys::Reclaim(InodeId(open_.value() + 100)), "");
  Put(meta_->kv(), keys::SustainedInode(SessionId(99), InodeId(open_.value() + 50)), "");
  auto j = nlohmann::json::parse(Dump(meta_->kv()));
  EXPECT_EQ(j["pending_deletions"],
            nlohmann::json::array({2, open_.value(), open_.value() + 50, open_.value() + 100}));
}

// Keys the dump does not know come back exactly, in raw form, wherever
// they sort: unknown kinds under an inode (between known ones too),
// unknown top-level prefixes, records whose readable form would not give
// the same bytes.
TEST_P(MetaDumpTest, UnknownAndMalformedRecordsRoundTripRaw) {
  MakeVolume(GetParam());
  BuildTree();
  KvStore& kv = meta_->kv();
  const std::string d = keys::InodePrefix(d_);
  std::string wrong_hash = d + "D";
  PutBig64(&wrong_hash, 12345);
  wrong_hash += "x";
  const KeyMap planted = {
      {d + "E", "between entries and attributes"},
      {d + "Zfuture", std::string("\0\x01", 2)},
      {d + "W", "/dir"},
      {wrong_hash, EncodeEntry({S_IFREG, InodeId(77)})},
      {keys::Chunk(small_, 9), "partial"},
      {keys::Attr(InodeId(999999)), std::string("\x09rest-of-a-newer-version", 24)},
      {keys::InodePrefix(InodeId(999999)) + "Q", "only unknown"},
      {"A\x01", "too short for an inode"},
      {"B-future", "v"},
      {"Cshort", "abc"},
      {std::string("C\xff", 2), Big64(5)},
      {"SSbad", ""},
      {"R\x01", "r"},
      {keys::SliceRefs(SliceId(5), 10), "not eight bytes"},
      {"Zzz", ""},
      {std::string("\xff\xff", 2), "last"},
      {"settings", "near the settings key"},
  };
  for (const auto& [k, v] : planted) Put(kv, k, v);
  const KeyMap source = AllKeys(kv);

  DumpStats stats;
  const std::string first = Dump(kv, {}, &stats);
  EXPECT_EQ(stats.raw, planted.size());
  for (const auto& [k, v] : planted) {
    EXPECT_NE(first.find("\"key_hex\":\"" + Hex(k) + "\""), std::string::npos) << Hex(k);
  }
  // dir's raw keys sort on both sides of its xattrs: its object continues
  // on a second line.
  EXPECT_NE(first.find("},\n{\"inode\":" + std::to_string(d_.value()) + ",\"other\":["),
            std::string::npos)
      << first;
  for (size_t page : {1, 2}) {
    DumpOptions o;
    o.page_size = page;
    EXPECT_EQ(Dump(kv, o), first);
  }

  auto target = Open(NewUrl(Targets().first));
  ASSERT_TRUE(target);
  ASSERT_TRUE(Load(*target, first).ok());
  EXPECT_EQ(AllKeys(*target), Expected(source));
  EXPECT_EQ(Dump(*target), first);
}

// Settings that are not a JSON object printing back to the same bytes are
// kept raw too.
TEST_P(MetaDumpTest, OddSettingsAreKeptRaw) {
  MakeVolume(GetParam());
  const std::string odd = "{ \"name\": \"dump-vol\" }";
  Put(meta_->kv(), keys::Settings(), odd);
  DumpStats stats;
  const std::string text = Dump(meta_->kv(), {}, &stats);
  EXPECT_EQ(stats.raw, 1u);
  EXPECT_EQ(text.find("\"settings\""), std::string::npos);
  auto target = Open(NewUrl(Targets().first));
  ASSERT_TRUE(Load(*target, text).ok());
  EXPECT_EQ(AllKeys(*target), Expected(AllKeys(meta_->kv())));
}

TEST_P(MetaDumpTest, NonEmptyTargetIsRefused) {
  MakeVolume(GetParam());
  BuildTree();
  const std::string text = Dump(meta_->kv());
  const KeyMap before = AllKeys(meta_->kv());
  Status st = Load(meta_->kv(), text);
  EXPECT_EQ(st.code(), StatusCode::kExists) << st.ToString();
  EXPECT_NE(st.message().find("not empty"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
  EXPECT_EQ(AllKeys(meta_->kv()), before);

  auto target = Open(NewUrl(Targets().first));
  Put(*target, "x", "");
  EXPECT_EQ(Load(*target, text).code(), StatusCode::kExists);
  EXPECT_EQ(AllKeys(*target).size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Engines, MetaDumpTest,
                         ::testing::Values("mem", "sqlite", "redis", "postgres", "etcd"));

// ---- engine-independent: on the memory engine ----

class MetaDumpMemTest : public DumpFixture {};

TEST_F(MetaDumpMemTest, BadInputIsOneClearLine) {
  MakeVolume("mem");
  BuildTree();
  const std::string good = Dump(meta_->kv());
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return at == std::string::npos ? s : s.replace(at, from.size(), to);
  };
  const struct {
    std::string input;
    StatusCode code;
    std::string says;
  } cases[] = {
      {"", StatusCode::kInvalid, "the dump is empty"},
      {"{\"format\":\"tessera-dump\",\"version\":1,\n\"inodes\":[\n{\"inode\":1,\"at",
       StatusCode::kInvalid, "ends early (truncated?): parse error at line 3"},
      {good.substr(0, good.size() / 2), StatusCode::kInvalid, "ends early (truncated?)"},
      {good.substr(0, good.size() - 2), StatusCode::kInvalid, "ends early (truncated?)"},
      {good + "x", StatusCode::kInvalid, "not valid JSON"},
      {"[1,2]", StatusCode::kInvalid, "not a tessera dump"},
      {"42", StatusCode::kInvalid, "not a tessera dump"},
      {"{}", StatusCode::kInvalid, "not a tessera dump"},
      {R"({"version":1})", StatusCode::kInvalid, "does not start with \"format\""},
      {R"({"format":"zip","version":1})", StatusCode::kInvalid, "\"format\" is \"zip\""},
      {R"({"format":"tessera-dump","version":2})", StatusCode::kNotSupported, "version 2"},
      {R"({"format":"tessera-dump","version":1,"extra":[]})", StatusCode::kInvalid,
       "unknown field \"extra\""},
      {R"({"format":"tessera-dump","version":1,"inodes":{}})", StatusCode::kInvalid,
       "line 1: inodes: expected an array"},
      {R"({"format":"tessera-dump","version":1,"counters":{"x":1.5}})", StatusCode::kInvalid,
       "counters.x: expected a whole number"},
      {replace("{\"inode\":1,", "{\"inode\":\"1\","), StatusCode::kInvalid,
       "line 5: inodes[0].inode: expected an inode number"},
      {replace("{\"inode\":1,", "{\"attr\":{},"), StatusCode::kInvalid,
       "line 5: inodes[0]: the first field must be \"inode\""},
      {replace("\"type\":\"dir\"", "\"type\":\"dyr\""), StatusCode::kInvalid,
       "line 5: inodes[0] (inode 1).attr: \"type\" must be one of"},
      {replace("\"nlink\":", "\"nlinks\":"), StatusCode::kInvalid, "unknown field \"nlinks\""},
      {replace("\"uid\":0,", "\"uid\":-1,"), StatusCode::kInvalid,
       "\"uid\" must be a whole number from 0 to 4294967295"},
      {replace("\"pos\":0,", "\"pos\":4294967296,"), StatusCode::kInvalid,
       "chunks[0]: slices[0]: \"pos\" must be"},
      {replace("\"value_b64\":\"AAH/\"", "\"value_b64\":\"AAH\""), StatusCode::kInvalid,
       "\"value_b64\" must be a base64 string"},
      {replace("\"name\":\"user.text\",", ""), StatusCode::kInvalid,
       "needs exactly one of \"name\" and \"name_b64\""},
      {replace("\"freed_slices\":[\n{\"id\":4242,", "\"freed_slices\":[\n{\"id\":-1,"),
       StatusCode::kInvalid, "freed_slices[0]: \"id\" must be"},
      {replace("\"pending_deletions\":[\n", "\"pending_deletions\":[\n\"x\",\n"),
       StatusCode::kInvalid, "pending_deletions[0]: expected an inode number"},
      {replace("\"other\":[]", "\"other\":[{\"key_hex\":\"zz\",\"value_b64\":\"\"}]"),
       StatusCode::kInvalid, "other[0]: \"key_hex\" must be a non-empty hex string"},
  };
  for (const auto& c : cases) {
    std::istringstream in(c.input);
    Status checked = CheckDump(in);
    EXPECT_EQ(checked.code(), c.code) << checked.ToString() << "\ninput: " << c.input.substr(0, 80);
    EXPECT_NE(checked.message().find(c.says), std::string::npos)
        << checked.message() << "\nexpected: " << c.says;
    EXPECT_EQ(checked.message().find('\n'), std::string::npos) << checked.message();
    // A load says the same.
    auto target = Open(NewUrl("mem"));
    Status loaded = Load(*target, c.input);
    EXPECT_EQ(loaded.code(), checked.code());
    EXPECT_EQ(loaded.message(), checked.message());
  }
  std::istringstream in(good);
  EXPECT_TRUE(CheckDump(in).ok());
}

// A store whose reads fail with kConflict a number of times, as Redis does
// when a snapshot falls too far behind the commits of others.
class FlakyStore final : public KvStore {
 public:
  FlakyStore(KvStore& inner, int conflicts) : inner_(inner), conflicts_(conflicts) {}
  std::string Url() const override { return inner_.Url(); }
  Result<std::unique_ptr<KvTxn>> Begin() override {
    ASSIGN_OR_RETURN(auto txn, inner_.Begin());
    return std::unique_ptr<KvTxn>(new Txn(std::move(txn), this));
  }
  int begun() const { return begun_; }

 private:
  class Txn final : public KvTxn {
   public:
    Txn(std::unique_ptr<KvTxn> inner, FlakyStore* store) : inner_(std::move(inner)), store_(store) {
      store_->begun_++;
    }
    Result<std::optional<std::string>> Get(std::string_view key) override {
      return inner_->Get(key);
    }
    Result<std::vector<std::optional<std::string>>> BatchGet(
        const std::vector<std::string>& keys) override {
      return inner_->BatchGet(keys);
    }
    Result<ScanResult> Scan(std::string_view begin, std::string_view end, size_t limit) override {
      // Fails after part of the dump is written.
      if (++scans_ == 4 && store_->conflicts_ > 0) {
        store_->conflicts_--;
        return Conflict("snapshot too old to read, retry");
      }
      return inner_->Scan(begin, end, limit);
    }
    void Put(std::string_view key, std::string_view value) override { inner_->Put(key, value); }
    void Delete(std::string_view key) override { inner_->Delete(key); }
    void Increment(std::string_view key, int64_t delta) override { inner_->Increment(key, delta); }
    Status Commit() override { return inner_->Commit(); }

   private:
    std::unique_ptr<KvTxn> inner_;
    FlakyStore* store_;
    int scans_ = 0;
  };

  KvStore& inner_;
  int conflicts_;
  int begun_ = 0;
};

TEST_F(MetaDumpMemTest, DumpStartsOverWhenTheSnapshotIsLost) {
  MakeVolume("mem");
  BuildTree();
  const std::string clean = Dump(meta_->kv());
  std::ostringstream out;
  int restarts = 0;
  DumpOptions o;
  o.page_size = 2;
  o.restart = [&] {
    restarts++;
    out.str("");
    return Status::Ok();
  };

  FlakyStore three(meta_->kv(), 3);
  DumpStats stats;
  Status st = DumpVolume(three, out, o, &stats);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(stats.attempts, 4);
  EXPECT_EQ(restarts, 3);
  EXPECT_EQ(out.str(), clean);

  FlakyStore four(meta_->kv(), 4);
  st = DumpVolume(four, out, o, &stats);
  EXPECT_EQ(st.code(), StatusCode::kConflict);
  EXPECT_NE(st.message().find("idle"), std::string::npos) << st.message();
  EXPECT_EQ(four.begun(), 4);

  // Output that cannot be taken back: no second attempt.
  FlakyStore once(meta_->kv(), 1);
  o.restart = nullptr;
  st = DumpVolume(once, out, o, &stats);
  EXPECT_EQ(st.code(), StatusCode::kConflict);
  EXPECT_EQ(once.begun(), 1);
}

// On Redis, for real: other clients commit more than the engine keeps a
// snapshot for while the dump runs; it starts over and gives what the
// volume holds at the end.
class BusyStore final : public KvStore {
 public:
  BusyStore(KvStore& inner, int commits) : inner_(inner), commits_(commits) {}
  std::string Url() const override { return inner_.Url(); }
  Result<std::unique_ptr<KvTxn>> Begin() override {
    ASSIGN_OR_RETURN(auto txn, inner_.Begin());
    return std::unique_ptr<KvTxn>(new Txn(std::move(txn), this));
  }

 private:
  class Txn final : public KvTxn {
   public:
    Txn(std::unique_ptr<KvTxn> inner, BusyStore* store) : inner_(std::move(inner)), store_(store) {}
    Result<std::optional<std::string>> Get(std::string_view key) override {
      return inner_->Get(key);
    }
    Result<std::vector<std::optional<std::string>>> BatchGet(
        const std::vector<std::string>& keys) override {
      return inner_->BatchGet(keys);
    }
    Result<ScanResult> Scan(std::string_view begin, std::string_view end, size_t limit) override {
      if (++scans_ == 3 && store_->commits_ > 0) {
        for (int i = 0; i < store_->commits_; ++i) {
          RETURN_IF_ERROR(WithTransaction(store_->inner_, [&](KvTxn& txn) {
            txn.Put(keys::Counter("busy"), Big64(static_cast<uint64_t>(i)));
            return Status::Ok();
          }));
        }
        store_->commits_ = 0;
      }
      return inner_->Scan(begin, end, limit);
    }
    void Put(std::string_view key, std::string_view value) override { inner_->Put(key, value); }
    void Delete(std::string_view key) override { inner_->Delete(key); }
    void Increment(std::string_view key, int64_t delta) override { inner_->Increment(key, delta); }
    Status Commit() override { return inner_->Commit(); }

   private:
    std::unique_ptr<KvTxn> inner_;
    BusyStore* store_;
    int scans_ = 0;
  };

  KvStore& inner_;
  int commits_;
};

class MetaDumpRedisTest : public DumpFixture {};

TEST_F(MetaDumpRedisTest, SnapshotLostToABusyVolumeStartsOver) {
  MakeVolume("redis");
  BuildTree();
  BusyStore busy(meta_->kv(), 2100);
  std::ostringstream out;
  DumpOptions o;
  o.page_size = 2;
  o.restart = [&] {
    out.str("");
    return Status::Ok();
  };
  DumpStats stats;
  Status st = DumpVolume(busy, out, o, &stats);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(stats.attempts, 2);
  EXPECT_NE(out.str().find("\"busy\":2099"), std::string::npos);
  EXPECT_EQ(out.str(), Dump(meta_->kv()));
}

TEST_F(MetaDumpMemTest, EmptyEngineHasNoVolumeToDump) {
  auto kv = Open(NewUrl("mem"));
  std::ostringstream out;
  Status st = DumpVolume(*kv, out);
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("no volume"), std::string::npos);
}

// Many inodes, in pages that split them anywhere, and loads in bounded
// transactions.
TEST_F(MetaDumpMemTest, TwentyThousandInodes) {
  MakeVolume("mem");
  constexpr int kDirs = 20, kFiles = 1000;
  for (int d = 0; d < kDirs; ++d) {
    InodeId dir = Make(kRootInode, "d" + std::to_string(d), S_IFDIR | 0755);
    for (int f = 0; f < kFiles; ++f) {
      InodeId file = Make(dir, "f" + std::to_string(f), S_IFREG | 0644);
      if (f % 10 == 0) {
        ASSERT_TRUE(meta_->WriteSlice(file, 0, NewSlice(0, 4096, 0, 4096), 1).ok());
      }
    }
  }
  DumpOptions o;
  o.page_size = 97;
  DumpStats stats;
  const std::string first = Dump(meta_->kv(), o, &stats);
  EXPECT_EQ(stats.inodes, 1u + kDirs + kDirs * kFiles);
  EXPECT_EQ(stats.raw, 0u);

  auto target = Open(NewUrl("mem"));
  LoadStats loaded;
  ASSERT_TRUE(Load(*target, first, {}, &loaded).ok());
  EXPECT_EQ(loaded.inodes, stats.inodes);
  EXPECT_EQ(loaded.keys, stats.keys);
  EXPECT_GE(loaded.transactions, loaded.keys / 1000);
  EXPECT_EQ(Dump(*target), first);
  auto report = CheckVolume(*target, FsckOptions{}, nullptr);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->findings.empty()) << DescribeFindings(*report);
  EXPECT_EQ(report->inodes, stats.inodes);
}

}  // namespace
}  // namespace tessera
