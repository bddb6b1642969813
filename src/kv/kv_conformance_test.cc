// The KV conformance suite: what every engine must do, written once and run
// against each engine (a fresh store per test). A new engine adds itself to
// INSTANTIATE_TEST_SUITE_P below.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/coding.h"
#include "kv/kv.h"
#include "kv/etcd_test_server.h"
#include "kv/kv_test_util.h"
#include "kv/pg_test_server.h"
#include "kv/redis_test_server.h"

namespace tessera {
namespace {

using Txn = std::unique_ptr<KvTxn>;

std::string Big64(uint64_t v) {
  std::string s;
  PutBig64(&s, v);
  return s;
}

class KvConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      dir_ = std::make_unique<TempDir>();
      url_ = "sqlite3://" + dir_->path() + "/meta.db";
    } else if (GetParam() == "postgres") {
      Result<std::string> url = NewPgTestDatabase();
      ASSERT_TRUE(url.ok()) << url.status().ToString();
      url_ = *url;
    } else if (GetParam() == "redis" || GetParam() == "rediss") {
      Result<std::string> url = GetParam() == "redis" ? NewRedisTestUrl() : NewRedisTlsTestUrl();
      ASSERT_TRUE(url.ok()) << url.status().ToString();
      url_ = *url;
    } else if (GetParam() == "etcd") {
      Result<std::string> url = NewEtcdTestUrl();
      ASSERT_TRUE(url.ok()) << url.status().ToString();
      url_ = *url;
    } else {
      url_ = "mem://";
    }
    KvOptions options;
    options.create_if_missing = true;
    auto store = OpenKv(url_, options);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  void TearDown() override {
    store_.reset();
    dir_.reset();
  }

  Txn Begin() {
    auto txn = store_->Begin();
    EXPECT_TRUE(txn.ok()) << txn.status().ToString();
    return txn.ok() ? std::move(txn).value() : nullptr;
  }

