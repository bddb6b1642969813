// Cryptographic helpers for encrypted volumes (OpenSSL): random bytes,
// AES-256-GCM sealing of one object, and the RSA key that wraps a volume's
// data key.
//
// A volume's blocks are encrypted with a random 32-byte data key. The data
// key is kept in the volume settings wrapped (RSA-OAEP with SHA-256) by an
// RSA private key whose PEM, passphrase-protected or not, is kept there too:
// whoever can read the settings still needs the passphrase, and losing the
// key (or its passphrase) loses the data.
//
// All functions are thread-safe and never block on anything but the CPU.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tessera {

inline constexpr size_t kDataKeySize = 32;  // AES-256
inline constexpr size_t kGcmNonceSize = 12;
inline constexpr size_t kGcmTagSize = 16;

// `n` bytes from the OpenSSL generator (kInternal if it fails).
Result<std::string> RandomBytes(size_t n);

// AES-256-GCM of `plaintext` under `key` (kDataKeySize bytes) and `nonce`
// (kGcmNonceSize bytes), authenticating `aad` too. Writes the ciphertext
// (as long as the plaintext) to `out` and the tag (kGcmTagSize bytes) to
// `tag`. kInternal only on an OpenSSL failure.
Status GcmSeal(std::string_view key, std::string_view nonce, std::string_view aad,
               std::string_view plaintext, char* out, char* tag);
// The reverse: kCorrupt when the tag does not match (wrong key, wrong aad,
// any changed byte); `out` then holds garbage that must not be used.
Status GcmOpen(std::string_view key, std::string_view nonce, std::string_view aad,
               std::string_view ciphertext, std::string_view tag, char* out);

// Standard base64 with padding, and its reverse (kInvalid for bad input).
std::string Base64Encode(std::string_view data);
Result<std::string> Base64Decode(std::string_view text);

// True when the PEM holds an encrypted (passphrase-protected) private key;
// looks at the PEM headers only, so it needs no passphrase.
bool PemIsEncrypted(std::string_view pem);

// An RSA private key loaded from a PEM.
class RsaKey {
 public:
  ~RsaKey();
  RsaKey(const RsaKey&) = delete;
  RsaKey& operator=(const RsaKey&) = delete;

  // Loads a PEM private key (PKCS#8 or traditional, as `openssl genrsa`
  // writes them), decrypting it with `passphrase` when it is protected.
  // kPermission for a protected key with a missing or wrong passphrase;
  // kInvalid for anything that is not an RSA private key of 2048 bits or
  // more. Never prompts on the terminal.
  static Result<std::unique_ptr<RsaKey>> Load(std::string_view pem, std::string_view passphrase);

  int bits() const;
  // RSA-OAEP (SHA-256) of a data key: as many bytes as the modulus.
  Result<std::string> Wrap(std::string_view data_key) const;
  // The reverse; kCorrupt when `wrapped` was not made by this key or does
  // not hold a kDataKeySize-byte data key.
  Result<std::string> Unwrap(std::string_view wrapped) const;

 private:
  struct Impl;
  explicit RsaKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera
