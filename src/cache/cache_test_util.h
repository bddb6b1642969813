// Helpers shared by the cache tests: a temporary directory removed at the
// end, deterministic block contents, and raw file edits for corruption.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>

namespace tessera::cache_test {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                       "/tessera-cache-test.XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Bytes that depend on the key and the size only, so that any thread can
// check any hit.
inline std::string BlockFor(std::string_view key, size_t size) {
  std::mt19937_64 rng(std::hash<std::string_view>{}(key) ^ size);
  std::string out(size, '\0');
  for (char& c : out) c = static_cast<char>(rng());
  return out;
}

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteWholeFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// Flips every bit of the byte at `offset` of the file.
inline void FlipByte(const std::string& path, uint64_t offset) {
  std::string data = ReadWholeFile(path);
  ASSERT_LT(offset, data.size()) << path;
  data[offset] = static_cast<char>(~data[offset]);
  WriteWholeFile(path, data);
}

// Sum of the sizes of the regular files under `dir`, but the lock file.
inline uint64_t FileBytesUnder(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().filename() != ".lock") total += e.file_size();
  }
  return total;
}

}  // namespace tessera::cache_test
