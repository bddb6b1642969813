// What only the S3 store promises, against a real moto_server (the
// conformance suite in object_store_test.cc covers the ObjectStore
// contract): signatures and credentials, missing buckets, pagination and
// batched deletes, multipart, connection reuse from many threads, TLS, and
// retries of faults injected by a proxy between the store and moto.
#include "object/s3_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "object/s3_test_util.h"

namespace tessera {
namespace {

using Fault = FaultProxy::Fault;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

class S3StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    moto_ = MotoServer::Shared(&error);
    ASSERT_NE(moto_, nullptr) << error;
    bucket_ = MotoServer::UniqueBucketName();
    ASSERT_TRUE(moto_->CreateBucket(bucket_).ok());
    store_ = OpenStore(moto_->endpoint());
    ASSERT_NE(store_, nullptr);
  }

  // Short pauses between retries: the faults are injected, not real.
  S3Options Options() const {
    S3Options o;
    o.access_key = moto_->access_key();
    o.secret_key = moto_->secret_key();
    o.first_backoff = std::chrono::milliseconds(5);
    o.max_backoff = std::chrono::milliseconds(50);
    o.max_retry_time = std::chrono::seconds(20);
    return o;
  }

  std::unique_ptr<S3Store> OpenStore(const std::string& endpoint, S3Options o) {
    auto store = S3Store::Open(endpoint + "/" + bucket_, std::move(o));
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }
  std::unique_ptr<S3Store> OpenStore(const std::string& endpoint) {
    return OpenStore(endpoint, Options());
  }

  // A store that talks to moto through a fault proxy.
  std::unique_ptr<S3Store> ThroughProxy(S3Options o) {
    auto proxy = FaultProxy::Start(moto_->port());
    EXPECT_TRUE(proxy.ok());
    if (!proxy.ok()) return nullptr;
    proxy_ = std::move(*proxy);
    return OpenStore("http://127.0.0.1:" + std::to_string(proxy_->port()), std::move(o));
  }

  MotoServer* moto_ = nullptr;
  std::string bucket_;
  std::unique_ptr<S3Store> store_;
  std::unique_ptr<FaultProxy> proxy_;
};

// moto in auth mode recomputes every signature with botocore: an
// implementation independent of ours. Each kind of request goes through it.
TEST(S3StoreAuthTest, SignaturesCheckedAndWrongCredentialsDenied) {
  auto moto = MotoServer::Start(/*auth=*/true);
  ASSERT_TRUE(moto.ok()) << moto.status().ToString();
  ASSERT_TRUE((*moto)->CreateBucket("auth-bucket").ok());
  const std::string url = (*moto)->endpoint() + "/auth-bucket";
  S3Options o;
  o.access_key = (*moto)->access_key();
  o.secret_key = (*moto)->secret_key();
  o.max_attempts = 1;
  auto opened = S3Store::Open(url, o);
  ASSERT_TRUE(opened.ok());
  S3Store& store = **opened;
  const std::string data = RandomBytes(6u << 20, 1);
  ASSERT_TRUE(store.Put("k", "value").ok());
  EXPECT_EQ(*store.Get("k", 0, -1), "value");
  EXPECT_EQ(*store.Get("k", 1, 3), "alu");
  EXPECT_EQ(store.Head("k")->size, 5u);
  auto list = store.List("", "", 0);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(list->objects.size(), 1u);
  ASSERT_TRUE(store.List("", "j", 1).ok());
  Status mp = store.PutMultipart("big", data, 5u << 20);
  ASSERT_TRUE(mp.ok()) << mp.ToString();
  EXPECT_TRUE(*store.Get("big", 0, -1) == data);
  Status del = store.DeleteMany({"k", "absent"});
  EXPECT_TRUE(del.ok()) << del.ToString();
  EXPECT_TRUE(store.Delete("big").ok());
  EXPECT_TRUE(store.List("", "", 0)->objects.empty());

  S3Options wrong_secret = o;
  wrong_secret.secret_key = "not-the-secret";
  auto bad = S3Store::Open(url, wrong_secret);
  ASSERT_TRUE(bad.ok());
  Status put = (*bad)->Put("k", "v");
  EXPECT_EQ(put.code(), StatusCode::kPermission) << put.ToString();
  EXPECT_NE(put.message().find("403 SignatureDoesNotMatch"), std::string::npos) << put.message();
  EXPECT_NE(put.message().find("PUT " + url + "/k"), std::string::npos) << put.message();
  EXPECT_EQ((*bad)->List("", "", 0).status().code(), StatusCode::kPermission);
  // HEAD answers carry no body: the message says what to check instead.
  auto head = (*bad)->Head("k");
  EXPECT_EQ(head.status().code(), StatusCode::kPermission);
  EXPECT_NE(head.status().message().find("check the access key"), std::string::npos)
      << head.status().message();

  S3Options unknown_key = o;
  unknown_key.access_key = "AKIANOSUCHKEY0000000";
  unknown_key.max_attempts = 6;
  bad = S3Store::Open(url, unknown_key);
  ASSERT_TRUE(bad.ok());
  auto got = (*bad)->Get("k", 0, -1);
  EXPECT_EQ(got.status().code(), StatusCode::kPermission);
  EXPECT_NE(got.status().message().find("InvalidAccessKeyId"), std::string::npos)
      << got.status().message();
  EXPECT_EQ((*bad)->stats().retries, 0u);  // 403 is final

  // OpenObjectStore: keys from the options, else from the environment.
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  unsetenv("AWS_SESSION_TOKEN");
  auto none = OpenObjectStore("s3", url);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalid);
  EXPECT_NE(none.status().message().find("no S3 credentials"), std::string::npos);
  setenv("AWS_ACCESS_KEY_ID", o.access_key.c_str(), 1);
  setenv("AWS_SECRET_ACCESS_KEY", o.secret_key.c_str(), 1);
  auto from_env = OpenObjectStore("s3", url);
  ASSERT_TRUE(from_env.ok()) << from_env.status().ToString();
  EXPECT_TRUE((*from_env)->Put("env", "1").ok());
  auto wrong = OpenObjectStore("s3", url, {.access_key = o.access_key, .secret_key = "x"});
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ((*wrong)->Put("opt", "1").code(), StatusCode::kPermission);  // options win
  unsetenv("AWS_ACCESS_KEY_ID");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  auto given = OpenObjectStore("s3", url, {.access_key = o.access_key, .secret_key = o.secret_key});
  ASSERT_TRUE(given.ok());
  EXPECT_EQ(*(*given)->Get("env", 0, -1), "1");
}

