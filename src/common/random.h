// Random values for names that must not collide (temporary files, uuids).
// Not for cryptography. Thread-safe (one generator per thread).
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace tessera {

inline uint64_t RandomU64() {
  thread_local std::mt19937_64 rng([] {
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }());
  return rng();
}

// 16 random lower-case hex digits.
inline std::string RandomHex16() {
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t v = RandomU64();
  std::string out(16, '0');
  for (char& c : out) {
    c = kHex[v & 0xf];
    v >>= 4;
  }
  return out;
}

}  // namespace tessera
