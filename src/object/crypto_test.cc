// The RSA key that wraps a volume's data key (with and without a
// passphrase, in both PEM forms `openssl genrsa` writes), and base64.
#include "object/crypto.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <map>
#include <memory>
#include <string>

namespace tessera {
namespace {

enum class PemForm { kPkcs8, kTraditional, kPublic };

// A PEM of a fresh key; `passphrase` empty for an unprotected one.
std::string MakePem(EVP_PKEY* key, PemForm form, const std::string& passphrase) {
  BIO* bio = BIO_new(BIO_s_mem());
  const EVP_CIPHER* cipher = passphrase.empty() ? nullptr : EVP_aes_256_cbc();
  auto* kstr = reinterpret_cast<const unsigned char*>(passphrase.data());
  const int klen = static_cast<int>(passphrase.size());
  int ok = 0;
  switch (form) {
    case PemForm::kPkcs8:
      ok = PEM_write_bio_PrivateKey(bio, key, cipher, kstr, klen, nullptr, nullptr);
      break;
    case PemForm::kTraditional:
      ok = PEM_write_bio_PrivateKey_traditional(bio, key, cipher, kstr, klen, nullptr, nullptr);
      break;
    case PemForm::kPublic: ok = PEM_write_bio_PUBKEY(bio, key); break;
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem = ok == 1 ? std::string(data, static_cast<size_t>(n)) : "";
  BIO_free(bio);
  return pem;
}

// RSA keys by size, generated once: making them is the slow part.
EVP_PKEY* RsaKeyOfBits(unsigned bits) {
  struct Free {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
  };
  // Freed at exit, so that the leak checker sees nothing left behind.
  static std::map<unsigned, std::unique_ptr<EVP_PKEY, Free>> keys;
  auto& key = keys[bits];
  if (!key) key.reset(EVP_RSA_gen(bits));
  return key.get();
}

std::string RsaPem(const std::string& passphrase = "", PemForm form = PemForm::kPkcs8,
                   unsigned bits = 2048) {
  return MakePem(RsaKeyOfBits(bits), form, passphrase);
}

TEST(CryptoTest, WrapsAndUnwrapsWithoutPassphrase) {
  const std::string pem = RsaPem();
  ASSERT_FALSE(pem.empty());
  EXPECT_FALSE(PemIsEncrypted(pem));
  auto key = RsaKey::Load(pem, "");
  ASSERT_TRUE(key.ok()) << key.status().ToString();
  EXPECT_EQ((*key)->bits(), 2048);
  auto data_key = RandomBytes(kDataKeySize);
  ASSERT_TRUE(data_key.ok());
  auto wrapped = (*key)->Wrap(*data_key);
  ASSERT_TRUE(wrapped.ok()) << wrapped.status().ToString();
  EXPECT_EQ(wrapped->size(), 256u);  // one RSA-2048 block
  EXPECT_EQ(wrapped->find(*data_key), std::string::npos);
  auto again = (*key)->Wrap(*data_key);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, *wrapped) << "OAEP is randomised";
  auto unwrapped = (*key)->Unwrap(*wrapped);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status().ToString();
  EXPECT_EQ(*unwrapped, *data_key);
  // A passphrase given for an unprotected key is not needed and does no harm.
  auto with_passphrase = RsaKey::Load(pem, "not needed");
  ASSERT_TRUE(with_passphrase.ok());
  EXPECT_EQ(*(*with_passphrase)->Unwrap(*wrapped), *data_key);
}

TEST(CryptoTest, PassphraseProtectedKeysNeedTheRightPassphrase) {
  for (PemForm form : {PemForm::kPkcs8, PemForm::kTraditional}) {
    SCOPED_TRACE(form == PemForm::kPkcs8 ? "pkcs8" : "traditional");
    const std::string pem = RsaPem("correct horse", form);
    ASSERT_FALSE(pem.empty());
    EXPECT_TRUE(PemIsEncrypted(pem));
    auto key = RsaKey::Load(pem, "correct horse");
    ASSERT_TRUE(key.ok()) << key.status().ToString();
    auto wrapped = (*key)->Wrap(std::string(kDataKeySize, 'k'));
    ASSERT_TRUE(wrapped.ok());
    EXPECT_EQ(*(*key)->Unwrap(*wrapped), std::string(kDataKeySize, 'k'));

    auto missing = RsaKey::Load(pem, "");
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.status().code(), StatusCode::kPermission);
    EXPECT_NE(missing.status().message().find("no passphrase"), std::string::npos)
        << missing.status().message();
    auto wrong = RsaKey::Load(pem, "correct horse!");
    ASSERT_FALSE(wrong.ok());
    EXPECT_EQ(wrong.status().code(), StatusCode::kPermission);
    EXPECT_NE(wrong.status().message().find("wrong passphrase"), std::string::npos)
        << wrong.status().message();
  }
}

TEST(CryptoTest, AnotherKeyCannotUnwrap) {
  auto a = RsaKey::Load(RsaPem(), "");
  auto b = RsaKey::Load(RsaPem("", PemForm::kPkcs8, 3072), "");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*b)->bits(), 3072);
  auto wrapped = (*a)->Wrap(std::string(kDataKeySize, 'x'));
  ASSERT_TRUE(wrapped.ok());
  auto other = (*b)->Unwrap(*wrapped);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), StatusCode::kCorrupt);
  std::string flipped = *wrapped;
  flipped[100] ^= 1;
  EXPECT_EQ((*a)->Unwrap(flipped).status().code(), StatusCode::kCorrupt);
  // A well-wrapped value of the wrong length is no data key.
  auto short_key = (*a)->Wrap("sixteen bytes!!!");
  ASSERT_TRUE(short_key.ok());
  EXPECT_EQ((*a)->Unwrap(*short_key).status().code(), StatusCode::kCorrupt);
}

