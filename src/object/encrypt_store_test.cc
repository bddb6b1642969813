// EncryptStore over a memory store: round trips, ranges, sizes, and every
// kind of damage to the stored bytes giving kCorrupt, never wrong bytes.
// (The conformance suite in object_store_test.cc runs over it too.)
#include "object/encrypt_store.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "object/crypto.h"
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
  const std::string phrase = "the quick brown fox jumps over the lazy dog; ";
  std::string s;
  while (s.size() < n) s += phrase;
  s.resize(n);
  return s;
}

class EncryptStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two handles on one named memory store: the encrypted view and the raw bytes.
    name_ = "encrypt-test-" + std::to_string(counter_++);
    store_ = Open(std::string(kDataKeySize, 'K'));
    raw_ = MemoryStore::Open(name_);
  }

  std::unique_ptr<EncryptStore> Open(std::string key) {
    auto s = EncryptStore::Open(MemoryStore::Open(name_), std::move(key));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  std::string Raw(const std::string& key) {
    auto r = raw_->Get(key);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : "";
  }

  void ExpectCorrupt(const std::string& key, const std::string& what) {
    auto got = store_->Get(key);
    ASSERT_FALSE(got.ok()) << what << ": returned " << got->size() << " bytes";
    EXPECT_EQ(got.status().code(), StatusCode::kCorrupt) << what << ": " << got.status().ToString();
    EXPECT_NE(got.status().message().find(key), std::string::npos) << got.status().message();
    // A ranged read of it fails the same way.
    EXPECT_EQ(store_->Get(key, 1, 2).status().code(), StatusCode::kCorrupt) << what;
  }

  static inline int counter_ = 0;
  std::string name_;
  std::unique_ptr<EncryptStore> store_;
  std::unique_ptr<MemoryStore> raw_;
};

TEST_F(EncryptStoreTest, RoundTrips) {
  const std::vector<std::string> values = {
      "", "x", Text(1000), RandomData(4 << 20, 1), Text(4 << 20), RandomData(12345, 2)};
  for (size_t i = 0; i < values.size(); ++i) {
    const std::string key =
        "vol/chunks/0/0/" + std::to_string(i) + "_0_" + std::to_string(values[i].size());
    ASSERT_TRUE(store_->Put(key, values[i]).ok()) << i;
    auto got = store_->Get(key);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(*got == values[i]) << "value " << i << " differs";
    EXPECT_EQ(Raw(key).size(), values[i].size() + EncryptStore::kOverhead);
    auto head = store_->Head(key);
    ASSERT_TRUE(head.ok());
    EXPECT_EQ(head->size, values[i].size());
  }
  auto page = store_->List("vol/", "", 0);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->objects.size(), values.size());
  for (const ObjectInfo& o : page->objects) {
    EXPECT_EQ(o.size, std::stoul(o.key.substr(o.key.rfind('_') + 1))) << o.key;
  }
}

TEST_F(EncryptStoreTest, RangedGetsOfABigObject) {
  const std::string data = RandomData(4 << 20, 3);
  ASSERT_TRUE(store_->Put("big", data).ok());
  for (auto [off, len] : {std::pair<uint64_t, int64_t>{0, 1},
                          {1 << 20, 4096},
                          {(4 << 20) - 10, 100},
                          {12345, -1},
                          {4 << 20, 10},
                          {5 << 20, 1}}) {
    auto got = store_->Get("big", off, len);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    const std::string want =
        off >= data.size() ? "" : data.substr(off, len < 0 ? std::string::npos : len);
    EXPECT_TRUE(*got == want) << off << "+" << len;
  }
}

TEST_F(EncryptStoreTest, StoredBytesDoNotHoldThePlaintext) {
  const std::string phrase = "Attack at dawn, bring the secret documents";
  std::string text;
  for (int i = 0; i < 200; ++i) text += phrase + " #" + std::to_string(i) + "\n";
  ASSERT_TRUE(store_->Put("text", text).ok());
  const std::string raw = Raw("text");
  EXPECT_EQ(raw.find("Attack at dawn"), std::string::npos);
  EXPECT_EQ(raw.find("secret"), std::string::npos);
  EXPECT_EQ(raw[0], EncryptStore::kFormat);
  EXPECT_EQ(*store_->Get("text"), text);
}

