#include "common/units.h"

#include <cctype>
#include <chrono>
#include <cstdio>
#include <limits>

namespace tessera {

Result<uint64_t> ParseUint(std::string_view text, std::string_view what) {
  if (text.empty() || text.size() > 19) {
    return Invalid("invalid " + std::string(what) + " '" + std::string(text) + "'");
  }
  uint64_t v = 0;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) {
      return Invalid("invalid " + std::string(what) + " '" + std::string(text) + "'");
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

Result<uint64_t> ParseSize(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  std::string bad = "invalid size '" + std::string(text) + "' (examples: 4096, 512K, 4M, 1G)";
  if (digits == 0) return Invalid(bad);
  auto number = ParseUint(text.substr(0, digits), "size");
  if (!number.ok()) return Invalid(bad);
  std::string unit(text.substr(digits));
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && (unit.ends_with("IB") || unit.ends_with("B"))) {
    unit = unit.substr(0, unit.size() - (unit.ends_with("IB") ? 2 : 1));
  }
  int shift = 0;
  if (unit.empty() || unit == "B") shift = 0;
  else if (unit == "K") shift = 10;
  else if (unit == "M") shift = 20;
  else if (unit == "G") shift = 30;
  else if (unit == "T") shift = 40;
  else if (unit == "P") shift = 50;
  else return Invalid(bad);
  if (*number > (std::numeric_limits<uint64_t>::max() >> shift)) return Invalid(bad);
  return *number << shift;
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %s", v, kUnits[u]);
  return buf;
}

int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t MonoNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace tessera
