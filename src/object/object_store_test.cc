// The object store conformance suite, written once and run against every
// implementation, plus tests of OpenObjectStore and of the memory store's
// sharing by name.
#include "object/object_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "object/compress_store.h"
#include "object/crypto.h"
#include "object/encrypt_store.h"
#include "object/memory_store.h"
#include "object/s3_test_util.h"
#include "object/writeback_store.h"

namespace tessera {
namespace {

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/tessera-object-test.XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return "";
  return tmpl;
}

std::vector<std::string> Keys(const ListPage& page) {
  std::vector<std::string> keys;
  for (const ObjectInfo& o : page.objects) keys.push_back(o.key);
  return keys;
}

// Keys whose directory-walk order differs from their string order: '-' and
// '.' sort before '/', '0' after it, and bytes >= 0x80 after everything.
// (No key is also a directory of other keys: a file store cannot hold both
// "a/b" and "a/b/c"; see FileStoreTest.KeyCannotAlsoBeADirectory.)
const std::vector<std::string> kTrickyKeys = {
    "a/b/c", "a.c", "a-b", "a/bc", "a0", "a/b-c", "a/b.d/e", "ab", "b", "z\xc3\xa9", "a/b/d",
};

class ObjectStoreTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string bucket;
    if (GetParam() == "s3") {
      // A real moto_server (one per test process) and a new bucket per
      // test. (s3_store_test has moto check signatures.)
      std::string error;
      MotoServer* moto = MotoServer::Shared(&error);
      ASSERT_NE(moto, nullptr) << error;
      const std::string name = MotoServer::UniqueBucketName();
      ASSERT_TRUE(moto->CreateBucket(name).ok());
      auto store = OpenObjectStore(
          "s3", moto->endpoint() + "/" + name,
          {.access_key = moto->access_key(), .secret_key = moto->secret_key()});
      ASSERT_TRUE(store.ok()) << store.status().ToString();
      store_ = std::move(store).value();
      return;
    }
    if (GetParam() != "mem") {
      dir_ = MakeTempDir();
      ASSERT_FALSE(dir_.empty()) << "mkdtemp failed";
      bucket = dir_ + "/store";
    }
    if (GetParam().starts_with("writeback")) {
      // Over memory: "writeback-staged" keeps every object staged,
      // "writeback-uploading" uploads at once, racing with the test.
      WritebackOptions o;
      o.dir = bucket;
      o.upload_delay = std::chrono::milliseconds(GetParam() == "writeback-staged" ? 3600000 : 0);
      o.max_uploads = 4;
      o.sync = false;  // thousands of Puts; durability is writeback_store_test's
      auto wb = WritebackStore::Open(std::make_unique<MemoryStore>(), o);
      ASSERT_TRUE(wb.ok()) << wb.status().ToString();
      store_ = std::move(wb).value();
      return;
    }
    if (GetParam().starts_with("compress-")) {
      auto algorithm = ParseCompression(GetParam().substr(9));
      ASSERT_TRUE(algorithm.ok());
      store_ = std::make_unique<CompressStore>(std::make_unique<MemoryStore>(), *algorithm);
      return;
    }
    if (GetParam() == "encrypt" || GetParam() == "stack") {
      // "stack": what an encrypted, compressed volume uses, over a directory.
      std::unique_ptr<ObjectStore> below = std::make_unique<MemoryStore>();
      if (GetParam() == "stack") {
        auto file = OpenObjectStore("file", bucket);
        ASSERT_TRUE(file.ok()) << file.status().ToString();
        below = std::move(file).value();
      }
      auto key = RandomBytes(kDataKeySize);
      ASSERT_TRUE(key.ok());
      auto encrypted = EncryptStore::Open(std::move(below), *key);
      ASSERT_TRUE(encrypted.ok()) << encrypted.status().ToString();
      store_ = std::move(encrypted).value();
      if (GetParam() == "stack") {
        store_ = std::make_unique<CompressStore>(std::move(store_), Compression::kZstd);
      }
      return;
    }
    auto store = OpenObjectStore(GetParam(), bucket);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  // Compressing stores list stored sizes, not data lengths (compress_store.h).
  bool ListShowsStoredSizes() const {
    return GetParam().starts_with("compress-") || GetParam() == "stack";
  }

  void TearDown() override {
    store_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  void PutAll(const std::vector<std::string>& keys) {
    for (const std::string& key : keys) {
      ASSERT_TRUE(store_->Put(key, "v:" + key).ok()) << key;
    }
  }

  std::vector<std::string> ListKeys(std::string_view prefix, std::string_view start_after = "",
                                    size_t limit = 0) {
    auto page = store_->List(prefix, start_after, limit);
    EXPECT_TRUE(page.ok()) << page.status().ToString();
    return page.ok() ? Keys(*page) : std::vector<std::string>{};
  }

  std::string dir_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_P(ObjectStoreTest, PutThenGet) {
  EXPECT_FALSE(store_->Describe().empty());
  ASSERT_TRUE(store_->Put("vol/chunks/0/0/1_0_4096", "hello").ok());
  auto got = store_->Get("vol/chunks/0/0/1_0_4096");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "hello");
}

TEST_P(ObjectStoreTest, RangedGet) {
  ASSERT_TRUE(store_->Put("k", "0123456789").ok());
  auto get = [&](uint64_t offset, int64_t length) {
    auto r = store_->Get("k", offset, length);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : std::string("<error>");
  };
  EXPECT_EQ(get(0, -1), "0123456789");
  EXPECT_EQ(get(3, 4), "3456");
  EXPECT_EQ(get(5, -1), "56789");
  EXPECT_EQ(get(0, 0), "");
  EXPECT_EQ(get(8, 5), "89");  // fewer bytes only when the object ends first
  EXPECT_EQ(get(9, 1), "9");
  EXPECT_EQ(get(10, -1), "");  // at the end
  EXPECT_EQ(get(100, 3), "");  // past the end
}

TEST_P(ObjectStoreTest, OverwriteReplaces) {
  ASSERT_TRUE(store_->Put("k", "a much longer first value").ok());
  ASSERT_TRUE(store_->Put("k", "short").ok());
  auto got = store_->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "short");
  auto head = store_->Head("k");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->size, 5u);
  EXPECT_EQ(ListKeys(""), std::vector<std::string>{"k"});
}

TEST_P(ObjectStoreTest, HeadReportsSizeAndMtime) {
  ASSERT_TRUE(store_->Put("dir/obj", std::string(12345, 'x')).ok());
  auto head = store_->Head("dir/obj");
  ASSERT_TRUE(head.ok()) << head.status().ToString();
  EXPECT_EQ(head->key, "dir/obj");
  EXPECT_EQ(head->size, 12345u);
  EXPECT_GT(head->mtime_ns, 0);
}

TEST_P(ObjectStoreTest, MissingObjectIsNotFoundNamingTheKey) {
  auto got = store_->Get("no/such/key");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), StatusCode::kNotFound);
  EXPECT_NE(got.status().message().find("no/such/key"), std::string::npos)
      << got.status().message();
  auto head = store_->Head("no/such/key");
  ASSERT_FALSE(head.ok());
  EXPECT_EQ(head.status().code(), StatusCode::kNotFound);
  EXPECT_NE(head.status().message().find("no/such/key"), std::string::npos);
  // A prefix of stored keys is not an object either.
  ASSERT_TRUE(store_->Put("no/such/key/below", "x").ok());
  EXPECT_EQ(store_->Get("no/such/key").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Head("no/such").status().code(), StatusCode::kNotFound);
}