TEST_F(S3StoreTest, MissingBucketIsNotFoundNamingIt) {
  auto store = S3Store::Open(moto_->endpoint() + "/no-such-bucket-here", Options());
  ASSERT_TRUE(store.ok());
  for (const Status& st : {(*store)->Put("k", "v"), (*store)->Get("k", 0, -1).status(),
                           (*store)->List("", "", 0).status(), (*store)->Delete("k")}) {
    EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();
    EXPECT_NE(st.message().find("bucket 'no-such-bucket-here' does not exist"), std::string::npos)
        << st.message();
  }
}

TEST(S3StoreUnreachableTest, RefusedConnectionsAreUnavailable) {
  S3Options o;
  o.access_key = "a";
  o.secret_key = "b";
  o.first_backoff = std::chrono::milliseconds(5);
  o.max_attempts = 3;
  auto store = S3Store::Open("http://127.0.0.1:" + std::to_string(FreePort()) + "/bucket", o);
  ASSERT_TRUE(store.ok());
  const auto start = std::chrono::steady_clock::now();
  Status st = (*store)->Put("k", "v");
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("127.0.0.1"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("tried 3 times"), std::string::npos) << st.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ((*store)->stats().requests, 3u);
}

// Listing past 1000 keys with continuation tokens is the conformance
// suite's PagesThroughThousandsOfKeys/s3 (2504 keys); here, deleting more
// keys than one request takes.
TEST_F(S3StoreTest, DeletesInBatchesOfAThousand) {
  constexpr int kKeys = 1100;
  std::vector<std::string> keys, stored;
  char name[32];
  for (int i = 0; i < kKeys; ++i) {
    std::snprintf(name, sizeof(name), "many/%05d", i);
    keys.push_back(name);
    if (i % 25 == 0) stored.push_back(name);  // in both batches; the rest are absent
  }
  // Eight threads at once, each on its own pooled connection.
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = static_cast<size_t>(t); i < stored.size(); i += 8) {
        if (!store_->Put(stored[i], stored[i]).ok()) ++failures;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);
  ASSERT_TRUE(store_->Put("other", "x").ok());
  auto listed = store_->List("many/", "", 0);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->objects.size(), stored.size());

  const uint64_t before = store_->stats().requests;
  Status st = store_->DeleteMany(keys);  // absent keys count as deleted
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(store_->stats().requests - before, 2u);  // 1000 + 100 keys
  auto left = store_->List("", "", 0);
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->objects.size(), 1u);
  EXPECT_EQ(left->objects[0].key, "other");
  const uint64_t after = store_->stats().requests;
  EXPECT_TRUE(store_->DeleteMany({}).ok());
  EXPECT_EQ(store_->stats().requests, after);  // no keys, no request
}

