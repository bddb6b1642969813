// The disk cache's file format and key escaping, without the cache.
#include "cache/block_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "cache/cache_test_util.h"

namespace tessera {
namespace {

using cache_test::BlockFor;
using cache_test::FlipByte;
using cache_test::ReadWholeFile;
using cache_test::TempDir;
using cache_test::WriteWholeFile;

class Fd {
 public:
  explicit Fd(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY)) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

TEST(BlockFileTest, EscapeRoundTripsAnyKey) {
  std::vector<std::string> keys = {"vol/chunks/0/1/1234_0_4194304", ".", "..", ".tmp.x", "a%b",
                                   std::string("nul\0byte", 8), "\xff\x80 sp", "plain-key_9"};
  for (const std::string& key : keys) {
    std::string name = blockfile::EscapeKey(key);
    EXPECT_EQ(name.find('/'), std::string::npos) << name;
    EXPECT_EQ(name.find('.'), std::string::npos) << name;
    auto back = blockfile::UnescapeKey(name);
    ASSERT_TRUE(back.has_value()) << name;
    EXPECT_EQ(*back, key);
  }
  EXPECT_EQ(blockfile::EscapeKey("v/1_0_9"), "v%2F1_0_9");
}

TEST(BlockFileTest, UnescapeRejectsNamesEscapeNeverMakes) {
  for (std::string_view name : {"", "a.b", "a%2f", "%41", "%4", "%", "a%zz", ".tmp.123"}) {
    EXPECT_FALSE(blockfile::UnescapeKey(name).has_value()) << name;
  }
}

TEST(BlockFileTest, SizesFollowThePieces) {
  EXPECT_EQ(blockfile::PieceCount(0), 0u);
  EXPECT_EQ(blockfile::PieceCount(1), 1u);
  EXPECT_EQ(blockfile::PieceCount(32768), 1u);
  EXPECT_EQ(blockfile::PieceCount(32769), 2u);
  EXPECT_EQ(blockfile::FileSize(4 << 20), 24u + 4 * 128 + (4u << 20));
}

TEST(BlockFileTest, WriteThenReadAnyRange) {
  TempDir tmp;
  for (size_t size : {0ul, 1ul, 32767ul, 32768ul, 32769ul, 100000ul}) {
    SCOPED_TRACE(size);
    std::string path = tmp.path() + "/b" + std::to_string(size);
    std::string block = BlockFor(path, size);
    ASSERT_TRUE(blockfile::Write(path, block).ok());
    Fd fd(path);
    auto len = blockfile::ReadHeader(fd.get());
    ASSERT_TRUE(len.ok()) << len.status().ToString();
    EXPECT_EQ(*len, size);
    std::vector<std::pair<uint64_t, uint64_t>> ranges = {{0, size}, {0, 0}, {size, 0}};
    if (size > 2) ranges.push_back({1, size - 2});
    if (size > 40000) ranges.push_back({32760, 20});  // straddles two pieces
    if (size > 70000) ranges.push_back({65536, 100});
    for (auto [off, len2] : ranges) {
      std::string out(len2, '?');
      Status st = blockfile::ReadRange(fd.get(), size, off, len2, out.data());
      ASSERT_TRUE(st.ok()) << st.ToString() << " at " << off << "+" << len2;
      EXPECT_EQ(out, block.substr(off, len2));
    }
    std::string out(2, '?');
    EXPECT_TRUE(blockfile::ReadRange(fd.get(), size, size, 1, out.data()).Is(StatusCode::kInvalid));
  }
  // Only the finished files are left: no temporaries.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) {
    EXPECT_EQ(e.path().filename().string().rfind(".tmp.", 0), std::string::npos);
    ++files;
  }
  EXPECT_EQ(files, 6u);
}

TEST(BlockFileTest, FlippedByteFailsOnlyTheRangesCoveringItsPiece) {
  TempDir tmp;
  std::string path = tmp.path() + "/b";
  std::string block = BlockFor("b", 100000);  // pieces 0..3
  ASSERT_TRUE(blockfile::Write(path, block).ok());
  uint64_t data_start = blockfile::FileSize(block.size()) - block.size();
  FlipByte(path, data_start + 2 * 32768 + 5);  // in piece 2
  Fd fd(path);
  std::string out(1000, '?');
  EXPECT_TRUE(blockfile::ReadRange(fd.get(), block.size(), 0, 100, out.data()).ok());
  EXPECT_EQ(out.substr(0, 100), block.substr(0, 100));
  EXPECT_TRUE(blockfile::ReadRange(fd.get(), block.size(), 99000, 1000, out.data()).ok());
  EXPECT_EQ(out, block.substr(99000));
  // The range itself avoids the flipped byte, but shares its piece.
  EXPECT_TRUE(blockfile::ReadRange(fd.get(), block.size(), 2 * 32768 + 100, 50, out.data())
                  .Is(StatusCode::kCorrupt));
  std::string all(block.size(), '?');
  EXPECT_TRUE(
      blockfile::ReadRange(fd.get(), block.size(), 0, block.size(), all.data()).Is(StatusCode::kCorrupt));
}

TEST(BlockFileTest, FlippedChecksumIsCaught) {
  TempDir tmp;
  std::string path = tmp.path() + "/b";
  std::string block = BlockFor("b", 70000);
  ASSERT_TRUE(blockfile::Write(path, block).ok());
  FlipByte(path, blockfile::kHeaderSize + 4 + 1);  // checksum of piece 1
  Fd fd(path);
  std::string out(10, '?');
  EXPECT_TRUE(blockfile::ReadRange(fd.get(), block.size(), 0, 10, out.data()).ok());
  EXPECT_TRUE(
      blockfile::ReadRange(fd.get(), block.size(), 40000, 10, out.data()).Is(StatusCode::kCorrupt));
}

TEST(BlockFileTest, BadHeadersAndShortFilesAreCorrupt) {
  TempDir tmp;
  std::string path = tmp.path() + "/b";
  std::string block = BlockFor("b", 50000);
  ASSERT_TRUE(blockfile::Write(path, block).ok());
  const std::string good = ReadWholeFile(path);
  std::string out(10, '?');

  // Each header field: magic, version, length, header checksum.
  for (uint64_t at : {0u, 7u, 15u, 17u}) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 1);
    WriteWholeFile(path, bad);
    Fd fd(path);
    EXPECT_TRUE(blockfile::ReadHeader(fd.get()).status().Is(StatusCode::kCorrupt)) << at;
    EXPECT_TRUE(
        blockfile::ReadRange(fd.get(), block.size(), 0, 10, out.data()).Is(StatusCode::kCorrupt))
        << at;
  }

  WriteWholeFile(path, good.substr(0, good.size() - 1));
  {
    Fd fd(path);
    EXPECT_TRUE(blockfile::ReadHeader(fd.get()).status().Is(StatusCode::kCorrupt));
    EXPECT_TRUE(blockfile::ReadRange(fd.get(), block.size(), 49990, 10, out.data())
                    .Is(StatusCode::kCorrupt));
  }
  WriteWholeFile(path, good.substr(0, 10));
  {
    Fd fd(path);
    EXPECT_TRUE(blockfile::ReadHeader(fd.get()).status().Is(StatusCode::kCorrupt));
    EXPECT_TRUE(
        blockfile::ReadRange(fd.get(), block.size(), 0, 10, out.data()).Is(StatusCode::kCorrupt));
  }
  // A good file read as if it held another length.
  WriteWholeFile(path, good);
  Fd fd(path);
  EXPECT_TRUE(
      blockfile::ReadRange(fd.get(), block.size() + 1, 0, 10, out.data()).Is(StatusCode::kCorrupt));
}

}  // namespace
}  // namespace tessera