TEST_P(ObjectStoreTest, DeleteIsIdempotent) {
  ASSERT_TRUE(store_->Put("d/x", "1").ok());
  ASSERT_TRUE(store_->Put("d/y", "2").ok());
  ASSERT_TRUE(store_->Delete("d/x").ok());
  EXPECT_EQ(store_->Get("d/x").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Head("d/x").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(store_->Delete("d/x").ok());
  EXPECT_TRUE(store_->Delete("never/was").ok());
  EXPECT_EQ(ListKeys(""), std::vector<std::string>{"d/y"});
  ASSERT_TRUE(store_->Delete("d/y").ok());
  EXPECT_TRUE(ListKeys("").empty());
  // The key can be used again after its directory went away.
  ASSERT_TRUE(store_->Put("d/x", "3").ok());
  EXPECT_EQ(*store_->Get("d/x"), "3");
}

TEST_P(ObjectStoreTest, ListIsInKeyOrder) {
  std::vector<std::string> shuffled = kTrickyKeys;
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(42));
  PutAll(shuffled);
  std::vector<std::string> sorted = kTrickyKeys;
  std::sort(sorted.begin(), sorted.end());
  ASSERT_EQ(sorted.front(), "a-b");
  auto page = store_->List("", "", 0);
  ASSERT_TRUE(page.ok()) << page.status().ToString();
  EXPECT_EQ(Keys(*page), sorted);
  EXPECT_FALSE(page->more);
  for (const ObjectInfo& o : page->objects) {
    if (ListShowsStoredSizes()) {
      EXPECT_EQ(o.size, ("v:" + o.key).size() + CompressStore::kHeaderSize) << o.key;
    } else {
      EXPECT_EQ(o.size, ("v:" + o.key).size()) << o.key;
    }
    EXPECT_GT(o.mtime_ns, 0) << o.key;
  }
  // Small pages see the same order.
  std::vector<std::string> paged;
  std::string after;
  while (true) {
    auto p = store_->List("", after, 3);
    ASSERT_TRUE(p.ok());
    for (const ObjectInfo& o : p->objects) paged.push_back(o.key);
    if (!p->more) break;
    ASSERT_EQ(p->objects.size(), 3u);
    after = p->objects.back().key;
  }
  EXPECT_EQ(paged, sorted);
}

TEST_P(ObjectStoreTest, ListFiltersByPrefix) {
  PutAll(kTrickyKeys);
  using V = std::vector<std::string>;
  EXPECT_EQ(ListKeys("a/"), (V{"a/b-c", "a/b.d/e", "a/b/c", "a/b/d", "a/bc"}));
  EXPECT_EQ(ListKeys("a/b"), (V{"a/b-c", "a/b.d/e", "a/b/c", "a/b/d", "a/bc"}));
  EXPECT_EQ(ListKeys("a/b/"), (V{"a/b/c", "a/b/d"}));
  EXPECT_EQ(ListKeys("a/b."), (V{"a/b.d/e"}));
  EXPECT_EQ(ListKeys("a/b/c"), (V{"a/b/c"}));
  EXPECT_EQ(ListKeys("a"),
            (V{"a-b", "a.c", "a/b-c", "a/b.d/e", "a/b/c", "a/b/d", "a/bc", "a0", "ab"}));
  EXPECT_EQ(ListKeys("z"), (V{"z\xc3\xa9"}));
  EXPECT_TRUE(ListKeys("a/b/c/").empty());
  EXPECT_TRUE(ListKeys("nope/").empty());
  EXPECT_TRUE(ListKeys("a/x").empty());
  EXPECT_TRUE(ListKeys("../").empty());
  EXPECT_TRUE(ListKeys("a/../a/").empty());
}

TEST_P(ObjectStoreTest, ListStartsAfter) {
  PutAll(kTrickyKeys);
  using V = std::vector<std::string>;
  EXPECT_EQ(ListKeys("", "a/bc"), (V{"a0", "ab", "b", "z\xc3\xa9"}));
  EXPECT_EQ(ListKeys("a/", "a/b-c"), (V{"a/b.d/e", "a/b/c", "a/b/d", "a/bc"}));
  EXPECT_EQ(ListKeys("a/", "a/b/"), (V{"a/b/c", "a/b/d", "a/bc"}));  // not itself a key
  EXPECT_EQ(ListKeys("a/", "a/b/c"), (V{"a/b/d", "a/bc"}));
  EXPECT_EQ(ListKeys("a/", "a/b.d/e"), (V{"a/b/c", "a/b/d", "a/bc"}));
  EXPECT_EQ(ListKeys("a/", "0"), (V{"a/b-c", "a/b.d/e", "a/b/c", "a/b/d", "a/bc"}));
  EXPECT_TRUE(ListKeys("a/", "a/zzz").empty());
  EXPECT_TRUE(ListKeys("", "\xff").empty());
}

