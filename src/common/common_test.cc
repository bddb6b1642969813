#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>

#include "common/coding.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "common/units.h"

namespace tessera {
namespace {

TEST(StatusTest, OkMapsToZeroAndErrorsToErrno) {
  EXPECT_EQ(ToErrno(Status::Ok()), 0);
  EXPECT_EQ(ToErrno(NotFound("x")), ENOENT);
  EXPECT_EQ(ToErrno(Corrupt("x")), EIO);
  EXPECT_EQ(ToErrno(Status(StatusCode::kNoSpace, "full")), ENOSPC);
  EXPECT_EQ(FromErrno(ENOTEMPTY, "rmdir").code(), StatusCode::kNotEmpty);
  EXPECT_TRUE(Unavailable("x").IsRetryable());
  EXPECT_FALSE(NotFound("x").IsRetryable());
}

TEST(StatusTest, ResultCarriesValueOrStatus) {
  Result<int> good = 42;
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 42);
  Result<int> bad = Invalid("nope");
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "nope");
}

Status UsesMacros(int in, int* out) {
  ASSIGN_OR_RETURN(uint64_t v, ParseUint(std::to_string(in), "n"));
  *out = static_cast<int>(v);
  RETURN_IF_ERROR(in > 10 ? Invalid("too big") : Status::Ok());
  return Status::Ok();
}

TEST(StatusTest, MacrosPropagate) {
  int out = 0;
  EXPECT_TRUE(UsesMacros(7, &out).ok());
  EXPECT_EQ(out, 7);
  EXPECT_EQ(UsesMacros(11, &out).code(), StatusCode::kInvalid);
}

TEST(UnitsTest, ParsesSizes) {
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("4M"), 4u << 20);
  EXPECT_EQ(*ParseSize("4MiB"), 4u << 20);
  EXPECT_EQ(*ParseSize("512k"), 512u << 10);
  EXPECT_EQ(*ParseSize("1G"), 1ull << 30);
  EXPECT_FALSE(ParseSize("").ok());
  EXPECT_FALSE(ParseSize("M4").ok());
  EXPECT_FALSE(ParseSize("4X").ok());
  EXPECT_FALSE(ParseSize("99999999999999999999").ok());
  EXPECT_EQ(FormatBytes(4u << 20), "4.0 MiB");
  EXPECT_EQ(FormatBytes(12), "12 B");
}

TEST(CodingTest, BigEndianSortsNumerically) {
  std::string a, b;
  PutBig64(&a, 255);
  PutBig64(&b, 256);
  EXPECT_LT(a, b);
  EXPECT_EQ(GetBig64(b.data()), 256u);
  Decoder d(a);
  EXPECT_EQ(d.Big64(), 255u);
  EXPECT_TRUE(d.ok());
  EXPECT_EQ(d.Big32(), 0u);
  EXPECT_FALSE(d.ok());
}

TEST(RunOnThreadsTest, RunsEveryWorkerAndReturnsTheFirstError) {
  std::atomic<unsigned> ran{0}, told{0};
  std::atomic<uint64_t> seen{0};
  Status s = RunOnThreads(
      8,
      [&](unsigned i) {
        ++ran;
        seen |= uint64_t{1} << i;
        return i == 5 ? IoError("worker 5 failed") : Status::Ok();
      },
      [&] { ++told; });
  EXPECT_EQ(ran.load(), 8u);
  EXPECT_EQ(seen.load(), 0xffu);  // each index once
  EXPECT_EQ(told.load(), 1u);
  EXPECT_EQ(s.message(), "worker 5 failed");
  EXPECT_TRUE(RunOnThreads(3, [](unsigned) { return Status::Ok(); }).ok());
}

}  // namespace
}  // namespace tessera
