#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <algorithm>
#include <thread>
#include <random>
#include <set>

#include "common/chunk_view.h"
#include "data/file_reader.h"
#include "cache/block_cache.h"
#include "data/block_reader.h"
#include "data/compactor.h"
#include "data/file_writer.h"
#include "data/slice_store.h"
#include "object/object_store.h"

namespace tessera {
namespace {

// Chunk records kept in memory: the metadata side of the data layer.
class MemoryChunks : public ChunkMeta {
 public:
  Result<SliceId> NewSlice() override { return SliceId(++next_); }
  Result<std::vector<std::pair<uint32_t, size_t>>> CommitSlices(
      InodeId ino, const std::vector<ChunkSlice>& slices, int64_t) override {
    std::lock_guard lock(mu_);
    if (fail_commits_) return Status(StatusCode::kNoSpace, "full");
    std::map<uint32_t, size_t> counts;
    for (const ChunkSlice& s : slices) {
      auto& records = chunks_[{ino.value(), s.chunk}];
      records.push_back(s.record);
      counts[s.chunk] = records.size();
      length_ = std::max<uint64_t>(length_, uint64_t{s.chunk} * kChunkSize + s.record.pos + s.record.len);
    }
    commits_++;
    return std::vector<std::pair<uint32_t, size_t>>(counts.begin(), counts.end());
  }
  Status ReplaceRecords(InodeId ino, uint32_t chunk, size_t first,
                        const std::vector<SliceRecord>& old, const std::vector<SliceRecord>& merged,
                        int64_t) override {
    std::lock_guard lock(mu_);
    auto& records = chunks_[{ino.value(), chunk}];
    if (records.size() < first + old.size() ||
        !std::equal(old.begin(), old.end(), records.begin() + static_cast<std::ptrdiff_t>(first))) {
      return Status(StatusCode::kBusy, "changed");
    }
    records.erase(records.begin() + static_cast<std::ptrdiff_t>(first),
                  records.begin() + static_cast<std::ptrdiff_t>(first + old.size()));
    records.insert(records.begin() + static_cast<std::ptrdiff_t>(first), merged.begin(), merged.end());
    for (const SliceRecord& r : old) {
      bool kept = std::any_of(records.begin(), records.end(), [&](const SliceRecord& k) { return k.id == r.id; });
      if (!kept && r.id.value() != 0) replaced_.push_back({r.id, r.size});
    }
    replacements_++;
    return Status::Ok();
  }
  Result<std::vector<SliceRecord>> ReadChunk(InodeId ino, uint32_t chunk) override {
    std::lock_guard lock(mu_);
    return chunks_[{ino.value(), chunk}];
  }
  std::vector<SliceRecord> Records(uint64_t ino, uint32_t chunk) {
    std::lock_guard lock(mu_);
    return chunks_[{ino, chunk}];
  }
  std::mutex mu_;
  std::vector<SliceRef> replaced_;
  int replacements_ = 0;
  uint64_t length_ = 0;
  int commits_ = 0;
  bool fail_commits_ = false;
  std::map<std::pair<uint64_t, uint32_t>, std::vector<SliceRecord>> chunks_;