TEST_P(ObjectStoreTest, PagesThroughThousandsOfKeys) {
  std::vector<std::string> expected;
  char key[64];
  for (int i = 0; i < 2500; ++i) {
    // Directories of a hundred keys, named so that string order is not
    // numeric order ("p/10/..." < "p/2/...").
    std::snprintf(key, sizeof(key), "p/%d/%d", i / 100, i);
    expected.push_back(key);
  }
  PutAll(expected);
  PutAll({"o", "p-x", "p0", "q/1"});  // around the prefix, never listed
  std::sort(expected.begin(), expected.end());

  std::vector<std::string> listed;
  std::vector<size_t> sizes;
  std::string after;
  while (true) {
    auto page = store_->List("p/", after, 1000);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    sizes.push_back(page->objects.size());
    for (const ObjectInfo& o : page->objects) listed.push_back(o.key);
    if (!page->more) break;
    after = page->objects.back().key;
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{1000, 1000, 500}));
  EXPECT_EQ(listed, expected);

  auto first = store_->List("p/", "", 0);  // limit 0 means 1000
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->objects.size(), 1000u);
  EXPECT_TRUE(first->more);
  auto exact = store_->List("p/", "", 2500);
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->objects.size(), 2500u);
  EXPECT_FALSE(exact->more);
  auto one_short = store_->List("p/", "", 2499);
  ASSERT_TRUE(one_short.ok());
  EXPECT_TRUE(one_short->more);
  auto last = store_->List("p/", expected[2497], 10);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(Keys(*last), (std::vector<std::string>{expected[2498], expected[2499]}));
  EXPECT_FALSE(last->more);
}

TEST_P(ObjectStoreTest, ConcurrentPutsAndGets) {
  constexpr int kThreads = 4;
  constexpr int kOps = 100;
  constexpr size_t kSharedSize = 16 * 1024;
  std::atomic<int> torn{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string mine(kSharedSize, static_cast<char>('A' + t));
      for (int i = 0; i < kOps; ++i) {
        std::string key = "t" + std::to_string(t) + "/" + std::to_string(i);
        std::string value = key + std::string(static_cast<size_t>(i), 'v');
        EXPECT_TRUE(store_->Put(key, value).ok());
        auto got = store_->Get(key);
        EXPECT_TRUE(got.ok() && *got == value) << key;
        // Every thread replaces one object; readers must see a whole one.
        EXPECT_TRUE(store_->Put("shared", mine).ok());
        auto shared = store_->Get("shared");
        EXPECT_TRUE(shared.ok());
        if (shared.ok()) {
          const std::string& s = *shared;
          if (s.size() != kSharedSize || s.find_first_not_of(s[0]) != std::string::npos ||
              s[0] < 'A' || s[0] >= 'A' + kThreads) {
            ++torn;
          }
        }
        // Objects that come and go in one directory: a Delete that empties
        // it races with the others' Puts into it.
        std::string churn = "churn/" + std::to_string(t) + "-" + std::to_string(i);
        EXPECT_TRUE(store_->Put(churn, "x").ok()) << churn;
        EXPECT_TRUE(store_->Delete(churn).ok()) << churn;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(torn.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    auto page = store_->List("t" + std::to_string(t) + "/", "", 0);
    ASSERT_TRUE(page.ok());
    EXPECT_EQ(page->objects.size(), static_cast<size_t>(kOps));
  }
  EXPECT_TRUE(ListKeys("churn/").empty());
}

TEST_P(ObjectStoreTest, BinaryDataRoundTrips) {
  std::string data;
  for (int round = 0; round < 4; ++round) {
    for (int b = 0; b < 256; ++b) data.push_back(static_cast<char>(b));
    data.append(3, '\0');
  }
  ASSERT_TRUE(store_->Put("bin", data).ok());
  auto got = store_->Get("bin");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, data);
  auto mid = store_->Get("bin", 255, 5);  // 0xff then NULs then 0x00 0x01
  ASSERT_TRUE(mid.ok());
  EXPECT_EQ(*mid, std::string("\xff\0\0\0\0", 5));
  EXPECT_EQ(store_->Head("bin")->size, data.size());
}

TEST_P(ObjectStoreTest, EmptyObjectExists) {
  ASSERT_TRUE(store_->Put("empty", "").ok());
  auto got = store_->Get("empty");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "");
  auto head = store_->Head("empty");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->size, 0u);
  auto page = store_->List("", "", 0);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->objects.size(), 1u);
  EXPECT_EQ(page->objects[0].key, "empty");
  EXPECT_EQ(page->objects[0].size, ListShowsStoredSizes() ? CompressStore::kHeaderSize : 0u);
}