TEST_F(S3StoreTest, MultipartUploadOfThreePartsAndATail) {
  constexpr size_t kPart = 5u << 20;
  const std::string data = RandomBytes(3 * kPart + 12345, 7);
  uint64_t before = store_->stats().requests;
  ASSERT_TRUE(store_->PutMultipart("big/object", data, kPart).ok());
  EXPECT_EQ(store_->stats().requests - before, 6u);  // create, 4 parts, complete
  auto got = store_->Get("big/object", 0, -1);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(*got == data);
  EXPECT_EQ(store_->Head("big/object")->size, data.size());
  auto across = store_->Get("big/object", kPart - 10, 20);  // spans parts 1 and 2
  ASSERT_TRUE(across.ok());
  EXPECT_EQ(*across, data.substr(kPart - 10, 20));

  // Put switches to multipart above the threshold.
  S3Options o = Options();
  o.multipart_threshold = 6u << 20;
  o.part_size = kPart;
  auto store = OpenStore(moto_->endpoint(), o);
  const std::string eleven = RandomBytes(11u << 20, 8);
  before = store->stats().requests;
  ASSERT_TRUE(store->Put("big/eleven", eleven).ok());
  EXPECT_EQ(store->stats().requests - before, 5u);  // create, 3 parts, complete
  EXPECT_TRUE(*store->Get("big/eleven", 0, -1) == eleven);
}

TEST_F(S3StoreTest, AbortedAndFailedMultipartUploadsLeaveNoObject) {
  auto id = store_->CreateMultipartUpload("mp");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  auto etag = store_->UploadPart("mp", *id, 1, std::string(5u << 20, 'a'));
  ASSERT_TRUE(etag.ok()) << etag.status().ToString();
  EXPECT_FALSE(etag->empty());
  ASSERT_TRUE(store_->AbortMultipartUpload("mp", *id).ok());
  EXPECT_EQ(store_->Head("mp").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(store_->CompleteMultipartUpload("mp", *id, {*etag}).ok());
  EXPECT_FALSE(store_->UploadPart("mp", *id, 0, "x").ok());

  // Every part upload failing: the upload is aborted, nothing is stored.
  S3Options o = Options();
  o.max_attempts = 2;
  auto store = ThroughProxy(o);
  proxy_->FailNext(Fault::kInternalError, 1000, "PUT");
  Status st = store->PutMultipart("mp2", std::string(11u << 20, 'b'), 5u << 20);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find("500 InternalError"), std::string::npos) << st.message();
  proxy_->FailNext(Fault::kNone, 0);
  EXPECT_EQ(proxy_->requests("DELETE"), 1);  // the abort
  EXPECT_EQ(store->Head("mp2").status().code(), StatusCode::kNotFound);
}

TEST_F(S3StoreTest, KeepAliveConnectionsAreReusedAcrossThreads) {
  auto store = ThroughProxy(Options());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(store->Put("seq/" + std::to_string(i), "v").ok());
    ASSERT_TRUE(store->Get("seq/" + std::to_string(i), 0, -1).ok());
  }
  EXPECT_EQ(proxy_->connections(), 1);  // 40 requests, one connection
  EXPECT_EQ(store->stats().new_connections, 1u);

  constexpr int kThreads = 8, kOps = 10;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        const std::string key = "par/" + std::to_string(t) + "/" + std::to_string(i);
        const std::string value = RandomBytes(1000 + static_cast<size_t>(i), static_cast<uint32_t>(t * 100 + i));
        auto got = store->Put(key, value).ok() ? store->Get(key, 0, -1) : Result<std::string>(IoError("put"));
        if (!got.ok() || *got != value) ++failures;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(proxy_->requests(), 40 + kThreads * kOps * 2);
  // At most one connection per thread in flight, plus the first.
  EXPECT_LE(proxy_->connections(), kThreads + 1);
  EXPECT_EQ(store->stats().new_connections, static_cast<uint64_t>(proxy_->connections()));
}

TEST_F(S3StoreTest, RetriesSlowDownServerErrorsAndDroppedConnections) {
  auto store = ThroughProxy(Options());
  proxy_->FailNext(Fault::kSlowDown, 2);
  ASSERT_TRUE(store->Put("k", "value").ok());
  EXPECT_EQ(store->stats().retries, 2u);
  proxy_->FailNext(Fault::kInternalError, 2, "GET");
  auto got = store->Get("k", 0, -1);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "value");
  proxy_->FailNext(Fault::kDrop, 2);
  auto head = store->Head("k");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->size, 5u);
  proxy_->FailNext(Fault::kDrop, 1);
  EXPECT_TRUE(store->Delete("k").ok());
  EXPECT_EQ(proxy_->faults_injected(), 7);
  // libcurl itself resends a request once when a kept-alive connection
  // turns out closed; every other fault costs the store a retry.
  EXPECT_GE(store->stats().retries, 5u);

  // Bounded: a server that keeps saying SlowDown makes the call fail.
  S3Options o = Options();
  o.max_attempts = 3;
  store = ThroughProxy(o);
  proxy_->FailNext(Fault::kSlowDown, 1000);
  Status st = store->Put("k", "value");
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.message().find("503 SlowDown: Please reduce your request rate."), std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("tried 3 times"), std::string::npos) << st.message();
  EXPECT_EQ(proxy_->requests(), 3);
}

