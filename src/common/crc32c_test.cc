#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace tessera {
namespace {

// Known answers: the CRC-32C check value and the iSCSI vectors of RFC 3720
// appendix B.4.
struct Vector {
  std::string data;
  uint32_t crc;
};

std::vector<Vector> KnownAnswers() {
  std::string ascending(32, '\0'), descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  return {
      {"", 0},
      {"123456789", 0xE3069283},
      {std::string(32, '\0'), 0x8A9136AA},
      {std::string(32, '\xff'), 0x62A8AB43},
      {ascending, 0x46DD794E},
      {descending, 0x113FDB5C},
  };
}

TEST(Crc32cTest, KnownAnswersOnEveryPath) {
  for (const Vector& v : KnownAnswers()) {
    SCOPED_TRACE(v.data.size());
    EXPECT_EQ(crc32c::Value(v.data), v.crc);
    EXPECT_EQ(crc32c::ExtendPortable(0, v.data.data(), v.data.size()), v.crc);
    if (crc32c::HardwareAvailable()) {
      EXPECT_EQ(crc32c::ExtendHardware(0, v.data.data(), v.data.size()), v.crc);
    }
  }
}

TEST(Crc32cTest, ExtendEqualsValueOfConcatenation) {
  std::string data = "The quick brown fox jumps over the lazy dog, twice over.";
  uint32_t whole = crc32c::Value(data);
  for (size_t split = 0; split <= data.size(); ++split) {
    uint32_t first = crc32c::Value(data.data(), split);
    EXPECT_EQ(crc32c::Extend(first, data.data() + split, data.size() - split), whole) << split;
  }
}

TEST(Crc32cTest, HardwareAndPortableAgreeOnRandomData) {
  if (!crc32c::HardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  std::mt19937_64 rng(42);
  std::string buf(70000, '\0');
  for (char& c : buf) c = static_cast<char>(rng());
  for (int i = 0; i < 500; ++i) {
    // Odd starts and lengths exercise the unaligned head and the tail loop.
    size_t start = rng() % 64;
    size_t len = (i % 5 == 0) ? rng() % (buf.size() - start) : rng() % 300;
    uint32_t seed = static_cast<uint32_t>(rng());
    ASSERT_EQ(crc32c::ExtendHardware(seed, buf.data() + start, len),
              crc32c::ExtendPortable(seed, buf.data() + start, len))
        << "start " << start << " len " << len;
  }
}

TEST(Crc32cTest, DetectsSingleBitFlips) {
  std::string data(32768, 'x');
  uint32_t good = crc32c::Value(data);
  for (size_t bit = 0; bit < data.size() * 8; bit += 4099) {
    std::string bad = data;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_NE(crc32c::Value(bad), good) << bit;
  }
}

}  // namespace
}  // namespace tessera
