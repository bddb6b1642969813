#include "data/readahead.h"

#include <gtest/gtest.h>

namespace tessera {
namespace {

constexpr uint64_t kBlock = 4 << 20;
constexpr uint64_t KiB = 1024;

TEST(ReadaheadTest, SequentialReaderGetsAGrowingWindow) {
  Readahead ra(kBlock, 3 * kBlock);
  uint64_t off = 0;
  const uint64_t req = 128 * KiB;
  uint64_t fetched_to = 0;
  for (int i = 0; i < 200; ++i, off += req) {
    ASSERT_TRUE(ra.Begin(off, req)) << "request " << i;
    auto r = ra.End(off, req, true);
    if (r.to > r.from) {
      // Never the same range twice, and always ahead of the reader.
      EXPECT_GE(r.from, fetched_to);
      EXPECT_GE(r.from, off + req);
      fetched_to = r.to;
    }
    if (i == 0) {
      EXPECT_EQ(ra.window(), kBlock);
    } else if (i == 1) {
      EXPECT_EQ(ra.window(), 2 * kBlock);
    }
  }
  EXPECT_EQ(ra.window(), 3 * kBlock);  // capped
  EXPECT_EQ(fetched_to, off + 3 * kBlock);
}

TEST(ReadaheadTest, OutOfOrderReadaheadRequestsStaySequential) {
  Readahead ra(kBlock, 3 * kBlock);
  const uint64_t req = 1 << 20;
  // The kernel's requests for [1M,2M) and [2M,3M) arrive swapped.
  for (uint64_t off : {uint64_t{0}, 2 * req, req, 3 * req, 5 * req, 4 * req}) {
    EXPECT_TRUE(ra.Begin(off, req)) << off;
    ra.End(off, req, true);
  }
}

TEST(ReadaheadTest, RandomReadersFetchNothingAhead) {
  Readahead ra(kBlock, 3 * kBlock);
  ASSERT_TRUE(ra.Begin(0, 4 * KiB));  // the first read at 0 looks sequential
  ra.End(0, 4 * KiB, true);
  // Small reads 300 KiB and more apart are random even when close together.
  const uint64_t offsets[] = {900 * KiB, 600 * KiB, 5 << 20, 40 << 20, (40 << 20) - 300 * KiB};
  for (uint64_t off : offsets) {
    EXPECT_FALSE(ra.Begin(off, 4 * KiB)) << off;
    auto r = ra.End(off, 4 * KiB, false);
    EXPECT_GE(r.from, r.to);
    EXPECT_EQ(ra.window(), 0u);
  }
  // A reader that turns sequential starts again from one block.
  const uint64_t at = (40 << 20) - 300 * KiB + 4 * KiB;
  EXPECT_TRUE(ra.Begin(at, 4 * KiB));
  EXPECT_EQ(ra.window(), kBlock);
  auto r = ra.End(at, 4 * KiB, true);
  EXPECT_EQ(r.from, at + 4 * KiB);
  EXPECT_EQ(r.to, at + 4 * KiB + kBlock);
}

TEST(ReadaheadTest, LargeRandomRequestsGetSlackInProportion) {
  Readahead ra(kBlock, 3 * kBlock);
  ra.End(0, 1 << 20, false);  // next read expected at 1 MiB
  EXPECT_TRUE(ra.Begin(2 << 20, 1 << 20));   // 1 MiB gap with 1 MiB requests: sequential
  Readahead small(kBlock, 3 * kBlock);
  small.End(0, 4 * KiB, false);  // next at 4 KiB
  EXPECT_FALSE(small.Begin(1 << 20, 4 * KiB));  // 1 MiB gap with 4 KiB requests: random
}

}  // namespace
}  // namespace tessera