TEST_F(S3StoreTest, TruncatedResponsesAreRetriedNeverShort) {
  auto store = ThroughProxy(Options());
  const std::string data = RandomBytes(1u << 20, 3);
  ASSERT_TRUE(store->Put("obj", data).ok());
  for (Fault fault : {Fault::kCutMidBody, Fault::kShortBody}) {
    proxy_->FailNext(fault, 2, "GET");
    auto whole = store->Get("obj", 0, -1);
    ASSERT_TRUE(whole.ok()) << whole.status().ToString();
    EXPECT_TRUE(*whole == data);
    proxy_->FailNext(fault, 2, "GET");
    auto part = store->Get("obj", 100, 5000);
    ASSERT_TRUE(part.ok()) << part.status().ToString();
    EXPECT_EQ(*part, data.substr(100, 5000));
  }
  // A cut listing is read again too.
  proxy_->FailNext(Fault::kCutMidBody, 1, "GET");
  auto list = store->List("", "", 0);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->objects.size(), 1u);

  // When every try is cut, the read fails: no short data, ever.
  S3Options o = Options();
  o.max_attempts = 3;
  store = ThroughProxy(o);
  for (Fault fault : {Fault::kCutMidBody, Fault::kShortBody}) {
    proxy_->FailNext(fault, 1000, "GET");
    auto got = store->Get("obj", 0, -1);
    EXPECT_EQ(got.status().code(), StatusCode::kUnavailable) << (got.ok() ? "returned data" : "");
    got = store->Get("obj", 10, 100000);
    EXPECT_EQ(got.status().code(), StatusCode::kUnavailable);
  }
}

TEST_F(S3StoreTest, StalledServerTimesOutAndIsRetried) {
  S3Options o = Options();
  o.low_speed_limit = 1;
  o.low_speed_time = std::chrono::seconds(1);
  auto store = ThroughProxy(o);
  ASSERT_TRUE(store->Put("k", "v").ok());
  proxy_->FailNext(Fault::kStall, 1, "GET");
  const auto start = std::chrono::steady_clock::now();
  auto got = store->Get("k", 0, -1);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "v");
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(900));
  EXPECT_EQ(store->stats().retries, 1u);
}

TEST(S3StoreTlsTest, VerifiesCertificatesUnlessTold) {
  char dir[] = "/tmp/tessera-s3-tls.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  auto tls = MakeSelfSignedCert(dir);
  ASSERT_TRUE(tls.ok()) << tls.status().ToString();
  auto moto = MotoServer::Start(/*auth=*/false, &*tls);
  ASSERT_TRUE(moto.ok()) << moto.status().ToString();
  ASSERT_TRUE((*moto)->CreateBucket("tls-bucket").ok());
  const std::string url = (*moto)->endpoint() + "/tls-bucket";
  ASSERT_TRUE(url.starts_with("https://"));
  S3Options o;
  o.access_key = (*moto)->access_key();
  o.secret_key = (*moto)->secret_key();
  o.max_attempts = 2;

  o.ca_bundle = "/etc/ssl/certs/ca-certificates.crt";  // the system's: does not know the test CA
  auto strict = S3Store::Open(url, o);
  ASSERT_TRUE(strict.ok());
  Status st = (*strict)->Put("k", "v");
  EXPECT_EQ(st.code(), StatusCode::kPermission) << st.ToString();
  EXPECT_NE(st.message().find("TLS"), std::string::npos) << st.message();

  o.ca_bundle = tls->cert_file;  // a bundle that trusts it
  auto trusting = S3Store::Open(url, o);
  ASSERT_TRUE(trusting.ok());
  EXPECT_TRUE((*trusting)->Put("k", "v").ok());

  o.ca_bundle = "/etc/ssl/certs/ca-certificates.crt";
  o.skip_tls_verify = true;
  auto skipping = S3Store::Open(url, o);
  ASSERT_TRUE(skipping.ok());
  auto got = (*skipping)->Get("k", 0, -1);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "v");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera
