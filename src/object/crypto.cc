#include "object/crypto.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include <climits>
#include <cstring>

namespace tessera {
namespace {

constexpr int kMinRsaBits = 2048;
// EVP update calls take an int length: longer inputs go in pieces.
constexpr size_t kMaxPiece = size_t{1} << 30;

// The last OpenSSL error as text (and the thread's error queue emptied, so
// that it does not show up in an unrelated later call).
std::string OpensslError() {
  unsigned long e = ERR_peek_last_error();
  std::string text = "unknown OpenSSL error";
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    text = buf;
  }
  ERR_clear_error();
  return text;
}

struct CipherCtx {
  CipherCtx() : ctx(EVP_CIPHER_CTX_new()) {}
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
  EVP_CIPHER_CTX* ctx;
};

struct PkeyCtx {
  explicit PkeyCtx(EVP_PKEY* key) : ctx(EVP_PKEY_CTX_new(key, nullptr)) {}
  ~PkeyCtx() { EVP_PKEY_CTX_free(ctx); }
  EVP_PKEY_CTX* ctx;
};

bool CheckKeyAndNonce(std::string_view key, std::string_view nonce) {
  return key.size() == kDataKeySize && nonce.size() == kGcmNonceSize;
}

// Feeds `in` through EVP_{En,De}cryptUpdate in pieces an int can count.
template <typename Update>
bool UpdateInPieces(EVP_CIPHER_CTX* ctx, Update update, std::string_view in, char* out) {
  size_t done = 0;
  while (done < in.size()) {
    const size_t n = std::min(kMaxPiece, in.size() - done);
    int written = 0;
    if (update(ctx, reinterpret_cast<unsigned char*>(out + done), &written,
               reinterpret_cast<const unsigned char*>(in.data() + done),
               static_cast<int>(n)) != 1 ||
        static_cast<size_t>(written) != n) {
      return false;
    }
    done += n;
  }
  return true;
}

bool AddAad(EVP_CIPHER_CTX* ctx, bool encrypt, std::string_view aad) {
  if (aad.empty()) return true;
  if (aad.size() > INT_MAX) return false;
  int n = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(aad.data());
  return (encrypt ? EVP_EncryptUpdate(ctx, nullptr, &n, p, static_cast<int>(aad.size()))
                  : EVP_DecryptUpdate(ctx, nullptr, &n, p, static_cast<int>(aad.size()))) == 1;
}

// Hands OpenSSL the passphrase; -1 (failure) when there is none, so that
// OpenSSL never falls back to prompting on the terminal.
int PassphraseCallback(char* buf, int size, int /*rwflag*/, void* user) {
  const auto* passphrase = static_cast<const std::string_view*>(user);
  if (passphrase->empty() || passphrase->size() > static_cast<size_t>(size)) return -1;
  std::memcpy(buf, passphrase->data(), passphrase->size());
  return static_cast<int>(passphrase->size());
}

}  // namespace

Result<std::string> RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (n > INT_MAX ||
      RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    return Internal("random number generator failed: " + OpensslError());
  }
  return out;
}

Status GcmSeal(std::string_view key, std::string_view nonce, std::string_view aad,
               std::string_view plaintext, char* out, char* tag) {
  if (!CheckKeyAndNonce(key, nonce)) return Internal("AES-256-GCM: bad key or nonce length");
  CipherCtx c;
  int n = 0;
  if (c.ctx == nullptr ||
      EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr,
                         reinterpret_cast<const unsigned char*>(key.data()),
                         reinterpret_cast<const unsigned char*>(nonce.data())) != 1 ||
      !AddAad(c.ctx, true, aad) || !UpdateInPieces(c.ctx, EVP_EncryptUpdate, plaintext, out) ||
      EVP_EncryptFinal_ex(c.ctx, reinterpret_cast<unsigned char*>(out + plaintext.size()), &n) !=
          1 ||
      EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kGcmTagSize), tag) != 1) {
    return Internal("AES-256-GCM encryption failed: " + OpensslError());
  }
  return Status::Ok();
}

Status GcmOpen(std::string_view key, std::string_view nonce, std::string_view aad,
               std::string_view ciphertext, std::string_view tag, char* out) {
  if (!CheckKeyAndNonce(key, nonce) || tag.size() != kGcmTagSize) {
    return Internal("AES-256-GCM: bad key, nonce or tag length");
  }
  CipherCtx c;
  if (c.ctx == nullptr ||
      EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr,
                         reinterpret_cast<const unsigned char*>(key.data()),
                         reinterpret_cast<const unsigned char*>(nonce.data())) != 1) {
    return Internal("AES-256-GCM decryption failed: " + OpensslError());
  }
  int n = 0;
  if (!AddAad(c.ctx, false, aad) || !UpdateInPieces(c.ctx, EVP_DecryptUpdate, ciphertext, out) ||
      EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kGcmTagSize),
                          const_cast<char*>(tag.data())) != 1 ||
      EVP_DecryptFinal_ex(c.ctx, reinterpret_cast<unsigned char*>(out + ciphertext.size()), &n) !=
          1) {
    ERR_clear_error();
    return Corrupt("authentication failed");
  }
  return Status::Ok();
}

