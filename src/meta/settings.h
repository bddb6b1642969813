// The volume settings written by `tessera format` and read by every client.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace tessera {

inline constexpr int kFormatVersion = 1;

struct VolumeSettings {
  std::string name;
  std::string uuid;
  std::string storage = "file";
  std::string bucket;
  uint64_t block_size = 4ull << 20;
  uint32_t trash_days = 1;
  uint64_t capacity = 0;  // bytes, 0 = unlimited
  uint64_t inodes = 0;    // 0 = unlimited
  // How blocks are stored (layout settings, fixed at format):
  std::string compression = "none";  // none, lz4 or zstd
  // For an encrypted volume, the RSA private key as given to format (PEM,
  // passphrase-protected or not) and the volume's data key wrapped by it
  // (RSA-OAEP, base64); both empty otherwise. Never printed.
  std::string encrypt_rsa_key;
  std::string encrypt_data_key;
  // How an "s3" bucket is reached (connection settings: a re-format
  // replaces them). Empty keys: every client takes them from its
  // environment (AWS_ACCESS_KEY_ID...). `tessera status` hides the secrets.
  std::string access_key;
  std::string secret_key;
  std::string session_token;
  std::string region;  // "" = from the bucket URL, else us-east-1
  bool skip_tls_verify = false;
  int format_version = kFormatVersion;

  std::string ToJson() const;
  static Result<VolumeSettings> FromJson(std::string_view json);
  // "" when the settings that define the data layout are equal, otherwise
  // a sentence naming the first difference (used to refuse a re-format).
  std::string LayoutDifference(const VolumeSettings& other) const;
};

// Checks a volume name: 3-63 characters of [a-z0-9-], starting and ending
// with a letter or digit (it becomes part of every object key).
Status ValidateVolumeName(std::string_view name);

// A random RFC 4122 version-4 UUID.
std::string NewUuid();

}  // namespace tessera
