#include "meta/settings.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/random.h"

namespace tessera {

std::string VolumeSettings::ToJson() const {
  nlohmann::ordered_json j;
  j["name"] = name;
  j["uuid"] = uuid;
  j["storage"] = storage;
  j["bucket"] = bucket;
  j["block_size"] = block_size;
  j["trash_days"] = trash_days;
  j["capacity"] = capacity;
  j["inodes"] = inodes;
  j["compression"] = compression;
  if (!encrypt_rsa_key.empty()) {
    j["encrypt_rsa_key"] = encrypt_rsa_key;
    j["encrypt_data_key"] = encrypt_data_key;
  }
  if (!access_key.empty()) j["access_key"] = access_key;
  if (!secret_key.empty()) j["secret_key"] = secret_key;
  if (!session_token.empty()) j["session_token"] = session_token;
  if (!region.empty()) j["region"] = region;
  if (skip_tls_verify) j["skip_tls_verify"] = true;
  j["format_version"] = format_version;
  return j.dump();
}

Result<VolumeSettings> VolumeSettings::FromJson(std::string_view json) {
  auto j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Corrupt("volume settings are not valid JSON");
  VolumeSettings s;
  try {
    s.name = j.at("name").get<std::string>();
    s.uuid = j.at("uuid").get<std::string>();
    s.storage = j.at("storage").get<std::string>();
    s.bucket = j.at("bucket").get<std::string>();
    s.block_size = j.at("block_size").get<uint64_t>();
    s.trash_days = j.value("trash_days", 1u);
    s.capacity = j.value("capacity", uint64_t{0});
    s.inodes = j.value("inodes", uint64_t{0});
    s.compression = j.value("compression", std::string("none"));
    s.encrypt_rsa_key = j.value("encrypt_rsa_key", std::string());
    s.encrypt_data_key = j.value("encrypt_data_key", std::string());
    s.access_key = j.value("access_key", std::string());
    s.secret_key = j.value("secret_key", std::string());
    s.session_token = j.value("session_token", std::string());
    s.region = j.value("region", std::string());
    s.skip_tls_verify = j.value("skip_tls_verify", false);
    s.format_version = j.at("format_version").get<int>();
  } catch (const nlohmann::json::exception& e) {
    return Corrupt(std::string("volume settings are incomplete: ") + e.what());
  }
  if (s.format_version > kFormatVersion) {
    return Status(StatusCode::kNotSupported,
                  "volume format version " + std::to_string(s.format_version) +
                      " is newer than this tessera supports (" +
                      std::to_string(kFormatVersion) + "); upgrade tessera");
  }
  return s;
}

std::string VolumeSettings::LayoutDifference(const VolumeSettings& o) const {
  if (name != o.name) return "it is named '" + name + "', not '" + o.name + "'";
  if (storage != o.storage) return "its storage is '" + storage + "', not '" + o.storage + "'";
  if (bucket != o.bucket) return "its bucket is '" + bucket + "', not '" + o.bucket + "'";
  if (block_size != o.block_size) {
    return "its block size is " + std::to_string(block_size) + " bytes, not " +
           std::to_string(o.block_size);
  }
  if (compression != o.compression) {
    return "its compression is '" + compression + "', not '" + o.compression + "'";
  }
  if (encrypt_rsa_key.empty() != o.encrypt_rsa_key.empty()) {
    return encrypt_rsa_key.empty() ? "it is not encrypted" : "it is encrypted";
  }
  // The data key stays the one made at the first format: a re-format must
  // name the same key file.
  if (encrypt_rsa_key != o.encrypt_rsa_key) return "it is encrypted with another RSA key";
  return "";
}

Status ValidateVolumeName(std::string_view name) {
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool ok = name.size() >= 3 && name.size() <= 63 && alnum(name.front()) && alnum(name.back());
  for (char c : name) ok = ok && (alnum(c) || c == '-');
  if (!ok) {
    return Invalid("invalid volume name '" + std::string(name) +
                   "': use 3-63 lowercase letters, digits and '-', starting and ending "
                   "with a letter or digit");
  }
  return Status::Ok();
}

std::string NewUuid() {
  uint64_t hi = RandomU64(), lo = RandomU64();
  hi = (hi & 0xffffffffffff0fffull) | 0x0000000000004000ull;
  lo = (lo & 0x3fffffffffffffffull) | 0x8000000000000000ull;
  char buf[37];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx",
                static_cast<unsigned>(hi >> 32), static_cast<unsigned>((hi >> 16) & 0xffff),
                static_cast<unsigned>(hi & 0xffff), static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return buf;
}

}  // namespace tessera