  void Put(const std::string& key, const std::string& value) {
    Status s = WithTransaction(*store_, [&](KvTxn& txn) {
      txn.Put(key, value);
      return Status::Ok();
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::optional<std::string> Get(const std::string& key) {
    Txn txn = Begin();
    auto value = txn->Get(key);
    EXPECT_TRUE(value.ok()) << value.status().ToString();
    return value.ok() ? *value : std::nullopt;
  }

  ScanResult Scan(KvTxn& txn, const std::string& begin, const std::string& end, size_t limit) {
    auto r = txn.Scan(begin, end, limit);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : ScanResult{};
  }

  ScanResult Scan(const std::string& begin, const std::string& end, size_t limit) {
    Txn txn = Begin();
    return Scan(*txn, begin, end, limit);
  }

  static std::vector<std::string> Keys(const ScanResult& r) {
    std::vector<std::string> keys;
    for (const KeyValue& kv : r.items) keys.push_back(kv.key);
    return keys;
  }

  std::unique_ptr<TempDir> dir_;
  std::string url_;
  std::unique_ptr<KvStore> store_;
};

TEST_P(KvConformanceTest, PutGetDelete) {
  EXPECT_EQ(Get("a"), std::nullopt);
  Put("a", "1");
  EXPECT_EQ(Get("a"), "1");
  Put("a", "2");
  EXPECT_EQ(Get("a"), "2");
  Put("empty", "");
  EXPECT_EQ(Get("empty"), "");  // an empty value exists
  Put("", "empty key");
  EXPECT_EQ(Get(""), "empty key");
  ASSERT_TRUE(WithTransaction(*store_, [](KvTxn& txn) {
                txn.Delete("a");
                txn.Delete("never-existed");
                return Status::Ok();
              }).ok());
  EXPECT_EQ(Get("a"), std::nullopt);
  EXPECT_EQ(Get("empty"), "");
}

TEST_P(KvConformanceTest, BinaryValuesAndLargeValues) {
  std::string binary("\x00\xff\x00\x01", 4);
  Put("bin", binary);
  EXPECT_EQ(Get("bin"), binary);
  std::string big(1 << 20, 'x');
  big[12345] = '\0';
  Put("big", big);
  EXPECT_EQ(Get("big"), big);
}

TEST_P(KvConformanceTest, KeysSortByUnsignedBytes) {
  std::vector<std::string> sorted = {
      std::string("\x00", 1), std::string("\x00\x00", 2), std::string("\x00\xff", 2),
      "A",                    "a",                        "ab",
      "\x7f",                 "\x80",                     "\xff",
      std::string("\xff\x00", 2), "\xff\xff",
  };
  for (auto it = sorted.rbegin(); it != sorted.rend(); ++it) Put(*it, "v");
  EXPECT_EQ(Keys(Scan("", "", 0)), sorted);

  // Big-endian integers under a prefix come out in numeric order.
  std::vector<uint64_t> numbers = {1ull << 40, 256, 0, 255, 65536, 1, ~0ull};
  for (uint64_t n : numbers) Put("n" + Big64(n), std::to_string(n));
  ScanResult r = Scan("n", "o", 0);
  std::vector<std::string> values;
  for (const KeyValue& kv : r.items) values.push_back(kv.value);
  EXPECT_EQ(values, (std::vector<std::string>{"0", "1", "255", "256", "65536",
                                              std::to_string(1ull << 40),
                                              std::to_string(~0ull)}));
}

TEST_P(KvConformanceTest, ScanRangeLimitAndMore) {
  for (int i = 0; i < 20; ++i) {
    char key[8];
    snprintf(key, sizeof key, "k%02d", i);
    Put(key, "v" + std::to_string(i));
  }
  ScanResult r = Scan("k05", "k10", 0);
  EXPECT_EQ(Keys(r), (std::vector<std::string>{"k05", "k06", "k07", "k08", "k09"}));
  EXPECT_FALSE(r.more);
  EXPECT_EQ(r.items[0].value, "v5");

  r = Scan("k05", "k10", 3);
  EXPECT_EQ(Keys(r), (std::vector<std::string>{"k05", "k06", "k07"}));
  EXPECT_TRUE(r.more);

  r = Scan("k05", "k10", 5);  // exactly the limit: nothing more
  EXPECT_EQ(r.items.size(), 5u);
  EXPECT_FALSE(r.more);

  r = Scan("k05", "k10", 100);
  EXPECT_EQ(r.items.size(), 5u);
  EXPECT_FALSE(r.more);

  r = Scan("k17", "", 0);  // empty end: to the end of the key space
  EXPECT_EQ(Keys(r), (std::vector<std::string>{"k17", "k18", "k19"}));
  r = Scan("k17", "", 2);
  EXPECT_EQ(Keys(r), (std::vector<std::string>{"k17", "k18"}));
  EXPECT_TRUE(r.more);

  EXPECT_TRUE(Scan("k10", "k10", 0).items.empty());  // empty and inverted ranges
  EXPECT_TRUE(Scan("k12", "k10", 0).items.empty());
  EXPECT_TRUE(Scan("z", "", 0).items.empty());

  // Paging with a cursor visits every key once.
  std::vector<std::string> paged;
  std::string cursor = "k";
  for (bool more = true; more;) {
    r = Scan(cursor, "l", 3);
    for (const KeyValue& kv : r.items) paged.push_back(kv.key);
    if (!r.items.empty()) cursor = r.items.back().key + std::string(1, '\0');
    more = r.more;
  }
  EXPECT_EQ(paged.size(), 20u);
  EXPECT_EQ(paged.front(), "k00");
  EXPECT_EQ(paged.back(), "k19");
}

TEST_P(KvConformanceTest, ReadYourWrites) {
  Put("a", "old");
  Put("b", "old");
  Txn txn = Begin();
  txn->Put("a", "new");
  txn->Delete("b");
  txn->Put("c", "created");
  EXPECT_EQ(*txn->Get("a"), "new");
  EXPECT_EQ(*txn->Get("b"), std::nullopt);
  EXPECT_EQ(*txn->Get("c"), "created");
  auto values = txn->BatchGet({"a", "b", "c", "d"});
  ASSERT_TRUE(values.ok());
  EXPECT_EQ(*values, (std::vector<std::optional<std::string>>{"new", std::nullopt, "created",
                                                              std::nullopt}));
  // Not visible to others before Commit.
  EXPECT_EQ(Get("a"), "old");
  EXPECT_EQ(Get("c"), std::nullopt);
  ASSERT_TRUE(txn->Commit().ok());
  EXPECT_EQ(Get("a"), "new");
  EXPECT_EQ(Get("b"), std::nullopt);
  EXPECT_EQ(Get("c"), "created");
}

// Checks every (begin, end, limit) combination of Scan against a model of
// the merged view, inside a transaction with buffered puts and deletes.
TEST_P(KvConformanceTest, ScanMergesBufferedWritesWithLimits) {
  std::map<std::string, std::string> model;
  for (int i = 0; i < 20; i += 2) {
    char key[8];
    snprintf(key, sizeof key, "k%02d", i);
    Put(key, "c");
    model[key] = "c";
  }
  Txn txn = Begin();
  auto put = [&](const std::string& k, const std::string& v) {
    txn->Put(k, v);
    model[k] = v;
  };
  auto del = [&](const std::string& k) {
    txn->Delete(k);
    model.erase(k);
  };
  del("k02");
  del("k04");
  del("k06");
  put("k05", "b");
  put("k07", "b");
  put("k08", "b");  // overwrite
  del("k10");
  del("k11");  // absent
  put("k19", "b");
  put("k25", "b");
  del("k99");  // absent, beyond everything
  put("k03", "tmp");
  del("k03");  // put then delete

  auto check = [&](KvTxn& t) {
    for (const std::string begin : {"", "k", "k03", "k05", "k06", "k11", "k19"}) {
      for (const std::string end : {"", "k07", "k09", "k19", "k2", "z"}) {
        std::vector<KeyValue> all;
        for (auto it = model.lower_bound(begin);
             it != model.end() && (end.empty() || it->first < end); ++it) {
          all.push_back(KeyValue{it->first, it->second});
        }
        for (size_t limit = 0; limit <= 14; ++limit) {
          ScanResult r = Scan(t, begin, end, limit);
          size_t n = limit == 0 ? all.size() : std::min(limit, all.size());
          std::vector<KeyValue> want(all.begin(), all.begin() + static_cast<ptrdiff_t>(n));
          ASSERT_EQ(r.items, want) << "begin=" << begin << " end=" << end << " limit=" << limit;
          ASSERT_EQ(r.more, n < all.size())
              << "begin=" << begin << " end=" << end << " limit=" << limit;
        }
      }
    }
  };
  check(*txn);
  ASSERT_TRUE(txn->Commit().ok());
  Txn after = Begin();
  check(*after);  // the same view, now from the snapshot alone
}

TEST_P(KvConformanceTest, FailedBodyLeavesNothing) {
  Put("keep", "1");
  Status s = WithTransaction(*store_, [](KvTxn& txn) {
    txn.Put("a", "1");
    txn.Delete("keep");
    txn.Put("b", "2");
    return Invalid("body gave up");
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalid);
  EXPECT_EQ(s.message(), "body gave up");
  EXPECT_EQ(Get("a"), std::nullopt);
  EXPECT_EQ(Get("b"), std::nullopt);
  EXPECT_EQ(Get("keep"), "1");

  {  // A transaction destroyed without Commit discards its writes too.
    Txn txn = Begin();
    ASSERT_TRUE(txn->Get("keep").ok());
    txn->Put("c", "3");
  }
  EXPECT_EQ(Get("c"), std::nullopt);
}

TEST_P(KvConformanceTest, BatchGet) {
  Put("x", "1");
  Put("y", "2");
  Txn txn = Begin();
  auto values = txn->BatchGet({"y", "missing", "x", "y", ""});
  ASSERT_TRUE(values.ok()) << values.status().ToString();
  EXPECT_EQ(*values, (std::vector<std::optional<std::string>>{"2", std::nullopt, "1", "2",
                                                              std::nullopt}));
  auto none = txn->BatchGet({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

// A batch is read at the transaction's snapshot, counts as read for
// conflicts, and may be larger than one engine request (etcd: 128 reads).
TEST_P(KvConformanceTest, BatchGetReadsTheSnapshotAndConflicts) {
  std::vector<std::string> keys;
  for (int i = 0; i < 300; ++i) keys.push_back("k" + std::to_string(1000 + i));
  ASSERT_TRUE(WithTransaction(*store_, [&](KvTxn& txn) {
                for (const auto& k : keys) txn.Put(k, "old");
                return Status::Ok();
              }).ok());
  Txn t1 = Begin();
  ASSERT_EQ(*t1->Get("k1000"), "old");  // fixes the snapshot
  // The other transaction also read what t1 writes: t1 can be ordered
  // neither before it nor after it, on any engine.
  ASSERT_TRUE(WithTransaction(*store_, [&](KvTxn& txn) {
                RETURN_IF_ERROR(txn.Get("summary").status());
                txn.Put("k1299", "new");
                txn.Put("k1150", "new");
                return Status::Ok();
              }).ok());
  auto values = t1->BatchGet(keys);
  ASSERT_TRUE(values.ok()) << values.status().ToString();
  ASSERT_EQ(values->size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ((*values)[i], "old") << keys[i];
  t1->Put("summary", "based on old values");
  Status committed = t1->Commit();
  EXPECT_EQ(committed.code(), StatusCode::kConflict) << committed.ToString();
  EXPECT_EQ(Get("summary"), std::nullopt);
}

TEST_P(KvConformanceTest, ConflictOnReadKey) {
  Put("x", "0");
  Txn t1 = Begin();
  Txn t2 = Begin();
  ASSERT_EQ(*t1->Get("x"), "0");
  ASSERT_EQ(*t2->Get("x"), "0");
  t1->Put("x", "1");
  t2->Put("x", "2");
  ASSERT_TRUE(t1->Commit().ok());
  Status s = t2->Commit();
  EXPECT_EQ(s.code(), StatusCode::kConflict) << s.ToString();
  EXPECT_EQ(Get("x"), "1");
}

TEST_P(KvConformanceTest, ConflictOnDeletedKey) {
  Put("x", "0");
  Txn t1 = Begin();
  ASSERT_EQ(*t1->Get("x"), "0");
  ASSERT_TRUE(WithTransaction(*store_, [](KvTxn& txn) {
                txn.Delete("x");
                return Status::Ok();
              }).ok());
  t1->Put("y", "depends on x");
  EXPECT_EQ(t1->Commit().code(), StatusCode::kConflict);
  EXPECT_EQ(Get("y"), std::nullopt);
}

TEST_P(KvConformanceTest, ConflictOnScannedRange) {
  Put("dir/a", "1");
  Txn t1 = Begin();
  ScanResult r = Scan(*t1, "dir/", "dir0", 0);
  ASSERT_EQ(r.items.size(), 1u);
  // Lands inside the range t1 scanned, from a transaction that read what
  // t1 writes (so that no order of the two would be correct).
  ASSERT_TRUE(WithTransaction(*store_, [&](KvTxn& txn) {
                RETURN_IF_ERROR(txn.Get("count").status());
                txn.Put("dir/b", "2");
                return Status::Ok();
              }).ok());
  t1->Put("count", "1");
  EXPECT_EQ(t1->Commit().code(), StatusCode::kConflict);
  EXPECT_EQ(Get("count"), std::nullopt);
}

// Two transactions that each read what the other writes cannot both commit
// (write skew), for keys and for ranges (phantoms).
TEST_P(KvConformanceTest, WriteSkewIsPrevented) {
  Put("on-call/alice", "1");
  Put("on-call/bob", "1");
  Txn t1 = Begin();
  Txn t2 = Begin();
  EXPECT_EQ(Scan(*t1, "on-call/", "on-call0", 0).items.size(), 2u);
  EXPECT_EQ(Scan(*t2, "on-call/", "on-call0", 0).items.size(), 2u);
  t1->Delete("on-call/alice");
  t2->Delete("on-call/bob");
  Status s1 = t1->Commit();
  Status s2 = t2->Commit();
  EXPECT_TRUE(s1.ok()) << s1.ToString();
  EXPECT_EQ(s2.code(), StatusCode::kConflict) << s2.ToString();
  EXPECT_EQ(Scan("on-call/", "on-call0", 0).items.size(), 1u);

  Txn t3 = Begin();
  Txn t4 = Begin();
  EXPECT_TRUE(Scan(*t3, "a/", "a0", 0).items.empty());
  EXPECT_TRUE(Scan(*t4, "b/", "b0", 0).items.empty());
  t3->Put("b/from-t3", "1");
  t4->Put("a/from-t4", "1");
  Status s3 = t3->Commit();
  Status s4 = t4->Commit();
  EXPECT_TRUE(s3.ok()) << s3.ToString();
  EXPECT_EQ(s4.code(), StatusCode::kConflict) << s4.ToString();
}

TEST_P(KvConformanceTest, ReadsSeeOneSnapshot) {
  Put("x", "1");
  Put("y", "1");
  Txn t1 = Begin();
  ASSERT_EQ(*t1->Get("x"), "1");
  ASSERT_TRUE(WithTransaction(*store_, [](KvTxn& txn) {
                txn.Put("x", "2");
                txn.Put("y", "2");
                txn.Put("z", "2");
                return Status::Ok();
              }).ok());
  EXPECT_EQ(*t1->Get("y"), "1");
  EXPECT_EQ(*t1->Get("z"), std::nullopt);
  EXPECT_EQ(Scan(*t1, "", "", 0).items.size(), 2u);
  EXPECT_TRUE(t1->Commit().ok());  // read-only: commits trivially
  EXPECT_EQ(Get("y"), "2");
}

TEST_P(KvConformanceTest, WriteOnlyTransactionsDoNotConflict) {
  Txn t1 = Begin();
  Txn t2 = Begin();
  t1->Put("a", "1");
  t2->Put("b", "2");
  EXPECT_TRUE(t1->Commit().ok());
  EXPECT_TRUE(t2->Commit().ok());
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("b"), "2");
}

TEST_P(KvConformanceTest, CommitTwiceIsAnError) {
  Txn txn = Begin();
  txn->Put("a", "1");
  ASSERT_TRUE(txn->Commit().ok());
  EXPECT_FALSE(txn->Commit().ok());
  EXPECT_EQ(Get("a"), "1");
}

TEST_P(KvConformanceTest, ConcurrentIncrementsAreNotLost) {
  constexpr int kThreads = 4;
  constexpr int kIncrements = 200;
  Put("counter", Big64(0));
  std::vector<Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIncrements && results[t].ok(); ++i) {
        results[t] = WithTransaction(*store_, [](KvTxn& txn) {
          ASSIGN_OR_RETURN(std::optional<std::string> v, txn.Get("counter"));
          if (!v || v->size() != 8) return Internal("bad counter");
          txn.Put("counter", Big64(GetBig64(v->data()) + 1));
          return Status::Ok();
        });
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (const Status& s : results) EXPECT_TRUE(s.ok()) << s.ToString();
  std::optional<std::string> v = Get("counter");
  ASSERT_TRUE(v && v->size() == 8);
  EXPECT_EQ(GetBig64(v->data()), uint64_t{kThreads * kIncrements});
}

int64_t CounterValue(const std::optional<std::string>& v) {
  EXPECT_TRUE(v && v->size() == 8);
  return v && v->size() == 8 ? static_cast<int64_t>(GetBig64(v->data())) : -1;
}

TEST_P(KvConformanceTest, IncrementAddsToCountersAndReadsSeeIt) {
  Put("c/set", Big64(40));
  Put("c/put", Big64(7));
  Put("c/gone", Big64(9));
  Txn txn = Begin();
  txn->Increment("c/new", -3);                // absent counts as 0
  txn->Increment("c/set", 1);
  txn->Increment("c/set", 1);
  EXPECT_EQ(CounterValue(*txn->Get("c/set")), 42);  // read plus pending delta
  txn->Increment("c/set", 8);                 // after a read: still adds
  txn->Put("c/put", Big64(100));
  txn->Increment("c/put", 5);                 // adds to the value written here
  txn->Increment("c/gone", 1);
  txn->Delete("c/gone");                      // a later delete wins
  ScanResult in_txn = Scan(*txn, "c/", "c0", 0);
  ASSERT_EQ(in_txn.items.size(), 3u);
  EXPECT_EQ(in_txn.items[0].key, "c/new");
  EXPECT_EQ(CounterValue(in_txn.items[0].value), -3);
  ASSERT_TRUE(txn->Commit().ok());
  EXPECT_EQ(CounterValue(Get("c/new")), -3);
  EXPECT_EQ(CounterValue(Get("c/set")), 50);
  EXPECT_EQ(CounterValue(Get("c/put")), 105);
  EXPECT_EQ(Get("c/gone"), std::nullopt);
}

TEST_P(KvConformanceTest, IncrementsKeepSnapshotsAndConflictWithReaders) {
  Put("n", Big64(1));
  Put("x", "0");
  Txn reader = Begin();
  ASSERT_EQ(*reader->Get("x"), "0");  // fixes the snapshot
  Txn writer = Begin();
  ASSERT_EQ(*writer->Get("n"), Big64(1));
  ASSERT_TRUE(WithTransaction(*store_, [](KvTxn& txn) {
                txn.Increment("n", 10);
                return Status::Ok();
              }).ok());
  EXPECT_EQ(CounterValue(*reader->Get("n")), 1);  // the snapshot's value
  writer->Put("based-on-n", "1");
  EXPECT_EQ(writer->Commit().code(), StatusCode::kConflict);
  EXPECT_EQ(CounterValue(Get("n")), 11);
}

TEST_P(KvConformanceTest, ConcurrentBlindIncrementsAreNotLost) {
  constexpr int kThreads = 4;
  constexpr int kIncrements = 100;
  std::vector<Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIncrements && results[t].ok(); ++i) {
        results[t] = WithTransaction(*store_, [&](KvTxn& txn) {
          txn.Put("own/" + std::to_string(t), std::to_string(i));
          txn.Increment("total", 2);
          return Status::Ok();
        });
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (const Status& s : results) EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(CounterValue(Get("total")), 2 * kThreads * kIncrements);
}

// Engines that check conflicts per key and per range: all but SQLite, which
// has one writer at a time and fails a writer whose snapshot is not the
// newest (a mount queues its own writers, so only mounts sharing one SQLite
// file ever see that).
bool ChecksPerKey(const std::string& engine) { return engine != "sqlite"; }
// Engines that apply increments in place (the others read the counter).
bool AddsInPlace(const std::string& engine) {
  return engine == "memory" || engine == "redis" || engine == "rediss" || engine == "postgres";
}

TEST_P(KvConformanceTest, IncrementsOfOneCounterDoNotConflict) {
  // PostgreSQL checks conflicts per index page: x and y lie pages apart, as
  // unrelated keys of a real volume do.
  ASSERT_TRUE(WithTransaction(*store_, [](KvTxn& txn) {
                for (int i = 0; i < 2000; ++i) txn.Put("xa" + Big64(i), std::string(40, 'v'));
                return Status::Ok();
              }).ok());
  Put("x", "0");
  Put("y", "0");
  Put("used", Big64(0));  // PostgreSQL: the first addition creates the row
  Txn t1 = Begin();
  Txn t2 = Begin();
  ASSERT_EQ(*t1->Get("x"), "0");
  ASSERT_EQ(*t2->Get("y"), "0");
  t1->Increment("used", 5);
  t2->Increment("used", 7);
  t1->Put("x", "1");
  t2->Put("y", "1");
  ASSERT_TRUE(t1->Commit().ok());
  Status s = t2->Commit();
  if (!AddsInPlace(GetParam())) {
    EXPECT_EQ(s.code(), StatusCode::kConflict) << s.ToString();
    EXPECT_EQ(CounterValue(Get("used")), 5);
    return;
  }
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(CounterValue(Get("used")), 12);
  // A later Put replaces the counter, pending additions included.
  Put("used", Big64(3));
  EXPECT_EQ(CounterValue(Get("used")), 3);
}

TEST_P(KvConformanceTest, ChangesOutsideWhatWasReadDoNotConflict) {
  Put("a", "0");
  Put("dir/1", "x");
  Put("dir/2", "x");
  Put("dir/3", "x");
  Txn txn = Begin();
  ASSERT_EQ(*txn->Get("a"), "0");
  ScanResult page = Scan(*txn, "dir/", "dir0", 2);  // covers dir/1 .. dir/2 only
  ASSERT_EQ(page.items.size(), 2u);
  ASSERT_TRUE(page.more);
  ASSERT_TRUE(WithTransaction(*store_, [](KvTxn& other) {
                other.Put("b", "1");        // never read
                other.Put("dir/3", "y");    // past the scanned page
                other.Put("dir/4", "y");
                return Status::Ok();
              }).ok());
  txn->Put("a", "1");
  Status s = txn->Commit();
  if (!ChecksPerKey(GetParam())) {
    EXPECT_EQ(s.code(), StatusCode::kConflict) << s.ToString();
    return;
  }
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Get("a"), "1");
}

// Each thread inserts its own keys while counting, in the same transaction,
// every key inserted so far: its own count must be exact (nothing lost or
// seen twice) and the total never goes backwards.
TEST_P(KvConformanceTest, ConcurrentInsertsWithScans) {
  constexpr int kThreads = 4;
  constexpr int kInserts = 50;
  std::vector<Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string mine = "ins/" + std::to_string(t) + "/";
      size_t last_total = 0;
      for (int i = 0; i < kInserts && results[t].ok(); ++i) {
        results[t] = WithTransaction(*store_, [&](KvTxn& txn) {
          ASSIGN_OR_RETURN(ScanResult all, txn.Scan("ins/", "ins0", 0));
          size_t own = 0;
          for (const KeyValue& kv : all.items) own += kv.key.starts_with(mine);
          if (own != static_cast<size_t>(i)) {
            return Internal("thread " + std::to_string(t) + " saw " + std::to_string(own) +
                            " own keys, expected " + std::to_string(i));
          }
          if (all.items.size() < last_total) return Internal("total count went backwards");
          last_total = all.items.size();
          txn.Put(mine + Big64(static_cast<uint64_t>(i)), "v");
          return Status::Ok();
        });
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (const Status& s : results) EXPECT_TRUE(s.ok()) << s.ToString();
  ScanResult r = Scan("ins/", "ins0", 0);
  EXPECT_EQ(r.items.size(), size_t{kThreads * kInserts});
  // A limited scan of the finished set agrees.
  r = Scan("ins/", "ins0", 7);
  EXPECT_EQ(r.items.size(), 7u);
  EXPECT_TRUE(r.more);
}

INSTANTIATE_TEST_SUITE_P(Engines, KvConformanceTest, ::testing::Values("memory", "sqlite", "postgres", "redis", "rediss", "etcd"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace tessera