std::string Base64Encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(data.data()),
                                static_cast<int>(data.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0 || text.size() > INT_MAX) return Invalid("malformed base64");
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0) {
    ERR_clear_error();
    return Invalid("malformed base64");
  }
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t pad = 0;
  if (!text.empty() && text.back() == '=')
    pad = text.size() >= 2 && text[text.size() - 2] == '=' ? 2 : 1;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

bool PemIsEncrypted(std::string_view pem) {
  return pem.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string_view::npos ||
         pem.find("Proc-Type: 4,ENCRYPTED") != std::string_view::npos;
}

struct RsaKey::Impl {
  ~Impl() { EVP_PKEY_free(key); }
  EVP_PKEY* key = nullptr;
};

RsaKey::RsaKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RsaKey::~RsaKey() = default;

Result<std::unique_ptr<RsaKey>> RsaKey::Load(std::string_view pem, std::string_view passphrase) {
  if (pem.size() > INT_MAX) return Invalid("not a PEM private key");
  auto impl = std::make_unique<Impl>();
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return Internal("cannot read the key: " + OpensslError());
  impl->key = PEM_read_bio_PrivateKey(bio, nullptr, PassphraseCallback, &passphrase);
  BIO_free(bio);
  if (impl->key == nullptr) {
    ERR_clear_error();
    if (PemIsEncrypted(pem)) {
      return Status(StatusCode::kPermission,
                    passphrase.empty()
                        ? "the RSA private key is passphrase-protected and no passphrase was given"
                        : "wrong passphrase for the RSA private key");
    }
    return Invalid("not a PEM private key (expected one made by 'openssl genrsa')");
  }
  if (EVP_PKEY_get_base_id(impl->key) != EVP_PKEY_RSA) {
    const char* type = EVP_PKEY_get0_type_name(impl->key);
    return Invalid(std::string("not an RSA private key (it is ") +
                   (type != nullptr ? type : "another type") + ")");
  }
  const int bits = EVP_PKEY_get_bits(impl->key);
  if (bits < kMinRsaBits) {
    return Invalid("the RSA key has " + std::to_string(bits) + " bits; at least " +
                   std::to_string(kMinRsaBits) + " are needed");
  }
  return std::unique_ptr<RsaKey>(new RsaKey(std::move(impl)));
}

int RsaKey::bits() const { return EVP_PKEY_get_bits(impl_->key); }

namespace {

// Sets RSA-OAEP with SHA-256 (and MGF1 with SHA-256) on an initialised context.
bool SetOaep(EVP_PKEY_CTX* ctx) {
  return EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
         EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) > 0 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) > 0;
}

}  // namespace

Result<std::string> RsaKey::Wrap(std::string_view data_key) const {
  PkeyCtx c(impl_->key);
  size_t n = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(data_key.data());
  if (c.ctx == nullptr || EVP_PKEY_encrypt_init(c.ctx) <= 0 || !SetOaep(c.ctx) ||
      EVP_PKEY_encrypt(c.ctx, nullptr, &n, in, data_key.size()) <= 0) {
    return Internal("RSA-OAEP wrap failed: " + OpensslError());
  }
  std::string out(n, '\0');
  if (EVP_PKEY_encrypt(c.ctx, reinterpret_cast<unsigned char*>(out.data()), &n, in,
                       data_key.size()) <= 0) {
    return Internal("RSA-OAEP wrap failed: " + OpensslError());
  }
  out.resize(n);
  return out;
}

Result<std::string> RsaKey::Unwrap(std::string_view wrapped) const {
  PkeyCtx c(impl_->key);
  size_t n = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(wrapped.data());
  if (c.ctx == nullptr || EVP_PKEY_decrypt_init(c.ctx) <= 0 || !SetOaep(c.ctx) ||
      EVP_PKEY_decrypt(c.ctx, nullptr, &n, in, wrapped.size()) <= 0) {
    return Internal("RSA-OAEP unwrap failed: " + OpensslError());
  }
  std::string out(n, '\0');
  if (EVP_PKEY_decrypt(c.ctx, reinterpret_cast<unsigned char*>(out.data()), &n, in,
                       wrapped.size()) <= 0) {
    ERR_clear_error();
    return Corrupt("the wrapped data key does not belong to this RSA key");
  }
  out.resize(n);
  if (out.size() != kDataKeySize) {
    return Corrupt("the wrapped data key has " + std::to_string(out.size()) + " bytes, not " +
                   std::to_string(kDataKeySize));
  }
  return out;
}

}  // namespace tessera