 private:
  uint64_t next_ = 0;
};

TEST(ChunkViewTest, NewerSlicesHideOlderOnes) {
  std::vector<SliceRecord> records = {
      {0, SliceId(1), 100, 0, 100},  // [0,100) from slice 1
      {20, SliceId(2), 10, 0, 10},   // [20,30) from slice 2
      {90, SliceId(3), 30, 0, 30},   // [90,120) from slice 3
  };
  auto view = BuildChunkView(records);
  ASSERT_EQ(view.size(), 4u);
  EXPECT_EQ(view[0], (SliceRecord{0, SliceId(1), 100, 0, 20}));
  EXPECT_EQ(view[1], (SliceRecord{20, SliceId(2), 10, 0, 10}));
  EXPECT_EQ(view[2], (SliceRecord{30, SliceId(1), 100, 30, 60}));
  EXPECT_EQ(view[3], (SliceRecord{90, SliceId(3), 30, 0, 30}));
}

TEST(ChunkViewTest, CoveringSliceReplacesEverything) {
  auto view = BuildChunkView({{10, SliceId(1), 5, 0, 5}, {30, SliceId(2), 5, 0, 5},
                              {0, SliceId(3), 100, 0, 100}});
  ASSERT_EQ(view.size(), 1u);
  EXPECT_EQ(view[0].id, SliceId(3));
}

TEST(ChunkViewTest, MatchesByteByByteModel) {
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    std::vector<SliceRecord> records;
    std::vector<uint64_t> model(512, 0);  // id per byte
    for (int i = 1; i <= 12; ++i) {
      uint32_t pos = rng() % 500, len = 1 + rng() % 60;
      if (pos + len > 512) len = 512 - pos;
      records.push_back({pos, SliceId(i), len + 7, 7, len});
      for (uint32_t b = pos; b < pos + len; ++b) model[b] = i;
    }
    std::vector<uint64_t> got(512, 0);
    uint32_t last_end = 0;
    for (const auto& s : BuildChunkView(records)) {
      ASSERT_GE(s.pos, last_end);
      last_end = s.pos + s.len;
      for (uint32_t b = s.pos; b < s.pos + s.len; ++b) got[b] = s.id.value();
      // The offset inside the slice must follow the position.
      const auto& orig = records[s.id.value() - 1];
      EXPECT_EQ(s.off - orig.off, s.pos - orig.pos);
    }
    ASSERT_EQ(got, model) << "round " << round;
  }
}

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = OpenObjectStore("mem", "");
    ASSERT_TRUE(s.ok());
    objects_ = std::move(*s);
    slices_ = std::make_unique<SliceStore>("vol", 64 * 1024, objects_.get());
    reader_ = std::make_unique<BlockReader>(slices_.get(), nullptr, 4);
  }
  std::string ReadAll(uint64_t length) {
    std::string out(length, '\0');
    auto n = ReadFile(chunks_, *reader_, InodeId(2), length, 0, length, false, out.data());
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return out;
  }
  std::unique_ptr<ObjectStore> objects_;
  std::unique_ptr<SliceStore> slices_;
  std::unique_ptr<BlockReader> reader_;
  MemoryChunks chunks_;
  UploadQueue queue_{4, 16 << 20};
};

TEST_F(DataTest, BlockKeysFollowTheFormat) {
  EXPECT_EQ(slices_->BlockKey(SliceId(1234567), 2, 4096), "vol/chunks/1/1234/1234567_2_4096");
  EXPECT_EQ(slices_->BlockKey(SliceId(5), 0, 65536), "vol/chunks/0/0/5_0_65536");
}

TEST_F(DataTest, SequentialWriteMakesOneSliceOfFullBlocks) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  std::string data(200 * 1024, 'x');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 % 251);
  for (size_t off = 0; off < data.size(); off += 4096) {
    ASSERT_TRUE(w.Write(off, std::string_view(data).substr(off, 4096)).ok());
  }
  EXPECT_TRUE(w.dirty());
  EXPECT_EQ(w.PendingEnd(), data.size());
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_FALSE(w.dirty());
  EXPECT_EQ(chunks_.commits_, 1);
  // 200 KiB in 64 KiB blocks: three full blocks and one of 8 KiB.
  auto page = objects_->List("vol/chunks/", "", 0);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->objects.size(), 4u);
  EXPECT_EQ(page->objects[3].key, "vol/chunks/0/0/1_3_8192");
  EXPECT_EQ(ReadAll(chunks_.length_), data);
}