TEST_P(ObjectStoreTest, EmptyKeyIsInvalid) {
  EXPECT_EQ(store_->Put("", "x").code(), StatusCode::kInvalid);
  EXPECT_EQ(store_->Get("").status().code(), StatusCode::kInvalid);
}

INSTANTIATE_TEST_SUITE_P(AllStores, ObjectStoreTest, ::testing::Values("file", "mem", "writeback-staged",
                                                           "writeback-uploading", "compress-lz4",
                                                           "compress-zstd", "encrypt", "stack", "s3"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(OpenObjectStoreTest, UnknownStorageIsInvalid) {
  auto store = OpenObjectStore("s4", "bucket");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kInvalid);
  EXPECT_EQ(store.status().message(), "unsupported storage 's4' (expected file, mem or s3)");
}

TEST(OpenObjectStoreTest, NamedMemoryStoresShareObjects) {
  auto a = OpenObjectStore("mem", "shared-by-name");
  auto b = OpenObjectStore("mem", "shared-by-name");
  auto other = OpenObjectStore("mem", "another-name");
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  ASSERT_TRUE((*a)->Put("k", "v").ok());
  EXPECT_EQ(*(*b)->Get("k"), "v");
  EXPECT_EQ((*other)->Get("k").status().code(), StatusCode::kNotFound);
  EXPECT_NE((*a)->Describe().find("shared-by-name"), std::string::npos);
  // The objects outlive every store that used the name.
  a->reset();
  b->reset();
  auto again = OpenObjectStore("mem", "shared-by-name");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*(*again)->Get("k"), "v");
}

TEST(OpenObjectStoreTest, UnnamedMemoryStoresArePrivate) {
  auto a = OpenObjectStore("mem", "");
  auto b = OpenObjectStore("mem", "");
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Put("k", "v").ok());
  EXPECT_EQ((*b)->Get("k").status().code(), StatusCode::kNotFound);
}

TEST(OpenObjectStoreTest, FileBucketExpandsHome) {
  const std::string dir = MakeTempDir();
  ASSERT_FALSE(dir.empty());
  const char* old_home = std::getenv("HOME");
  const std::string saved = old_home != nullptr ? old_home : "";
  setenv("HOME", dir.c_str(), 1);
  auto store = OpenObjectStore("file", "~/buckets/one");
  if (old_home != nullptr) {
    setenv("HOME", saved.c_str(), 1);
  } else {
    unsetenv("HOME");
  }
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->Describe(), "file://" + dir + "/buckets/one/");
  ASSERT_TRUE((*store)->Put("k", "v").ok());
  EXPECT_TRUE(std::filesystem::is_regular_file(dir + "/buckets/one/k"));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace
}  // namespace tessera