TEST_F(EncryptStoreTest, NoncesDifferBetweenPutsOfTheSameData) {
  const std::string data = Text(5000);
  ASSERT_TRUE(store_->Put("a", data).ok());
  const std::string first = Raw("a");
  ASSERT_TRUE(store_->Put("a", data).ok());
  const std::string second = Raw("a");
  ASSERT_TRUE(store_->Put("b", data).ok());
  const std::string third = Raw("b");
  auto nonce = [](const std::string& s) { return s.substr(1, kGcmNonceSize); };
  EXPECT_NE(nonce(first), nonce(second));
  EXPECT_NE(nonce(first), nonce(third));
  EXPECT_NE(nonce(second), nonce(third));
  EXPECT_NE(first.substr(13), second.substr(13)) << "same ciphertext for the same data";
  EXPECT_EQ(*store_->Get("a"), data);
  EXPECT_EQ(*store_->Get("b"), data);
}

TEST_F(EncryptStoreTest, DamagedObjectsAreCorrupt) {
  const std::string data = RandomData(70000, 4);
  ASSERT_TRUE(store_->Put("k", data).ok());
  const std::string good = Raw("k");
  const size_t n = good.size();
  // One flipped bit in each part: format byte, nonce, ciphertext (start,
  // middle, end) and tag.
  for (size_t pos : {size_t{0}, size_t{1}, size_t{12}, size_t{13}, n / 2, n - 17, n - 16, n - 1}) {
    std::string bad = good;
    bad[pos] ^= 0x04;
    ASSERT_TRUE(raw_->Put("k", bad).ok());
    ExpectCorrupt("k", "bit flipped at " + std::to_string(pos));
  }
  for (size_t len :
       {size_t{0}, size_t{1}, EncryptStore::kOverhead - 1, EncryptStore::kOverhead, n / 2, n - 1}) {
    ASSERT_TRUE(raw_->Put("k", good.substr(0, len)).ok());
    ExpectCorrupt("k", "truncated to " + std::to_string(len));
  }
  ASSERT_TRUE(raw_->Put("k", good + "x").ok());
  ExpectCorrupt("k", "a byte appended");
  ASSERT_TRUE(raw_->Put("k", "").ok());
  EXPECT_EQ(store_->Head("k").status().code(), StatusCode::kCorrupt);
  ASSERT_TRUE(raw_->Put("k", good).ok());
  EXPECT_EQ(*store_->Get("k"), data);  // the original still reads
}

TEST_F(EncryptStoreTest, AnotherDataKeyCannotRead) {
  ASSERT_TRUE(store_->Put("k", Text(3000)).ok());
  std::string other_key(kDataKeySize, 'K');
  other_key[31] = 'L';
  store_ = Open(other_key);
  ExpectCorrupt("k", "another data key");
}

TEST_F(EncryptStoreTest, MovedAndSwappedObjectsAreCorrupt) {
  ASSERT_TRUE(store_->Put("vol/chunks/0/0/1_0_10", "0123456789").ok());
  ASSERT_TRUE(store_->Put("vol/chunks/0/0/2_0_10", "abcdefghij").ok());
  const std::string one = Raw("vol/chunks/0/0/1_0_10");
  const std::string two = Raw("vol/chunks/0/0/2_0_10");
  ASSERT_TRUE(raw_->Put("vol/chunks/0/0/3_0_10", one).ok());  // copied to another key
  ExpectCorrupt("vol/chunks/0/0/3_0_10", "moved");
  ASSERT_TRUE(raw_->Put("vol/chunks/0/0/1_0_10", two).ok());
  ASSERT_TRUE(raw_->Put("vol/chunks/0/0/2_0_10", one).ok());
  ExpectCorrupt("vol/chunks/0/0/1_0_10", "swapped");
  ExpectCorrupt("vol/chunks/0/0/2_0_10", "swapped");
}

TEST_F(EncryptStoreTest, MissingIsNotFoundAndBadKeysAreRefused) {
  EXPECT_EQ(store_->Get("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store_->Head("nope").status().code(), StatusCode::kNotFound);
  auto bad = EncryptStore::Open(std::make_unique<MemoryStore>(), "short");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalid);
}

}  // namespace
}  // namespace tessera
