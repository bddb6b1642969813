// Parsing and printing of sizes and durations given on the command line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace tessera {

// "4M", "4MiB", "512K", "1G", "4096" -> bytes (binary units). Rejects
// anything else with kInvalid naming the text.
Result<uint64_t> ParseSize(std::string_view text);
// Bytes as "1.5 GiB", "4.0 MiB", "512 B".
std::string FormatBytes(uint64_t bytes);
// Parses a non-negative integer; kInvalid naming `what` otherwise.
Result<uint64_t> ParseUint(std::string_view text, std::string_view what);
// Wall-clock time in nanoseconds since the epoch.
int64_t NowNanos();
// Monotonic time in nanoseconds.
int64_t MonoNanos();

}  // namespace tessera
