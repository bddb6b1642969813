// OpenKv URL handling and the WithTransaction retry loop.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "kv/kv.h"
#include "kv/txn_retry.h"

namespace tessera {
namespace {

TEST(OpenKvTest, RejectsMalformedAndUnknownUrls) {
  for (const std::string url : {"", "foo://x", "sqlite3", "sqlite3:/x.db", "mem:/", "mem",
                                "MEM://x", "redis-ish", "sqlite3://"}) {
    auto store = OpenKv(url);
    ASSERT_FALSE(store.ok()) << url;
    EXPECT_EQ(store.status().code(), StatusCode::kInvalid) << url;
    EXPECT_NE(store.status().message().find("'" + url + "'"), std::string::npos)
        << store.status().message();
  }
  auto store = OpenKv("foo://x");
  EXPECT_EQ(store.status().message(),
            "unsupported metadata URL 'foo://x' (expected sqlite3://PATH, redis://HOST:PORT/DB, "
            "postgres://USER@HOST:PORT/DB, etcd://HOST:PORT/PREFIX or mem://NAME)");
}

TEST(OpenKvTest, MemoryUrls) {
  auto fresh = OpenKv("mem://");
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*fresh)->Url(), "mem://");
  auto named = OpenKv("mem://kv_test_named");
  ASSERT_TRUE(named.ok());
  EXPECT_EQ((*named)->Url(), "mem://kv_test_named");
}

class WithTransactionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = OpenKv("mem://");
    ASSERT_TRUE(store.ok());
    store_ = std::move(store).value();
  }
  std::unique_ptr<KvStore> store_;
};

TEST_F(WithTransactionTest, RetriesTheBodyOnConflict) {
  int calls = 0;
  Status s = WithTransaction(*store_, [&](KvTxn& txn) {
    ++calls;
    txn.Put("k", std::to_string(calls));
    return calls < 3 ? Conflict("try again") : Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(calls, 3);
  auto txn = store_->Begin();
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ(*(*txn)->Get("k"), "3");  // only the last attempt's writes
}

TEST_F(WithTransactionTest, DoesNotRetryOtherErrors) {
  int calls = 0;
  Status s = WithTransaction(*store_, [&](KvTxn&) {
    ++calls;
    return NotFound("no such inode");
  });
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(calls, 1);
}

TEST_F(WithTransactionTest, GivesUpAfterMaxAttempts) {
  int calls = 0;
  TxnRetryPolicy policy;
  policy.max_attempts = 7;
  policy.initial_backoff_us = 1;
  policy.max_backoff_us = 10;
  Status s = WithTransaction(
      *store_,
      [&](KvTxn&) {
        ++calls;
        return Conflict("always");
      },
      policy);
  EXPECT_EQ(s.code(), StatusCode::kConflict);
  EXPECT_EQ(calls, 7);
  EXPECT_NE(s.message().find("7 attempts"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("retries"), std::string::npos) << s.message();
}

TEST_F(WithTransactionTest, RetriesACommitConflict) {
  ASSERT_TRUE(WithTransaction(*store_, [](KvTxn& txn) {
                txn.Put("x", "0");
                return Status::Ok();
              }).ok());
  int calls = 0;
  Status s = WithTransaction(*store_, [&](KvTxn& txn) {
    ++calls;
    ASSIGN_OR_RETURN(auto x, txn.Get("x"));
    if (calls == 1) {  // someone else changes x before this attempt commits
      RETURN_IF_ERROR(WithTransaction(*store_, [](KvTxn& other) {
        other.Put("x", "interloper");
        return Status::Ok();
      }));
    }
    txn.Put("x", *x + "+");
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(calls, 2);
  auto txn = store_->Begin();
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ(*(*txn)->Get("x"), "interloper+");
}

TEST_F(WithTransactionTest, RidesOutAnUnavailableEngine) {
  store_->set_unavailable_retry_ms(10'000);
  int calls = 0;
  Status s = WithTransaction(*store_, [&](KvTxn& txn) {
    ++calls;
    txn.Put("k", "v");
    return calls < 4 ? Unavailable("connection refused") : Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(calls, 4);
  auto txn = store_->Begin();
  ASSERT_TRUE(txn.ok());
  EXPECT_EQ(*(*txn)->Get("k"), "v");
}

TEST_F(WithTransactionTest, UnavailableFailsAfterTheRetryWindow) {
  store_->set_unavailable_retry_ms(0);
  int calls = 0;
  Status s = WithTransaction(*store_, [&](KvTxn&) {
    ++calls;
    return Unavailable("connection refused");
  });
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1);

  store_->set_unavailable_retry_ms(300);
  calls = 0;
  auto start = std::chrono::steady_clock::now();
  s = WithReadTransaction(*store_, [&](KvTxn&) {
    ++calls;
    return Unavailable("connection refused");
  });
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_GT(calls, 2);  // retried with growing waits (10, 20, 40 ms, ...)
  EXPECT_LT(calls, 12);
  // It stops before a pause would end past the window; a loaded machine may
  // oversleep a pause, hence the slack.
  EXPECT_GE(waited, std::chrono::milliseconds(150));
  EXPECT_LT(waited, std::chrono::milliseconds(1000));
}

TEST(OpenKvTest, UnavailableRetryComesFromTheOptions) {
  auto store = OpenKv("mem://", KvOptions{.unavailable_retry_ms = 1234});
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->unavailable_retry_ms(), 1234);
  EXPECT_EQ((*OpenKv("mem://"))->unavailable_retry_ms(), KvOptions{}.unavailable_retry_ms);
}

}  // namespace
}  // namespace tessera
