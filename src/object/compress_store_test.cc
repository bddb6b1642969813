// CompressStore over a memory store, for lz4 and zstd: round trips, sizes,
// ranges, and damaged objects giving kCorrupt naming the key. (The
// conformance suite in object_store_test.cc runs over it too.)
#include "object/compress_store.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "common/coding.h"
#include "object/memory_store.h"

namespace tessera {
namespace {

std::string RandomData(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

std::string Text(size_t n) {
  std::string s;
  for (int i = 0; s.size() < n; ++i) s += "line " + std::to_string(i % 97) + " of some log text\n";
  s.resize(n);
  return s;
}

class CompressStoreTest : public ::testing::TestWithParam<Compression> {
 protected:
  void SetUp() override {
    name_ =
        std::string("compress-test-") + CompressionName(GetParam()) + std::to_string(counter_++);
    store_ = std::make_unique<CompressStore>(MemoryStore::Open(name_), GetParam());
    raw_ = MemoryStore::Open(name_);
  }

  std::string Raw(const std::string& key) {
    auto r = raw_->Get(key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : "";
  }

  void ExpectCorrupt(const std::string& stored, const std::string& what) {
    ASSERT_TRUE(raw_->Put("vol/bad", stored).ok());
    auto got = store_->Get("vol/bad");
    ASSERT_FALSE(got.ok()) << what << ": returned " << got->size() << " bytes";
    EXPECT_EQ(got.status().code(), StatusCode::kCorrupt) << what << ": " << got.status().ToString();
    EXPECT_NE(got.status().message().find("vol/bad"), std::string::npos) << got.status().message();
    EXPECT_EQ(store_->Get("vol/bad", 0, 1).status().code(), StatusCode::kCorrupt) << what;
  }

  static inline int counter_ = 0;
  std::string name_;
  std::unique_ptr<CompressStore> store_;
  std::unique_ptr<MemoryStore> raw_;
};

TEST_P(CompressStoreTest, RoundTripsAndSizes) {
  struct Case {
    std::string name;
    std::string data;
    bool shrinks;
  };
  const std::vector<Case> cases = {
      {"empty", "", false},
      {"small", "hello", false},
      {"text", Text(100000), true},
      {"text-4m", Text(4 << 20), true},
      {"zeros-4m", std::string(4 << 20, '\0'), true},
      {"random-4m", RandomData(4 << 20, 1), false},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_TRUE(store_->Put(c.name, c.data).ok());
    auto got = store_->Get(c.name);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(*got == c.data);
    const std::string raw = Raw(c.name);
    ASSERT_GE(raw.size(), CompressStore::kHeaderSize);
    EXPECT_EQ(raw[0], CompressStore::kFormat);
    if (c.shrinks) {
      EXPECT_EQ(raw[1], static_cast<char>(GetParam()));
      EXPECT_LT(raw.size(), c.data.size() / 4) << "compressed to " << raw.size();
    } else {
      // Not worth compressing: stored as is behind the header.
      EXPECT_EQ(raw[1], static_cast<char>(Compression::kNone));
      EXPECT_EQ(raw.size(), c.data.size() + CompressStore::kHeaderSize);
    }
    auto head = store_->Head(c.name);
    ASSERT_TRUE(head.ok()) << head.status().ToString();
    EXPECT_EQ(head->size, c.data.size());  // the data's length, from the header
    EXPECT_GT(head->mtime_ns, 0);
    auto page = store_->List(c.name, "", 0);
    ASSERT_TRUE(page.ok());
    ASSERT_EQ(page->objects.size(), 1u);
    EXPECT_EQ(page->objects[0].size, raw.size());  // List reports stored sizes
  }
}

TEST_P(CompressStoreTest, RangedGets) {
  const std::string data = Text(3 << 20);
  ASSERT_TRUE(store_->Put("k", data).ok());
  for (auto [off, len] : {std::pair<uint64_t, int64_t>{0, 10},
                          {1 << 20, 4096},
                          {(3 << 20) - 5, 100},
                          {777, -1},
                          {3 << 20, 1},
                          {4 << 20, 1},
                          {0, 0}}) {
    auto got = store_->Get("k", off, len);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    const std::string want =
        off >= data.size() ? "" : data.substr(off, len < 0 ? std::string::npos : len);
    EXPECT_TRUE(*got == want) << off << "+" << len;
  }
}

TEST_P(CompressStoreTest, DamagedObjectsAreCorrupt) {
  const std::string data = Text(200000);
  ASSERT_TRUE(store_->Put("good", data).ok());
  const std::string good = Raw("good");
  ASSERT_EQ(good[1], static_cast<char>(GetParam()));
  ExpectCorrupt("", "empty");
  ExpectCorrupt(good.substr(0, CompressStore::kHeaderSize - 1), "shorter than the header");
  ExpectCorrupt(good.substr(0, CompressStore::kHeaderSize), "header only");
  ExpectCorrupt(good.substr(0, good.size() - 1), "last byte cut");
  ExpectCorrupt(good.substr(0, good.size() / 2), "cut in half");
  ExpectCorrupt(good + "trailing", "bytes appended");
  std::string bad = good;
  bad[0] = 'x';
  ExpectCorrupt(bad, "unknown format byte");
  bad = good;
  bad[1] = 9;
  ExpectCorrupt(bad, "unknown algorithm");
  for (uint64_t len : {data.size() - 1, data.size() + 1, uint64_t{1} << 40, ~uint64_t{0}}) {
    bad = good.substr(0, 2);
    PutBig64(&bad, len);
    bad += good.substr(10);
    ExpectCorrupt(bad, "length " + std::to_string(len) + " in the header");
  }
  // Flipped bits anywhere in the payload: a failed decompression or a
  // checksum mismatch, never other bytes. (A few bits of a zstd frame do
  // not change what it decodes to: those still read right.)
  int flips = 0, caught = 0;
  for (size_t pos = CompressStore::kHeaderSize - 4; pos < good.size(); pos += good.size() / 37) {
    bad = good;
    bad[pos] ^= 0x10;
    ASSERT_TRUE(raw_->Put("vol/bad", bad).ok());
    auto got = store_->Get("vol/bad");
    ++flips;
    if (!got.ok()) {
      EXPECT_EQ(got.status().code(), StatusCode::kCorrupt) << got.status().ToString();
      ++caught;
    } else {
      EXPECT_TRUE(*got == data) << "wrong bytes returned after a bit flip at " << pos;
    }
  }
  EXPECT_GT(caught, flips * 3 / 4) << caught << " of " << flips;
  // A raw (uncompressed) object is checked too.
  ASSERT_TRUE(store_->Put("random", RandomData(5000, 2)).ok());
  bad = Raw("random");
  ASSERT_EQ(bad[1], static_cast<char>(Compression::kNone));
  bad[2000] ^= 1;
  ExpectCorrupt(bad, "bit flipped in a stored-as-is object");
  bad = good.substr(0, 1);
  EXPECT_EQ(*store_->Get("good"), data);
  ASSERT_TRUE(raw_->Put("vol/bad", bad).ok());
  EXPECT_EQ(store_->Head("vol/bad").status().code(), StatusCode::kCorrupt);
  EXPECT_EQ(store_->Head("missing").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Get("missing").status().code(), StatusCode::kNotFound);
}

TEST_P(CompressStoreTest, ReadsObjectsOfOtherAlgorithms) {
  CompressStore lz4(MemoryStore::Open(name_), Compression::kLz4);
  CompressStore zstd(MemoryStore::Open(name_), Compression::kZstd);
  const std::string data = Text(50000);
  ASSERT_TRUE(lz4.Put("a", data).ok());
  ASSERT_TRUE(zstd.Put("b", data).ok());
  EXPECT_EQ(*store_->Get("a"), data);
  EXPECT_EQ(*store_->Get("b"), data);
}

INSTANTIATE_TEST_SUITE_P(Algorithms, CompressStoreTest,
                         ::testing::Values(Compression::kLz4, Compression::kZstd),
                         [](const ::testing::TestParamInfo<Compression>& info) {
                           return std::string(CompressionName(info.param));
                         });

TEST(CompressionTest, ParsesNames) {
  EXPECT_EQ(*ParseCompression("lz4"), Compression::kLz4);
  EXPECT_EQ(*ParseCompression("zstd"), Compression::kZstd);
  EXPECT_EQ(*ParseCompression("none"), Compression::kNone);
  auto bad = ParseCompression("gzip");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "unknown compression 'gzip' (expected lz4, zstd or none)");
}

}  // namespace
}  // namespace tessera
