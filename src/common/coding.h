// Fixed-width integer encodings. Keys use big-endian so that byte order is
// numeric order (range scans come out sorted); values use the same helpers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tessera {

inline void PutBig64(std::string* out, uint64_t v) {
  for (int i = 7; i >= 0; --i) out->push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
inline void PutBig32(std::string* out, uint32_t v) {
  for (int i = 3; i >= 0; --i) out->push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
inline void PutBig16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v & 0xff));
}
inline uint64_t GetBig64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
inline uint32_t GetBig32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
inline uint16_t GetBig16(const char* p) {
  return static_cast<uint16_t>((static_cast<uint8_t>(p[0]) << 8) | static_cast<uint8_t>(p[1]));
}

// Reads fixed-width fields from a buffer, remembering whether it ran short.
class Decoder {
 public:
  explicit Decoder(std::string_view data) : data_(data) {}
  uint64_t Big64() { return Take(8) ? GetBig64(data_.data() + pos_ - 8) : 0; }
  uint32_t Big32() { return Take(4) ? GetBig32(data_.data() + pos_ - 4) : 0; }
  uint16_t Big16() { return Take(2) ? GetBig16(data_.data() + pos_ - 2) : 0; }
  uint8_t Byte() { return Take(1) ? static_cast<uint8_t>(data_[pos_ - 1]) : 0; }
  std::string_view Rest() const { return data_.substr(pos_); }
  size_t remaining() const { return data_.size() - pos_; }
  bool ok() const { return ok_; }

 private:
  bool Take(size_t n) {
    if (!ok_ || data_.size() - pos_ < n) return ok_ = false;
    pos_ += n;
    return true;
  }
  std::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace tessera