TEST_F(DataTest, OverwritesAndHolesMatchAModel) {
  std::mt19937 rng(11);
  std::string model;
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  for (int i = 0; i < 300; ++i) {
    uint64_t off = rng() % (300 * 1024);
    size_t len = 1 + rng() % 20000;
    std::string piece(len, static_cast<char>('a' + i % 26));
    if (model.size() < off + len) model.resize(off + len, '\0');
    model.replace(off, len, piece);
    ASSERT_TRUE(w.Write(off, piece).ok());
    if (i % 37 == 0) {
      ASSERT_TRUE(w.Flush().ok());
    }
  }
  ASSERT_TRUE(w.Flush().ok());
  ASSERT_EQ(chunks_.length_, model.size());
  EXPECT_EQ(ReadAll(model.size()), model);
}

// Random overlapping writes, each flushed: one record per write.
std::string WriteRandomly(FileWriter& w, int writes, uint64_t span, unsigned seed) {
  std::mt19937 rng(seed);
  std::string model;
  for (int i = 0; i < writes; ++i) {
    uint64_t off = rng() % span;
    size_t len = 1 + rng() % 5000;
    std::string piece(len, static_cast<char>('a' + rng() % 26));
    if (model.size() < off + len) model.resize(off + len, '\0');
    model.replace(off, len, piece);
    EXPECT_TRUE(w.Write(off, piece).ok());
    EXPECT_TRUE(w.Flush().ok());
  }
  return model;
}

TEST_F(DataTest, FullCompactionMergesAChunkIntoOneSlice) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  const std::string model = WriteRandomly(w, 120, 200 * 1024, 5);
  ASSERT_EQ(chunks_.Records(2, 0).size(), 120u);
  Compactor compactor(&chunks_, reader_.get(), CompactOptions{});
  auto r = compactor.CompactChunk(InodeId(2), 0, true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->merged);
  EXPECT_EQ(r->records_before, 120u);
  EXPECT_EQ(r->records_after, 1u);
  ASSERT_EQ(chunks_.Records(2, 0).size(), 1u);
  // Every old slice is handed over for deletion, and deleting them all
  // leaves the file intact: it reads from the new slice only.
  EXPECT_EQ(chunks_.replaced_.size(), 120u);
  for (const SliceRef& s : chunks_.replaced_) ASSERT_TRUE(slices_->Delete(s).ok());
  EXPECT_EQ(ReadAll(model.size()), model);
  // One record left: nothing to gain.
  EXPECT_FALSE(compactor.CompactChunk(InodeId(2), 0, true)->merged);
}

TEST_F(DataTest, CompactionKeepsZerosBelowAndLeavesEdgesOut) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  ASSERT_TRUE(w.Write(100000, std::string(1000, 'a')).ok());
  ASSERT_TRUE(w.Flush().ok());
  ASSERT_TRUE(w.Write(150000, std::string(1000, 'b')).ok());
  ASSERT_TRUE(w.Flush().ok());
  Compactor compactor(&chunks_, reader_.get(), CompactOptions{});
  ASSERT_TRUE(compactor.CompactChunk(InodeId(2), 0, true)->merged);
  const auto records = chunks_.Records(2, 0);
  ASSERT_EQ(records.size(), 1u);
  // Zeros before the first byte and after the last are not stored.
  EXPECT_EQ(records[0].pos, 100000u);
  EXPECT_EQ(records[0].len, 51000u);
  std::string model(151000, '\0');
  model.replace(100000, 1000, std::string(1000, 'a'));
  model.replace(150000, 1000, std::string(1000, 'b'));
  EXPECT_EQ(ReadAll(model.size()), model);
}

