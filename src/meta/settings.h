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