TEST(CryptoTest, RefusesWhatIsNotAnRsaPrivateKeyOfEnoughBits) {
  auto expect_invalid = [](const std::string& pem, const std::string& words) {
    auto key = RsaKey::Load(pem, "");
    ASSERT_FALSE(key.ok());
    EXPECT_EQ(key.status().code(), StatusCode::kInvalid);
    EXPECT_NE(key.status().message().find(words), std::string::npos) << key.status().message();
  };
  expect_invalid("", "not a PEM private key");
  expect_invalid("hello\n", "not a PEM private key");
  expect_invalid(RsaPem("", PemForm::kPublic), "not a PEM private key");
  std::string cut = RsaPem();
  cut.resize(cut.size() / 2);
  expect_invalid(cut, "not a PEM private key");
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  ASSERT_NE(ec, nullptr);
  expect_invalid(MakePem(ec, PemForm::kPkcs8, ""), "not an RSA private key");
  EVP_PKEY_free(ec);
  expect_invalid(RsaPem("", PemForm::kPkcs8, 1024), "at least 2048");
}

TEST(CryptoTest, Base64RoundTrips) {
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(Base64Encode("f"), "Zg==");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Encode("foo"), "Zm9v");
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  for (size_t n = 0; n < 40; ++n) {
    std::string data;
    for (size_t i = 0; i < n; ++i) data.push_back(static_cast<char>(i * 37 + 200));
    auto back = Base64Decode(Base64Encode(data));
    ASSERT_TRUE(back.ok()) << n;
    EXPECT_EQ(*back, data) << n;
  }
  EXPECT_EQ(Base64Decode("Zm9").status().code(), StatusCode::kInvalid);
  EXPECT_EQ(Base64Decode("Zm9*").status().code(), StatusCode::kInvalid);
}

TEST(CryptoTest, RandomBytesDiffer) {
  auto a = RandomBytes(32), b = RandomBytes(32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 32u);
  EXPECT_NE(*a, *b);
}

}  // namespace
}  // namespace tessera