TEST_F(DataTest, BackgroundCompactionKeepsLargeVisibleSlices) {
  CompactOptions options;
  options.threshold = 8;
  options.keep_slice_bytes = 64 * 1024;
  Compactor compactor(&chunks_, reader_.get(), options);
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_, &compactor);
  // A log: one large slice, then small appends, each flushed.
  std::string model(256 * 1024, 'L');
  ASSERT_TRUE(w.Write(0, model).ok());
  ASSERT_TRUE(w.Flush().ok());
  const SliceId large = chunks_.Records(2, 0)[0].id;
  for (int i = 0; i < 7; ++i) {
    std::string piece(300, static_cast<char>('a' + i));
    ASSERT_TRUE(w.Write(model.size(), piece).ok());
    model += piece;
    ASSERT_TRUE(w.Flush().ok());
  }
  compactor.WaitIdle();
  const auto records = chunks_.Records(2, 0);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].id, large);  // not rewritten
  EXPECT_EQ(records[1].pos, 256u * 1024);
  EXPECT_EQ(records[1].len, 7u * 300);
  EXPECT_EQ(chunks_.replaced_.size(), 7u);
  EXPECT_EQ(ReadAll(model.size()), model);
  // Random overwrites hide the large slice: it is merged too.
  for (int i = 0; i < 8; ++i) {
    std::string piece(100, static_cast<char>('A' + i));
    ASSERT_TRUE(w.Write(i * 20000, piece).ok());
    model.replace(i * 20000, 100, piece);
    ASSERT_TRUE(w.Flush().ok());
  }
  compactor.WaitIdle();
  // The sixth overwrite reached the threshold and everything was merged;
  // the last two came after (or in time to be merged too).
  const auto after = chunks_.Records(2, 0);
  ASSERT_GE(after.size(), 1u);
  EXPECT_LE(after.size(), 3u);
  EXPECT_NE(after[0].id, large);
  EXPECT_EQ(after[0].pos, 0u);
  EXPECT_EQ(after[0].len, model.size());
  EXPECT_EQ(ReadAll(model.size()), model);
}

TEST_F(DataTest, ReadsDuringCompactionReturnTheRightBytes) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  const std::string model = WriteRandomly(w, 60, 300 * 1024, 9);
  Compactor compactor(&chunks_, reader_.get(), CompactOptions{});
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0}, reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      std::string buf;
      while (!stop) {
        const uint64_t off = rng() % model.size();
        const size_t len = 1 + rng() % 70000;
        buf.assign(len, '\0');
        auto n = ReadFile(chunks_, *reader_, InodeId(2), model.size(), off, len, false, buf.data());
        if (!n.ok() || buf.substr(0, *n) != model.substr(off, *n)) bad++;
        reads++;
      }
    });
  }
  // Churn: rewrite pieces with the bytes they already hold (new slices,
  // same content), merge, and delete the replaced slices at once, without
  // any grace period: readers holding old records must find the new ones.
  std::mt19937 rng(3);
  for (int round = 0; round < 40; ++round) {
    for (int i = 0; i < 5; ++i) {
      const uint64_t off = rng() % (model.size() - 5000);
      ASSERT_TRUE(w.Write(off, std::string_view(model).substr(off, 1 + rng() % 5000)).ok());
      ASSERT_TRUE(w.Flush().ok());
    }
    ASSERT_TRUE(compactor.CompactChunk(InodeId(2), 0, true).ok());
    std::vector<SliceRef> gone;
    {
      std::lock_guard lock(chunks_.mu_);
      gone.swap(chunks_.replaced_);
    }
    for (const SliceRef& s : gone) ASSERT_TRUE(slices_->Delete(s).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_GT(reads.load(), 40);
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(ReadAll(model.size()), model);
}

TEST_F(DataTest, WritesAcrossChunkBoundarySplit) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  std::string data(100000, 'q');
  ASSERT_TRUE(w.Write(kChunkSize - 50000, data).ok());
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_EQ((chunks_.Records(2, 0).size()), 1u);
  EXPECT_EQ((chunks_.chunks_[{2, 1}].size()), 1u);
  std::string out(100000, '\0');
  auto n = ReadFile(chunks_, *reader_, InodeId(2), kChunkSize + 50000, kChunkSize - 50000,
                    out.size(), false, out.data());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, data.size());
  EXPECT_EQ(out, data);
  // The hole before the data reads as zeros.
  std::string hole(10, 'x');
  ASSERT_TRUE(ReadFile(chunks_, *reader_, InodeId(2), kChunkSize + 50000, 1000, 10, false, hole.data()).ok());
  EXPECT_EQ(hole, std::string(10, '\0'));
}

TEST_F(DataTest, ReadStopsAtLength) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  ASSERT_TRUE(w.Write(0, "hello world").ok());
  ASSERT_TRUE(w.Flush().ok());
  char buf[64];
  auto n = ReadFile(chunks_, *reader_, InodeId(2), 5, 0, sizeof(buf), false, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "hello");
  auto past = ReadFile(chunks_, *reader_, InodeId(2), 5, 10, sizeof(buf), false, buf);
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(*past, 0u);
}

TEST_F(DataTest, HoleRecordsReadAsZeros) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  ASSERT_TRUE(w.Write(0, std::string(1000, 'z')).ok());
  ASSERT_TRUE(w.Flush().ok());
  // What truncate to 100 then regrowth leaves behind.
  chunks_.chunks_[{2, 0}].push_back({100, SliceId(0), 0, 0, static_cast<uint32_t>(kChunkSize - 100)});
  std::string out = ReadAll(1000);
  EXPECT_EQ(out.substr(0, 100), std::string(100, 'z'));
  EXPECT_EQ(out.substr(100), std::string(900, '\0'));
}

TEST_F(DataTest, MissingBlockIsAnIoErrorNamingTheObject) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  ASSERT_TRUE(w.Write(0, std::string(1000, 'z')).ok());
  ASSERT_TRUE(w.Flush().ok());
  ASSERT_TRUE(objects_->Delete("vol/chunks/0/0/1_0_1000").ok());
  char buf[10];
  auto n = ReadFile(chunks_, *reader_, InodeId(2), 1000, 0, sizeof(buf), false, buf);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(ToErrno(n.status()), EIO);
  EXPECT_NE(n.status().message().find("1_0_1000"), std::string::npos);
}

TEST_F(DataTest, TruncatedBlockIsAnIoError) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  ASSERT_TRUE(w.Write(0, std::string(1000, 'z')).ok());
  ASSERT_TRUE(w.Flush().ok());
  ASSERT_TRUE(objects_->Put("vol/chunks/0/0/1_0_1000", std::string(10, 'z')).ok());
  char buf[100];
  auto n = ReadFile(chunks_, *reader_, InodeId(2), 1000, 0, sizeof(buf), false, buf);
  EXPECT_FALSE(n.ok());
}

TEST_F(DataTest, DeleteRemovesEveryBlock) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  ASSERT_TRUE(w.Write(0, std::string(150 * 1024, 'd')).ok());
  ASSERT_TRUE(w.Flush().ok());
  auto before = objects_->List("vol/", "", 0);
  ASSERT_EQ(before->objects.size(), 3u);
  ASSERT_TRUE(slices_->Delete({SliceId(1), 150 * 1024}).ok());
  auto after = objects_->List("vol/", "", 0);
  EXPECT_TRUE(after->objects.empty());
}

TEST_F(DataTest, FailedCommitDeletesTheBlocksItUploaded) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  ASSERT_TRUE(w.Write(0, std::string(200 * 1024, 'a')).ok());
  ASSERT_TRUE(w.Write(500 * 1024, std::string(10, 'b')).ok());
  chunks_.fail_commits_ = true;
  EXPECT_EQ(w.Flush().code(), StatusCode::kNoSpace);
  EXPECT_FALSE(w.dirty());
  EXPECT_TRUE(objects_->List("vol/", "", 0)->objects.empty());
}

TEST_F(DataTest, PendingMtimeFollowsWrites) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  EXPECT_EQ(w.PendingMtime(), 0);
  ASSERT_TRUE(w.Write(0, "x").ok());
  EXPECT_GT(w.PendingMtime(), 0);
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_EQ(w.PendingMtime(), 0);
}

