#include "cli/volume_store.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "object/compress_store.h"
#include "object/crypto.h"
#include "object/encrypt_store.h"
#include "object/retry_store.h"

namespace tessera {
namespace {

std::string Passphrase() {
  const char* p = std::getenv(kPassphraseEnv);
  return p != nullptr ? p : "";
}

// Loads the RSA key, turning a passphrase problem into a line that says
// where the passphrase comes from.
Result<std::unique_ptr<RsaKey>> LoadKey(const std::string& pem, const std::string& whose) {
  const std::string passphrase = Passphrase();
  auto key = RsaKey::Load(pem, passphrase);
  if (key.ok() || !key.status().Is(StatusCode::kPermission)) return key;
  return Status(StatusCode::kPermission,
                "cannot unlock " + whose + ": " +
                    (passphrase.empty() ? std::string("it is passphrase-protected and ") +
                                              kPassphraseEnv + " is not set"
                                        : std::string("wrong passphrase in ") + kPassphraseEnv));
}

// The volume's data key, unwrapped by its RSA key.
Result<std::string> DataKey(const VolumeSettings& s) {
  ASSIGN_OR_RETURN(std::unique_ptr<RsaKey> key, LoadKey(s.encrypt_rsa_key, "the volume's RSA key"));
  auto wrapped = Base64Decode(s.encrypt_data_key);
  if (!wrapped.ok()) return Corrupt("the volume's wrapped data key is not valid base64");
  auto data_key = key->Unwrap(*wrapped);
  if (!data_key.ok()) return data_key.status().WithContext("volume settings");
  return data_key;
}

}  // namespace

Result<std::unique_ptr<ObjectStore>> OpenVolumeStore(const VolumeSettings& s,
                                                     const StoreLayer& middle) {
  ASSIGN_OR_RETURN(Compression compression, ParseCompression(s.compression));
  std::string data_key;
  if (!s.encrypt_rsa_key.empty()) {
    ASSIGN_OR_RETURN(data_key, DataKey(s));
  }
  ObjectStoreOptions options;
  options.access_key = s.access_key;
  options.secret_key = s.secret_key;
  options.session_token = s.session_token;
  options.region = s.region;
  options.skip_tls_verify = s.skip_tls_verify;
  auto opened = OpenObjectStore(s.storage, s.bucket, options);
  if (!opened.ok()) return opened.status().WithContext("bucket " + s.bucket);
  std::unique_ptr<ObjectStore> store = std::move(*opened);
  // The S3 store retries by itself, with its own bounds; retrying its
  // final answer again would only multiply the wait.
  if (s.storage != "s3") store = std::make_unique<RetryStore>(std::move(store));
  if (middle) {
    ASSIGN_OR_RETURN(store, middle(std::move(store)));
  }
  if (!data_key.empty()) {
    ASSIGN_OR_RETURN(store, EncryptStore::Open(std::move(store), std::move(data_key)));
  }
  if (compression != Compression::kNone) {
    store = std::make_unique<CompressStore>(std::move(store), compression);
  }
  return store;
}

Status SetUpEncryption(const std::string& path, VolumeSettings* s) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Invalid("RSA key file " + path + " does not exist or is not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Invalid("cannot read the RSA key file " + path);
  const std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (pem.size() > (1 << 20)) return Invalid(path + " is too large to be an RSA key");
  auto key = LoadKey(pem, path);
  if (!key.ok()) {
    if (key.status().Is(StatusCode::kPermission)) return key.status();
    return Invalid(path + ": " + key.status().message());
  }
  ASSIGN_OR_RETURN(std::string data_key, RandomBytes(kDataKeySize));
  ASSIGN_OR_RETURN(std::string wrapped, (*key)->Wrap(data_key));
  s->encrypt_rsa_key = pem;
  s->encrypt_data_key = Base64Encode(wrapped);
  return Status::Ok();
}

std::string DescribeEncryption(const VolumeSettings& s) {
  if (s.encrypt_rsa_key.empty()) return "none";
  // An RSA-OAEP result is as long as the modulus: the key size shows
  // without unlocking the key.
  auto wrapped = Base64Decode(s.encrypt_data_key);
  std::string rsa = wrapped.ok() ? "rsa-" + std::to_string(wrapped->size() * 8) : "rsa";
  return "aes-256-gcm, data key wrapped by " + rsa +
         (PemIsEncrypted(s.encrypt_rsa_key) ? ", passphrase-protected" : ", no passphrase");
}

}  // namespace tessera