TEST_F(DataTest, BufferedBytesAreReleasedAfterFlush) {
  FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
  ASSERT_TRUE(w.Write(0, std::string(100 * 1024, 'm')).ok());
  EXPECT_GT(queue_.buffered(), 0u);
  ASSERT_TRUE(w.Flush().ok());
  EXPECT_EQ(queue_.buffered(), 0u);
}

TEST(UploadQueueTest, ReserveWaitsForReleaseAndAsksForPressure) {
  UploadQueue q(2, 1000);
  std::atomic<int> pressure{0};
  q.SetPressureHandler([&] { pressure++; });
  q.Reserve(800);
  std::atomic<bool> admitted{false};
  std::thread waiter([&] {
    q.Reserve(400);  // over the budget until the first 800 go
    admitted = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(admitted);
  EXPECT_GT(pressure.load(), 0);
  q.Release(800);
  waiter.join();
  EXPECT_TRUE(admitted);
  EXPECT_EQ(q.buffered(), 400u);
  // Anything is admitted while nothing is buffered.
  q.Release(400);
  q.Reserve(5000);
  EXPECT_EQ(q.buffered(), 5000u);
}

TEST(UploadQueueTest, RunsTasksConcurrentlyUpToItsThreads) {
  std::atomic<int> running{0}, peak{0}, done{0};
  {
    UploadQueue q(3, 1 << 20);
    for (int i = 0; i < 12; ++i) {
      q.Submit([&] {
        int now = ++running;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        running--;
        done++;
      });
    }
  }  // the destructor waits for every task
  EXPECT_EQ(done.load(), 12);
  EXPECT_LE(peak.load(), 3);
  EXPECT_GE(peak.load(), 2);
}

TEST(WriteMemoryTest, ManyWritersStayWithinTheBuffer) {
  auto objects = OpenObjectStore("mem", "");
  SliceStore slices("vol", 64 * 1024, objects->get());
  MemoryChunks chunks;
  UploadQueue queue(2, 256 * 1024);
  std::atomic<uint64_t> peak{0};
  std::atomic<bool> stop{false};
  std::thread watch([&] {
    while (!stop) {
      uint64_t b = queue.buffered();
      if (b > peak) peak = b;
    }
  });
  std::vector<std::unique_ptr<FileWriter>> writers;
  for (int f = 0; f < 4; ++f) {
    writers.push_back(std::make_unique<FileWriter>(InodeId(10 + f), &chunks, &slices, &queue));
  }
  queue.SetPressureHandler([&] {
    for (auto& w : writers) (void)w->Flush();
  });
  std::vector<std::thread> ts;
  for (int f = 0; f < 4; ++f) {
    ts.emplace_back([&, f] {
      for (int i = 0; i < 64; ++i) ASSERT_TRUE(writers[f]->Write(i * 10000, std::string(10000, 'w')).ok());
    });
  }
  for (auto& t : ts) t.join();
  for (auto& w : writers) ASSERT_TRUE(w->Flush().ok());
  stop = true;
  watch.join();
  EXPECT_LE(peak.load(), 256u * 1024);
  EXPECT_EQ(queue.buffered(), 0u);
}

// Counts the Gets that reach the store, and how many bytes each asked for.
class CountingStore : public ObjectStore {
 public:
  explicit CountingStore(ObjectStore* inner) : inner_(inner) {}
  std::string Describe() const override { return inner_->Describe(); }
  Status Put(std::string_view key, std::string_view data) override { return inner_->Put(key, data); }
  Result<std::string> Get(std::string_view key, uint64_t offset, int64_t length) override {
    gets++;
    auto r = inner_->Get(key, offset, length);
    if (r.ok()) bytes += r->size();
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    return r;
  }
  Result<ObjectInfo> Head(std::string_view key) override { return inner_->Head(key); }
  Status Delete(std::string_view key) override { return inner_->Delete(key); }
  Result<ListPage> List(std::string_view prefix, std::string_view start_after, size_t limit) override {
    return inner_->List(prefix, start_after, limit);
  }
  std::atomic<int> gets{0};
  std::atomic<uint64_t> bytes{0};
  int delay_ms = 0;

 private:
  ObjectStore* inner_;
};

class BlockReaderTest : public DataTest {
 protected:
  void SetUp() override {
    DataTest::SetUp();
    FileWriter w(InodeId(2), &chunks_, slices_.get(), &queue_);
    data_.resize(300 * 1024);
    for (size_t i = 0; i < data_.size(); ++i) data_[i] = static_cast<char>(i * 7 % 253);
    ASSERT_TRUE(w.Write(0, data_).ok());
    ASSERT_TRUE(w.Flush().ok());
    counting_ = std::make_unique<CountingStore>(objects_.get());
    counted_slices_ = std::make_unique<SliceStore>("vol", 64 * 1024, counting_.get());
    CacheOptions o;
    o.memory_bytes = 8 << 20;
    auto cache = MakeBlockCache(o);
    ASSERT_TRUE(cache.ok());
    cache_ = std::move(*cache);
    cached_reader_ = std::make_unique<BlockReader>(counted_slices_.get(), cache_.get(), 4);
  }
  std::string data_;
  std::unique_ptr<CountingStore> counting_;
  std::unique_ptr<SliceStore> counted_slices_;
  std::unique_ptr<BlockCache> cache_;
  std::unique_ptr<BlockReader> cached_reader_;
};

TEST_F(BlockReaderTest, RandomReadsFetchOnlyTheBytesAsked) {
  char buf[100];
  auto n = ReadFile(chunks_, *cached_reader_, InodeId(2), data_.size(), 70000, sizeof(buf), false, buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, 100), data_.substr(70000, 100));
  EXPECT_EQ(counting_->gets.load(), 1);
  EXPECT_EQ(counting_->bytes.load(), 100u);
}

TEST_F(BlockReaderTest, SequentialReadsFetchWholeBlocksOnce) {
  std::string out(data_.size(), '\0');
  for (size_t off = 0; off < data_.size(); off += 4096) {
    size_t len = std::min<size_t>(4096, data_.size() - off);
    auto n = ReadFile(chunks_, *cached_reader_, InodeId(2), data_.size(), off, len, true, &out[off]);
    ASSERT_TRUE(n.ok());
  }
  EXPECT_EQ(out, data_);
  // 300 KiB in 64 KiB blocks: five fetches, each block once.
  EXPECT_EQ(counting_->gets.load(), 5);
  EXPECT_EQ(counting_->bytes.load(), data_.size());
}

TEST_F(BlockReaderTest, ConcurrentReadersShareOneFetch) {
  counting_->delay_ms = 100;
  std::vector<std::thread> ts;
  std::atomic<int> good{0};
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      char buf[1000];
      auto n = ReadFile(chunks_, *cached_reader_, InodeId(2), data_.size(), 1000, sizeof(buf), true, buf);
      if (n.ok() && std::string(buf, 1000) == data_.substr(1000, 1000)) good++;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(good.load(), 4);
  EXPECT_EQ(counting_->gets.load(), 1);
}

TEST_F(BlockReaderTest, PrefetchFillsTheCacheAhead) {
  PrefetchFile(chunks_, *cached_reader_, InodeId(2), data_.size(), 0, data_.size());
  for (int i = 0; i < 200 && counting_->gets.load() < 5; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(counting_->gets.load(), 5);
  std::string out(data_.size(), '\0');
  ASSERT_TRUE(ReadFile(chunks_, *cached_reader_, InodeId(2), data_.size(), 0, data_.size(), false, out.data()).ok());
  EXPECT_EQ(out, data_);
  EXPECT_EQ(counting_->gets.load(), 5);  // every byte came from the cache
}

}  // namespace
}  // namespace tessera
